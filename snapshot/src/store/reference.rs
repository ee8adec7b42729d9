//! Image references (`[registry[:port]/]path[:tag][@sha256:hex]`), parsed and normalised the way
//! docker does, so users type `myvm` and the store records `docker.io/library/myvm:latest`.
//!
//! We wrote this instead of depending on a crate because the grammar is small, the crates that
//! implement it pull in a regex engine, and we need one extra check of our own: whether the full
//! form fits the OCI `org.opencontainers.image.ref.name` grammar, which umoci and skopeo enforce
//! when they read a layout (`a__b` is a valid docker name that neither tool accepts).

use std::fmt;

/// The registry docker assumes when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace docker puts single-component names in on the default registry.
pub const OFFICIAL_PREFIX: &str = "library/";
/// The tag a reference gets when it names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Longest repository name (domain + path) docker accepts.
const MAX_NAME_LEN: usize = 255;
/// Longest tag docker accepts.
const MAX_TAG_LEN: usize = 128;

/// A reference that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {input:?}: {why}")]
pub struct ReferenceError {
    pub input: String,
    pub why: &'static str,
}

/// A parsed, normalised image reference.
///
/// `domain` is always set (`docker.io` when the input named no registry), `path` carries the
/// `library/` prefix for official docker.io names, and `tag` is `latest` when the input named
/// neither a tag nor a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |why| ReferenceError {
            input: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((name, d)) => {
                check_digest(d).map_err(err)?;
                (name, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("repository name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("repository name longer than 255 characters"));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            check_domain(d).map_err(err)?;
        }
        check_path(path).map_err(err)?;
        let mut domain = domain.unwrap_or(DEFAULT_DOMAIN).to_string();
        if domain == "index.docker.io" {
            domain = DEFAULT_DOMAIN.to_string();
        }
        let mut path = path.to_string();
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_PREFIX}{path}");
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry: `library/myvm`, `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The full repository name: `docker.io/library/myvm`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as users know it: `myvm`, `team/app`, `localhost:5000/app`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        check_tag(tag).map_err(|why| ReferenceError {
            input: tag.to_string(),
            why,
        })?;
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The full form, as stored in the index: `docker.io/library/myvm:latest`.
    pub fn full(&self) -> String {
        self.render(self.repository())
    }

    /// The short form users type: `myvm:latest`.
    pub fn familiar(&self) -> String {
        self.render(self.familiar_repository())
    }

    fn render(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// Whether the full form fits the OCI image-layout `ref.name` grammar
    /// (`component ("/" component)*`, `component ::= alnum+ (separator alnum+)*`,
    /// `separator ::= [-._:@+] | "--"`), which umoci and skopeo check when they look a tag up.
    pub fn fits_oci_ref_name(&self) -> bool {
        is_oci_ref_name(&self.full())
    }
}

impl fmt::Display for Reference {
    /// The familiar form; use [`Reference::full`] for the stored one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Checks the OCI image-layout `org.opencontainers.image.ref.name` grammar.
pub fn is_oci_ref_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|component| {
            let b = component.as_bytes();
            let mut i = 0;
            let mut need_alnum = true;
            while i < b.len() {
                let c = b.get(i).copied().unwrap_or(0);
                if c.is_ascii_alphanumeric() {
                    need_alnum = false;
                    i += 1;
                } else if need_alnum {
                    return false;
                } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
                    need_alnum = true;
                    i += 2;
                } else if matches!(c, b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
                    need_alnum = true;
                    i += 1;
                } else {
                    return false;
                }
            }
            !need_alnum
        })
}

/// Docker's rule: the first component is a registry when it contains '.' or ':', is
/// `localhost`, or has upper-case letters (paths never do), and more components follow.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err("registry port must be a number");
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err("invalid registry host name");
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, separated by '/'.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component in repository name");
        }
        let b = component.as_bytes();
        let first_last_ok = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_last_ok(b.first()) || !first_last_ok(b.last()) {
            return Err("repository name components must start and end with a letter or digit");
        }
        let mut i = 0;
        while i < b.len() {
            let c = b.get(i).copied().unwrap_or(0);
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                i += 1;
                continue;
            }
            // A run of separators: one '.', one '_', "__", or any number of '-'.
            let start = i;
            while b.get(i).is_some_and(|c| matches!(c, b'.' | b'_' | b'-')) {
                i += 1;
            }
            let run = b.get(start..i).unwrap_or_default();
            let ok = matches!(run, b"." | b"_" | b"__")
                || (!run.is_empty() && run.iter().all(|&c| c == b'-'));
            if !ok {
                return Err(if run.is_empty() {
                    "repository name may only contain a-z, 0-9, '.', '_', '-' and '/'"
                } else {
                    "invalid separator in repository name"
                });
            }
        }
    }
    Ok(())
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> Result<(), &'static str> {
    let b = t.as_bytes();
    match b.first() {
        None => return Err("empty tag"),
        Some(c) if !(c.is_ascii_alphanumeric() || *c == b'_') => {
            return Err("tag must start with a letter, digit or '_'")
        }
        _ => {}
    }
    if b.len() > MAX_TAG_LEN {
        return Err("tag longer than 128 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err("tag may only contain A-Z, a-z, 0-9, '_', '.' and '-'");
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), &'static str> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(is_lower_hex) => Ok(()),
        Some(("sha256", _)) => Err("a sha256 digest needs 64 lower-case hex digits"),
        Some(_) => Err("only sha256 digests are supported"),
        None => Err("digest must look like sha256:<64 hex digits>"),
    }
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("myvm", "docker.io/library/myvm:latest", "myvm:latest"),
            ("myvm:1.0", "docker.io/library/myvm:1.0", "myvm:1.0"),
            ("team/app:v2", "docker.io/team/app:v2", "team/app:v2"),
            (
                "docker.io/library/myvm",
                "docker.io/library/myvm:latest",
                "myvm:latest",
            ),
            (
                "index.docker.io/myvm",
                "docker.io/library/myvm:latest",
                "myvm:latest",
            ),
            ("docker.io/a/b/c", "docker.io/a/b/c:latest", "a/b/c:latest"),
            (
                "localhost/myvm",
                "localhost/myvm:latest",
                "localhost/myvm:latest",
            ),
            (
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
            ),
            ("quay.io/x/y", "quay.io/x/y:latest", "quay.io/x/y:latest"),
            (
                "Registry.Example/app",
                "Registry.Example/app:latest",
                "Registry.Example/app:latest",
            ),
            (
                "a.b-c__d---e",
                "docker.io/library/a.b-c__d---e:latest",
                "a.b-c__d---e:latest",
            ),
            (
                "myvm:_T.x-1",
                "docker.io/library/myvm:_T.x-1",
                "myvm:_T.x-1",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.full(), *full, "{input}");
            assert_eq!(r.familiar(), *familiar, "{input}");
            assert_eq!(
                Reference::parse(&r.full()).as_ref(),
                Ok(&r),
                "{input} round trip"
            );
        }
        let r = Reference::parse(&format!("myvm@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.full(), format!("docker.io/library/myvm@{D}"));
        let r = Reference::parse(&format!("localhost:5000/myvm:t@{D}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.repository(), "localhost:5000/myvm");
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty reference"),
            ("MyVM", "repository name must be lowercase"),
            ("team/MyVM", "repository name must be lowercase"),
            ("my vm", "may only contain"),
            ("myvm:", "empty tag"),
            ("myvm:-x", "tag must start"),
            ("myvm:a/b", "port must be a number"),
            ("myvm:a+b", "may only contain"),
            (":tag", "repository name is empty"),
            ("a//b", "empty path component"),
            ("-a", "start and end"),
            ("a-", "start and end"),
            ("a..b", "invalid separator"),
            ("a___b", "invalid separator"),
            ("a._b", "invalid separator"),
            ("myvm@sha256:abc", "64 lower-case hex"),
            ("myvm@md5:abc", "only sha256"),
            ("myvm@abc", "digest must look like"),
            ("localhost:x/a", "port must be a number"),
            ("bad-.host/a", "invalid registry host"),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(want), "{input}: {msg}");
            assert!(msg.starts_with("invalid reference format"), "{msg}");
            assert!(!msg.contains('\n'));
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn oci_ref_name_grammar() {
        assert!(Reference::parse("myvm").unwrap().fits_oci_ref_name());
        assert!(Reference::parse("localhost:5000/a/b:v1")
            .unwrap()
            .fits_oci_ref_name());
        assert!(Reference::parse("a--b").unwrap().fits_oci_ref_name());
        // Valid for docker, refused by umoci and skopeo when stored in a layout.
        assert!(!Reference::parse("a__b").unwrap().fits_oci_ref_name());
        assert!(!Reference::parse("a---b").unwrap().fits_oci_ref_name());
        assert!(!Reference::parse("myvm:v1-").unwrap().fits_oci_ref_name());
        assert!(!Reference::parse("myvm:_v").unwrap().fits_oci_ref_name());
        assert!(is_oci_ref_name("base"));
        assert!(!is_oci_ref_name(""));
        assert!(!is_oci_ref_name("a//b"));
    }
}

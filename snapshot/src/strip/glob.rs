//! Path globs for strip rules: `*` and `?` within one path component, `**` across any number of
//! components, `[abc]`/`[a-z]`/`[!x]` classes. Our own because the matcher is thirty lines and
//! the globset/glob crates bring regex machinery or filesystem walking we do not need.
//!
//! Patterns are anchored at the image root; a leading `/` is optional. A glob that matches a
//! directory stands for the directory and everything under it (rules.rs decides that).

/// Most components a pattern may have; longer ones are refused as absurd.
const MAX_PATTERN: usize = 4096;

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Vec<u8>>,
}

impl Glob {
    /// Parses `pattern`; errors are one line naming it.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.len() > MAX_PATTERN {
            return Err(format!(
                "glob {:.40}...: {} bytes, over the {MAX_PATTERN}-byte cap",
                pattern,
                pattern.len()
            ));
        }
        let body = pattern.trim().trim_start_matches('/').trim_end_matches('/');
        if body.is_empty() {
            return Err(format!(
                "glob {pattern:?}: empty (it would name the whole image)"
            ));
        }
        let parts: Vec<Vec<u8>> = body
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(|c| c.as_bytes().to_vec())
            .collect();
        if parts.iter().any(|p| p == b"..") {
            return Err(format!("glob {pattern:?}: '..' is not allowed"));
        }
        for p in &parts {
            if p.contains(&b'[') && !p.contains(&b']') {
                return Err(format!("glob {pattern:?}: unclosed '['"));
            }
        }
        Ok(Glob {
            text: format!("/{body}"),
            parts,
        })
    }

    /// The pattern as the user wrote it, with a leading `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (relative, no leading `/`) matches the whole pattern.
    pub fn matches(&self, path: &[u8]) -> bool {
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let pats: Vec<&[u8]> = self.parts.iter().map(Vec::as_slice).collect();
        match_parts(&pats, &comps)
    }
}

fn match_parts(pats: &[&[u8]], comps: &[&[u8]]) -> bool {
    // Iterative with one backtrack point for `**`, so a hostile pattern stays linear-ish.
    let (mut p, mut c) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        match (pats.get(p), comps.get(c)) {
            (Some(&b"**"), _) => {
                star = Some((p, c));
                p += 1;
            }
            (Some(pat), Some(comp)) if match_component(pat, comp) => {
                p += 1;
                c += 1;
            }
            (None, None) => return true,
            _ => match star {
                Some((sp, sc)) if sc < comps.len() => {
                    star = Some((sp, sc + 1));
                    p = sp + 1;
                    c = sc + 1;
                }
                _ => return false,
            },
        }
    }
}

/// `*`, `?` and classes within one component (classic wildcard matching with one backtrack).
fn match_component(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class(pat, p, s.get(i).copied().unwrap_or(0)),
            Some(&ch) if Some(&ch) == s.get(i) => Some(1),
            _ => None,
        };
        match step {
            Some(advance) => {
                p += advance;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    star = Some((sp, si + 1));
                    p = sp + 1;
                    i = si + 1;
                }
                None => return false,
            },
        }
    }
    pat.get(p..).unwrap_or_default().iter().all(|&b| b == b'*')
}

/// Matches `ch` against the class starting at `pat[p] == '['`: the class's length when it
/// matches, `None` when not.
fn class(pat: &[u8], p: usize, ch: u8) -> Option<usize> {
    let rest = pat.get(p + 1..)?;
    let (negate, start) = match rest.first() {
        Some(b'!') | Some(b'^') => (true, 1),
        _ => (false, 0),
    };
    let close = rest.iter().skip(start + 1).position(|&b| b == b']')? + start + 1;
    let set = rest.get(start..close)?;
    let mut hit = false;
    let mut k = 0;
    while k < set.len() {
        let a = set.get(k).copied().unwrap_or(0);
        if set.get(k + 1) == Some(&b'-') && k + 2 < set.len() {
            let b = set.get(k + 2).copied().unwrap_or(0);
            hit |= a <= ch && ch <= b;
            k += 3;
        } else {
            hit |= a == ch;
            k += 1;
        }
    }
    (hit != negate).then_some(close + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s.as_bytes())
    }

    #[test]
    fn globs() {
        assert!(m("/usr/share/doc", "usr/share/doc"));
        assert!(!m("/usr/share/doc", "usr/share/doc/x"));
        assert!(m("/usr/share/doc/*", "usr/share/doc/x"));
        assert!(!m("/usr/share/doc/*", "usr/share/doc/x/y"));
        assert!(m("/usr/**/*.gz", "usr/share/man/man1/ls.1.gz"));
        assert!(m("/usr/**/*.gz", "usr/a.gz"));
        assert!(m("**/*.pyc", "usr/lib/python3/x.pyc"));
        assert!(m("/var/log/*.log", "var/log/dpkg.log"));
        assert!(m("/lib/modules/[0-9]*", "lib/modules/6.1.0-amd64"));
        assert!(!m("/lib/modules/[!0-9]*", "lib/modules/6.1.0-amd64"));
        assert!(m(
            "/etc/ssh/ssh_host_*_key?pub",
            "etc/ssh/ssh_host_rsa_key.pub"
        ));
        assert!(m("/usr/share/locale/??", "usr/share/locale/de"));
        assert!(m("/a*b*c", "axxbyyc"));
        assert!(!m("/a*b*c", "axxbyy"));
    }

    #[test]
    fn bad_globs() {
        assert!(Glob::new("/").is_err());
        assert!(Glob::new("").is_err());
        assert!(Glob::new("/a/../b").is_err());
        assert!(Glob::new("/a[").is_err());
        assert!(Glob::new(&"a".repeat(5000)).is_err());
        // A hostile pattern with many stars finishes quickly.
        let g = Glob::new(&("*a".repeat(50) + "b")).unwrap();
        assert!(!g.matches("a".repeat(60).as_bytes()));
    }
}

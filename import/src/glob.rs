//! Path globs for `--exclude` / `--include` and the built-in policy rules.
//!
//! Written here rather than taken from a crate because the semantics are ours to fix and small:
//! they match raw byte paths (guest names need not be UTF-8), and the matcher must stay linear on
//! hostile paths (no backtracking blow-up), which the greedy two-pointer walk below guarantees.
//!
//! Syntax and meaning (documented for users):
//! - `*` matches any run of bytes inside one path component (never a `/`), `?` one byte,
//!   `[abc]`, `[a-z]`, `[!a-z]` / `[^a-z]` one byte from (or not from) a set; `\x` is a literal
//!   `x`. A leading `.` is matched by wildcards like any other byte.
//! - `**` as a whole component matches zero or more components; a trailing `/**` matches one or
//!   more, so `/var/cache/**` is everything below `/var/cache` but not the directory itself.
//! - A pattern that starts with `/` is anchored at the guest root (`/var/cache/**`). A pattern
//!   without a leading `/` matches at any depth, as if written `/**/PATTERN` (`*.pyc`,
//!   `__pycache__`). A trailing `/` is ignored.
//! - A pattern matches the path it names; whether a match on a directory also covers what is
//!   below it is the caller's decision (the policy says it does).

use std::fmt;

/// A pattern that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("glob pattern {pattern:?}: {problem}")]
pub struct GlobError {
    pub pattern: String,
    pub problem: String,
}

/// One byte matcher inside a component.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A component of the pattern: `**` or a sequence of tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    AnyComponents,
    Component(Vec<Token>),
}

/// A compiled glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl Glob {
    /// Compiles `pattern` (see the module documentation for the syntax).
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |problem: &str| GlobError {
            pattern: pattern.to_string(),
            problem: problem.to_string(),
        };
        if pattern.is_empty() || pattern.chars().all(|c| c == '/') {
            return Err(err("empty pattern"));
        }
        let anchored = pattern.starts_with('/');
        let mut parts = Vec::new();
        if !anchored {
            parts.push(Part::AnyComponents);
        }
        for comp in pattern.as_bytes().split(|&b| b == b'/') {
            if comp.is_empty() {
                continue;
            }
            if comp == b"**" {
                // `**/**` is the same as `**`; collapsing keeps the match walk simple.
                if parts.last() != Some(&Part::AnyComponents) {
                    parts.push(Part::AnyComponents);
                }
                continue;
            }
            parts.push(Part::Component(
                compile_component(comp).map_err(|p| err(&p))?,
            ));
        }
        // Like .gitignore, a trailing `/**` means "everything below", not the directory itself:
        // `--exclude '/var/cache/**'` keeps an empty /var/cache.
        if pattern.trim_end_matches('/').ends_with("/**") && parts.len() > 1 {
            parts.pop();
            parts.push(Part::Component(vec![Token::AnyRun]));
            parts.push(Part::AnyComponents);
        }
        Ok(Glob {
            text: pattern.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the guest path matches. `path` is relative to the root as in `snapshot::Entry`
    /// (`etc/passwd`); a leading `/` is accepted and ignored.
    pub fn matches(&self, path: &[u8]) -> bool {
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        // Greedy two-pointer walk with `**` as the star over components: each `**` remembers
        // where it started and is extended one component at a time on mismatch, so the cost is
        // at most parts x components component matches.
        let parts = &self.parts;
        let (mut p, mut c) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while c < comps.len() {
            match parts.get(p) {
                Some(Part::AnyComponents) => {
                    star = Some((p, c));
                    p += 1;
                }
                Some(Part::Component(tokens))
                    if comps
                        .get(c)
                        .is_some_and(|name| match_component(tokens, name)) =>
                {
                    p += 1;
                    c += 1;
                }
                _ => match star {
                    Some((sp, sc)) => {
                        p = sp + 1;
                        c = sc + 1;
                        star = Some((sp, sc + 1));
                    }
                    None => return false,
                },
            }
        }
        parts[p..].iter().all(|x| *x == Part::AnyComponents)
    }
}

fn compile_component(comp: &[u8]) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = comp.get(i) {
        i += 1;
        match b {
            b'*' => {
                if tokens.last() != Some(&Token::AnyRun) {
                    tokens.push(Token::AnyRun);
                }
            }
            b'?' => tokens.push(Token::AnyByte),
            b'\\' => match comp.get(i) {
                Some(&x) => {
                    tokens.push(Token::Byte(x));
                    i += 1;
                }
                None => return Err("trailing backslash".into()),
            },
            b'[' => {
                let mut negated = false;
                if matches!(comp.get(i), Some(b'!') | Some(b'^')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&lo) = comp.get(i) else {
                        return Err("unclosed '['".into());
                    };
                    i += 1;
                    if lo == b']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if lo == b'\\' {
                        let Some(&x) = comp.get(i) else {
                            return Err("unclosed '['".into());
                        };
                        i += 1;
                        x
                    } else {
                        lo
                    };
                    if comp.get(i) == Some(&b'-') && comp.get(i + 1).is_some_and(|&x| x != b']') {
                        let hi = comp.get(i + 1).copied().unwrap_or(lo);
                        i += 2;
                        if hi < lo {
                            return Err(format!(
                                "range '{}-{}' is backwards",
                                lo as char, hi as char
                            ));
                        }
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                tokens.push(Token::Class { negated, ranges });
            }
            _ => tokens.push(Token::Byte(b)),
        }
    }
    Ok(tokens)
}

fn token_matches_byte(t: &Token, b: u8) -> bool {
    match t {
        Token::Byte(x) => *x == b,
        Token::AnyByte => true,
        Token::AnyRun => false,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
        }
    }
}

/// Same greedy walk as `Glob::matches`, over bytes with `*` as the star.
fn match_component(tokens: &[Token], name: &[u8]) -> bool {
    let (mut t, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                star = Some((t, n));
                t += 1;
            }
            Some(tok) if name.get(n).is_some_and(|&b| token_matches_byte(tok, b)) => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|x| *x == Token::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).unwrap().matches(path.as_bytes())
    }

    #[test]
    fn anchored_and_floating() {
        assert!(m("/var/cache/**", "var/cache/apt/x.bin"));
        assert!(!m("/var/cache/**", "var/cache"));
        assert!(m("/var/cache/**", "var/cache/a"));
        assert!(m("**", "a"));
        assert!(!m("/var/cache/**", "var/cachex"));
        assert!(m("/var/cache/*", "var/cache/apt"));
        assert!(!m("/var/cache/*", "var/cache/apt/x"));
        assert!(!m("/var/cache/*", "var/cache"));
        assert!(m("*.pyc", "usr/lib/x/a.pyc"));
        assert!(m("*.pyc", "a.pyc"));
        assert!(!m("/*.pyc", "usr/a.pyc"));
        assert!(m("__pycache__", "usr/lib/python3/__pycache__"));
        assert!(m("/etc/", "etc"));
        assert!(m("lib/modules/*", "usr/lib/modules/6.1"));
    }

    #[test]
    fn star_does_not_cross_slash() {
        assert!(!m("/boot/*", "boot/grub/grub.cfg"));
        assert!(m("/boot/vmlinuz*", "boot/vmlinuz-6.1.0-13-amd64"));
        assert!(m("/boot/vmlinuz*", "boot/vmlinuz"));
        assert!(m("/a/**/z", "a/z"));
        assert!(m("/a/**/z", "a/b/c/z"));
        assert!(!m("/a/**/z", "a/b/c/zz"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("/x[0-9]", "x5"));
        assert!(!m("/x[!0-9]", "x5"));
        assert!(m("/x[^0-9]", "xa"));
        assert!(m("/x[]]", "x]"));
        assert!(m("/x[a-]", "x-"));
        assert!(m("/a\\*", "a*"));
        assert!(!m("/a\\*", "ab"));
        assert!(m("/?", "q"));
        assert!(!m("/?", "qq"));
        assert!(Glob::new("/x[").is_err());
        assert!(Glob::new("/x[z-a]").is_err());
        assert!(Glob::new("/x\\").is_err());
        assert!(Glob::new("").is_err());
        assert!(Glob::new("/").is_err());
    }

    #[test]
    fn non_utf8_paths() {
        assert!(Glob::new("/data/*").unwrap().matches(b"data/\xff\xfe"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pat = format!("/{}b", "*a".repeat(30));
        let name = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!m(&pat, &name));
        let deep = "a/".repeat(2000) + "b";
        assert!(!m("/**/a/**/a/**/a/**/c", &deep));
        assert!(start.elapsed().as_secs() < 2);
    }
}

//! Strip rules: `--remove GLOB`, `--keep GLOB` and profiles, which are data files
//! (`snapshot/profiles/*.txt`, compiled in; `--profile FILE` reads the user's own in the same
//! format: `remove GLOB` / `keep GLOB` lines, `#` comments).
//!
//! A `remove` glob that matches a directory removes its subtree. A `keep` glob wins over every
//! `remove`, whatever the order, and also keeps the directories leading to what it keeps.

use super::flat::Flat;
use super::glob::Glob;
use super::StripError;

/// Largest profile file read.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// Most rules over all sources.
pub const MAX_RULES: usize = 10_000;

/// The shipped profiles: name, text.
pub const PROFILES: &[(&str, &str)] = &[
    ("docs", include_str!("../../profiles/docs.txt")),
    ("man", include_str!("../../profiles/man.txt")),
    ("locales", include_str!("../../profiles/locales.txt")),
    ("caches", include_str!("../../profiles/caches.txt")),
    ("logs", include_str!("../../profiles/logs.txt")),
    ("kernel", include_str!("../../profiles/kernel.txt")),
    ("udev", include_str!("../../profiles/udev.txt")),
    ("getty", include_str!("../../profiles/getty.txt")),
    ("identity", include_str!("../../profiles/identity.txt")),
];

/// The name that stands for every shipped profile.
pub const ALL_PROFILES: &str = "vm";

/// One rule and where it came from (`--remove`, `profile docs line 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub glob: Glob,
    pub keep: bool,
    pub source: String,
}

/// An ordered set of rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

impl Rules {
    fn push(&mut self, pattern: &str, keep: bool, source: String) -> Result<(), StripError> {
        if self.rules.len() >= MAX_RULES {
            return Err(StripError::Rules(format!("more than {MAX_RULES} rules")));
        }
        let glob = Glob::new(pattern).map_err(|e| StripError::Rules(format!("{source}: {e}")))?;
        self.rules.push(Rule { glob, keep, source });
        Ok(())
    }

    pub fn remove(&mut self, pattern: &str) -> Result<(), StripError> {
        self.push(pattern, false, format!("--remove {pattern}"))
    }

    /// A remove rule from elsewhere than the command line (`--trace` proposals), named by
    /// `source` in the report.
    pub fn remove_from(&mut self, pattern: &str, source: &str) -> Result<(), StripError> {
        self.push(pattern, false, source.to_string())
    }

    pub fn keep(&mut self, pattern: &str) -> Result<(), StripError> {
        self.push(pattern, true, format!("--keep {pattern}"))
    }

    /// A shipped profile by name (`vm` = all of them), or else a profile file.
    pub fn profile(&mut self, name_or_file: &str) -> Result<(), StripError> {
        if name_or_file == ALL_PROFILES {
            for (name, text) in PROFILES {
                self.profile_text(text, &format!("profile {name}"))?;
            }
            return Ok(());
        }
        if let Some((name, text)) = PROFILES.iter().find(|(n, _)| *n == name_or_file) {
            return self.profile_text(text, &format!("profile {name}"));
        }
        let path = std::path::Path::new(name_or_file);
        let meta = std::fs::metadata(path).map_err(|e| {
            StripError::Rules(format!(
                "profile {name_or_file}: not a shipped profile ({}, {ALL_PROFILES}) and not a readable file: {e}",
                PROFILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if meta.len() > MAX_PROFILE_BYTES {
            return Err(StripError::Rules(format!(
                "profile {name_or_file}: {} bytes, over the {MAX_PROFILE_BYTES}-byte cap",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| StripError::Rules(format!("profile {name_or_file}: {e}")))?;
        self.profile_text(&text, &format!("profile {name_or_file}"))
    }

    /// Parses profile text: `remove GLOB` / `keep GLOB` per line, `#` comments.
    pub fn profile_text(&mut self, text: &str, source: &str) -> Result<(), StripError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{source} line {}", n + 1);
            let (word, pattern) = line.split_once(char::is_whitespace).ok_or_else(|| {
                StripError::Rules(format!(
                    "{at}: expected `remove GLOB` or `keep GLOB`, got {line:?}"
                ))
            })?;
            match word {
                "remove" => self.push(pattern.trim(), false, at)?,
                "keep" => self.push(pattern.trim(), true, at)?,
                other => {
                    return Err(StripError::Rules(format!(
                        "{at}: unknown word {other:?} (expected remove or keep)"
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// For each entry of `flat`, the index of the remove rule that removes it, or `None` when it
    /// stays: matched (itself or an ancestor) by a remove rule, not by a keep rule, and not a
    /// directory on the way to something that stays.
    pub fn apply(&self, flat: &Flat, parents: &[Option<usize>]) -> Vec<Option<usize>> {
        let n = flat.entries.len();
        let mut why: Vec<Option<usize>> = vec![None; n];
        let mut kept = vec![false; n];
        for (i, e) in flat.entries.iter().enumerate() {
            let parent = parents.get(i).copied().flatten();
            let mut w = parent.and_then(|p| why.get(p).copied().flatten());
            let mut k = parent.is_some_and(|p| kept.get(p).copied().unwrap_or(false));
            for (ri, r) in self.rules.iter().enumerate() {
                if !r.glob.matches(&e.path) {
                    continue;
                }
                if r.keep {
                    k = true;
                } else if w.is_none() {
                    w = Some(ri);
                }
            }
            if let Some(slot) = kept.get_mut(i) {
                *slot = k;
            }
            if let Some(slot) = why.get_mut(i) {
                *slot = if k { None } else { w };
            }
        }
        // Directories leading to anything that stays stay too (children come after parents,
        // so walking backwards settles whole chains).
        for i in (0..n).rev() {
            if why.get(i).copied().flatten().is_none() {
                if let Some(p) = parents.get(i).copied().flatten() {
                    if let Some(slot) = why.get_mut(p) {
                        *slot = None;
                    }
                }
            }
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse() {
        let mut r = Rules::default();
        r.profile(ALL_PROFILES).unwrap();
        assert!(r.rules.len() > 40);
        assert!(r.rules.iter().any(|x| x.keep));
    }

    #[test]
    fn bad_profiles() {
        let mut r = Rules::default();
        let e = r.profile_text("remove /a\nerase /b\n", "p").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules: p line 2: unknown word \"erase\" (expected remove or keep)"
        );
        assert!(r.profile_text("remove\n", "p").is_err());
        assert!(r.profile_text("remove /\n", "p").is_err());
        let e = r.profile("/nonexistent/profile").unwrap_err().to_string();
        assert!(e.contains("not a shipped profile"), "{e}");
    }
}

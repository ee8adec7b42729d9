//! Removal groups and what a set of them does to the flattened tree: which entries go, and the
//! edited package database. A group is the unit the loop accepts or rejects: the topmost path
//! a rule removes (with its subtree), or a package with the dependents `--cascade` added.
//! File groups split into their children, so bisection can narrow a failure down to one file;
//! package groups do not (half a package would make the database lie).
//!
//! On an image with a dpkg database, a candidate whose file rules remove files of installed
//! packages also counts them per package and carries the `path-exclude` file that records the
//! rules for dpkg (see `dpkg.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::dpkg::{self, STRIP_CFG};
use super::flat::Flat;
use super::pkgdb::PackageDb;
use crate::layer::entry::EntryKind;

/// One unit of removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// The entry at `root` and every entry under it that the rules remove; `rule` is the index
    /// of the remove rule responsible.
    Files { root: usize, rule: usize },
    /// Packages removed together (a requested one and what `--cascade` added for it).
    Packages(Vec<String>),
}

/// What a candidate removes.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub removed: Vec<bool>,
    /// New content for some paths (the dpkg status, the rpm database).
    pub replace: BTreeMap<Vec<u8>, Vec<u8>>,
    pub packages: BTreeSet<String>,
    /// Per installed package (not removed as a package): how many of its files the file rules
    /// removed.
    pub rule_files: BTreeMap<String, u64>,
}

impl Candidate {
    /// The report's line about files of installed packages the file rules removed, if any.
    pub fn rule_files_note(&self) -> Option<String> {
        if self.rule_files.is_empty() {
            return None;
        }
        let total = self
            .rule_files
            .values()
            .fold(0u64, |a, n| a.saturating_add(*n));
        let mut top: Vec<(&String, &u64)> = self.rule_files.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let most: Vec<String> = top
            .iter()
            .take(8)
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        let recorded = if self.replace.contains_key(STRIP_CFG) {
            "recorded as dpkg path-exclude filters in /etc/dpkg/dpkg.cfg.d/decant-strip, so \
             apt-get and dpkg do not bring them back"
                .to_string()
        } else {
            "NOT recorded for dpkg (no new filter lines, or /etc/dpkg/dpkg.cfg.d is missing or \
             removed): reinstalling those packages brings them back"
                .to_string()
        };
        Some(format!(
            "file rules removed {total} file(s) of {} installed package(s) (most: {}; per \
             package: rule_files in --format json); {recorded}",
            self.rule_files.len(),
            most.join(", ")
        ))
    }

    /// Content bytes the candidate removes.
    pub fn removed_bytes(&self, flat: &Flat) -> u64 {
        flat.entries
            .iter()
            .zip(&self.removed)
            .filter(|(_, r)| **r)
            .fold(0u64, |a, (e, _)| a.saturating_add(e.size))
    }
}

/// The image, its database and the rules' verdict per entry.
pub struct Planner<'a> {
    pub flat: &'a Flat,
    pub db: Option<&'a PackageDb>,
    pub parents: Vec<Option<usize>>,
    pub ends: Vec<usize>,
    /// Per entry: the remove rule that removes it.
    pub planned: Vec<Option<usize>>,
    /// Remove conffiles of removed packages too.
    pub purge: bool,
    /// The rules (a copy: the planner outlives no caller's borrow of them).
    pub rules: super::rules::Rules,
    /// Per entry that is not a directory: the installed package listing it.
    pub owner: Vec<Option<&'a str>>,
    /// Per rule: whether its glob itself names a directory, and a non-directory, of the image
    /// (what its dpkg filter lines must cover). Empty without a dpkg database.
    pub names: Vec<(bool, bool)>,
}

impl<'a> Planner<'a> {
    pub fn new(
        flat: &'a Flat,
        db: Option<&'a PackageDb>,
        rules: &super::rules::Rules,
        purge: bool,
    ) -> Self {
        let parents = flat.parents();
        let ends = flat.subtree_ends();
        let planned = rules.apply(flat, &parents);
        let mut owner = vec![None; flat.entries.len()];
        let mut names = Vec::new();
        if let Some(db) = db {
            let mut by_path: std::collections::HashMap<&[u8], &'a str> =
                std::collections::HashMap::new();
            for k in db.keys().into_iter().filter(|k| db.state(k).0) {
                for f in db.files(k) {
                    by_path.entry(f.as_slice()).or_insert(k.as_str());
                }
            }
            for (slot, e) in owner.iter_mut().zip(&flat.entries) {
                if e.kind != EntryKind::Dir {
                    *slot = by_path.get(e.path.as_slice()).copied();
                }
            }
            names = rules
                .rules
                .iter()
                .map(|r| {
                    let mut n = (false, false);
                    for e in flat.entries.iter().filter(|e| r.glob.matches(&e.path)) {
                        if e.kind == EntryKind::Dir {
                            n.0 = true;
                        } else {
                            n.1 = true;
                        }
                    }
                    n
                })
                .collect();
        }
        Planner {
            flat,
            db,
            parents,
            ends,
            planned,
            purge,
            rules: rules.clone(),
            owner,
            names,
        }
    }

    /// Per package, the files of installed packages the file rules remove in `removed` (those
    /// of packages removed whole excepted), and the dpkg filter file recording the rules that
    /// removed any: the rule's pattern excluded, `keep` rules and files bisection kept under a
    /// recorded rule re-included.
    fn rule_removals(
        &self,
        removed: &[bool],
        gone: &BTreeSet<String>,
    ) -> (BTreeMap<String, u64>, Option<Vec<u8>>) {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut recorded = vec![false; self.rules.rules.len()];
        let mut kept: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, owner) in self.owner.iter().enumerate() {
            let (Some(pkg), Some(rule)) = (owner, self.planned.get(i).copied().flatten()) else {
                continue;
            };
            if gone.contains(*pkg) {
                continue;
            }
            if removed.get(i).copied().unwrap_or(false) {
                *counts.entry((*pkg).to_string()).or_default() += 1;
                if let Some(r) = recorded.get_mut(rule) {
                    *r = true;
                }
            } else {
                kept.entry(rule).or_default().push(i);
            }
        }
        if counts.is_empty() {
            return (counts, None);
        }
        // The directory dpkg reads must be there and stay.
        let dir_stays = self.flat.find(b"etc/dpkg/dpkg.cfg.d").is_some_and(|d| {
            self.flat.entries.get(d).map(|e| e.kind) == Some(EntryKind::Dir)
                && !removed.get(d).copied().unwrap_or(true)
        });
        // An earlier strip's file is extended when it is a regular file (captured) that
        // stays; anything else at that path (removed by a rule, a symlink) is not written over.
        let previous = self.flat.captured.get(STRIP_CFG);
        let old = self.flat.find(STRIP_CFG);
        let old_ok = match old {
            None => true,
            Some(i) => previous.is_some() && !removed.get(i).copied().unwrap_or(true),
        };
        if !dir_stays || !old_ok {
            return (counts, None);
        }
        let (mut exclude, mut include) = (Vec::new(), Vec::new());
        for (ri, rule) in self.rules.rules.iter().enumerate() {
            if !recorded.get(ri).copied().unwrap_or(false) {
                continue;
            }
            let extra: Option<Vec<String>> = match kept.get(&ri) {
                Some(v) if v.len() > dpkg::MAX_KEPT_PER_RULE => None,
                Some(v) => v
                    .iter()
                    .map(|&i| {
                        self.flat
                            .entries
                            .get(i)
                            .and_then(|e| dpkg::dpkg_exact(&e.path))
                    })
                    .collect(),
                None => Some(Vec::new()),
            };
            let (is_dir, is_file) = self.names.get(ri).copied().unwrap_or((true, true));
            let pats: Option<Vec<String>> = [(is_dir, true), (is_file, false)]
                .into_iter()
                .filter(|(named, _)| *named)
                .map(|(_, dir)| dpkg::dpkg_pattern(rule.glob.as_str(), dir))
                .collect();
            // A rule whose lines cannot be written exactly is not recorded: dpkg may then bring
            // its files back, but never drops a file the image kept.
            if let (Some(p), Some(x)) = (pats, extra) {
                exclude.extend(p);
                include.extend(x);
            }
        }
        if exclude.is_empty() {
            return (counts, None);
        }
        let mut keeps = Vec::new();
        for (ri, rule) in self.rules.rules.iter().enumerate().filter(|(_, r)| r.keep) {
            let (is_dir, is_file) = self.names.get(ri).copied().unwrap_or((false, false));
            for (named, dir) in [(is_file || is_dir, false), (is_dir, true)] {
                if named {
                    keeps.extend(dpkg::dpkg_pattern(rule.glob.as_str(), dir));
                }
            }
        }
        keeps.extend(include);
        let file = dpkg::path_filter_file(previous.map(Vec::as_slice), &exclude, &keeps);
        (counts, file)
    }

    /// The topmost removed entries within `from..to`, each as a group.
    fn roots(&self, from: usize, to: usize) -> Vec<Group> {
        let mut out = Vec::new();
        let mut i = from;
        while i < to {
            match self.planned.get(i).copied().flatten() {
                Some(rule) => {
                    out.push(Group::Files { root: i, rule });
                    i = self.ends.get(i).copied().unwrap_or(to).max(i + 1);
                }
                None => i += 1,
            }
        }
        out
    }

    /// The groups the rules make.
    pub fn rule_groups(&self) -> Vec<Group> {
        self.roots(0, self.flat.entries.len())
    }

    /// A directory group's children groups (the directory itself then stays); `None` for a
    /// group that cannot be split.
    pub fn split(&self, g: &Group) -> Option<Vec<Group>> {
        match g {
            Group::Files { root, .. } => {
                let e = self.flat.entries.get(*root)?;
                if e.kind != EntryKind::Dir {
                    return None;
                }
                let end = self.ends.get(*root).copied()?;
                let kids = self.roots(root + 1, end);
                (!kids.is_empty()).then_some(kids)
            }
            Group::Packages(_) => None,
        }
    }

    /// One line naming the group.
    pub fn describe(&self, g: &Group, rules: &super::rules::Rules) -> String {
        match g {
            Group::Files { root, rule } => {
                let p = self
                    .flat
                    .entries
                    .get(*root)
                    .map(|e| e.path.as_slice())
                    .unwrap_or_default();
                let src = rules
                    .rules
                    .get(*rule)
                    .map(|r| r.source.as_str())
                    .unwrap_or("?");
                format!("/{} ({src})", String::from_utf8_lossy(p))
            }
            Group::Packages(p) => format!("package {}", p.join(" + ")),
        }
    }

    /// The candidate that removes every group in `groups`.
    pub fn candidate(&self, groups: &[&Group]) -> Candidate {
        let n = self.flat.entries.len();
        let mut removed = vec![false; n];
        let mut packages = BTreeSet::new();
        for g in groups {
            match g {
                Group::Files { root, .. } => {
                    let end = self.ends.get(*root).copied().unwrap_or(n).min(n);
                    for j in *root..end {
                        if self.planned.get(j).copied().flatten().is_some() {
                            if let Some(r) = removed.get_mut(j) {
                                *r = true;
                            }
                        }
                    }
                }
                Group::Packages(p) => packages.extend(p.iter().cloned()),
            }
        }
        let mut replace = BTreeMap::new();
        if let (Some(db), false) = (self.db, packages.is_empty()) {
            self.remove_packages(db, &packages, &mut removed);
            replace = db.rewritten(&packages);
        }
        // A hardlink name that stays needs the name carrying its data.
        for (i, e) in self.flat.entries.iter().enumerate() {
            if e.kind == EntryKind::Hardlink && !removed.get(i).copied().unwrap_or(true) {
                if let Some(t) = e.link_target.as_deref().and_then(|t| self.flat.find(t)) {
                    if let Some(r) = removed.get_mut(t) {
                        *r = false;
                    }
                }
            }
        }
        // Directories leading to anything that stays stay too.
        for i in (0..n).rev() {
            if !removed.get(i).copied().unwrap_or(true) {
                if let Some(p) = self.parents.get(i).copied().flatten() {
                    if let Some(r) = removed.get_mut(p) {
                        *r = false;
                    }
                }
            }
        }
        let mut rule_files = BTreeMap::new();
        if let Some(db) = self.db {
            let (counts, file) = self.rule_removals(&removed, &packages);
            rule_files = counts;
            // dpkg's own record of excluded paths; rpm has no such file.
            if let (PackageDb::Dpkg(_), Some(f)) = (db, file) {
                replace.insert(STRIP_CFG.to_vec(), f);
            }
        }
        Candidate {
            removed,
            replace,
            packages,
            rule_files,
        }
    }

    /// Marks the files of `gone` (not shared with a package that stays, conffiles only with
    /// `purge`), their database files (dpkg's info/), and their directories that end up empty.
    fn remove_packages(&self, db: &PackageDb, gone: &BTreeSet<String>, removed: &mut [bool]) {
        let kept: HashSet<&[u8]> = db
            .keys()
            .into_iter()
            .filter(|k| !gone.contains(*k))
            .flat_map(|k| db.files(k).iter().map(Vec::as_slice))
            .collect();
        let mut dirs = Vec::new();
        for key in gone {
            let conf: HashSet<&[u8]> = db.conffiles(key).iter().map(Vec::as_slice).collect();
            for f in db.files(key) {
                if kept.contains(f.as_slice()) || (!self.purge && conf.contains(f.as_slice())) {
                    continue;
                }
                let Some(i) = self.flat.find(f) else { continue };
                match self.flat.entries.get(i).map(|e| e.kind) {
                    Some(EntryKind::Dir) => dirs.push(i),
                    Some(_) => {
                        if let Some(r) = removed.get_mut(i) {
                            *r = true;
                        }
                    }
                    None => {}
                }
            }
        }
        for (i, e) in self.flat.entries.iter().enumerate() {
            if db.goes_with(gone, &e.path) {
                if let Some(r) = removed.get_mut(i) {
                    *r = true;
                }
            }
        }
        // Deepest first, so a parent sees its children's verdict.
        dirs.sort_unstable();
        dirs.dedup();
        for &d in dirs.iter().rev() {
            let end = self.ends.get(d).copied().unwrap_or(d + 1);
            let empty = (d + 1..end).all(|j| removed.get(j).copied().unwrap_or(false));
            if empty {
                if let Some(r) = removed.get_mut(d) {
                    *r = true;
                }
            }
        }
    }
}

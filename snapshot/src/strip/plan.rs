//! Removal groups and what a set of them does to the flattened tree: which entries go, and the
//! edited package database. A group is the unit the loop accepts or rejects: the topmost path
//! a rule removes (with its subtree), or a package with the dependents `--cascade` added.
//! File groups split into their children, so bisection can narrow a failure down to one file;
//! package groups do not (half a package would make the database lie).

use std::collections::{BTreeMap, BTreeSet, HashSet};

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
}

impl Candidate {
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
        Planner {
            flat,
            db,
            parents,
            ends,
            planned,
            purge,
        }
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
        Candidate {
            removed,
            replace,
            packages,
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

//! `decant size`: where an image's bytes are, per package (dpkg or rpm) and per top-level directory,
//! and the largest candidates for removal: what each shipped profile would take away, and the
//! biggest packages that are neither Essential nor required. Works on the flattened image, so
//! a single-layer VM import is rated as well as a layered one.

use std::collections::BTreeMap;

use serde::Serialize;

use super::flat::Flat;
use super::pkgdb::PackageDb;
use super::plan::Planner;
use super::rules::{Rules, PROFILES};
use super::run::owners;
use super::StripError;
use crate::store::Store;

/// How many packages and candidates the report lists.
pub const TOP: usize = 20;

/// One named amount.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Amount {
    pub name: String,
    pub bytes: u64,
    pub files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub image: String,
    pub layers: usize,
    pub compressed: u64,
    pub bytes: u64,
    pub files: u64,
    /// None when the image has no package database (dpkg or rpm).
    pub packages: Option<Vec<Amount>>,
    pub directories: Vec<Amount>,
    pub candidates: Vec<Amount>,
    /// Things the figures do not show (a BerkeleyDB rpm database that is not read).
    pub notes: Vec<String>,
}

fn add(m: &mut BTreeMap<String, (u64, u64)>, k: String, bytes: u64) {
    let s = m.entry(k).or_default();
    s.0 = s.0.saturating_add(bytes);
    s.1 = s.1.saturating_add(1);
}

fn sorted(m: BTreeMap<String, (u64, u64)>) -> Vec<Amount> {
    let mut v: Vec<Amount> = m
        .into_iter()
        .map(|(name, (bytes, files))| Amount { name, bytes, files })
        .collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    v
}

/// Measures image `image`.
pub fn size(store: &Store, image: &str) -> Result<SizeReport, StripError> {
    let rec = store.resolve(image)?;
    let (manifest, _) = store.manifest(&rec)?;
    let layers: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    let compressed = manifest
        .layers()
        .iter()
        .fold(0u64, |a, l| a.saturating_add(l.size()));
    let flat = Flat::read(store, &layers)?;
    let db = PackageDb::from_flat(&flat)?;
    let own = owners(db.as_ref());
    let mut dirs = BTreeMap::new();
    let mut pkgs = BTreeMap::new();
    let mut files = 0u64;
    for e in &flat.entries {
        if e.kind == crate::EntryKind::Dir {
            continue;
        }
        files += 1;
        let top = super::run::top(&e.path);
        add(&mut dirs, top, e.size);
        if db.is_some() {
            let o = own
                .get(&e.path)
                .cloned()
                .unwrap_or_else(|| "(no package)".into());
            add(&mut pkgs, o, e.size);
        }
    }
    let mut candidates = Vec::new();
    for (name, text) in PROFILES {
        let mut r = Rules::default();
        r.profile_text(text, name)?;
        let p = Planner::new(&flat, db.as_ref(), &r, false);
        let groups = p.rule_groups();
        let refs: Vec<_> = groups.iter().collect();
        let c = p.candidate(&refs);
        let n = c
            .removed
            .iter()
            .zip(&flat.entries)
            .filter(|(r, e)| **r && e.kind != crate::EntryKind::Dir)
            .count();
        let bytes = c.removed_bytes(&flat);
        if bytes > 0 || n > 0 {
            candidates.push(Amount {
                name: format!("--profile {name}"),
                bytes,
                files: n as u64,
            });
        }
    }
    let packages = db.as_ref().map(|_| sorted(pkgs));
    if let (Some(d), Some(pk)) = (&db, &packages) {
        // Only leaves: a package others depend on could go only with --cascade.
        let rpm_needed = match d {
            PackageDb::Rpm(r) => Some(r.needed()),
            PackageDb::Dpkg(_) => None,
        };
        let leaf = |name: &str| {
            d.protection(name).is_none()
                && d.state(name).0
                && match &rpm_needed {
                    Some(n) => !n.contains(name),
                    None => d.broken_by(&[name.to_string()].into()).is_empty(),
                }
        };
        for a in pk.iter().filter(|a| leaf(&a.name)).take(TOP) {
            candidates.push(Amount {
                name: format!("--remove-package {}", a.name),
                bytes: a.bytes,
                files: a.files,
            });
        }
    }
    candidates.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    candidates.truncate(TOP);
    Ok(SizeReport {
        image: image.to_string(),
        layers: layers.len(),
        compressed,
        bytes: flat.total_bytes(),
        files,
        packages,
        directories: sorted(dirs),
        candidates,
        notes: super::rpm::unread_note(&flat).into_iter().collect(),
    })
}

//! The package database of an image as plan, run and size see it, whichever manager wrote it:
//! dpkg (status + info/) or rpm (rpmdb.sqlite). An enum rather than a trait object: there are
//! two formats, each with its own reader, and the callers only ever need these few questions.
//! dpkg's behaviour is exactly what it was before rpm was added (same reader, same rewrite).

use std::collections::{BTreeMap, BTreeSet};

use super::dpkg::{Dpkg, INFO, STATUS};
use super::flat::Flat;
use super::rpm::Rpm;
use super::StripError;

/// An image's package database.
#[derive(Debug, Clone)]
pub enum PackageDb {
    Dpkg(Dpkg),
    Rpm(Box<Rpm>),
}

impl PackageDb {
    /// The database of the flattened image (dpkg first, then rpm); `None` when it has neither.
    pub fn from_flat(flat: &Flat) -> Result<Option<PackageDb>, StripError> {
        if let Some(d) = Dpkg::from_flat(flat)? {
            return Ok(Some(PackageDb::Dpkg(d)));
        }
        Ok(Rpm::from_flat(flat)?.map(|r| PackageDb::Rpm(Box::new(r))))
    }

    /// The database's file, for messages (`/var/lib/dpkg/status`).
    pub fn file(&self) -> String {
        let p = match self {
            PackageDb::Dpkg(_) => STATUS,
            PackageDb::Rpm(r) => r.path.as_slice(),
        };
        format!("/{}", String::from_utf8_lossy(p))
    }

    /// Every package key.
    pub fn keys(&self) -> Vec<&String> {
        match self {
            PackageDb::Dpkg(d) => d.packages.keys().collect(),
            PackageDb::Rpm(r) => r.packages.keys().collect(),
        }
    }

    /// The key of the package the user named (key or bare name).
    pub fn find(&self, name: &str) -> Option<&String> {
        match self {
            PackageDb::Dpkg(d) => d
                .packages
                .iter()
                .find(|(k, p)| *k == name || p.name == name)
                .map(|(k, _)| k),
            PackageDb::Rpm(r) => r
                .packages
                .iter()
                .find(|(k, p)| *k == name || p.name == name)
                .map(|(k, _)| k),
        }
    }

    /// Whether the package is installed (as opposed to only recorded), and its state words.
    pub fn state(&self, key: &str) -> (bool, String) {
        match self {
            PackageDb::Dpkg(d) => d
                .packages
                .get(key)
                .map(|p| (p.installed(), p.status.clone()))
                .unwrap_or_default(),
            // rpm records only installed packages.
            PackageDb::Rpm(r) => (r.packages.contains_key(key), "installed".into()),
        }
    }

    /// Why the package may not go without `--force`, if so.
    pub fn protection(&self, key: &str) -> Option<&'static str> {
        match self {
            PackageDb::Dpkg(d) => {
                let p = d.packages.get(key)?;
                match (p.essential, p.protected()) {
                    (true, _) => Some("Essential"),
                    (false, true) => Some("Priority: required"),
                    _ => None,
                }
            }
            PackageDb::Rpm(r) => r.protection(key),
        }
    }

    /// Why packages cannot be removed from this database at all, if so.
    pub fn removable(&self) -> Result<(), StripError> {
        match self {
            PackageDb::Dpkg(_) => Ok(()),
            PackageDb::Rpm(r) => r.writable().map_err(|why| StripError::Rpm {
                file: self.file(),
                why: format!("cannot be rewritten ({why}); removing rpm packages is refused"),
            }),
        }
    }

    /// Packages left with an unmet dependency when `gone` goes: (dependent, what it loses).
    pub fn broken_by(&self, gone: &BTreeSet<String>) -> Vec<(String, String)> {
        match self {
            PackageDb::Dpkg(d) => d.broken_by(gone),
            PackageDb::Rpm(r) => r.broken_by(gone),
        }
    }

    /// The package's files and directories (no leading `/`).
    pub fn files(&self, key: &str) -> &[Vec<u8>] {
        match self {
            PackageDb::Dpkg(d) => d.packages.get(key).map(|p| p.files.as_slice()),
            PackageDb::Rpm(r) => r.packages.get(key).map(|p| p.files.as_slice()),
        }
        .unwrap_or_default()
    }

    /// The package's configuration files (kept unless `--purge`).
    pub fn conffiles(&self, key: &str) -> &[Vec<u8>] {
        match self {
            PackageDb::Dpkg(d) => d.packages.get(key).map(|p| p.conffiles.as_slice()),
            PackageDb::Rpm(r) => r.packages.get(key).map(|p| p.conffiles.as_slice()),
        }
        .unwrap_or_default()
    }

    /// Whether `path` is a database file that goes with the packages of `gone`: their dpkg
    /// info/ files; for rpm, the SQLite shared-memory index of the old file (a new database
    /// replaces it; the empty write-ahead log may stay).
    pub fn goes_with(&self, gone: &BTreeSet<String>, path: &[u8]) -> bool {
        match self {
            PackageDb::Dpkg(d) => path.strip_prefix(INFO).is_some_and(|name| {
                !name.contains(&b'/')
                    && gone
                        .iter()
                        .filter_map(|k| d.packages.get(k))
                        .any(|p| Dpkg::is_info_of(p, name))
            }),
            PackageDb::Rpm(r) => {
                !gone.is_empty() && path.strip_prefix(r.path.as_slice()) == Some(b"-shm".as_slice())
            }
        }
    }

    /// New content for the database files once `gone` is removed.
    pub fn rewritten(&self, gone: &BTreeSet<String>) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = BTreeMap::new();
        match self {
            PackageDb::Dpkg(d) => {
                m.insert(STATUS.to_vec(), d.status_without(gone));
            }
            PackageDb::Rpm(r) => {
                m.insert(r.path.clone(), r.without(gone));
            }
        }
        m
    }
}

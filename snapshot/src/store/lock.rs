//! The store's two lock files, kept in `.decant/` where OCI tools never look.
//!
//! - `index.lock`: held exclusively for every read-modify-write of `index.json`, so concurrent
//!   taggers and importers never lose each other's updates.
//! - `gc.lock`: held *shared* by every store handle that has blobs on disk which no index entry
//!   reaches yet (from the first blob it writes until `add_image` indexes them), and
//!   *exclusively* by garbage collection. GC therefore waits for in-flight imports instead of
//!   deleting their blobs.
//!
//! Both are `flock(2)` locks through std's `File::lock*` (stable since Rust 1.89): they belong to
//! the open file description, so they vanish when a process dies, even by SIGKILL, and two
//! handles in one process exclude each other like two processes do. Lock order is always
//! gc.lock before index.lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::StoreError;

/// How a lock is to be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; dropping it unlocks (closing the file releases the flock).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Opens (creating if needed) the lock file at `path` and blocks until the lock is held.
pub fn lock(path: &Path, mode: Mode) -> Result<LockGuard, StoreError> {
    let file = open(path)?;
    let r = match mode {
        Mode::Shared => file.lock_shared(),
        Mode::Exclusive => file.lock(),
    };
    r.map_err(|e| StoreError::io("lock", path, e))?;
    Ok(LockGuard { _file: file })
}

/// Like [`lock`], but gives `None` at once when another holder is in the way.
pub fn try_lock(path: &Path, mode: Mode) -> Result<Option<LockGuard>, StoreError> {
    let file = open(path)?;
    let r = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match r {
        Ok(()) => Ok(Some(LockGuard { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("lock", path, e)),
    }
}

fn open(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io("open lock file", path, e))
}

/// Paths of decant's private files inside a store root.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// `.decant/`: our private directory; skopeo, umoci and oci-image-tool ignore it.
    pub fn private(&self) -> PathBuf {
        self.root.join(".decant")
    }
    pub fn tmp(&self) -> PathBuf {
        self.private().join("tmp")
    }
    pub fn index_lock(&self) -> PathBuf {
        self.private().join("index.lock")
    }
    pub fn gc_lock(&self) -> PathBuf {
        self.private().join("gc.lock")
    }
    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }
    pub fn layout(&self) -> PathBuf {
        self.root.join("oci-layout")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_exclusive_exclude_each_other() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("l");
        let a = lock(&p, Mode::Shared).unwrap();
        let b = try_lock(&p, Mode::Shared).unwrap();
        assert!(b.is_some(), "two shared holders coexist");
        assert!(try_lock(&p, Mode::Exclusive).unwrap().is_none());
        drop(a);
        drop(b);
        let x = try_lock(&p, Mode::Exclusive).unwrap();
        assert!(x.is_some());
        assert!(try_lock(&p, Mode::Shared).unwrap().is_none());
    }
}

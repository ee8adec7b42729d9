//! The unpacked-layer cache: each layer blob is unpacked once, with overlay whiteouts, into
//! `<store>/.decant/layers/<digest-hex>/`, and a container's rootfs is an overlay of these
//! directories plus its own upper dir.
//!
//! A root unpack and a rootless one differ (owners, device nodes, `trusted.` against `user.`
//! overlay xattrs, which only the matching kind of overlay mount reads), so a rootless unpack
//! lives beside it as `<digest-hex>.rootless/`; one made inside a rootless user's namespace
//! with subordinate id ranges (owners set within those ranges) as `<digest-hex>.<tag>/`, the
//! tag naming the ranges.
//!
//! Concurrency and crashes: a layer is unpacked into `.tmp-<name>/` under an exclusive flock on
//! `<name>.lock`, the blob's digest is checked on the bytes actually unpacked, and the finished
//! directory is synced and renamed into place; so a final directory is always complete, callers
//! racing on one layer wait for the first, and a `.tmp-` directory left by a crash is removed by
//! the next caller holding the lock. What the unpack could not reproduce (rootless) is kept in
//! `<name>.skipped`, one line each.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::reader::LayerReader;
use super::unpack::{remove_tree, unpack, UnpackError, UnpackOptions, WhiteoutMode};
use crate::store::blobs::{digest_hex, hex};
use crate::store::{Store, StoreError};

/// Attempts to take a layer's lock when its lock file keeps being replaced under us.
const LOCK_TRIES: usize = 100;

/// Why the cache could not give a layer. One line naming the layer or path.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer cache: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: Box<UnpackError>,
    },
    #[error("layer {digest}: blob {}: {source}", path.display())]
    Blob {
        digest: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("layer {digest}: blob {} has content digest sha256:{actual}", path.display())]
    DigestMismatch {
        digest: String,
        path: PathBuf,
        actual: String,
    },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CacheError + 'p {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The cache of unpacked layers of one store.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

/// A held per-layer lock (flock, released when dropped or when the process dies).
struct Held {
    _file: File,
}

/// Counts and hashes what the layer reader consumes from the blob.
struct Hashing {
    inner: File,
    hasher: Sha256,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl LayerCache {
    /// The cache of `store` (created empty if needed).
    pub fn open(store: &Store) -> Result<LayerCache, CacheError> {
        let dir = store.paths.private().join("layers");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(LayerCache { dir })
    }

    /// The directory holding the unpacked layers.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn name(layer_digest: &str, rootless: bool) -> Result<String, CacheError> {
        let hex = digest_hex(layer_digest)?;
        Ok(if rootless {
            format!("{hex}.rootless")
        } else {
            hex.to_string()
        })
    }

    /// The name of a mapped rootless unpack: `<hex>.<tag>`, the tag made by the caller from
    /// the namespace's id ranges (letters, digits and `-`, at most 64).
    fn mapped_name(layer_digest: &str, tag: &str) -> Result<String, CacheError> {
        let hex = digest_hex(layer_digest)?;
        let ok = !tag.is_empty()
            && tag.len() <= 64
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            // Escaped: the message stays one line whatever the tag holds.
            let shown = PathBuf::from(tag.escape_debug().to_string());
            return Err(io_err("name", &shown)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a mapping tag (a-z, 0-9, '-', at most 64)",
            )));
        }
        Ok(format!("{hex}.{tag}"))
    }

    /// Where layer `layer_digest` is (or would be) unpacked.
    pub fn path(&self, layer_digest: &str, rootless: bool) -> Result<PathBuf, CacheError> {
        Ok(self.dir.join(Self::name(layer_digest, rootless)?))
    }

    /// Where layer `layer_digest` is (or would be) unpacked by `ensure_mapped` with `tag`.
    pub fn path_mapped(&self, layer_digest: &str, tag: &str) -> Result<PathBuf, CacheError> {
        Ok(self.dir.join(Self::mapped_name(layer_digest, tag)?))
    }

    /// The unpacked directory of layer `layer_digest` (a blob of `store`), unpacking it first
    /// if no complete copy exists. Callers racing on one layer wait for the one unpacking.
    pub fn ensure(
        &self,
        store: &Store,
        layer_digest: &str,
        rootless: bool,
    ) -> Result<PathBuf, CacheError> {
        let name = Self::name(layer_digest, rootless)?;
        self.ensure_named(store, layer_digest, &name, rootless)
    }

    /// `ensure` for a rootless user with subordinate id ranges, called from inside its user
    /// namespace as that namespace's root (see runtime's `userns`): the unpack sets each
    /// file's owner within the namespace's ranges, so a file of uid 33 in the layer is uid 33
    /// in a container run under the same mapping. `tag` names the mapping: another mapping
    /// (ranges changed) unpacks anew rather than read owners meant for different ids.
    pub fn ensure_mapped(
        &self,
        store: &Store,
        layer_digest: &str,
        tag: &str,
    ) -> Result<PathBuf, CacheError> {
        let name = Self::mapped_name(layer_digest, tag)?;
        self.ensure_named(store, layer_digest, &name, true)
    }

    fn ensure_named(
        &self,
        store: &Store,
        layer_digest: &str,
        name: &str,
        rootless: bool,
    ) -> Result<PathBuf, CacheError> {
        let name = name.to_string();
        let done = self.dir.join(&name);
        if done.is_dir() {
            return Ok(done);
        }
        let _held = self.lock(&name, true)?;
        if done.is_dir() {
            return Ok(done);
        }
        let tmp = self.dir.join(format!(".tmp-{name}"));
        // Left by a crashed unpack: we hold the lock, so nobody is writing it.
        remove_tree(&tmp).map_err(io_err("remove the stale", &tmp))?;
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let result = self.fill(store, layer_digest, rootless, &tmp);
        let skipped = match result {
            Ok(s) => s,
            Err(e) => {
                // Best effort: a leftover is removed by the next caller anyway.
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        };
        let notes = self.dir.join(format!("{name}.skipped"));
        if skipped.is_empty() {
            match fs::remove_file(&notes) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &notes)(e))
                }
                _ => {}
            }
        } else {
            let mut text = skipped.join("\n");
            text.push('\n');
            fs::write(&notes, text).map_err(io_err("write", &notes))?;
        }
        fs::rename(&tmp, &done).map_err(io_err("rename into place", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &self.dir))?;
        Ok(done)
    }

    /// Unpacks the blob into `tmp` and syncs it; returns the report's skipped lines.
    fn fill(
        &self,
        store: &Store,
        digest: &str,
        rootless: bool,
        tmp: &Path,
    ) -> Result<Vec<String>, CacheError> {
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", tmp))?;
        let blob = store.blob_path(digest)?;
        let file = File::open(&blob).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CacheError::Store(StoreError::BlobMissing {
                    digest: digest.to_string(),
                    path: blob.clone(),
                })
            } else {
                CacheError::Blob {
                    digest: digest.to_string(),
                    path: blob.clone(),
                    source: e,
                }
            }
        })?;
        let mut hashing = Hashing {
            inner: file,
            hasher: Sha256::new(),
        };
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            rootless,
            keep_xattrs: true,
        };
        let blob_err = |source| CacheError::Blob {
            digest: digest.to_string(),
            path: blob.clone(),
            source,
        };
        let report = {
            let mut reader = LayerReader::new(&mut hashing).map_err(blob_err)?;
            unpack(&mut reader, tmp, &opts).map_err(|e| CacheError::Unpack {
                digest: digest.to_string(),
                source: Box::new(e),
            })?
        };
        // Whatever the decompressor left unread still belongs to the blob's digest.
        io::copy(&mut hashing, &mut io::sink()).map_err(blob_err)?;
        let actual = hex(&hashing.hasher.finalize());
        if digest_hex(digest)? != actual {
            return Err(CacheError::DigestMismatch {
                digest: digest.to_string(),
                path: blob,
                actual,
            });
        }
        let d = File::open(tmp).map_err(io_err("open", tmp))?;
        // SAFETY: plain syscall on the live fd of `d`.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io_err("sync", tmp)(io::Error::last_os_error()));
        }
        Ok(report.skipped)
    }

    /// Takes `<name>.lock`. The file may be removed by `remove_unused` between our open and our
    /// flock; then the lock we hold guards nothing, so we retry on the new file.
    fn lock(&self, name: &str, wait: bool) -> Result<Option<Held>, CacheError> {
        let path = self.dir.join(format!("{name}.lock"));
        for _ in 0..LOCK_TRIES {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open lock file", &path))?;
            if wait {
                file.lock().map_err(io_err("lock", &path))?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
                }
            }
            let held = file.metadata().map_err(io_err("stat", &path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(Held { _file: file }))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &path)(e)),
            }
        }
        Err(io_err("lock", &path)(io::Error::other(format!(
            "lock file replaced {LOCK_TRIES} times while waiting"
        ))))
    }

    /// Removes every unpacked layer whose digest (`sha256:<hex>`) is not in `keep`, and what
    /// crashed unpacks left. Layers being unpacked right now are left alone. Returns the bytes
    /// freed. Callers put in `keep` every layer of every image a container may still use: a
    /// layer directory removed here disappears from under any overlay mount built on it.
    pub fn remove_unused(&self, keep: &HashSet<String>) -> Result<u64, CacheError> {
        let rd = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(io_err("list", &self.dir))?;
            if let Some(n) = ent.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        let mut freed = 0u64;
        for n in &names {
            // Each layer is handled once, through its lock file.
            let Some(name) = n.strip_suffix(".lock") else {
                continue;
            };
            // `<hex>`, `<hex>.rootless` or `<hex>.<mapping tag>`.
            let hexpart = name.split_once('.').map_or(name, |(h, _)| h);
            if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let done = self.dir.join(name);
            let in_use = keep.contains(&format!("sha256:{hexpart}")) || keep.contains(hexpart);
            if in_use && done.is_dir() {
                // Kept; only a crash leftover can go, and only under the lock.
                if let Some(_held) = self.lock(name, false)? {
                    let tmp = self.dir.join(format!(".tmp-{name}"));
                    freed += remove_tree(&tmp).map_err(io_err("remove", &tmp))?;
                }
                continue;
            }
            let Some(_held) = self.lock(name, false)? else {
                continue;
            };
            for p in [self.dir.join(format!(".tmp-{name}")), done.clone()] {
                freed += remove_tree(&p).map_err(io_err("remove", &p))?;
            }
            for p in [
                self.dir.join(format!("{name}.skipped")),
                self.dir.join(format!("{name}.lock")),
            ] {
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("remove", &p)(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(freed)
    }

    /// What the unpack of a cached layer could not reproduce (empty when it was exact).
    pub fn skipped(&self, layer_digest: &str, rootless: bool) -> Result<Vec<String>, CacheError> {
        let p = self
            .dir
            .join(format!("{}.skipped", Self::name(layer_digest, rootless)?));
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_tags_name_their_own_directory_and_hostile_tags_are_refused() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            LayerCache::mapped_name(&d, "subid-100000-65536-100000-65536").unwrap(),
            format!("{}.subid-100000-65536-100000-65536", "ab".repeat(32))
        );
        let long = "a".repeat(65);
        for bad in ["", "../x", "a/b", "A", "x.y", long.as_str(), "rootless\n"] {
            let e = LayerCache::mapped_name(&d, bad).unwrap_err().to_string();
            assert!(
                e.contains("not a mapping tag") && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
        assert!(LayerCache::mapped_name("sha256:zz", "subid-1-2-3-4").is_err());
    }
}

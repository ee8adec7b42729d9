//! Content-addressed blobs under `blobs/sha256/<hex>`: digest syntax, the streaming
//! [`BlobWriter`], verified reads, and the temp files everything is written through.
//!
//! Every write goes to a temp file in `.decant/tmp/`, is fsynced, then renamed into place, so a
//! blob path only ever holds complete, verified content. Each temp file is `flock`ed by its
//! writer for its whole life: a cleaner that can lock one knows its writer is gone (even after
//! SIGKILL) and may delete it, with no clock or age guess involved.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use super::lock::{self, LockGuard, Mode, Paths};
use super::StoreError;

/// Checks `sha256:<64 lower-case hex>` and returns the hex part. Nothing else can name a blob,
/// so no digest can smuggle `/` or `..` into a path.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    let bad = |why: &'static str| StoreError::BadDigest {
        digest: digest.chars().take(100).collect(),
        why,
    };
    match digest.split_once(':') {
        Some(("sha256", hex)) => {
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                Ok(hex)
            } else {
                Err(bad(
                    "a sha256 digest needs exactly 64 lower-case hex digits",
                ))
            }
        }
        Some((_, _)) => Err(bad("only sha256 digests are supported")),
        None => Err(bad("expected sha256:<64 hex digits>")),
    }
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Tracks the blobs this store handle wrote that no index entry reaches yet, and holds the
/// shared `gc.lock` while there are any (see `lock.rs`).
#[derive(Debug)]
pub(crate) struct Pins {
    gc_lock: PathBuf,
    state: Mutex<PinState>,
}

#[derive(Debug, Default)]
pub(crate) struct PinState {
    guard: Option<LockGuard>,
    open_writers: usize,
    pub(crate) pending: HashSet<String>,
}

impl PinState {
    fn release_if_idle(&mut self) {
        if self.open_writers == 0 && self.pending.is_empty() {
            self.guard = None;
        }
    }

    /// Drops this handle's shared lock so the same handle can take gc.lock exclusively;
    /// the caller keeps `pending` safe itself.
    pub(crate) fn suspend(&mut self) {
        self.guard = None;
    }

    pub(crate) fn resume(&mut self, gc_lock: &Path) -> Result<(), StoreError> {
        if (self.open_writers > 0 || !self.pending.is_empty()) && self.guard.is_none() {
            self.guard = Some(lock::lock(gc_lock, Mode::Shared)?);
        }
        Ok(())
    }
}

impl Pins {
    pub(crate) fn new(gc_lock: PathBuf) -> Pins {
        Pins {
            gc_lock,
            state: Mutex::new(PinState::default()),
        }
    }

    pub(crate) fn gc_lock_path(&self) -> &Path {
        &self.gc_lock
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, PinState> {
        // A panic elsewhere while holding the mutex leaves consistent data (plain counters and
        // sets), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a writer (or an operation that needs blobs kept) and takes the shared lock.
    pub(crate) fn writer_started(&self) -> Result<(), StoreError> {
        let mut st = self.state();
        if st.guard.is_none() {
            st.guard = Some(lock::lock(&self.gc_lock, Mode::Shared)?);
        }
        st.open_writers += 1;
        Ok(())
    }

    pub(crate) fn writer_finished(&self) {
        let mut st = self.state();
        st.open_writers = st.open_writers.saturating_sub(1);
        st.release_if_idle();
    }

    /// Called once the index reaches `digests`: they no longer need protecting.
    pub(crate) fn indexed(&self, digests: &[String]) {
        let mut st = self.state();
        for d in digests {
            st.pending.remove(d);
        }
        st.release_if_idle();
    }
}

/// A temp file in `.decant/tmp/`, locked by us for as long as it lives, removed on drop
/// unless persisted.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    done: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Most attempts to create a temp file; each only fails when a cleaner removed it between
/// our create and our lock, which cannot repeat for long.
const TEMP_ATTEMPTS: usize = 16;

impl TempFile {
    pub(crate) fn new(paths: &Paths, kind: &str) -> Result<TempFile, StoreError> {
        let dir = paths.tmp();
        for _ in 0..TEMP_ATTEMPTS {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{kind}-{}-{n}-{nanos}", std::process::id()));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("create temp file", &path, e)),
            };
            file.lock()
                .map_err(|e| StoreError::io("lock temp file", &path, e))?;
            // A cleaner may have locked and unlinked it before our lock: check that the name
            // still leads to our inode now that we hold the lock.
            let ours = file
                .metadata()
                .map_err(|e| StoreError::io("stat", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                    return Ok(TempFile {
                        path,
                        file,
                        done: false,
                    })
                }
                _ => continue,
            }
        }
        Err(StoreError::io(
            "create temp file",
            &dir,
            io::Error::other("temp files keep disappearing (a cleaner races us)"),
        ))
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsyncs and renames the file to `dest`, then fsyncs `dest`'s directory.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), StoreError> {
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("fsync", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| StoreError::io("rename temp file to", dest, e))?;
        self.done = true;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a leftover is locked by nobody and the next cleaner removes it.
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Writes `bytes` to `dest` atomically (temp file, fsync, rename, fsync directory).
pub(crate) fn write_atomic(paths: &Paths, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut t = TempFile::new(paths, "write")?;
    let tp = t.path.clone();
    t.file()
        .write_all(bytes)
        .map_err(|e| StoreError::io("write", &tp, e))?;
    t.persist(dest)
}

/// Removes temp files whose writer is gone (their flock is free). Returns how many.
pub(crate) fn clean_temp(paths: &Paths) -> Result<usize, StoreError> {
    let dir = paths.tmp();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("list", &dir, e)),
    };
    let mut removed = 0;
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("list", &dir, e))?;
        let path = entry.path();
        let Ok(f) = File::open(&path) else { continue };
        match f.try_lock() {
            Ok(()) => {
                let same = match (f.metadata(), fs::symlink_metadata(&path)) {
                    (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                    _ => false,
                };
                if same && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
            Err(_) => continue,
        }
    }
    Ok(removed)
}

/// Streams a blob into the store while hashing it. `commit` verifies and moves it into
/// `blobs/sha256/`; dropping it uncommitted removes the temp file. While it lives (and after
/// commit, until `add_image` indexes the blob) garbage collection leaves the store alone.
#[derive(Debug)]
pub struct BlobWriter {
    temp: Option<TempFile>,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
    pins: Arc<Pins>,
}

impl BlobWriter {
    pub(crate) fn new(paths: &Paths, pins: Arc<Pins>) -> Result<BlobWriter, StoreError> {
        pins.writer_started()?;
        let temp = match TempFile::new(paths, "blob") {
            Ok(t) => t,
            Err(e) => {
                pins.writer_finished();
                return Err(e);
            }
        };
        Ok(BlobWriter {
            temp: Some(temp),
            hasher: Sha256::new(),
            size: 0,
            blobs: paths.blobs(),
            pins,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// fsyncs, checks the digest against `expected` when given, and moves the blob into
    /// place. A blob that already exists is kept as is (same digest, same bytes).
    /// Returns the digest (`sha256:..`) and size.
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64), StoreError> {
        let hasher = std::mem::take(&mut self.hasher);
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        let temp = self.temp.take().ok_or_else(|| {
            StoreError::io(
                "commit",
                &self.blobs,
                io::Error::other("blob writer already used"),
            )
        })?;
        if let Some(want) = expected {
            digest_hex(want)?;
            if want != digest {
                return Err(StoreError::DigestMismatch {
                    path: temp.path.clone(),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        let hexpart = digest_hex(&digest)?;
        let dest = self.blobs.join(hexpart);
        // Rename under the pin mutex, so a gc from this same handle either sees the blob as
        // pending or does not see it at all.
        let mut st = self.pins.state();
        if dest.exists() {
            drop(temp);
        } else {
            temp.persist(&dest)?;
        }
        st.pending.insert(digest.clone());
        drop(st);
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self
            .temp
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = t.file().write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.hasher.update(written);
        self.size = self.size.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.temp.as_mut() {
            Some(t) => t.file().flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.temp = None;
        self.pins.writer_finished();
    }
}

/// Reads a whole blob, refusing more than `max` bytes, and checks its sha256.
pub(crate) fn read_verified(blobs: &Path, digest: &str, max: usize) -> Result<Vec<u8>, StoreError> {
    let path = blobs.join(digest_hex(digest)?);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::BlobMissing {
                digest: digest.to_string(),
                path,
            })
        }
        Err(e) => return Err(StoreError::io("open blob", &path, e)),
    };
    let len = f
        .metadata()
        .map_err(|e| StoreError::io("stat blob", &path, e))?
        .len();
    if len > max as u64 {
        return Err(StoreError::BlobTooLarge {
            path,
            size: len,
            max,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(max).min(max));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| StoreError::io("read blob", &path, e))?;
    if buf.len() > max {
        return Err(StoreError::BlobTooLarge {
            path,
            size: buf.len() as u64,
            max,
        });
    }
    let actual = sha256_digest(&buf);
    if actual != digest {
        return Err(StoreError::DigestMismatch {
            path,
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(buf)
}

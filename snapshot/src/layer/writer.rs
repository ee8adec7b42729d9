//! The layer writer: turns `Entry`s in path order into a POSIX pax tar (ustar headers plus `x`
//! extended headers only where ustar cannot say it; no GNU extensions), streamed through the
//! compression stage. Every rule a layer must follow (no duplicates, numeric ids, whiteout
//! names refused on import, xattr filtering, reproducible bytes) is enforced here so every source
//! of files gets it the same way.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::compress::{Compression, Compressor};
use super::entry::{path_order, Entry, EntryKind, FileTree, Timestamp};
use super::pax;
use super::reader::WHITEOUT_PREFIX;

/// How a layer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// None: the compression's default (`Compression::default_level`).
    pub level: Option<i32>,
    /// Compression threads; default: the machine's available parallelism.
    pub threads: usize,
    /// false: drop `security.selinux` (the target's policy will label files itself).
    pub keep_selinux: bool,
    /// false (import): a path component starting with `.wh.` is an error, as it would read as a
    /// whiteout. true (commit, copying layers): whiteouts pass through.
    pub allow_whiteouts: bool,
    /// SOURCE_DATE_EPOCH / --timestamp: later mtimes become this.
    pub clamp_mtime: Option<i64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            keep_selinux: false,
            allow_whiteouts: false,
            clamp_mtime: None,
        }
    }
}

/// What a finished layer is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerSummary {
    /// `sha256:<hex>` of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as written (manifest layer digest).
    pub digest: String,
    /// Bytes of the blob as written.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// Entries written (link entries count; the end-of-archive blocks do not).
    pub entries: u64,
    pub media_type: &'static str,
    /// One human line per thing left out because a layer cannot carry it.
    pub skipped: Vec<String>,
}

/// Why a layer could not be written. Each message is one line naming the entry.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path}: duplicate or unsorted path (previous entry was {prev})")]
    Unsorted { path: String, prev: String },
    #[error("layer entry {path}: a name starting with \".wh.\" would read as a whiteout and cannot be stored in a layer")]
    Whiteout { path: String },
    #[error("layer entry {path}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer entry {path}: {kind} has no link target")]
    MissingLinkTarget { path: String, kind: &'static str },
    #[error("layer entry {path}: device node has no device numbers")]
    MissingDevice { path: String },
    #[error("layer entry {path}: content ended after {got} of {want} bytes")]
    ShortContent { path: String, got: u64, want: u64 },
    #[error("layer entry {path}: reading content at byte {offset}: {source}")]
    ReadContent {
        path: String,
        offset: u64,
        source: io::Error,
    },
    #[error("layer entry {path}: writing the layer: {source}")]
    Write { path: String, source: io::Error },
    #[error("layer: finishing the layer after {entries} entries: {source}")]
    Finish { entries: u64, source: io::Error },
    #[error("layer: setting up {kind:?} compression: {source}")]
    Setup {
        kind: Compression,
        source: io::Error,
    },
    #[error("layer: reading the source tree after {after}: {source}")]
    Tree { after: String, source: io::Error },
}

/// Largest value of an 8-byte octal ustar field (uid, gid, devmajor, devminor).
const MAX_OCTAL8: u64 = 0o7777777;
/// Largest value of a 12-byte octal ustar field (size, mtime).
const MAX_OCTAL12: u64 = 0o77777777777;

/// Bytes read from a file's content per call; also the copy buffer size.
const COPY_BUF: usize = 256 * 1024;

/// Writes a layer blob. `W` gets the compressed bytes; call `finish` to get it back.
pub struct LayerWriter<W: Write + Send> {
    state: Result<Compressor<W>, (Compression, Option<io::Error>)>,
    opts: LayerOptions,
    prev: Option<Vec<u8>>,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    skipped: Vec<String>,
    copy: Vec<u8>,
}

impl<W: Write + Send> LayerWriter<W> {
    pub fn new(out: W, opts: LayerOptions) -> Self {
        let level = opts
            .level
            .unwrap_or_else(|| opts.compression.default_level());
        let state = Compressor::new(out, opts.compression, level, opts.threads)
            .map_err(|e| (opts.compression, Some(e)));
        LayerWriter {
            state,
            opts,
            prev: None,
            links: HashMap::new(),
            entries: 0,
            skipped: Vec::new(),
            copy: Vec::new(),
        }
    }

    /// Appends one entry; `content` must yield `entry.size` bytes for a regular file that carries
    /// data (it is not read for anything else, nor for a later name of a hardlinked file).
    pub fn append(&mut self, entry: &Entry, content: &mut dyn Read) -> Result<(), LayerError> {
        let path = entry.display_path();
        self.check_path(entry, &path)?;

        let mut kind = entry.kind;
        let mut link: Option<Vec<u8>> = entry.link_target.clone();
        if kind == EntryKind::File {
            if let Some(key) = entry.hardlink_key {
                match self.links.get(&key) {
                    Some(first) => {
                        kind = EntryKind::Hardlink;
                        link = Some(first.clone());
                    }
                    None => {
                        self.links.insert(key, entry.path.clone());
                    }
                }
            }
        }
        let typeflag = match kind {
            EntryKind::File => b'0',
            EntryKind::Hardlink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        };
        if matches!(kind, EntryKind::Hardlink | EntryKind::Symlink) {
            let ok = link
                .as_ref()
                .is_some_and(|l| !l.is_empty() && !l.contains(&0));
            if !ok {
                return Err(LayerError::MissingLinkTarget {
                    path,
                    kind: if kind == EntryKind::Symlink {
                        "symlink"
                    } else {
                        "hardlink"
                    },
                });
            }
        }
        let device = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                let (major, minor) = entry
                    .device
                    .ok_or_else(|| LayerError::MissingDevice { path: path.clone() })?;
                if u64::from(major) > MAX_OCTAL8 || u64::from(minor) > MAX_OCTAL8 {
                    self.skipped.push(format!(
                        "{path}: device {major}:{minor} does not fit a tar header; left out"
                    ));
                    self.prev = Some(entry.path.clone());
                    return Ok(());
                }
                Some((major, minor))
            }
            _ => None,
        };
        let size = if kind == EntryKind::File {
            entry.size
        } else {
            0
        };

        let mut name = entry.path.clone();
        if kind == EntryKind::Dir {
            name.push(b'/');
        }
        let mtime = self.clamp(entry.mtime);

        let mut records = Vec::new();
        let mut hdr = tar::Header::new_ustar();
        let fits_name = {
            let u = hdr.as_ustar_mut().ok_or_else(|| LayerError::InvalidPath {
                path: path.clone(),
                reason: "internal: ustar header unavailable",
            })?;
            set_name(&mut u.name, &mut u.prefix, &name)
        };
        if !fits_name || std::str::from_utf8(&name).is_err() {
            pax::push_record(&mut records, b"path", &name);
        }
        if let Some(l) = link.as_deref() {
            let fits = l.len() <= 100 && std::str::from_utf8(l).is_ok();
            if let Some(u) = hdr.as_ustar_mut() {
                let n = l.len().min(100);
                u.linkname[..n].copy_from_slice(&l[..n]);
            }
            if !fits {
                pax::push_record(&mut records, b"linkpath", l);
            }
        }
        hdr.set_mode(entry.mode & 0o7777);
        for (id, key, set) in [
            (
                entry.uid,
                &b"uid"[..],
                tar::Header::set_uid as fn(&mut tar::Header, u64),
            ),
            (entry.gid, &b"gid"[..], tar::Header::set_gid),
        ] {
            if u64::from(id) > MAX_OCTAL8 {
                set(&mut hdr, 0);
                pax::push_record(&mut records, key, id.to_string().as_bytes());
            } else {
                set(&mut hdr, u64::from(id));
            }
        }
        if size > MAX_OCTAL12 {
            pax::push_record(&mut records, b"size", size.to_string().as_bytes());
            hdr.set_size(0);
        } else {
            hdr.set_size(size);
        }
        let secs_fit = u64::try_from(mtime.secs).is_ok_and(|s| s <= MAX_OCTAL12);
        if !secs_fit || mtime.nanos != 0 {
            pax::push_record(&mut records, b"mtime", pax::format_time(mtime).as_bytes());
        }
        hdr.set_mtime(if secs_fit {
            u64::try_from(mtime.secs).unwrap_or(0)
        } else {
            0
        });
        hdr.set_entry_type(tar::EntryType::new(typeflag));
        if let Some((major, minor)) = device {
            if let Some(u) = hdr.as_ustar_mut() {
                octal8(&mut u.dev_major, u64::from(major));
                octal8(&mut u.dev_minor, u64::from(minor));
            }
        }
        self.push_xattrs(entry, &path, &mut records);
        hdr.set_cksum();

        if !records.is_empty() {
            let mut x = tar::Header::new_ustar();
            if let Some(u) = x.as_ustar_mut() {
                let n = b"././@PaxHeader";
                u.name[..n.len()].copy_from_slice(n);
            }
            x.set_mode(0o644);
            x.set_uid(0);
            x.set_gid(0);
            x.set_mtime(0);
            x.set_size(records.len() as u64);
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_cksum();
            self.emit(&path, x.as_bytes())?;
            self.emit(&path, &records)?;
            self.pad(&path, records.len() as u64)?;
        }
        self.emit(&path, hdr.as_bytes())?;
        if size > 0 {
            self.copy_content(&path, size, content)?;
            self.pad(&path, size)?;
        }
        self.entries += 1;
        self.prev = Some(entry.path.clone());
        Ok(())
    }

    /// Ends the archive (two zero blocks), drains the compressors and returns the output.
    pub fn finish(mut self) -> Result<(W, LayerSummary), LayerError> {
        let entries = self.entries;
        self.emit("(end of archive)", &[0u8; 1024])?;
        let comp = match self.state {
            Ok(c) => c,
            Err((kind, e)) => {
                return Err(LayerError::Setup {
                    kind,
                    source: e.unwrap_or_else(|| io::Error::other("failed earlier")),
                })
            }
        };
        let (out, d) = comp
            .finish()
            .map_err(|source| LayerError::Finish { entries, source })?;
        Ok((
            out,
            LayerSummary {
                diff_id: d.diff_id,
                digest: d.digest,
                size: d.size,
                tar_size: d.tar_size,
                entries,
                media_type: self.opts.compression.media_type(),
                skipped: self.skipped,
            },
        ))
    }

    fn check_path(&self, entry: &Entry, path: &str) -> Result<(), LayerError> {
        let bad = |reason| {
            Err(LayerError::InvalidPath {
                path: path.to_string(),
                reason,
            })
        };
        let p = &entry.path;
        if p.is_empty() {
            return bad("empty path");
        }
        if p.contains(&0) {
            return bad("contains a NUL byte");
        }
        if p.first() == Some(&b'/') || p.last() == Some(&b'/') {
            return bad("leading or trailing '/'");
        }
        for c in p.split(|&b| b == b'/') {
            if c.is_empty() || c == b"." || c == b".." {
                return bad("empty, '.' or '..' component");
            }
            if !self.opts.allow_whiteouts && c.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(LayerError::Whiteout {
                    path: path.to_string(),
                });
            }
        }
        if let Some(prev) = &self.prev {
            if path_order(prev, p) != std::cmp::Ordering::Less {
                return Err(LayerError::Unsorted {
                    path: path.to_string(),
                    prev: format!("/{}", String::from_utf8_lossy(prev)),
                });
            }
        }
        Ok(())
    }

    fn clamp(&self, t: Timestamp) -> Timestamp {
        match self.opts.clamp_mtime {
            Some(max)
                if t > (Timestamp {
                    secs: max,
                    nanos: 0,
                }) =>
            {
                Timestamp {
                    secs: max,
                    nanos: 0,
                }
            }
            _ => t,
        }
    }

    fn push_xattrs(&mut self, entry: &Entry, path: &str, records: &mut Vec<u8>) {
        let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> = entry.xattrs.iter().collect();
        // Sorted here too so the bytes do not depend on the source keeping its promise.
        xattrs.sort();
        let mut last: Option<&[u8]> = None;
        for (name, value) in xattrs {
            if value.is_empty()
                || name.starts_with(b"trusted.overlay.")
                || name.starts_with(b"user.overlay.")
                || (!self.opts.keep_selinux && name == b"security.selinux")
                || last == Some(name.as_slice())
            {
                continue;
            }
            last = Some(name);
            if name.is_empty() || name.iter().any(|&b| b == b'=' || b == 0 || b == b'\n') {
                self.skipped.push(format!(
                    "{path}: xattr {:?} has a name a pax header cannot carry; left out",
                    String::from_utf8_lossy(name)
                ));
                continue;
            }
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax::push_record(records, &key, value);
        }
    }

    fn emit(&mut self, path: &str, bytes: &[u8]) -> Result<(), LayerError> {
        let comp = match &mut self.state {
            Ok(c) => c,
            Err((kind, e)) => {
                let source = e
                    .take()
                    .unwrap_or_else(|| io::Error::other("compression setup failed earlier"));
                return Err(LayerError::Setup {
                    kind: *kind,
                    source,
                });
            }
        };
        comp.write_all(bytes).map_err(|source| LayerError::Write {
            path: path.to_string(),
            source,
        })
    }

    fn pad(&mut self, path: &str, len: u64) -> Result<(), LayerError> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.emit(path, &[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    fn copy_content(
        &mut self,
        path: &str,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), LayerError> {
        let mut buf = std::mem::take(&mut self.copy);
        buf.resize(COPY_BUF, 0);
        let mut done = 0u64;
        let result = loop {
            if done == size {
                break Ok(());
            }
            let want = usize::try_from(size - done)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match content.read(&mut buf[..want]) {
                Ok(0) => {
                    break Err(LayerError::ShortContent {
                        path: path.to_string(),
                        got: done,
                        want: size,
                    })
                }
                Ok(n) => n.min(want),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    break Err(LayerError::ReadContent {
                        path: path.to_string(),
                        offset: done,
                        source,
                    })
                }
            };
            if let Err(e) = self.emit(path, &buf[..n]) {
                break Err(e);
            }
            done += n as u64;
        };
        self.copy = buf;
        result
    }
}

/// Fills ustar name/prefix with `name` if it fits (name <= 100 bytes, or split at a '/' into a
/// prefix <= 155 and a non-empty name <= 100); otherwise stores a truncated name for readers
/// that ignore pax and returns false.
fn set_name(field: &mut [u8; 100], prefix: &mut [u8; 155], name: &[u8]) -> bool {
    if name.len() <= 100 {
        field[..name.len()].copy_from_slice(name);
        return true;
    }
    // The split point is a '/' with at most 155 bytes before it and 1..=100 after it (a
    // directory's trailing '/' is part of the name, not a split point).
    let min_split = name.len().saturating_sub(101);
    for i in (min_split..name.len().min(156)).rev() {
        if name.get(i) == Some(&b'/') {
            let (p, rest) = name.split_at(i);
            let n = rest.get(1..).unwrap_or_default();
            if !n.is_empty() && n.len() <= 100 && n != b"/" && !p.is_empty() {
                prefix[..p.len()].copy_from_slice(p);
                field[..n.len()].copy_from_slice(n);
                return true;
            }
        }
    }
    field.copy_from_slice(&name[..100]);
    false
}

/// Writes an octal ustar number into an 8-byte field (7 digits and a NUL); callers check range.
fn octal8(field: &mut [u8; 8], v: u64) {
    let s = format!("{v:07o}");
    field[..7].copy_from_slice(&s.as_bytes()[s.len() - 7..]);
    field[7] = 0;
}

/// Writes every entry of `tree` as a layer into `out`.
pub fn write_tree<W: Write + Send>(
    tree: &mut dyn FileTree,
    out: W,
    opts: LayerOptions,
) -> Result<(W, LayerSummary), LayerError> {
    let mut w = LayerWriter::new(out, opts);
    let mut last = String::from("the start");
    while let Some(entry) = tree.next_entry().map_err(|source| LayerError::Tree {
        after: last.clone(),
        source,
    })? {
        w.append(&entry, tree.content())?;
        last = entry.display_path();
    }
    w.finish()
}

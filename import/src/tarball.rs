//! `decant import FILE.tar[.gz|.zst|.xz|.bz2]` or `-`: a tar archive of a root filesystem read as
//! a `FileTree` (and a `FileLookup` for `inspect`).
//!
//! A tar is in arbitrary order and may name a path twice (the last one wins, as on extraction),
//! while a `FileTree` must yield path order without duplicates. So the archive is indexed once:
//! one pass over the headers records each entry's metadata and where its data lies, then content
//! is served by positioned reads. A plain tar file is read in place; compressed input, stdin and
//! other unseekable inputs are decompressed once into an unlinked spool file in `spool_dir`.
//! Compression is recognised by magic bytes, never by the file name.
//!
//! The header parser is our own rather than the `tar` crate's iterator because we need things it
//! does not give: byte offsets of every header and data run (for positioned reads and for error
//! messages that say where an archive is damaged), caps on the size of pax and long-name records
//! before they are read into memory, the GNU sparse map of an entry (to serve holes without
//! expanding them), and a hard error when the end-of-archive marker is missing (a tar truncated
//! on a header boundary must not import as a silently short image).
//!
//! What an archive may do that an unpacked root filesystem cannot, and what we do instead.
//! Refusing the whole archive (`TarballError::Hostile`, one line naming the entry): an absolute
//! name, a name (or hard link target) whose `..` climbs above the root, and an entry below a
//! symlink of the archive (it would be written through the link). A tar of a running system
//! never holds these (GNU tar strips the leading '/' unless told `-P`), so they mean a crafted
//! or mistaken archive, and an image quietly missing files would hide that. Leaving out one
//! entry and saying so in `warnings()`: an entry below another non-directory, a hard link to
//! anything but an earlier regular file, whiteout names (`.wh.*`), unsupported entry types.
//! Silent: `.`, empty components and trailing slashes; `..` that stays inside the root is
//! resolved lexically and said in `warnings()`. Missing parent directories are made up (0755,
//! root, the child's mtime).
//!
//! Memory: metadata only, per header (capped at `MAX_ENTRIES`); while the final path-ordered
//! list is assembled the metadata is held twice for a moment. Content is never held in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snapshot::{path_order, Entry, EntryKind, FileTree, Timestamp};

use crate::fs::FileLookup;

/// At most this many headers (entries) in one archive: the index keeps metadata per entry.
pub const MAX_ENTRIES: u64 = 10_000_000;
/// At most this many bytes in one pax extended header (real ones are a few hundred bytes).
pub const MAX_PAX_SIZE: u64 = 1 << 20;
/// At most this many bytes in a GNU long name or long link record (PATH_MAX is 4096).
pub const MAX_LONG_NAME: u64 = 64 << 10;
/// At most this many data runs in one GNU sparse file.
pub const MAX_SPARSE_CHUNKS: usize = 1 << 20;
/// At most this many warning lines are kept; the rest are counted in a last line.
pub const MAX_WARNINGS: usize = 1000;

const BLOCK: u64 = 512;

/// Why a tarball cannot be imported. Every message is one line naming the file; format errors
/// also name the structure, its byte offset in the (decompressed) archive, and the entry.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("{file}: {context}: {source}")]
    Io {
        file: String,
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: {structure} at offset {offset}{}: {problem}", entry_suffix(.entry))]
    Corrupt {
        file: String,
        structure: &'static str,
        offset: u64,
        entry: Option<String>,
        problem: String,
    },
    #[error("{file}: more than {limit} entries; refusing to index it")]
    TooManyEntries { file: String, limit: u64 },
    /// An entry that would land outside the root or be written through a link: a tar of a
    /// system never holds one, so the whole archive is refused rather than imported without it.
    #[error("{file}: entry {entry:?} {problem}; refusing the archive")]
    Hostile {
        file: String,
        entry: String,
        problem: String,
    },
}

fn entry_suffix(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!(" (entry {e:?})"),
        None => String::new(),
    }
}

impl From<TarballError> for io::Error {
    fn from(e: TarballError) -> io::Error {
        let kind = match &e {
            TarballError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Where an entry's content lies in the (decompressed) archive.
#[derive(Debug, Clone)]
enum Data {
    None,
    Contiguous(u64),
    /// GNU sparse: data runs, in order; everything else reads as zeros.
    Sparse(Arc<[Chunk]>),
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    logical: u64,
    archive: u64,
    len: u64,
}

#[derive(Debug, Clone)]
struct Item {
    entry: Entry,
    data: Data,
}

/// A tar archive of a root filesystem, indexed; see the module documentation.
pub struct TarballTree {
    name: String,
    file: Arc<File>,
    items: Vec<Item>,
    next: usize,
    reader: ContentReader,
    warnings: Vec<String>,
}

impl std::fmt::Debug for TarballTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarballTree")
            .field("name", &self.name)
            .field("entries", &self.items.len())
            .finish()
    }
}

impl TarballTree {
    /// Opens and indexes the archive at `path` (`-` for stdin). Compressed and unseekable input
    /// is decompressed into an unlinked file in `spool_dir`, which disappears with the tree.
    pub fn open(path: &Path, spool_dir: &Path) -> Result<TarballTree, TarballError> {
        let name = if path == Path::new("-") {
            "stdin".to_string()
        } else {
            path.display().to_string()
        };
        let io_err = |context: &str, source: io::Error| TarballError::Io {
            file: name.clone(),
            context: context.to_string(),
            source,
        };
        let mut input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            let f = File::open(path).map_err(|e| io_err("cannot open", e))?;
            let meta = f.metadata().map_err(|e| io_err("cannot stat", e))?;
            if meta.is_file() {
                let mut magic = [0u8; 6];
                let n = read_at_most(&f, 0, &mut magic).map_err(|e| io_err("cannot read", e))?;
                if compression(&magic[..n]).is_none() {
                    let file = Arc::new(f);
                    return TarballTree::index(name, file, meta.len());
                }
            }
            Box::new(f)
        };

        let mut magic = [0u8; 6];
        let mut have = 0;
        while have < magic.len() {
            let n = input
                .read(&mut magic[have..])
                .map_err(|e| io_err("cannot read", e))?;
            if n == 0 {
                break;
            }
            have += n;
        }
        let head = io::Cursor::new(magic[..have].to_vec());
        let joined = head.chain(input);
        let (mut decoder, what): (Box<dyn Read>, &str) = match compression(&magic[..have]) {
            None => (Box::new(joined), "reading"),
            Some(Compression::Gzip) => (
                Box::new(flate2::read::MultiGzDecoder::new(joined)),
                "decompressing gzip",
            ),
            Some(Compression::Zstd) => (
                Box::new(zstd::stream::read::Decoder::new(joined).map_err(|e| io_err("zstd", e))?),
                "decompressing zstd",
            ),
            Some(Compression::Xz) => (
                Box::new(xz2::read::XzDecoder::new_multi_decoder(joined)),
                "decompressing xz",
            ),
            Some(Compression::Bzip2) => (
                Box::new(bzip2::read::MultiBzDecoder::new(joined)),
                "decompressing bzip2",
            ),
        };
        let mut spool = create_spool(spool_dir).map_err(|e| {
            io_err(
                &format!("cannot create a spool file in {}", spool_dir.display()),
                e,
            )
        })?;
        let len = io::copy(&mut decoder, &mut spool).map_err(|e| io_err(what, e))?;
        spool
            .flush()
            .map_err(|e| io_err("writing the spool file", e))?;
        TarballTree::index(name, Arc::new(spool), len)
    }

    /// What was normalised or refused while indexing, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of entries the tree will yield (including made-up parent directories).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes of file data the tree will yield (for a progress bar's total).
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.entry.size).sum()
    }

    /// True when the archive holds no entry besides the root.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn index(name: String, file: Arc<File>, len: u64) -> Result<TarballTree, TarballError> {
        let mut ix = Indexer {
            name: &name,
            file: &file,
            len,
            records: Vec::new(),
            by_path: HashMap::new(),
            warn: Warnings::default(),
            global_warned: false,
        };
        ix.walk()?;
        let Indexer {
            records,
            by_path,
            mut warn,
            ..
        } = ix;
        let items = assemble(records, by_path, &mut warn).map_err(|(entry, problem)| {
            TarballError::Hostile {
                file: name.clone(),
                entry,
                problem,
            }
        })?;
        let warnings = warn.finish();
        Ok(TarballTree {
            reader: ContentReader::empty(file.clone()),
            name,
            file,
            items,
            next: 0,
            warnings,
        })
    }

    fn find(&self, path: &[u8]) -> Option<&Item> {
        let key = trim_slashes(path);
        self.items
            .binary_search_by(|it| path_order(&it.entry.path, key))
            .ok()
            .and_then(|i| self.items.get(i))
    }
}

impl FileTree for TarballTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let Some(item) = self.items.get(self.next) else {
            self.reader = ContentReader::empty(self.file.clone());
            return Ok(None);
        };
        self.next += 1;
        self.reader = ContentReader::new(
            self.file.clone(),
            &self.name,
            &item.entry,
            item.data.clone(),
        );
        Ok(Some(item.entry.clone()))
    }

    fn content(&mut self) -> &mut dyn Read {
        &mut self.reader
    }
}

impl FileLookup for TarballTree {
    fn stat(&self, path: &[u8]) -> io::Result<Option<Entry>> {
        if trim_slashes(path).is_empty() {
            return Ok(Some(Entry::new(Vec::new(), EntryKind::Dir, 0o755)));
        }
        Ok(self.find(path).map(|it| it.entry.clone()))
    }

    fn read_file(&self, path: &[u8], max: usize) -> io::Result<Vec<u8>> {
        let not_file = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: {} is not a regular file",
                    self.name,
                    String::from_utf8_lossy(path)
                ),
            )
        };
        let mut item = self.find(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: {} not in the archive",
                    self.name,
                    String::from_utf8_lossy(path)
                ),
            )
        })?;
        if item.entry.kind == EntryKind::Hardlink {
            let target = item.entry.link_target.as_deref().unwrap_or_default();
            item = self.find(target).ok_or_else(not_file)?;
        }
        if item.entry.kind != EntryKind::File {
            return Err(not_file());
        }
        let mut reader = ContentReader::new(
            self.file.clone(),
            &self.name,
            &item.entry,
            item.data.clone(),
        );
        // `max` is the caller's cap; the file's size bounds it further.
        let want = (max as u64).min(item.entry.size);
        let mut out = Vec::with_capacity(usize::try_from(want).unwrap_or(0).min(1 << 20));
        (&mut reader).take(want).read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let dir = trim_slashes(path);
        let start = if dir.is_empty() {
            0
        } else {
            let i = self
                .items
                .binary_search_by(|it| path_order(&it.entry.path, dir))
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "{}: directory {} not in the archive",
                            self.name,
                            String::from_utf8_lossy(path)
                        ),
                    )
                })?;
            if self.items.get(i).map(|it| it.entry.kind) != Some(EntryKind::Dir) {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "{}: {} is not a directory",
                        self.name,
                        String::from_utf8_lossy(path)
                    ),
                ));
            }
            i + 1
        };
        let mut names = Vec::new();
        // Descendants of a directory follow it contiguously in path order.
        for it in self.items.iter().skip(start) {
            let rest = if dir.is_empty() {
                &it.entry.path[..]
            } else {
                match it.entry.path.strip_prefix(dir) {
                    Some(r) if r.first() == Some(&b'/') => &r[1..],
                    _ => break,
                }
            };
            if !rest.contains(&b'/') {
                names.push(rest.to_vec());
            }
        }
        Ok(names)
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(r) = p.strip_prefix(b"/") {
        p = r;
    }
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    p
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

fn compression(magic: &[u8]) -> Option<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if magic.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

/// A new file in `dir`, unlinked at once so it vanishes with its last handle (also on a crash).
fn create_spool(dir: &Path) -> io::Result<File> {
    // The store's temp dir, which may not exist yet: the store is opened only once the input
    // proved readable.
    std::fs::create_dir_all(dir)?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(
        ".decant-spool-{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the file.
fn read_at_most(f: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        let pos = offset
            .checked_add(have as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        match f.read_at(&mut buf[have..], pos) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

#[derive(Default)]
struct Warnings {
    lines: Vec<String>,
    dropped: u64,
}

impl Warnings {
    fn push(&mut self, line: String) {
        if self.lines.len() < MAX_WARNINGS {
            self.lines.push(line);
        } else {
            self.dropped += 1;
        }
    }
    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.lines
                .push(format!("... and {} more warnings", self.dropped));
        }
        self.lines
    }
}

/// One `key=value` record of a pax header.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// Attributes from a pax extended header for the next entry.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<Timestamp>,
    devmajor: Option<u32>,
    devminor: Option<u32>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Set by any `GNU.sparse.*` key: pax-format sparse files (0.x, 1.0) are not supported.
    gnu_sparse: bool,
}

/// One header after its pax and long-name records were applied.
struct Record {
    entry: Entry,
    data: Data,
    /// For a hard link: the record index of the regular file that carries its data.
    link_to: Option<usize>,
}

struct Indexer<'a> {
    name: &'a str,
    file: &'a File,
    len: u64,
    records: Vec<Record>,
    by_path: HashMap<Vec<u8>, usize>,
    warn: Warnings,
    global_warned: bool,
}

impl Indexer<'_> {
    fn corrupt(
        &self,
        structure: &'static str,
        offset: u64,
        entry: Option<&[u8]>,
        problem: impl Into<String>,
    ) -> TarballError {
        TarballError::Corrupt {
            file: self.name.to_string(),
            structure,
            offset,
            entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
            problem: problem.into(),
        }
    }

    fn read_exact_at(
        &self,
        offset: u64,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), TarballError> {
        let n = read_at_most(self.file, offset, buf).map_err(|e| TarballError::Io {
            file: self.name.to_string(),
            context: format!("reading {what} at offset {offset}"),
            source: e,
        })?;
        if n < buf.len() {
            return Err(self.corrupt(
                what,
                offset,
                None,
                format!("archive ends after {n} of {} bytes (truncated?)", buf.len()),
            ));
        }
        Ok(())
    }

    /// Reads the data of an extension record (pax, long name), refusing more than `cap` bytes.
    fn read_record(
        &self,
        offset: u64,
        size: u64,
        cap: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, TarballError> {
        if size > cap {
            return Err(self.corrupt(
                what,
                offset,
                None,
                format!("{size} bytes is more than the limit of {cap}"),
            ));
        }
        let mut buf = vec![0u8; size as usize];
        self.read_exact_at(offset, &mut buf, what)?;
        Ok(buf)
    }

    fn walk(&mut self) -> Result<(), TarballError> {
        if self.len == 0 {
            return Err(self.corrupt(
                "tar archive",
                0,
                None,
                "the input is empty (0 bytes), not a tar archive",
            ));
        }
        let mut pos = 0u64;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut headers = 0u64;
        loop {
            if pos >= self.len {
                return Err(self.corrupt(
                    "tar header",
                    pos,
                    None,
                    "archive ends without an end-of-archive block (truncated?)",
                ));
            }
            let mut h = [0u8; 512];
            self.read_exact_at(pos, &mut h, "tar header")?;
            if h.iter().all(|&b| b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(self.corrupt(
                        "tar header",
                        pos,
                        None,
                        "extension header (pax or GNU long name) not followed by an entry",
                    ));
                }
                return Ok(());
            }
            headers += 1;
            if headers > MAX_ENTRIES {
                return Err(TarballError::TooManyEntries {
                    file: self.name.to_string(),
                    limit: MAX_ENTRIES,
                });
            }
            self.check_sum(&h, pos)?;
            let raw_name = field_str(&h[0..100]);
            let err_here =
                |ix: &Self, problem: String| ix.corrupt("tar header", pos, Some(raw_name), problem);
            let typeflag = h[156];
            let mut stored = numeric(&h[124..136])
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| err_here(self, "bad size field".into()))?;
            if let Some(p) = pax.as_ref().and_then(|p| p.size) {
                if !matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
                    stored = p;
                }
            }
            let mut data_start = pos + BLOCK;

            match typeflag {
                b'x' | b'X' => {
                    if pax.is_some() {
                        return Err(err_here(self, "two pax headers for one entry".into()));
                    }
                    let bytes = self.read_record(data_start, stored, MAX_PAX_SIZE, "pax header")?;
                    pax = Some(self.parse_pax(&bytes, data_start)?);
                }
                b'g' => {
                    let bytes =
                        self.read_record(data_start, stored, MAX_PAX_SIZE, "pax global header")?;
                    let g = self.parse_pax_records(&bytes, data_start)?;
                    if !self.global_warned && g.iter().any(|(k, _)| k != b"comment") {
                        self.global_warned = true;
                        self.warn.push(format!(
                            "pax global header at offset {pos} ignored (its defaults are not applied)"
                        ));
                    }
                }
                b'L' | b'K' => {
                    let mut bytes =
                        self.read_record(data_start, stored, MAX_LONG_NAME, "GNU long name")?;
                    while bytes.last() == Some(&0) {
                        bytes.pop();
                    }
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(err_here(
                            self,
                            "two GNU long name records for one entry".into(),
                        ));
                    }
                    *slot = Some(bytes);
                }
                _ => {
                    let pax_here = pax.take().unwrap_or_default();
                    let name = long_name.take();
                    let link = long_link.take();
                    let mut sparse = None;
                    if typeflag == b'S' {
                        let (chunks, real, ext_blocks) = self.parse_sparse(&h, pos, stored)?;
                        data_start += ext_blocks * BLOCK;
                        sparse = Some((chunks, real));
                    }
                    if data_start
                        .checked_add(stored)
                        .is_none_or(|end| end > self.len)
                    {
                        return Err(self.corrupt(
                            "tar entry data",
                            data_start,
                            Some(name.as_deref().or(pax_here.path.as_deref()).unwrap_or(raw_name)),
                            format!("{stored} bytes of data run past the end of the archive ({} bytes; truncated?)", self.len),
                        ));
                    }
                    self.add_entry(
                        &h, pos, data_start, stored, typeflag, pax_here, name, link, sparse,
                    )?;
                }
            }
            if data_start
                .checked_add(stored)
                .is_none_or(|end| end > self.len)
            {
                return Err(self.corrupt(
                    "tar entry data",
                    data_start,
                    None,
                    format!("{stored} bytes of data run past the end of the archive (truncated?)"),
                ));
            }
            // Checked above: data_start + stored <= len, so rounding up cannot overflow.
            pos = data_start + stored.div_ceil(BLOCK) * BLOCK;
        }
    }

    fn check_sum(&self, h: &[u8; 512], pos: u64) -> Result<(), TarballError> {
        let stored = numeric(&h[148..156]).ok_or_else(|| {
            self.corrupt(
                "tar header",
                pos,
                Some(field_str(&h[0..100])),
                "bad checksum field",
            )
        })?;
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in h.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        if stored != i128::from(unsigned) && stored != i128::from(signed) {
            return Err(self.corrupt(
                "tar header",
                pos,
                Some(field_str(&h[0..100])),
                format!("checksum mismatch (stored {stored}, computed {unsigned}): not a tar archive, or damaged"),
            ));
        }
        Ok(())
    }

    fn parse_pax_records(&self, bytes: &[u8], offset: u64) -> Result<Vec<PaxRecord>, TarballError> {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let bad = |what: &str| {
                self.corrupt(
                    "pax header",
                    offset + at as u64,
                    None,
                    format!("bad record: {what}"),
                )
            };
            let sp = rest
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("no length"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("length is not a number"))?;
            if len <= sp + 1 || len > rest.len() {
                return Err(bad("length out of range"));
            }
            let rec = &rest[..len];
            if rec.last() != Some(&b'\n') {
                return Err(bad("missing newline"));
            }
            let kv = &rec[sp + 1..len - 1];
            let eq = kv
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("no '='"))?;
            out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
            at += len;
        }
        Ok(out)
    }

    fn parse_pax(&self, bytes: &[u8], offset: u64) -> Result<Pax, TarballError> {
        let mut pax = Pax::default();
        let mut libarchive = Vec::new();
        for (k, v) in self.parse_pax_records(bytes, offset)? {
            let bad = |what: &str| {
                self.corrupt(
                    "pax header",
                    offset,
                    None,
                    format!("bad {what} value {:?}", String::from_utf8_lossy(&v)),
                )
            };
            let num32 = |v: &[u8]| -> Option<u32> { std::str::from_utf8(v).ok()?.parse().ok() };
            // An empty value deletes the keyword (POSIX): leave the header's value in force.
            if v.is_empty() {
                continue;
            }
            match &k[..] {
                b"path" => pax.path = Some(v),
                b"linkpath" => pax.linkpath = Some(v),
                b"size" => {
                    pax.size = Some(
                        std::str::from_utf8(&v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| bad("size"))?,
                    )
                }
                b"uid" => pax.uid = Some(num32(&v).ok_or_else(|| bad("uid"))?),
                b"gid" => pax.gid = Some(num32(&v).ok_or_else(|| bad("gid"))?),
                b"mtime" => pax.mtime = Some(pax_time(&v).ok_or_else(|| bad("mtime"))?),
                b"SCHILY.devmajor" => {
                    pax.devmajor = Some(num32(&v).ok_or_else(|| bad("devmajor"))?)
                }
                b"SCHILY.devminor" => {
                    pax.devminor = Some(num32(&v).ok_or_else(|| bad("devminor"))?)
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        pax.xattrs.insert(name.to_vec(), v);
                    } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                        let name =
                            percent_decode(name).ok_or_else(|| bad("LIBARCHIVE.xattr name"))?;
                        let value = base64_decode(&v).ok_or_else(|| bad("LIBARCHIVE.xattr"))?;
                        libarchive.push((name, value));
                    } else if k.starts_with(b"GNU.sparse.") {
                        pax.gnu_sparse = true;
                    }
                }
            }
        }
        // bsdtar writes each xattr both ways; the SCHILY form is the one GNU tar reads, so it wins.
        for (name, value) in libarchive {
            pax.xattrs.entry(name).or_insert(value);
        }
        Ok(pax)
    }

    /// The sparse map of an old-GNU sparse header and its extension blocks: the chunks, the real
    /// size, and how many extension blocks follow the header.
    fn parse_sparse(
        &self,
        h: &[u8; 512],
        pos: u64,
        stored: u64,
    ) -> Result<(Vec<Chunk>, u64, u64), TarballError> {
        let name = field_str(&h[0..100]);
        let bad =
            |ix: &Self, at: u64, what: String| ix.corrupt("GNU sparse map", at, Some(name), what);
        if &h[257..265] != b"ustar  \0" {
            return Err(bad(self, pos, "sparse entry without a GNU header".into()));
        }
        let real = numeric(&h[483..495])
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad(self, pos, "bad real size".into()))?;
        let mut map: Vec<(u64, u64)> = Vec::new();
        let mut push = |ix: &Self, at: u64, e: &[u8]| -> Result<bool, TarballError> {
            if e[0] == 0 {
                return Ok(false);
            }
            let off = numeric(&e[0..12]).and_then(|v| u64::try_from(v).ok());
            let len = numeric(&e[12..24]).and_then(|v| u64::try_from(v).ok());
            match (off, len) {
                (Some(o), Some(l)) => {
                    if map.len() >= MAX_SPARSE_CHUNKS {
                        return Err(bad(
                            ix,
                            at,
                            format!("more than {MAX_SPARSE_CHUNKS} data runs"),
                        ));
                    }
                    map.push((o, l));
                    Ok(true)
                }
                _ => Err(bad(ix, at, "bad offset or length".into())),
            }
        };
        for e in h[386..482].chunks_exact(24) {
            if !push(self, pos, e)? {
                break;
            }
        }
        let mut extended = h[482] != 0;
        let mut ext_blocks = 0u64;
        let mut at = pos + BLOCK;
        while extended {
            let mut b = [0u8; 512];
            self.read_exact_at(at, &mut b, "GNU sparse map")?;
            for e in b[..504].chunks_exact(24) {
                if !push(self, at, e)? {
                    break;
                }
            }
            extended = b[504] != 0;
            ext_blocks += 1;
            at += BLOCK;
        }
        let mut chunks = Vec::with_capacity(map.len());
        let mut logical_end = 0u64;
        let mut archive = pos + BLOCK + ext_blocks * BLOCK;
        let mut total = 0u64;
        for (off, len) in map {
            if off < logical_end {
                return Err(bad(
                    self,
                    pos,
                    "data runs overlap or are out of order".into(),
                ));
            }
            logical_end = off
                .checked_add(len)
                .ok_or_else(|| bad(self, pos, "data run past 2^64".into()))?;
            if logical_end > real {
                return Err(bad(
                    self,
                    pos,
                    format!("data run ends at {logical_end}, past the real size {real}"),
                ));
            }
            if len > 0 {
                chunks.push(Chunk {
                    logical: off,
                    archive,
                    len,
                });
            }
            archive = archive.saturating_add(len);
            total = total.saturating_add(len);
        }
        if total != stored {
            return Err(bad(
                self,
                pos,
                format!("data runs hold {total} bytes but the entry stores {stored}"),
            ));
        }
        Ok((chunks, real, ext_blocks))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_entry(
        &mut self,
        h: &[u8; 512],
        pos: u64,
        data_start: u64,
        stored: u64,
        typeflag: u8,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        sparse: Option<(Vec<Chunk>, u64)>,
    ) -> Result<(), TarballError> {
        let ustar = &h[257..263] == b"ustar\0";
        let raw_path: Vec<u8> = if let Some(p) = pax.path {
            p
        } else if let Some(p) = long_name {
            p
        } else if ustar && h[345] != 0 {
            let mut p = field_str(&h[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(field_str(&h[0..100]));
            p
        } else {
            field_str(&h[0..100]).to_vec()
        };
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let bad = |ix: &Self, what: &str| {
            ix.corrupt(
                "tar header",
                pos,
                Some(&raw_path),
                format!("bad {what} field"),
            )
        };
        let num = |r: std::ops::Range<usize>| numeric(h.get(r).unwrap_or_default());

        if pax.gnu_sparse {
            self.warn.push(format!(
                "refused {shown:?}: pax-format GNU sparse file (tar --sparse --format=pax) is not supported; re-create the archive without --sparse"
            ));
            return Ok(());
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' | b'S' => {
                if raw_path.ends_with(b"/") && typeflag != b'S' {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                }
            }
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' | b'D' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'V' => return Ok(()),
            other => {
                self.warn.push(format!(
                    "refused {shown:?}: unsupported tar entry type {:?} at offset {pos}",
                    other as char
                ));
                return Ok(());
            }
        };

        let hostile = |ix: &Self, problem: String| TarballError::Hostile {
            file: ix.name.to_string(),
            entry: shown.clone(),
            problem,
        };
        let path = match normalise(&raw_path) {
            Ok(n) if n.absolute => {
                return Err(hostile(
                    self,
                    format!(
                        "at offset {pos} has an absolute name (it would be written outside the image's root)"
                    ),
                ))
            }
            Ok(n) => {
                if n.dotdot {
                    self.warn.push(format!(
                        "normalised {shown:?} to \"/{}\"",
                        String::from_utf8_lossy(&n.path)
                    ));
                }
                n.path
            }
            Err(why) => return Err(hostile(self, format!("at offset {pos}: {why}"))),
        };
        if path.is_empty() {
            if kind != EntryKind::Dir {
                self.warn.push(format!(
                    "refused {shown:?}: names the root but is not a directory"
                ));
            }
            return Ok(());
        }
        if path.split(|&b| b == b'/').any(|c| c.starts_with(b".wh.")) {
            self.warn.push(format!(
                "refused {shown:?}: a name beginning with .wh. is a layer whiteout, which a plain system import cannot carry"
            ));
            return Ok(());
        }

        let mode = num(100..108)
            .and_then(|v| u32::try_from(v & 0o7777).ok())
            .ok_or_else(|| bad(self, "mode"))?;
        let uid = match pax.uid {
            Some(u) => u,
            None => num(108..116)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(self, "uid"))?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => num(116..124)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(self, "gid"))?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timestamp {
                secs: num(136..148)
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| bad(self, "mtime"))?,
                nanos: 0,
            },
        };
        let mut entry = Entry::new(path.clone(), kind, mode);
        entry.uid = uid;
        entry.gid = gid;
        entry.mtime = mtime;
        entry.xattrs = pax.xattrs.into_iter().collect();

        let mut data = Data::None;
        let mut link_to = None;
        match kind {
            EntryKind::File => match sparse {
                Some((chunks, real)) => {
                    entry.size = real;
                    entry.allocated = Some(stored);
                    data = Data::Sparse(chunks.into());
                }
                None => {
                    entry.size = stored;
                    data = Data::Contiguous(data_start);
                }
            },
            EntryKind::Symlink | EntryKind::Hardlink => {
                let target = pax
                    .linkpath
                    .or(long_link)
                    .unwrap_or_else(|| field_str(&h[157..257]).to_vec());
                if target.is_empty() {
                    self.warn
                        .push(format!("refused {shown:?}: link with an empty target"));
                    return Ok(());
                }
                if kind == EntryKind::Symlink {
                    entry.link_target = Some(target);
                } else {
                    let tshown = String::from_utf8_lossy(&target).into_owned();
                    let t = match normalise(&target) {
                        Ok(n) if n.absolute => {
                            let why = format!("at offset {pos} is a hard link to an absolute name");
                            return Err(hostile(self, format!("{why} {tshown:?}")));
                        }
                        Ok(n) if !n.path.is_empty() => n.path,
                        Ok(_) => {
                            self.warn.push(format!(
                                "refused hard link {shown:?}: its target {tshown:?} is the root"
                            ));
                            return Ok(());
                        }
                        Err(why) => {
                            return Err(hostile(
                                self,
                                format!("at offset {pos} is a hard link to {tshown:?}: {why}"),
                            ))
                        }
                    };
                    let Some(&slot) = self.by_path.get(&t) else {
                        self.warn.push(format!(
                            "refused hard link {shown:?}: target {tshown:?} is not an earlier entry of the archive"
                        ));
                        return Ok(());
                    };
                    let target_rec = self.records.get(slot);
                    let carrier = match target_rec.map(|r| (r.entry.kind, r.link_to)) {
                        Some((EntryKind::File, _)) => slot,
                        Some((EntryKind::Hardlink, Some(c))) => c,
                        _ => {
                            self.warn.push(format!(
                                "refused hard link {shown:?}: target {tshown:?} is not a regular file"
                            ));
                            return Ok(());
                        }
                    };
                    if t == path {
                        // A link to itself changes nothing.
                        return Ok(());
                    }
                    entry.link_target = Some(t);
                    link_to = Some(carrier);
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                let major = match pax.devmajor {
                    Some(m) => m,
                    None => num(329..337)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(self, "devmajor"))?,
                };
                let minor = match pax.devminor {
                    Some(m) => m,
                    None => num(337..345)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(self, "devminor"))?,
                };
                entry.device = Some((major, minor));
            }
            EntryKind::Dir | EntryKind::Fifo => {}
        }

        let slot = self.records.len();
        self.records.push(Record {
            entry,
            data,
            link_to,
        });
        self.by_path.insert(path, slot);
        Ok(())
    }
}

/// A path made relative and free of `.` and `..`.
struct Normalised {
    path: Vec<u8>,
    absolute: bool,
    dotdot: bool,
}

fn normalise(raw: &[u8]) -> Result<Normalised, &'static str> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut dotdot = false;
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                dotdot = true;
                if out.pop().is_none() {
                    return Err("'..' climbs above the root");
                }
            }
            _ => out.push(c),
        }
    }
    Ok(Normalised {
        path: out.join(&b'/'),
        absolute: raw.starts_with(b"/"),
        dotdot,
    })
}

/// Bytes of a NUL-terminated header field.
fn field_str(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    &f[..end]
}

/// A numeric header field: octal digits (surrounded by spaces or NULs), or GNU base-256 when
/// the first byte has its top bit set (negative when it is 0xff). Empty means 0.
fn numeric(f: &[u8]) -> Option<i128> {
    let first = *f.first()?;
    if first & 0x80 != 0 {
        if f.len() > 15 {
            return None;
        }
        let mut v: i128 = 0;
        for (i, &b) in f.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { b };
            v = (v << 8) | i128::from(b);
        }
        if first == 0xff {
            // Two's complement over the whole field (the marker bit included).
            v -= 1i128 << (8 * f.len() - 1);
        }
        return Some(v);
    }
    let s = f
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut v: i128 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(v)
}

/// A pax time: decimal seconds, optionally negative, optionally with a fraction.
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        if nanos == 0 {
            Some(Timestamp {
                secs: secs.checked_neg()?,
                nanos: 0,
            })
        } else {
            Some(Timestamp {
                secs: secs.checked_neg()?.checked_sub(1)?,
                nanos: 1_000_000_000 - nanos,
            })
        }
    } else {
        Some(Timestamp { secs, nanos })
    }
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Turns the last-wins records into the final tree: path order, parents checked and made up,
/// hard link groups given a data-carrying first name. An entry below a symlink of the archive
/// is `Err((entry, problem))`: the archive is hostile (see the module documentation).
fn assemble(
    records: Vec<Record>,
    by_path: HashMap<Vec<u8>, usize>,
    warn: &mut Warnings,
) -> Result<Vec<Item>, (String, String)> {
    let mut slots: Vec<usize> = by_path.into_values().collect();
    slots.sort_by(|&a, &b| {
        let pa = records
            .get(a)
            .map(|r| &r.entry.path[..])
            .unwrap_or_default();
        let pb = records
            .get(b)
            .map(|r| &r.entry.path[..])
            .unwrap_or_default();
        path_order(pa, pb)
    });
    let kind_of = |p: &[u8]| -> Option<EntryKind> {
        slots
            .binary_search_by(|&s| {
                path_order(
                    records
                        .get(s)
                        .map(|r| &r.entry.path[..])
                        .unwrap_or_default(),
                    p,
                )
            })
            .ok()
            .and_then(|i| slots.get(i))
            .and_then(|&s| records.get(s))
            .map(|r| r.entry.kind)
    };

    let mut items: Vec<Item> = Vec::with_capacity(slots.len());
    let mut made_up: HashSet<Vec<u8>> = HashSet::new();
    let linked: HashSet<usize> = slots
        .iter()
        .filter_map(|&s| records.get(s).and_then(|r| r.link_to))
        .collect();
    let mut carriers: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut needs_sort = false;
    'entries: for &slot in &slots {
        let Some(rec) = records.get(slot) else {
            continue;
        };
        let path = &rec.entry.path;
        let shown = rec.entry.display_path();
        let mut missing = Vec::new();
        for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let parent = &path[..i];
            match kind_of(parent) {
                Some(EntryKind::Dir) => {}
                Some(EntryKind::Symlink) => {
                    return Err((
                        String::from_utf8_lossy(path).into_owned(),
                        format!(
                            "lies below /{}, a symlink in the archive (it would be written through the link)",
                            String::from_utf8_lossy(parent)
                        ),
                    ));
                }
                Some(_) => {
                    warn.push(format!(
                        "refused {shown}: its parent /{} is not a directory",
                        String::from_utf8_lossy(parent)
                    ));
                    continue 'entries;
                }
                None => {
                    if !made_up.contains(parent) {
                        missing.push(parent.to_vec());
                    }
                }
            }
        }
        for parent in missing {
            let mut dir = Entry::new(parent.clone(), EntryKind::Dir, 0o755);
            dir.mtime = rec.entry.mtime;
            made_up.insert(parent);
            items.push(Item {
                entry: dir,
                data: Data::None,
            });
            needs_sort = true;
        }

        let mut entry = rec.entry.clone();
        let mut data = rec.data.clone();
        let group = match (entry.kind, rec.link_to) {
            (EntryKind::File, _) => Some(slot),
            (EntryKind::Hardlink, Some(c)) => Some(c),
            _ => None,
        };
        if let Some(g) = group {
            // All names of one file share its inode: they all get the file's metadata, and the
            // first name in path order carries the data.
            if let Some(file) = records.get(g) {
                entry.kind = EntryKind::File;
                entry.mode = file.entry.mode;
                entry.uid = file.entry.uid;
                entry.gid = file.entry.gid;
                entry.mtime = file.entry.mtime;
                entry.xattrs = file.entry.xattrs.clone();
                entry.size = file.entry.size;
                entry.allocated = file.entry.allocated;
                entry.link_target = None;
                data = file.data.clone();
            }
            if let Some(first) = carriers.get(&g) {
                entry.kind = EntryKind::Hardlink;
                entry.link_target = Some(first.clone());
                entry.size = 0;
                entry.allocated = None;
                data = Data::None;
            } else if linked.contains(&g) {
                // Only files that some link points at are remembered; most have one name.
                carriers.insert(g, entry.path.clone());
            }
        }
        items.push(Item { entry, data });
    }
    if needs_sort {
        items.sort_by(|a, b| path_order(&a.entry.path, &b.entry.path));
    }
    Ok(items)
}

/// Reads one entry's content by positioned reads, yielding exactly `size` bytes or failing.
struct ContentReader {
    file: Arc<File>,
    name: String,
    path: String,
    data: Data,
    size: u64,
    pos: u64,
    chunk: usize,
}

impl ContentReader {
    fn empty(file: Arc<File>) -> ContentReader {
        ContentReader {
            file,
            name: String::new(),
            path: String::new(),
            data: Data::None,
            size: 0,
            pos: 0,
            chunk: 0,
        }
    }

    fn new(file: Arc<File>, name: &str, entry: &Entry, data: Data) -> ContentReader {
        let size = if entry.kind == EntryKind::File {
            entry.size
        } else {
            0
        };
        ContentReader {
            file,
            name: name.to_string(),
            path: entry.display_path(),
            data,
            size,
            pos: 0,
            chunk: 0,
        }
    }

    fn read_archive(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: content of {} at offset {at}: archive ended early (was it changed while importing?)",
                    self.name, self.path
                ),
            ));
        }
        Ok(n)
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match self.data.clone() {
            Data::None => 0,
            Data::Contiguous(start) => {
                let at = start.saturating_add(self.pos);
                self.read_archive(at, &mut buf[..want])?
            }
            Data::Sparse(chunks) => {
                while chunks
                    .get(self.chunk)
                    .is_some_and(|c| c.logical.saturating_add(c.len) <= self.pos)
                {
                    self.chunk += 1;
                }
                match chunks.get(self.chunk) {
                    Some(c) if c.logical <= self.pos => {
                        let within = self.pos - c.logical;
                        let n = usize::try_from(c.len - within)
                            .unwrap_or(usize::MAX)
                            .min(want);
                        self.read_archive(c.archive.saturating_add(within), &mut buf[..n])?
                    }
                    next => {
                        // A hole: zeros up to the next run (or the end).
                        let hole_end = next.map(|c| c.logical).unwrap_or(self.size);
                        let n = usize::try_from(hole_end - self.pos)
                            .unwrap_or(usize::MAX)
                            .min(want);
                        buf[..n].fill(0);
                        n
                    }
                }
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b"     17 "), Some(0o17));
        assert_eq!(numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"0009\0"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 5;
        assert_eq!(numeric(&big), Some(5));
        let neg = [0xffu8; 12];
        assert_eq!(numeric(&neg), Some(-1));
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"12.5"),
            Some(Timestamp {
                secs: 12,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timestamp {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(pax_time(b"7"), Some(Timestamp { secs: 7, nanos: 0 }));
        assert_eq!(
            pax_time(b"1.1234567891"),
            Some(Timestamp {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(pax_time(b"99999999999999999999999"), None);
    }

    #[test]
    fn path_normalisation() {
        let n = normalise(b"/a/./b/../c/").unwrap();
        assert_eq!(n.path, b"a/c");
        assert!(n.absolute && n.dotdot);
        assert!(normalise(b"a/../../x").is_err());
        assert_eq!(normalise(b"./").unwrap().path, b"");
    }

    #[test]
    fn base64_and_percent() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"AQI").unwrap(), [1, 2]);
        assert!(base64_decode(b"a*").is_none());
        assert_eq!(percent_decode(b"user.a%3Db").unwrap(), b"user.a=b");
        assert!(percent_decode(b"%4").is_none());
    }
}

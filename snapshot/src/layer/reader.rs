//! The layer reader: a `FileTree` over a layer blob (gzip, zstd or plain tar, told apart by
//! magic), yielding `Entry`s with pax path/linkpath/size/uid/gid/mtime (with fraction) and
//! `SCHILY.xattr.*` applied. Used by the import fidelity tests, the runtime's unpacker and
//! commit/diff.
//!
//! The tar parsing is our own loop over 512-byte blocks (using `tar::Header` only to decode
//! fields): `tar::Archive::entries` borrows the archive, which cannot live inside a lending
//! `FileTree`, and its pax parser splits records at newlines, which corrupts binary xattrs.
//! Layers are hostile input: checksums are verified, extended headers are size-capped, chains
//! of extended headers are bounded, `..` components are refused, and every error names the tar
//! offset of the header it came from.

use std::io::{self, BufRead, BufReader, Read};

use super::entry::{Entry, EntryKind, FileTree, Timestamp};
use super::pax;

/// The name prefix that marks a whiteout: `.wh.<name>` deletes `<name>` of lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name that makes a directory opaque: lower layers' contents of it are hidden.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Whether the last component of `path` is a whiteout (including the opaque marker).
pub fn is_whiteout(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    name.starts_with(WHITEOUT_PREFIX.as_bytes())
}

/// Whether the last component of `path` is the opaque-directory marker.
pub fn is_opaque_marker(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    name == OPAQUE_MARKER.as_bytes()
}

/// Largest pax extended header we accept (many large xattrs fit; a hostile size does not).
const MAX_PAX: u64 = 16 << 20;
/// Largest GNU long name / long link name.
const MAX_LONGNAME: u64 = 64 << 10;
/// Most bytes accepted after the end-of-archive marker.
const MAX_TRAILING: u64 = 1 << 20;
/// Most extended headers in a row before a real entry.
const MAX_META_CHAIN: usize = 32;

/// Why a layer blob could not be read. One line, naming the tar offset (in the uncompressed
/// stream) of the header concerned.
#[derive(Debug, thiserror::Error)]
pub enum LayerReadError {
    #[error("layer tar: header at offset {offset}: {what}")]
    Header { offset: u64, what: String },
    #[error("layer tar: entry {path} (header at offset {offset}): {what}")]
    Entry {
        path: String,
        offset: u64,
        what: String,
    },
    #[error("layer tar: stream ends at offset {offset} inside {what}")]
    Truncated { offset: u64, what: String },
    #[error("layer blob: reading near tar offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

impl From<LayerReadError> for io::Error {
    fn from(e: LayerReadError) -> io::Error {
        let kind = match &e {
            LayerReadError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            LayerReadError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

enum Source<R: Read> {
    Plain(BufReader<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Gzip(r) => r.read(buf),
            Source::Zstd(r) => r.read(buf),
        }
    }
}

/// The tar stream with a position count.
struct Stream<R: Read> {
    src: Source<R>,
    pos: u64,
}

impl<R: Read> Stream<R> {
    /// Reads exactly `buf.len()` bytes; Ok(false) on a clean EOF before the first byte.
    fn read_block(&mut self, buf: &mut [u8], what: &str) -> Result<bool, LayerReadError> {
        let mut got = 0;
        while got < buf.len() {
            let n = match self.src.read(&mut buf[got..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerReadError::Io {
                        offset: self.pos,
                        source,
                    })
                }
            };
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(LayerReadError::Truncated {
                    offset: self.pos,
                    what: what.to_string(),
                });
            }
            got += n;
            self.pos += n as u64;
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), LayerReadError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
            if !self.read_block(&mut buf[..want], what)? {
                return Err(LayerReadError::Truncated {
                    offset: self.pos,
                    what: what.to_string(),
                });
            }
            n -= want as u64;
        }
        Ok(())
    }

    /// Reads to EOF, failing when more than `cap` bytes remain.
    fn drain(&mut self, cap: u64) -> Result<(), LayerReadError> {
        let start = self.pos;
        let mut buf = [0u8; 8192];
        loop {
            let n = match self.src.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerReadError::Io {
                        offset: self.pos,
                        source,
                    })
                }
            };
            self.pos += n as u64;
            if self.pos - start > cap {
                return Err(LayerReadError::Header {
                    offset: start,
                    what: format!("more than {cap} bytes follow the end-of-archive marker"),
                });
            }
        }
    }

    fn read_vec(&mut self, n: u64, what: &str) -> Result<Vec<u8>, LayerReadError> {
        // n is capped by the caller (MAX_PAX / MAX_LONGNAME).
        let mut v = vec![0u8; usize::try_from(n).unwrap_or(0)];
        if !v.is_empty() && !self.read_block(&mut v, what)? {
            return Err(LayerReadError::Truncated {
                offset: self.pos,
                what: what.to_string(),
            });
        }
        self.skip(pad_len(n), what)?;
        Ok(v)
    }
}

fn pad_len(n: u64) -> u64 {
    (512 - n % 512) % 512
}

/// The content of the current entry.
struct Body<R: Read> {
    stream: Stream<R>,
    remaining: u64,
    path: String,
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = loop {
            match self.stream.src.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerReadError::Io {
                        offset: self.stream.pos,
                        source,
                    }
                    .into())
                }
                Ok(n) => break n.min(want),
            }
        };
        if n == 0 {
            return Err(LayerReadError::Truncated {
                offset: self.stream.pos,
                what: format!("the content of {}", self.path),
            }
            .into());
        }
        self.remaining -= n as u64;
        self.stream.pos += n as u64;
        Ok(n)
    }
}

/// Reads a layer blob as a `FileTree`. Entries come in the tar's own order (a layer we wrote is
/// in path order; a foreign one need not be). A root entry (`./`) is passed over.
pub struct LayerReader<R: Read> {
    body: Body<R>,
    pad: u64,
    done: bool,
}

/// What extended headers said about the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Timestamp>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<R: Read> LayerReader<R> {
    /// Detects the compression by magic (gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar).
    pub fn new(inner: R) -> io::Result<Self> {
        let mut buf = BufReader::with_capacity(256 * 1024, inner);
        let magic = buf.fill_buf()?;
        // A short first fill still decides correctly: a real gzip/zstd blob is longer than 4
        // bytes, and a too-short input fails later as a truncated tar.
        let src = if magic.starts_with(&[0x1f, 0x8b]) {
            Source::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buf)))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Source::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(buf)?))
        } else {
            Source::Plain(buf)
        };
        Ok(LayerReader {
            body: Body {
                stream: Stream { src, pos: 0 },
                remaining: 0,
                path: String::new(),
            },
            pad: 0,
            done: false,
        })
    }

    fn next(&mut self) -> Result<Option<Entry>, LayerReadError> {
        if self.done {
            return Ok(None);
        }
        // Pass over what the caller did not read of the previous entry.
        let rest = self.body.remaining + self.pad;
        self.body.remaining = 0;
        self.pad = 0;
        let what = format!("the content of {}", self.body.path);
        self.body.stream.skip(rest, &what)?;

        let mut pending = Pending::default();
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut meta = 0usize;
        loop {
            let s = &mut self.body.stream;
            let offset = s.pos;
            let mut block = [0u8; 512];
            if !s.read_block(&mut block, "a header")? {
                // No end-of-archive marker: a cut blob would otherwise read as a smaller layer.
                return Err(LayerReadError::Truncated {
                    offset,
                    what: "the archive: no end-of-archive marker".into(),
                });
            }
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                // Read on to the end of the blob so a gzip/zstd checksum or a cut trailer is
                // noticed; tar writers pad to a record (GNU: 10 KiB), so a little is normal.
                s.drain(MAX_TRAILING)?;
                return Ok(None);
            }
            let hdr = tar::Header::from_byte_slice(&block);
            check_checksum(&block, offset)?;
            let herr = |what: String| LayerReadError::Header { offset, what };
            let size = hdr
                .size()
                .map_err(|e| herr(format!("bad size field: {e}")))?;
            let flag = block[156];
            if matches!(flag, b'x' | b'g' | b'L' | b'K') {
                meta += 1;
                if meta > MAX_META_CHAIN {
                    return Err(herr(format!(
                        "more than {MAX_META_CHAIN} extended headers in a row"
                    )));
                }
            }
            match flag {
                b'x' | b'g' => {
                    if size > MAX_PAX {
                        return Err(herr(format!(
                            "pax header of {size} bytes is larger than the {MAX_PAX}-byte cap"
                        )));
                    }
                    let data = s.read_vec(size, "a pax header")?;
                    if flag == b'g' {
                        // Global headers (comments, a creation tool's charset) do not change
                        // what an entry is in any layer we know; they are passed over.
                        continue;
                    }
                    let recs = pax::parse_records(&data)
                        .map_err(|e| herr(format!("bad pax header: {e}")))?;
                    apply_pax(&mut pending, &recs).map_err(herr)?;
                }
                b'L' | b'K' => {
                    if size > MAX_LONGNAME {
                        return Err(herr(format!(
                            "GNU long name of {size} bytes is larger than the {MAX_LONGNAME}-byte cap"
                        )));
                    }
                    let mut data = s.read_vec(size, "a GNU long name")?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if flag == b'L' {
                        gnu_name = Some(data);
                    } else {
                        gnu_link = Some(data);
                    }
                }
                _ => {
                    let raw_path = pending
                        .path
                        .take()
                        .or(gnu_name.take())
                        .unwrap_or_else(|| hdr.path_bytes().into_owned());
                    let display = format!("/{}", String::from_utf8_lossy(&raw_path));
                    let eerr = |what: String| LayerReadError::Entry {
                        path: display.clone(),
                        offset,
                        what,
                    };
                    let size = pending.size.unwrap_or(size);
                    let kind = match flag {
                        b'0' | 0 | b'7' if raw_path.last() == Some(&b'/') => EntryKind::Dir,
                        b'0' | 0 | b'7' => EntryKind::File,
                        b'1' => EntryKind::Hardlink,
                        b'2' => EntryKind::Symlink,
                        b'3' => EntryKind::CharDevice,
                        b'4' => EntryKind::BlockDevice,
                        b'5' => EntryKind::Dir,
                        b'6' => EntryKind::Fifo,
                        b'S' => return Err(eerr("GNU sparse entries are not supported".into())),
                        other => {
                            return Err(eerr(format!(
                                "unsupported entry type {:?}",
                                char::from(other)
                            )))
                        }
                    };
                    let path = normalize(&raw_path).map_err(|w| eerr(w.into()))?;
                    let mode = hdr
                        .mode()
                        .map_err(|e| eerr(format!("bad mode field: {e}")))?
                        & 0o7777;
                    let uid = match pending.uid {
                        Some(v) => v,
                        None => hdr.uid().map_err(|e| eerr(format!("bad uid field: {e}")))?,
                    };
                    let gid = match pending.gid {
                        Some(v) => v,
                        None => hdr.gid().map_err(|e| eerr(format!("bad gid field: {e}")))?,
                    };
                    let uid =
                        u32::try_from(uid).map_err(|_| eerr(format!("uid {uid} too large")))?;
                    let gid =
                        u32::try_from(gid).map_err(|_| eerr(format!("gid {gid} too large")))?;
                    let mtime = match pending.mtime {
                        Some(t) => t,
                        None => {
                            let m = hdr
                                .mtime()
                                .map_err(|e| eerr(format!("bad mtime field: {e}")))?;
                            Timestamp {
                                secs: i64::try_from(m)
                                    .map_err(|_| eerr(format!("mtime {m} too large")))?,
                                nanos: 0,
                            }
                        }
                    };
                    let link_target = match kind {
                        EntryKind::Symlink | EntryKind::Hardlink => {
                            let l = pending
                                .link
                                .take()
                                .or(gnu_link.take())
                                .or_else(|| hdr.link_name_bytes().map(|c| c.into_owned()))
                                .filter(|l| !l.is_empty())
                                .ok_or_else(|| eerr("link entry without a target".into()))?;
                            Some(if kind == EntryKind::Hardlink {
                                normalize(&l)
                                    .map_err(|w| eerr(format!("hardlink target: {w}")))?
                                    .ok_or_else(|| eerr("hardlink to the root".into()))?
                            } else {
                                l
                            })
                        }
                        _ => None,
                    };
                    let device = match kind {
                        EntryKind::CharDevice | EntryKind::BlockDevice => {
                            let maj = hdr
                                .device_major()
                                .map_err(|e| eerr(format!("bad devmajor field: {e}")))?
                                .unwrap_or(0);
                            let min = hdr
                                .device_minor()
                                .map_err(|e| eerr(format!("bad devminor field: {e}")))?
                                .unwrap_or(0);
                            Some((maj, min))
                        }
                        _ => None,
                    };
                    let mut xattrs = std::mem::take(&mut pending.xattrs);
                    // Sorted by name; on a repeated name the later record wins, as in pax.
                    xattrs.reverse();
                    xattrs.sort_by(|a, b| a.0.cmp(&b.0));
                    xattrs.dedup_by(|a, b| a.0 == b.0);

                    self.body.path = display.clone();
                    self.pad = pad_len(size);
                    let Some(path) = path else {
                        // The root directory itself: not an entry.
                        self.body.remaining = size;
                        return self.next();
                    };
                    let entry_size = if kind == EntryKind::File { size } else { 0 };
                    if kind == EntryKind::File {
                        self.body.remaining = size;
                    } else {
                        self.body
                            .stream
                            .skip(size, &format!("the data of {display}"))?;
                    }
                    let mut e = Entry::new(path, kind, mode);
                    e.uid = uid;
                    e.gid = gid;
                    e.mtime = mtime;
                    e.size = entry_size;
                    e.link_target = link_target;
                    e.device = device;
                    e.xattrs = xattrs;
                    return Ok(Some(e));
                }
            }
        }
    }
}

impl<R: Read> FileTree for LayerReader<R> {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        Ok(self.next()?)
    }

    fn content(&mut self) -> &mut dyn Read {
        &mut self.body
    }
}

fn check_checksum(block: &[u8; 512], offset: u64) -> Result<(), LayerReadError> {
    let field = block.get(148..156).unwrap_or_default();
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or_else(|| LayerReadError::Header {
            offset,
            what: "checksum field is not an octal number (not a tar header)".into(),
        })?;
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && i64::from(stored) != signed {
        return Err(LayerReadError::Header {
            offset,
            what: format!("checksum {stored:o} does not match the header's {unsigned:o}"),
        });
    }
    Ok(())
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn apply_pax(p: &mut Pending, recs: &[(&[u8], &[u8])]) -> Result<(), String> {
    for &(k, v) in recs {
        let bad = |what: &str| format!("pax {what} {:?} is not valid", String::from_utf8_lossy(v));
        match k {
            b"path" => p.path = Some(v.to_vec()),
            b"linkpath" => p.link = Some(v.to_vec()),
            b"size" => p.size = Some(parse_num(v).ok_or_else(|| bad("size"))?),
            b"uid" => p.uid = Some(parse_num(v).ok_or_else(|| bad("uid"))?),
            b"gid" => p.gid = Some(parse_num(v).ok_or_else(|| bad("gid"))?),
            b"mtime" => p.mtime = Some(pax::parse_time(v).ok_or_else(|| bad("mtime"))?),
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    p.xattrs.push((name.to_vec(), v.to_vec()));
                } else if k.starts_with(b"GNU.sparse.") {
                    return Err("GNU sparse entries are not supported".into());
                }
            }
        }
    }
    Ok(())
}

/// Turns a tar name into an `Entry` path: no leading `/` or `./`, no trailing `/`, no `.` or
/// empty components. Ok(None) for the root itself; Err for `..` and NUL.
fn normalize(raw: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize(b"./etc//x/").unwrap(), Some(b"etc/x".to_vec()));
        assert_eq!(normalize(b"/a/./b").unwrap(), Some(b"a/b".to_vec()));
        assert_eq!(normalize(b"./").unwrap(), None);
        assert!(normalize(b"a/../b").is_err());
    }

    #[test]
    fn whiteout_names() {
        assert!(is_whiteout(b"etc/.wh.passwd"));
        assert!(is_whiteout(b".wh..wh..opq"));
        assert!(is_opaque_marker(b"usr/.wh..wh..opq"));
        assert!(!is_whiteout(b".wh.dir/file"));
        assert!(!is_opaque_marker(b"usr/.wh.x"));
    }
}

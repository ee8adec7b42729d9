//! The walk: an ext4 filesystem as a `snapshot::FileTree` (depth-first, children sorted by
//! name bytes, each directory before its contents), and path lookups for `FileLookup`.
//!
//! Memory is bounded by the depth times the largest directory: one sorted name list per
//! directory on the current path. Every directory inode is entered at most once, so a damaged
//! directory that points back at an ancestor (or a directory with two names) fails instead of
//! looping or walking a subtree twice. Sockets have no `EntryKind` and cannot go in a layer:
//! they are skipped and counted.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::Arc;

use snapshot::{Entry, FileTree};

use super::dir::DirEntry;
use super::file::FileReader;
use super::inode::{FileKind, Inode};
use super::{Ext4, Ext4Error, Fs, ROOT_INO};
use crate::fs::FileLookup;

/// Deepest directory nesting walked (PATH_MAX allows about 2048 levels).
const MAX_DEPTH: usize = 4096;
/// Longest symlink target read.
const MAX_LINK: u64 = 65536;

struct Frame {
    ino: u32,
    /// Path of this directory relative to the walk's root (empty for the root).
    prefix: Vec<u8>,
    children: Vec<DirEntry>,
    next: usize,
}

/// The entries of an ext4 filesystem (or one of its directories), in `FileTree` order.
pub struct Ext4Tree {
    fs: Arc<Fs>,
    stack: Vec<Frame>,
    /// A directory just returned whose children are listed on the next call.
    pending: Option<(u32, Vec<u8>)>,
    visited: HashSet<u32>,
    content: Option<FileReader>,
    empty: io::Empty,
    sockets: u64,
}

impl Ext4Tree {
    pub(crate) fn new(fs: Arc<Fs>, ino: u32) -> Ext4Tree {
        Ext4Tree {
            fs,
            stack: Vec::new(),
            pending: Some((ino, Vec::new())),
            visited: HashSet::from([ino]),
            content: None,
            empty: io::empty(),
            sockets: 0,
        }
    }

    /// How many sockets were skipped so far.
    pub fn sockets_skipped(&self) -> u64 {
        self.sockets
    }

    fn next_inner(&mut self) -> Result<Option<Entry>, Ext4Error> {
        self.content = None;
        if let Some((ino, prefix)) = self.pending.take() {
            if self.stack.len() >= MAX_DEPTH {
                return Err(self.fs.corrupt(format!(
                    "directory inode {ino}: nesting deeper than {MAX_DEPTH} levels"
                )));
            }
            let inode = self.fs.read_inode(ino)?;
            if inode.kind != FileKind::Dir {
                return Err(self.fs.corrupt(format!("inode {ino} is not a directory")));
            }
            let children = self.fs.read_dir_entries(&inode)?;
            self.stack.push(Frame {
                ino,
                prefix,
                children,
                next: 0,
            });
        }
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(child) = frame.children.get(frame.next) else {
                self.stack.pop();
                continue;
            };
            frame.next += 1;
            let mut path = frame.prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&child.name);
            let parent = frame.ino;
            let inode = self.fs.read_inode(child.ino)?;
            let Some(entry) = self.fs.entry(path, &inode)? else {
                self.sockets += 1;
                continue;
            };
            match inode.kind {
                FileKind::Dir => {
                    if !self.visited.insert(inode.ino) {
                        return Err(self.fs.corrupt(format!(
                            "directory inode {parent}: entry {} points to directory inode {}, which was already walked (a loop or a second name for a directory)",
                            entry.display_path(),
                            inode.ino
                        )));
                    }
                    self.pending = Some((inode.ino, entry.path.clone()));
                }
                FileKind::Regular => {
                    self.content = Some(FileReader::new(self.fs.clone(), &inode)?);
                }
                _ => {}
            }
            return Ok(Some(entry));
        }
    }
}

impl FileTree for Ext4Tree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.next_inner().map_err(io::Error::from)
    }

    fn content(&mut self) -> &mut dyn Read {
        match &mut self.content {
            Some(r) => r,
            None => &mut self.empty,
        }
    }
}

impl Fs {
    /// The `Entry` for `inode` at `path`; `None` for a socket.
    pub(crate) fn entry(&self, path: Vec<u8>, inode: &Inode) -> Result<Option<Entry>, Ext4Error> {
        let Some(kind) = inode.kind.entry_kind() else {
            return Ok(None);
        };
        let mut e = Entry::new(path, kind, inode.perm);
        e.uid = inode.uid;
        e.gid = inode.gid;
        e.mtime = inode.mtime;
        e.allocated = Some(inode.allocated);
        match inode.kind {
            FileKind::Regular => {
                e.size = inode.size;
                if inode.links > 1 {
                    e.hardlink_key = Some((self.volume_id, u64::from(inode.ino)));
                }
            }
            FileKind::Symlink => e.link_target = Some(self.link_target(inode)?),
            FileKind::CharDevice | FileKind::BlockDevice => e.device = Some(inode.device()),
            _ => {}
        }
        let mut xattrs = self.read_xattrs(inode)?;
        xattrs.retain(|(n, _)| n != b"system.data");
        xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        e.xattrs = xattrs;
        Ok(Some(e))
    }

    /// A symlink's target: in `i_block` when shorter than 60 bytes (a fast symlink), else in
    /// its data (a block, or inline data).
    fn link_target(&self, inode: &Inode) -> Result<Vec<u8>, Ext4Error> {
        if inode.size == 0 || inode.size > MAX_LINK {
            return Err(self.corrupt(format!(
                "symlink inode {} (byte {}): target length {} is not in 1..={MAX_LINK}",
                inode.ino, inode.offset, inode.size
            )));
        }
        if inode.size < 60 && inode.flags & super::inode::FLAG_INLINE_DATA == 0 {
            return Ok(inode
                .i_block
                .get(..inode.size as usize)
                .unwrap_or(&[])
                .to_vec());
        }
        let mut out = vec![0u8; inode.size as usize];
        let mut reader = FileReaderRef::new(self, inode)?;
        reader.read_all(&mut out)?;
        Ok(out)
    }

    pub(crate) fn path_error(&self, path: &[u8], what: &str, kind: io::ErrorKind) -> Ext4Error {
        Ext4Error::Path {
            file: self.name.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
            what: what.to_string(),
            kind,
        }
    }

    /// The inode at absolute `path` (no symlink is followed); `None` when a component is
    /// missing or a non-final component is not a directory.
    pub(crate) fn resolve(&self, path: &[u8]) -> Result<Option<Inode>, Ext4Error> {
        let mut chain = vec![self.read_inode(ROOT_INO)?];
        for comp in path.split(|&c| c == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if comp == b".." {
                if chain.len() > 1 {
                    chain.pop();
                }
                continue;
            }
            if chain.len() > MAX_DEPTH {
                return Err(self.path_error(
                    path,
                    "too many components",
                    io::ErrorKind::InvalidInput,
                ));
            }
            let Some(dir) = chain.last() else {
                return Ok(None);
            };
            if dir.kind != FileKind::Dir {
                return Ok(None);
            }
            let entries = self.read_dir_entries(dir)?;
            let Ok(i) = entries.binary_search_by(|e| e.name.as_slice().cmp(comp)) else {
                return Ok(None);
            };
            let ino = entries.get(i).map_or(0, |e| e.ino);
            chain.push(self.read_inode(ino)?);
        }
        Ok(chain.pop())
    }
}

/// Reads a whole (small) inode's data through its map without needing an `Arc<Fs>`.
struct FileReaderRef<'a> {
    fs: &'a Fs,
    map: super::file::DataMap,
    ino: u32,
}

impl<'a> FileReaderRef<'a> {
    fn new(fs: &'a Fs, inode: &Inode) -> Result<FileReaderRef<'a>, Ext4Error> {
        Ok(FileReaderRef {
            fs,
            map: super::file::DataMap::new(fs, inode, inode.size)?,
            ino: inode.ino,
        })
    }

    /// Fills `out` with the first `out.len()` bytes (holes as zeros).
    fn read_all(&mut self, out: &mut [u8]) -> Result<(), Ext4Error> {
        if let super::file::DataMap::Inline(d) = &self.map {
            let src = d.get(..out.len()).ok_or_else(|| {
                self.fs.corrupt(format!(
                    "inode {}: inline data holds {} bytes, fewer than i_size {}",
                    self.ino,
                    d.len(),
                    out.len()
                ))
            })?;
            out.copy_from_slice(src);
            return Ok(());
        }
        out.fill(0);
        let bs = u64::from(self.fs.sb.block_size);
        let total = out.len() as u64;
        while let Some(run) = self.map.next_run(self.fs)? {
            let Some(phys) = run.phys else { continue };
            let start = run.logical.saturating_mul(bs);
            if start >= total {
                break;
            }
            let end = run
                .logical
                .saturating_add(run.len)
                .saturating_mul(bs)
                .min(total);
            let part = out.get_mut(start as usize..end as usize).unwrap_or(&mut []);
            let ino = self.ino;
            self.fs
                .read_bytes(phys * bs, part, || format!("inode {ino} data block {phys}"))?;
        }
        Ok(())
    }
}

/// Lookups by absolute path. `..` climbs (never above the root), no symlink is followed, and
/// a socket (which has no `EntryKind`) stats as absent.
impl FileLookup for Ext4 {
    fn stat(&self, path: &[u8]) -> io::Result<Option<Entry>> {
        let Some(inode) = self.fs.resolve(path)? else {
            return Ok(None);
        };
        let rel: Vec<u8> = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect::<Vec<_>>()
            .join(&b'/');
        Ok(self.fs.entry(rel, &inode)?)
    }

    fn read_file(&self, path: &[u8], max: usize) -> io::Result<Vec<u8>> {
        let inode = self.fs.resolve(path)?.ok_or_else(|| {
            self.fs
                .path_error(path, "no such file", io::ErrorKind::NotFound)
        })?;
        if inode.kind != FileKind::Regular {
            return Err(self
                .fs
                .path_error(path, "not a regular file", io::ErrorKind::InvalidInput)
                .into());
        }
        let reader = FileReader::new(self.fs.clone(), &inode)?;
        let mut out = Vec::with_capacity(inode.size.min(max as u64).min(1 << 20) as usize);
        reader.take(max as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let inode = self.fs.resolve(path)?.ok_or_else(|| {
            self.fs
                .path_error(path, "no such directory", io::ErrorKind::NotFound)
        })?;
        if inode.kind != FileKind::Dir {
            return Err(self
                .fs
                .path_error(path, "not a directory", io::ErrorKind::NotADirectory)
                .into());
        }
        Ok(self
            .fs
            .read_dir_entries(&inode)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }
}

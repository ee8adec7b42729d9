//! Our own ext2/ext3/ext4 reader: superblock, group descriptors, inodes, extent trees and block
//! maps, directories (linear and htree), inline data, symlinks, devices and xattrs, turned into
//! a `snapshot::FileTree` and a by-path `FileLookup`.
//!
//! Why not ext4-view 1.0: it exposes no inode numbers, link counts, device numbers or xattrs
//! (so no hardlinks, device nodes or file capabilities); it fails on timestamps with bit 31 set
//! (before 1970, 2038-2106), on block-mapped holes inside indirect blocks and on 128-byte inodes
//! with metadata_csum; it rejects inline_data; and it is not Send. ext4-view stays a test oracle.
//!
//! Everything read from the device is hostile: every block number is checked against the
//! filesystem size, every structure against its container, every walk is bounded, and each
//! failure is a one-line `Ext4Error` naming the file, the structure, the inode or block and the
//! offset. Checksums are not verified (a damaged structure is caught by the checks instead).
//! A filesystem with a dirty journal is read through `journal::replay`'s in-memory overlay.

use std::io;
use std::sync::Arc;

use crate::block::BlockSource;

mod blockmap;
mod dir;
mod extent;
mod file;
mod group;
mod inode;
pub mod journal;
mod superblock;
mod tree;
mod xattr;

pub use tree::Ext4Tree;

use journal::JournalError;
use superblock::{Superblock, COMPAT_HAS_JOURNAL, INCOMPAT_RECOVER, SUPERBLOCK_OFFSET};

/// The root directory's inode number.
const ROOT_INO: u32 = 2;
/// Largest journal we map (in blocks) before handing it to the replay.
const MAX_JOURNAL_BLOCKS: u64 = 1 << 20;

/// Why an ext2/3/4 filesystem cannot be read. Messages are one line: the file, the structure
/// (inode, block, offset) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// The device failed to read (often: a structure points past the end of a truncated image).
    #[error("{file}: ext4 {what}: {source}")]
    Io {
        file: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// A structure on disk is inconsistent.
    #[error("{file}: ext4 {what}")]
    Corrupt { file: String, what: String },
    /// A feature this reader does not handle.
    #[error("{file}: ext4: {what}")]
    Unsupported { file: String, what: String },
    /// A path given by the caller does not name what it should.
    #[error("{file}: ext4: {path}: {what}")]
    Path {
        file: String,
        path: String,
        what: String,
        kind: io::ErrorKind,
    },
    /// The dirty journal could not be replayed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<Ext4Error> for io::Error {
    fn from(e: Ext4Error) -> io::Error {
        let kind = match &e {
            Ext4Error::Io { source, .. } => source.kind(),
            Ext4Error::Corrupt { .. } | Ext4Error::Journal(_) => io::ErrorKind::InvalidData,
            Ext4Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Ext4Error::Path { kind, .. } => *kind,
        };
        io::Error::new(kind, e)
    }
}

/// A summary of the filesystem, for `inspect` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Info {
    /// "ext2", "ext3" or "ext4".
    pub kind: &'static str,
    /// Lowercase 8-4-4-4-12.
    pub uuid: String,
    pub label: String,
    pub block_size: u32,
    pub size_bytes: u64,
    /// Bytes in use, from the superblock's free-block count (a hint: may be stale).
    pub used_bytes: u64,
    pub inodes: u64,
    /// True when a dirty journal was replayed (in memory) before reading.
    pub journal_replayed: bool,
    /// Every feature flag set, as dumpe2fs names them.
    pub features: Vec<String>,
}

/// A mapped stretch of a file: `len` logical blocks from `logical`, at device block `phys`
/// (`None`: an uninitialized extent, reading as zeros).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub logical: u64,
    pub len: u64,
    pub phys: Option<u64>,
}

/// The shared state of an open filesystem.
pub(crate) struct Fs {
    src: Arc<dyn BlockSource>,
    name: String,
    sb: Superblock,
    inode_tables: Vec<u64>,
    volume_id: u64,
    journal_replayed: bool,
}

impl Fs {
    pub(crate) fn corrupt(&self, what: String) -> Ext4Error {
        Ext4Error::Corrupt {
            file: self.name.clone(),
            what,
        }
    }

    /// Reads `buf.len()` bytes at `offset`, naming `what` on failure.
    pub(crate) fn read_bytes(
        &self,
        offset: u64,
        buf: &mut [u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), Ext4Error> {
        self.src.read_at(offset, buf).map_err(|e| Ext4Error::Io {
            file: self.name.clone(),
            what: what(),
            source: e,
        })
    }

    fn load(src: Arc<dyn BlockSource>, volume_id: u64, replayed: bool) -> Result<Fs, Ext4Error> {
        let name = src.name().to_string();
        let mut raw = vec![0u8; 1024];
        src.read_at(SUPERBLOCK_OFFSET, &mut raw)
            .map_err(|e| Ext4Error::Io {
                file: name.clone(),
                what: format!("superblock (byte {SUPERBLOCK_OFFSET})"),
                source: e,
            })?;
        let sb = Superblock::parse(&raw, &name, src.len())?;
        let inode_tables = group::read_inode_tables(src.as_ref(), &sb)?;
        Ok(Fs {
            src,
            name,
            sb,
            inode_tables,
            volume_id,
            journal_replayed: replayed,
        })
    }

    /// The device blocks of the internal journal, in journal order.
    fn journal_blocks(&self) -> Result<Vec<u64>, Ext4Error> {
        let ino = self.sb.journal_inum;
        let inode = self.read_inode(ino)?;
        let bs = u64::from(self.sb.block_size);
        let blocks = inode.size / bs;
        if blocks == 0 || blocks > MAX_JOURNAL_BLOCKS {
            return Err(self.corrupt(format!(
                "journal inode {ino}: {blocks} blocks (i_size {}) is not in 1..={MAX_JOURNAL_BLOCKS}",
                inode.size
            )));
        }
        let mut map = file::DataMap::new(self, &inode, blocks * bs)?;
        let mut out = Vec::with_capacity(blocks as usize);
        while let Some(run) = map.next_run(self)? {
            let (Some(phys), true) = (run.phys, run.logical == out.len() as u64) else {
                return Err(self.corrupt(format!(
                    "journal inode {ino}: logical block {} is a hole or unwritten",
                    out.len()
                )));
            };
            let take = run.len.min(blocks - out.len() as u64);
            out.extend(phys..phys + take);
        }
        if (out.len() as u64) < blocks {
            return Err(self.corrupt(format!(
                "journal inode {ino}: only {} of {blocks} blocks are mapped",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// An open ext2/3/4 filesystem. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Ext4 {
    fs: Arc<Fs>,
}

impl Ext4 {
    /// Opens the filesystem on `src`. `volume_id` goes into every `hardlink_key`, so that
    /// hardlink groups of different volumes never mix. A dirty journal (needs_recovery) is
    /// replayed in memory first; an external journal is refused.
    pub fn open(src: Arc<dyn BlockSource>, volume_id: u64) -> Result<Ext4, Ext4Error> {
        let fs = Fs::load(src.clone(), volume_id, false)?;
        if fs.sb.incompat & INCOMPAT_RECOVER == 0 {
            return Ok(Ext4 { fs: Arc::new(fs) });
        }
        if fs.sb.compat & COMPAT_HAS_JOURNAL == 0 {
            return Err(fs.corrupt(
                "superblock: needs_recovery is set but the filesystem has no journal".into(),
            ));
        }
        if fs.sb.journal_inum == 0 {
            return Err(Ext4Error::Unsupported {
                file: fs.name.clone(),
                what: "the filesystem needs journal recovery from an external journal device, which this reader does not support".into(),
            });
        }
        let blocks = fs.journal_blocks()?;
        match journal::replay(src, fs.sb.block_size, blocks)? {
            None => Ok(Ext4 { fs: Arc::new(fs) }),
            Some(overlay) => {
                let fs = Fs::load(Arc::new(overlay), volume_id, true)?;
                Ok(Ext4 { fs: Arc::new(fs) })
            }
        }
    }

    /// What the filesystem is.
    pub fn info(&self) -> Ext4Info {
        let sb = &self.fs.sb;
        Ext4Info {
            kind: sb.kind(),
            uuid: sb.uuid_string(),
            label: sb.label_string(),
            block_size: sb.block_size,
            size_bytes: sb.blocks_count * u64::from(sb.block_size),
            used_bytes: (sb.blocks_count - sb.free_blocks) * u64::from(sb.block_size),
            inodes: u64::from(sb.inodes_count),
            journal_replayed: self.fs.journal_replayed,
            features: sb.features(),
        }
    }

    /// Every file, from the root.
    pub fn tree(&self) -> Ext4Tree {
        Ext4Tree::new(self.fs.clone(), ROOT_INO)
    }

    /// Every file under the directory `dir` (absolute path), with paths relative to it.
    pub fn tree_at(&self, dir: &[u8]) -> Result<Ext4Tree, Ext4Error> {
        let inode = self.fs.resolve(dir)?.ok_or_else(|| {
            self.fs
                .path_error(dir, "no such directory", io::ErrorKind::NotFound)
        })?;
        if inode.kind != inode::FileKind::Dir {
            return Err(self
                .fs
                .path_error(dir, "not a directory", io::ErrorKind::NotADirectory));
        }
        Ok(Ext4Tree::new(self.fs.clone(), inode.ino))
    }
}

pub(crate) use crate::bytes::{le16, le32};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_io_kinds_and_stay_one_line() {
        let e = Ext4Error::Corrupt {
            file: "d.img".into(),
            what: "inode 12 (byte 4096): bad".into(),
        };
        let io_err = io::Error::from(e);
        assert_eq!(io_err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io_err.to_string(), "d.img: ext4 inode 12 (byte 4096): bad");
        let e = Ext4Error::Unsupported {
            file: "d.img".into(),
            what: "x".into(),
        };
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::Unsupported);
        let e = Ext4Error::Io {
            file: "d.img".into(),
            what: "block 9".into(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "short"),
        };
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn little_endian_helpers_never_read_out_of_range() {
        assert_eq!(le16(&[1, 2], 0), 0x0201);
        assert_eq!(le16(&[1, 2], 1), 0);
        assert_eq!(le32(&[1, 2, 3, 4], 0), 0x0403_0201);
        assert_eq!(le32(&[1, 2, 3, 4], usize::MAX), 0);
    }

    #[test]
    fn ext4_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ext4>();
    }
}

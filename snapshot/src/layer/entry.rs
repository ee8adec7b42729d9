//! `Entry` and `FileTree`: what every source of files (a filesystem reader, a tarball, a
//! container's upper dir) hands to the `LayerWriter`. Import, commit and strip all go through
//! these, so fidelity is solved once.

use std::io::{self, Read};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A second name for a file written earlier in the same tree; `link_target` is that path.
    /// Filesystem readers do not produce these (they set `hardlink_key` instead and let the
    /// writer decide which name carries the data); tarball readers do.
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A point in time as a filesystem records it: seconds since the epoch (may be negative) and
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// One file's metadata. Paths are raw bytes (Linux names need not be UTF-8), relative to the
/// root, without a leading `/` or `./` and without a trailing `/`: `etc/passwd`, `usr/bin`.
/// The root directory itself is not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// Content length for regular files; 0 for everything else.
    pub size: u64,
    /// Symlink target, or for `Hardlink` the path of the earlier name.
    pub link_target: Option<Vec<u8>>,
    /// (major, minor) for character and block devices.
    pub device: Option<(u32, u32)>,
    /// Extended attributes with their full names (`user.foo`, `security.capability`), sorted by
    /// name. Values may be empty here; the writer decides what a layer can carry.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For a regular file with more than one name: (volume id, inode number). All names with the
    /// same key are one file; the first one written carries the data.
    pub hardlink_key: Option<(u64, u64)>,
    /// Bytes the file really occupies on its filesystem, when the source knows it. Much less than
    /// `size` means a file full of holes (a VM's `lastlog` can claim terabytes).
    pub allocated: Option<u64>,
}

impl Entry {
    /// A bare entry with root ownership, time zero and no extras; callers fill in the rest.
    pub fn new(path: impl Into<Vec<u8>>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            size: 0,
            link_target: None,
            device: None,
            xattrs: Vec::new(),
            hardlink_key: None,
            allocated: None,
        }
    }

    /// The path as text for messages (lossy for non-UTF-8 names).
    pub fn display_path(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.path))
    }
}

/// A source of entries in path order: a lending iterator whose current entry's content is read
/// through `content()` before the next call to `next_entry`.
///
/// Errors are `io::Error`; implementors wrap their own typed errors (which name the file and the
/// offset) so the message survives up to the user.
pub trait FileTree {
    /// The next entry, or `None` at the end. Order: depth-first, children of a directory sorted
    /// by name bytes, a directory before its contents.
    fn next_entry(&mut self) -> io::Result<Option<Entry>>;

    /// The content of the entry last returned (regular files only; empty for everything else).
    /// Yields exactly `size` bytes or fails.
    fn content(&mut self) -> &mut dyn Read;
}

/// Compares two paths the way `FileTree` orders them: component by component, each component
/// by its bytes. (`a/b` sorts before `a.b` because the component `a` < `a.b`.)
pub fn path_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn path_order_is_component_wise() {
        assert_eq!(path_order(b"a/b", b"a.b"), Ordering::Less);
        assert_eq!(path_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(path_order(b"etc/x", b"etc/x"), Ordering::Equal);
        assert_eq!(path_order(b"b", b"a/z"), Ordering::Greater);
    }
}

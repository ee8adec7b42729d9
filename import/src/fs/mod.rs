//! Filesystems: recognising them by signature, and reading them as `FileTree`s.

use std::io;

use snapshot::Entry;

pub mod ext4;
pub mod probe;

/// Random access by path into a filesystem: what root detection, fstab reading and the ELF
/// sniffing of `inspect` need. Paths are absolute inside the filesystem (`/etc/os-release`);
/// no symlink is followed (callers resolve them, inside the root).
pub trait FileLookup {
    /// Metadata of the file at `path` without following a final symlink; `None` when absent.
    fn stat(&self, path: &[u8]) -> io::Result<Option<Entry>>;

    /// The first `max` bytes (at most) of the regular file at `path`.
    fn read_file(&self, path: &[u8], max: usize) -> io::Result<Vec<u8>>;

    /// The names in the directory at `path` (without `.` and `..`), sorted.
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>>;
}

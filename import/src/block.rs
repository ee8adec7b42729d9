//! `BlockSource`: the random-access, read-only byte device every reader above it takes.
//!
//! Positioned reads on `&self` (pread), so several threads can read one source at once. A disk
//! image format, a partition or an LV is a `BlockSource`; a filesystem reader never knows which.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A read-only device of `len()` bytes.
pub trait BlockSource: Send + Sync {
    /// Length in bytes (the virtual size for disk images).
    fn len(&self) -> u64;

    /// True when the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill all of `buf` with the bytes at `offset`. A read that would go past `len()` fails with
    /// `UnexpectedEof`; it never returns short.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// What to call this source in an error message: usually the file path, with the partition or
    /// volume appended (`disk.qcow2 partition 2`).
    fn name(&self) -> &str;
}

impl<T: BlockSource + ?Sized> BlockSource for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// Checks that `[offset, offset + len)` lies inside a source of `size` bytes.
pub fn check_range(name: &str, size: u64, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{name}: read of {len} bytes at offset {offset} is past the end ({size} bytes)"
            ),
        )),
    }
}

/// A plain file (a raw disk or a partition dump) as a `BlockSource`.
pub struct FileSource {
    file: File,
    len: u64,
    name: String,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource {
            file,
            len,
            name: path.display().to_string(),
        })
    }

    /// The open file, for format readers that parse headers before choosing a view.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl BlockSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.len, offset, buf.len())?;
        self.file.read_exact_at(buf, offset)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// A byte window on another source: a partition, or one linear segment of a volume.
pub struct Window {
    inner: Arc<dyn BlockSource>,
    start: u64,
    len: u64,
    name: String,
}

impl Window {
    /// A window of `len` bytes starting at `start`. Fails when the window does not fit inside
    /// `inner`, so a partition table pointing past the end of the disk is caught here.
    pub fn new(
        inner: Arc<dyn BlockSource>,
        start: u64,
        len: u64,
        name: String,
    ) -> io::Result<Window> {
        match start.checked_add(len) {
            Some(end) if end <= inner.len() => Ok(Window { inner, start, len, name }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{name}: extends past the end of {} (starts at byte {start}, {len} bytes, device has {})",
                    inner.name(),
                    inner.len()
                ),
            )),
        }
    }
}

impl BlockSource for Window {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.len, offset, buf.len())?;
        self.inner.read_at(self.start + offset, buf)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// An in-memory source, for tests and for small synthetic volumes.
pub struct MemSource {
    data: Vec<u8>,
    name: String,
}

impl MemSource {
    pub fn new(data: Vec<u8>, name: impl Into<String>) -> MemSource {
        MemSource {
            data,
            name: name.into(),
        }
    }
}

impl BlockSource for MemSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.len(), offset, buf.len())?;
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reads_inside_and_refuses_outside() {
        let mem: Arc<dyn BlockSource> = Arc::new(MemSource::new((0u8..100).collect(), "mem"));
        let w = Window::new(mem.clone(), 10, 20, "mem part 1".into()).unwrap();
        let mut b = [0u8; 4];
        w.read_at(16, &mut b).unwrap();
        assert_eq!(b, [26, 27, 28, 29]);
        let err = w.read_at(18, &mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("mem part 1"));
        assert!(Window::new(mem.clone(), 90, 20, "bad".into()).is_err());
        assert!(Window::new(mem, u64::MAX, 2, "overflow".into()).is_err());
    }
}

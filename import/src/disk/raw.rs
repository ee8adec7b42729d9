//! Raw disk images: the file's bytes are the guest's disk, one for one.
//!
//! This is the fallback of `open_disk`: anything without a known magic is read as raw.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{BlockSource, FileSource};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

/// A raw disk: a `FileSource` that also describes itself.
pub struct RawDisk {
    file: FileSource,
    path: PathBuf,
}

/// Raw has no magic: every header matches, so `open_disk` tries it last.
pub fn matches(_header: &[u8]) -> bool {
    true
}

/// Opens `path` as a raw disk image.
pub fn open(path: &Path, _opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    let file = FileSource::open(path).map_err(|e| DiskError::io(path.display().to_string(), e))?;
    Ok(Arc::new(RawDisk {
        file,
        path: path.to_path_buf(),
    }))
}

impl BlockSource for RawDisk {
    fn len(&self) -> u64 {
        self.file.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn name(&self) -> &str {
        self.file.name()
    }
}

impl DiskImage for RawDisk {
    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "raw".into(),
            subformat: String::new(),
            file: self.path.clone(),
            virtual_size: self.file.len(),
            backing: None,
            notes: Vec::new(),
        }
    }
}

//! Virtual disk formats: each one is a `BlockSource` over the guest's virtual disk, read lazily.
//!
//! `open_disk` recognises the format by its magic bytes (never by the file name) and returns the
//! reader, so nothing above this module knows which format a disk came in.

use std::io;
use std::path::PathBuf;

use crate::block::BlockSource;

/// Why a disk image cannot be read. Every variant names the file; format errors also name the
/// structure and the byte offset, so a user can see exactly what is damaged.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: {structure} at offset {offset}: {problem}")]
    Corrupt {
        file: String,
        structure: &'static str,
        offset: u64,
        problem: String,
    },
    #[error("{file}: unsupported: {what}")]
    Unsupported { file: String, what: String },
    /// Another file the image needs (a parent, an extent) cannot be found.
    #[error("{file}: {what}")]
    Missing { file: String, what: String },
}

impl DiskError {
    pub fn io(file: impl Into<String>, source: io::Error) -> DiskError {
        DiskError::Io {
            file: file.into(),
            source,
        }
    }
    pub fn corrupt(
        file: impl Into<String>,
        structure: &'static str,
        offset: u64,
        problem: impl Into<String>,
    ) -> DiskError {
        DiskError::Corrupt {
            file: file.into(),
            structure,
            offset,
            problem: problem.into(),
        }
    }
    pub fn unsupported(file: impl Into<String>, what: impl Into<String>) -> DiskError {
        DiskError::Unsupported {
            file: file.into(),
            what: what.into(),
        }
    }
}

impl From<DiskError> for io::Error {
    fn from(e: DiskError) -> io::Error {
        let kind = match &e {
            DiskError::Io { source, .. } => source.kind(),
            DiskError::Corrupt { .. } => io::ErrorKind::InvalidData,
            DiskError::Unsupported { .. } => io::ErrorKind::Unsupported,
            DiskError::Missing { .. } => io::ErrorKind::NotFound,
        };
        io::Error::new(kind, e)
    }
}

/// What a disk image is, for `inspect-disk` and the import summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskInfo {
    /// `raw`, `qcow2`, `vdi`, `vmdk`, `vhd`, `vhdx`.
    pub format: String,
    /// Variant within the format: `v3`, `dynamic`, `fixed`, `differencing`, `monolithicSparse`,
    /// `streamOptimized`, ...
    pub subformat: String,
    pub file: PathBuf,
    pub virtual_size: u64,
    /// The parent image this one reads unallocated data from, if any.
    pub backing: Option<Box<DiskInfo>>,
    /// Things the user should know: "dirty: refcounts may be stale, data is readable", ...
    pub notes: Vec<String>,
}

/// Choices the user can make about how disks are opened.
#[derive(Debug, Clone, Default)]
pub struct DiskOptions {
    /// The parent of a differencing image (VDI), when it is not beside the child.
    pub parent: Option<PathBuf>,
}

/// An opened virtual disk: its bytes, and what it is.
pub trait DiskImage: BlockSource {
    fn info(&self) -> DiskInfo;
}

pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

/// How many bytes of the file `open_disk` reads to recognise the format.
const SNIFF_LEN: usize = 512;

/// Opens a virtual disk of any known format, recognised by its first bytes (never by its name).
/// A file with no known magic is a raw disk.
pub fn open_disk(
    path: &std::path::Path,
    opts: &DiskOptions,
) -> Result<std::sync::Arc<dyn DiskImage>, DiskError> {
    use std::io::Read;
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| DiskError::io(&name, e))?;
    let mut header = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| DiskError::io(&name, e))?;
    for (_, matches, open) in FORMATS {
        if matches(&header) {
            return open(path, opts);
        }
    }
    // A fixed VHD is a raw disk with a 512-byte footer: only its end says what it is.
    let len = file.metadata().map_err(|e| DiskError::io(&name, e))?.len();
    if len >= 1024 {
        let mut tail = [0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, len - 512)
            .map_err(|e| DiskError::io(&name, e))?;
        if vhd::matches_footer(&tail) {
            return vhd::open(path, opts);
        }
    }
    raw::open(path, opts)
}

/// Recognises one format from the file's first bytes: the `matches` function of a format module.
type MatchFn = fn(&[u8]) -> bool;

/// Opens one format: the `open` function of a format module.
type OpenFn =
    fn(&std::path::Path, &DiskOptions) -> Result<std::sync::Arc<dyn DiskImage>, DiskError>;

/// The formats with a magic, tried in this order; raw (no magic) is the fallback after them all.
const FORMATS: &[(&str, MatchFn, OpenFn)] = &[
    ("qcow2", qcow2::matches, qcow2::open),
    ("vdi", vdi::matches, vdi::open),
    ("vmdk", vmdk::matches, vmdk::open),
    ("vhdx", vhdx::matches, vhdx::open),
    ("vhd", vhd::matches, vhd::open),
];

/// Guest ranges that lie back to back in the host file, read with one pread: the readers' hot
/// path (a 1 MiB read over 64 KiB clusters is one system call, not sixteen). `push` extends the
/// pending run or reads it and starts a new one; `flush` reads what is pending. `read` gets the
/// host offset, the run's start in `buf` and the slice to fill.
#[derive(Default)]
pub(crate) struct HostRun {
    /// (host offset, start in the caller's buffer, length)
    pending: Option<(u64, usize, usize)>,
}

impl HostRun {
    pub(crate) fn push(
        &mut self,
        host: u64,
        at: usize,
        n: usize,
        buf: &mut [u8],
        read: impl FnMut(u64, usize, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Some((h, s, l)) = &mut self.pending {
            if h.checked_add(*l as u64) == Some(host) && *s + *l == at {
                *l += n;
                return Ok(());
            }
        }
        self.flush(buf, read)?;
        self.pending = Some((host, at, n));
        Ok(())
    }

    pub(crate) fn flush(
        &mut self,
        buf: &mut [u8],
        mut read: impl FnMut(u64, usize, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match self.pending.take() {
            Some((h, s, l)) => read(h, s, &mut buf[s..s + l]),
            None => Ok(()),
        }
    }
}

/// A positioned read of an image file whose error names the file, the length and the offset.
pub(crate) fn read_host_file(
    file: &std::fs::File,
    name: &str,
    host: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, host).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{name}: reading {} bytes at offset {host}: {e}", buf.len()),
        )
    })
}

//! Volumes: splitting a disk into the byte ranges that may hold a filesystem.
//!
//! A disk has a GPT, an MBR (with logical partitions in an EBR chain), or no table at all; every
//! partition that is an LVM physical volume is replaced by the logical volumes on it. Each
//! volume is a `BlockSource` (a `Window`, or a `ConcatSource` for an LV of several segments), so
//! the filesystem probe above never knows where its bytes live.

use std::io;
use std::sync::Arc;

use crate::block::{check_range, BlockSource};

pub mod gpt;
pub mod lvm;
pub mod mbr;

/// One place a filesystem may live.
pub struct Volume {
    /// 1-based partition number as Linux names it (sda5 is the first logical partition); 0 for a
    /// whole disk; for an LV, the number of the partition holding its (first) PV.
    pub index: usize,
    pub source: Arc<dyn BlockSource>,
    /// Byte offset on the disk (for an LV, of its first segment).
    pub start: u64,
    pub size: u64,
    /// `mbr`, `gpt`, `lvm`, `none`.
    pub scheme: String,
    /// `0x83`, a GPT type GUID (upper case, as sfdisk prints it), or `linear` for an LV.
    pub part_type: String,
    /// `Linux filesystem`, `Linux LVM`, `EFI System`, `Linux swap`, ...
    pub type_name: String,
    /// GPT: the partition's unique GUID, lower case. MBR: `<disk signature hex>-<2-digit
    /// partition number>`, as Linux shows PARTUUID.
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
    /// `(vg, lv)` for a logical volume.
    pub lvm: Option<(String, String)>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("index", &self.index)
            .field("source", &self.source.name())
            .field("start", &self.start)
            .field("size", &self.size)
            .field("scheme", &self.scheme)
            .field("part_type", &self.part_type)
            .field("type_name", &self.type_name)
            .field("partuuid", &self.partuuid)
            .field("partlabel", &self.partlabel)
            .field("lvm", &self.lvm)
            .finish()
    }
}

/// The volumes of one disk, and what the user should know about how they were found.
#[derive(Debug)]
pub struct DiskLayout {
    /// `gpt`, `mbr` or `none`.
    pub scheme: String,
    pub volumes: Vec<Volume>,
    /// `primary GPT header damaged; using backup`, skipped LVs, ...
    pub notes: Vec<String>,
}

/// Why a disk's volumes cannot be listed. Every message is one line naming the device (file and
/// partition), the structure, and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{device}: {structure} at offset {offset}: {problem}")]
    Corrupt {
        device: String,
        structure: &'static str,
        offset: u64,
        problem: String,
    },
    #[error("{device}: {structure} at offset {offset}: {error}")]
    Io {
        device: String,
        structure: &'static str,
        offset: u64,
        #[source]
        error: io::Error,
    },
    #[error("{device}: unsupported: {what}")]
    Unsupported { device: String, what: String },
}

impl VolumeError {
    pub(crate) fn corrupt(
        device: &str,
        structure: &'static str,
        offset: u64,
        problem: impl Into<String>,
    ) -> VolumeError {
        VolumeError::Corrupt {
            device: device.to_string(),
            structure,
            offset,
            problem: problem.into(),
        }
    }
}

impl From<VolumeError> for io::Error {
    fn from(e: VolumeError) -> io::Error {
        let kind = match &e {
            VolumeError::Io { error, .. } => error.kind(),
            VolumeError::Corrupt { .. } => io::ErrorKind::InvalidData,
            VolumeError::Unsupported { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

/// Reads `buf.len()` bytes at `offset`, naming `structure` when it fails.
pub(crate) fn read_bytes(
    src: &dyn BlockSource,
    offset: u64,
    buf: &mut [u8],
    structure: &'static str,
) -> Result<(), VolumeError> {
    src.read_at(offset, buf).map_err(|error| VolumeError::Io {
        device: src.name().to_string(),
        structure,
        offset,
        error,
    })
}

/// A `Window` for partition `index`; one past the end of the disk is an error naming the
/// table entry (`structure` at `entry_at`) that describes it.
pub(crate) fn window(
    disk: &Arc<dyn BlockSource>,
    index: usize,
    start: u64,
    len: u64,
    structure: &'static str,
    entry_at: u64,
) -> Result<Arc<dyn BlockSource>, VolumeError> {
    let name = format!("{} partition {index}", disk.name());
    crate::block::Window::new(disk.clone(), start, len, name).map(|w| Arc::new(w) as Arc<dyn BlockSource>).map_err(|_| {
        VolumeError::corrupt(
            disk.name(),
            structure,
            entry_at,
            format!(
                "partition {index} (bytes {start}+{len}) extends past the end of the disk ({} bytes)",
                disk.len()
            ),
        )
    })
}

/// Lists the volumes of `disk`: its partitions (GPT, else MBR, else the whole disk), with every
/// LVM physical volume replaced by its logical volumes.
pub fn discover(disk: Arc<dyn BlockSource>) -> Result<DiskLayout, VolumeError> {
    let mut notes = Vec::new();
    let (scheme, parts) = if let Some(found) = gpt::probe(&disk)? {
        ("gpt", gpt::read(&disk, found, &mut notes)?)
    } else if let Some(parts) = mbr::read(&disk, &mut notes)? {
        ("mbr", parts)
    } else {
        let size = disk.len();
        let whole = Volume {
            index: 0,
            source: disk.clone(),
            start: 0,
            size,
            scheme: "none".into(),
            part_type: String::new(),
            type_name: "whole disk".into(),
            partuuid: None,
            partlabel: None,
            lvm: None,
        };
        ("none", vec![whole])
    };
    let volumes = lvm::expand(parts, &mut notes)?;
    Ok(DiskLayout {
        scheme: scheme.into(),
        volumes,
        notes,
    })
}

/// Several sources end to end: an LV made of more than one segment.
pub struct ConcatSource {
    /// `(start offset in this source, part)`, sorted, contiguous.
    parts: Vec<(u64, Arc<dyn BlockSource>)>,
    len: u64,
    name: String,
}

impl ConcatSource {
    /// Joins `parts` in order. Fails when the total length overflows.
    pub fn new(parts: Vec<Arc<dyn BlockSource>>, name: String) -> io::Result<ConcatSource> {
        let mut out = Vec::with_capacity(parts.len());
        let mut len = 0u64;
        for p in parts {
            let next = len.checked_add(p.len()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: total length overflows"),
                )
            })?;
            if !p.is_empty() {
                out.push((len, p));
            }
            len = next;
        }
        Ok(ConcatSource {
            parts: out,
            len,
            name,
        })
    }
}

impl BlockSource for ConcatSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.len, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = self.parts.partition_point(|(s, p)| s + p.len() <= pos);
            let Some((start, part)) = self.parts.get(idx) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: no segment at byte {pos}", self.name),
                ));
            };
            let inner = pos - start;
            let n = ((part.len() - inner) as usize).min(buf.len() - done);
            part.read_at(inner, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    #[test]
    fn concat_reads_across_parts() {
        let a: Arc<dyn BlockSource> = Arc::new(MemSource::new(vec![1u8; 10], "a"));
        let b: Arc<dyn BlockSource> = Arc::new(MemSource::new(vec![2u8; 5], "b"));
        let c = ConcatSource::new(vec![a, b], "ab".into()).unwrap();
        assert_eq!(c.len(), 15);
        let mut buf = [0u8; 6];
        c.read_at(7, &mut buf).unwrap();
        assert_eq!(buf, [1, 1, 1, 2, 2, 2]);
        assert!(c.read_at(12, &mut buf).is_err());
    }
}

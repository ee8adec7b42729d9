//! Recognising what a volume holds by its on-disk signature, before choosing a reader.
//!
//! decant reads ext2/3/4 only; everything else must be named precisely so the user learns why a
//! disk is refused ("this is an XFS filesystem") instead of a parse error from the ext4 reader.
//! Only the few bytes each signature needs are read, a source too small to hold a signature is
//! simply not of that kind, and the checks go from the most specific signature to the weakest
//! (a bare 0x55AA boot signature), the way blkid orders them. We do not link libblkid: it is a
//! C library, and this needs a dozen byte comparisons.

use std::io;

use crate::block::BlockSource;
use crate::bytes::{le16, le32};

/// What a volume holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext2 (no journal), ext3 (journal) or ext4 (any ext4-only feature).
    Ext {
        version: u8,
    },
    Xfs,
    Btrfs,
    Vfat,
    Exfat,
    Ntfs,
    Swap,
    Luks,
    LvmPv,
    Squashfs,
    Iso9660,
    /// An MBR or GPT: a whole disk rather than one filesystem.
    PartitionTable,
    Unknown,
}

impl FsKind {
    /// Short name for messages and listings.
    pub fn name(&self) -> &'static str {
        match self {
            FsKind::Ext { version: 2 } => "ext2",
            FsKind::Ext { version: 3 } => "ext3",
            FsKind::Ext { .. } => "ext4",
            FsKind::Xfs => "XFS",
            FsKind::Btrfs => "Btrfs",
            FsKind::Vfat => "FAT",
            FsKind::Exfat => "exFAT",
            FsKind::Ntfs => "NTFS",
            FsKind::Swap => "Linux swap",
            FsKind::Luks => "LUKS",
            FsKind::LvmPv => "LVM2 physical volume",
            FsKind::Squashfs => "SquashFS",
            FsKind::Iso9660 => "ISO 9660",
            FsKind::PartitionTable => "partition table",
            FsKind::Unknown => "unknown",
        }
    }

    /// Whether decant can read the files of this kind.
    pub fn is_supported(&self) -> bool {
        matches!(self, FsKind::Ext { .. })
    }

    /// One line telling the user what `source_name` holds and why decant does not read it.
    pub fn unsupported_message(&self, source_name: &str) -> String {
        let what = match self {
            FsKind::Ext { .. } => {
                return format!("{source_name}: this is an {} filesystem, which decant reads", self.name())
            }
            FsKind::Xfs => "this is an XFS filesystem".to_string(),
            FsKind::Btrfs => "this is a Btrfs filesystem".to_string(),
            FsKind::Vfat => "this is a FAT (vfat) filesystem".to_string(),
            FsKind::Exfat => "this is an exFAT filesystem".to_string(),
            FsKind::Ntfs => "this is an NTFS filesystem".to_string(),
            FsKind::Squashfs => "this is a SquashFS filesystem".to_string(),
            FsKind::Iso9660 => "this is an ISO 9660 (CD/DVD) filesystem".to_string(),
            FsKind::Swap => "this is a Linux swap area, which holds no files".to_string(),
            FsKind::Luks => {
                "this is a LUKS encrypted volume (open it with cryptsetup and give decant the opened device)"
                    .to_string()
            }
            FsKind::LvmPv => "this is an LVM2 physical volume, not a filesystem".to_string(),
            FsKind::PartitionTable => {
                "this holds a partition table, not a filesystem (give decant the whole disk)".to_string()
            }
            FsKind::Unknown => "no known filesystem signature found".to_string(),
        };
        format!("{source_name}: {what}; decant reads ext2/3/4 only")
    }
}

/// The bytes at `offset`, or `None` when the source is too small to hold them.
fn bytes_at(src: &dyn BlockSource, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= src.len() => {
            let mut buf = vec![0u8; len];
            src.read_at(offset, &mut buf)?;
            Ok(Some(buf))
        }
        _ => Ok(None),
    }
}

/// Whether `sig` sits at `offset`.
fn has(src: &dyn BlockSource, offset: u64, sig: &[u8]) -> io::Result<bool> {
    Ok(bytes_at(src, offset, sig.len())?.is_some_and(|b| b == sig))
}

const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x8;
/// Incompatible features an ext3 driver knows: filetype, recover, meta_bg. Any other one
/// (extents, 64bit, flex_bg, inline_data, ...) makes it ext4.
const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
/// Read-only features an ext3 driver knows: sparse_super, large_file, btree_dir.
const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;

/// ext2/3/4 from the superblock at byte 1024; an external journal device is not a filesystem.
fn ext_version(src: &dyn BlockSource) -> io::Result<Option<u8>> {
    let Some(sb) = bytes_at(src, 1024, 104)? else {
        return Ok(None);
    };
    if le16(&sb, 56) != EXT_MAGIC {
        return Ok(None);
    }
    let compat = le32(&sb, 92);
    let incompat = le32(&sb, 96);
    let ro_compat = le32(&sb, 100);
    if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
        return Ok(None);
    }
    Ok(Some(
        if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
            4
        } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
            3
        } else {
            2
        },
    ))
}

/// A FAT boot sector: the 0x55AA signature, a "FAT" type string where FAT12/16 or FAT32 put it,
/// and a BIOS parameter block whose basic fields make sense.
fn is_fat(boot: &[u8]) -> bool {
    if boot.get(510..512) != Some(&[0x55, 0xAA]) {
        return false;
    }
    let marker = boot.get(54..57) == Some(b"FAT") || boot.get(82..87) == Some(b"FAT32");
    let bytes_per_sector = le16(boot, 11);
    let sectors_per_cluster = boot.get(13).copied().unwrap_or(0);
    let reserved = le16(boot, 14);
    let fats = boot.get(16).copied().unwrap_or(0);
    let media = boot.get(21).copied().unwrap_or(0);
    marker
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && reserved >= 1
        && (1..=4).contains(&fats)
        && (media == 0xF0 || media >= 0xF8)
}

/// Recognises what `src` holds by signature, reading a few KiB at most.
pub fn probe(src: &dyn BlockSource) -> io::Result<FsKind> {
    if let Some(version) = ext_version(src)? {
        return Ok(FsKind::Ext { version });
    }
    if has(src, 0, b"XFSB")? {
        return Ok(FsKind::Xfs);
    }
    if has(src, 65536 + 64, b"_BHRfS_M")? {
        return Ok(FsKind::Btrfs);
    }
    if has(src, 0, b"LUKS\xba\xbe")? {
        return Ok(FsKind::Luks);
    }
    if has(src, 0, b"hsqs")? || has(src, 0, b"sqsh")? {
        return Ok(FsKind::Squashfs);
    }
    for sector in 0..4u64 {
        if has(src, sector * 512, b"LABELONE")? && has(src, sector * 512 + 24, b"LVM2 001")? {
            return Ok(FsKind::LvmPv);
        }
    }
    if has(src, 3, b"NTFS    ")? {
        return Ok(FsKind::Ntfs);
    }
    if has(src, 3, b"EXFAT   ")? {
        return Ok(FsKind::Exfat);
    }
    let boot = bytes_at(src, 0, 512)?;
    if boot.as_deref().is_some_and(is_fat) {
        return Ok(FsKind::Vfat);
    }
    if has(src, 32769, b"CD001")? {
        return Ok(FsKind::Iso9660);
    }
    for page in [4096u64, 8192, 16384, 65536] {
        if has(src, page - 10, b"SWAPSPACE2")? || has(src, page - 10, b"SWAP-SPACE")? {
            return Ok(FsKind::Swap);
        }
    }
    if has(src, 512, b"EFI PART")? || has(src, 4096, b"EFI PART")? {
        return Ok(FsKind::PartitionTable);
    }
    if boot.is_some_and(|b| b.get(510..512) == Some(&[0x55, 0xAA])) {
        return Ok(FsKind::PartitionTable);
    }
    Ok(FsKind::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    #[test]
    fn tiny_and_empty_sources_are_unknown() {
        for len in [0usize, 3, 511, 1100] {
            let src = MemSource::new(vec![0u8; len], "tiny");
            assert_eq!(probe(&src).unwrap(), FsKind::Unknown, "{len} bytes");
        }
    }

    #[test]
    fn bare_boot_signature_is_a_partition_table_not_fat() {
        let mut data = vec![0u8; 4096];
        data[510] = 0x55;
        data[511] = 0xAA;
        data[54..57].copy_from_slice(b"FAT");
        // "FAT" but a BPB of zeros: an MBR whose boot code happens to say FAT.
        let src = MemSource::new(data, "mbr");
        assert_eq!(probe(&src).unwrap(), FsKind::PartitionTable);
    }

    #[test]
    fn messages_are_one_line_and_name_the_source() {
        let msg = FsKind::Xfs.unsupported_message("disk.img");
        assert_eq!(
            msg,
            "disk.img: this is an XFS filesystem; decant reads ext2/3/4 only"
        );
        for kind in [
            FsKind::Luks,
            FsKind::Unknown,
            FsKind::PartitionTable,
            FsKind::Swap,
        ] {
            let msg = kind.unsupported_message("d.raw partition 2");
            assert!(msg.starts_with("d.raw partition 2: ") && !msg.contains('\n'));
            assert!(!kind.is_supported());
        }
        assert!(FsKind::Ext { version: 3 }.is_supported());
        assert_eq!(FsKind::Ext { version: 2 }.name(), "ext2");
    }
}

//! MBR partition tables: four primary entries, and logical partitions in the EBR chain of an
//! extended partition.
//!
//! The primary sector is decoded by `mbrman`. The EBR chain we walk ourselves: mbrman adds
//! untrusted u32 LBAs without overflow checks (a panic in debug builds) and has no bound on the
//! chain length, and we want each error to name the EBR's offset.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use crate::block::BlockSource;
use crate::volume::{read_bytes, window, Volume, VolumeError};

const SECTOR: u64 = 512;
/// Logical partitions we follow at most; Linux itself stops far earlier in practice.
const MAX_LOGICAL: usize = 256;

/// The name Linux tools (fdisk) give an MBR partition type.
pub fn type_name(t: u8) -> &'static str {
    match t {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 => "Extended",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b | 0x0c => "W95 FAT32",
        0x0f => "W95 Ext'd (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap",
        0x83 => "Linux filesystem",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa9 => "NetBSD",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => "unknown",
    }
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// A read-only `Read + Seek` over a `BlockSource`, for crates that want one.
pub(crate) struct Cursor<'a> {
    pub src: &'a dyn BlockSource,
    pub pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.src.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.src.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// One decoded 16-byte partition entry.
struct Entry {
    boot: u8,
    kind: u8,
    lba: u32,
    sectors: u32,
}

fn entry(b: &[u8], i: usize) -> Entry {
    let at = 446 + 16 * i;
    let g = |o: usize| b.get(at + o).copied().unwrap_or(0);
    let u = |o: usize| u32::from_le_bytes([g(o), g(o + 1), g(o + 2), g(o + 3)]);
    Entry {
        boot: g(0),
        kind: g(4),
        lba: u(8),
        sectors: u(12),
    }
}

/// The partitions of an MBR disk, or `None` when sector 0 holds no MBR.
pub fn read(
    disk: &Arc<dyn BlockSource>,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<Volume>>, VolumeError> {
    let dname = disk.name().to_string();
    if disk.len() < SECTOR {
        return Ok(None);
    }
    let mut cursor = Cursor {
        src: &**disk,
        pos: 0,
    };
    // mbrman checks the 0x55AA signature and the boot flags (0x00/0x80): a filesystem's boot
    // sector with random "entries" fails there and is treated as no table.
    let Ok(header) = mbrman::MBRHeader::read_from(&mut cursor) else {
        return Ok(None);
    };
    let signature = u32::from_le_bytes(header.disk_signature);
    let primaries: Vec<_> = header
        .iter()
        .map(|(i, e)| {
            (
                i,
                Entry {
                    boot: e.boot,
                    kind: e.sys,
                    lba: e.starting_lba,
                    sectors: e.sectors,
                },
            )
        })
        .collect();
    if primaries.iter().all(|(_, e)| e.kind == 0) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut extended_seen = false;
    // `entry_at`: where the entry describing the partition lies (in the MBR or an EBR).
    let make =
        |index: usize, e: &Entry, abs_lba: u64, entry_at: u64| -> Result<Volume, VolumeError> {
            let start = abs_lba * SECTOR;
            let size = u64::from(e.sectors) * SECTOR;
            let source = window(disk, index, start, size, "MBR partition entry", entry_at)?;
            Ok(Volume {
                index,
                source,
                start,
                size,
                scheme: "mbr".into(),
                part_type: format!("0x{:02x}", e.kind),
                type_name: type_name(e.kind).into(),
                partuuid: Some(format!("{signature:08x}-{index:02x}")),
                partlabel: None,
                lvm: None,
            })
        };
    for (i, e) in &primaries {
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        if e.kind == 0xee {
            // A protective entry on a disk whose GPT could not be read.
            notes.push(format!(
                "{dname}: MBR has a GPT protective entry but no readable GPT"
            ));
            continue;
        }
        if is_extended(e.kind) {
            if extended_seen {
                notes.push(format!(
                    "{dname}: a second extended partition (entry {i}) is ignored, as Linux does"
                ));
                continue;
            }
            extended_seen = true;
            logicals(disk, e, &make, &mut out)?;
            continue;
        }
        let entry_at = 446 + 16 * (*i as u64).saturating_sub(1);
        out.push(make(*i, e, u64::from(e.lba), entry_at)?);
    }
    // Linux numbers logicals 5+ but lists primaries first; keep that order.
    out.sort_by_key(|v| v.index);
    if let Some(flags) = primaries
        .iter()
        .find(|(_, e)| e.boot != 0 && e.boot != 0x80)
    {
        notes.push(format!(
            "{dname}: MBR entry {} has boot flag {:#x}",
            flags.0, flags.1.boot
        ));
    }
    Ok(Some(out))
}

/// Walks the EBR chain of the extended partition `ext`. Each EBR's first entry is a logical
/// partition relative to the EBR; its second points at the next EBR relative to the extended
/// partition's start. A chain that does not move strictly forward, or is too long, is damage.
/// Makes the volume of partition `index` from its entry, its absolute LBA and the offset of
/// the entry describing it.
type MakeVolume<'a> = dyn Fn(usize, &Entry, u64, u64) -> Result<Volume, VolumeError> + 'a;

fn logicals(
    disk: &Arc<dyn BlockSource>,
    ext: &Entry,
    make: &MakeVolume<'_>,
    out: &mut Vec<Volume>,
) -> Result<(), VolumeError> {
    let dname = disk.name();
    let ext_start = u64::from(ext.lba);
    let ext_end = ext_start + u64::from(ext.sectors);
    let mut rel = 0u64;
    for n in 0..MAX_LOGICAL {
        let ebr_lba = ext_start + rel;
        let at = ebr_lba * SECTOR;
        if ebr_lba >= ext_end || at + SECTOR > disk.len() {
            return Err(VolumeError::corrupt(
                dname,
                "EBR",
                at,
                format!(
                    "logical partition {} has its EBR outside the extended partition or the disk",
                    n + 5
                ),
            ));
        }
        let mut b = [0u8; 512];
        read_bytes(&**disk, at, &mut b, "EBR")?;
        if b[510..512] != [0x55, 0xaa] {
            if n == 0 {
                // An empty extended partition need not hold an EBR.
                return Ok(());
            }
            return Err(VolumeError::corrupt(
                dname,
                "EBR",
                at,
                "no 0x55AA signature",
            ));
        }
        let part = entry(&b, 0);
        let next = entry(&b, 1);
        if part.kind != 0 && part.sectors != 0 {
            out.push(make(n + 5, &part, ebr_lba + u64::from(part.lba), at + 446)?);
        }
        if next.kind == 0 || next.lba == 0 {
            return Ok(());
        }
        let next_rel = u64::from(next.lba);
        if next_rel <= rel {
            return Err(VolumeError::corrupt(
                dname,
                "EBR",
                at,
                format!(
                    "next EBR at sector {} of the extended partition does not come after this one (sector {rel}): the chain loops",
                    next_rel
                ),
            ));
        }
        rel = next_rel;
    }
    Err(VolumeError::corrupt(
        dname,
        "EBR",
        (ext_start + rel) * SECTOR,
        format!("more than {MAX_LOGICAL} logical partitions"),
    ))
}

//! GPT partition tables, with the backup header used when the primary is damaged.
//!
//! We validate both headers ourselves first (CRCs, entry size, entry count, bounds), because the
//! `gpt` crate asserts on an entry size other than 128 (a panic on hostile input), sizes its
//! entry buffer from the header before checking it, and does not fall back to the backup when
//! only the primary's entry array is damaged. The crate then decodes the chosen table, through a
//! read-only view that blanks the header we rejected so it cannot pick that one.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::block::BlockSource;
use crate::volume::mbr::Cursor;
use crate::volume::{read_bytes, window, Volume, VolumeError};

/// Largest entry array we accept (16384 entries of 128 bytes); real ones are 16 KiB.
const MAX_ENTRIES_BYTES: u64 = 2 << 20;
const ENTRY_SIZE: u32 = 128;

/// A GPT header that passed every check, and where it is.
pub struct Found {
    lb: u64,
    /// True when the primary was rejected and the backup is used.
    backup: bool,
    /// Why the primary was rejected.
    primary_problem: Option<String>,
}

struct Header {
    entries_lba: u64,
    num_entries: u32,
    entries_crc: u32,
}

/// Checks the GPT header at `lba`; `Err` says what is wrong with it.
fn check_header(disk: &dyn BlockSource, lb: u64, lba: u64) -> Result<Header, String> {
    let at = lba.checked_mul(lb).ok_or("offset overflows")?;
    let mut b = vec![0u8; lb as usize];
    disk.read_at(at, &mut b)
        .map_err(|e| format!("cannot read: {e}"))?;
    if &b[..8] != b"EFI PART" {
        return Err("no EFI PART signature".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let header_size = u32_at(12) as usize;
    if header_size < 92 || header_size > b.len() {
        return Err(format!("header size {header_size} (want 92..={})", b.len()));
    }
    let stored = u32_at(16);
    let mut copy = b[..header_size].to_vec();
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy);
    if computed != stored {
        return Err(format!(
            "header CRC32 {stored:#010x}, computed {computed:#010x}"
        ));
    }
    if u64_at(24) != lba {
        return Err(format!(
            "header says it is at LBA {}, found at LBA {lba}",
            u64_at(24)
        ));
    }
    let entries_lba = u64_at(72);
    let num_entries = u32_at(80);
    let entry_size = u32_at(84);
    if entry_size != ENTRY_SIZE {
        return Err(format!(
            "partition entry size {entry_size} (only 128 is supported)"
        ));
    }
    let bytes = u64::from(num_entries) * u64::from(entry_size);
    if num_entries == 0 || bytes > MAX_ENTRIES_BYTES {
        return Err(format!(
            "{num_entries} partition entries (at most {} accepted)",
            MAX_ENTRIES_BYTES / u64::from(ENTRY_SIZE)
        ));
    }
    let start = entries_lba
        .checked_mul(lb)
        .filter(|s| s.checked_add(bytes).is_some_and(|end| end <= disk.len()));
    let Some(start) = start else {
        return Err(format!(
            "partition entry array at LBA {entries_lba} is past the end of the disk"
        ));
    };
    let mut entries = vec![0u8; bytes as usize];
    disk.read_at(start, &mut entries)
        .map_err(|e| format!("cannot read entries: {e}"))?;
    let computed = crc32fast::hash(&entries);
    if computed != u32_at(88) {
        return Err(format!(
            "partition entry array CRC32 {:#010x}, computed {computed:#010x}",
            u32_at(88)
        ));
    }
    Ok(Header {
        entries_lba,
        num_entries,
        entries_crc: computed,
    })
}

/// Looks for a GPT: a primary header at LBA 1 (512- or 4096-byte sectors), a backup at the last
/// LBA, or a protective MBR. Returns `None` when the disk shows no sign of one; an error when it
/// has one but neither header is usable.
pub fn probe(disk: &Arc<dyn BlockSource>) -> Result<Option<Found>, VolumeError> {
    let len = disk.len();
    let mut first_problem = None;
    let mut any_sign = false;
    for lb in [512u64, 4096] {
        if len < 3 * lb {
            continue;
        }
        let last = len / lb - 1;
        match check_header(&**disk, lb, 1) {
            Ok(_) => {
                return Ok(Some(Found {
                    lb,
                    backup: false,
                    primary_problem: None,
                }))
            }
            Err(p) => {
                let mut sig = [0u8; 8];
                read_bytes(&**disk, lb, &mut sig, "GPT header")?;
                if &sig == b"EFI PART" {
                    any_sign = true;
                    first_problem.get_or_insert((lb, p.clone()));
                }
                if check_header(&**disk, lb, last).is_ok() {
                    return Ok(Some(Found {
                        lb,
                        backup: true,
                        primary_problem: Some(p),
                    }));
                }
            }
        }
    }
    if len >= 512 {
        let mut mbr = [0u8; 512];
        read_bytes(&**disk, 0, &mut mbr, "MBR")?;
        let protective =
            mbr[510..] == [0x55, 0xaa] && (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xee);
        any_sign |= protective;
    }
    if !any_sign {
        return Ok(None);
    }
    let (lb, problem) = first_problem.unwrap_or((512, "no EFI PART signature".into()));
    Err(VolumeError::corrupt(
        disk.name(),
        "GPT header",
        lb,
        format!("{problem}; the backup header at the last LBA is unusable too"),
    ))
}

/// The device the `gpt` crate reads through: `Read + Write + Seek + Debug` as it wants, but
/// writes fail, and the header it must not pick reads as zeros.
struct Device<'a> {
    cursor: Cursor<'a>,
    /// Byte range `[start, end)` that reads as zeros.
    blank: (u64, u64),
}

impl std::fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.cursor.src.name())
    }
}

impl Read for Device<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.cursor.pos;
        let n = self.cursor.read(buf)?;
        let (start, end) = self.blank;
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            let p = pos + i as u64;
            if p >= start && p < end {
                *byte = 0;
            }
        }
        Ok(n)
    }
}

impl Seek for Device<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.cursor.seek(to)
    }
}

impl Write for Device<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "read-only disk",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Known GPT partition types, named as fdisk names them.
pub fn type_name(guid: &str) -> &'static str {
    match guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8" => "Linux server data",
        "4D21B016-B534-45C2-A9FB-5C16E091FD2D" => "Linux variable data",
        "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1" => "Linux temporary data",
        "8DA63339-0007-60C0-C436-083AC8230908" => "Linux reserved",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "6A898CC3-1DD2-11B2-99A6-080020736631" => "Solaris /usr & Apple ZFS",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS/HFS+",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        _ => "unknown",
    }
}

/// The partitions of the GPT `found` by `probe`.
pub fn read(
    disk: &Arc<dyn BlockSource>,
    found: Found,
    notes: &mut Vec<String>,
) -> Result<Vec<Volume>, VolumeError> {
    let dname = disk.name().to_string();
    let lb = found.lb;
    let last = disk.len() / lb - 1;
    let chosen = check_header(&**disk, lb, if found.backup { last } else { 1 })
        .map_err(|p| VolumeError::corrupt(&dname, "GPT header", lb, p))?;
    if let Some(p) = &found.primary_problem {
        notes.push(format!(
            "{dname}: primary GPT header damaged ({p}); using the backup at LBA {last}"
        ));
    } else if let Err(p) = check_header(&**disk, lb, last) {
        notes.push(format!(
            "{dname}: backup GPT header at LBA {last} damaged ({p}); the primary is fine"
        ));
    }
    // Blank the header the crate must not pick: the primary when it was rejected, else the
    // backup (so a valid but different backup never wins).
    let blank_lba = if found.backup { 1 } else { last };
    let device = Device {
        cursor: Cursor {
            src: &**disk,
            pos: 0,
        },
        blank: (blank_lba * lb, blank_lba * lb + lb),
    };
    let size = if lb == 4096 {
        gpt::disk::LogicalBlockSize::Lb4096
    } else {
        gpt::disk::LogicalBlockSize::Lb512
    };
    let table = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(size)
        .open_from_device(device)
        .map_err(|e| {
            VolumeError::corrupt(
                &dname,
                "GPT partition entries",
                chosen.entries_lba * lb,
                e.to_string(),
            )
        })?;
    let header = table.header();
    if header.num_parts != chosen.num_entries || header.crc32_parts != chosen.entries_crc {
        return Err(VolumeError::corrupt(
            &dname,
            "GPT header",
            lb,
            "the gpt crate read a different header than the one validated",
        ));
    }
    let mut out = Vec::new();
    for (&index, p) in table.partitions() {
        if !p.is_used() {
            continue;
        }
        let at = chosen.entries_lba * lb + u64::from(index - 1) * u64::from(ENTRY_SIZE);
        let bounds = p
            .last_lba
            .checked_sub(p.first_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(lb))
            .and_then(|size| p.first_lba.checked_mul(lb).map(|start| (start, size)));
        let Some((start, size)) = bounds else {
            return Err(VolumeError::corrupt(
                &dname,
                "GPT partition entry",
                at,
                format!(
                    "partition {index}: LBAs {}..={} make no sense",
                    p.first_lba, p.last_lba
                ),
            ));
        };
        let source = window(disk, index as usize, start, size, "GPT partition entry", at)?;
        let guid = p.part_type_guid.guid.to_string().to_ascii_uppercase();
        out.push(Volume {
            index: index as usize,
            source,
            start,
            size,
            scheme: "gpt".into(),
            type_name: type_name(&guid).into(),
            part_type: guid,
            partuuid: Some(p.part_guid.to_string().to_ascii_lowercase()),
            partlabel: (!p.name.is_empty()).then(|| p.name.clone()),
            lvm: None,
        });
    }
    Ok(out)
}

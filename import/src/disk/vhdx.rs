//! VHDX (Hyper-V) reader: fixed and dynamic images as a `BlockSource`.
//!
//! Layout (MS-VHDX): two 4 KiB headers at 64 and 128 KiB (the valid one with the higher
//! sequence number wins), two region tables at 192 and 256 KiB naming the BAT and the metadata
//! region, CRC-32C on each. The BAT interleaves one sector-bitmap entry after every
//! `chunk ratio` payload entries; a payload entry's state says whether the block is present
//! (file offset in MiB) or reads as zeros.
//!
//! Refused, clearly: a non-empty log (the file holds writes not yet applied; replaying it means
//! writing, and we never change the user's file), differencing images (HasParent) and unknown
//! required metadata or regions. We wrote this because the registry has no maintained,
//! synchronous VHDX reader. The BAT is held in memory, capped at 64 MiB, so reads take no lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::block::{check_range, BlockSource};
use crate::bytes::{le16, le32, le64};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

const SIGNATURE: &[u8; 8] = b"vhdxfile";
const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const MAX_BAT_BYTES: u64 = 64 << 20;

// GUIDs as stored on disk (first three fields little-endian).
const BAT_GUID: [u8; 16] = guid(
    0x2DC27766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const METADATA_GUID: [u8; 16] = guid(
    0x8B7CA206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA16737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA54224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const VIRTUAL_DISK_ID: [u8; 16] = guid(
    0xBECA12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const LOGICAL_SECTOR: [u8; 16] = guid(
    0x8141BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR: [u8; 16] = guid(
    0xCDA348C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D35F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// True when `header` starts with the VHDX file type signature `vhdxfile`.
pub fn matches(header: &[u8]) -> bool {
    header.get(..8) == Some(SIGNATURE.as_slice())
}

/// Opens a fixed or dynamic VHDX image.
pub fn open(path: &Path, _opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    Ok(Arc::new(VhdxReader::open(path)?))
}

fn guid_at(b: &[u8], at: usize) -> [u8; 16] {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 16])
}

/// CRC-32C of `b` with its 4-byte checksum field at offset 4 taken as zero.
fn crc_ok(b: &[u8]) -> bool {
    let (Some(head), Some(tail)) = (b.get(..4), b.get(8..)) else {
        return false;
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(head), &[0; 4]);
    crc32c::crc32c_append(crc, tail) == le32(b, 4)
}

/// An open VHDX image.
pub struct VhdxReader {
    file: File,
    file_size: u64,
    name: String,
    virtual_size: u64,
    block_size: u64,
    chunk_ratio: u64,
    bat_offset: u64,
    bat: Vec<u64>,
    info: DiskInfo,
}

impl VhdxReader {
    pub fn open(path: &Path) -> Result<VhdxReader, DiskError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DiskError::io(&name, e))?;
        let file_size = file.metadata().map_err(|e| DiskError::io(&name, e))?.len();
        let corrupt = |s: &'static str, off: u64, p: String| DiskError::corrupt(&name, s, off, p);
        let read = |off: u64, len: u64, s: &'static str| -> Result<Vec<u8>, DiskError> {
            if off.checked_add(len).is_none_or(|e| e > file_size) {
                return Err(DiskError::corrupt(
                    &name,
                    s,
                    off,
                    format!("{len} bytes are past the end of the file ({file_size} bytes)"),
                ));
            }
            let mut b = vec![0u8; len as usize];
            file.read_exact_at(&mut b, off)
                .map_err(|e| DiskError::io(&name, e))?;
            Ok(b)
        };

        let ident = read(0, 8, "vhdx file identifier")?;
        if !matches(&ident) {
            return Err(corrupt(
                "vhdx file identifier",
                0,
                "no vhdxfile signature".into(),
            ));
        }

        // The current header: the valid one with the higher sequence number.
        let mut best: Option<(u64, Vec<u8>, u64)> = None;
        for off in [64 * KIB, 128 * KIB] {
            let h = read(off, 4 * KIB, "vhdx header")?;
            if h.get(..4) != Some(b"head".as_slice()) || !crc_ok(&h) {
                continue;
            }
            let seq = le64(&h, 8);
            if best.as_ref().is_none_or(|(s, _, _)| seq > *s) {
                best = Some((seq, h, off));
            }
        }
        let Some((_, header, hoff)) = best else {
            return Err(corrupt(
                "vhdx header",
                64 * KIB,
                "neither header copy (64 KiB, 128 KiB) has a valid signature and CRC-32C".into(),
            ));
        };
        let version = le16(&header, 66);
        if version != 1 {
            return Err(DiskError::unsupported(
                &name,
                format!("VHDX header version {version}"),
            ));
        }
        if guid_at(&header, 48) != [0; 16] {
            return Err(DiskError::unsupported(
                &name,
                format!(
                    "VHDX log is not empty (header at {hoff}): the image holds writes not yet applied; open it once in Hyper-V or qemu to replay the log"
                ),
            ));
        }

        // Region table: the first valid copy.
        let mut regions = None;
        for off in [192 * KIB, 256 * KIB] {
            let r = read(off, 64 * KIB, "vhdx region table")?;
            if r.get(..4) == Some(b"regi".as_slice()) && crc_ok(&r) {
                regions = Some((r, off));
                break;
            }
        }
        let Some((regions, roff)) = regions else {
            return Err(corrupt(
                "vhdx region table",
                192 * KIB,
                "neither copy (192 KiB, 256 KiB) has a valid signature and CRC-32C".into(),
            ));
        };
        let count = le32(&regions, 8) as u64;
        if count > 2047 {
            return Err(corrupt(
                "vhdx region table",
                roff + 8,
                format!("{count} entries (at most 2047)"),
            ));
        }
        let (mut bat_region, mut meta_region) = (None, None);
        for i in 0..count {
            let e = 16 + i as usize * 32;
            let id = guid_at(&regions, e);
            let off = le64(&regions, e + 16);
            let len = le32(&regions, e + 24) as u64;
            let required = le32(&regions, e + 28) & 1 != 0;
            if id == BAT_GUID {
                bat_region = Some((off, len));
            } else if id == METADATA_GUID {
                meta_region = Some((off, len));
            } else if required {
                return Err(DiskError::unsupported(
                    &name,
                    format!("VHDX region table entry {i} is an unknown required region"),
                ));
            }
        }
        let (Some((bat_off, bat_len)), Some((meta_off, meta_len))) = (bat_region, meta_region)
        else {
            return Err(corrupt(
                "vhdx region table",
                roff,
                "no BAT or no metadata region".into(),
            ));
        };

        // Metadata.
        if !(64 * KIB..=16 * MIB).contains(&meta_len) {
            return Err(corrupt(
                "vhdx metadata region",
                meta_off,
                format!("length {meta_len} is outside 64 KiB..=16 MiB"),
            ));
        }
        let meta = read(meta_off, meta_len, "vhdx metadata region")?;
        if meta.get(..8) != Some(b"metadata".as_slice()) {
            return Err(corrupt(
                "vhdx metadata region",
                meta_off,
                "no metadata signature".into(),
            ));
        }
        let entries = le16(&meta, 10) as usize;
        if entries > 2047 {
            return Err(corrupt(
                "vhdx metadata region",
                meta_off + 10,
                format!("{entries} entries (at most 2047)"),
            ));
        }
        let item = |id: [u8; 16], want: usize| -> Result<Option<&[u8]>, DiskError> {
            for i in 0..entries {
                let e = 32 + i * 32;
                if guid_at(&meta, e) != id {
                    continue;
                }
                let off = le32(&meta, e + 16) as usize;
                let len = le32(&meta, e + 20) as usize;
                return match meta.get(off..off.saturating_add(len.max(want))) {
                    Some(b) if len >= want => Ok(Some(b)),
                    _ => Err(DiskError::corrupt(
                        &name,
                        "vhdx metadata item",
                        meta_off + e as u64,
                        format!("item of {len} bytes at {off} is outside the metadata region or too short"),
                    )),
                };
            }
            Ok(None)
        };
        for i in 0..entries {
            let e = 32 + i * 32;
            let id = guid_at(&meta, e);
            let required = le32(&meta, e + 24) & 4 != 0;
            let known = [
                FILE_PARAMETERS,
                VIRTUAL_DISK_SIZE,
                VIRTUAL_DISK_ID,
                LOGICAL_SECTOR,
                PHYSICAL_SECTOR,
                PARENT_LOCATOR,
            ];
            if required && !known.contains(&id) {
                return Err(DiskError::unsupported(
                    &name,
                    format!("VHDX metadata entry {i} is an unknown required item"),
                ));
            }
        }
        let missing = |what: &str| {
            DiskError::corrupt(
                &name,
                "vhdx metadata region",
                meta_off,
                format!("no {what} item"),
            )
        };
        let params = item(FILE_PARAMETERS, 8)?.ok_or_else(|| missing("file parameters"))?;
        let block_size = le32(params, 0) as u64;
        let flags = le32(params, 4);
        let virtual_size = le64(
            item(VIRTUAL_DISK_SIZE, 8)?.ok_or_else(|| missing("virtual disk size"))?,
            0,
        );
        let sector = le32(
            item(LOGICAL_SECTOR, 4)?.ok_or_else(|| missing("logical sector size"))?,
            0,
        ) as u64;
        if flags & 2 != 0 {
            return Err(DiskError::unsupported(
                &name,
                "differencing VHDX (HasParent); merge it with its parent first",
            ));
        }
        if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
            return Err(corrupt(
                "vhdx metadata item",
                meta_off,
                format!("block size {block_size} is not a power of two in 1..=256 MiB"),
            ));
        }
        if sector != 512 && sector != 4096 {
            return Err(corrupt(
                "vhdx metadata item",
                meta_off,
                format!("logical sector size {sector} is neither 512 nor 4096"),
            ));
        }
        if virtual_size > 64 << 40 {
            return Err(corrupt(
                "vhdx metadata item",
                meta_off,
                format!("virtual size {virtual_size} is over the format's 64 TiB"),
            ));
        }
        let chunk_ratio = ((1u64 << 23) * sector) / block_size;
        let blocks = virtual_size.div_ceil(block_size);
        // Payload entries, plus one bitmap entry after every chunk_ratio of them.
        let total = blocks + blocks.saturating_sub(1) / chunk_ratio;
        let bat_bytes = total * 8;
        if bat_bytes > MAX_BAT_BYTES || bat_bytes > bat_len {
            return Err(corrupt(
                "vhdx BAT",
                bat_off,
                format!("{total} entries do not fit the {bat_len}-byte region or the 64 MiB cap"),
            ));
        }
        let raw = read(bat_off, bat_bytes, "vhdx BAT")?;
        let bat: Vec<u64> = raw.chunks_exact(8).map(|c| le64(c, 0)).collect();
        let subformat = if flags & 1 != 0 { "fixed" } else { "dynamic" };
        Ok(VhdxReader {
            info: DiskInfo {
                format: "vhdx".into(),
                subformat: subformat.into(),
                file: path.to_path_buf(),
                virtual_size,
                backing: None,
                notes: Vec::new(),
            },
            file,
            file_size,
            name,
            virtual_size,
            block_size,
            chunk_ratio,
            bat_offset: bat_off,
            bat,
        })
    }

    fn corrupt(&self, offset: u64, problem: String) -> io::Error {
        DiskError::corrupt(&self.name, "vhdx BAT entry", offset, problem).into()
    }

    fn read_file(&self, host: u64, buf: &mut [u8]) -> io::Result<()> {
        super::read_host_file(&self.file, &self.name, host, buf)
    }

    /// Where the bytes at `within` of payload block `block` are: Some(host offset) or None for
    /// zeros.
    fn locate(&self, block: u64, within: u64, len: u64) -> io::Result<Option<u64>> {
        let index = block + block / self.chunk_ratio;
        let entry = self.bat.get(index as usize).copied().unwrap_or(0);
        let at = self.bat_offset + index * 8;
        match entry & 7 {
            0..=3 => Ok(None),
            6 => {
                let host = (entry >> 20)
                    .checked_mul(MIB)
                    .and_then(|h| h.checked_add(within));
                match host {
                    Some(h)
                        if h >= MIB && h.checked_add(len).is_some_and(|e| e <= self.file_size) =>
                    {
                        Ok(Some(h))
                    }
                    _ => Err(self.corrupt(
                        at,
                        format!(
                            "block {block} at {} MiB is in the headers or past the end of the file ({} bytes)",
                            entry >> 20,
                            self.file_size
                        ),
                    )),
                }
            }
            s => Err(self.corrupt(
                at,
                format!("block {block} has state {s}, invalid in an image without a parent"),
            )),
        }
    }
}

impl BlockSource for VhdxReader {
    fn len(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.virtual_size, offset, buf.len())?;
        let mut done = 0usize;
        let mut run = super::HostRun::default();
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / self.block_size;
            let within = pos % self.block_size;
            let n = (self.block_size - within).min((buf.len() - done) as u64) as usize;
            match self.locate(block, within, n as u64)? {
                Some(host) => run.push(host, done, n, buf, |h, _, b| self.read_file(h, b))?,
                None => {
                    run.flush(buf, |h, _, b| self.read_file(h, b))?;
                    buf[done..done + n].fill(0);
                }
            }
            done += n;
        }
        run.flush(buf, |h, _, b| self.read_file(h, b))?;
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl DiskImage for VhdxReader {
    fn info(&self) -> DiskInfo {
        self.info.clone()
    }
}

//! VHD (Virtual PC / Hyper-V, qemu's `vpc`) reader: fixed and dynamic images as a `BlockSource`.
//!
//! A 512-byte footer (`conectix`) ends the file; a dynamic image also copies it to offset 0 and
//! points to a dynamic header (`cxsparse`) and a block allocation table (BAT) of big-endian
//! sector numbers. Each block starts with a sector bitmap. Like qemu, a dynamic image's
//! allocated block is read whole without consulting the bitmap (writers zero-fill new blocks),
//! and an unallocated block reads as zeros. The virtual size is the footer's current size (the
//! spec's); qemu instead shows a fixed image as the whole file, footer included, so its raw
//! export is 512 bytes longer. Differencing images are refused: qemu cannot make
//! them, so we would have no oracle to test parent-locator handling against.
//!
//! We wrote this instead of using a crate because the registry has no maintained, synchronous
//! VHD reader that takes a path-independent positioned read. The BAT is held in memory, capped
//! at 64 MiB, so reads take no lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::block::{check_range, BlockSource};
use crate::bytes::{be32, be64};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

const COOKIE: &[u8; 8] = b"conectix";
const DYN_COOKIE: &[u8; 8] = b"cxsparse";
const FREE: u32 = 0xFFFF_FFFF;
const MAX_BAT_BYTES: u64 = 64 << 20;

/// True when `header` (the first 512 bytes) starts with the footer copy of a dynamic VHD. A
/// fixed VHD has nothing at its start: use [`matches_footer`] on the last 512 bytes.
pub fn matches(header: &[u8]) -> bool {
    header.get(..8) == Some(COOKIE.as_slice())
}

/// True when `tail` (the last 512 bytes of a file) is a VHD footer: how fixed VHDs are found.
pub fn matches_footer(tail: &[u8]) -> bool {
    tail.len() >= 512 && matches(tail)
}

/// Opens a fixed or dynamic VHD.
pub fn open(path: &Path, _opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    Ok(Arc::new(VhdReader::open(path)?))
}

/// One's complement of the byte sum, skipping the checksum field itself.
fn checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32));
    !sum
}

/// Why a footer candidate is not usable, or None when it is good.
fn footer_problem(f: &[u8]) -> Option<String> {
    if !matches(f) {
        return Some("no conectix cookie".into());
    }
    let want = be32(f, 64);
    let got = checksum(f, 64);
    if want != got {
        return Some(format!("checksum {want:#x}, computed {got:#x}"));
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fixed,
    Dynamic,
}

/// An open VHD image.
pub struct VhdReader {
    file: File,
    file_size: u64,
    name: String,
    virtual_size: u64,
    kind: Kind,
    block_size: u64,
    /// Bytes of sector bitmap before each block's data.
    bitmap_bytes: u64,
    bat_offset: u64,
    bat: Vec<u32>,
    info: DiskInfo,
}

impl VhdReader {
    pub fn open(path: &Path) -> Result<VhdReader, DiskError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DiskError::io(&name, e))?;
        let file_size = file.metadata().map_err(|e| DiskError::io(&name, e))?.len();
        let io_err = |e| DiskError::io(&name, e);
        if file_size < 512 {
            return Err(DiskError::corrupt(
                &name,
                "vhd footer",
                0,
                format!("file is {file_size} bytes, shorter than the 512-byte footer"),
            ));
        }
        let mut notes = Vec::new();
        let mut footer = [0u8; 512];
        let end = file_size - 512;
        file.read_exact_at(&mut footer, end).map_err(io_err)?;
        if let Some(problem) = footer_problem(&footer) {
            // A dynamic image keeps a copy of the footer at the start: use it when the end
            // one is damaged or missing (a truncated copy).
            let mut head = [0u8; 512];
            file.read_exact_at(&mut head, 0).map_err(io_err)?;
            if footer_problem(&head).is_some() {
                return Err(DiskError::corrupt(&name, "vhd footer", end, problem));
            }
            notes.push(format!(
                "footer at the end of the file is damaged ({problem}); the copy at offset 0 is used"
            ));
            footer = head;
        }
        let virtual_size = be64(&footer, 48);
        let disk_type = be32(&footer, 60);
        let data_offset = be64(&footer, 16);
        let (c, h, s) = (
            u16::from_be_bytes([footer[56], footer[57]]) as u64,
            footer[58] as u64,
            footer[59] as u64,
        );
        let chs = c * h * s * 512;
        if chs != virtual_size {
            notes.push(format!(
                "size {virtual_size} from the footer is used; the CHS geometry gives {chs} (some tools use that)"
            ));
        }
        let mut reader = VhdReader {
            file,
            file_size,
            name: name.clone(),
            virtual_size,
            kind: Kind::Fixed,
            block_size: 0,
            bitmap_bytes: 0,
            bat_offset: 0,
            bat: Vec::new(),
            info: DiskInfo {
                format: "vhd".into(),
                subformat: String::new(),
                file: path.to_path_buf(),
                virtual_size,
                backing: None,
                notes: Vec::new(),
            },
        };
        match disk_type {
            2 => {
                if virtual_size > end {
                    return Err(DiskError::corrupt(
                        &name,
                        "vhd footer",
                        end + 48,
                        format!(
                            "fixed image of {virtual_size} bytes does not fit before the footer at {end}"
                        ),
                    ));
                }
                reader.info.subformat = "fixed".into();
            }
            3 => {
                reader.kind = Kind::Dynamic;
                reader.info.subformat = "dynamic".into();
                reader.load_dynamic(data_offset)?;
            }
            4 => return Err(DiskError::unsupported(
                &name,
                "differencing VHD (parent locators are not read); merge it with its parent first",
            )),
            n => {
                return Err(DiskError::corrupt(
                    &name,
                    "vhd footer",
                    end + 60,
                    format!("unknown disk type {n}"),
                ))
            }
        }
        reader.info.notes = notes;
        Ok(reader)
    }

    fn load_dynamic(&mut self, dyn_offset: u64) -> Result<(), DiskError> {
        let name = self.name.clone();
        let corrupt = |off: u64, p: String| DiskError::corrupt(&name, "vhd dynamic header", off, p);
        if dyn_offset
            .checked_add(1024)
            .is_none_or(|e| e > self.file_size)
        {
            return Err(corrupt(
                dyn_offset,
                format!(
                    "offset is past the end of the file ({} bytes)",
                    self.file_size
                ),
            ));
        }
        let mut d = [0u8; 1024];
        self.file
            .read_exact_at(&mut d, dyn_offset)
            .map_err(|e| DiskError::io(&name, e))?;
        if d.get(..8) != Some(DYN_COOKIE.as_slice()) {
            return Err(corrupt(dyn_offset, "no cxsparse cookie".into()));
        }
        let want = be32(&d, 36);
        let got = checksum(&d, 36);
        if want != got {
            return Err(corrupt(
                dyn_offset + 36,
                format!("checksum {want:#x}, computed {got:#x}"),
            ));
        }
        let bat_offset = be64(&d, 16);
        let entries = be32(&d, 28) as u64;
        let block_size = be32(&d, 32) as u64;
        if !block_size.is_power_of_two() || !(512..=1 << 28).contains(&block_size) {
            return Err(corrupt(
                dyn_offset + 32,
                format!("block size {block_size} is not a power of two in 512..=256 MiB"),
            ));
        }
        let needed = self.virtual_size.div_ceil(block_size);
        if entries < needed {
            return Err(corrupt(
                dyn_offset + 28,
                format!(
                    "{entries} BAT entries of {block_size} bytes cannot hold the virtual size {}",
                    self.virtual_size
                ),
            ));
        }
        // Only the entries the virtual size needs are loaded.
        let bat_bytes = needed * 4;
        if bat_bytes > MAX_BAT_BYTES {
            return Err(corrupt(
                dyn_offset + 28,
                format!("{needed} BAT entries make a table over 64 MiB"),
            ));
        }
        if bat_offset
            .checked_add(bat_bytes)
            .is_none_or(|e| e > self.file_size)
        {
            return Err(DiskError::corrupt(
                &name,
                "vhd block allocation table",
                dyn_offset + 16,
                format!(
                    "{bat_bytes} bytes at {bat_offset} are past the end of the file ({} bytes)",
                    self.file_size
                ),
            ));
        }
        let mut raw = vec![0u8; bat_bytes as usize];
        self.file
            .read_exact_at(&mut raw, bat_offset)
            .map_err(|e| DiskError::io(&name, e))?;
        self.bat = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
        self.bat_offset = bat_offset;
        self.block_size = block_size;
        self.bitmap_bytes = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
        Ok(())
    }

    fn read_file(&self, host: u64, buf: &mut [u8]) -> io::Result<()> {
        super::read_host_file(&self.file, &self.name, host, buf)
    }

    /// Host offset of `within` bytes into block `index`, checked for `len` bytes.
    fn host(&self, index: u64, sector: u32, within: u64, len: u64) -> io::Result<u64> {
        let host = (sector as u64)
            .checked_mul(512)
            .and_then(|o| o.checked_add(self.bitmap_bytes + within));
        match host {
            Some(h) if h.checked_add(len).is_some_and(|e| e <= self.file_size) => Ok(h),
            _ => Err(DiskError::corrupt(
                &self.name,
                "vhd block allocation table",
                self.bat_offset + index * 4,
                format!(
                    "block {index} at sector {sector} is past the end of the file ({} bytes)",
                    self.file_size
                ),
            )
            .into()),
        }
    }
}

impl BlockSource for VhdReader {
    fn len(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.virtual_size, offset, buf.len())?;
        if self.kind == Kind::Fixed {
            return self.read_file(offset, buf);
        }
        let mut done = 0usize;
        let mut run = super::HostRun::default();
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / self.block_size;
            let within = pos % self.block_size;
            let n = (self.block_size - within).min((buf.len() - done) as u64) as usize;
            let sector = self.bat.get(index as usize).copied().unwrap_or(FREE);
            if sector == FREE {
                run.flush(buf, |h, _, b| self.read_file(h, b))?;
                buf[done..done + n].fill(0);
            } else {
                let host = self.host(index, sector, within, n as u64)?;
                run.push(host, done, n, buf, |h, _, b| self.read_file(h, b))?;
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

impl DiskImage for VhdReader {
    fn info(&self) -> DiskInfo {
        self.info.clone()
    }
}

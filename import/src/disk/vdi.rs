//! VDI (VirtualBox) reader: dynamic, fixed and differencing images as a `BlockSource`.
//!
//! We read VDI ourselves instead of using the `vdi` crate: it rejects fixed images, ignores a
//! differencing image's parent, and reads a zero block (0xFFFFFFFE) as a silent end of file
//! (see shared notes, crates.md).
//!
//! A differencing image names its parent only by UUID. VirtualBox keeps the base image in the
//! VM's directory and every snapshot's differencing image in `<VM>/Snapshots/`, so the parent
//! of each level of a chain is looked up by UUID among the `.vdi` files of the child's
//! directory, the directory above it, and a `Snapshots/` directory in either. The user's
//! `DiskOptions::parent` is used at whichever level of the chain its UUID matches (and its
//! directories are searched too), so it can name the base when that lives elsewhere. The block
//! map is held in memory (capped at 64 MiB, i.e. 16 Mi blocks) so reads take no lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{check_range, BlockSource};
use crate::bytes::{le32, le64};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

const SIGNATURE: u32 = 0xBEDA_107F;
const HEADER_BYTES: usize = 512;
const FREE: u32 = 0xFFFF_FFFF;
const ZERO: u32 = 0xFFFF_FFFE;
/// Largest block map we load: 16 Mi blocks (16 TiB at the default 1 MiB block).
const MAX_MAP_BYTES: u64 = 64 << 20;
/// Longest differencing chain we follow.
const MAX_CHAIN: usize = 64;
/// Directory entries scanned, over all the searched directories, when looking for one parent.
const MAX_SCAN: usize = 10_000;

/// True when `header` has the VDI signature at offset 64.
pub fn matches(header: &[u8]) -> bool {
    header.get(64..68) == Some(SIGNATURE.to_le_bytes().as_slice())
}

/// Opens a VDI image and, for a differencing image, its parents.
pub fn open(path: &Path, opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    let mut hint = opts.parent.as_deref().map(|p| Hint {
        path: p.to_path_buf(),
        uuid: read_uuid(p),
        used: false,
    });
    let mut reader = VdiReader::open_chain(path, &mut hint, &mut Vec::new())?;
    if let Some(h) = hint.filter(|h| !h.used) {
        reader.info.notes.push(format!(
            "the given parent {} is not in this image's chain; it was not used",
            h.path.display()
        ));
    }
    Ok(Arc::new(reader))
}

/// The user's `--parent`: a file for whichever level of the chain wants its UUID.
struct Hint {
    path: PathBuf,
    /// `None` when it is not a readable VDI image.
    uuid: Option<[u8; 16]>,
    used: bool,
}

/// The UUID of the VDI image at `p`, if it is one.
fn read_uuid(p: &Path) -> Option<[u8; 16]> {
    let f = File::open(p).ok()?;
    let h = read_header(&f, &p.display().to_string()).ok()?;
    Some(h.uuid)
}

fn uuid(b: &[u8], at: usize) -> [u8; 16] {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 16])
}

/// VirtualBox stores UUIDs with the first three fields little-endian.
fn uuid_text(u: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6], u[8], u[9], u[10], u[11], u[12], u[13],
        u[14], u[15]
    )
}

/// The fields of a v1.1 header this reader uses.
struct Header {
    /// Bytes from the start of the file to the end of the header (pre-header + header size).
    header_end: u64,
    image_type: u32,
    blocks_offset: u64,
    data_offset: u64,
    virtual_size: u64,
    block_size: u64,
    extra: u64,
    blocks: u64,
    uuid: [u8; 16],
    uuid_modify: [u8; 16],
    parent_uuid: [u8; 16],
    parent_modify: [u8; 16],
}

fn read_header(file: &File, name: &str) -> Result<Header, DiskError> {
    let mut h = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < h.len() {
        match file.read_at(&mut h[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DiskError::io(name, e)),
        }
    }
    let corrupt = |off: u64, p: String| DiskError::corrupt(name, "vdi header", off, p);
    if got < 400 {
        return Err(corrupt(
            0,
            format!("file is {got} bytes, shorter than a VDI header"),
        ));
    }
    if !matches(&h) {
        return Err(corrupt(64, "no VDI signature 0xBEDA107F".into()));
    }
    let version = le32(&h, 68);
    if version >> 16 != 1 {
        return Err(DiskError::unsupported(
            name,
            format!(
                "VDI header version {}.{} (only 1.x is read)",
                version >> 16,
                version & 0xffff
            ),
        ));
    }
    let header_size = le32(&h, 72);
    if header_size < 384 {
        return Err(corrupt(
            72,
            format!("header size {header_size} is below 384"),
        ));
    }
    Ok(Header {
        header_end: 72 + u64::from(header_size),
        image_type: le32(&h, 76),
        blocks_offset: le32(&h, 340) as u64,
        data_offset: le32(&h, 344) as u64,
        virtual_size: le64(&h, 368),
        block_size: le32(&h, 376) as u64,
        extra: le32(&h, 380) as u64,
        blocks: le32(&h, 384) as u64,
        uuid: uuid(&h, 392),
        uuid_modify: uuid(&h, 408),
        parent_uuid: uuid(&h, 424),
        parent_modify: uuid(&h, 440),
    })
}

/// An open VDI image.
pub struct VdiReader {
    file: File,
    file_size: u64,
    name: String,
    virtual_size: u64,
    block_size: u64,
    extra: u64,
    data_offset: u64,
    blocks_offset: u64,
    map: Vec<u32>,
    parent: Option<Arc<dyn DiskImage>>,
    /// Checked against a child's record of its parent's last modification.
    uuid_modify: [u8; 16],
    info: DiskInfo,
}

impl VdiReader {
    fn open_chain(
        path: &Path,
        hint: &mut Option<Hint>,
        chain: &mut Vec<PathBuf>,
    ) -> Result<VdiReader, DiskError> {
        let name = path.display().to_string();
        let canonical = path.canonicalize().map_err(|e| DiskError::io(&name, e))?;
        if chain.contains(&canonical) {
            return Err(DiskError::corrupt(
                &name,
                "vdi parent chain",
                424,
                format!("parent cycle through {}", canonical.display()),
            ));
        }
        if chain.len() >= MAX_CHAIN {
            return Err(DiskError::unsupported(
                &name,
                format!("differencing chain deeper than {MAX_CHAIN} images"),
            ));
        }
        chain.push(canonical);
        let file = File::open(path).map_err(|e| DiskError::io(&name, e))?;
        let file_size = file.metadata().map_err(|e| DiskError::io(&name, e))?.len();
        let h = read_header(&file, &name)?;
        let corrupt = |off: u64, p: String| DiskError::corrupt(&name, "vdi header", off, p);

        let subformat = match h.image_type {
            1 => "dynamic",
            2 => "fixed",
            4 => "differencing",
            3 => {
                return Err(DiskError::unsupported(&name, "VDI undo image (type 3)"));
            }
            n => return Err(corrupt(76, format!("unknown image type {n}"))),
        };
        if !h.block_size.is_power_of_two() || !(512..=1 << 30).contains(&h.block_size) {
            return Err(corrupt(
                376,
                format!(
                    "block size {} is not a power of two in 512..=1 GiB",
                    h.block_size
                ),
            ));
        }
        if !h.extra.is_multiple_of(512) || h.extra > 1 << 30 {
            return Err(corrupt(
                380,
                format!(
                    "extra block data size {} is not a multiple of 512 up to 1 GiB",
                    h.extra
                ),
            ));
        }
        let needed = h.virtual_size.div_ceil(h.block_size);
        if h.blocks < needed {
            return Err(corrupt(
                384,
                format!(
                    "{} blocks of {} bytes cannot hold the virtual size {}",
                    h.blocks, h.block_size, h.virtual_size
                ),
            ));
        }
        let map_bytes = h.blocks * 4;
        if map_bytes > MAX_MAP_BYTES {
            return Err(corrupt(
                384,
                format!("{} blocks make a block map over 64 MiB", h.blocks),
            ));
        }
        if h.blocks_offset < h.header_end || h.blocks_offset + map_bytes > file_size {
            return Err(DiskError::corrupt(
                &name,
                "vdi block map",
                340,
                format!(
                    "{map_bytes} bytes at offset {} are not between the end of the header ({}) and the end of the file ({file_size} bytes)",
                    h.blocks_offset, h.header_end
                ),
            ));
        }
        // The data area comes after the header and the block map, never over them: a
        // data offset of 0 would read the header's bytes as the disk's first block.
        let map_end = h.blocks_offset + map_bytes;
        if h.data_offset < map_end || h.data_offset > file_size {
            return Err(DiskError::corrupt(
                &name,
                "vdi data area",
                344,
                format!(
                    "data offset {} is not between the end of the header and block map ({map_end}) and the end of the file ({file_size} bytes)",
                    h.data_offset
                ),
            ));
        }
        let mut raw = vec![0u8; map_bytes as usize];
        file.read_exact_at(&mut raw, h.blocks_offset)
            .map_err(|e| DiskError::io(&name, e))?;
        let map: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();

        let mut notes = Vec::new();
        let parent = if h.image_type == 4 {
            let ppath = find_parent(path, &name, hint, &h.parent_uuid)?;
            let p = VdiReader::open_chain(&ppath, hint, chain)?;
            if p.uuid_modify != h.parent_modify && h.parent_modify != [0; 16] {
                notes.push(format!(
                    "parent {} was modified after this differencing image was made; data may be inconsistent",
                    ppath.display()
                ));
            }
            Some(Arc::new(p) as Arc<dyn DiskImage>)
        } else {
            None
        };
        chain.pop();
        let info = DiskInfo {
            format: "vdi".into(),
            subformat: subformat.into(),
            file: path.to_path_buf(),
            virtual_size: h.virtual_size,
            backing: parent.as_ref().map(|p| Box::new(p.info())),
            notes,
        };
        Ok(VdiReader {
            file,
            file_size,
            name,
            virtual_size: h.virtual_size,
            block_size: h.block_size,
            extra: h.extra,
            data_offset: h.data_offset,
            blocks_offset: h.blocks_offset,
            map,
            parent,
            uuid_modify: h.uuid_modify,
            info,
        })
    }

    fn corrupt(&self, structure: &'static str, offset: u64, problem: String) -> io::Error {
        DiskError::corrupt(&self.name, structure, offset, problem).into()
    }

    fn read_file(&self, host: u64, buf: &mut [u8]) -> io::Result<()> {
        super::read_host_file(&self.file, &self.name, host, buf)
    }

    /// Host offset of byte `within` of block `index`, whose map entry is `entry`.
    fn host(&self, index: u64, entry: u32, within: u64, len: u64) -> io::Result<u64> {
        let stride = self.block_size + self.extra;
        let host = (entry as u64)
            .checked_mul(stride)
            .and_then(|o| o.checked_add(self.data_offset + self.extra + within));
        match host {
            Some(h) if h.checked_add(len).is_some_and(|e| e <= self.file_size) => Ok(h),
            _ => Err(self.corrupt(
                "vdi block map",
                self.blocks_offset + index * 4,
                format!(
                    "block {index} maps to data block {entry}, past the end of the file ({} bytes)",
                    self.file_size
                ),
            )),
        }
    }
}

/// Finds the parent of a differencing image: the user's file when its UUID is `want`, else
/// the `.vdi` file whose own UUID is `want` in the child's directory, the one above it (a
/// snapshot in `<VM>/Snapshots/` has its base in `<VM>`), a `Snapshots/` directory of either,
/// and the same places around the user's file. At most `MAX_SCAN` entries are looked at.
fn find_parent(
    child: &Path,
    name: &str,
    hint: &mut Option<Hint>,
    want: &[u8; 16],
) -> Result<PathBuf, DiskError> {
    if let Some(h) = hint.as_mut() {
        if h.uuid.as_ref() == Some(want) {
            h.used = true;
            return Ok(h.path.clone());
        }
    }
    let dir_of = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut bases = vec![dir_of(child)];
    if let Some(h) = hint.as_ref() {
        bases.push(dir_of(&h.path));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in bases {
        for d in [
            base.clone(),
            base.join(".."),
            base.join("Snapshots"),
            base.join("..").join("Snapshots"),
        ] {
            if let Ok(c) = d.canonicalize() {
                if !dirs.contains(&c) {
                    dirs.push(c);
                }
            }
        }
    }
    let me = child.canonicalize().ok();
    let mut scanned = 0usize;
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            scanned += 1;
            if scanned > MAX_SCAN {
                return Err(DiskError::Missing {
                    file: name.to_string(),
                    what: format!(
                        "differencing image: no parent with UUID {} among the first {MAX_SCAN} directory entries searched (give it with --parent FILE)",
                        uuid_text(want)
                    ),
                });
            }
            let p = entry.path();
            let is_vdi = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("vdi"));
            if !is_vdi || p.canonicalize().ok() == me {
                continue;
            }
            if read_uuid(&p).as_ref() == Some(want) {
                return Ok(p);
            }
        }
    }
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let given = match hint.as_ref() {
        Some(Hint {
            path,
            uuid: Some(u),
            ..
        }) => format!(
            "; the given parent {} has UUID {}",
            path.display(),
            uuid_text(u)
        ),
        Some(Hint {
            path, uuid: None, ..
        }) => format!(
            "; the given parent {} is not a readable VDI image",
            path.display()
        ),
        None => " (give it with --parent FILE)".into(),
    };
    Err(DiskError::Missing {
        file: name.to_string(),
        what: format!(
            "differencing image: no parent with UUID {} among the .vdi files in {searched}{given}",
            uuid_text(want)
        ),
    })
}

impl BlockSource for VdiReader {
    fn len(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.virtual_size, offset, buf.len())?;
        let mut done = 0usize;
        let mut run = super::HostRun::default();
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / self.block_size;
            let within = pos % self.block_size;
            let n = (self.block_size - within).min((buf.len() - done) as u64) as usize;
            let entry = self.map.get(index as usize).copied().unwrap_or(FREE);
            if entry != FREE && entry != ZERO {
                let host = self.host(index, entry, within, n as u64)?;
                run.push(host, done, n, buf, |h, _, b| self.read_file(h, b))?;
                done += n;
                continue;
            }
            run.flush(buf, |h, _, b| self.read_file(h, b))?;
            let out = &mut buf[done..done + n];
            match (&self.parent, entry) {
                (Some(p), FREE) => {
                    let inside = p.len().saturating_sub(pos).min(n as u64) as usize;
                    if inside > 0 {
                        p.read_at(pos, &mut out[..inside])?;
                    }
                    out[inside..].fill(0);
                }
                _ => out.fill(0),
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

impl DiskImage for VdiReader {
    fn info(&self) -> DiskInfo {
        self.info.clone()
    }
}

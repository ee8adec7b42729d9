//! VMDK (VMware virtual disk) reader: sparse (`KDMV`) extents, streamOptimized compressed grains,
//! flat and zero extents named by a text descriptor, and snapshot chains through `parentCID` /
//! `parentFileNameHint`.
//!
//! Our own reader rather than the `vmdk` crate: that crate is Read+Seek (we need positioned reads
//! on `&self` so several threads can share one disk), and it has no parent chains, no ZERO/FLAT
//! extents beside sparse ones, and its handling of the VMware footer (grain directory at the end
//! of a streamOptimized file) was never tested. The formats are small enough to read directly.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::block::{check_range, BlockSource, FileSource};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

const SECTOR: u64 = 512;
const MAGIC: &[u8; 4] = b"KDMV";
const DESCRIPTOR_MAGIC: &[u8] = b"# Disk DescriptorFile";
/// Grain directory offset meaning "read the footer copy of the header at the end of the file".
const GD_AT_END: u64 = u64::MAX;
const FLAG_COMPRESSED: u32 = 1 << 16;
/// Largest descriptor we read (embedded or stand-alone). Real ones are about 1 KiB.
const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Largest virtual disk we accept: VMware's own limit is 62 TiB; anything far beyond is damage.
const MAX_VIRTUAL: u64 = 1 << 48;
/// Largest grain (16 MiB). VMware uses 64 KiB; a decompressed grain is held in memory.
const MAX_GRAIN_SECTORS: u64 = 1 << 15;
/// Most grain table entries per table the format allows (VMware always writes 512).
const MAX_GTES_PER_GT: u64 = 4096;
/// Grain directory entries we hold in memory at most (64 MiB of u32).
const MAX_GD_ENTRIES: u64 = 1 << 24;
/// Extents a descriptor may list.
const MAX_EXTENTS: usize = 1 << 16;
/// Longest snapshot chain we follow before calling it damage.
const MAX_CHAIN: usize = 64;

/// True when `header` (the first bytes of a file) is a VMDK: a sparse extent or a descriptor.
pub fn matches(header: &[u8]) -> bool {
    header.starts_with(MAGIC) || header.starts_with(DESCRIPTOR_MAGIC)
}

/// Opens the VMDK at `path` (a sparse file or a descriptor) with its extents and parents.
pub fn open(path: &Path, _opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    let mut seen = HashSet::new();
    Ok(Arc::new(open_chain(path, &mut seen, 0)?.image))
}

/// An opened VMDK: its extents laid end to end, and the parent unallocated grains read from.
pub struct Vmdk {
    name: String,
    path: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    parent: Option<Box<Vmdk>>,
    create_type: String,
    notes: Vec<String>,
}

struct Extent {
    /// Byte offset of the extent in the virtual disk.
    start: u64,
    len: u64,
    kind: ExtentKind,
}

enum ExtentKind {
    Zero,
    Flat { file: FileSource, offset: u64 },
    Sparse(Box<Sparse>),
}

/// One sparse (`KDMV`) extent file.
struct Sparse {
    file: FileSource,
    grain_bytes: u64,
    gtes_per_gt: u64,
    /// Grain table sector offsets, one per grain table.
    gd: Vec<u32>,
    /// First sector after the header and the embedded descriptor: no table or grain lies
    /// before it.
    header_end: u64,
    compressed: bool,
    /// The last decompressed grain: ext4 reads 4 KiB blocks, a grain is 64 KiB.
    cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// The fields of a sparse extent header that we use.
struct SparseHeader {
    flags: u32,
    capacity: u64,
    grain_size: u64,
    desc_offset: u64,
    desc_size: u64,
    gtes_per_gt: u64,
    gd_offset: u64,
}

fn corrupt(
    file: &str,
    structure: &'static str,
    offset: u64,
    problem: impl Into<String>,
) -> DiskError {
    DiskError::corrupt(file, structure, offset, problem)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn read_exact(
    file: &FileSource,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), DiskError> {
    file.read_at(offset, buf).map_err(|e| {
        corrupt(
            file.name(),
            what,
            offset,
            format!("cannot read {} bytes: {e}", buf.len()),
        )
    })
}

fn parse_header(file: &FileSource, offset: u64) -> Result<SparseHeader, DiskError> {
    let mut b = [0u8; 512];
    read_exact(file, offset, &mut b[..80], "sparse extent header")?;
    if &b[0..4] != MAGIC {
        return Err(corrupt(
            file.name(),
            "sparse extent header",
            offset,
            "no KDMV magic",
        ));
    }
    let version = le_u32(&b, 4);
    if !(1..=3).contains(&version) {
        return Err(DiskError::unsupported(
            file.name(),
            format!("sparse extent header version {version} at offset {offset}"),
        ));
    }
    Ok(SparseHeader {
        flags: le_u32(&b, 8),
        capacity: le_u64(&b, 12),
        grain_size: le_u64(&b, 20),
        desc_offset: le_u64(&b, 28),
        desc_size: le_u64(&b, 36),
        gtes_per_gt: u64::from(le_u32(&b, 44)),
        gd_offset: le_u64(&b, 56),
    })
}

/// The parts of a descriptor we use.
#[derive(Default)]
struct Descriptor {
    create_type: Option<String>,
    cid: Option<u32>,
    parent_cid: Option<u32>,
    parent_hint: Option<Vec<u8>>,
    extents: Vec<ExtentLine>,
}

struct ExtentLine {
    access: Vec<u8>,
    sectors: u64,
    kind: Vec<u8>,
    file: Option<Vec<u8>>,
    offset: u64,
}

/// Parses descriptor text. Works on bytes: the text may be windows-1252, and file names keep
/// their exact bytes (they name files on this machine).
fn parse_descriptor(text: &[u8], file: &str, base: u64) -> Result<Descriptor, DiskError> {
    let mut d = Descriptor::default();
    let mut pos = 0u64;
    for raw_line in text.split(|&c| c == b'\n') {
        let line_offset = base + pos;
        pos += raw_line.len() as u64 + 1;
        let line = raw_line.trim_ascii();
        // An embedded descriptor is padded with NULs to its sector size.
        let line = match line.iter().position(|&c| c == 0) {
            Some(n) => line[..n].trim_ascii(),
            None => line,
        };
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let first = line
            .split(|c| c.is_ascii_whitespace())
            .next()
            .unwrap_or_default();
        if matches!(first, b"RW" | b"RDONLY" | b"NOACCESS") {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(corrupt(
                    file,
                    "descriptor",
                    line_offset,
                    "more than 65536 extents",
                ));
            }
            d.extents.push(parse_extent_line(line, file, line_offset)?);
            continue;
        }
        let Some(eq) = line.iter().position(|&c| c == b'=') else {
            continue;
        };
        let key = line[..eq].trim_ascii();
        let mut value = line[eq + 1..].trim_ascii();
        if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
            value = &value[1..value.len() - 1];
        }
        let text_value = || String::from_utf8_lossy(value).into_owned();
        let cid = || {
            u32::from_str_radix(&text_value(), 16).map_err(|_| {
                corrupt(
                    file,
                    "descriptor",
                    line_offset,
                    format!(
                        "{} is not a hex CID: {:?}",
                        String::from_utf8_lossy(key),
                        text_value()
                    ),
                )
            })
        };
        match key {
            b"createType" => d.create_type = Some(text_value()),
            b"CID" => d.cid = Some(cid()?),
            b"parentCID" => d.parent_cid = Some(cid()?),
            b"parentFileNameHint" => d.parent_hint = Some(value.to_vec()),
            _ => {}
        }
    }
    Ok(d)
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`
fn parse_extent_line(line: &[u8], file: &str, at: u64) -> Result<ExtentLine, DiskError> {
    let bad = |what: &str| {
        corrupt(
            file,
            "descriptor extent line",
            at,
            format!("{what}: {:?}", String::from_utf8_lossy(line)),
        )
    };
    let mut rest = line;
    let mut word = || {
        rest = rest.trim_ascii_start();
        let n = rest
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (w, r) = rest.split_at(n);
        rest = r;
        w
    };
    let access = word().to_vec();
    let sectors = std::str::from_utf8(word())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("bad sector count"))?;
    let kind = word().to_ascii_uppercase();
    if kind.is_empty() {
        return Err(bad("no extent type"));
    }
    let rest = rest.trim_ascii();
    let (file_name, tail) = if let Some(r) = rest.strip_prefix(b"\"") {
        let end = r
            .iter()
            .position(|&c| c == b'"')
            .ok_or_else(|| bad("unterminated file name"))?;
        (Some(r[..end].to_vec()), r[end + 1..].trim_ascii())
    } else {
        (None, rest)
    };
    let offset = if tail.is_empty() {
        0
    } else {
        std::str::from_utf8(tail)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("bad extent offset"))?
    };
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file: file_name,
        offset,
    })
}

fn open_file(path: &Path) -> Result<FileSource, DiskError> {
    FileSource::open(path).map_err(|e| DiskError::io(path.display().to_string(), e))
}

fn open_chain(path: &Path, seen: &mut HashSet<PathBuf>, depth: usize) -> Result<Opened, DiskError> {
    let name = path.display().to_string();
    if depth > MAX_CHAIN {
        return Err(corrupt(
            &name,
            "snapshot chain",
            0,
            format!("more than {MAX_CHAIN} parents"),
        ));
    }
    let canonical = path.canonicalize().map_err(|e| DiskError::io(&name, e))?;
    if !seen.insert(canonical) {
        return Err(corrupt(
            &name,
            "snapshot chain",
            0,
            "the chain of parents loops back to this file",
        ));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let file = open_file(path)?;
    let mut head = [0u8; 4];
    read_exact(&file, 0, &mut head, "file header")?;

    let mut notes = Vec::new();
    let (desc, extents) = if &head == MAGIC {
        let h = parse_header(&file, 0)?;
        let desc = if h.desc_offset != 0 && h.desc_size != 0 {
            let off = h.desc_offset.checked_mul(SECTOR);
            let len = h
                .desc_size
                .checked_mul(SECTOR)
                .filter(|&l| l <= MAX_DESCRIPTOR);
            let (Some(off), Some(len)) = (off, len) else {
                return Err(corrupt(
                    &name,
                    "embedded descriptor",
                    28,
                    format!(
                        "absurd location: sector {} size {} sectors",
                        h.desc_offset, h.desc_size
                    ),
                ));
            };
            let mut text = vec![0u8; len as usize];
            read_exact(&file, off, &mut text, "embedded descriptor")?;
            parse_descriptor(&text, &name, off)?
        } else {
            Descriptor::default()
        };
        // The file itself is the only extent, whatever name its embedded descriptor gives it:
        // a renamed file still opens.
        let sparse = open_sparse(file, h)?;
        let len = sparse.0;
        let extents = vec![Extent {
            start: 0,
            len,
            kind: ExtentKind::Sparse(Box::new(sparse.1)),
        }];
        (desc, extents)
    } else if file.len() >= DESCRIPTOR_MAGIC.len() as u64 && {
        let mut m = [0u8; DESCRIPTOR_MAGIC.len()];
        read_exact(&file, 0, &mut m, "descriptor")?;
        m == DESCRIPTOR_MAGIC
    } {
        if file.len() > MAX_DESCRIPTOR {
            return Err(corrupt(
                &name,
                "descriptor",
                0,
                format!(
                    "{} bytes is too big for a descriptor (at most {MAX_DESCRIPTOR})",
                    file.len()
                ),
            ));
        }
        let mut text = vec![0u8; file.len() as usize];
        read_exact(&file, 0, &mut text, "descriptor")?;
        let desc = parse_descriptor(&text, &name, 0)?;
        let extents = open_extents(&desc, &dir, &name, &mut notes)?;
        (desc, extents)
    } else {
        return Err(corrupt(
            &name,
            "file header",
            0,
            "neither a KDMV sparse extent nor a descriptor",
        ));
    };

    let size = extents.last().map_or(0, |e| e.start + e.len);
    let create_type = desc.create_type.clone().unwrap_or_else(|| {
        if extents.len() == 1 {
            "monolithicSparse".into()
        } else {
            String::new()
        }
    });

    let parent = match (desc.parent_cid, &desc.parent_hint) {
        (Some(pcid), Some(hint)) if pcid != u32::MAX => {
            let ppath = resolve(&dir, hint);
            let parent = open_chain(&ppath, seen, depth + 1)?;
            if parent.cid.is_some_and(|c| c != pcid) {
                notes.push(format!(
                    "parent {} has CID {:08x}, this image expects {pcid:08x}: the parent changed after this snapshot was taken",
                    ppath.display(),
                    parent.cid.unwrap_or_default()
                ));
            }
            Some(Box::new(parent.image))
        }
        (Some(pcid), None) if pcid != u32::MAX => {
            return Err(corrupt(
                &name,
                "descriptor",
                0,
                "parentCID is set but there is no parentFileNameHint",
            ));
        }
        _ => None,
    };

    let image = Vmdk {
        name,
        path: path.to_path_buf(),
        size,
        extents,
        parent,
        create_type,
        notes,
    };
    Ok(Opened {
        image,
        cid: desc.cid,
    })
}

/// A VMDK and its own CID, which its children check against their `parentCID`.
struct Opened {
    image: Vmdk,
    cid: Option<u32>,
}

fn resolve(dir: &Path, name: &[u8]) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(name));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn open_extents(
    desc: &Descriptor,
    dir: &Path,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<Extent>, DiskError> {
    let mut out = Vec::with_capacity(desc.extents.len());
    let mut start = 0u64;
    for (i, line) in desc.extents.iter().enumerate() {
        let structure = "descriptor extent line";
        let len = line
            .sectors
            .checked_mul(SECTOR)
            .and_then(|l| l.checked_add(start).map(|end| (l, end)))
            .filter(|&(_, end)| end <= MAX_VIRTUAL);
        let Some((len, end)) = len else {
            return Err(corrupt(
                name,
                structure,
                i as u64,
                format!(
                    "extent {} of {} sectors makes the disk larger than {MAX_VIRTUAL} bytes",
                    i + 1,
                    line.sectors
                ),
            ));
        };
        let kind_text = String::from_utf8_lossy(&line.kind).into_owned();
        let kind = match line.kind.as_slice() {
            b"ZERO" => ExtentKind::Zero,
            _ if line.access == b"NOACCESS" => {
                notes.push(format!("extent {} is NOACCESS: it reads as zeros", i + 1));
                ExtentKind::Zero
            }
            b"FLAT" | b"VMFS" | b"SPARSE" => {
                let Some(fname) = &line.file else {
                    return Err(corrupt(
                        name,
                        structure,
                        i as u64,
                        format!("{kind_text} extent {} names no file", i + 1),
                    ));
                };
                let fpath = resolve(dir, fname);
                let file = FileSource::open(&fpath).map_err(|e| {
                    DiskError::io(
                        name,
                        io::Error::new(
                            e.kind(),
                            format!("extent file {} (extent {}): {e}", fpath.display(), i + 1),
                        ),
                    )
                })?;
                if line.kind == b"SPARSE" {
                    let h = parse_header(&file, 0)?;
                    let (cap, sparse) = open_sparse(file, h)?;
                    if cap < len {
                        return Err(corrupt(
                            &fpath.display().to_string(),
                            "sparse extent header",
                            12,
                            format!("capacity {cap} bytes is smaller than the {len} bytes the descriptor gives it"),
                        ));
                    }
                    ExtentKind::Sparse(Box::new(sparse))
                } else {
                    let off = line
                        .offset
                        .checked_mul(SECTOR)
                        .filter(|o| o.checked_add(len).is_some_and(|e| e <= file.len()));
                    let Some(offset) = off else {
                        return Err(corrupt(
                            &fpath.display().to_string(),
                            "flat extent",
                            0,
                            format!(
                                "file has {} bytes, the descriptor needs {len} bytes from sector {}",
                                file.len(),
                                line.offset
                            ),
                        ));
                    };
                    ExtentKind::Flat { file, offset }
                }
            }
            _ => {
                return Err(DiskError::unsupported(
                    name,
                    format!("extent type {kind_text} (extent {})", i + 1),
                ))
            }
        };
        out.push(Extent { start, len, kind });
        start = end;
    }
    Ok(out)
}

/// Checks a sparse header and loads its grain directory; returns the capacity in bytes too.
fn open_sparse(file: FileSource, mut h: SparseHeader) -> Result<(u64, Sparse), DiskError> {
    let name = file.name().to_string();
    if h.gd_offset == GD_AT_END {
        // VMware's streamOptimized layout: the real header is the footer, 1024 bytes before the
        // end (then comes the end-of-stream marker).
        let at = file.len().checked_sub(1024).ok_or_else(|| {
            corrupt(
                &name,
                "footer",
                0,
                "grain directory is at the end but the file is too short for a footer",
            )
        })?;
        let footer = parse_header(&file, at)?;
        if footer.gd_offset == GD_AT_END {
            return Err(corrupt(
                &name,
                "footer",
                at,
                "footer gives no grain directory offset either",
            ));
        }
        h = SparseHeader {
            gd_offset: footer.gd_offset,
            ..footer
        };
    }
    if h.grain_size == 0 || h.grain_size > MAX_GRAIN_SECTORS {
        return Err(corrupt(
            &name,
            "sparse extent header",
            20,
            format!(
                "grain size {} sectors (want 1..={MAX_GRAIN_SECTORS})",
                h.grain_size
            ),
        ));
    }
    if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
        return Err(corrupt(
            &name,
            "sparse extent header",
            44,
            format!(
                "{} grain table entries per table (want 1..={MAX_GTES_PER_GT})",
                h.gtes_per_gt
            ),
        ));
    }
    let capacity = h
        .capacity
        .checked_mul(SECTOR)
        .filter(|&c| c <= MAX_VIRTUAL)
        .ok_or_else(|| {
            corrupt(
                &name,
                "sparse extent header",
                12,
                format!(
                    "capacity {} sectors is absurd (at most {MAX_VIRTUAL} bytes)",
                    h.capacity
                ),
            )
        })?;
    let grain_bytes = h.grain_size * SECTOR;
    let grains = capacity.div_ceil(grain_bytes);
    let tables = grains.div_ceil(h.gtes_per_gt);
    let gd_off = h.gd_offset.checked_mul(SECTOR);
    let fits = gd_off
        .and_then(|o| o.checked_add(tables * 4))
        .is_some_and(|end| end <= file.len());
    if tables > MAX_GD_ENTRIES || !fits {
        return Err(corrupt(
            &name,
            "grain directory",
            gd_off.unwrap_or(u64::MAX),
            format!(
                "{tables} entries at sector {} do not fit in the file ({} bytes)",
                h.gd_offset,
                file.len()
            ),
        ));
    }
    let gd_off = gd_off.unwrap_or_default();
    // The header is sector 0, then (in a monolithic file) the embedded descriptor. Tables
    // and grains pointing there would read the header's bytes as data.
    let header_end = if h.desc_offset > 0 {
        h.desc_offset.saturating_add(h.desc_size).max(1)
    } else {
        1
    };
    if h.gd_offset < header_end {
        return Err(corrupt(
            &name,
            "grain directory",
            gd_off,
            format!(
                "at sector {} lies in the header (sectors 0..{header_end})",
                h.gd_offset
            ),
        ));
    }
    let mut raw = vec![0u8; (tables * 4) as usize];
    read_exact(&file, gd_off, &mut raw, "grain directory")?;
    let gd: Vec<u32> = raw.chunks_exact(4).map(|c| le_u32(c, 0)).collect();
    let gt_bytes = h.gtes_per_gt * 4;
    for (i, &gde) in gd.iter().enumerate() {
        if gde == 0 {
            continue;
        }
        let entry_at = gd_off + i as u64 * 4;
        let sector = u64::from(gde);
        if sector < header_end {
            return Err(corrupt(
                &name,
                "grain directory entry",
                entry_at,
                format!("grain table {i} at sector {sector} lies in the header (sectors 0..{header_end})"),
            ));
        }
        if sector * SECTOR + gt_bytes > file.len() {
            return Err(corrupt(
                &name,
                "grain directory entry",
                entry_at,
                format!(
                    "grain table {i} at sector {sector} ({gt_bytes} bytes) runs past the end of the file ({} bytes)",
                    file.len()
                ),
            ));
        }
    }
    Ok((
        capacity,
        Sparse {
            file,
            grain_bytes,
            gtes_per_gt: h.gtes_per_gt,
            gd,
            header_end,
            compressed: h.flags & FLAG_COMPRESSED != 0,
            cache: Mutex::new(None),
        },
    ))
}

/// Where one grain's bytes are.
enum Grain {
    Unallocated,
    Zero,
    /// Byte offset of the (uncompressed) grain, or of the grain marker when compressed.
    At(u64),
}

impl Sparse {
    fn locate(&self, grain: u64) -> io::Result<Grain> {
        let table = grain / self.gtes_per_gt;
        let index = grain % self.gtes_per_gt;
        let gde = self.gd.get(table as usize).copied().unwrap_or(0);
        if gde == 0 {
            return Ok(Grain::Unallocated);
        }
        let at = u64::from(gde) * SECTOR + index * 4;
        let mut b = [0u8; 4];
        self.file.read_at(at, &mut b).map_err(|e| {
            io::Error::from(corrupt(
                self.file.name(),
                "grain table",
                at,
                format!("cannot read entry: {e}"),
            ))
        })?;
        Ok(match u32::from_le_bytes(b) {
            0 => Grain::Unallocated,
            1 => Grain::Zero,
            s if u64::from(s) < self.header_end => {
                return Err(corrupt(
                    self.file.name(),
                    "grain table entry",
                    at,
                    format!(
                        "grain {grain} at sector {s} lies in the header (sectors 0..{})",
                        self.header_end
                    ),
                )
                .into())
            }
            s => Grain::At(u64::from(s) * SECTOR),
        })
    }

    /// A compressed grain: marker `{u64 lba, u32 size}` then `size` bytes of zlib data.
    fn inflate(&self, grain: u64, at: u64) -> io::Result<Arc<Vec<u8>>> {
        if let Ok(guard) = self.cache.lock() {
            if let Some((g, data)) = guard.as_ref() {
                if *g == grain {
                    return Ok(data.clone());
                }
            }
        }
        let name = self.file.name();
        let mut marker = [0u8; 12];
        self.file.read_at(at, &mut marker).map_err(|e| {
            io::Error::from(corrupt(
                name,
                "grain marker",
                at,
                format!("cannot read: {e}"),
            ))
        })?;
        let lba = le_u64(&marker, 0);
        let size = u64::from(le_u32(&marker, 8));
        let sectors_per_grain = self.grain_bytes / SECTOR;
        if lba != grain * sectors_per_grain {
            return Err(corrupt(
                name,
                "grain marker",
                at,
                format!(
                    "says sector {lba}, grain table says {}",
                    grain * sectors_per_grain
                ),
            )
            .into());
        }
        // zlib never grows data by more than a few bytes per 16 KiB block.
        if size == 0 || size > self.grain_bytes + self.grain_bytes / 8 + 1024 {
            return Err(corrupt(
                name,
                "grain marker",
                at,
                format!(
                    "compressed size {size} for a {}-byte grain",
                    self.grain_bytes
                ),
            )
            .into());
        }
        let mut packed = vec![0u8; size as usize];
        self.file.read_at(at + 12, &mut packed).map_err(|e| {
            io::Error::from(corrupt(
                name,
                "compressed grain",
                at + 12,
                format!("cannot read {size} bytes: {e}"),
            ))
        })?;
        let mut data = Vec::with_capacity(self.grain_bytes as usize);
        flate2::read::ZlibDecoder::new(packed.as_slice())
            .take(self.grain_bytes + 1)
            .read_to_end(&mut data)
            .map_err(|e| {
                io::Error::from(corrupt(
                    name,
                    "compressed grain",
                    at + 12,
                    format!("bad zlib data: {e}"),
                ))
            })?;
        if data.len() as u64 > self.grain_bytes {
            return Err(corrupt(
                name,
                "compressed grain",
                at + 12,
                "inflates to more than a grain",
            )
            .into());
        }
        data.resize(self.grain_bytes as usize, 0);
        let data = Arc::new(data);
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some((grain, data.clone()));
        }
        Ok(data)
    }
}

impl Vmdk {
    /// Fills `buf` from extent `e`, `off` bytes into it; unallocated grains come from
    /// the parent at virtual offset `virt`.
    fn read_extent(&self, e: &Extent, off: u64, virt: u64, buf: &mut [u8]) -> io::Result<()> {
        match &e.kind {
            ExtentKind::Zero => {
                buf.fill(0);
                Ok(())
            }
            ExtentKind::Flat { file, offset } => file.read_at(offset + off, buf),
            ExtentKind::Sparse(s) => {
                let mut done = 0usize;
                while done < buf.len() {
                    let pos = off + done as u64;
                    let grain = pos / s.grain_bytes;
                    let in_grain = pos % s.grain_bytes;
                    let n = ((s.grain_bytes - in_grain) as usize).min(buf.len() - done);
                    let chunk = &mut buf[done..done + n];
                    match s.locate(grain)? {
                        Grain::Unallocated => self.read_parent(virt + done as u64, chunk)?,
                        Grain::Zero => chunk.fill(0),
                        Grain::At(at) if s.compressed => {
                            let data = s.inflate(grain, at)?;
                            let from = in_grain as usize;
                            match data.get(from..from + n) {
                                Some(src) => chunk.copy_from_slice(src),
                                None => chunk.fill(0),
                            }
                        }
                        Grain::At(at) => s.file.read_at(at + in_grain, chunk).map_err(|e| {
                            io::Error::from(corrupt(
                                s.file.name(),
                                "grain",
                                at,
                                format!("cannot read: {e}"),
                            ))
                        })?,
                    }
                    done += n;
                }
                Ok(())
            }
        }
    }

    fn read_parent(&self, virt: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        if let Some(p) = &self.parent {
            let avail = p.len().saturating_sub(virt).min(buf.len() as u64) as usize;
            if avail > 0 {
                p.read_at(virt, &mut buf[..avail])?;
            }
        }
        Ok(())
    }
}

impl BlockSource for Vmdk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = self.extents.partition_point(|e| e.start + e.len <= pos);
            let Some(e) = self.extents.get(idx) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: no extent at byte {pos}", self.name),
                ));
            };
            let in_ext = pos - e.start;
            let n = ((e.len - in_ext) as usize).min(buf.len() - done);
            self.read_extent(e, in_ext, pos, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl DiskImage for Vmdk {
    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "vmdk".into(),
            subformat: self.create_type.clone(),
            file: self.path.clone(),
            virtual_size: self.size,
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
            notes: self.notes.clone(),
        }
    }
}

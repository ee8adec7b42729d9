//! QCOW2 (v2 and v3) reader: qemu's copy-on-write disk format as a `BlockSource`.
//!
//! We read QCOW2 ourselves instead of using a crate: `qcow2-rs` is async-only (tokio) and has no
//! zstd, and `qcow` returns wrong data for unallocated clusters over a backing file and resolves
//! backing names against the current directory (see shared notes, crates.md).
//!
//! Relative backing and data file names resolve against the image's own directory, so an image
//! set can be moved; qemu resolves a relative data file name against its current directory.
//!
//! Covered: v2/v3 headers, deflate and zstd compressed clusters, zero clusters, extended L2
//! (subclusters), an external data file, and backing chains (qcow2 or raw) of up to 64 images.
//! Every offset read from the file is checked against the file size before use, and every
//! allocation sized from the header is capped (L1 table: 32 MiB, qemu's own limit; L2 cache:
//! a few MiB whatever the disk size; one decompressed cluster at most 2 MiB).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::block::{check_range, BlockSource, FileSource};
use crate::bytes::{be32, be64};
use crate::disk::{DiskError, DiskImage, DiskInfo, DiskOptions};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Bits 9..55 of an L1 or L2 entry: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;
const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// qemu refuses L1 tables larger than this, so a bigger one is damage, not a real disk.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Memory for cached L2 tables, whatever the disk size.
const L2_CACHE_BYTES: u64 = 4 << 20;
/// Longest backing chain we follow.
pub const MAX_CHAIN: usize = 64;

/// True when `header` starts with the QCOW2 magic (`QFI\xfb`).
pub fn matches(header: &[u8]) -> bool {
    header.get(..4) == Some(MAGIC.as_slice())
}

/// Opens a QCOW2 image and its whole backing chain.
pub fn open(path: &Path, _opts: &DiskOptions) -> Result<Arc<dyn DiskImage>, DiskError> {
    let reader = QcowReader::open_chain(path, &mut Vec::new())?;
    Ok(Arc::new(reader))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Deflate,
    Zstd,
}

/// How one stretch of guest bytes (inside one cluster) is stored.
#[derive(Clone, Copy)]
enum State {
    /// Host offset of the first byte (in the data file when there is one).
    Data(u64),
    Zero,
    Unallocated,
    /// The compressed cluster descriptor (L2 entry without flag bits).
    Compressed(u64),
}

/// L2 tables by host offset, least recently used out first.
struct L2Cache {
    capacity: usize,
    tick: u64,
    tables: HashMap<u64, (u64, Arc<[u64]>)>,
}

impl L2Cache {
    fn get(&mut self, offset: u64) -> Option<Arc<[u64]>> {
        self.tick += 1;
        let tick = self.tick;
        self.tables.get_mut(&offset).map(|(used, t)| {
            *used = tick;
            t.clone()
        })
    }

    fn insert(&mut self, offset: u64, table: Arc<[u64]>) {
        if self.tables.len() >= self.capacity {
            if let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k)
            {
                self.tables.remove(&oldest);
            }
        }
        self.tick += 1;
        self.tables.insert(offset, (self.tick, table));
    }
}

/// An open QCOW2 image: the guest's virtual disk, read lazily.
pub struct QcowReader {
    file: File,
    file_size: u64,
    /// External data file and its size, when incompatible bit 2 is set.
    data_file: Option<(File, u64)>,
    name: String,
    virtual_size: u64,
    cluster_bits: u32,
    /// log2 of the guest bytes one L1 entry covers.
    l1_shift: u32,
    l2_entries: u64,
    extended_l2: bool,
    compression: Compression,
    l1: Vec<u64>,
    l1_offset: u64,
    l2_cache: Mutex<L2Cache>,
    /// The last decompressed cluster, keyed by its descriptor: sequential reads of a compressed
    /// cluster in small pieces decompress it once.
    last_compressed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    backing: Option<Arc<dyn DiskImage>>,
    info: DiskInfo,
}

impl QcowReader {
    /// Opens one QCOW2 image; `chain` holds the canonical paths of the overlays above it, for
    /// cycle detection and the depth cap.
    fn open_chain(path: &Path, chain: &mut Vec<PathBuf>) -> Result<QcowReader, DiskError> {
        let name = path.display().to_string();
        let canonical = path.canonicalize().map_err(|e| DiskError::io(&name, e))?;
        if chain.contains(&canonical) {
            let list: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
            return Err(DiskError::corrupt(
                &name,
                "qcow2 backing chain",
                8,
                format!(
                    "backing file cycle: {} -> {}",
                    list.join(" -> "),
                    canonical.display()
                ),
            ));
        }
        if chain.len() >= MAX_CHAIN {
            return Err(DiskError::unsupported(
                &name,
                format!("backing chain deeper than {MAX_CHAIN} images"),
            ));
        }
        chain.push(canonical);

        let file = File::open(path).map_err(|e| DiskError::io(&name, e))?;
        let file_size = file.metadata().map_err(|e| DiskError::io(&name, e))?.len();
        let corrupt = |structure: &'static str, offset: u64, problem: String| {
            DiskError::corrupt(&name, structure, offset, problem)
        };

        let mut hdr = [0u8; 112];
        let got = read_upto(&file, 0, &mut hdr).map_err(|e| DiskError::io(&name, e))?;
        if got < 72 {
            return Err(corrupt(
                "qcow2 header",
                0,
                format!("file is {got} bytes, shorter than the 72-byte header"),
            ));
        }
        if !matches(&hdr) {
            return Err(corrupt("qcow2 header", 0, "no QFI\\xfb magic".into()));
        }
        let version = be32(&hdr, 4);
        if version != 2 && version != 3 {
            return Err(DiskError::unsupported(
                &name,
                format!("qcow2 version {version} (only 2 and 3 exist)"),
            ));
        }
        let backing_offset = be64(&hdr, 8);
        let backing_len = be32(&hdr, 16);
        let cluster_bits = be32(&hdr, 20);
        let virtual_size = be64(&hdr, 24);
        let crypt = be32(&hdr, 32);
        let l1_size = be32(&hdr, 36) as u64;
        let l1_offset = be64(&hdr, 40);
        let nb_snapshots = be32(&hdr, 60);

        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(
                "qcow2 header",
                20,
                format!("cluster_bits {cluster_bits} is outside 9..=21"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if crypt != 0 {
            let method = match crypt {
                1 => "AES-CBC".to_string(),
                2 => "LUKS".to_string(),
                n => format!("method {n}"),
            };
            return Err(DiskError::unsupported(
                &name,
                format!("encrypted qcow2 ({method}); decrypt it first with qemu-img convert"),
            ));
        }

        let (incompat, autoclear, header_len, compression_type) = if version == 3 {
            if got < 104 {
                return Err(corrupt(
                    "qcow2 header",
                    0,
                    format!("file is {got} bytes, shorter than the 104-byte v3 header"),
                ));
            }
            let header_len = be32(&hdr, 100) as u64;
            if header_len < 104 || !header_len.is_multiple_of(8) || header_len > cluster_size {
                return Err(corrupt(
                    "qcow2 header",
                    100,
                    format!(
                        "header_length {header_len} is not a multiple of 8 in 104..=cluster size"
                    ),
                ));
            }
            let ctype = if header_len > 104 { hdr[104] } else { 0 };
            (be64(&hdr, 72), be64(&hdr, 88), header_len, ctype)
        } else {
            (0, 0, 72, 0)
        };

        let mut notes = Vec::new();
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(corrupt(
                "qcow2 header",
                72,
                "marked corrupt by qemu (incompatible feature bit 1); repair a copy with `qemu-img check -r all` first".into(),
            ));
        }
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(DiskError::unsupported(
                &name,
                format!(
                    "qcow2 incompatible feature bits {unknown:#x} at header offset 72 are unknown"
                ),
            ));
        }
        if incompat & INCOMPAT_DIRTY != 0 {
            notes.push(
                "dirty: the VM was not shut down cleanly; refcounts may be stale, data is read as written"
                    .to_string(),
            );
        }
        let compression = match (compression_type, incompat & INCOMPAT_COMPRESSION != 0) {
            (0, _) => Compression::Deflate,
            (1, true) => Compression::Zstd,
            (1, false) => {
                return Err(corrupt(
                    "qcow2 header",
                    104,
                    "compression type zstd without incompatible feature bit 3".into(),
                ))
            }
            (n, _) => {
                return Err(DiskError::unsupported(
                    &name,
                    format!("qcow2 compression type {n} at header offset 104"),
                ))
            }
        };
        if compression == Compression::Zstd {
            notes.push("compression: zstd".to_string());
        }
        let extended_l2 = incompat & INCOMPAT_EXTL2 != 0;
        if extended_l2 {
            if cluster_bits < 14 {
                return Err(corrupt(
                    "qcow2 header",
                    20,
                    format!("extended L2 needs clusters of 16 KiB or more, cluster_bits is {cluster_bits}"),
                ));
            }
            notes.push("extended L2 entries (32 subclusters per cluster)".to_string());
        }
        if nb_snapshots != 0 {
            notes.push(format!(
                "{nb_snapshots} internal snapshot(s) ignored: the current state is read"
            ));
        }

        // Header extensions live in the first cluster, before the backing file name.
        let mut ext_end = cluster_size.min(file_size);
        if backing_offset != 0 {
            ext_end = ext_end.min(backing_offset);
        }
        let mut backing_format: Option<String> = None;
        let mut data_file_name: Option<String> = None;
        if header_len < ext_end {
            let mut ext = vec![0u8; ext_end as usize];
            file.read_exact_at(&mut ext, 0)
                .map_err(|e| DiskError::io(&name, e))?;
            let mut off = header_len;
            // Each step advances by at least 8 bytes, so this ends within one cluster.
            while off + 8 <= ext_end {
                let ty = be32(&ext, off as usize);
                let len = be32(&ext, off as usize + 4) as u64;
                if ty == 0 {
                    break;
                }
                let start = off + 8;
                let end = start + len;
                if end > ext_end {
                    return Err(corrupt(
                        "qcow2 header extension",
                        off,
                        format!("extension {ty:#x} of {len} bytes runs past the first cluster or the backing name"),
                    ));
                }
                let data = ext.get(start as usize..end as usize).unwrap_or(&[]);
                match ty {
                    EXT_BACKING_FORMAT => {
                        backing_format = Some(String::from_utf8_lossy(data).into_owned())
                    }
                    EXT_DATA_FILE => {
                        data_file_name = Some(String::from_utf8_lossy(data).into_owned())
                    }
                    _ => {}
                }
                off = end.div_ceil(8) * 8;
            }
        }

        // External data file: guest clusters map to host offsets in that file.
        let data_file = if incompat & INCOMPAT_DATA_FILE != 0 {
            let Some(df) = data_file_name.filter(|n| !n.is_empty()) else {
                return Err(corrupt(
                    "qcow2 header",
                    72,
                    "external data file bit is set but no data file name extension".into(),
                ));
            };
            let df_path = beside(path, &df);
            let f = File::open(&df_path).map_err(|e| {
                DiskError::io(
                    &name,
                    io::Error::new(e.kind(), format!("data file {}: {e}", df_path.display())),
                )
            })?;
            let len = f.metadata().map_err(|e| DiskError::io(&name, e))?.len();
            notes.push(format!("external data file {}", df_path.display()));
            if autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 {
                notes.push("data file is raw (readable on its own)".to_string());
            }
            Some((f, len))
        } else {
            None
        };

        // L1 table: big enough for the virtual size, inside the file, under qemu's cap.
        let l2_bits = cluster_bits - if extended_l2 { 4 } else { 3 };
        let l1_shift = cluster_bits + l2_bits;
        let needed = virtual_size.div_ceil(1u64 << l1_shift);
        if l1_size < needed {
            return Err(corrupt(
                "qcow2 L1 table",
                36,
                format!("l1_size {l1_size} is too small for virtual size {virtual_size} (needs {needed})"),
            ));
        }
        let l1_bytes = l1_size * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(
                "qcow2 L1 table",
                36,
                format!("l1_size {l1_size} makes a table over the 32 MiB limit"),
            ));
        }
        if l1_size > 0 {
            if !l1_offset.is_multiple_of(cluster_size) || l1_offset == 0 {
                return Err(corrupt(
                    "qcow2 L1 table",
                    40,
                    format!("l1_table_offset {l1_offset} is not a cluster-aligned offset after the header"),
                ));
            }
            if l1_offset
                .checked_add(l1_bytes)
                .is_none_or(|e| e > file_size)
            {
                return Err(corrupt(
                    "qcow2 L1 table",
                    40,
                    format!("l1_table_offset {l1_offset} + {l1_bytes} bytes is past the end of the file ({file_size} bytes)"),
                ));
            }
        }
        let mut raw_l1 = vec![0u8; l1_bytes as usize];
        file.read_exact_at(&mut raw_l1, l1_offset)
            .map_err(|e| DiskError::io(&name, e))?;
        let l1: Vec<u64> = raw_l1.chunks_exact(8).map(|c| be64(c, 0)).collect();

        // Backing file.
        let mut backing: Option<Arc<dyn DiskImage>> = None;
        if backing_offset != 0 && backing_len != 0 {
            if backing_len > 1023 {
                return Err(corrupt(
                    "qcow2 backing file name",
                    16,
                    format!("length {backing_len} is over 1023 bytes"),
                ));
            }
            if backing_offset
                .checked_add(backing_len as u64)
                .is_none_or(|e| e > file_size.min(cluster_size))
            {
                return Err(corrupt(
                    "qcow2 backing file name",
                    8,
                    format!(
                        "{backing_len} bytes at {backing_offset} are outside the first cluster"
                    ),
                ));
            }
            let mut raw = vec![0u8; backing_len as usize];
            file.read_exact_at(&mut raw, backing_offset)
                .map_err(|e| DiskError::io(&name, e))?;
            let bname = String::from_utf8_lossy(&raw).into_owned();
            backing = Some(open_backing(
                path,
                &bname,
                backing_format.as_deref(),
                chain,
            )?);
        }

        let capacity = (L2_CACHE_BYTES >> cluster_bits).clamp(4, 1024) as usize;
        let info = DiskInfo {
            format: "qcow2".into(),
            subformat: format!("v{version}"),
            file: path.to_path_buf(),
            virtual_size,
            backing: backing.as_ref().map(|b| Box::new(b.info())),
            notes,
        };
        chain.pop();
        Ok(QcowReader {
            file,
            file_size,
            data_file,
            name,
            virtual_size,
            cluster_bits,
            l1_shift,
            l2_entries: 1u64 << l2_bits,
            extended_l2,
            compression,
            l1,
            l1_offset,
            l2_cache: Mutex::new(L2Cache {
                capacity,
                tick: 0,
                tables: HashMap::new(),
            }),
            last_compressed: Mutex::new(None),
            backing,
            info,
        })
    }

    fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    fn corrupt(&self, structure: &'static str, offset: u64, problem: String) -> io::Error {
        DiskError::corrupt(&self.name, structure, offset, problem).into()
    }

    /// The L2 table for L1 index `i`, or None when that whole range is unallocated.
    fn l2_table(&self, i: u64) -> io::Result<Option<Arc<[u64]>>> {
        let entry = self.l1.get(i as usize).copied().unwrap_or(0);
        let off = entry & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        let where_ = self.l1_entry_pos(i);
        if !off.is_multiple_of(cs) {
            return Err(self.corrupt(
                "qcow2 L1 table",
                where_,
                format!("entry {i} points to L2 table at {off}, not cluster-aligned"),
            ));
        }
        if off < cs {
            return Err(self.corrupt(
                "qcow2 L1 table",
                where_,
                format!("entry {i} points to an L2 table inside the header cluster"),
            ));
        }
        if off.checked_add(cs).is_none_or(|e| e > self.file_size) {
            return Err(self.corrupt(
                "qcow2 L1 table",
                where_,
                format!(
                    "entry {i} points to an L2 table at {off}, past the end of the file ({} bytes)",
                    self.file_size
                ),
            ));
        }
        if let Some(t) = self.lock_l2().get(off) {
            return Ok(Some(t));
        }
        let mut raw = vec![0u8; cs as usize];
        self.read_meta(off, &mut raw)?;
        let table: Arc<[u64]> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        self.lock_l2().insert(off, table.clone());
        Ok(Some(table))
    }

    fn lock_l2(&self) -> std::sync::MutexGuard<'_, L2Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent (each update is
        // a single insert/remove), so a poisoned lock is still usable.
        self.l2_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Byte offset in the file of L1 entry `i`, for error messages.
    fn l1_entry_pos(&self, i: u64) -> u64 {
        self.l1_offset + i * 8
    }

    /// How the guest bytes at `pos` are stored, and how many bytes from `pos` (up to the end of
    /// its cluster) share that state and are contiguous on the host.
    fn classify(&self, table: Option<&[u64]>, pos: u64) -> io::Result<(State, u64)> {
        let cs = self.cluster_size();
        let in_cluster = pos & (cs - 1);
        let to_cluster_end = cs - in_cluster;
        let Some(table) = table else {
            return Ok((State::Unallocated, to_cluster_end));
        };
        let idx = (pos >> self.cluster_bits) & (self.l2_entries - 1);
        let stride = if self.extended_l2 { 2 } else { 1 };
        let entry = table.get((idx * stride) as usize).copied().unwrap_or(0);
        let host = entry & OFFSET_MASK;
        let structure = "qcow2 L2 entry";
        if entry & COMPRESSED != 0 {
            if self.data_file.is_some() {
                return Err(self.corrupt(
                    structure,
                    pos,
                    "compressed cluster in an image with an external data file".into(),
                ));
            }
            return Ok((
                State::Compressed(entry & !(COPIED | COMPRESSED)),
                to_cluster_end,
            ));
        }
        let allocated = host != 0 || (self.data_file.is_some() && entry & COPIED != 0);
        if allocated {
            self.check_host(host, pos)?;
        }
        if !self.extended_l2 {
            let state = if entry & ZERO != 0 {
                State::Zero
            } else if allocated {
                State::Data(host + in_cluster)
            } else {
                State::Unallocated
            };
            return Ok((state, to_cluster_end));
        }
        let bitmap = table.get((idx * 2 + 1) as usize).copied().unwrap_or(0);
        let sc_bits = self.cluster_bits - 5;
        let first = in_cluster >> sc_bits;
        let sc_state = |sc: u64| -> io::Result<u8> {
            let alloc = (bitmap >> sc) & 1 != 0;
            let zero = (bitmap >> (32 + sc)) & 1 != 0;
            match (alloc, zero) {
                (true, true) => Err(self.corrupt(
                    structure,
                    pos,
                    format!("subcluster {sc} is marked both allocated and zero"),
                )),
                (true, false) if !allocated => Err(self.corrupt(
                    structure,
                    pos,
                    format!("subcluster {sc} is allocated in an unallocated cluster"),
                )),
                (true, false) => Ok(1),
                (false, true) => Ok(2),
                (false, false) => Ok(0),
            }
        };
        let kind = sc_state(first)?;
        let mut last = first;
        while last + 1 < 32 && sc_state(last + 1)? == kind {
            last += 1;
        }
        let span = ((last + 1) << sc_bits) - in_cluster;
        let state = match kind {
            1 => State::Data(host + in_cluster),
            2 => State::Zero,
            _ => State::Unallocated,
        };
        Ok((state, span))
    }

    /// A data cluster must be aligned, outside the header (when in the image file) and inside
    /// the file that holds it.
    fn check_host(&self, host: u64, pos: u64) -> io::Result<()> {
        let cs = self.cluster_size();
        let (size, what) = self.host_file_size();
        let problem = if !host.is_multiple_of(cs) {
            Some(format!(
                "data cluster for guest offset {pos} at host {host} is not cluster-aligned"
            ))
        } else if self.data_file.is_none() && host < cs {
            Some(format!(
                "data cluster for guest offset {pos} points into the header"
            ))
        } else if host >= size {
            // Only the start is checked here: qemu may end the file inside the last cluster
            // (subclusters), so the bytes actually read are checked in `read_host`.
            Some(format!(
                "data cluster for guest offset {pos} at host {host} is past the end of the {what} ({size} bytes)"
            ))
        } else {
            None
        };
        match problem {
            Some(p) => Err(self.corrupt("qcow2 L2 entry", pos, p)),
            None => Ok(()),
        }
    }

    /// Reads metadata or compressed data from the image file, naming the file on error.
    fn read_meta(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: reading {} bytes at offset {offset}: {e}",
                    self.name,
                    buf.len()
                ),
            )
        })
    }

    fn host_file_size(&self) -> (u64, &'static str) {
        match &self.data_file {
            Some((_, len)) => (*len, "data file"),
            None => (self.file_size, "file"),
        }
    }

    /// Reads guest data stored at `host`; `pos` is its guest offset, for errors.
    fn read_host(&self, host: u64, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let (size, what) = self.host_file_size();
        if host.checked_add(buf.len() as u64).is_none_or(|e| e > size) {
            return Err(self.corrupt(
                "qcow2 L2 entry",
                pos,
                format!(
                    "data for guest offset {pos} ({} bytes at host {host}) is past the end of the {what} ({size} bytes)",
                    buf.len()
                ),
            ));
        }
        let f = match &self.data_file {
            Some((f, _)) => f,
            None => &self.file,
        };
        f.read_exact_at(buf, host).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: reading {} bytes at host offset {host}: {e}",
                    self.name,
                    buf.len()
                ),
            )
        })
    }

    /// The decompressed bytes of the cluster described by `desc`.
    fn decompress(&self, desc: u64, pos: u64) -> io::Result<Arc<Vec<u8>>> {
        {
            let last = self
                .last_compressed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((d, data)) = &*last {
                if *d == desc {
                    return Ok(data.clone());
                }
            }
        }
        let cs = self.cluster_size();
        let x = 62 - (self.cluster_bits - 8);
        let host = desc & ((1u64 << x) - 1);
        let sectors = ((desc >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let clen = sectors * 512 - (host & 511);
        if host < cs || host >= self.file_size {
            return Err(self.corrupt(
                "qcow2 compressed cluster",
                host,
                format!("for guest offset {pos}: host offset is in the header or past the end of the file ({} bytes)", self.file_size),
            ));
        }
        // The sector count is rounded up, so the last sector may run past the end of the file.
        let clen = clen.min(self.file_size - host);
        let mut input = vec![0u8; clen as usize];
        self.read_meta(host, &mut input)?;
        let mut out = vec![0u8; cs as usize];
        let ok = match self.compression {
            Compression::Deflate => {
                let mut d = flate2::Decompress::new(false);
                let r = d.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
                r.is_ok() && d.total_out() == cs
            }
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&input[..]) {
                Ok(mut dec) => dec.read_exact(&mut out).is_ok(),
                Err(_) => false,
            },
        };
        if !ok {
            return Err(self.corrupt(
                "qcow2 compressed cluster",
                host,
                format!(
                    "for guest offset {pos}: {:?} data does not decompress to one {cs}-byte cluster",
                    self.compression
                ),
            ));
        }
        let out = Arc::new(out);
        *self
            .last_compressed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((desc, out.clone()));
        Ok(out)
    }
}

impl BlockSource for QcowReader {
    fn len(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.name, self.virtual_size, offset, buf.len())?;
        let mut done = 0usize;
        let mut run = super::HostRun::default();
        let mut table: Option<(u64, Option<Arc<[u64]>>)> = None;
        while done < buf.len() {
            let pos = offset + done as u64;
            let l1_index = pos >> self.l1_shift;
            if table.as_ref().is_none_or(|(i, _)| *i != l1_index) {
                table = Some((l1_index, self.l2_table(l1_index)?));
            }
            let t = table.as_ref().and_then(|(_, t)| t.as_deref());
            let (state, span) = self.classify(t, pos)?;
            let n = (span.min((buf.len() - done) as u64)) as usize;
            if let State::Data(host) = state {
                run.push(host, done, n, buf, |h, s, b| {
                    self.read_host(h, offset + s as u64, b)
                })?;
                done += n;
                continue;
            }
            run.flush(buf, |h, s, b| self.read_host(h, offset + s as u64, b))?;
            let out = &mut buf[done..done + n];
            match state {
                State::Data(_) => {}
                State::Zero => out.fill(0),
                State::Unallocated => match &self.backing {
                    Some(b) => {
                        let blen = b.len();
                        let inside = blen.saturating_sub(pos).min(n as u64) as usize;
                        if inside > 0 {
                            b.read_at(pos, &mut out[..inside])?;
                        }
                        out[inside..].fill(0);
                    }
                    None => out.fill(0),
                },
                State::Compressed(desc) => {
                    let data = self.decompress(desc, pos)?;
                    let start = (pos & (self.cluster_size() - 1)) as usize;
                    match data.get(start..start + n) {
                        Some(src) => out.copy_from_slice(src),
                        None => {
                            return Err(self.corrupt(
                                "qcow2 compressed cluster",
                                pos,
                                "decompressed cluster is short".into(),
                            ))
                        }
                    }
                }
            }
            done += n;
        }
        run.flush(buf, |h, s, b| self.read_host(h, offset + s as u64, b))?;
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl DiskImage for QcowReader {
    fn info(&self) -> DiskInfo {
        self.info.clone()
    }
}

/// Reads up to `buf.len()` bytes at `offset`, returning how many the file had.
fn read_upto(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// `name` resolved against the directory of `image` (qemu's rule), not the current directory.
fn beside(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match image.parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}

/// A raw file used as a backing image.
struct RawImage {
    src: FileSource,
    path: PathBuf,
}

impl BlockSource for RawImage {
    fn len(&self) -> u64 {
        self.src.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.src.read_at(offset, buf)
    }
    fn name(&self) -> &str {
        self.src.name()
    }
}

impl DiskImage for RawImage {
    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "raw".into(),
            subformat: String::new(),
            file: self.path.clone(),
            virtual_size: self.src.len(),
            backing: None,
            notes: Vec::new(),
        }
    }
}

/// Opens the backing file named in `overlay`'s header, as qcow2 or raw.
fn open_backing(
    overlay: &Path,
    bname: &str,
    format: Option<&str>,
    chain: &mut Vec<PathBuf>,
) -> Result<Arc<dyn DiskImage>, DiskError> {
    let oname = overlay.display().to_string();
    if bname.starts_with("json:") || bname.contains("://") {
        return Err(DiskError::unsupported(
            &oname,
            format!("backing file {bname:?} is a qemu protocol or json: name, not a file"),
        ));
    }
    let bpath = beside(overlay, bname);
    let f = File::open(&bpath).map_err(|e| {
        DiskError::io(
            &oname,
            io::Error::new(e.kind(), format!("backing file {}: {e}", bpath.display())),
        )
    })?;
    let format = match format {
        Some(f) => f.to_string(),
        None => {
            // No backing format extension: recognise the file by its magic, as qemu does.
            let mut head = [0u8; 512];
            let n = read_upto(&f, 0, &mut head).map_err(|e| DiskError::io(&oname, e))?;
            sniff(&head[..n]).to_string()
        }
    };
    match format.as_str() {
        "qcow2" => Ok(Arc::new(QcowReader::open_chain(&bpath, chain)?)),
        "raw" => {
            let src = FileSource::open(&bpath).map_err(|e| {
                DiskError::io(
                    &oname,
                    io::Error::new(e.kind(), format!("backing file {}: {e}", bpath.display())),
                )
            })?;
            Ok(Arc::new(RawImage { src, path: bpath }))
        }
        other => Err(DiskError::unsupported(
            &oname,
            format!(
                "backing file {} in format {other:?} (only qcow2 and raw backings are read)",
                bpath.display()
            ),
        )),
    }
}

/// The format of a backing file with no declared format.
fn sniff(head: &[u8]) -> &'static str {
    if matches(head) {
        "qcow2"
    } else if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        "vdi"
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        "vmdk"
    } else if head.starts_with(b"conectix") {
        "vpc"
    } else if head.starts_with(b"vhdxfile") {
        "vhdx"
    } else if head.starts_with(b"QFI") {
        "qcow"
    } else {
        "raw"
    }
}

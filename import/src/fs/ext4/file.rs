//! File content: an inode's data as a stream, in bounded memory.
//!
//! The data map (extent tree, block map or inline data) is walked lazily, run by run. Contiguous
//! blocks are read with one `read_at` of up to 1 MiB (the import's hot path); holes and
//! uninitialized extents yield zeros without reading. Inline data (ext4 `inline_data`) lives in
//! `i_block` followed by the `system.data` xattr value.

use std::io::{self, Read};
use std::sync::Arc;

use super::blockmap::BlockMapWalker;
use super::extent::ExtentWalker;
use super::inode::{Inode, FLAG_EXTENTS, FLAG_INLINE_DATA};
use super::{Ext4Error, Fs, Run};

/// Largest single read from the device, and the size of the reader's buffer.
const CHUNK: usize = 1 << 20;

/// How an inode's logical blocks map to the device.
pub(crate) enum DataMap {
    Extents(ExtentWalker),
    Blocks(BlockMapWalker),
    /// The whole content, already in memory (at most 60 bytes + one xattr value).
    Inline(Vec<u8>),
}

impl DataMap {
    /// The map for `inode`'s first `size` bytes.
    pub(crate) fn new(fs: &Fs, inode: &Inode, size: u64) -> Result<DataMap, Ext4Error> {
        let bs = u64::from(fs.sb.block_size);
        let end_logical = size.div_ceil(bs);
        if inode.flags & FLAG_INLINE_DATA != 0 {
            return Ok(DataMap::Inline(fs.inline_data(inode)?));
        }
        if inode.flags & FLAG_EXTENTS != 0 {
            Ok(DataMap::Extents(ExtentWalker::new(
                fs,
                inode.ino,
                &inode.i_block,
                end_logical,
            )?))
        } else {
            Ok(DataMap::Blocks(BlockMapWalker::new(
                fs,
                inode.ino,
                &inode.i_block,
                end_logical,
            )))
        }
    }

    pub(crate) fn next_run(&mut self, fs: &Fs) -> Result<Option<Run>, Ext4Error> {
        match self {
            DataMap::Extents(w) => w.next_run(fs),
            DataMap::Blocks(w) => w.next_run(fs),
            DataMap::Inline(_) => Ok(None),
        }
    }
}

impl Fs {
    /// The inline data of an inode: `i_block` then the value of `system.data`.
    pub(crate) fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>, Ext4Error> {
        let mut data = inode.i_block.to_vec();
        let xattrs = self.read_xattrs(inode)?;
        if let Some((_, v)) = xattrs.into_iter().find(|(n, _)| n == b"system.data") {
            data.extend_from_slice(&v);
        }
        Ok(data)
    }
}

/// Streams the first `size` bytes of one inode's data.
pub(crate) struct FileReader {
    fs: Arc<Fs>,
    ino: u32,
    map: DataMap,
    size: u64,
    pos: u64,
    /// The current mapped run, if it has not been passed yet.
    run: Option<Run>,
    map_done: bool,
    buf: Vec<u8>,
    buf_pos: usize,
}

impl FileReader {
    pub(crate) fn new(fs: Arc<Fs>, inode: &Inode) -> Result<FileReader, Ext4Error> {
        let map = DataMap::new(&fs, inode, inode.size)?;
        if let DataMap::Inline(d) = &map {
            if (d.len() as u64) < inode.size {
                return Err(fs.corrupt(format!(
                    "inode {} (byte {}): inline data holds {} bytes, i_size says {}",
                    inode.ino,
                    inode.offset,
                    d.len(),
                    inode.size
                )));
            }
        }
        Ok(FileReader {
            fs,
            ino: inode.ino,
            map,
            size: inode.size,
            pos: 0,
            run: None,
            map_done: false,
            buf: Vec::new(),
            buf_pos: 0,
        })
    }

    /// Fills `out` (non-empty) with the next bytes at `self.pos`; returns how many.
    fn read_direct(&mut self, out: &mut [u8]) -> Result<usize, Ext4Error> {
        let remaining = self.size - self.pos;
        let want = (out.len() as u64).min(remaining).min(CHUNK as u64) as usize;
        if let DataMap::Inline(d) = &self.map {
            let start = self.pos as usize;
            let src = d.get(start..start + want).unwrap_or(&[]);
            let n = src.len();
            out.get_mut(..n).unwrap_or(&mut []).copy_from_slice(src);
            return Ok(n);
        }
        let bs = u64::from(self.fs.sb.block_size);
        let block = self.pos / bs;
        // Drop runs that end before the current block; fetch the next one when needed.
        loop {
            match &self.run {
                Some(r) if r.logical + r.len > block => break,
                _ => {}
            }
            self.run = None;
            if self.map_done {
                break;
            }
            match self.map.next_run(&self.fs)? {
                Some(r) => self.run = Some(r),
                None => self.map_done = true,
            }
        }
        let out = out.get_mut(..want).unwrap_or(&mut []);
        match self.run {
            Some(Run { logical, len, phys }) if logical <= block => {
                let run_end = (logical + len).saturating_mul(bs);
                let n = (run_end - self.pos).min(want as u64) as usize;
                let part = out.get_mut(..n).unwrap_or(&mut []);
                match phys {
                    Some(p) => {
                        let at = p * bs + (self.pos - logical * bs);
                        self.fs.read_bytes(at, part, || {
                            format!("inode {} data at logical byte {}", self.ino, self.pos)
                        })?;
                    }
                    None => part.fill(0),
                }
                Ok(n)
            }
            other => {
                // A hole up to the next run (or the end of the file).
                let hole_end = match other {
                    Some(r) => r.logical.saturating_mul(bs),
                    None => u64::MAX,
                };
                let n = (hole_end - self.pos).min(want as u64) as usize;
                let part = out.get_mut(..n).unwrap_or(&mut []);
                part.fill(0);
                Ok(n)
            }
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // Serve what the buffer still holds.
        if self.buf_pos < self.buf.len() {
            let src = self.buf.get(self.buf_pos..).unwrap_or(&[]);
            let n = src.len().min(out.len());
            out.get_mut(..n)
                .unwrap_or(&mut [])
                .copy_from_slice(src.get(..n).unwrap_or(&[]));
            self.buf_pos += n;
            return Ok(n);
        }
        if self.pos >= self.size {
            return Ok(0);
        }
        // Large reads go straight into the caller's buffer; small ones through ours, so a
        // caller reading 8 KiB at a time still gets 1 MiB device reads.
        if out.len() >= CHUNK / 4 {
            let n = self.read_direct(out)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let cap = (self.size - self.pos).min(CHUNK as u64) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(cap, 0);
        let n = self.read_direct(&mut buf);
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.clear();
                self.buf = buf;
                self.buf_pos = 0;
                return Err(e.into());
            }
        };
        if n == 0 {
            buf.clear();
            self.buf = buf;
            self.buf_pos = 0;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: ext4 inode {}: no data at byte {}",
                    self.fs.name, self.ino, self.pos
                ),
            ));
        }
        self.pos += n as u64;
        buf.truncate(n);
        self.buf = buf;
        self.buf_pos = 0;
        self.read(out)
    }
}

//! Block-mapped files (ext2, ext3, and ext4 without extents): 12 direct pointers, then single,
//! double and triple indirect blocks. A zero pointer is a hole at any level (a zero indirect
//! pointer is a hole over its whole span, skipped in one step).
//!
//! One indirect block per level is cached, so a sequential walk reads each indirect block once;
//! contiguous data blocks are merged into one run so the content reader can read them at once.

use super::{le32, Ext4Error, Fs, Run};

const DIRECT: u64 = 12;
/// Longest run handed out at once (in blocks); the reader splits further anyway.
const MAX_RUN_BLOCKS: u64 = 1 << 16;

pub(crate) struct BlockMapWalker {
    ino: u32,
    i_block: [u8; 60],
    /// Pointers per indirect block (block size / 4).
    per: u64,
    next_logical: u64,
    end_logical: u64,
    /// Per level (0 = the block an i_block slot points to): (block number, contents).
    cache: [Option<(u64, Vec<u8>)>; 3],
}

/// Where a logical block is: a data block, or a hole of `len` blocks.
enum Mapping {
    Data(u64),
    Hole(u64),
}

impl BlockMapWalker {
    pub(crate) fn new(fs: &Fs, ino: u32, i_block: &[u8; 60], end_logical: u64) -> BlockMapWalker {
        BlockMapWalker {
            ino,
            i_block: *i_block,
            per: u64::from(fs.sb.block_size / 4),
            next_logical: 0,
            end_logical,
            cache: [None, None, None],
        }
    }

    /// The next mapped run in logical order (holes are the gaps between runs).
    pub(crate) fn next_run(&mut self, fs: &Fs) -> Result<Option<Run>, Ext4Error> {
        // Skip holes until data or the end.
        let (start_logical, start_phys) = loop {
            if self.next_logical >= self.end_logical {
                return Ok(None);
            }
            match self.map(fs, self.next_logical)? {
                Mapping::Hole(n) => self.next_logical = self.next_logical.saturating_add(n.max(1)),
                Mapping::Data(p) => break (self.next_logical, p),
            }
        };
        let mut len = 1u64;
        while len < MAX_RUN_BLOCKS && start_logical + len < self.end_logical {
            match self.map(fs, start_logical + len)? {
                Mapping::Data(p) if p == start_phys + len => len += 1,
                _ => break,
            }
        }
        self.next_logical = start_logical + len;
        Ok(Some(Run {
            logical: start_logical,
            len,
            phys: Some(start_phys),
        }))
    }

    fn map(&mut self, fs: &Fs, logical: u64) -> Result<Mapping, Ext4Error> {
        if logical < DIRECT {
            let p = u64::from(le32(&self.i_block, logical as usize * 4));
            return self.data(fs, p, logical);
        }
        // Find which indirect tree holds the block and its index inside it.
        let mut rel = logical - DIRECT;
        let mut span = self.per;
        let mut depth = 1u32;
        while rel >= span {
            rel -= span;
            depth += 1;
            if depth > 3 {
                // Past what a block map can address: nothing is there.
                return Ok(Mapping::Hole(u64::MAX));
            }
            span = span.saturating_mul(self.per);
        }
        let slot = 11 + depth as usize;
        let mut ptr = u64::from(le32(&self.i_block, slot * 4));
        for level in 0..depth {
            // Blocks covered by one pointer at this level.
            let below = self.per.pow(depth - level - 1);
            if ptr == 0 {
                let covered = below * self.per;
                return Ok(Mapping::Hole(covered - rel % covered));
            }
            self.check(fs, ptr, logical, "indirect block")?;
            let cached = matches!(&self.cache[level as usize], Some((b, _)) if *b == ptr);
            if !cached {
                let mut data = vec![0u8; fs.sb.block_size as usize];
                let bs = u64::from(fs.sb.block_size);
                let ino = self.ino;
                fs.read_bytes(ptr * bs, &mut data, || {
                    format!("inode {ino} indirect block {ptr}")
                })?;
                self.cache[level as usize] = Some((ptr, data));
            }
            let idx = (rel / below) % self.per;
            let block = self.cache[level as usize]
                .as_ref()
                .map(|(_, d)| le32(d, idx as usize * 4))
                .unwrap_or(0);
            ptr = u64::from(block);
            if ptr == 0 {
                return Ok(Mapping::Hole(below - rel % below));
            }
        }
        self.data(fs, ptr, logical)
    }

    fn data(&self, fs: &Fs, p: u64, logical: u64) -> Result<Mapping, Ext4Error> {
        if p == 0 {
            return Ok(Mapping::Hole(1));
        }
        self.check(fs, p, logical, "data block")?;
        Ok(Mapping::Data(p))
    }

    fn check(&self, fs: &Fs, p: u64, logical: u64, what: &str) -> Result<(), Ext4Error> {
        if p >= fs.sb.blocks_count {
            return Err(fs.corrupt(format!(
                "inode {} block map: {what} {p} for logical block {logical} is past the end of the filesystem ({} blocks)",
                self.ino, fs.sb.blocks_count
            )));
        }
        Ok(())
    }
}

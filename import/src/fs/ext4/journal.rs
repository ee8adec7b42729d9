//! jbd2 journal replay, in memory, never writing the user's file.
//!
//! A disk copied from a running VM has the ext4 RECOVER flag set: the journal holds committed
//! transactions whose blocks were never written to their home location. Reading such a disk
//! without replaying shows stale metadata. `replay` walks the journal the way the kernel's
//! recovery does (scan for the end of the log, collect revokes, then replay) and returns an
//! overlay `BlockSource` that serves the newest committed copy of each logged block and the base
//! bytes for everything else.
//!
//! The overlay keeps only a map `fs block -> where its copy sits in the journal`, not the data, so
//! memory stays proportional to the number of distinct logged blocks (at most the journal length),
//! whatever the journal size. We wrote this ourselves because the crates that replay jbd2
//! (ext4-view) keep it private to their own reader and only accept 64BIT+CSUM_V3 journals.
//!
//! Every walk over the circular log is bounded by the journal length per pass, every field read
//! from the journal is range-checked, and the revoke table is capped.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use crate::block::BlockSource;
use crate::bytes::{be16, be32, be64, le16, le32};

const JBD2_MAGIC: u32 = 0xC03B_3998;

const BT_DESCRIPTOR: u32 = 1;
const BT_COMMIT: u32 = 2;
const BT_SUPERBLOCK_V1: u32 = 3;
const BT_SUPERBLOCK_V2: u32 = 4;
const BT_REVOKE: u32 = 5;

const COMPAT_CHECKSUM: u32 = 0x1;

const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

const FLAG_ESCAPE: u16 = 0x1;
const FLAG_SAME_UUID: u16 = 0x2;
const FLAG_LAST_TAG: u16 = 0x8;

/// `h_magic`, `h_blocktype`, `h_sequence`.
const HEADER_SIZE: usize = 12;
/// Revoke header: the common header plus `r_count`.
const REVOKE_HEADER_SIZE: usize = 16;
/// The on-disk `journal_superblock_t` covered by its checksum.
const SUPERBLOCK_SIZE: usize = 1024;
/// `jbd2_journal_block_tail`: the crc32c at the end of descriptor and revoke blocks.
const TAIL_SIZE: usize = 4;
const CHECKSUM_TYPE_CRC32C: u8 = 4;
/// v1 (COMPAT_CHECKSUM) commit headers: `h_chksum_type` / `h_chksum_size` for crc32.
const CHECKSUM_TYPE_CRC32: u8 = 1;
const CHECKSUM_SIZE_CRC32: u8 = 4;
/// The kernel's default fast-commit area when `s_num_fc_blks` is 0.
const DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;
/// ext4 fast-commit tag that opens a fast-commit area (`EXT4_FC_TAG_HEAD`).
const FC_TAG_HEAD: u16 = 9;

/// Most distinct revoked blocks we track. A real transaction is capped at a quarter of the
/// journal, so even a 1 GiB journal stays far below this; 4 Mi entries is about 100 MB at worst.
const MAX_REVOKES: usize = 4 << 20;

/// Why a journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{file}: journal: {problem}")]
    Corrupt { file: String, problem: String },
    #[error("{file}: journal: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
}

/// Where the replayed copy of one filesystem block lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Logged {
    /// Filesystem block (on `base`) holding the journal's copy.
    at: u64,
    /// The copy's first four bytes were the jbd2 magic and were zeroed when logged.
    escaped: bool,
}

/// The filesystem with the journal's committed transactions applied.
pub struct JournalReplay {
    base: Arc<dyn BlockSource>,
    block_size: u64,
    blocks: BTreeMap<u64, Logged>,
    transactions: u32,
    stopped: Option<String>,
}

impl JournalReplay {
    /// Number of distinct filesystem blocks the replay overrides.
    pub fn replayed_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Number of committed transactions replayed.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// The filesystem blocks the replay overrides, in order.
    pub fn replayed_block_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.keys().copied()
    }

    /// When the log ended at a damaged transaction (bad commit checksum) rather than at a clean
    /// end, what happened; the transactions before it were replayed, like the kernel does.
    pub fn stopped_early(&self) -> Option<&str> {
        self.stopped.as_deref()
    }
}

impl BlockSource for JournalReplay {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.base.read_at(offset, buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        // The base read succeeded, so offset + len fits in u64 and inside the source.
        let end = offset + buf.len() as u64;
        let first = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        for (&block, copy) in self.blocks.range(first..=last) {
            let block_start = block * self.block_size;
            let from = offset.max(block_start);
            let to = end.min(block_start + self.block_size);
            let in_block = from - block_start;
            let dst = (from - offset) as usize..(to - offset) as usize;
            let Some(dst) = buf.get_mut(dst) else {
                continue;
            };
            let src = copy
                .at
                .checked_mul(self.block_size)
                .and_then(|b| b.checked_add(in_block));
            let Some(src) = src else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: journal: copy of block {block} is past the end",
                        self.name()
                    ),
                ));
            };
            self.base.read_at(src, dst)?;
            if copy.escaped && in_block < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for (i, b) in dst.iter_mut().enumerate().take((4 - in_block) as usize) {
                    *b = magic[in_block as usize + i];
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.base.name()
    }
}

/// Replays the journal whose blocks (journal logical block i lives at filesystem block
/// `journal_blocks[i]`) sit on `base`, a filesystem of `block_size`-byte blocks.
/// `Ok(None)` when the journal holds nothing to replay.
pub fn replay(
    base: Arc<dyn BlockSource>,
    block_size: u32,
    journal_blocks: Vec<u64>,
) -> Result<Option<JournalReplay>, JournalError> {
    let Some(journal) = Journal::open(base, block_size, journal_blocks)? else {
        return Ok(None);
    };
    let scan = journal.scan()?;
    let revokes = journal.collect_revokes(&scan)?;
    let blocks = journal.replay_blocks(&scan, &revokes)?;
    journal.check_fast_commit(scan.end)?;
    Ok(Some(JournalReplay {
        base: journal.base,
        block_size: u64::from(block_size),
        blocks,
        transactions: scan.end.wrapping_sub(journal.sequence),
        stopped: scan.stopped,
    }))
}

/// An opened journal: superblock fields and how to reach its blocks.
struct Journal {
    base: Arc<dyn BlockSource>,
    block_size: usize,
    /// Journal logical block -> filesystem block.
    map: Vec<u64>,
    /// First log block (`s_first`).
    first: u32,
    /// One past the last log block (`s_maxlen`, less the fast-commit area).
    last: u32,
    /// Total journal length in blocks (`s_maxlen`).
    total: u32,
    sequence: u32,
    start: u32,
    compat: u32,
    incompat: u32,
    csum_seed: u32,
    fs_blocks: u64,
}

/// What the scan pass found.
struct Scan {
    /// The first transaction not to replay.
    end: u32,
    stopped: Option<String>,
}

/// The kernel's `crc32c(seed, data)`: no pre/post inversion, unlike the crate's.
fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Table for the big-endian (unreflected) crc32 of v1 journal checksums (`crc32_be`).
const CRC32_BE_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The kernel's `crc32_be(seed, data)`, used by COMPAT_CHECKSUM commit blocks.
fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc << 8) ^ CRC32_BE_TABLE[(((crc >> 24) as u8) ^ b) as usize];
    }
    crc
}

/// `tid_gt`: sequence numbers compare modulo 2^32.
fn tid_gt(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) > 0
}

fn tid_geq(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) >= 0
}

/// One block tag of a descriptor block.
struct Tag {
    /// Byte offset of the tag in the descriptor block.
    at: usize,
    target: u64,
    flags: u16,
}

impl Journal {
    fn open(
        base: Arc<dyn BlockSource>,
        block_size: u32,
        map: Vec<u64>,
    ) -> Result<Option<Journal>, JournalError> {
        let name = base.name().to_string();
        let corrupt = |problem: String| JournalError::Corrupt {
            file: name.clone(),
            problem,
        };
        if !(1024..=65536).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(corrupt(format!(
                "filesystem block size {block_size} is not a power of two between 1024 and 65536"
            )));
        }
        if map.is_empty() {
            return Err(corrupt("the journal inode has no blocks".into()));
        }
        let total_blocks = u32::try_from(map.len()).map_err(|_| {
            corrupt(format!(
                "the journal inode has {} blocks, more than jbd2 allows",
                map.len()
            ))
        })?;
        let mut journal = Journal {
            fs_blocks: base.len() / u64::from(block_size),
            base,
            block_size: block_size as usize,
            map,
            first: 0,
            last: 0,
            total: total_blocks,
            sequence: 0,
            start: 0,
            compat: 0,
            incompat: 0,
            csum_seed: 0,
        };
        let mut sb = vec![0u8; journal.block_size];
        journal.read(0, &mut sb)?;
        let magic = be32(&sb, 0);
        if magic != JBD2_MAGIC {
            return Err(journal.corrupt(
                0,
                format!("bad superblock magic {magic:#010x}, expected {JBD2_MAGIC:#010x}"),
            ));
        }
        let version = be32(&sb, 4);
        if version != BT_SUPERBLOCK_V1 && version != BT_SUPERBLOCK_V2 {
            return Err(journal.corrupt(
                0,
                format!("superblock has block type {version}, expected 3 or 4"),
            ));
        }
        let sb_block_size = be32(&sb, 12);
        if sb_block_size != block_size {
            return Err(journal.corrupt(
                0,
                format!(
                    "journal block size {sb_block_size} differs from the filesystem's {block_size}"
                ),
            ));
        }
        let maxlen = be32(&sb, 16);
        if maxlen > total_blocks {
            return Err(journal.corrupt(
                0,
                format!(
                    "s_maxlen {maxlen} is beyond the end of the journal inode ({total_blocks} blocks)"
                ),
            ));
        }
        journal.total = maxlen;
        journal.first = be32(&sb, 20);
        if journal.first == 0 || journal.first >= maxlen {
            return Err(journal.corrupt(
                0,
                format!(
                    "s_first {} is outside the journal (s_maxlen {maxlen})",
                    journal.first
                ),
            ));
        }
        journal.sequence = be32(&sb, 24);
        journal.start = be32(&sb, 28);
        journal.last = maxlen;
        if version == BT_SUPERBLOCK_V2 {
            journal.compat = be32(&sb, 36);
            journal.incompat = be32(&sb, 40);
            let unknown = journal.incompat & !INCOMPAT_KNOWN;
            if unknown != 0 {
                return Err(journal.corrupt(
                    0,
                    format!("unknown incompatible journal features {unknown:#x}"),
                ));
            }
            if journal.has(INCOMPAT_CSUM_V2) && journal.has(INCOMPAT_CSUM_V3) {
                return Err(journal.corrupt(0, "both checksum v2 and v3 are set".into()));
            }
            if journal.csum_v2or3() {
                journal.check_superblock_checksum(&sb)?;
                journal.csum_seed = crc32c_raw(!0, sb.get(48..64).unwrap_or_default());
            }
            if journal.has(INCOMPAT_FAST_COMMIT) {
                let n = match be32(&sb, 84) {
                    0 => DEFAULT_FAST_COMMIT_BLOCKS,
                    n => n,
                };
                journal.last = match maxlen.checked_sub(n) {
                    Some(last) if last > journal.first => last,
                    _ => {
                        return Err(journal.corrupt(
                            0,
                            format!(
                                "fast-commit area of {n} blocks leaves no log in a journal of {maxlen} blocks starting at {}",
                                journal.first
                            ),
                        ))
                    }
                };
            }
        }
        if journal.start == 0 {
            return Ok(None);
        }
        if journal.start < journal.first || journal.start >= journal.last {
            return Err(journal.corrupt(
                0,
                format!(
                    "s_start {} is outside the log (blocks {} to {})",
                    journal.start,
                    journal.first,
                    journal.last - 1
                ),
            ));
        }
        Ok(Some(journal))
    }

    fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    fn csum_v2or3(&self) -> bool {
        self.has(INCOMPAT_CSUM_V2) || self.has(INCOMPAT_CSUM_V3)
    }

    /// v1 checksums: crc32 over every logged block, checked in the commit block.
    fn csum_v1(&self) -> bool {
        self.compat & COMPAT_CHECKSUM != 0
    }

    fn corrupt(&self, block: u32, problem: String) -> JournalError {
        JournalError::Corrupt {
            file: self.base.name().to_string(),
            problem: format!("block {block}: {problem}"),
        }
    }

    /// Reads journal logical block `block` into `buf` (one block long).
    fn read(&self, block: u32, buf: &mut [u8]) -> Result<(), JournalError> {
        let Some(&fs_block) = self.map.get(block as usize) else {
            return Err(self.corrupt(
                block,
                format!(
                    "past the end of the journal inode ({} blocks)",
                    self.map.len()
                ),
            ));
        };
        let offset = fs_block.checked_mul(self.block_size as u64);
        let result = match offset {
            Some(offset) => self.base.read_at(offset, buf),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "offset overflows",
            )),
        };
        result.map_err(|e| JournalError::Io {
            file: self.base.name().to_string(),
            source: io::Error::new(
                e.kind(),
                format!("block {block} (filesystem block {fs_block}): {e}"),
            ),
        })
    }

    fn wrap(&self, block: u32) -> u32 {
        if block >= self.last {
            block - (self.last - self.first)
        } else {
            block
        }
    }

    fn check_superblock_checksum(&self, sb: &[u8]) -> Result<(), JournalError> {
        let kind = sb.get(80).copied().unwrap_or(0);
        if kind != CHECKSUM_TYPE_CRC32C {
            return Err(self.corrupt(0, format!("unknown checksum type {kind}")));
        }
        let mut copy = sb.get(..SUPERBLOCK_SIZE).unwrap_or_default().to_vec();
        let stored = be32(&copy, 0xFC);
        if let Some(field) = copy.get_mut(0xFC..0x100) {
            field.fill(0);
        }
        let computed = crc32c_raw(!0, &copy);
        if stored != computed {
            return Err(self.corrupt(
                0,
                format!("superblock checksum {stored:#010x} does not match {computed:#010x}"),
            ));
        }
        Ok(())
    }

    /// crc32c of a descriptor or revoke block with its tail zeroed.
    fn tail_checksum_ok(&self, block: &[u8]) -> bool {
        if !self.csum_v2or3() {
            return true;
        }
        let tail = self.block_size - TAIL_SIZE;
        let stored = be32(block, tail);
        let mut copy = block.to_vec();
        if let Some(field) = copy.get_mut(tail..) {
            field.fill(0);
        }
        crc32c_raw(self.csum_seed, &copy) == stored
    }

    fn commit_checksum_ok(&self, block: &[u8]) -> bool {
        if !self.csum_v2or3() {
            return true;
        }
        let stored = be32(block, 16);
        let mut copy = block.to_vec();
        if let Some(field) = copy.get_mut(16..20) {
            field.fill(0);
        }
        crc32c_raw(self.csum_seed, &copy) == stored
    }

    fn tag_checksum_ok(&self, descriptor: &[u8], tag: &Tag, data: &[u8], sequence: u32) -> bool {
        let csum = crc32c_raw(self.csum_seed, &sequence.to_be_bytes());
        let csum = crc32c_raw(csum, data);
        if self.has(INCOMPAT_CSUM_V3) {
            be32(descriptor, tag.at + 12) == csum
        } else {
            be16(descriptor, tag.at + 4) == csum as u16
        }
    }

    /// Bytes per block tag, exactly as the kernel's `journal_tag_bytes`.
    fn tag_bytes(&self) -> usize {
        if self.has(INCOMPAT_CSUM_V3) {
            return 16;
        }
        let mut size = 12;
        if self.has(INCOMPAT_CSUM_V2) {
            size += 2;
        }
        if self.has(INCOMPAT_64BIT) {
            size
        } else {
            size - 4
        }
    }

    /// The block tags of a descriptor block, up to the LAST_TAG flag or the end of the block.
    fn tags(&self, descriptor: &[u8]) -> Vec<Tag> {
        let tag_bytes = self.tag_bytes();
        let limit = if self.csum_v2or3() {
            self.block_size - TAIL_SIZE
        } else {
            self.block_size
        };
        let mut tags = Vec::new();
        let mut at = HEADER_SIZE;
        while at + tag_bytes <= limit {
            let flags = be16(descriptor, at + 6);
            let mut target = u64::from(be32(descriptor, at));
            if self.has(INCOMPAT_64BIT) {
                target |= u64::from(be32(descriptor, at + 8)) << 32;
            }
            tags.push(Tag { at, target, flags });
            at += tag_bytes;
            if flags & FLAG_SAME_UUID == 0 {
                at += 16;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        tags
    }

    /// Steps over `count` log blocks from `block`, with wrap-around.
    fn advance(&self, block: u32, count: usize) -> u32 {
        let ring = (self.last - self.first) as usize;
        let step = (count % ring) as u32;
        let next = u64::from(block) + u64::from(step);
        let last = u64::from(self.last);
        let next = if next >= last {
            next - u64::from(self.last - self.first)
        } else {
            next
        };
        next as u32
    }

    /// Counts log blocks consumed in one pass and refuses to go round the ring twice.
    fn consume(&self, used: &mut u64, count: usize, block: u32) -> Result<(), JournalError> {
        *used += count as u64;
        if *used > u64::from(self.last - self.first) {
            return Err(self.corrupt(
                block,
                "the log runs more than once around the journal (sequence loop)".into(),
            ));
        }
        Ok(())
    }

    /// PASS_SCAN: finds the first transaction that must not be replayed.
    fn scan(&self) -> Result<Scan, JournalError> {
        let mut next_id = self.sequence;
        let mut next_block = self.start;
        let mut used = 0u64;
        let mut block = vec![0u8; self.block_size];
        let mut data = vec![0u8; self.block_size];
        let mut need_check_commit_time = false;
        let mut last_commit_time = 0u64;
        let mut end: Option<u32> = None;
        let mut stopped = None;
        let mut crc32_sum = !0u32;
        let mut v1_seen = false;
        loop {
            let this = next_block;
            self.consume(&mut used, 1, this)?;
            self.read(this, &mut block)?;
            next_block = self.wrap(next_block + 1);
            if be32(&block, 0) != JBD2_MAGIC || be32(&block, 8) != next_id {
                break;
            }
            match be32(&block, 4) {
                BT_DESCRIPTOR => {
                    if !self.tail_checksum_ok(&block) {
                        // Stale blocks from an earlier use of the journal look like this; the
                        // commit time below decides between stale and corrupt.
                        need_check_commit_time = true;
                    }
                    let tags = self.tags(&block);
                    self.consume(&mut used, tags.len(), this)?;
                    if self.csum_v1() && !need_check_commit_time && end.is_none() {
                        crc32_sum = crc32_be(crc32_sum, &block);
                        for _ in &tags {
                            self.read(next_block, &mut data)?;
                            crc32_sum = crc32_be(crc32_sum, &data);
                            next_block = self.wrap(next_block + 1);
                        }
                    } else {
                        next_block = self.advance(next_block, tags.len());
                    }
                }
                BT_COMMIT => {
                    if self.csum_v1() {
                        if end.is_some() {
                            break;
                        }
                        let found = be32(&block, 16);
                        let kind = block.get(12).copied().unwrap_or(0);
                        let size = block.get(13).copied().unwrap_or(0);
                        if crc32_sum == found
                            && kind == CHECKSUM_TYPE_CRC32
                            && size == CHECKSUM_SIZE_CRC32
                        {
                            v1_seen = true;
                        } else if !(kind == 0 && size == 0 && found == 0 && !v1_seen) {
                            end = Some(next_id);
                            stopped = Some(format!(
                                "block {this}: transaction {next_id} has a bad commit checksum; replay stops before it"
                            ));
                            if !self.has(INCOMPAT_ASYNC_COMMIT) {
                                break;
                            }
                        }
                        crc32_sum = !0;
                    }
                    let commit_time = be64(&block, 48);
                    if need_check_commit_time {
                        if commit_time >= last_commit_time {
                            return Err(self.corrupt(
                                this,
                                format!(
                                    "transaction {next_id} has a descriptor or revoke block with a bad checksum"
                                ),
                            ));
                        }
                        // An older commit: stale blocks from an earlier pass over the ring.
                        break;
                    }
                    if !self.commit_checksum_ok(&block) {
                        if commit_time < last_commit_time {
                            break;
                        }
                        if end.is_none() {
                            end = Some(next_id);
                            stopped = Some(format!(
                                "block {this}: transaction {next_id} has a bad commit checksum; replay stops before it"
                            ));
                        }
                        if !self.has(INCOMPAT_ASYNC_COMMIT) {
                            break;
                        }
                    }
                    last_commit_time = commit_time;
                    next_id = next_id.wrapping_add(1);
                }
                BT_REVOKE => {
                    if !self.tail_checksum_ok(&block) {
                        need_check_commit_time = true;
                    }
                }
                _ => break,
            }
        }
        Ok(Scan {
            end: end.unwrap_or(next_id),
            stopped,
        })
    }

    /// Walks the committed part of the log (up to `scan.end`), calling `on_descriptor` and
    /// `on_revoke` with the block, its log position and its transaction.
    fn walk(
        &self,
        scan: &Scan,
        mut on_descriptor: impl FnMut(&[u8], u32, u32) -> Result<(), JournalError>,
        mut on_revoke: impl FnMut(&[u8], u32, u32) -> Result<(), JournalError>,
    ) -> Result<(), JournalError> {
        let mut next_id = self.sequence;
        let mut next_block = self.start;
        let mut used = 0u64;
        let mut block = vec![0u8; self.block_size];
        while !tid_geq(next_id, scan.end) {
            let this = next_block;
            self.consume(&mut used, 1, this)?;
            self.read(this, &mut block)?;
            next_block = self.wrap(next_block + 1);
            let sequence = be32(&block, 8);
            if be32(&block, 0) != JBD2_MAGIC || sequence != next_id {
                return Err(self.corrupt(
                    this,
                    format!(
                        "the log ends before transaction {} found by the scan",
                        scan.end
                    ),
                ));
            }
            match be32(&block, 4) {
                BT_DESCRIPTOR => {
                    if !self.tail_checksum_ok(&block) {
                        return Err(self.corrupt(
                            this,
                            format!("descriptor block of transaction {next_id} has a bad checksum"),
                        ));
                    }
                    let count = self.tags(&block).len();
                    self.consume(&mut used, count, this)?;
                    on_descriptor(&block, next_block, next_id)?;
                    next_block = self.advance(next_block, count);
                }
                BT_COMMIT => next_id = next_id.wrapping_add(1),
                BT_REVOKE => on_revoke(&block, this, next_id)?,
                other => {
                    return Err(self.corrupt(
                        this,
                        format!("unexpected block type {other} inside transaction {next_id}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// PASS_REVOKE: for every revoked block, the newest transaction revoking it.
    fn collect_revokes(&self, scan: &Scan) -> Result<HashMap<u64, u32>, JournalError> {
        let mut revokes: HashMap<u64, u32> = HashMap::new();
        let record_len = if self.has(INCOMPAT_64BIT) { 8 } else { 4 };
        let limit = if self.csum_v2or3() {
            self.block_size - TAIL_SIZE
        } else {
            self.block_size
        };
        self.walk(
            scan,
            |_, _, _| Ok(()),
            |block, at, sequence| {
                let count = be32(block, 12) as usize;
                if count > limit {
                    return Err(self.corrupt(
                        at,
                        format!("revoke block claims {count} bytes, more than the block holds"),
                    ));
                }
                let mut offset = REVOKE_HEADER_SIZE;
                while offset + record_len <= count {
                    let target = if record_len == 8 {
                        be64(block, offset)
                    } else {
                        u64::from(be32(block, offset))
                    };
                    offset += record_len;
                    match revokes.get_mut(&target) {
                        Some(seq) => {
                            if tid_gt(sequence, *seq) {
                                *seq = sequence;
                            }
                        }
                        None => {
                            if revokes.len() >= MAX_REVOKES {
                                return Err(self.corrupt(
                                    at,
                                    format!("more than {MAX_REVOKES} revoked blocks"),
                                ));
                            }
                            revokes.insert(target, sequence);
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(revokes)
    }

    /// PASS_REPLAY: the newest committed, unrevoked copy of each logged block.
    fn replay_blocks(
        &self,
        scan: &Scan,
        revokes: &HashMap<u64, u32>,
    ) -> Result<BTreeMap<u64, Logged>, JournalError> {
        let mut blocks = BTreeMap::new();
        let mut data = vec![0u8; self.block_size];
        self.walk(
            scan,
            |descriptor, first_data, sequence| {
                let mut at = first_data;
                for tag in self.tags(descriptor) {
                    let io_block = at;
                    at = self.wrap(at + 1);
                    if revokes
                        .get(&tag.target)
                        .is_some_and(|&revoked| !tid_gt(sequence, revoked))
                    {
                        continue;
                    }
                    if tag.target >= self.fs_blocks {
                        return Err(self.corrupt(
                            io_block,
                            format!(
                                "transaction {sequence} logs filesystem block {}, past the end of the filesystem ({} blocks)",
                                tag.target, self.fs_blocks
                            ),
                        ));
                    }
                    if self.csum_v2or3() {
                        self.read(io_block, &mut data)?;
                        if !self.tag_checksum_ok(descriptor, &tag, &data, sequence) {
                            return Err(self.corrupt(
                                io_block,
                                format!(
                                    "bad checksum on the copy of filesystem block {} in transaction {sequence}",
                                    tag.target
                                ),
                            ));
                        }
                    }
                    let Some(&copy_at) = self.map.get(io_block as usize) else {
                        return Err(self.corrupt(io_block, "past the end of the journal inode".into()));
                    };
                    blocks.insert(
                        tag.target,
                        Logged {
                            at: copy_at,
                            escaped: tag.flags & FLAG_ESCAPE != 0,
                        },
                    );
                }
                Ok(())
            },
            |_, _, _| Ok(()),
        )?;
        Ok(blocks)
    }

    /// Refuses a journal whose fast-commit area holds commits for the transaction after the
    /// replayed ones: ext4's fast-commit replay is a logical redo log we do not implement.
    fn check_fast_commit(&self, expected: u32) -> Result<(), JournalError> {
        if !self.has(INCOMPAT_FAST_COMMIT) {
            return Ok(());
        }
        let mut block = vec![0u8; self.block_size];
        // The kernel starts the area one past `last`; look at `last` too in case a writer
        // counts from there.
        for at in [self.last, self.last + 1] {
            if at >= self.total {
                continue;
            }
            self.read(at, &mut block)?;
            if le16(&block, 0) == FC_TAG_HEAD && le32(&block, 8) == expected {
                return Err(self.corrupt(
                    at,
                    format!(
                        "fast commits for transaction {expected} are present; decant cannot replay ext4 fast commits (mount and unmount the filesystem once, or run e2fsck on a copy)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

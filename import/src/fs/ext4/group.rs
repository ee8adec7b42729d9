//! Block group descriptors: where each group's inode table lives.
//!
//! Only the inode table location is kept (8 bytes a group), read once at open. Descriptors are
//! 32 bytes, or `s_desc_size` with the 64bit feature; with meta_bg, descriptor blocks past
//! `s_first_meta_bg` sit at the start of their meta group instead of after the superblock.

use super::superblock::{Superblock, INCOMPAT_META_BG, RO_COMPAT_SPARSE_SUPER};
use super::{le32, Ext4Error, Fs};
use crate::block::BlockSource;

/// Reads every group descriptor and returns each group's first inode table block.
pub(crate) fn read_inode_tables(
    src: &dyn BlockSource,
    sb: &Superblock,
) -> Result<Vec<u64>, Ext4Error> {
    let bs = u64::from(sb.block_size);
    let descs_per_block = sb.block_size / sb.desc_size;
    let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(bs);
    let mut tables = Vec::with_capacity(sb.groups as usize);
    let mut block = vec![0u8; sb.block_size as usize];
    let mut loaded: Option<u64> = None;
    for g in 0..sb.groups {
        let desc_block_index = g / descs_per_block;
        let loc = descriptor_block(sb, desc_block_index);
        if loc >= sb.blocks_count {
            return Err(Ext4Error::Corrupt {
                file: src.name().to_string(),
                what: format!(
                    "group descriptor block {loc} for group {g} is past the end of the filesystem ({} blocks)",
                    sb.blocks_count
                ),
            });
        }
        if loaded != Some(loc) {
            src.read_at(loc * bs, &mut block)
                .map_err(|e| Ext4Error::Io {
                    file: src.name().to_string(),
                    what: format!("group descriptor block {loc} (byte {})", loc * bs),
                    source: e,
                })?;
            loaded = Some(loc);
        }
        let off = ((g % descs_per_block) * sb.desc_size) as usize;
        let lo = u64::from(le32(&block, off + 0x8));
        let hi = if sb.desc_size >= 64 {
            u64::from(le32(&block, off + 0x28))
        } else {
            0
        };
        let table = lo | (hi << 32);
        if table == 0
            || table
                .checked_add(table_blocks)
                .is_none_or(|end| end > sb.blocks_count)
        {
            return Err(Ext4Error::Corrupt {
                file: src.name().to_string(),
                what: format!(
                    "group descriptor {g} (block {loc}, byte {}): inode table at block {table} ({table_blocks} blocks) is outside the filesystem ({} blocks)",
                    loc * bs + off as u64,
                    sb.blocks_count
                ),
            });
        }
        tables.push(table);
    }
    Ok(tables)
}

/// The filesystem block holding descriptor block number `index`.
fn descriptor_block(sb: &Superblock, index: u32) -> u64 {
    let first = u64::from(sb.first_data_block);
    if sb.incompat & INCOMPAT_META_BG != 0 && index >= sb.first_meta_bg {
        let descs_per_block = sb.block_size / sb.desc_size;
        let group = u64::from(index) * u64::from(descs_per_block);
        let group_start = first + group * u64::from(sb.blocks_per_group);
        group_start + u64::from(has_super(sb, group))
    } else {
        first + 1 + u64::from(index)
    }
}

/// Whether group `g` holds a superblock copy (always with sparse_super off; else groups 0, 1 and
/// powers of 3, 5 and 7).
fn has_super(sb: &Superblock, g: u64) -> bool {
    if sb.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&p| {
        let mut n = p;
        while n < g {
            n *= p;
        }
        n == g
    })
}

impl Fs {
    /// Byte offset of inode `ino` (1-based) on the device.
    pub(crate) fn inode_offset(&self, ino: u32) -> Result<u64, Ext4Error> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(self.corrupt(format!(
                "inode number {ino} is out of range (1..={})",
                self.sb.inodes_count
            )));
        }
        let idx = ino - 1;
        let group = idx / self.sb.inodes_per_group;
        let within = idx % self.sb.inodes_per_group;
        let table = self
            .inode_tables
            .get(group as usize)
            .copied()
            .ok_or_else(|| self.corrupt(format!("inode {ino}: no block group {group}")))?;
        Ok(table * u64::from(self.sb.block_size)
            + u64::from(within) * u64::from(self.sb.inode_size))
    }
}

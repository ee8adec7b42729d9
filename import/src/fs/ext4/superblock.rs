//! The ext2/3/4 superblock: the 1024 bytes at byte 1024 that give the geometry and the features.
//!
//! Everything later trusts these numbers to size reads and allocations, so they are checked here
//! once: magic, block size (1 KiB..64 KiB), inode size, group geometry, counts that agree with
//! each other, and a filesystem that fits inside its device (the kernel refuses the same).

use super::{le16, le32, Ext4Error};

/// Byte offset of the primary superblock.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
/// The most block groups we accept: the descriptor table is kept in memory (8 bytes a group).
const MAX_GROUPS: u64 = 1 << 24;

// Feature bits we act on.
pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_COMPAT_HUGE_FILE: u32 = 0x8;

/// Incompat features a reader has to understand: the ones we do (or that change nothing for a
/// reader that ignores checksums, hashes and MMP).
const INCOMPAT_KNOWN: u32 = 0x2 // filetype
    | 0x4 // recover (handled by journal replay)
    | 0x10 // meta_bg
    | 0x40 // extents
    | 0x80 // 64bit
    | 0x100 // mmp
    | 0x200 // flex_bg
    | 0x400 // ea_inode (values in inodes are refused one by one)
    | 0x2000 // csum_seed
    | 0x4000 // large_dir (3-level htree; we read directories linearly)
    | 0x8000 // inline_data
    | 0x20000; // casefold (names are stored as given; lookups here are exact)

const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x80, "exclude_inode"),
    (0x100, "exclude_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x4, "btree_dir"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x80, "has_snapshot"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// The superblock fields the reader uses, checked.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    /// s_free_blocks_count (lo + hi): only a hint (the kernel updates it lazily), used for the
    /// progress bar's total.
    pub free_blocks: u64,
    pub first_data_block: u32,
    pub block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub journal_inum: u32,
    pub desc_size: u32,
    pub first_meta_bg: u32,
    pub groups: u32,
}

impl Superblock {
    /// Parses and checks the 1024 superblock bytes of a filesystem on a device of `dev_len` bytes.
    pub(crate) fn parse(raw: &[u8], file: &str, dev_len: u64) -> Result<Superblock, Ext4Error> {
        let bad = |what: String| Ext4Error::Corrupt {
            file: file.to_string(),
            what: format!("superblock (byte {SUPERBLOCK_OFFSET}): {what}"),
        };
        if raw.len() < 1024 {
            return Err(bad(format!("only {} bytes", raw.len())));
        }
        let magic = le16(raw, 0x38);
        if magic != 0xEF53 {
            return Err(bad(format!(
                "magic at offset 0x38 is {magic:#06x}, not 0xef53: not an ext2/3/4 filesystem"
            )));
        }
        let log_block_size = le32(raw, 0x18);
        if log_block_size > 6 {
            return Err(bad(format!(
                "s_log_block_size {log_block_size} gives a block size over 64 KiB"
            )));
        }
        let block_size = 1024u32 << log_block_size;
        let rev_level = le32(raw, 0x4C);
        let (inode_size, first_ino) = if rev_level == 0 {
            (128, 11)
        } else {
            (u32::from(le16(raw, 0x58)), le32(raw, 0x54))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(bad(format!(
                "inode size {inode_size} is not a power of two between 128 and the block size {block_size}"
            )));
        }
        let compat = le32(raw, 0x5C);
        let incompat = le32(raw, 0x60);
        let ro_compat = le32(raw, 0x64);
        let unsupported = |what: String| Ext4Error::Unsupported {
            file: file.to_string(),
            what,
        };
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(unsupported(
                "this is an external journal device, not a filesystem".into(),
            ));
        }
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = feature_names(unknown, INCOMPAT_NAMES);
            return Err(unsupported(format!(
                "incompatible feature(s) not supported: {} (s_feature_incompat {incompat:#x})",
                names.join(", ")
            )));
        }
        let blocks_hi = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(le32(raw, 0x150))
        } else {
            0
        };
        let blocks_count = u64::from(le32(raw, 0x4)) | (blocks_hi << 32);
        let free_hi = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(le32(raw, 0x158))
        } else {
            0
        };
        let free_blocks = (u64::from(le32(raw, 0xC)) | (free_hi << 32)).min(blocks_count);
        let first_data_block = le32(raw, 0x14);
        let blocks_per_group = le32(raw, 0x20);
        let inodes_per_group = le32(raw, 0x28);
        let inodes_count = le32(raw, 0x0);
        if inodes_count == 0 {
            return Err(bad("s_inodes_count is 0".into()));
        }
        if blocks_per_group == 0 || blocks_per_group > block_size * 8 {
            return Err(bad(format!(
                "s_blocks_per_group {blocks_per_group} is not in 1..={}",
                block_size * 8
            )));
        }
        if inodes_per_group == 0 || inodes_per_group > block_size * 8 {
            return Err(bad(format!(
                "s_inodes_per_group {inodes_per_group} is not in 1..={}",
                block_size * 8
            )));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(bad(format!(
                "s_first_data_block {first_data_block} is not below s_blocks_count {blocks_count}"
            )));
        }
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        if groups > MAX_GROUPS {
            return Err(bad(format!(
                "{groups} block groups is more than this reader accepts ({MAX_GROUPS})"
            )));
        }
        if u64::from(inodes_count) != groups * u64::from(inodes_per_group) {
            return Err(bad(format!(
                "s_inodes_count {inodes_count} is not {groups} groups x {inodes_per_group} inodes"
            )));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return Err(bad(format!("s_first_ino {first_ino} is out of range")));
        }
        let fs_bytes = blocks_count.checked_mul(u64::from(block_size));
        match fs_bytes {
            Some(n) if n <= dev_len => {}
            _ => {
                return Err(bad(format!(
                    "{blocks_count} blocks of {block_size} bytes do not fit in the device's {dev_len} bytes (truncated image?)"
                )))
            }
        }
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            let d = u32::from(le16(raw, 0xFE));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() || d > block_size {
                return Err(bad(format!(
                    "s_desc_size {d} is not a power of two between 64 and 1024"
                )));
            }
            d
        } else {
            32
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(raw.get(0x68..0x78).unwrap_or(&[0; 16]));
        let mut label = [0u8; 16];
        label.copy_from_slice(raw.get(0x78..0x88).unwrap_or(&[0; 16]));
        Ok(Superblock {
            inodes_count,
            blocks_count,
            free_blocks,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            compat,
            incompat,
            ro_compat,
            uuid,
            label,
            journal_inum: le32(raw, 0xE0),
            desc_size,
            first_meta_bg: le32(raw, 0x104),
            groups: groups as u32,
        })
    }

    /// "ext2", "ext3" or "ext4", the way blkid decides: ext4 as soon as a feature beyond what
    /// ext3 knows is on, ext3 with a journal, ext2 otherwise.
    pub(crate) fn kind(&self) -> &'static str {
        let ext3_incompat = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
        let ext3_ro = 0x1 | 0x2 | 0x4;
        if self.incompat & !ext3_incompat != 0 || self.ro_compat & !ext3_ro != 0 {
            "ext4"
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }

    /// Names of every feature bit set, as dumpe2fs spells them (unknown bits as hex).
    pub(crate) fn features(&self) -> Vec<String> {
        let mut out = feature_names(self.compat, COMPAT_NAMES);
        out.extend(feature_names(self.incompat, INCOMPAT_NAMES));
        out.extend(feature_names(self.ro_compat, RO_COMPAT_NAMES));
        out
    }

    pub(crate) fn has_filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    /// Lowercase 8-4-4-4-12.
    pub(crate) fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    pub(crate) fn label_string(&self) -> String {
        let end = self.label.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(self.label.get(..end).unwrap_or(&[])).into_owned()
    }
}

fn feature_names(bits: u32, table: &[(u32, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..32 {
        let bit = 1u32 << i;
        if bits & bit == 0 {
            continue;
        }
        match table.iter().find(|(b, _)| *b == bit) {
            Some((_, n)) => out.push((*n).to_string()),
            None => out.push(format!("{bit:#x}")),
        }
    }
    out
}

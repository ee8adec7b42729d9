//! Inodes: decoding the on-disk record (128 bytes, plus the extra fields when `i_extra_isize`
//! covers them) into the metadata an `Entry` carries.
//!
//! Timestamps: the 32-bit base is signed (pre-1970 times are negative); the extra field's low
//! two bits extend it to 34 bits (post-2038) and its upper 30 bits are nanoseconds.

use snapshot::{EntryKind, Timestamp};

use super::superblock::RO_COMPAT_HUGE_FILE;
use super::{le16, le32, Ext4Error, Fs};

pub(crate) const FLAG_HUGE_FILE: u32 = 0x40000;
pub(crate) const FLAG_EXTENTS: u32 = 0x80000;
pub(crate) const FLAG_INLINE_DATA: u32 = 0x1000_0000;

/// What an inode's mode says it is. Sockets are kept so callers can count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Regular,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    pub(crate) fn entry_kind(self) -> Option<EntryKind> {
        Some(match self {
            FileKind::Regular => EntryKind::File,
            FileKind::Dir => EntryKind::Dir,
            FileKind::Symlink => EntryKind::Symlink,
            FileKind::CharDevice => EntryKind::CharDevice,
            FileKind::BlockDevice => EntryKind::BlockDevice,
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::Socket => return None,
        })
    }
}

/// One decoded inode.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub ino: u32,
    pub kind: FileKind,
    /// `mode & 0o7777`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    /// `i_blocks` in bytes.
    pub allocated: u64,
    /// The 60 bytes of `i_block`: extent root, block pointers, inline data, fast symlink, device.
    pub i_block: [u8; 60],
    pub file_acl: u64,
    pub mtime: Timestamp,
    /// The in-inode extended attribute area (after `i_extra_isize`), possibly empty.
    pub xattr_area: Vec<u8>,
    /// Byte offset of the inode on the device, for messages.
    pub offset: u64,
}

impl Inode {
    /// (major, minor) of a device inode: the old 8:8 encoding in `i_block[0]`, else the new
    /// 12:20 encoding in `i_block[1]`.
    pub(crate) fn device(&self) -> (u32, u32) {
        let old = le32(&self.i_block, 0);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let new = le32(&self.i_block, 4);
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        }
    }
}

impl Fs {
    /// Reads and decodes inode `ino`.
    pub(crate) fn read_inode(&self, ino: u32) -> Result<Inode, Ext4Error> {
        let offset = self.inode_offset(ino)?;
        let isize = self.sb.inode_size as usize;
        let mut raw = vec![0u8; isize];
        self.read_bytes(offset, &mut raw, || format!("inode {ino} (byte {offset})"))?;
        let corrupt = |what: String| self.corrupt(format!("inode {ino} (byte {offset}): {what}"));

        let mode = le16(&raw, 0);
        let kind = match mode & 0xF000 {
            0x1000 => FileKind::Fifo,
            0x2000 => FileKind::CharDevice,
            0x4000 => FileKind::Dir,
            0x6000 => FileKind::BlockDevice,
            0x8000 => FileKind::Regular,
            0xA000 => FileKind::Symlink,
            0xC000 => FileKind::Socket,
            other => {
                return Err(corrupt(format!(
                    "i_mode {mode:#o} has no valid file type ({other:#o}); the inode is free or damaged"
                )))
            }
        };
        let uid = u32::from(le16(&raw, 2)) | (u32::from(le16(&raw, 120)) << 16);
        let gid = u32::from(le16(&raw, 24)) | (u32::from(le16(&raw, 122)) << 16);
        let size = u64::from(le32(&raw, 4)) | (u64::from(le32(&raw, 108)) << 32);
        let links = le16(&raw, 26);
        let flags = le32(&raw, 32);
        let blocks_lo = u64::from(le32(&raw, 28));
        let allocated = if self.sb.ro_compat & RO_COMPAT_HUGE_FILE != 0 {
            let blocks = blocks_lo | (u64::from(le16(&raw, 116)) << 32);
            if flags & FLAG_HUGE_FILE != 0 {
                blocks.saturating_mul(u64::from(self.sb.block_size))
            } else {
                blocks.saturating_mul(512)
            }
        } else {
            blocks_lo * 512
        };
        let mut i_block = [0u8; 60];
        i_block.copy_from_slice(raw.get(40..100).unwrap_or(&[0; 60]));
        let file_acl = u64::from(le32(&raw, 104)) | (u64::from(le16(&raw, 118)) << 32);

        // The extra fields exist only as far as i_extra_isize reaches.
        let extra_isize = if isize > 128 {
            usize::from(le16(&raw, 128))
        } else {
            0
        };
        if extra_isize != 0 && (128 + extra_isize > isize || extra_isize % 4 != 0) {
            return Err(corrupt(format!(
                "i_extra_isize {extra_isize} does not fit a {isize}-byte inode"
            )));
        }
        let has_extra = |field_end: usize| extra_isize != 0 && field_end <= 128 + extra_isize;
        let mut mtime = Timestamp {
            secs: i64::from(le32(&raw, 16) as i32),
            nanos: 0,
        };
        if has_extra(140) {
            let extra = le32(&raw, 136);
            mtime.secs += i64::from(extra & 3) << 32;
            mtime.nanos = extra >> 2;
            if mtime.nanos >= 1_000_000_000 {
                return Err(corrupt(format!(
                    "i_mtime_extra {extra:#x} has {} nanoseconds",
                    mtime.nanos
                )));
            }
        }
        let xattr_area = if extra_isize != 0 {
            raw.get(128 + extra_isize..).unwrap_or(&[]).to_vec()
        } else {
            Vec::new()
        };
        Ok(Inode {
            ino,
            kind,
            perm: u32::from(mode & 0o7777),
            uid,
            gid,
            size,
            links,
            flags,
            allocated,
            i_block,
            file_acl,
            mtime,
            xattr_area,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode_with_block(b: [u32; 2]) -> Inode {
        let mut i_block = [0u8; 60];
        i_block[0..4].copy_from_slice(&b[0].to_le_bytes());
        i_block[4..8].copy_from_slice(&b[1].to_le_bytes());
        Inode {
            ino: 12,
            kind: FileKind::CharDevice,
            perm: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            links: 1,
            flags: 0,
            allocated: 0,
            i_block,
            file_acl: 0,
            mtime: Timestamp::default(),
            xattr_area: Vec::new(),
            offset: 0,
        }
    }

    #[test]
    fn device_numbers_old_and_new_encoding() {
        // Old: major 8, minor 1 as 0x0801.
        assert_eq!(inode_with_block([0x0801, 0]).device(), (8, 1));
        // New: major 259, minor 70000 (needs the high minor bits).
        let (major, minor) = (259u32, 70000u32);
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(inode_with_block([0, new]).device(), (major, minor));
    }
}

//! Extended attributes: in the inode (after `i_extra_isize`, magic 0xEA020000) and in one
//! xattr block (`i_file_acl`, header with magic, refcount and h_blocks = 1).
//!
//! Names are stored as a prefix index plus a suffix; we return full names. POSIX ACLs are
//! stored in ext4's compact form and are converted back to the `system.posix_acl_*` value
//! format user space (and tar) sees. Values kept in separate inodes (ea_inode) are refused.

use super::inode::Inode;
use super::{le16, le32, Ext4Error, Fs};

const MAGIC: u32 = 0xEA02_0000;
const ENTRY_HEADER: usize = 16;

/// A full xattr name and its value.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

impl Fs {
    /// Every xattr of `inode` (in-inode first, then the block), with full names, unsorted.
    /// Includes `system.data` (inline data); callers that show xattrs drop it.
    pub(crate) fn read_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>, Ext4Error> {
        let mut out = Vec::new();
        let area = &inode.xattr_area;
        if area.len() >= 4 && le32(area, 0) == MAGIC {
            let region = area.get(4..).unwrap_or(&[]);
            let where_ = format!(
                "inode {} in-inode xattrs (byte {})",
                inode.ino, inode.offset
            );
            parse_entries(self, region, 0, region, &where_, &mut out)?;
        }
        if inode.file_acl != 0 {
            let blk = inode.file_acl;
            let bs = u64::from(self.sb.block_size);
            if blk >= self.sb.blocks_count {
                return Err(self.corrupt(format!(
                    "inode {}: xattr block {blk} (i_file_acl) is past the end of the filesystem ({} blocks)",
                    inode.ino, self.sb.blocks_count
                )));
            }
            let mut data = vec![0u8; self.sb.block_size as usize];
            self.read_bytes(blk * bs, &mut data, || {
                format!("inode {} xattr block {blk}", inode.ino)
            })?;
            let where_ = format!("inode {} xattr block {blk} (byte {})", inode.ino, blk * bs);
            let magic = le32(&data, 0);
            if magic != MAGIC {
                return Err(self.corrupt(format!("{where_}: magic {magic:#x}, not 0xea020000")));
            }
            let h_blocks = le32(&data, 8);
            if h_blocks != 1 {
                return Err(self.corrupt(format!("{where_}: h_blocks {h_blocks}, not 1")));
            }
            let entries = data.get(32..).unwrap_or(&[]);
            parse_entries(self, entries, 32, &data, &where_, &mut out)?;
        }
        Ok(out)
    }
}

/// Parses the entry list in `entries` (which starts at `entries_base` inside `values`, the
/// region value offsets are relative to).
fn parse_entries(
    fs: &Fs,
    entries: &[u8],
    entries_base: usize,
    values: &[u8],
    where_: &str,
    out: &mut Vec<Xattr>,
) -> Result<(), Ext4Error> {
    let mut off = 0usize;
    // Each entry takes at least 16 bytes, so this ends within entries.len() / 16 steps.
    loop {
        if off + 4 > entries.len() {
            // Some writers fill the in-inode area exactly, without the final zero word.
            return Ok(());
        }
        if le32(entries, off) == 0 {
            return Ok(());
        }
        let bad = |what: String| {
            fs.corrupt(format!(
                "{where_}: entry at offset {}: {what}",
                entries_base + off
            ))
        };
        if off + ENTRY_HEADER > entries.len() {
            return Err(bad("entry header runs past the end of the area".into()));
        }
        let name_len = usize::from(*entries.get(off).unwrap_or(&0));
        let index = *entries.get(off + 1).unwrap_or(&0);
        let value_offs = usize::from(le16(entries, off + 2));
        let value_inum = le32(entries, off + 4);
        let value_size = le32(entries, off + 8) as usize;
        let name = entries
            .get(off + ENTRY_HEADER..off + ENTRY_HEADER + name_len)
            .ok_or_else(|| {
                bad(format!(
                    "name of {name_len} bytes runs past the end of the area"
                ))
            })?;
        let Some(pre) = prefix(index) else {
            return Err(bad(format!("unknown name index {index}")));
        };
        let mut full = pre.to_vec();
        full.extend_from_slice(name);
        if value_inum != 0 {
            return Err(Ext4Error::Unsupported {
                file: fs.name.clone(),
                what: format!(
                    "{where_}: xattr {} has its value in inode {value_inum} (ea_inode), which this reader does not support",
                    String::from_utf8_lossy(&full)
                ),
            });
        }
        let value = values
            .get(value_offs..value_offs.saturating_add(value_size))
            .ok_or_else(|| {
                bad(format!(
                    "value of {value_size} bytes at offset {value_offs} runs past the end of the area ({} bytes)",
                    values.len()
                ))
            })?;
        let value = if index == 2 || index == 3 {
            acl_to_xattr(value).ok_or_else(|| bad("malformed POSIX ACL".into()))?
        } else {
            value.to_vec()
        };
        out.push((full, value));
        off += (ENTRY_HEADER + name_len).div_ceil(4) * 4;
    }
}

/// Converts ext4's on-disk ACL (version 1; short entries for the owner, group, mask and other)
/// to the xattr format user space reads (version 2, every entry 8 bytes, id -1 when unused).
fn acl_to_xattr(disk: &[u8]) -> Option<Vec<u8>> {
    const USER: u16 = 0x02;
    const GROUP: u16 = 0x08;
    if le32(disk, 0) != 1 || disk.len() < 4 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut off = 4usize;
    // Each entry consumes at least 4 bytes.
    while off < disk.len() {
        let tag = le16(disk, off);
        let perm = le16(disk, off + 2);
        let id = if tag == USER || tag == GROUP {
            if off + 8 > disk.len() {
                return None;
            }
            let id = le32(disk, off + 4);
            off += 8;
            id
        } else {
            if off + 4 > disk.len() {
                return None;
            }
            off += 4;
            u32::MAX
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_conversion() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut disk = 1u32.to_le_bytes().to_vec();
        disk.extend_from_slice(&[1, 0, 6, 0]);
        disk.extend_from_slice(&[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        disk.extend_from_slice(&[4, 0, 4, 0]);
        disk.extend_from_slice(&[0x10, 0, 4, 0]);
        disk.extend_from_slice(&[0x20, 0, 0, 0]);
        let x = acl_to_xattr(&disk).unwrap();
        assert_eq!(x.len(), 4 + 5 * 8);
        assert_eq!(&x[0..4], &2u32.to_le_bytes());
        assert_eq!(&x[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&x[12..20], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert!(acl_to_xattr(&[2, 0, 0, 0]).is_none());
        assert!(acl_to_xattr(&[1, 0, 0, 0, 2, 0, 4, 0]).is_none());
    }
}

//! Directories: every entry of one directory, read linearly and sorted by name.
//!
//! Reading the blocks in order is enough for htree (dir_index) directories too: the dx root
//! hides its index inside the ".." entry's record, and dx node blocks start with an empty entry
//! (inode 0) spanning the block, so a linear reader skips both. The metadata_csum tail is an
//! inode-0 entry as well. Inline directories keep the parent inode in the first 4 bytes of
//! `i_block`, entries in the other 56, and more entries in the `system.data` value.

use super::inode::{Inode, FLAG_INLINE_DATA};
use super::{le16, le32, Ext4Error, Fs};
use crate::fs::ext4::file::DataMap;

/// Most bytes of names (plus 16 bytes of overhead each) one directory may hold in memory.
const MAX_DIR_BYTES: usize = 64 << 20;
/// Most directory blocks (in bytes) read for one directory: bounds the work on a damaged
/// directory whose blocks hold only empty entries.
const MAX_DIR_BLOCK_BYTES: u64 = 256 << 20;

/// One name in a directory.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u32,
}

impl Fs {
    /// The entries of directory `dir` without "." and "..", sorted by name bytes.
    pub(crate) fn read_dir_entries(&self, dir: &Inode) -> Result<Vec<DirEntry>, Ext4Error> {
        let mut out = Vec::new();
        let mut budget = MAX_DIR_BYTES;
        if dir.flags & FLAG_INLINE_DATA != 0 {
            let data = self.inline_data(dir)?;
            let where_ = format!("directory inode {} inline data", dir.ino);
            let in_inode = data.get(4..60).unwrap_or(&[]);
            self.parse_dir_block(in_inode, &where_, 4, &mut out, &mut budget)?;
            if let Some(extra) = data.get(60..) {
                if !extra.is_empty() {
                    let where_ = format!("directory inode {} inline data (system.data)", dir.ino);
                    self.parse_dir_block(extra, &where_, 0, &mut out, &mut budget)?;
                }
            }
        } else {
            let bs = u64::from(self.sb.block_size);
            let mut map = DataMap::new(self, dir, dir.size)?;
            let end = dir.size.div_ceil(bs);
            let mut block = vec![0u8; self.sb.block_size as usize];
            let mut read = 0u64;
            while let Some(run) = map.next_run(self)? {
                let Some(phys) = run.phys else { continue };
                for i in 0..run.len {
                    if run.logical + i >= end {
                        break;
                    }
                    read += bs;
                    if read > MAX_DIR_BLOCK_BYTES {
                        return Err(self.corrupt(format!(
                            "directory inode {}: more than {MAX_DIR_BLOCK_BYTES} bytes of directory blocks",
                            dir.ino
                        )));
                    }
                    let b = phys + i;
                    self.read_bytes(b * bs, &mut block, || {
                        format!("directory inode {} block {b}", dir.ino)
                    })?;
                    let where_ = format!(
                        "directory inode {} block {b} (logical {}, byte {})",
                        dir.ino,
                        run.logical + i,
                        b * bs
                    );
                    self.parse_dir_block(&block, &where_, 0, &mut out, &mut budget)?;
                }
            }
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = out
            .windows(2)
            .find(|w| w.first().map(|e| &e.name) == w.get(1).map(|e| &e.name))
        {
            let name = w
                .first()
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .unwrap_or_default();
            return Err(self.corrupt(format!(
                "directory inode {}: name {name:?} appears twice",
                dir.ino
            )));
        }
        Ok(out)
    }

    /// Parses one block (or inline area) of directory entries. `base` is added to offsets in
    /// messages.
    fn parse_dir_block(
        &self,
        data: &[u8],
        where_: &str,
        base: usize,
        out: &mut Vec<DirEntry>,
        budget: &mut usize,
    ) -> Result<(), Ext4Error> {
        let n = data.len();
        let mut off = 0usize;
        // rec_len is at least 8, so this ends within n / 8 steps.
        while off < n {
            let bad = |what: String| {
                self.corrupt(format!("{where_}: entry at offset {}: {what}", base + off))
            };
            if off + 8 > n {
                return Err(bad(format!("entry header runs past the end ({n} bytes)")));
            }
            let ino = le32(data, off);
            let raw_rec = le16(data, off + 4);
            let rec_len = if self.sb.block_size >= 65536 && (raw_rec == 0 || raw_rec == 65535) {
                65536
            } else {
                usize::from(raw_rec & 0xfffc) | (usize::from(raw_rec & 3) << 16)
            };
            let name_len = if self.sb.has_filetype() {
                usize::from(*data.get(off + 6).unwrap_or(&0))
            } else {
                usize::from(le16(data, off + 6))
            };
            if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > n {
                return Err(bad(format!(
                    "rec_len {raw_rec} is not a multiple of 4 between 8 and the {} bytes left",
                    n - off
                )));
            }
            if name_len > 255 || 8 + name_len > rec_len {
                return Err(bad(format!(
                    "name_len {name_len} does not fit rec_len {rec_len}"
                )));
            }
            if ino != 0 {
                if ino > self.sb.inodes_count {
                    return Err(bad(format!(
                        "inode {ino} is past s_inodes_count {}",
                        self.sb.inodes_count
                    )));
                }
                let name = data.get(off + 8..off + 8 + name_len).unwrap_or(&[]);
                if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                    return Err(bad(format!(
                        "invalid name {:?}",
                        String::from_utf8_lossy(name)
                    )));
                }
                if name != b"." && name != b".." {
                    let cost = name_len + 16;
                    if cost > *budget {
                        return Err(bad(format!(
                            "directory holds more than {MAX_DIR_BYTES} bytes of entries"
                        )));
                    }
                    *budget -= cost;
                    out.push(DirEntry {
                        name: name.to_vec(),
                        ino,
                    });
                }
            }
            off += rec_len;
        }
        Ok(())
    }
}

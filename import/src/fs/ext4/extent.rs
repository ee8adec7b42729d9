//! Extent trees (ext4): walked lazily, one node per level in memory, leaves yielded in order.
//!
//! The root is the 60-byte `i_block`; index nodes point to blocks holding the next level down.
//! Each node is checked (magic 0xF30A, entries <= max, max fits the node, depth exactly one
//! less than the parent's, at most 5 levels) and the extents must come in increasing,
//! non-overlapping order: a damaged tree that repeats itself fails instead of looping.

use super::{le16, le32, Ext4Error, Fs, Run};

const MAGIC: u16 = 0xF30A;
const MAX_DEPTH: u16 = 5;
/// Lengths above this mark an uninitialized (preallocated) extent, which reads as zeros.
const INIT_MAX_LEN: u16 = 32768;

struct Node {
    data: Vec<u8>,
    entries: usize,
    depth: u16,
    next: usize,
    /// Where this node came from, for messages.
    block: Option<u64>,
}

/// Yields the data runs of one inode's extent tree.
pub(crate) struct ExtentWalker {
    ino: u32,
    stack: Vec<Node>,
    /// First logical block not yet covered: the next extent must start at or after it.
    next_logical: u64,
    /// Logical blocks past this are beyond the file's size and ignored.
    end_logical: u64,
    /// Per depth, the logical block of the last index entry followed: index entries must
    /// increase across the whole walk, so no node is entered twice.
    last_index: [Option<u64>; MAX_DEPTH as usize + 1],
    /// Tree blocks read so far, and the most a valid tree for this file can have.
    nodes_read: u64,
    max_nodes: u64,
}

impl ExtentWalker {
    pub(crate) fn new(
        fs: &Fs,
        ino: u32,
        i_block: &[u8; 60],
        end_logical: u64,
    ) -> Result<ExtentWalker, Ext4Error> {
        let root = parse_node(fs, ino, i_block.to_vec(), None, None)?;
        Ok(ExtentWalker {
            ino,
            stack: vec![root],
            next_logical: 0,
            end_logical,
            last_index: [None; MAX_DEPTH as usize + 1],
            nodes_read: 0,
            // Every extent maps at least one block and every node but the root holds at
            // least one entry, so a valid tree has fewer nodes than twice the blocks.
            max_nodes: end_logical.saturating_mul(2).saturating_add(16),
        })
    }

    /// The next mapped run, in logical order; `None` when the tree (or the file) ends.
    pub(crate) fn next_run(&mut self, fs: &Fs) -> Result<Option<Run>, Ext4Error> {
        loop {
            if self.next_logical >= self.end_logical {
                return Ok(None);
            }
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.next >= top.entries {
                self.stack.pop();
                continue;
            }
            let off = 12 + top.next * 12;
            top.next += 1;
            let logical = u64::from(le32(&top.data, off));
            if top.depth == 0 {
                let raw_len = le16(&top.data, off + 4);
                let start = u64::from(le32(&top.data, off + 8))
                    | (u64::from(le16(&top.data, off + 6)) << 32);
                let (len, uninit) = if raw_len > INIT_MAX_LEN {
                    (raw_len - INIT_MAX_LEN, true)
                } else {
                    (raw_len, false)
                };
                let where_ = describe(self.ino, top.block);
                if len == 0 {
                    return Err(fs.corrupt(format!(
                        "{where_}: extent at logical block {logical} has length 0"
                    )));
                }
                if logical < self.next_logical {
                    return Err(fs.corrupt(format!(
                        "{where_}: extent at logical block {logical} overlaps or precedes the previous one (ends at {})",
                        self.next_logical
                    )));
                }
                let len = u64::from(len);
                if start == 0
                    || start
                        .checked_add(len)
                        .is_none_or(|e| e > fs.sb.blocks_count)
                {
                    return Err(fs.corrupt(format!(
                        "{where_}: extent at logical block {logical} maps blocks {start}..{} past the end of the filesystem ({} blocks)",
                        start.saturating_add(len),
                        fs.sb.blocks_count
                    )));
                }
                self.next_logical = logical + len;
                return Ok(Some(Run {
                    logical,
                    len,
                    phys: if uninit { None } else { Some(start) },
                }));
            }
            // An index entry: descend, unless the subtree starts past the end of the file.
            if logical >= self.end_logical {
                self.stack.clear();
                return Ok(None);
            }
            let leaf =
                u64::from(le32(&top.data, off + 4)) | (u64::from(le16(&top.data, off + 8)) << 32);
            let parent_depth = top.depth;
            let parent_block = top.block;
            if let Some(slot) = self.last_index.get_mut(usize::from(parent_depth)) {
                if slot.is_some_and(|prev| logical <= prev) || logical < self.next_logical {
                    return Err(fs.corrupt(format!(
                        "{}: index entry for logical block {logical} is out of order",
                        describe(self.ino, parent_block)
                    )));
                }
                *slot = Some(logical);
            }
            self.nodes_read += 1;
            if self.nodes_read > self.max_nodes {
                return Err(fs.corrupt(format!(
                    "{}: the extent tree has more nodes than a file of {} blocks can need",
                    describe(self.ino, parent_block),
                    self.end_logical
                )));
            }
            if leaf == 0 || leaf >= fs.sb.blocks_count {
                return Err(fs.corrupt(format!(
                    "{}: index entry for logical block {logical} points to block {leaf}, outside the filesystem ({} blocks)",
                    describe(self.ino, parent_block),
                    fs.sb.blocks_count
                )));
            }
            let mut data = vec![0u8; fs.sb.block_size as usize];
            let bs = u64::from(fs.sb.block_size);
            fs.read_bytes(leaf * bs, &mut data, || {
                format!("inode {} extent tree block {leaf}", self.ino)
            })?;
            let node = parse_node(fs, self.ino, data, Some(leaf), Some(parent_depth))?;
            self.stack.push(node);
        }
    }
}

fn describe(ino: u32, block: Option<u64>) -> String {
    match block {
        None => format!("inode {ino} extent tree root (i_block)"),
        Some(b) => format!("inode {ino} extent tree block {b}"),
    }
}

fn parse_node(
    fs: &Fs,
    ino: u32,
    data: Vec<u8>,
    block: Option<u64>,
    parent_depth: Option<u16>,
) -> Result<Node, Ext4Error> {
    let bs = u64::from(fs.sb.block_size);
    let at = match block {
        None => String::new(),
        Some(b) => format!(" at byte {}", b * bs),
    };
    let bad = |what: String| fs.corrupt(format!("{}{at}: {what}", describe(ino, block)));
    let magic = le16(&data, 0);
    if magic != MAGIC {
        return Err(bad(format!("header magic {magic:#06x}, not 0xf30a")));
    }
    let entries = le16(&data, 2);
    let max = le16(&data, 4);
    let depth = le16(&data, 6);
    let capacity = (data.len() - 12) / 12;
    if usize::from(max) > capacity {
        return Err(bad(format!(
            "eh_max {max} exceeds the {capacity} entries the node holds"
        )));
    }
    if entries > max {
        return Err(bad(format!("eh_entries {entries} > eh_max {max}")));
    }
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "depth {depth} exceeds the maximum of {MAX_DEPTH}"
        )));
    }
    if let Some(p) = parent_depth {
        if depth + 1 != p {
            return Err(bad(format!("depth {depth} under a parent of depth {p}")));
        }
    }
    Ok(Node {
        data,
        entries: usize::from(entries),
        depth,
        next: 0,
        block,
    })
}

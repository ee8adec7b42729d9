//! The SQLite writer for one purpose: rpmdb.sqlite without the rows of removed packages. It
//! writes a fresh file (no free pages, no journal) from what the reader read: the same header
//! fields, the same schema rows with new root pages, each table's remaining rows and each
//! index's remaining records, in the order the reader returned them (key order), built bottom
//! up into b-trees. `PRAGMA integrity_check` is the oracle in the tests.
//!
//! Written here for the same reason as the reader (no C SQLite in decant); it only builds
//! b-trees from sorted input, so it needs no balancing, no free list and no locking.

use super::sqlite::{encode_record, local_size, put_varint};

/// The file being built; page 1 is reserved for the schema root.
pub struct Builder {
    page_size: usize,
    pages: Vec<Vec<u8>>,
}

/// One cell ready to place: its bytes (with the overflow pointer) and, for tables, its rowid.
struct Built {
    bytes: Vec<u8>,
    rowid: i64,
}

impl Builder {
    pub fn new(page_size: usize) -> Builder {
        Builder {
            page_size,
            pages: vec![vec![0u8; page_size]],
        }
    }

    fn alloc(&mut self) -> u32 {
        self.pages.push(vec![0u8; self.page_size]);
        self.pages.len() as u32
    }

    fn page_mut(&mut self, pgno: u32) -> &mut Vec<u8> {
        let i = pgno as usize - 1;
        &mut self.pages[i]
    }

    /// The cell bytes after the size (and rowid) prefix: the local part and the overflow chain.
    fn spill(&mut self, prefix: Vec<u8>, payload: &[u8], index: bool) -> Vec<u8> {
        let u = self.page_size;
        let local = local_size(payload.len(), u, index);
        let mut cell = prefix;
        cell.extend_from_slice(&payload[..local]);
        if local < payload.len() {
            let chunks: Vec<&[u8]> = payload[local..].chunks(u - 4).collect();
            let first = self.alloc();
            let mut pg = first;
            for (i, c) in chunks.iter().enumerate() {
                let next = if i + 1 < chunks.len() {
                    self.alloc()
                } else {
                    0
                };
                let p = self.page_mut(pg);
                p[..4].copy_from_slice(&next.to_be_bytes());
                p[4..4 + c.len()].copy_from_slice(c);
                pg = next;
            }
            cell.extend_from_slice(&first.to_be_bytes());
        }
        cell
    }

    /// Writes one b-tree page at `pgno`: header at `h`, cells placed from the page's end.
    fn put_page(&mut self, pgno: u32, kind: u8, cells: &[Vec<u8>], right: Option<u32>) {
        let h = if pgno == 1 { 100 } else { 0 };
        let ps = self.page_size;
        let p = self.page_mut(pgno);
        let hl = if right.is_some() { 12 } else { 8 };
        let mut end = ps;
        p[h] = kind;
        p[h + 1..h + 3].copy_from_slice(&0u16.to_be_bytes());
        p[h + 3..h + 5].copy_from_slice(&(cells.len() as u16).to_be_bytes());
        p[h + 7] = 0;
        if let Some(r) = right {
            p[h + 8..h + 12].copy_from_slice(&r.to_be_bytes());
        }
        for (i, c) in cells.iter().enumerate() {
            // SQLite counts a cell as at least 4 bytes; keep that room so cells never overlap.
            end -= c.len().max(4);
            p[end..end + c.len()].copy_from_slice(c);
            let at = h + hl + 2 * i;
            p[at..at + 2].copy_from_slice(&(end as u16).to_be_bytes());
        }
        let start = if end == 65536 { 0 } else { end as u16 };
        p[h + 5..h + 7].copy_from_slice(&start.to_be_bytes());
    }

    /// Room for cells in a page whose header is `hl` bytes at offset `h`.
    fn room(&self, h: usize, hl: usize) -> usize {
        self.page_size - h - hl
    }

    /// Writes a table b-tree; its root goes to `root_at` (page 1 for the schema) or a new page.
    pub fn table(&mut self, rows: &[(i64, Vec<u8>)], root_at: Option<u32>) -> u32 {
        // The root may be page 1, with 100 bytes less: every page of the tree is sized for it.
        let h = if root_at == Some(1) { 100 } else { 0 };
        let built: Vec<Built> = rows
            .iter()
            .map(|(rowid, payload)| {
                let mut pre = Vec::new();
                put_varint(&mut pre, payload.len() as u64);
                put_varint(&mut pre, *rowid as u64);
                Built {
                    bytes: self.spill(pre, payload, false),
                    rowid: *rowid,
                }
            })
            .collect();
        // Leaves: (cells, max rowid).
        let room = self.room(h, 8);
        let mut groups: Vec<(Vec<Vec<u8>>, i64)> = Vec::new();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut used = 0usize;
        let mut last = 0i64;
        for b in built {
            let need = b.bytes.len().max(4) + 2;
            if used + need > room && !cur.is_empty() {
                groups.push((std::mem::take(&mut cur), last));
                used = 0;
            }
            used += need;
            last = b.rowid;
            cur.push(b.bytes);
        }
        groups.push((cur, last));
        if groups.len() == 1 {
            let (cells, _) = groups.pop().unwrap_or_default();
            let pg = root_at.unwrap_or_else(|| self.alloc());
            self.put_page(pg, 13, &cells, None);
            return pg;
        }
        let mut level: Vec<(u32, i64)> = groups
            .into_iter()
            .map(|(cells, max)| {
                let pg = self.alloc();
                self.put_page(pg, 13, &cells, None);
                (pg, max)
            })
            .collect();
        // Interior levels: each child but the last is a cell (child, its max rowid).
        let per = (self.room(h, 12) / (4 + 9 + 2)).max(2);
        loop {
            if level.len() <= per + 1 {
                let pg = root_at.unwrap_or_else(|| self.alloc());
                self.interior_table(pg, &level);
                return pg;
            }
            // Even chunks, so no parent is left with one child and every leaf stays at the
            // same depth.
            let k = level.len().div_ceil(per + 1);
            let len = level.len();
            let mut next = Vec::new();
            for i in 0..k {
                let chunk = level
                    .get(i * len / k..(i + 1) * len / k)
                    .unwrap_or_default();
                let pg = self.alloc();
                self.interior_table(pg, chunk);
                next.push((pg, chunk.last().map(|c| c.1).unwrap_or(0)));
            }
            level = next;
        }
    }

    fn interior_table(&mut self, pg: u32, kids: &[(u32, i64)]) {
        let (last, rest) = match kids.split_last() {
            Some(x) => x,
            None => return,
        };
        let cells: Vec<Vec<u8>> = rest
            .iter()
            .map(|(child, max)| {
                let mut c = child.to_be_bytes().to_vec();
                put_varint(&mut c, *max as u64);
                c
            })
            .collect();
        self.put_page(pg, 5, &cells, Some(last.0));
    }

    /// Writes an index b-tree from records in key order; returns its root page.
    pub fn index(&mut self, records: &[&[u8]]) -> u32 {
        let cells: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                let mut pre = Vec::new();
                put_varint(&mut pre, r.len() as u64);
                self.spill(pre, r, true)
            })
            .collect();
        // Leaves split by dividers: L0 d0 L1 d1 ... Ln; a divider moves up a level.
        let room = self.room(0, 8);
        let mut leaves: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut dividers: Vec<Vec<u8>> = Vec::new();
        let mut i = 0usize;
        let n = cells.len();
        loop {
            let mut used = 0usize;
            let mut j = i;
            while j < n && used + cells[j].len().max(4) + 2 <= room {
                used += cells[j].len().max(4) + 2;
                j += 1;
            }
            if j == i && j < n {
                j += 1; // a cell always fits: its local part is capped well below a page
            }
            if j >= n {
                leaves.push(cells[i..n].to_vec());
                break;
            }
            if j + 1 == n && j - i >= 2 {
                // One cell left: it cannot be both a divider and a non-empty leaf.
                leaves.push(cells[i..j - 1].to_vec());
                dividers.push(cells[j - 1].clone());
                leaves.push(cells[j..n].to_vec());
                break;
            }
            leaves.push(cells[i..j].to_vec());
            dividers.push(cells[j].clone());
            i = j + 1;
        }
        let mut kids: Vec<u32> = leaves
            .iter()
            .map(|l| {
                let pg = self.alloc();
                self.put_page(pg, 10, l, None);
                pg
            })
            .collect();
        // Interior levels: cells (child k, divider k), the last child as the right pointer.
        let room = self.room(0, 12);
        while kids.len() > 1 {
            let mut nk = Vec::new();
            let mut nd = Vec::new();
            let mut i = 0usize;
            let n = dividers.len();
            loop {
                let mut used = 0usize;
                let mut j = i;
                while j < n && used + dividers[j].len() + 4 + 2 <= room {
                    used += dividers[j].len() + 4 + 2;
                    j += 1;
                }
                if j == i && j < n {
                    j += 1;
                }
                let page_cells = |from: usize, to: usize| -> Vec<Vec<u8>> {
                    (from..to)
                        .map(|k| {
                            let mut c = kids[k].to_be_bytes().to_vec();
                            c.extend_from_slice(&dividers[k]);
                            c
                        })
                        .collect()
                };
                if j >= n {
                    let pg = self.alloc();
                    let c = page_cells(i, n);
                    self.put_page(pg, 2, &c, Some(kids[n]));
                    nk.push(pg);
                    break;
                }
                if j + 1 == n && j - i >= 2 {
                    let pg = self.alloc();
                    let c = page_cells(i, j - 1);
                    self.put_page(pg, 2, &c, Some(kids[j - 1]));
                    nk.push(pg);
                    nd.push(dividers[j - 1].clone());
                    let pg = self.alloc();
                    let c = page_cells(j, n);
                    self.put_page(pg, 2, &c, Some(kids[n]));
                    nk.push(pg);
                    break;
                }
                let pg = self.alloc();
                let c = page_cells(i, j);
                self.put_page(pg, 2, &c, Some(kids[j]));
                nk.push(pg);
                nd.push(dividers[j].clone());
                i = j + 1;
            }
            kids = nk;
            dividers = nd;
        }
        kids.first().copied().unwrap_or_else(|| {
            let pg = self.alloc();
            self.put_page(pg, 10, &[], None);
            pg
        })
    }

    /// The finished file: `header` (from the source) with the page count and free list reset.
    pub fn finish(self, header: &[u8; 100]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pages.len() * self.page_size);
        for p in &self.pages {
            out.extend_from_slice(p);
        }
        let mut h = *header;
        let bump = |h: &mut [u8; 100], off: usize| {
            let v = u32::from_be_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
            h[off..off + 4].copy_from_slice(&v.wrapping_add(1).to_be_bytes());
        };
        bump(&mut h, 24);
        let counter = [h[24], h[25], h[26], h[27]];
        h[92..96].copy_from_slice(&counter);
        h[28..32].copy_from_slice(&(self.pages.len() as u32).to_be_bytes());
        // No free pages, and no auto-vacuum pointer map in a file written in one go.
        h[32..40].fill(0);
        h[52..56].fill(0);
        h[64..68].fill(0);
        bump(&mut h, 40);
        out[..100].copy_from_slice(&h);
        out
    }
}

/// Encodes a schema row with a new root page.
pub fn schema_record(values: &[super::sqlite::Value], root: u32) -> Vec<u8> {
    let mut v = values.to_vec();
    if let Some(slot) = v.get_mut(3) {
        *slot = super::sqlite::Value::Int(i64::from(root));
    }
    encode_record(&v)
}

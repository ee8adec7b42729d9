//! A small read-only SQLite reader, enough for rpm's `rpmdb.sqlite`: the 100-byte header, the
//! `sqlite_schema` table, table and index b-tree walks (in key order), overflow chains and the
//! record format. Only what a well-formed database written by SQLite 3 needs; no WAL replay
//! (the caller refuses a database with a non-empty `-wal` beside it).
//!
//! Written here rather than taken from a crate: rusqlite bundles the C library (slow to build on
//! our 2 cores) and links C into decant for a read of one file; the pure-Rust readers found
//! are unmaintained. The input is hostile: every page number is checked against the page
//! count, every page is visited at most once per walk (a cycle is an error, not a loop), and
//! payload sizes are capped by the file size.

use std::fmt;

/// Why the file could not be read. One line: the file, where, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {what}")]
pub struct SqliteError {
    pub file: String,
    pub what: String,
}

/// One value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Text(b) | Value::Blob(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) => write!(f, "{:?}", String::from_utf8_lossy(t)),
            Value::Blob(b) => write!(f, "blob of {} bytes", b.len()),
        }
    }
}

/// One row of `sqlite_schema`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRow {
    pub rowid: i64,
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub rootpage: u32,
    pub sql: Option<String>,
    /// The record as stored (re-encoded with a new rootpage by the writer).
    pub values: Vec<Value>,
}

/// One entry of a b-tree: a table row (rowid and record) or an index record (rowid `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub rowid: Option<i64>,
    pub payload: Vec<u8>,
}

/// An open database (the whole file in memory).
#[derive(Debug)]
pub struct Db<'a> {
    file: String,
    data: &'a [u8],
    pub page_size: usize,
    pub pages: u32,
    /// The 100-byte header, for the writer to start from.
    pub header: [u8; 100],
}

/// Reads a big-endian integer of `n` bytes at `off`.
fn be(data: &[u8], off: usize, n: usize) -> Option<u64> {
    let b = data.get(off..off.checked_add(n)?)?;
    Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

/// A varint at `off`: (value, length).
pub fn varint(data: &[u8], off: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *data.get(off.checked_add(i)?)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(b), 9));
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Decodes a record into its values.
pub fn decode_record(rec: &[u8]) -> Result<Vec<Value>, String> {
    let (hs, n) = varint(rec, 0).ok_or("record header size is cut off")?;
    let hs = usize::try_from(hs).map_err(|_| "absurd record header size")?;
    if hs > rec.len() || hs < n {
        return Err(format!(
            "record header of {hs} bytes in a record of {} bytes",
            rec.len()
        ));
    }
    let mut types = Vec::new();
    let mut p = n;
    while p < hs {
        let (t, l) = varint(rec, p).ok_or("record header is cut off")?;
        types.push(t);
        p += l;
    }
    let mut body = hs;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let len: usize = match t {
            0 | 8 | 9 => 0,
            1..=4 => t as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return Err(format!("reserved serial type {t}")),
            _ => usize::try_from((t - 12) / 2).map_err(|_| "absurd value size")?,
        };
        let end = body
            .checked_add(len)
            .filter(|&e| e <= rec.len())
            .ok_or_else(|| format!("value of {len} bytes runs past the record's end"))?;
        let b = rec.get(body..end).unwrap_or_default();
        let v = match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                let u = b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
                let shift = 64 - 8 * len as u32;
                // Sign-extend from the stored width.
                Value::Int(((u << shift) as i64) >> shift)
            }
            7 => Value::Real(f64::from_bits(
                b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
            )),
            _ if t % 2 == 0 => Value::Blob(b.to_vec()),
            _ => Value::Text(b.to_vec()),
        };
        out.push(v);
        body = end;
    }
    Ok(out)
}

/// Encodes values as a record (the writer's half of `decode_record`).
pub fn encode_record(values: &[Value]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut body = Vec::new();
    for v in values {
        match v {
            Value::Null => put_varint(&mut types, 0),
            Value::Int(0) => put_varint(&mut types, 8),
            Value::Int(1) => put_varint(&mut types, 9),
            Value::Int(i) => {
                let (t, n) = match *i {
                    -128..=127 => (1, 1),
                    -32768..=32767 => (2, 2),
                    -8_388_608..=8_388_607 => (3, 3),
                    -2_147_483_648..=2_147_483_647 => (4, 4),
                    -140_737_488_355_328..=140_737_488_355_327 => (5, 6),
                    _ => (6, 8),
                };
                put_varint(&mut types, t);
                body.extend_from_slice(&i.to_be_bytes()[8 - n..]);
            }
            Value::Real(r) => {
                put_varint(&mut types, 7);
                body.extend_from_slice(&r.to_bits().to_be_bytes());
            }
            Value::Text(t) => {
                put_varint(&mut types, 13 + 2 * t.len() as u64);
                body.extend_from_slice(t);
            }
            Value::Blob(b) => {
                put_varint(&mut types, 12 + 2 * b.len() as u64);
                body.extend_from_slice(b);
            }
        }
    }
    // The header size counts itself; one byte unless the header is long.
    let mut hs = types.len() + 1;
    let mut tmp = Vec::new();
    put_varint(&mut tmp, hs as u64);
    if tmp.len() > 1 {
        hs = types.len() + tmp.len();
        tmp.clear();
        put_varint(&mut tmp, hs as u64);
    }
    let mut out = tmp;
    out.extend_from_slice(&types);
    out.extend_from_slice(&body);
    out
}

/// Appends `v` as a SQLite varint.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v > 0x00ff_ffff_ffff_ffff {
        // Nine bytes: eight of seven bits, then a full byte.
        let mut b = [0u8; 9];
        b[8] = v as u8;
        let mut x = v >> 8;
        for i in (0..8).rev() {
            b[i] = (x as u8 & 0x7f) | 0x80;
            x >>= 7;
        }
        out.extend_from_slice(&b);
        return;
    }
    let mut b = Vec::with_capacity(9);
    let mut x = v;
    loop {
        b.push((x & 0x7f) as u8);
        x >>= 7;
        if x == 0 {
            break;
        }
    }
    b.reverse();
    let n = b.len();
    for (i, byte) in b.iter_mut().enumerate() {
        if i + 1 < n {
            *byte |= 0x80;
        }
    }
    out.extend_from_slice(&b);
}

/// How much of a payload of `p` bytes stays in the cell, for usable size `u`.
pub fn local_size(p: usize, u: usize, index: bool) -> usize {
    let x = if index {
        (u - 12) * 64 / 255 - 23
    } else {
        u - 35
    };
    if p <= x {
        return p;
    }
    let m = (u - 12) * 32 / 255 - 23;
    let k = m + (p - m) % (u - 4);
    if k <= x {
        k
    } else {
        m
    }
}

enum Task {
    Page(u32),
    Emit(Cell),
}

impl<'a> Db<'a> {
    /// Checks the header of `data` (the contents of `file`).
    pub fn open(file: &str, data: &'a [u8]) -> Result<Db<'a>, SqliteError> {
        let err = |what: String| SqliteError {
            file: file.to_string(),
            what,
        };
        let head = data.get(..100).ok_or_else(|| {
            err(format!(
                "header: file of {} bytes is shorter than the 100-byte header",
                data.len()
            ))
        })?;
        if head.get(..16) != Some(b"SQLite format 3\0".as_slice()) {
            return Err(err(
                "header at offset 0: not an SQLite 3 database (bad magic)".into(),
            ));
        }
        let ps = be(head, 16, 2).unwrap_or(0);
        let page_size = if ps == 1 { 65536 } else { ps as usize };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(err(format!("header at offset 16: bad page size {ps}")));
        }
        if head.get(20) != Some(&0) {
            return Err(err(
                "header at offset 20: reserved bytes per page are not supported".into(),
            ));
        }
        if be(head, 56, 4) != Some(1) {
            return Err(err(
                "header at offset 56: text encoding is not UTF-8 (rpm writes UTF-8)".into(),
            ));
        }
        let by_len = data.len() / page_size;
        let in_header = be(head, 28, 4).unwrap_or(0) as usize;
        let valid = be(head, 24, 4) == be(head, 92, 4) && in_header > 0;
        let pages = if valid { in_header.min(by_len) } else { by_len };
        let pages =
            u32::try_from(pages).map_err(|_| err(format!("header: {pages} pages is absurd")))?;
        if pages == 0 {
            return Err(err("header: the file holds no whole page".into()));
        }
        let mut header = [0u8; 100];
        header.copy_from_slice(head);
        Ok(Db {
            file: file.to_string(),
            data,
            page_size,
            pages,
            header,
        })
    }

    fn err(&self, pgno: u32, what: String) -> SqliteError {
        SqliteError {
            file: self.file.clone(),
            what: format!(
                "page {pgno} (offset {}): {what}",
                (pgno as u64).saturating_sub(1) * self.page_size as u64
            ),
        }
    }

    fn page(&self, pgno: u32) -> Result<&'a [u8], SqliteError> {
        if pgno == 0 || pgno > self.pages {
            return Err(SqliteError {
                file: self.file.clone(),
                what: format!(
                    "page number {pgno} is outside the file's {} pages",
                    self.pages
                ),
            });
        }
        let off = (pgno as usize - 1) * self.page_size;
        self.data
            .get(off..off + self.page_size)
            .ok_or_else(|| self.err(pgno, "past the end of the file".into()))
    }

    /// The payload of a cell whose payload size field is at `off` of page `pgno`; returns
    /// (payload, bytes of the cell before the payload) after reading any overflow chain.
    fn payload(
        &self,
        pgno: u32,
        page: &[u8],
        off: usize,
        index: bool,
        seen: &mut [bool],
    ) -> Result<(Vec<u8>, Option<i64>), SqliteError> {
        let (p, n) = varint(page, off).ok_or_else(|| self.err(pgno, "cell cut off".into()))?;
        let mut at = off + n;
        let mut rowid = None;
        if !index {
            let (r, n2) =
                varint(page, at).ok_or_else(|| self.err(pgno, "cell rowid cut off".into()))?;
            rowid = Some(r as i64);
            at += n2;
        }
        let p = usize::try_from(p)
            .ok()
            .filter(|&p| p <= self.data.len())
            .ok_or_else(|| {
                self.err(
                    pgno,
                    format!("payload of {p} bytes is larger than the file"),
                )
            })?;
        let local = local_size(p, self.page_size, index);
        let mut out = Vec::with_capacity(p);
        out.extend_from_slice(
            page.get(at..at + local)
                .ok_or_else(|| self.err(pgno, format!("cell at {off} runs past the page")))?,
        );
        if local < p {
            let mut next = be(page, at + local, 4)
                .ok_or_else(|| self.err(pgno, "overflow pointer cut off".into()))?
                as u32;
            while out.len() < p {
                let ov = self.page(next).map_err(|e| self.err(pgno, e.what))?;
                let slot = seen
                    .get_mut(next as usize)
                    .ok_or_else(|| self.err(pgno, format!("overflow page {next} out of range")))?;
                if *slot {
                    return Err(self.err(
                        next,
                        "overflow page reached twice (a cycle or a shared page)".into(),
                    ));
                }
                *slot = true;
                let take = (p - out.len()).min(self.page_size - 4);
                out.extend_from_slice(ov.get(4..4 + take).unwrap_or_default());
                next = be(ov, 0, 4).unwrap_or(0) as u32;
            }
        }
        Ok((out, rowid))
    }

    /// Every entry of the b-tree rooted at `root`, in key order.
    pub fn walk(&self, root: u32) -> Result<Vec<Cell>, SqliteError> {
        let mut seen = vec![false; self.pages as usize + 1];
        let mut out = Vec::new();
        let mut stack = vec![Task::Page(root)];
        while let Some(t) = stack.pop() {
            let pgno = match t {
                Task::Emit(c) => {
                    out.push(c);
                    continue;
                }
                Task::Page(p) => p,
            };
            let page = self.page(pgno)?;
            let slot = seen
                .get_mut(pgno as usize)
                .ok_or_else(|| self.err(pgno, "out of range".into()))?;
            if *slot {
                return Err(self.err(
                    pgno,
                    "b-tree page reached twice (a cycle or a shared page)".into(),
                ));
            }
            *slot = true;
            let h = if pgno == 1 { 100 } else { 0 };
            let kind = *page
                .get(h)
                .ok_or_else(|| self.err(pgno, "page header cut off".into()))?;
            let (interior, index) = match kind {
                2 => (true, true),
                5 => (true, false),
                10 => (false, true),
                13 => (false, false),
                k => return Err(self.err(pgno, format!("unknown b-tree page type {k}"))),
            };
            let ncell = be(page, h + 3, 2).unwrap_or(0) as usize;
            let ptrs = h + if interior { 12 } else { 8 };
            if ptrs + 2 * ncell > self.page_size {
                return Err(self.err(pgno, format!("{ncell} cells do not fit in the page")));
            }
            let mut tasks = Vec::with_capacity(ncell * 2 + 1);
            for i in 0..ncell {
                let off = be(page, ptrs + 2 * i, 2).unwrap_or(0) as usize;
                if off < ptrs + 2 * ncell || off >= self.page_size {
                    return Err(self.err(pgno, format!("cell {i} at bad offset {off}")));
                }
                let (off, child) = if interior {
                    let c = be(page, off, 4)
                        .ok_or_else(|| self.err(pgno, "child pointer cut off".into()))?
                        as u32;
                    (off + 4, Some(c))
                } else {
                    (off, None)
                };
                if let Some(c) = child {
                    tasks.push(Task::Page(c));
                }
                if interior && !index {
                    // A table's interior cells only route; the rows are in the leaves.
                    continue;
                }
                let (payload, rowid) = self.payload(pgno, page, off, index, &mut seen)?;
                tasks.push(Task::Emit(Cell { rowid, payload }));
            }
            if interior {
                let right = be(page, h + 8, 4).unwrap_or(0) as u32;
                tasks.push(Task::Page(right));
            }
            if stack.len() + tasks.len() > 4 * self.pages as usize + 16 {
                return Err(self.err(pgno, "b-tree larger than the file".into()));
            }
            stack.extend(tasks.into_iter().rev());
        }
        Ok(out)
    }

    /// The rows of `sqlite_schema`.
    pub fn schema(&self) -> Result<Vec<SchemaRow>, SqliteError> {
        let mut out = Vec::new();
        for c in self.walk(1)? {
            let rowid = c.rowid.unwrap_or(0);
            let v = decode_record(&c.payload)
                .map_err(|w| self.err(1, format!("schema row {rowid}: {w}")))?;
            let text = |i: usize| {
                v.get(i)
                    .and_then(Value::as_bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            };
            let root = v.get(3).and_then(Value::as_int).unwrap_or(0);
            let rootpage = u32::try_from(root)
                .ok()
                .filter(|&r| r <= self.pages)
                .ok_or_else(|| {
                    self.err(
                        1,
                        format!("schema row {rowid}: root page {root} is outside the file"),
                    )
                })?;
            out.push(SchemaRow {
                rowid,
                kind: text(0).unwrap_or_default(),
                name: text(1).unwrap_or_default(),
                tbl_name: text(2).unwrap_or_default(),
                rootpage,
                sql: text(4),
                values: v,
            });
        }
        Ok(out)
    }

    /// The file name, for messages.
    pub fn file(&self) -> &str {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            240,
            16383,
            16384,
            1 << 35,
            0x00ff_ffff_ffff_ffff,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(varint(&b, 0), Some((v, b.len())), "{v}");
        }
    }

    #[test]
    fn records_round_trip() {
        let vals = vec![
            Value::Null,
            Value::Int(0),
            Value::Int(1),
            Value::Int(-2),
            Value::Int(300),
            Value::Int(1 << 40),
            Value::Int(i64::MIN),
            Value::Real(1.5),
            Value::Text(b"hello".to_vec()),
            Value::Blob(vec![0; 70]),
        ];
        assert_eq!(decode_record(&encode_record(&vals)).unwrap(), vals);
    }

    #[test]
    fn hostile_records_give_errors() {
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[5, 1]).is_err());
        assert!(decode_record(&[2, 10]).is_err());
        assert!(decode_record(&[2, 0x7f]).is_err());
    }

    #[test]
    fn short_or_foreign_files_are_refused() {
        assert!(Db::open("x", b"short")
            .unwrap_err()
            .to_string()
            .contains("x: header"));
        let mut f = vec![0u8; 4096];
        assert!(Db::open("x", &f)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        f[..16].copy_from_slice(b"SQLite format 3\0");
        f[16] = 0x03;
        assert!(Db::open("x", &f)
            .unwrap_err()
            .to_string()
            .contains("page size"));
    }
}

//! The rpm header as rpmdb stores it (one blob per installed package): the intro (index
//! entry count and data length, big-endian u32 each), the index (16 bytes per entry: tag,
//! type, offset, count) and the data store. The package-file magic is not part of a stored
//! header. Regions (tags 61-63) are not interpreted: tags are looked up in the whole index,
//! which also finds the entries rpm appended after install (INSTALLTIME and the like).
//!
//! Written here rather than linked from librpm: decant must not need rpm to read an image.
//! Limits follow rpm's own sanity checks (at most 65535 entries, 256 MiB of data).

use std::collections::HashMap;

/// rpm's header tags we read (checked against `rpm --querytags` of rpm 4.18).
pub mod tag {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const SIZE: u32 = 1009;
    pub const ARCH: u32 = 1022;
    pub const OLDFILENAMES: u32 = 1027;
    pub const FILESIZES: u32 = 1028;
    pub const FILEMODES: u32 = 1030;
    pub const FILEFLAGS: u32 = 1037;
    pub const PROVIDENAME: u32 = 1047;
    pub const REQUIREFLAGS: u32 = 1048;
    pub const REQUIRENAME: u32 = 1049;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const LONGFILESIZES: u32 = 5008;
    pub const LONGSIZE: u32 = 5009;
}

/// Most index entries (rpm's hdrchkTags).
pub const MAX_ENTRIES: usize = 0xffff;
/// Most data bytes (rpm's hdrchkData).
pub const MAX_DATA: usize = 256 << 20;

const T_CHAR: u32 = 1;
const T_INT8: u32 = 2;
const T_INT16: u32 = 3;
const T_INT32: u32 = 4;
const T_INT64: u32 = 5;
const T_STRING: u32 = 6;
const T_BIN: u32 = 7;
const T_STRING_ARRAY: u32 = 8;
const T_I18NSTRING: u32 = 9;

/// One tag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    Ints(Vec<u64>),
    Strings(Vec<Vec<u8>>),
    Bin(Vec<u8>),
}

/// A parsed header: tag → value.
#[derive(Debug, Clone, Default)]
pub struct Header {
    tags: HashMap<u32, TagValue>,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl Header {
    /// Parses a stored header blob; the error is the structure, the offset and the fault.
    pub fn parse(blob: &[u8]) -> Result<Header, String> {
        let il = be32(blob, 0).ok_or("header intro cut off")? as usize;
        let dl = be32(blob, 4).ok_or("header intro cut off")? as usize;
        if il == 0 || il > MAX_ENTRIES {
            return Err(format!(
                "header intro: {il} index entries (1..{MAX_ENTRIES})"
            ));
        }
        if dl > MAX_DATA {
            return Err(format!("header intro: {dl} data bytes (most {MAX_DATA})"));
        }
        let store_at = 8 + il * 16;
        let store = blob.get(store_at..store_at + dl).ok_or_else(|| {
            format!(
                "header of {} bytes is shorter than its {il} entries and {dl} data bytes",
                blob.len()
            )
        })?;
        let mut tags = HashMap::new();
        for i in 0..il {
            let e = 8 + i * 16;
            let (Some(t), Some(ty), Some(off), Some(count)) = (
                be32(blob, e),
                be32(blob, e + 4),
                be32(blob, e + 8),
                be32(blob, e + 12),
            ) else {
                return Err(format!("header index entry {i} at offset {e} cut off"));
            };
            let off = off as usize;
            let count = count as usize;
            let bad = |why: &str| format!("header index entry {i} (tag {t}) at offset {e}: {why}");
            if off > dl {
                return Err(bad(&format!("data offset {off} past the {dl}-byte store")));
            }
            let data = store.get(off..).unwrap_or_default();
            let ints = |w: usize| -> Result<TagValue, String> {
                let n = count
                    .checked_mul(w)
                    .filter(|&n| n <= data.len())
                    .ok_or_else(|| {
                        bad(&format!("{count} values of {w} bytes run past the store"))
                    })?;
                Ok(TagValue::Ints(
                    data.get(..n)
                        .unwrap_or_default()
                        .chunks_exact(w)
                        .map(|c| c.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
                        .collect(),
                ))
            };
            let v = match ty {
                T_CHAR | T_INT8 => ints(1)?,
                T_INT16 => ints(2)?,
                T_INT32 => ints(4)?,
                T_INT64 => ints(8)?,
                T_BIN => TagValue::Bin(
                    data.get(..count)
                        .ok_or_else(|| bad(&format!("{count} bytes run past the store")))?
                        .to_vec(),
                ),
                T_STRING | T_STRING_ARRAY | T_I18NSTRING => {
                    let n = if ty == T_STRING { 1 } else { count };
                    if n > data.len() {
                        return Err(bad(&format!("{n} strings cannot fit in the store")));
                    }
                    let mut out = Vec::with_capacity(n);
                    let mut rest = data;
                    for _ in 0..n {
                        let z = rest
                            .iter()
                            .position(|&b| b == 0)
                            .ok_or_else(|| bad("string without its NUL"))?;
                        out.push(rest.get(..z).unwrap_or_default().to_vec());
                        rest = rest.get(z + 1..).unwrap_or_default();
                    }
                    TagValue::Strings(out)
                }
                // NULL and unknown types carry nothing we read.
                _ => continue,
            };
            tags.insert(t, v);
        }
        Ok(Header { tags })
    }

    pub fn get(&self, t: u32) -> Option<&TagValue> {
        self.tags.get(&t)
    }

    /// The first string of a tag.
    pub fn string(&self, t: u32) -> Option<String> {
        match self.tags.get(&t)? {
            TagValue::Strings(s) => s.first().map(|b| String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn strings(&self, t: u32) -> &[Vec<u8>] {
        match self.tags.get(&t) {
            Some(TagValue::Strings(s)) => s,
            _ => &[],
        }
    }

    pub fn ints(&self, t: u32) -> &[u64] {
        match self.tags.get(&t) {
            Some(TagValue::Ints(v)) => v,
            _ => &[],
        }
    }

    /// The file paths: BASENAMES joined to DIRNAMES through DIRINDEXES, or OLDFILENAMES.
    pub fn file_names(&self) -> Result<Vec<Vec<u8>>, String> {
        let base = self.strings(tag::BASENAMES);
        if base.is_empty() {
            return Ok(self.strings(tag::OLDFILENAMES).to_vec());
        }
        let dirs = self.strings(tag::DIRNAMES);
        let idx = self.ints(tag::DIRINDEXES);
        if idx.len() != base.len() {
            return Err(format!(
                "{} BASENAMES but {} DIRINDEXES",
                base.len(),
                idx.len()
            ));
        }
        base.iter()
            .zip(idx)
            .map(|(b, &i)| {
                let d = dirs
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .ok_or_else(|| {
                        format!("DIRINDEXES value {i} past the {} DIRNAMES", dirs.len())
                    })?;
                let mut p = d.clone();
                p.extend_from_slice(b);
                Ok(p)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with NAME, REQUIREFLAGS and BASENAMES/DIRNAMES/DIRINDEXES.
    fn sample() -> Vec<u8> {
        let mut store = Vec::new();
        let mut index = Vec::new();
        let mut add = |t: u32, ty: u32, count: u32, data: &[u8], align: usize| {
            while store.len() % align != 0 {
                store.push(0);
            }
            for v in [t, ty, store.len() as u32, count] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            store.extend_from_slice(data);
        };
        add(tag::NAME, T_STRING, 1, b"pkg\0", 1);
        add(tag::REQUIREFLAGS, T_INT32, 2, &[0, 0, 0, 8, 1, 0, 0, 0], 4);
        add(tag::BASENAMES, T_STRING_ARRAY, 2, b"a\0b\0", 1);
        add(tag::DIRNAMES, T_STRING_ARRAY, 2, b"/x/\0/y/\0", 1);
        add(tag::DIRINDEXES, T_INT32, 2, &[0, 0, 0, 1, 0, 0, 0, 0], 4);
        let mut out = Vec::new();
        out.extend_from_slice(&5u32.to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&store);
        out
    }

    #[test]
    fn parses_tags_and_file_names() {
        let h = Header::parse(&sample()).unwrap();
        assert_eq!(h.string(tag::NAME).as_deref(), Some("pkg"));
        assert_eq!(h.ints(tag::REQUIREFLAGS), &[8, 1 << 24]);
        assert_eq!(
            h.file_names().unwrap(),
            vec![b"/y/a".to_vec(), b"/x/b".to_vec()]
        );
    }

    #[test]
    fn every_truncation_and_many_flips_give_errors_not_panics() {
        let s = sample();
        for n in 0..s.len() {
            let _ = Header::parse(&s[..n]);
        }
        assert!(Header::parse(&s[..s.len() - 1]).is_err());
        for i in 0..s.len() {
            for bit in [0x01u8, 0x80] {
                let mut d = s.clone();
                d[i] ^= bit;
                if let Ok(h) = Header::parse(&d) {
                    let _ = h.file_names();
                }
            }
        }
        let mut d = s.clone();
        d[0..4].copy_from_slice(&0x10000u32.to_be_bytes());
        assert!(Header::parse(&d).unwrap_err().contains("index entries"));
    }
}

//! LVM2: physical volume labels, metadata areas (the copy with the newest seqno wins), the text
//! metadata, and linear logical volumes mapped onto their physical volumes. Thin, RAID, mirror,
//! snapshot, striped and other LVs are listed under the names `lvs` shows but never read, so
//! asking for one gets "not supported" rather than "no such volume".
//!
//! Our own reader: the `lvm2` crate returns wrong data for LVs of more than one segment and reads
//! only the first metadata area of a single PV. There is no device-mapper on the machines we run
//! on, so reading the on-disk format in user space is the only way to an LV's bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::block::BlockSource;
use crate::volume::{read_bytes, ConcatSource, Volume, VolumeError};

const SECTOR: u64 = 512;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Largest metadata text we read (real ones are a few KiB; the area is usually 1 MiB).
const MAX_METADATA: u64 = 16 << 20;
/// Deepest section nesting the parser follows (real metadata nests 4 deep).
const MAX_DEPTH: usize = 32;
/// Segments per LV, and stripes-list entries, we accept.
const MAX_SEGMENTS: usize = 1 << 16;
/// Metadata areas per PV (LVM writes at most 2).
const MAX_AREAS: usize = 8;
/// The LVM type GUID in a GPT, and the MBR type byte.
const GPT_LVM: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
const MBR_LVM: &str = "0x8e";

/// LVM's CRC: the CRC-32 polynomial, reflected, seeded with `INITIAL_CRC`, no final inversion.
fn lvm_crc(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// A value in LVM's text metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<Value>),
    Section(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn items(&self) -> &[(String, Value)] {
        match self {
            Value::Section(items) => items,
            _ => &[],
        }
    }
    fn has_flag(&self, key: &str, flag: &str) -> bool {
        match self.get(key) {
            Some(Value::List(l)) => l.iter().any(|v| *v == Value::Str(flag.into())),
            _ => false,
        }
    }
}

/// Parses LVM text metadata (`name { ... }` sections, `key = value`, `#` comments) into a
/// top-level section. `Err` is (byte offset, problem).
pub fn parse_metadata(text: &[u8]) -> Result<Value, (usize, String)> {
    let mut p = Parser { t: text, i: 0 };
    let items = p.items(0)?;
    p.skip_space();
    if p.i < p.t.len() {
        return Err((p.i, "unexpected '}'".into()));
    }
    Ok(Value::Section(items))
}

struct Parser<'a> {
    t: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.t.get(self.i).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.i += 1;
                }
            } else if c.is_ascii_whitespace() || c == 0 {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<String, (usize, String)> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_.-+".contains(&c))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err((
                self.i,
                format!("expected a name, found {:?}", self.peek().map(char::from)),
            ));
        }
        Ok(String::from_utf8_lossy(&self.t[start..self.i]).into_owned())
    }

    fn items(&mut self, depth: usize) -> Result<Vec<(String, Value)>, (usize, String)> {
        if depth > MAX_DEPTH {
            return Err((self.i, format!("sections nest deeper than {MAX_DEPTH}")));
        }
        let mut out = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some(b'}') => return Ok(out),
                _ => {}
            }
            let key = self.ident()?;
            self.skip_space();
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    let inner = self.items(depth + 1)?;
                    self.skip_space();
                    if self.peek() != Some(b'}') {
                        return Err((self.i, format!("section {key} is not closed")));
                    }
                    self.i += 1;
                    out.push((key, Value::Section(inner)));
                }
                Some(b'=') => {
                    self.i += 1;
                    self.skip_space();
                    let v = self.value(true)?;
                    out.push((key, v));
                }
                _ => return Err((self.i, format!("expected '=' or '{{' after {key}"))),
            }
        }
    }

    fn value(&mut self, list_ok: bool) -> Result<Value, (usize, String)> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err((self.i, "unterminated string".into())),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            self.i += 1;
                            if let Some(c) = self.peek() {
                                s.push(c);
                            }
                        }
                        Some(c) => s.push(c),
                    }
                    self.i += 1;
                }
                self.i += 1;
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') if list_ok => {
                self.i += 1;
                let mut l = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::List(l));
                    }
                    if l.len() >= MAX_SEGMENTS {
                        return Err((self.i, "list too long".into()));
                    }
                    l.push(self.value(false)?);
                    self.skip_space();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {}
                        _ => return Err((self.i, "expected ',' or ']' in a list".into())),
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                    self.i += 1;
                }
                let s = String::from_utf8_lossy(&self.t[start..self.i]).into_owned();
                // Floats exist in the format but not in anything we read; keep them as 0.
                Ok(Value::Int(s.parse::<i64>().unwrap_or(0)))
            }
            other => Err((
                self.i,
                format!("expected a value, found {:?}", other.map(char::from)),
            )),
        }
    }
}

/// A physical volume found on one of the disk's volumes.
struct Pv {
    /// Position in the input list of volumes.
    slot: usize,
    uuid: String,
    /// Newest metadata readable on this PV: (seqno, VG name, VG section).
    metadata: Option<(i64, String, Value)>,
}

/// Reads the LVM label of `vol`, if it has one.
fn read_pv(vol: &Volume, slot: usize, notes: &mut Vec<String>) -> Result<Option<Pv>, VolumeError> {
    let src = &*vol.source;
    let name = src.name();
    if src.len() < 4 * SECTOR {
        return Ok(None);
    }
    let mut head = vec![0u8; 4 * SECTOR as usize];
    read_bytes(src, 0, &mut head, "LVM label")?;
    let Some(s) = (0..4).find(|&s| head[s * 512..s * 512 + 8] == *LABEL_ID) else {
        return Ok(None);
    };
    let label = &head[s * 512..(s + 1) * 512];
    let at = s as u64 * SECTOR;
    let stored = u32_at(label, 16);
    let computed = lvm_crc(INITIAL_CRC, &label[20..]);
    if stored != computed {
        return Err(VolumeError::corrupt(
            name,
            "LVM label",
            at,
            format!("CRC {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    if label[24..32] != *LABEL_TYPE {
        return Err(VolumeError::Unsupported {
            device: name.into(),
            what: format!(
                "LVM label type {:?} at offset {at}",
                String::from_utf8_lossy(&label[24..32])
            ),
        });
    }
    let off = u32_at(label, 20) as usize;
    if !(32..=512 - 40).contains(&off) {
        return Err(VolumeError::corrupt(
            name,
            "LVM label",
            at,
            format!("PV header offset {off}"),
        ));
    }
    let pvh = &label[off..];
    let uuid = String::from_utf8_lossy(&pvh[..32]).into_owned();
    // Two zero-terminated lists of {offset, size}: data areas, then metadata areas.
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut p = 40;
    for list in &mut lists {
        loop {
            let (o, sz) = (u64_at(pvh, p), u64_at(pvh, p + 8));
            if p + 16 > pvh.len() || list.len() > MAX_AREAS {
                return Err(VolumeError::corrupt(
                    name,
                    "LVM PV header",
                    at + off as u64,
                    "area list does not end",
                ));
            }
            p += 16;
            if o == 0 {
                break;
            }
            list.push((o, sz));
        }
    }
    let mut best: Option<(i64, String, Value)> = None;
    for &(mda, size) in &lists[1] {
        match read_mda(src, mda, size) {
            Ok(Some(m)) => {
                if best.as_ref().is_none_or(|b| m.0 > b.0) {
                    best = Some(m);
                }
            }
            Ok(None) => {}
            Err(e) => notes.push(format!("LVM metadata copy skipped: {e}")),
        }
    }
    if best.is_none() {
        notes.push(format!(
            "{name}: LVM physical volume {uuid} has no readable metadata"
        ));
    }
    Ok(Some(Pv {
        slot,
        uuid,
        metadata: best,
    }))
}

/// Reads the metadata in the area at `mda` (`size` bytes); `None` when the area holds none.
fn read_mda(
    src: &dyn BlockSource,
    mda: u64,
    size: u64,
) -> Result<Option<(i64, String, Value)>, VolumeError> {
    let name = src.name();
    let mut h = [0u8; 512];
    read_bytes(src, mda, &mut h, "LVM metadata area header")?;
    let stored = u32_at(&h, 0);
    let computed = lvm_crc(INITIAL_CRC, &h[4..]);
    if stored != computed {
        return Err(VolumeError::corrupt(
            name,
            "LVM metadata area header",
            mda,
            format!("CRC {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    if h[4..20] != *MDA_MAGIC {
        return Err(VolumeError::corrupt(
            name,
            "LVM metadata area header",
            mda,
            "bad magic",
        ));
    }
    let area = u64_at(&h, 32).min(size);
    let (off, len, sum, flags) = (
        u64_at(&h, 40),
        u64_at(&h, 48),
        u32_at(&h, 56),
        u32_at(&h, 60),
    );
    if off == 0 || len == 0 || flags & 1 != 0 {
        return Ok(None);
    }
    if len > MAX_METADATA || len > area || off >= area || off < 512 {
        return Err(VolumeError::corrupt(
            name,
            "LVM metadata location",
            mda + 40,
            format!("{len} bytes at {off} in a {area}-byte area"),
        ));
    }
    // The area is a ring after its 512-byte header: the text may wrap to just after the header.
    let first = len.min(area - off);
    let mut text = vec![0u8; len as usize];
    let (a, b) = text.split_at_mut(first as usize);
    read_bytes(src, mda + off, a, "LVM metadata")?;
    if !b.is_empty() {
        if b.len() as u64 > area - 512 {
            return Err(VolumeError::corrupt(
                name,
                "LVM metadata location",
                mda + 40,
                "wrapped text overlaps itself",
            ));
        }
        read_bytes(src, mda + 512, b, "LVM metadata")?;
    }
    let computed = lvm_crc(INITIAL_CRC, &text);
    if computed != sum {
        return Err(VolumeError::corrupt(
            name,
            "LVM metadata",
            mda + off,
            format!("CRC {sum:#010x}, computed {computed:#010x}"),
        ));
    }
    let root = parse_metadata(&text).map_err(|(at, p)| {
        VolumeError::corrupt(name, "LVM metadata text", mda + off + at as u64, p)
    })?;
    let Some((vg, section)) = root
        .items()
        .iter()
        .find(|(_, v)| matches!(v, Value::Section(_)))
    else {
        return Err(VolumeError::corrupt(
            name,
            "LVM metadata text",
            mda + off,
            "no volume group section",
        ));
    };
    let seqno = section.int("seqno").unwrap_or(0);
    Ok(Some((seqno, vg.clone(), section.clone())))
}

fn strip(uuid: &str) -> String {
    uuid.chars().filter(|&c| c != '-').collect()
}

/// Replaces every LVM physical volume in `parts` with the logical volumes of its volume group.
/// Visible linear LVs are readable volumes. LVs this reader cannot map (thin, RAID, mirror,
/// snapshot, striped, cache, ...) are listed too, as volumes with an empty source and
/// `part_type` set to their segment type, so the user sees them and asking for one gets a
/// clear "not supported" (see [`unsupported_reason`]). LVs on a missing PV are skipped with a
/// note, so the other LVs (usually the root) still open.
pub fn expand(parts: Vec<Volume>, notes: &mut Vec<String>) -> Result<Vec<Volume>, VolumeError> {
    let mut pvs = Vec::new();
    for (slot, vol) in parts.iter().enumerate() {
        match read_pv(vol, slot, notes)? {
            Some(pv) => pvs.push(pv),
            None if vol.part_type == MBR_LVM || vol.part_type == GPT_LVM => notes.push(format!(
                "{}: partition type is Linux LVM but there is no LVM label",
                vol.source.name()
            )),
            None => {}
        }
    }
    if pvs.is_empty() {
        return Ok(parts);
    }
    // The newest metadata of each VG across its PVs.
    let mut vgs: BTreeMap<String, (i64, Value, usize)> = BTreeMap::new();
    for pv in &pvs {
        if let Some((seq, vg, section)) = &pv.metadata {
            let e = vgs
                .entry(vg.clone())
                .or_insert((*seq, section.clone(), pv.slot));
            if *seq > e.0 {
                e.0 = *seq;
                e.1 = section.clone();
            }
            e.2 = e.2.min(pv.slot);
        }
    }
    let mut lvs_at: BTreeMap<usize, Vec<Volume>> = BTreeMap::new();
    for (vg, (_, section, first_slot)) in &vgs {
        let lvs = map_vg(vg, section, &parts, &pvs, notes)?;
        lvs_at.insert(*first_slot, lvs);
    }
    let pv_slots: Vec<usize> = pvs
        .iter()
        .filter(|p| p.metadata.is_some())
        .map(|p| p.slot)
        .collect();
    let mut out = Vec::new();
    for (slot, vol) in parts.into_iter().enumerate() {
        if let Some(lvs) = lvs_at.remove(&slot) {
            out.extend(lvs);
        } else if !pv_slots.contains(&slot) {
            out.push(vol);
        }
    }
    Ok(out)
}

/// The segment sections of an LV, at most `MAX_SEGMENTS`.
fn segments(lv: &Value) -> Vec<&Value> {
    lv.items()
        .iter()
        .filter(|(k, v)| k.starts_with("segment") && matches!(v, Value::Section(_)))
        .map(|(_, v)| v)
        .take(MAX_SEGMENTS)
        .collect()
}

/// Why decant cannot read `v`, when it is an LV listed but not mapped (see [`expand`]):
/// "raid1 logical volumes are not supported ...". `None` for every readable volume.
pub fn unsupported_reason(v: &Volume) -> Option<String> {
    (v.scheme == "lvm" && v.part_type != "linear").then(|| {
        format!(
            "{} logical volumes are not supported (decant reads linear LVs only)",
            v.part_type
        )
    })
}

/// The LVs of one VG: the visible linear ones mapped, the others listed as unsupported.
fn map_vg(
    vg: &str,
    section: &Value,
    parts: &[Volume],
    pvs: &[Pv],
    notes: &mut Vec<String>,
) -> Result<Vec<Volume>, VolumeError> {
    let first_pv = pvs
        .iter()
        .find(|p| p.metadata.as_ref().is_some_and(|m| m.1 == vg));
    let dev = first_pv
        .and_then(|p| parts.get(p.slot))
        .map_or(vg.to_string(), |v| v.source.name().to_string());
    let bad = |what: String| {
        VolumeError::corrupt(
            &dev,
            "LVM metadata text",
            0,
            format!("volume group {vg}: {what}"),
        )
    };
    let extent = section
        .int("extent_size")
        .filter(|&e| e > 0)
        .and_then(|e| (e as u64).checked_mul(SECTOR))
        .ok_or_else(|| bad("no valid extent_size".into()))?;
    // pv name (pv0) -> (volume, data start in bytes).
    let mut pv_map: BTreeMap<&str, Option<(&Volume, u64)>> = BTreeMap::new();
    if let Some(list) = section.get("physical_volumes") {
        for (pvname, pv) in list.items() {
            let id = strip(pv.str("id").unwrap_or_default());
            let pe_start = pv
                .int("pe_start")
                .filter(|&s| s >= 0)
                .and_then(|s| (s as u64).checked_mul(SECTOR))
                .ok_or_else(|| bad(format!("{pvname} has no valid pe_start")))?;
            let found = pvs
                .iter()
                .find(|p| p.uuid == id)
                .and_then(|p| parts.get(p.slot));
            pv_map.insert(pvname, found.map(|v| (v, pe_start)));
        }
    }
    let mut out = Vec::new();
    let Some(lvs) = section.get("logical_volumes") else {
        return Ok(out);
    };
    // A snapshot is two hidden LVs: the copy-on-write store (which `lvs` shows under its own
    // name) and `snapshotN`, whose segment of type "snapshot" names the origin and the store.
    // Both lack VISIBLE, so they are found through that segment, not the flag.
    let mut cows: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, lv) in lvs.items() {
        for seg in segments(lv) {
            if seg.str("type") == Some("snapshot") {
                if let Some(cow) = seg.str("cow_store") {
                    cows.insert(cow, seg.str("origin").unwrap_or("?"));
                }
            }
        }
    }
    let (pv_index, pv_start) = first_pv
        .and_then(|p| parts.get(p.slot))
        .map_or((0, 0), |v| (v.index, v.start));
    let listed = |lvname: &str, kind: String, lv: &Value| {
        let size = segments(lv)
            .iter()
            .map(|s| s.int("extent_count").unwrap_or(0).max(0) as u64)
            .fold(0u64, u64::saturating_add)
            .saturating_mul(extent);
        let name = format!("{dev} lv {vg}/{lvname} ({kind}, not readable)");
        Volume {
            index: pv_index,
            source: Arc::new(crate::block::MemSource::new(Vec::new(), name)),
            start: pv_start,
            size,
            scheme: "lvm".into(),
            part_type: kind.clone(),
            type_name: format!("LVM {kind} logical volume (not supported)"),
            partuuid: None,
            partlabel: None,
            lvm: Some((vg.to_string(), lvname.to_string())),
        }
    };
    'lv: for (lvname, lv) in lvs.items() {
        let mut segs = segments(lv);
        if cows.contains_key(lvname.as_str()) {
            out.push(listed(lvname, "snapshot".into(), lv));
            continue;
        }
        if segs.iter().any(|s| s.str("type") == Some("snapshot")) {
            // `snapshotN`: listed under its store's name above.
            continue;
        }
        if !lv.has_flag("status", "VISIBLE") {
            continue;
        }
        segs.sort_by_key(|s| s.int("start_extent").unwrap_or(-1));
        let mut windows: Vec<Arc<dyn BlockSource>> = Vec::new();
        let mut next_extent = 0i64;
        let mut first_start = None;
        for (n, seg) in segs.iter().enumerate() {
            let kind = seg.str("type").unwrap_or("unknown");
            let stripes = seg.int("stripe_count").unwrap_or(0);
            if kind != "striped" || stripes != 1 {
                let kind = if kind == "striped" {
                    format!("striped ({stripes} stripes)")
                } else {
                    kind.to_string()
                };
                out.push(listed(lvname, kind, lv));
                continue 'lv;
            }
            let start = seg.int("start_extent").unwrap_or(-1);
            let count = seg.int("extent_count").unwrap_or(-1);
            if start != next_extent || count <= 0 {
                return Err(bad(format!("LV {lvname} segment {} starts at extent {start} with {count} extents, expected start {next_extent}", n + 1)));
            }
            next_extent = start.saturating_add(count);
            let (pvname, pe) = match seg.get("stripes") {
                Some(Value::List(l)) => match (l.first(), l.get(1)) {
                    (Some(Value::Str(p)), Some(Value::Int(pe))) if *pe >= 0 => {
                        (p.as_str(), *pe as u64)
                    }
                    _ => {
                        return Err(bad(format!(
                            "LV {lvname} segment {} has a bad stripes list",
                            n + 1
                        )))
                    }
                },
                _ => {
                    return Err(bad(format!(
                        "LV {lvname} segment {} has no stripes list",
                        n + 1
                    )))
                }
            };
            let Some(&Some((pv_vol, pe_start))) = pv_map.get(pvname) else {
                notes.push(format!("LV {vg}/{lvname} skipped: it uses physical volume {pvname}, which is not on this disk"));
                continue 'lv;
            };
            let range = pe
                .checked_mul(extent)
                .and_then(|o| o.checked_add(pe_start))
                .and_then(|o| (count as u64).checked_mul(extent).map(|l| (o, l)));
            let Some((offset, len)) = range else {
                return Err(bad(format!("LV {lvname} segment {} overflows", n + 1)));
            };
            let wname = format!(
                "{} lv {vg}/{lvname} segment {}",
                pv_vol.source.name(),
                n + 1
            );
            let w = crate::block::Window::new(pv_vol.source.clone(), offset, len, wname).map_err(
                |e| {
                    VolumeError::corrupt(
                        pv_vol.source.name(),
                        "LVM segment",
                        offset,
                        format!("LV {vg}/{lvname}: {e}"),
                    )
                },
            )?;
            first_start.get_or_insert((pv_vol.index, pv_vol.start + offset));
            windows.push(Arc::new(w));
        }
        let Some((index, start)) = first_start else {
            continue;
        };
        let name = format!("{dev} lv {vg}/{lvname}");
        let source: Arc<dyn BlockSource> = if windows.len() == 1 {
            windows.remove(0)
        } else {
            Arc::new(ConcatSource::new(windows, name.clone()).map_err(|e| bad(e.to_string()))?)
        };
        out.push(Volume {
            index,
            size: source.len(),
            source,
            start,
            scheme: "lvm".into(),
            part_type: "linear".into(),
            type_name: "LVM logical volume".into(),
            partuuid: None,
            partlabel: None,
            lvm: Some((vg.to_string(), lvname.clone())),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metadata_text() {
        let t = br#"vg0 {
id = "abc"
seqno = 3 # comment
status = ["READ", "WRITE"]
logical_volumes {
  root { status = ["VISIBLE"] segment1 { stripes = ["pv0", 12] } }
}
}
contents = "Text Format Volume Group"
"#;
        let v = parse_metadata(t).unwrap();
        let vg = v.get("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert!(vg.has_flag("status", "WRITE"));
        let seg = vg
            .get("logical_volumes")
            .unwrap()
            .get("root")
            .unwrap()
            .get("segment1")
            .unwrap();
        assert_eq!(
            seg.get("stripes"),
            Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(12)]))
        );
        assert!(parse_metadata(b"a { b = [1, 2").is_err());
        assert!(parse_metadata(b"a { b = \"x").is_err());
        let deep = "a{".repeat(100);
        assert!(parse_metadata(deep.as_bytes()).is_err());
    }

    /// Older lvm2 keeps VISIBLE on a snapshot's store: it is still the snapshot, not a
    /// readable linear LV, and `snapshotN` stays out of the list whatever its flags.
    #[test]
    fn snapshot_store_and_striped_lvs_are_listed_unsupported() {
        let t = br#"vg0 {
extent_size = 8
physical_volumes { pv0 { id = "abc" pe_start = 8 } }
logical_volumes {
  origin { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
  snap { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 2] } }
  snapshot0 { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 2 type = "snapshot" origin = "origin" cow_store = "snap" } }
  wide { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 2 stripes = ["pv0", 3, "pv0", 4] } }
}
}"#;
        let root = parse_metadata(t).unwrap();
        let section = root.get("vg0").unwrap();
        let disk: Arc<dyn BlockSource> =
            Arc::new(crate::block::MemSource::new(vec![0u8; 64 << 10], "d"));
        let parts = vec![Volume {
            index: 1,
            source: disk,
            start: 0,
            size: 64 << 10,
            scheme: "mbr".into(),
            part_type: MBR_LVM.into(),
            type_name: String::new(),
            partuuid: None,
            partlabel: None,
            lvm: None,
        }];
        let pvs = vec![Pv {
            slot: 0,
            uuid: "abc".into(),
            metadata: Some((1, "vg0".into(), section.clone())),
        }];
        let mut notes = Vec::new();
        let lvs = map_vg("vg0", section, &parts, &pvs, &mut notes).unwrap();
        let got: Vec<(String, String, Option<String>)> = lvs
            .iter()
            .map(|v| {
                (
                    v.lvm.clone().unwrap().1,
                    v.part_type.clone(),
                    unsupported_reason(v),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("origin".into(), "linear".into(), None),
                (
                    "snap".into(),
                    "snapshot".into(),
                    Some("snapshot logical volumes are not supported (decant reads linear LVs only)".into())
                ),
                (
                    "wide".into(),
                    "striped (2 stripes)".into(),
                    Some("striped (2 stripes) logical volumes are not supported (decant reads linear LVs only)".into())
                ),
            ]
        );
        assert_eq!(lvs[1].size, 4096);
        assert_eq!(lvs[1].source.len(), 0, "an unsupported LV is never read");
    }
}

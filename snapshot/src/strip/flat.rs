//! The flattened view of an image that strip works on: every path visible through the image's
//! layers (whiteouts and opaque directories applied), with its size and the layer it comes from,
//! and `write_candidate`, which streams the visible entries minus a removal set (plus replaced
//! files such as the edited dpkg status) into ONE new layer.
//!
//! Nothing is unpacked to disk: pass one reads the layers' headers into an index; a candidate is
//! a k-way merge of the layer streams in path order, so every layer must be in path order (as
//! every layer decant writes is). A foreign unsorted layer is refused with its name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};

use crate::layer::entry::{Entry, EntryKind, FileTree};
use crate::layer::reader::{is_opaque_marker, is_whiteout, LayerReader, WHITEOUT_PREFIX};
use crate::layer::writer::{LayerOptions, LayerSummary, LayerWriter};
use crate::store::Store;

use super::StripError;

/// Most visible entries an image may have (a Debian VM has ~50 000; this is ~1 GiB of index).
pub const MAX_ENTRIES: usize = 4_000_000;
/// Largest file kept in memory from the image (dpkg status, .list files...).
pub const MAX_CAPTURED_FILE: u64 = 64 << 20;
/// Most bytes kept in memory over all captured files.
pub const MAX_CAPTURED_TOTAL: u64 = 512 << 20;

/// One visible path of the flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatEntry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Content bytes (regular files; 0 for hardlink names and everything else).
    pub size: u64,
    /// Index of the layer (bottom first) the entry comes from.
    pub layer: usize,
    /// For a hardlink name: the path of the name carrying the data; for a symlink, its target.
    pub link_target: Option<Vec<u8>>,
}

/// The flattened image: entries in path order, and the captured small files.
#[derive(Debug, Clone)]
pub struct Flat {
    pub entries: Vec<FlatEntry>,
    /// Content of the captured files (see `capture`), by path.
    pub captured: HashMap<Vec<u8>, Vec<u8>>,
    layers: Vec<String>,
}

/// `path` with `/` as byte 0: byte order of keys is then `path_order`.
fn key(path: &[u8]) -> Vec<u8> {
    path.iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

/// Whether strip needs the content of this path in memory (the package database, and the
/// path filters an earlier strip recorded, which a new one extends).
pub fn capture(path: &[u8]) -> bool {
    path == b"var/lib/dpkg/status"
        || path == super::dpkg::STRIP_CFG
        || path == b"var/lib/dpkg/diversions"
        || (path.starts_with(b"var/lib/dpkg/info/")
            && (path.ends_with(b".list") || path.ends_with(b".conffiles")))
        || super::rpm::capture(path)
}

fn open_layer(store: &Store, digest: &str) -> Result<LayerReader<File>, StripError> {
    let p = store.blob_path(digest)?;
    let f = File::open(&p).map_err(|e| StripError::Layer {
        digest: digest.to_string(),
        why: format!("cannot open blob {}: {e}", p.display()),
    })?;
    LayerReader::new(f).map_err(|e| StripError::Layer {
        digest: digest.to_string(),
        why: e.to_string(),
    })
}

impl Flat {
    /// Reads every layer of the image (digests bottom first) into the index.
    pub fn read(store: &Store, layers: &[String]) -> Result<Flat, StripError> {
        let mut map: BTreeMap<Vec<u8>, (FlatEntry, Option<Vec<u8>>)> = BTreeMap::new();
        let mut captured_total = 0u64;
        for (li, digest) in layers.iter().enumerate() {
            let mut r = open_layer(store, digest)?;
            let lerr = |why: String| StripError::Layer {
                digest: digest.clone(),
                why,
            };
            let mut prev: Option<Vec<u8>> = None;
            while let Some(e) = r.next_entry().map_err(|e| lerr(e.to_string()))? {
                let k = key(&e.path);
                if prev.as_ref().is_some_and(|p| *p >= k) {
                    return Err(lerr(format!(
                        "entry {} is out of path order; strip reads only layers in path order (as decant writes them)",
                        e.display_path()
                    )));
                }
                prev = Some(k.clone());
                if is_whiteout(&e.path) {
                    let (dir, name) = split(&e.path);
                    if is_opaque_marker(&e.path) {
                        remove_below(&mut map, &key(dir), li, false);
                    } else {
                        let hidden = name.get(WHITEOUT_PREFIX.len()..).unwrap_or_default();
                        let mut p = dir.to_vec();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(hidden);
                        remove_below(&mut map, &key(&p), li, true);
                    }
                    continue;
                }
                if e.kind != EntryKind::Dir {
                    // A file over a lower directory hides the directory's contents.
                    remove_below(&mut map, &k, li, false);
                }
                let mut data = None;
                if e.kind == EntryKind::File && capture(&e.path) && e.size <= MAX_CAPTURED_FILE {
                    captured_total = captured_total.saturating_add(e.size);
                    if captured_total > MAX_CAPTURED_TOTAL {
                        return Err(lerr(format!(
                            "the package database files exceed {MAX_CAPTURED_TOTAL} bytes"
                        )));
                    }
                    let mut v = Vec::with_capacity(usize::try_from(e.size).unwrap_or(0));
                    r.content()
                        .take(e.size)
                        .read_to_end(&mut v)
                        .map_err(|x| lerr(format!("reading {}: {x}", e.display_path())))?;
                    data = Some(v);
                }
                let size = if e.kind == EntryKind::File { e.size } else { 0 };
                map.insert(
                    k,
                    (
                        FlatEntry {
                            path: e.path.clone(),
                            kind: e.kind,
                            size,
                            layer: li,
                            link_target: matches!(e.kind, EntryKind::Hardlink | EntryKind::Symlink)
                                .then(|| e.link_target.clone())
                                .flatten(),
                        },
                        data,
                    ),
                );
                if map.len() > MAX_ENTRIES {
                    return Err(lerr(format!(
                        "more than {MAX_ENTRIES} visible paths; refused as absurd"
                    )));
                }
            }
        }
        let mut entries = Vec::with_capacity(map.len());
        let mut captured = HashMap::new();
        for (_, (e, data)) in map {
            if let Some(d) = data {
                captured.insert(e.path.clone(), d);
            }
            entries.push(e);
        }
        Ok(Flat {
            entries,
            captured,
            layers: layers.to_vec(),
        })
    }

    /// A flat tree of `entries` (already in path order) with nothing captured, for tests of
    /// the code that plans on a tree.
    #[cfg(test)]
    pub(crate) fn from_entries(entries: Vec<FlatEntry>) -> Flat {
        Flat {
            entries,
            captured: HashMap::new(),
            layers: Vec::new(),
        }
    }

    /// Index of `path` in `entries`.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        let k = key(path);
        self.entries.binary_search_by(|e| key(&e.path).cmp(&k)).ok()
    }

    /// `path` with its first component resolved when that is a symlink at the top of the
    /// image (merged /usr: `bin` -> `usr/bin`), so `/bin/ls` in a dpkg list finds `usr/bin/ls`.
    /// One level only; targets with `..` are left alone.
    pub fn resolve_top(&self, path: &[u8]) -> Vec<u8> {
        let (first, rest) = match path.iter().position(|&b| b == b'/') {
            Some(i) => (
                path.get(..i).unwrap_or_default(),
                path.get(i..).unwrap_or_default(),
            ),
            None => return path.to_vec(),
        };
        let target = self
            .find(first)
            .and_then(|i| self.entries.get(i))
            .filter(|e| e.kind == EntryKind::Symlink)
            .and_then(|e| e.link_target.as_deref());
        match target {
            Some(t) if !t.split(|&b| b == b'/').any(|c| c == b"..") => {
                let t = t.strip_prefix(b"/").unwrap_or(t);
                let t = t.strip_suffix(b"/").unwrap_or(t);
                if t.is_empty() {
                    return path.to_vec();
                }
                let mut out = t.to_vec();
                out.extend_from_slice(rest);
                out
            }
            _ => path.to_vec(),
        }
    }

    /// For each entry, the index one past its subtree (entries are in path order, so a
    /// directory's contents follow it contiguously).
    pub fn subtree_ends(&self) -> Vec<usize> {
        let n = self.entries.len();
        let mut end = vec![n; n];
        let mut stack: Vec<usize> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            while let Some(&top) = stack.last() {
                let tp = &self
                    .entries
                    .get(top)
                    .map(|t| t.path.as_slice())
                    .unwrap_or_default();
                let inside = e.path.len() > tp.len()
                    && e.path.starts_with(tp)
                    && e.path.get(tp.len()) == Some(&b'/');
                if inside {
                    break;
                }
                if let Some(slot) = end.get_mut(top) {
                    *slot = i;
                }
                stack.pop();
            }
            stack.push(i);
        }
        end
    }

    /// For each entry, the index of its parent directory (None at top level or when missing).
    pub fn parents(&self) -> Vec<Option<usize>> {
        let idx: HashMap<&[u8], usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_slice(), i))
            .collect();
        self.entries
            .iter()
            .map(|e| {
                let (dir, _) = split(&e.path);
                if dir.is_empty() {
                    None
                } else {
                    idx.get(dir).copied()
                }
            })
            .collect()
    }

    /// Total content bytes of the visible files.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |a, e| a.saturating_add(e.size))
    }

    /// Writes the visible entries except those with `removed[i]`, with `replace` giving new
    /// content for some paths, as ONE layer into the store. A `replace` path the image does not
    /// have is added as a new root-owned 0644 file (the caller makes sure its directory stays),
    /// with the time of the entry written before it. Reproducible: same inputs, same bytes (the
    /// writer's chunked gzip does not depend on the thread count).
    pub fn write_candidate(
        &self,
        store: &Store,
        removed: &[bool],
        replace: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<LayerSummary, StripError> {
        let mut readers = Vec::with_capacity(self.layers.len());
        for d in &self.layers {
            readers.push(open_layer(store, d)?);
        }
        let mut heads: Vec<Option<Entry>> = Vec::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            heads.push(next(r, self.layers.get(i))?);
        }
        let blob = store.blob_writer()?;
        let opts = LayerOptions {
            allow_whiteouts: true,
            keep_selinux: true,
            ..LayerOptions::default()
        };
        let mut w = LayerWriter::new(blob, opts);
        let werr = |e: crate::layer::LayerError| StripError::Write(e.to_string());
        // New files, in path order, each written just before the first entry that sorts after.
        let mut added: Vec<(Vec<u8>, &Vec<u8>, &Vec<u8>)> = replace
            .iter()
            .filter(|(p, _)| self.find(p).is_none())
            .map(|(p, d)| (key(p), p, d))
            .collect();
        added.sort();
        let mut added = added.into_iter().peekable();
        let mut mtime = crate::layer::entry::Timestamp::default();
        let add = |w: &mut LayerWriter<_>, path: &[u8], data: &[u8], mtime| {
            let mut e = Entry::new(path.to_vec(), EntryKind::File, 0o644);
            e.size = data.len() as u64;
            e.mtime = mtime;
            w.append(&e, &mut io::Cursor::new(data)).map_err(werr)
        };
        let mut pos = 0usize;
        loop {
            // The head with the smallest key; ties go to the lowest layer first, and only the
            // entry the index says is visible is written.
            let mut best: Option<(usize, Vec<u8>)> = None;
            for (i, h) in heads.iter().enumerate() {
                if let Some(e) = h {
                    let k = key(&e.path);
                    if best.as_ref().is_none_or(|(_, bk)| k < *bk) {
                        best = Some((i, k));
                    }
                }
            }
            let Some((li, k)) = best else { break };
            while let Some((_, p, d)) = added.next_if(|(ak, _, _)| *ak < k) {
                add(&mut w, p, d, mtime)?;
            }
            let Some(entry) = heads.get_mut(li).and_then(Option::take) else {
                break;
            };
            // Advance `pos` in the index to this key.
            while self.entries.get(pos).is_some_and(|x| key(&x.path) < k) {
                pos += 1;
            }
            let visible = self
                .entries
                .get(pos)
                .is_some_and(|x| x.layer == li && x.path == entry.path);
            let reader = readers
                .get_mut(li)
                .ok_or_else(|| StripError::Internal("layer reader index out of range".into()))?;
            if visible && !removed.get(pos).copied().unwrap_or(false) {
                mtime = entry.mtime;
                match replace.get(&entry.path) {
                    Some(bytes) => {
                        let mut e2 = entry.clone();
                        e2.size = bytes.len() as u64;
                        e2.hardlink_key = None;
                        w.append(&e2, &mut io::Cursor::new(bytes)).map_err(werr)?;
                    }
                    None => w.append(&entry, reader.content()).map_err(werr)?,
                }
            }
            let next_head = next(reader, self.layers.get(li))?;
            if let Some(h) = heads.get_mut(li) {
                *h = next_head;
            }
        }
        for (_, p, d) in added {
            add(&mut w, p, d, mtime)?;
        }
        let (blob, summary) = w.finish().map_err(|e| StripError::Write(e.to_string()))?;
        blob.commit(Some(&summary.digest))?;
        Ok(summary)
    }
}

/// The next non-whiteout entry of a layer.
fn next(r: &mut LayerReader<File>, digest: Option<&String>) -> Result<Option<Entry>, StripError> {
    loop {
        let e = r.next_entry().map_err(|e| StripError::Layer {
            digest: digest.cloned().unwrap_or_default(),
            why: e.to_string(),
        })?;
        match e {
            Some(e) if is_whiteout(&e.path) => continue,
            other => return Ok(other),
        }
    }
}

/// (`dir`, `name`) of a path; `dir` is empty at top level.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            path.get(..i).unwrap_or_default(),
            path.get(i + 1..).unwrap_or_default(),
        ),
        None => (&[], path),
    }
}

/// Removes entries of layers below `layer` at `k` itself (when `this`) and under it.
fn remove_below(
    map: &mut BTreeMap<Vec<u8>, (FlatEntry, Option<Vec<u8>>)>,
    k: &[u8],
    layer: usize,
    this: bool,
) {
    let mut child = k.to_vec();
    if !child.is_empty() {
        child.push(0);
    }
    let doomed: Vec<Vec<u8>> = map
        .range(child.clone()..)
        .take_while(|(kk, _)| kk.starts_with(&child))
        .filter(|(_, (e, _))| e.layer < layer)
        .map(|(kk, _)| kk.clone())
        .collect();
    for d in doomed {
        map.remove(&d);
    }
    if this && map.get(k).is_some_and(|(e, _)| e.layer < layer) {
        map.remove(k);
    }
}

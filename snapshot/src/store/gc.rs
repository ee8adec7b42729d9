//! Garbage collection: delete the blobs that nothing in `index.json` reaches.
//!
//! Reachability walks index descriptors into manifests (config, layers, subject) and nested
//! indexes. It is conservative: a reachable manifest or index that is missing or damaged stops
//! the collection with an error, since we cannot know what it would have kept alive. Blobs being
//! written or written-but-not-yet-indexed are protected by `gc.lock` (see `lock.rs`), and blobs
//! pending in the calling handle itself are skipped explicitly.

use std::collections::HashSet;
use std::fs;
use std::io;

use serde_json::Value;

use super::blobs::{clean_temp, digest_hex, read_verified};
use super::index::{is_index_type, is_manifest_type, Index};
use super::lock::{self, Mode};
use super::{StoreError, MAX_MANIFEST_BYTES};

/// Deepest nesting of indexes we follow (an index of indexes of manifests is depth 2).
const MAX_DEPTH: usize = 8;
/// Most manifests and indexes one walk reads; a bigger graph is refused, not walked forever.
const MAX_NODES: usize = 100_000;

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Digests of the blobs deleted.
    pub removed: Vec<String>,
    /// Bytes those blobs occupied.
    pub bytes_freed: u64,
    /// Leftover temp files of dead writers removed.
    pub temp_files_removed: usize,
}

/// Every digest `index` reaches.
pub fn reachable(store: &super::Store, index: &Index) -> Result<HashSet<String>, StoreError> {
    let mut seen = HashSet::new();
    let mut stack: Vec<(String, String, usize)> = index
        .descs()
        .into_iter()
        .map(|d| (d.digest, d.media_type, 0))
        .collect();
    let mut nodes = 0usize;
    while let Some((digest, media_type, depth)) = stack.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let walk = is_manifest_type(&media_type) || is_index_type(&media_type);
        if !walk {
            continue;
        }
        nodes += 1;
        if nodes > MAX_NODES || depth > MAX_DEPTH {
            return Err(StoreError::Gc(format!(
                "the image graph under {} is deeper than {MAX_DEPTH} or larger than {MAX_NODES} manifests; refusing to collect",
                index.path().display()
            )));
        }
        let bytes =
            read_verified(&store.paths.blobs(), &digest, MAX_MANIFEST_BYTES).map_err(|e| {
                StoreError::Gc(format!(
                    "cannot read reachable {media_type} ({e}); refusing to collect"
                ))
            })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Gc(format!(
                "blob {digest} ({media_type}) is not valid JSON: {e}; refusing to collect"
            ))
        })?;
        let mut children: Vec<&Value> = Vec::new();
        if let Some(c) = v.get("config") {
            children.push(c);
        }
        if let Some(s) = v.get("subject") {
            children.push(s);
        }
        for key in ["layers", "manifests", "blobs"] {
            if let Some(Value::Array(a)) = v.get(key) {
                children.extend(a.iter());
            }
        }
        for c in children {
            let Some(d) = c.get("digest").and_then(Value::as_str) else {
                continue;
            };
            if digest_hex(d).is_err() {
                // Not a sha256 blob: nothing of ours to keep or delete.
                continue;
            }
            let mt = c.get("mediaType").and_then(Value::as_str).unwrap_or("");
            stack.push((d.to_string(), mt.to_string(), depth + 1));
        }
    }
    Ok(seen)
}

/// Runs a collection. With `wait` false, gives `None` when a writer holds the store.
pub(crate) fn collect(store: &super::Store, wait: bool) -> Result<Option<GcReport>, StoreError> {
    let paths = &store.paths;
    let mut pins = store.pins.state();
    pins.suspend();
    let guard = if wait {
        Some(lock::lock(&paths.gc_lock(), Mode::Exclusive))
    } else {
        lock::try_lock(&paths.gc_lock(), Mode::Exclusive).transpose()
    };
    let result = match guard {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(_gc)) => sweep(store, &pins.pending).map(Some),
    };
    let resumed = pins.resume(store.pins.gc_lock_path());
    let report = result?;
    resumed?;
    Ok(report)
}

fn sweep(store: &super::Store, pending: &HashSet<String>) -> Result<GcReport, StoreError> {
    let paths = &store.paths;
    let mut report = GcReport {
        temp_files_removed: clean_temp(paths)?,
        ..GcReport::default()
    };
    let _index_lock = lock::lock(&paths.index_lock(), Mode::Exclusive)?;
    let index = Index::read(&paths.index())?;
    let keep = reachable(store, &index)?;
    let dir = paths.blobs();
    let rd = fs::read_dir(&dir).map_err(|e| StoreError::io("list", &dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("list", &dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let digest = format!("sha256:{name}");
        // Only blob-shaped names are ours to judge; anything else is left alone.
        if digest_hex(&digest).is_err() || keep.contains(&digest) || pending.contains(&digest) {
            continue;
        }
        let path = entry.path();
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                report.removed.push(digest);
                report.bytes_freed = report.bytes_freed.saturating_add(size);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove blob", &path, e)),
        }
    }
    report.removed.sort();
    Ok(report)
}

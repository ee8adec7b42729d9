//! Which repositories are known to hold a blob, so a push to a new repository of the same
//! registry can ask for a cross-repository mount (`?mount=<digest>&from=<repo>`) instead of
//! uploading. Docker keeps the same hint ("v2 metadata"); it is only a hint: a stale entry
//! costs one refused mount, then a normal upload.
//!
//! Kept in `<store>/.decant/blob-sources.json` as `{ "<digest>": ["<registry>/<path>", ...] }`,
//! written atomically. Two pushes finishing together may lose one's update (a missed mount
//! later, never a wrong image): no lock is taken for a hint.

use serde_json::{Map, Value};

use crate::store::blobs::write_atomic;
use crate::store::{Store, StoreError};

/// Largest hint file we read; past it the hints start afresh.
const MAX_BYTES: u64 = 4 << 20;
/// Repositories remembered per blob (the most recent first).
const PER_BLOB: usize = 4;
/// Blobs remembered; the oldest entries go first.
const MAX_BLOBS: usize = 20_000;

fn path(store: &Store) -> std::path::PathBuf {
    store.paths.private().join("blob-sources.json")
}

fn read(store: &Store) -> Map<String, Value> {
    let p = path(store);
    match std::fs::metadata(&p) {
        Ok(m) if m.len() <= MAX_BYTES => {}
        _ => return Map::new(),
    }
    std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

/// Repositories (`registry/path`) of `registry` known to hold `digest`, most recent first.
pub fn repos_with(store: &Store, registry: &str, digest: &str) -> Vec<String> {
    let prefix = format!("{registry}/");
    read(store)
        .get(digest)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|r| r.strip_prefix(&prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Records that `repo` (`registry/path`) holds each of `digests`.
pub fn record(store: &Store, repo: &str, digests: &[String]) -> Result<(), StoreError> {
    let mut m = read(store);
    for d in digests {
        let mut list: Vec<Value> = m
            .remove(d)
            .and_then(|v| match v {
                Value::Array(a) => Some(a),
                _ => None,
            })
            .unwrap_or_default();
        list.retain(|v| v.as_str() != Some(repo));
        list.insert(0, Value::String(repo.to_string()));
        list.truncate(PER_BLOB);
        m.insert(d.clone(), Value::Array(list));
    }
    while m.len() > MAX_BLOBS {
        // serde_json's Map is sorted, not ordered by age: drop arbitrary entries; it is a hint.
        let Some(k) = m.keys().next().cloned() else {
            break;
        };
        m.remove(&k);
    }
    let bytes = serde_json::to_vec(&Value::Object(m))
        .map_err(|e| StoreError::Build(format!("blob sources: {e}")))?;
    write_atomic(&store.paths, &path(store), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_per_registry_most_recent_first_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let d = "sha256:aa".to_string();
        assert!(repos_with(&store, "r:5000", &d).is_empty());
        for i in 0..6 {
            record(&store, &format!("r:5000/repo{i}"), std::slice::from_ref(&d)).unwrap();
        }
        record(&store, "other.io/x", std::slice::from_ref(&d)).unwrap();
        let got = repos_with(&store, "r:5000", &d);
        assert_eq!(got, ["repo5", "repo4", "repo3"], "{got:?}");
        // A damaged hint file is ignored, never an error.
        std::fs::write(path(&store), b"{not json").unwrap();
        assert!(repos_with(&store, "r:5000", &d).is_empty());
        record(&store, "r:5000/again", std::slice::from_ref(&d)).unwrap();
        assert_eq!(repos_with(&store, "r:5000", &d), ["again"]);
    }
}

//! `index.json`: reading it defensively, editing its manifest descriptors (tags), and writing it
//! back atomically.
//!
//! The index is kept as `serde_json::Value`, not as oci-spec's `ImageIndex`: other tools (skopeo,
//! umoci) write fields and annotations we do not model, and a round trip through a typed struct
//! would drop or reorder them. Descriptors we add are built with oci-spec's builder.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{DescriptorBuilder, Digest, MediaType};
use serde_json::{Map, Value};

use super::blobs::{digest_hex, write_atomic};
use super::lock::Paths;
use super::StoreError;

/// The annotation a tag lives in.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest index.json we read (1 MiB holds about 4,000 tagged descriptors; this is 64 times
/// that). Bigger means something is wrong, and reading it whole would cost memory.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a descriptor of this media type points at a single image manifest.
pub fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// Whether a descriptor of this media type points at an index (a manifest list).
pub fn is_index_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

/// The parsed index: the whole document, with `manifests` checked to be well-formed
/// descriptors.
#[derive(Debug, Clone)]
pub struct Index {
    path: PathBuf,
    doc: Map<String, Value>,
    manifests: Vec<Value>,
}

/// One manifest descriptor of the index, read-only view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub ref_name: Option<String>,
}

impl Index {
    /// The empty index `Store::open` writes into a new layout.
    pub fn empty_bytes() -> Vec<u8> {
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
            .to_vec()
    }

    pub fn read(path: &Path) -> Result<Index, StoreError> {
        let f = fs::File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let mut bytes = Vec::new();
        f.take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("read", path, e))?;
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(corrupt(
                path,
                format!("larger than the {MAX_INDEX_BYTES}-byte cap"),
            ));
        }
        Index::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Index, StoreError> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(path, format!("not valid JSON: {e}")))?;
        let Value::Object(mut doc) = doc else {
            return Err(corrupt(path, "top level is not a JSON object".into()));
        };
        match doc.get("schemaVersion") {
            Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
            other => {
                return Err(corrupt(
                    path,
                    format!("schemaVersion is {}, expected 2", short(other)),
                ))
            }
        }
        let manifests = match doc.remove("manifests") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(corrupt(path, "\"manifests\" is not an array".into())),
        };
        for (i, m) in manifests.iter().enumerate() {
            desc_of(m).map_err(|why| corrupt(path, format!("manifests[{i}]: {why}")))?;
        }
        Ok(Index {
            path: path.to_path_buf(),
            doc,
            manifests,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All manifest descriptors, in index order.
    pub fn descs(&self) -> Vec<Desc> {
        // Every element passed `desc_of` in `parse` or was built by us.
        self.manifests
            .iter()
            .filter_map(|m| desc_of(m).ok())
            .collect()
    }

    /// Descriptors grouped by digest, first appearance order; each group lists its ref names.
    pub fn groups(&self) -> Vec<Group> {
        let mut order: Vec<Group> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for d in self.descs() {
            let i = *at.entry(d.digest.clone()).or_insert_with(|| {
                order.push(Group {
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                    size: d.size,
                    refs: Vec::new(),
                });
                order.len() - 1
            });
            if let (Some(r), Some(g)) = (d.ref_name, order.get_mut(i)) {
                if !g.refs.contains(&r) {
                    g.refs.push(r);
                }
            }
        }
        order
    }

    /// Points `ref_name` at the manifest `target`. The manifest it pointed at before, when left
    /// without any name, stays in the index as a dangling (unnamed) descriptor.
    pub fn set_ref(&mut self, ref_name: &str, target: &Desc) -> Result<(), StoreError> {
        let existing = self
            .manifests
            .iter()
            .position(|m| ref_of(m) == Some(ref_name));
        if let Some(i) = existing {
            let old = self.manifests.remove(i);
            let old_digest = digest_of(&old).unwrap_or_default().to_string();
            if old_digest == target.digest {
                self.manifests.insert(i, old);
                return Ok(());
            }
            if !self
                .manifests
                .iter()
                .any(|m| digest_of(m) == Some(old_digest.as_str()))
            {
                let mut dangling = old;
                strip_ref(&mut dangling);
                self.manifests.insert(i, dangling);
            }
        }
        // A named descriptor replaces an unnamed one of the same manifest.
        self.manifests
            .retain(|m| !(digest_of(m) == Some(target.digest.as_str()) && ref_of(m).is_none()));
        self.manifests.push(new_descriptor(target, Some(ref_name))?);
        Ok(())
    }

    /// Makes sure `target` is in the index, unnamed if it has no name yet.
    pub fn ensure(&mut self, target: &Desc) -> Result<(), StoreError> {
        if !self
            .manifests
            .iter()
            .any(|m| digest_of(m) == Some(target.digest.as_str()))
        {
            self.manifests.push(new_descriptor(target, None)?);
        }
        Ok(())
    }

    /// Removes the name `ref_name`; its manifest stays (unnamed) only if `keep_dangling` and no
    /// other name remains. Returns whether the name existed.
    pub fn remove_ref(&mut self, ref_name: &str, keep_dangling: bool) -> bool {
        let Some(i) = self
            .manifests
            .iter()
            .position(|m| ref_of(m) == Some(ref_name))
        else {
            return false;
        };
        let old = self.manifests.remove(i);
        let d = digest_of(&old).unwrap_or_default().to_string();
        if keep_dangling
            && !self
                .manifests
                .iter()
                .any(|m| digest_of(m) == Some(d.as_str()))
        {
            let mut dangling = old;
            strip_ref(&mut dangling);
            self.manifests.insert(i, dangling);
        }
        true
    }

    /// Removes every descriptor of the manifest `digest`.
    pub fn remove_digest(&mut self, digest: &str) {
        self.manifests.retain(|m| digest_of(m) != Some(digest));
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let mut doc = self.doc.clone();
        doc.insert("manifests".into(), Value::Array(self.manifests.clone()));
        serde_json::to_vec(&Value::Object(doc))
            .map_err(|e| StoreError::io("serialize", &self.path, io::Error::other(e)))
    }

    /// Replaces index.json atomically. The caller holds the index lock.
    pub fn write(&self, paths: &Paths) -> Result<(), StoreError> {
        write_atomic(paths, &paths.index(), &self.to_bytes()?)
    }
}

/// All descriptors of one manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub refs: Vec<String>,
}

impl Group {
    pub fn desc(&self) -> Desc {
        Desc {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            ref_name: None,
        }
    }
}

fn corrupt(path: &Path, why: String) -> StoreError {
    StoreError::CorruptIndex {
        path: path.to_path_buf(),
        why,
    }
}

fn short(v: Option<&Value>) -> String {
    match v {
        None => "missing".into(),
        Some(v) => v.to_string().chars().take(40).collect(),
    }
}

fn digest_of(m: &Value) -> Option<&str> {
    m.get("digest").and_then(Value::as_str)
}

fn ref_of(m: &Value) -> Option<&str> {
    m.get("annotations")
        .and_then(|a| a.get(REF_NAME))
        .and_then(Value::as_str)
}

fn strip_ref(m: &mut Value) {
    if let Some(Value::Object(a)) = m.get_mut("annotations") {
        a.remove(REF_NAME);
        if a.is_empty() {
            if let Value::Object(o) = m {
                o.remove("annotations");
            }
        }
    }
}

fn desc_of(m: &Value) -> Result<Desc, String> {
    let Value::Object(o) = m else {
        return Err("descriptor is not an object".into());
    };
    let media_type = match o.get("mediaType") {
        Some(Value::String(s)) => s.clone(),
        other => return Err(format!("mediaType is {}", short(other))),
    };
    let digest = match o.get("digest") {
        Some(Value::String(s)) => s.clone(),
        other => return Err(format!("digest is {}", short(other))),
    };
    digest_hex(&digest).map_err(|e| e.to_string())?;
    let size = match o.get("size") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("size {n} is not a byte count"))?,
        other => return Err(format!("size is {}", short(other))),
    };
    let ref_name = match o.get("annotations") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => match a.get(REF_NAME) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(format!("{REF_NAME} is {}", short(Some(other)))),
        },
        Some(other) => return Err(format!("annotations is {}", short(Some(other)))),
    };
    Ok(Desc {
        media_type,
        digest,
        size,
        ref_name,
    })
}

fn new_descriptor(target: &Desc, ref_name: Option<&str>) -> Result<Value, StoreError> {
    let build_err = |e: &dyn std::fmt::Display| StoreError::Build(format!("index descriptor: {e}"));
    let digest: Digest = target.digest.parse().map_err(|e| build_err(&e))?;
    let mut b = DescriptorBuilder::default()
        .media_type(MediaType::from(target.media_type.as_str()))
        .digest(digest)
        .size(target.size);
    if let Some(r) = ref_name {
        b = b.annotations(HashMap::from([(REF_NAME.to_string(), r.to_string())]));
    }
    let d = b.build().map_err(|e| build_err(&e))?;
    serde_json::to_value(&d).map_err(|e| build_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn desc(d: &str) -> Desc {
        Desc {
            media_type: OCI_MANIFEST.into(),
            digest: d.into(),
            size: 10,
            ref_name: None,
        }
    }

    #[test]
    fn moving_a_tag_leaves_the_old_image_dangling() {
        let mut ix = Index::parse(Path::new("index.json"), &Index::empty_bytes()).unwrap();
        ix.set_ref("x:1", &desc(A)).unwrap();
        ix.set_ref("x:2", &desc(A)).unwrap();
        ix.set_ref("x:1", &desc(B)).unwrap();
        let g = ix.groups();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].refs, vec!["x:2".to_string()]);
        assert_eq!(g[1].refs, vec!["x:1".to_string()]);
        ix.set_ref("x:2", &desc(B)).unwrap();
        let g = ix.groups();
        assert_eq!(g[0].digest, A);
        assert!(g[0].refs.is_empty(), "A is dangling");
        assert_eq!(g[1].refs.len(), 2);
        // Naming A again replaces its unnamed descriptor.
        ix.set_ref("y:1", &desc(A)).unwrap();
        assert_eq!(ix.descs().len(), 3);
        assert!(ix.descs().iter().all(|d| d.ref_name.is_some()));
    }

    #[test]
    fn unknown_fields_survive() {
        let src = format!(
            r#"{{"schemaVersion":2,"x-extra":{{"k":1}},"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":3,"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"{REF_NAME}":"t","other":"v"}}}}]}}"#
        );
        let mut ix = Index::parse(Path::new("i"), src.as_bytes()).unwrap();
        ix.set_ref("u", &desc(B)).unwrap();
        let out: Value = serde_json::from_slice(&ix.to_bytes().unwrap()).unwrap();
        assert_eq!(out["x-extra"]["k"], 1);
        assert_eq!(out["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(out["manifests"][0]["annotations"]["other"], "v");
        assert!(ix.remove_ref("t", true));
        let out: Value = serde_json::from_slice(&ix.to_bytes().unwrap()).unwrap();
        assert_eq!(out["manifests"][0]["annotations"]["other"], "v");
        assert!(out["manifests"][0]["annotations"].get(REF_NAME).is_none());
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "not valid JSON"),
            ("[]", "not a JSON object"),
            ("{\"manifests\":[]}", "schemaVersion is missing"),
            ("{\"schemaVersion\":2,\"manifests\":{}}", "not an array"),
            ("{\"schemaVersion\":2,\"manifests\":[1]}", "manifests[0]: descriptor is not an object"),
            (
                "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"sha256:../../etc\",\"size\":1}]}",
                "manifests[0]: invalid digest",
            ),
            (
                &format!("{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"x\",\"digest\":\"{A}\",\"size\":-1}}]}}"),
                "not a byte count",
            ),
            (
                &format!("{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"x\",\"digest\":\"{A}\",\"size\":1,\"annotations\":{{\"{REF_NAME}\":5}}}}]}}"),
                "ref.name is 5",
            ),
        ];
        for (src, want) in cases {
            let e = Index::parse(Path::new("/s/index.json"), src.as_bytes()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{src}: {msg}");
            assert!(msg.contains("/s/index.json"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}

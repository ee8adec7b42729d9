//! `save`: writes images of the store as a docker-archive or an oci-archive, streamed to any
//! `Write`, with reproducible bytes (fixed entry order, mtime 0, uid/gid 0, no user names).
//!
//! A docker-archive carries uncompressed layers named by their diff_id, as `docker save` does,
//! so the config blob (the image id) travels unchanged and its `rootfs.diff_ids` match the
//! files. A tar header needs the size before the data, and the store keeps layers compressed,
//! so each layer is decompressed twice: once to learn its size and check its diff_id, once to
//! write it. That costs CPU (gunzip runs at about 500 MB/s) instead of a spooled copy on disk.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::{decompressed, ArchiveError, ArchiveFormat};
use crate::store::blobs::{digest_hex, hex};
use crate::store::index::REF_NAME;
use crate::store::{ImageRecord, Reference, Store, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};

/// The annotation containerd and docker (25+) read the image name from.
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image to write and the names it goes out with.
struct Selected {
    rec: ImageRecord,
    tags: Vec<Reference>,
}

/// Writes `images` (names, ids, or repositories: `myvm` alone means every tag of `myvm` in
/// the store, as in docker) to `out` in `format`, and returns `out`. An image named twice is
/// written once with all its names.
pub fn save<W: Write>(
    store: &Store,
    images: &[String],
    format: ArchiveFormat,
    out: W,
) -> Result<W, ArchiveError> {
    if images.is_empty() {
        return Err(ArchiveError::Usage("save needs at least one image".into()));
    }
    let _hold = super::GcHold::new(store)?;
    let selected = select(store, images)?;
    let mut tar = TarOut { w: out };
    match format {
        ArchiveFormat::DockerArchive => write_docker(store, &selected, &mut tar)?,
        ArchiveFormat::OciArchive => write_oci(store, &selected, &mut tar)?,
    }
    tar.finish()
}

/// Whether `s` names a repository without a tag or digest (`myvm`, `team/app`).
fn name_only(s: &str) -> bool {
    let last = s.rsplit('/').next().unwrap_or(s);
    !s.contains('@') && !last.contains(':')
}

fn select(store: &Store, names: &[String]) -> Result<Vec<Selected>, ArchiveError> {
    let mut out: Vec<Selected> = Vec::new();
    let mut add = |rec: ImageRecord, tag: Option<Reference>| {
        let i = match out
            .iter()
            .position(|s| s.rec.manifest_digest == rec.manifest_digest)
        {
            Some(i) => i,
            None => {
                out.push(Selected {
                    rec,
                    tags: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let (Some(t), Some(sel)) = (tag, out.get_mut(i)) {
            if !sel.tags.contains(&t) {
                sel.tags.push(t);
            }
        }
    };
    for name in names {
        let parsed = Reference::parse(name).ok();
        if let Some(r) = parsed.as_ref().filter(|_| name_only(name)) {
            let repo = r.repository();
            let mut found = false;
            for rec in store.images()? {
                for t in rec.references() {
                    if t.repository() == repo && t.digest().is_none() {
                        add(rec.clone(), Some(t));
                        found = true;
                    }
                }
            }
            if found {
                continue;
            }
        }
        let rec = store.resolve(name)?;
        let tag = parsed.filter(|r| r.digest().is_none() && rec.refs.contains(&r.full()));
        add(rec, tag);
    }
    Ok(out)
}

/// A layer of a manifest: (digest, size).
struct ManifestLayers {
    config: (String, u64),
    layers: Vec<(String, u64)>,
}

fn desc_of(v: &Value, digest: &str, at: &str) -> Result<(String, u64), ArchiveError> {
    let d = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| store_blob(digest, format!("{at} has no digest")))?;
    digest_hex(d)?;
    let s = v
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| store_blob(digest, format!("{at} has no size")))?;
    Ok((d.to_string(), s))
}

fn read_manifest(store: &Store, rec: &ImageRecord) -> Result<ManifestLayers, ArchiveError> {
    let d = &rec.manifest_digest;
    let bytes = store.read_blob(d, MAX_MANIFEST_BYTES)?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| store_blob(d, format!("manifest is not JSON: {e}")))?;
    let config = desc_of(
        v.get("config").unwrap_or(&Value::Null),
        d,
        "manifest config",
    )?;
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| store_blob(d, "manifest has no layers array"))?
        .iter()
        .enumerate()
        .map(|(i, l)| desc_of(l, d, &format!("manifest layers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ManifestLayers { config, layers })
}

fn store_blob(digest: &str, what: impl Into<String>) -> ArchiveError {
    ArchiveError::StoreBlob {
        digest: digest.to_string(),
        what: what.into(),
    }
}

/// One image in docker's manifest.json, fields in docker's order.
#[derive(Serialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn write_docker<W: Write>(
    store: &Store,
    selected: &[Selected],
    tar: &mut TarOut<W>,
) -> Result<(), ArchiveError> {
    let mut written: HashSet<String> = HashSet::new();
    let mut items = Vec::with_capacity(selected.len());
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for sel in selected {
        let m = read_manifest(store, &sel.rec)?;
        let config_digest = sel.rec.id.digest();
        let config = store.read_blob(config_digest, MAX_CONFIG_BYTES)?;
        let cv: Value = serde_json::from_slice(&config)
            .map_err(|e| store_blob(config_digest, format!("config is not JSON: {e}")))?;
        let diff_ids: Vec<&str> = cv
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if diff_ids.len() != m.layers.len() {
            return Err(store_blob(
                config_digest,
                format!(
                    "config has {} diff_ids, the manifest {} layers",
                    diff_ids.len(),
                    m.layers.len()
                ),
            ));
        }
        let mut layer_paths = Vec::with_capacity(m.layers.len());
        for ((digest, _), diff_id) in m.layers.iter().zip(&diff_ids) {
            let dir = digest_hex(diff_id)?.to_string();
            let path = format!("{dir}/layer.tar");
            if written.insert(diff_id.to_string()) {
                let size = uncompressed_size(store, digest, diff_id)?;
                tar.dir(&format!("{dir}/"))?;
                let blob = open_blob(store, digest)?;
                let (_, reader) = decompressed(blob).map_err(|e| read_err(digest, e))?;
                tar.file(&path, size, reader, digest)?;
            }
            layer_paths.push(path);
        }
        let config_name = format!("{}.json", digest_hex(config_digest)?);
        if written.insert(config_digest.to_string()) {
            tar.bytes(&config_name, &config)?;
        }
        let tags: Vec<String> = sel.tags.iter().map(Reference::familiar).collect();
        if let Some(top) = diff_ids.last() {
            for t in &sel.tags {
                if let Some(tag) = t.tag() {
                    repositories
                        .entry(t.familiar_repository())
                        .or_default()
                        .insert(tag.to_string(), digest_hex(top)?.to_string());
                }
            }
        }
        items.push(DockerItem {
            config: config_name,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers: layer_paths,
        });
    }
    let manifest = serde_json::to_vec(&items).map_err(|e| ArchiveError::Write(e.into()))?;
    tar.bytes("manifest.json", &manifest)?;
    if !repositories.is_empty() {
        let r = serde_json::to_vec(&repositories).map_err(|e| ArchiveError::Write(e.into()))?;
        tar.bytes("repositories", &r)?;
    }
    Ok(())
}

fn write_oci<W: Write>(
    store: &Store,
    selected: &[Selected],
    tar: &mut TarOut<W>,
) -> Result<(), ArchiveError> {
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    let mut written: HashSet<String> = HashSet::new();
    let mut manifests = Vec::new();
    for sel in selected {
        let m = read_manifest(store, &sel.rec)?;
        let rec = &sel.rec;
        let blobs = m
            .layers
            .iter()
            .chain(std::iter::once(&m.config))
            .cloned()
            .chain(std::iter::once((
                rec.manifest_digest.clone(),
                rec.manifest_size,
            )));
        for (digest, size) in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let path = format!("blobs/sha256/{}", digest_hex(&digest)?);
            let blob = open_blob(store, &digest)?;
            let len = blob.metadata().map_err(|e| read_err(&digest, e))?.len();
            if len != size {
                return Err(store_blob(
                    &digest,
                    format!("is {len} bytes, its manifest says {size}"),
                ));
            }
            tar.file(&path, size, blob, &digest)?;
        }
        let desc = |annotations: Option<Value>| {
            let mut d = json!({
                "mediaType": rec.manifest_media_type,
                "digest": rec.manifest_digest,
                "size": rec.manifest_size,
            });
            if let (Some(a), Some(o)) = (annotations, d.as_object_mut()) {
                o.insert("annotations".into(), a);
            }
            d
        };
        if sel.tags.is_empty() {
            manifests.push(desc(None));
        }
        for t in &sel.tags {
            let full = t.full();
            manifests.push(desc(Some(json!({
                CONTAINERD_NAME: full,
                REF_NAME: full,
            }))));
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| ArchiveError::Write(e.into()))?;
    tar.bytes("index.json", &bytes)
}

fn open_blob(store: &Store, digest: &str) -> Result<File, ArchiveError> {
    let path = store.blob_path(digest)?;
    File::open(&path).map_err(|e| read_err(digest, e))
}

fn read_err(digest: &str, e: io::Error) -> ArchiveError {
    store_blob(digest, format!("cannot read: {e}"))
}

/// First pass over a layer: its uncompressed size, checked against the config's diff_id.
fn uncompressed_size(store: &Store, digest: &str, diff_id: &str) -> Result<u64, ArchiveError> {
    let blob = open_blob(store, digest)?;
    let (_, mut r) = decompressed(blob).map_err(|e| read_err(digest, e))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(digest, e)),
        };
        sha.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    let actual = format!("sha256:{}", hex(&sha.finalize()));
    if actual != diff_id {
        return Err(store_blob(
            digest,
            format!("uncompressed digest is {actual}, the config's diff_id is {diff_id}"),
        ));
    }
    Ok(size)
}

/// The output tar: ustar headers only, every field fixed but path, type and size.
struct TarOut<W: Write> {
    w: W,
}

impl<W: Write> TarOut<W> {
    fn header(&mut self, path: &str, kind: tar::EntryType, size: u64) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| ArchiveError::Write(io::Error::other(format!("{path}: {e}"))))?;
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h.set_cksum();
        self.w.write_all(h.as_bytes()).map_err(ArchiveError::Write)
    }

    fn dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.header(path, tar::EntryType::Directory, 0)
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.file(path, data.len() as u64, data, path)
    }

    /// Writes a regular file of exactly `size` bytes from `r`; `source` names the store blob
    /// for errors. When it is a blob digest the content is also checked against it.
    fn file(
        &mut self,
        path: &str,
        size: u64,
        mut r: impl Read,
        source: &str,
    ) -> Result<(), ArchiveError> {
        self.header(path, tar::EntryType::Regular, size)?;
        let check = digest_hex(source).is_ok() && path.starts_with("blobs/");
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = match r.read(chunk) {
                Ok(0) => {
                    return Err(store_blob(
                        source,
                        format!("ended after {} of {size} bytes", size - left),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(source, e)),
            };
            let data = chunk.get(..n).unwrap_or_default();
            if check {
                sha.update(data);
            }
            self.w.write_all(data).map_err(ArchiveError::Write)?;
            left -= n as u64;
        }
        let mut extra = [0u8; 1];
        if matches!(r.read(&mut extra), Ok(n) if n > 0) {
            return Err(store_blob(source, format!("holds more than {size} bytes")));
        }
        if check {
            let actual = format!("sha256:{}", hex(&sha.finalize()));
            if actual != source {
                return Err(store_blob(source, format!("content digest is {actual}")));
            }
        }
        let pad = (512 - size % 512) % 512;
        self.w
            .write_all(&[0u8; 512][..pad as usize])
            .map_err(ArchiveError::Write)
    }

    fn finish(mut self) -> Result<W, ArchiveError> {
        self.w
            .write_all(&[0u8; 1024])
            .map_err(ArchiveError::Write)?;
        self.w.flush().map_err(ArchiveError::Write)?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_without_tag() {
        assert!(name_only("myvm"));
        assert!(name_only("localhost:5000/team/app"));
        assert!(!name_only("myvm:1"));
        assert!(!name_only("myvm@sha256:00"));
        assert!(!name_only("localhost:5000/app:2"));
    }

    #[test]
    fn tar_out_is_a_valid_tar() {
        let mut t = TarOut { w: Vec::new() };
        t.dir("a/").unwrap();
        t.bytes("a/b.json", b"{}").unwrap();
        let data = t.finish().unwrap();
        assert_eq!(data.len() % 512, 0);
        let mut ar = tar::Archive::new(&data[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a/", "a/b.json"]);
        let mut t = TarOut { w: Vec::new() };
        let e = t.file("x", 10, &b"short"[..], "x").unwrap_err();
        assert!(e.to_string().contains("ended after 5 of 10"), "{e}");
    }
}

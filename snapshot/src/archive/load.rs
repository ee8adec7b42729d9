//! `load`: reads a docker-archive or an oci-archive (told apart by `manifest.json` versus
//! `index.json`) from any `Read` (a file or a pipe), in one pass, and adds its images to the
//! store.
//!
//! Everything in the archive is hostile: the tar is read with the layer reader's parser
//! (checksums, capped pax headers, `..` refused, a missing end marker is a truncation), JSON
//! members are read under size caps, every name a manifest gives must be a member, every
//! `blobs/sha256/<hex>` member must hash to its name, and docker-archive layers must hash to
//! the config's diff_ids. Members are spooled into temp files inside the store (small ones into
//! memory). Layer-looking members (`*.tar`) that arrive compressed are re-gzip'd while they
//! stream in; uncompressed ones (what docker and skopeo write) are spooled as they are, because
//! their digest is their diff_id: a layer the store already has (same diff_id) is then taken
//! from the store instead of being compressed again, and a new one is gzip'd from the spool.
//! Only when every image checked out are the blobs
//! moved into `blobs/sha256/` and the images indexed: a bad archive leaves the store as it was
//! (its temp files are deleted on the way out).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::save::CONTAINERD_NAME;
use super::{decompressed, member_err, ArchiveError, GcHold};
use crate::image::{manifest_bytes, LayerRef};
use crate::layer::compress::{Compression, Compressor, DEFAULT_GZIP_LEVEL};
use crate::layer::LayerReader;
use crate::store::blobs::{digest_hex, hex, TempFile};
use crate::store::index::{is_index_type, is_manifest_type, REF_NAME};
use crate::store::{ImageId, Reference, Store, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use crate::{EntryKind, FileTree};

/// Members up to this size are kept in memory...
const SMALL: u64 = 1 << 20;
/// ...as long as all of them together stay under this.
const MEM_BUDGET: u64 = 64 << 20;
/// Most members (of any kind) an archive may have...
const MAX_MEMBERS: usize = 20_000;
/// ...and the longest name one may have (archives of images use names under 100 bytes), so
/// the member table stays under about 20 MiB whatever the archive says.
const MAX_NAME: usize = 1024;
/// Most members spooled to temp files at once; each holds an open, locked file.
const MAX_SPOOLED: usize = 1_000;
/// Most images in one manifest.json or index.json.
const MAX_IMAGES: usize = 1_000;
/// Most layers one image may have (overlayfs stacks at most 500 lower dirs).
const MAX_LAYERS: usize = 500;
/// Most symlink hops when resolving a member name.
const MAX_LINK_HOPS: usize = 16;

/// One image the load added: its id and the names it got (familiar form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: ImageId,
    pub names: Vec<String>,
}

/// Where a member's bytes are.
enum Data {
    Mem(Vec<u8>),
    File(TempFile),
    /// Streamed straight into a gzip'd layer (see `Spool::gz`); the raw bytes are gone.
    Consumed,
}

/// A regular-file member.
struct Member {
    size: u64,
    /// sha256 of the member's bytes.
    digest: String,
    data: Data,
}

enum Node {
    File(Member),
    /// A symlink or hardlink member: the member name it leads to.
    Link(String),
}

/// A docker-archive layer, gzip'd into a temp file, waiting to become a blob.
struct GzLayer {
    temp: TempFile,
    layer: LayerRef,
}

struct Spool {
    nodes: HashMap<String, Node>,
    /// Gzip'd layers by the member name they came from.
    gz: HashMap<String, GzLayer>,
    mem_used: u64,
    spooled: usize,
}

/// Reads an archive from `input` and adds its images to the store. Returns what was loaded,
/// in archive order.
pub fn load(store: &Store, input: impl Read) -> Result<Vec<LoadedImage>, ArchiveError> {
    // From the start: the plan may count on blobs the store already has.
    let _hold = GcHold::new(store)?;
    let mut spool = read_members(store, input)?;
    let plan = if spool.nodes.contains_key("manifest.json") {
        docker_plan(store, &mut spool)?
    } else if spool.nodes.contains_key("index.json") {
        oci_plan(store, &mut spool)?
    } else {
        return Err(ArchiveError::Archive(
            "neither manifest.json (docker-archive) nor index.json (oci-archive) found".into(),
        ));
    };
    commit(store, spool, plan)
}

/// An image ready to be indexed once its blobs are in place.
struct PlannedImage {
    manifest: Vec<u8>,
    config: Vec<u8>,
    names: Vec<Reference>,
}

struct Plan {
    images: Vec<PlannedImage>,
    /// Members whose bytes become blobs as they are (oci-archive), keyed by member name.
    raw_blobs: Vec<String>,
    /// Gzip'd layers (docker-archive), keyed by member name.
    gz_blobs: Vec<String>,
}

fn read_members(store: &Store, input: impl Read) -> Result<Spool, ArchiveError> {
    let mut tree = LayerReader::new(input)
        .map_err(|e| ArchiveError::Archive(format!("cannot read the start: {e}")))?;
    let mut spool = Spool {
        nodes: HashMap::new(),
        gz: HashMap::new(),
        mem_used: 0,
        spooled: 0,
    };
    while let Some(e) = tree
        .next_entry()
        .map_err(|e| ArchiveError::Archive(e.to_string()))?
    {
        let name = String::from_utf8(e.path.clone())
            .map_err(|_| member_err(&e.display_path(), "name is not UTF-8"))?;
        if name.len() > MAX_NAME {
            return Err(member_err(
                &name.chars().take(100).collect::<String>(),
                format!("name of {} bytes, over the {MAX_NAME}-byte cap", name.len()),
            ));
        }
        if spool.nodes.len() >= MAX_MEMBERS {
            return Err(ArchiveError::Archive(format!(
                "more than {MAX_MEMBERS} members"
            )));
        }
        if spool.nodes.contains_key(&name) {
            return Err(member_err(&name, "appears twice in the archive"));
        }
        let node = match e.kind {
            EntryKind::Dir => continue,
            EntryKind::Symlink => {
                let target = e.link_target.clone().unwrap_or_default();
                Node::Link(resolve_symlink(&name, &target)?)
            }
            EntryKind::Hardlink => {
                let target = e.link_target.clone().unwrap_or_default();
                Node::Link(
                    String::from_utf8(target)
                        .map_err(|_| member_err(&name, "link target is not UTF-8"))?,
                )
            }
            EntryKind::File => Node::File(spool_member(store, &mut spool, &name, e.size, {
                tree.content()
            })?),
            other => {
                return Err(member_err(
                    &name,
                    format!("{other:?} entries do not belong in an image archive"),
                ))
            }
        };
        spool.nodes.insert(name, node);
    }
    Ok(spool)
}

/// A symlink target as a member name: relative to the link's directory, never above the root.
fn resolve_symlink(name: &str, target: &[u8]) -> Result<String, ArchiveError> {
    let target =
        std::str::from_utf8(target).map_err(|_| member_err(name, "symlink target is not UTF-8"))?;
    if target.starts_with('/') {
        return Err(member_err(
            name,
            format!("symlink target {target:?} is absolute"),
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(member_err(
                        name,
                        format!("symlink target {target:?} leaves the archive"),
                    ));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Docker-archive layer files: `<v1 id>/layer.tar` (docker), `<hex>.tar` (skopeo).
fn layer_like(name: &str) -> bool {
    !name.starts_with("blobs/") && name.ends_with(".tar")
}

/// Hashes and counts what passes through.
struct HashReader<R> {
    inner: R,
    sha: Sha256,
    count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(buf.get(..n).unwrap_or_default());
        self.count += n as u64;
        Ok(n)
    }
}

fn spool_member(
    store: &Store,
    spool: &mut Spool,
    name: &str,
    size: u64,
    content: &mut dyn Read,
) -> Result<Member, ArchiveError> {
    let io_err = |e: io::Error| member_err(name, e.to_string());
    let mut hr = HashReader {
        inner: content,
        sha: Sha256::new(),
        count: 0,
    };
    let data = if layer_like(name) {
        let mut peek = BufReader::with_capacity(256 * 1024, &mut hr);
        let head = peek.fill_buf().map_err(io_err)?;
        let compressed =
            head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        if compressed {
            check_spool_count(spool)?;
            let gz = gzip_layer(store, name, &mut peek)?;
            // The layer stream may end before the member does (padding after a gzip stream).
            io::copy(&mut peek, &mut io::sink()).map_err(io_err)?;
            spool.gz.insert(name.to_string(), gz);
            Data::Consumed
        } else {
            // An uncompressed layer's digest is its diff_id: spooled as it is, a layer the
            // store already has is not compressed again (see `docker_plan`).
            spool_raw(store, spool, size, &mut peek).map_err(|e| e.named(name))?
        }
    } else {
        spool_raw(store, spool, size, &mut hr).map_err(|e| e.named(name))?
    };
    if hr.count != size {
        return Err(member_err(
            name,
            format!("holds {} bytes, its header says {size}", hr.count),
        ));
    }
    let digest = format!("sha256:{}", hex(&hr.sha.finalize()));
    if let Some(h) = name.strip_prefix("blobs/sha256/") {
        if h != digest_hex(&digest)? {
            return Err(member_err(
                name,
                format!("content digest is {digest}, not the one its name gives"),
            ));
        }
    }
    Ok(Member { size, digest, data })
}

/// Why spooling failed, before the member's name is known to the message.
enum SpoolError {
    Io(io::Error),
    Other(ArchiveError),
}

impl SpoolError {
    fn named(self, name: &str) -> ArchiveError {
        match self {
            SpoolError::Io(e) => member_err(name, e.to_string()),
            SpoolError::Other(e) => e,
        }
    }
}

/// Keeps a member's bytes: in memory when small and the budget allows, else in a temp file.
fn spool_raw(
    store: &Store,
    spool: &mut Spool,
    size: u64,
    r: &mut dyn Read,
) -> Result<Data, SpoolError> {
    if size <= SMALL && spool.mem_used + size <= MEM_BUDGET {
        // size is at most SMALL here.
        let mut v = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.read_to_end(&mut v).map_err(SpoolError::Io)?;
        spool.mem_used += size;
        Ok(Data::Mem(v))
    } else {
        check_spool_count(spool).map_err(SpoolError::Other)?;
        let mut t = TempFile::new(&store.paths, "load").map_err(|e| SpoolError::Other(e.into()))?;
        io::copy(r, t.file()).map_err(SpoolError::Io)?;
        Ok(Data::File(t))
    }
}

fn check_spool_count(spool: &mut Spool) -> Result<(), ArchiveError> {
    spool.spooled += 1;
    if spool.spooled > MAX_SPOOLED {
        return Err(ArchiveError::Archive(format!(
            "more than {MAX_SPOOLED} large members"
        )));
    }
    Ok(())
}

/// Decompresses (when gzip or zstd) and re-compresses a layer stream with the layer writer's
/// gzip, into a temp file of the store.
fn gzip_layer(store: &Store, name: &str, r: impl Read) -> Result<GzLayer, ArchiveError> {
    let io_err = |e: io::Error| member_err(name, format!("reading the layer: {e}"));
    let mut temp = TempFile::new(&store.paths, "load")?;
    let (_, mut src) = decompressed(r).map_err(io_err)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut c = Compressor::new(temp.file(), Compression::Gzip, DEFAULT_GZIP_LEVEL, threads)
        .map_err(|e| member_err(name, format!("setting up gzip: {e}")))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        c.write_all(buf.get(..n).unwrap_or_default())
            .map_err(|e| member_err(name, format!("writing the gzip'd layer: {e}")))?;
    }
    let (_, d) = c
        .finish()
        .map_err(|e| member_err(name, format!("writing the gzip'd layer: {e}")))?;
    Ok(GzLayer {
        temp,
        layer: LayerRef {
            digest: d.digest,
            diff_id: d.diff_id,
            size: d.size,
            media_type: Compression::Gzip.media_type().to_string(),
        },
    })
}

/// The member a name leads to, following links; `from` names who asked, for the error.
fn resolve(spool: &Spool, from: &str, name: &str) -> Result<String, ArchiveError> {
    let mut cur = name.trim_start_matches("./").to_string();
    for _ in 0..MAX_LINK_HOPS {
        match spool.nodes.get(&cur) {
            Some(Node::File(_)) => return Ok(cur),
            Some(Node::Link(t)) => cur = t.clone(),
            None => {
                return Err(member_err(
                    from,
                    format!("names {name:?}, which the archive does not contain"),
                ))
            }
        }
    }
    Err(member_err(
        from,
        format!("names {name:?}, a chain of more than {MAX_LINK_HOPS} links"),
    ))
}

fn member<'a>(spool: &'a mut Spool, key: &str) -> Result<&'a mut Member, ArchiveError> {
    match spool.nodes.get_mut(key) {
        Some(Node::File(m)) => Ok(m),
        _ => Err(member_err(key, "is not a regular file")),
    }
}

/// A JSON-sized member's bytes, at most `cap`.
fn read_small(spool: &mut Spool, key: &str, cap: usize) -> Result<Vec<u8>, ArchiveError> {
    let m = member(spool, key)?;
    if m.size > cap as u64 {
        return Err(member_err(
            key,
            format!("{} bytes, over the {cap}-byte cap for JSON", m.size),
        ));
    }
    match &mut m.data {
        Data::Mem(v) => Ok(v.clone()),
        Data::File(t) => {
            let f = t.file();
            f.seek(SeekFrom::Start(0))
                .map_err(|e| member_err(key, e.to_string()))?;
            let mut v = Vec::new();
            f.take(cap as u64)
                .read_to_end(&mut v)
                .map_err(|e| member_err(key, e.to_string()))?;
            Ok(v)
        }
        Data::Consumed => Err(member_err(key, "is a layer, not a JSON document")),
    }
}

fn parse_json(key: &str, bytes: &[u8]) -> Result<Value, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|e| member_err(key, format!("not valid JSON: {e}")))
}

/// One image of docker's manifest.json.
#[derive(Deserialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn diff_ids(key: &str, config: &Value) -> Result<Vec<String>, ArchiveError> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| member_err(key, "config has no rootfs.diff_ids"))?;
    ids.iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.as_str().unwrap_or_default();
            digest_hex(d)
                .map(|_| d.to_string())
                .map_err(|e| member_err(key, format!("rootfs.diff_ids[{i}]: {e}")))
        })
        .collect()
}

fn docker_plan(store: &Store, spool: &mut Spool) -> Result<Plan, ArchiveError> {
    const MJ: &str = "manifest.json";
    let key = resolve(spool, MJ, MJ)?;
    let bytes = read_small(spool, &key, MAX_MANIFEST_BYTES)?;
    let items: Vec<DockerItem> = serde_json::from_slice(&bytes)
        .map_err(|e| member_err(MJ, format!("not a docker-archive manifest: {e}")))?;
    if items.is_empty() || items.len() > MAX_IMAGES {
        return Err(member_err(
            MJ,
            format!("lists {} images (expected 1 to {MAX_IMAGES})", items.len()),
        ));
    }
    let mut plan = Plan {
        images: Vec::new(),
        raw_blobs: Vec::new(),
        gz_blobs: Vec::new(),
    };
    let mut known: Option<HashMap<String, LayerRef>> = None;
    for (i, item) in items.iter().enumerate() {
        let at = format!("{MJ} (image {i})");
        let ckey = resolve(spool, &at, &item.config)?;
        let config = read_small(spool, &ckey, MAX_CONFIG_BYTES)?;
        let cv = parse_json(&ckey, &config)?;
        let ids = diff_ids(&ckey, &cv)?;
        if item.layers.len() > MAX_LAYERS || ids.len() != item.layers.len() {
            return Err(member_err(
                &ckey,
                format!(
                    "config lists {} diff_ids, {MJ} {} layers (at most {MAX_LAYERS})",
                    ids.len(),
                    item.layers.len()
                ),
            ));
        }
        let mut layers = Vec::with_capacity(ids.len());
        for (path, diff_id) in item.layers.iter().zip(&ids) {
            let lkey = resolve(spool, &at, path)?;
            if !spool.gz.contains_key(&lkey) {
                let raw_is_diff_id = matches!(
                    spool.nodes.get(&lkey),
                    Some(Node::File(m)) if &m.digest == diff_id
                );
                if raw_is_diff_id {
                    let known = known.get_or_insert_with(|| known_layers(store));
                    if let Some(layer) = known.get(diff_id) {
                        layers.push(layer.clone());
                        continue;
                    }
                }
                let gz = gzip_spooled(store, spool, &lkey)?;
                // The raw copy is no longer needed: give its disk space back now.
                if let Ok(m) = member(spool, &lkey) {
                    m.data = Data::Consumed;
                }
                spool.gz.insert(lkey.clone(), gz);
            }
            let layer = spool
                .gz
                .get(&lkey)
                .map(|g| g.layer.clone())
                .ok_or_else(|| member_err(&lkey, "layer went missing"))?;
            if &layer.diff_id != diff_id {
                return Err(member_err(
                    &lkey,
                    format!(
                        "uncompressed digest is {}, the config {ckey} says {diff_id}",
                        layer.diff_id
                    ),
                ));
            }
            if !plan.gz_blobs.contains(&lkey) {
                plan.gz_blobs.push(lkey);
            }
            layers.push(layer);
        }
        let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config)));
        let manifest = manifest_bytes(&config_digest, config.len() as u64, &layers)?;
        let mut names = Vec::new();
        for t in item.repo_tags.iter().flatten() {
            let r = Reference::parse(t).map_err(|e| member_err(MJ, format!("RepoTags: {e}")))?;
            if r.digest().is_some() || !r.fits_oci_ref_name() {
                return Err(member_err(
                    MJ,
                    format!("RepoTags entry {t:?} cannot name an image in the store"),
                ));
            }
            if !names.contains(&r) {
                names.push(r);
            }
        }
        plan.images.push(PlannedImage {
            manifest,
            config,
            names,
        });
    }
    Ok(plan)
}

/// The OCI layers the store's images have, by diff_id. Images that cannot be read are passed
/// over: this only saves work, a layer missing here is compressed from the archive.
fn known_layers(store: &Store) -> HashMap<String, LayerRef> {
    let mut out = HashMap::new();
    for rec in store.images().unwrap_or_default() {
        let json = |d: &str, cap: usize| {
            store
                .read_blob(d, cap)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        };
        let (Some(m), Some(c)) = (
            json(&rec.manifest_digest, MAX_MANIFEST_BYTES),
            json(rec.id.digest(), MAX_CONFIG_BYTES),
        ) else {
            continue;
        };
        let layers = m.get("layers").and_then(Value::as_array);
        let ids = c.pointer("/rootfs/diff_ids").and_then(Value::as_array);
        let (Some(layers), Some(ids)) = (layers, ids) else {
            continue;
        };
        for (l, id) in layers.iter().zip(ids) {
            let field = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default();
            let (digest, media_type) = (field("digest"), field("mediaType"));
            let (Some(id), Some(size)) = (id.as_str(), l.get("size").and_then(Value::as_u64))
            else {
                continue;
            };
            if media_type.starts_with("application/vnd.oci.image.layer.v1.tar")
                && store.has_blob(digest).unwrap_or(false)
            {
                out.insert(
                    id.to_string(),
                    LayerRef {
                        digest: digest.to_string(),
                        diff_id: id.to_string(),
                        size,
                        media_type: media_type.to_string(),
                    },
                );
            }
        }
    }
    out
}

/// Gzips a layer member that was spooled raw (not named `*.tar`, e.g. docker 25's
/// `blobs/sha256/<hex>`).
fn gzip_spooled(store: &Store, spool: &mut Spool, key: &str) -> Result<GzLayer, ArchiveError> {
    let m = member(spool, key)?;
    match &mut m.data {
        Data::Mem(v) => gzip_layer(store, key, &v[..]),
        Data::File(t) => {
            let f = t.file();
            f.seek(SeekFrom::Start(0))
                .map_err(|e| member_err(key, e.to_string()))?;
            gzip_layer(store, key, f)
        }
        Data::Consumed => Err(member_err(key, "layer data went missing")),
    }
}

/// The name an oci-archive descriptor gives its image: containerd's annotation, else a
/// ref.name that is a whole reference (`x:t`, `docker.io/a/b:t`); a bare tag names no
/// repository, so such an image loads unnamed.
fn oci_name(desc: &Value) -> Result<Option<Reference>, ArchiveError> {
    let ann = |k: &str| desc.pointer(&format!("/annotations/{}", k.replace('/', "~1")));
    let name = ann(CONTAINERD_NAME).and_then(Value::as_str).or_else(|| {
        ann(REF_NAME)
            .and_then(Value::as_str)
            .filter(|r| r.contains(':') || r.contains('/'))
    });
    match name {
        None => Ok(None),
        Some(n) => {
            let r = Reference::parse(n)
                .map_err(|e| member_err("index.json", format!("image name: {e}")))?;
            if !r.fits_oci_ref_name() {
                return Err(member_err(
                    "index.json",
                    format!("image name {n:?} cannot name an image in the store"),
                ));
            }
            Ok(r.digest().is_none().then_some(r))
        }
    }
}

/// (digest, size) of a descriptor.
fn descriptor(key: &str, v: &Value, at: &str) -> Result<(String, u64), ArchiveError> {
    let d = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| member_err(key, format!("{at}: no digest")))?;
    digest_hex(d).map_err(|e| member_err(key, format!("{at}: {e}")))?;
    let s = v
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| member_err(key, format!("{at}: no size")))?;
    Ok((d.to_string(), s))
}

/// The member holding blob `digest`, checked to be `size` bytes; None when the archive lacks
/// it but the store has it already.
fn blob_member(
    store: &Store,
    spool: &Spool,
    from: &str,
    digest: &str,
    size: u64,
) -> Result<Option<String>, ArchiveError> {
    let name = format!("blobs/sha256/{}", digest_hex(digest)?);
    match resolve(spool, from, &name) {
        Ok(key) => {
            let m = match spool.nodes.get(&key) {
                Some(Node::File(m)) => m,
                _ => return Err(member_err(&key, "is not a regular file")),
            };
            if m.size != size {
                return Err(member_err(
                    &key,
                    format!("is {} bytes, {from} says {size}", m.size),
                ));
            }
            if m.digest != digest {
                return Err(member_err(&key, format!("content digest is {}", m.digest)));
            }
            Ok(Some(key))
        }
        Err(_) if store.has_blob(digest)? => Ok(None),
        Err(e) => Err(e),
    }
}

fn oci_plan(store: &Store, spool: &mut Spool) -> Result<Plan, ArchiveError> {
    const IX: &str = "index.json";
    let lkey = resolve(spool, "the archive", "oci-layout")?;
    let layout = parse_json(&lkey, &read_small(spool, &lkey, 4096)?)?;
    if layout.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
        return Err(member_err(&lkey, "imageLayoutVersion is not \"1.0.0\""));
    }
    let ikey = resolve(spool, IX, IX)?;
    let index = parse_json(&ikey, &read_small(spool, &ikey, MAX_MANIFEST_BYTES)?)?;
    let descs = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| member_err(IX, "no manifests array"))?;
    if descs.is_empty() || descs.len() > MAX_IMAGES {
        return Err(member_err(
            IX,
            format!(
                "lists {} manifests (expected 1 to {MAX_IMAGES})",
                descs.len()
            ),
        ));
    }
    let mut plan = Plan {
        images: Vec::new(),
        raw_blobs: Vec::new(),
        gz_blobs: Vec::new(),
    };
    let mut by_digest: HashMap<String, usize> = HashMap::new();
    for (i, desc) in descs.iter().enumerate() {
        let at = format!("manifests[{i}]");
        let mt = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (mdigest, msize) = if is_index_type(mt) {
            platform_manifest(store, spool, desc, &at)?
        } else if is_manifest_type(mt) {
            descriptor(IX, desc, &at)?
        } else {
            return Err(member_err(
                IX,
                format!("{at} has media type {mt:?}, not an image manifest"),
            ));
        };
        let name = oci_name(desc)?;
        if let Some(&j) = by_digest.get(&mdigest) {
            if let (Some(n), Some(img)) = (name, plan.images.get_mut(j)) {
                if !img.names.contains(&n) {
                    img.names.push(n);
                }
            }
            continue;
        }
        let mkey = blob_member(store, spool, IX, &mdigest, msize)?.ok_or_else(|| {
            member_err(
                IX,
                format!("{at} names manifest {mdigest}, which the archive does not contain"),
            )
        })?;
        let manifest = read_small(spool, &mkey, MAX_MANIFEST_BYTES)?;
        let mv = parse_json(&mkey, &manifest)?;
        let (cdigest, csize) =
            descriptor(&mkey, mv.get("config").unwrap_or(&Value::Null), "config")?;
        let layers = mv
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| member_err(&mkey, "no layers array"))?;
        if layers.len() > MAX_LAYERS {
            return Err(member_err(
                &mkey,
                format!("{} layers, more than {MAX_LAYERS}", layers.len()),
            ));
        }
        let config = match blob_member(store, spool, &mkey, &cdigest, csize)? {
            Some(ckey) => {
                let c = read_small(spool, &ckey, MAX_CONFIG_BYTES)?;
                let ids = diff_ids(&ckey, &parse_json(&ckey, &c)?)?;
                if ids.len() != layers.len() {
                    return Err(member_err(
                        &ckey,
                        format!(
                            "config lists {} diff_ids, manifest {mkey} {} layers",
                            ids.len(),
                            layers.len()
                        ),
                    ));
                }
                c
            }
            None => store.read_blob(&cdigest, MAX_CONFIG_BYTES)?,
        };
        for (j, l) in layers.iter().enumerate() {
            let (d, s) = descriptor(&mkey, l, &format!("layers[{j}]"))?;
            if let Some(k) = blob_member(store, spool, &mkey, &d, s)? {
                if !plan.raw_blobs.contains(&k) {
                    plan.raw_blobs.push(k);
                }
            }
        }
        by_digest.insert(mdigest, plan.images.len());
        plan.images.push(PlannedImage {
            manifest,
            config,
            names: name.into_iter().collect(),
        });
    }
    Ok(plan)
}

/// For a multi-platform image (a nested index): the manifest for this machine's platform
/// (linux and our architecture), which must be in the archive; other platforms' blobs are
/// usually left out of archives and are not loaded.
fn platform_manifest(
    store: &Store,
    spool: &mut Spool,
    desc: &Value,
    at: &str,
) -> Result<(String, u64), ArchiveError> {
    const IX: &str = "index.json";
    let (digest, size) = descriptor(IX, desc, at)?;
    let key = blob_member(store, spool, IX, &digest, size)?.ok_or_else(|| {
        member_err(
            IX,
            format!("{at} names index {digest}, which the archive does not contain"),
        )
    })?;
    let nested = parse_json(&key, &read_small(spool, &key, MAX_MANIFEST_BYTES)?)?;
    let arch = crate::image::host_goarch();
    let entries = nested
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| member_err(&key, "no manifests array"))?;
    for (i, m) in entries.iter().enumerate().take(MAX_IMAGES) {
        let platform = |k: &str| m.pointer(&format!("/platform/{k}")).and_then(Value::as_str);
        let mt = m
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if is_manifest_type(mt)
            && platform("os") == Some("linux")
            && platform("architecture") == Some(arch)
        {
            return descriptor(&key, m, &format!("manifests[{i}]"));
        }
    }
    Err(member_err(
        &key,
        format!("{at}: a multi-platform image without a linux/{arch} manifest"),
    ))
}

/// Moves the planned blobs into the store and indexes the images.
fn commit(store: &Store, mut spool: Spool, plan: Plan) -> Result<Vec<LoadedImage>, ArchiveError> {
    let mut done: HashSet<String> = HashSet::new();
    for key in &plan.gz_blobs {
        if let Some(g) = spool.gz.remove(key) {
            if done.insert(g.layer.digest.clone()) {
                place(store, g.temp, &g.layer.digest)?;
            }
        }
    }
    for key in &plan.raw_blobs {
        if let Some(Node::File(m)) = spool.nodes.remove(key) {
            if !done.insert(m.digest.clone()) {
                continue;
            }
            match m.data {
                Data::File(t) => place(store, t, &m.digest)?,
                Data::Mem(v) => {
                    store.put_blob(&v)?;
                }
                Data::Consumed => return Err(member_err(key, "blob data went missing")),
            }
        }
    }
    let mut out = Vec::with_capacity(plan.images.len());
    for img in plan.images {
        store.put_blob(&img.config)?;
        let id = store.add_image(&img.manifest, img.names.first())?;
        let mdigest = format!("sha256:{}", hex(&Sha256::digest(&img.manifest)));
        for r in img.names.iter().skip(1) {
            store.tag(&mdigest, r)?;
        }
        out.push(LoadedImage {
            id,
            names: img.names.iter().map(Reference::familiar).collect(),
        });
    }
    Ok(out)
}

/// Renames a finished temp file into `blobs/sha256/` (or drops it when the blob is there),
/// registered as pending so gc keeps it until the index names it.
fn place(store: &Store, mut temp: TempFile, digest: &str) -> Result<(), ArchiveError> {
    let dest = store.blob_path(digest)?;
    temp.file()
        .flush()
        .map_err(|e| member_err(digest, format!("flushing: {e}")))?;
    let mut st = store.pins.state();
    if !dest.exists() {
        temp.persist(&dest)?;
    }
    st.pending.insert(digest.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_archive() {
        assert_eq!(
            resolve_symlink("abc/layer.tar", b"../def.tar").unwrap(),
            "def.tar"
        );
        assert_eq!(resolve_symlink("a/b", b"./c//d").unwrap(), "a/c/d");
        assert!(resolve_symlink("a/b", b"../../x").is_err());
        assert!(resolve_symlink("a", b"/etc/passwd").is_err());
    }

    #[test]
    fn layer_names() {
        assert!(layer_like("0123/layer.tar"));
        assert!(layer_like("0123.tar"));
        assert!(!layer_like("blobs/sha256/0123"));
        assert!(!layer_like("blobs/x.tar"));
        assert!(!layer_like("manifest.json"));
    }

    #[test]
    fn oci_names() {
        use serde_json::json;
        let d = |a: Value| json!({ "annotations": a });
        let n = |v: Value| oci_name(&v).unwrap().map(|r| r.familiar());
        assert_eq!(n(d(json!({ REF_NAME: "x:t" }))), Some("x:t".to_string()));
        assert_eq!(n(d(json!({ REF_NAME: "latest" }))), None);
        assert_eq!(
            n(d(
                json!({ REF_NAME: "latest", CONTAINERD_NAME: "docker.io/a/b:1" })
            )),
            Some("a/b:1".to_string())
        );
        assert!(oci_name(&d(json!({ REF_NAME: "a__b:1" }))).is_err());
        assert_eq!(n(json!({})), None);
    }
}

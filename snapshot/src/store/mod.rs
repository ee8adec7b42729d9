//! decant's image store: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/`) that skopeo (`oci:ROOT:REF`), umoci (`--image ROOT:REF`) and
//! oci-image-tool read as is. decant's own files (locks, temp files) live in `.decant/`, which
//! those tools ignore.
//!
//! Tags are manifest descriptors in index.json carrying the annotation
//! `org.opencontainers.image.ref.name` = the docker-normalised full reference
//! (`docker.io/library/myvm:latest`). Why that form: skopeo, umoci and oci-image-tool accept it
//! (each was tried); it is what docker and containerd store, so `docker load` of an exported
//! layout shows `myvm:latest`; and one canonical spelling means `myvm`, `myvm:latest` and
//! `docker.io/library/myvm` all find the same tag. Users see the familiar form (`myvm:latest`).
//! References whose full form breaks the OCI ref.name grammar (`a__b`, tag `v1-`) are refused,
//! because umoci and skopeo would refuse to read them back.
//!
//! An image whose last name moved elsewhere stays in the index as an unnamed descriptor
//! (`<none>`, "dangling") until `prune_dangling` or `remove` drops it; blobs no descriptor
//! reaches are deleted by `gc`.

pub mod blobs;
pub mod gc;
pub mod index;
pub mod lock;
pub mod reference;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde_json::Value;

pub use blobs::BlobWriter;
pub use gc::GcReport;
pub use reference::{Reference, ReferenceError};

use blobs::{digest_hex, read_verified, Pins};
use index::{is_manifest_type, Desc, Group, Index, OCI_MANIFEST};
use lock::{Mode, Paths};

/// Largest manifest or index blob we read. Registries cap manifests at 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config we read; configs carry history and labels, rarely above a few KiB.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

const LAYOUT_BYTES: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Everything that can go wrong in the store. Each message is one line naming the file or
/// object and the problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: not an OCI image layout: {why}", path.display())]
    NotALayout { path: PathBuf, why: String },
    #[error("{}: corrupt index (left untouched): {why}", path.display())]
    CorruptIndex { path: PathBuf, why: String },
    #[error("invalid digest {digest:?}: {why}")]
    BadDigest { digest: String, why: &'static str },
    #[error("blob {digest} is missing ({})", path.display())]
    BlobMissing { digest: String, path: PathBuf },
    #[error("{}: content digest is {actual}, expected {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{}: {size} bytes, over the {max}-byte cap for this kind of blob", path.display())]
    BlobTooLarge {
        path: PathBuf,
        size: u64,
        max: usize,
    },
    #[error("{what} {digest}: {why}")]
    BadBlob {
        what: &'static str,
        digest: String,
        why: String,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("reference {0:?} cannot be stored: its full form breaks the OCI ref.name grammar that skopeo and umoci enforce (use single '.', '_' or '-' separators, or '--', and end tags with a letter or digit)")]
    RefNotStorable(String),
    #[error("cannot tag with a digest reference {0:?}: a tag names a repository and a tag")]
    DigestTag(String),
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("ambiguous image id prefix {prefix:?}: it matches {count} images")]
    Ambiguous { prefix: String, count: usize },
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    Conflict { id: String },
    #[error("garbage collection: {0}")]
    Gc(String),
    #[error("building {0}")]
    Build(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An image id: the digest of its config blob. Displays as docker does, 12 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    /// `sha256:<64 hex>`.
    pub fn digest(&self) -> &str {
        &self.0
    }
    /// The 12-hex short form.
    pub fn short(&self) -> &str {
        let hex = self.0.strip_prefix("sha256:").unwrap_or(&self.0);
        hex.get(..12).unwrap_or(hex)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// One image (one manifest) in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Names as stored (`docker.io/library/myvm:latest`); empty for a dangling image.
    pub refs: Vec<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    /// The config digest, i.e. the image id.
    pub id: ImageId,
    /// The config's `created`, when it has one.
    pub created: Option<String>,
    /// Config size plus the sizes of all layers (compressed, as stored).
    pub size: u64,
}

impl ImageRecord {
    /// The names parsed as references; names other tools stored that are not references
    /// (umoci's bare `latest`) are left out.
    pub fn references(&self) -> Vec<Reference> {
        self.refs
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .collect()
    }

    /// The names as users type them (`myvm:latest`); foreign names as stored.
    pub fn familiar_refs(&self) -> Vec<String> {
        self.refs.iter().map(|r| familiar(r)).collect()
    }
}

fn familiar(stored: &str) -> String {
    match Reference::parse(stored) {
        Ok(r) if r.full() == stored => r.familiar(),
        _ => stored.to_string(),
    }
}

/// One line of `rmi` / prune output, docker's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveLine {
    /// A name removed (familiar form).
    Untagged(String),
    /// An image removed from the index (its id, `sha256:..`).
    Deleted(String),
}

impl fmt::Display for RemoveLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveLine::Untagged(r) => write!(f, "Untagged: {r}"),
            RemoveLine::Deleted(d) => write!(f, "Deleted: {d}"),
        }
    }
}

/// A blob as stored: digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
}

/// How a user's string found an image.
enum Found {
    /// By a name; the stored ref.
    Ref(String),
    /// By id, digest or name@digest.
    Id,
}

/// Keeps this handle's shared gc.lock while an operation needs blobs to stay.
struct Hold<'a>(&'a Pins);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.writer_finished();
    }
}

/// An open store. Cheap to open; several handles (threads or processes) may use one root.
#[derive(Debug)]
pub struct Store {
    pub(crate) paths: Paths,
    pub(crate) pins: Arc<Pins>,
}

impl Store {
    /// `$DECANT_ROOT`; else `/var/lib/decant` for root; else `$XDG_DATA_HOME/decant` or
    /// `~/.local/share/decant`.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("DECANT_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if effective_uid() == Some(0) {
            return PathBuf::from("/var/lib/decant");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
            if x.is_absolute() {
                return x.join("decant");
            }
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/share/decant"),
            None => PathBuf::from("/var/lib/decant"),
        }
    }

    /// Opens the store at `root`, creating an empty layout when `root` is missing or empty.
    /// A non-empty directory that is not an OCI layout is refused, untouched.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let paths = Paths {
            root: root.to_path_buf(),
        };
        check_layout_or_empty(&paths)?;
        let private = paths.private();
        fs::create_dir_all(&private)
            .map_err(|e| StoreError::io("create directory", &private, e))?;
        {
            // Several commands may create one new store at the same moment: initialise it
            // under the lock, and check again once we hold it.
            let _l = lock::lock(&paths.index_lock(), Mode::Exclusive)?;
            check_layout_or_empty(&paths)?;
            for d in [paths.tmp(), paths.blobs()] {
                fs::create_dir_all(&d).map_err(|e| StoreError::io("create directory", &d, e))?;
            }
            if !paths.layout().exists() {
                blobs::write_atomic(&paths, &paths.layout(), LAYOUT_BYTES)?;
            }
            if !paths.index().exists() {
                blobs::write_atomic(&paths, &paths.index(), &Index::empty_bytes())?;
            }
        }
        blobs::clean_temp(&paths)?;
        let pins = Arc::new(Pins::new(paths.gc_lock()));
        Ok(Store { paths, pins })
    }

    pub fn root(&self) -> &Path {
        &self.paths.root
    }

    /// A directory inside the store for temporary files (spooled tarballs): on the same
    /// filesystem as the blobs, cleaned by `open` and `gc`.
    pub fn temp_dir(&self) -> PathBuf {
        self.paths.tmp()
    }

    /// [`Store::temp_dir`] of the store at `root`, without opening (or creating) it: a
    /// command that may fail on its input before it stores anything spools there and opens
    /// the store only when it has something to put in it.
    pub fn temp_dir_of(root: &Path) -> PathBuf {
        Paths {
            root: root.to_path_buf(),
        }
        .tmp()
    }

    /// A writer for a new blob; see [`BlobWriter`].
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::new(&self.paths, self.pins.clone())
    }

    /// Stores `bytes` as a blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<BlobInfo, StoreError> {
        let mut w = self.blob_writer()?;
        let tmp = self.paths.tmp();
        w.write_all(bytes)
            .map_err(|e| StoreError::io("write blob in", &tmp, e))?;
        let (digest, size) = w.commit(None)?;
        Ok(BlobInfo { digest, size })
    }

    /// Where blob `digest` lives. Only `sha256:<64 hex>` is accepted.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.paths.blobs().join(digest_hex(digest)?))
    }

    /// Whether blob `digest` is present.
    pub fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Reads blob `digest` (at most `max` bytes) and checks its content against the digest.
    pub fn read_blob(&self, digest: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        read_verified(&self.paths.blobs(), digest, max)
    }

    /// Indexes an image whose config and layer blobs are already stored: stores
    /// `manifest_bytes` as they are and names the manifest `tag` (moving the tag if another
    /// image had it). Returns the image id.
    pub fn add_image(
        &self,
        manifest_bytes: &[u8],
        tag: Option<&Reference>,
    ) -> Result<ImageId, StoreError> {
        let ref_name = tag.map(storable_tag).transpose()?;
        let _hold = self.hold()?;
        let digest = blobs::sha256_digest(manifest_bytes);
        if manifest_bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad_blob(
                "manifest",
                &digest,
                format!(
                    "{} bytes, over the {MAX_MANIFEST_BYTES}-byte cap",
                    manifest_bytes.len()
                ),
            ));
        }
        let parsed = parse_manifest(&digest, manifest_bytes)?;
        for (what, d, size) in parsed.blobs() {
            let path = self.blob_path(d)?;
            let meta = fs::metadata(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::BlobMissing {
                    digest: d.to_string(),
                    path: path.clone(),
                },
                _ => StoreError::io("stat blob", &path, e),
            })?;
            if meta.len() != size {
                return Err(bad_blob(
                    "manifest",
                    &digest,
                    format!(
                        "{what} {d} is {} bytes in the store, the manifest says {size}",
                        meta.len()
                    ),
                ));
            }
        }
        let info = self.put_blob(manifest_bytes)?;
        let desc = Desc {
            media_type: parsed.media_type.clone(),
            digest: info.digest.clone(),
            size: info.size,
            ref_name: None,
        };
        self.with_index(|ix| {
            match &ref_name {
                Some(r) => ix.set_ref(r, &desc)?,
                None => ix.ensure(&desc)?,
            }
            Ok(((), true))
        })?;
        let mut indexed: Vec<String> = parsed.blobs().map(|(_, d, _)| d.to_string()).collect();
        indexed.push(info.digest);
        self.pins.indexed(&indexed);
        Ok(ImageId(parsed.config_digest))
    }

    /// Every image (manifest) the index names, in index order, named or dangling. Nested
    /// indexes (multi-platform images other tools put here) are kept but not listed.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let ix = Index::read(&self.paths.index())?;
        self.records(&ix)
    }

    /// Finds one image by: a name (`myvm`, `myvm:1`, `docker.io/library/myvm:latest`), a
    /// name as another tool stored it, `name@sha256:..`, `sha256:<id or prefix>`, a manifest
    /// digest, or a bare id prefix (any unique prefix, as docker).
    pub fn resolve(&self, s: &str) -> Result<ImageRecord, StoreError> {
        let ix = Index::read(&self.paths.index())?;
        let (g, _) = self.find(&ix, s)?;
        self.record(&g)
    }

    /// Adds the name `new` to `image`, moving it from any image that had it.
    pub fn tag(&self, image: &str, new: &Reference) -> Result<(), StoreError> {
        let r = storable_tag(new)?;
        self.with_index(|ix| {
            let (g, _) = self.find(ix, image)?;
            ix.set_ref(&r, &g.desc())?;
            Ok(((), true))
        })
    }

    /// `rmi`, docker semantics: a name only untags while other names remain; the last name
    /// also deletes the image. By id, an image named in several repositories needs `force`
    /// (and then loses every name). Unreachable blobs are then collected when no import holds
    /// the store (otherwise the next `gc` does it).
    pub fn remove(&self, image: &str, force: bool) -> Result<Vec<RemoveLine>, StoreError> {
        let lines = self.with_index(|ix| {
            let (g, found) = self.find(ix, image)?;
            let mut lines = Vec::new();
            let delete = match found {
                Found::Ref(r) => {
                    ix.remove_ref(&r, false);
                    lines.push(RemoveLine::Untagged(familiar(&r)));
                    g.refs.len() <= 1
                }
                Found::Id => {
                    let repos: std::collections::HashSet<String> = g
                        .refs
                        .iter()
                        .map(|r| match Reference::parse(r) {
                            Ok(p) => p.repository(),
                            Err(_) => r.clone(),
                        })
                        .collect();
                    if repos.len() > 1 && !force {
                        let id = self
                            .config_digest_of(&g)
                            .unwrap_or_else(|_| g.digest.clone());
                        return Err(StoreError::Conflict { id: short_hex(&id) });
                    }
                    for r in &g.refs {
                        lines.push(RemoveLine::Untagged(familiar(r)));
                    }
                    true
                }
            };
            if delete {
                ix.remove_digest(&g.digest);
                let id = self
                    .config_digest_of(&g)
                    .unwrap_or_else(|_| g.digest.clone());
                lines.push(RemoveLine::Deleted(id));
            }
            Ok((lines, true))
        })?;
        self.collect_quietly();
        Ok(lines)
    }

    /// Removes every dangling (unnamed) image from the index, then collects unreachable
    /// blobs when no import holds the store.
    pub fn prune_dangling(&self) -> Result<Vec<RemoveLine>, StoreError> {
        let lines = self.with_index(|ix| {
            let mut lines = Vec::new();
            for g in ix.groups() {
                if g.refs.is_empty() && is_manifest_type(&g.media_type) {
                    ix.remove_digest(&g.digest);
                    let id = self
                        .config_digest_of(&g)
                        .unwrap_or_else(|_| g.digest.clone());
                    lines.push(RemoveLine::Deleted(id));
                }
            }
            let changed = !lines.is_empty();
            Ok((lines, changed))
        })?;
        self.collect_quietly();
        Ok(lines)
    }

    /// Deletes every blob no manifest in index.json reaches, and temp files of dead writers.
    /// Waits for running imports (they hold `gc.lock` shared) to index their blobs first.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        gc::collect(self, true)?.ok_or_else(|| StoreError::Gc("lock not taken".into()))
    }

    /// The image's manifest, parsed, with its exact bytes.
    pub fn manifest(&self, rec: &ImageRecord) -> Result<(ImageManifest, Vec<u8>), StoreError> {
        let bytes = self.read_blob(&rec.manifest_digest, MAX_MANIFEST_BYTES)?;
        let m: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad_blob("manifest", &rec.manifest_digest, e.to_string()))?;
        Ok((m, bytes))
    }

    /// The image's config, parsed, with its exact bytes.
    pub fn config(&self, rec: &ImageRecord) -> Result<(ImageConfiguration, Vec<u8>), StoreError> {
        let bytes = self.read_blob(rec.id.digest(), MAX_CONFIG_BYTES)?;
        let c: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| bad_blob("config", rec.id.digest(), e.to_string()))?;
        Ok((c, bytes))
    }

    /// The blob sweep after rmi/prune: skipped when an import holds the store, and its errors
    /// (a damaged manifest elsewhere, say) do not undo or fail the index change that already
    /// happened; an explicit `gc` reports them.
    fn collect_quietly(&self) {
        let _ = gc::collect(self, false);
    }

    fn hold(&self) -> Result<Hold<'_>, StoreError> {
        self.pins.writer_started()?;
        Ok(Hold(&self.pins))
    }

    /// Read-modify-write of index.json under the exclusive index lock. `f` returns its result
    /// and whether it changed the index.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut Index) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let _l = lock::lock(&self.paths.index_lock(), Mode::Exclusive)?;
        let mut ix = Index::read(&self.paths.index())?;
        let (out, changed) = f(&mut ix)?;
        if changed {
            ix.write(&self.paths)?;
        }
        Ok(out)
    }

    fn records(&self, ix: &Index) -> Result<Vec<ImageRecord>, StoreError> {
        ix.groups()
            .into_iter()
            .filter(|g| is_manifest_type(&g.media_type))
            .map(|g| self.record(&g))
            .collect()
    }

    fn record(&self, g: &Group) -> Result<ImageRecord, StoreError> {
        let bytes = self.read_blob(&g.digest, MAX_MANIFEST_BYTES)?;
        let m = parse_manifest(&g.digest, &bytes)?;
        let size = m.blobs().fold(0u64, |acc, (_, _, s)| acc.saturating_add(s));
        let created = match self.read_blob(&m.config_digest, MAX_CONFIG_BYTES) {
            Ok(c) => serde_json::from_slice::<Value>(&c)
                .ok()
                .and_then(|v| v.get("created").and_then(Value::as_str).map(str::to_string)),
            Err(e @ (StoreError::DigestMismatch { .. } | StoreError::Io { .. })) => return Err(e),
            Err(_) => None,
        };
        Ok(ImageRecord {
            refs: g.refs.clone(),
            manifest_digest: g.digest.clone(),
            manifest_media_type: g.media_type.clone(),
            manifest_size: g.size,
            id: ImageId(m.config_digest),
            created,
            size,
        })
    }

    fn config_digest_of(&self, g: &Group) -> Result<String, StoreError> {
        let bytes = self.read_blob(&g.digest, MAX_MANIFEST_BYTES)?;
        Ok(parse_manifest(&g.digest, &bytes)?.config_digest)
    }

    fn find(&self, ix: &Index, s: &str) -> Result<(Group, Found), StoreError> {
        let groups: Vec<Group> = ix
            .groups()
            .into_iter()
            .filter(|g| is_manifest_type(&g.media_type))
            .collect();
        let no_such = || StoreError::NoSuchImage(s.to_string());
        let hexish = |h: &str| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        };
        if let Some(h) = s.strip_prefix("sha256:") {
            if !hexish(h) {
                return Err(no_such());
            }
            if let Some(g) = groups.iter().find(|g| g.digest == s) {
                return Ok((g.clone(), Found::Id));
            }
            return self.by_id_prefix(&groups, h, s);
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = r.digest() {
                let repo = r.repository();
                let g = groups.iter().find(|g| {
                    g.digest == d
                        && g.refs
                            .iter()
                            .any(|x| Reference::parse(x).is_ok_and(|x| x.repository() == repo))
                });
                return g.map(|g| (g.clone(), Found::Id)).ok_or_else(no_such);
            }
            let full = r.full();
            if let Some(g) = groups.iter().find(|g| g.refs.contains(&full)) {
                return Ok((g.clone(), Found::Ref(full)));
            }
        }
        if let Some(g) = groups.iter().find(|g| g.refs.iter().any(|x| x == s)) {
            return Ok((g.clone(), Found::Ref(s.to_string())));
        }
        if hexish(s) {
            return self.by_id_prefix(&groups, s, s);
        }
        Err(no_such())
    }

    fn by_id_prefix(
        &self,
        groups: &[Group],
        hex: &str,
        input: &str,
    ) -> Result<(Group, Found), StoreError> {
        let mut hits = Vec::new();
        for g in groups {
            let id = self.config_digest_of(g)?;
            if id
                .strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex))
            {
                hits.push(g.clone());
            }
        }
        match hits.len() {
            0 => Err(StoreError::NoSuchImage(input.to_string())),
            1 => Ok((hits.remove(0), Found::Id)),
            n => Err(StoreError::Ambiguous {
                prefix: input.to_string(),
                count: n,
            }),
        }
    }
}

/// The fields of a manifest the store needs, read from its JSON without re-serializing it.
struct ParsedManifest {
    media_type: String,
    config_digest: String,
    config_size: u64,
    layers: Vec<(String, u64)>,
}

impl ParsedManifest {
    fn blobs(&self) -> impl Iterator<Item = (&'static str, &str, u64)> {
        std::iter::once(("config", self.config_digest.as_str(), self.config_size))
            .chain(self.layers.iter().map(|(d, s)| ("layer", d.as_str(), *s)))
    }
}

fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<ParsedManifest, StoreError> {
    let bad = |why: String| bad_blob("manifest", digest, why);
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(bad("schemaVersion is not 2".into()));
    }
    let media_type = match v.get("mediaType") {
        None => OCI_MANIFEST.to_string(),
        Some(Value::String(s)) if is_manifest_type(s) => s.clone(),
        Some(other) => return Err(bad(format!("mediaType {other} is not an image manifest"))),
    };
    let desc = |d: &Value, at: String| -> Result<(String, u64), StoreError> {
        let digest = d
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}: digest missing")))?;
        digest_hex(digest).map_err(|e| bad(format!("{at}: {e}")))?;
        let size = d
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("{at}: size missing or not a byte count")))?;
        Ok((digest.to_string(), size))
    };
    let config = v
        .get("config")
        .ok_or_else(|| bad("config missing".into()))?;
    let (config_digest, config_size) = desc(config, "config".into())?;
    let layers = match v.get("layers") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, l)| desc(l, format!("layers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("layers missing or not an array".into())),
    };
    Ok(ParsedManifest {
        media_type,
        config_digest,
        config_size,
        layers,
    })
}

fn bad_blob(what: &'static str, digest: &str, why: String) -> StoreError {
    StoreError::BadBlob {
        what,
        digest: digest.to_string(),
        why,
    }
}

fn storable_tag(r: &Reference) -> Result<String, StoreError> {
    if r.digest().is_some() {
        return Err(StoreError::DigestTag(r.familiar()));
    }
    if !r.fits_oci_ref_name() {
        return Err(StoreError::RefNotStorable(r.familiar()));
    }
    Ok(r.full())
}

fn short_hex(digest: &str) -> String {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    h.get(..12).unwrap_or(h).to_string()
}

/// A root that is an OCI layout, or a missing/empty directory we may turn into one.
fn check_layout_or_empty(paths: &Paths) -> Result<(), StoreError> {
    let root = &paths.root;
    let not = |why: String| StoreError::NotALayout {
        path: root.clone(),
        why,
    };
    match fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("stat", root, e)),
        Ok(m) if !m.is_dir() => return Err(not("not a directory".into())),
        Ok(_) => {}
    }
    match fs::read(paths.layout()) {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(bytes.get(..4096).unwrap_or(&bytes))
                .map_err(|e| not(format!("oci-layout is not valid JSON: {e}")))?;
            match v.get("imageLayoutVersion").and_then(Value::as_str) {
                Some("1.0.0") => Ok(()),
                other => Err(not(format!(
                    "oci-layout has imageLayoutVersion {other:?}, expected \"1.0.0\""
                ))),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Empty, or a layout another decant is creating right now (it holds the lock and
            // writes oci-layout next): only decant's own entries are there.
            let ours = paths.private().is_dir();
            let rd = fs::read_dir(root).map_err(|e| StoreError::io("list", root, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| StoreError::io("list", root, e))?;
                let name = entry.file_name();
                let initialising =
                    ours && (name == "blobs" || name == "index.json" || name == "oci-layout");
                if name != ".decant" && !initialising {
                    return Err(not(format!(
                        "no oci-layout file, and the directory is not empty (has {:?})",
                        entry.file_name()
                    )));
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::io("read", &paths.layout(), e)),
    }
}

/// The effective uid, from /proc (std has no geteuid and we keep libc out).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_follows_the_environment() {
        // The only test in this crate that touches these variables.
        std::env::set_var("DECANT_ROOT", "/srv/decant-test");
        assert_eq!(Store::default_root(), PathBuf::from("/srv/decant-test"));
        std::env::remove_var("DECANT_ROOT");
        let want = if effective_uid() == Some(0) {
            PathBuf::from("/var/lib/decant")
        } else {
            match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
                Some(x) if x.is_absolute() => x.join("decant"),
                _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".local/share/decant"),
            }
        };
        assert_eq!(Store::default_root(), want);
    }

    #[test]
    fn image_id_display() {
        let id = ImageId(format!("sha256:{}", "0123456789ab".repeat(5) + "cdef"));
        assert_eq!(id.to_string(), "0123456789ab");
        assert_eq!(id.short(), "0123456789ab");
    }
}

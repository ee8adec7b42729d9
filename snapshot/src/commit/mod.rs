//! `commit`, `diff` and `export`: a container's filesystem changes (its overlayfs upper dir
//! over the image's unpacked layers) turned into an OCI diff layer and a new image, listed as
//! docker's `A`/`C`/`D` lines, or flattened into one tar.
//!
//! The layer goes through the same `LayerWriter` as import, so xattrs (security.capability
//! kept, overlay's own never), hardlinks keyed on (dev, ino), devices and fifos come out the
//! same way. This module knows nothing of containers: the caller (the CLI, with the engine)
//! says where the upper dir and the layers are and what to leave out.

pub mod compare;
pub mod walk;

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::image::{self, apply_change, ChangeError, Healthcheck, HistoryEntry, ImageMeta};
use crate::image::{rfc3339_utc, LayerRef};
use crate::layer::entry::{path_order, EntryKind, FileTree};
use crate::layer::{write_tree, LayerError, LayerOptions, LayerSummary};
use crate::layer::{Compression, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::store::{ImageId, ImageRecord, Reference, Store, StoreError};

pub use walk::{LayerDir, Mode, Walker};

/// Why a commit, diff or export failed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("reading the container's files: {0}")]
    Walk(#[source] io::Error),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("image {image}: config: {problem}")]
    Config { image: String, problem: String },
    #[error(transparent)]
    Init(#[from] crate::init_layer::InitLayerError),
}

/// A container's filesystem as commit sees it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The overlayfs upper dir (the container's changes).
    pub upper: PathBuf,
    /// The image's unpacked layers, bottom first (as `ContainerConfig::lower_dirs`).
    pub lowers: Vec<PathBuf>,
    /// Absolute container paths left out of the changes (mount points of binds, volumes,
    /// tmpfs, decant's /etc/hosts, /etc/hostname, /etc/resolv.conf).
    pub exclude: Vec<String>,
    /// The root as the container sees it (its merged mount): compared with the layers (see
    /// `compare`) when there is no upper dir.
    pub root: Option<PathBuf>,
}

impl Source {
    /// The tree-compare fallback applies: no upper dir, but a root to compare.
    fn fallback(&self) -> Option<LayerDir> {
        let root = self.root.as_ref().filter(|_| !self.upper.is_dir())?;
        let mut top = self.upper_dir();
        top.root = root.clone();
        Some(top)
    }

    fn upper_dir(&self) -> LayerDir {
        LayerDir {
            root: self.upper.clone(),
            exclude: self
                .exclude
                .iter()
                .map(|p| p.trim_matches('/').as_bytes().to_vec())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    fn lower_dirs(&self) -> Vec<LayerDir> {
        self.lowers.iter().rev().map(LayerDir::new).collect()
    }

    /// The changes as an OCI diff layer (whiteouts included), in `FileTree` order: the upper
    /// dir converted, or without one the root compared with the layers.
    pub fn changes(&self) -> Result<Box<dyn FileTree>, CommitError> {
        if let Some(root) = self.fallback() {
            let t =
                compare::CompareTree::new(&root, &self.lower_dirs()).map_err(CommitError::Walk)?;
            return Ok(Box::new(t));
        }
        let w = Walker::new(vec![self.upper_dir()], Mode::Diff).map_err(CommitError::Walk)?;
        Ok(Box::new(w))
    }

    /// The whole filesystem as the container sees it (less the exclusions), flattened.
    pub fn merged(&self) -> Result<Walker, CommitError> {
        if let Some(top) = self.fallback() {
            return Walker::new(vec![top], Mode::Merge).map_err(CommitError::Walk);
        }
        let mut layers = vec![self.upper_dir()];
        layers.extend(self.lower_dirs());
        Walker::new(layers, Mode::Merge).map_err(CommitError::Walk)
    }
}

/// One line of `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Relative to the root, without the leading '/'.
    pub path: Vec<u8>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        };
        write!(f, "{k} /{}", String::from_utf8_lossy(&self.path))
    }
}

/// What changed, as docker lists it: every path of the upper dir is `A` (not in the image) or
/// `C` (in it: changed, or a directory holding a change), each whiteout a `D`, and an opaque
/// directory's hidden image contents `D` too. Sorted by path.
pub fn diff(src: &Source) -> Result<Vec<Change>, CommitError> {
    if let Some(root) = src.fallback() {
        return compare::diff_by_compare(&root, &src.lower_dirs()).map_err(CommitError::Walk);
    }
    let lowers = Walker::new(src.lower_dirs(), Mode::Merge).map_err(CommitError::Walk)?;
    let mut upper = src.changes()?;
    let mut out = Vec::new();
    let mut deleted_from_opaque: Vec<Vec<u8>> = Vec::new();
    let mut plain_dirs = std::collections::HashSet::new();
    while let Some(e) = upper.next_entry().map_err(CommitError::Walk)? {
        let (parent, name) = match e.path.iter().rposition(|&b| b == b'/') {
            Some(i) => (
                e.path.get(..i).unwrap_or_default(),
                e.path.get(i + 1..).unwrap_or_default(),
            ),
            None => (&[][..], e.path.as_slice()),
        };
        if name == OPAQUE_MARKER.as_bytes() {
            deleted_from_opaque.push(parent.to_vec());
            continue;
        }
        if let Some(gone) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let mut p = parent.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(gone);
            out.push(Change {
                kind: ChangeKind::Deleted,
                path: p,
            });
            continue;
        }
        let lower = lowers.lookup(&e.path).map_err(CommitError::Walk)?;
        let kind = if lower.is_some() {
            ChangeKind::Changed
        } else {
            ChangeKind::Added
        };
        if let Some(l) = lower.filter(|l| l.is_dir() && e.kind == EntryKind::Dir) {
            use std::os::unix::fs::MetadataExt;
            if l.mode() & 0o7777 == e.mode && l.uid() == e.uid && l.gid() == e.gid {
                plain_dirs.insert(e.path.clone());
            }
        }
        out.push(Change { kind, path: e.path });
    }
    // A directory copied up only because of an excluded mount point below it (/etc for
    // /etc/hosts), with nothing listed below it and its owner and mode unchanged, is not a
    // change of the container's (docker keeps those mount points out of the container layer).
    let mut listed_below: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for c in &out {
        let mut p = c.path.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = p.get(..i).unwrap_or_default();
            if !listed_below.insert(p.to_vec()) {
                break;
            }
        }
    }
    out.retain(|c| {
        c.kind != ChangeKind::Changed
            || !plain_dirs.contains(&c.path)
            || listed_below.contains(&c.path)
            || deleted_from_opaque.contains(&c.path)
    });
    // An opaque directory hides what the image had in it: each hidden name that the container
    // did not recreate is a deletion.
    for dir in deleted_from_opaque {
        let kept: std::collections::HashSet<Vec<u8>> = out
            .iter()
            .filter(|c| c.kind != ChangeKind::Deleted)
            .map(|c| c.path.clone())
            .collect();
        for name in lowers.list(&dir).map_err(CommitError::Walk)? {
            let mut p = dir.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
            if !kept.contains(&p) {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: p,
                });
            }
        }
    }
    out.sort_by(|a, b| path_order(&a.path, &b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// Streams the flattened filesystem into `out` as an uncompressed tar.
pub fn export<W: Write + Send>(src: &Source, out: W) -> Result<(W, LayerSummary), CommitError> {
    let mut tree = src.merged()?;
    let opts = LayerOptions {
        compression: Compression::None,
        threads: 1,
        keep_selinux: true,
        ..LayerOptions::default()
    };
    Ok(write_tree(&mut tree, out, opts)?)
}

/// How to make the new image.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-m`: the history comment.
    pub message: Option<String>,
    /// `-a`: the image's and the history entry's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile-style instructions applied to the parent's config.
    pub changes: Vec<String>,
    /// One layer holding the whole filesystem instead of parent layers + the changes.
    pub squash: bool,
    /// The history's `created_by` (what made the layer).
    pub created_by: String,
    /// Labels added to the config (after `changes`).
    pub labels: Vec<(String, String)>,
    /// Compression and threads of the new layer; whiteouts are always allowed.
    pub layer: LayerOptions,
    /// `--init`: this static decant-init goes into a layer of its own on top (unless the
    /// parent has that very layer) and becomes the entrypoint in services mode, as
    /// `import --init` does; `changes` still apply after it.
    pub init: Option<PathBuf>,
}

/// A committed image.
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: ImageId,
    pub layer: LayerSummary,
    pub layers: usize,
}

/// Writes the container's changes as a new layer on top of `parent` (or, with `squash`, its
/// whole filesystem as the only layer), and stores the image, named `tag` when given. Blobs
/// are written before the index names them, so an interrupted commit leaves only unreferenced
/// blobs that `gc` removes.
pub fn commit(
    store: &Store,
    parent: &ImageRecord,
    src: &Source,
    opts: &CommitOptions,
    tag: Option<&Reference>,
) -> Result<Committed, CommitError> {
    let (manifest, _) = store.manifest(parent)?;
    let (_, raw) = store.config(parent)?;
    let mut meta = meta_from_config(&raw).map_err(|problem| CommitError::Config {
        image: parent.id.to_string(),
        problem,
    })?;
    let diff_ids = diff_ids(&raw).map_err(|problem| CommitError::Config {
        image: parent.id.to_string(),
        problem,
    })?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(CommitError::Config {
            image: parent.id.to_string(),
            problem: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    let mut layers: Vec<LayerRef> = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| LayerRef {
            digest: d.digest().to_string(),
            diff_id,
            size: d.size(),
            media_type: d.media_type().to_string(),
        })
        .collect();

    let mut layer_opts = opts.layer.clone();
    layer_opts.allow_whiteouts = true;
    let mut tree: Box<dyn FileTree> = if opts.squash {
        layer_opts.allow_whiteouts = false;
        Box::new(src.merged()?)
    } else {
        src.changes()?
    };
    let blob = store.blob_writer()?;
    let (blob, summary) = write_tree(&mut *tree, blob, layer_opts)?;
    blob.commit(Some(&summary.digest))?;
    let new = LayerRef {
        digest: summary.digest.clone(),
        diff_id: summary.diff_id.clone(),
        size: summary.size,
        media_type: summary.media_type.to_string(),
    };

    meta.created = ImageMeta::default().created;
    meta.author = opts.author.clone();
    if opts.squash {
        for h in &mut meta.history {
            h.empty_layer = true;
        }
        layers.clear();
    }
    meta.history.push(HistoryEntry {
        created: Some(meta.created.clone()),
        author: opts.author.clone(),
        created_by: Some(opts.created_by.clone()),
        comment: opts.message.clone().filter(|m| !m.is_empty()),
        empty_layer: false,
    });
    layers.push(new);
    if let Some(init) = &opts.init {
        let (l, _) = crate::init_layer::write_init_layer(store, init, opts.layer.clone())?;
        if !layers.iter().any(|x| x.digest == l.digest) {
            meta.history.push(HistoryEntry {
                created: Some(meta.created.clone()),
                author: opts.author.clone(),
                created_by: Some(format!(
                    "decant commit --init: decant-init at {}",
                    crate::init_layer::INIT_IN_IMAGE
                )),
                comment: None,
                empty_layer: false,
            });
            layers.push(l);
        }
        crate::init_layer::set_init_entrypoint(&mut meta);
    }
    for c in &opts.changes {
        apply_change(&mut meta, c)?;
    }
    for (k, v) in &opts.labels {
        meta.labels.insert(k.clone(), v.clone());
    }
    let id = image::write_image(store, &meta, &layers, tag)?;
    Ok(Committed {
        id,
        layer: summary,
        layers: layers.len(),
    })
}

/// The config's `rootfs.diff_ids`.
fn diff_ids(raw: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    v.pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or("no rootfs.diff_ids")?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or("a diff_id is not a string")
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(str::to_string)
}

/// An image config (JSON) read back as the `ImageMeta` it would be written from, history and
/// docker's `Healthcheck` included, so a commit keeps what the parent said.
pub fn meta_from_config(raw: &[u8]) -> Result<ImageMeta, String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let strings = |p: &str| -> Option<Vec<String>> {
        v.pointer(p).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    };
    let keys = |p: &str| -> Vec<String> {
        v.pointer(p)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut meta = ImageMeta {
        architecture: s("/architecture").ok_or("no architecture")?,
        os: s("/os").ok_or("no os")?,
        os_version: s("/os.version"),
        variant: s("/variant"),
        created: s("/created").unwrap_or_else(|| rfc3339_utc(0)),
        author: s("/author"),
        cmd: strings("/config/Cmd"),
        entrypoint: strings("/config/Entrypoint"),
        env: strings("/config/Env").unwrap_or_default(),
        working_dir: s("/config/WorkingDir").filter(|w| !w.is_empty()),
        user: s("/config/User").filter(|u| !u.is_empty()),
        exposed_ports: keys("/config/ExposedPorts").into_iter().collect(),
        volumes: keys("/config/Volumes").into_iter().collect(),
        labels: Default::default(),
        stop_signal: s("/config/StopSignal").filter(|x| !x.is_empty()),
        healthcheck: v
            .pointer("/config/Healthcheck")
            .and_then(Healthcheck::from_json),
        history: Vec::new(),
    };
    if let Some(l) = v.pointer("/config/Labels").and_then(Value::as_object) {
        for (k, val) in l {
            if let Some(val) = val.as_str() {
                meta.labels.insert(k.clone(), val.to_string());
            }
        }
    }
    if let Some(h) = v.pointer("/history").and_then(Value::as_array) {
        for e in h {
            let g = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            meta.history.push(HistoryEntry {
                created: g("created"),
                author: g("author"),
                created_by: g("created_by"),
                comment: g("comment"),
                empty_layer: e.get("empty_layer").and_then(Value::as_bool) == Some(true),
            });
        }
    }
    Ok(meta)
}

//! One import, start to end: an opened plan's tree → the container policy → the layer writer
//! → a blob in the store → an image config and manifest → a tag. The binary only parses flags
//! and prints; everything a test needs to reach lives here.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use snapshot::image::{self, ImageMeta, LayerRef};
use snapshot::layer::{write_tree, LayerOptions, LayerSummary};
use snapshot::store::{Reference, Store};
use snapshot::{Entry, FileTree};

use crate::plan::{Opened, Plan};
use crate::policy::{Policy, PolicyFilter, PolicyOptions, PolicyReport};

/// Why an import failed. The store is left as it was: the layer blob is only committed once
/// complete and verified, the tag only added after it.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Layer(#[from] snapshot::layer::LayerError),
    #[error("{0}")]
    Store(#[from] snapshot::store::StoreError),
    #[error("{0}")]
    Policy(#[from] crate::glob::GlobError),
    #[error("{0}")]
    InitLayer(#[from] snapshot::init_layer::InitLayerError),
    #[error("--change {instruction:?}: {problem}")]
    Change {
        instruction: String,
        problem: String,
    },
}

/// What the user asked for beyond the source.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub tag: Option<Reference>,
    pub policy: PolicyOptions,
    pub layer: LayerOptions,
    /// `--change` instructions in Dockerfile syntax, applied in order.
    pub changes: Vec<String>,
    /// `--message`: the history comment.
    pub message: Option<String>,
    /// `--init`: the static decant-init to put into a layer of its own and boot the image
    /// with (`snapshot::init_layer`).
    pub init: Option<std::path::PathBuf>,
}

/// What an import did, for the summary and `--format json`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub plan: Plan,
    pub policy: PolicyReport,
    pub layer: LayerSummary,
    /// `sha256:<hex>` of the config blob.
    pub image_id: String,
    pub tag: Option<String>,
    pub bytes_read: u64,
    pub elapsed: Duration,
}

/// Runs an import. `bytes_read` is advanced as file data is read (poll it for progress).
pub fn run(
    opened: Opened,
    req: &ImportRequest,
    store: &Store,
    bytes_read: Arc<AtomicU64>,
) -> Result<ImportReport, ImportError> {
    let start = Instant::now();
    let Opened { plan, tree } = opened;

    let mut meta = ImageMeta::default();
    if let Some(g) = &plan.guest {
        meta.os = g.os.clone();
        meta.architecture = g.architecture.clone();
        meta.variant = g.variant.clone();
        meta.os_version = g.os_release.as_ref().and_then(|r| r.version_id.clone());
        if let Some(sh) = &g.shell {
            meta.cmd = Some(vec![sh.clone()]);
        }
    }
    if let Some(t) = req.layer.clamp_mtime {
        // Reproducible images: the config's time is clamped like the files' times.
        meta.created = image::rfc3339_utc(t);
    }
    if req.init.is_some() {
        // Before the changes, so a --change ENTRYPOINT or CMD still wins.
        snapshot::init_layer::set_init_entrypoint(&mut meta);
    }
    for c in &req.changes {
        image::apply_change(&mut meta, c).map_err(|e| ImportError::Change {
            instruction: c.clone(),
            problem: e.to_string(),
        })?;
    }

    let policy = Policy::new(req.policy.clone())?;
    let mut filtered = PolicyFilter::new(
        CountingTree {
            inner: tree,
            count: bytes_read.clone(),
        },
        policy,
    );
    let blob = store.blob_writer()?;
    let (blob, layer) = write_tree(&mut filtered, blob, req.layer.clone())?;
    let policy_report = filtered.report().clone();
    blob.commit(Some(&layer.digest))?;

    let source_name = plan
        .source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stdin".into());
    meta.labels
        .insert("io.decant.import.source".into(), source_name.clone());
    if let Some(d) = &plan.disk {
        meta.labels
            .insert("io.decant.import.format".into(), d.format.clone());
    } else {
        meta.labels
            .insert("io.decant.import.format".into(), plan.kind.clone());
    }
    if let Some(r) = &plan.root {
        meta.labels
            .insert("io.decant.import.root".into(), r.clone());
    }
    if let Some(pretty) = plan
        .guest
        .as_ref()
        .and_then(|g| g.os_release.as_ref())
        .and_then(|r| r.pretty_name.clone())
    {
        meta.labels.insert("io.decant.import.os".into(), pretty);
    }
    meta.history.push(image::HistoryEntry {
        created: Some(meta.created.clone()),
        author: None,
        created_by: Some(format!("decant import {source_name}")),
        comment: req.message.clone(),
        empty_layer: false,
    });
    let mut layers = vec![LayerRef {
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        size: layer.size,
        media_type: layer.media_type.to_string(),
    }];
    if let Some(init) = &req.init {
        let (l, _) = snapshot::init_layer::write_init_layer(store, init, req.layer.clone())?;
        layers.push(l);
        meta.history.push(image::HistoryEntry {
            created: Some(meta.created.clone()),
            author: None,
            created_by: Some(format!(
                "decant import --init: {}",
                snapshot::init_layer::INIT_IN_IMAGE
            )),
            comment: None,
            empty_layer: false,
        });
    }
    let id = image::write_image(store, &meta, &layers, req.tag.as_ref())?;
    Ok(ImportReport {
        plan,
        policy: policy_report,
        layer,
        image_id: id.digest().to_string(),
        tag: req.tag.as_ref().map(|t| t.to_string()),
        bytes_read: bytes_read.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

/// The plan's tree with a counter on the file data read through it, for the progress bar.
struct CountingTree {
    inner: Box<dyn FileTree + Send>,
    count: Arc<AtomicU64>,
}

impl Read for CountingTree {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.content().read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl FileTree for CountingTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.inner.next_entry()
    }
    fn content(&mut self) -> &mut dyn Read {
        self
    }
}

//! Image metadata (what goes into the OCI image config) and [`write_image`], which builds the
//! config and manifest with oci-spec's builders, stores both blobs and indexes the image.
//!
//! Both JSON documents are written with sorted keys: oci-spec keeps labels, ports and volumes
//! in `HashMap`s, whose order changes from run to run, and the config digest is the image id,
//! so the same input must give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde_json::Value;

use crate::store::blobs::digest_hex;
use crate::store::{ImageId, Reference, Store, StoreError};

pub use crate::change::{apply_change, ChangeError, Healthcheck};

/// One history entry of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub author: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// True for entries that made no layer (metadata-only steps).
    pub empty_layer: bool,
}

/// What an image config says besides its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// GOARCH spelling: amd64, arm64, 386, arm, ppc64le, s390x, riscv64.
    pub architecture: String,
    pub os: String,
    pub os_version: Option<String>,
    pub variant: Option<String>,
    /// RFC 3339, UTC.
    pub created: String,
    pub author: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `port/proto`.
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// Docker's `Healthcheck` (see `change`), stored in the config's `config`.
    pub healthcheck: Option<Healthcheck>,
    /// One entry per layer (plus any `empty_layer` ones). When empty, `write_image` writes one
    /// entry per layer dated `created`.
    pub history: Vec<HistoryEntry>,
}

impl Default for ImageMeta {
    /// The host's architecture, linux, created now (or at `$SOURCE_DATE_EPOCH` when set, for
    /// reproducible builds), and nothing else.
    fn default() -> Self {
        let secs = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                    .unwrap_or(0)
            });
        ImageMeta {
            architecture: host_goarch().to_string(),
            os: "linux".into(),
            os_version: None,
            variant: None,
            created: rfc3339_utc(secs),
            author: None,
            cmd: None,
            entrypoint: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            exposed_ports: BTreeSet::new(),
            volumes: BTreeSet::new(),
            labels: BTreeMap::new(),
            stop_signal: None,
            healthcheck: None,
            history: Vec::new(),
        }
    }
}

/// A layer blob already in the store, as the layer writer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Digest of the stored (compressed) blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Size of the stored blob.
    pub size: u64,
    pub media_type: String,
}

/// The Go architecture name of the machine we run on.
pub fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), the well-known era algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Builds the config and manifest for `layers` (bottom first), stores them, and adds the image
/// to the index, named `tag` when given. The layer blobs must already be in the store.
pub fn write_image(
    store: &Store,
    meta: &ImageMeta,
    layers: &[LayerRef],
    tag: Option<&Reference>,
) -> Result<ImageId, StoreError> {
    let config = config_bytes(meta, layers)?;
    let config_blob = store.put_blob(&config)?;
    let manifest = manifest_bytes(&config_blob.digest, config_blob.size, layers)?;
    store.add_image(&manifest, tag)
}

fn build_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Build(format!("{what}: {e}"))
}

/// The image config JSON, keys sorted.
pub fn config_bytes(meta: &ImageMeta, layers: &[LayerRef]) -> Result<Vec<u8>, StoreError> {
    for (i, l) in layers.iter().enumerate() {
        digest_hex(&l.diff_id).map_err(|e| build_err(&format!("config: layer {i} diff_id"), e))?;
    }
    if meta.architecture.is_empty() || meta.os.is_empty() || meta.created.is_empty() {
        return Err(build_err(
            "config",
            "architecture, os and created must be set",
        ));
    }
    let mut c = ConfigBuilder::default();
    if let Some(v) = &meta.user {
        c = c.user(v.clone());
    }
    if !meta.exposed_ports.is_empty() {
        c = c.exposed_ports(meta.exposed_ports.iter().cloned().collect::<Vec<_>>());
    }
    if !meta.env.is_empty() {
        c = c.env(meta.env.clone());
    }
    if let Some(v) = &meta.entrypoint {
        c = c.entrypoint(v.clone());
    }
    if let Some(v) = &meta.cmd {
        c = c.cmd(v.clone());
    }
    if !meta.volumes.is_empty() {
        c = c.volumes(meta.volumes.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(v) = &meta.working_dir {
        c = c.working_dir(v.clone());
    }
    if !meta.labels.is_empty() {
        c = c.labels(
            meta.labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if let Some(v) = &meta.stop_signal {
        c = c.stop_signal(v.clone());
    }
    let config = c.build().map_err(|e| build_err("config", e))?;

    let history: Vec<HistoryEntry> = if meta.history.is_empty() {
        layers
            .iter()
            .map(|_| HistoryEntry {
                created: Some(meta.created.clone()),
                ..HistoryEntry::default()
            })
            .collect()
    } else {
        meta.history.clone()
    };
    let real = history.iter().filter(|h| !h.empty_layer).count();
    if real != layers.len() {
        // Docker and containerd match history to layers by position and reject a mismatch.
        return Err(build_err(
            "config",
            format!(
                "{real} history entries make layers but there are {} layers",
                layers.len()
            ),
        ));
    }
    let mut hist = Vec::with_capacity(history.len());
    for h in &history {
        let mut b = HistoryBuilder::default();
        if let Some(v) = &h.created {
            b = b.created(v.clone());
        }
        if let Some(v) = &h.author {
            b = b.author(v.clone());
        }
        if let Some(v) = &h.created_by {
            b = b.created_by(v.clone());
        }
        if let Some(v) = &h.comment {
            b = b.comment(v.clone());
        }
        if h.empty_layer {
            b = b.empty_layer(true);
        }
        hist.push(b.build().map_err(|e| build_err("config history", e))?);
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()
        .map_err(|e| build_err("config rootfs", e))?;
    let mut b = ImageConfigurationBuilder::default()
        .created(meta.created.clone())
        .architecture(Arch::from(meta.architecture.as_str()))
        .os(Os::from(meta.os.as_str()))
        .config(config)
        .rootfs(rootfs)
        .history(hist);
    if let Some(v) = &meta.os_version {
        b = b.os_version(v.clone());
    }
    if let Some(v) = &meta.variant {
        b = b.variant(v.clone());
    }
    if let Some(v) = &meta.author {
        b = b.author(v.clone());
    }
    let ic = b.build().map_err(|e| build_err("config", e))?;
    let mut v = serde_json::to_value(&ic).map_err(|e| build_err("config", e))?;
    if let (Some(h), Some(c)) = (
        &meta.healthcheck,
        v.get_mut("config").and_then(Value::as_object_mut),
    ) {
        c.insert("Healthcheck".into(), h.to_json());
    }
    canonical_json(&v, "config")
}

/// The image manifest JSON, keys sorted.
pub fn manifest_bytes(
    config_digest: &str,
    config_size: u64,
    layers: &[LayerRef],
) -> Result<Vec<u8>, StoreError> {
    let desc = |mt: MediaType, digest: &str, size: u64, what: &str| {
        let d: Digest = digest.parse().map_err(|e| build_err(what, e))?;
        digest_hex(digest).map_err(|e| build_err(what, e))?;
        DescriptorBuilder::default()
            .media_type(mt)
            .digest(d)
            .size(size)
            .build()
            .map_err(|e| build_err(what, e))
    };
    let config = desc(
        MediaType::ImageConfig,
        config_digest,
        config_size,
        "manifest config",
    )?;
    let mut ls = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        ls.push(desc(
            MediaType::from(l.media_type.as_str()),
            &l.digest,
            l.size,
            &format!("manifest layer {i}"),
        )?);
    }
    let m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(ls)
        .build()
        .map_err(|e| build_err("manifest", e))?;
    canonical_json(&m, "manifest")
}

fn canonical_json<T: serde::Serialize>(t: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    let v = serde_json::to_value(t).map_err(|e| build_err(what, e))?;
    serde_json::to_vec(&sorted(v)).map_err(|e| build_err(what, e))
}

/// Rebuilds every object with its keys in order, whatever map type serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    fn layer(n: u8) -> LayerRef {
        let h = format!("{n:02x}").repeat(32);
        LayerRef {
            digest: format!("sha256:{h}"),
            diff_id: format!("sha256:{h}"),
            size: 100,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    #[test]
    fn config_is_reproducible_and_complete() {
        let mut m = ImageMeta {
            created: "2024-01-01T00:00:00Z".into(),
            architecture: "amd64".into(),
            ..ImageMeta::default()
        };
        for c in [
            "LABEL a=1 b=2 c=3 d=4 e=5 f=6",
            "EXPOSE 80 443 22 53/udp",
            "VOLUME /a /b /c",
            "ENV X=1",
            "CMD [\"/sbin/init\"]",
        ] {
            apply_change(&mut m, c).unwrap();
        }
        let a = config_bytes(&m, &[layer(1), layer(2)]).unwrap();
        for _ in 0..5 {
            assert_eq!(config_bytes(&m, &[layer(1), layer(2)]).unwrap(), a);
        }
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["architecture"], "amd64");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(v["history"].as_array().unwrap().len(), 2);
        assert_eq!(v["config"]["Labels"]["f"], "6");
        assert!(v["config"]["ExposedPorts"]["53/udp"].is_object());
        assert!(v["config"]["Volumes"]["/b"].is_object());
        assert_eq!(v["config"]["Cmd"][0], "/sbin/init");
    }

    #[test]
    fn history_must_match_layers() {
        let m = ImageMeta {
            history: vec![HistoryEntry::default()],
            ..ImageMeta::default()
        };
        let e = config_bytes(&m, &[layer(1), layer(2)]).unwrap_err();
        assert!(e.to_string().contains("1 history entries"), "{e}");
        let mut bad = layer(1);
        bad.diff_id = "sha256:zz".into();
        assert!(config_bytes(&ImageMeta::default(), &[bad]).is_err());
    }
}

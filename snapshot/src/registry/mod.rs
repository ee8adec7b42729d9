//! Pushing images to and pulling them from OCI/Docker registries (the distribution protocol),
//! and the credentials the standard tools share.
//!
//! - `credentials`: the auth files docker, podman and skopeo read and write, and the
//!   `docker-credential-<x>` helpers.
//! - `client`: one registry over HTTP(S): ping, Basic and Bearer auth, bounded requests with
//!   retries.
//! - `push` / `pull`: the two transfers, reporting docker's progress lines through a callback.
//! - `sources`: which repositories of a registry are known to hold a blob (for cross-repository
//!   mounts).
//!
//! References are the store's [`Reference`](crate::store::Reference): the grammar is docker's
//! either way; this module only adds where a reference's registry answers
//! ([`api_host`]).

pub mod client;
pub mod credentials;
pub mod pull;
pub mod push;
pub mod sources;

pub use client::{Client, ClientOptions};
pub use credentials::Credentials;
pub use pull::{pull, pull_all_tags, PullEvent, PullOutcome};
pub use push::{push, PushEvent, PushOptions, PushOutcome};

use crate::store::StoreError;

/// Where docker.io's API lives; every other registry answers at its own name.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The host[:port] to send requests to for a reference's domain.
pub fn api_host(domain: &str) -> &str {
    if domain == crate::store::reference::DEFAULT_DOMAIN {
        DOCKER_HUB_API
    } else {
        domain
    }
}

/// Everything a registry transfer can fail with. Each message is one line naming the registry
/// or URL and what went wrong; none ever carries a password or token.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: cannot reach the registry: {why}")]
    Unreachable { registry: String, why: String },
    #[error("{method} {url}: {why}")]
    Transport {
        method: &'static str,
        url: String,
        why: String,
    },
    #[error("{registry}: unauthorized: authentication required (HTTP 401{detail})")]
    Unauthorized { registry: String, detail: String },
    #[error("{registry}: denied: requested access to the resource is denied (HTTP 403{detail})")]
    Denied { registry: String, detail: String },
    #[error("{what} not found (HTTP 404 from {url})")]
    NotFound { what: String, url: String },
    #[error("{method} {url}: HTTP {status}{detail}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: {what}: {why}")]
    Protocol {
        url: String,
        what: &'static str,
        why: String,
    },
    #[error("{url}: blob {expected} has content digest {actual} (nothing was stored)")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: no manifest for linux/{arch} in the image index")]
    NoPlatform { url: String, arch: String },
    #[error("credentials {}: {why}", path.display())]
    Credentials {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("credential helper docker-credential-{helper} {op}: {why}")]
    Helper {
        helper: String,
        op: &'static str,
        why: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bounded retry policy shared by push and pull: how many attempts a request gets, and the
/// pause before attempt n (n * RETRY_PAUSE).
pub(crate) const ATTEMPTS: u32 = 3;
pub(crate) const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// The 12-hex short form docker prints for a blob (`sha256:` dropped).
pub fn short(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    h.get(..12).unwrap_or(h)
}

/// The (media type, digest, size) of a manifest's config and layers, read from its JSON. The
/// store already checked the manifest when it was added (push) or checks it on add (pull);
/// this only needs the descriptors.
pub(crate) fn manifest_blobs(url: &str, bytes: &[u8]) -> Result<(Blob, Vec<Blob>), RegistryError> {
    use serde_json::Value;
    let bad = |why: String| RegistryError::Protocol {
        url: url.to_string(),
        what: "manifest",
        why,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let desc = |d: &Value, at: &str| -> Result<Blob, RegistryError> {
        let digest = d
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}: digest missing")))?;
        crate::store::blobs::digest_hex(digest).map_err(|e| bad(format!("{at}: {e}")))?;
        let size = d
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("{at}: size missing")))?;
        let media_type = d
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Blob {
            media_type,
            digest: digest.to_string(),
            size,
        })
    };
    let config = desc(
        v.get("config")
            .ok_or_else(|| bad("config missing".into()))?,
        "config",
    )?;
    let layers = match v.get("layers") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, l)| desc(l, &format!("layers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("layers missing or not an array".into())),
    };
    Ok((config, layers))
}

/// One blob a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

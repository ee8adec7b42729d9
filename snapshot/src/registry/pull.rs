//! `pull`: fetches an image from a registry into the store.
//!
//! The manifest (OCI or Docker schema2; an index or manifest list resolves to this host's
//! linux platform) is read under the store's manifest cap and checked against the digest the
//! reference or the registry names. Blobs the store lacks are streamed into the store's
//! crash-safe [`BlobWriter`](crate::store::BlobWriter), at most their declared size, and
//! committed only when their sha256 matches: a corrupt or truncated blob leaves nothing behind.
//! The image is indexed (and tagged) last, so a pull killed at any point leaves the store
//! valid; a rerun finds the blobs already committed ("Already exists") and finishes.

use std::io::Read;

use super::client::{read_capped, strip_query, Client, ClientOptions, ReqBody};
use super::{manifest_blobs, sources, Blob, RegistryError, ATTEMPTS, RETRY_PAUSE};
use crate::image::host_goarch;
use crate::store::blobs::sha256_digest;
use crate::store::index::{is_index_type, is_manifest_type, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::store::{ImageId, Reference, Store, StoreError, MAX_MANIFEST_BYTES};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest tags/list page we read.
const MAX_TAGS_BYTES: u64 = 4 << 20;
/// Pages of tags/list we follow.
const MAX_TAG_PAGES: usize = 64;
/// Tags `--all-tags` pulls at most.
const MAX_TAGS: usize = 10_000;

/// What `pull` reports as it goes, for docker's progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// "<tag>: Pulling from <repository>".
    Start { tag: String, repository: String },
    /// A layer the store already had.
    Exists { digest: String },
    /// A layer downloaded and verified.
    Complete { digest: String },
    /// The manifest's digest ("Digest: ...").
    Digest { digest: String },
}

/// The result of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    /// What was pulled, as stored (`127.0.0.1:5000/x:t`).
    pub reference: Reference,
    pub manifest_digest: String,
    pub id: ImageId,
    /// The tag already named this manifest and every blob was present.
    pub up_to_date: bool,
    pub requests: u64,
}

/// Pulls `reference` into `store` and tags it (a digest-only reference is stored untagged).
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &ClientOptions,
    progress: &mut dyn FnMut(PullEvent),
) -> Result<PullOutcome, RegistryError> {
    let mut client = Client::connect(reference.domain(), opts)?;
    pull_with(&mut client, store, reference, progress)
}

/// Pulls every tag of `reference`'s repository (`--all-tags`).
pub fn pull_all_tags(
    store: &Store,
    reference: &Reference,
    opts: &ClientOptions,
    progress: &mut dyn FnMut(PullEvent),
) -> Result<Vec<PullOutcome>, RegistryError> {
    let mut client = Client::connect(reference.domain(), opts)?;
    let tags = list_tags(&mut client, reference)?;
    let mut out = Vec::new();
    for t in tags {
        let r = reference.with_tag(&t).map_err(StoreError::from)?;
        out.push(pull_with(&mut client, store, &r, progress)?);
    }
    Ok(out)
}

/// The repository's tags, through `Link` pagination, bounded.
pub fn list_tags(client: &mut Client, reference: &Reference) -> Result<Vec<String>, RegistryError> {
    let scope = pull_scope(reference);
    let mut url = format!("{}/v2/{}/tags/list", client.base(), reference.path());
    let mut tags = Vec::new();
    for _ in 0..MAX_TAG_PAGES {
        let resp = client.request("GET", &url, &scope, &[], ReqBody::Empty, true)?;
        if !resp.status().is_success() {
            return Err(client.status_error("GET", &url, resp, "repository"));
        }
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, r)| r.split_once('>'))
            .map(|(u, _)| client.absolute(u));
        let body = read_capped(resp, MAX_TAGS_BYTES, &url, "tags list")?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: url.clone(),
                what: "tags list",
                why: format!("not JSON: {e}"),
            })?;
        if let Some(a) = v.get("tags").and_then(|t| t.as_array()) {
            for t in a.iter().filter_map(|t| t.as_str()) {
                if tags.len() >= MAX_TAGS {
                    return Err(RegistryError::Protocol {
                        url,
                        what: "tags list",
                        why: format!("more than {MAX_TAGS} tags"),
                    });
                }
                // A tag that breaks the grammar is refused here, not half-way through.
                reference.with_tag(t).map_err(StoreError::from)?;
                tags.push(t.to_string());
            }
        }
        match next {
            Some(n) => url = n,
            None => return Ok(tags),
        }
    }
    Err(RegistryError::Protocol {
        url,
        what: "tags list",
        why: format!("more than {MAX_TAG_PAGES} pages"),
    })
}

fn pull_scope(r: &Reference) -> String {
    format!("repository:{}:pull", r.path())
}

fn pull_with(
    client: &mut Client,
    store: &Store,
    reference: &Reference,
    progress: &mut dyn FnMut(PullEvent),
) -> Result<PullOutcome, RegistryError> {
    let scope = pull_scope(reference);
    let start = client.request_count();
    let wanted = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let (mut media_type, mut bytes, mut digest) =
        fetch_manifest(client, reference, &scope, &wanted, reference.digest())?;
    progress(PullEvent::Start {
        tag: wanted.clone(),
        repository: reference.path().to_string(),
    });
    if is_index_type(&media_type) {
        let url = manifest_url(client, reference, &digest);
        let child = pick_platform(&url, &bytes)?;
        (media_type, bytes, digest) =
            fetch_manifest(client, reference, &scope, &child, Some(&child))?;
        if !is_manifest_type(&media_type) {
            return Err(RegistryError::Protocol {
                url,
                what: "manifest",
                why: format!("index entry is a {media_type}, not an image manifest"),
            });
        }
    }
    let url = manifest_url(client, reference, &digest);
    let (config, layers) = manifest_blobs(&url, &bytes)?;
    let mut all_present = true;
    for l in &layers {
        if store.has_blob(&l.digest)? {
            progress(PullEvent::Exists {
                digest: l.digest.clone(),
            });
        } else {
            all_present = false;
            download(client, store, reference, &scope, l)?;
            progress(PullEvent::Complete {
                digest: l.digest.clone(),
            });
        }
    }
    if !store.has_blob(&config.digest)? {
        all_present = false;
        download(client, store, reference, &scope, &config)?;
    }
    let tag = reference.tag().map(|t| reference.with_tag(t)).transpose();
    let tag = tag.map_err(StoreError::from)?;
    let up_to_date = all_present
        && match &tag {
            Some(t) => store
                .resolve(&t.full())
                .is_ok_and(|r| r.manifest_digest == digest),
            None => store.resolve(&digest).is_ok(),
        };
    let id = store.add_image(&bytes, tag.as_ref())?;
    let mut digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    digests.push(config.digest.clone());
    // A hint for later cross-repository mounts; failing to write it does not fail the pull.
    let _ = sources::record(store, &reference.repository(), &digests);
    progress(PullEvent::Digest {
        digest: digest.clone(),
    });
    Ok(PullOutcome {
        reference: tag.unwrap_or_else(|| reference.clone()),
        manifest_digest: digest,
        id,
        up_to_date,
        requests: client.request_count() - start,
    })
}

fn manifest_url(client: &Client, r: &Reference, what: &str) -> String {
    format!("{}/v2/{}/manifests/{}", client.base(), r.path(), what)
}

/// GETs a manifest (by tag or digest); returns its media type, bytes and digest. A manifest
/// asked for by digest, or one whose registry names its digest, must hash to it.
fn fetch_manifest(
    client: &mut Client,
    r: &Reference,
    scope: &str,
    what: &str,
    expected: Option<&str>,
) -> Result<(String, Vec<u8>, String), RegistryError> {
    let url = manifest_url(client, r, what);
    let resp = client.request(
        "GET",
        &url,
        scope,
        &[("accept", ACCEPT)],
        ReqBody::Empty,
        true,
    )?;
    if !resp.status().is_success() {
        let what = format!("manifest for {}", r.familiar());
        return Err(client.status_error("GET", &url, resp, &what));
    }
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
    let bytes = read_capped(resp, MAX_MANIFEST_BYTES as u64, &url, "manifest")?;
    let digest = sha256_digest(&bytes);
    for want in [expected, header_digest.as_deref()].into_iter().flatten() {
        if want != digest {
            return Err(RegistryError::DigestMismatch {
                url: strip_query(&url),
                expected: want.to_string(),
                actual: digest,
            });
        }
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
            url: url.clone(),
            what: "manifest",
            why: format!("not JSON: {e}"),
        })?;
    let media_type = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or(header_type)
        .unwrap_or_else(|| {
            if v.get("manifests").is_some() {
                crate::store::index::OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if !is_manifest_type(&media_type) && !is_index_type(&media_type) {
        return Err(RegistryError::Protocol {
            url,
            what: "manifest",
            why: format!(
                "unsupported media type {media_type:?} (want {OCI_MANIFEST} or {DOCKER_MANIFEST})"
            ),
        });
    }
    Ok((media_type, bytes, digest))
}

/// The digest of the index entry for linux on this machine's architecture.
fn pick_platform(url: &str, bytes: &[u8]) -> Result<String, RegistryError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            what: "index",
            why: format!("not JSON: {e}"),
        })?;
    let arch = host_goarch();
    let entries = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| RegistryError::Protocol {
            url: url.to_string(),
            what: "index",
            why: "no manifests array".into(),
        })?;
    for e in entries {
        let p = e.get("platform");
        let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str());
        let variant_ok = match (arch, field("variant")) {
            ("arm64", Some(v)) => v == "v8",
            _ => true,
        };
        if field("os") == Some("linux") && field("architecture") == Some(arch) && variant_ok {
            if let Some(d) = e.get("digest").and_then(|d| d.as_str()) {
                crate::store::blobs::digest_hex(d)?;
                return Ok(d.to_string());
            }
        }
    }
    Err(RegistryError::NoPlatform {
        url: url.to_string(),
        arch: arch.to_string(),
    })
}

/// Streams one blob into the store, at most its declared size, verified; a transport failure
/// starts it again (bounded).
fn download(
    client: &mut Client,
    store: &Store,
    r: &Reference,
    scope: &str,
    b: &Blob,
) -> Result<(), RegistryError> {
    let url = format!("{}/v2/{}/blobs/{}", client.base(), r.path(), b.digest);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_once(client, store, scope, &url, b) {
            Err(e @ RegistryError::Transport { .. }) if attempt < ATTEMPTS => {
                drop(e);
                std::thread::sleep(RETRY_PAUSE * attempt);
            }
            other => return other,
        }
    }
}

fn download_once(
    client: &mut Client,
    store: &Store,
    scope: &str,
    url: &str,
    b: &Blob,
) -> Result<(), RegistryError> {
    let resp = client.request("GET", url, scope, &[], ReqBody::Empty, true)?;
    if !resp.status().is_success() {
        return Err(client.status_error("GET", url, resp, &format!("blob {}", b.digest)));
    }
    let mut w = store.blob_writer()?;
    let mut body = resp.into_body();
    let mut reader = body.as_reader().take(b.size.saturating_add(1));
    std::io::copy(&mut reader, &mut w).map_err(|e| RegistryError::Transport {
        method: "GET",
        url: strip_query(url),
        why: format!("reading blob {}: {e}", b.digest),
    })?;
    if w.size() != b.size {
        return Err(RegistryError::Protocol {
            url: strip_query(url),
            what: "blob",
            why: format!(
                "{} is {} bytes{}, the manifest says {} (nothing was stored)",
                b.digest,
                w.size(),
                if w.size() > b.size { " or more" } else { "" },
                b.size
            ),
        });
    }
    match w.commit(Some(&b.digest)) {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch {
            expected, actual, ..
        }) => Err(RegistryError::DigestMismatch {
            url: strip_query(url),
            expected,
            actual,
        }),
        Err(e) => Err(e.into()),
    }
}

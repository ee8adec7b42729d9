//! `push`: sends an image of the store to a registry, doing only what the registry lacks.
//!
//! Per blob (layers, then the config): `HEAD` — present means "Layer already exists"; else a
//! cross-repository mount from a repository of the same registry known to hold it (see
//! `sources`), else an upload: one streamed `PUT` of the blob file, or for blobs above the chunk
//! size a series of `PATCH`es that, after a failure, resume from the `Range` the registry says
//! it has. Then the manifest, byte for byte as stored, with its own media type. Re-pushing an
//! unchanged image therefore costs one HEAD per blob and one manifest PUT (plus the ping).

use super::client::{strip_query, Client, ClientOptions, ReqBody};
use super::{manifest_blobs, sources, Blob, RegistryError, ATTEMPTS, RETRY_PAUSE};
use crate::store::{Reference, Store, MAX_MANIFEST_BYTES};

/// Blobs above this size go up in PATCH chunks when no chunk size is given.
pub const AUTO_CHUNK_THRESHOLD: u64 = 1 << 30;
/// The chunk size used above [`AUTO_CHUNK_THRESHOLD`].
pub const AUTO_CHUNK_SIZE: u64 = 128 << 20;
/// Repositories tried for a cross-repository mount, per blob.
const MOUNT_CANDIDATES: usize = 2;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub client: ClientOptions,
    /// `Some(n)`: upload every blob larger than `n` bytes in chunks of `n`. `None`: one
    /// streamed PUT, chunks of [`AUTO_CHUNK_SIZE`] above [`AUTO_CHUNK_THRESHOLD`].
    pub chunk_size: Option<u64>,
}

/// What `push` reports as it goes, for docker's progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// "The push refers to repository [..]".
    Start { repository: String },
    /// A layer was uploaded.
    Pushed { digest: String },
    /// The registry already had the layer.
    Exists { digest: String },
    /// The layer was mounted from another repository (`path` in the same registry).
    Mounted { digest: String, from: String },
    /// The manifest is in: "<tag>: digest: <digest> size: <size>".
    Done {
        tag: String,
        digest: String,
        size: u64,
    },
}

/// The result of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// HTTP requests sent, the ping and token requests included.
    pub requests: u64,
}

/// Pushes `image` (anything `Store::resolve` takes) to `dest`, tagged with `dest`'s tag (or
/// `latest`; a digest-only `dest` pushes by digest).
pub fn push(
    store: &Store,
    image: &str,
    dest: &Reference,
    opts: &PushOptions,
    progress: &mut dyn FnMut(PushEvent),
) -> Result<PushOutcome, RegistryError> {
    let rec = store.resolve(image)?;
    let manifest = store.read_blob(&rec.manifest_digest, MAX_MANIFEST_BYTES)?;
    let (config, layers) = manifest_blobs(&rec.manifest_digest, &manifest)?;
    // Every blob must be here before we talk to anyone.
    for b in layers.iter().chain(std::iter::once(&config)) {
        let p = store.blob_path(&b.digest)?;
        if !p.is_file() {
            return Err(crate::store::StoreError::BlobMissing {
                digest: b.digest.clone(),
                path: p,
            }
            .into());
        }
    }
    // No ping: a re-push costs one HEAD per blob and the manifest PUT.
    let mut client = Client::connect_lazy(dest.domain(), &opts.client)?;
    progress(PushEvent::Start {
        repository: dest.repository(),
    });
    let mut up = Uploader {
        client: &mut client,
        store,
        dest,
        opts,
    };
    for l in &layers {
        let ev = match up.blob(l)? {
            Sent::Exists => PushEvent::Exists {
                digest: l.digest.clone(),
            },
            Sent::Mounted(from) => PushEvent::Mounted {
                digest: l.digest.clone(),
                from,
            },
            Sent::Pushed => PushEvent::Pushed {
                digest: l.digest.clone(),
            },
        };
        progress(ev);
    }
    up.blob(&config)?;
    let reference = dest
        .digest()
        .filter(|_| dest.tag().is_none())
        .map(str::to_string)
        .unwrap_or_else(|| dest.tag().unwrap_or("latest").to_string());
    let url = format!(
        "{}/v2/{}/manifests/{}",
        client.base(),
        dest.path(),
        reference
    );
    let scope = push_scope(dest);
    let resp = client.request(
        "PUT",
        &url,
        &scope,
        &[("content-type", rec.manifest_media_type.as_str())],
        ReqBody::Bytes(&manifest),
        true,
    )?;
    if resp.status().as_u16() != 201 && !resp.status().is_success() {
        return Err(client.status_error("PUT", &url, resp, "manifest upload"));
    }
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if d != rec.manifest_digest {
            return Err(RegistryError::Protocol {
                url,
                what: "manifest upload",
                why: format!(
                    "registry stored digest {d}, we sent {}",
                    rec.manifest_digest
                ),
            });
        }
    }
    let mut digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    digests.push(config.digest.clone());
    // A hint for later mounts; failing to write it does not fail the push.
    let _ = sources::record(store, &dest.repository(), &digests);
    progress(PushEvent::Done {
        tag: reference,
        digest: rec.manifest_digest.clone(),
        size: manifest.len() as u64,
    });
    Ok(PushOutcome {
        manifest_digest: rec.manifest_digest,
        manifest_size: manifest.len() as u64,
        requests: client.request_count(),
    })
}

fn push_scope(dest: &Reference) -> String {
    format!("repository:{}:pull,push", dest.path())
}

enum Sent {
    Exists,
    Mounted(String),
    Pushed,
}

struct Uploader<'a> {
    client: &'a mut Client,
    store: &'a Store,
    dest: &'a Reference,
    opts: &'a PushOptions,
}

impl Uploader<'_> {
    fn blobs_url(&self) -> String {
        format!("{}/v2/{}/blobs", self.client.base(), self.dest.path())
    }

    fn blob(&mut self, b: &Blob) -> Result<Sent, RegistryError> {
        let scope = push_scope(self.dest);
        let url = format!("{}/{}", self.blobs_url(), b.digest);
        let resp = self
            .client
            .request("HEAD", &url, &scope, &[], ReqBody::Empty, true)?;
        match resp.status().as_u16() {
            200 => return Ok(Sent::Exists),
            404 => {}
            _ => return Err(self.client.status_error("HEAD", &url, resp, "blob")),
        }
        let mut session = None;
        let candidates: Vec<String> =
            sources::repos_with(self.store, self.dest.domain(), &b.digest)
                .into_iter()
                .filter(|r| r != self.dest.path())
                .take(MOUNT_CANDIDATES)
                .collect();
        for from in candidates {
            let url = format!(
                "{}/uploads/?mount={}&from={}",
                self.blobs_url(),
                b.digest,
                super::client::percent(&from)
            );
            let mscope = format!("{scope} repository:{from}:pull");
            let resp = self
                .client
                .request("POST", &url, &mscope, &[], ReqBody::Empty, true)?;
            match resp.status().as_u16() {
                201 => return Ok(Sent::Mounted(from)),
                202 => {
                    session = Some(self.location(&url, &resp)?);
                    break;
                }
                // No pull right on the source, or it is gone: upload instead.
                401 | 403 | 404 => {}
                _ => return Err(self.client.status_error("POST", &url, resp, "blob mount")),
            }
        }
        let path = self.store.blob_path(&b.digest)?;
        let chunk = match self.opts.chunk_size {
            Some(n) if n > 0 && b.size > n => Some(n),
            Some(_) => None,
            None if b.size > AUTO_CHUNK_THRESHOLD => Some(AUTO_CHUNK_SIZE),
            None => None,
        };
        let mut failures = 0;
        loop {
            let loc = match session.take() {
                Some(l) => l,
                None => self.start_upload()?,
            };
            let result = match chunk {
                None => self.put_whole(&loc, b, &path),
                Some(n) => self.put_chunks(loc, b, &path, n),
            };
            match result {
                Ok(()) => return Ok(Sent::Pushed),
                Err(e) if retryable(&e) && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    std::thread::sleep(RETRY_PAUSE * failures);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_upload(&mut self) -> Result<String, RegistryError> {
        let url = format!("{}/uploads/", self.blobs_url());
        let scope = push_scope(self.dest);
        let resp = self
            .client
            .request("POST", &url, &scope, &[], ReqBody::Empty, true)?;
        if resp.status().as_u16() != 202 {
            return Err(self.client.status_error("POST", &url, resp, "upload"));
        }
        self.location(&url, &resp)
    }

    fn location(
        &self,
        url: &str,
        resp: &ureq::http::Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .filter(|l| !l.is_empty())
            .map(|l| self.client.absolute(l))
            .ok_or_else(|| RegistryError::Protocol {
                url: strip_query(url),
                what: "upload",
                why: "202 without a Location".into(),
            })
    }

    /// One streamed PUT of the whole file (not retried in place: a half-sent body leaves the
    /// session with partial data, so a retry starts a new session).
    fn put_whole(
        &mut self,
        loc: &str,
        b: &Blob,
        path: &std::path::Path,
    ) -> Result<(), RegistryError> {
        let url = with_digest(loc, &b.digest);
        let scope = push_scope(self.dest);
        let resp = self.client.request(
            "PUT",
            &url,
            &scope,
            &[("content-type", "application/octet-stream")],
            ReqBody::File {
                path,
                offset: 0,
                len: b.size,
            },
            false,
        )?;
        if resp.status().as_u16() == 201 || resp.status().is_success() {
            Ok(())
        } else {
            Err(self.client.status_error("PUT", &url, resp, "blob upload"))
        }
    }

    /// PATCH chunks of `n` bytes; after a failed chunk, asks the session where it stands
    /// (`GET` → `Range: 0-<last>`) and resumes there. Then the closing PUT.
    fn put_chunks(
        &mut self,
        mut loc: String,
        b: &Blob,
        path: &std::path::Path,
        n: u64,
    ) -> Result<(), RegistryError> {
        let scope = push_scope(self.dest);
        let mut offset = 0u64;
        let mut failures = 0u32;
        // Bounded: each turn either advances by a chunk or counts a failure.
        while offset < b.size {
            let len = n.min(b.size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let sent = self.client.request(
                "PATCH",
                &loc,
                &scope,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", range.as_str()),
                ],
                ReqBody::File { path, offset, len },
                false,
            );
            let ok = match sent {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    loc = self.location(&loc, &resp)?;
                    offset = match range_end(&resp) {
                        Some(end) => end + 1,
                        None => offset + len,
                    };
                    true
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 416 => {
                    return Err(self.client.status_error("PATCH", &loc, resp, "blob upload"));
                }
                Ok(_) | Err(_) => false,
            };
            if !ok {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(RegistryError::Protocol {
                        url: strip_query(&loc),
                        what: "chunked upload",
                        why: format!("{failures} failed chunks at byte {offset}"),
                    });
                }
                std::thread::sleep(RETRY_PAUSE * failures);
                // Where did the registry get to?
                let resp = self
                    .client
                    .request("GET", &loc, &scope, &[], ReqBody::Empty, true)?;
                if resp.status().as_u16() == 204 {
                    loc = self.location(&loc, &resp).unwrap_or(loc);
                    offset = range_end(&resp).map(|e| e + 1).unwrap_or(0);
                } else if resp.status().is_client_error() {
                    // The session cannot say where it stands (distribution refuses a stale
                    // `_state` once a chunk reached it unacknowledged): start a new one.
                    loc = self.start_upload()?;
                    offset = 0;
                } else {
                    return Err(self
                        .client
                        .status_error("GET", &loc, resp, "upload session"));
                }
            }
            if offset > b.size {
                return Err(RegistryError::Protocol {
                    url: strip_query(&loc),
                    what: "chunked upload",
                    why: format!("registry claims {offset} bytes of a {}-byte blob", b.size),
                });
            }
        }
        let url = with_digest(&loc, &b.digest);
        let resp = self
            .client
            .request("PUT", &url, &scope, &[], ReqBody::Empty, false)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.client.status_error("PUT", &url, resp, "blob upload"))
        }
    }
}

/// Transport failures and 5xx may pass on a fresh attempt; 4xx will not.
fn retryable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// The last byte the registry holds, from `Range: 0-<end>` (`bytes=` prefix tolerated).
fn range_end(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let r = resp.headers().get("range")?.to_str().ok()?;
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (start, end) = r.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

/// The upload URL with `digest=` added (Locations already carry `?_state=`).
fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={}", super::client::percent(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp_with_range(r: &str) -> ureq::http::Response<ureq::Body> {
        ureq::http::Response::builder()
            .status(202)
            .header("range", r)
            .body(ureq::Body::builder().data(""))
            .unwrap()
    }

    #[test]
    fn ranges_and_upload_urls() {
        assert_eq!(range_end(&resp_with_range("0-1023")), Some(1023));
        assert_eq!(range_end(&resp_with_range("bytes=0-9")), Some(9));
        for bad in ["5-9", "0-", "x", "0-99999999999999999999999"] {
            assert_eq!(range_end(&resp_with_range(bad)), None, "{bad}");
        }
        let d = "sha256:ab";
        assert_eq!(
            with_digest("http://h/v2/x/blobs/uploads/u?_state=s", d),
            "http://h/v2/x/blobs/uploads/u?_state=s&digest=sha256%3Aab"
        );
        assert_eq!(
            with_digest("http://h/v2/x/blobs/uploads/u", d),
            "http://h/v2/x/blobs/uploads/u?digest=sha256%3Aab"
        );
    }
}

//! One registry over HTTP(S): the `/v2/` ping that tells which auth it wants, Basic and Bearer
//! (token) auth with a token cached per scope, and requests that are bounded in time, size and
//! retries.
//!
//! Built on ureq 3 (blocking, rustls): it streams request bodies from files and responses into
//! the store without an async runtime (crates.md: 28 crates, 292 MB/s to docker-registry).
//! TLS trusts the system's CA bundle (`/etc/ssl/certs/ca-certificates.crt`, or ureq's built-in
//! Mozilla roots when the system has none); `tls_verify: false` talks plain HTTP, as
//! `--tls-verify=false` does for podman and skopeo on a local registry.
//!
//! Credentials and tokens go only to the registry's own origin and the token realm it named:
//! a `Location` elsewhere (object storage) gets no `Authorization` header.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::http::{self, HeaderMap, Response};
use ureq::{Body, SendBody};

use super::credentials::Credentials;
use super::{api_host, RegistryError, ATTEMPTS, RETRY_PAUSE};

/// Largest token-endpoint answer we read.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// Largest error body we read to explain a failed request.
const MAX_ERROR_BYTES: u64 = 16 << 10;
/// A stalled connection (no byte moved for this long) fails the request.
const STALL: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from the end of a request to its response's first byte; a registry verifies a big
/// blob's digest before answering the final PUT.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Where Debian and most distributions keep the system's trusted CAs.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How to talk to a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// false: plain HTTP (`--tls-verify=false`).
    pub tls_verify: bool,
    /// Credentials for Basic auth or for the token endpoint; `None` is anonymous.
    pub credentials: Option<Credentials>,
}

/// A request body that can be sent again on a retry.
#[derive(Debug, Clone, Copy)]
pub enum ReqBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer { realm: String, service: String },
}

/// A connected registry. Not shared between threads; push and pull run one request at a time.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    registry: String,
    base: String,
    creds: Option<Credentials>,
    auth: Auth,
    tokens: HashMap<String, String>,
    requests: u64,
    /// Whether the registry's auth scheme is known (after the ping, or after the first answer
    /// of a lazily connected client).
    probed: bool,
}

impl Client {
    /// Pings `https://<registry>/v2/` (or `http://` without TLS) and learns its auth scheme.
    /// `registry` is a reference's domain (`docker.io` goes to Docker Hub's API host).
    pub fn connect(registry: &str, opts: &ClientOptions) -> Result<Client, RegistryError> {
        let mut c = Self::connect_lazy(registry, opts)?;
        c.ping()?;
        c.probed = true;
        Ok(c)
    }

    /// A client that learns the auth scheme from the first request's answer instead of a
    /// `/v2/` ping, so a re-push of an unchanged image costs one HEAD per blob and the manifest
    /// PUT, nothing more. A 401 challenge on the first answer sets the scheme and that request
    /// is sent again with credentials.
    pub fn connect_lazy(registry: &str, opts: &ClientOptions) -> Result<Client, RegistryError> {
        let scheme = if opts.tls_verify { "https" } else { "http" };
        let base = format!("{scheme}://{}", api_host(registry));
        Ok(Client {
            agent: Self::agent(opts),
            registry: registry.to_string(),
            base,
            creds: opts.credentials.clone(),
            auth: Auth::Anonymous,
            tokens: HashMap::new(),
            requests: 0,
            probed: false,
        })
    }

    fn agent(opts: &ClientOptions) -> ureq::Agent {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(STALL))
            .timeout_per_write(Some(STALL))
            .max_redirects(5)
            .user_agent(concat!("decant/", env!("CARGO_PKG_VERSION")));
        if opts.tls_verify {
            cfg = cfg.tls_config(tls_config());
        }
        cfg.build().into()
    }

    /// The registry as the user named it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `scheme://host[:port]`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// How many HTTP requests this client sent (the ping and token requests included).
    pub fn request_count(&self) -> u64 {
        self.requests
    }

    /// Whether the registry asked for credentials at all.
    pub fn wants_auth(&self) -> bool {
        !matches!(self.auth, Auth::Anonymous)
    }

    fn ping(&mut self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = match self.raw("GET", &url, None, &[], ReqBody::Empty, true) {
            Err(RegistryError::Transport { method, url, why })
                if self.base.starts_with("https") =>
            {
                return Err(RegistryError::Transport {
                    method,
                    url,
                    why: format!("{why} (a plain-HTTP registry needs --tls-verify=false)"),
                })
            }
            other => other?,
        };
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            401 => {
                self.auth =
                    parse_challenge(resp.headers()).ok_or_else(|| RegistryError::Protocol {
                        url: url.clone(),
                        what: "WWW-Authenticate",
                        why: "401 without a Basic or Bearer challenge".into(),
                    })?;
                Ok(())
            }
            _ => Err(self.status_error("GET", &url, resp, "the registry API")),
        }
    }

    /// Checks that the credentials work: for Basic, a ping with them; for Bearer, a token
    /// for no scope (what `docker login` does).
    pub fn check_login(&mut self) -> Result<(), RegistryError> {
        match self.auth.clone() {
            Auth::Anonymous => Ok(()),
            Auth::Basic => {
                let url = format!("{}/v2/", self.base);
                let resp = self.request("GET", &url, "", &[], ReqBody::Empty, true)?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(self.status_error("GET", &url, resp, "the registry API"))
                }
            }
            Auth::Bearer { realm, service } => self.fetch_token(&realm, &service, "").map(|_| ()),
        }
    }

    /// Sends one request with the auth the registry wants for `scope`
    /// (`repository:<path>:pull,push`, several separated by spaces). Retries (when `retry`)
    /// transport errors, 429 and 5xx up to [`ATTEMPTS`] times; renews a Bearer token once on
    /// 401. Other statuses are returned for the caller to judge.
    pub fn request(
        &mut self,
        method: &'static str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
        retry: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let mut renewed = false;
        loop {
            let auth = self.auth_header(scope, url)?;
            let resp = match self.raw(method, url, auth.as_deref(), headers, body, retry) {
                Err(RegistryError::Transport { method, url, why })
                    if !self.probed && self.base.starts_with("https") =>
                {
                    return Err(RegistryError::Transport {
                        method,
                        url,
                        why: format!("{why} (a plain-HTTP registry needs --tls-verify=false)"),
                    })
                }
                other => other?,
            };
            if !self.probed && url.starts_with(&self.base) {
                self.probed = true;
                if resp.status().as_u16() == 401 {
                    if let Some(a) = parse_challenge(resp.headers()) {
                        self.auth = a;
                        continue;
                    }
                }
            }
            if resp.status().as_u16() == 401 && !renewed {
                if let Auth::Bearer { .. } = self.auth {
                    // The token expired or lacks a scope: fetch a fresh one once.
                    self.tokens.remove(scope);
                    renewed = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// One request with retries on transport errors, 429 and 5xx.
    fn raw(
        &mut self,
        method: &'static str,
        url: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
        retry: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let attempts = if retry { ATTEMPTS } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests += 1;
            let result = self.send_once(method, url, auth, headers, body);
            let again = attempt < attempts;
            match result {
                Ok(r) if again && (r.status().as_u16() == 429 || r.status().is_server_error()) => {}
                Ok(r) => return Ok(r),
                Err(e) if !again => return Err(self.transport_error(method, url, e)),
                Err(_) => {}
            }
            std::thread::sleep(RETRY_PAUSE * attempt);
        }
    }

    fn send_once(
        &self,
        method: &'static str,
        url: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut b = http::Request::builder().method(method).uri(url);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        match body {
            ReqBody::Empty => {
                if matches!(method, "POST" | "PUT" | "PATCH") {
                    b = b.header("content-length", "0");
                }
                self.agent.run(b.body(SendBody::none())?)
            }
            ReqBody::Bytes(bytes) => self.agent.run(b.body(bytes)?),
            ReqBody::File { path, offset, len } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                let reader = f.take(len);
                b = b.header("content-length", len.to_string());
                self.agent.run(b.body(SendBody::from_owned_reader(reader))?)
            }
        }
    }

    fn transport_error(&self, method: &'static str, url: &str, e: ureq::Error) -> RegistryError {
        match e {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                RegistryError::Unreachable {
                    registry: self.registry.clone(),
                    why: e.to_string(),
                }
            }
            ureq::Error::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                RegistryError::Unreachable {
                    registry: self.registry.clone(),
                    why: e.to_string(),
                }
            }
            _ => RegistryError::Transport {
                method,
                url: strip_query(url),
                why: e.to_string().replace('\n', " "),
            },
        }
    }

    fn auth_header(&mut self, scope: &str, url: &str) -> Result<Option<String>, RegistryError> {
        if !url.starts_with(&self.base) {
            return Ok(None);
        }
        match self.auth.clone() {
            Auth::Anonymous => Ok(None),
            Auth::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Auth::Bearer { realm, service } => {
                if let Some(t) = self.tokens.get(scope) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(&realm, &service, scope)?;
                self.tokens.insert(scope.to_string(), t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    fn fetch_token(
        &mut self,
        realm: &str,
        service: &str,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if !service.is_empty() {
            url.push(sep);
            url.push_str("service=");
            url.push_str(&percent(service));
            sep = '&';
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            url.push(sep);
            url.push_str("scope=");
            url.push_str(&percent(s));
            sep = '&';
        }
        let auth = self.creds.as_ref().map(Credentials::basic_header);
        let resp = self.raw("GET", &url, auth.as_deref(), &[], ReqBody::Empty, true)?;
        if !resp.status().is_success() {
            return Err(self.status_error("GET", realm, resp, "token"));
        }
        let bytes = read_capped(resp, MAX_TOKEN_BYTES, realm, "token answer")?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                url: realm.to_string(),
                what: "token answer",
                why: format!("not JSON (column {})", e.column()),
            })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(serde_json::Value::as_str)
            .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol {
                url: realm.to_string(),
                what: "token answer",
                why: "no usable \"token\" or \"access_token\"".into(),
            })
    }

    /// The typed error for an unexpected status, with the registry's own error code and
    /// message when it sent them. `what` names the object for a 404.
    pub fn status_error(
        &self,
        method: &'static str,
        url: &str,
        resp: Response<Body>,
        what: &str,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = read_capped(resp, MAX_ERROR_BYTES, url, "error body")
            .ok()
            .and_then(|b| registry_message(&b))
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let url = strip_query(url);
        match status {
            401 => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail,
            },
            403 => RegistryError::Denied {
                registry: self.registry.clone(),
                detail,
            },
            404 => RegistryError::NotFound {
                what: what.to_string(),
                url,
            },
            _ => RegistryError::Status {
                method,
                url,
                status,
                detail,
            },
        }
    }

    /// `url` made absolute against the registry (Location headers may be relative).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }
}

/// Reads at most `max` bytes of a response body; more is an error.
pub fn read_capped(
    mut resp: Response<Body>,
    max: u64,
    url: &str,
    what: &'static str,
) -> Result<Vec<u8>, RegistryError> {
    let mut buf = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| RegistryError::Protocol {
            url: strip_query(url),
            what,
            why: format!("reading the body: {e}"),
        })?;
    if buf.len() as u64 > max {
        return Err(RegistryError::Protocol {
            url: strip_query(url),
            what,
            why: format!("larger than the {max}-byte cap"),
        });
    }
    Ok(buf)
}

/// The first `errors[].code: message` of a distribution error body, one line, short.
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("errors")?.as_array()?.first()?;
    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
    let s = match (code.is_empty(), msg.is_empty()) {
        (true, true) => return None,
        (false, true) => code.to_string(),
        (true, false) => msg.to_string(),
        (false, false) => format!("{code}: {msg}"),
    };
    Some(
        s.chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>(),
    )
}

/// A URL without its query (upload URLs carry long state blobs; error lines stay short).
pub fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Basic realm=..` or `Bearer realm="..",service="..",scope=".."`.
fn parse_challenge(h: &HeaderMap) -> Option<Auth> {
    for v in h.get_all("www-authenticate") {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Auth::Basic);
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let params = parse_params(rest);
            let realm = params.get("realm")?.clone();
            if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                return None;
            }
            let service = params.get("service").cloned().unwrap_or_default();
            return Some(Auth::Bearer { realm, service });
        }
    }
    None
}

/// `k="v", k2=v2` (quoted strings may hold commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    // Bounded by the header's length: every turn consumes at least one character.
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        out.insert(key, val);
    }
    out
}

/// rustls with the system's CA bundle when there is one, else ureq's Mozilla roots.
fn tls_config() -> ureq::tls::TlsConfig {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let certs: Vec<_> = std::fs::read(SYSTEM_CA_BUNDLE)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let roots = if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(certs))
    };
    TlsConfig::builder().root_certs(roots).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let mut h = HeaderMap::new();
        h.insert(
            "www-authenticate",
            r#"Bearer realm="https://auth.example/token",service="reg, x",scope="repository:a:pull""#
                .parse()
                .unwrap(),
        );
        match parse_challenge(&h) {
            Some(Auth::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service, "reg, x");
            }
            other => panic!("{other:?}"),
        }
        h.insert("www-authenticate", r#"Basic realm="r""#.parse().unwrap());
        assert!(matches!(parse_challenge(&h), Some(Auth::Basic)));
        for bad in [
            "Bearer",
            "Bearer realm=\"file:///x\"",
            "Digest a=b",
            "Bearer ===,,\"",
        ] {
            h.insert("www-authenticate", bad.parse().unwrap());
            assert!(parse_challenge(&h).is_none(), "{bad}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(
            percent("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(strip_query("http://h/v2/x?_state=abc"), "http://h/v2/x");
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#),
            Some("UNAUTHORIZED: no".into())
        );
        assert_eq!(registry_message(b"<html>"), None);
    }
}

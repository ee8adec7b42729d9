//! Registry fixtures for the push/pull tests: Debian's `docker-registry serve` on a free
//! 127.0.0.1 port with temp storage (optionally htpasswd Basic auth), and a small HTTP proxy in
//! front of it that counts requests and, on demand, demands Bearer tokens from its own token
//! endpoint, corrupts blob downloads, throttles transfers or drops a PATCH answer. Both are
//! killed on drop, also when a test fails.
//!
//! The proxy is the simplest correct Bearer design here: distribution's own `token` auth needs
//! signing certificates and a token server; the proxy checks `Authorization: Bearer` and
//! forwards to a registry without auth. It handles one request per connection
//! (`Connection: close`), which is all the clients under test need.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running docker-registry.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The htpasswd user's password (user `docker`) when started with auth.
    pub password: Option<String>,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Registry {
    /// Starts one; `htpasswd` turns on Basic auth with a generated password.
    pub fn start(htpasswd: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("decant-registry")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let mut cfg = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {d}/data}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: decant-test}}\n"
        );
        if htpasswd {
            cfg.push_str(&format!(
                "auth: {{htpasswd: {{realm: decant-test, path: {d}/htpasswd}}}}\n"
            ));
        }
        std::fs::write(dir.path().join("config.yml"), cfg).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry could not run; .ci/run installs the docker-registry package");
        let mut r = Registry {
            dir,
            port,
            password: None,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = r.log();
            if text.contains(&format!("listening on 127.0.0.1:{port}")) {
                if htpasswd {
                    r.password = text
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("password="))
                        .map(str::to_string);
                    assert!(r.password.is_some(), "no generated password in the log");
                }
                return r;
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("docker-registry exited ({st}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A canned answer: given "METHOD /path?query", the raw HTTP response to send instead of
/// forwarding (`None` forwards).
pub type Canned = Box<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// What the proxy does besides forwarding.
#[derive(Default)]
pub struct ProxyMode {
    /// Answers some requests itself (hostile registry behaviour).
    pub canned: Option<Canned>,
    /// Demand `Authorization: Bearer` from the token endpoint `/token`, which wants Basic
    /// `user:password`.
    pub bearer: Option<(String, String)>,
    /// Flip a byte in the middle of every blob download.
    pub corrupt_blobs: bool,
    /// Relay bodies in 16 KiB pieces with this pause between them.
    pub throttle: Option<Duration>,
    /// Close the connection of the n-th PATCH (1-based) after reading it, without forwarding
    /// it (a chunk lost on the way).
    pub drop_patch: Option<usize>,
    /// Forward the n-th PATCH (1-based) but close the connection instead of answering it (the
    /// registry has the chunk; the client does not know).
    pub drop_patch_answer: Option<usize>,
}

/// The proxy's view of the traffic.
#[derive(Default)]
pub struct Seen {
    /// "METHOD /path?query" of every request, token requests included.
    pub requests: Vec<String>,
}

pub struct Proxy {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TOKEN: &str = "fixture-token-42";

impl Proxy {
    pub fn start(upstream: u16, mode: ProxyMode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(mode);
        let patches = Arc::new(AtomicUsize::new(0));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (seen, mode, patches) = (s2.clone(), mode.clone(), patches.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, port, &mode, &seen, &patches);
                });
            }
        });
        Proxy {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("seen").requests.clone()
    }

    pub fn clear(&self) {
        self.seen.lock().expect("seen").requests.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(c: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut s = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let _ = c.write_all(s.as_bytes());
}

fn write_slow(to: &mut TcpStream, data: &[u8], throttle: Option<Duration>) -> std::io::Result<()> {
    match throttle {
        None => to.write_all(data),
        Some(p) => {
            for chunk in data.chunks(16 << 10) {
                to.write_all(chunk)?;
                std::thread::sleep(p);
            }
            Ok(())
        }
    }
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    own_port: u16,
    mode: &ProxyMode,
    seen: &Mutex<Seen>,
    patches: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    if method.is_empty() {
        return Ok(());
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let len: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    seen.lock()
        .expect("seen")
        .requests
        .push(format!("{method} {target}"));
    if let Some(answer) = mode
        .canned
        .as_ref()
        .and_then(|f| f(&format!("{method} {target}")))
    {
        let _ = client.write_all(&answer);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    if let Some((user, pass)) = &mode.bearer {
        if target.starts_with("/token") {
            let want = format!(
                "Basic {}",
                snapshot::registry::credentials::b64_encode(format!("{user}:{pass}").as_bytes())
            );
            if get("authorization").as_deref() == Some(want.as_str()) {
                respond(
                    &mut client,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    &format!("{{\"token\":\"{TOKEN}\"}}"),
                );
            } else {
                respond(&mut client, "401 Unauthorized", &[], "{}");
            }
            return Ok(());
        }
        if get("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"decant-fixture\""
            );
            respond(
                &mut client,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", challenge),
                    ("Content-Type", "application/json".into()),
                ],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
            return Ok(());
        }
    }
    if method == "PATCH" {
        let n = patches.fetch_add(1, Ordering::SeqCst) + 1;
        if mode.drop_patch == Some(n) {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &headers {
        if k == "connection" || (mode.bearer.is_some() && k == "authorization") {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    write_slow(&mut up, &body, mode.throttle)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if method == "PATCH" && mode.drop_patch_answer == Some(patches.load(Ordering::SeqCst)) {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    if mode.corrupt_blobs && method == "GET" && target.contains("/blobs/sha256:") {
        if let Some(at) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            let body_len = resp.len() - (at + 4);
            if body_len > 0 {
                let i = at + 4 + body_len / 2;
                resp[i] ^= 0x55;
            }
        }
    }
    write_slow(&mut client, &resp, mode.throttle)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

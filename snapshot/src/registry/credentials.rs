//! Registry credentials in the files docker, podman and skopeo share, so `decant login` works
//! for them and theirs works for decant.
//!
//! Lookup order (the containers tools' order, docker's file last): `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
//! `~/.docker/config.json`. In each file, `credHelpers.<host>` names a
//! `docker-credential-<x>` helper for that registry, then `auths.<host>.auth` holds
//! base64("user:password"), then `credsStore` is the helper for every other registry.
//!
//! Writing (`login`) updates the first file that already has an entry for the registry;
//! otherwise `$REGISTRY_AUTH_FILE` when set, else `~/.docker/config.json`, which every tool
//! reads. A helper configured for the registry stores the secret instead of the file. Files are
//! written 0600 through a temp file and a rename, other keys kept as they were.
//!
//! Secrets never appear in an error, a log line or `Debug` output. We wrote the small base64
//! codec here rather than add a crate for 40 lines.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::RegistryError;

/// Largest auth file we read; real ones are a few KiB.
const MAX_AUTH_FILE: u64 = 1 << 20;
/// Largest answer we take from a credential helper.
const MAX_HELPER_OUTPUT: u64 = 64 << 10;
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The key docker uses for Docker Hub in auth files and helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            b64_encode(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }
}

/// The auth files, in lookup order, and the one `login` writes when no file has the registry.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    pub lookup: Vec<PathBuf>,
    pub default_write: PathBuf,
}

/// Where a `login` put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    File(PathBuf),
    Helper(String),
}

impl AuthFiles {
    /// The standard order from the environment.
    pub fn from_env() -> AuthFiles {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        let docker = var("DOCKER_CONFIG")
            .unwrap_or_else(|| home.join(".docker"))
            .join("config.json");
        let mut lookup = Vec::new();
        let explicit = var("REGISTRY_AUTH_FILE");
        if let Some(f) = &explicit {
            lookup.push(f.clone());
        }
        if let Some(x) = var("XDG_RUNTIME_DIR") {
            lookup.push(x.join("containers/auth.json"));
        }
        let config = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        lookup.push(config.join("containers/auth.json"));
        lookup.push(docker.clone());
        AuthFiles {
            lookup,
            default_write: explicit.unwrap_or(docker),
        }
    }

    /// The credentials for `registry` (a host[:port], `docker.io` for Docker Hub), if any file
    /// or helper has them.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        for path in &self.lookup {
            let Some(doc) = read_auth_file(path)? else {
                continue;
            };
            if let Some(helper) = cred_helper_for(&doc, registry) {
                if let Some(c) = helper_get(&helper, registry)? {
                    return Ok(Some(c));
                }
                continue;
            }
            if let Some((_, entry)) = find_auth(&doc, registry) {
                if let Some(c) = decode_entry(path, entry)? {
                    return Ok(Some(c));
                }
            }
            if let Some(store) = doc.get("credsStore").and_then(Value::as_str) {
                if let Some(c) = helper_get(store, registry)? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Saves `creds` for `registry` (see the module comment for where).
    pub fn save(&self, registry: &str, creds: &Credentials) -> Result<Saved, RegistryError> {
        let mut target = None;
        for path in &self.lookup {
            if let Some(doc) = read_auth_file(path)? {
                if cred_helper_for(&doc, registry).is_some() || find_auth(&doc, registry).is_some()
                {
                    target = Some((path.clone(), doc));
                    break;
                }
            }
        }
        let (path, mut doc) = match target {
            Some(t) => t,
            None => {
                let p = self.default_write.clone();
                let doc = read_auth_file(&p)?.unwrap_or_default();
                (p, doc)
            }
        };
        let helper = cred_helper_for(&doc, registry).or_else(|| {
            doc.get("credsStore")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(h) = helper {
            helper_store(&h, registry, creds)?;
            // A plain entry left beside the helper would shadow nothing but still hold an old
            // secret: drop it.
            if remove_auth(&mut doc, registry) {
                write_auth_file(&path, &doc)?;
            }
            return Ok(Saved::Helper(h));
        }
        let key = find_auth(&doc, registry)
            .map(|(k, _)| k)
            .unwrap_or_else(|| server_key(registry));
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Some(a) = auths.as_object_mut() {
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(b64_encode(
                    format!("{}:{}", creds.username, creds.password).as_bytes(),
                )),
            );
            a.insert(key, Value::Object(entry));
        }
        write_auth_file(&path, &doc)?;
        Ok(Saved::File(path))
    }

    /// Removes `registry`'s credentials from every file (and its helper). Whether any were
    /// found.
    pub fn erase(&self, registry: &str) -> Result<bool, RegistryError> {
        let mut found = false;
        for path in &self.lookup {
            let Some(mut doc) = read_auth_file(path)? else {
                continue;
            };
            if let Some(h) = cred_helper_for(&doc, registry) {
                found |= helper_erase(&h, registry)?;
            }
            if remove_auth(&mut doc, registry) {
                write_auth_file(path, &doc)?;
                found = true;
            } else if let Some(h) = doc.get("credsStore").and_then(Value::as_str) {
                found |= helper_erase(h, registry)?;
            }
        }
        Ok(found)
    }
}

/// The key a registry gets in an auth file or a helper.
fn server_key(registry: &str) -> String {
    if registry == crate::store::reference::DEFAULT_DOMAIN {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Whether an auth-file key names `registry`: `host`, `https://host`, `http://host/v2/`...
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    host == registry
        || (registry == crate::store::reference::DEFAULT_DOMAIN
            && matches!(host, "index.docker.io" | "registry-1.docker.io"))
}

fn find_auth<'a>(doc: &'a Map<String, Value>, registry: &str) -> Option<(String, &'a Value)> {
    let auths = doc.get("auths")?.as_object()?;
    auths
        .iter()
        .find(|(k, _)| key_matches(k, registry))
        .map(|(k, v)| (k.clone(), v))
}

fn remove_auth(doc: &mut Map<String, Value>, registry: &str) -> bool {
    let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
        return false;
    };
    let keys: Vec<String> = auths
        .keys()
        .filter(|k| key_matches(k, registry))
        .cloned()
        .collect();
    for k in &keys {
        auths.remove(k);
    }
    !keys.is_empty()
}

fn cred_helper_for(doc: &Map<String, Value>, registry: &str) -> Option<String> {
    doc.get("credHelpers")?
        .as_object()?
        .iter()
        .find(|(k, _)| key_matches(k, registry))
        .and_then(|(_, v)| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn decode_entry(path: &Path, entry: &Value) -> Result<Option<Credentials>, RegistryError> {
    let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    if auth.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| RegistryError::Credentials {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let raw = b64_decode(auth).ok_or_else(|| bad("an auths entry's \"auth\" is not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("an auths entry is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| bad("an auths entry does not decode to user:password"))?;
    Ok(Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    }))
}

/// Reads an auth file as a JSON object; `None` when it does not exist.
fn read_auth_file(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let bad = |why: String| RegistryError::Credentials {
        path: path.to_path_buf(),
        why,
    };
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot open: {e}"))),
    };
    let mut buf = Vec::new();
    f.take(MAX_AUTH_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if buf.len() as u64 > MAX_AUTH_FILE {
        return Err(bad(format!("larger than the {MAX_AUTH_FILE}-byte cap")));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    // A syntax error message names a line and column, never the content.
    match serde_json::from_slice::<Value>(&buf) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(bad("not a JSON object".into())),
        Err(e) => Err(bad(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// Writes `doc` to `path` 0600 through a temp file in the same directory (created 0700).
fn write_auth_file(path: &Path, doc: &Map<String, Value>) -> Result<(), RegistryError> {
    let bad = |why: String| RegistryError::Credentials {
        path: path.to_path_buf(),
        why,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create its directory: {e}")))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| bad(format!("encode: {e}")))?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".into());
    let tmp = dir.join(format!(".{name}.decant-{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above only applies to a new file; a leftover temp must be 0600 too.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(bad(format!("cannot write: {e}")));
    }
    Ok(())
}

/// Helper names become part of a program name: keep them to a safe alphabet.
fn helper_program(helper: &str, op: &'static str) -> Result<String, RegistryError> {
    if helper.is_empty()
        || helper.len() > 64
        || !helper
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return Err(RegistryError::Helper {
            helper: helper.chars().take(64).collect(),
            op,
            why: "invalid helper name".into(),
        });
    }
    Ok(format!("docker-credential-{helper}"))
}

/// Runs `docker-credential-<helper> <op>` with `input` on stdin; (success, stdout, stderr).
fn run_helper(
    helper: &str,
    op: &'static str,
    input: &[u8],
) -> Result<(bool, Vec<u8>, String), RegistryError> {
    let err = |why: String| RegistryError::Helper {
        helper: helper.to_string(),
        op,
        why,
    };
    let prog = helper_program(helper, op)?;
    let mut child = Command::new(&prog)
        .arg(op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading gives EPIPE: its exit status tells the story.
        let _ = stdin.write_all(input);
    }
    let out = child.stdout.take();
    let errp = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        if let Some(s) = out {
            let _ = s.take(MAX_HELPER_OUTPUT).read_to_end(&mut o);
        }
        o
    });
    let ereader = std::thread::spawn(move || {
        let mut o = Vec::new();
        if let Some(s) = errp {
            let _ = s.take(4096).read_to_end(&mut o);
        }
        o
    });
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("timed out after {HELPER_TIMEOUT:?}")));
            }
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = ereader.join().unwrap_or_default();
    // Helpers print their own one-line errors; never echo stdout (it may hold a secret).
    let stderr = String::from_utf8_lossy(&stderr)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Ok((status.success(), stdout, stderr))
}

fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let (ok, out, errline) = run_helper(helper, "get", server_key(registry).as_bytes())?;
    let err = |why: String| RegistryError::Helper {
        helper: helper.to_string(),
        op: "get",
        why,
    };
    if !ok {
        let text = String::from_utf8_lossy(&out).to_lowercase() + &errline.to_lowercase();
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(if errline.is_empty() {
            "failed".into()
        } else {
            errline
        }));
    }
    let v: Value = serde_json::from_slice(&out)
        .map_err(|e| err(format!("answer is not JSON (column {})", e.column())))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (field("Username"), field("Secret")) {
        (Some(u), Some(p)) if !p.is_empty() => Ok(Some(Credentials {
            username: u,
            password: p,
        })),
        _ => Ok(None),
    }
}

fn helper_store(helper: &str, registry: &str, c: &Credentials) -> Result<(), RegistryError> {
    let body = serde_json::json!({
        "ServerURL": server_key(registry),
        "Username": c.username,
        "Secret": c.password,
    });
    let (ok, _, errline) = run_helper(helper, "store", body.to_string().as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Helper {
            helper: helper.to_string(),
            op: "store",
            why: if errline.is_empty() {
                "failed".into()
            } else {
                errline
            },
        })
    }
}

fn helper_erase(helper: &str, registry: &str) -> Result<bool, RegistryError> {
    let (ok, out, errline) = run_helper(helper, "erase", server_key(registry).as_bytes())?;
    if ok {
        return Ok(true);
    }
    let text = String::from_utf8_lossy(&out).to_lowercase() + &errline.to_lowercase();
    if text.contains("not found") {
        return Ok(false);
    }
    Err(RegistryError::Helper {
        helper: helper.to_string(),
        op: "erase",
        why: if errline.is_empty() {
            "failed".into()
        } else {
            errline
        },
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(B64.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` on any other character.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pa:ss", "dXNlcjpwYTpzcw=="),
        ] {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(b64_decode("a b"), None);
    }

    fn files(dir: &Path) -> AuthFiles {
        AuthFiles {
            lookup: vec![
                dir.join("first/auth.json"),
                dir.join("second/auth.json"),
                dir.join("docker/config.json"),
            ],
            default_write: dir.join("docker/config.json"),
        }
    }

    #[test]
    fn save_get_erase_in_order_and_0600() {
        let t = tempfile::tempdir().unwrap();
        let f = files(t.path());
        let c = Credentials {
            username: "alice".into(),
            password: "s3cr:et".into(),
        };
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None);
        // Another tool's settings in the docker file survive our write.
        fs::create_dir_all(t.path().join("docker")).unwrap();
        fs::write(
            t.path().join("docker/config.json"),
            r#"{"psFormat":"table","auths":{"other.io":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let saved = f.save("127.0.0.1:5000", &c).unwrap();
        assert_eq!(saved, Saved::File(t.path().join("docker/config.json")));
        let meta = fs::metadata(t.path().join("docker/config.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(t.path().join("docker/config.json")).unwrap();
        assert!(text.contains("psFormat") && text.contains("other.io"));
        assert!(!text.contains("s3cr"), "password in clear: {text}");
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), Some(c.clone()));
        assert_eq!(
            f.get("other.io").unwrap().map(|c| c.username),
            Some("x".into())
        );
        // An earlier file wins, and login updates the file that already has the registry.
        fs::create_dir_all(t.path().join("second")).unwrap();
        fs::write(
            t.path().join("second/auth.json"),
            format!(
                r#"{{"auths":{{"https://127.0.0.1:5000/v2/":{{"auth":"{}"}}}}}}"#,
                b64_encode(b"bob:pw")
            ),
        )
        .unwrap();
        assert_eq!(f.get("127.0.0.1:5000").unwrap().unwrap().username, "bob");
        assert_eq!(
            f.save("127.0.0.1:5000", &c).unwrap(),
            Saved::File(t.path().join("second/auth.json"))
        );
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), Some(c));
        assert!(f.erase("127.0.0.1:5000").unwrap());
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None);
        assert!(!f.erase("127.0.0.1:5000").unwrap());
        // Docker Hub's historical key.
        fs::create_dir_all(t.path().join("first")).unwrap();
        fs::write(
            t.path().join("first/auth.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
                b64_encode(b"hub:pw")
            ),
        )
        .unwrap();
        assert_eq!(f.get("docker.io").unwrap().unwrap().username, "hub");
    }

    #[test]
    fn hostile_files_give_one_line_errors_without_secrets() {
        let t = tempfile::tempdir().unwrap();
        let f = files(t.path());
        fs::create_dir_all(t.path().join("first")).unwrap();
        let p = t.path().join("first/auth.json");
        for (content, want) in [
            (
                "{\"auths\": {\"h\": {\"auth\": \"secretvalue\"",
                "not valid JSON",
            ),
            ("[1,2]", "not a JSON object"),
            (r#"{"auths":{"h":{"auth":"!!notbase64"}}}"#, "not base64"),
            (
                r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#,
                "user:password",
            ),
        ] {
            fs::write(&p, content).unwrap();
            let e = f.get("h").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("secretvalue") && !e.contains('\n'), "{e}");
        }
        fs::write(&p, vec![b' '; (MAX_AUTH_FILE + 2) as usize]).unwrap();
        assert!(f.get("h").unwrap_err().to_string().contains("cap"));
        fs::write(&p, r#"{"credHelpers":{"h":"../../bin/sh"}}"#).unwrap();
        assert!(f
            .get("h")
            .unwrap_err()
            .to_string()
            .contains("invalid helper name"));
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

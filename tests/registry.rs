//! `decant push`, `pull`, `login`, `logout` against Debian's docker-registry, with skopeo as
//! the peer that reads back what decant pushed, and the fixture proxy (tests/common/registry.rs)
//! for request counts, Bearer tokens, corrupt blobs, throttling and dropped chunks.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{Proxy, ProxyMode, Registry};
use common::{example, tool, Env, Run};

/// decant with credentials isolated in the env's own directory (never the user's files).
fn cmd(env: &Env) -> Command {
    let mut c = env.decant();
    c.env("HOME", env.path())
        .env("REGISTRY_AUTH_FILE", env.path().join("auth.json"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG");
    c
}

fn dec(env: &Env, args: &[&str]) -> Run {
    dec_in(env, args, "")
}

fn dec_in(env: &Env, args: &[&str], stdin: &str) -> Run {
    dec_with(env, args, stdin, &[])
}

/// `docker login --password-stdin` against a plain-HTTP registry.
fn login(env: &Env, registry: &str, user: &str, password: &str) -> Run {
    let args = [
        "login",
        "--tls-verify=false",
        "-u",
        user,
        "--password-stdin",
        registry,
    ];
    dec_in(env, &args, &format!("{password}\n"))
}

fn dec_with(env: &Env, args: &[&str], stdin: &str, vars: &[(&str, &str)]) -> Run {
    use std::io::Write;
    let mut child = cmd(env)
        .envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn decant");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let o = child.wait_with_output().expect("wait decant");
    Run {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// An env with the example image imported as `ex`.
fn env_with_example() -> Env {
    let env = Env::new();
    let root = example().join("root.ext4");
    env.run(&["import", "-t", "ex", root.to_str().expect("utf8")])
        .ok();
    env
}

/// The `<tag>: digest: sha256:.. size: N` line's digest.
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in {out}"))
        .to_string()
}

fn stored_manifest_digest(env: &Env, name: &str) -> String {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.store().join("index.json")).expect("index.json"),
    )
    .expect("index JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(name))
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{name} not in {index}"))
        .to_string()
}

/// oci-image-tool checks the layout, manifest, config and layers of image `name` in `env`.
fn validate(env: &Env, name: &str) {
    let store = env.store();
    tool(
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            &format!("name={name}"),
            store.to_str().expect("utf8"),
        ],
    );
}

#[track_caller]
fn one_line_error(r: &Run, want: &str) {
    assert_ne!(r.status, 0, "should fail: {}", r.stdout);
    let e = r.stderr.trim();
    assert!(e.contains(want), "want {want:?} in: {e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
}

#[test]
fn push_pull_repush_mount_and_skopeo_reads_it() {
    let reg = Registry::start(false);
    let proxy = Proxy::start(reg.port, ProxyMode::default());
    let env = env_with_example();
    let x = format!("{}/x:t", proxy.addr());
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();
    assert!(r.stdout.starts_with(&format!(
        "The push refers to repository [{}/x]",
        proxy.addr()
    )));
    assert!(r.stdout.contains(": Pushed"), "{}", r.stdout);
    let digest = pushed_digest(&r.stdout);

    // Re-push: one HEAD per blob (layer + config) and one manifest PUT, no ping.
    proxy.clear();
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();
    assert!(r.stdout.contains(": Layer already exists"), "{}", r.stdout);
    assert_eq!(pushed_digest(&r.stdout), digest);
    let reqs = proxy.requests();
    let heads = reqs.iter().filter(|r| r.starts_with("HEAD ")).count();
    let puts = reqs.iter().filter(|r| r.starts_with("PUT ")).count();
    assert_eq!((heads, puts, reqs.len()), (2, 1, 3), "{reqs:#?}");

    // Another repository of the same registry: mounted, not uploaded.
    proxy.clear();
    let y = format!("{}/team/y:v1", proxy.addr());
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &y]).ok();
    assert!(r.stdout.contains(": Mounted from x"), "{}", r.stdout);
    assert!(
        !proxy.requests().iter().any(|r| r.starts_with("PATCH ")
            || (r.starts_with("PUT ")
                && r.contains("/blobs/uploads/")
                && r.contains("/team/y/")
                && r.contains("sha256%3Aa"))),
        "{:#?}",
        proxy.requests()
    );

    // skopeo reads what decant pushed; same manifest digest.
    let oci = env.path().join("skopeo-oci");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{x}"),
            &format!("oci:{}:t", oci.display()),
        ],
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(digest.as_str())
    );
    let inspect = tool(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{y}")],
    );
    assert!(inspect.contains(&digest), "{inspect}");

    // decant pulls it back into a fresh store: same digest, then "up to date".
    let env2 = Env::new();
    let r = dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert!(r.stdout.contains(": Pull complete"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .contains(&format!("Status: Downloaded newer image for {x}")));
    assert_eq!(stored_manifest_digest(&env2, &x), digest);
    let r = dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert!(r.stdout.contains(": Already exists"), "{}", r.stdout);
    assert!(r
        .stdout
        .contains(&format!("Status: Image is up to date for {x}")));
    // The pulled image is a valid layout image for oci-image-tool.
    validate(&env2, &x);

    // A Docker schema2 image (skopeo converts on the way in) pulls too, digest intact.
    let s2 = format!("{}/s2:t", proxy.addr());
    tool(
        "skopeo",
        &[
            "copy",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", oci.display()),
            &format!("docker://{s2}"),
        ],
    );
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{s2}"),
        ],
    );
    assert!(
        raw.contains("vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    dec(&env2, &["pull", "--tls-verify=false", &s2]).ok();
    let info: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{s2}")],
    ))
    .expect("skopeo inspect JSON");
    let want = info["Digest"].as_str().expect("Digest").to_string();
    assert_eq!(stored_manifest_digest(&env2, &s2), want);
    // The store keeps it as pulled (Docker media type, same digest); decant reads it.
    // (oci-image-tool and skopeo's oci: transport only look at OCI-typed descriptors.)
    let inspect = dec(&env2, &["image", "inspect", &s2]).ok().stdout;
    assert!(
        inspect.contains("amd64") || inspect.contains("arm64"),
        "{inspect}"
    );

    // --all-tags pulls both tags of a repository.
    dec(
        &env,
        &[
            "push",
            "--tls-verify=false",
            "ex",
            &format!("{}/x:t2", proxy.addr()),
        ],
    )
    .ok();
    let env3 = Env::new();
    let r = dec(
        &env3,
        &[
            "pull",
            "--tls-verify=false",
            "--all-tags",
            &format!("{}/x", proxy.addr()),
        ],
    )
    .ok();
    assert_eq!(r.stdout.matches("Status: ").count(), 2, "{}", r.stdout);
    let images = dec(&env3, &["images"]).ok().stdout;
    assert!(
        images.contains(" t ") && images.contains(" t2 "),
        "{images}"
    );
}

#[test]
fn basic_auth_login_push_pull_logout() {
    let reg = Registry::start(true);
    let pw = reg.password.clone().expect("password");
    let env = env_with_example();
    let x = format!("{}/x:t", reg.addr());
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]);
    one_line_error(&r, "unauthorized");
    let r = login(&env, &reg.addr(), "docker", "wrong-password");
    one_line_error(&r, "401");
    assert!(!env.path().join("auth.json").exists());
    let r = login(&env, &reg.addr(), "docker", &pw).ok();
    assert!(r.stdout.contains("Login Succeeded"));
    assert!(!r.stdout.contains(&pw) && !r.stderr.contains(&pw));
    let auth = env.path().join("auth.json");
    let mode = std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!std::fs::read_to_string(&auth).unwrap().contains(&pw));
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();
    let digest = pushed_digest(&r.stdout);
    assert!(!r.stdout.contains(&pw) && !r.stderr.contains(&pw));
    // skopeo reads the same auth file.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{x}")])
        .env("REGISTRY_AUTH_FILE", &auth)
        .output()
        .expect("skopeo runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&digest));
    // A second store with the same credentials pulls.
    let env2 = Env::new();
    std::fs::copy(&auth, env2.path().join("auth.json")).unwrap();
    dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert_eq!(stored_manifest_digest(&env2, &x), digest);
    let r = dec(&env, &["logout", &reg.addr()]).ok();
    assert!(r.stdout.contains("Removing login credentials"));
    let r = dec(&env, &["pull", "--tls-verify=false", &x]);
    one_line_error(&r, "unauthorized");
}

#[test]
fn bearer_token_auth_through_the_fixture() {
    let reg = Registry::start(false);
    let proxy = Proxy::start(
        reg.port,
        ProxyMode {
            bearer: Some(("alice".into(), "t0ken-pass".into())),
            ..Default::default()
        },
    );
    let env = env_with_example();
    let x = format!("{}/x:t", proxy.addr());
    one_line_error(&dec(&env, &["push", "--tls-verify=false", "ex", &x]), "401");
    dec(
        &env,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            "t0ken-pass",
            &proxy.addr(),
        ],
    )
    .ok();
    proxy.clear();
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();
    let digest = pushed_digest(&r.stdout);
    // One token for the push scope, reused for every request of the push.
    let tokens = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /token"))
        .count();
    assert_eq!(tokens, 1, "{:#?}", proxy.requests());
    assert!(proxy
        .requests()
        .iter()
        .any(|r| r.contains("scope=repository%3Ax%3Apull%2Cpush")));
    let env2 = Env::new();
    std::fs::copy(env.path().join("auth.json"), env2.path().join("auth.json")).unwrap();
    dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert_eq!(stored_manifest_digest(&env2, &x), digest);
}

/// Pushes `ex` in 256 KiB PATCH chunks.
fn push_chunked(env: &Env, dest: &str) -> Run {
    let args = [
        "push",
        "--tls-verify=false",
        "--chunk-size",
        "262144",
        "ex",
        dest,
    ];
    dec(env, &args).ok()
}

#[test]
fn chunked_upload_resumes_after_a_dropped_patch() {
    let reg = Registry::start(false);
    let proxy = Proxy::start(
        reg.port,
        ProxyMode {
            drop_patch: Some(3),
            ..Default::default()
        },
    );
    let env = env_with_example();
    let x = format!("{}/chunked:t", proxy.addr());
    let r = push_chunked(&env, &x);
    let digest = pushed_digest(&r.stdout);
    let reqs = proxy.requests();
    let patches = reqs.iter().filter(|r| r.starts_with("PATCH ")).count();
    assert!(patches >= 8, "2 MB in 256 KiB chunks: {reqs:#?}");
    // After the lost chunk, the client asked the session where it stood.
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET ") && r.contains("/blobs/uploads/")),
        "{reqs:#?}"
    );
    let env2 = Env::new();
    dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert_eq!(stored_manifest_digest(&env2, &x), digest);

    // The registry got a chunk whose answer was lost: distribution then refuses the stale
    // session state, and the client starts a new session.
    let lost = Proxy::start(
        reg.port,
        ProxyMode {
            drop_patch_answer: Some(2),
            ..Default::default()
        },
    );
    let z = format!("{}/lost:t", lost.addr());
    let r = push_chunked(&env, &z);
    assert_eq!(pushed_digest(&r.stdout), digest);
    let posts = lost
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST "))
        .count();
    assert!(
        posts >= 3,
        "layer, restarted layer, config: {:#?}",
        lost.requests()
    );
    dec(&env2, &["pull", "--tls-verify=false", &z]).ok();
    assert_eq!(stored_manifest_digest(&env2, &z), digest);
}

#[test]
fn errors_are_one_line_and_leave_the_store_alone() {
    let reg = Registry::start(false);
    let env = env_with_example();
    let x = format!("{}/x:t", reg.addr());
    dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();

    let fresh = Env::new();
    dec(&fresh, &["images"]).ok();
    let before = fresh.store_state();
    // A registry that is down: port 1 (tcpmux), where nothing listens. A port freed from an
    // ephemeral bind could be taken meanwhile by another test's registry.
    let down = "127.0.0.1:1/x:t".to_string();
    assert!(
        std::net::TcpStream::connect("127.0.0.1:1").is_err(),
        "something listens on 127.0.0.1:1"
    );
    one_line_error(
        &dec(&fresh, &["pull", "--tls-verify=false", &down]),
        "cannot reach",
    );
    one_line_error(
        &dec(&env, &["push", "--tls-verify=false", "ex", &down]),
        "cannot reach",
    );
    // An unknown tag and an unknown repository.
    let unknown = format!("{}/x:nope", reg.addr());
    one_line_error(
        &dec(&fresh, &["pull", "--tls-verify=false", &unknown]),
        "not found",
    );
    let unknown = format!("{}/nothing:t", reg.addr());
    one_line_error(
        &dec(&fresh, &["pull", "--tls-verify=false", &unknown]),
        "not found",
    );
    // Invalid references and an unknown image.
    for bad in [
        format!("{}/UPPER:t", reg.addr()),
        format!("{}/x:-t", reg.addr()),
        format!("{}/x@sha256:abc", reg.addr()),
    ] {
        one_line_error(
            &dec(&fresh, &["pull", "--tls-verify=false", &bad]),
            "invalid reference format",
        );
        one_line_error(
            &dec(&env, &["push", "--tls-verify=false", "ex", &bad]),
            "invalid reference format",
        );
    }
    one_line_error(
        &dec(&env, &["push", "--tls-verify=false", "nosuch", &x]),
        "No such image",
    );
    // HTTPS against a plain-HTTP registry fails with one line too.
    one_line_error(&dec(&fresh, &["pull", &x]), &reg.addr());
    // A proxy that corrupts blobs: digest mismatch, nothing stored.
    let bad = Proxy::start(
        reg.port,
        ProxyMode {
            corrupt_blobs: true,
            ..Default::default()
        },
    );
    let r = dec(
        &fresh,
        &["pull", "--tls-verify=false", &format!("{}/x:t", bad.addr())],
    );
    one_line_error(&r, "content digest");
    assert_eq!(fresh.store_state(), before);
    let tmp: Vec<_> = std::fs::read_dir(fresh.store().join(".decant/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
}

/// Starts `decant args` (throttled through `proxy`), kills it with SIGKILL once the proxy saw
/// `trigger`, and waits for it.
fn kill_when(env: &Env, proxy: &Proxy, args: &[&str], trigger: &str) {
    let mut child = cmd(env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn decant");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.requests().iter().any(|r| r.starts_with(trigger)) {
        assert!(
            Instant::now() < deadline,
            "never saw {trigger}: {:#?}",
            proxy.requests()
        );
        if let Ok(Some(st)) = child.try_wait() {
            panic!("decant finished ({st}) before {trigger}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    let st = child.wait().expect("wait");
    assert!(!st.success(), "decant should have been killed mid-transfer");
}

#[test]
fn kill_9_during_push_and_pull_then_rerun_succeeds() {
    let reg = Registry::start(false);
    let slow = Proxy::start(
        reg.port,
        ProxyMode {
            throttle: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    );
    let env = env_with_example();
    let x = format!("{}/k:t", slow.addr());
    kill_when(
        &env,
        &slow,
        &["push", "--tls-verify=false", "ex", &x],
        "PUT ",
    );
    let r = dec(&env, &["push", "--tls-verify=false", "ex", &x]).ok();
    let digest = pushed_digest(&r.stdout);

    let env2 = Env::new();
    slow.clear();
    kill_when(
        &env2,
        &slow,
        &["pull", "--tls-verify=false", &x],
        "GET /v2/k/blobs/",
    );
    // Nothing is indexed; the store opens and lists cleanly.
    assert!(!dec(&env2, &["images"]).ok().stdout.contains("k "));
    dec(&env2, &["pull", "--tls-verify=false", &x]).ok();
    assert_eq!(stored_manifest_digest(&env2, &x), digest);
    validate(&env2, &x);
}

#[test]
fn credential_helpers_get_store_erase() {
    let reg = Registry::start(true);
    let pw = reg.password.clone().expect("password");
    let env = env_with_example();
    // A helper speaking docker-credential's protocol, keeping its secret in a 0600 file.
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-fixture");
    let state = env.path().join("helper-state");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nS={}\ncase \"$1\" in\n  store) umask 077; cat > \"$S\" ;;\n  get) read url; [ -f \"$S\" ] && cat \"$S\" || {{ echo 'credentials not found in native keychain'; exit 1; }} ;;\n  erase) rm -f \"$S\" ;;\nesac\n",
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        env.path().join("auth.json"),
        format!(r#"{{"credHelpers":{{"{}":"fixture"}}}}"#, reg.addr()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str], input: &str| {
        let r = dec_with(&env, args, input, &[("PATH", &path)]);
        (r.status == 0, r.stdout + &r.stderr)
    };
    let (ok, out) = run(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "docker",
            "--password-stdin",
            &reg.addr(),
        ],
        &format!("{pw}\n"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("docker-credential-fixture"), "{out}");
    assert!(std::fs::read_to_string(&state).unwrap().contains(&pw));
    assert!(!std::fs::read_to_string(env.path().join("auth.json"))
        .unwrap()
        .contains(&pw));
    let (ok, out) = run(
        &[
            "push",
            "--tls-verify=false",
            "ex",
            &format!("{}/h:t", reg.addr()),
        ],
        "",
    );
    assert!(ok, "{out}");
    let (ok, _) = run(&["logout", &reg.addr()], "");
    assert!(ok && !state.exists());
    let (ok, out) = run(
        &[
            "push",
            "--tls-verify=false",
            "ex",
            &format!("{}/h:t", reg.addr()),
        ],
        "",
    );
    assert!(!ok && out.contains("unauthorized"), "{out}");
}

fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_registry_answers_give_one_line_errors_and_no_store_change() {
    let reg = Registry::start(false);
    let env = env_with_example();
    dec(
        &env,
        &[
            "push",
            "--tls-verify=false",
            "ex",
            &format!("{}/x:t", reg.addr()),
        ],
    )
    .ok();
    let fresh = Env::new();
    dec(&fresh, &["images"]).ok();
    let before = fresh.store_state();
    type Case = (
        &'static str,
        Box<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "403 on the manifest",
            Box::new(|r: &str| {
                r.contains("/manifests/").then(|| {
                    http(
                        "403 Forbidden",
                        "Content-Type: application/json\r\n",
                        br#"{"errors":[{"code":"DENIED","message":"no pulls for you"}]}"#,
                    )
                })
            }),
            "denied",
        ),
        (
            "500 on every blob, retries bounded",
            Box::new(|r: &str| {
                r.contains("/blobs/")
                    .then(|| http("500 Internal Server Error", "", b"boom"))
            }),
            "HTTP 500",
        ),
        (
            "a truncated manifest",
            Box::new(|r: &str| {
                r.contains("/manifests/").then(|| {
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 900\r\n\r\n{\"schemaVersion\":2,".to_vec()
                })
            }),
            "manifest",
        ),
        (
            "a manifest over the 4 MiB cap",
            Box::new(|r: &str| {
                r.contains("/manifests/").then(|| {
                    http(
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                        &vec![b' '; (4 << 20) + 10],
                    )
                })
            }),
            "cap",
        ),
        (
            "a manifest whose digest header lies",
            Box::new(|r: &str| {
                r.contains("/manifests/").then(|| {
                    http(
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\r\n",
                        br#"{"schemaVersion":2,"config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[]}"#,
                    )
                })
            }),
            "content digest",
        ),
        (
            "a blob longer than the manifest says",
            Box::new(|r: &str| {
                (r.starts_with("GET ") && r.contains("/blobs/sha256:"))
                    .then(|| http("200 OK", "", &vec![7u8; 5 << 20]))
            }),
            "the manifest says",
        ),
        (
            "an index without this platform",
            Box::new(|r: &str| {
                r.contains("/manifests/").then(|| {
                    http(
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.index.v1+json\r\n",
                        br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2,"platform":{"os":"plan9","architecture":"mips"}}]}"#,
                    )
                })
            }),
            "no manifest for linux/",
        ),
    ];
    for (what, f, want) in cases {
        let p = Proxy::start(
            reg.port,
            ProxyMode {
                canned: Some(f),
                ..Default::default()
            },
        );
        let t0 = Instant::now();
        let r = dec(
            &fresh,
            &["pull", "--tls-verify=false", &format!("{}/x:t", p.addr())],
        );
        assert!(t0.elapsed() < Duration::from_secs(15), "{what}: too slow");
        assert_ne!(r.status, 0, "{what}: should fail");
        let e = r.stderr.trim();
        assert!(e.contains(want), "{what}: want {want:?} in {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        assert_eq!(fresh.store_state(), before, "{what}: the store changed");
    }
}

/// containerd with its own root, state and socket in a temp dir; killed and its mounts
/// undone on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("decant-ctd")
            .tempdir()
            .expect("tempdir");
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd could not run; .ci/run installs the containerd package");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(c.dir.path().join("log"))
            .unwrap_or_default()
            .contains("containerd successfully booted")
        {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> String {
        let sock = self.dir.path().join("sock");
        let mut all = vec!["-a", sock.to_str().expect("utf8")];
        all.extend_from_slice(args);
        tool("ctr", &all)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

#[test]
fn containerd_pulls_and_runs_what_decant_pushed() {
    if !common::require_root("containerd and ctr run need root") {
        return;
    }
    let reg = Registry::start(false);
    let env = env_with_example();
    let x = format!("{}/ctr:t", reg.addr());
    let digest = pushed_digest(
        &dec(&env, &["push", "--tls-verify=false", "ex", &x])
            .ok()
            .stdout,
    );
    let ctd = Containerd::start();
    ctd.ctr(&["images", "pull", "--plain-http", &x]);
    let ls = ctd.ctr(&["images", "ls"]);
    assert!(ls.contains(&x) && ls.contains(&digest), "{ls}");
    let id = format!("decant-reg-{}", std::process::id());
    // --cgroup "": no cgroup of containerd's namespace ("default") is left behind.
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--cgroup",
        "",
        &x,
        &id,
        "/bin/cat",
        "/etc/os-release",
    ]);
    assert!(out.contains("decant example"), "{out}");
    for c in ["memory", "pids", "cpu", "freezer", "unified"] {
        let g = std::path::Path::new("/sys/fs/cgroup").join(c).join(&id);
        assert!(!g.exists(), "{} left", g.display());
    }
}

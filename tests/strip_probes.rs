//! `decant strip`'s host-like probes end to end: a busybox services image (a runit service
//! `web` running busybox httpd on 8080) stripped with `--probe-http` and `--probe-service`,
//! where bisection must keep what the page or the service needs; a probe on a dead port times
//! out in one clear line; and the stripped image still boots host-like, and a container of it
//! is committed, pushed to a real registry and pulled back with the same digest.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::strip::layer_blob;
use common::{assert_containers_clean, run_with_init, static_init, tool, Env, Run};
use serde_json::Value;

/// A busybox root with the runit service `web` (httpd on 8080 serving /srv/www) and some
/// removable documentation, as a tarball for `decant import`.
fn services_tarball(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in [
        "bin",
        "etc/service/web",
        "srv/www",
        "usr/share/doc/junk",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox"))
        .expect("/bin/busybox (busybox-static) is needed; .ci/run installs it");
    for a in ["sh", "sleep", "httpd", "cat", "wget"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(r.join("srv/www/index.html"), "served by runit\n").unwrap();
    std::fs::write(r.join("usr/share/doc/junk/README"), "x".repeat(50_000)).unwrap();
    let run = r.join("etc/service/web/run");
    // By path: busybox sh would run a bare `httpd` as its own applet, link or no link.
    std::fs::write(&run, "#!/bin/sh\nexec /bin/httpd -f -p 8080 -h /srv/www\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tar = dir.join("services.tar");
    tool(
        "tar",
        &["-C", r.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."],
    );
    tar
}

/// An env (root only, said loudly otherwise) with the services image imported as `svc`.
fn env_with_services() -> Option<Env> {
    if !common::require_root("containers need namespaces, mounts and cgroups") {
        return None;
    }
    let env = Env::new();
    let tar = services_tarball(env.path());
    env.run(&["import", "-q", "-t", "svc", tar.to_str().unwrap()])
        .ok();
    Some(env)
}

/// `decant strip svc ... --format json` with the static init, as JSON.
fn strip_json(env: &Env, args: &[&str]) -> Value {
    let mut a = vec!["strip", "svc"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--format", "json"]);
    let r = run_with_init(env, &static_init(), &a).ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// The paths in the final layer of a strip report.
fn layer_paths(env: &Env, report: &Value) -> Vec<String> {
    let blob = layer_blob(env, report);
    tool("tar", &["-tzf", blob.to_str().expect("utf8")])
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}

/// The (group, why) pairs a report kept.
fn kept(report: &Value) -> Vec<(String, String)> {
    report["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .map(|k| {
            (
                k[0].as_str().unwrap_or_default().to_string(),
                k[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn http_probe_keeps_the_page_the_service_serves() {
    let Some(env) = env_with_services() else {
        return;
    };
    let r = strip_json(
        &env,
        &[
            "--tag",
            "svc:slim",
            "--remove",
            "/srv/www/index.html",
            "--remove",
            "/usr/share/doc",
            "--probe-http",
            "8080/index.html",
            "--probe-service",
            "web",
            "--probe-timeout",
            "20",
        ],
    );
    // Both probes pass on the source image.
    let base: Vec<&str> = r["baseline"]
        .as_array()
        .expect("baseline")
        .iter()
        .filter_map(|o| o["probe"].as_str())
        .collect();
    assert_eq!(
        base,
        ["--probe-service web", "--probe-http 8080/index.html"],
        "{r}"
    );
    let k = kept(&r);
    assert_eq!(k.len(), 1, "{r}");
    assert!(k[0].0.starts_with("/srv/www/index.html"), "{k:?}");
    assert!(
        k[0].1
            .contains("--probe-http 8080/index.html fails without it")
            && k[0].1.contains("HTTP 404"),
        "{k:?}"
    );
    let paths = layer_paths(&env, &r);
    assert!(paths.iter().any(|p| p == "srv/www/index.html"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("usr/share/doc")),
        "{paths:?}"
    );
    assert_eq!(r["trials"][0]["passed"], false, "{r}");
    assert_containers_clean(&env, &[]);
}

#[test]
fn service_probe_keeps_what_the_run_script_needs() {
    let Some(env) = env_with_services() else {
        return;
    };
    static_init();
    let t0 = Instant::now();
    let r = strip_json(
        &env,
        &[
            "--tag",
            "svc:slim",
            "--remove",
            "/bin/httpd",
            "--remove",
            "/usr/share/doc",
            "--probe-service",
            "web",
            "--probe-http",
            "8080",
            "--probe-timeout",
            "20",
        ],
    );
    // The service fails at once (BACKOFF), long before the timeout.
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let k = kept(&r);
    assert_eq!(k.len(), 1, "{r}");
    assert!(k[0].0.starts_with("/bin/httpd"), "{k:?}");
    assert!(
        k[0].1
            .contains("--probe-service web fails without it: web is ")
            && ["BACKOFF", "FATAL", "EXITED"]
                .iter()
                .any(|s| k[0].1.contains(s)),
        "{k:?}"
    );
    let paths = layer_paths(&env, &r);
    assert!(paths.iter().any(|p| p == "bin/httpd"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("usr/share/doc")),
        "{paths:?}"
    );
    assert_containers_clean(&env, &[]);
}

#[test]
fn a_dead_port_times_out_in_one_clear_line() {
    let Some(env) = env_with_services() else {
        return;
    };
    let state = env.store_state();
    let init = static_init();
    let t0 = Instant::now();
    let r = run_with_init(
        &env,
        &init,
        &[
            "strip",
            "svc",
            "--tag",
            "svc:bad",
            "--remove",
            "/usr/share/doc",
            "--probe-http",
            "9999",
            "--probe-timeout",
            "2",
        ],
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(r.status, 1, "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("decant: ")
            && last.contains("--probe-http 9999/ fails on the source image already")
            && last.contains("timed out after 2 s: nothing answered on port 9999"),
        "{}",
        r.stderr
    );
    // An unknown service fails at once, naming it; a bad port spec is refused up front.
    let r = run_with_init(
        &env,
        &static_init(),
        &[
            "strip",
            "svc",
            "--tag",
            "svc:bad",
            "--remove",
            "/usr/share/doc",
            "--probe-service",
            "nosuch",
        ],
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("nosuch: ERROR (no such process)"),
        "{}",
        r.stderr
    );
    let r = run_with_init(
        &env,
        &static_init(),
        &[
            "strip",
            "svc",
            "--tag",
            "svc:bad",
            "--remove",
            "/usr/share/doc",
            "--probe-http",
            "http/x",
        ],
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("PORT must be"), "{}", r.stderr);
    // Without decant-init the host-like probes are refused before anything is made.
    let r = run_with_init(
        &env,
        Path::new("/nonexistent/decant-init"),
        &[
            "strip",
            "svc",
            "--tag",
            "svc:bad",
            "--remove",
            "/usr/share/doc",
            "--probe-service",
            "web",
        ],
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("decant-init"), "{}", r.stderr);
    assert_eq!(env.store_state(), state);
    assert_containers_clean(&env, &[]);
}

/// decant with credentials isolated in the env's own directory (never the user's files).
fn dec(env: &Env, args: &[&str]) -> Run {
    let o = env
        .decant()
        .env("HOME", env.path())
        .env("REGISTRY_AUTH_FILE", env.path().join("auth.json"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn decant");
    Run {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The body of `GET /` at 127.0.0.1:`port` once it answers 200 (10 s at most).
fn page(port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
                if let Some((_, body)) = reply.split_once("\r\n\r\n") {
                    return body.to_string();
                }
            }
            last = reply;
        }
        assert!(
            Instant::now() < deadline,
            "no page on port {port}: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stripped_image_boots_host_like_and_a_container_of_it_is_pushed() {
    let Some(env) = env_with_services() else {
        return;
    };
    let r = strip_json(
        &env,
        &[
            "--tag",
            "svc:slim",
            "--remove",
            "/usr/share/doc",
            "--probe-service",
            "web",
            "--probe-http",
            "8080/index.html",
        ],
    );
    assert!(kept(&r).is_empty(), "{r}");
    let id = run_with_init(
        &env,
        &static_init(),
        &[
            "run",
            "-d",
            "--init=host",
            "--name",
            "slim",
            "-p",
            "127.0.0.1:0:8080",
            "svc:slim",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let addr = env.run(&["port", "slim", "8080"]).ok().stdout;
    let port: u16 = addr
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port printed {addr:?}"));
    assert_eq!(page(port), "served by runit\n");
    env.run(&["exec", "slim", "sh", "-c", "echo committed > /srv/www/note"])
        .ok();
    env.run(&["commit", "slim", "slim:committed"]).ok();

    let reg = Registry::start(false);
    let dest = format!("{}/slim:t", reg.addr());
    let out = dec(
        &env,
        &["push", "--tls-verify=false", "slim:committed", &dest],
    )
    .ok();
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in {}", out.stdout))
        .to_string();
    let env2 = Env::new();
    let out = dec(&env2, &["pull", "--tls-verify=false", &dest]).ok();
    assert!(
        out.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        out.stdout
    );
    // The pulled image holds the stripped tree and the container's change.
    let note = env2
        .run(&["run", "--rm", &dest, "cat", "/srv/www/note"])
        .ok()
        .stdout;
    assert_eq!(note, "committed\n");
    let ls = env2
        .run(&[
            "run",
            "--rm",
            &dest,
            "sh",
            "-c",
            "ls /usr/share/doc 2>&1; true",
        ])
        .ok()
        .stdout;
    assert!(ls.contains("No such file"), "{ls}");
    env.run(&["rm", "-f", "slim"]).ok();
    assert_containers_clean(&env, &[id]);
    assert_containers_clean(&env2, &[]);
}

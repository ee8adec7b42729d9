//! `decant strip --trace` end to end: a small image with a dpkg database (the example's
//! busybox tree plus four packages and some unowned directories), a probe that uses some of
//! it, and the trace's proposals verified by that probe: the untouched package and
//! directories go, and a directory the probe reads only under a condition the traced run did
//! not meet (the `tool` package gone) is proposed, fails verification and is bisected back.
//! A second image runs a runit service under decant-init (`--probe-service`, `--probe-http`):
//! tracing is on before the host-like container starts, so what the service reads is seen
//! and kept, and the untouched rest goes without a failing trial.

mod common;

use std::path::PathBuf;

use common::strip::{example_rootfs, unpack_layer, write};
use common::{assert_containers_clean, container_env, run_with_init, static_init, tool, Env};
use serde_json::Value;

/// The probe: runs the app (which reads its data), reads the library, and reads the web page
/// only when `tool` is missing, which never happens in the traced run on the source image.
const PROBE: &str = "/usr/bin/app >/dev/null && cat /usr/lib/libfoo.so.1 >/dev/null && { test -e /usr/bin/tool || cat /srv/www/index.html >/dev/null; }";

/// The example's rootfs with a dpkg database of four packages (base Essential; app, touched,
/// needs libfoo1; tool, untouched) and unowned directories nothing reads.
fn fixture(env: &Env) -> PathBuf {
    let root = example_rootfs(env);
    let w = |p: &str, s: &str| write(&root, p, s);
    w("usr/lib/libfoo.so.1", "libfoo\n");
    w("usr/bin/app", "#!/bin/sh\ncat /usr/share/app/data\n");
    w("usr/bin/tool", "#!/bin/sh\necho tool\n");
    w("usr/share/app/data", &"app data\n".repeat(100));
    w("usr/share/junk/big", &"junk\n".repeat(1000));
    w("opt/vendor/lib/blob", &"blob\n".repeat(1000));
    w("etc/app.conf", "setting=1\n");
    w("usr/bin/base-tool", "base\n");
    for x in ["usr/bin/app", "usr/bin/tool"] {
        tool("chmod", &["755", root.join(x).to_str().expect("utf8")]);
    }
    w(
        "var/lib/dpkg/status",
        "Package: base\nStatus: install ok installed\nPriority: required\nEssential: yes\nMaintainer: t <t@example.org>\nArchitecture: amd64\nVersion: 1\nDescription: base\n\n\
Package: libfoo1\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: amd64\nVersion: 2.0-1\nProvides: libfoo-abi\nDescription: foo library\n\n\
Package: app\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: all\nVersion: 3\nDepends: libfoo1 (>= 2.0), base\nDescription: the app\n\n\
Package: tool\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: amd64\nVersion: 4\nPre-Depends: libfoo-abi\nDescription: a tool\n",
    );
    for (name, list) in [
        ("base", "/.\n/usr\n/usr/bin\n/usr/bin/base-tool\n"),
        ("libfoo1", "/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n"),
        (
            "app",
            "/.\n/etc\n/etc/app.conf\n/usr\n/usr/bin\n/usr/bin/app\n/usr/share\n/usr/share/app\n/usr/share/app/data\n",
        ),
        ("tool", "/.\n/usr\n/usr/bin\n/usr/bin/tool\n"),
    ] {
        w(&format!("var/lib/dpkg/info/{name}.list"), list);
        // dpkg --audit wants an md5sums file per package.
        let sums: String = list
            .lines()
            .map(|l| l.trim_start_matches('/'))
            .filter(|l| root.join(l).is_file())
            .map(|l| {
                let out = tool("md5sum", &[root.join(l).to_str().expect("utf8")]);
                let sum = out.split_whitespace().next().unwrap_or_default().to_string();
                format!("{sum}  {l}\n")
            })
            .collect();
        w(&format!("var/lib/dpkg/info/{name}.md5sums"), &sums);
    }
    let img = env.path().join("trace.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            root.to_str().expect("utf8"),
            "-E",
            "root_owner=0:0",
            img.to_str().expect("utf8"),
            "32M",
        ],
    );
    env.run(&["import", "-t", "tr", img.to_str().expect("utf8")])
        .ok();
    root
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn trace_proposes_the_untouched_and_the_probes_verify() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    fixture(&env);
    let r = env
        .run(&[
            "strip", "tr", "--tag", "tr:slim", "--trace", "--probe", PROBE, "--format", "json",
        ])
        .ok();
    let rep: Value = serde_json::from_str(&r.stdout).expect("json");
    let t = &rep["trace"];
    assert!(
        r.stderr.contains("tracing the probes on the source image"),
        "{}",
        r.stderr
    );
    // What tracing saw: the app, its data, the library and the shell, not the rest.
    assert!(t["matched_events"].as_u64() >= Some(4), "{t}");
    assert!(t["paths_touched"].as_u64() >= Some(4), "{t}");
    assert_eq!(t["packages_touched"], 2, "app and libfoo1: {t}");
    assert!(strs(&t["incomplete"]).is_empty(), "{t}");
    // What it proposed: tool alone (libfoo1 is needed by the touched app, base is
    // Essential), and the directories nothing read.
    assert_eq!(t["proposed_packages"], serde_json::json!([["tool"]]), "{t}");
    let dirs = strs(&t["proposed_dirs"]);
    for d in ["/opt", "/srv", "/usr/share/junk", "/home"] {
        assert!(dirs.contains(&d.to_string()), "{d} not in {dirs:?}");
    }
    for d in ["/usr/share/app", "/usr/lib", "/usr/share"] {
        assert!(!dirs.contains(&d.to_string()), "{d} in {dirs:?}");
    }
    // What was kept: tool went, so the probe read /srv at verification, and the bisection
    // gave the page back.
    assert_eq!(
        rep["removed_packages"],
        serde_json::json!(["tool"]),
        "{rep}"
    );
    assert_eq!(t["removed_packages"], serde_json::json!(["tool"]));
    let kept: Vec<String> = rep["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .map(|k| k[0].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kept,
        vec!["/srv/www/index.html (--trace: untouched)"],
        "{rep}"
    );
    let removed_dirs = strs(&t["removed_dirs"]);
    assert!(
        removed_dirs.contains(&"/opt".to_string()),
        "{removed_dirs:?}"
    );
    assert!(!removed_dirs.contains(&"/srv".to_string()));
    let rounds = strs(&rep["rounds"]);
    assert_eq!(
        rounds,
        vec!["round 1 (trace: packages)", "round 2 (trace: directories)"]
    );
    // The directory round failed first, then was bisected.
    let dir_trials: Vec<&Value> = rep["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .filter(|x| x["round"] == "round 2 (trace: directories)")
        .collect();
    assert_eq!(dir_trials[0]["passed"], false);
    assert!(dir_trials.len() > 2, "{dir_trials:?}");

    // The result lacks the untouched things, keeps what the probe needs, and passes it.
    let out = env.path().join("slim");
    unpack_layer(&env, &rep, &out);
    for gone in [
        "usr/bin/tool",
        "var/lib/dpkg/info/tool.list",
        "opt",
        "usr/share/junk",
        "home/alice/notes.txt",
    ] {
        assert!(!out.join(gone).exists(), "{gone} left");
    }
    for stays in [
        "usr/bin/app",
        "usr/share/app/data",
        "usr/lib/libfoo.so.1",
        "srv/www/index.html",
        "usr/bin/base-tool",
    ] {
        assert!(out.join(stays).is_file(), "{stays} gone");
    }
    let admin = format!("--admindir={}", out.join("var/lib/dpkg").display());
    let audit = tool("dpkg", &[&admin, "--audit"]);
    assert!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    let listed = tool("dpkg-query", &[&admin, "-W", "-f", "${Package}\n"]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, vec!["app", "base", "libfoo1"]);
    env.run(&["run", "--rm", "tr:slim", "/bin/sh", "-c", PROBE])
        .ok();
    assert_containers_clean(&env, &[]);
}

#[test]
fn trace_needs_a_probe_and_says_so() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let state = env.store_state();
    let r = env.run(&["strip", "ex", "--tag", "ex:slim", "--trace"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--trace needs a probe"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert_eq!(env.store_state(), state);
}

/// A busybox root whose runit service `web` serves /srv/www with httpd on 8080, plus
/// directories nothing reads, imported as `svc`.
fn services_env() -> Option<Env> {
    if !common::require_root("tracing and containers need root") {
        return None;
    }
    let env = Env::new();
    let r = env.path().join("svcroot");
    for d in [
        "bin",
        "etc/service/web",
        "srv/www",
        "usr/share/doc/junk",
        "opt/unused",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox"))
        .expect("/bin/busybox (busybox-static) is needed; .ci/run installs it");
    for a in ["sh", "sleep", "httpd", "cat"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).expect("symlink");
    }
    let w = |p: &str, s: &str| std::fs::write(r.join(p), s).expect("write");
    w("etc/passwd", "root:x:0:0:root:/:/bin/sh\n");
    w("etc/group", "root:x:0:\n");
    w("srv/www/index.html", "served by runit\n");
    w("usr/share/doc/junk/README", &"x".repeat(50_000));
    w("opt/unused/blob", &"y".repeat(50_000));
    w(
        "etc/service/web/run",
        "#!/bin/sh\nexec /bin/httpd -f -p 8080 -h /srv/www\n",
    );
    tool(
        "chmod",
        &["755", r.join("etc/service/web/run").to_str().expect("utf8")],
    );
    let tar = env.path().join("services.tar");
    tool(
        "tar",
        &[
            "-C",
            r.to_str().expect("utf8"),
            "-cf",
            tar.to_str().expect("utf8"),
            ".",
        ],
    );
    env.run(&["import", "-q", "-t", "svc", tar.to_str().expect("utf8")])
        .ok();
    Some(env)
}

#[test]
fn trace_sees_the_services_the_init_starts() {
    let Some(env) = services_env() else {
        return;
    };
    let r = run_with_init(
        &env,
        &static_init(),
        &[
            "strip",
            "svc",
            "--tag",
            "svc:slim",
            "--trace",
            "--probe-service",
            "web",
            "--probe-http",
            "8080/index.html",
            "--probe-timeout",
            "20",
            "--format",
            "json",
        ],
    )
    .ok();
    let rep: Value = serde_json::from_str(&r.stdout).expect("json");
    let t = &rep["trace"];
    // No package database: directories only, said so.
    assert_eq!(t["proposed_packages"], serde_json::json!([]), "{t}");
    assert!(
        strs(&rep["notes"])
            .iter()
            .any(|n| n.contains("no package database")),
        "{rep}"
    );
    let dirs = strs(&t["proposed_dirs"]);
    assert_eq!(dirs, vec!["/opt", "/usr/share"], "{t}");
    // What the service read was seen (the page is only read by httpd, inside the init's
    // container), so nothing needed was proposed: one passing trial, nothing kept.
    assert_eq!(rep["kept"], serde_json::json!([]), "{rep}");
    let trials = rep["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 1, "{rep}");
    assert_eq!(trials[0]["passed"], true);
    assert_eq!(strs(&t["removed_dirs"]), dirs);
    let out = env.path().join("slim");
    unpack_layer(&env, &rep, &out);
    assert!(out.join("srv/www/index.html").is_file());
    assert!(out.join("etc/service/web/run").is_file());
    assert!(!out.join("usr/share").exists());
    assert!(!out.join("opt").exists());
    assert_containers_clean(&env, &[]);
}

#[test]
fn trace_is_refused_without_root_in_one_line() {
    if !common::require_root("setpriv to nobody needs root") {
        return;
    }
    let dir = tempfile::TempDir::new().expect("tempdir");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["env", "-i"])
        .arg(format!(
            "DECANT_ROOT={}",
            dir.path().join("store").display()
        ))
        .arg(env!("CARGO_BIN_EXE_decant"))
        .args([
            "strip", "ex", "--tag", "ex:slim", "--trace", "--probe", "true",
        ])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("setpriv could not run ({e}); util-linux provides it"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "decant: --trace needs root (fanotify filesystem marks need CAP_SYS_ADMIN)"
    );
    // Refused before the store is opened: nothing was made.
    assert!(!dir.path().join("store").exists());
}

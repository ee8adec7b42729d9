//! `decant runtime` driven exactly as runc is, on a bundle that `runc spec` wrote.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::tool;

fn bundle(dir: &Path, args: &[&str]) {
    let rootfs = dir.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox"))
        .expect("busybox-static (.ci/run installs it)");
    for a in ["sh", "echo", "sleep", "hostname", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(a)).unwrap();
    }
    tool("runc", &["spec", "--bundle", dir.to_str().unwrap()]);
    let path = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|s| serde_json::Value::from(*s)).collect();
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

fn decant(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_decant"))
        .arg("runtime")
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn runc_style_lifecycle_on_a_runc_spec_bundle() {
    if !common::require_root("containers need namespaces and mounts") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let b1 = tmp.path().join("one");
    bundle(&b1, &["sh", "-c", "echo hi from $(hostname); exit 7"]);
    let id = format!("rt-{}", std::process::id());
    let o = decant(&state, &["run", "--bundle", b1.to_str().unwrap(), &id]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi from runc\n");

    let b2 = tmp.path().join("two");
    bundle(&b2, &["sleep", "60"]);
    let id2 = format!("rt2-{}", std::process::id());
    // The container's init keeps the stdio it was created with (as runc's does): give it its
    // own, or reading our pipes to EOF would wait for the container to end.
    let created = Command::new(env!("CARGO_BIN_EXE_decant"))
        .args([
            "runtime",
            "--root",
            state.to_str().unwrap(),
            "create",
            "--bundle",
            b2.to_str().unwrap(),
            &id2,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    let st: serde_json::Value =
        serde_json::from_slice(&decant(&state, &["state", &id2]).stdout).unwrap();
    assert_eq!(st["status"], "created");
    assert!(decant(&state, &["start", &id2]).status.success());
    let st: serde_json::Value =
        serde_json::from_slice(&decant(&state, &["state", &id2]).stdout).unwrap();
    assert_eq!(st["status"], "running");
    let list = String::from_utf8_lossy(&decant(&state, &["list"]).stdout).into_owned();
    assert!(list.contains(&id2) && list.contains("running"), "{list}");
    let o = decant(&state, &["delete", &id2]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("running"),
        "delete refuses a running container"
    );
    assert!(decant(&state, &["kill", &id2, "KILL"]).status.success());
    for _ in 0..100 {
        let st: serde_json::Value =
            serde_json::from_slice(&decant(&state, &["state", &id2]).stdout).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(decant(&state, &["delete", &id2]).status.success());
    let o = decant(&state, &["state", &id2]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A missing command: docker's 127.
    let b3 = tmp.path().join("three");
    bundle(&b3, &["/no/such/cmd"]);
    let o = decant(&state, &["run", "--bundle", b3.to_str().unwrap(), "rt3"]);
    assert_eq!(
        o.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

//! `commit`, `diff`, `export`, `snapshot` and `restore` end to end, as root, on the example
//! image: a container makes every kind of change (create, modify, delete, chmod, dir→file,
//! file→dir, an opaque dir, a hardlink, an xattr); `diff` lists them exactly; the committed
//! image (and its `--squash` twin) holds the very tree the container had, runs, carries the
//! `--change`s and history, and passes oci-image-tool and umoci; `export` is the container's
//! merged view; a snapshot taken before a change and restored brings the container back with
//! its name and configuration; a commit killed with SIGKILL leaves a valid store, no frozen
//! container, and the rerun works. Nothing is left behind.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, Meta};

/// A tar (as `export` writes it) as the same lstat view `common::walk` gives of a directory.
fn tar_tree(bytes: &[u8]) -> BTreeMap<Vec<u8>, Meta> {
    use sha2::{Digest, Sha256};
    let mut out: BTreeMap<Vec<u8>, Meta> = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path_bytes().into_owned();
        let path = path.strip_suffix(b"/").unwrap_or(&path).to_vec();
        let h = e.header().clone();
        let t = h.entry_type();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        if t.is_hard_link() {
            let target = out.get(&link.expect("hardlink target")).cloned();
            out.insert(path, target.expect("hardlink to an earlier entry"));
            continue;
        }
        let kind = if t.is_dir() {
            'd'
        } else if t.is_symlink() {
            'l'
        } else if t.is_file() {
            '-'
        } else if t.is_character_special() {
            'c'
        } else if t.is_block_special() {
            'b'
        } else if t.is_fifo() {
            'p'
        } else {
            '?'
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("tar content");
        out.insert(
            path,
            Meta {
                kind,
                mode: h.mode().expect("mode") & 0o7777,
                uid: h.uid().expect("uid") as u32,
                gid: h.gid().expect("gid") as u32,
                mtime: h.mtime().expect("mtime") as i64,
                size: if kind == '-' { data.len() as u64 } else { 0 },
                sha256: (kind == '-').then(|| {
                    Sha256::digest(&data)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                }),
                target: if kind == 'l' { link } else { None },
                rdev: matches!(kind, 'c' | 'b').then(|| {
                    (
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    )
                }),
            },
        );
    }
    out
}

/// `decant export NAME` to standard output, as bytes.
fn export(env: &Env, name: &str) -> Vec<u8> {
    let o = env
        .decant()
        .args(["export", name])
        .stdin(Stdio::null())
        .output()
        .expect("spawn decant");
    assert!(
        o.status.success(),
        "export {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn inspect(env: &Env, what: &str) -> serde_json::Value {
    let r = env.run(&["inspect", what]).ok();
    serde_json::from_str::<serde_json::Value>(&r.stdout).expect("inspect json")[0].clone()
}

/// oci-image-tool on the store's layout alone: it walks every file under the directory, and
/// a container's upper dir (in the store's private `.decant`) holds whiteout devices it cannot
/// open.
fn validate(env: &Env) {
    let copy = env.path().join("layout-copy");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir(&copy).unwrap();
    let store = env.store();
    let mut args: Vec<String> = vec!["-a".into()];
    for f in ["oci-layout", "index.json", "blobs"] {
        args.push(store.join(f).display().to_string());
    }
    args.push(copy.display().to_string());
    common::tool("cp", &args.iter().map(String::as_str).collect::<Vec<_>>());
    common::tool(
        "oci-image-tool",
        &["validate", "--type", "image", copy.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&copy).unwrap();
}

fn container_dir(env: &Env, id: &str) -> std::path::PathBuf {
    env.store().join(".decant/containers").join(id)
}

/// The changes every commit test makes, through the container (busybox applets by name where
/// the image has no link for them).
const CHANGES: &str = "echo hi > /root/new
echo 'bob:x:1001:1001::/home/bob:/bin/sh' >> /etc/passwd
rm /etc/fstab
busybox chmod 600 /etc/os-release
rm -rf /srv/www && echo now-a-file > /srv/www
rm /home/alice/notes.txt && mkdir /home/alice/notes.txt && echo in > /home/alice/notes.txt/inside
rm -rf /var/log && mkdir /var/log && echo fresh > /var/log/new
echo linked > /root/h1 && ln /root/h1 /root/h2
echo x > /root/xattr";

const DIFF: &str = "C /etc
D /etc/fstab
C /etc/os-release
C /etc/passwd
C /home
C /home/alice
C /home/alice/notes.txt
A /home/alice/notes.txt/inside
C /root
A /root/h1
A /root/h2
A /root/new
A /root/xattr
C /srv
C /srv/www
C /var
C /var/log
D /var/log/lastlog
A /var/log/new
D /var/log/syslog
";

/// A running container `name` with `CHANGES` made and a user xattr set on /root/xattr (from
/// the host, in the upper dir: the image's busybox has no setfattr); returns its id.
fn changed_container(env: &Env, name: &str) -> String {
    let r = env
        .run(&["run", "-d", "--name", name, "ex", "sleep", "1000"])
        .ok();
    let id = r.stdout.trim().to_string();
    env.run(&["exec", name, "sh", "-ec", CHANGES]).ok();
    let f = container_dir(env, &id).join("upper/root/xattr");
    common::tool(
        "setfattr",
        &["-n", "user.decant", "-v", "kept", f.to_str().unwrap()],
    );
    id
}

#[test]
fn commit_diff_export_squash_round_trip() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = changed_container(&env, "box");

    let r = env.run(&["diff", "box"]).ok();
    assert_eq!(r.stdout, DIFF);

    // export is the container's merged view (less decant's bind-mount targets, which the
    // runtime created in it).
    let tar = export(&env, "box");
    let exported = tar_tree(&tar);
    let merged = inspect(&env, "box")["GraphDriver"]["Data"]["MergedDir"]
        .as_str()
        .expect("MergedDir")
        .to_string();
    let mut live = common::walk(Path::new(&merged));
    for p in ["etc/hosts", "etc/resolv.conf"] {
        live.remove(p.as_bytes());
    }
    assert_eq!(exported, live, "export differs from the merged view");
    let xattrs = common::xattrs(&container_dir(&env, &id).join("upper"));
    assert!(xattrs["root/xattr"].iter().any(|(k, _)| k == "user.decant"));

    let r = env
        .run(&[
            "commit",
            "-m",
            "saved",
            "-a",
            "Jane <j@example.com>",
            "-c",
            r#"CMD ["cat", "/root/new"]"#,
            "-c",
            "ENV MODE=committed",
            "-c",
            "HEALTHCHECK --interval=5s CMD true",
            "box",
            "committed:1",
        ])
        .ok();
    let image_id = r.stdout.trim().to_string();
    assert!(
        image_id.starts_with("sha256:") && image_id.len() == 71,
        "{image_id}"
    );

    // The new image: parent's layer + one, config changed, history with message and author.
    let v = inspect(&env, "committed:1");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["cat", "/root/new"]));
    assert!(v["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "MODE=committed"));
    assert_eq!(v["Author"], "Jane <j@example.com>");
    let h = env.run(&["history", "--no-trunc", "committed:1"]).ok();
    assert!(h.stdout.contains("saved"), "{}", h.stdout);
    let store = env.store();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("index.json")).unwrap()).unwrap();
    let full = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .find(|r| r.contains("committed"))
        .unwrap()
        .to_string();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == full.as_str())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(&manifest)).unwrap())
            .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store.join("blobs/sha256").join(
                m["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg["config"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64})
    );
    let last = cfg["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["comment"], "saved");
    assert_eq!(last["author"], "Jane <j@example.com>");
    assert_eq!(last["created_by"], "sleep 1000");

    // It runs, with the new CMD and ENV.
    let r = env.run(&["run", "--rm", "committed:1"]).ok();
    assert_eq!(r.stdout, "hi\n");
    let r = env
        .run(&["run", "--rm", "committed:1", "sh", "-c", "echo $MODE"])
        .ok();
    assert_eq!(r.stdout, "committed\n");

    // A container of the new image holds the tree the container had (xattr included).
    let c2 = env.run(&["create", "--name", "c2", "committed:1"]).ok();
    let c2 = c2.stdout.trim().to_string();
    assert_eq!(tar_tree(&export(&env, "c2")), exported);
    let x = env
        .run(&[
            "run",
            "--rm",
            "committed:1",
            "busybox",
            "ls",
            "-l",
            "/root/h1",
        ])
        .ok();
    assert!(x.stdout.contains(" 2 "), "hardlink count: {}", x.stdout);

    // --squash: one layer, the same tree.
    env.run(&["commit", "--squash", "box", "squashed"]).ok();
    let v = inspect(&env, "squashed");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1, "{v}");
    env.run(&["create", "--name", "c3", "squashed"]).ok();
    assert_eq!(tar_tree(&export(&env, "c3")), exported);

    // Peers read it: oci-image-tool validates every image, umoci unpacks the committed one
    // with the whiteouts and the opaque directory applied.
    validate(&env);
    let bundle = env.path().join("bundle");
    common::tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{full}", store.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("root/new")).unwrap(),
        "hi\n"
    );
    assert!(!rootfs.join("etc/fstab").exists());
    assert!(rootfs.join("var/log/new").exists() && !rootfs.join("var/log/syslog").exists());
    assert!(rootfs.join("srv/www").is_file());
    let umoci_tree = common::walk(&rootfs);
    for (p, m) in &exported {
        if m.kind != 'd' {
            assert_eq!(umoci_tree.get(p), Some(m), "{}", String::from_utf8_lossy(p));
        }
    }

    // export -o writes the same tar to a file; a terminal is refused.
    let out = env.path().join("box.tar");
    env.run(&["export", "-o", out.to_str().unwrap(), "box"])
        .ok();
    assert_eq!(tar_tree(&std::fs::read(&out).unwrap()), exported);

    // Unknown containers and bad names: one-line errors, exit 125.
    let r = env.run(&["commit", "nosuch"]);
    assert_eq!(r.status, 125);
    assert!(
        r.stderr.contains("No such container: nosuch"),
        "{}",
        r.stderr
    );
    let r = env.run(&["commit", "box", "Bad:Name"]);
    assert_eq!(r.status, 125);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    env.run(&["rm", "-f", "box", "c2", "c3"]).ok();
    common::assert_containers_clean(&env, &[id, c2]);
}

#[test]
fn snapshot_and_restore_go_back() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env
        .run(&[
            "run", "-d", "--name", "game", "-e", "LEVEL=1", "-w", "/root", "ex", "sleep", "1000",
        ])
        .ok();
    let first_id = r.stdout.trim().to_string();
    env.run(&["exec", "game", "sh", "-c", "echo 2048 > /root/save"])
        .ok();
    let s1 = env.run(&["snapshot", "game"]).ok();
    let tag1 = s1.stdout.split_whitespace().next().unwrap().to_string();
    assert!(tag1.starts_with("game:snap-"), "{}", s1.stdout);
    env.run(&["exec", "game", "sh", "-c", "echo lost > /root/save"])
        .ok();
    env.run(&["snapshot", "game", "after-loss"]).ok();
    let ls = env.run(&["snapshot", "ls", "game"]).ok();
    assert!(
        ls.stdout.contains(&tag1) && ls.stdout.contains("game:after-loss"),
        "{}",
        ls.stdout
    );

    // A bad snapshot name leaves the container alone.
    let r = env.run(&["restore", "game", "ex"]);
    assert_eq!(r.status, 125);
    assert!(r.stderr.contains("not a snapshot"), "{}", r.stderr);

    let r = env.run(&["restore", "game", &tag1]).ok();
    let new_id = r.stdout.trim().to_string();
    assert_ne!(new_id, first_id);
    let r = env.run(&["exec", "game", "cat", "/root/save"]).ok();
    assert_eq!(r.stdout, "2048\n", "the second snapshot's change is gone");
    let r = env
        .run(&["exec", "game", "sh", "-c", "echo $LEVEL; pwd"])
        .ok();
    assert_eq!(r.stdout, "1\n/root\n", "same configuration");
    let v = inspect(&env, "game");
    assert_eq!(v["Name"].as_str().unwrap().trim_start_matches('/'), "game");
    assert_eq!(v["State"]["Running"], true);

    env.run(&["rm", "-f", "game"]).ok();
    common::assert_containers_clean(&env, &[first_id, new_id]);
}

#[test]
fn kill_9_during_commit_leaves_a_valid_store() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env
        .run(&["run", "-d", "--name", "big", "ex", "sleep", "1000"])
        .ok();
    let id = r.stdout.trim().to_string();
    env.run(&[
        "exec",
        "big",
        "busybox",
        "dd",
        "if=/dev/urandom",
        "of=/root/big",
        "bs=1M",
        "count=48",
    ])
    .ok();
    let mut killed = false;
    for delay in [150u64, 60, 300] {
        let mut child = env
            .decant()
            .args(["commit", "big", "big:img"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn commit");
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("kill -9");
            let _ = child.wait();
            killed = true;
            break;
        }
        let _ = child.wait();
    }
    assert!(killed, "commit finished before it could be killed");
    validate(&env);
    let start = Instant::now();
    let r = env.run(&["commit", "big", "big:img"]).ok();
    assert!(r.stdout.starts_with("sha256:"));
    assert!(start.elapsed() < Duration::from_secs(60));
    // The freeze the killed commit left was taken over and thawed.
    let v = inspect(&env, "big");
    assert_eq!(v["State"]["Paused"], false, "{v}");
    env.run(&["exec", "big", "true"]).ok();
    let r = env
        .run(&["run", "--rm", "big:img", "busybox", "wc", "-c", "/root/big"])
        .ok();
    assert!(r.stdout.starts_with("50331648"), "{}", r.stdout);
    validate(&env);
    assert!(
        std::fs::read_dir(env.store().join(".decant/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
            <= 1,
        "temp files left"
    );
    env.run(&["rm", "-f", "big"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn volumes_and_binds_stay_out_of_the_commit() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let host = tempfile::TempDir::new().unwrap();
    let bind = format!("{}:/bound", host.path().display());
    let id = env
        .run(&[
            "run",
            "-d",
            "--name",
            "vols",
            "-v",
            "data:/data",
            "-v",
            &bind,
            "ex",
            "sleep",
            "1000",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&[
        "exec",
        "vols",
        "sh",
        "-c",
        "echo v > /data/in-volume; echo b > /bound/in-bind; echo k > /kept",
    ])
    .ok();
    let diff = env.run(&["diff", "vols"]).ok().stdout;
    assert!(diff.contains("A /kept"), "{diff}");
    assert!(
        !diff.contains("in-volume") && !diff.contains("in-bind"),
        "{diff}"
    );
    env.run(&["commit", "vols", "withvols:1"]).ok();
    let r = env
        .run(&[
            "run",
            "--rm",
            "withvols:1",
            "sh",
            "-c",
            "cat /kept; ls /data /bound 2>&1; true",
        ])
        .ok();
    assert!(r.stdout.starts_with("k\n"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("in-volume") && !r.stdout.contains("in-bind"),
        "{}",
        r.stdout
    );
    env.run(&["rm", "-f", "-v", "vols"]).ok();
    env.run(&["volume", "rm", "data"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

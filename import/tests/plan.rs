//! The import plan on a real disk: GPT with /boot and root, built by testdata/make-example.sh
//! (mkfs.ext4 -d, sfdisk, no mount). Root detection, fstab grafting and the grafted tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use import::plan::{self, PlanOptions};

fn example(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/make-example.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "make-example.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

fn opts(dir: &Path) -> PlanOptions {
    PlanOptions {
        spool_dir: dir.to_path_buf(),
        ..PlanOptions::default()
    }
}

fn paths(tree: &mut dyn snapshot::FileTree) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(e) = tree.next_entry().unwrap() {
        let mut data = Vec::new();
        std::io::Read::read_to_end(tree.content(), &mut data).unwrap();
        out.push((String::from_utf8_lossy(&e.path).into_owned(), data));
    }
    out
}

#[test]
fn gpt_disk_root_is_found_and_boot_is_grafted() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = example(tmp.path());
    let mut opened = plan::open(&ex.join("disk.raw"), &opts(tmp.path())).unwrap();
    let p = &opened.plan;
    assert_eq!(p.scheme, "gpt");
    assert_eq!(p.root.as_deref(), Some("2"));
    let names: Vec<(&str, &str, bool)> = p
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.filesystem.as_str(), v.is_root))
        .collect();
    assert_eq!(
        names,
        vec![
            ("1", "ext4", false),
            ("2", "ext4", true),
            ("3", "Linux swap", false)
        ]
    );
    assert_eq!(p.volumes[0].label.as_deref(), Some("boot"));
    assert_eq!(
        p.volumes[1].uuid.as_deref(),
        Some("5f3d0c1e-7a42-4e55-9d1b-0c0ffee00001")
    );
    let boot = p.mounts.iter().find(|m| m.mountpoint == "/boot").unwrap();
    assert_eq!(
        (boot.status.as_str(), boot.volume.as_deref()),
        ("grafted", Some("1"))
    );
    let swap = p.mounts.iter().find(|m| m.fstype == "swap").unwrap();
    assert_eq!(swap.status, "skipped");
    let guest = p.guest.as_ref().unwrap();
    assert_eq!(guest.architecture, "amd64");
    assert_eq!(
        guest.os_release.as_ref().unwrap().id.as_deref(),
        Some("decant-example")
    );
    let files = paths(&mut *opened.tree);
    let get = |p: &str| files.iter().find(|(n, _)| n == p).map(|(_, d)| d.clone());
    assert_eq!(
        get("boot/grub/grub.cfg").as_deref(),
        Some(&b"set default=0\n"[..])
    );
    assert!(
        get("boot/vmlinuz-6.1.0-example").is_some(),
        "the plan grafts everything; the policy filters later"
    );
    assert_eq!(get("etc/hostname").as_deref(), Some(&b"example\n"[..]));
    let order: Vec<&String> = files.iter().map(|(n, _)| n).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| snapshot::path_order(a.as_bytes(), b.as_bytes()));
    assert_eq!(order, sorted, "grafted tree stays in path order");
}

#[test]
fn partition_dump_and_root_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = example(tmp.path());
    let opened = plan::open(&ex.join("root.ext4"), &opts(tmp.path())).unwrap();
    assert_eq!(opened.plan.scheme, "none");
    assert_eq!(opened.plan.root.as_deref(), Some("disk"));
    let boot = opened
        .plan
        .mounts
        .iter()
        .find(|m| m.mountpoint == "/boot")
        .unwrap();
    assert_eq!(
        boot.status, "unresolved",
        "the /boot partition is not in a partition dump"
    );
    // --root by label, by UUID, by number; a wrong one names the volumes.
    for sel in [
        "LABEL=root",
        "UUID=5f3d0c1e-7a42-4e55-9d1b-0c0ffee00001",
        "2",
    ] {
        let o = PlanOptions {
            root: Some(sel.into()),
            ..opts(tmp.path())
        };
        assert_eq!(
            plan::open(&ex.join("disk.raw"), &o)
                .unwrap()
                .plan
                .root
                .as_deref(),
            Some("2"),
            "{sel}"
        );
    }
    let o = PlanOptions {
        root: Some("LABEL=nope".into()),
        ..opts(tmp.path())
    };
    let err = plan::open(&ex.join("disk.raw"), &o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("LABEL=nope") && err.contains("volumes: 1 (ext4), 2 (ext4), 3 (Linux swap)"),
        "{err}"
    );
    let o = PlanOptions {
        root: Some("3".into()),
        ..opts(tmp.path())
    };
    let err = plan::open(&ex.join("disk.raw"), &o)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn unreadable_filesystems_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let swap = tmp.path().join("swap.img");
    std::fs::write(&swap, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("mkswap").arg(&swap).output().expect("mkswap");
    assert!(out.status.success());
    let err = plan::open(&swap, &opts(tmp.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("swap.img") && err.contains("swap"), "{err}");
}

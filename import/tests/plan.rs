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

fn tool(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required for this test and could not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// FAT volumes named in fstab by their volume id or label (an EFI system partition as
/// `UUID=ABCD-1234`, a FAT32 data partition by LABEL) are found and reported as FAT volumes
/// decant does not read, not as volumes missing from the disk.
#[test]
fn fat_volumes_named_in_fstab_are_found_and_said_unreadable() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let esp = d.join("esp.img");
    tool(
        "mkfs.vfat",
        &["-C", "-i", "ABCD1234", "-n", "EFI", &s(&esp), "4096"],
    );
    let fat32 = d.join("fat32.img");
    tool(
        "mkfs.vfat",
        &[
            "-C",
            "-F",
            "32",
            "-i",
            "0BADF00D",
            "-n",
            "DATA32",
            &s(&fat32),
            "34816",
        ],
    );
    let src = d.join("root");
    for dir in ["etc", "bin"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    std::fs::write(src.join("etc/os-release"), "ID=fat-test\n").unwrap();
    std::fs::write(
        src.join("etc/fstab"),
        "/dev/vda3 / ext4 defaults 0 1\n\
         UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n\
         LABEL=DATA32 /srv/fat vfat defaults 0 2\n\
         UUID=0000-0001 /srv/missing vfat defaults 0 2\n",
    )
    .unwrap();
    let root = d.join("root.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            &s(&src),
            "-E",
            "root_owner=0:0",
            &s(&root),
            "8M",
        ],
    );
    let disk = d.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", &s(&disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk is required for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: gpt\n\
              start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
              start=10240, size=69632, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n\
              start=79872, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
        )
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    for (img, sector) in [(&esp, 2048u64), (&fat32, 10240), (&root, 79872)] {
        f.write_all_at(&std::fs::read(img).unwrap(), sector * 512)
            .unwrap();
    }

    let p = plan::open(&disk, &opts(d)).unwrap().plan;
    assert_eq!(p.root.as_deref(), Some("3"));
    let vols: Vec<(&str, &str, Option<&str>, Option<&str>)> = p
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.filesystem.as_str(),
                v.uuid.as_deref(),
                v.label.as_deref(),
            )
        })
        .collect();
    assert_eq!(vols[0], ("1", "FAT", Some("ABCD-1234"), Some("EFI")));
    assert_eq!(vols[1], ("2", "FAT", Some("0BAD-F00D"), Some("DATA32")));
    let mount = |mp: &str| p.mounts.iter().find(|m| m.mountpoint == mp).unwrap();
    for (mp, vol) in [("/boot/efi", "1"), ("/srv/fat", "2")] {
        let m = mount(mp);
        let why = m.reason.as_deref().unwrap();
        assert_eq!(
            (m.status.as_str(), m.volume.as_deref()),
            ("unresolved", Some(vol)),
            "{m:?}"
        );
        assert!(
            why.contains("FAT (vfat)")
                && why.contains("decant cannot read")
                && why.contains(mp)
                && !why.contains("no volume"),
            "{why}"
        );
    }
    let m = mount("/srv/missing");
    assert!(
        m.reason
            .as_deref()
            .unwrap()
            .contains("no volume on this disk matches UUID=0000-0001"),
        "{m:?}"
    );
}

//! Signature probing against real images made by each format's own mkfs tool.
//! Needs (Debian): e2fsprogs xfsprogs btrfs-progs dosfstools exfatprogs ntfs-3g cryptsetup-bin
//! squashfs-tools genisoimage lvm2 fdisk util-linux.

use std::path::{Path, PathBuf};
use std::process::Command;

use import::block::{BlockSource, FileSource, MemSource};
use import::fs::probe::{probe, FsKind};

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse file of `size` bytes.
fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path
}

fn kind(path: &Path) -> FsKind {
    probe(&FileSource::open(path).unwrap()).unwrap()
}

fn content(dir: &Path) -> PathBuf {
    let d = dir.join("content");
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::write(d.join("etc/hostname"), "probe\n").unwrap();
    d
}

const MIB: u64 = 1 << 20;

#[test]
fn ext_versions() {
    let dir = tempfile::TempDir::new().unwrap();
    for (tool, extra, version) in [
        ("mkfs.ext2", &[][..], 2),
        ("mkfs.ext3", &[][..], 3),
        ("mkfs.ext4", &[][..], 4),
        ("mkfs.ext4", &["-O", "^has_journal"][..], 4),
        ("mkfs.ext2", &["-j"][..], 3),
        ("mkfs.ext2", &["-O", "extent"][..], 4),
    ] {
        let img = blank(dir.path(), "ext.img", 16 * MIB);
        run(Command::new(tool).args(["-q", "-F"]).args(extra).arg(&img));
        assert_eq!(kind(&img), FsKind::Ext { version }, "{tool} {extra:?}");
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn other_filesystems() {
    let dir = tempfile::TempDir::new().unwrap();
    let src = content(dir.path());
    let check = |name: &str, size: u64, cmd: &mut Command, expected: FsKind| {
        let img = blank(dir.path(), name, size);
        run(cmd.arg(&img));
        let got = kind(&img);
        assert_eq!(got, expected, "{name}");
        assert!(!got.is_supported());
        let msg = got.unsupported_message(name);
        assert!(msg.starts_with(&format!("{name}: this is ")), "{msg}");
        assert!(msg.ends_with("decant reads ext2/3/4 only"), "{msg}");
        std::fs::remove_file(&img).unwrap();
    };
    check(
        "xfs.img",
        320 * MIB,
        Command::new("mkfs.xfs").arg("-q"),
        FsKind::Xfs,
    );
    check(
        "btrfs.img",
        128 * MIB,
        Command::new("mkfs.btrfs").arg("-q"),
        FsKind::Btrfs,
    );
    for fat in ["12", "16", "32"] {
        check(
            &format!("fat{fat}.img"),
            64 * MIB,
            Command::new("mkfs.vfat").args(["-F", fat]),
            FsKind::Vfat,
        );
    }
    check(
        "exfat.img",
        16 * MIB,
        &mut Command::new("mkfs.exfat"),
        FsKind::Exfat,
    );
    check(
        "ntfs.img",
        16 * MIB,
        Command::new("mkfs.ntfs").args(["-q", "-F", "-f"]),
        FsKind::Ntfs,
    );
    check(
        "swap.img",
        4 * MIB,
        &mut Command::new("mkswap"),
        FsKind::Swap,
    );
    let key = dir.path().join("key");
    std::fs::write(&key, "not a secret").unwrap();
    for luks in ["luks1", "luks2"] {
        check(
            &format!("{luks}.img"),
            32 * MIB,
            Command::new("cryptsetup")
                .args(["luksFormat", "--batch-mode", "--type", luks])
                .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
                .arg("--key-file")
                .arg(&key),
            FsKind::Luks,
        );
    }

    // Tools that write their own output file.
    let squash = dir.path().join("root.squashfs");
    run(Command::new("mksquashfs").arg(&src).arg(&squash).args([
        "-quiet",
        "-no-progress",
        "-noappend",
    ]));
    assert_eq!(kind(&squash), FsKind::Squashfs);
    let iso = dir.path().join("cd.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-R", "-o"])
        .arg(&iso)
        .arg(&src));
    assert_eq!(kind(&iso), FsKind::Iso9660);
    assert_eq!(
        FsKind::Iso9660.unsupported_message("cd.iso"),
        "cd.iso: this is an ISO 9660 (CD/DVD) filesystem; decant reads ext2/3/4 only"
    );
}

#[test]
fn partition_tables() {
    let dir = tempfile::TempDir::new().unwrap();
    for label in ["dos", "gpt"] {
        let img = blank(dir.path(), "disk.img", 64 * MIB);
        let mut sfdisk = Command::new("sfdisk");
        sfdisk
            .arg("-q")
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = sfdisk.spawn().expect("sfdisk is installed");
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("label: {label}\n,16M\n,\n").as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(kind(&img), FsKind::PartitionTable, "{label}");
        std::fs::remove_file(&img).unwrap();
    }
}

/// pvcreate needs a block device: a loop device on the image, detached before probing.
#[test]
fn lvm_physical_volume() {
    let dir = tempfile::TempDir::new().unwrap();
    let img = blank(dir.path(), "pv.img", 16 * MIB);
    let loop_dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&img));
    let loop_dev = loop_dev.trim().to_string();
    let created = Command::new("pvcreate")
        .args(["-y", "-ff", &loop_dev])
        .output();
    run(Command::new("losetup").args(["-d", &loop_dev]));
    let created = created.expect("pvcreate is installed (lvm2)");
    assert!(
        created.status.success(),
        "pvcreate: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(kind(&img), FsKind::LvmPv);
}

#[test]
fn damaged_and_truncated_images_never_fail_or_panic() {
    let dir = tempfile::TempDir::new().unwrap();
    let img = blank(dir.path(), "ext.img", 8 * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let data = std::fs::read(&img).unwrap();
    for cut in [0, 100, 1024, 1024 + 57, 1024 + 60, 1024 + 103] {
        let src = MemSource::new(data[..cut].to_vec(), "cut");
        assert_eq!(probe(&src).unwrap(), FsKind::Unknown, "cut at {cut}");
    }
    let mut flipped = data[..8192].to_vec();
    flipped[1024 + 56] ^= 0xFF;
    assert_eq!(
        probe(&MemSource::new(flipped, "flipped")).unwrap(),
        FsKind::Unknown
    );
    let src = MemSource::new(data, "whole");
    assert!(src.len() > 65536);
    assert_eq!(probe(&src).unwrap(), FsKind::Ext { version: 4 });
}

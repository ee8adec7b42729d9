//! VMDK reader against images made by qemu-img (every subformat), a VMware-style footer made by
//! rewriting one, a qemu-io snapshot chain, and damaged copies.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use import::block::BlockSource;
use import::disk::{open_disk, DiskImage, DiskOptions};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An 8 MiB raw disk: patterned data, an all-zero stretch, data again.
fn raw(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut v = vec![0u8; 8 << 20];
    for (i, b) in v.iter_mut().enumerate().take(3 << 20) {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[2];
    }
    for (i, b) in v.iter_mut().enumerate().skip(6 << 20).take(100_000) {
        *b = (i % 251) as u8;
    }
    let p = dir.join("disk.raw");
    fs::write(&p, &v).unwrap();
    (p, v)
}

fn convert(raw: &Path, out: &Path, subformat: &str) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={subformat}"),
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
}

fn open(p: &Path) -> std::sync::Arc<dyn DiskImage> {
    open_disk(p, &DiskOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn read_all(d: &dyn BlockSource) -> Vec<u8> {
    let mut v = vec![0u8; d.len() as usize];
    // Odd-sized reads cross grain and extent boundaries.
    for (i, c) in v.chunks_mut(100_003).enumerate() {
        d.read_at(i as u64 * 100_003, c).unwrap();
    }
    v
}

#[test]
fn every_subformat_reads_like_raw() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, bytes) = raw(dir.path());
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let p = dir.path().join(format!("{sub}.vmdk"));
        convert(&rawp, &p, sub);
        let d = open(&p);
        let info = d.info();
        assert_eq!(info.format, "vmdk");
        assert_eq!(info.subformat, sub);
        assert_eq!(info.virtual_size, 8 << 20);
        assert!(read_all(&*d) == bytes, "{sub} differs from raw");
    }
    // Raw stays raw.
    let d = open(&rawp);
    assert_eq!(d.info().format, "raw");
    assert!(read_all(&*d) == bytes);
}

/// VMware writes streamOptimized with the grain directory offset 0xffffffffffffffff in the
/// header and the real header in a footer; build that from qemu's layout.
#[test]
fn stream_optimized_with_vmware_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, bytes) = raw(dir.path());
    let p = dir.path().join("s.vmdk");
    convert(&rawp, &p, "streamOptimized");
    let mut data = fs::read(&p).unwrap();
    let header: Vec<u8> = data[..512].to_vec();
    data[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    data.resize(data.len().div_ceil(512) * 512, 0);
    let mut footer_marker = vec![0u8; 512];
    footer_marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    footer_marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    data.extend_from_slice(&footer_marker);
    data.extend_from_slice(&header);
    data.extend_from_slice(&[0u8; 512]); // end-of-stream marker
    fs::write(&p, &data).unwrap();
    let d = open(&p);
    assert!(read_all(&*d) == bytes);
}

#[test]
fn snapshot_chain_reads_parent_for_unallocated_grains() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, mut bytes) = raw(dir.path());
    let base = dir.path().join("base.vmdk");
    convert(&rawp, &base, "monolithicSparse");
    let child = dir.path().join("child.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            child.to_str().unwrap(),
        ],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "vmdk",
            "-c",
            "write -P 0xab 1048576 70000",
            "-c",
            "write -z 7340032 65536",
            child.to_str().unwrap(),
        ],
    );
    bytes[1048576..1048576 + 70000].fill(0xab);
    bytes[7340032..7340032 + 65536].fill(0);
    let d = open(&child);
    let info = d.info();
    assert_eq!(info.backing.as_ref().unwrap().file, base);
    assert!(read_all(&*d) == bytes);
}

#[test]
fn parent_loop_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, _) = raw(dir.path());
    let base = dir.path().join("base.vmdk");
    convert(&rawp, &base, "monolithicSparse");
    let child = dir.path().join("child.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            child.to_str().unwrap(),
        ],
    );
    // Make the child its own parent (same length name keeps the descriptor size).
    let mut data = fs::read(&child).unwrap();
    let at = data.windows(9).position(|w| w == b"base.vmdk").unwrap();
    data[at..at + 9].copy_from_slice(b"child.vmd");
    fs::write(&child, &data).unwrap();
    fs::rename(&child, dir.path().join("child.vmd")).unwrap();
    let err = open_disk(&dir.path().join("child.vmd"), &DiskOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("loops"), "{err}");
}

#[test]
fn missing_extent_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, _) = raw(dir.path());
    let p = dir.path().join("flat.vmdk");
    convert(&rawp, &p, "monolithicFlat");
    fs::remove_file(dir.path().join("flat-flat.vmdk")).unwrap();
    let err = open_disk(&p, &DiskOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("flat-flat.vmdk"), "{err}");
}

fn patched(p: &Path, offset: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn hostile_headers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, _) = raw(dir.path());
    let good = dir.path().join("good.vmdk");
    convert(&rawp, &good, "monolithicSparse");
    let cases: [(&str, u64, Vec<u8>); 5] = [
        ("grain directory", 56, (1u64 << 40).to_le_bytes().to_vec()),
        ("grain size", 20, 0u64.to_le_bytes().to_vec()),
        ("grain size", 20, (1u64 << 40).to_le_bytes().to_vec()),
        ("capacity", 12, (1u64 << 60).to_le_bytes().to_vec()),
        ("grain table entries", 44, 0u32.to_le_bytes().to_vec()),
    ];
    for (what, at, bytes) in cases {
        let p = dir.path().join("bad.vmdk");
        fs::copy(&good, &p).unwrap();
        patched(&p, at, &bytes);
        let err = open_disk(&p, &DiskOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"))
            .to_string();
        assert!(
            err.contains(what) && err.contains("bad.vmdk"),
            "{what}: {err}"
        );
    }
}

/// Grain directory, grain table and grain offsets pointing into the header (sector 0 and the
/// embedded descriptor) or past the end of the file are refused, naming the structure.
#[test]
fn hostile_table_offsets_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, _) = raw(dir.path());
    let good = dir.path().join("good.vmdk");
    convert(&rawp, &good, "monolithicSparse");
    let orig = fs::read(&good).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(orig[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(orig[at..at + 4].try_into().unwrap()));
    let (desc, desc_len) = (u64_at(28), u64_at(36));
    assert!(desc > 0 && desc_len > 0, "qemu embeds the descriptor");
    let gd = u64_at(56) * 512;
    let gt = u32_at(gd as usize) * 512;
    let p = dir.path().join("bad.vmdk");
    let open_err = |at: u64, bytes: &[u8]| {
        fs::write(&p, &orig).unwrap();
        patched(&p, at, bytes);
        let err = open_disk(&p, &DiskOptions::default())
            .err()
            .unwrap_or_else(|| panic!("patch at {at} accepted"))
            .to_string();
        assert!(err.contains("bad.vmdk") && !err.contains('\n'), "{err}");
        err
    };
    // Grain directory at sector 0 (the header) and inside the descriptor.
    for sector in [0u64, desc + 1] {
        let err = open_err(56, &sector.to_le_bytes());
        assert!(
            err.contains("grain directory at offset") && err.contains("lies in the header"),
            "{err}"
        );
    }
    // A grain table in the header, and one past the end of the file.
    let err = open_err(gd, &1u32.to_le_bytes());
    assert!(
        err.contains(&format!("grain directory entry at offset {gd}"))
            && err.contains("grain table 0 at sector 1 lies in the header"),
        "{err}"
    );
    let past = (orig.len() as u32 / 512) - 1;
    let err = open_err(gd, &past.to_le_bytes());
    assert!(err.contains("runs past the end of the file"), "{err}");
    // A grain in the descriptor: the open succeeds, reading that grain fails.
    fs::write(&p, &orig).unwrap();
    patched(&p, gt, &((desc + 2) as u32).to_le_bytes());
    let d = open_disk(&p, &DiskOptions::default()).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = d.read_at(0, &mut buf).unwrap_err().to_string();
    assert!(
        err.contains(&format!("grain table entry at offset {gt}"))
            && err.contains("lies in the header"),
        "{err}"
    );
}

#[test]
fn truncated_and_flipped_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (rawp, _) = raw(dir.path());
    let t = std::time::Instant::now();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let good = dir.path().join(format!("{sub}.vmdk"));
        convert(&rawp, &good, sub);
        let orig = fs::read(&good).unwrap();
        let p = dir.path().join("bad.vmdk");
        // Truncated: open may succeed, reading past the cut must fail, never panic.
        fs::write(&p, &orig[..orig.len() / 2]).unwrap();
        if let Ok(d) = open_disk(&p, &DiskOptions::default()) {
            let mut buf = vec![0u8; d.len() as usize];
            assert!(d.read_at(0, &mut buf).is_err());
        }
        // Flipped bytes in the header, descriptor, grain directory, tables and first grains.
        for at in (0..orig.len().min(80_000)).step_by(397) {
            let mut d = orig.clone();
            d[at] ^= 0x5a;
            fs::write(&p, &d).unwrap();
            if let Ok(img) = open_disk(&p, &DiskOptions::default()) {
                let mut buf = vec![0u8; 1 << 20];
                let _ = img.read_at(0, &mut buf);
            }
        }
    }
    assert!(t.elapsed().as_secs() < 20);
}

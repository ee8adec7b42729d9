//! QCOW2 reader against qemu: every image is made by qemu-img/qemu-io at test time and every
//! byte is compared with `qemu-img convert -O raw` of the same image (the oracle). Damaged copies
//! must give one-line errors naming the file, and never panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use import::block::BlockSource;
use import::disk::{qcow2, DiskImage, DiskOptions};
use tempfile::TempDir;

mod common;
use common::*;

/// An 8 MiB disk: pseudo-random bytes, a compressible text stretch and zero regions.
fn raw_disk(dir: &Path) -> PathBuf {
    let mut data = xorshift_bytes(8 * MIB, 0x9e37_79b9_7f4a_7c15);
    data[MIB..2 * MIB].fill(0);
    data[5 * MIB + 4096..5 * MIB + 69632].fill(0);
    for (i, b) in data[3 * MIB..3 * MIB + 300_000].iter_mut().enumerate() {
        *b = b"the quick brown fox "[i % 20];
    }
    data[8 * MIB - 512..].fill(0);
    let path = dir.join("disk.raw");
    std::fs::write(&path, &data).unwrap();
    path
}

fn oracle(dir: &Path, image: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.oracle",
        image.file_name().unwrap().to_str().unwrap()
    ));
    run("qemu-img", &["convert", "-O", "raw", p(image), p(&out)]);
    std::fs::read(out).unwrap()
}

/// Compares the reader with the oracle: whole-disk 1 MiB reads, then odd-sized reads at odd
/// offsets (crossing cluster and L2 boundaries), from two threads at once.
fn compare(disk: Arc<dyn DiskImage>, want: &[u8]) {
    assert_eq!(disk.len(), want.len() as u64, "virtual size");
    let mut buf = vec![0u8; MIB];
    for (i, chunk) in want.chunks(MIB).enumerate() {
        let b = &mut buf[..chunk.len()];
        disk.read_at((i * MIB) as u64, b).unwrap();
        assert!(b == chunk, "1 MiB chunk {i} differs");
    }
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let disk = disk.clone();
            let want = want.to_vec();
            std::thread::spawn(move || {
                let mut x = 12345 + t;
                for _ in 0..300 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let len = ((x >> 20) % 200_000) as usize + 1;
                    let off = ((x >> 40) as usize) % (want.len() - len);
                    let mut b = vec![0u8; len];
                    disk.read_at(off as u64, &mut b).unwrap();
                    assert!(b == want[off..off + len], "read of {len} at {off} differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut b = [0u8; 2];
    assert!(disk.read_at(want.len() as u64 - 1, &mut b).is_err());
}

fn convert(dir: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let raw = raw_disk(dir);
    let out = dir.join(name);
    let mut args = vec!["convert", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(p(&raw));
    args.push(p(&out));
    run("qemu-img", &args);
    out
}

fn check_variant(name: &str, opts: &[&str], subformat: &str) -> DiskImageInfo {
    let dir = TempDir::new().unwrap();
    let img = convert(dir.path(), name, opts);
    let want = oracle(dir.path(), &img);
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    let info = disk.info();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.subformat, subformat);
    assert_eq!(disk.name(), p(&img));
    compare(disk, &want);
    DiskImageInfo { notes: info.notes }
}

struct DiskImageInfo {
    notes: Vec<String>,
}

#[test]
fn matches_magic() {
    assert!(qcow2::matches(b"QFI\xfb\0\0\0\x03"));
    assert!(!qcow2::matches(b"QFI"));
    assert!(!qcow2::matches(b"KDMV...."));
}

#[test]
fn v2_compat_0_10() {
    check_variant("v2.qcow2", &["-o", "compat=0.10"], "v2");
}

#[test]
fn v3_default() {
    check_variant("v3.qcow2", &[], "v3");
}

#[test]
fn deflate_compressed() {
    check_variant("c.qcow2", &["-c"], "v3");
}

#[test]
fn deflate_compressed_v2() {
    check_variant("c2.qcow2", &["-c", "-o", "compat=0.10"], "v2");
}

#[test]
fn zstd_compressed() {
    let info = check_variant("z.qcow2", &["-c", "-o", "compression_type=zstd"], "v3");
    assert!(info.notes.iter().any(|n| n.contains("zstd")));
}

#[test]
fn extended_l2() {
    let info = check_variant("x.qcow2", &["-o", "extended_l2=on"], "v3");
    assert!(info.notes.iter().any(|n| n.contains("extended L2")));
}

#[test]
fn extended_l2_compressed() {
    check_variant("xc.qcow2", &["-c", "-o", "extended_l2=on"], "v3");
}

#[test]
fn cluster_512() {
    check_variant("c512.qcow2", &["-o", "cluster_size=512"], "v3");
}

#[test]
fn cluster_2m() {
    check_variant("c2m.qcow2", &["-o", "cluster_size=2M"], "v3");
}

#[test]
fn cluster_2m_compressed() {
    check_variant("c2mc.qcow2", &["-c", "-o", "cluster_size=2M"], "v3");
}

#[test]
fn external_data_file() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("disk.data");
    let img = convert(
        dir.path(),
        "df.qcow2",
        &["-o", &format!("data_file={}", p(&data))],
    );
    let want = oracle(dir.path(), &img);
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    assert!(disk.info().notes.iter().any(|n| n.contains("data file")));
    compare(disk, &want);
}

/// base (raw data) <- mid <- top, each overlay writing different regions, one zeroed region,
/// relative backing names, a top bigger than its backing. The test's cwd is not the image dir.
#[test]
fn backing_chain_depth_3() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let base = convert(d, "base.qcow2", &[]);
    let mid = d.join("mid.qcow2");
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p(&mid),
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x5a 1M 64k",
            "-c",
            "write -P 0x11 3000k 100k",
            p(&mid),
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            p(&top),
            "12M",
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0xa5 1056k 8k",
            "-c",
            "write -z 4M 128k",
            "-c",
            "write -P 0x33 9M 64k",
            p(&top),
        ],
    );
    assert!(std::env::current_dir().unwrap() != d);
    let want = oracle(d, &top);
    let disk = qcow2::open(&top, &DiskOptions::default()).unwrap();
    let info = disk.info();
    let b1 = info.backing.as_ref().expect("mid");
    let b2 = b1.backing.as_ref().expect("base");
    assert_eq!(b2.file, base);
    assert!(b2.backing.is_none());
    compare(disk, &want);
}

/// A relative data file name resolves beside the image (qemu itself uses its cwd).
#[test]
fn external_data_file_relative() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let raw = raw_disk(d);
    let out = Command::new("qemu-img")
        .current_dir(d)
        .args([
            "convert",
            "-O",
            "qcow2",
            "-o",
            "data_file=rel.data",
            "disk.raw",
            "rel.qcow2",
        ])
        .status()
        .expect("qemu-img is required for this test");
    assert!(out.success());
    let img = d.join("rel.qcow2");
    assert!(std::env::current_dir().unwrap() != d);
    let want = std::fs::read(&raw).unwrap();
    compare(qcow2::open(&img, &DiskOptions::default()).unwrap(), &want);
}

/// A backing file with no format extension (old images): recognised by its magic.
#[test]
fn backing_without_format_extension() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    convert(d, "base.qcow2", &[]);
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    run("qemu-io", &["-c", "write -P 0x5a 1M 64k", p(&top)]);
    let want = oracle(d, &top);
    let mut b = std::fs::read(&top).unwrap();
    let at = b
        .windows(4)
        .take(4096)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("backing format extension");
    b[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&top, &b).unwrap();
    compare(qcow2::open(&top, &DiskOptions::default()).unwrap(), &want);
}

#[test]
fn raw_backing() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let raw = raw_disk(d);
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "disk.raw",
            "-F",
            "raw",
            p(&top),
        ],
    );
    run("qemu-io", &["-c", "write -P 0x5a 1M 64k", p(&top)]);
    let want = oracle(d, &top);
    let disk = qcow2::open(&top, &DiskOptions::default()).unwrap();
    assert_eq!(disk.info().backing.unwrap().file, raw);
    compare(disk, &want);
}

#[test]
fn extended_l2_overlay_subclusters() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    convert(d, "base.qcow2", &[]);
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x5a 1030k 2k",
            "-c",
            "write -z 2052k 4k",
            "-c",
            "write -P 0x77 6000k 10k",
            p(&top),
        ],
    );
    let want = oracle(d, &top);
    compare(qcow2::open(&top, &DiskOptions::default()).unwrap(), &want);
}

// ---- hostile inputs ----

fn open_err(path: &Path) -> String {
    expect_open_err(path, qcow2::open(path, &DiskOptions::default()))
}

/// Reads the whole disk; returns the first error.
fn read_all(disk: &dyn DiskImage) -> Result<(), String> {
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < disk.len() {
        let n = (disk.len() - off).min(MIB as u64) as usize;
        disk.read_at(off, &mut buf[..n])
            .map_err(|e| e.to_string())?;
        off += n as u64;
    }
    Ok(())
}

fn fixture(d: &Path) -> PathBuf {
    convert(d, "h.qcow2", &[])
}

#[test]
fn hostile_truncated_header() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(50).unwrap();
    let e = open_err(&img);
    assert!(e.contains("header"), "{e}");
}

#[test]
fn hostile_truncated_data() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    match qcow2::open(&img, &DiskOptions::default()) {
        Err(e) => assert!(e.to_string().contains(p(&img))),
        Ok(disk) => {
            let e = read_all(&*disk).unwrap_err();
            assert!(e.contains(p(&img)) && e.contains("past the end"), "{e}");
            assert!(!e.contains('\n'));
        }
    }
}

#[test]
fn hostile_l1_past_end() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    patch(&img, 40, &(1u64 << 40).to_be_bytes());
    let e = open_err(&img);
    assert!(e.contains("L1") && e.contains("offset 40"), "{e}");
}

#[test]
fn hostile_l2_into_header() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    let hdr = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(hdr[40..48].try_into().unwrap());
    // First L1 entry -> cluster 0 (the header), with the copied flag.
    patch(&img, l1, &(0x8000_0000_0000_0000u64 | 512).to_be_bytes());
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    let e = read_all(&*disk).unwrap_err();
    assert!(e.contains("L1") && e.contains(p(&img)), "{e}");
    patch(&img, l1, &0x8000_0000_0000_0000u64.to_be_bytes());
    // Offset 0 after masking flags = unallocated: reads as zeros, no error.
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    read_all(&*disk).unwrap();
}

#[test]
fn hostile_data_into_header() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    let hdr = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(hdr[40..48].try_into().unwrap()) as usize;
    let l2 =
        (u64::from_be_bytes(hdr[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00) as u64;
    patch(&img, l2, &0x8000_0000_0000_0000u64.to_be_bytes()); // copied flag, host 0
    patch(
        &img,
        l2 + 8,
        &(0x8000_0000_0000_0000u64 | 4096).to_be_bytes(),
    ); // unaligned
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    let mut b = vec![0u8; 65536];
    disk.read_at(0, &mut b).unwrap(); // host 0 without a data file = unallocated
    let e = disk.read_at(65536, &mut b).unwrap_err().to_string();
    assert!(
        e.contains("not cluster-aligned") && e.contains(p(&img)),
        "{e}"
    );
}

#[test]
fn hostile_cluster_bits_30() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    patch(&img, 20, &30u32.to_be_bytes());
    let e = open_err(&img);
    assert!(e.contains("cluster_bits 30"), "{e}");
}

#[test]
fn hostile_size_2_62() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    patch(&img, 24, &(1u64 << 62).to_be_bytes());
    let t = Instant::now();
    let e = open_err(&img);
    assert!(e.contains("l1_size"), "{e}");
    // Also with an l1_size to match: refused by the 32 MiB cap before any allocation.
    patch(&img, 36, &u32::MAX.to_be_bytes());
    let e = open_err(&img);
    assert!(e.contains("l1_size"), "{e}");
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn hostile_backing_cycle() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let a = d.join("a.qcow2");
    let b = d.join("b.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&a), "1M"]);
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&b),
        ],
    );
    run(
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", p(&a)],
    );
    let e = open_err(&b);
    assert!(e.contains("cycle"), "{e}");
    let e = open_err(&a);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn hostile_self_backing() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    run(
        "qemu-img",
        &["rebase", "-u", "-b", "h.qcow2", "-F", "qcow2", p(&img)],
    );
    assert!(open_err(&img).contains("cycle"));
}

#[test]
fn missing_backing_names_it() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    run(
        "qemu-img",
        &["rebase", "-u", "-b", "gone.qcow2", "-F", "qcow2", p(&img)],
    );
    assert!(open_err(&img).contains("gone.qcow2"));
}

#[test]
fn vmdk_backing_refused() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let raw = raw_disk(d);
    run(
        "qemu-img",
        &["convert", "-O", "vmdk", p(&raw), p(&d.join("b.vmdk"))],
    );
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "b.vmdk",
            "-F",
            "vmdk",
            p(&top),
        ],
    );
    let e = open_err(&top);
    assert!(e.contains("unsupported") && e.contains("vmdk"), "{e}");
}

#[test]
fn hostile_encryption() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    patch(&img, 32, &2u32.to_be_bytes());
    assert!(open_err(&img).contains("LUKS"));
    patch(&img, 32, &1u32.to_be_bytes());
    assert!(open_err(&img).contains("AES"));
}

#[test]
fn hostile_feature_bits() {
    let dir = TempDir::new().unwrap();
    let img = fixture(dir.path());
    patch(&img, 72, &(1u64 << 9).to_be_bytes());
    let e = open_err(&img);
    assert!(e.contains("0x200") && e.contains("incompatible"), "{e}");
    patch(&img, 72, &2u64.to_be_bytes());
    assert!(open_err(&img).contains("corrupt"));
    patch(&img, 72, &1u64.to_be_bytes());
    let disk = qcow2::open(&img, &DiskOptions::default()).unwrap();
    assert!(disk.info().notes.iter().any(|n| n.starts_with("dirty")));
    read_all(&*disk).unwrap();
}

/// Every single-byte flip in the first 1 KiB and the L1/L2 tables, with a short read: a Result
/// either way, never a panic, and quick.
#[test]
fn hostile_byte_flips() {
    let dir = TempDir::new().unwrap();
    let img = convert(dir.path(), "f.qcow2", &["-c"]);
    let orig = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(orig[40..48].try_into().unwrap()) as usize;
    let l2 =
        (u64::from_be_bytes(orig[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00) as usize;
    let t = Instant::now();
    let spots: Vec<usize> = (0..1024)
        .chain(l1..l1 + 64)
        .chain((l2..l2 + 4096).step_by(7))
        .collect();
    let mut buf = vec![0u8; 256 * 1024];
    let mut refused = 0;
    for at in spots {
        for flip in [0xffu8, 0x80, 0x01] {
            patch(&img, at as u64, &[orig[at] ^ flip]);
            match qcow2::open(&img, &DiskOptions::default()) {
                Ok(disk) => {
                    for off in [0, 3 * MIB as u64] {
                        if let Err(e) = disk.read_at(off, &mut buf) {
                            assert!(!e.to_string().contains('\n'));
                            refused += 1;
                        }
                    }
                }
                Err(e) => {
                    assert!(!e.to_string().contains('\n'));
                    refused += 1;
                }
            }
            patch(&img, at as u64, &[orig[at]]);
        }
    }
    assert!(refused > 100, "only {refused} damaged copies were refused");
    assert!(t.elapsed().as_secs() < 20, "flips took {:?}", t.elapsed());
}

//! VHD reader against qemu: fixed and dynamic images from `qemu-img convert -O vpc`, compared
//! byte for byte with `qemu-img convert -O raw` of the same image; damaged copies fail cleanly.

use std::path::{Path, PathBuf};

use import::block::BlockSource;
use import::disk::{vhd, DiskImage, DiskOptions};
use tempfile::TempDir;

mod common;
use common::*;

/// A 7 MiB disk: pseudo-random bytes with a zero stretch spanning a whole 2 MiB block.
fn make(dir: &Path, name: &str, opts: &[&str]) -> (PathBuf, Vec<u8>) {
    let mut data = xorshift_bytes(7 * MIB, 0x1234_5678_9abc_def1);
    data[MIB..5 * MIB + 77].fill(0);
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let img = dir.join(name);
    let mut args = vec!["convert", "-O", "vpc"];
    args.extend_from_slice(opts);
    args.push(p(&raw));
    args.push(p(&img));
    run("qemu-img", &args);
    let oracle = dir.join(format!("{name}.oracle"));
    run("qemu-img", &["convert", "-O", "raw", p(&img), p(&oracle)]);
    (img, std::fs::read(oracle).unwrap())
}

fn compare(disk: &dyn DiskImage, want: &[u8]) {
    assert_eq!(disk.len(), want.len() as u64);
    let mut all = vec![0u8; want.len()];
    disk.read_at(0, &mut all).unwrap();
    assert!(all == want, "whole-disk read differs");
    let mut x = 7u64;
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = ((x >> 20) % 300_000) as usize + 1;
        let off = ((x >> 40) as usize) % (want.len() - len);
        let mut b = vec![0u8; len];
        disk.read_at(off as u64, &mut b).unwrap();
        assert!(b == want[off..off + len], "read of {len} at {off} differs");
    }
    let mut b = [0u8; 2];
    assert!(disk.read_at(want.len() as u64 - 1, &mut b).is_err());
}

#[test]
fn dynamic() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "d.vhd", &[]);
    let head = std::fs::read(&img).unwrap();
    assert!(vhd::matches(&head[..512]));
    let disk = vhd::open(&img, &DiskOptions::default()).unwrap();
    let info = disk.info();
    assert_eq!(
        (info.format.as_str(), info.subformat.as_str()),
        ("vhd", "dynamic")
    );
    assert_eq!(disk.name(), p(&img));
    compare(&*disk, &want);
}

#[test]
fn fixed() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "f.vhd", &["-o", "subformat=fixed"]);
    let bytes = std::fs::read(&img).unwrap();
    assert!(!vhd::matches(&bytes[..512]));
    assert!(vhd::matches_footer(&bytes[bytes.len() - 512..]));
    let disk = vhd::open(&img, &DiskOptions::default()).unwrap();
    assert_eq!(disk.info().subformat, "fixed");
    // qemu reads a fixed VHD as the whole file, footer included, as its last sector; the
    // footer's current size (what we use) stops before it.
    assert_eq!(want.len(), bytes.len());
    assert!(want.ends_with(&bytes[bytes.len() - 512..]));
    compare(&*disk, &want[..want.len() - 512]);
}

fn open_err(path: &Path) -> String {
    expect_open_err(path, vhd::open(path, &DiskOptions::default()))
}

#[test]
fn damaged_end_footer_uses_copy() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "d.vhd", &[]);
    let len = std::fs::metadata(&img).unwrap().len();
    patch(&img, len - 512 + 50, &[0xaa]);
    let disk = vhd::open(&img, &DiskOptions::default()).unwrap();
    assert!(disk.info().notes.iter().any(|n| n.contains("damaged")));
    compare(&*disk, &want);
    // Both copies damaged: refused.
    patch(&img, 50, &[0xaa]);
    assert!(open_err(&img).contains("checksum"));
}

#[test]
fn hostile_dynamic_header() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhd", &[]);
    let orig = std::fs::read(&img).unwrap();
    // Header fields, with the checksum fixed so the field check itself is reached.
    let cases: &[(usize, &[u8], &str)] = &[
        (512 + 32, &3u32.to_be_bytes(), "block size"),
        (512 + 28, &1u32.to_be_bytes(), "cannot hold"),
        (512 + 16, &u64::MAX.to_be_bytes(), "past the end"),
        (512, b"xxsparse", "cxsparse"),
    ];
    for (off, bytes, want) in cases {
        let mut b = orig.clone();
        b[*off..*off + bytes.len()].copy_from_slice(bytes);
        let sum = !b[512..1536]
            .iter()
            .enumerate()
            .filter(|(i, _)| !(36..40).contains(i))
            .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32));
        b[548..552].copy_from_slice(&sum.to_be_bytes());
        std::fs::write(&img, &b).unwrap();
        let e = open_err(&img);
        assert!(e.contains(want), "patch at {off}: {e}");
    }
    std::fs::write(&img, &orig).unwrap();
    patch(&img, 512 + 40, &[1]);
    assert!(open_err(&img).contains("checksum"));
    std::fs::write(&img, &orig[..100]).unwrap();
    assert!(open_err(&img).contains("shorter"));
}

#[test]
fn hostile_bat_and_truncation() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhd", &[]);
    let orig = std::fs::read(&img).unwrap();
    let bat = u64::from_be_bytes(orig[512 + 16..512 + 24].try_into().unwrap());
    patch(&img, bat, &0x7fff_fff0u32.to_be_bytes());
    let disk = vhd::open(&img, &DiskOptions::default()).unwrap();
    let mut b = vec![0u8; 4096];
    let e = disk.read_at(0, &mut b).unwrap_err().to_string();
    assert!(e.contains("past the end") && e.contains(p(&img)), "{e}");
    // Cut the file in half: the footer copy at 0 is used, reads past the end fail cleanly.
    std::fs::write(&img, &orig[..orig.len() / 2]).unwrap();
    let disk = vhd::open(&img, &DiskOptions::default()).unwrap();
    let mut all = vec![0u8; disk.len() as usize];
    let e = disk.read_at(0, &mut all).unwrap_err().to_string();
    assert!(e.contains("past the end"), "{e}");
}

#[test]
fn differencing_refused() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "f.vhd", &["-o", "subformat=fixed"]);
    let mut b = std::fs::read(&img).unwrap();
    let at = b.len() - 512;
    b[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
    let sum = !b[at..]
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32));
    b[at + 64..at + 68].copy_from_slice(&sum.to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("differencing"));
}

/// Single-byte flips over the footer copy, the dynamic header and the BAT: a Result either way,
/// never a panic.
#[test]
fn hostile_byte_flips() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhd", &[]);
    let orig = std::fs::read(&img).unwrap();
    let end = orig.len() - 512;
    let t = std::time::Instant::now();
    let mut refused = 0;
    let mut buf = vec![0u8; 3 * MIB];
    for at in (0..1600).chain(end..end + 512) {
        for flip in [0xffu8, 0x01] {
            patch(&img, at as u64, &[orig[at] ^ flip]);
            match vhd::open(&img, &DiskOptions::default()) {
                Ok(disk) => {
                    let n = (disk.len() as usize).min(buf.len());
                    if disk.read_at(0, &mut buf[..n]).is_err() {
                        refused += 1;
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

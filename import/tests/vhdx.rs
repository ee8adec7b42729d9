//! VHDX reader against qemu: dynamic and fixed images from `qemu-img convert -O vhdx`,
//! compared byte for byte with `qemu-img convert -O raw`; damaged copies fail cleanly.

use std::path::{Path, PathBuf};

use import::block::BlockSource;
use import::disk::{vhdx, DiskImage, DiskOptions};
use tempfile::TempDir;

mod common;
use common::*;

/// A 7 MiB + 3 KiB disk: pseudo-random bytes with a zero stretch covering whole blocks.
fn make(dir: &Path, name: &str, opts: &[&str]) -> (PathBuf, Vec<u8>) {
    let mut data = xorshift_bytes(7 * MIB + 3072, 0x0bad_cafe_f00d_d00d);
    data[MIB / 2..5 * MIB + 77].fill(0);
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let img = dir.join(name);
    let mut args = vec!["convert", "-O", "vhdx"];
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
    let mut x = 3u64;
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
    let (img, want) = make(dir.path(), "d.vhdx", &[]);
    assert!(vhdx::matches(&std::fs::read(&img).unwrap()[..512]));
    let disk = vhdx::open(&img, &DiskOptions::default()).unwrap();
    let info = disk.info();
    assert_eq!(
        (info.format.as_str(), info.subformat.as_str()),
        ("vhdx", "dynamic")
    );
    assert_eq!(disk.name(), p(&img));
    compare(&*disk, &want);
}

#[test]
fn dynamic_small_blocks() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "d.vhdx", &["-o", "block_size=1M"]);
    compare(&*vhdx::open(&img, &DiskOptions::default()).unwrap(), &want);
}

#[test]
fn fixed() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "f.vhdx", &["-o", "subformat=fixed"]);
    let disk = vhdx::open(&img, &DiskOptions::default()).unwrap();
    assert_eq!(disk.info().subformat, "fixed");
    compare(&*disk, &want);
}

fn open_err(path: &Path) -> String {
    expect_open_err(path, vhdx::open(path, &DiskOptions::default()))
}

/// Recomputes the CRC-32C of a 4 KiB header or 64 KiB region table at `off`.
fn fix_crc(b: &mut [u8], off: usize, len: usize) {
    b[off + 4..off + 8].fill(0);
    let crc = crc32c::crc32c(&b[off..off + len]);
    b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn hostile_headers() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhdx", &[]);
    let orig = std::fs::read(&img).unwrap();

    // A non-empty log in both headers: refused, never replayed.
    let mut b = orig.clone();
    for h in [64 * 1024, 128 * 1024] {
        b[h + 48] = 1;
        fix_crc(&mut b, h, 4096);
    }
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("log"));

    // One damaged header: the other copy is used.
    let mut b = orig.clone();
    b[64 * 1024 + 20] ^= 0xff;
    std::fs::write(&img, &b).unwrap();
    assert!(vhdx::open(&img, &DiskOptions::default()).is_ok());
    b[128 * 1024 + 20] ^= 0xff;
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("CRC"));

    // Both region tables damaged.
    let mut b = orig.clone();
    b[192 * 1024 + 40] ^= 1;
    b[256 * 1024 + 40] ^= 1;
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("region"));

    // BAT region offset past the end (CRC fixed so the offset itself is checked).
    let mut b = orig.clone();
    for r in [192 * 1024, 256 * 1024] {
        b[r + 16 + 16..r + 16 + 24].copy_from_slice(&(1u64 << 50).to_le_bytes());
        fix_crc(&mut b, r, 64 * 1024);
    }
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("past the end"));

    std::fs::write(&img, &orig[..100 * 1024]).unwrap();
    assert!(open_err(&img).contains("past the end"));
    std::fs::write(&img, b"vhdxfil").unwrap();
    open_err(&img);
}

#[test]
fn hostile_metadata_and_bat() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhdx", &[]);
    let orig = std::fs::read(&img).unwrap();
    let r = 192 * 1024 + 16;
    // Region entries: find the BAT and metadata offsets by GUID's first byte.
    let (mut bat, mut meta) = (0usize, 0usize);
    for i in 0..2 {
        let e = r + i * 32;
        let off = le64(&orig, e + 16) as usize;
        if orig[e] == 0x66 {
            bat = off;
        } else {
            meta = off;
        }
    }
    assert!(bat > 0 && meta > 0);
    // Metadata: find the file parameters item (GUID starts 37 67 a1 ca).
    let entries = u16::from_le_bytes([orig[meta + 10], orig[meta + 11]]) as usize;
    let fp = (0..entries)
        .map(|i| meta + 32 + i * 32)
        .find(|e| orig[*e..*e + 4] == [0x37, 0x67, 0xa1, 0xca])
        .unwrap();
    let item = meta + u32::from_le_bytes(orig[fp + 16..fp + 20].try_into().unwrap()) as usize;

    let mut b = orig.clone();
    b[item + 4] |= 2; // HasParent
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("differencing"));

    let mut b = orig.clone();
    b[item..item + 4].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("block size"));

    let mut b = orig.clone();
    b[fp + 16..fp + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    assert!(open_err(&img).contains("outside the metadata region"));

    // First BAT entry: fully present, far past the end of the file.
    let mut b = orig.clone();
    b[bat..bat + 8].copy_from_slice(&((1u64 << 40) | 6).to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let disk = vhdx::open(&img, &DiskOptions::default()).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = disk.read_at(0, &mut buf).unwrap_err().to_string();
    assert!(e.contains("past the end") && e.contains(p(&img)), "{e}");
    // Pointing into the headers, and an invalid state.
    b[bat..bat + 8].copy_from_slice(&6u64.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let disk = vhdx::open(&img, &DiskOptions::default()).unwrap();
    assert!(disk.read_at(0, &mut buf).is_err());
    b[bat..bat + 8].copy_from_slice(&((8u64 << 20) | 7).to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let disk = vhdx::open(&img, &DiskOptions::default()).unwrap();
    assert!(disk
        .read_at(0, &mut buf)
        .unwrap_err()
        .to_string()
        .contains("state 7"));
}

/// Single-byte flips over the metadata table and the BAT (no CRC protects them): a Result
/// either way, never a panic.
#[test]
fn hostile_byte_flips() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "d.vhdx", &["-o", "block_size=1M"]);
    let orig = std::fs::read(&img).unwrap();
    let r = 192 * 1024 + 16;
    let spots: Vec<usize> = (0..2)
        .flat_map(|i| {
            let off = le64(&orig, r + i * 32 + 16) as usize;
            off..off + 400
        })
        .collect();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let t = std::time::Instant::now();
    let mut refused = 0;
    let mut buf = vec![0u8; 2 * MIB];
    for at in spots {
        for flip in [0xffu8, 0x01] {
            std::os::unix::fs::FileExt::write_all_at(&f, &[orig[at] ^ flip], at as u64).unwrap();
            match vhdx::open(&img, &DiskOptions::default()) {
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
            std::os::unix::fs::FileExt::write_all_at(&f, &[orig[at]], at as u64).unwrap();
        }
    }
    assert!(refused > 50, "only {refused} damaged copies were refused");
    assert!(t.elapsed().as_secs() < 20, "flips took {:?}", t.elapsed());
}

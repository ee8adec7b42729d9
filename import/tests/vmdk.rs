//! VMDK reader against images made by qemu-img (every subformat), a streamOptimized file in
//! VMware's layout (grain directory and footer at the end) written here, a qemu-io snapshot
//! chain, and damaged copies.

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

/// One 512-byte metadata marker of a streamOptimized file: the sectors of metadata that
/// follow, a zero size (what tells it from a grain marker), the type.
fn marker(f: &mut Vec<u8>, sectors: u64, kind: u32) {
    f.extend_from_slice(&sectors.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&kind.to_le_bytes());
    f.resize(f.len() + 496, 0);
}

fn pad_sector(f: &mut Vec<u8>) {
    f.resize(f.len().div_ceil(512) * 512, 0);
}

/// Writes `data` (a multiple of 64 KiB) as VMware writes a streamOptimized VMDK: the header with
/// the grain directory offset GD_AT_END, the embedded descriptor, each non-zero grain zlib
/// compressed behind its grain marker, then every grain table behind a GT marker, then the
/// grain directory behind a GD marker, then a footer marker and a copy of the header holding
/// the real grain directory offset, and the end-of-stream marker.
fn write_vmware_stream(data: &[u8], out: &Path) {
    use std::io::Write;
    const GRAIN: usize = 64 << 10;
    const GTES: usize = 512;
    assert_eq!(data.len() % GRAIN, 0);
    let capacity = (data.len() / 512) as u64;
    let grains = data.len() / GRAIN;
    let tables = grains.div_ceil(GTES);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\n\
         RDONLY {capacity} SPARSE \"vmware.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\n"
    );
    let desc_sectors = desc.len().div_ceil(512) as u64;
    // VMware starts the grains at sector 128; everything before is header and descriptor.
    let overhead = 128u64;
    let header = |gd: u64| {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        // Valid newline test, compressed grains, markers.
        h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&desc_sectors.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
        h[56..64].copy_from_slice(&gd.to_le_bytes());
        h[64..72].copy_from_slice(&overhead.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let mut f = header(u64::MAX);
    f.extend_from_slice(desc.as_bytes());
    f.resize(overhead as usize * 512, 0);
    let mut gt = vec![0u32; tables * GTES];
    for (g, grain) in data.chunks(GRAIN).enumerate() {
        if grain.iter().all(|&b| b == 0) {
            continue;
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(grain).unwrap();
        let z = z.finish().unwrap();
        gt[g] = (f.len() / 512) as u32;
        f.extend_from_slice(&(g as u64 * 128).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        pad_sector(&mut f);
    }
    let mut gd = Vec::new();
    for table in gt.chunks(GTES) {
        marker(&mut f, (GTES * 4 / 512) as u64, 1);
        gd.push((f.len() / 512) as u32);
        for e in table {
            f.extend_from_slice(&e.to_le_bytes());
        }
    }
    marker(&mut f, (gd.len() * 4).div_ceil(512) as u64, 2);
    let gd_sector = (f.len() / 512) as u64;
    for e in &gd {
        f.extend_from_slice(&e.to_le_bytes());
    }
    pad_sector(&mut f);
    marker(&mut f, 1, 3);
    f.extend_from_slice(&header(gd_sector));
    f.extend_from_slice(&[0u8; 512]);
    fs::write(out, &f).unwrap();
}

/// VMware's streamOptimized layout, written by our own writer above from a raw disk large
/// enough for three grain tables: the reader returns the raw bytes, and so does qemu.
#[test]
fn stream_optimized_vmware_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = raw(dir.path());
    // 80 MiB: the grain tables cover 32 MiB each; put data in the second and third.
    bytes.resize(80 << 20, 0);
    for (i, b) in bytes.iter_mut().enumerate().skip(40 << 20).take(300_000) {
        *b = (i % 253) as u8;
    }
    bytes[(80 << 20) - 10..].fill(0x42);
    let rawp = dir.path().join("big.raw");
    fs::write(&rawp, &bytes).unwrap();
    let p = dir.path().join("vmware.vmdk");
    write_vmware_stream(&bytes, &p);
    let file = fs::read(&p).unwrap();
    assert_eq!(
        &file[56..64],
        &u64::MAX.to_le_bytes(),
        "GD_AT_END in the header"
    );
    let d = open(&p);
    let info = d.info();
    assert_eq!(info.subformat, "streamOptimized");
    assert_eq!(info.virtual_size, 80 << 20);
    assert!(read_all(&*d) == bytes, "reader differs from the raw disk");
    // qemu reads the same layout to the same bytes.
    let back = dir.path().join("back.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vmdk",
            "-O",
            "raw",
            p.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    );
    assert!(fs::read(&back).unwrap() == bytes, "qemu reads other bytes");
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

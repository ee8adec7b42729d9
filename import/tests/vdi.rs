//! VDI reader against qemu: dynamic and fixed images from `qemu-img convert -O vdi` compared
//! byte for byte with the raw source; differencing images (qemu cannot write them) built here by
//! hand over a qemu-made parent; damaged copies must fail cleanly.

use std::path::{Path, PathBuf};

use import::block::BlockSource;
use import::disk::{vdi, DiskImage, DiskOptions};
use tempfile::TempDir;

mod common;
use common::*;

/// A 4 MiB disk: pseudo-random bytes with a zero MiB (which qemu leaves unallocated) and a
/// zero stretch inside a block.
fn raw_data() -> Vec<u8> {
    let mut data = xorshift_bytes(4 * MIB, 0x2545_f491_4f6c_dd1d);
    data[MIB..2 * MIB].fill(0);
    data[3 * MIB + 100..3 * MIB + 5000].fill(0);
    data
}

fn make(dir: &Path, name: &str, opts: &[&str]) -> (PathBuf, Vec<u8>) {
    let data = raw_data();
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let out = dir.join(name);
    let mut args = vec!["convert", "-O", "vdi"];
    args.extend_from_slice(opts);
    args.push(p(&raw));
    args.push(p(&out));
    run("qemu-img", &args);
    (out, data)
}

fn compare(disk: &dyn DiskImage, want: &[u8]) {
    assert_eq!(disk.len(), want.len() as u64);
    let mut all = vec![0u8; want.len()];
    disk.read_at(0, &mut all).unwrap();
    assert!(all == want, "whole-disk read differs");
    let mut x = 99u64;
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
fn matches_signature() {
    let mut h = vec![0u8; 512];
    assert!(!vdi::matches(&h));
    h[64..68].copy_from_slice(&0xBEDA107Fu32.to_le_bytes());
    assert!(vdi::matches(&h));
    assert!(!vdi::matches(&h[..66]));
}

#[test]
fn dynamic() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "d.vdi", &[]);
    let disk = vdi::open(&img, &DiskOptions::default()).unwrap();
    let info = disk.info();
    assert_eq!(
        (info.format.as_str(), info.subformat.as_str()),
        ("vdi", "dynamic")
    );
    assert_eq!(disk.name(), p(&img));
    compare(&*disk, &want);
}

#[test]
fn fixed() {
    let dir = TempDir::new().unwrap();
    let (img, want) = make(dir.path(), "f.vdi", &["-o", "static=on"]);
    let disk = vdi::open(&img, &DiskOptions::default()).unwrap();
    assert_eq!(disk.info().subformat, "fixed");
    compare(&*disk, &want);
}

/// Writes a differencing child of `parent`: block 0 -> new data 0x5a, block 1 -> parent,
/// block 2 -> zero block, block 3 -> new data 0x77. Returns the expected bytes.
fn make_child(parent: &Path, parent_bytes: &[u8], child: &Path, uuid_byte: u8) -> Vec<u8> {
    let ph = std::fs::read(parent).unwrap();
    let mut h = ph[..512].to_vec();
    h[76..80].copy_from_slice(&4u32.to_le_bytes());
    h[340..344].copy_from_slice(&512u32.to_le_bytes());
    h[344..348].copy_from_slice(&1024u32.to_le_bytes());
    h[388..392].copy_from_slice(&2u32.to_le_bytes());
    h[392..408].fill(uuid_byte);
    h[408..424].fill(uuid_byte.wrapping_add(1));
    h[424..440].copy_from_slice(&ph[392..408]);
    h[440..456].copy_from_slice(&ph[408..424]);
    let mut file = h;
    for e in [0u32, 0xFFFF_FFFF, 0xFFFF_FFFE, 1] {
        file.extend_from_slice(&e.to_le_bytes());
    }
    file.resize(1024, 0);
    file.extend(std::iter::repeat_n(0x5au8, MIB));
    file.extend(std::iter::repeat_n(0x77u8, MIB));
    std::fs::write(child, &file).unwrap();
    let mut want = parent_bytes.to_vec();
    want[..MIB].fill(0x5a);
    want[2 * MIB..3 * MIB].fill(0);
    want[3 * MIB..].fill(0x77);
    want
}

#[test]
fn differencing_found_beside() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (parent, data) = make(d, "parent.vdi", &[]);
    // A decoy with another UUID must not be taken.
    make(d, "decoy.vdi", &[]);
    let child = d.join("child.vdi");
    let want = make_child(&parent, &data, &child, 0xc1);
    let disk = vdi::open(&child, &DiskOptions::default()).unwrap();
    let info = disk.info();
    assert_eq!(info.subformat, "differencing");
    assert_eq!(info.backing.as_ref().unwrap().file, parent);
    assert!(info.notes.is_empty(), "{:?}", info.notes);
    compare(&*disk, &want);

    // A grandchild over the child: its block 1 overrides the parent's.
    let grand = d.join("grand.vdi");
    let mut want2 = make_child(&child, &want, &grand, 0xd1);
    // make_child wrote 0x5a/zero/0x77 over blocks 0, 2 and 3; block 1 comes from the child,
    // which takes it from the parent.
    want2[MIB..2 * MIB].copy_from_slice(&data[MIB..2 * MIB]);
    let disk = vdi::open(&grand, &DiskOptions::default()).unwrap();
    assert!(disk.info().backing.unwrap().backing.is_some());
    compare(&*disk, &want2);
}

#[test]
fn differencing_parent_option() {
    let dir = TempDir::new().unwrap();
    let pdir = TempDir::new().unwrap();
    let (parent, data) = make(pdir.path(), "elsewhere.vdi", &[]);
    let child = dir.path().join("child.vdi");
    let want = make_child(&parent, &data, &child, 0xc2);
    let e = vdi::open(&child, &DiskOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no parent with UUID") && e.contains(p(&child)),
        "{e}"
    );
    let opts = DiskOptions {
        parent: Some(parent.clone()),
    };
    compare(&*vdi::open(&child, &opts).unwrap(), &want);

    // A parent with the wrong UUID (and no right one around it) is refused, saying so.
    let odir = TempDir::new().unwrap();
    let (other, _) = make(odir.path(), "other.vdi", &[]);
    let opts = DiskOptions {
        parent: Some(other.clone()),
    };
    let e = vdi::open(&child, &opts).err().unwrap().to_string();
    assert!(
        e.contains(&format!("the given parent {} has UUID", other.display())) && !e.contains('\n'),
        "{e}"
    );
}

/// A VirtualBox VM directory: the base in `<VM>/`, snapshot 1 in `<VM>/Snapshots/` over the
/// base, snapshot 2 over snapshot 1 beside it. Returns (s2, expected bytes of s2, base data).
fn vbox_chain(vm: &Path, base: &Path) -> (PathBuf, Vec<u8>) {
    let snaps = vm.join("Snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let data = raw_data();
    let s1 = snaps.join("{11111111-aaaa-bbbb-cccc-000000000001}.vdi");
    let want1 = make_child(base, &data, &s1, 0xa1);
    let s2 = snaps.join("{11111111-aaaa-bbbb-cccc-000000000002}.vdi");
    let mut want2 = make_child(&s1, &want1, &s2, 0xa2);
    // Block 1 of s2 and s1 is free: it comes from the base.
    want2[MIB..2 * MIB].copy_from_slice(&data[MIB..2 * MIB]);
    (s2, want2)
}

#[test]
fn differencing_virtualbox_snapshots_dir() {
    let dir = TempDir::new().unwrap();
    let vm = dir.path().join("VM");
    std::fs::create_dir_all(&vm).unwrap();
    let (base, _) = make(&vm, "disk.vdi", &[]);
    // A decoy with another UUID beside the base must not be taken.
    make(&vm, "decoy.vdi", &[]);
    let (s2, want) = vbox_chain(&vm, &base);
    let disk = vdi::open(&s2, &DiskOptions::default()).unwrap();
    let info = disk.info();
    let s1_info = info.backing.as_ref().unwrap();
    assert!(
        s1_info.file.starts_with(vm.join("Snapshots")),
        "{s1_info:?}"
    );
    let base_info = s1_info.backing.as_ref().unwrap();
    assert_eq!(
        base_info.file.canonicalize().unwrap(),
        base.canonicalize().unwrap()
    );
    assert!(info.notes.is_empty(), "{:?}", info.notes);
    compare(&*disk, &want);
}

#[test]
fn differencing_parent_option_for_a_deeper_level() {
    let dir = TempDir::new().unwrap();
    let elsewhere = TempDir::new().unwrap();
    let vm = dir.path().join("VM");
    std::fs::create_dir_all(&vm).unwrap();
    let (base, _) = make(elsewhere.path(), "base.vdi", &[]);
    let (s2, want) = vbox_chain(&vm, &base);
    // Without the option: s1 is found, the base is not, and the error says where it looked.
    let e = expect_open_err(
        &vm.join("Snapshots/{11111111-aaaa-bbbb-cccc-000000000001}.vdi"),
        vdi::open(&s2, &DiskOptions::default()),
    );
    assert!(
        e.contains("no parent with UUID") && e.contains("Snapshots"),
        "{e}"
    );
    // --parent names the base, which is the parent of s2's parent: it is used there.
    let opts = DiskOptions {
        parent: Some(base.clone()),
    };
    let disk = vdi::open(&s2, &opts).unwrap();
    assert_eq!(disk.info().backing.unwrap().backing.unwrap().file, base);
    assert!(disk.info().notes.is_empty(), "{:?}", disk.info().notes);
    compare(&*disk, &want);
    // A --parent of no level of the chain is said to be unused.
    let (base2, _) = make(dir.path(), "base2.vdi", &[]);
    std::fs::rename(&base, vm.join("disk.vdi")).unwrap();
    let opts = DiskOptions {
        parent: Some(base2),
    };
    let disk = vdi::open(&s2, &opts).unwrap();
    assert!(
        disk.info()
            .notes
            .iter()
            .any(|n| n.contains("not in this image's chain")),
        "{:?}",
        disk.info().notes
    );
}

#[test]
fn differencing_modified_parent_noted() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (parent, data) = make(d, "parent.vdi", &[]);
    let child = d.join("child.vdi");
    make_child(&parent, &data, &child, 0xc3);
    patch(&child, 440, &[0xee; 16]);
    let disk = vdi::open(&child, &DiskOptions::default()).unwrap();
    assert!(disk.info().notes.iter().any(|n| n.contains("modified")));
}

// ---- hostile inputs ----

fn open_err(path: &Path) -> String {
    expect_open_err(path, vdi::open(path, &DiskOptions::default()))
}

#[test]
fn hostile_header_fields() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "h.vdi", &[]);
    let orig = std::fs::read(&img).unwrap();
    let cases: &[(u64, &[u8], &str)] = &[
        (376, &3u32.to_le_bytes(), "block size"),
        (376, &0u32.to_le_bytes(), "block size"),
        (384, &1u32.to_le_bytes(), "cannot hold"),
        (384, &u32::MAX.to_le_bytes(), "64 MiB"),
        (368, &u64::MAX.to_le_bytes(), "cannot hold"),
        (340, &u32::MAX.to_le_bytes(), "block map"),
        (76, &9u32.to_le_bytes(), "image type"),
        (76, &3u32.to_le_bytes(), "undo"),
        (68, &0u32.to_le_bytes(), "version"),
        (64, &[0, 0, 0, 0], "signature"),
        // The data area over the header (offset 0) or over the block map; the block map in
        // the header (qemu's header ends at 72 + 384).
        (
            344,
            &0u32.to_le_bytes(),
            "vdi data area at offset 344: data offset 0",
        ),
        (
            344,
            &512u32.to_le_bytes(),
            "vdi data area at offset 344: data offset 512",
        ),
        (344, &u32::MAX.to_le_bytes(), "vdi data area"),
        (340, &0u32.to_le_bytes(), "end of the header (456)"),
        (340, &400u32.to_le_bytes(), "end of the header (456)"),
    ];
    for (off, bytes, want) in cases {
        std::fs::write(&img, &orig).unwrap();
        patch(&img, *off, bytes);
        let e = open_err(&img);
        assert!(e.contains(want), "patch at {off}: {e}");
    }
    std::fs::write(&img, &orig[..300]).unwrap();
    assert!(open_err(&img).contains("shorter"));
}

#[test]
fn hostile_block_map() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "h.vdi", &[]);
    let map = {
        let h = std::fs::read(&img).unwrap();
        u32::from_le_bytes(h[340..344].try_into().unwrap()) as u64
    };
    patch(&img, map, &0x7fff_0000u32.to_le_bytes());
    let disk = vdi::open(&img, &DiskOptions::default()).unwrap();
    let mut b = vec![0u8; 4096];
    let e = disk.read_at(0, &mut b).unwrap_err().to_string();
    assert!(e.contains("past the end") && e.contains(p(&img)), "{e}");
    // Truncated data: the last block is cut off.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 4096).unwrap();
    let disk = vdi::open(&img, &DiskOptions::default()).unwrap();
    let mut all = vec![0u8; disk.len() as usize];
    assert!(disk.read_at(0, &mut all).is_err());
}

#[test]
fn hostile_parent_cycle() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (parent, data) = make(d, "a.vdi", &[]);
    let child = d.join("b.vdi");
    make_child(&parent, &data, &child, 0xc4);
    // Make the parent a differencing image of the child.
    let ch = std::fs::read(&child).unwrap();
    patch(&parent, 76, &4u32.to_le_bytes());
    patch(&parent, 424, &ch[392..408]);
    let e = open_err(&child);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn hostile_byte_flips() {
    let dir = TempDir::new().unwrap();
    let (img, _) = make(dir.path(), "f.vdi", &[]);
    let orig = std::fs::read(&img).unwrap();
    let mut buf = vec![0u8; 2 * MIB];
    let t = std::time::Instant::now();
    let mut refused = 0;
    for at in 64..540 {
        for flip in [0xffu8, 0x80, 0x01] {
            patch(&img, at, &[orig[at as usize] ^ flip]);
            match vdi::open(&img, &DiskOptions::default()) {
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
            patch(&img, at, &[orig[at as usize]]);
        }
    }
    assert!(refused > 50, "only {refused} damaged copies were refused");
    assert!(t.elapsed().as_secs() < 20, "flips took {:?}", t.elapsed());
}

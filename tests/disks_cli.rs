//! End to end on whole disks built at test time, through the `decant` binary: the damaged-disk
//! corpus under a time and address-space bound, `inspect-disk --format json` for the disks the
//! issue names (MBR with a logical root, an LVM root with a two-segment LV, a differencing VDI,
//! a VMware-layout streamOptimized VMDK), several roots and `--root`, fstab grafting by every
//! device-name form, every format to one layer digest, a hand-written VMDK descriptor and
//! `--parent`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{example, tool, Env, Run};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// sfdisk on an image file, the script on stdin.
fn sfdisk(img: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sfdisk could not run; .ci/run installs fdisk");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The first 64 bytes of an ELF64 little-endian executable for `machine` (62 amd64, 183
/// arm64): all the guest inspection reads to tell the architecture.
fn elf_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1;
    h[16] = 2; // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20] = 1;
    h
}

/// A small Linux root: os-release (ID=`id`), fstab, hostname, /bin/sh (an ELF header for
/// `machine`).
fn root_tree(dir: &Path, id: &str, fstab: &str, machine: u16) -> PathBuf {
    let t = dir.join(format!("tree-{id}"));
    for d in ["etc", "bin", "usr/bin", "proc", "boot", "home", "srv"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::write(
        t.join("etc/os-release"),
        format!("NAME=\"{id}\"\nID={id}\nPRETTY_NAME=\"{id} linux\"\nVERSION_ID=\"7\"\n"),
    )
    .unwrap();
    std::fs::write(t.join("etc/fstab"), fstab).unwrap();
    std::fs::write(t.join("etc/hostname"), format!("{id}\n")).unwrap();
    std::fs::write(t.join("bin/sh"), elf_header(machine)).unwrap();
    t
}

/// A data filesystem's tree: one file `<name>.txt` holding `name`.
fn data_tree(dir: &Path, name: &str) -> PathBuf {
    let t = dir.join(format!("tree-{name}"));
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join(format!("{name}.txt")), name).unwrap();
    t
}

/// mkfs.ext4 of `tree` into `out` (`kib` KiB) with a fixed UUID and a label.
fn mkfs(tree: &Path, out: &Path, kib: u64, uuid: &str, label: &str) {
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            s(tree),
            "-E",
            "root_owner=0:0",
            "-U",
            uuid,
            "-L",
            label,
            s(out),
            &format!("{kib}k"),
        ],
    );
}

/// Writes the file `src` into `img` at byte `offset`.
fn put(img: &Path, offset: u64, src: &Path) {
    let data = std::fs::read(src).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

fn patch(img: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn sparse_file(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

fn json(r: Run) -> Value {
    let r = r.ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn inspect_disk(env: &Env, disk: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["inspect-disk", s(disk), "--format", "json"];
    a.extend_from_slice(extra);
    json(env.run(&a))
}

fn diff_id(env: &Env, tag: &str) -> String {
    let v = json(env.run(&["inspect", tag]));
    v[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string()
}

fn import(env: &Env, disk: &Path, tag: &str, extra: &[&str]) -> Run {
    let mut a = vec!["import", s(disk), "--tag", tag, "--quiet"];
    a.extend_from_slice(extra);
    env.run(&a).ok()
}

/// The regular files of the image's single layer: path (without `./`) → contents.
fn layer_files(env: &Env, tag: &str) -> BTreeMap<String, Vec<u8>> {
    let v = json(env.run(&["inspect", tag]));
    let digest = v[0]["Manifest"]["Layers"][0]["digest"].as_str().unwrap();
    let blob = env
        .store()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let out = env
        .path()
        .join(format!("layer-{}", tag.replace([':', '/'], "_")));
    std::fs::create_dir_all(&out).unwrap();
    tool("tar", &["-xzf", s(&blob), "-C", s(&out)]);
    let mut files = BTreeMap::new();
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(&out).unwrap().display().to_string();
                files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    files
}

fn mount<'a>(plan: &'a Value, mountpoint: &str) -> &'a Value {
    plan["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == mountpoint)
        .unwrap_or_else(|| panic!("no mount {mountpoint} in {plan}"))
}

fn volume<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {plan}"))
}

// ---------------------------------------------------------------------------------------------
// 7. The damaged-disk corpus through the binary.

/// CRC-32 (IEEE), for rewriting GPT header checksums.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Sets a GPT header's entry count (at `hdr`) and fixes its CRC, so the header is valid but
/// for the absurd count.
fn gpt_set_entries(img: &mut [u8], hdr: usize, count: u32) {
    img[hdr + 80..hdr + 84].copy_from_slice(&count.to_le_bytes());
    let size = u32::from_le_bytes(img[hdr + 12..hdr + 16].try_into().unwrap()) as usize;
    img[hdr + 16..hdr + 20].fill(0);
    let crc = crc32(&img[hdr..hdr + size]);
    img[hdr + 16..hdr + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Runs decant with `args` under `ulimit -v 1 GiB`: an allocation sized from hostile input
/// fails the run instead of passing on a machine with memory to spare. glibc reserves 64 MiB
/// of address space per malloc arena (one per thread, up to 8 per core): two arenas keep a
/// many-core machine's compression threads inside the limit.
fn limited(env: &Env, args: &[&str]) -> std::process::Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let cmd = format!(
        "ulimit -v 1048576; exec '{}' {}",
        env!("CARGO_BIN_EXE_decant"),
        quoted.join(" ")
    );
    Command::new("bash")
        .args(["-c", &cmd])
        .env("DECANT_ROOT", env.store())
        .env("MALLOC_ARENA_MAX", "2")
        .current_dir(env.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash")
}

/// Runs `decant import FILE` under `limited` and checks the failure: exit 1, one line
/// starting `decant: ` naming the file and every `wants`, no panic, within 20 s, the store
/// unchanged.
fn refused(env: &Env, file: &Path, wants: &[&str]) -> String {
    let before = env.store_state();
    let t = Instant::now();
    let o = limited(env, &["import", s(file), "--tag", "bad:1", "--quiet"]);
    let elapsed = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let name = file.file_name().unwrap().to_str().unwrap();
    assert_eq!(o.status.code(), Some(1), "{name}: exit 1: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: one line: {err}");
    assert!(lines[0].starts_with("decant: "), "{name}: {err}");
    assert!(lines[0].contains(name), "{name}: names the file: {err}");
    for w in wants {
        assert!(lines[0].contains(w), "{name}: says {w:?}: {err}");
    }
    assert!(
        elapsed < Duration::from_secs(20),
        "{name}: took {elapsed:?}"
    );
    assert_eq!(env.store_state(), before, "{name}: the store is unchanged");
    lines[0].to_string()
}

#[test]
fn damaged_disk_corpus_one_line_bounded_nothing_stored() {
    let env = Env::new();
    let dir = env.path();
    // Something in the store, so "unchanged" compares real blobs and a real index.json.
    import(&env, &example().join("root.ext4"), "good:1", &[]);
    let raw = example().join("disk.raw");
    let disk = std::fs::read(&raw).unwrap();

    // VDI with four billion blocks (and the disk size to match): the block map would be 16 GB.
    let vdi = dir.join("four_billion_blocks.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&raw), s(&vdi)]);
    let blocks: u32 = 4_000_000_000;
    patch(&vdi, 368, &(u64::from(blocks) * MIB).to_le_bytes());
    patch(&vdi, 384, &blocks.to_le_bytes());
    refused(
        &env,
        &vdi,
        &["vdi header at offset 384", "4000000000 blocks", "64 MiB"],
    );

    // VDI block map past the end of the file.
    let vdi2 = dir.join("block_map_past_end.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&raw), s(&vdi2)]);
    patch(&vdi2, 340, &0x7000_0000u32.to_le_bytes());
    refused(
        &env,
        &vdi2,
        &[
            "vdi block map at offset 340",
            "offset 1879048192",
            "end of the file",
        ],
    );

    // VDI: a 2^62-byte disk.
    let vdi3 = dir.join("huge.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&raw), s(&vdi3)]);
    patch(&vdi3, 368, &(1u64 << 62).to_le_bytes());
    refused(
        &env,
        &vdi3,
        &[
            "vdi header at offset 384",
            "virtual size 4611686018427387904",
        ],
    );

    // An EBR chain that loops: the second EBR's link points at itself.
    let mbr = dir.join("looping_ebr.raw");
    sparse_file(&mbr, 10 * MIB);
    sfdisk(
        &mbr,
        "label: dos\nstart=2048, size=2048, type=83\nstart=4096, size=14336, type=5\nstart=6144, size=2048, type=82\nstart=10240, size=8192, type=83\n",
    );
    let m = std::fs::read(&mbr).unwrap();
    let link = 4096 * 512 + 446 + 16;
    let ebr2 = 4096
        + u64::from(u32::from_le_bytes(
            m[link + 8..link + 12].try_into().unwrap(),
        ));
    let mut next = [0u8; 16];
    next[4] = 0x05;
    next[8..12].copy_from_slice(&((ebr2 - 4096) as u32).to_le_bytes());
    next[12..16].copy_from_slice(&2048u32.to_le_bytes());
    patch(&mbr, ebr2 * 512 + 446 + 16, &next);
    let line = refused(&env, &mbr, &["EBR at offset", "loops"]);
    assert!(
        line.contains(&format!("offset {}", 4096 * 512))
            || line.contains(&format!("offset {}", ebr2 * 512)),
        "the EBR's offset: {line}"
    );

    // A primary MBR partition past the end of the disk.
    let mbr2 = dir.join("partition_past_end.raw");
    sparse_file(&mbr2, 4 * MIB);
    sfdisk(&mbr2, "label: dos\nstart=2048, size=4096, type=83\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mbr2)
        .unwrap()
        .set_len(2 * MIB)
        .unwrap();
    refused(&env, &mbr2, &["partition 1", "past the end"]);

    // GPT with 2^31 entries in both headers (valid CRCs): nothing to fall back to.
    let mut gpt = disk.clone();
    let backup = gpt.len() - 512;
    gpt_set_entries(&mut gpt, 512, 1 << 31);
    gpt_set_entries(&mut gpt, backup, 1 << 31);
    let gptp = dir.join("gpt_2g_entries.raw");
    std::fs::write(&gptp, &gpt).unwrap();
    refused(
        &env,
        &gptp,
        &[
            "GPT header at offset 512",
            "2147483648 partition entries",
            "backup header",
        ],
    );

    // GPT whose partition entry array is past the end of the disk, in both headers.
    let mut gpt2 = disk.clone();
    for hdr in [512usize, backup] {
        gpt2[hdr + 72..hdr + 80].copy_from_slice(&(1u64 << 40).to_le_bytes());
        gpt2[hdr + 16..hdr + 20].fill(0);
        let crc = crc32(&gpt2[hdr..hdr + 92]);
        gpt2[hdr + 16..hdr + 20].copy_from_slice(&crc.to_le_bytes());
    }
    let gptp2 = dir.join("gpt_entries_past_end.raw");
    std::fs::write(&gptp2, &gpt2).unwrap();
    refused(
        &env,
        &gptp2,
        &["GPT header at offset 512", "past the end", "backup header"],
    );

    // A VMDK descriptor whose flat extent file is missing.
    let flat = dir.join("missing_extent.vmdk");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            s(&raw),
            s(&flat),
        ],
    );
    std::fs::remove_file(dir.join("missing_extent-flat.vmdk")).unwrap();
    refused(&env, &flat, &["missing_extent-flat.vmdk", "extent"]);

    // VMDK grain directory past the end of the file.
    let sparse = dir.join("gd_past_end.vmdk");
    tool("qemu-img", &["convert", "-O", "vmdk", s(&raw), s(&sparse)]);
    patch(&sparse, 56, &(1u64 << 40).to_le_bytes());
    refused(
        &env,
        &sparse,
        &["grain directory at offset 562949953421312", "do not fit"],
    );

    // QCOW2: cluster_bits out of range, a 2^62-byte disk, the L1 table past the end.
    let q = dir.join("src.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&q)]);
    for (name, at, bytes, want) in [
        (
            "cluster_bits_30.qcow2",
            20u64,
            30u32.to_be_bytes().to_vec(),
            "qcow2 header at offset 20: cluster_bits 30",
        ),
        (
            "cluster_bits_8.qcow2",
            20,
            8u32.to_be_bytes().to_vec(),
            "qcow2 header at offset 20: cluster_bits 8",
        ),
        // The L1 table no longer covers the claimed size: refused before any allocation.
        (
            "size_2e62.qcow2",
            24,
            (1u64 << 62).to_be_bytes().to_vec(),
            "qcow2 L1 table at offset 36",
        ),
        (
            "l1_past_end.qcow2",
            40,
            (1u64 << 50).to_be_bytes().to_vec(),
            "qcow2 L1 table at offset 40",
        ),
    ] {
        let p = dir.join(name);
        std::fs::copy(&q, &p).unwrap();
        patch(&p, at, &bytes);
        refused(&env, &p, &[want]);
    }

    // QCOW2 with 2 MiB clusters, a 2^62-byte disk and the L1 table that size needs (2^23
    // entries, 64 MiB): consistent, but the table is not in the file.
    let q21 = dir.join("size_2e62_l1_64mib.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=2M",
            s(&q21),
            "64M",
        ],
    );
    patch(&q21, 24, &(1u64 << 62).to_be_bytes());
    patch(&q21, 36, &(1u32 << 23).to_be_bytes());
    refused(
        &env,
        &q21,
        &[
            "qcow2 L1 table at offset 36",
            "l1_size 8388608",
            "32 MiB limit",
        ],
    );

    // VMDK: a 2^62-byte capacity (2^53 sectors).
    let vcap = dir.join("capacity_2e62.vmdk");
    let good = dir.join("good_sparse.vmdk");
    tool("qemu-img", &["convert", "-O", "vmdk", s(&raw), s(&good)]);
    std::fs::copy(&good, &vcap).unwrap();
    patch(&vcap, 12, &(1u64 << 53).to_le_bytes());
    refused(
        &env,
        &vcap,
        &[
            "sparse extent header at offset 12",
            "capacity 9007199254740992 sectors",
        ],
    );

    // VHD: a 2^62-byte disk in the footer (checksum fixed).
    let vhd = dir.join("size_2e62.vhd");
    tool("qemu-img", &["convert", "-O", "vpc", s(&raw), s(&vhd)]);
    let mut v = std::fs::read(&vhd).unwrap();
    let len = v.len();
    for foot in [0usize, len - 512] {
        v[foot + 48..foot + 56].copy_from_slice(&(1u64 << 62).to_be_bytes());
        v[foot + 64..foot + 68].fill(0);
        let sum: u32 = v[foot..foot + 512]
            .iter()
            .map(|&b| u32::from(b))
            .sum::<u32>();
        v[foot + 64..foot + 68].copy_from_slice(&(!sum).to_be_bytes());
    }
    std::fs::write(&vhd, &v).unwrap();
    refused(
        &env,
        &vhd,
        &[
            "vhd dynamic header at offset 540",
            "virtual size 4611686018427387904",
        ],
    );

    // A raw disk cut short: the root partition runs past the end.
    let cut = dir.join("cut.raw");
    std::fs::write(&cut, &disk[..3 << 20]).unwrap();
    refused(&env, &cut, &["partition 1", "past the end"]);

    // The limit leaves room for a real import: the failures above are the input's.
    let o = limited(&env, &["import", s(&q), "--tag", "fine:1", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The primary GPT header damaged (2^31 entries, CRC now wrong): the backup is used and said.
#[test]
fn gpt_damaged_primary_uses_the_backup_and_says_so() {
    let env = Env::new();
    let raw = example().join("disk.raw");
    let mut gpt = std::fs::read(&raw).unwrap();
    gpt[512 + 80..512 + 84].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let p = env.path().join("primary_damaged.raw");
    std::fs::write(&p, &gpt).unwrap();
    let r = env.run(&["import", s(&p), "--tag", "b:1"]).ok();
    assert!(r.stderr.contains("backup"), "{}", r.stderr);
    let plan = inspect_disk(&env, &p, &[]);
    assert!(
        plan["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("backup")),
        "{plan}"
    );
    import(&env, &raw, "b:2", &[]);
    assert_eq!(diff_id(&env, "b:1"), diff_id(&env, "b:2"));
}

// ---------------------------------------------------------------------------------------------
// Disk builders.

const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// What goes into a partition.
enum Fs<'a> {
    /// An ext4 filesystem of this tree, with this filesystem UUID and label.
    Ext4(&'a Path, &'a str, &'a str),
    Swap,
}

/// One GPT partition: size in MiB, contents, PARTLABEL, PARTUUID.
struct Part<'a> {
    mib: u64,
    fs: Fs<'a>,
    name: &'a str,
    partuuid: &'a str,
}

/// A GPT disk of `parts`, one after another from 1 MiB, each filled with its filesystem.
fn gpt_disk(dir: &Path, file: &str, parts: &[Part]) -> PathBuf {
    let img = dir.join(file);
    let total: u64 = parts.iter().map(|p| p.mib).sum::<u64>() + 2;
    sparse_file(&img, total * MIB);
    let mut script = String::from("label: gpt\n");
    let mut start = 1u64;
    for p in parts {
        script.push_str(&format!(
            "start={}, size={}, type={LINUX_FS}, uuid={}, name=\"{}\"\n",
            start * 2048,
            p.mib * 2048,
            p.partuuid,
            p.name
        ));
        start += p.mib;
    }
    sfdisk(&img, &script);
    let mut start = 1u64;
    for (i, p) in parts.iter().enumerate() {
        let f = dir.join(format!("{file}-p{}", i + 1));
        match p.fs {
            Fs::Ext4(tree, uuid, label) => mkfs(tree, &f, p.mib * 1024, uuid, label),
            Fs::Swap => {
                sparse_file(&f, p.mib * MIB);
                tool("mkswap", &["-q", s(&f)]);
            }
        }
        put(&img, start * MIB, &f);
        std::fs::remove_file(&f).unwrap();
        start += p.mib;
    }
    img
}

/// The canonical lowercase form of a UUID-ish string as the reports show it.
fn lower(u: &str) -> String {
    u.to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// 1. inspect-disk --format json for the disks the issue names.

/// MBR: /boot in primary 1, an extended partition with swap in logical 5 and the root in
/// logical 6 (named /dev/sda6 in its own fstab); the guest is arm64.
#[test]
fn mbr_with_the_root_in_a_logical_partition() {
    let env = Env::new();
    let dir = env.path();
    let boot = data_tree(dir, "boot");
    let root = root_tree(
        dir,
        "mbrguest",
        "/dev/sda6 / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n/dev/sda5 none swap sw 0 0\nproc /proc proc defaults 0 0\n",
        183,
    );
    let img = dir.join("mbr.raw");
    sparse_file(&img, 16 * MIB);
    sfdisk(
        &img,
        "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=8192, type=83\nstart=10240, size=22528, type=5\nstart=12288, size=2048, type=82\nstart=16384, size=16384, type=83\n",
    );
    let f = dir.join("fs");
    mkfs(
        &boot,
        &f,
        4096,
        "11111111-0000-4000-8000-00000000b007",
        "BOOT",
    );
    put(&img, MIB, &f);
    sparse_file(&f, MIB);
    tool("mkswap", &["-q", s(&f)]);
    put(&img, 12288 * 512, &f);
    mkfs(
        &root,
        &f,
        8192,
        "11111111-0000-4000-8000-0000000000f6",
        "mbrroot",
    );
    put(&img, 8 * MIB, &f);

    let v = inspect_disk(&env, &img, &[]);
    assert_eq!(v["disk"]["format"], "raw", "{v}");
    assert_eq!(v["disk"]["virtual_size"], 16 * MIB);
    assert_eq!(v["scheme"], "mbr");
    let got: Vec<(String, String, u64, u64, String, Value)> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["type_name"].as_str().unwrap().to_string(),
                x["start"].as_u64().unwrap(),
                x["size"].as_u64().unwrap(),
                x["filesystem"].as_str().unwrap().to_string(),
                x["label"].clone(),
            )
        })
        .collect();
    let ls = |l: &str| Value::String(l.into());
    assert_eq!(
        got,
        vec![
            (
                "1".into(),
                "Linux filesystem".into(),
                MIB,
                4 * MIB,
                "ext4".into(),
                ls("BOOT")
            ),
            (
                "5".into(),
                "Linux swap".into(),
                12288 * 512,
                MIB,
                "Linux swap".into(),
                Value::Null
            ),
            (
                "6".into(),
                "Linux filesystem".into(),
                8 * MIB,
                8 * MIB,
                "ext4".into(),
                ls("mbrroot")
            ),
        ],
        "{v}"
    );
    assert_eq!(volume(&v, "6")["partuuid"], "1234abcd-06");
    assert_eq!(
        volume(&v, "6")["uuid"],
        "11111111-0000-4000-8000-0000000000f6"
    );
    assert_eq!(volume(&v, "6")["is_root"], true);
    assert_eq!(volume(&v, "1")["is_root"], false);
    assert_eq!(v["root"], "6");
    assert_eq!(mount(&v, "/")["status"], "root");
    assert_eq!(mount(&v, "/")["volume"], "6");
    assert_eq!(mount(&v, "/boot")["status"], "grafted");
    assert_eq!(mount(&v, "/boot")["volume"], "1");
    assert_eq!(mount(&v, "none")["status"], "skipped");
    assert_eq!(mount(&v, "/proc")["status"], "skipped");
    assert_eq!(v["guest"]["os"], "linux");
    assert_eq!(v["guest"]["architecture"], "arm64");
    assert_eq!(v["guest"]["os_release"]["id"], "mbrguest");
    // The import takes the logical partition, with /boot grafted, and an arm64 config.
    import(&env, &img, "mbr:1", &[]);
    let files = layer_files(&env, "mbr:1");
    assert_eq!(files["etc/hostname"], b"mbrguest\n");
    assert_eq!(files["boot/boot.txt"], b"boot");
    let cfg = json(env.run(&["inspect", "mbr:1"]));
    assert_eq!(cfg[0]["Architecture"], "arm64", "{cfg}");
}

/// The segments of an LV as (first PE, last PE) pairs.
fn lv_segments(lvm: &dyn Fn(&str, &[&str]) -> String, lv: &str) -> Vec<(u64, u64)> {
    lvm(
        "lvs",
        &[
            "--noheadings",
            "--separator",
            ",",
            "-o",
            "seg_pe_ranges",
            lv,
        ],
    )
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty())
    .map(|l| {
        let (a, b) = l.rsplit(':').next().unwrap().split_once('-').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    })
    .collect()
}

/// An LVM disk: MBR, /boot (ext4) in partition 1, a PV in partition 2 (type 8e) with VG
/// `vg` holding `root` (12 MiB in two segments, as lvextend leaves it), `home` and `srv`;
/// with `second_root`, another Linux root in partition 3. lvm2 writes the metadata itself
/// (`--driverloaded n` on a loop device, no metadata backups under /etc/lvm); the filesystems
/// go in at the LVs' byte offsets.
struct LvmDisk {
    img: PathBuf,
    vg: String,
    root_segments: Vec<(u64, u64)>,
    pe_start: u64,
}

fn lvm_disk(dir: &Path, vg: &str, root_fstab: &str, second_root: bool) -> LvmDisk {
    let vg = vg.to_string();
    let pv = dir.join("pv.img");
    sparse_file(&pv, 32 * MIB);
    let loopdev = tool("losetup", &["-f", "--show", s(&pv)])
        .trim()
        .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let detach = Detach(loopdev.clone());
    let cfg = format!(
        "--config=devices{{filter=[\"a|^{loopdev}$|\",\"r|.*|\"] obtain_device_list_from_udev=0}} activation{{udev_sync=0 udev_rules=0}} backup{{backup=0 archive=0}}"
    );
    let lvm = |cmd: &str, args: &[&str]| {
        let mut a: Vec<&str> = vec!["--driverloaded", "n", cfg.as_str()];
        a.extend_from_slice(args);
        tool(cmd, &a)
    };
    lvm("pvcreate", &["-q", &loopdev]);
    lvm("vgcreate", &["-q", "-s", "1M", &vg, &loopdev]);
    for (name, size) in [("root", "6M"), ("home", "4M"), ("srv", "4M")] {
        lvm(
            "lvcreate",
            &[
                "-q",
                "--zero",
                "n",
                "--activate",
                "n",
                "-L",
                size,
                "-n",
                name,
                &vg,
            ],
        );
    }
    lvm("lvextend", &["-q", "-L", "12M", &format!("{vg}/root")]);
    let pe_start: u64 = lvm(
        "pvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            &loopdev,
        ],
    )
    .trim()
    .parse()
    .unwrap();
    let segs: BTreeMap<&str, Vec<(u64, u64)>> = ["root", "home", "srv"]
        .into_iter()
        .map(|lv| (lv, lv_segments(&lvm, &format!("{vg}/{lv}"))))
        .collect();
    drop(detach);
    assert_eq!(segs["root"].len(), 2, "root has two segments: {segs:?}");

    let root = root_tree(dir, "lvmguest", root_fstab, 62);
    let home = data_tree(dir, "home");
    let srv = data_tree(dir, "srv");
    let f = dir.join("lvfs");
    for (lv, tree, uuid) in [
        ("root", &root, "22222222-0000-4000-8000-000000000001"),
        ("home", &home, "22222222-0000-4000-8000-000000000002"),
        ("srv", &srv, "22222222-0000-4000-8000-000000000003"),
    ] {
        let mib: u64 = segs[lv].iter().map(|(a, b)| b - a + 1).sum();
        mkfs(tree, &f, mib * 1024, uuid, lv);
        let bytes = std::fs::read(&f).unwrap();
        let pvf = std::fs::OpenOptions::new().write(true).open(&pv).unwrap();
        let mut done = 0usize;
        for (a, b) in &segs[lv] {
            let len = ((b - a + 1) * MIB) as usize;
            pvf.write_all_at(&bytes[done..done + len], pe_start + a * MIB)
                .unwrap();
            done += len;
        }
    }
    let img = dir.join("lvm.raw");
    let extra = if second_root { 8 } else { 0 };
    sparse_file(&img, (1 + 4 + 32 + extra + 1) * MIB);
    let mut script = String::from(
        "label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=8192, type=83\nstart=10240, size=65536, type=8e\n",
    );
    if second_root {
        script.push_str("start=75776, size=16384, type=83\n");
    }
    sfdisk(&img, &script);
    let boot = data_tree(dir, "boot");
    mkfs(
        &boot,
        &f,
        4096,
        "22222222-0000-4000-8000-00000000b007",
        "boot",
    );
    put(&img, MIB, &f);
    put(&img, 5 * MIB, &pv);
    if second_root {
        let other = root_tree(dir, "otherguest", "LABEL=other / ext4 defaults 0 1\n", 62);
        mkfs(
            &other,
            &f,
            8192,
            "22222222-0000-4000-8000-000000000009",
            "other",
        );
        put(&img, 37 * MIB, &f);
    }
    LvmDisk {
        img,
        root_segments: segs["root"].clone(),
        pe_start,
        vg,
    }
}

/// An LVM root whose LV has two segments, its fstab naming LVs as /dev/mapper/VG-LV and
/// /dev/VG/LV (the VG name has a dash, doubled in the mapper name) and /boot by UUID.
#[test]
fn lvm_root_with_a_two_segment_lv() {
    if !common::require_root("losetup for lvm2's tools") {
        return;
    }
    let env = Env::new();
    let dir = env.path();
    let vg = format!("dc-vg{}a", std::process::id());
    let mapper = vg.replace('-', "--");
    let fstab = format!(
        "/dev/mapper/{mapper}-root / ext4 defaults 0 1\n\
         UUID=22222222-0000-4000-8000-00000000b007 /boot ext4 defaults 0 2\n\
         /dev/{vg}/home /home ext4 defaults 0 2\n\
         /dev/mapper/{mapper}-srv /srv ext4 defaults 0 2\n"
    );
    let d = lvm_disk(dir, &vg, &fstab, false);
    assert_eq!(d.vg, vg);
    let v = inspect_disk(&env, &d.img, &[]);
    assert_eq!(v["disk"]["format"], "raw", "{v}");
    assert_eq!(v["disk"]["virtual_size"], 38 * MIB);
    assert_eq!(v["scheme"], "mbr");
    let names: Vec<&str> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    let (r, h, sv) = (
        format!("{vg}/root"),
        format!("{vg}/home"),
        format!("{vg}/srv"),
    );
    assert_eq!(names, vec!["1", r.as_str(), h.as_str(), sv.as_str()], "{v}");
    let root = volume(&v, &r);
    assert_eq!(root["scheme"], "lvm");
    assert_eq!(root["part_type"], "linear");
    assert_eq!(root["type_name"], "LVM logical volume");
    assert_eq!(root["size"], 12 * MIB);
    assert_eq!(
        root["start"],
        5 * MIB + d.pe_start + d.root_segments[0].0 * MIB
    );
    assert_eq!(root["filesystem"], "ext4");
    assert_eq!(root["label"], "root");
    assert_eq!(root["is_root"], true);
    assert_eq!(volume(&v, &h)["size"], 4 * MIB);
    assert_eq!(volume(&v, &h)["label"], "home");
    assert_eq!(volume(&v, "1")["label"], "boot");
    assert_eq!(volume(&v, "1")["type_name"], "Linux filesystem");
    assert_eq!(volume(&v, "1")["size"], 4 * MIB);
    assert_eq!(volume(&v, &sv)["filesystem"], "ext4");
    assert_eq!(v["root"], r.as_str());
    assert_eq!(mount(&v, "/")["volume"], r.as_str());
    for (mp, vol) in [("/boot", "1"), ("/home", h.as_str()), ("/srv", sv.as_str())] {
        assert_eq!(mount(&v, mp)["status"], "grafted", "{mp}: {v}");
        assert_eq!(mount(&v, mp)["volume"], vol, "{mp}");
    }
    assert_eq!(v["guest"]["architecture"], "amd64");
    assert_eq!(v["guest"]["os_release"]["id"], "lvmguest");
    // The import reads the root across both segments and grafts each LV.
    import(&env, &d.img, "lvm:1", &[]);
    let files = layer_files(&env, "lvm:1");
    assert_eq!(files["etc/hostname"], b"lvmguest\n");
    assert_eq!(files["boot/boot.txt"], b"boot");
    assert_eq!(files["home/home.txt"], b"home");
    assert_eq!(files["srv/srv.txt"], b"srv");
}

/// Two versions of a small GPT disk with one root partition: `b` is `a` with /etc/hostname
/// changed and /srv/added.txt added (same filesystem UUID, so only changed blocks differ).
fn two_versions(dir: &Path) -> (PathBuf, PathBuf) {
    let fstab = "PARTLABEL=root / ext4 defaults 0 1\nproc /proc proc defaults 0 0\n";
    let a = root_tree(dir, "va", fstab, 62);
    let b = dir.join("tree-vb");
    tool("cp", &["-a", s(&a), s(&b)]);
    std::fs::write(b.join("etc/hostname"), "changed\n").unwrap();
    std::fs::write(b.join("srv/added.txt"), "added in the child").unwrap();
    let uuid = "33333333-0000-4000-8000-000000000001";
    let part = |tree| Part {
        mib: 20,
        fs: Fs::Ext4(tree, uuid, "vroot"),
        name: "root",
        partuuid: "33333333-0000-4000-8000-0000000000aa",
    };
    (
        gpt_disk(dir, "a.raw", &[part(&a)]),
        gpt_disk(dir, "b.raw", &[part(&b)]),
    )
}

/// Writes a differencing VDI `child` over `parent` (a qemu-made dynamic VDI of `a`) so it reads
/// as `b`: the blocks where `b` differs from `a` are in the child, the others are free (read
/// from the parent). qemu-img cannot write differencing VDIs. Returns (blocks in the child,
/// blocks total).
fn vdi_child(parent: &Path, a: &[u8], b: &[u8], child: &Path) -> (usize, usize) {
    let ph = std::fs::read(parent).unwrap();
    let block = u32::from_le_bytes(ph[376..380].try_into().unwrap()) as usize;
    let blocks = u32::from_le_bytes(ph[384..388].try_into().unwrap()) as usize;
    assert_eq!(blocks * block, b.len());
    let mut h = ph[..512].to_vec();
    let map_at = 512usize;
    let data_at = (map_at + 4 * blocks).div_ceil(512) * 512;
    h[76..80].copy_from_slice(&4u32.to_le_bytes()); // differencing
    h[340..344].copy_from_slice(&(map_at as u32).to_le_bytes());
    h[344..348].copy_from_slice(&(data_at as u32).to_le_bytes());
    h[392..408].fill(0xc1); // this image's UUID
    h[408..424].fill(0xc2); // its modification UUID
    h[424..440].copy_from_slice(&ph[392..408]); // the parent's UUID
    h[440..456].copy_from_slice(&ph[408..424]); // the parent's modification UUID
    let mut map = Vec::new();
    let mut data = Vec::new();
    for i in 0..blocks {
        let range = i * block..(i + 1) * block;
        if a[range.clone()] == b[range.clone()] {
            map.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        } else {
            map.extend_from_slice(&((data.len() / block) as u32).to_le_bytes());
            data.extend_from_slice(&b[range]);
        }
    }
    let allocated = data.len() / block;
    h[388..392].copy_from_slice(&(allocated as u32).to_le_bytes());
    let mut file = h;
    file.extend_from_slice(&map);
    file.resize(data_at, 0);
    file.extend_from_slice(&data);
    std::fs::write(child, &file).unwrap();
    (allocated, blocks)
}

/// A differencing VDI (a VirtualBox snapshot) whose parent sits beside it: found by UUID.
#[test]
fn differencing_vdi_reads_as_the_snapshot() {
    let env = Env::new();
    let dir = env.path();
    let (a, b) = two_versions(dir);
    let parent = dir.join("{base}.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&a), s(&parent)]);
    // A decoy VDI with another UUID beside it must not be taken.
    tool(
        "qemu-img",
        &["convert", "-O", "vdi", s(&b), s(&dir.join("decoy.vdi"))],
    );
    let child = dir.join("{snapshot}.vdi");
    let (used, total) = vdi_child(
        &parent,
        &std::fs::read(&a).unwrap(),
        &std::fs::read(&b).unwrap(),
        &child,
    );
    assert!(
        used > 0 && used < total,
        "a thin child: {used}/{total} blocks"
    );
    let v = inspect_disk(&env, &child, &[]);
    assert_eq!(v["disk"]["format"], "vdi", "{v}");
    assert_eq!(v["disk"]["subformat"], "differencing");
    assert_eq!(v["disk"]["virtual_size"], 22 * MIB);
    assert_eq!(v["disk"]["backing"]["file"], s(&parent));
    assert_eq!(v["disk"]["backing"]["subformat"], "dynamic");
    assert_eq!(v["scheme"], "gpt");
    let root = volume(&v, "1");
    assert_eq!(root["partlabel"], "root");
    assert_eq!(root["partuuid"], "33333333-0000-4000-8000-0000000000aa");
    assert_eq!(root["type_name"], "Linux filesystem");
    assert_eq!(root["size"], 20 * MIB);
    assert_eq!(root["filesystem"], "ext4");
    assert_eq!(root["label"], "vroot");
    assert_eq!(v["root"], "1");
    assert_eq!(mount(&v, "/")["status"], "root");
    assert_eq!(mount(&v, "/proc")["status"], "skipped");
    assert_eq!(v["guest"]["os_release"]["id"], "va");
    assert_eq!(v["guest"]["architecture"], "amd64");
    import(&env, &child, "snap:1", &[]);
    import(&env, &b, "snap:b", &[]);
    import(&env, &a, "snap:a", &[]);
    assert_eq!(diff_id(&env, "snap:1"), diff_id(&env, "snap:b"));
    assert_ne!(diff_id(&env, "snap:1"), diff_id(&env, "snap:a"));
    let files = layer_files(&env, "snap:1");
    assert_eq!(files["etc/hostname"], b"changed\n");
    assert_eq!(files["srv/added.txt"], b"added in the child");
}

/// 5. `--parent FILE` for a differencing VDI whose parent is in another directory.
#[test]
fn parent_option_for_import_and_inspect_disk() {
    let env = Env::new();
    let dir = env.path();
    let (a, b) = two_versions(dir);
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let parent = elsewhere.join("base.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&a), s(&parent)]);
    let snaps = dir.join("Snapshots");
    std::fs::create_dir(&snaps).unwrap();
    let child = snaps.join("child.vdi");
    vdi_child(
        &parent,
        &std::fs::read(&a).unwrap(),
        &std::fs::read(&b).unwrap(),
        &child,
    );
    import(&env, &b, "p:b", &[]);
    let before = env.store_state();
    let r = env.run(&["import", s(&child), "--tag", "p:1"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("child.vdi")
            && r.stderr.contains("no parent with UUID")
            && r.stderr.contains("--parent FILE")
            && !r.stderr.contains("unsupported"),
        "says how to give the parent: {}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(env.store_state(), before);
    let r = env.run(&["inspect-disk", s(&child)]);
    assert_eq!(r.status, 1, "{}", r.stderr);

    let v = inspect_disk(&env, &child, &["--parent", s(&parent)]);
    assert_eq!(v["disk"]["subformat"], "differencing", "{v}");
    assert_eq!(v["disk"]["backing"]["file"], s(&parent));
    assert_eq!(v["root"], "1");
    let human = env
        .run(&["inspect-disk", s(&child), "--parent", s(&parent)])
        .ok()
        .stdout;
    assert!(
        human.contains("Backing:") && human.contains("base.vdi"),
        "{human}"
    );
    import(&env, &child, "p:1", &["--parent", s(&parent)]);
    assert_eq!(diff_id(&env, "p:1"), diff_id(&env, "p:b"));
    // A given parent that belongs to no level of the chain is not used, and the import says
    // so (the real parent is found by its UUID).
    let other = elsewhere.join("other.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&b), s(&other)]);
    let r = env.run(&["import", s(&child), "--parent", s(&other), "--tag", "p:2"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("other.vdi") && said.contains("not in this image's chain"),
        "{said}"
    );
    assert_eq!(diff_id(&env, "p:2"), diff_id(&env, "p:b"));
}

/// A streamOptimized VMDK as VMware writes it: grain directory offset -1 in the header, the
/// real header in a footer before the end-of-stream marker (made from qemu's layout).
#[test]
fn stream_optimized_vmdk_with_a_vmware_footer() {
    let env = Env::new();
    let dir = env.path();
    let (a, _) = two_versions(dir);
    let p = dir.join("vmware.vmdk");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&a),
            s(&p),
        ],
    );
    let mut data = std::fs::read(&p).unwrap();
    let header = data[..512].to_vec();
    data[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    // qemu ends with a footer-less end-of-stream marker: drop it, append footer marker, footer
    // and a new end-of-stream marker.
    assert_eq!(&data[data.len() - 512..], &[0u8; 512][..]);
    data.truncate(data.len() - 512);
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes()); // MARKER_FOOTER
    data.extend_from_slice(&marker);
    data.extend_from_slice(&header);
    data.extend_from_slice(&[0u8; 512]);
    std::fs::write(&p, &data).unwrap();
    let v = inspect_disk(&env, &p, &[]);
    assert_eq!(v["disk"]["format"], "vmdk", "{v}");
    assert_eq!(v["disk"]["subformat"], "streamOptimized");
    assert_eq!(v["disk"]["virtual_size"], 22 * MIB);
    assert_eq!(v["scheme"], "gpt");
    assert_eq!(volume(&v, "1")["label"], "vroot");
    assert_eq!(volume(&v, "1")["filesystem"], "ext4");
    assert_eq!(volume(&v, "1")["type_name"], "Linux filesystem");
    assert_eq!(volume(&v, "1")["size"], 20 * MIB);
    assert_eq!(volume(&v, "1")["partlabel"], "root");
    assert_eq!(v["root"], "1");
    assert_eq!(mount(&v, "/")["status"], "root");
    assert_eq!(v["guest"]["architecture"], "amd64");
    assert_eq!(v["guest"]["os_release"]["id"], "va");
    import(&env, &p, "vmw:1", &[]);
    import(&env, &a, "vmw:raw", &[]);
    assert_eq!(diff_id(&env, "vmw:1"), diff_id(&env, "vmw:raw"));
}

// ---------------------------------------------------------------------------------------------
// 4. Several roots on one disk.

#[test]
fn several_roots_are_listed_and_root_picks_one() {
    let env = Env::new();
    let dir = env.path();
    import(&env, &example().join("root.ext4"), "good:1", &[]);
    let ids = ["alpha", "beta", "gamma"];
    let trees: Vec<PathBuf> = ids
        .iter()
        .map(|id| root_tree(dir, id, &format!("LABEL={id} / ext4 defaults 0 1\n"), 62))
        .collect();
    let uuids = [
        "44444444-0000-4000-8000-000000000001",
        "44444444-0000-4000-8000-000000000002",
        "44444444-0000-4000-8000-000000000003",
    ];
    let partuuids = [
        "44444444-AAAA-4000-8000-000000000001",
        "44444444-AAAA-4000-8000-000000000002",
        "44444444-AAAA-4000-8000-000000000003",
    ];
    let parts: Vec<Part> = (0..3)
        .map(|i| Part {
            mib: 8,
            fs: Fs::Ext4(&trees[i], uuids[i], ids[i]),
            name: ["pa", "pb", "pc"][i],
            partuuid: partuuids[i],
        })
        .collect();
    let img = gpt_disk(dir, "three.raw", &parts);
    let before = env.store_state();
    let r = env.run(&["import", s(&img), "--tag", "x:1"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains("--root"), "asks for --root: {}", r.stderr);
    for i in 0..3 {
        assert!(
            r.stderr
                .contains(&format!("{} LABEL={} UUID={}", i + 1, ids[i], uuids[i])),
            "root {} listed with its names: {}",
            i + 1,
            r.stderr
        );
    }
    assert_eq!(env.store_state(), before, "nothing stored");
    // inspect-disk says the same and lists every root in the table.
    let r = env.run(&["inspect-disk", s(&img), "--format", "json"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("several Linux roots"), "{}", r.stderr);

    let selectors: Vec<(String, usize)> = vec![
        ("2".into(), 1),
        (format!("PARTUUID={}", partuuids[2]), 2),
        (format!("PARTUUID={}", lower(partuuids[0])), 0),
        ("PARTLABEL=pb".into(), 1),
        ("LABEL=gamma".into(), 2),
        (format!("UUID={}", uuids[0]), 0),
        ("/dev/vda3".into(), 2),
    ];
    for (k, (sel, want)) in selectors.iter().enumerate() {
        let plan = json(env.run(&[
            "import",
            s(&img),
            "--root",
            sel,
            "--dry-run",
            "--format",
            "json",
        ]));
        assert_eq!(plan["root"], (want + 1).to_string(), "--root {sel}");
        let tag = format!("pick:{k}");
        import(&env, &img, &tag, &["--root", sel]);
        let files = layer_files(&env, &tag);
        assert_eq!(
            files["etc/hostname"],
            format!("{}\n", ids[*want]).as_bytes(),
            "--root {sel}"
        );
    }
    // A selector that matches nothing names the volumes there are.
    let before = env.store_state();
    let r = env.run(&["import", s(&img), "--root", "LABEL=delta", "--tag", "x:2"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("LABEL=delta") && r.stderr.contains("no volume matches"),
        "{}",
        r.stderr
    );
    assert_eq!(env.store_state(), before);
}

/// An LVM root LV and a root in a plain partition: `--root VG/LV` and `--root 3`.
#[test]
fn root_by_vg_lv_on_a_disk_with_an_lvm_and_a_partition_root() {
    if !common::require_root("losetup for lvm2's tools") {
        return;
    }
    let env = Env::new();
    let dir = env.path();
    let vg = format!("dc-vg{}b", std::process::id());
    let d = lvm_disk(dir, &vg, "LABEL=root / ext4 defaults 0 1\n", true);
    let r = env.run(&["import", s(&d.img), "--tag", "x:1"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let lv = format!("{}/root", d.vg);
    assert!(
        r.stderr.contains(&format!("{lv} LABEL=root")) && r.stderr.contains("3 LABEL=other"),
        "{}",
        r.stderr
    );
    import(&env, &d.img, "lv:1", &["--root", &lv]);
    assert_eq!(layer_files(&env, "lv:1")["etc/hostname"], b"lvmguest\n");
    import(&env, &d.img, "lv:2", &["--root", "3"]);
    assert_eq!(layer_files(&env, "lv:2")["etc/hostname"], b"otherguest\n");
    let plan = json(env.run(&["inspect-disk", s(&d.img), "--root", &lv, "--format", "json"]));
    assert_eq!(plan["root"], lv.as_str());
    assert_eq!(volume(&plan, "3")["is_root"], true);
    assert_eq!(volume(&plan, &lv)["is_root"], true);
}

// ---------------------------------------------------------------------------------------------
// 6. fstab grafting against real volumes, by every device-name form.

#[test]
fn fstab_names_every_form_and_each_is_grafted_or_listed() {
    let env = Env::new();
    let dir = env.path();
    let fstab = "\
PARTLABEL=root / ext4 defaults 0 1
PARTUUID=55555555-aaaa-4000-8000-000000000002 /mnt/partuuid ext4 defaults 0 2
PARTLABEL=by-partlabel /mnt/partlabel ext4 defaults 0 2
/dev/disk/by-uuid/55555555-0000-4000-8000-000000000004 /mnt/byuuid ext4 defaults 0 2
/dev/disk/by-label/by\\x20label /mnt/bylabel ext4 defaults 0 2
/dev/disk/by-partuuid/55555555-AAAA-4000-8000-000000000006 /mnt/bypartuuid ext4 defaults 0 2
/dev/sda7 /mnt/sd ext4 defaults 0 2
/dev/vda8 /mnt/vd ext4 defaults 0 2
/dev/hda9 /mnt/hd ext4 defaults 0 2
/dev/xvda10 /mnt/xvd ext4 defaults 0 2
/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part2 /mnt/byid ext4 defaults 0 2
/dev/disk/by-path/pci-0000:00:04.0-part3 /mnt/bypath ext4 defaults 0 2
UUID=99999999-0000-4000-8000-000000000000 /mnt/missing ext4 defaults 0 2
server:/export /mnt/nfs nfs defaults 0 0
/dev/sda11 none swap sw 0 0
proc /proc proc defaults 0 0
/dev/sda2 /mnt/noauto ext4 noauto 0 0
";
    let root = root_tree(dir, "fstabguest", fstab, 62);
    let names = [
        "partuuid",
        "partlabel",
        "byuuid",
        "bylabel",
        "bypartuuid",
        "sd",
        "vd",
        "hd",
        "xvd",
    ];
    let trees: Vec<PathBuf> = names.iter().map(|n| data_tree(dir, n)).collect();
    let uuids: Vec<String> = (2..=10)
        .map(|i| format!("55555555-0000-4000-8000-{i:012}"))
        .collect();
    let partuuids: Vec<String> = (2..=10)
        .map(|i| format!("55555555-AAAA-4000-8000-{i:012}"))
        .collect();
    let labels = ["p2", "p3", "p4", "by label", "p6", "p7", "p8", "p9", "p10"];
    let partlabels = [
        "d2",
        "by-partlabel",
        "d4",
        "d5",
        "d6",
        "d7",
        "d8",
        "d9",
        "d10",
    ];
    let mut parts = vec![Part {
        mib: 8,
        fs: Fs::Ext4(&root, "55555555-0000-4000-8000-000000000001", "root"),
        name: "root",
        partuuid: "55555555-AAAA-4000-8000-000000000001",
    }];
    for i in 0..9 {
        parts.push(Part {
            mib: 2,
            fs: Fs::Ext4(&trees[i], &uuids[i], labels[i]),
            name: partlabels[i],
            partuuid: &partuuids[i],
        });
    }
    parts.push(Part {
        mib: 1,
        fs: Fs::Swap,
        name: "swap",
        partuuid: "55555555-AAAA-4000-8000-000000000011",
    });
    let img = gpt_disk(dir, "fstab.raw", &parts);
    let v = inspect_disk(&env, &img, &[]);
    assert_eq!(v["root"], "1", "{v}");
    for (i, n) in names.iter().enumerate() {
        let m = mount(&v, &format!("/mnt/{n}"));
        assert_eq!(m["status"], "grafted", "/mnt/{n}: {m}");
        assert_eq!(m["volume"], (i + 2).to_string(), "/mnt/{n}: {m}");
    }
    let reason = |mp: &str, status: &str| {
        let m = mount(&v, mp);
        assert_eq!(m["status"], status, "{mp}: {m}");
        m["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{mp}: no reason: {m}"))
            .to_string()
    };
    assert!(reason("/mnt/byid", "unresolved").contains("hardware id"));
    assert!(reason("/mnt/bypath", "unresolved").contains("bus path"));
    assert!(reason("/mnt/missing", "unresolved").contains("UUID=99999999"));
    assert!(reason("/mnt/nfs", "skipped").contains("network"));
    assert!(reason("none", "skipped").contains("swap"));
    assert!(reason("/proc", "skipped").contains("proc"));
    assert!(reason("/mnt/noauto", "skipped").contains("noauto"));
    assert_eq!(v["mounts"].as_array().unwrap().len(), 17);

    // The human table lists the unresolved ones with their reasons too.
    let human = env.run(&["inspect-disk", s(&img)]).ok().stdout;
    for want in [
        "/mnt/byid",
        "hardware id",
        "/mnt/bypath",
        "/mnt/missing",
        "noauto",
    ] {
        assert!(human.contains(want), "{want}: {human}");
    }
    let r = env.run(&["import", s(&img), "--tag", "fstab:1"]).ok();
    assert!(
        r.stderr.contains("/mnt/byid"),
        "the summary lists what was not grafted: {}",
        r.stderr
    );
    let files = layer_files(&env, "fstab:1");
    for n in names {
        assert_eq!(
            files.get(&format!("mnt/{n}/{n}.txt")).map(Vec::as_slice),
            Some(n.as_bytes()),
            "/mnt/{n} grafted"
        );
    }
    assert_eq!(files["etc/hostname"], b"fstabguest\n");
    assert!(!files
        .keys()
        .any(|k| k.starts_with("mnt/noauto/") || k.starts_with("mnt/byid/")));
}

// ---------------------------------------------------------------------------------------------
// 2. Every format from the same raw disk, one layer.

fn convert_import(env: &Env, raw: &Path, name: &str, args: &[&str]) -> String {
    let out = env.path().join(name);
    let mut a = vec!["convert"];
    a.extend_from_slice(args);
    a.extend_from_slice(&[s(raw), s(&out)]);
    tool("qemu-img", &a);
    let tag = format!("fmt:{}", name.replace('.', "-"));
    import(env, &out, &tag, &[]);
    diff_id(env, &tag)
}

#[test]
fn more_formats_of_the_example_disk_give_the_same_layer() {
    let env = Env::new();
    let raw = example().join("disk.raw");
    import(&env, &raw, "fmt:raw", &[]);
    let want = diff_id(&env, "fmt:raw");
    let formats: &[(&str, &[&str], &str, &str)] = &[
        ("d.vhdx", &["-O", "vhdx"], "vhdx", ""),
        (
            "zstd.qcow2",
            &["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
            "qcow2",
            "",
        ),
        (
            "v2.qcow2",
            &["-O", "qcow2", "-o", "compat=0.10"],
            "qcow2",
            "v2",
        ),
        (
            "fixed.vdi",
            &["-O", "vdi", "-o", "static=on"],
            "vdi",
            "fixed",
        ),
        (
            "flat.vmdk",
            &["-O", "vmdk", "-o", "subformat=monolithicFlat"],
            "vmdk",
            "monolithicFlat",
        ),
    ];
    for (name, args, format, sub) in formats {
        let got = convert_import(&env, &raw, name, args);
        assert_eq!(got, want, "{name}");
        let v = inspect_disk(&env, &env.path().join(name), &[]);
        assert_eq!(v["disk"]["format"], *format, "{name}: {v}");
        if !sub.is_empty() {
            assert_eq!(v["disk"]["subformat"], *sub, "{name}");
        }
        assert_eq!(v["disk"]["virtual_size"], 72 * MIB, "{name}");
    }
    // The zstd image really uses zstd: the header's compression type byte (offset 104) is 1.
    let z = std::fs::read(env.path().join("zstd.qcow2")).unwrap();
    assert_eq!(z[104], 1, "compression_type=zstd in the header");
    assert_eq!(&z[4..8], &3u32.to_be_bytes());
    let v2 = std::fs::read(env.path().join("v2.qcow2")).unwrap();
    assert_eq!(&v2[4..8], &2u32.to_be_bytes(), "a version 2 qcow2");
}

/// A 2.5 GiB disk (sparse) whose root partition starts 2 MiB before the 2 GiB line, its big
/// file's data beyond it: the split twoGbMaxExtent VMDKs read across their extent files.
#[test]
fn split_vmdks_of_a_disk_larger_than_2_gib() {
    let env = Env::new();
    let dir = env.path();
    let root = root_tree(dir, "big", "LABEL=big / ext4 defaults 0 1\n", 62);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..16 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("srv/big.bin"), &big).unwrap();
    let fs = dir.join("big.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            s(&root),
            "-E",
            "root_owner=0:0",
            "-L",
            "big",
            s(&fs),
            "64M",
        ],
    );
    // The file's first block lies past the first 2 MiB of the filesystem, so past 2 GiB on the
    // disk.
    let bmap = tool("debugfs", &["-R", "bmap /srv/big.bin 0", s(&fs)]);
    let first: u64 = bmap.trim().parse().unwrap();
    assert!(first * 4096 >= 2 * MIB, "first block {first}");
    let raw = dir.join("big.raw");
    sparse_file(&raw, 2560 * MIB);
    let start = 2046 * MIB;
    sfdisk(
        &raw,
        &format!(
            "label: gpt\nstart={}, size={}, type={LINUX_FS}\n",
            start / 512,
            64 * MIB / 512
        ),
    );
    put(&raw, start, &fs);
    std::fs::remove_file(&fs).unwrap();
    import(&env, &raw, "big:raw", &[]);
    let want = diff_id(&env, "big:raw");
    assert_eq!(layer_files(&env, "big:raw")["srv/big.bin"], big);
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let name = format!("{sub}.vmdk");
        let got = convert_import(
            &env,
            &raw,
            &name,
            &["-O", "vmdk", "-o", &format!("subformat={sub}")],
        );
        assert_eq!(got, want, "{sub}");
        let v = inspect_disk(&env, &dir.join(&name), &[]);
        assert_eq!(v["disk"]["virtual_size"], 2560 * MIB, "{sub}: {v}");
        assert_eq!(v["disk"]["subformat"], sub, "{sub}");
        assert_eq!(volume(&v, "1")["start"], start);
    }
    // Two extent files each: the data crossed from the first into the second.
    assert!(dir.join("twoGbMaxExtentFlat-f002.vmdk").exists());
    assert!(dir.join("twoGbMaxExtentSparse-s002.vmdk").exists());
}

// ---------------------------------------------------------------------------------------------
// 3. A hand-written VMDK descriptor mixing FLAT, ZERO and SPARSE extents.

#[test]
fn vmdk_descriptor_with_flat_zero_and_sparse_extents() {
    let env = Env::new();
    let dir = env.path();
    let raw = example().join("disk.raw");
    let bytes = std::fs::read(&raw).unwrap();
    let mib = bytes.len() as u64 / MIB;
    let zero_mib =
        |i: u64| bytes[(i * MIB) as usize..((i + 1) * MIB) as usize] == [0u8; MIB as usize][..];
    // A run of zero MiBs inside the root filesystem (it starts at 17 MiB) for the ZERO extent.
    let zs = (17..mib - 1)
        .find(|&i| zero_mib(i) && zero_mib(i + 1))
        .expect("a 2 MiB zero run in the root filesystem");
    let ze = (zs..mib).find(|&i| !zero_mib(i)).unwrap();
    // Then 8 MiB from a hosted sparse extent, then the rest flat from the raw file again at an
    // offset.
    let (ss, se) = (ze, ze + 8);
    assert!(se < mib);
    let flat = dir.join("whole.raw");
    std::os::unix::fs::symlink(&raw, &flat).unwrap();
    let piece = dir.join("piece.raw");
    std::fs::write(&piece, &bytes[(ss * MIB) as usize..(se * MIB) as usize]).unwrap();
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            s(&piece),
            s(&dir.join("mixed-s001.vmdk")),
        ],
    );
    let sec = |m: u64| m * MIB / 512;
    let desc = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID=7a5e1c3b\n\
         parentCID=ffffffff\n\
         createType=\"custom\"\n\
         \n\
         # Extent description\n\
         RW {} FLAT \"whole.raw\" 0\n\
         RW {} ZERO\n\
         RW {} SPARSE \"mixed-s001.vmdk\"\n\
         RW {} FLAT \"whole.raw\" {}\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"lsilogic\"\n",
        sec(zs),
        sec(ze - zs),
        sec(se - ss),
        sec(mib - se),
        sec(se)
    );
    let vmdk = dir.join("mixed.vmdk");
    std::fs::write(&vmdk, desc).unwrap();
    let v = inspect_disk(&env, &vmdk, &[]);
    assert_eq!(v["disk"]["format"], "vmdk", "{v}");
    assert_eq!(v["disk"]["virtual_size"], mib * MIB);
    assert_eq!(v["root"], "2");
    assert_eq!(mount(&v, "/boot")["status"], "grafted");
    import(&env, &vmdk, "mixed:1", &[]);
    import(&env, &raw, "mixed:raw", &[]);
    assert_eq!(diff_id(&env, "mixed:1"), diff_id(&env, "mixed:raw"));
    // The sparse extent is really read: with other bytes in it the layer differs.
    let mut other = bytes[(ss * MIB) as usize..(se * MIB) as usize].to_vec();
    for b in other.iter_mut() {
        *b ^= 0xff;
    }
    std::fs::write(&piece, &other).unwrap();
    std::fs::remove_file(dir.join("mixed-s001.vmdk")).unwrap();
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            s(&piece),
            s(&dir.join("mixed-s001.vmdk")),
        ],
    );
    let r = env.run(&["import", s(&vmdk), "--tag", "mixed:2", "--quiet"]);
    assert!(
        r.status != 0 || diff_id(&env, "mixed:2") != diff_id(&env, "mixed:raw"),
        "the SPARSE extent's bytes count"
    );
}

/// A partition running past the end of the disk: the message points at the table entry that
/// says so (GPT entry 1 at LBA 2, byte 1024; MBR primary entry 1 at byte 446), not at the
/// partition's first byte, where no table structure is.
#[test]
fn a_partition_past_the_end_names_its_table_entrys_offset() {
    let env = Env::new();
    let dir = env.path();
    let disk = std::fs::read(example().join("disk.raw")).unwrap();
    let gpt = dir.join("gpt_cut.raw");
    std::fs::write(&gpt, &disk[..3 << 20]).unwrap();
    refused(
        &env,
        &gpt,
        &["GPT partition entry at offset 1024", "partition 1"],
    );
    let mbr = dir.join("mbr_cut.raw");
    sparse_file(&mbr, 4 * MIB);
    sfdisk(&mbr, "label: dos\nstart=2048, size=4096, type=83\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mbr)
        .unwrap()
        .set_len(2 * MIB)
        .unwrap();
    refused(
        &env,
        &mbr,
        &["MBR partition entry at offset 446", "partition 1"],
    );
}

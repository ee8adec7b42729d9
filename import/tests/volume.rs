//! Volume discovery against partition tables made by sfdisk and LVM metadata made by lvm2's own
//! tools, plus damaged copies of them.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use import::block::{BlockSource, FileSource};
use import::volume::{discover, DiskLayout};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sfdisk(img: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new("sfdisk")
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run sfdisk (is it installed?)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small ext4 image with a few files.
fn ext4(dir: &Path, name: &str, mib: u64) -> Vec<u8> {
    ext4_with(dir, name, mib, &[])
}

/// A small ext4 image with a few files and `extra` (path, contents) ones.
fn ext4_with(dir: &Path, name: &str, mib: u64, extra: &[(&str, &str)]) -> Vec<u8> {
    let src = dir.join(format!("{name}-src"));
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("etc/hostname"), name).unwrap();
    for (path, text) in extra {
        fs::write(src.join(path), text).unwrap();
    }
    // Enough of a Linux root for root detection: /etc, /bin and os-release.
    fs::write(src.join("etc/os-release"), format!("ID={name}\n")).unwrap();
    let img = dir.join(format!("{name}.ext4"));
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            src.to_str().unwrap(),
            "-E",
            "root_owner=0:0",
            img.to_str().unwrap(),
            &format!("{mib}M"),
        ],
    );
    fs::read(img).unwrap()
}

fn open(path: &Path) -> Arc<dyn BlockSource> {
    Arc::new(FileSource::open(path).unwrap())
}

fn read_all(src: &dyn BlockSource) -> Vec<u8> {
    let mut v = vec![0u8; src.len() as usize];
    src.read_at(0, &mut v).unwrap();
    v
}

fn put(path: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

fn layout(path: &Path) -> DiskLayout {
    discover(open(path)).unwrap_or_else(|e| panic!("discover {}: {e}", path.display()))
}

const GPT_SCRIPT: &str = "label: gpt
label-id: 0D1B2CF6-5E3A-4E8C-9F0B-1A2B3C4D5E6F
start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-3333-4444-555555555555, name=\"esp\"
start=4096, size=8192, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE, name=\"root\"
start=12288, size=2048, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"
";

fn gpt_disk(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let img = dir.join("gpt.img");
    fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    sfdisk(&img, GPT_SCRIPT);
    let fs_bytes = ext4(dir, "gptroot", 4);
    put(&img, 4096 * 512, &fs_bytes);
    (img, fs_bytes)
}

#[test]
fn gpt_three_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (img, fs_bytes) = gpt_disk(dir.path());
    let l = layout(&img);
    assert_eq!(l.scheme, "gpt");
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    let v = &l.volumes;
    assert_eq!(v.len(), 3);
    assert_eq!(
        (v[0].index, v[0].start, v[0].size),
        (1, 2048 * 512, 2048 * 512)
    );
    assert_eq!(v[0].type_name, "EFI System");
    assert_eq!(
        v[0].partuuid.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(v[0].partlabel.as_deref(), Some("esp"));
    assert_eq!(v[1].part_type, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(
        v[1].partuuid.as_deref(),
        Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    );
    assert_eq!(v[2].type_name, "Linux swap");
    assert_eq!(read_all(&*v[1].source), fs_bytes);
}

#[test]
fn gpt_damaged_primary_uses_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (img, fs_bytes) = gpt_disk(dir.path());
    // Damage the primary header's disk GUID: its CRC no longer matches.
    put(&img, 512 + 60, b"\xff\xff");
    let l = layout(&img);
    assert_eq!(l.volumes.len(), 3);
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("primary GPT header damaged")),
        "{:?}",
        l.notes
    );
    assert_eq!(read_all(&*l.volumes[1].source), fs_bytes);
}

#[test]
fn gpt_two_billion_entries_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = gpt_disk(dir.path());
    let last = (8u64 << 20) / 512 - 1;
    for lba in [1, last] {
        let at = lba * 512;
        let mut h = vec![0u8; 92];
        FileSource::open(&img).unwrap().read_at(at, &mut h).unwrap();
        h[80..84].copy_from_slice(&(1u32 << 31).to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        put(&img, at, &h);
    }
    let t = std::time::Instant::now();
    let err = discover(open(&img)).unwrap_err().to_string();
    assert!(err.contains("2147483648 partition entries"), "{err}");
    assert!(err.contains("gpt.img"), "{err}");
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn gpt_partition_past_end_of_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    sfdisk(&img, GPT_SCRIPT);
    // Keep the backup header valid by moving it: simplest is to cut the disk and let the
    // primary (still valid) describe partitions beyond the new end.
    fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let err = discover(open(&img)).unwrap_err().to_string();
    assert!(
        err.contains("partition 2") || err.contains("partition 3"),
        "{err}"
    );
    assert!(err.contains("past the end"), "{err}");
}

const MBR_SCRIPT: &str = "label: dos
label-id: 0x1234abcd
start=2048, size=2048, type=83
start=4096, size=14336, type=5
start=6144, size=2048, type=82
start=10240, size=8192, type=83
";

fn mbr_disk(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let img = dir.join("mbr.img");
    fs::File::create(&img).unwrap().set_len(10 << 20).unwrap();
    sfdisk(&img, MBR_SCRIPT);
    let fs_bytes = ext4(dir, "mbrroot", 4);
    put(&img, 10240 * 512, &fs_bytes);
    (img, fs_bytes)
}

#[test]
fn mbr_with_logical_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (img, fs_bytes) = mbr_disk(dir.path());
    let l = layout(&img);
    assert_eq!(l.scheme, "mbr");
    let got: Vec<_> = l
        .volumes
        .iter()
        .map(|v| (v.index, v.start / 512, v.size / 512, v.part_type.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 2048, 2048, "0x83"),
            (5, 6144, 2048, "0x82"),
            (6, 10240, 8192, "0x83")
        ]
    );
    assert_eq!(l.volumes[2].partuuid.as_deref(), Some("1234abcd-06"));
    assert_eq!(l.volumes[1].type_name, "Linux swap");
    assert_eq!(read_all(&*l.volumes[2].source), fs_bytes);
    // The import finds the root in the logical partition.
    let plan = import_plan(&img, dir.path());
    assert_eq!(plan.root.as_deref(), Some("6"));
}

fn import_plan(disk: &Path, spool: &Path) -> import::plan::Plan {
    let opts = import::plan::PlanOptions {
        spool_dir: spool.to_path_buf(),
        ..Default::default()
    };
    import::plan::open(disk, &opts).unwrap().plan
}

/// The second EBR is at the sector sfdisk put it; find it from the first EBR's link.
fn second_ebr(img: &Path) -> u64 {
    let f = FileSource::open(img).unwrap();
    let mut link = [0u8; 16];
    f.read_at(4096 * 512 + 446 + 16, &mut link).unwrap();
    4096 + u64::from(u32::from_le_bytes(link[8..12].try_into().unwrap()))
}

#[test]
fn mbr_looping_ebr_chain_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mbr_disk(dir.path());
    let ebr2 = second_ebr(&img);
    // Point the second EBR's "next" entry back at the first EBR (relative sector 0 means "end",
    // so use the second EBR itself: relative ebr2 - 4096).
    let mut next = [0u8; 16];
    next[4] = 0x05;
    next[8..12].copy_from_slice(&((ebr2 - 4096) as u32).to_le_bytes());
    next[12..16].copy_from_slice(&2048u32.to_le_bytes());
    put(&img, ebr2 * 512 + 446 + 16, &next);
    let t = std::time::Instant::now();
    let err = discover(open(&img)).unwrap_err().to_string();
    assert!(
        err.contains("loops") && err.contains("EBR") && err.contains("mbr.img"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn mbr_partition_past_end_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mbr_disk(dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let err = discover(open(&img)).unwrap_err().to_string();
    assert!(
        err.contains("partition 6") && err.contains("past the end"),
        "{err}"
    );
}

#[test]
fn no_table_is_one_whole_disk_volume() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = ext4(dir.path(), "whole", 4);
    let img = dir.path().join("whole.ext4");
    let l = layout(&img);
    assert_eq!(l.scheme, "none");
    assert_eq!(l.volumes.len(), 1);
    assert_eq!(read_all(&*l.volumes[0].source), bytes);
}

#[test]
fn hostile_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mbr_disk(dir.path());
    let orig = fs::read(&img).unwrap();
    let (gimg, _) = gpt_disk(dir.path());
    let gorig = fs::read(&gimg).unwrap();
    let t = std::time::Instant::now();
    for (path, data, ranges) in [
        (
            &img,
            &orig,
            vec![440..512, 4096 * 512 + 440..4096 * 512 + 512],
        ),
        (&gimg, &gorig, vec![440..512, 512..700, 1024..1300]),
    ] {
        for r in ranges {
            for at in r.step_by(3) {
                let mut d = data.clone();
                d[at] ^= 0xa5;
                fs::write(path, &d).unwrap();
                let _ = discover(open(path));
            }
        }
    }
    assert!(t.elapsed().as_secs() < 20);
}

/// An image file on a loop device, for lvm2's tools, which run without device-mapper
/// (`--driverloaded n`) and see only that device. Detached when dropped.
struct LoopLvm {
    dev: String,
    cfg: String,
}

impl LoopLvm {
    fn attach(img: &Path) -> LoopLvm {
        let dev = run("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        let cfg = format!(
            "--config=devices{{filter=[\"a|^{dev}$|\",\"r|.*|\"] obtain_device_list_from_udev=0}} activation{{udev_sync=0 udev_rules=0}} backup{{backup=0 archive=0}}"
        );
        LoopLvm { dev, cfg }
    }

    fn tool(&self, cmd: &str, args: &[&str]) -> String {
        let mut a: Vec<&str> = vec!["--driverloaded", "n", self.cfg.as_str()];
        a.extend_from_slice(args);
        run(cmd, &a)
    }
}

impl Drop for LoopLvm {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// LVM metadata written by lvm2 itself on a loop device: a VG with two LVs, the first extended
/// so it has two segments, an ext4 image written across both.
#[test]
fn lvm_two_segment_lv() {
    let dir = tempfile::tempdir().unwrap();
    let pv = dir.path().join("pv.img");
    fs::File::create(&pv).unwrap().set_len(48 << 20).unwrap();
    let lvm = LoopLvm::attach(&pv);
    let loopdev = lvm.dev.clone();
    let vg = format!("decantvg{}", std::process::id());
    let tool = |cmd: &str, args: &[&str]| lvm.tool(cmd, args);
    tool("pvcreate", &[&loopdev]);
    tool("vgcreate", &["-s", "1M", &vg, &loopdev]);
    tool(
        "lvcreate",
        &[
            "--zero",
            "n",
            "--activate",
            "n",
            "-L",
            "8M",
            "-n",
            "root",
            &vg,
        ],
    );
    tool(
        "lvcreate",
        &[
            "--zero",
            "n",
            "--activate",
            "n",
            "-L",
            "4M",
            "-n",
            "other",
            &vg,
        ],
    );
    tool("lvextend", &["-L", "16M", &format!("{vg}/root")]);
    let pe_start: u64 = tool(
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
    let segs = tool(
        "lvs",
        &[
            "--noheadings",
            "--separator",
            ",",
            "-o",
            "seg_pe_ranges",
            &format!("{vg}/root"),
        ],
    );
    drop(lvm);

    // Write an ext4 image across root's segments (1 MiB extents).
    let fs_bytes = ext4(dir.path(), "lvroot", 16);
    let mut written = 0usize;
    for line in segs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let range = line.rsplit(':').next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        let len = ((b - a + 1) << 20) as usize;
        put(&pv, pe_start + (a << 20), &fs_bytes[written..written + len]);
        written += len;
    }
    assert_eq!(written, fs_bytes.len(), "root has two segments: {segs}");

    let l = layout(&pv);
    let names: Vec<_> = l.volumes.iter().map(|v| v.lvm.clone().unwrap().1).collect();
    assert_eq!(names, vec!["root", "other"], "{:?}", l.notes);
    let root = &l.volumes[0];
    assert_eq!(root.scheme, "lvm");
    assert_eq!(root.size, 16 << 20);
    assert_eq!(root.start, pe_start);
    assert_eq!(read_all(&*root.source), fs_bytes);
    assert_eq!(l.volumes[1].start, pe_start + (8 << 20));
    // The import takes the two-segment LV as the root, and --root VG/LV names it.
    let plan = import_plan(&pv, dir.path());
    assert_eq!(plan.root, Some(format!("{vg}/root")));

    // The same PV inside an MBR partition of type 0x8e.
    let disk = dir.path().join("disk.img");
    let pv_bytes = fs::read(&pv).unwrap();
    fs::File::create(&disk)
        .unwrap()
        .set_len((1 << 20) + pv_bytes.len() as u64)
        .unwrap();
    sfdisk(
        &disk,
        &format!(
            "label: dos\nstart=2048, size={}, type=8e\n",
            pv_bytes.len() / 512
        ),
    );
    put(&disk, 1 << 20, &pv_bytes);
    let l = layout(&disk);
    assert_eq!(l.volumes.len(), 2);
    assert_eq!(l.volumes[0].index, 1);
    assert_eq!(read_all(&*l.volumes[0].source), fs_bytes);
    assert!(l.volumes[0].source.name().contains("lv decantvg"));

    // Damaged metadata checksum: the copy is skipped with a note, the PV stays a plain volume.
    let mut bad = pv_bytes.clone();
    bad[4096 + 100] ^= 0xff;
    fs::write(&pv, &bad).unwrap();
    let l = layout(&pv);
    assert!(l.notes.iter().any(|n| n.contains("LVM")), "{:?}", l.notes);
}

/// A PV UUID for the hand-written metadata below (LVM's 32 characters, grouped 6-4-4-4-4-4-6).
const PV_UUID: &str = "FOctKp-urXL-HfwC-lzml-n9AL-uHoa-JdLEwc";

/// LVM metadata of a VG (named VGNAME) with a linear root, a RAID1 LV, a snapshot of root, a
/// thin pool and a thin LV, written as lvm2 writes them: lvm2 cannot create these without
/// device-mapper, but `vgcfgrestore` checks and writes this text to the PV. The snapshot is
/// two LVs without VISIBLE (the store `snap` and `snapshot0`), as lvm2 keeps them.
const UNSUPPORTED_VG: &str = r#"contents = "Text Format Volume Group"
version = 1
VGNAME {
id = "CwLNYx-Ohec-uJqe-SiVE-8NW4-e5LH-l6lGW3"
seqno = 1
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 2048
max_lv = 0
max_pv = 0
metadata_copies = 0
physical_volumes {
pv0 {
id = "PVUUID"
device = "/dev/loop0"
status = ["ALLOCATABLE"]
flags = []
dev_size = 131072
pe_start = 2048
pe_count = 63
}
}
logical_volumes {
root {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa1"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 8 type = "striped" stripe_count = 1 stripes = ["pv0", 0] }
}
mirror {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa2"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 4
type = "raid1"
device_count = 2
region_size = 1024
raids = ["mirror_rmeta_0", "mirror_rimage_0", "mirror_rmeta_1", "mirror_rimage_1"]
}
}
mirror_rmeta_0 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa3"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 8] }
}
mirror_rimage_0 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa4"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv0", 9] }
}
mirror_rmeta_1 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa5"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 13] }
}
mirror_rimage_1 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa6"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv0", 14] }
}
snap {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa7"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv0", 18] }
}
snapshot0 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa8"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 8 type = "snapshot" chunk_size = 8 origin = "root" cow_store = "snap" }
}
pool {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa9"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 8
type = "thin-pool"
metadata = "pool_tmeta"
pool = "pool_tdata"
transaction_id = 1
chunk_size = 128
discards = "passdown"
zero_new_blocks = 1
}
}
thin1 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab1"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 16 type = "thin" thin_pool = "pool" transaction_id = 0 device_id = 1 }
}
pool_tmeta {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab2"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 22] }
}
pool_tdata {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab3"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 8 type = "striped" stripe_count = 1 stripes = ["pv0", 23] }
}
lvol0_pmspare {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab4"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 31] }
}
}
}
"#;

/// Thin, RAID and snapshot LVs are listed (under the names `lvs` shows), and asking for one,
/// with --root or from fstab, says it is not supported, naming it.
#[test]
fn lvm_thin_raid_snapshot_are_named_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let pv = dir.path().join("pv.img");
    fs::File::create(&pv).unwrap().set_len(64 << 20).unwrap();
    let vg = format!("decantun{}", std::process::id());
    let meta = dir.path().join("vg.txt");
    fs::write(
        &meta,
        UNSUPPORTED_VG
            .replace("VGNAME", &vg)
            .replace("PVUUID", PV_UUID),
    )
    .unwrap();
    let lvm = LoopLvm::attach(&pv);
    lvm.tool(
        "pvcreate",
        &["--uuid", PV_UUID, "--norestorefile", &lvm.dev],
    );
    lvm.tool(
        "vgcfgrestore",
        &["--force", "-f", meta.to_str().unwrap(), &vg],
    );
    let shown = lvm.tool("lvs", &["--noheadings", "-o", "lv_name", &vg]);
    drop(lvm);
    let mut shown: Vec<&str> = shown.split_whitespace().collect();
    shown.sort();
    let fstab = format!(
        "/dev/{vg}/root / ext4 defaults 0 1\n\
         /dev/{vg}/mirror /srv/mirror ext4 defaults 0 2\n\
         /dev/mapper/{vg}-thin1 /srv/thin ext4 defaults 0 2\n\
         /dev/{vg}/snap /srv/snap ext4 defaults 0 2\n\
         UUID=0badc0de-0000-4000-8000-000000000001 /srv/elsewhere ext4 defaults 0 2\n"
    );
    let root = ext4_with(dir.path(), "lvroot", 8, &[("etc/fstab", &fstab)]);
    put(&pv, 1 << 20, &root);

    let l = layout(&pv);
    let mut got: Vec<(String, String)> = l
        .volumes
        .iter()
        .map(|v| (v.lvm.clone().unwrap().1, v.part_type.clone()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("mirror", "raid1"),
        ("pool", "thin-pool"),
        ("root", "linear"),
        ("snap", "snapshot"),
        ("thin1", "thin"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{:?}", l.notes);
    assert_eq!(
        shown,
        vec!["mirror", "pool", "root", "snap", "thin1"],
        "the names lvs shows"
    );
    let snap = l
        .volumes
        .iter()
        .find(|v| v.lvm.as_ref().unwrap().1 == "snap")
        .unwrap();
    assert_eq!(snap.size, 4 << 20);
    assert!(import::volume::lvm::unsupported_reason(snap).is_some());

    // inspect-disk's plan: root found, the others listed as unsupported, fstab lines unresolved
    // with the reason.
    let plan = import_plan(&pv, dir.path());
    assert_eq!(plan.root, Some(format!("{vg}/root")));
    for (lv, kind) in [("mirror", "raid1"), ("snap", "snapshot"), ("thin1", "thin")] {
        let v = plan
            .volumes
            .iter()
            .find(|v| v.name == format!("{vg}/{lv}"))
            .unwrap();
        assert_eq!(v.filesystem, "unsupported");
        let want = format!("{vg}/{lv}: {kind} logical volumes are not supported");
        assert!(v.error.as_deref().unwrap().contains(&want), "{v:?}");
    }
    let reason = |mp: &str| {
        let m = plan.mounts.iter().find(|m| m.mountpoint == mp).unwrap();
        assert_eq!(m.status, "unresolved", "{m:?}");
        m.reason.clone().unwrap()
    };
    for (mp, want) in [
        (
            "/srv/mirror",
            format!("{vg}/mirror: raid1 logical volumes are not supported"),
        ),
        (
            "/srv/thin",
            format!("{vg}/thin1: thin logical volumes are not supported"),
        ),
        (
            "/srv/snap",
            format!("{vg}/snap: snapshot logical volumes are not supported"),
        ),
    ] {
        let r = reason(mp);
        assert!(r.contains(&want) && r.contains(mp), "{mp}: {r}");
    }
    let r = reason("/srv/elsewhere");
    assert!(
        r.contains("no readable volume") && r.contains(&format!("{vg}/thin1 (thin)")),
        "{r}"
    );

    // --root naming one of them: the reason, not "no volume matches".
    for (lv, kind) in [
        ("mirror", "raid1"),
        ("snap", "snapshot"),
        ("thin1", "thin"),
        ("pool", "thin-pool"),
    ] {
        let opts = import::plan::PlanOptions {
            spool_dir: dir.path().to_path_buf(),
            root: Some(format!("{vg}/{lv}")),
            ..Default::default()
        };
        let err = import::plan::open(&pv, &opts).err().unwrap().to_string();
        let want = format!("{vg}/{lv}: {kind} logical volumes are not supported");
        assert!(err.contains(&want) && err.contains("pv.img"), "{err}");
        assert!(!err.contains("no volume matches"), "{err}");
    }
}

/// A PV with two metadata areas holding different versions of the VG: whichever area holds
/// it, the newest seqno is used. The old version has another layout (root at extent 0, no
/// `pad`), so reading the old copy would give other volumes and other bytes.
#[test]
fn lvm_newest_seqno_wins_across_metadata_areas() {
    let dir = tempfile::tempdir().unwrap();
    let pv = dir.path().join("pv.img");
    fs::File::create(&pv).unwrap().set_len(48 << 20).unwrap();
    let vg = format!("decantsq{}", std::process::id());
    let lvm = LoopLvm::attach(&pv);
    let dev = lvm.dev.clone();
    let tool = |cmd: &str, args: &[&str]| lvm.tool(cmd, args);
    tool("pvcreate", &["--pvmetadatacopies", "2", &dev]);
    tool("vgcreate", &["-s", "1M", &vg, &dev]);
    let num = |field: &str| -> u64 {
        tool(
            "pvs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                field,
                &dev,
            ],
        )
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(num("pv_mda_count"), 2);
    let pe_start = num("pe_start");
    let data_end = pe_start + (num("pv_pe_count") << 20);
    let lv = |args: &[&str]| {
        let mut a = vec!["--zero", "n", "--activate", "n"];
        a.extend_from_slice(args);
        tool("lvcreate", &a);
    };
    lv(&["-L", "8M", "-n", "root", &vg]);
    let old = fs::read(&pv).unwrap();
    tool("lvremove", &["-y", &format!("{vg}/root")]);
    lv(&["-L", "4M", "-n", "pad", &vg]);
    lv(&["-L", "8M", "-n", "root", &vg]);
    drop(lvm);
    let fs_bytes = ext4(dir.path(), "seqroot", 8);
    put(&pv, pe_start + (4 << 20), &fs_bytes);
    let new = fs::read(&pv).unwrap();

    // The first area (after the label, before the data) and the second (after the data).
    let first = 4096..pe_start as usize;
    let second = data_end as usize..new.len();
    let with_old = |ranges: &[std::ops::Range<usize>]| {
        let mut d = new.clone();
        for r in ranges {
            d[r.clone()].copy_from_slice(&old[r.clone()]);
        }
        fs::write(&pv, &d).unwrap();
        layout(&pv)
    };
    for old_areas in [vec![second.clone()], vec![first.clone()]] {
        let l = with_old(&old_areas);
        let names: Vec<_> = l.volumes.iter().map(|v| v.lvm.clone().unwrap().1).collect();
        assert_eq!(names, vec!["pad", "root"], "old copy in {old_areas:?}");
        assert_eq!(l.volumes[1].start, pe_start + (4 << 20));
        assert_eq!(read_all(&*l.volumes[1].source), fs_bytes);
    }
    // Both areas old: the old layout, so a wrong choice above would have shown.
    let l = with_old(&[first, second]);
    let names: Vec<_> = l.volumes.iter().map(|v| v.lvm.clone().unwrap().1).collect();
    assert_eq!(names, vec!["root"]);
    assert_eq!(l.volumes[0].start, pe_start);
}

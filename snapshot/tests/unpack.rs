//! Layer unpacking and the layer cache, against real layers made at test time: round trips of
//! every kind of entry through `LayerWriter` and back, whiteouts in both modes (Overlay checked
//! with a real overlay mount), hostile tars built by hand, a rootless run in a child process
//! that drops to uid 65534, and the cache's once-only, crash and garbage behaviour.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use snapshot::layer::cache::{CacheError, LayerCache};
use snapshot::layer::unpack::{
    unpack, unpack_without_openat2, UnpackError, UnpackOptions, UnpackReport, WhiteoutMode,
};
use snapshot::layer::{write_tree, LayerOptions, LayerReader};
use snapshot::store::Store;
use snapshot::{Entry, EntryKind, FileTree, Timestamp};
use tempfile::TempDir;

/// CAP_NET_RAW, effective, as `setcap cap_net_raw+ep` writes it (vfs_cap_data revision 2).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0, 0, 0x02, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

struct VecTree {
    entries: std::vec::IntoIter<(Entry, Vec<u8>)>,
    content: Cursor<Vec<u8>>,
}

impl VecTree {
    fn new(entries: Vec<(Entry, Vec<u8>)>) -> VecTree {
        VecTree {
            entries: entries.into_iter(),
            content: Cursor::new(Vec::new()),
        }
    }
}

impl FileTree for VecTree {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        Ok(self.entries.next().map(|(e, d)| {
            self.content = Cursor::new(d);
            e
        }))
    }
    fn content(&mut self) -> &mut dyn Read {
        &mut self.content
    }
}

fn ent(path: &[u8], kind: EntryKind, mode: u32) -> Entry {
    let mut e = Entry::new(path.to_vec(), kind, mode);
    e.mtime = Timestamp {
        secs: 1_600_000_000,
        nanos: 123_456_789,
    };
    e
}

fn file(path: &[u8], mode: u32, data: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = ent(path, EntryKind::File, mode);
    e.size = data.len() as u64;
    (e, data.to_vec())
}

fn dir(path: &[u8], mode: u32) -> (Entry, Vec<u8>) {
    (ent(path, EntryKind::Dir, mode), Vec::new())
}

fn link(path: &[u8], kind: EntryKind, target: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = ent(path, kind, 0o777);
    e.link_target = Some(target.to_vec());
    (e, Vec::new())
}

/// A gzip layer blob of `entries`, written by the project's own writer.
fn layer(mut entries: Vec<(Entry, Vec<u8>)>, whiteouts: bool) -> Vec<u8> {
    entries.sort_by(|a, b| snapshot::path_order(&a.0.path, &b.0.path));
    let opts = LayerOptions {
        allow_whiteouts: whiteouts,
        keep_selinux: true,
        threads: 1,
        ..LayerOptions::default()
    };
    let (blob, _) = write_tree(&mut VecTree::new(entries), Vec::new(), opts).unwrap();
    blob
}

fn opts(whiteouts: WhiteoutMode, rootless: bool) -> UnpackOptions {
    UnpackOptions {
        whiteouts,
        rootless,
        keep_xattrs: true,
    }
}

fn unpack_blob(blob: &[u8], dest: &Path, o: &UnpackOptions) -> Result<UnpackReport, UnpackError> {
    let mut r = LayerReader::new(Cursor::new(blob.to_vec())).unwrap();
    unpack(&mut r, dest, o)
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: strings are NUL-terminated and `buf` is writable for the length passed.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "test needs the `{name}` tool, which is not installed"
    );
    Command::new(name)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_time(m: &fs::Metadata, secs: i64, nanos: i64, what: &str) {
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (secs, nanos),
        "mtime of {what}"
    );
}

/// Every kind of entry the writer can carry.
fn everything() -> Vec<(Entry, Vec<u8>)> {
    let long = vec![b'l'; 200];
    let mut deep = b"d/".to_vec();
    deep.extend_from_slice(&long);
    let mut v = vec![dir(b"d", 0o2750), file(&deep, 0o644, b"long")];
    let mut f = file(b"d/owned", 0o640, b"owned by someone");
    f.0.uid = 1234;
    f.0.gid = 5678;
    v.push(f);
    let mut ro = dir(b"d/ro", 0o555);
    ro.0.mtime = Timestamp {
        secs: 1_000_000_000,
        nanos: 5,
    };
    v.push(ro);
    v.push(file(b"d/ro/inside", 0o444, b"x"));
    v.push(file(b"d\xff\xfe", 0o600, b"not utf-8"));
    let mut dev = ent(b"dev_null", EntryKind::CharDevice, 0o666);
    dev.device = Some((1, 3));
    v.push((dev, Vec::new()));
    let mut blk = ent(b"dev_loop", EntryKind::BlockDevice, 0o660);
    blk.device = Some((7, 0));
    blk.gid = 6;
    v.push((blk, Vec::new()));
    v.push((ent(b"fifo", EntryKind::Fifo, 0o620), Vec::new()));
    v.push(file(b"hard", 0o755, b"two names"));
    v.push(link(b"hard2", EntryKind::Hardlink, b"hard"));
    let mut ping = file(b"ping", 0o4755, b"\x7fELF pretend");
    ping.0.xattrs = vec![
        (b"security.capability".to_vec(), CAP_NET_RAW.to_vec()),
        (b"user.note".to_vec(), b"hello".to_vec()),
    ];
    v.push(ping);
    let mut sym = link(b"sym", EntryKind::Symlink, b"d/owned");
    sym.0.uid = 42;
    sym.0.gid = 43;
    sym.0.mtime = Timestamp {
        secs: 1_234_567_890,
        nanos: 987_654_321,
    };
    v.push(sym);
    let mut zeros = file(b"zeros", 0o600, &vec![0u8; 1 << 20]);
    zeros.0.mtime.nanos = 1;
    v.push(zeros);
    v
}

#[test]
fn round_trip_every_kind_as_root() {
    let t = TempDir::new().unwrap();
    let dest = t.path().join("root");
    fs::create_dir(&dest).unwrap();
    let blob = layer(everything(), false);
    let rep = unpack_blob(&blob, &dest, &opts(WhiteoutMode::Apply, false)).unwrap();
    assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
    assert_eq!(rep.entries, 14);

    let md = |p: &[u8]| fs::symlink_metadata(dest.join(std::ffi::OsStr::from_bytes(p))).unwrap();
    let d = md(b"d");
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o2750);
    assert_time(&d, 1_600_000_000, 123_456_789, "d (after its contents)");
    let ro = md(b"d/ro");
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_time(&ro, 1_000_000_000, 5, "d/ro");

    let mut long = b"d/".to_vec();
    long.extend_from_slice(&[b'l'; 200]);
    assert_eq!(
        fs::read(dest.join(std::ffi::OsStr::from_bytes(&long))).unwrap(),
        b"long"
    );
    let owned = md(b"d/owned");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_time(&owned, 1_600_000_000, 123_456_789, "d/owned");
    assert_eq!(
        fs::read(dest.join(std::ffi::OsStr::from_bytes(b"d\xff\xfe"))).unwrap(),
        b"not utf-8"
    );

    let dev = md(b"dev_null");
    assert!(dev.file_type().is_char_device());
    assert_eq!(
        (dev.rdev(), dev.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
    let blk = md(b"dev_loop");
    assert!(blk.file_type().is_block_device());
    assert_eq!((blk.rdev(), blk.gid()), (libc::makedev(7, 0), 6));
    let fifo = md(b"fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);

    let (h1, h2) = (md(b"hard"), md(b"hard2"));
    assert_eq!((h1.ino(), h1.nlink()), (h2.ino(), 2));

    let ping = md(b"ping");
    assert_eq!(ping.mode() & 0o7777, 0o4755, "setuid survives chown");
    let p = dest.join("ping");
    assert_eq!(lgetxattr(&p, "security.capability").unwrap(), CAP_NET_RAW);
    assert_eq!(lgetxattr(&p, "user.note").unwrap(), b"hello");

    let sym = md(b"sym");
    assert!(sym.file_type().is_symlink());
    assert_eq!(
        fs::read_link(dest.join("sym")).unwrap(),
        Path::new("d/owned")
    );
    assert_eq!((sym.uid(), sym.gid()), (42, 43));
    assert_time(&sym, 1_234_567_890, 987_654_321, "symlink");

    let z = md(b"zeros");
    assert_eq!(z.len(), 1 << 20);
    assert!(z.blocks() * 512 < 1 << 20, "zeros are written as holes");
    assert_time(&z, 1_600_000_000, 1, "zeros");
    assert_eq!(rep.bytes, (1 << 20) + 4 + 16 + 1 + 9 + 9 + 12);
}

#[test]
fn both_resolvers_agree_on_a_round_trip() {
    let t = TempDir::new().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let blob = layer(everything(), false);
    let o = opts(WhiteoutMode::Overlay, false);
    unpack_blob(&blob, &a, &o).unwrap();
    let mut r = LayerReader::new(Cursor::new(blob)).unwrap();
    unpack_without_openat2(&mut r, &b, &o).unwrap();
    assert_eq!(listing(&a), listing(&b));
}

/// Everything lstat says about every path under `root`, plus contents and link targets.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let extra = if m.file_type().is_symlink() {
                format!("{:?}", fs::read_link(&p).unwrap())
            } else if m.is_file() {
                format!("{:?}", fs::read(&p).unwrap().len())
            } else {
                String::new()
            };
            out.push(format!(
                "{:?} {:o} {}:{} {}.{} {} {} {} {extra} {:?}",
                p.strip_prefix(root).unwrap(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.len(),
                m.rdev(),
                m.nlink(),
                lgetxattr(&p, "security.capability"),
            ));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn whiteout_layers() -> (Vec<u8>, Vec<u8>) {
    let lower = layer(
        vec![
            dir(b"a", 0o755),
            file(b"a/gone", 0o644, b"deleted above"),
            file(b"a/kept", 0o644, b"kept"),
            dir(b"o", 0o755),
            dir(b"o/sub", 0o755),
            file(b"o/sub/old", 0o644, b"hidden"),
            file(b"o/old", 0o644, b"hidden"),
        ],
        false,
    );
    let upper = layer(
        vec![
            dir(b"a", 0o755),
            (ent(b"a/.wh.gone", EntryKind::File, 0o644), Vec::new()),
            dir(b"o", 0o755),
            (ent(b"o/.wh..wh..opq", EntryKind::File, 0o644), Vec::new()),
            file(b"o/new", 0o644, b"new"),
        ],
        true,
    );
    (lower, upper)
}

fn check_merged(m: &Path) {
    assert!(!m.join("a/gone").exists(), "whited-out file still visible");
    assert_eq!(fs::read(m.join("a/kept")).unwrap(), b"kept");
    assert!(!m.join("o/old").exists(), "opaque dir shows lower contents");
    assert!(!m.join("o/sub").exists(), "opaque dir shows lower contents");
    assert_eq!(fs::read(m.join("o/new")).unwrap(), b"new");
}

/// Serialises `as_nobody`'s fork-without-exec with the overlay mounts: a child forked while
/// another test has a file open inside a mount keeps that descriptor until it exits, and the
/// mount's umount then fails with "target is busy" (seen in CI).
static FORK_VS_MOUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Mounts an overlay of `lowers` (top first) read-only at `m`, runs `f`, unmounts.
fn with_overlay(lowers: &[&Path], extra: &str, m: &Path, f: impl FnOnce()) {
    let _serial = FORK_VS_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(m).unwrap();
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    run(tool("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower}{extra}"))
        .arg(m));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // A process spawned by another test (fork, then exec) may still hold a descriptor from
    // inside the mount for a moment; retry briefly before calling the umount a failure.
    let mut tries = 0;
    loop {
        let out = tool("umount").arg(m).output().unwrap();
        if out.status.success() {
            break;
        }
        tries += 1;
        assert!(
            tries < 50,
            "umount {} failed: {}",
            m.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn whiteouts_overlay_mode_under_a_real_overlay_mount() {
    let t = TempDir::new().unwrap();
    let (lower, upper) = whiteout_layers();
    let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
    fs::create_dir(&l1).unwrap();
    fs::create_dir(&l2).unwrap();
    let o = opts(WhiteoutMode::Overlay, false);
    unpack_blob(&lower, &l1, &o).unwrap();
    unpack_blob(&upper, &l2, &o).unwrap();
    let wh = fs::symlink_metadata(l2.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        lgetxattr(&l2.join("o"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    with_overlay(&[&l2, &l1], "", &t.path().join("m"), || {
        check_merged(&t.path().join("m"))
    });
}

#[test]
fn whiteouts_apply_mode() {
    let t = TempDir::new().unwrap();
    let (lower, upper) = whiteout_layers();
    let o = opts(WhiteoutMode::Apply, false);
    unpack_blob(&lower, t.path(), &o).unwrap();
    unpack_blob(&upper, t.path(), &o).unwrap();
    check_merged(t.path());
    assert!(!t.path().join("a/.wh.gone").exists());
}

#[test]
fn later_entries_replace_earlier_ones_without_following_symlinks() {
    let t = TempDir::new().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("canary"), b"canary").unwrap();
    let dest = t.path().join("root");
    fs::create_dir(&dest).unwrap();
    let o = opts(WhiteoutMode::Apply, false);
    let lower = layer(
        vec![
            dir(b"x", 0o755),
            file(b"x/f", 0o644, b"f"),
            link(b"y", EntryKind::Symlink, outside.as_os_str().as_bytes()),
            file(b"z", 0o644, b"z"),
        ],
        false,
    );
    unpack_blob(&lower, &dest, &o).unwrap();
    let upper = layer(
        vec![
            file(b"x", 0o600, b"file over dir"),
            dir(b"y", 0o700),
            dir(b"z", 0o700),
        ],
        false,
    );
    unpack_blob(&upper, &dest, &o).unwrap();
    assert_eq!(fs::read(dest.join("x")).unwrap(), b"file over dir");
    assert!(fs::symlink_metadata(dest.join("y")).unwrap().is_dir());
    assert!(fs::symlink_metadata(dest.join("z")).unwrap().is_dir());
    assert_eq!(fs::read(outside.join("canary")).unwrap(), b"canary");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

// ---- hostile layers, built by hand ----

enum Raw<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
}

/// A plain tar whose names are written byte for byte (the tar crate refuses `..` in set_path).
fn raw_tar(items: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for it in items {
        let mut h = tar::Header::new_ustar();
        let (name, data, ty, linkname): (&[u8], &[u8], tar::EntryType, &[u8]) = match *it {
            Raw::File(n, d) => (n, d, tar::EntryType::Regular, b""),
            Raw::Dir(n) => (n, b"", tar::EntryType::Directory, b""),
            Raw::Symlink(n, l) => (n, b"", tar::EntryType::Symlink, l),
            Raw::Hardlink(n, l) => (n, b"", tar::EntryType::Link, l),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..linkname.len()].copy_from_slice(linkname);
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(if ty == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A directory outside every destination with a file whose content and link count must not
/// change.
struct Canary {
    dir: PathBuf,
}

impl Canary {
    fn new(t: &TempDir) -> Canary {
        let dir = t.path().join("outside");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("canary"), b"canary").unwrap();
        Canary { dir }
    }
    fn untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("canary")],
            "something was written outside"
        );
        let m = fs::metadata(self.dir.join("canary")).unwrap();
        assert_eq!(m.nlink(), 1, "a hardlink to the canary was made");
        assert_eq!(fs::read(self.dir.join("canary")).unwrap(), b"canary");
    }
}

/// Unpacks `tar` with both resolvers into fresh directories; returns both results.
fn hostile(
    t: &TempDir,
    tar: &[u8],
    o: &UnpackOptions,
) -> Vec<(PathBuf, Result<UnpackReport, UnpackError>)> {
    let mut out = Vec::new();
    for (i, walk) in [false, true].into_iter().enumerate() {
        let dest = t.path().join(format!("dest{i}"));
        fs::create_dir(&dest).unwrap();
        let start = Instant::now();
        let mut r = LayerReader::new(Cursor::new(tar.to_vec())).unwrap();
        let res = if walk {
            unpack_without_openat2(&mut r, &dest, o)
        } else {
            unpack(&mut r, &dest, o)
        };
        assert!(start.elapsed() < Duration::from_secs(5));
        out.push((dest, res));
    }
    out
}

#[test]
fn dotdot_is_refused() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let tar = raw_tar(&[
        Raw::File(b"../outside/x", b"evil"),
        Raw::File(b"a/../../y", b"evil"),
    ]);
    for (_, r) in hostile(&t, &tar, &opts(WhiteoutMode::Apply, false)) {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(".."), "{e}");
        assert!(!e.contains('\n'));
    }
    c.untouched();
    assert!(!t.path().join("x").exists() && !t.path().join("y").exists());
}

#[test]
fn absolute_paths_land_inside() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let abs = c.dir.join("abs");
    let tar = raw_tar(&[Raw::File(abs.as_os_str().as_bytes(), b"in")]);
    for (dest, r) in hostile(&t, &tar, &opts(WhiteoutMode::Apply, false)) {
        r.unwrap();
        let inside = dest.join(abs.strip_prefix("/").unwrap());
        assert_eq!(fs::read(inside).unwrap(), b"in");
    }
    c.untouched();
}

#[test]
fn symlink_then_write_through_it_stays_inside() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let cdir = c.dir.as_os_str().as_bytes();
    let mut through = b"evil".to_vec();
    through.extend_from_slice(cdir);
    through.extend_from_slice(b"/canary");
    let tar = raw_tar(&[
        Raw::Symlink(b"evil", b"/"),
        Raw::File(&through, b"overwritten?"),
        Raw::Symlink(b"direct", cdir),
        Raw::File(b"direct/new", b"new?"),
        Raw::Symlink(b"up", b"../../../../.."),
        Raw::File(b"up/escaped", b"x"),
        Raw::Symlink(b"self", b"."),
        Raw::File(b"self/self/self/deep", b"x"),
        Raw::Symlink(b"loop", b"loop"),
    ]);
    for (dest, r) in hostile(&t, &tar, &opts(WhiteoutMode::Apply, false)) {
        r.unwrap();
        let rel = c.dir.strip_prefix("/").unwrap();
        assert_eq!(
            fs::read(dest.join(rel).join("canary")).unwrap(),
            b"overwritten?"
        );
        assert_eq!(fs::read(dest.join(rel).join("new")).unwrap(), b"new?");
        assert!(
            dest.join("escaped").is_file() || fs::symlink_metadata(dest.join("escaped")).is_ok()
        );
        assert!(fs::symlink_metadata(dest.join("deep")).unwrap().is_file());
    }
    c.untouched();
    assert!(!t.path().join("escaped").exists());
}

#[test]
fn symlink_loops_and_dangling_parents_give_errors() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let tar = raw_tar(&[Raw::Symlink(b"loop", b"loop"), Raw::File(b"loop/x", b"x")]);
    for (_, r) in hostile(&t, &tar, &opts(WhiteoutMode::Apply, false)) {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("/loop/x") && e.contains("parent"), "{e}");
    }
    let t2 = TempDir::new().unwrap();
    let tar = raw_tar(&[
        Raw::Symlink(b"dangling", b"nowhere"),
        Raw::File(b"dangling/x", b"x"),
    ]);
    for (_, r) in hostile(&t2, &tar, &opts(WhiteoutMode::Apply, false)) {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("/dangling/x"), "{e}");
    }
    c.untouched();
}

#[test]
fn hardlinks_to_outside_are_refused() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let target = c.dir.join("canary");
    let tb = target.as_os_str().as_bytes();
    let mut via = b"esc".to_vec();
    via.extend_from_slice(c.dir.as_os_str().as_bytes());
    via.extend_from_slice(b"/canary");
    for items in [
        vec![Raw::Hardlink(b"h", tb)],
        vec![Raw::Hardlink(b"h", b"/etc/shadow")],
        vec![Raw::Symlink(b"esc", b"/"), Raw::Hardlink(b"h", &via)],
        vec![Raw::Symlink(b"s", tb), Raw::Hardlink(b"h", b"s")],
    ] {
        let tt = TempDir::new().unwrap();
        let tar = raw_tar(&items);
        for (dest, r) in hostile(&tt, &tar, &opts(WhiteoutMode::Apply, false)) {
            match r {
                // A hardlink to the symlink `s` links the symlink itself, inside.
                Ok(_) => assert!(fs::symlink_metadata(dest.join("h"))
                    .unwrap()
                    .file_type()
                    .is_symlink()),
                Err(e) => assert!(e.to_string().contains("hardlink"), "{e}"),
            }
        }
        c.untouched();
    }
}

#[test]
fn whiteout_names_cannot_escape() {
    let t = TempDir::new().unwrap();
    let c = Canary::new(&t);
    let tar = raw_tar(&[
        Raw::Dir(b"a"),
        Raw::File(b"a/.wh...", b""),
        Raw::File(b"a/.wh..", b""),
    ]);
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let tt = TempDir::new().unwrap();
        for (_, r) in hostile(&tt, &tar, &opts(mode, false)) {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("whiteout"), "{e}");
        }
    }
    c.untouched();
}

#[test]
fn overlay_xattrs_from_a_layer_are_dropped() {
    let t = TempDir::new().unwrap();
    let mut d = dir(b"d", 0o755);
    d.0.xattrs = vec![(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())];
    // The writer already drops these; a foreign layer may not, so feed the entry directly.
    let rep = unpack(
        &mut VecTree::new(vec![d]),
        t.path(),
        &opts(WhiteoutMode::Overlay, false),
    )
    .unwrap();
    assert!(lgetxattr(&t.path().join("d"), "trusted.overlay.opaque").is_none());
    assert!(
        rep.skipped
            .iter()
            .any(|l| l.contains("trusted.overlay.opaque")),
        "{:?}",
        rep.skipped
    );
}

#[test]
fn damaged_layers_give_errors_fast() {
    let blob = layer(everything(), false);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for cut in [10, blob.len() / 3, blob.len() / 2, blob.len() - 9] {
        cases.push(blob[..cut].to_vec());
    }
    for at in [20, blob.len() / 4, blob.len() / 2, blob.len() - 6] {
        let mut b = blob.clone();
        b[at] ^= 0x55;
        cases.push(b);
    }
    for (i, b) in cases.iter().enumerate() {
        let t = TempDir::new().unwrap();
        let start = Instant::now();
        let r = LayerReader::new(Cursor::new(b.clone()))
            .map_err(|e| e.to_string())
            .and_then(|mut r| {
                unpack(&mut r, t.path(), &opts(WhiteoutMode::Apply, false))
                    .map_err(|e| e.to_string())
            });
        let e = r.expect_err(&format!("damaged case {i} unpacked"));
        assert!(!e.contains('\n'), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

// ---- rootless: a child process that drops to uid/gid 65534 ----

const NOBODY: u32 = 65534;

/// Runs `f` in a forked child with real, effective and saved ids 65534 and no groups; returns
/// whether it exited 0. The child only unpacks and exits; `_exit` skips the test harness.
fn as_nobody(f: impl FnOnce() -> bool) -> bool {
    let _serial = FORK_VS_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the child runs only `f` and `_exit`s; the parent waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain syscalls in the child, before it does anything else.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
        };
        let code =
            if ok && std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false) {
                0
            } else {
                1
            };
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is writable.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn rootless_unpack_degrades_visibly() {
    let t = TempDir::new().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dest = t.path().join("root");
    fs::create_dir(&dest).unwrap();
    std::os::unix::fs::chown(&dest, Some(NOBODY), Some(NOBODY)).unwrap();
    let c = Canary::new(&t);
    let blob = layer(everything(), false);
    let report = t.path().join("report");
    fs::write(&report, b"").unwrap();
    std::os::unix::fs::chown(&report, Some(NOBODY), Some(NOBODY)).unwrap();
    let ok = as_nobody(|| {
        let r = unpack_blob(&blob, &dest, &opts(WhiteoutMode::Apply, true));
        let text = match &r {
            Ok(rep) => rep.skipped.join("\n"),
            Err(e) => format!("ERROR {e}"),
        };
        fs::write(&report, text).is_ok() && r.is_ok()
    });
    let text = fs::read_to_string(&report).unwrap();
    assert!(ok, "rootless unpack failed: {text}");
    assert!(
        text.contains("dev_null: device node not created (rootless)"),
        "{text}"
    );
    assert!(
        text.contains("dev_loop: device node not created (rootless)"),
        "{text}"
    );
    assert!(
        text.contains("ownership:") && text.contains("uid 65534"),
        "{text}"
    );
    assert!(text.contains("trusted.* or security.*"), "{text}");
    assert!(!dest.join("dev_null").exists());
    assert!(fs::symlink_metadata(dest.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let owned = fs::symlink_metadata(dest.join("d/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (NOBODY, NOBODY));
    assert_eq!(
        fs::symlink_metadata(dest.join("d/ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(fs::read(dest.join("d/ro/inside")).unwrap(), b"x");
    assert_eq!(
        lgetxattr(&dest.join("ping"), "user.note").unwrap(),
        b"hello"
    );
    assert!(lgetxattr(&dest.join("ping"), "security.capability").is_none());
    c.untouched();
}

#[test]
fn rootless_overlay_whiteouts_work_under_userxattr() {
    let t = TempDir::new().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (lower, upper) = whiteout_layers();
    let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
    for l in [&l1, &l2] {
        fs::create_dir(l).unwrap();
        std::os::unix::fs::chown(l, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let ok = as_nobody(|| {
        let o = opts(WhiteoutMode::Overlay, true);
        unpack_blob(&lower, &l1, &o).is_ok() && unpack_blob(&upper, &l2, &o).is_ok()
    });
    assert!(ok, "rootless unpack failed");
    // Linux lets anyone mknod a 0/0 whiteout since 5.8; older kernels get an xattr whiteout.
    let wh = l2.join("a/gone");
    let m = fs::symlink_metadata(&wh).unwrap();
    assert!(
        (m.file_type().is_char_device() && m.rdev() == 0)
            || (m.is_file() && lgetxattr(&wh, "user.overlay.whiteout").is_some())
    );
    assert_eq!(
        lgetxattr(&l2.join("o"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    with_overlay(&[&l2, &l1], ",userxattr", &t.path().join("m"), || {
        check_merged(&t.path().join("m"))
    });
}

// ---- the cache ----

fn store_with(t: &TempDir, blob: &[u8]) -> (Store, String) {
    let store = Store::open(&t.path().join("store")).unwrap();
    let info = store.put_blob(blob).unwrap();
    (store, info.digest)
}

#[test]
fn cache_unpacks_once_and_concurrent_callers_share() {
    let t = TempDir::new().unwrap();
    let (store, digest) = store_with(&t, &layer(everything(), false));
    let cache = LayerCache::open(&store).unwrap();
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cache.ensure(&store, &digest, false).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    let p = &paths[0];
    assert_eq!(p, &store.root().join(".decant/layers").join(&digest[7..]));
    assert_eq!(fs::read(p.join("hard")).unwrap(), b"two names");
    let ino = fs::metadata(p.join("hard")).unwrap().ino();
    assert_eq!(cache.ensure(&store, &digest, false).unwrap(), *p);
    assert_eq!(
        fs::metadata(p.join("hard")).unwrap().ino(),
        ino,
        "not unpacked again"
    );
    assert!(cache.skipped(&digest, false).unwrap().is_empty());
    let leftovers: Vec<_> = fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn cache_redoes_a_crashed_unpack() {
    let t = TempDir::new().unwrap();
    let (store, digest) = store_with(&t, &layer(everything(), false));
    let cache = LayerCache::open(&store).unwrap();
    let tmp = cache.dir().join(format!(".tmp-{}", &digest[7..]));
    fs::create_dir_all(tmp.join("half/way")).unwrap();
    fs::write(tmp.join("half/way/file"), b"junk").unwrap();
    fs::set_permissions(tmp.join("half"), fs::Permissions::from_mode(0o500)).unwrap();
    let p = cache.ensure(&store, &digest, false).unwrap();
    assert!(!tmp.exists());
    assert!(!p.join("half").exists());
    assert_eq!(fs::read(p.join("d/owned")).unwrap(), b"owned by someone");
}

#[test]
fn cache_refuses_a_corrupt_blob_and_keeps_nothing() {
    let t = TempDir::new().unwrap();
    let blob = layer(everything(), false);
    let (store, digest) = store_with(&t, &blob);
    let cache = LayerCache::open(&store).unwrap();
    // Same length, one byte of the gzip trailer changed: the tar still reads, the digest does not
    // match (or the gzip CRC catches it first).
    let path = store.blob_path(&digest).unwrap();
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, &bad).unwrap();
    let e = cache.ensure(&store, &digest, false).unwrap_err();
    assert!(
        matches!(
            e,
            CacheError::DigestMismatch { .. } | CacheError::Unpack { .. } | CacheError::Blob { .. }
        ),
        "{e}"
    );
    assert!(!cache.path(&digest, false).unwrap().exists());
    assert!(fs::read_dir(cache.dir()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".tmp-")));
    assert!(cache.ensure(&store, "sha256:nothex", false).is_err());
    let missing = format!("sha256:{}", "0".repeat(64));
    let e = cache.ensure(&store, &missing, false).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn cache_remove_unused_keeps_what_is_asked() {
    let t = TempDir::new().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let a = store.put_blob(&layer(everything(), false)).unwrap().digest;
    let b = store
        .put_blob(&layer(vec![file(b"only", 0o644, b"b")], false))
        .unwrap()
        .digest;
    let cache = LayerCache::open(&store).unwrap();
    let pa = cache.ensure(&store, &a, false).unwrap();
    let pb = cache.ensure(&store, &b, false).unwrap();
    let keep: HashSet<String> = [a.clone()].into_iter().collect();
    let freed = cache.remove_unused(&keep).unwrap();
    assert!(freed > 0);
    assert!(pa.is_dir() && !pb.exists());
    let names: Vec<String> = fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(&b[7..])), "{names:?}");
    assert!(cache.remove_unused(&HashSet::new()).unwrap() > 0);
    assert!(!pa.exists());
    // Unpacked again on demand.
    assert!(cache
        .ensure(&store, &a, false)
        .unwrap()
        .join("hard")
        .is_file());
}

//! Tarball import against archives made at test time by GNU tar, python3's tarfile and the
//! compression CLIs, plus damaged copies of them.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use import::fs::FileLookup;
use import::tarball::TarballTree;
use snapshot::{Entry, EntryKind, FileTree};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn collect(tree: &mut dyn FileTree) -> Vec<(Entry, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(e) = tree.next_entry().unwrap() {
        let mut data = Vec::new();
        tree.content().read_to_end(&mut data).unwrap();
        assert_eq!(data.len() as u64, e.size, "{}", e.display_path());
        out.push((e, data));
    }
    out
}

fn find<'a>(all: &'a [(Entry, Vec<u8>)], path: &str) -> &'a (Entry, Vec<u8>) {
    all.iter()
        .find(|(e, _)| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing; have {:?}", paths(all)))
}

fn paths(all: &[(Entry, Vec<u8>)]) -> Vec<String> {
    all.iter()
        .map(|(e, _)| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

fn open(path: &Path, spool: &Path) -> TarballTree {
    TarballTree::open(path, spool).unwrap_or_else(|e| panic!("{e}"))
}

/// A small root: dirs, files, a setuid file, a symlink, a hardlink, a fifo, a char device, an
/// xattr and a file capability.
fn make_root(dir: &Path) {
    let r = dir.join("root");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("dev")).unwrap();
    std::fs::write(r.join("etc/hostname"), b"guest\n").unwrap();
    std::fs::write(r.join("usr/bin/tool"), vec![7u8; 70_000]).unwrap();
    std::fs::set_permissions(
        r.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/alias")).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    run(Command::new("mkfifo").arg(r.join("dev/pipe")));
    run(Command::new("mknod")
        .arg(r.join("dev/null"))
        .args(["c", "1", "3"]));
    run(Command::new("setfattr")
        .args(["-n", "user.note", "-v", "hello"])
        .arg(r.join("etc/hostname")));
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(r.join("usr/bin/tool")));
}

fn gnu_tar(dir: &Path, out: &Path, extra: &[&str]) {
    let xattrs: &[&str] = if extra.contains(&"--format=gnu") {
        &[]
    } else {
        &["--xattrs", "--xattrs-include=*"]
    };
    run(Command::new("tar")
        .args(xattrs)
        .args(["--numeric-owner", "-C"])
        .arg(dir.join("root"))
        .args(extra)
        .arg("-cf")
        .arg(out)
        .arg("."));
}

fn check_root(all: &[(Entry, Vec<u8>)]) {
    assert_eq!(
        paths(all),
        [
            "bin",
            "dev",
            "dev/null",
            "dev/pipe",
            "etc",
            "etc/hostname",
            "usr",
            "usr/bin",
            "usr/bin/alias",
            "usr/bin/tool"
        ]
    );
    let (host, data) = find(all, "etc/hostname");
    assert_eq!(data, b"guest\n");
    assert!(host
        .xattrs
        .iter()
        .any(|(k, v)| k == b"user.note" && v == b"hello"));
    let (alias, data) = find(all, "usr/bin/alias");
    // The first name in path order carries the data, whatever order the archive had.
    assert_eq!(alias.kind, EntryKind::File);
    assert_eq!(data.len(), 70_000);
    assert_eq!(alias.mode, 0o4755);
    assert!(alias
        .xattrs
        .iter()
        .any(|(k, _)| k == b"security.capability"));
    let (tool, _) = find(all, "usr/bin/tool");
    assert_eq!(tool.kind, EntryKind::Hardlink);
    assert_eq!(tool.link_target.as_deref(), Some(&b"usr/bin/alias"[..]));
    let (bin, _) = find(all, "bin");
    assert_eq!(bin.kind, EntryKind::Symlink);
    assert_eq!(bin.link_target.as_deref(), Some(&b"usr/bin"[..]));
    let (null, _) = find(all, "dev/null");
    assert_eq!(null.kind, EntryKind::CharDevice);
    assert_eq!(null.device, Some((1, 3)));
    assert_eq!(find(all, "dev/pipe").0.kind, EntryKind::Fifo);
}

#[test]
fn gnu_tar_plain_and_every_compression() {
    let t = tempfile::tempdir().unwrap();
    make_root(t.path());
    let tar = t.path().join("root.tar");
    gnu_tar(t.path(), &tar, &["--format=posix"]);
    let tree = &mut open(&tar, t.path());
    check_root(&collect(tree));
    assert!(tree.warnings().is_empty(), "{:?}", tree.warnings());

    for (tool, args) in [
        ("gzip", &["-c"][..]),
        ("zstd", &["-q", "-c"][..]),
        ("xz", &["-c"][..]),
        ("bzip2", &["-c"][..]),
    ] {
        // A misleading file name: detection must go by magic bytes.
        let out = t.path().join(format!("archive-{tool}.tar"));
        let f = std::fs::File::create(&out).unwrap();
        let st = Command::new(tool)
            .args(args)
            .arg(&tar)
            .stdout(f)
            .status()
            .unwrap_or_else(|e| panic!("{tool} is not installed: {e}"));
        assert!(st.success());
        let spool = t.path().join(format!("spool-{tool}"));
        std::fs::create_dir(&spool).unwrap();
        let mut tree = open(&out, &spool);
        check_root(&collect(&mut tree));
        // The spool file is unlinked from the start.
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    }
    // Also the GNU format (no pax headers: xattrs are lost there, so check the rest).
    let gnu = t.path().join("gnu.tar");
    gnu_tar(t.path(), &gnu, &["--format=gnu"]);
    let all = collect(&mut open(&gnu, t.path()));
    assert_eq!(find(&all, "usr/bin/alias").1.len(), 70_000);
}

#[test]
fn lookup_by_path() {
    let t = tempfile::tempdir().unwrap();
    make_root(t.path());
    let tar = t.path().join("root.tar.gz");
    gnu_tar(t.path(), &tar, &["-z"]);
    let tree = open(&tar, t.path());
    assert_eq!(
        tree.read_file(b"/etc/hostname", 100).unwrap(),
        b"guest\n".to_vec()
    );
    assert_eq!(
        tree.read_file(b"/etc/hostname", 3).unwrap(),
        b"gue".to_vec()
    );
    // Through the hardlink name too.
    assert_eq!(tree.read_file(b"/usr/bin/tool", 4).unwrap(), vec![7u8; 4]);
    assert!(tree.read_file(b"/bin", 4).is_err());
    assert!(tree.read_file(b"/nope", 4).is_err());
    assert_eq!(
        tree.stat(b"/bin").unwrap().unwrap().kind,
        EntryKind::Symlink
    );
    assert!(tree.stat(b"/etc/nope").unwrap().is_none());
    assert_eq!(tree.stat(b"/").unwrap().unwrap().kind, EntryKind::Dir);
    assert_eq!(
        tree.read_dir(b"/").unwrap(),
        vec![
            b"bin".to_vec(),
            b"dev".to_vec(),
            b"etc".to_vec(),
            b"usr".to_vec()
        ]
    );
    assert_eq!(
        tree.read_dir(b"/usr/bin").unwrap(),
        vec![b"alias".to_vec(), b"tool".to_vec()]
    );
    assert!(tree.read_dir(b"/etc/hostname").is_err());
}

/// Runs a python3 tarfile script with `out` as its first argument.
fn python_tar(out: &Path, script: &str) {
    run(Command::new("python3").arg("-c").arg(script).arg(out));
}

const PY_PRELUDE: &str = r#"
import sys, tarfile, io
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def f(name, data=b"", **kw):
    i = tarfile.TarInfo(name); i.size = len(data)
    for k, v in kw.items(): setattr(i, k, v)
    t.addfile(i, io.BytesIO(data))
def d(name, **kw):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755
    for k, v in kw.items(): setattr(i, k, v)
    t.addfile(i)
def l(name, target, kind=tarfile.SYMTYPE):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target
    t.addfile(i)
"#;

/// Opens an archive that must be refused as a whole; returns the one-line message.
#[track_caller]
fn refused(path: &Path, spool: &Path) -> String {
    match TarballTree::open(path, spool) {
        Ok(t) => panic!(
            "{} was accepted ({} entries, warnings {:?})",
            path.display(),
            t.len(),
            t.warnings()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg:?}");
            assert!(
                msg.starts_with(&path.display().to_string()),
                "names the archive: {msg}"
            );
            msg
        }
    }
}

#[test]
fn hostile_paths_are_normalised_or_refused() {
    let t = tempfile::tempdir().unwrap();
    // What a tar of a system may hold: benign spellings are silent, single odd entries are
    // left out and said.
    let tar = t.path().join("odd.tar");
    python_tar(
        &tar,
        &format!(
            "{PY_PRELUDE}
f('./dot/file', b'dot')
f('dbl//slash', b's')
d('trailing/')
f('./x/./y/../z', b'z')
l('link', '/etc')
l('rel', '../../../usr/bin')
f('plain', b'p')
f('plain/under', b'u')
l('hl-missing', 'nowhere', tarfile.LNKTYPE)
l('hl-to-symlink', 'link', tarfile.LNKTYPE)
f('.wh.gone')
d('dir/.wh..wh..opq')
f('deep/a/b/c', b'c', mtime=1234)
f('dup', b'first')
f('dup', b'second')
d('./')
t.close()
"
        ),
    );
    let tree = &mut open(&tar, t.path());
    let all = collect(tree);
    assert_eq!(
        paths(&all),
        [
            "dbl",
            "dbl/slash",
            "deep",
            "deep/a",
            "deep/a/b",
            "deep/a/b/c",
            "dot",
            "dot/file",
            "dup",
            "link",
            "plain",
            "rel",
            "trailing",
            "x",
            "x/z"
        ]
    );
    assert_eq!(find(&all, "dup").1, b"second");
    assert_eq!(find(&all, "x/z").1, b"z");
    assert_eq!(find(&all, "dot/file").1, b"dot");
    // Symlink targets are data: an absolute or climbing target is kept as it is.
    assert_eq!(
        find(&all, "link").0.link_target.as_deref(),
        Some(&b"/etc"[..])
    );
    assert_eq!(
        find(&all, "rel").0.link_target.as_deref(),
        Some(&b"../../../usr/bin"[..])
    );
    let made_up = &find(&all, "deep/a").0;
    assert_eq!((made_up.kind, made_up.mode), (EntryKind::Dir, 0o755));
    assert_eq!(made_up.mtime.secs, 1234);
    let w = tree.warnings().join("\n");
    for needle in [
        "normalised \"./x/./y/../z\"",
        "refused /plain/under: its parent /plain is not a directory",
        "refused hard link \"hl-missing\"",
        "refused hard link \"hl-to-symlink\"",
        "refused \".wh.gone\"",
        "refused \"dir/.wh..wh..opq/\"",
    ] {
        assert!(w.contains(needle), "no {needle:?} in:\n{w}");
    }
    for silent in ["dot", "dbl", "trailing"] {
        assert!(
            !w.contains(silent),
            "{silent} is benign, said nothing:\n{w}"
        );
    }
    assert_eq!(tree.warnings().len(), 6, "{w}");

    // What only a crafted archive holds: the whole archive is refused, naming the entry.
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "abs",
            "f('etc/ok', b'ok')\nf('/abs/file', b'abs')",
            "\"/abs/file\"",
            "absolute name",
        ),
        (
            "dotdot",
            "f('../../escape', b'x')",
            "\"../../escape\"",
            "climbs above the root",
        ),
        (
            "inner-dotdot",
            "d('a')\nf('a/../../escape2', b'x')",
            "\"a/../../escape2\"",
            "climbs above the root",
        ),
        (
            "through-symlink",
            "l('link', '/etc')\nf('link/passwd', b'owned')",
            "\"link/passwd\"",
            "below /link, a symlink in the archive",
        ),
        (
            "symlink-after",
            "d('link')\nf('link/passwd', b'owned')\nl('link', '/etc')",
            "\"link/passwd\"",
            "below /link, a symlink",
        ),
        (
            "dotdot-into-symlink",
            "l('link', '/etc')\nf('x/../link/shadow', b'owned')",
            "\"link/shadow\"",
            "below /link, a symlink",
        ),
        (
            "hl-escape",
            "l('hl', '../../etc/shadow', tarfile.LNKTYPE)",
            "\"hl\"",
            "hard link to \"../../etc/shadow\": '..' climbs above the root",
        ),
        (
            "hl-abs",
            "f('etc/shadow', b's')\nl('hl', '/etc/shadow', tarfile.LNKTYPE)",
            "\"hl\"",
            "hard link to an absolute name",
        ),
    ];
    for (name, body, entry, problem) in cases {
        let tar = t.path().join(format!("{name}.tar"));
        python_tar(&tar, &format!("{PY_PRELUDE}\n{body}\nt.close()\n"));
        let msg = refused(&tar, t.path());
        assert!(
            msg.contains(&format!("entry {entry}")) && msg.contains(problem),
            "{name}: names the entry {entry} and says {problem:?}: {msg}"
        );
        assert!(msg.ends_with("refusing the archive"), "{name}: {msg}");
    }
}

#[test]
fn hardlink_groups_survive_overwrites() {
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("links.tar");
    python_tar(
        &tar,
        &format!(
            "{PY_PRELUDE}
f('z/orig', b'data', mode=0o600, uid=5)
l('a/link1', 'z/orig', tarfile.LNKTYPE)
l('m/link2', 'a/link1', tarfile.LNKTYPE)
f('z/orig', b'replaced')
t.close()
"
        ),
    );
    let all = collect(&mut open(&tar, t.path()));
    // z/orig was replaced by a new file; the two links still share the first one's inode.
    let (l1, d1) = find(&all, "a/link1");
    assert_eq!((l1.kind, l1.mode, l1.uid), (EntryKind::File, 0o600, 5));
    assert_eq!(d1, b"data");
    let (l2, _) = find(&all, "m/link2");
    assert_eq!(l2.kind, EntryKind::Hardlink);
    assert_eq!(l2.link_target.as_deref(), Some(&b"a/link1"[..]));
    let (o, d) = find(&all, "z/orig");
    assert_eq!((o.kind, &d[..]), (EntryKind::File, &b"replaced"[..]));
}

#[test]
fn pax_attributes() {
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("pax.tar");
    let long = "d/".repeat(150) + "file";
    python_tar(
        &tar,
        &format!(
            "{PY_PRELUDE}
f('{long}', b'long', mtime=1700000000.25, uid=3000000000, gid=7,
  pax_headers={{'SCHILY.xattr.user.k': 'v', 'LIBARCHIVE.xattr.user.b64': 'aGk=', 'SCHILY.xattr.user.both': 'schily', 'LIBARCHIVE.xattr.user.both': 'bGli'}})
l('sym', 'x' * 300)
t.close()
"
        ),
    );
    let all = collect(&mut open(&tar, t.path()));
    let (e, data) = find(&all, &long);
    assert_eq!(data, b"long");
    assert_eq!((e.uid, e.gid), (3_000_000_000, 7));
    assert_eq!((e.mtime.secs, e.mtime.nanos), (1_700_000_000, 250_000_000));
    assert_eq!(
        e.xattrs,
        vec![
            (b"user.b64".to_vec(), b"hi".to_vec()),
            (b"user.both".to_vec(), b"schily".to_vec()),
            (b"user.k".to_vec(), b"v".to_vec()),
        ]
    );
    assert_eq!(find(&all, "sym").0.link_target, Some(vec![b'x'; 300]));
}

#[test]
fn gnu_tar_absolute_names_transform_and_sparse() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // A sparse file: 20 MiB with 5 bytes of data in the middle.
    let sparse = src.join("lastlog");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(20 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"hello", 10 << 20).unwrap();
    drop(f);
    std::fs::write(src.join("plain"), b"p").unwrap();

    // A sparse GNU tar is served without expanding its holes.
    let sp = t.path().join("sparse.tar");
    run(Command::new("tar")
        .args(["--format=gnu", "-S", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&sp)
        .args(["lastlog", "plain"]));
    let tree = &mut open(&sp, t.path());
    let all = collect(tree);
    let (e, data) = find(&all, "lastlog");
    assert_eq!(e.size, 20 << 20);
    assert!(e.allocated.unwrap() < 1 << 20, "{:?}", e.allocated);
    assert_eq!(&data[10 << 20..(10 << 20) + 5], b"hello");
    assert!(data[..10 << 20].iter().all(|&b| b == 0));
    assert!(tree.warnings().is_empty(), "{:?}", tree.warnings());

    // -P keeps the leading '/': the archive is refused, naming the first absolute entry.
    let abs = t.path().join("abs.tar");
    run(Command::new("tar")
        .args(["-P", "--format=gnu", "-S", "-cf"])
        .arg(&abs)
        .arg(&sparse)
        .arg(src.join("plain")));
    let msg = refused(&abs, t.path());
    assert!(
        msg.contains(&format!("{:?}", sparse.display().to_string())) && msg.contains("absolute"),
        "{msg}"
    );

    // --transform can plant '..' components: one climbing above the root refuses the archive.
    let tr = t.path().join("transform.tar");
    run(Command::new("tar")
        .args([
            "--transform",
            "s,^,../,",
            "--transform",
            "s,^../plain,a/../plain,",
            "-C",
        ])
        .arg(&src)
        .arg("-cf")
        .arg(&tr)
        .args(["lastlog", "plain"]));
    let msg = refused(&tr, t.path());
    assert!(
        msg.contains("\"../lastlog\"") && msg.contains("climbs above the root"),
        "{msg}"
    );
    // ... while a '..' that stays inside it is resolved and said.
    let inside = t.path().join("inside.tar");
    run(Command::new("tar")
        .args(["--transform", "s,^plain,a/../plain,", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&inside)
        .arg("plain"));
    let tree = &mut open(&inside, t.path());
    assert_eq!(paths(&collect(tree)), ["plain"]);
    assert!(
        tree.warnings().iter().any(|w| w.contains("a/../plain")),
        "{:?}",
        tree.warnings()
    );

    // pax-format sparse files are refused, clearly.
    let pax = t.path().join("paxsparse.tar");
    run(Command::new("tar")
        .args(["--format=pax", "-S", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&pax)
        .args(["lastlog", "plain"]));
    let tree = &mut open(&pax, t.path());
    let all = collect(tree);
    assert_eq!(paths(&all), ["plain"]);
    assert!(
        tree.warnings().iter().any(|w| w.contains("sparse")),
        "{:?}",
        tree.warnings()
    );
}

fn small_tar(dir: &Path) -> PathBuf {
    let tar = dir.join("small.tar");
    python_tar(
        &tar,
        &format!(
            "{PY_PRELUDE}
d('etc')
f('etc/a', b'A' * 1000, pax_headers={{'SCHILY.xattr.user.x': 'y'}})
l('etc/b', 'a')
f('etc/c', b'C' * 3000)
t.close()
"
        ),
    );
    tar
}

#[test]
fn truncated_and_empty_archives_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let tar = small_tar(t.path());
    let bytes = std::fs::read(&tar).unwrap();
    // Find where the end-of-archive marker starts: the last non-zero byte, rounded up.
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    let end_marker = (last / 512 + 1) * 512;
    for cut in [
        0,
        100,
        512,
        700,
        1024,
        1500,
        2048,
        end_marker - 10,
        end_marker,
    ] {
        let p = t.path().join(format!("cut{cut}.tar"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = TarballTree::open(&p, t.path()).expect_err(&format!("cut at {cut}"));
        let msg = err.to_string();
        assert!(msg.contains(p.to_str().unwrap()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        if cut > 0 {
            assert!(msg.contains("offset"), "{msg}");
        } else {
            assert!(msg.contains("empty"), "{msg}");
        }
        // The same through gzip.
        let gz = t.path().join(format!("cut{cut}.tar.gz"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes[..cut]).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert!(TarballTree::open(&gz, t.path()).is_err(), "gz cut at {cut}");
    }
    // A truncated compressed stream.
    let gz = t.path().join("whole.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&bytes).unwrap();
    let z = enc.finish().unwrap();
    std::fs::write(&gz, &z[..z.len() / 2]).unwrap();
    let msg = TarballTree::open(&gz, t.path()).unwrap_err().to_string();
    assert!(msg.contains("gzip"), "{msg}");
}

#[test]
fn damaged_copies_never_panic() {
    let t = tempfile::tempdir().unwrap();
    let tar = small_tar(t.path());
    let bytes = std::fs::read(&tar).unwrap();
    let start = Instant::now();
    let p = t.path().join("bad.tar");
    // A flipped checksum byte is a named error.
    let mut bad = bytes.clone();
    bad[150] ^= 0x01;
    std::fs::write(&p, &bad).unwrap();
    let msg = TarballTree::open(&p, t.path()).unwrap_err().to_string();
    assert!(
        msg.contains("checksum") && msg.contains("offset 0"),
        "{msg}"
    );
    // Every byte of every header and pax record, damaged in a few ways: error or a tree, and
    // reading the tree to the end never panics.
    // One file damaged in place (rewriting whole copies is what would make this slow).
    std::fs::write(&p, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    for i in (0..bytes.len().min(4608)).step_by(5) {
        for v in [0x00u8, 0xff, b'/', b'7'] {
            f.write_all_at(&[v], i as u64).unwrap();
            if let Ok(mut tree) = TarballTree::open(&p, t.path()) {
                while let Ok(Some(_)) = tree.next_entry() {
                    let mut sink = Vec::new();
                    let _ = tree.content().read_to_end(&mut sink);
                }
            }
        }
        f.write_all_at(&bytes[i..i + 1], i as u64).unwrap();
    }
    // A size field past the end of the archive.
    let mut bad = bytes.clone();
    let hdr = bytes
        .windows(5)
        .position(|w| w == b"etc/c")
        .expect("header of etc/c");
    bad[hdr + 124..hdr + 135].copy_from_slice(b"77777777777");
    // Fix the checksum so the size is what fails.
    let sum: u32 = bad[hdr..hdr + 512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    bad[hdr + 148..hdr + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    std::fs::write(&p, &bad).unwrap();
    let msg = TarballTree::open(&p, t.path()).unwrap_err().to_string();
    assert!(
        msg.contains("past the end") && msg.contains("etc/c"),
        "{msg}"
    );
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

#[test]
fn oversized_pax_header_is_refused_before_reading() {
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("bigpax.tar");
    python_tar(
        &tar,
        &format!(
            "{PY_PRELUDE}
f('x', b'1', pax_headers={{'comment': 'c' * (2 << 20)}})
t.close()
"
        ),
    );
    let msg = TarballTree::open(&tar, t.path()).unwrap_err().to_string();
    assert!(msg.contains("pax header") && msg.contains("limit"), "{msg}");
}

#[test]
fn fifo_input_is_spooled() {
    let t = tempfile::tempdir().unwrap();
    let tar = small_tar(t.path());
    let fifo = t.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let bytes = std::fs::read(&tar).unwrap();
    let fifo2 = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(&bytes).unwrap();
        std::fs::write(&fifo2, enc.finish().unwrap()).unwrap();
    });
    let all = collect(&mut open(&fifo, t.path()));
    writer.join().unwrap();
    assert_eq!(paths(&all), ["etc", "etc/a", "etc/b", "etc/c"]);
    assert_eq!(find(&all, "etc/c").1, vec![b'C'; 3000]);
}

/// Reads a tarball from this process's stdin when started by `stdin_pipe` (and does nothing in
/// a normal test run, where stdin is not ours).
#[test]
fn stdin_child() {
    if std::env::var_os("DECANT_TAR_STDIN_CHILD").is_none() {
        return;
    }
    let spool = std::env::var_os("DECANT_TAR_SPOOL").unwrap();
    let mut tree = open(Path::new("-"), Path::new(&spool));
    let all = collect(&mut tree);
    assert_eq!(paths(&all), ["etc", "etc/a", "etc/b", "etc/c"]);
    assert_eq!(find(&all, "etc/a").1, vec![b'A'; 1000]);
}

#[test]
fn stdin_pipe() {
    let t = tempfile::tempdir().unwrap();
    let tar = small_tar(t.path());
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(&tar)
        .output()
        .expect("gzip is not installed")
        .stdout;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdin_child", "--test-threads=1"])
        .env("DECANT_TAR_STDIN_CHILD", "1")
        .env("DECANT_TAR_SPOOL", t.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

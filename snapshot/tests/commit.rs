//! The upper-dir conversion of `commit` on a real overlay mount made at test time: every kind
//! of change (create, modify, delete, chmod, dir→file, file→dir, opaque dir, hardlink, xattrs,
//! a file capability, fifo, device) made through the mount, then the diff layer applied onto a
//! copy of the lower dir must give exactly the tree the mount showed; `export` of the merged
//! view likewise; `diff` lines exact; exclusions left out; overlay's own xattrs never in the
//! layer; a hostile upper dir (a `.wh.` name) is an error, not a panic.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use snapshot::commit::{diff, export, Source};
use snapshot::layer::unpack::{unpack, UnpackOptions, WhiteoutMode};
use snapshot::layer::{write_tree, Compression, LayerOptions, LayerReader};
use snapshot::{EntryKind, FileTree};
use tempfile::TempDir;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[track_caller]
fn sh(dir: &Path, script: &str) {
    let o = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An overlay mount, unmounted on drop (also when the test fails).
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Overlay {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let o = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(merged)
            .output()
            .expect("mount (package mount) could not run");
        assert!(
            o.status.success(),
            "mount overlay: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Overlay {
            merged: merged.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.merged)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
    }
}

/// Each path's kind, mode, owner, mtime (not for directories: applying a layer touches them
/// and the unpacker restores only what the layer names), content hash, link target, device,
/// link count and the xattrs a layer carries.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = md.file_type();
            let detail = if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                let h: String = Sha256::digest(&data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("file {h} links={}", md.nlink())
            } else if ft.is_symlink() {
                format!("symlink {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_fifo() {
                "fifo".to_string()
            } else if ft.is_char_device() {
                format!("char {}", md.rdev())
            } else {
                "other".to_string()
            };
            let mtime = if ft.is_dir() { 0 } else { md.mtime() };
            let x = Command::new("getfattr")
                .args([
                    "-h",
                    "-d",
                    "-m",
                    "^(user|security\\.capability)",
                    "-e",
                    "hex",
                ])
                .arg(&p)
                .output()
                .expect("getfattr (package attr)");
            let xattrs: Vec<String> = String::from_utf8_lossy(&x.stdout)
                .lines()
                .filter(|l| l.contains('='))
                .map(str::to_string)
                .collect();
            out.insert(
                rel,
                format!(
                    "{detail} mode={:o} {}:{} mtime={mtime} xattrs={xattrs:?}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid()
                ),
            );
        }
    }
    out
}

struct Fixture {
    _t: TempDir,
    lower: PathBuf,
    upper: PathBuf,
    /// The merged view as the mount showed it after the changes.
    merged_tree: BTreeMap<String, String>,
    /// A plain copy of the merged view (`cp -a`): a root without an upper dir.
    copy: PathBuf,
}

/// A lower dir, an overlay over it, every kind of change made through the mount.
fn fixture() -> Fixture {
    let t = TempDir::new().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let p = t.path().join(d);
        std::fs::create_dir(&p).unwrap();
        p
    });
    sh(
        &lower,
        "echo keep > keep; echo old > modify; echo x > rmme; echo c > chm; chmod 644 chm
         mkdir -p d/sub dir2f f2dirparent; echo 1 > d/x; echo 2 > d/sub/y; echo 3 > dir2f/inner
         echo f > f2dir; ln -s keep link; mkdir -p deep/er; echo z > deep/er/z
         touch -d 2020-01-01 keep modify rmme chm d/x d/sub/y dir2f/inner f2dir deep/er/z",
    );
    let m = Overlay::mount(&lower, &upper, &work, &merged);
    sh(
        &merged,
        "echo new > modify; echo added > added; rm rmme; chmod 4755 chm
         rm -rf dir2f; echo nowfile > dir2f; rm f2dir; mkdir f2dir; echo in > f2dir/inside
         rm -rf d; mkdir d; echo fresh > d/x
         echo linked > hl1; ln hl1 hl2
         echo xa > xfile; setfattr -n user.note -v hello xfile
         cp /bin/true captrue; setcap cap_net_raw+ep captrue
         mkfifo fifo; mknod nulldev c 1 3
         rm deep/er/z; ln -sf added link
         mkdir -p excluded/below; echo e > excluded/below/f; echo h > hosts",
    );
    let mut merged_tree = tree(&merged);
    let copy = t.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    sh(t.path(), "cp -a merged/. copy/");
    // What commit leaves out, the mount shows.
    merged_tree.retain(|k, _| !k.starts_with("excluded") && k != "hosts");
    drop(m);
    Fixture {
        _t: t,
        lower,
        upper,
        merged_tree,
        copy,
    }
}

fn source(f: &Fixture) -> Source {
    Source {
        upper: f.upper.clone(),
        lowers: vec![f.lower.clone()],
        exclude: vec!["/excluded".into(), "/hosts".into()],
        root: None,
    }
}

fn plain() -> LayerOptions {
    LayerOptions {
        compression: Compression::None,
        threads: 1,
        allow_whiteouts: true,
        ..LayerOptions::default()
    }
}

fn apply(layer: &[u8], dest: &Path) {
    let mut r = LayerReader::new(Cursor::new(layer.to_vec())).unwrap();
    unpack(
        &mut r,
        dest,
        &UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            rootless: false,
            keep_xattrs: true,
        },
    )
    .unwrap();
}

#[test]
fn upper_dir_becomes_a_diff_layer_that_reproduces_the_mount() {
    if !is_root() {
        panic!("this test needs root (overlay mounts, mknod, setcap); CI runs it as root");
    }
    let f = fixture();
    let src = source(&f);
    let mut changes = src.changes().unwrap();
    let (layer, summary) = write_tree(&mut *changes, Vec::new(), plain()).unwrap();
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);

    // What the layer holds: whiteouts, the opaque marker, no overlay xattrs, hardlink entry,
    // nothing unchanged, nothing excluded.
    let mut r = LayerReader::new(Cursor::new(layer.clone())).unwrap();
    let mut names = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut body = Vec::new();
        r.content().read_to_end(&mut body).unwrap();
        assert!(
            !e.xattrs.iter().any(|(n, _)| n.starts_with(b"trusted.overlay.")
                || n.starts_with(b"user.overlay.")),
            "overlay xattr leaked on {}",
            e.display_path()
        );
        names.insert(String::from_utf8(e.path.clone()).unwrap(), e);
    }
    for want in [
        ".wh.rmme",
        "d/.wh..wh..opq",
        "deep/er/.wh.z",
        "dir2f",
        "f2dir/inside",
        "hl2",
        "captrue",
        "fifo",
        "nulldev",
    ] {
        assert!(
            names.contains_key(want),
            "{want} missing: {:?}",
            names.keys()
        );
    }
    assert_eq!(names["hl2"].kind, EntryKind::Hardlink);
    assert_eq!(names["fifo"].kind, EntryKind::Fifo);
    assert_eq!(names["nulldev"].device, Some((1, 3)));
    assert!(names["captrue"]
        .xattrs
        .iter()
        .any(|(n, _)| n == b"security.capability"));
    assert!(names["xfile"]
        .xattrs
        .iter()
        .any(|(n, v)| n == b"user.note" && v == b"hello"));
    for absent in ["keep", "excluded", "excluded/below/f", "hosts", "d/sub"] {
        assert!(
            !names.contains_key(absent),
            "{absent} should not be in the layer"
        );
    }

    // Applied onto a copy of the lower dir, the layer gives what the mount showed.
    let t = TempDir::new().unwrap();
    let base = t.path().join("applied");
    std::fs::create_dir(&base).unwrap();
    let lower_only = Source {
        upper: f.lower.clone(),
        lowers: vec![],
        exclude: vec![],
        root: None,
    };
    let (lower_tar, _) = export(&lower_only, Vec::new()).unwrap();
    apply(&lower_tar, &base);
    apply(&layer, &base);
    let got = tree(&base);
    assert_eq!(got, f.merged_tree);

    // The same layer twice gives the same bytes.
    let (again, _) = write_tree(&mut *src.changes().unwrap(), Vec::new(), plain()).unwrap();
    assert_eq!(again, layer);
}

#[test]
fn export_is_the_merged_view() {
    if !is_root() {
        panic!("this test needs root (overlay mounts, mknod, setcap); CI runs it as root");
    }
    let f = fixture();
    let (tar, summary) = export(&source(&f), Vec::new()).unwrap();
    let mut r = LayerReader::new(Cursor::new(tar.clone())).unwrap();
    while let Some(e) = r.next_entry().unwrap() {
        assert!(
            !e.path.starts_with(b".wh.") && !e.path.windows(5).any(|w| w == b"/.wh."),
            "whiteout in an export: {}",
            e.display_path()
        );
    }
    assert!(summary.entries > 10);
    let t = TempDir::new().unwrap();
    apply(&tar, t.path());
    assert_eq!(tree(t.path()), f.merged_tree);
}

#[test]
fn diff_lists_like_docker() {
    if !is_root() {
        panic!("this test needs root (overlay mounts, mknod, setcap); CI runs it as root");
    }
    let f = fixture();
    let lines: Vec<String> = diff(&source(&f))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let want = [
        "A /added",
        "A /captrue",
        "C /chm",
        "C /d",
        "D /d/sub",
        "C /d/x",
        "C /deep",
        "C /deep/er",
        "D /deep/er/z",
        "C /dir2f",
        "C /f2dir",
        "A /f2dir/inside",
        "A /fifo",
        "A /hl1",
        "A /hl2",
        "C /link",
        "C /modify",
        "A /nulldev",
        "D /rmme",
        "A /xfile",
    ];
    assert_eq!(lines, want);
}

#[test]
fn hostile_upper_dirs_give_errors() {
    let t = TempDir::new().unwrap();
    let upper = t.path().join("upper");
    std::fs::create_dir_all(upper.join("a")).unwrap();
    std::fs::write(upper.join("a/.wh.sneaky"), b"x").unwrap();
    let src = Source {
        upper: upper.clone(),
        lowers: vec![],
        exclude: vec![],
        root: None,
    };
    let e = write_tree(&mut *src.changes().unwrap(), Vec::new(), plain()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(".wh.sneaky") && !msg.contains('\n'), "{msg}");

    // Deeper than the walker follows: an error naming the cap, quickly.
    let t2 = TempDir::new().unwrap();
    let root = t2.path().join("u");
    let mut p = root.clone();
    for _ in 0..(snapshot::commit::walk::MAX_DEPTH + 5) {
        p.push("d");
    }
    std::fs::create_dir_all(&p).unwrap();
    let src = Source {
        upper: root,
        lowers: vec![],
        exclude: vec![],
        root: None,
    };
    let start = std::time::Instant::now();
    let r = write_tree(&mut *src.changes().unwrap(), Vec::new(), plain());
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("deeper than 512"), "{msg}");
    assert!(start.elapsed().as_secs() < 10);
}

#[test]
fn tree_compare_fallback_without_an_upper_dir() {
    if !is_root() {
        panic!("this test needs root (overlay mounts, mknod, setcap); CI runs it as root");
    }
    let f = fixture();
    let src = Source {
        upper: f.upper.join("absent"),
        lowers: vec![f.lower.clone()],
        exclude: vec!["/excluded".into(), "/hosts".into()],
        root: Some(f.copy.clone()),
    };
    let (layer, _) = write_tree(&mut *src.changes().unwrap(), Vec::new(), plain()).unwrap();
    let mut r = LayerReader::new(Cursor::new(layer.clone())).unwrap();
    let mut names = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        names.push(String::from_utf8(e.path.clone()).unwrap());
    }
    assert!(names.contains(&".wh.rmme".to_string()), "{names:?}");
    assert!(
        !names.contains(&"keep".to_string()),
        "unchanged file in the layer"
    );
    assert!(!names.iter().any(|n| n.starts_with("excluded")));

    let t = TempDir::new().unwrap();
    let lower_only = Source {
        upper: f.lower.clone(),
        lowers: vec![],
        exclude: vec![],
        root: None,
    };
    let (lower_tar, _) = export(&lower_only, Vec::new()).unwrap();
    apply(&lower_tar, t.path());
    apply(&layer, t.path());
    assert_eq!(tree(t.path()), f.merged_tree);

    let lines: Vec<String> = diff(&src).unwrap().iter().map(|c| c.to_string()).collect();
    for want in ["D /rmme", "A /added", "C /modify", "D /d/sub", "C /chm"] {
        assert!(lines.contains(&want.to_string()), "{want}: {lines:?}");
    }
    assert!(!lines.iter().any(|l| l.contains("keep")));
}

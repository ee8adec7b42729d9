//! The container policy over an in-memory tree and over a real tarball.

use std::io::{self, Read};
use std::path::Path;
use std::process::Command;

use import::policy::{Policy, PolicyFilter, PolicyOptions};
use import::tarball::TarballTree;
use snapshot::{path_order, Entry, EntryKind, FileTree};

/// A tree from a list of (path, kind, size, allocated); file content is `size` bytes of 'x'.
struct VecTree {
    entries: Vec<Entry>,
    next: usize,
    content: io::Cursor<Vec<u8>>,
}

impl VecTree {
    fn new(spec: &[(&str, EntryKind, u64, Option<u64>)]) -> VecTree {
        let mut entries: Vec<Entry> = spec
            .iter()
            .map(|&(p, kind, size, allocated)| {
                let mut e = Entry::new(p, kind, if kind == EntryKind::Dir { 0o755 } else { 0o644 });
                if kind == EntryKind::File {
                    e.size = size;
                    e.allocated = allocated;
                }
                if kind == EntryKind::Symlink {
                    e.link_target = Some(b"target".to_vec());
                }
                if kind == EntryKind::Hardlink {
                    e.link_target = Some(b"boot/initrd.img-6.1".to_vec());
                }
                e
            })
            .collect();
        entries.sort_by(|a, b| path_order(&a.path, &b.path));
        VecTree {
            entries,
            next: 0,
            content: io::Cursor::new(Vec::new()),
        }
    }
}

impl FileTree for VecTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let e = self.entries.get(self.next).cloned();
        self.next += 1;
        let size = e.as_ref().map(|e| e.size).unwrap_or(0);
        // Huge apparent sizes are served lazily by the test; keep memory small.
        self.content = io::Cursor::new(vec![b'x'; size.min(1 << 20) as usize]);
        Ok(e)
    }
    fn content(&mut self) -> &mut dyn Read {
        &mut self.content
    }
}

use EntryKind::{Dir, File, Hardlink, Symlink};

fn vm_tree() -> VecTree {
    VecTree::new(&[
        ("bin", Symlink, 0, None),
        ("boot", Dir, 0, None),
        ("boot/grub", Dir, 0, None),
        ("boot/grub/grub.cfg", File, 10, None),
        ("boot/vmlinuz-6.1", File, 8000, None),
        ("boot/initrd.img-6.1", File, 30000, None),
        ("boot/config-6.1", File, 200, None),
        ("dev", Dir, 0, None),
        ("dev/null", EntryKind::CharDevice, 0, None),
        ("etc", Dir, 0, None),
        ("etc/systemd", Dir, 0, None),
        ("etc/systemd/system", Dir, 0, None),
        ("etc/systemd/system/dev-sda2.swap", File, 100, None),
        ("hardlink-to-initrd", Hardlink, 0, None),
        ("initrd.img", Symlink, 0, None),
        ("lost+found", Dir, 0, None),
        ("lost+found/#1234", File, 5, None),
        ("proc", Dir, 0, None),
        ("proc/1", Dir, 0, None),
        ("proc/1/status", File, 0, None),
        ("run", Symlink, 0, None),
        ("swapfile", File, 1 << 30, Some(1 << 30)),
        ("tmp", Dir, 0, None),
        ("tmp/x", File, 3, None),
        ("usr", Dir, 0, None),
        ("usr/lib", Dir, 0, None),
        ("usr/lib/modules", Dir, 0, None),
        ("usr/lib/modules/6.1", Dir, 0, None),
        ("usr/lib/modules/6.1/kernel", Dir, 0, None),
        ("usr/lib/modules/6.1/kernel/x.ko", File, 700, None),
        ("var", Dir, 0, None),
        ("var/cache", Dir, 0, None),
        ("var/cache/apt", Dir, 0, None),
        ("var/cache/apt/keep.bin", File, 4, None),
        ("var/cache/apt/pkg.bin", File, 50, None),
        ("var/log", Dir, 0, None),
        ("var/log/big-sparse", File, 1 << 40, Some(4096)),
        ("var/log/big-dense", File, 100 << 20, Some(100 << 20)),
        ("var/log/lastlog", File, 300, None),
        ("var/log/syslog", File, 9, None),
        ("var/run", Symlink, 0, None),
        ("var/tmp", Dir, 0, None),
        ("var/tmp/kept", File, 1, None),
    ])
}

fn run_filter<T: FileTree>(f: &mut PolicyFilter<T>) -> Vec<(String, EntryKind, u64, usize)> {
    let mut out = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    while let Some(e) = f.next_entry().unwrap() {
        if let Some(prev) = &last {
            assert_eq!(path_order(prev, &e.path), std::cmp::Ordering::Less);
        }
        last = Some(e.path.clone());
        let mut data = Vec::new();
        f.content().read_to_end(&mut data).unwrap();
        assert_eq!(
            data.len() as u64,
            e.size.min(1 << 20),
            "{}",
            e.display_path()
        );
        out.push((
            String::from_utf8_lossy(&e.path).into_owned(),
            e.kind,
            e.size,
            data.len(),
        ));
    }
    out
}

fn names(v: &[(String, EntryKind, u64, usize)]) -> Vec<&str> {
    v.iter().map(|x| x.0.as_str()).collect()
}

#[test]
fn default_rules() {
    let mut f = PolicyFilter::new(vm_tree(), Policy::default());
    let out = run_filter(&mut f);
    assert_eq!(
        names(&out),
        [
            "bin",
            "boot",
            "boot/grub",
            "boot/grub/grub.cfg",
            "dev",
            "etc",
            "etc/systemd",
            "etc/systemd/system",
            "etc/systemd/system/dev-sda2.swap",
            "proc",
            "run",
            "tmp",
            "usr",
            "usr/lib",
            "usr/lib/modules",
            "var",
            "var/cache",
            "var/cache/apt",
            "var/cache/apt/keep.bin",
            "var/cache/apt/pkg.bin",
            "var/log",
            "var/log/big-dense",
            "var/log/big-sparse",
            "var/log/lastlog",
            "var/log/syslog",
            "var/run",
            "var/tmp",
            "var/tmp/kept",
        ]
    );
    let sparse = out.iter().find(|x| x.0 == "var/log/big-sparse").unwrap();
    assert_eq!((sparse.2, sparse.3), (0, 0));
    let dense = out.iter().find(|x| x.0 == "var/log/big-dense").unwrap();
    assert_eq!(dense.2, 100 << 20);
    let r = f.report();
    assert_eq!(
        r.truncated,
        vec![
            ("/var/log/big-sparse".to_string(), 1 << 40),
            ("/var/log/lastlog".to_string(), 300)
        ]
    );
    let groups: Vec<(&str, u64, u64)> = r
        .excluded
        .iter()
        .map(|g| (g.rule.as_str(), g.count, g.bytes))
        .collect();
    assert_eq!(
        groups,
        [
            ("/proc/* /sys/*", 2, 0),
            ("/dev/*", 1, 0),
            ("/run/* /var/run/* /tmp/*", 1, 3),
            ("lost+found", 2, 5),
            ("/swapfile /swap.img /*.swap", 1, 1 << 30),
            (
                "/boot/vmlinuz* /boot/vmlinux* /boot/initrd* /boot/initramfs* /boot/System.map* /boot/config-*",
                3,
                38200
            ),
            ("/vmlinuz /vmlinuz.old /initrd.img /initrd.img.old", 1, 0),
            ("/lib/modules/* /usr/lib/modules/*", 3, 700),
            ("", 1, 0),
        ]
    );
    assert!(r.excluded.last().unwrap().reason.contains("hard links"));
    assert_eq!(r.kept, out.len() as u64);
}

#[test]
fn keep_options_and_user_globs() {
    let policy = Policy::new(PolicyOptions {
        keep_boot: true,
        keep_modules: true,
        exclude: vec!["/var/cache/**".into(), "*.cfg".into()],
        include: vec!["/var/cache/apt/keep.bin".into(), "/tmp/**".into()],
        max_sparse_log: 1 << 50,
    })
    .unwrap();
    let mut f = PolicyFilter::new(vm_tree(), policy);
    let out = run_filter(&mut f);
    let n = names(&out);
    for kept in [
        "boot/vmlinuz-6.1",
        "boot/initrd.img-6.1",
        "hardlink-to-initrd",
        "initrd.img",
        "usr/lib/modules/6.1/kernel/x.ko",
        "var/cache",
        // Put back on the way to the included file:
        "var/cache/apt",
        "var/cache/apt/keep.bin",
        "tmp/x",
    ] {
        assert!(n.contains(&kept), "{kept} missing from {n:?}");
    }
    for gone in ["var/cache/apt/pkg.bin", "boot/grub/grub.cfg", "proc/1"] {
        assert!(!n.contains(&gone), "{gone} kept");
    }
    // The huge sparse log is kept whole now (threshold raised).
    assert_eq!(
        out.iter().find(|x| x.0 == "var/log/big-sparse").unwrap().2,
        1 << 40
    );
    let r = f.report();
    let user: Vec<(&str, u64)> = r
        .excluded
        .iter()
        .filter(|g| g.reason.contains("--exclude"))
        .map(|g| (g.rule.as_str(), g.count))
        .collect();
    // var/cache/apt was excluded, then put back: only pkg.bin stays counted.
    assert_eq!(user, [("/var/cache/**", 1), ("*.cfg", 1)]);
    assert_eq!(r.truncated, vec![("/var/log/lastlog".to_string(), 300)]);
}

#[test]
fn bad_globs_are_errors() {
    let e = Policy::new(PolicyOptions {
        exclude: vec!["/x[".into()],
        ..PolicyOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("/x["), "{e}");
}

#[test]
fn over_a_real_tarball() {
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("vm.tar");
    let script = r#"
import sys, tarfile, io
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def f(name, data=b""):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
def l(name, target, kind=tarfile.SYMTYPE):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; t.addfile(i)
f('boot/vmlinuz-6.1', b'k' * 100)
l('boot/vmlinuz', 'vmlinuz-6.1')
l('opt/kernel-copy', 'boot/vmlinuz-6.1', tarfile.LNKTYPE)
f('etc/os-release', b'ID=debian\n')
f('proc/cpuinfo', b'fake')
f('var/log/lastlog', b'\0' * 5000)
t.close()
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&tar)
        .status()
        .expect("python3 is not installed");
    assert!(st.success());
    let tree = TarballTree::open(Path::new(&tar), t.path()).unwrap();
    let mut f = PolicyFilter::new(tree, Policy::default());
    let out = run_filter(&mut f);
    assert_eq!(
        names(&out),
        [
            "boot",
            "etc",
            "etc/os-release",
            "opt",
            "proc",
            "var",
            "var/log",
            "var/log/lastlog"
        ]
    );
    // The tarball made the data carrier `boot/vmlinuz-6.1` (first in path order); it is
    // excluded, so its hard link goes too, and says why.
    let r = f.report();
    assert!(r
        .excluded
        .iter()
        .any(|g| g.reason.contains("hard links") && g.count == 1));
    assert_eq!(r.truncated, vec![("/var/log/lastlog".to_string(), 5000)]);
    assert!(f.into_inner().warnings().is_empty());
}

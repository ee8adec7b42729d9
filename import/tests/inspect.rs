//! Guest inspection: ELF headers of this machine's binaries and hand-made ones, os-release
//! samples, and symlink resolution inside the guest root (over a real tarball and an in-memory
//! lookup).

use std::collections::BTreeMap;
use std::io;
use std::process::Command;

use import::fs::FileLookup;
use import::inspect::{elf_arch, inspect, parse_os_release, resolve_path, OsRelease};
use import::tarball::TarballTree;
use snapshot::{Entry, EntryKind};

/// Files by absolute path: (entry, content).
#[derive(Default)]
struct MemFs {
    files: BTreeMap<Vec<u8>, (Entry, Vec<u8>)>,
}

impl MemFs {
    fn dir(&mut self, p: &str) -> &mut Self {
        let e = Entry::new(p.trim_start_matches('/'), EntryKind::Dir, 0o755);
        self.files.insert(p.as_bytes().to_vec(), (e, Vec::new()));
        self
    }
    fn file(&mut self, p: &str, data: &[u8]) -> &mut Self {
        let mut e = Entry::new(p.trim_start_matches('/'), EntryKind::File, 0o755);
        e.size = data.len() as u64;
        self.files.insert(p.as_bytes().to_vec(), (e, data.to_vec()));
        self
    }
    fn link(&mut self, p: &str, target: &str) -> &mut Self {
        let mut e = Entry::new(p.trim_start_matches('/'), EntryKind::Symlink, 0o777);
        e.link_target = Some(target.as_bytes().to_vec());
        self.files.insert(p.as_bytes().to_vec(), (e, Vec::new()));
        self
    }
}

impl FileLookup for MemFs {
    fn stat(&self, path: &[u8]) -> io::Result<Option<Entry>> {
        if path == b"/" {
            return Ok(Some(Entry::new(Vec::new(), EntryKind::Dir, 0o755)));
        }
        Ok(self.files.get(path).map(|(e, _)| e.clone()))
    }
    fn read_file(&self, path: &[u8], max: usize) -> io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some((e, d)) if e.kind == EntryKind::File => Ok(d[..d.len().min(max)].to_vec()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "not a file")),
        }
    }
    fn read_dir(&self, _path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not needed here",
        ))
    }
}

fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => panic!("add the GOARCH name of {other} to this test"),
    }
}

/// What `elf_arch` should say: (architecture, variant).
type Expected = Option<(&'static str, Option<&'static str>)>;

/// A 64-byte ELF header with the given class, byte order, machine and flags.
fn elf(class: u8, data: u8, machine: u16, flags: u32) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    let m = if data == 1 {
        machine.to_le_bytes()
    } else {
        machine.to_be_bytes()
    };
    h[18..20].copy_from_slice(&m);
    if class == 1 {
        h[36..40].copy_from_slice(&flags.to_le_bytes());
    }
    h
}

#[test]
fn elf_headers() {
    let sh = std::fs::read("/bin/sh").expect("/bin/sh");
    assert_eq!(elf_arch(&sh[..64]), Some((host_goarch().to_string(), None)));
    let cases: &[(Vec<u8>, Expected)] = &[
        (elf(1, 1, 3, 0), Some(("386", None))),
        (elf(2, 1, 62, 0), Some(("amd64", None))),
        (elf(1, 1, 40, 0x0500_0400), Some(("arm", Some("v7")))),
        (elf(1, 1, 40, 0x0500_0200), Some(("arm", Some("v5")))),
        (elf(2, 1, 183, 0), Some(("arm64", None))),
        (elf(2, 1, 21, 0), Some(("ppc64le", None))),
        (elf(2, 2, 21, 0), Some(("ppc64", None))),
        (elf(2, 2, 22, 0), Some(("s390x", None))),
        (elf(2, 1, 243, 0), Some(("riscv64", None))),
        (elf(2, 1, 8, 0), Some(("mips64le", None))),
        (elf(1, 1, 8, 0), Some(("mipsle", None))),
        (elf(2, 1, 258, 0), Some(("loong64", None))),
        // 32-bit s390 and riscv32 have no OCI name.
        (elf(1, 2, 22, 0), None),
        (elf(1, 1, 243, 0), None),
        (elf(3, 1, 62, 0), None),
        (b"#!/bin/sh\n".to_vec(), None),
        (b"\x7fELF\x02".to_vec(), None),
        (Vec::new(), None),
    ];
    for (h, want) in cases {
        let got = elf_arch(h);
        let want = want.map(|(a, v)| (a.to_string(), v.map(str::to_string)));
        assert_eq!(got, want, "{:?}", &h[..h.len().min(20)]);
    }
    // Truncated at every length: never a panic.
    let h = elf(1, 1, 40, 0x400);
    for n in 0..h.len() {
        let _ = elf_arch(&h[..n]);
    }
}

#[test]
fn os_release_samples() {
    let debian = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
    assert_eq!(
        parse_os_release(debian),
        OsRelease {
            id: Some("debian".into()),
            version_id: Some("12".into()),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            name: Some("Debian GNU/Linux".into()),
            version_codename: Some("bookworm".into()),
        }
    );
    let ubuntu = "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n";
    let u = parse_os_release(ubuntu);
    assert_eq!(u.id.as_deref(), Some("ubuntu"));
    assert_eq!(u.version_id.as_deref(), Some("22.04"));
    let alpine =
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n";
    let a = parse_os_release(alpine);
    assert_eq!(
        (a.id.as_deref(), a.version_id.as_deref(), a.version_codename),
        (Some("alpine"), Some("3.19.1"), None)
    );
    let rhel = "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.3 (Plow)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.3 (Plow)\"\n";
    let r = parse_os_release(rhel);
    assert_eq!(
        (r.id.as_deref(), r.version_id.as_deref()),
        (Some("rhel"), Some("9.3"))
    );
    let quoting = concat!(
        "# a comment\n",
        "  \n",
        "NAME='single $quoted \"x\"'\n",
        "PRETTY_NAME=\"a \\\"b\\\" \\$c \\\\d \\`e\\` \\n\"\n",
        "ID=unquoted\\ word # trailing comment\n",
        "VERSION_ID=\"1\"'2'3\n",
        "garbage line without equals\n",
        "=novalue\n",
        "VERSION_CODENAME=\n",
    );
    let q = parse_os_release(quoting);
    assert_eq!(q.name.as_deref(), Some("single $quoted \"x\""));
    assert_eq!(q.pretty_name.as_deref(), Some("a \"b\" $c \\d `e` \\n"));
    assert_eq!(q.id.as_deref(), Some("unquoted word"));
    assert_eq!(q.version_id.as_deref(), Some("123"));
    assert_eq!(q.version_codename.as_deref(), Some(""));
    // Unterminated quotes take the rest of the line.
    assert_eq!(parse_os_release("ID=\"open").id.as_deref(), Some("open"));
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/bin")
        .dir("/etc")
        .file("/usr/bin/dash", b"ELF")
        .link("/bin", "usr/bin")
        .link("/usr/bin/sh", "dash")
        .link("/escape", "/../../../etc/hostname")
        .link("/dotdot", "../../../../usr/bin/dash")
        .file("/etc/hostname", b"guest")
        .link("/loop1", "loop2")
        .link("/loop2", "/loop1")
        .link("/self", "self/x")
        .link("/empty", "")
        .link("/dangling", "/nope");
    let r = |p: &str| resolve_path(&fs, p.as_bytes());
    assert_eq!(r("/bin/sh").unwrap(), Some(b"/usr/bin/dash".to_vec()));
    assert_eq!(r("bin/./sh").unwrap(), Some(b"/usr/bin/dash".to_vec()));
    assert_eq!(r("/escape").unwrap(), Some(b"/etc/hostname".to_vec()));
    assert_eq!(r("/dotdot").unwrap(), Some(b"/usr/bin/dash".to_vec()));
    assert_eq!(
        r("/../../etc/hostname").unwrap(),
        Some(b"/etc/hostname".to_vec())
    );
    assert_eq!(r("/usr/bin/dash/x").unwrap(), None);
    assert_eq!(r("/dangling").unwrap(), None);
    assert_eq!(r("/empty").unwrap(), None);
    assert_eq!(r("/").unwrap(), Some(b"/".to_vec()));
    for p in ["/loop1", "/self"] {
        let e = r(p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("40"), "{e}");
    }
}

#[test]
fn inspect_in_memory_guests() {
    let sh = std::fs::read("/bin/sh").unwrap();
    // Alpine-like: busybox only, os-release as a link into /usr/lib.
    let mut fs = MemFs::default();
    fs.dir("/bin")
        .dir("/etc")
        .dir("/usr")
        .dir("/usr/lib")
        .file("/bin/busybox", &elf(2, 1, 183, 0))
        .link("/bin/sh", "/bin/busybox")
        .link("/etc/os-release", "../usr/lib/os-release")
        .file("/usr/lib/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n");
    let g = inspect(&fs).unwrap();
    assert_eq!((g.os.as_str(), g.architecture.as_str()), ("linux", "arm64"));
    assert_eq!(g.shell.as_deref(), Some("/bin/sh"));
    assert_eq!(g.os_release.unwrap().id.as_deref(), Some("alpine"));

    // /bin/sh a loop: fall back to /bin/bash; os-release missing.
    let mut fs = MemFs::default();
    fs.dir("/bin")
        .link("/bin/sh", "/bin/sh")
        .file("/bin/bash", &sh[..4096.min(sh.len())]);
    let g = inspect(&fs).unwrap();
    assert_eq!(g.architecture, host_goarch());
    assert_eq!(g.shell.as_deref(), Some("/bin/bash"));
    assert!(g.os_release.is_none());

    // No ELF anywhere: a clear NotFound.
    let mut fs = MemFs::default();
    fs.dir("/bin").file("/bin/sh", b"#!/bin/false\n");
    let e = inspect(&fs).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("/bin/sh"), "{e}");
}

#[test]
fn inspect_a_merged_usr_tarball() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    for d in ["usr/bin", "usr/lib", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/sh", root.join("usr/bin/dash")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
    std::fs::write(
        root.join("usr/lib/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    let tar = t.path().join("root.tar.xz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cJf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("GNU tar is not installed");
    assert!(st.success());
    let tree = TarballTree::open(&tar, t.path()).unwrap();
    assert_eq!(
        resolve_path(&tree, b"/bin/sh").unwrap(),
        Some(b"/usr/bin/dash".to_vec())
    );
    let g = inspect(&tree).unwrap();
    assert_eq!(g.architecture, host_goarch());
    assert_eq!(g.shell.as_deref(), Some("/bin/sh"));
    let os = g.os_release.unwrap();
    assert_eq!(
        (os.id.as_deref(), os.version_id.as_deref()),
        (Some("debian"), Some("12"))
    );
}

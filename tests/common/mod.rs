//! The end-to-end harness: runs the built `decant` binary in a temp dir with its own store, and
//! drives the real peers (skopeo, umoci, oci-image-tool, mkfs.ext4, qemu-img) around it.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod debian_vm;
pub mod registry;
pub mod strip;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A temp dir with a store inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.status, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("decant-e2e")
                .tempdir()
                .expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    pub fn decant(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_decant"));
        c.env("DECANT_ROOT", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.path());
        c
    }
    /// Runs decant with `args`; stdin is empty.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.decant()
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("spawn decant"),
        )
    }
    /// Index.json and the blob names: what "the store did not change" compares.
    pub fn store_state(&self) -> (String, Vec<String>) {
        let index = std::fs::read_to_string(self.store().join("index.json")).unwrap_or_default();
        let mut blobs: Vec<String> = std::fs::read_dir(self.store().join("blobs/sha256"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        blobs.sort();
        (index, blobs)
    }
}

/// Runs a tool; panics with its output when it fails or is missing (CI installs every tool;
/// a missing one is a broken CI, not a reason to skip).
#[track_caller]
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} could not run ({e}); .ci/run installs it"));
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fails loudly when a root-only test runs unprivileged (CI is root).
#[track_caller]
pub fn require_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED (needs root: {why}); CI runs as root and runs it");
    false
}

/// The example disk from testdata/make-example.sh, built once per test binary.
pub fn example() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/make-example.sh");
        let lock = dir.with_extension("lock");
        let _ = std::fs::create_dir_all(dir.parent().expect("parent"));
        let f = std::fs::File::create(&lock).expect("lock file");
        f.lock().expect("lock");
        if !dir.join("disk.qcow2").exists() {
            tool(
                "bash",
                &[script.to_str().expect("utf8"), dir.to_str().expect("utf8")],
            );
        }
        dir
    })
}

/// One file as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub sha256: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
}

/// lstat-based view of a directory tree, keyed by relative path bytes.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, Meta> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dirent");
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                '-'
            } else {
                use std::os::unix::fs::FileTypeExt;
                if ft.is_char_device() {
                    'c'
                } else if ft.is_block_device() {
                    'b'
                } else if ft.is_fifo() {
                    'p'
                } else {
                    's'
                }
            };
            let sha256 = (kind == '-').then(|| sha256_file(&p));
            let target = (kind == 'l').then(|| {
                std::fs::read_link(&p)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            });
            let rdev = matches!(kind, 'c' | 'b').then(|| {
                let r = md.rdev();
                (
                    ((r >> 8) & 0xfff) as u32 | ((r >> 32) & !0xfff) as u32,
                    ((r & 0xff) | ((r >> 12) & !0xff)) as u32,
                )
            });
            out.insert(
                rel,
                Meta {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                    size: if kind == '-' { md.size() } else { 0 },
                    sha256,
                    target,
                    rdev,
                },
            );
            if kind == 'd' {
                stack.push(p);
            }
        }
    }
    out
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(p).expect("read staged file");
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `getfattr -R -d -m -` of a tree: relative path → sorted (name, hex value).
pub fn xattrs(root: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let o = Command::new("getfattr")
        .args([
            "-R",
            "-P",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
        ])
        .arg(root)
        .output()
        .expect("getfattr (package attr) could not run; .ci/run installs it");
    let text = String::from_utf8_lossy(&o.stdout);
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = String::new();
    let prefix = format!("{}/", root.display());
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            current = f.strip_prefix(&prefix).unwrap_or(f).to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            if k != "security.selinux" {
                out.entry(current.clone())
                    .or_default()
                    .push((k.to_string(), v.to_string()));
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// An env for container tests with the example image imported as `ex` (plus `import_args`,
/// such as `-c 'EXPOSE 80'`); `None`, said loudly, when not root.
pub fn container_env(import_args: &[&str]) -> Option<Env> {
    if !require_root("containers need namespaces, mounts and cgroups") {
        return None;
    }
    let env = Env::new();
    let root = example().join("root.ext4");
    let mut args = vec!["import", "-t", "ex"];
    args.extend_from_slice(import_args);
    args.push(root.to_str().expect("utf8 path"));
    env.run(&args).ok();
    Some(env)
}

/// Every trace of the containers of `env` is gone: no record, no mount under the store, no
/// monitor, and for each of `ids` no runtime state and no cgroup.
#[track_caller]
pub fn assert_containers_clean(env: &Env, ids: &[String]) {
    let store = env.store();
    let s = store.to_str().expect("utf8 path");
    // A monitor reports the exit before its own process ends (a `--rm` one then removes the
    // container's files, renamed to `.removed-<id>` already): give it a moment to go.
    let mut left = monitors_of(s);
    for _ in 0..40 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = monitors_of(s);
    }
    assert!(left.is_empty(), "a monitor of {s} is left: pids {left:?}");
    let left: Vec<_> = std::fs::read_dir(store.join(".decant/containers"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(s), "a mount is left under {s}");
    for id in ids {
        assert!(
            !Path::new("/run/decant/runtime").join(id).exists(),
            "runtime state of {id} left"
        );
        for c in ["memory", "pids", "cpu", "freezer", "unified"] {
            let g = Path::new("/sys/fs/cgroup").join(c).join("decant").join(id);
            assert!(!g.exists(), "cgroup {} left", g.display());
        }
    }
}

/// The monitors of container `id` (full id or prefix): processes named `decant-monitor` (a
/// forked monitor) or running `__monitor`, that hold a file of that container's directory open
/// (its log) or name it on their command line.
pub fn monitors_of(id: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
    {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let cmd = std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if comm.trim_end() != "decant-monitor" && !cmd.contains("__monitor") {
            continue;
        }
        let holds = cmd.contains(id)
            || std::fs::read_dir(p.path().join("fd"))
                .map(|fds| {
                    fds.filter_map(|f| f.ok()).any(|f| {
                        std::fs::read_link(f.path())
                            .map(|t| t.to_string_lossy().contains(id))
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false);
        if holds {
            found.push(pid);
        }
    }
    found
}

/// decant-init built static (as supervisor/README.md says), once per test binary, in the test
/// target dir.
pub fn static_init() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("static-init");
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let lock = target_dir.with_extension("lock");
        let _ = std::fs::create_dir_all(&target_dir);
        let f = std::fs::File::create(&lock).expect("lock file");
        f.lock().expect("lock");
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "--profile",
                "init",
                "-p",
                "supervisor",
                "--bin",
                "decant-init",
            ])
            .args(["--target", "x86_64-unknown-linux-gnu", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo");
        assert!(st.success(), "the static decant-init build failed");
        target_dir.join("x86_64-unknown-linux-gnu/init/decant-init")
    })
    .clone()
}

/// decant with `$DECANT_INIT` naming `init`; stdin is empty.
pub fn run_with_init(env: &Env, init: &Path, args: &[&str]) -> Run {
    Run::from(
        env.decant()
            .env("DECANT_INIT", init)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn decant"),
    )
}

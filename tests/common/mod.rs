//! The end-to-end harness: runs the built `decant` binary in a temp dir with its own store, and
//! drives the real peers (skopeo, umoci, oci-image-tool, mkfs.ext4, qemu-img) around it.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod debian_vm;
pub mod registry;
pub mod strip;
pub mod user;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A temp dir with a store inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// When the env was made: a cgroup made before is not this test's.
    pub born: std::time::SystemTime,
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
            born: std::time::SystemTime::now(),
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
    // Straight to the process's stderr, past libtest's capture of eprintln!: a skip is seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED (needs root: {why}); CI runs as root and runs it\n").as_bytes(),
    );
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

/// Every trace of the containers of `env` is gone, found without being told the ids (`ids`
/// adds the ones the test knows): no record, no mount under the store or a runtime dir, no
/// monitor, no container process, no runtime state, no cgroup. A `--rm` monitor reports the
/// exit before it removes the container, and another test's container may be between its
/// cgroup and its record: what is left is asked again for 2 s before it counts.
#[track_caller]
pub fn assert_containers_clean(env: &Env, ids: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = leftovers(&env.store(), ids, env.born);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind by the containers of {}:\n  {}",
            env.store().display(),
            left.join("\n  ")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether `s` is a container id (64 lowercase hex digits).
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cgroup hierarchies' mount points that decant populates: every v1 one carrying a
/// controller (named ones such as `name=systemd` are not ours) and the cgroup2 one.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut out = Vec::new();
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default();
        let opts = r.nth(1).unwrap_or_default();
        let ours = match fstype {
            "cgroup2" => true,
            "cgroup" => !opts.split(',').any(|o| o.starts_with("name=")),
            _ => false,
        };
        if let (true, Some(mp)) = (ours, left.split(' ').nth(4)) {
            let mp = PathBuf::from(mp);
            if !out.contains(&mp) {
                out.push(mp);
            }
        }
    }
    out
}

/// Whether a container with this id exists in any e2e test's store (another test's live one).
fn known_anywhere(id: &str) -> bool {
    let Ok(tmp) = std::fs::read_dir(std::env::temp_dir()) else {
        return false;
    };
    tmp.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("decant-e2e"))
        .any(|e| {
            let c = e.path().join("store/.decant/containers");
            c.join(id).exists() || c.join(format!(".removed-{id}")).exists()
        })
}

/// The pids of the processes started for the store at `store`: a monitor naming it (on its
/// command line or an open file), or a container process whose mount table names it (its
/// root is an overlay of the store's layers).
pub fn processes_of(store: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
    {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        // A zombie is gone but for its parent's wait.
        if status
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let monitor = is_monitor_of(&p.path(), store);
        let inside = std::fs::read_to_string(p.path().join("mountinfo"))
            .map(|m| m.contains(&format!("{store}/")))
            .unwrap_or(false);
        // Our own mount table names the store only when a mount is left (reported apart);
        // the machine's init's may too, as container roots are mounted under /run, whose
        // mounts propagate to it.
        let ns = std::fs::read_link(p.path().join("ns/mnt")).ok();
        let host_ns = ns == std::fs::read_link("/proc/self/ns/mnt").ok()
            || ns == std::fs::read_link("/proc/1/ns/mnt").ok();
        if monitor || (inside && !host_ns) {
            found.push((pid, comm.trim_end().to_string()));
        }
    }
    found
}

/// Whether the process at `proc` is a monitor (named `decant-monitor` when forked, or running
/// `__monitor`) that names `what` on its command line or holds a file of it open (its log).
fn is_monitor_of(proc: &Path, what: &str) -> bool {
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    let cmd = std::fs::read(proc.join("cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    if comm.trim_end() != "decant-monitor" && !cmd.contains("__monitor") {
        return false;
    }
    cmd.contains(what)
        || std::fs::read_dir(proc.join("fd"))
            .map(|fds| {
                fds.filter_map(|f| f.ok()).any(|f| {
                    std::fs::read_link(f.path())
                        .map(|t| t.to_string_lossy().contains(what))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
}

/// What the containers of the store at `store` left behind, one line each (see
/// [`assert_containers_clean`]).
pub fn leftovers(store: &Path, ids: &[String], born: std::time::SystemTime) -> Vec<String> {
    let s = store.to_str().expect("utf8 path");
    let mut left = Vec::new();
    let mut ours: Vec<String> = ids.to_vec();
    // Records (and `.removed-<id>` ones a `--rm` monitor has yet to delete).
    for e in std::fs::read_dir(store.join(".decant/containers"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        left.push(format!("record {name}"));
        let id = name.trim_start_matches(".removed-");
        if is_container_id(id) {
            ours.push(id.to_string());
        }
    }
    // Runtime state naming a bundle in the store.
    let runtime = Path::new("/run/decant/runtime");
    for e in std::fs::read_dir(runtime)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let state = std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default();
        let name = e.file_name().to_string_lossy().into_owned();
        if state.contains(&format!("\"{s}/")) || ids.contains(&name) {
            left.push(format!("runtime state {}", e.path().display()));
            ours.push(name);
        }
    }
    // Processes: monitors and container processes.
    for (pid, comm) in processes_of(s) {
        left.push(format!("process {pid} ({comm})"));
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            for l in cg.lines() {
                if let Some(id) = l.rsplit_once("/decant/").map(|(_, id)| id) {
                    ours.push(id.split('/').next().unwrap_or(id).to_string());
                }
            }
        }
    }
    // Mounts under the store, a runtime dir of ours, or a container root of ours (mounted
    // beside the runtime state, `<runtime root>/../rootfs/<id>`).
    let rootfs = runtime.parent().unwrap_or(runtime).join("rootfs");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for m in mounts.lines() {
        let point = m.split(' ').nth(4).unwrap_or_default();
        if point.starts_with(&format!("{s}/"))
            || ours.iter().any(|id| {
                point.starts_with(&format!("{}/{id}", runtime.display()))
                    || point == format!("{}/{id}", rootfs.display())
            })
        {
            left.push(format!("mount {point}"));
        }
    }
    // Groups: those of our ids, and any other that no container of any test holds (made
    // after this env, so not a previous run's).
    ours.sort();
    ours.dedup();
    for h in cgroup_hierarchies() {
        for e in std::fs::read_dir(h.join("decant"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let id = e.file_name().to_string_lossy().into_owned();
            let young = e
                .metadata()
                .map(|m| {
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.ctime().max(0) as u64)
                        >= born - std::time::Duration::from_secs(1)
                })
                .unwrap_or(false);
            let orphan = young
                && is_container_id(&id)
                && !known_anywhere(&id)
                && !runtime.join(&id).exists();
            if ours.contains(&id) || orphan {
                left.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    left
}

/// The monitors of container `id` (full id or prefix, or a store's path).
pub fn monitors_of(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse::<i32>().ok()?;
            is_monitor_of(&p.path(), id).then_some(pid)
        })
        .collect()
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

/// The container's log once `ready` says so (10 s at most).
#[track_caller]
pub fn wait_log(env: &Env, name: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = env.run(&["logs", name]).ok().stdout;
        if ready(&logs) {
            return logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs of {name}: {logs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

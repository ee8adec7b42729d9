//! The container lifecycle, driven like runc: create, start, run, state, kill, delete, list,
//! exec. There is no daemon: every call reads the container's record from its state
//! directory, acts, and returns.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ContainerState, LinuxResources, Process, Spec, State};

use crate::cgroups::{self, CgroupManager};
use crate::dev::DevicePlan;
use crate::error::RuntimeError;
use crate::namespaces::{self, NsPlan};
use crate::process::{self, ChildFds, InitPlan, Msg, ProcessPlan};
use crate::rootfs::{self, RootfsPlan};
use crate::state::{self, Record, CONFIG_COPY, EXEC_FIFO};

/// How long the runtime waits for a container process to finish its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `delete --force` and `start` wait for the init process.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many containers are listed (bounds a hostile state directory).
const MAX_CONTAINERS: usize = 100_000;

/// The directory holding one subdirectory of state per container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRoot(PathBuf);

impl RuntimeRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RuntimeRoot(path.into())
    }

    /// /run/decant/runtime for root; $XDG_RUNTIME_DIR/decant/runtime otherwise, or
    /// /tmp/decant-<uid>/runtime when XDG_RUNTIME_DIR is unset (as Podman does).
    pub fn default_for_user() -> Self {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            return RuntimeRoot("/run/decant/runtime".into());
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => RuntimeRoot(PathBuf::from(d).join("decant/runtime")),
            _ => RuntimeRoot(PathBuf::from(format!("/tmp/decant-{uid}/runtime"))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    fn dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        validate_id(id)?;
        Ok(self.0.join(id))
    }
}

/// Options for the container's (or exec'd) process.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Standard input, output, error for the process; `None` inherits the caller's.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// A unix socket that receives the pty master (SCM_RIGHTS) when process.terminal is set.
    pub console_socket: Option<PathBuf>,
    /// A file to write the process's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Pass the caller's fds 3..3+n to the process.
    pub preserve_fds: u32,
}

/// The same options serve `exec`.
pub type ExecOptions = CreateOptions;

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(Signal),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + *s as i32,
        }
    }
}

/// A process the runtime started (a container's init from `run`, or an `exec`); it is the
/// caller's child, so the caller can wait for it.
#[derive(Debug)]
pub struct ContainerProcess {
    pid: i32,
}

impl ContainerProcess {
    /// The host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to end.
    pub fn wait(&self) -> Result<ExitStatus, RuntimeError> {
        loop {
            match waitpid(Pid::from_raw(self.pid), None) {
                Ok(WaitStatus::Exited(_, c)) => return Ok(ExitStatus::Exited(c)),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(ExitStatus::Signaled(s)),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(RuntimeError::sys(&self.pid.to_string(), "waitpid", e)),
            }
        }
    }
}

/// Container ids: letters, digits, `_ . -`, at most 1024 bytes, not starting with `.` or `-`
/// (they name a directory; nothing may climb out of the runtime root).
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !id.starts_with('.')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::container(
            id,
            "invalid id: use letters, digits, '_', '.', '-' (at most 1024)",
        ))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether the spec asks for limits that need a working cgroup (a device list alone does
/// not: it is a default of runc's spec and an enforcement the kernel also gives by mknod).
fn needs_limits(r: &LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|v| !v.is_empty())
        || r.unified().as_ref().is_some_and(|v| !v.is_empty())
}

/// The container's cgroup: mandatory when the spec asks for limits, best effort otherwise;
/// once the group exists, a device list that cannot be written is an error too (the
/// container would otherwise run with every host device open to it).
fn make_cgroup(
    id: &str,
    resources: Option<&LinuxResources>,
) -> Result<Option<Box<dyn CgroupManager>>, RuntimeError> {
    let needed = resources.is_some_and(needs_limits);
    let fail = |source| RuntimeError::Cgroup {
        id: id.to_string(),
        source,
    };
    let m = match cgroups::manager_for(id).and_then(|m| m.create().map(|()| m)) {
        Ok(m) => m,
        Err(source) if needed => return Err(fail(source)),
        Err(_) => return Ok(None),
    };
    if let Some(r) = resources {
        // The device list goes to the v1 devices hierarchy when there is one (root). Rootless
        // v1 has none writable: nothing is written, and none is needed: in a user namespace
        // mknod is refused, and a node bound from the host (the standard ones; every one
        // with --privileged) opens only with the user's own rights on it. On v2 it is not
        // enforced (see security::devices).
        let mut r = r.clone();
        if let Some(devices) = r.devices().clone() {
            r.set_devices(Some(crate::security::devices::effective_rules(&devices)));
        }
        if let Err(source) = m.apply(&r) {
            let _ = m.destroy();
            return Err(fail(source));
        }
    }
    Ok(Some(m))
}

/// Kills and reaps a child on the error paths; disarmed on success.
struct ChildGuard(Option<i32>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}

/// Removes a half-made container (state dir, cgroup) on the error paths.
struct Leftovers {
    dir: Option<PathBuf>,
    cgroup: Option<Box<dyn CgroupManager>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.destroy();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn dup(fd: &Option<OwnedFd>, what: &str) -> Result<Option<OwnedFd>, RuntimeError> {
    fd.as_ref()
        .map(|f| f.try_clone().map_err(|e| RuntimeError::io(what, "dup", e)))
        .transpose()
}

fn connect_console(
    opts: &CreateOptions,
    terminal: bool,
    id: &str,
) -> Result<Option<OwnedFd>, RuntimeError> {
    match (terminal, &opts.console_socket) {
        (false, _) => Ok(None),
        (true, None) => Err(RuntimeError::container(
            id,
            "process.terminal is set: a console socket is needed",
        )),
        (true, Some(path)) => {
            let s = std::os::unix::net::UnixStream::connect(path)
                .map_err(|e| RuntimeError::io(path, "connect", e))?;
            Ok(Some(s.into()))
        }
    }
}

fn pipe(id: &str) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys(id, "pipe2", e))
}

/// What the runtime needs to run one forked helper and its container process.
struct Launch<'a> {
    id: &'a str,
    fds: ChildFds,
    p2c: OwnedFd,
    c2p: OwnedFd,
    flags: CloneFlags,
    cgroup: Option<&'a dyn CgroupManager>,
    maps: Option<(
        &'a [oci_spec::runtime::LinuxIdMapping],
        &'a [oci_spec::runtime::LinuxIdMapping],
    )>,
    /// Wait for "ready" (create) rather than end of file (exec succeeded).
    wait_ready: bool,
}

fn child_error(id: &str, code: i32, message: String) -> RuntimeError {
    RuntimeError::Init {
        id: id.to_string(),
        code,
        message,
    }
}

/// Forks the helper, drives the handshake and returns the container process's pid.
fn launch(
    l: Launch<'_>,
    body: impl FnOnce(ChildFds) -> Result<std::convert::Infallible, process::ChildError>,
) -> Result<i32, RuntimeError> {
    let id = l.id;
    let mut fds = l.fds;
    if let Some(cg) = l.cgroup {
        fds.cgroup_join = cg
            .self_join_files()
            .into_iter()
            .map(|p| {
                std::ffi::CString::new(std::os::unix::ffi::OsStringExt::into_vec(
                    p.into_os_string(),
                ))
                .map_err(|_| {
                    RuntimeError::container(id, "a cgroup path holds a NUL byte".to_string())
                })
            })
            .collect::<Result<_, _>>()?;
    }
    // SAFETY: the child only runs code that does not rely on other threads: it closes stray
    // descriptors, talks over its pipes and clones; glibc's fork keeps malloc usable.
    let fork = unsafe { nix::unistd::fork() }.map_err(|e| RuntimeError::sys(id, "fork", e))?;
    let helper = match fork {
        nix::unistd::ForkResult::Child => {
            drop(l.p2c);
            drop(l.c2p);
            process::helper(fds, l.flags, body)
        }
        nix::unistd::ForkResult::Parent { child } => child.as_raw(),
    };
    drop(fds);
    let mut helper_guard = ChildGuard(Some(helper));
    let (p2c, c2p) = (l.p2c, l.c2p);
    let go = |what: &str| {
        process::send(&p2c, &Msg::Go)
            .map_err(|e| RuntimeError::sys(id, format!("sync with the {what}"), e))
    };
    let recv = || {
        process::recv(&c2p, SETUP_TIMEOUT)
            .map_err(|m| RuntimeError::container(id, format!("sync pipe: {m}")))
    };
    go("helper")?;
    let pid = match recv()? {
        Some(Msg::Pid(p)) if p > 0 => p,
        Some(Msg::Error { code, message }) => return Err(child_error(id, code, message)),
        Some(other) => {
            return Err(RuntimeError::container(
                id,
                format!("unexpected {other:?} from the helper"),
            ))
        }
        None => {
            return Err(RuntimeError::container(
                id,
                "the helper process died before reporting",
            ))
        }
    };
    let mut guard = ChildGuard(Some(pid));
    helper_guard.0 = None;
    let _ = waitpid(Pid::from_raw(helper), None);
    if let Some((uids, gids)) = l.maps {
        namespaces::write_id_maps(pid, uids, gids, id)?;
    }
    go("container process")?;
    match recv()? {
        Some(Msg::Ready) if l.wait_ready => {}
        None if !l.wait_ready => {}
        Some(Msg::Error { code, message }) => return Err(child_error(id, code, message)),
        Some(other) => {
            return Err(RuntimeError::container(
                id,
                format!("unexpected {other:?} from the container"),
            ))
        }
        None => {
            return Err(RuntimeError::container(
                id,
                "the container process died during setup",
            ))
        }
    }
    guard.0 = None;
    Ok(pid)
}

/// Everything prepared from a spec before forking.
struct Prepared {
    init: InitPlan,
    ns: NsPlan,
    rootfs: PathBuf,
}

/// Whether this process's user namespace denies setgroups (a rootless engine's monitor runs
/// the runtime as uid 0 of such a namespace; its child namespaces inherit the denial).
fn setgroups_denied_here() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|t| t.trim() == "deny")
}

fn prepare(id: &str, bundle: &Path, spec: &Spec) -> Result<Prepared, RuntimeError> {
    let cfg = bundle.join("config.json").display().to_string();
    let bad = |problem: String| RuntimeError::Spec {
        path: cfg.clone(),
        problem,
    };
    if let Some(h) = spec.hooks() {
        let any = [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
            h.poststart(),
            h.poststop(),
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()));
        if any {
            return Err(bad("hooks are not supported by decant's runtime".into()));
        }
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad("no process section".into()))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| bad("no root section".into()))?;
    let rootfs_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs_path)
        .map_err(|e| RuntimeError::io(&rootfs_path, "resolve root.path", e))?;
    if !rootfs.is_dir() {
        return Err(bad(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }
    let ns = NsPlan::from_spec(spec, id)?;
    let rootless = !nix::unistd::geteuid().is_root();
    if rootless && !ns.user {
        return Err(RuntimeError::container(
            id,
            "running as a non-root user needs a user namespace in config.json",
        ));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let mounts = spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|m| rootfs::plan_mount(m, bundle))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let setup_dev = !mounts.iter().any(|m| m.dest == "dev" && m.bind);
    let mut devices: Vec<DevicePlan> = crate::dev::default_devices();
    for d in linux.devices().as_deref().unwrap_or_default() {
        let plan = crate::dev::plan_device(d).map_err(bad)?;
        devices.retain(|x| x.path != plan.path);
        devices.push(plan);
    }
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
        Some(p) => rootfs::propagation_flags(p).map_err(bad)?,
    };
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.uts {
        return Err(bad("hostname is set but there is no uts namespace".into()));
    }
    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        if k.is_empty() || k.split('.').any(|p| p.is_empty() || p == "..") || k.contains('/') {
            return Err(bad(format!("sysctl key {k:?} is malformed")));
        }
    }
    let setgroups_denied = ns.user && (rootless || setgroups_denied_here());
    let process =
        ProcessPlan::from_oci(process, linux.seccomp().clone(), setgroups_denied).map_err(bad)?;
    let init = InitPlan {
        rootfs: RootfsPlan {
            rootfs: rootfs.clone(),
            propagation,
            mounts,
            setup_dev,
            devices,
            user_ns: ns.user,
            readonly: root.readonly().unwrap_or(false),
            cgroup2_host: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            new_cgroup_ns: ns.new.contains(CloneFlags::CLONE_NEWCGROUP),
        },
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        sysctl,
        masked: linux.masked_paths().clone().unwrap_or_default(),
        readonly: linux.readonly_paths().clone().unwrap_or_default(),
        user_ns: ns.user,
        loopback: ns.new.contains(CloneFlags::CLONE_NEWNET),
        process,
    };
    Ok(Prepared { init, ns, rootfs })
}

fn create_inner(
    root: &RuntimeRoot,
    id: &str,
    bundle: &Path,
    given: Option<Spec>,
    opts: &CreateOptions,
    with_fifo: bool,
) -> Result<(Record, PathBuf), RuntimeError> {
    let dir = root.dir(id)?;
    let bundle =
        std::fs::canonicalize(bundle).map_err(|e| RuntimeError::io(bundle, "resolve bundle", e))?;
    let (spec, bytes) = match given {
        Some(spec) => {
            let bytes = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Spec {
                path: bundle.join("config.json").display().to_string(),
                problem: format!("cannot serialise the spec: {e}"),
            })?;
            (spec, bytes)
        }
        None => crate::spec::load(&bundle)?,
    };
    let mut prepared = prepare(id, &bundle, &spec)?;

    std::fs::create_dir_all(root.path()).map_err(|e| RuntimeError::io(root.path(), "create", e))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::container(id, "already exists"));
        }
        Err(e) => return Err(RuntimeError::io(&dir, "create", e)),
    }
    let mut leftovers = Leftovers {
        dir: Some(dir.clone()),
        cgroup: None,
    };
    let copy = dir.join(CONFIG_COPY);
    std::fs::write(&copy, &bytes).map_err(|e| RuntimeError::io(&copy, "write", e))?;
    let me = std::process::id() as i32;
    let mut record = Record {
        oci_version: spec.version().clone(),
        id: id.to_string(),
        bundle: bundle.clone(),
        rootfs: prepared.rootfs.clone(),
        annotations: spec.annotations().clone(),
        pid: 0,
        start_time: 0,
        creator_pid: me,
        creator_start_time: state::proc_stat(me).map(|s| s.start_time).unwrap_or(0),
        cgroup: false,
        own_pid_ns: prepared.ns.new.contains(CloneFlags::CLONE_NEWPID),
        created: now_secs(),
    };
    record.save(&dir)?;

    let fifo = if with_fifo {
        let path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o622))
            .map_err(|e| RuntimeError::sys(id, format!("mkfifo {}", path.display()), e))?;
        // mkfifo honours the umask; the container's user (any uid) must be able to write it.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            Mode::from_bits_truncate(0o622),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| RuntimeError::sys(id, format!("chmod {}", path.display()), e))?;
        Some(
            nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| RuntimeError::sys(id, format!("open {}", path.display()), e))?,
        )
    } else {
        None
    };

    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    leftovers.cgroup = make_cgroup(id, resources)?;
    record.cgroup = leftovers.cgroup.is_some();

    let (p2c_r, p2c_w) = pipe(id)?;
    let (c2p_r, c2p_w) = pipe(id)?;
    let fds = ChildFds {
        p2c: p2c_r,
        c2p: Some(c2p_w),
        fifo,
        console: connect_console(opts, prepared.init.process.terminal, id)?,
        stdio: [
            dup(&opts.stdin, "stdin")?,
            dup(&opts.stdout, "stdout")?,
            dup(&opts.stderr, "stderr")?,
        ],
        join: std::mem::take(&mut prepared.ns.join),
        preserve: opts.preserve_fds,
        time_offsets: time_offsets(&spec),
        cgroup_join: Vec::new(),
    };
    let linux = spec.linux().clone().unwrap_or_default();
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    let new_user = prepared.ns.new.contains(CloneFlags::CLONE_NEWUSER);
    let init = &prepared.init;
    let pid = launch(
        Launch {
            id,
            fds,
            p2c: p2c_w,
            c2p: c2p_r,
            flags: prepared.ns.new,
            cgroup: leftovers.cgroup.as_deref(),
            maps: new_user.then_some((uids.as_slice(), gids.as_slice())),
            wait_ready: with_fifo,
        },
        |fds| process::init_main(init, fds),
    )?;
    let mut guard = ChildGuard(Some(pid));
    record.pid = pid;
    record.start_time = state::proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
    record.save(&dir)?;
    if let Some(pf) = &opts.pid_file {
        std::fs::write(pf, pid.to_string()).map_err(|e| RuntimeError::io(pf, "write", e))?;
    }
    guard.0 = None;
    leftovers.dir = None;
    leftovers.cgroup = None;
    Ok((record, dir))
}

/// The spec's clock offsets as /proc/self/timens_offsets wants them.
fn time_offsets(spec: &Spec) -> Option<String> {
    let offsets = spec.linux().as_ref()?.time_offsets().as_ref()?;
    let mut names: Vec<&String> = offsets.keys().collect();
    names.sort();
    Some(
        names
            .into_iter()
            .filter_map(|n| {
                offsets.get(n).map(|o| {
                    format!(
                        "{n} {} {}\n",
                        o.secs().unwrap_or(0),
                        o.nanosecs().unwrap_or(0)
                    )
                })
            })
            .collect(),
    )
}

/// Sets the container up and leaves its init blocked just before execve (status "created").
pub fn create(
    root: &RuntimeRoot,
    id: &str,
    bundle: &Path,
    opts: &CreateOptions,
) -> Result<State, RuntimeError> {
    let (record, dir) = create_inner(root, id, bundle, None, opts, true)?;
    Ok(record.to_state(&dir))
}

/// `create` with the spec in hand instead of the bundle's config.json (an engine that builds
/// the spec itself skips writing and parsing it back; the state keeps its copy as always).
/// `bundle` still anchors relative paths and is what `state` reports.
pub fn create_with_spec(
    root: &RuntimeRoot,
    id: &str,
    bundle: &Path,
    spec: Spec,
    opts: &CreateOptions,
) -> Result<State, RuntimeError> {
    let (record, dir) = create_inner(root, id, bundle, Some(spec), opts, true)?;
    Ok(record.to_state(&dir))
}

/// `run` with the spec in hand (see [`create_with_spec`]).
pub fn run_with_spec(
    root: &RuntimeRoot,
    id: &str,
    bundle: &Path,
    spec: Spec,
    opts: &CreateOptions,
) -> Result<ContainerProcess, RuntimeError> {
    let (record, _) = create_inner(root, id, bundle, Some(spec), opts, false)?;
    Ok(ContainerProcess { pid: record.pid })
}

/// create + start in one, without the fifo round trip: the fast path. The init is the
/// caller's child: wait for it with the returned handle.
pub fn run(
    root: &RuntimeRoot,
    id: &str,
    bundle: &Path,
    opts: &CreateOptions,
) -> Result<ContainerProcess, RuntimeError> {
    let (record, _) = create_inner(root, id, bundle, None, opts, false)?;
    Ok(ContainerProcess { pid: record.pid })
}

fn load(root: &RuntimeRoot, id: &str) -> Result<(Record, PathBuf), RuntimeError> {
    let dir = root.dir(id)?;
    if !dir.is_dir() {
        return Err(RuntimeError::container(id, "does not exist"));
    }
    let rec = Record::load(&dir)?;
    Ok((rec, dir))
}

/// A pidfd for `pid` that is known to name the recorded process (not a recycled pid).
fn pidfd(pid: i32, start_time: u64) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: from now on the pidfd keeps naming this very process.
    state::is_alive(pid, start_time).then_some(fd)
}

fn pidfd_signal(fd: &OwnedFd, sig: Signal) -> nix::Result<()> {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Waits until the process behind `fd` exits, at most `timeout`.
fn wait_exit(fd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(nix::poll::poll(&mut pfd, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Releases a created container's init to execve: status "running".
pub fn start(root: &RuntimeRoot, id: &str) -> Result<(), RuntimeError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let (rec, dir) = load(root, id)?;
    let status = rec.status(&dir);
    if status != ContainerState::Created {
        return Err(RuntimeError::container(
            id,
            format!("cannot start a container that is {status}"),
        ));
    }
    let init = pidfd(rec.pid, rec.start_time)
        .ok_or_else(|| RuntimeError::container(id, "the init process is gone"))?;
    let path = dir.join(EXEC_FIFO);
    let fifo: OwnedFd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys(id, format!("open {}", path.display()), e))?;
    let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(RuntimeError::container(
                id,
                "the init process did not answer on the exec fifo",
            ));
        }
        let mut pfds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(init.as_fd(), PollFlags::POLLIN),
        ];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut pfds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(RuntimeError::sys(id, "poll the exec fifo", e)),
        }
        let [fifo_ev, init_ev] = pfds.map(|p| p.revents().unwrap_or(PollFlags::empty()));
        if !fifo_ev.is_empty() {
            let mut b = [0u8; 1];
            match nix::unistd::read(&fifo, &mut b) {
                Ok(1) => break,
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                _ => {
                    return Err(RuntimeError::container(
                        id,
                        "the init process closed the exec fifo without starting",
                    ))
                }
            }
        }
        if !init_ev.is_empty() {
            return Err(RuntimeError::container(
                id,
                "the init process exited before start",
            ));
        }
    }
    std::fs::remove_file(&path).map_err(|e| RuntimeError::io(&path, "remove", e))
}

/// The OCI state of a container.
pub fn state(root: &RuntimeRoot, id: &str) -> Result<State, RuntimeError> {
    let (rec, dir) = load(root, id)?;
    Ok(rec.to_state(&dir))
}

/// Every container under the root, sorted by id.
pub fn list(root: &RuntimeRoot) -> Result<Vec<State>, RuntimeError> {
    let entries = match std::fs::read_dir(root.path()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RuntimeError::io(root.path(), "read", e)),
    };
    let mut out = Vec::new();
    for entry in entries.take(MAX_CONTAINERS) {
        let entry = entry.map_err(|e| RuntimeError::io(root.path(), "read", e))?;
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_id(&id).is_err() || !entry.path().join(state::STATE_FILE).exists() {
            continue;
        }
        out.push(state(root, &id)?);
    }
    out.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(out)
}

/// Processes in the pid namespace of `init` (for kill --all and a rootless top without a
/// cgroup).
pub(crate) fn pids_in_pidns(init: i32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.take(4_194_304)
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::metadata(format!("/proc/{p}/ns/pid"))
                .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        })
        .collect()
}

/// The container's processes; never 0 or a negative pid (kill(2) would read those as groups).
fn container_pids(rec: &Record) -> Vec<i32> {
    let mut pids = container_pids_unchecked(rec);
    pids.retain(|p| *p > 0);
    pids
}

fn container_pids_unchecked(rec: &Record) -> Vec<i32> {
    if rec.cgroup {
        if let Ok(m) = cgroups::manager_for(&rec.id) {
            if let Ok(p) = m.pids() {
                return p;
            }
        }
    }
    if rec.own_pid_ns {
        pids_in_pidns(rec.pid)
    } else {
        vec![rec.pid]
    }
}

/// Sends `signal` to the init process, or with `all` to every process of the container.
pub fn kill(root: &RuntimeRoot, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
    let (rec, dir) = load(root, id)?;
    let status = rec.status(&dir);
    if !matches!(status, ContainerState::Created | ContainerState::Running) {
        return Err(RuntimeError::container(
            id,
            format!("cannot kill a container that is {status}"),
        ));
    }
    let init = pidfd(rec.pid, rec.start_time)
        .ok_or_else(|| RuntimeError::container(id, "the init process is gone"))?;
    if all {
        for p in container_pids(&rec) {
            if p != rec.pid {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), signal);
            }
        }
    }
    match pidfd_signal(&init, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(RuntimeError::sys(id, format!("signal {signal}"), e)),
    }
}

/// Removes a container: its state, its cgroup, its leftovers. A running container is refused
/// unless `force`, which kills it (SIGKILL) first; a created one is killed like runc does.
pub fn delete(root: &RuntimeRoot, id: &str, force: bool) -> Result<(), RuntimeError> {
    let dir = root.dir(id)?;
    if !dir.is_dir() {
        return Err(RuntimeError::container(id, "does not exist"));
    }
    let rec = match Record::load(&dir) {
        Ok(r) => r,
        // A state dir without a readable record is debris of a crashed create: its cgroup
        // (named by the id) goes too, once no process is left in it.
        Err(_) if force || !dir.join(state::STATE_FILE).exists() => {
            if let Ok(m) = cgroups::manager_for(id) {
                if m.pids().map(|p| p.is_empty()).unwrap_or(true) {
                    m.destroy().map_err(|source| RuntimeError::Cgroup {
                        id: id.to_string(),
                        source,
                    })?;
                }
            }
            std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, "remove", e))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match rec.status(&dir) {
        ContainerState::Running if !force => {
            return Err(RuntimeError::container(
                id,
                "is running: stop it first or delete with force",
            ));
        }
        ContainerState::Creating if !force => {
            return Err(RuntimeError::container(id, "is being created"));
        }
        ContainerState::Stopped => {}
        _ => {
            if let Some(init) = pidfd(rec.pid, rec.start_time) {
                for p in container_pids(&rec) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                let _ = pidfd_signal(&init, Signal::SIGKILL);
                if !wait_exit(&init, WAIT_TIMEOUT) {
                    return Err(RuntimeError::container(
                        id,
                        "the init process survived SIGKILL",
                    ));
                }
            }
        }
    }
    if rec.cgroup {
        if let Ok(m) = cgroups::manager_for(id) {
            // Processes killed with the pid namespace die asynchronously: give them a moment.
            for _ in 0..200 {
                if m.pids().map(|p| p.is_empty()).unwrap_or(true) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            m.destroy().map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })?;
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, "remove", e))
}

/// Runs `process` inside a running container: joins every namespace of its init and its
/// cgroup, applies the same seccomp profile as the container and the process's own settings;
/// capabilities and no_new_privs the process leaves unset are the container's.
/// Returns the new process (the caller's child) once it has exec'd.
pub fn exec(
    root: &RuntimeRoot,
    id: &str,
    process: &Process,
    opts: &ExecOptions,
) -> Result<ContainerProcess, RuntimeError> {
    let (rec, dir) = load(root, id)?;
    let status = rec.status(&dir);
    if !matches!(status, ContainerState::Created | ContainerState::Running) {
        return Err(RuntimeError::container(
            id,
            format!("cannot exec in a container that is {status}"),
        ));
    }
    let copy = dir.join(CONFIG_COPY);
    let bytes = std::fs::read(&copy).map_err(|e| RuntimeError::io(&copy, "read", e))?;
    let spec = crate::spec::parse(&bytes, &copy)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let user_ns = linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User);
    let rootless = !nix::unistd::geteuid().is_root();
    // Unless the caller says otherwise, an exec'd process is held to the container's own
    // capabilities and no_new_privs, never to more.
    let mut process = process.clone();
    if let Some(container) = spec.process() {
        if process.capabilities().is_none() {
            process.set_capabilities(container.capabilities().clone());
        }
        if process.no_new_privileges().is_none() {
            process.set_no_new_privileges(container.no_new_privileges());
        }
    }
    let plan = ProcessPlan::from_oci(&process, linux.seccomp().clone(), rootless && user_ns)
        .map_err(|problem| RuntimeError::container(id, problem))?;
    let join = namespaces::namespaces_of(rec.pid, id)?;
    let cgroup = if rec.cgroup {
        cgroups::manager_for(id).ok()
    } else {
        None
    };
    let (p2c_r, p2c_w) = pipe(id)?;
    let (c2p_r, c2p_w) = pipe(id)?;
    let fds = ChildFds {
        p2c: p2c_r,
        c2p: Some(c2p_w),
        fifo: None,
        console: connect_console(opts, plan.terminal, id)?,
        stdio: [
            dup(&opts.stdin, "stdin")?,
            dup(&opts.stdout, "stdout")?,
            dup(&opts.stderr, "stderr")?,
        ],
        join,
        preserve: opts.preserve_fds,
        time_offsets: None,
        cgroup_join: Vec::new(),
    };
    let pid = launch(
        Launch {
            id,
            fds,
            p2c: p2c_w,
            c2p: c2p_r,
            flags: CloneFlags::empty(),
            cgroup: cgroup.as_deref(),
            maps: None,
            wait_ready: false,
        },
        |fds| process::exec_main(&plan, fds),
    )?;
    if let Some(pf) = &opts.pid_file {
        std::fs::write(pf, pid.to_string()).map_err(|e| RuntimeError::io(pf, "write", e))?;
    }
    Ok(ContainerProcess { pid })
}

//! The processes the runtime forks, and how they talk to it.
//!
//! `create`, `run` and `exec` all go through the same two steps. The runtime forks a helper
//! (single-threaded, so it may join namespaces and clone freely); the runtime moves the helper
//! into the container's cgroup; the helper joins namespaces given by path and clones the
//! container process with the new namespaces and CLONE_PARENT (so that process is the
//! runtime's child, which can wait for it), reports its pid and exits. The runtime writes the
//! user namespace's id maps, then lets the container process go on: mounts, pivot_root,
//! hostname, then the process settings (rlimits, user, cwd, capabilities, seccomp) and execve.
//! No re-exec of a big binary: a fork is enough, which keeps `run` fast.
//!
//! A message pipe carries the container process's pid, "ready" (create: set up and blocked on
//! the exec fifo) or an error with a Docker exit code; its write end is close-on-exec, so the
//! end of file after "go" means a successful execve.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, PosixRlimitType, Process};

use crate::rootfs::RootfsPlan;
use crate::security;

/// The largest message accepted on the sync pipe (error texts are short).
const MAX_MESSAGE: usize = 64 << 10;

/// An error inside a forked process, sent back to the runtime; `code` is the Docker exit code.
#[derive(Debug)]
pub(crate) struct ChildError {
    pub code: i32,
    pub message: String,
}

impl ChildError {
    pub fn sys(op: impl std::fmt::Display, errno: Errno) -> Self {
        ChildError {
            code: 125,
            message: format!("{op}: {}", errno.desc()),
        }
    }
    pub fn msg(message: impl Into<String>) -> Self {
        ChildError {
            code: 125,
            message: message.into(),
        }
    }
}

/// A message on the sync pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    Go,
    Pid(i32),
    Ready,
    Error { code: i32, message: String },
}

const TAG_GO: u8 = 1;
const TAG_PID: u8 = 2;
const TAG_READY: u8 = 3;
const TAG_ERROR: u8 = 4;

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn send(fd: &impl AsFd, msg: &Msg) -> nix::Result<()> {
    let (tag, payload) = match msg {
        Msg::Go => (TAG_GO, Vec::new()),
        Msg::Pid(p) => (TAG_PID, p.to_le_bytes().to_vec()),
        Msg::Ready => (TAG_READY, Vec::new()),
        Msg::Error { code, message } => {
            let mut v = code.to_le_bytes().to_vec();
            let text = message.as_bytes();
            v.extend_from_slice(
                text.get(..text.len().min(MAX_MESSAGE - 4))
                    .unwrap_or_default(),
            );
            (TAG_ERROR, v)
        }
    };
    let mut frame = vec![tag];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    write_all(fd.as_fd(), &frame)
}

/// Reads exactly `buf.len()` bytes, waiting at most `deadline`; `Ok(false)` on a clean end of
/// file before the first byte.
fn read_exact(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> Result<bool, String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the container process".into());
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {}", e.desc())),
        }
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match nix::unistd::read(fd, rest) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("message cut short".into()),
            Ok(n) => got += n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(format!("read: {}", e.desc())),
        }
    }
    Ok(true)
}

/// Receives one message; `Ok(None)` at end of file.
pub(crate) fn recv(fd: &impl AsFd, timeout: std::time::Duration) -> Result<Option<Msg>, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut head = [0u8; 5];
    if !read_exact(fd.as_fd(), &mut head, deadline)? {
        return Ok(None);
    }
    let [tag, l0, l1, l2, l3] = head;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!("message of {len} bytes exceeds {MAX_MESSAGE}"));
    }
    let mut payload = vec![0u8; len];
    if len > 0 && !read_exact(fd.as_fd(), &mut payload, deadline)? {
        return Err("message cut short".into());
    }
    let int = |p: &[u8]| -> Result<i32, String> {
        let b: [u8; 4] = p
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or("short message")?;
        Ok(i32::from_le_bytes(b))
    };
    Ok(Some(match tag {
        TAG_GO => Msg::Go,
        TAG_PID => Msg::Pid(int(&payload)?),
        TAG_READY => Msg::Ready,
        TAG_ERROR => Msg::Error {
            code: int(&payload)?,
            message: String::from_utf8_lossy(payload.get(4..).unwrap_or_default()).into_owned(),
        },
        other => return Err(format!("unknown message tag {other}")),
    }))
}

/// The container process's settings, prepared by the runtime before forking.
#[derive(Debug, Clone)]
pub(crate) struct ProcessPlan {
    pub args: Vec<CString>,
    pub arg0: String,
    pub env: Vec<CString>,
    pub path_var: String,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: u32,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub no_new_privs: bool,
    pub caps: Option<LinuxCapabilities>,
    pub seccomp: Option<LinuxSeccomp>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub oom_score_adj: Option<i32>,
    /// setgroups is denied in a user namespace whose maps an unprivileged user wrote.
    pub setgroups_denied: bool,
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} {s:?} contains a NUL byte"))
}

impl ProcessPlan {
    /// Checks and converts an OCI process; `seccomp` comes from the container's linux section.
    pub fn from_oci(
        p: &Process,
        seccomp: Option<LinuxSeccomp>,
        setgroups_denied: bool,
    ) -> Result<ProcessPlan, String> {
        let args = p.args().clone().unwrap_or_default();
        let arg0 = args
            .first()
            .cloned()
            .ok_or("process.args is empty: no command to run")?;
        let env_list = p.env().clone().unwrap_or_default();
        let path_var = env_list
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_string();
        if !p.cwd().is_absolute() {
            return Err(format!("process.cwd {:?} is not absolute", p.cwd()));
        }
        let user = p.user();
        let console_size = p.console_size().map(|b| {
            (
                u16::try_from(b.height()).unwrap_or(u16::MAX),
                u16::try_from(b.width()).unwrap_or(u16::MAX),
            )
        });
        Ok(ProcessPlan {
            args: args
                .iter()
                .map(|a| cstring(a, "argument"))
                .collect::<Result<_, _>>()?,
            arg0,
            env: env_list
                .iter()
                .map(|e| cstring(e, "environment variable"))
                .collect::<Result<_, _>>()?,
            path_var,
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022) & 0o777,
            rlimits: p
                .rlimits()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect(),
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            caps: p.capabilities().clone(),
            seccomp,
            terminal: p.terminal().unwrap_or(false),
            console_size,
            oom_score_adj: p.oom_score_adj(),
            setgroups_denied,
        })
    }
}

/// The descriptors a forked process needs; everything else the runtime had open is closed.
pub(crate) struct ChildFds {
    /// Read end: "go" from the runtime.
    pub p2c: OwnedFd,
    /// Write end: messages to the runtime (closed once "ready" is sent, or by execve).
    pub c2p: Option<OwnedFd>,
    /// The exec fifo (O_PATH), only for `create`.
    pub fifo: Option<OwnedFd>,
    /// A connected socket to send the pty master through (process.terminal).
    pub console: Option<OwnedFd>,
    pub stdio: [Option<OwnedFd>; 3],
    /// Namespaces to join before cloning.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Descriptors 3..3+preserve pass to the container untouched.
    pub preserve: u32,
    /// /proc/self/timens_offsets text for a new time namespace.
    pub time_offsets: Option<String>,
    /// cgroup files the helper writes "0" to before anything else, moving itself (and so the
    /// container process it clones) into the container's groups
    /// ([`crate::cgroups::CgroupManager::self_join_files`]). Made before the fork.
    pub cgroup_join: Vec<std::ffi::CString>,
}

impl ChildFds {
    fn keep(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = (0..3 + self.preserve as RawFd).collect();
        v.push(self.p2c.as_raw_fd());
        v.extend(self.c2p.as_ref().map(|f| f.as_raw_fd()));
        v.extend(self.fifo.as_ref().map(|f| f.as_raw_fd()));
        v.extend(self.console.as_ref().map(|f| f.as_raw_fd()));
        v.extend(self.stdio.iter().flatten().map(|f| f.as_raw_fd()));
        v.extend(self.join.iter().map(|(_, f)| f.as_raw_fd()));
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn close_range(first: u32, last: u32, flags: libc::c_uint) {
    // SAFETY: close_range only closes (or marks) descriptors of this process; the callers own
    // every descriptor in the range they pass (strays inherited from the runtime's threads).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, flags);
    }
}

/// Closes every descriptor not in `keep` (sorted): another thread of the runtime may have
/// opened pipes for another container; holding their write ends would stall that container's
/// end-of-file signal.
fn close_strays(keep: &[RawFd]) {
    let mut next: u32 = 0;
    for &fd in keep {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1, 0);
        }
        next = fd.saturating_add(1);
    }
    close_range(next, u32::MAX, 0);
}

fn report(fds: &ChildFds, e: &ChildError) -> ! {
    match &fds.c2p {
        Some(c2p) => {
            let _ = send(
                c2p,
                &Msg::Error {
                    code: e.code,
                    message: e.message.clone(),
                },
            );
        }
        None => {
            let line = format!("decant: {}\n", e.message);
            let _ = write_all(std::io::stderr().as_fd(), line.as_bytes());
        }
    }
    exit(e.code)
}

/// Ends a forked process without running the runtime's atexit handlers or destructors.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

fn wait_go(fd: &OwnedFd) -> Result<(), ChildError> {
    match recv(fd, std::time::Duration::from_secs(600)) {
        Ok(Some(Msg::Go)) => Ok(()),
        Ok(None) => exit(1), // the runtime gave up on us; nobody to report to
        Ok(Some(other)) => Err(ChildError::msg(format!(
            "unexpected message {other:?} from the runtime"
        ))),
        Err(e) => Err(ChildError::msg(format!("sync pipe: {e}"))),
    }
}

/// Moves this (single-threaded) process into the groups by writing "0" to each file.
fn join_cgroups(files: &[std::ffi::CString]) -> Result<(), ChildError> {
    for file in files {
        let fail = |e: nix::errno::Errno| {
            ChildError::msg(format!(
                "{}: join the container's cgroup: {}",
                file.to_string_lossy(),
                e.desc()
            ))
        };
        let fd = nix::fcntl::open(
            file.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail)?;
        nix::unistd::write(&fd, b"0").map_err(fail)?;
    }
    Ok(())
}

/// The helper's life: wait for "go", join namespaces, clone the container process, report its
/// pid. `body` is the container process's life and never returns.
pub(crate) fn helper(
    fds: ChildFds,
    flags: CloneFlags,
    body: impl FnOnce(ChildFds) -> Result<Infallible, ChildError>,
) -> ! {
    close_strays(&fds.keep());
    if let Err(e) = wait_go(&fds.p2c) {
        report(&fds, &e)
    }
    // Before joining namespaces: the paths are the runtime's, in its mount namespace.
    if let Err(e) = join_cgroups(&fds.cgroup_join) {
        report(&fds, &e)
    }
    if let Err((op, errno)) = crate::namespaces::join(&fds.join) {
        report(&fds, &ChildError::sys(op, errno))
    }
    // A process that changed its uid (a setuid caller, or root that dropped to a user) is not
    // dumpable, so its /proc files belong to root and the runtime could not write the new user
    // namespace's id maps. Dumpable until the maps are written, then restored (as runc does).
    let was_dumpable = nix::sys::prctl::get_dumpable().unwrap_or(true);
    let lift = !was_dumpable && flags.contains(CloneFlags::CLONE_NEWUSER);
    if lift {
        if let Err(e) = nix::sys::prctl::set_dumpable(true) {
            report(&fds, &ChildError::sys("PR_SET_DUMPABLE", e))
        }
    }
    // CLONE_NEWTIME shares its bit with the exit signal in clone(2): the helper unshares it
    // instead (it applies to the helper's children) and sets the offsets before any child.
    let mut flags = flags;
    let time = crate::namespaces::clone_flag(oci_spec::runtime::LinuxNamespaceType::Time);
    if flags.contains(time) {
        flags.remove(time);
        if let Err(e) = nix::sched::unshare(time) {
            report(&fds, &ChildError::sys("unshare the time namespace", e))
        }
        if let Some(text) = &fds.time_offsets {
            if let Err(e) = std::fs::write("/proc/self/timens_offsets", text) {
                report(
                    &fds,
                    &ChildError::msg(format!("/proc/self/timens_offsets: {e}")),
                )
            }
        }
    }
    match crate::namespaces::clone_child(flags) {
        Ok(0) => {
            let mut fds = fds;
            // The container process keeps no namespace fds of the host.
            fds.join.clear();
            if let Err(e) = wait_go(&fds.p2c) {
                report(&fds, &e)
            }
            if lift {
                if let Err(e) = nix::sys::prctl::set_dumpable(false) {
                    report(&fds, &ChildError::sys("PR_SET_DUMPABLE", e))
                }
            }
            match body(fds) {
                Ok(never) => match never {},
                Err(_) => exit(125), // body reports its own errors
            }
        }
        Ok(pid) => {
            if let Some(c2p) = &fds.c2p {
                let _ = send(c2p, &Msg::Pid(pid));
            }
            exit(0)
        }
        Err(e) => report(
            &fds,
            &ChildError::sys(format!("clone with flags {:#x}", flags.bits()), e),
        ),
    }
}

/// The container's init: its whole setup, then exec.
#[derive(Debug, Clone)]
pub(crate) struct InitPlan {
    pub rootfs: RootfsPlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctl: Vec<(String, String)>,
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
    pub user_ns: bool,
    /// A network namespace of its own: its `lo` is brought up, as runc and crun do.
    pub loopback: bool,
    pub process: ProcessPlan,
}

pub(crate) fn init_main(plan: &InitPlan, mut fds: ChildFds) -> Result<Infallible, ChildError> {
    match init_inner(plan, &mut fds) {
        Ok(never) => match never {},
        Err(e) => report(&fds, &e),
    }
}

fn init_inner(plan: &InitPlan, fds: &mut ChildFds) -> Result<Infallible, ChildError> {
    if plan.user_ns {
        // The runtime's uid may be unmapped (root mapping a range): become the namespace's root.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| ChildError::sys("setresgid 0 in the user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| ChildError::sys("setresuid 0 in the user namespace", e))?;
    }
    nix::unistd::setsid().map_err(|e| ChildError::sys("setsid", e))?;
    setup_stdio(fds)?;
    nix::sys::stat::umask(Mode::empty());
    if plan.loopback {
        crate::loopback::loopback_up().map_err(ChildError::msg)?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h)
            .map_err(|e| ChildError::sys(format!("sethostname {h:?}"), e))?;
    }
    if let Some(d) = &plan.domainname {
        let c = cstring(d, "domainname").map_err(ChildError::msg)?;
        // SAFETY: setdomainname reads `len` bytes from a valid NUL-terminated buffer.
        let ret = unsafe { libc::setdomainname(c.as_ptr(), d.len()) };
        if ret < 0 {
            return Err(ChildError::sys(
                format!("setdomainname {d:?}"),
                Errno::last(),
            ));
        }
    }
    // Kept across pivot_root to reopen the exec fifo through /proc/self/fd even when the
    // container has no /proc; close-on-exec, so the container's program never sees it.
    let host_proc = match &fds.fifo {
        Some(_) => Some(
            nix::fcntl::open(
                "/proc",
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ChildError::sys("open /proc", e))?,
        ),
        None => None,
    };
    crate::rootfs::setup(&plan.rootfs)?;
    for (key, value) in &plan.sysctl {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value)
            .map_err(|e| ChildError::msg(format!("sysctl {key}={value}: {path}: {e}")))?;
    }
    if !plan.masked.is_empty() || !plan.readonly.is_empty() {
        security::apply_masks(&plan.masked, &plan.readonly)
            .map_err(|e| ChildError::msg(e.to_string()))?;
    }
    if plan.process.terminal {
        setup_console(&plan.process, fds)?;
    }
    if plan.rootfs.readonly {
        crate::rootfs::readonly_root(plan.user_ns)?;
    }
    finalize(&plan.process, fds, host_proc)
}

/// `exec`: the namespaces are joined already (by the helper).
pub(crate) fn exec_main(plan: &ProcessPlan, mut fds: ChildFds) -> Result<Infallible, ChildError> {
    let r = (|| {
        nix::unistd::setsid().map_err(|e| ChildError::sys("setsid", e))?;
        setup_stdio(&mut fds)?;
        if plan.terminal {
            setup_console(plan, &mut fds)?;
        }
        finalize(plan, &mut fds, None)
    })();
    match r {
        Ok(never) => match never {},
        Err(e) => report(&fds, &e),
    }
}

fn setup_stdio(fds: &mut ChildFds) -> Result<(), ChildError> {
    // Duplicate all three out of the way first: a given fd may itself be 0, 1 or 2.
    let mut moved = Vec::new();
    for (target, fd) in fds.stdio.iter_mut().enumerate() {
        if let Some(fd) = fd.take() {
            let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                .map_err(|e| ChildError::sys("dup stdio", e))?;
            moved.push((target as RawFd, high));
        }
    }
    for (target, high) in moved {
        // SAFETY: dup2 onto 0..=2 replaces the process's own standard descriptors; `high` is a
        // valid descriptor we own and close right after.
        let ret = unsafe { libc::dup2(high, target) };
        if ret < 0 {
            return Err(ChildError::sys(
                format!("dup2 onto fd {target}"),
                Errno::last(),
            ));
        }
        let _ = nix::unistd::close(high);
    }
    Ok(())
}

fn setup_console(p: &ProcessPlan, fds: &mut ChildFds) -> Result<(), ChildError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let sock = fds
        .console
        .take()
        .ok_or_else(|| ChildError::msg("process.terminal is set but there is no console socket"))?;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| ChildError::sys("open /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| ChildError::sys("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| ChildError::sys("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| ChildError::sys("ptsname", e))?;
    let slave: OwnedFd = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ChildError::sys(format!("open {name}"), e))?;
    if let Some((rows, cols)) = p.console_size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct from a valid pointer.
        unsafe {
            libc::ioctl(
                slave.as_raw_fd(),
                libc::TIOCSWINSZ,
                &ws as *const libc::winsize,
            )
        };
    }
    let raw = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| ChildError::sys("send the pty master to the console socket", e))?;
    drop(master);
    drop(sock);
    for target in 0..3 {
        // SAFETY: as in setup_stdio; `slave` stays open until after the loop.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(ChildError::sys(
                format!("dup2 the pty onto fd {target}"),
                Errno::last(),
            ));
        }
    }
    // SAFETY: TIOCSCTTY takes an int argument; we are a session leader (setsid above).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(ChildError::sys(
            "make the pty the controlling terminal",
            Errno::last(),
        ));
    }
    Ok(())
}

fn not_found(p: &ProcessPlan) -> ChildError {
    ChildError {
        code: 127,
        message: format!("exec: {:?}: executable file not found in $PATH", p.arg0),
    }
}

/// Finds the program like execvp, with the container's PATH, and turns the usual failures
/// into Docker's messages and exit codes (127 not found, 126 not executable).
fn lookup(p: &ProcessPlan) -> Result<CString, ChildError> {
    use std::os::unix::fs::PermissionsExt;
    let check = |path: &str| -> Result<CString, ChildError> {
        let c = cstring(path, "program").map_err(ChildError::msg)?;
        let meta = std::fs::metadata(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            ChildError {
                code,
                message: format!(
                    "exec: {:?}: stat {path}: {}",
                    p.arg0,
                    Errno::from_raw(e.raw_os_error().unwrap_or(0))
                        .desc()
                        .to_lowercase()
                ),
            }
        })?;
        if meta.is_dir()
            || meta.permissions().mode() & 0o111 == 0
            || nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_err()
        {
            return Err(ChildError {
                code: 126,
                message: format!("exec: {:?}: permission denied", p.arg0),
            });
        }
        Ok(c)
    };
    if p.arg0.is_empty() {
        return Err(not_found(p));
    }
    if p.arg0.contains('/') {
        return check(&p.arg0);
    }
    for dir in p.path_var.split(':').take(1024) {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{}", dir.trim_end_matches('/'), p.arg0);
        if let Ok(c) = check(&candidate) {
            return Ok(c);
        }
    }
    Err(not_found(p))
}

/// The process settings, in the order the kernel's rules require, then (create) the wait on
/// the exec fifo, seccomp last, and execve.
fn finalize(
    p: &ProcessPlan,
    fds: &mut ChildFds,
    host_proc: Option<OwnedFd>,
) -> Result<Infallible, ChildError> {
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| ChildError::msg(format!("/proc/self/oom_score_adj: {e}")))?;
    }
    for (res, soft, hard) in &p.rlimits {
        nix::sys::resource::setrlimit(*res, *soft, *hard)
            .map_err(|e| ChildError::sys(format!("setrlimit {res:?}"), e))?;
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
    let seccomp_early = !p.no_new_privs;
    if let (Some(profile), true) = (&p.seccomp, seccomp_early) {
        security::install_seccomp(profile).map_err(|e| ChildError::msg(e.to_string()))?;
    }
    if !p.setgroups_denied {
        let groups: Vec<Gid> = p.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| ChildError::sys("setgroups", e))?;
    } else if !p.groups.is_empty() {
        return Err(ChildError::msg(
            "additional groups cannot be set in a user namespace mapped without newgidmap",
        ));
    }
    if p.caps.is_some() {
        // Keep the permitted set across setuid; apply_capabilities then sets every set.
        nix::sys::prctl::set_keepcaps(true).map_err(|e| ChildError::sys("PR_SET_KEEPCAPS", e))?;
    }
    nix::unistd::setresgid(
        Gid::from_raw(p.gid),
        Gid::from_raw(p.gid),
        Gid::from_raw(p.gid),
    )
    .map_err(|e| ChildError::sys(format!("setresgid {}", p.gid), e))?;
    nix::unistd::setresuid(
        Uid::from_raw(p.uid),
        Uid::from_raw(p.uid),
        Uid::from_raw(p.uid),
    )
    .map_err(|e| ChildError::sys(format!("setresuid {}", p.uid), e))?;
    if let Some(caps) = &p.caps {
        security::apply_capabilities(caps).map_err(|e| ChildError::msg(e.to_string()))?;
    }
    nix::unistd::chdir(&p.cwd)
        .map_err(|e| ChildError::sys(format!("chdir to cwd {:?} set in config.json", p.cwd), e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(p.umask));
    let exe = lookup(p)?;
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| ChildError::sys("PR_SET_NO_NEW_PRIVS", e))?;
    }
    if let Some(fifo) = fds.fifo.take() {
        if let Some(c2p) = fds.c2p.take() {
            send(&c2p, &Msg::Ready).map_err(|e| ChildError::sys("report ready", e))?;
        }
        let proc =
            host_proc.ok_or_else(|| ChildError::msg("no /proc to reopen the exec fifo through"))?;
        let path = format!("self/fd/{}", fifo.as_raw_fd());
        // Blocks until `start` opens the fifo for reading.
        let w = nix::fcntl::openat(
            &proc,
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ChildError::sys("open the exec fifo", e))?;
        write_all(w.as_fd(), b"0").map_err(|e| ChildError::sys("write the exec fifo", e))?;
    }
    if let (Some(profile), false) = (&p.seccomp, seccomp_early) {
        security::install_seccomp(profile).map_err(|e| ChildError::msg(e.to_string()))?;
    }
    close_range(3 + fds.preserve, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    let err = match nix::unistd::execve(&exe, &p.args, &p.env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let code = match err {
        Errno::ENOENT => 127,
        _ => 126,
    };
    Err(ChildError {
        code,
        message: format!("exec: {:?}: {}", p.arg0, err.desc().to_lowercase()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let t = std::time::Duration::from_secs(1);
        for m in [
            Msg::Go,
            Msg::Pid(42),
            Msg::Ready,
            Msg::Error {
                code: 127,
                message: "nope".into(),
            },
        ] {
            send(&w, &m).unwrap();
            assert_eq!(recv(&r, t).unwrap(), Some(m));
        }
        drop(w);
        assert_eq!(recv(&r, t).unwrap(), None);
    }

    #[test]
    fn hostile_messages_are_errors() {
        let t = std::time::Duration::from_secs(1);
        for bytes in [
            &[9u8, 0, 0, 0, 0][..],
            &[4, 0xff, 0xff, 0xff, 0x7f],
            &[2, 4, 0, 0],
            &[2, 2, 0, 0, 0, 1, 2],
        ] {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
            write_all(w.as_fd(), bytes).unwrap();
            drop(w);
            assert!(recv(&r, t).is_err(), "{bytes:?}");
        }
        // A silent peer times out instead of hanging.
        let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        assert!(recv(&r, std::time::Duration::from_millis(50)).is_err());
    }
}

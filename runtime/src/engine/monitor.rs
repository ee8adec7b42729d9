//! The per-container monitor (Podman's conmon, in-process): a double-forked copy of the
//! starting command (named `decant-monitor`), or `decant __monitor` when the starter has
//! threads (see `Engine::start`), so a container outlives the command that started it.
//! It mounts the overlay root, creates the OCI container with pipes for stdout/stderr, brings
//! `lo` up in a private network namespace, starts it, writes the log as JSON lines, waits,
//! records the exit code and finish time, cleans up (runtime state, cgroup, mount) and removes
//! the container when asked to (`--rm`), or starts it again as its restart policy says
//! (after a doubling back-off, with the same upper dir). While the container runs, a thread
//! runs its HEALTHCHECK (see `health`). It reports `started <pid>` / `error <code> <msg>` /
//! `exit <code>` lines on the status pipe its starter reads.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{
    io_err, report, restart, time, Container, Engine, EngineError, LogLine, NetworkMode, Status,
    LOG,
};

/// The longest log entry; longer output is split into several entries (as Docker, 16 KiB).
const MAX_ENTRY: usize = 16 << 10;
/// The overlay mount's option string must fit in one page.
const MAX_MOUNT_DATA: usize = 4000;

/// Unmounts the container's root at `merged` if mounted (lazily: a process still inside does
/// not block it) and removes the empty mountpoint. A rootless user's overlay lives in its
/// monitor's mount namespace and goes with it; on the host such a user may unmount nothing
/// (EPERM), and has nothing to unmount.
pub fn unmount(merged: &Path) -> Result<(), EngineError> {
    match nix::mount::umount2(merged, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(Errno::EPERM) if !super::running_as_root() => {}
        Err(e) => return Err(io_err(merged, "unmount")(std::io::Error::from(e))),
    }
    let _ = std::fs::remove_dir(merged);
    Ok(())
}

/// Mounts the overlay of the lower dirs (bottom first in the config) with the container's
/// upper and work dirs at `merged` (under the runtime root, see `Engine::merged_dir`).
/// Rootless, where overlay is refused, the root is a copy of the layers instead (see
/// `copyroot`), kept for later starts; the note saying so comes back beside the root's path
/// on the start that made it.
fn mount_root(
    c: &Container,
    dir: &Path,
    merged: PathBuf,
) -> Result<(std::path::PathBuf, Option<String>), EngineError> {
    if let Some(copy) = super::copyroot::existing(dir) {
        return Ok((copy, None));
    }
    unmount(&merged)?;
    std::fs::create_dir_all(&merged).map_err(io_err(&merged, "create"))?;
    let mut lower = String::new();
    for l in c.config.lower_dirs.iter().rev() {
        let s = l.to_str().filter(|s| !s.contains([':', ',']));
        let Some(s) = s else {
            return Err(EngineError::Invalid(format!(
                "layer directory {}: a path overlay cannot take (':' or ',')",
                l.display()
            )));
        };
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(s);
    }
    // A `--rm` container's upper dir is thrown away when it exits, so its overlay is
    // `volatile` (as Podman mounts them): no sync of the whole host filesystem at unmount,
    // which costs milliseconds on an idle disk and far more on a busy one. Overlay refuses a
    // second mount over the marker a volatile mount leaves; this container's data needs no
    // such protection, so a marker from an earlier start goes.
    let volatile = c.config.auto_remove;
    if volatile {
        let _ = std::fs::remove_dir_all(dir.join("work/work/incompat"));
    }
    // Inside a user namespace overlay keeps its whiteouts and opaque marks in `user.overlay.`
    // xattrs (`userxattr`), which is what the cache's rootless unpack writes.
    let rootless = super::in_user_namespace();
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}{}{}",
        dir.join("upper").display(),
        dir.join("work").display(),
        if rootless { ",userxattr" } else { "" },
        if volatile { ",volatile" } else { "" }
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(EngineError::Invalid(format!(
            "container {}: {} layers make overlay options longer than {MAX_MOUNT_DATA} bytes",
            c.id,
            c.config.lower_dirs.len()
        )));
    }
    let disabled = rootless && super::copyroot::overlay_disabled();
    let mounted = if disabled {
        Err(Errno::EPERM)
    } else {
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
    };
    match mounted {
        Ok(()) => Ok((merged, None)),
        Err(e) if rootless => {
            let copy = super::copyroot::make(dir, &c.config.lower_dirs)?;
            let why = if disabled {
                "DECANT_NO_OVERLAY=1".to_string()
            } else {
                e.to_string()
            };
            Ok((
                copy.clone(),
                Some(format!(
                    "rootless: overlay refused ({why}); container {} runs on a copy of its layers in {}",
                    c.name,
                    copy.display()
                )),
            ))
        }
        Err(e) => Err(io_err(&merged, "mount overlay")(std::io::Error::from(e))),
    }
}

/// Rootless: moves this monitor into a user namespace of its own, where the user is root,
/// and a mount namespace owned by it, so that it can mount the container's overlay (which the
/// host refuses to a plain user) and make the container's namespaces. The ids mapped are the
/// user's own, plus its /etc/subuid and /etc/subgid ranges when it has them (see `userns`).
/// The mounts made here vanish with the namespace: nothing is left on the host.
fn enter_user_namespace() -> Result<(), String> {
    crate::userns::IdMap::current().enter(nix::sched::CloneFlags::CLONE_NEWNS)
}

/// Appends JSON log lines; a partial line is held until its newline, EOF or 16 KiB.
struct LogWriter {
    file: std::fs::File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    fn entry(&mut self, stream: usize, bytes: &[u8]) {
        let line = LogLine {
            time: time::rfc3339(time::now()),
            stream: if stream == 0 { "stdout" } else { "stderr" }.to_string(),
            log: String::from_utf8_lossy(bytes).into_owned(),
        };
        if let Ok(mut j) = serde_json::to_vec(&line) {
            j.push(b'\n');
            // A full disk loses log lines, never the container.
            let _ = self.file.write_all(&j);
        }
    }

    fn feed(&mut self, stream: usize, data: &[u8]) {
        let Some(p) = self.pending.get_mut(stream) else {
            return;
        };
        p.extend_from_slice(data);
        let mut buf = std::mem::take(p);
        let mut start = 0;
        while let Some(i) = buf
            .get(start..)
            .and_then(|r| r.iter().position(|b| *b == b'\n'))
        {
            let end = start + i + 1;
            self.entry(stream, buf.get(start..end).unwrap_or_default());
            start = end;
        }
        while buf.len() - start >= MAX_ENTRY {
            self.entry(
                stream,
                buf.get(start..start + MAX_ENTRY).unwrap_or_default(),
            );
            start += MAX_ENTRY;
        }
        buf.drain(..start);
        if let Some(p) = self.pending.get_mut(stream) {
            *p = buf;
        }
    }

    fn flush(&mut self, stream: usize) {
        let rest = self
            .pending
            .get_mut(stream)
            .map(std::mem::take)
            .unwrap_or_default();
        if !rest.is_empty() {
            self.entry(stream, &rest);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Invalid(format!("pipe: {e}")))
}

/// How long after the start the monitor first releases its code pages.
const FIRST_RELEASE_MS: u16 = 1_000;
/// How long the output must stay quiet before the monitor releases its code pages again.
const QUIET_MS: u16 = 10_000;

/// Copies the container's output into the log until both pipes close.
fn pump(out: OwnedFd, err: OwnedFd, log: &mut LogWriter) {
    let mut open = [Some(out), Some(err)];
    let mut buf = vec![0u8; 64 << 10];
    // From here on the monitor only pumps output and waits: one second in (a container that
    // ends sooner never pays for it) it lets go of the code it ran to start the container, and
    // again after every quiet spell that follows output (log lines, JSON and timestamps bring
    // code back into the resident set).
    let mut wrote = true;
    let mut quiet = FIRST_RELEASE_MS;
    while open.iter().any(Option::is_some) {
        let ready: Vec<usize> = {
            let idx: Vec<usize> = (0..open.len())
                .filter(|i| matches!(open.get(*i), Some(Some(_))))
                .collect();
            let mut pfds: Vec<PollFd> = open
                .iter()
                .flatten()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            let wait = if wrote {
                PollTimeout::from(quiet)
            } else {
                PollTimeout::NONE
            };
            match nix::poll::poll(&mut pfds, wait) {
                Ok(0) => {
                    super::memory::release_code();
                    wrote = false;
                    quiet = QUIET_MS;
                    continue;
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            idx.into_iter()
                .zip(&pfds)
                .filter(|(_, p)| !p.revents().unwrap_or(PollFlags::empty()).is_empty())
                .map(|(i, _)| i)
                .collect()
        };
        for i in ready {
            let got = match open.get(i) {
                Some(Some(fd)) => nix::unistd::read(fd, &mut buf),
                _ => continue,
            };
            match got {
                Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => {
                    log.flush(i);
                    if let Some(slot) = open.get_mut(i) {
                        *slot = None;
                    }
                }
                Ok(n) => {
                    wrote = true;
                    log.feed(i, buf.get(..n).unwrap_or_default());
                }
                Err(_) => {}
            }
        }
    }
}

/// The `oom_kill` count of the container's memory cgroup: v1 `memory.oom_control`, v2
/// `memory.events` (0 when neither is readable, e.g. no memory controller).
fn oom_kills(id: &str) -> u64 {
    let Ok(m) = crate::cgroups::manager_for(id) else {
        return 0;
    };
    let mut total = 0u64;
    for dir in m.paths() {
        for file in ["memory.oom_control", "memory.events"] {
            let Ok(f) = std::fs::File::open(dir.join(file)) else {
                continue;
            };
            let mut text = String::new();
            if std::io::Read::read_to_string(&mut std::io::Read::take(f, 64 << 10), &mut text)
                .is_err()
            {
                continue;
            }
            let n = text
                .lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .fold(0u64, u64::saturating_add);
            total = total.saturating_add(n);
        }
    }
    total
}

fn wait_init(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// What `launch` started.
struct Launched {
    pid: i32,
    /// The process's output: stdout and stderr pipes, or (`-t`) the pty master and a pipe
    /// already at its end.
    out: OwnedFd,
    err: OwnedFd,
    forwarder: super::ports::Forwarder,
    /// `-t -i`: the thread feeding the user's input to the pty, and the pipe end whose
    /// closing stops it.
    relay: Option<(OwnedFd, std::thread::JoinHandle<()>)>,
    /// `-i` started without input: the writer of the process's stdin pipe, held open.
    held_stdin: Option<OwnedFd>,
    /// What the starter should tell the user (the copy fallback).
    note: Option<String>,
}

/// Creates and starts the OCI container; returns its init pid, its output and the port
/// forwarder (bound before anything else, so a taken port changes nothing).
fn launch(
    engine: &Engine,
    c: &Container,
    dir: &Path,
    log: &mut LogWriter,
    stdin: Option<OwnedFd>,
    console_size: Option<(u16, u16)>,
) -> Result<Launched, EngineError> {
    let bound = if c.config.network == NetworkMode::Private {
        super::ports::bind(&c.config.ports)?
    } else {
        super::ports::Bound::default()
    };
    let (merged, note) = mount_root(c, dir, engine.merged_dir(&c.id))?;
    super::volumes::populate(&merged, &c.config.volumes)?;
    let mut spec = super::build_spec(&c.config, dir, &merged)?;
    if let (true, Some((rows, cols)), Some(p)) =
        (c.config.tty, console_size, spec.process_mut().as_mut())
    {
        p.set_console_size(Some(super::tty::console_box(rows, cols)?));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let null = || -> Result<OwnedFd, EngineError> {
        Ok(std::fs::File::open("/dev/null")
            .map_err(io_err(Path::new("/dev/null"), "open"))?
            .into())
    };
    // With a pty the runtime puts its slave on 0, 1 and 2; the user's input goes through
    // the master instead.
    let mut held_stdin = None;
    let (container_stdin, input) = match (c.config.tty, stdin) {
        (false, Some(fd)) => (fd, None),
        // `-i` without input of its own: a pipe whose writer this monitor holds until the
        // process exits, so its reads block as on an idle terminal instead of ending.
        (false, None) if c.config.open_stdin => {
            let (r, w) = pipe()?;
            held_stdin = Some(w);
            (r, None)
        }
        (_, input) => (null()?, input),
    };
    let console = if c.config.tty {
        Some(super::tty::console_listener(
            engine.runtime_root().path(),
            &c.id,
        )?)
    } else {
        None
    };
    let opts = crate::CreateOptions {
        stdin: Some(container_stdin),
        stdout: Some(out_w),
        stderr: Some(err_w),
        console_socket: console.as_ref().map(|(_, p)| p.clone()),
        ..Default::default()
    };
    let rt = engine.runtime_root();
    // A leftover from a crash of an earlier monitor of this container.
    let _ = crate::delete(rt, &c.id, true);
    // The spec goes to the runtime in process (no config.json written and parsed back). With
    // no port to forward nothing has to happen between setup and exec, so the runtime's
    // one-step `run` spares the exec fifo's round trip; forwarding needs the network
    // namespace before the process runs, so `create`, then `start` once it is in place.
    let direct = bound.is_empty();
    let created = if direct {
        crate::run_with_spec(rt, &c.id, dir, spec, &opts).map(|p| p.pid())
    } else {
        crate::create_with_spec(rt, &c.id, dir, spec, &opts).map(|s| s.pid().unwrap_or(0))
    };
    drop(opts);
    let master = match (&console, &created) {
        (Some((l, p)), Ok(pid)) => {
            let m = super::tty::receive_master(l, p);
            let _ = std::fs::remove_file(p);
            match m {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = crate::delete(rt, &c.id, true);
                    let _ = wait_init(*pid);
                    return Err(e);
                }
            }
        }
        (Some((_, p)), Err(_)) => {
            let _ = std::fs::remove_file(p);
            None
        }
        _ => None,
    };
    let pid = created?;
    let started = (|| {
        let forwarder = bound.forward(pid)?;
        if !direct {
            crate::start(rt, &c.id)?;
        }
        Ok(forwarder)
    })();
    match started {
        Ok(forwarder) => {
            let Some(master) = master else {
                return Ok(Launched {
                    pid,
                    out: out_r,
                    err: err_r,
                    forwarder,
                    relay: None,
                    held_stdin,
                    note,
                });
            };
            // Nothing is written to the pipes under a pty: only the master carries output.
            drop(err_r);
            let (_, done) = pipe()?;
            let relay = match input {
                Some(input) => {
                    let (stop_r, stop_w) = pipe()?;
                    let to_master = master
                        .try_clone()
                        .map_err(io_err(Path::new("pty master"), "dup"))?;
                    let t = std::thread::spawn(move || {
                        super::tty::relay_input(input, to_master, stop_r)
                    });
                    Some((stop_w, t))
                }
                None => None,
            };
            drop(out_r);
            Ok(Launched {
                pid,
                out: master,
                err: done,
                forwarder,
                relay,
                held_stdin,
                note,
            })
        }
        Err(e) => {
            let _ = crate::delete(rt, &c.id, true);
            let _ = wait_init(pid);
            log.flush(0);
            Err(e)
        }
    }
}

/// The monitor's whole life for container `id` of the store at `store_root`; `status` is the
/// pipe to the starter. Returns the monitor's exit code.
pub fn run(store_root: &Path, id: &str, status: Option<OwnedFd>) -> i32 {
    run_with(store_root, id, status, super::StartOptions::default())
}

/// `run`, with `opts.stdin` as the standard input of the container's first process
/// (`run -i`), and `opts.console_size` as its pty's size (`-t`). The monitor keeps no copy of
/// the input once the first process is gone, so the writer sees the reader go.
pub fn run_with(
    store_root: &Path,
    id: &str,
    status: Option<OwnedFd>,
    opts: super::StartOptions,
) -> i32 {
    let mut stdin = opts.stdin;
    let mut status = status.map(std::fs::File::from);
    // Before anything else: the engine's runtime root is chosen by the host uid, and
    // unshare(CLONE_NEWUSER) needs this process to be single-threaded (it is: forked or
    // freshly executed).
    let engine = Engine::new(store_root);
    if !super::running_as_root() {
        if let Err(e) = enter_user_namespace() {
            report(&mut status, &format!("error 125 container {id}: {e}\n"));
            return 125;
        }
    }
    let mut c = match engine.load_raw(id) {
        Ok(c) => c,
        Err(e) => {
            report(&mut status, &format!("error 125 {e}\n"));
            return 125;
        }
    };
    let Ok(dir) = engine.container_dir(id) else {
        return 125;
    };
    let log_path = dir.join(LOG);
    let file = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            report(
                &mut status,
                &format!("error 125 {}: open: {e}\n", log_path.display()),
            );
            return 125;
        }
    };
    let mut log = LogWriter {
        file,
        pending: [Vec::new(), Vec::new()],
    };
    let me = std::process::id() as i32;
    c.monitor_pid = me;
    c.monitor_start = crate::state::proc_stat(me)
        .map(|s| s.start_time)
        .unwrap_or(0);
    // A failed start is reported once the record is saved, so the starter (`run` cleaning up
    // after a taken port) never races this process's last writes.
    let mut failed = None;
    // An explicit start begins a new count, as Docker.
    c.restart_count = 0;
    let mut delay = restart::BACKOFF_START;
    let code = loop {
        let began = std::time::Instant::now();
        let (code, launched) =
            match launch(&engine, &c, &dir, &mut log, stdin.take(), opts.console_size) {
                Ok(Launched {
                    pid,
                    out,
                    err,
                    forwarder,
                    relay,
                    held_stdin,
                    note,
                }) => {
                    if let Some(n) = note {
                        report(&mut status, &format!("note {}\n", n.replace('\n', " ")));
                    }
                    c.status = Status::Running;
                    c.pid = pid;
                    c.ports = forwarder.mappings().to_vec();
                    c.started_at = Some(time::now());
                    c.finished_at = None;
                    c.exit_code = None;
                    c.error = None;
                    // Before the start is reported, so `ps` right after `run -d` already
                    // shows `(health: starting)`.
                    let checker = super::health::start(store_root, &c);
                    if let Err(e) = engine.save(&c) {
                        let _ =
                            crate::kill(engine.runtime_root(), id, crate::Signal::SIGKILL, true);
                        report(&mut status, &format!("error 125 {e}\n"));
                    } else {
                        report(&mut status, &format!("started {pid}\n"));
                    }
                    c.oom_killed = false;
                    pump(out, err, &mut log);
                    let code = wait_init(pid);
                    drop(held_stdin);
                    if let Some(checker) = checker {
                        checker.stop();
                    }
                    if let Some((stop, thread)) = relay {
                        drop(stop);
                        let _ = thread.join();
                    }
                    // Read before `delete` removes the cgroup with its counter (a `--rm`
                    // container's record goes: nobody would read it).
                    if !c.config.auto_remove {
                        c.oom_killed = oom_kills(id) > 0;
                    }
                    // The host ports are free before the record says the container stopped.
                    forwarder.stop();
                    c.ports.clear();
                    // A `--rm` container is deleted after its starter has the exit code.
                    if !c.config.auto_remove {
                        let _ = crate::delete(engine.runtime_root(), id, true);
                    }
                    c.exit_code = Some(code);
                    (code, true)
                }
                Err(e) => {
                    let code = e.exit_code();
                    let msg = e.to_string().replace('\n', " ");
                    failed = Some(format!("error {code} {msg}\n"));
                    c.error = Some(msg);
                    c.exit_code = Some(code);
                    (code, false)
                }
            };
        if !c.config.auto_remove {
            let _ = unmount(&engine.merged_dir(id));
        }
        c.pid = 0;
        c.finished_at = Some(time::now());
        // A first start that fails is the starter's error to show, never a restart loop.
        let first_failed = !launched && c.restart_count == 0;
        let stopped = restart::stopped_by_user(&dir);
        if first_failed
            || !c
                .config
                .restart
                .should_restart(code, c.restart_count, stopped)
        {
            break code;
        }
        c.status = Status::Restarting;
        c.restart_count = c.restart_count.saturating_add(1);
        if engine.save(&c).is_err() {
            break code;
        }
        // A foreground `run` ends with the first exit, as Docker's; restarts go on detached.
        report(&mut status, &format!("exit {code}\n"));
        status = None;
        if began.elapsed() >= restart::BACKOFF_RESET {
            delay = restart::BACKOFF_START;
        }
        let waited = restart::backoff_wait(&dir, delay);
        delay = restart::next_backoff(delay, std::time::Duration::ZERO);
        if !waited {
            break code;
        }
    };
    c.status = Status::Exited;
    c.pid = 0;
    if c.config.auto_remove {
        // `--rm`: the container leaves the store in one rename, the starter hears the exit
        // code and returns, and only then go its runtime state, cgroups, mount and files
        // (the slow part), so a foreground `run --rm` does not wait for them.
        // The final record first: `wait` and `stop` read the exit code from it (under its
        // hidden name, see `Engine::wait_exit`) until the files are gone.
        let _ = engine.save(&c);
        let hidden = engine.hide(id).ok().flatten();
        engine.remove_anonymous_volumes(&c);
        if let Some(f) = failed {
            report(&mut status, &f);
        }
        report(&mut status, &format!("exit {code}\n"));
        drop(status);
        let _ = crate::delete(engine.runtime_root(), id, true);
        let left = hidden.unwrap_or(dir);
        let _ = unmount(&engine.merged_dir(id));
        let _ = super::remove_tree(&left);
        return 0;
    }
    let saved = engine.save(&c);
    if let Some(f) = failed {
        report(&mut status, &f);
    }
    if saved.is_ok() {
        report(&mut status, &format!("exit {code}\n"));
    }
    // The pipe closes when this process exits, not before: the starter waits for that end
    // of file to know that no monitor is left (see `Engine::run_attached_with`).
    std::mem::forget(status);
    0
}

//! One service and its state machine, with supervisord's states and semantics (STOPPED,
//! STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL), extended with what systemd units and
//! runit directories need: start helpers (ExecStartPre/Post, ExecStop), readiness (forking,
//! oneshot, notify), fixed restart delays, start limits and runit's `finish` script.
//!
//! Every source (supervisord, runit, systemd, the tini-style main command) is translated into one
//! [`Spec`]; the event loop in `pid1.rs` drives [`Service`] with exits, timers and requests.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::log::{self, Relay};

/// Where a service definition came from (shown by `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Main,
    Runit,
    Supervisord,
    Systemd,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Main => "main",
            Source::Runit => "runit",
            Source::Supervisord => "supervisord",
            Source::Systemd => "systemd",
        }
    }
}

/// supervisord's process states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }
}

/// When a process that ended on its own is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    /// supervisord's `unexpected`: the exit code is not in `exitcodes`.
    Unexpected,
    OnFailure,
    OnAbnormal,
    OnSuccess,
}

/// How readiness is known (systemd's Type=; everything else is `Simple`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Simple,
    Forking { pidfile: Option<PathBuf> },
    Oneshot { remain: bool },
    Notify,
}

/// One command line: argv, an optional argv[0] (systemd's `@`), and whether failure is ignored
/// (systemd's `-`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub arg0: Option<String>,
    pub ignore_failure: bool,
}

impl Cmd {
    pub fn new(argv: Vec<String>) -> Cmd {
        Cmd {
            argv,
            ..Cmd::default()
        }
    }
}

/// Where a service's stdout or stderr goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Through the init, each line prefixed with the service name.
    Relay,
    /// The init's own stdout (1) or stderr (2), as is: `/dev/stdout` needs no rotation.
    Inherit(i32),
    File(PathBuf),
    Null,
    /// The write end of the runit log pipe with this index.
    Pipe(usize),
}

/// Where a service's stdin comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Null,
    Inherit,
    /// The read end of the runit log pipe with this index.
    Pipe(usize),
}

/// A resolved account from the image's /etc/passwd and /etc/group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Everything needed to run one service, whatever its source.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub source: Source,
    /// The file that defined it, for messages.
    pub origin: PathBuf,
    pub pre: Vec<Cmd>,
    pub start: Cmd,
    pub post: Vec<Cmd>,
    pub stop_cmds: Vec<Cmd>,
    pub reload_cmds: Vec<Cmd>,
    /// runit's `finish`, called with the exit code and signal.
    pub finish: Option<PathBuf>,
    pub kind: Kind,
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    pub user: Option<User>,
    pub autostart: bool,
    pub restart: Restart,
    pub exitcodes: Vec<i32>,
    pub startsecs: u64,
    pub startretries: u32,
    /// systemd's RestartSec= (and 0 for supervisord's immediate restart of an EXITED process).
    pub restart_delay: Duration,
    /// runit's rule: at most one start a second.
    pub min_interval: Duration,
    /// systemd's start limit: at most `burst` starts in `interval`, then FATAL.
    pub start_limit: Option<(u32, Duration)>,
    pub stopsignal: Signal,
    pub stopwait: Duration,
    pub stopasgroup: bool,
    pub killasgroup: bool,
    pub priority: i32,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    pub redirect_stderr: bool,
    /// Names of services this one starts after (systemd After=, reversed Before=, Requires=).
    pub after: Vec<String>,
    /// Directories created under `<root>/run` before the start (systemd RuntimeDirectory=).
    pub runtime_dirs: Vec<PathBuf>,
    /// Why this service cannot run (a configuration error): it stays FATAL with this reason.
    pub broken: Option<String>,
}

impl Spec {
    /// A spec with supervisord's defaults for a command.
    pub fn new(name: &str, source: Source, origin: &Path, argv: Vec<String>) -> Spec {
        Spec {
            name: name.to_string(),
            source,
            origin: origin.to_path_buf(),
            pre: Vec::new(),
            start: Cmd::new(argv),
            post: Vec::new(),
            stop_cmds: Vec::new(),
            reload_cmds: Vec::new(),
            finish: None,
            kind: Kind::Simple,
            env: Vec::new(),
            dir: None,
            user: None,
            autostart: true,
            restart: Restart::Unexpected,
            exitcodes: vec![0],
            startsecs: 1,
            startretries: 3,
            restart_delay: Duration::ZERO,
            min_interval: Duration::ZERO,
            start_limit: None,
            stopsignal: Signal::SIGTERM,
            stopwait: Duration::from_secs(10),
            stopasgroup: false,
            killasgroup: false,
            priority: 999,
            stdin: Input::Null,
            stdout: Output::Relay,
            stderr: Output::Relay,
            redirect_stderr: false,
            after: Vec::new(),
            runtime_dirs: Vec::new(),
            broken: None,
        }
    }

    /// A placeholder for a service whose configuration is unusable: listed, never started.
    pub fn broken(name: &str, source: Source, origin: &Path, reason: String) -> Spec {
        let mut s = Spec::new(name, source, origin, Vec::new());
        s.broken = Some(reason);
        s.autostart = false;
        s
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn from_wait(ws: nix::sys::wait::WaitStatus) -> Option<(i32, Exit)> {
        use nix::sys::wait::WaitStatus;
        match ws {
            WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Exit::Code(code))),
            WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), Exit::Signal(sig as i32))),
            _ => None,
        }
    }

    /// The shell's convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    /// supervisord's wording: `exit status 1` or `terminated by SIGTERM`.
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal(s) => format!("terminated by {}", signal_name(s)),
        }
    }
}

pub fn signal_name(s: i32) -> String {
    match Signal::try_from(s) {
        Ok(sig) => sig.as_str().to_string(),
        Err(_) => format!("signal {s}"),
    }
}

/// What a helper process (not the main process) is doing for its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Pre(usize),
    Post(usize),
    Stop(usize),
    Reload(usize),
    Finish,
}

/// What the event loop lends a service to spawn processes.
pub struct Ctx<'a> {
    pub env: &'a [(String, String)],
    pub relays: &'a mut Vec<Relay>,
    pub pipes: &'a [(OwnedFd, OwnedFd)],
    pub run_dir: &'a Path,
    pub notify_dir: &'a Path,
    /// The main command keeps the terminal: its own process group, not a new session.
    pub foreground: bool,
}

/// A service at run time.
pub struct Service {
    pub spec: Spec,
    pub state: State,
    /// The main process (for Type=forking, first the forking parent, then the PIDFile's pid).
    pub pid: Option<i32>,
    pub helper: Option<(i32, Job)>,
    forking_parent: bool,
    ready: bool,
    post_done: bool,
    /// The service should be up (autostart or a start request, cleared by a stop).
    pub want_up: bool,
    killing: bool,
    restart_after_stop: bool,
    laststart: Option<Instant>,
    started_wall: Option<SystemTime>,
    pub backoff: u32,
    delay: Option<Instant>,
    stop_deadline: Option<Instant>,
    pub restarts: u32,
    spawned_once: bool,
    pub spawnerr: Option<String>,
    pub last_exit: Option<Exit>,
    pub notify: Option<UnixDatagram>,
    start_history: VecDeque<Instant>,
    awaiting_finish: Option<Instant>,
}

impl Service {
    pub fn new(spec: Spec) -> Service {
        let spawnerr = spec.broken.clone();
        let state = if spec.broken.is_some() {
            State::Fatal
        } else {
            State::Stopped
        };
        let want_up = spec.autostart && spec.broken.is_none();
        Service {
            spec,
            state,
            pid: None,
            helper: None,
            forking_parent: false,
            ready: false,
            post_done: false,
            want_up,
            killing: false,
            restart_after_stop: false,
            laststart: None,
            started_wall: None,
            backoff: 0,
            delay: None,
            stop_deadline: None,
            restarts: 0,
            spawned_once: false,
            spawnerr,
            last_exit: None,
            notify: None,
            start_history: VecDeque::new(),
            awaiting_finish: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// True while the service still owns a process.
    pub fn has_process(&self) -> bool {
        self.pid.is_some() || self.helper.is_some()
    }

    /// systemd's "the start job is done": units ordered after this one may start.
    pub fn settled(&self) -> bool {
        match self.state {
            State::Starting => false,
            State::Backoff => false,
            State::Stopped => !self.want_up,
            _ => true,
        }
    }

    pub fn uptime(&self) -> Option<Duration> {
        let t = self.started_wall?;
        SystemTime::now().duration_since(t).ok()
    }

    fn set_state(&mut self, s: State) {
        self.state = s;
    }

    /// A start request (control socket): clears FATAL and the backoff count.
    pub fn request_start(&mut self) -> Result<(), String> {
        if let Some(b) = &self.spec.broken {
            return Err(b.clone());
        }
        self.want_up = true;
        match self.state {
            State::Stopped | State::Exited | State::Fatal | State::Backoff => {
                self.backoff = 0;
                self.restarts = 0;
                self.start_history.clear();
                self.delay = None;
                self.set_state(State::Stopped);
            }
            _ => {}
        }
        Ok(())
    }

    /// A restart request: stop, then start once stopped.
    pub fn request_restart(&mut self, now: Instant, ctx: &mut Ctx) -> Result<(), String> {
        self.request_start()?;
        if self.pid.is_some() {
            self.stop(now, ctx);
            self.restart_after_stop = true;
        }
        Ok(())
    }

    /// Stops the service: its stop commands, then its stop signal, then SIGKILL at stopwait.
    pub fn stop(&mut self, now: Instant, ctx: &mut Ctx) {
        self.want_up = false;
        self.restart_after_stop = false;
        self.delay = None;
        self.awaiting_finish = None;
        match self.state {
            State::Backoff | State::Exited | State::Fatal if self.pid.is_none() => {
                if self.state == State::Backoff {
                    self.set_state(State::Stopped);
                }
                return;
            }
            State::Stopping | State::Stopped => return,
            _ => {}
        }
        if let Some((hpid, job)) = self.helper {
            if matches!(job, Job::Pre(_) | Job::Post(_) | Job::Finish) {
                let _ = kill(Pid::from_raw(hpid), Signal::SIGKILL);
            }
        }
        let Some(pid) = self.pid else {
            if self.state == State::Starting || self.state == State::Running {
                // A oneshot that remained, or a forking service with no pid file.
                log::info(&format!("stopped: {}", self.spec.name));
            }
            self.set_state(State::Stopped);
            return;
        };
        self.killing = true;
        self.set_state(State::Stopping);
        self.stop_deadline = Some(now + self.spec.stopwait);
        if !self.spec.stop_cmds.is_empty() && self.helper.is_none() {
            self.run_helper(Job::Stop(0), ctx);
            if self.helper.is_some() {
                return;
            }
        }
        log::info(&format!("waiting for {} to stop", self.spec.name));
        signal_proc(pid, self.spec.stopsignal, self.spec.stopasgroup);
    }

    /// Sends a signal to the main process (group): forwarding from PID 1.
    pub fn forward(&self, sig: Signal) {
        if let Some(pid) = self.pid {
            signal_proc(pid, sig, true);
        }
    }

    /// The next moment this service needs a `tick`.
    pub fn deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        consider(self.delay);
        consider(self.stop_deadline);
        if self.state == State::Starting && self.ready && self.post_done {
            consider(
                self.laststart
                    .map(|t| t + Duration::from_secs(self.spec.startsecs)),
            );
        }
        d
    }

    /// Timer-driven transitions. `deps_ok` says the services it is ordered after have settled.
    pub fn tick(&mut self, now: Instant, deps_ok: bool, ctx: &mut Ctx) {
        match self.state {
            State::Stopped | State::Exited if self.want_up && self.helper.is_none() => {
                let due = self.delay.is_none_or(|d| now >= d);
                if due && deps_ok && self.awaiting_finish.is_none() {
                    self.delay = None;
                    self.begin_start(now, ctx);
                }
            }
            State::Backoff if self.want_up => {
                if self.backoff > self.spec.startretries {
                    self.give_up();
                } else if self.delay.is_none_or(|d| now >= d) {
                    self.delay = None;
                    self.begin_start(now, ctx);
                }
            }
            State::Starting => {
                let up_for = self.laststart.map(|t| now.saturating_duration_since(t));
                if self.ready
                    && self.post_done
                    && up_for.is_some_and(|u| u >= Duration::from_secs(self.spec.startsecs))
                {
                    self.backoff = 0;
                    self.set_state(State::Running);
                    log::info(&format!(
                        "success: {} entered RUNNING state, process has stayed up for > than {} seconds (startsecs)",
                        self.spec.name, self.spec.startsecs
                    ));
                }
            }
            State::Stopping if self.stop_deadline.is_some_and(|d| now >= d) => {
                self.stop_deadline = None;
                if let Some(pid) = self.pid {
                    log::warn(&format!(
                        "killing '{}' ({pid}) with SIGKILL",
                        self.spec.name
                    ));
                    signal_proc(pid, Signal::SIGKILL, self.spec.killasgroup);
                }
                if let Some((hpid, _)) = self.helper {
                    signal_proc(hpid, Signal::SIGKILL, true);
                }
            }
            _ => {}
        }
    }

    fn give_up(&mut self) {
        self.set_state(State::Fatal);
        self.want_up = false;
        self.delay = None;
        log::info(&format!(
            "gave up: {} entered FATAL state, too many start retries too quickly",
            self.spec.name
        ));
    }

    fn begin_start(&mut self, now: Instant, ctx: &mut Ctx) {
        if let Some((burst, interval)) = self.spec.start_limit {
            while self
                .start_history
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > interval)
            {
                self.start_history.pop_front();
            }
            if self.start_history.len() >= burst as usize {
                self.give_up();
                return;
            }
            self.start_history.push_back(now);
        }
        if self.spawned_once {
            self.restarts = self.restarts.saturating_add(1);
        }
        self.spawned_once = true;
        self.laststart = Some(now);
        self.ready = false;
        self.post_done = false;
        self.killing = false;
        self.set_state(State::Starting);
        for d in &self.spec.runtime_dirs {
            let path = ctx.run_dir.join(d);
            if let Err(e) = std::fs::create_dir_all(&path) {
                log::warn(&format!(
                    "{}: RuntimeDirectory {}: {e}",
                    self.spec.name,
                    path.display()
                ));
            } else if let Some(u) = &self.spec.user {
                let _ = nix::unistd::chown(
                    &path,
                    Some(nix::unistd::Uid::from_raw(u.uid)),
                    Some(nix::unistd::Gid::from_raw(u.gid)),
                );
            }
        }
        if self.spec.pre.is_empty() {
            self.spawn_main(now, ctx);
        } else {
            self.run_helper(Job::Pre(0), ctx);
            if self.helper.is_none() {
                self.start_failed(now, Some("ExecStartPre could not be spawned".into()));
            }
        }
    }

    fn spawn_main(&mut self, now: Instant, ctx: &mut Ctx) {
        if self.spec.kind == Kind::Notify {
            self.open_notify(ctx);
        }
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(sock) = &self.notify {
            if let Ok(addr) = sock.local_addr() {
                if let Some(p) = addr.as_pathname() {
                    env.push(("NOTIFY_SOCKET".into(), p.display().to_string()));
                }
            }
        }
        let cmd = self.spec.start.clone();
        match spawn(&self.spec, &cmd, &env, ctx, true) {
            Ok(pid) => {
                self.pid = Some(pid);
                self.started_wall = Some(SystemTime::now());
                self.last_exit = None;
                log::info(&format!("spawned: '{}' with pid {pid}", self.spec.name));
                match self.spec.kind {
                    Kind::Simple => self.mark_ready(ctx),
                    Kind::Forking { .. } => self.forking_parent = true,
                    Kind::Oneshot { .. } | Kind::Notify => {}
                }
            }
            Err(e) => {
                log::warn(&format!("spawnerr: can't spawn '{}': {e}", self.spec.name));
                self.start_failed(now, Some(format!("spawn error: {e}")));
            }
        }
    }

    fn mark_ready(&mut self, ctx: &mut Ctx) {
        self.ready = true;
        if self.spec.post.is_empty() {
            self.post_done = true;
        } else {
            self.run_helper(Job::Post(0), ctx);
            if self.helper.is_none() {
                self.post_done = true;
            }
        }
    }

    fn open_notify(&mut self, ctx: &Ctx) {
        self.notify = None;
        let path = ctx.notify_dir.join(format!("{}.notify", self.spec.name));
        let _ = std::fs::create_dir_all(ctx.notify_dir);
        let _ = std::fs::remove_file(&path);
        match UnixDatagram::bind(&path) {
            Ok(s) => {
                let _ = s.set_nonblocking(true);
                self.notify = Some(s);
            }
            Err(e) => log::warn(&format!(
                "{}: cannot bind NOTIFY_SOCKET {}: {e}",
                self.spec.name,
                path.display()
            )),
        }
    }

    /// Reads sd_notify datagrams: READY=1 and MAINPID=.
    pub fn read_notify(&mut self, ctx: &mut Ctx) {
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            let Some(sock) = &self.notify else { return };
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            for line in text.lines() {
                if line == "READY=1" && self.state == State::Starting && !self.ready {
                    self.mark_ready(ctx);
                } else if let Some(p) = line.strip_prefix("MAINPID=") {
                    if let Ok(p) = p.trim().parse::<i32>() {
                        if p > 0 {
                            self.pid = Some(p);
                        }
                    }
                }
            }
        }
    }

    fn run_helper(&mut self, job: Job, ctx: &mut Ctx) {
        let mut job = job;
        loop {
            let cmd = match job {
                Job::Pre(i) => self.spec.pre.get(i),
                Job::Post(i) => self.spec.post.get(i),
                Job::Stop(i) => self.spec.stop_cmds.get(i),
                Job::Reload(i) => self.spec.reload_cmds.get(i),
                Job::Finish => None,
            };
            let mut env = Vec::new();
            if let Some(pid) = self.pid {
                env.push(("MAINPID".to_string(), pid.to_string()));
            }
            let cmd = match (job, cmd) {
                (Job::Finish, _) => {
                    let Some(f) = &self.spec.finish else { return };
                    let (code, sig) = match self.last_exit {
                        Some(Exit::Code(c)) => (c, 0),
                        Some(Exit::Signal(s)) => (-1, s),
                        None => (0, 0),
                    };
                    Cmd::new(vec![
                        f.display().to_string(),
                        code.to_string(),
                        sig.to_string(),
                    ])
                }
                (_, Some(c)) => c.clone(),
                (_, None) => return,
            };
            match spawn(&self.spec, &cmd, &env, ctx, false) {
                Ok(pid) => {
                    self.helper = Some((pid, job));
                    return;
                }
                Err(e) => {
                    log::warn(&format!(
                        "{}: cannot spawn {:?}: {e}",
                        self.spec.name, cmd.argv
                    ));
                    if !cmd.ignore_failure {
                        return;
                    }
                    job = match job {
                        Job::Pre(i) => Job::Pre(i + 1),
                        Job::Post(i) => Job::Post(i + 1),
                        Job::Stop(i) => Job::Stop(i + 1),
                        Job::Reload(i) => Job::Reload(i + 1),
                        Job::Finish => return,
                    };
                }
            }
        }
    }

    /// Runs ExecReload= commands, or sends SIGHUP when there are none.
    pub fn reload(&mut self, ctx: &mut Ctx) {
        if self.spec.reload_cmds.is_empty() {
            self.forward(Signal::SIGHUP);
        } else if self.helper.is_none() {
            self.run_helper(Job::Reload(0), ctx);
        }
    }

    fn is_success(&self, e: Exit) -> bool {
        match e {
            Exit::Code(c) => self.spec.exitcodes.contains(&c),
            Exit::Signal(s) => {
                self.spec.source == Source::Systemd
                    && [
                        Signal::SIGHUP as i32,
                        Signal::SIGINT as i32,
                        Signal::SIGTERM as i32,
                        Signal::SIGPIPE as i32,
                    ]
                    .contains(&s)
            }
        }
    }

    /// A start attempt failed before the service was up (early death, failed ExecStartPre).
    fn start_failed(&mut self, now: Instant, why: Option<String>) {
        self.pid = None;
        self.forking_parent = false;
        if self.spec.startsecs > 0 && self.spec.source != Source::Systemd {
            self.spawnerr = Some(
                why.unwrap_or_else(|| "Exited too quickly (process log may have details)".into()),
            );
            self.backoff = self.backoff.saturating_add(1);
            self.delay = Some(now + Duration::from_secs(u64::from(self.backoff)));
            self.set_state(State::Backoff);
        } else {
            self.spawnerr = why;
            self.set_state(State::Exited);
            self.schedule_restart(now, false);
        }
    }

    fn schedule_restart(&mut self, now: Instant, success: bool) {
        let abnormal = matches!(self.last_exit, Some(Exit::Signal(_))) && !success;
        let again = match self.spec.restart {
            Restart::No => false,
            Restart::Always => true,
            Restart::Unexpected | Restart::OnFailure => !success,
            Restart::OnAbnormal => abnormal,
            Restart::OnSuccess => success,
        };
        if !again || !self.want_up {
            self.want_up = false;
            return;
        }
        let mut at = now + self.spec.restart_delay;
        if let Some(last) = self.laststart {
            at = at.max(last + self.spec.min_interval);
        }
        self.delay = Some(at);
    }

    /// A process of this service was reaped. Returns false when the pid is not ours.
    pub fn on_exit(&mut self, pid: i32, exit: Exit, now: Instant, ctx: &mut Ctx) -> bool {
        if let Some((hpid, job)) = self.helper {
            if hpid == pid {
                self.helper = None;
                self.helper_exited(job, exit, now, ctx);
                return true;
            }
        }
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        self.last_exit = Some(exit);
        let name = self.spec.name.clone();
        if self.killing {
            self.killing = false;
            self.stop_deadline = None;
            self.set_state(State::Stopped);
            log::info(&format!("stopped: {name} ({})", exit.describe()));
            if let Some((hpid, _)) = self.helper {
                signal_proc(hpid, Signal::SIGKILL, true);
            }
            if self.restart_after_stop {
                self.restart_after_stop = false;
                self.want_up = true;
            }
            return true;
        }
        let success = self.is_success(exit);
        if self.forking_parent {
            self.forking_parent = false;
            if success {
                if let Kind::Forking { pidfile: Some(pf) } = &self.spec.kind {
                    match read_pidfile(pf) {
                        Some(p) => self.pid = Some(p),
                        None => log::warn(&format!(
                            "{name}: PIDFile {} missing or invalid after start",
                            pf.display()
                        )),
                    }
                }
                self.mark_ready(ctx);
                return true;
            }
        }
        if let Kind::Oneshot { remain } = self.spec.kind {
            if success && self.state == State::Starting {
                log::info(&format!("exited: {name} ({}; expected)", exit.describe()));
                self.mark_ready(ctx);
                self.backoff = 0;
                if remain {
                    self.set_state(State::Running);
                } else {
                    self.set_state(State::Exited);
                    self.want_up = false;
                }
                return true;
            }
        }
        let too_quickly = self.state == State::Starting
            && (!self.ready
                || self
                    .laststart
                    .is_some_and(|t| now < t + Duration::from_secs(self.spec.startsecs)));
        if too_quickly {
            log::info(&format!(
                "exited: {name} ({}; not expected)",
                exit.describe()
            ));
            self.start_failed(now, None);
        } else {
            self.backoff = 0;
            if self.state == State::Starting {
                self.set_state(State::Running);
            }
            let word = if success { "expected" } else { "not expected" };
            log::info(&format!("exited: {name} ({}; {word})", exit.describe()));
            if !success {
                self.spawnerr = Some(format!("Bad exit code {}", exit.shell_code()));
            }
            self.set_state(State::Exited);
            if self.spec.finish.is_some() && self.want_up {
                self.awaiting_finish = Some(now);
                self.run_helper(Job::Finish, ctx);
                if self.helper.is_none() {
                    self.awaiting_finish = None;
                }
            }
            if self.awaiting_finish.is_none() {
                self.schedule_restart(now, success);
            }
        }
        true
    }

    fn helper_exited(&mut self, job: Job, exit: Exit, now: Instant, ctx: &mut Ctx) {
        let ok = exit == Exit::Code(0);
        match job {
            Job::Pre(i) => {
                let ignore = self.spec.pre.get(i).is_some_and(|c| c.ignore_failure);
                if self.state != State::Starting {
                    return;
                }
                if ok || ignore {
                    if i + 1 < self.spec.pre.len() {
                        self.run_helper(Job::Pre(i + 1), ctx);
                    } else {
                        self.spawn_main(now, ctx);
                    }
                } else {
                    log::info(&format!(
                        "exited: {} (ExecStartPre {}; not expected)",
                        self.spec.name,
                        exit.describe()
                    ));
                    self.last_exit = Some(exit);
                    self.start_failed(
                        now,
                        Some(format!("ExecStartPre failed: {}", exit.describe())),
                    );
                }
            }
            Job::Post(i) => {
                if !ok && !self.spec.post.get(i).is_some_and(|c| c.ignore_failure) {
                    log::warn(&format!(
                        "{}: ExecStartPost failed ({})",
                        self.spec.name,
                        exit.describe()
                    ));
                }
                if i + 1 < self.spec.post.len() && self.state == State::Starting {
                    self.run_helper(Job::Post(i + 1), ctx);
                } else {
                    self.post_done = true;
                }
            }
            Job::Stop(i) => {
                if i + 1 < self.spec.stop_cmds.len() {
                    self.run_helper(Job::Stop(i + 1), ctx);
                    if self.helper.is_some() {
                        return;
                    }
                }
                if let Some(pid) = self.pid {
                    if self.killing {
                        signal_proc(pid, self.spec.stopsignal, self.spec.stopasgroup);
                    }
                }
            }
            Job::Reload(i) => {
                if i + 1 < self.spec.reload_cmds.len() {
                    self.run_helper(Job::Reload(i + 1), ctx);
                }
            }
            Job::Finish => {
                if self.awaiting_finish.take().is_some() {
                    let success = self.last_exit.is_some_and(|e| self.is_success(e));
                    self.schedule_restart(now, success);
                }
            }
        }
    }

    /// supervisorctl's description column.
    pub fn describe(&self) -> String {
        match self.state {
            State::Running | State::Starting | State::Stopping => {
                let up = self.uptime().unwrap_or_default().as_secs();
                let pid = match self.pid {
                    Some(p) => format!("pid {p}"),
                    None => "no process".to_string(),
                };
                format!(
                    "{pid}, uptime {}:{:02}:{:02}, restarts {}",
                    up / 3600,
                    (up / 60) % 60,
                    up % 60,
                    self.restarts
                )
            }
            State::Stopped if !self.spawned_once => "Not started".to_string(),
            State::Fatal | State::Backoff => self
                .spawnerr
                .clone()
                .unwrap_or_else(|| "Exited too quickly (process log may have details)".into()),
            _ => match self.last_exit {
                Some(e) => format!("{}, restarts {}", e.describe(), self.restarts),
                None => format!("restarts {}", self.restarts),
            },
        }
    }
}

/// Unblocks every signal in a freshly forked child: the init blocks the signals it reads from
/// its signalfd, and a blocked mask survives exec.
pub fn reset_sigmask() {
    // SAFETY: sigemptyset/sigprocmask on a local sigset_t; async-signal-safe, called between
    // fork and exec.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Signals a pid, or its process group when `group` (falling back to the pid alone when it
/// leads no group).
pub fn signal_proc(pid: i32, sig: Signal, group: bool) {
    if pid <= 0 {
        return;
    }
    if group && killpg(Pid::from_raw(pid), sig).is_ok() {
        return;
    }
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Reads a PIDFile: a decimal pid, at most 64 bytes.
fn read_pidfile(path: &Path) -> Option<i32> {
    let data = std::fs::read(path).ok()?;
    let text = std::str::from_utf8(data.get(..data.len().min(64))?).ok()?;
    text.trim().parse::<i32>().ok().filter(|p| *p > 1)
}

/// /dev/null for reading, or (in a root filesystem with no /dev) an empty pipe: both read EOF.
fn null_stdin() -> std::io::Result<Stdio> {
    match std::fs::File::open("/dev/null") {
        Ok(f) => Ok(Stdio::from(f)),
        Err(_) => {
            let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            Ok(Stdio::from(r))
        }
    }
}

fn open_output(out: &Output, ctx: &mut Ctx, name: &str) -> std::io::Result<Stdio> {
    Ok(match out {
        Output::Relay => {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            ctx.relays.push(Relay::new(r, name));
            Stdio::from(w)
        }
        Output::Inherit(1) => Stdio::from(std::io::stdout().as_fd().try_clone_to_owned()?),
        Output::Inherit(_) => Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?),
        Output::File(p) => Stdio::from(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(p)?,
        ),
        Output::Null => match OpenOptions::new().write(true).open("/dev/null") {
            Ok(f) => Stdio::from(f),
            // A root filesystem with no /dev at all: show the output rather than fail.
            Err(_) => return open_output(&Output::Relay, ctx, name),
        },
        Output::Pipe(i) => match ctx.pipes.get(*i) {
            Some((_, w)) => Stdio::from(w.try_clone()?),
            None => return open_output(&Output::Relay, ctx, name),
        },
    })
}

/// Starts one process of a service in its own session (or, for the foreground main command,
/// its own process group that takes the terminal).
fn spawn(
    spec: &Spec,
    cmd: &Cmd,
    extra_env: &[(String, String)],
    ctx: &mut Ctx,
    main: bool,
) -> std::io::Result<i32> {
    let Some(prog) = cmd.argv.first() else {
        return Err(std::io::Error::other("empty command"));
    };
    let mut c = Command::new(prog);
    c.args(cmd.argv.iter().skip(1));
    if let Some(a0) = &cmd.arg0 {
        c.arg0(a0);
    }
    c.env_clear();
    let mut env: Vec<(String, String)> = ctx.env.to_vec();
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    };
    if let Some(u) = &spec.user {
        set("HOME", &u.home);
        set("USER", &u.name);
        set("LOGNAME", &u.name);
    }
    for (k, v) in spec.env.iter().chain(extra_env) {
        set(k, v);
    }
    c.envs(
        env.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    if let Some(d) = &spec.dir {
        c.current_dir(d);
    }
    c.stdin(match &spec.stdin {
        Input::Null => null_stdin()?,
        Input::Inherit => Stdio::inherit(),
        Input::Pipe(i) => match ctx.pipes.get(*i) {
            Some((r, _)) => Stdio::from(r.try_clone()?),
            None => null_stdin()?,
        },
    });
    let relay_name = spec.name.clone();
    if spec.redirect_stderr {
        if spec.stdout == Output::Relay {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            ctx.relays.push(Relay::new(r, &relay_name));
            c.stderr(Stdio::from(w.try_clone()?));
            c.stdout(Stdio::from(w));
        } else {
            c.stdout(open_output(&spec.stdout, ctx, &relay_name)?);
            c.stderr(open_output(&spec.stdout, ctx, &relay_name)?);
        }
    } else {
        c.stdout(open_output(&spec.stdout, ctx, &relay_name)?);
        c.stderr(open_output(&spec.stderr, ctx, &relay_name)?);
    }
    let foreground = main && ctx.foreground;
    let user = spec.user.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, setpgid, tcsetpgrp, signal, setgroups, setgid, setuid) on values
    // prepared before the fork; it allocates nothing.
    unsafe {
        c.pre_exec(move || {
            reset_sigmask();
            if foreground {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::isatty(0) == 1 {
                    libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                    libc::tcsetpgrp(0, libc::getpid());
                    libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                }
            } else if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(u) = &user {
                if libc::setgroups(u.groups.len(), u.groups.as_ptr()) != 0
                    || libc::setgid(u.gid) != 0
                    || libc::setuid(u.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = c.spawn()?;
    // The init reaps with waitpid(-1); the Child handle is dropped without waiting.
    Ok(child.id() as i32)
}

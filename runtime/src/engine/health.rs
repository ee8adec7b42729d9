//! HEALTHCHECK, as docker runs it: a thread of the container's monitor exec's the check into
//! the running container (the engine's exec machinery: its namespaces, cgroup, user and
//! environment) on a timer, and keeps the result in `health.json` in the container's
//! directory, written atomically, so `ps` and `inspect` read it without talking to the monitor.
//! Docker's semantics: the first check after `interval` (`start_interval` while the start
//! period lasts and the container is not yet healthy), failures inside the start period do not
//! count, `retries` consecutive failures make it unhealthy and one success healthy; a check
//! that outlives its timeout is killed and counts as a failure.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use super::{io_err, time, Container, Engine, EngineError};

/// The file in the container's directory holding the health state.
pub const HEALTH_FILE: &str = "health.json";
/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the log (docker keeps 5).
const MAX_LOG: usize = 5;
/// Output kept per result (docker keeps 4 KiB); the rest is read and dropped.
const MAX_OUTPUT: usize = 4096;
/// A state file larger than this is taken as damaged.
const MAX_STATE_BYTES: u64 = 64 << 10;
/// The shortest period between checks, so a zero or tiny interval cannot spin.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// The check a container runs: docker's `Healthcheck` with its defaults applied at run time
/// (`None` fields take docker's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", arg...]` or `["CMD-SHELL", command]` (`["NONE"]` is never stored: it disables).
    pub test: Vec<String>,
    /// Nanoseconds.
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

impl HealthConfig {
    /// The argv run in the container; `None` for `NONE`, an empty test or an unknown kind.
    pub fn argv(&self) -> Option<Vec<String>> {
        let (kind, rest) = self.test.split_first()?;
        match kind.as_str() {
            "CMD" if !rest.is_empty() => Some(rest.to_vec()),
            "CMD-SHELL" if !rest.is_empty() => Some(
                ["/bin/sh".to_string(), "-c".to_string(), rest.join(" ")]
                    .into_iter()
                    .collect(),
            ),
            _ => None,
        }
    }

    fn dur(v: Option<u64>, default: Duration) -> Duration {
        match v {
            Some(n) if n > 0 => Duration::from_nanos(n),
            _ => default,
        }
    }

    pub fn interval(&self) -> Duration {
        Self::dur(self.interval, DEFAULT_INTERVAL).max(MIN_PERIOD)
    }
    pub fn timeout(&self) -> Duration {
        Self::dur(self.timeout, DEFAULT_TIMEOUT).max(MIN_PERIOD)
    }
    pub fn start_period(&self) -> Duration {
        Self::dur(self.start_period, Duration::ZERO)
    }
    pub fn start_interval(&self) -> Duration {
        Self::dur(self.start_interval, DEFAULT_START_INTERVAL).max(MIN_PERIOD)
    }
    pub fn retries(&self) -> u32 {
        match self.retries {
            Some(n) if n > 0 => n,
            _ => DEFAULT_RETRIES,
        }
    }
}

/// Docker's health status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// What `ps` appends to `Up ...`, as docker.
    pub fn ps_suffix(self) -> &'static str {
        match self {
            HealthStatus::Starting => "(health: starting)",
            HealthStatus::Healthy => "(healthy)",
            HealthStatus::Unhealthy => "(unhealthy)",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// Unix nanoseconds.
    pub start: i64,
    pub end: i64,
    /// -1 when it timed out or could not start (docker's value).
    pub exit_code: i32,
    /// stdout and stderr together, at most 4 KiB.
    pub output: String,
}

/// The state in `health.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

impl HealthState {
    fn new() -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Docker's `State.Health` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Status": self.status.as_str(),
            "FailingStreak": self.failing_streak,
            "Log": self.log.iter().map(|r| serde_json::json!({
                "Start": time::rfc3339(r.start),
                "End": time::rfc3339(r.end),
                "ExitCode": r.exit_code,
                "Output": r.output,
            })).collect::<Vec<_>>(),
        })
    }

    /// Takes one result in (docker's rules); `in_start_period` failures do not count.
    fn record(&mut self, r: HealthResult, retries: u32, in_start_period: bool) {
        if r.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period || self.status != HealthStatus::Starting {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(r);
        if self.log.len() > MAX_LOG {
            let extra = self.log.len() - MAX_LOG;
            self.log.drain(..extra);
        }
    }
}

/// Reads a container's health state; `None` when it has no check or the file is missing or
/// damaged (a damaged file is shown as no health, never an error for `ps`).
pub fn read_state(dir: &Path) -> Option<HealthState> {
    let f = std::fs::File::open(dir.join(HEALTH_FILE)).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

fn write_state(dir: &Path, s: &HealthState) -> Result<(), EngineError> {
    let tmp = dir.join(format!(".{HEALTH_FILE}.{}", std::process::id()));
    let bytes = serde_json::to_vec(s).map_err(|e| EngineError::Record {
        path: tmp.display().to_string(),
        problem: e.to_string(),
    })?;
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp, "write"))?;
    let path = dir.join(HEALTH_FILE);
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))
}

/// The running health thread of a monitor; `stop` ends it.
pub struct Checker {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checker {
    /// Ends the thread (a check in progress is killed) and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Starts checking container `c` (just started) when its config has a check: writes a fresh
/// `starting` state (a restart resets it) and spawns the thread. `None` when it has no check.
pub fn start(store_root: &Path, c: &Container) -> Option<Checker> {
    let cfg = c.config.healthcheck.clone()?;
    let argv = cfg.argv()?;
    let engine = Engine::new(store_root);
    let dir = engine.container_dir(&c.id).ok()?;
    write_state(&dir, &HealthState::new()).ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let id = c.id.clone();
    let thread = std::thread::spawn(move || run(engine, dir, id, cfg, argv, rx));
    Some(Checker { stop: tx, thread })
}

/// Whether the stop channel says to end (a message or the sender gone).
fn stop_requested(rx: &Receiver<()>) -> bool {
    !matches!(rx.try_recv(), Err(TryRecvError::Empty))
}

fn run(
    engine: Engine,
    dir: PathBuf,
    id: String,
    cfg: HealthConfig,
    argv: Vec<String>,
    rx: Receiver<()>,
) {
    let began = Instant::now();
    let mut state = HealthState::new();
    loop {
        let in_start = began.elapsed() < cfg.start_period();
        let wait = if in_start && state.status == HealthStatus::Starting {
            cfg.start_interval()
        } else {
            cfg.interval()
        };
        match rx.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        // As docker, a paused container is not probed: its check would freeze with it.
        if super::ops::freezer_frozen(&id) {
            continue;
        }
        let in_start = began.elapsed() < cfg.start_period();
        let Some(result) = check(&engine, &id, &argv, cfg.timeout(), &rx) else {
            return;
        };
        state.record(result, cfg.retries(), in_start);
        // A full disk loses a state update, never the container.
        let _ = write_state(&dir, &state);
    }
}

/// Runs the check once; `None` when asked to stop meanwhile.
fn check(
    engine: &Engine,
    id: &str,
    argv: &[String],
    timeout: Duration,
    rx: &Receiver<()>,
) -> Option<HealthResult> {
    let start = time::now();
    let failed = |output: String| HealthResult {
        start,
        end: time::now(),
        exit_code: -1,
        output,
    };
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Some(failed(format!("pipe: {e}"))),
    };
    let w2 = match w.try_clone() {
        Ok(w2) => w2,
        Err(e) => return Some(failed(format!("dup: {e}"))),
    };
    let proc = match engine.exec_capture(id, argv, w, w2) {
        Ok(p) => p,
        Err(e) => return Some(failed(e.to_string())),
    };
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let timed_out = read_until(&r, &mut output, deadline, rx);
    let pid = nix::unistd::Pid::from_raw(proc.pid());
    match timed_out {
        Outcome::Eof => {}
        Outcome::TimedOut | Outcome::Stop => {
            // The exec'd process leads its own session and group (see `process`): killing
            // the group also ends what a shell check started (`sh -c 'sleep 99'`).
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let code = proc.wait().map(|s| s.code()).unwrap_or(-1);
    let text = String::from_utf8_lossy(&output).into_owned();
    match timed_out {
        Outcome::Stop => None,
        Outcome::TimedOut => Some(HealthResult {
            start,
            end: time::now(),
            exit_code: -1,
            // Docker's words; Rust's Debug of a Duration reads as Go's (`300ms`, `30s`).
            output: format!("Health check exceeded timeout ({timeout:?})"),
        }),
        Outcome::Eof => Some(HealthResult {
            start,
            end: time::now(),
            exit_code: code,
            output: text,
        }),
    }
}

enum Outcome {
    Eof,
    TimedOut,
    Stop,
}

/// Reads the check's output until end of file (every writer gone), the deadline or a stop;
/// keeps at most `MAX_OUTPUT` bytes.
fn read_until(fd: &OwnedFd, out: &mut Vec<u8>, deadline: Instant, rx: &Receiver<()>) -> Outcome {
    let mut buf = [0u8; 4096];
    loop {
        if stop_requested(rx) {
            return Outcome::Stop;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::TimedOut;
        }
        let slice = left.min(Duration::from_millis(50));
        let ms = u16::try_from(slice.as_millis()).unwrap_or(50).max(1);
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Err(_) => return Outcome::Eof,
            Ok(_) => {}
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Outcome::Eof,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(_) => return Outcome::Eof,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: 1,
            end: 2,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn docker_rules() {
        let mut s = HealthState::new();
        // Failures in the start period do not count while starting.
        s.record(result(1), 2, true);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 0));
        s.record(result(1), 2, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 1));
        s.record(result(1), 2, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Unhealthy, 2));
        s.record(result(0), 2, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            s.record(result(0), 2, false);
        }
        assert_eq!(s.log.len(), MAX_LOG);
    }

    #[test]
    fn tests_and_defaults() {
        let c = HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f /x".into()],
            ..Default::default()
        };
        assert_eq!(c.argv().unwrap(), ["/bin/sh", "-c", "test -f /x"]);
        assert_eq!(c.interval(), DEFAULT_INTERVAL);
        assert_eq!(c.retries(), 3);
        let none = HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert!(none.argv().is_none());
        assert!(HealthConfig::default().argv().is_none());
    }

    #[test]
    fn damaged_state_is_no_state() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_state(t.path()).is_none());
        std::fs::write(t.path().join(HEALTH_FILE), b"{\"status\": 7").unwrap();
        assert!(read_state(t.path()).is_none());
        write_state(t.path(), &HealthState::new()).unwrap();
        assert_eq!(read_state(t.path()).unwrap().status, HealthStatus::Starting);
    }
}

//! Docker-level containers without a daemon: a container is a record under the image store
//! (`<store>/.decant/containers/<id>/`) holding its configuration, state, log and overlay dirs;
//! a small monitor process per running container (see `monitor`) drives the OCI-level runtime
//! of this crate. This module knows nothing of image formats: the caller turns an image into a
//! `ContainerConfig` (lower directories, command, environment).

pub mod commit;
pub mod copyroot;
pub mod health;
mod memory;
pub mod monitor;
pub mod names;
pub mod ops;
pub mod ports;
pub mod restart;
mod spec;
pub mod time;
pub mod tty;
pub mod volumes;

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{RuntimeError, RuntimeRoot, Signal};

pub use restart::{find_init, RestartPolicy};
pub use spec::{build_spec, resolve_user};

/// A container record larger than this is refused as damaged.
const MAX_RECORD_BYTES: u64 = 1 << 20;
/// At most this many containers are listed (bounds a hostile directory).
const MAX_CONTAINERS: usize = 100_000;
/// A log line longer than this is cut when read back (the monitor writes at most 16 KiB).
const MAX_LOG_LINE: u64 = 1 << 20;
/// `--tail` keeps at most this many lines in memory.
const MAX_TAIL: usize = 1_000_000;

/// Why an engine operation failed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: container record: {problem}")]
    Record { path: String, problem: String },
    #[error("No such container: {0}")]
    NotFound(String),
    /// A wrong request from the user (bad flag value, name in use, wrong state).
    #[error("{0}")]
    Invalid(String),
    /// The container's process could not start; `code` follows Docker (125, 126, 127).
    #[error("{message}")]
    Start { code: i32, message: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl EngineError {
    /// The exit status a Docker-like CLI leaves with.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Start { code, .. } => *code,
            EngineError::Runtime(e) => e.exit_code(),
            _ => 125,
        }
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with `lo` up (ports come later).
    #[default]
    Private,
    /// The host's network namespace.
    Host,
    /// Its own network namespace with only `lo` (up), never any forwarding.
    None,
}

impl std::str::FromStr for NetworkMode {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        match s {
            "private" | "bridge" | "default" => Ok(NetworkMode::Private),
            "host" => Ok(NetworkMode::Host),
            "none" => Ok(NetworkMode::None),
            _ => Err(EngineError::Invalid(format!(
                "network {s}: not one of private, host, none"
            ))),
        }
    }
}

/// `-v HOST:CTR[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

impl std::str::FromStr for Bind {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        let bad = |why: &str| EngineError::Invalid(format!("volume {s}: {why}"));
        let parts: Vec<&str> = s.split(':').collect();
        let (host, ctr, ro) = match parts.as_slice() {
            [h, c] => (*h, *c, false),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            [_, _, o] => return Err(bad(&format!("unknown option {o} (ro or rw)"))),
            _ => return Err(bad("not HOST:CONTAINER[:ro]")),
        };
        if !host.starts_with('/') {
            return Err(bad(
                "the host path must be absolute (named volumes come later)",
            ));
        }
        if !ctr.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        Ok(Bind {
            host: PathBuf::from(host),
            container: ctr.to_string(),
            read_only: ro,
        })
    }
}

/// Everything a container is made from, fixed at create time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The user's name for it; a random `adjective_noun` when `None`.
    pub name: Option<String>,
    /// The image as the user named it, and its id (`sha256:..`).
    pub image: String,
    pub image_id: String,
    /// The image's unpacked layers, bottom first.
    pub lower_dirs: Vec<PathBuf>,
    /// The final entrypoint and command (image defaults already applied by the caller).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`, image environment first, later entries win.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `USER[:GROUP]`, names or numbers, resolved in the container's /etc/passwd and /etc/group.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    /// Bytes.
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub network: NetworkMode,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp, no masked paths.
    pub privileged: bool,
    /// `SIGTERM` by default.
    pub stop_signal: Option<String>,
    /// Seconds; 10 by default.
    pub stop_timeout: Option<u32>,
    /// `--rm`: the monitor removes the container when it exits.
    pub auto_remove: bool,
    /// `-p` / `-P`: host ports to forward (host port 0: any free one); private network only.
    #[serde(default)]
    pub ports: Vec<ports::PortMapping>,
    /// `--restart`, applied by the monitor.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--init`: the host path of the static decant-init, run as PID 1 (see `restart`).
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// `--init=host`: `init` runs in services mode (the image's runit, supervisord and systemd
    /// services; `args()`, when not empty, is the main service beside them).
    #[serde(default)]
    pub init_host: bool,
    /// `-v NAME:CTR`, `-v CTR` and the image's VOLUMEs: named and anonymous volumes.
    #[serde(default)]
    pub volumes: Vec<volumes::VolumeMount>,
    /// `-t`: the process gets a pseudo-terminal (see `tty`).
    #[serde(default)]
    pub tty: bool,
    /// `-i`: the standard input stays open (Docker's `OpenStdin`): a start without input of
    /// its own gives the process a pipe that reaches end of file only when it exits.
    #[serde(default)]
    pub open_stdin: bool,
    /// The image's HEALTHCHECK or `--health-*`; `None` when there is none or it is disabled
    /// (`--no-healthcheck`, `NONE`). The monitor runs it (see `health`).
    #[serde(default)]
    pub healthcheck: Option<health::HealthConfig>,
}

impl ContainerConfig {
    /// The process's argv: entrypoint then command.
    pub fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    /// Exited, and the monitor waits out the back-off before starting it again.
    Restarting,
    Exited,
}

/// The container's record (`container.json`): its config and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    /// Unix nanoseconds.
    pub created: i64,
    pub status: Status,
    /// The container's init on the host, while running.
    pub pid: i32,
    /// The monitor holding it, and that process's start time (so a recycled pid is not taken
    /// for it).
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// The ports published while it runs, with the host ports actually bound.
    #[serde(default)]
    pub ports: Vec<ports::PortMapping>,
    /// Restarts by the policy since the last explicit start.
    #[serde(default)]
    pub restart_count: u32,
    /// The memory cgroup's OOM killer killed a process of the last run.
    #[serde(default)]
    pub oom_killed: bool,
}

impl Container {
    /// The 12-digit id.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// Docker's STATUS column: `Created`, `Up 3 seconds`, `Exited (0) 2 minutes ago`.
    pub fn status_text(&self, now: i64) -> String {
        match self.status {
            Status::Created => "Created".to_string(),
            Status::Running => format!(
                "Up {}",
                time::human_duration(now.saturating_sub(self.started_at.unwrap_or(now)))
            ),
            Status::Restarting => format!(
                "Restarting ({}) {} ago",
                self.exit_code.unwrap_or(255),
                time::human_duration(now.saturating_sub(self.finished_at.unwrap_or(now)))
            ),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                self.exit_code.unwrap_or(255),
                time::human_duration(now.saturating_sub(self.finished_at.unwrap_or(now)))
            ),
        }
    }

    /// Running, or waiting to be restarted: a monitor holds it.
    pub fn is_live(&self) -> bool {
        matches!(self.status, Status::Running | Status::Restarting)
    }

    /// The signal `stop` sends first.
    pub fn stop_signal(&self) -> Result<Signal, EngineError> {
        parse_signal(self.config.stop_signal.as_deref().unwrap_or("SIGTERM"))
    }
}

/// Whether this process is root (else layers are unpacked and containers run rootless).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether this process lives in a user namespace other than the initial one (the rootless
/// monitor does: it is uid 0 there but has no power on the host). The initial namespace's
/// map is the whole range, `0 0 4294967295`.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|t| t.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Whether containers made here run rootless: not root on the host, or root only inside a
/// user namespace (where the host's files and cgroups are not ours either).
pub fn rootless() -> bool {
    !running_as_root() || in_user_namespace()
}

/// The one line a rootless user sees when its containers must run without a cgroup.
pub fn cgroups_notice() -> Option<String> {
    (rootless() && !cgroups_writable()).then(|| {
        format!(
            "rootless: uid {} cannot write cgroups; the container runs without one (no limits, stats or pause)",
            nix::unistd::geteuid()
        )
    })
}

/// Whether this user can make the container cgroups (root can; a rootless user only when the
/// hierarchy was delegated to it). Probed by making and removing a group of our own.
pub fn cgroups_writable() -> bool {
    if running_as_root() && !in_user_namespace() {
        return true;
    }
    let probe = format!("decant-probe-{}", std::process::id());
    match crate::cgroups::manager_for(&probe) {
        Ok(m) => {
            // A hierarchy this user cannot write is left out of the manager: no group at all
            // means no cgroup.
            let ok = m.create().is_ok() && !m.paths().is_empty();
            let _ = m.destroy();
            ok
        }
        Err(_) => false,
    }
}

/// At most this many directories are opened up by `make_removable`.
const MAX_REMOVABLE_DIRS: usize = 1_000_000;

/// Reads the record at `path`, which must be container `id`'s.
fn read_record(path: &Path, id: &str) -> Result<Container, EngineError> {
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EngineError::NotFound(id.to_string())
        } else {
            EngineError::Io {
                path: path.display().to_string(),
                op: "open",
                source: e,
            }
        }
    })?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path, "read"))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(EngineError::Record {
            path: path.display().to_string(),
            problem: format!("larger than {MAX_RECORD_BYTES} bytes"),
        });
    }
    let c: Container = serde_json::from_slice(&bytes).map_err(|e| EngineError::Record {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    if c.id != id {
        return Err(EngineError::Record {
            path: path.display().to_string(),
            problem: format!("names container {} instead", c.id),
        });
    }
    Ok(c)
}

/// The prefix of a container directory being removed (see `Engine::discard`); `ids` skips it.
const DISCARDED: &str = ".removed-";

/// Removes the tree at `dir`; a rootless user's tree may hold directories the user made
/// unwritable inside the container, which are made writable first.
fn remove_tree(dir: &Path) -> Result<(), EngineError> {
    let mut removed = std::fs::remove_dir_all(dir);
    if matches!(&removed, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
        && !running_as_root()
    {
        make_removable(dir);
        removed = std::fs::remove_dir_all(dir);
    }
    if matches!(&removed, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
        && !running_as_root()
    {
        // Files the container gave to its subordinate ids: only the namespace's root may
        // remove them.
        let map = crate::userns::IdMap::current();
        if map.sub.is_some() {
            removed = map
                .run_inside(|| std::fs::remove_dir_all(dir).map_err(|e| e.to_string()))
                .map_err(std::io::Error::other);
        }
    }
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir, "remove")(e)),
    }
}

/// Rootless: gives the owner rwx on every directory under `root` (symlinks not followed), so
/// that the user can remove what overlay (its `work/work` is mode 0) and the container's root
/// (uid 0 of the user namespace is this user, and may make directories of mode 0) left there.
/// Best effort: what still cannot be removed is the caller's error to report.
fn make_removable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > MAX_REMOVABLE_DIRS {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(
                &d,
                std::fs::Permissions::from_mode((mode | 0o700) & 0o7777),
            );
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, EngineError> {
    use std::str::FromStr;
    let bad = || EngineError::Invalid(format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub log: String,
}

/// The containers of one image store.
pub struct Engine {
    dir: PathBuf,
    store_root: PathBuf,
    runtime: RuntimeRoot,
}

/// Files of a container's directory.
pub const RECORD: &str = "container.json";
pub const LOG: &str = "container.log";

impl Engine {
    /// The containers of the store at `store_root`; OCI state in the default runtime root.
    pub fn new(store_root: &Path) -> Engine {
        Engine {
            dir: store_root.join(".decant").join("containers"),
            store_root: store_root.to_path_buf(),
            runtime: Self::runtime_root_for(store_root),
        }
    }

    /// The runtime state's root: root's and a user's with XDG_RUNTIME_DIR as the runtime's
    /// default; a rootless user without XDG_RUNTIME_DIR keeps it under the store, which is
    /// its own (a fixed name in the shared /tmp could be taken first by another user).
    fn runtime_root_for(store_root: &Path) -> RuntimeRoot {
        let unset = std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| d.is_empty());
        if !running_as_root() && unset {
            return RuntimeRoot::new(store_root.join(".decant").join("runtime"));
        }
        RuntimeRoot::default_for_user()
    }

    pub fn store_root(&self) -> &Path {
        &self.store_root
    }

    /// The directory holding one directory per container.
    pub fn containers_dir(&self) -> &Path {
        &self.dir
    }

    pub fn runtime_root(&self) -> &RuntimeRoot {
        &self.runtime
    }

    /// Where container `id`'s root is mounted while it runs: beside the runtime state (a
    /// tmpfs, /run or $XDG_RUNTIME_DIR, for root and most users), not in the container's
    /// directory in the store. A mountpoint is made and removed at every start and exit; on
    /// the store's disk each costs an inode allocation and a freed block (with a `discard`
    /// mount, a synchronous discard), which a quick `run --rm` felt.
    pub fn merged_dir(&self, id: &str) -> PathBuf {
        let rt = self.runtime.path();
        rt.parent().unwrap_or(rt).join("rootfs").join(id)
    }

    /// A container's directory (the id must be a full 64-hex id).
    pub fn container_dir(&self, id: &str) -> Result<PathBuf, EngineError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::NotFound(id.to_string()));
        }
        Ok(self.dir.join(id))
    }

    /// Reads a record as stored (no staleness check).
    pub fn load_raw(&self, id: &str) -> Result<Container, EngineError> {
        read_record(&self.container_dir(id)?.join(RECORD), id)
    }

    /// The last record of `--rm` container `id` while its monitor removes its files.
    fn load_discarded(&self, id: &str) -> Option<Container> {
        self.container_dir(id).ok()?;
        read_record(&self.dir.join(format!("{DISCARDED}{id}")).join(RECORD), id).ok()
    }

    /// Writes a record atomically (temp file + rename).
    pub fn save(&self, c: &Container) -> Result<(), EngineError> {
        let dir = self.container_dir(&c.id)?;
        let tmp = dir.join(format!(".{RECORD}.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(c).map_err(|e| EngineError::Record {
            path: tmp.display().to_string(),
            problem: e.to_string(),
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp, "write"))?;
        let path = dir.join(RECORD);
        std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))
    }

    /// A record, with a running container whose monitor died shown (and cleaned up) as exited.
    pub fn load(&self, id: &str) -> Result<Container, EngineError> {
        let mut c = self.load_raw(id)?;
        if c.is_live() && !monitor_alive(c.monitor_pid, c.monitor_start) {
            // Re-read: the monitor may have finished between our read and the check.
            c = self.load_raw(id)?;
            if c.is_live() {
                let _ = crate::delete(&self.runtime, &c.id, true);
                let _ = monitor::unmount(&self.merged_dir(&c.id));
                c.status = Status::Exited;
                c.exit_code.get_or_insert(255);
                c.finished_at = Some(time::now());
                c.error = Some("the container's monitor died".to_string());
                c.ports.clear();
                self.save(&c)?;
            }
        }
        Ok(c)
    }

    /// Every container's id (directory names that are 64 hex digits).
    fn ids(&self) -> Result<Vec<String>, EngineError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir, "read")(e)),
        };
        let mut ids = Vec::new();
        for e in rd.take(MAX_CONTAINERS) {
            let e = e.map_err(io_err(&self.dir, "read"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    /// Every container, newest first; damaged records are left out.
    pub fn list(&self) -> Result<Vec<Container>, EngineError> {
        let mut all: Vec<Container> = self
            .ids()?
            .iter()
            .filter_map(|id| self.load(id).ok())
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Finds a container by full id, name, or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Container, EngineError> {
        let all: Vec<Container> = self
            .ids()?
            .iter()
            .filter_map(|id| self.load_raw(id).ok())
            .collect();
        if let Some(c) = all.iter().find(|c| c.id == key || c.name == key) {
            return self.load(&c.id.clone());
        }
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(key)).collect();
            match hits.as_slice() {
                [one] => return self.load(&one.id.clone()),
                [] => {}
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "multiple containers match the id prefix {key}"
                    )))
                }
            }
        }
        Err(EngineError::NotFound(key.to_string()))
    }

    /// Records a new container (status created): its directory, upper/work dirs, the
    /// hosts/hostname/resolv.conf files and an empty log.
    pub fn create(&self, mut config: ContainerConfig) -> Result<Container, EngineError> {
        // A host-like init needs no command: the image's services are what it runs.
        if config.args().is_empty() && !(config.init_host && config.init.is_some()) {
            return Err(EngineError::Invalid(
                "no command specified: the image has no Entrypoint or Cmd and none was given"
                    .into(),
            ));
        }
        if config.lower_dirs.is_empty() {
            return Err(EngineError::Invalid("the image has no layers".into()));
        }
        if let Some(s) = &config.stop_signal {
            parse_signal(s)?;
        }
        spec::check_caps(&config)?;
        if config.ports.len() > ports::MAX_PORTS {
            return Err(EngineError::Invalid(format!(
                "{} published ports: more than {}",
                config.ports.len(),
                ports::MAX_PORTS
            )));
        }
        if config.network == NetworkMode::None && !config.ports.is_empty() {
            return Err(EngineError::Invalid(
                "--network none: the container has no network to publish ports from".into(),
            ));
        }
        let limits =
            config.memory.is_some() || config.cpus.is_some() || config.pids_limit.is_some();
        if limits && rootless() && !cgroups_writable() {
            return Err(EngineError::Invalid(format!(
                "rootless: --memory, --cpus and --pids-limit need a cgroup, and uid {} cannot write the cgroup hierarchy",
                nix::unistd::geteuid()
            )));
        }
        if config.auto_remove && config.restart != RestartPolicy::No {
            return Err(EngineError::Invalid(
                "Conflicting options: --restart and --rm".into(),
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir, "create"))?;
        let existing = self.list()?;
        let name = match config.name.take() {
            Some(n) => {
                if !names::valid_name(&n) {
                    return Err(EngineError::Invalid(format!(
                        "invalid container name ({n}): only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                if let Some(o) = existing.iter().find(|c| c.name == n) {
                    return Err(EngineError::Invalid(format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{}\". \
                         You have to remove (or rename) that container to be able to reuse that name.",
                        o.id
                    )));
                }
                n
            }
            None => {
                let mut salt = 0;
                loop {
                    let n = names::random_name(salt)
                        .map_err(io_err(Path::new("/dev/urandom"), "read"))?;
                    if !existing.iter().any(|c| c.name == n) {
                        break n;
                    }
                    salt += 1;
                }
            }
        };
        let id = names::new_id().map_err(io_err(Path::new("/dev/urandom"), "read"))?;
        let dir = self.dir.join(&id);
        std::fs::create_dir(&dir).map_err(io_err(&dir, "create"))?;
        let made = (|| {
            for sub in ["upper", "work"] {
                let p = dir.join(sub);
                std::fs::create_dir(&p).map_err(io_err(&p, "create"))?;
            }
            let hostname = config
                .hostname
                .clone()
                .unwrap_or_else(|| id.get(..12).unwrap_or(&id).to_string());
            spec::write_etc_files(&dir, &hostname, config.network)?;
            let log = dir.join(LOG);
            std::fs::File::create(&log).map_err(io_err(&log, "create"))?;
            let c = Container {
                id: id.clone(),
                name,
                config,
                created: time::now(),
                status: Status::Created,
                pid: 0,
                monitor_pid: 0,
                monitor_start: 0,
                started_at: None,
                finished_at: None,
                exit_code: None,
                error: None,
                ports: Vec::new(),
                restart_count: 0,
                oom_killed: false,
            };
            self.save(&c)?;
            Ok(c)
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    /// Starts a created or exited container: double-forks the monitor (`monitor::run`, by
    /// fork alone when this process is single-threaded, else as `exe __monitor`) and waits
    /// for it to report the container started.
    /// The returned handle reports the exit code later (foreground `run`, `start -a`).
    pub fn start(&self, id: &str, exe: &Path) -> Result<Started, EngineError> {
        self.start_with(id, exe, StartOptions::default())
    }

    /// `start` with options (`run -i`: the container's first process reads `opts.stdin`).
    pub fn start_with(
        &self,
        id: &str,
        exe: &Path,
        opts: StartOptions,
    ) -> Result<Started, EngineError> {
        let c = self.load(id)?;
        if c.is_live() {
            return Ok(Started {
                pid: c.pid,
                status: None,
            });
        }
        // An explicit start lets the restart policy apply again.
        restart::clear_stopped(&self.container_dir(&c.id)?)?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Invalid(format!("pipe: {e}")))?;
        let wfd = w.as_raw_fd();
        if single_threaded() {
            self.fork_monitor(&c.id, wfd, opts)?;
        } else {
            self.exec_monitor(&c.id, exe, wfd, opts)?;
        }
        drop(w);
        let mut status = std::io::BufReader::new(std::fs::File::from(r));
        let mut line = String::new();
        // Notes for the user (the rootless copy fallback) come before the outcome; a few.
        for _ in 0..8 {
            line.clear();
            let _ = (&mut status).take(4096).read_line(&mut line);
            match line.strip_prefix("note ") {
                Some(note) => eprintln!("decant: {}", note.trim_end()),
                None => break,
            }
        }
        let line = line.trim_end();
        if let Some(pid) = line.strip_prefix("started ") {
            return Ok(Started {
                pid: pid.parse().unwrap_or(0),
                status: Some(status),
            });
        }
        if let Some(rest) = line.strip_prefix("error ") {
            let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
            return Err(EngineError::Start {
                code: code.parse().unwrap_or(125),
                message: message.to_string(),
            });
        }
        Err(EngineError::Start {
            code: 125,
            message: format!("container {}: the monitor died before starting it", c.id),
        })
    }

    /// The monitor by fork alone (no exec): the cheap path, about 3 ms of CPU and a process
    /// image less than re-executing the binary. Only sound while this process has one thread
    /// (the forked copy then holds no lock another thread took); `start` checks that.
    /// The child double-forks like `exec_monitor`, then keeps only the status pipe and, on
    /// fd 0, `opts.stdin` (else /dev/null; /dev/null on 1 and 2), and runs `monitor::run_with`
    /// to its end.
    fn fork_monitor(
        &self,
        id: &str,
        wfd: std::os::fd::RawFd,
        opts: StartOptions,
    ) -> Result<(), EngineError> {
        let stdin = opts.stdin.as_ref().map(|f| f.as_raw_fd());
        let console_size = opts.console_size;
        let devnull = std::ffi::CString::new("/dev/null").unwrap_or_default();
        // SAFETY: the process is single-threaded (checked by the caller), so the child is a
        // full copy in which every lock is free; it ends with `_exit` and never returns into
        // the caller's frames, so no destructor of the parent's objects runs twice.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(EngineError::Invalid(format!(
                "fork the monitor: {}",
                std::io::Error::last_os_error()
            ))),
            0 => {
                // SAFETY: plain syscalls on descriptors and signal state this child owns; every
                // path ends in `_exit`.
                unsafe {
                    if libc::setsid() < 0 {
                        libc::_exit(125);
                    }
                    match libc::fork() {
                        -1 => libc::_exit(125),
                        0 => {}
                        _ => libc::_exit(0),
                    }
                    // What an exec would have reset: signal mask and handlers.
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                    for sig in 1..libc::SIGRTMAX() {
                        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                            libc::signal(sig, libc::SIG_DFL);
                        }
                    }
                    // As Rust's runtime sets it in a fresh process: a status pipe whose reader
                    // is gone (`run -d` returned) must give EPIPE, not kill the monitor.
                    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                    // Only the status pipe stays open: the parent's store lock and files must
                    // not live on in the monitor.
                    // The status pipe first moves off 0..2 if it sits there.
                    let wfd = if wfd < 3 {
                        libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, 3)
                    } else {
                        wfd
                    };
                    let stdin = stdin.map(|fd| {
                        if fd < 3 {
                            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3)
                        } else {
                            fd
                        }
                    });
                    let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
                    for fd in 0..3 {
                        let from = match stdin {
                            Some(i) if fd == 0 => i,
                            _ => null,
                        };
                        if from >= 0 && from != fd {
                            libc::dup2(from, fd);
                        }
                    }
                    if wfd < 0 {
                        libc::_exit(125);
                    }
                    if wfd > 3 {
                        libc::syscall(libc::SYS_close_range, 3u32, (wfd - 1) as u32, 0u32);
                    }
                    libc::syscall(libc::SYS_close_range, (wfd + 1) as u32, u32::MAX, 0u32);
                    libc::fcntl(wfd, libc::F_SETFD, libc::FD_CLOEXEC);
                    let name = b"decant-monitor\0";
                    libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
                    let status = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(wfd);
                    let opts = StartOptions {
                        stdin: stdin.map(|_| <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(0)),
                        console_size,
                    };
                    let code = monitor::run_with(&self.store_root, id, Some(status), opts);
                    libc::_exit(code)
                }
            }
            child => {
                let mut st = 0;
                // SAFETY: waits for our own short-lived child; `st` is writable.
                unsafe { libc::waitpid(child, &mut st, 0) };
                Ok(())
            }
        }
    }

    /// The monitor as `exe __monitor ...`: used when this process has threads.
    fn exec_monitor(
        &self,
        id: &str,
        exe: &Path,
        wfd: std::os::fd::RawFd,
        opts: StartOptions,
    ) -> Result<(), EngineError> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__monitor")
            .arg("--store")
            .arg(&self.store_root)
            .arg("--status-fd")
            .arg(wfd.to_string());
        // The monitor hands its fd 0 to the container's first process (see `monitor::run`).
        if let Some((rows, cols)) = opts.console_size {
            cmd.arg("--console-size").arg(format!("{rows}x{cols}"));
        }
        match opts.stdin {
            Some(fd) => cmd.arg("--stdin").stdin(std::process::Stdio::from(fd)),
            None => cmd.stdin(std::process::Stdio::null()),
        };
        cmd.arg(id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (fcntl, setsid, fork, _exit) and touches no lock or allocation.
        unsafe {
            cmd.pre_exec(move || {
                // The status pipe must survive the exec.
                if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The double fork: the monitor is nobody's child but init's (or a subreaper's),
                // so it outlives this command and no terminal signal reaches it.
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    0 => Ok(()),
                    _ => libc::_exit(0),
                }
            });
        }
        let mut child = cmd.spawn().map_err(io_err(exe, "start the monitor"))?;
        let _ = child.wait();
        Ok(())
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&self, key: &str, signal: Signal) -> Result<Container, EngineError> {
        let c = self.find(key)?;
        if !c.is_live() {
            return Err(EngineError::Invalid(format!(
                "cannot kill container {}: container is not running",
                c.name
            )));
        }
        self.thaw_if_paused(&c.id);
        // As Docker: a killed container is not restarted by its policy.
        restart::mark_stopped(&self.container_dir(&c.id)?)?;
        if c.status == Status::Restarting {
            // No process to signal; the monitor sees the mark and ends.
            return Ok(c);
        }
        crate::kill(&self.runtime, &c.id, signal, false)?;
        Ok(c)
    }

    /// The stop signal, then SIGKILL to every process after `timeout` (the container's own
    /// stop timeout, or 10 s); returns once the monitor has recorded the exit.
    pub fn stop(&self, key: &str, timeout: Option<u32>) -> Result<Container, EngineError> {
        let c = self.find(key)?;
        if !c.is_live() {
            return Ok(c);
        }
        // Before the signal, so the monitor cannot take the exit for one to restart after.
        restart::mark_stopped(&self.container_dir(&c.id)?)?;
        let grace = Duration::from_secs(u64::from(timeout.or(c.config.stop_timeout).unwrap_or(10)));
        self.thaw_if_paused(&c.id);
        let _ = crate::kill(&self.runtime, &c.id, c.stop_signal()?, false);
        if let Some(done) = self.wait_exit(&c.id, grace)? {
            return Ok(done);
        }
        let _ = crate::kill(&self.runtime, &c.id, Signal::SIGKILL, true);
        match self.wait_exit(&c.id, Duration::from_secs(10))? {
            Some(done) => Ok(done),
            None => Err(EngineError::Invalid(format!(
                "container {}: still running 10 s after SIGKILL",
                c.name
            ))),
        }
    }

    /// Polls the record until the container is no longer running nor waiting to restart,
    /// at most `timeout`;
    /// `None` when it still runs. A container removed meanwhile (auto-remove) counts as exited.
    pub fn wait_exit(&self, id: &str, timeout: Duration) -> Result<Option<Container>, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.load(id) {
                Ok(c) if !c.is_live() => return Ok(Some(c)),
                Ok(c) => last = Some(c),
                Err(EngineError::NotFound(n)) => {
                    // Removed (`--rm`): its last record, while its files are being removed,
                    // or the one seen running, now exited with an exit code nobody kept.
                    let mut c = self
                        .load_discarded(id)
                        .or(last)
                        .ok_or(EngineError::NotFound(n))?;
                    if c.is_live() {
                        c.status = Status::Exited;
                        c.pid = 0;
                    }
                    return Ok(Some(c));
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes a container: refused while it runs unless `force` (SIGKILL first).
    pub fn remove(&self, key: &str, force: bool) -> Result<Container, EngineError> {
        let c = self.find(key)?;
        if c.is_live() {
            if !force {
                return Err(EngineError::Invalid(format!(
                    "cannot remove container \"{}\": container is running: stop the container before removing or force remove",
                    c.name
                )));
            }
            self.thaw_if_paused(&c.id);
            restart::mark_stopped(&self.container_dir(&c.id)?)?;
            let _ = crate::kill(&self.runtime, &c.id, Signal::SIGKILL, true);
            if self.wait_exit(&c.id, Duration::from_secs(10))?.is_none() {
                return Err(EngineError::Invalid(format!(
                    "container {}: still running 10 s after SIGKILL",
                    c.name
                )));
            }
        }
        self.purge(&c.id)?;
        Ok(c)
    }

    /// Deletes everything of a stopped container: runtime state, mount, directory.
    pub(crate) fn purge(&self, id: &str) -> Result<(), EngineError> {
        match self.discard(id)? {
            Some(trash) => remove_tree(&trash),
            None => Ok(()),
        }
    }

    /// Takes container `id` out of the store at once: its runtime state goes, its root is
    /// unmounted, and its directory is renamed to a hidden name (`.removed-<id>`) that no
    /// listing sees. Returns that path; removing the files under it is the slow part, which
    /// a `--rm` monitor does after it has told its starter the exit code.
    pub(crate) fn discard(&self, id: &str) -> Result<Option<PathBuf>, EngineError> {
        self.container_dir(id)?; // a full id, or NotFound
        match crate::delete(&self.runtime, id, true) {
            Ok(()) | Err(RuntimeError::Container { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        monitor::unmount(&self.merged_dir(id))?;
        self.hide(id)
    }

    /// The rename of `discard` alone: container `id`'s directory (with its root still
    /// mounted, if it is) under its hidden name, out of every listing.
    pub(crate) fn hide(&self, id: &str) -> Result<Option<PathBuf>, EngineError> {
        let dir = self.container_dir(id)?;
        let hidden = self.dir.join(format!("{DISCARDED}{id}"));
        match std::fs::rename(&dir, &hidden) {
            Ok(()) => Ok(Some(hidden)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&dir, "rename")(e)),
        }
    }

    /// Removes what a monitor that died while removing a `--rm` container left behind
    /// (`container prune`).
    pub(crate) fn sweep_discarded(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.take(MAX_CONTAINERS).flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(DISCARDED) {
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let _ = monitor::unmount(&self.merged_dir(id));
                }
                let _ = remove_tree(&e.path());
            }
        }
    }

    /// (container short id, image id) of every container (for `rmi`).
    pub fn images_in_use(&self) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self
            .list()?
            .into_iter()
            .map(|c| (c.short_id().to_string(), c.config.image_id))
            .collect())
    }

    /// Reads the log: every line (or the last `tail`), then with `follow` new lines until the
    /// container stops. `out` gets each line; returning `false` stops.
    pub fn logs(
        &self,
        key: &str,
        tail: Option<usize>,
        follow: bool,
        mut out: impl FnMut(&LogLine) -> bool,
    ) -> Result<(), EngineError> {
        let c = self.find(key)?;
        let path = self.container_dir(&c.id)?.join(LOG);
        let f = std::fs::File::open(&path).map_err(io_err(&path, "open"))?;
        let mut reader = LogReader::new(f);
        let mut first = std::collections::VecDeque::new();
        let keep = tail.map(|t| t.min(MAX_TAIL));
        while let Some(l) = reader.next_line().map_err(io_err(&path, "read"))? {
            first.push_back(l);
            if let Some(k) = keep {
                if first.len() > k {
                    first.pop_front();
                }
            }
        }
        for l in &first {
            if !out(l) {
                return Ok(());
            }
        }
        if !follow {
            return Ok(());
        }
        loop {
            let running = matches!(self.load(&c.id), Ok(c) if c.is_live());
            while let Some(l) = reader.next_line().map_err(io_err(&path, "read"))? {
                if !out(&l) {
                    return Ok(());
                }
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a container and streams its log to `out` until it exits; returns the exit code.
    /// The log is opened before the start, so a `--rm` container's last lines are not lost.
    pub fn run_attached(
        &self,
        id: &str,
        exe: &Path,
        out: impl FnMut(&LogLine),
    ) -> Result<i32, EngineError> {
        self.run_attached_with(id, exe, StartOptions::default(), out)
    }

    /// `run_attached` with start options (`run -i`).
    pub fn run_attached_with(
        &self,
        id: &str,
        exe: &Path,
        opts: StartOptions,
        mut out: impl FnMut(&LogLine),
    ) -> Result<i32, EngineError> {
        let path = self.container_dir(id)?.join(LOG);
        let f = std::fs::File::open(&path).map_err(io_err(&path, "open"))?;
        let mut reader = LogReader::new(f);
        // Only what this start writes.
        while reader.next_line().map_err(io_err(&path, "read"))?.is_some() {}
        let started = self.start_with(id, exe, opts)?;
        let Some(status) = started.status else {
            return Err(EngineError::Invalid(format!(
                "container {id} is already running"
            )));
        };
        // What the reader already holds comes first: a process as quick as `true` has its
        // `exit` line written right behind `started`, and both can arrive in one read.
        let mut status_line = status.buffer().to_vec();
        let fd: OwnedFd = status.into_inner().into();
        while !status_line.contains(&b'\n') {
            while let Some(l) = reader.next_line().map_err(io_err(&path, "read"))? {
                out(&l);
            }
            let mut pfd = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                _ => {}
            }
            let mut buf = [0u8; 256];
            let n = match nix::unistd::read(&fd, &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) | Ok(0) => 0,
                Ok(n) => n,
            };
            status_line.extend_from_slice(buf.get(..n).unwrap_or_default());
            if n == 0 || status_line.len() > 4096 {
                break;
            }
        }
        // Unless the policy restarts it, the monitor is about to exit.
        if !matches!(self.load_raw(id), Ok(c) if c.is_live()) {
            wait_for_close(&fd, MONITOR_EXIT_WAIT);
        }
        while let Some(l) = reader.next_line().map_err(io_err(&path, "read"))? {
            out(&l);
        }
        let text = String::from_utf8_lossy(&status_line);
        match text.trim_end().strip_prefix("exit ") {
            Some(code) => Ok(code.parse().unwrap_or(255)),
            None => match self.load(id) {
                Ok(c) => Ok(c.exit_code.unwrap_or(255)),
                Err(_) => Err(EngineError::Start {
                    code: 125,
                    message: format!("container {id}: the monitor died"),
                }),
            },
        }
    }
}

/// How `start_with` starts a container.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The standard input of the container's first process (a restart by the policy gets
    /// /dev/null); /dev/null when `None`.
    pub stdin: Option<OwnedFd>,
    /// With `-t`: the pty's size (rows, columns) at start.
    pub console_size: Option<(u16, u16)>,
}

/// What `start` returns: the init's pid and, when this call started it, the pipe on which
/// the monitor reports `exit <code>`.
pub struct Started {
    pub pid: i32,
    status: Option<std::io::BufReader<std::fs::File>>,
}

impl Started {
    /// Blocks until the container exits; `None` when this call did not start it or the
    /// monitor died without reporting.
    pub fn wait(self) -> Option<i32> {
        let mut status = self.status?;
        let mut line = String::new();
        (&mut status).take(4096).read_line(&mut line).ok()?;
        line.trim_end().strip_prefix("exit ")?.parse().ok()
    }
}

/// Reads JSON log lines incrementally (a partial last line is kept for the next call).
struct LogReader {
    reader: std::io::BufReader<std::fs::File>,
    partial: Vec<u8>,
}

impl LogReader {
    fn new(f: std::fs::File) -> LogReader {
        LogReader {
            reader: std::io::BufReader::new(f),
            partial: Vec::new(),
        }
    }

    fn next_line(&mut self) -> std::io::Result<Option<LogLine>> {
        loop {
            let room = MAX_LOG_LINE.saturating_sub(self.partial.len() as u64);
            let n = (&mut self.reader)
                .take(room.max(1))
                .read_until(b'\n', &mut self.partial)?;
            if n == 0 {
                return Ok(None);
            }
            if self.partial.last() != Some(&b'\n') && (self.partial.len() as u64) < MAX_LOG_LINE {
                // An unfinished line: wait for the rest.
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            // A damaged or overlong line is skipped, not fatal.
            if let Ok(l) = serde_json::from_slice::<LogLine>(&line) {
                return Ok(Some(l));
            }
        }
    }
}

/// How long a foreground `run` waits for the monitor to exit after it reported the exit.
const MONITOR_EXIT_WAIT: Duration = Duration::from_secs(5);

/// Reads `fd` until end of file (the writer, the monitor, exited) or `limit`: so that once a
/// foreground `run` returns, its monitor is gone too (nothing of a `--rm` container is left).
fn wait_for_close(fd: &OwnedFd, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Whether `pid` is still the process that started at `start` (clock ticks since boot).
pub(crate) fn monitor_alive(pid: i32, start: u64) -> bool {
    pid > 0
        && crate::state::proc_stat(pid)
            // A zombie is dead: a killed monitor whose new parent does not reap it stays one.
            .map(|s| s.start_time == start && !matches!(s.state, 'Z' | 'X'))
            .unwrap_or(false)
}

/// Writes `text` to the status pipe, ignoring a reader that went away.
pub(crate) fn report(status: &mut Option<std::fs::File>, text: &str) {
    if let Some(f) = status {
        if f.write_all(text.as_bytes()).is_err() {
            *status = None;
        }
    }
}

/// Whether this process has a single thread (`/proc/self/stat` field 20), so a fork may run
/// on without exec. Unknown counts as not.
fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Fields after the parenthesised command name, which may itself hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    rest.split_whitespace().nth(17) == Some("1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::new(t.path());
        let id = "ab".repeat(32);
        let dir = e.containers_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        for bad in [&b"{\"id\": 7"[..], b"", &[0xffu8; 64][..]] {
            std::fs::write(dir.join(RECORD), bad).unwrap();
            let err = e.load(&id).unwrap_err();
            assert!(matches!(err, EngineError::Record { .. }), "{err}");
            assert!(!err.to_string().contains('\n'));
        }
        // A damaged record is left out of the list and lookups do not find it.
        assert!(e.list().unwrap().is_empty());
        assert!(matches!(e.find("abab"), Err(EngineError::NotFound(_))));
        assert!(matches!(e.load("../x"), Err(EngineError::NotFound(_))));
    }

    #[test]
    fn flags_parse() {
        let b: Bind = "/h:/c:ro".parse().unwrap();
        assert!(b.read_only && b.container == "/c");
        assert!("rel:/c".parse::<Bind>().is_err());
        assert!("/h:/c:zz".parse::<Bind>().is_err());
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!("bogus".parse::<NetworkMode>().is_err());
    }
}

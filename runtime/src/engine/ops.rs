//! The verbs that act on a running container without restarting it: exec, pause/unpause (the
//! cgroup freezer), stats and top (read from its cgroup and /proc), inspect (the record as
//! Docker-like JSON) and prune (remove every stopped container). They read the record, talk to
//! the OCI runtime or the cgroup, and leave the monitor alone: it still owns the container's
//! life. The paused state is read live from the freezer, never stored, so it cannot go stale.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::Process;
use serde_json::{json, Value};

use super::{io_err, time, Container, Engine, EngineError, NetworkMode, Status};
use crate::cgroups::{self, CgroupManager};
use crate::{ContainerProcess, ExecOptions};

/// /proc files read by `top` and `stats` are small; a larger one is cut here.
const MAX_PROC_FILE: u64 = 64 << 10;
/// `top` lists at most this many processes (bounds a fork bomb's cgroup).
const MAX_TOP: usize = 100_000;
/// `prune`'s size walk stops counting after this many entries per container.
const MAX_WALK: usize = 1_000_000;

/// What `exec` runs and how.
#[derive(Debug, Clone, Default)]
pub struct ExecConfig {
    pub args: Vec<String>,
    /// `K=V` added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// `USER[:GROUP]` resolved in the container's /etc/passwd; the container's user when `None`.
    pub user: Option<String>,
    /// The container's working directory when `None`.
    pub workdir: Option<String>,
    /// Give the process the caller's stdin (`-i`); else /dev/null.
    pub interactive: bool,
    /// Detached (`-d`): stdin, stdout and stderr all go to /dev/null.
    pub detach: bool,
    /// `-t`: a pseudo-terminal of this size (rows, columns; unset when `None`); see
    /// `exec_tty`.
    pub tty: bool,
    pub console_size: Option<(u16, u16)>,
}

/// One sample of a container's resource use (`decant stats`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatsSample {
    pub id: String,
    pub name: String,
    /// Percent of one CPU (200 means two CPUs busy), as Docker shows it.
    pub cpu_percent: f64,
    pub memory_usage: u64,
    /// The cgroup's limit, else the host's memory.
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub pids: u64,
}

/// One process of a container (`decant top`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopProcess {
    pub pid: i32,
    pub ppid: i32,
    /// The user name on the host (as `ps` on the host shows it), else the number.
    pub user: String,
    /// CPU time used, `[DD-]HH:MM:SS`.
    pub time: String,
    pub cmd: String,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub ids: Vec<String>,
    /// Bytes of the removed containers' upper directories.
    pub reclaimed: u64,
}

/// A rootless user without a cgroup of its own cannot pause or measure: one line saying so.
fn need_cgroup(what: &str) -> Result<(), EngineError> {
    if super::rootless() && !super::cgroups_writable() {
        return Err(EngineError::Invalid(format!(
            "rootless: {what} needs a cgroup, and uid {} cannot write the cgroup hierarchy",
            nix::unistd::geteuid()
        )));
    }
    Ok(())
}

fn freezer_err(c: &Container, e: cgroups::CgroupError) -> EngineError {
    EngineError::Invalid(format!("container {}: {e}", c.name))
}

/// Whether the freezer of container `id` holds it frozen (v1 `freezer.state`, v2
/// `cgroup.freeze`); `false` when it has no freezer.
pub fn freezer_frozen(id: &str) -> bool {
    let Ok(m) = cgroups::manager_for(id) else {
        return false;
    };
    m.paths().iter().any(|dir| {
        let v1 = read_small(&dir.join("freezer.state"))
            .map(|s| matches!(s.trim(), "FROZEN" | "FREEZING"))
            .unwrap_or(false);
        let v2 = read_small(&dir.join("cgroup.freeze"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        v1 || v2
    })
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(MAX_PROC_FILE)
        .read_to_string(&mut s)?;
    Ok(s)
}

impl Engine {
    /// Whether a running container is paused.
    pub fn is_paused(&self, c: &Container) -> bool {
        c.status == Status::Running && freezer_frozen(&c.id)
    }

    /// Docker's STATUS column, with `(Paused)` for a frozen container.
    pub fn status_line(&self, c: &Container, now: i64) -> String {
        let text = c.status_text(now);
        if self.is_paused(c) {
            format!("{text} (Paused)")
        } else if let Some(h) = self.health(c).filter(|_| c.status == Status::Running) {
            format!("{text} {}", h.status.ps_suffix())
        } else {
            text
        }
    }

    /// The container's health state, when it has a check and it has run since the start.
    pub fn health(&self, c: &Container) -> Option<super::health::HealthState> {
        c.config.healthcheck.as_ref()?;
        super::health::read_state(&self.container_dir(&c.id).ok()?)
    }

    /// Docker's state word: created, running, paused, restarting or exited.
    pub fn state_word(&self, c: &Container) -> &'static str {
        match c.status {
            Status::Created => "created",
            Status::Running if self.is_paused(c) => "paused",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }

    fn running(&self, key: &str, verb: &str) -> Result<Container, EngineError> {
        let c = self.find(key)?;
        if c.status != Status::Running {
            return Err(EngineError::Invalid(format!(
                "cannot {verb} container {}: container is not running",
                c.name
            )));
        }
        Ok(c)
    }

    /// Freezes every process of the container.
    pub fn pause(&self, key: &str) -> Result<Container, EngineError> {
        let c = self.running(key, "pause")?;
        need_cgroup("pause")?;
        if self.is_paused(&c) {
            return Err(EngineError::Invalid(format!(
                "container {} is already paused",
                c.name
            )));
        }
        let m = cgroups::manager_for(&c.id).map_err(|e| freezer_err(&c, e))?;
        m.freeze().map_err(|e| freezer_err(&c, e))?;
        Ok(c)
    }

    /// Thaws a paused container.
    pub fn unpause(&self, key: &str) -> Result<Container, EngineError> {
        let c = self.running(key, "unpause")?;
        need_cgroup("unpause")?;
        if !self.is_paused(&c) {
            return Err(EngineError::Invalid(format!(
                "container {} is not paused",
                c.name
            )));
        }
        let m = cgroups::manager_for(&c.id).map_err(|e| freezer_err(&c, e))?;
        m.thaw().map_err(|e| freezer_err(&c, e))?;
        Ok(c)
    }

    /// Thaws container `id` if frozen, so a signal reaches it (stop, kill, rm -f do this
    /// first, as Docker does); a failure is left for the signal's own error to report.
    pub(crate) fn thaw_if_paused(&self, id: &str) {
        if freezer_frozen(id) {
            if let Ok(m) = cgroups::manager_for(id) {
                let _ = m.thaw();
            }
        }
    }

    /// Starts `cfg` in the running container `key` (all its namespaces, its cgroup, its
    /// capabilities and seccomp filter), with the caller's stdio. The process is the
    /// caller's child; a command that is missing or not executable fails with 127 or 126.
    pub fn exec(&self, key: &str, cfg: &ExecConfig) -> Result<ContainerProcess, EngineError> {
        if cfg.tty {
            return Err(EngineError::Invalid(
                "exec with a terminal: use exec_tty".into(),
            ));
        }
        self.exec_inner(key, cfg, None)
    }

    /// `exec -t`: as `exec`, with a pty made inside the container; returns the process and
    /// the pty's master, which the caller copies to and from its terminal (see
    /// `tty::copy_terminal`).
    pub fn exec_tty(
        &self,
        key: &str,
        cfg: &ExecConfig,
    ) -> Result<(ContainerProcess, OwnedFd), EngineError> {
        let c = self.find(key)?;
        let (l, path) = super::tty::console_listener(self.runtime.path(), &c.id)?;
        let p = self.exec_inner(&c.id, cfg, Some(&path));
        let master = p
            .as_ref()
            .ok()
            .map(|_| super::tty::receive_master(&l, &path));
        let _ = std::fs::remove_file(&path);
        let p = p?;
        match master {
            Some(Ok(m)) => Ok((p, m)),
            Some(Err(e)) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid()),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = p.wait();
                Err(e)
            }
            None => Err(EngineError::Invalid("exec: no process".into())),
        }
    }

    fn exec_inner(
        &self,
        key: &str,
        cfg: &ExecConfig,
        console: Option<&Path>,
    ) -> Result<ContainerProcess, EngineError> {
        let c = self.running(key, "exec in")?;
        if self.is_paused(&c) {
            return Err(EngineError::Invalid(format!(
                "container {} is paused, unpause the container before exec",
                c.name
            )));
        }
        if cfg.args.is_empty() {
            return Err(EngineError::Invalid("exec: no command given".into()));
        }
        let process = self.exec_process(&c, cfg)?;
        let null = || -> Result<Option<OwnedFd>, EngineError> {
            let p = Path::new("/dev/null");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(io_err(p, "open"))?;
            Ok(Some(f.into()))
        };
        let mut opts = ExecOptions::default();
        if !cfg.interactive || cfg.detach {
            opts.stdin = null()?;
        }
        if cfg.detach {
            opts.stdout = null()?;
            opts.stderr = null()?;
        }
        if console.is_some() {
            // The pty's slave replaces all three; nothing of the caller's reaches the process.
            opts.stdin = null()?;
            opts.stdout = null()?;
            opts.stderr = null()?;
        }
        opts.console_socket = console.map(Path::to_path_buf);
        Ok(crate::exec(&self.runtime, &c.id, &process, &opts)?)
    }

    /// Starts `args` in the running container `id` with stdin on /dev/null and stdout and
    /// stderr on the given descriptors (the health check's output pipe).
    pub(crate) fn exec_capture(
        &self,
        id: &str,
        args: &[String],
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<ContainerProcess, EngineError> {
        let c = self.running(id, "exec in")?;
        let cfg = ExecConfig {
            args: args.to_vec(),
            ..Default::default()
        };
        let process = self.exec_process(&c, &cfg)?;
        let p = Path::new("/dev/null");
        let null = std::fs::File::open(p).map_err(io_err(p, "open"))?;
        let opts = ExecOptions {
            stdin: Some(null.into()),
            stdout: Some(stdout),
            stderr: Some(stderr),
            ..Default::default()
        };
        Ok(crate::exec(&self.runtime, &c.id, &process, &opts)?)
    }

    /// The container's own process settings (user, env, cwd, capabilities) with the exec's
    /// arguments and overrides; users are resolved in the running container's root.
    fn exec_process(&self, c: &Container, cfg: &ExecConfig) -> Result<Process, EngineError> {
        let dir = self.container_dir(&c.id)?;
        let root = PathBuf::from(format!("/proc/{}/root", c.pid));
        let mut config = c.config.clone();
        config.env.extend(cfg.env.iter().cloned());
        if let Some(u) = &cfg.user {
            config.user = Some(u.clone());
        }
        if let Some(w) = &cfg.workdir {
            config.workdir = Some(w.clone());
        }
        let spec = super::build_spec(&config, &dir, &root)?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cfg.args.clone()));
        process.set_terminal(Some(cfg.tty));
        if let (true, Some((rows, cols))) = (cfg.tty, cfg.console_size) {
            process.set_console_size(Some(super::tty::console_box(rows, cols)?));
        }
        Ok(process)
    }

    /// One stats sample per container: two cgroup reads `interval` apart (the CPU share is
    /// the usage between them).
    pub fn stats(
        &self,
        containers: &[Container],
        interval: Duration,
    ) -> Result<Vec<StatsSample>, EngineError> {
        need_cgroup("stats")?;
        let managers: Vec<(&Container, Box<dyn CgroupManager>)> = containers
            .iter()
            .map(|c| {
                cgroups::manager_for(&c.id)
                    .map(|m| (c, m))
                    .map_err(|e| freezer_err(c, e))
            })
            .collect::<Result<_, _>>()?;
        let first: Vec<Option<cgroups::Stats>> =
            managers.iter().map(|(_, m)| m.stats().ok()).collect();
        let t0 = Instant::now();
        std::thread::sleep(interval);
        let wall = t0.elapsed().as_nanos().max(1) as f64;
        let host_mem = host_memory();
        let mut out = Vec::new();
        for ((c, m), before) in managers.iter().zip(first) {
            // A container that stopped meanwhile shows zeros, as Docker does.
            let now = m.stats().ok();
            let (cpu, s) = match (before, now) {
                (Some(b), Some(n)) => (
                    n.cpu_usage_ns.saturating_sub(b.cpu_usage_ns) as f64 / wall * 100.0,
                    n,
                ),
                (_, n) => (0.0, n.unwrap_or_default()),
            };
            let limit = s
                .memory_limit
                .filter(|l| *l > 0)
                .map_or(host_mem, |l| l.min(host_mem.max(1)));
            let mem_pct = if limit > 0 {
                s.memory_usage as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            out.push(StatsSample {
                id: c.id.clone(),
                name: c.name.clone(),
                cpu_percent: cpu,
                memory_usage: s.memory_usage,
                memory_limit: limit,
                memory_percent: mem_pct,
                pids: s.pids_current,
            });
        }
        Ok(out)
    }

    /// The processes in a running container's cgroup, by pid.
    pub fn top(&self, key: &str) -> Result<Vec<TopProcess>, EngineError> {
        let c = self.running(key, "top")?;
        // Rootless without a cgroup: the container's processes are those of its pid namespace.
        let pids = if super::rootless() && !super::cgroups_writable() {
            crate::container::pids_in_pidns(c.pid)
        } else {
            let m = cgroups::manager_for(&c.id).map_err(|e| freezer_err(&c, e))?;
            m.pids().map_err(|e| freezer_err(&c, e))?
        };
        let passwd = read_small(Path::new("/etc/passwd")).unwrap_or_default();
        let tick = clock_ticks();
        Ok(pids
            .into_iter()
            .take(MAX_TOP)
            .filter_map(|p| proc_entry(p, &passwd, tick))
            .collect())
    }

    /// Docker-like `inspect` JSON for a container.
    pub fn inspect(&self, c: &Container) -> Result<Value, EngineError> {
        let dir = self.container_dir(&c.id)?;
        let args = c.config.args();
        let running = c.status == Status::Running;
        let paused = self.is_paused(c);
        let stamp = |t: Option<i64>| t.map_or("0001-01-01T00:00:00Z".to_string(), time::rfc3339);
        let lower: Vec<String> = c
            .config
            .lower_dirs
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let hostname = std::fs::read_to_string(dir.join("hostname"))
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        // Rootless: which ids its namespace has (Podman's `IDMappings`), and in a line why.
        let id_mappings = super::rootless().then(|| {
            let m = crate::userns::IdMap::current();
            let (uids, gids) = m.lines();
            json!({"UidMap": uids, "GidMap": gids, "Note": m.describe()})
        });
        Ok(json!({
            "Id": c.id,
            "Created": time::rfc3339(c.created),
            "Path": args.first(),
            "Args": args.get(1..).unwrap_or_default(),
            "State": {
                "Status": self.state_word(c),
                "Running": running,
                "Paused": paused,
                "Restarting": false,
                "OOMKilled": c.oom_killed,
                "Dead": false,
                "Pid": if running { c.pid } else { 0 },
                "ExitCode": c.exit_code.unwrap_or(0),
                "Error": c.error.clone().unwrap_or_default(),
                "StartedAt": stamp(c.started_at),
                "FinishedAt": stamp(c.finished_at),
                "Health": self.health(c).map(|h| h.to_json()),
            },
            "Image": c.config.image_id,
            "ResolvConfPath": dir.join("resolv.conf"),
            "HostnamePath": dir.join("hostname"),
            "HostsPath": dir.join("hosts"),
            "LogPath": dir.join(super::LOG),
            "Name": format!("/{}", c.name),
            "RestartCount": c.restart_count,
            "Mounts": mounts_json(c),
            "Driver": if super::copyroot::existing(&dir).is_some() { "vfs" } else { "overlay" },
            "HostConfig": {
                "Binds": c.config.binds.iter().map(|b| format!(
                    "{}:{}{}",
                    b.host.display(),
                    b.container,
                    if b.read_only { ":ro" } else { "" }
                )).collect::<Vec<_>>(),
                "NetworkMode": match c.config.network {
                    NetworkMode::Private => "private",
                    NetworkMode::Host => "host",
                    NetworkMode::None => "none",
                },
                "RestartPolicy": restart_policy_json(c.config.restart),
                "AutoRemove": c.config.auto_remove,
                "CapAdd": c.config.cap_add,
                "CapDrop": c.config.cap_drop,
                "Privileged": c.config.privileged,
                "ReadonlyRootfs": c.config.read_only,
                "Tmpfs": c.config.tmpfs,
                "Memory": c.config.memory.unwrap_or(0),
                "NanoCpus": c.config.cpus.map_or(0, |n| (n * 1e9).round() as i64),
                "PidsLimit": c.config.pids_limit,
                "IDMappings": id_mappings,
            },
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": lower.join(":"),
                    "UpperDir": dir.join("upper"),
                    "WorkDir": dir.join("work"),
                    "MergedDir": self.merged_dir(&c.id),
                },
            },
            "Config": {
                "Hostname": hostname,
                "User": c.config.user.clone().unwrap_or_default(),
                "Env": c.config.env,
                "Cmd": c.config.cmd,
                "Entrypoint": c.config.entrypoint,
                "Image": c.config.image,
                "WorkingDir": c.config.workdir.clone().unwrap_or_default(),
                "StopSignal": c.config.stop_signal,
                "StopTimeout": c.config.stop_timeout,
                "Healthcheck": c.config.healthcheck.as_ref().map(|h| json!({
                    "Test": h.test,
                    "Interval": h.interval.unwrap_or(0),
                    "Timeout": h.timeout.unwrap_or(0),
                    "StartPeriod": h.start_period.unwrap_or(0),
                    "StartInterval": h.start_interval.unwrap_or(0),
                    "Retries": h.retries.unwrap_or(0),
                })),
            },
        }))
    }

    /// Removes every container that is not running; returns their ids and the bytes their
    /// upper directories held.
    pub fn prune(&self) -> Result<Pruned, EngineError> {
        let mut out = Pruned::default();
        for c in self.list()? {
            if c.status == Status::Running {
                continue;
            }
            let size = dir_size(&self.container_dir(&c.id)?.join("upper"));
            match self.remove(&c.id, false) {
                Ok(_) => {
                    out.ids.push(c.id);
                    out.reclaimed = out.reclaimed.saturating_add(size);
                }
                // Started or removed by someone else meanwhile: not ours to prune.
                Err(EngineError::Invalid(_)) | Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.sweep_discarded();
        Ok(out)
    }
}

/// Docker's `HostConfig.RestartPolicy`: `{"Name": "on-failure", "MaximumRetryCount": 3}`.
fn restart_policy_json(p: super::RestartPolicy) -> Value {
    use super::RestartPolicy as P;
    let (name, max) = match p {
        P::No => ("no", 0),
        P::OnFailure { max } => ("on-failure", max),
        P::Always => ("always", 0),
        P::UnlessStopped => ("unless-stopped", 0),
    };
    json!({"Name": name, "MaximumRetryCount": max})
}

/// Docker's `Mounts`: the bind mounts, then the volumes.
fn mounts_json(c: &Container) -> Vec<Value> {
    let binds = c.config.binds.iter().map(|b| {
        json!({
            "Type": "bind",
            "Source": b.host,
            "Destination": b.container,
            "Mode": if b.read_only { "ro" } else { "" },
            "RW": !b.read_only,
            "Propagation": "rprivate",
        })
    });
    let volumes = c.config.volumes.iter().map(|v| {
        json!({
            "Type": "volume",
            "Name": v.name,
            "Source": v.source,
            "Destination": v.container,
            "Driver": "local",
            "Mode": if v.read_only { "ro" } else { "z" },
            "RW": !v.read_only,
            "Propagation": "",
        })
    });
    binds.chain(volumes).collect()
}

/// Bytes of regular files under `dir` (no symlink followed, at most `MAX_WALK` entries).
pub(super) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                return total;
            }
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total = total.saturating_add(md.len());
            }
        }
    }
    total
}

/// MemTotal of /proc/meminfo in bytes (0 when unreadable).
fn host_memory() -> u64 {
    read_small(Path::new("/proc/meminfo"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// `[DD-]HH:MM:SS` as ps prints TIME.
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// One process from /proc; `None` when it is gone or its files are unreadable.
fn proc_entry(pid: i32, passwd: &str, tick: u64) -> Option<TopProcess> {
    let stat = read_small(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let name_end = stat.rfind(')')?;
    let name = stat.get(stat.find('(')? + 1..name_end)?.to_string();
    let fields: Vec<&str> = stat.get(name_end + 1..)?.split_whitespace().collect();
    // Fields after the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields
        .get(11)?
        .parse::<u64>()
        .ok()?
        .saturating_add(fields.get(12)?.parse::<u64>().ok()?);
    let status = read_small(Path::new(&format!("/proc/{pid}/status"))).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let user = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&uid.as_str()))
        .and_then(|f| f.first().map(|s| s.to_string()))
        .unwrap_or(uid);
    let cmdline = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| {
            let mut b = Vec::new();
            f.take(MAX_PROC_FILE).read_to_end(&mut b)?;
            Ok(b)
        })
        .unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmdline)
        .trim_end_matches('\0')
        .replace('\0', " ");
    Some(TopProcess {
        pid,
        ppid,
        user,
        time: cpu_time(ticks / tick),
        cmd: if cmd.is_empty() {
            format!("[{name}]")
        } else {
            cmd
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_formats_like_ps() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(3_723), "01:02:03");
        assert_eq!(cpu_time(90_061), "1-01:01:01");
    }

    #[test]
    fn proc_entry_reads_this_process() {
        let me = std::process::id() as i32;
        let p = proc_entry(me, "root:x:0:0::/root:/bin/sh\n", clock_ticks()).unwrap();
        assert_eq!(p.pid, me);
        assert!(!p.cmd.is_empty());
        assert!(proc_entry(i32::MAX, "", 100).is_none());
    }

    #[test]
    fn dir_size_counts_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/a"), [0u8; 100]).unwrap();
        std::fs::write(t.path().join("b"), [0u8; 20]).unwrap();
        assert_eq!(dir_size(t.path()), 120);
        assert_eq!(dir_size(&t.path().join("missing")), 0);
    }
}

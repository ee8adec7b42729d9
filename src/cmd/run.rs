//! `decant run` and `decant create`: the image's config (Entrypoint, Cmd, Env, WorkingDir,
//! User, StopSignal, Healthcheck) and its cached layers become a `runtime::engine::ContainerConfig`; the
//! engine does the rest.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use runtime::engine::health::HealthConfig;
use runtime::engine::ports::PortMapping;
use runtime::engine::tty;
use runtime::engine::volumes::{parse_volume_arg, VolumeArg};
use runtime::engine::{ContainerConfig, Engine, LogLine, NetworkMode, RestartPolicy, StartOptions};
use snapshot::image::Healthcheck;
use snapshot::layer::cache::LayerCache;

use super::Context;

#[derive(ClapArgs)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Set environment variables (K=V, or K to take it from this environment).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (K=V lines; # comments).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// USER[:GROUP], names or numbers.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Bind mount a host directory (HOST:CTR[:ro]), mount a named volume (NAME:CTR[:ro],
    /// made on first use) or a new anonymous volume (CTR).
    #[arg(short, long = "volume", value_name = "HOST|NAME:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Mount a tmpfs directory.
    #[arg(long, value_name = "DIR")]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (bytes, or with b, k, m, g). A value such as `-1` reaches the size parser
    /// (a 125 with the reason), not clap's "unexpected argument".
    #[arg(short, long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Limit on the number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// private (own namespace, lo up), host or none.
    #[arg(long, default_value = "private")]
    pub network: String,
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Signal to stop the container (default the image's, else SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before SIGKILL (default 10).
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Command to run to check health (`/bin/sh -c`), replacing the image's.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between checks (30s by default; a Go duration: 500ms, 1m30s).
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Longest time one check may run (30s by default).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Consecutive failures that make the container unhealthy (3 by default).
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Time to start before failures count (0 by default).
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Time between checks during the start period (5s by default).
    #[arg(long, value_name = "DURATION")]
    pub health_start_interval: Option<String>,
    /// Disable any HEALTHCHECK the image has.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Publish a container's port to the host: [IP:][HOST:]CTR[/tcp|udp] (no HOST: any free).
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]CTR[/PROTO]")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on free host ports.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no", value_name = "POLICY")]
    pub restart: String,
    /// Run decant-init as PID 1: `--init` reaps zombies and forwards signals to the command
    /// (as tini); `--init=host` boots the image's own services (runit, supervisord, enabled
    /// systemd units) as a VM would, with the command, if one is given, as the main service.
    /// Found as $DECANT_INIT or next to the decant binary, and must be static.
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "tini",
        value_parser = ["tini", "host"]
    )]
    pub init: Option<String>,
    /// Give the process a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep the container's standard input open: `run -i` gives it this command's, `start
    /// -a -i` the starter's; a start without them gives a pipe nobody writes (never EOF).
    #[arg(short, long)]
    pub interactive: bool,
    /// Print help (-h is --hostname, as docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(ClapArgs)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `512m`, `1g`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size: {s} (a number with b, k, m or g)"))?;
    let v = n * mult as f64;
    anyhow::ensure!(
        v >= 6.0 * 1024.0 * 1024.0 && v < i64::MAX as f64,
        "invalid memory limit {s}: the minimum is 6m"
    );
    Ok(v as i64)
}

fn env_file(path: &PathBuf) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("env file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(expand_env)
        .collect())
}

/// `K=V` as is; a bare `K` takes this process's value (dropped when unset), as Docker.
fn expand_env(kv: &str) -> Option<String> {
    if kv.contains('=') {
        Some(kv.to_string())
    } else {
        std::env::var(kv).ok().map(|v| format!("{kv}={v}"))
    }
}

/// Builds the engine's config from the image and flags, and records the container.
pub fn create(ctx: &Context, a: CreateArgs) -> Result<runtime::engine::Container> {
    // Flags that need no image are checked first, so a bad one leaves nothing behind.
    let restart = a.restart.parse::<RestartPolicy>()?;
    let init_host = a.init.as_deref() == Some("host");
    let init = if a.init.is_some() {
        let exe = std::env::current_exe().context("finding the decant binary")?;
        Some(runtime::engine::find_init(&exe)?)
    } else {
        None
    };
    let store = ctx.open_store()?;
    let rec = store.resolve(&a.image)?;
    let (config, raw_config) = store.config(&rec)?;
    let (manifest, _) = store.manifest(&rec)?;
    if let Some(notice) = runtime::engine::cgroups_notice() {
        eprintln!("decant: {notice}");
    }
    let lower_dirs = layer_dirs(
        &store,
        &manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect::<Vec<_>>(),
    )?;
    let ic = config.config().clone().unwrap_or_default();
    let (entrypoint, cmd) = match &a.entrypoint {
        // Host mode runs the image's services; its default Cmd (an imported VM's shell) and an
        // Entrypoint that is decant-init itself (`import --init`) would only get in the way.
        None if init_host => {
            let ep = ic.entrypoint().clone().unwrap_or_default();
            let own_init =
                ep.first().map(String::as_str) == Some(snapshot::init_layer::INIT_IN_IMAGE);
            if own_init || a.command.is_empty() {
                (vec![], a.command.clone())
            } else {
                (ep, a.command.clone())
            }
        }
        Some(e) => (
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            },
            a.command.clone(),
        ),
        None => (
            ic.entrypoint().clone().unwrap_or_default(),
            if a.command.is_empty() {
                ic.cmd().clone().unwrap_or_default()
            } else {
                a.command.clone()
            },
        ),
    };
    let mut env = ic.env().clone().unwrap_or_default();
    for f in &a.env_file {
        env.extend(env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| expand_env(e)));
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for v in &a.volume {
        match parse_volume_arg(v)? {
            VolumeArg::Bind(b) => binds.push(b),
            VolumeArg::Volume(r) => volumes.push(r),
        }
    }
    let image_volumes: Vec<String> = ic.volumes().clone().unwrap_or_default();
    let network = a.network.parse::<NetworkMode>()?;
    let ports = published(
        &a.publish,
        a.publish_all,
        ic.exposed_ports().as_deref().unwrap_or_default(),
        network,
    )?;
    let healthcheck = health_config(&a, &raw_config)?;
    let cfg = ContainerConfig {
        name: a.name,
        image: a.image.clone(),
        image_id: rec.id.digest().to_string(),
        lower_dirs,
        entrypoint,
        cmd,
        env,
        workdir: a.workdir.or_else(|| ic.working_dir().clone()),
        // An init that is to start services as their own users must be root: host mode takes
        // no USER from the image, only from -u.
        user: a
            .user
            .or_else(|| ic.user().clone().filter(|_| !init_host))
            .filter(|u| !u.is_empty()),
        hostname: a.hostname,
        binds,
        tmpfs: a.tmpfs,
        read_only: a.read_only,
        memory: a.memory.as_deref().map(parse_bytes).transpose()?,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        network,
        cap_add: a.cap_add,
        cap_drop: a.cap_drop,
        privileged: a.privileged,
        stop_signal: a.stop_signal.or_else(|| ic.stop_signal().clone()),
        stop_timeout: a.stop_timeout,
        auto_remove: a.rm,
        ports,
        restart,
        init,
        init_host,
        volumes: Vec::new(),
        tty: a.tty,
        open_stdin: a.interactive,
        healthcheck,
    };
    Ok(Engine::new(&ctx.store_root()).create_with_volumes(cfg, &volumes, &image_volumes)?)
}

/// The check the container runs: the image's `Healthcheck` with the `--health-*` flags over
/// it, as docker; `None` with `--no-healthcheck`, `NONE`, or no test at all.
fn health_config(a: &CreateArgs, raw_config: &[u8]) -> Result<Option<HealthConfig>> {
    let any_flag = a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some()
        || a.health_start_interval.is_some();
    if a.no_healthcheck {
        anyhow::ensure!(
            !any_flag,
            "--no-healthcheck conflicts with --health-* options"
        );
        return Ok(None);
    }
    let image = serde_json::from_slice::<serde_json::Value>(raw_config)
        .ok()
        .and_then(|v| {
            v.pointer("/config/Healthcheck")
                .and_then(Healthcheck::from_json)
        });
    let mut h = match image {
        Some(i) => HealthConfig {
            test: i.test,
            interval: i.interval,
            timeout: i.timeout,
            start_period: i.start_period,
            start_interval: i.start_interval,
            retries: i.retries,
        },
        None => HealthConfig::default(),
    };
    let dur = |flag: &str, v: &Option<String>| -> Result<Option<u64>> {
        v.as_deref()
            .map(|s| snapshot::change::duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    if let Some(cmd) = &a.health_cmd {
        h.test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
    if let Some(n) = dur("health-interval", &a.health_interval)? {
        h.interval = Some(n);
    }
    if let Some(n) = dur("health-timeout", &a.health_timeout)? {
        h.timeout = Some(n);
    }
    if let Some(n) = dur("health-start-period", &a.health_start_period)? {
        h.start_period = Some(n);
    }
    if let Some(n) = dur("health-start-interval", &a.health_start_interval)? {
        h.start_interval = Some(n);
    }
    if let Some(n) = a.health_retries {
        h.retries = Some(n);
    }
    Ok(h.argv().map(|_| h))
}

/// The ports of `-p` and (with `-P`) of the image's EXPOSE; none, with Docker's warning, on
/// the host network (nothing to forward); refused on network none.
fn published(
    publish: &[String],
    all: bool,
    exposed: &[String],
    network: NetworkMode,
) -> Result<Vec<PortMapping>> {
    let mut ports = publish
        .iter()
        .map(|p| p.parse::<PortMapping>())
        .collect::<Result<Vec<_>, _>>()?;
    if all {
        for e in exposed {
            let m = PortMapping::exposed(e)?;
            // An explicit -p for the same port wins, as Docker.
            if !ports
                .iter()
                .any(|p| p.container_port == m.container_port && p.proto == m.proto)
            {
                ports.push(m);
            }
        }
    }
    if network == NetworkMode::None && !ports.is_empty() {
        anyhow::bail!(
            "--network none: the container has no network to publish ports from (-p, -P); use the default private network"
        );
    }
    if network == NetworkMode::Host && !ports.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
        ports.clear();
    }
    Ok(ports)
}

/// A `run` whose start failed on a taken host port leaves nothing behind (the error is Docker's).
fn forget_on_port_error(engine: &Engine, id: &str, e: &runtime::engine::EngineError) {
    if e.to_string().contains(runtime::engine::ports::ALLOCATED) {
        let _ = engine.remove_with_volumes(id, false, true);
    }
}

/// Prints a log line to our stdout or stderr, as it was written.
pub fn print_line(l: &LogLine) {
    use std::io::Write;
    if l.stream == "stderr" {
        let _ = std::io::stderr().write_all(l.log.as_bytes());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(l.log.as_bytes());
        let _ = out.flush();
    }
}

/// The unpacked cache directories of layers `digests` (an image's, bottom first), unpacked
/// now where missing: as root, rootless, or (a rootless user with subordinate ids) inside the
/// user's namespace with the layers' owners, as the monitor will map them (runtime::userns).
pub fn layer_dirs(
    store: &snapshot::store::Store,
    digests: &[String],
) -> Result<Vec<std::path::PathBuf>> {
    let rootless = !runtime::engine::running_as_root();
    let cache = LayerCache::open(store)?;
    let mut lower_dirs = Vec::new();
    let map = rootless.then(runtime::userns::IdMap::current);
    match map.as_ref().and_then(|m| m.tag().map(|t| (m, t))) {
        Some((map, tag)) => {
            for d in digests {
                lower_dirs.push(cache.path_mapped(d, &tag)?);
            }
            if lower_dirs.iter().any(|p| !p.is_dir()) {
                map.run_inside(|| {
                    for d in digests {
                        cache
                            .ensure_mapped(store, d, &tag)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
                .map_err(anyhow::Error::msg)?;
            }
        }
        None => {
            for d in digests {
                lower_dirs.push(cache.ensure(store, d, rootless)?);
            }
        }
    }
    Ok(lower_dirs)
}

/// `create`: prints the new id.
pub fn run_create(ctx: &Context, a: CreateArgs) -> Result<i32> {
    let c = create(ctx, a)?;
    println!("{}", c.id);
    Ok(0)
}

/// `run`: create + start; with -d prints the id, else streams the output and returns the
/// container's exit code.
pub fn run(ctx: &Context, a: RunArgs) -> Result<i32> {
    let c = create(ctx, a.create)?;
    let engine = Engine::new(&ctx.store_root());
    let exe = std::env::current_exe().context("finding the decant binary")?;
    if a.detach {
        match engine.start(&c.id, &exe) {
            Ok(_) => {
                println!("{}", c.id);
                Ok(0)
            }
            Err(e) => {
                forget_on_port_error(&engine, &c.id, &e);
                Err(e.into())
            }
        }
    } else {
        match attach(ctx, &engine, &c, &exe, c.config.open_stdin) {
            Ok(code) => Ok(code),
            Err(e) => {
                forget_on_port_error(&engine, &c.id, &e);
                Err(e.into())
            }
        }
    }
}

/// Starts `c` in the foreground (`run` without -d, `start -a`): streams its output and returns
/// its exit code; with `interactive` the container reads this command's standard input
/// (through the pty with -t, in raw mode while it runs on a real terminal).
pub fn attach(
    ctx: &Context,
    engine: &Engine,
    c: &runtime::engine::Container,
    exe: &std::path::Path,
    interactive: bool,
) -> Result<i32, runtime::engine::EngineError> {
    use std::os::fd::AsFd;
    let mut opts = StartOptions::default();
    if interactive {
        opts.stdin = Some(std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| {
            runtime::engine::EngineError::Io {
                path: "standard input".into(),
                op: "duplicate",
                source: e,
            }
        })?);
    }
    // Raw mode only on a real terminal, and only while the container runs.
    let mut _raw = None;
    if c.config.tty {
        opts.console_size = tty::terminal_size(std::io::stdout().as_fd())
            .or_else(|| tty::terminal_size(std::io::stdin().as_fd()));
        if interactive {
            _raw = tty::RawMode::enable(std::io::stdin().as_fd());
        }
        let term = [std::io::stdout().as_fd(), std::io::stdin().as_fd()]
            .into_iter()
            .find(|fd| tty::terminal_size(*fd).is_some())
            .and_then(|fd| fd.try_clone_to_owned().ok());
        if let Some(term) = term {
            tty::follow_size(Engine::new(&ctx.store_root()), c.id.clone(), term);
        }
    }
    engine.run_attached_with(&c.id, exe, opts, print_line)
}

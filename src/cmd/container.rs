//! The container verbs after `run`/`create`: start, stop, kill, rm, ps, logs, wait, and the
//! hidden `__monitor` the engine re-executes. Thin: the logic is in `runtime::engine`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use runtime::engine::{parse_signal, time, Engine};

use super::Context;

#[derive(ClapArgs)]
pub struct StartArgs {
    /// Attach: stream the output and leave with the container's exit code.
    #[arg(short, long)]
    pub attach: bool,
    /// Give the container this command's standard input (with -a; the container must have
    /// been created with -i).
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL (default: the container's stop timeout, else 10).
    #[arg(short, long)]
    pub time: Option<u32>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct PsArgs {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    /// `json`: one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(ClapArgs)]
pub struct LogsArgs {
    #[arg(short, long)]
    pub follow: bool,
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only the last N lines (`all` for every line).
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    pub container: String,
}

#[derive(ClapArgs)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct PortArgs {
    pub container: String,
    /// Only this port: PORT[/PROTO].
    pub private: Option<String>,
}

#[derive(ClapArgs)]
pub struct MonitorArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub status_fd: Option<i32>,
    /// Fd 0 is the container's standard input (`run -i`).
    #[arg(long)]
    pub stdin: bool,
    /// `ROWSxCOLS` of the pty (`run -t`).
    #[arg(long)]
    pub console_size: Option<String>,
    pub id: String,
}

fn engine(ctx: &Context) -> Engine {
    Engine::new(&ctx.store_root())
}

/// Runs `f` on each name, printing errors; fails if any did (docker's behaviour).
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = false;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("decant: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn start(ctx: &Context, a: StartArgs) -> Result<i32> {
    let e = engine(ctx);
    let exe = std::env::current_exe().context("finding the decant binary")?;
    if a.attach || a.interactive {
        anyhow::ensure!(
            a.containers.len() == 1,
            "start -a and -i take one container"
        );
        let c = e.find(&a.containers[0])?;
        // As Docker: input goes only to a container made to take it (`create -i`).
        let stdin = a.interactive && c.config.open_stdin;
        return Ok(super::run::attach(ctx, &e, &c, &exe, stdin)?);
    }
    each(&a.containers, |n| {
        let c = e.find(n)?;
        e.start(&c.id, &exe)?;
        println!("{n}");
        Ok(())
    })
}

pub fn stop(ctx: &Context, a: StopArgs) -> Result<i32> {
    let e = engine(ctx);
    each(&a.containers, |n| {
        e.stop(n, a.time)?;
        println!("{n}");
        Ok(())
    })
}

pub fn restart(ctx: &Context, a: StopArgs) -> Result<i32> {
    let e = engine(ctx);
    let exe = std::env::current_exe().context("finding the decant binary")?;
    each(&a.containers, |n| {
        e.restart(n, a.time, &exe)?;
        println!("{n}");
        Ok(())
    })
}

pub fn kill(ctx: &Context, a: KillArgs) -> Result<i32> {
    let e = engine(ctx);
    let sig = parse_signal(&a.signal)?;
    each(&a.containers, |n| {
        e.kill(n, sig)?;
        println!("{n}");
        Ok(())
    })
}

pub fn rm(ctx: &Context, a: RmArgs) -> Result<i32> {
    let e = engine(ctx);
    each(&a.containers, |n| {
        e.remove_with_volumes(n, a.force, a.volumes)?;
        println!("{n}");
        Ok(())
    })
}

pub fn wait(ctx: &Context, a: WaitArgs) -> Result<i32> {
    let e = engine(ctx);
    each(&a.containers, |n| {
        let c = e.find(n)?;
        let done = loop {
            if let Some(d) = e.wait_exit(&c.id, std::time::Duration::from_secs(3600))? {
                break d;
            }
        };
        println!("{}", done.exit_code.unwrap_or(255));
        Ok(())
    })
}

fn quote_command(args: &[String]) -> String {
    args.join(" ")
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    } else {
        s.to_string()
    }
}

pub fn ps(ctx: &Context, a: PsArgs) -> Result<i32> {
    let now = time::now();
    let e = engine(ctx);
    let list: Vec<_> = e
        .list()?
        .into_iter()
        .filter(|c| a.all || c.is_live())
        .collect();
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id } else { c.short_id() });
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for c in &list {
                let v = serde_json::json!({
                    "ID": if a.no_trunc { c.id.clone() } else { c.short_id().to_string() },
                    "Image": c.config.image,
                    "Command": quote_command(&c.config.args()),
                    "CreatedAt": time::rfc3339(c.created),
                    "State": e.state_word(c),
                    "Status": e.status_line(c, now),
                    "ExitCode": c.exit_code,
                    "Names": c.name,
                    "Privileged": c.config.privileged,
                    "Ports": ports_text(c),
                    "RestartCount": c.restart_count,
                });
                println!("{v}");
            }
        }
        Some(f) => anyhow::bail!("unknown format {f}: only json"),
        None => {
            let mut t = crate::output::Table::new(&[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ]);
            for c in &list {
                let cmd = format!("\"{}\"", quote_command(&c.config.args()));
                t.row(vec![
                    if a.no_trunc {
                        c.id.clone()
                    } else {
                        c.short_id().to_string()
                    },
                    c.config.image.clone(),
                    if a.no_trunc { cmd } else { cut(&cmd, 20) },
                    format!(
                        "{} ago",
                        time::human_duration(now.saturating_sub(c.created))
                    ),
                    e.status_line(c, now),
                    ports_text(c),
                    c.name.clone(),
                ]);
            }
            t.print();
        }
    }
    Ok(0)
}

/// Docker's PORTS column: the running container's bindings, `0.0.0.0:8080->80/tcp, ...`.
fn ports_text(c: &runtime::engine::Container) -> String {
    if !c.is_live() {
        return String::new();
    }
    c.ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `port`: `80/tcp -> 0.0.0.0:8080` per published port of a running container (or the host
/// address of one port).
pub fn port(ctx: &Context, a: PortArgs) -> Result<i32> {
    let c = engine(ctx).find(&a.container)?;
    let ports = if c.is_live() {
        c.ports.clone()
    } else {
        Vec::new()
    };
    match a.private {
        None => {
            for p in &ports {
                println!("{} -> {}", p.private(), p.public());
            }
        }
        Some(want) => {
            let want = if want.contains('/') {
                want
            } else {
                format!("{want}/tcp")
            };
            let hits: Vec<_> = ports.iter().filter(|p| p.private() == want).collect();
            anyhow::ensure!(
                !hits.is_empty(),
                "No public port '{want}' published for {}",
                a.container
            );
            for p in hits {
                println!("{}", p.public());
            }
        }
    }
    Ok(0)
}

pub fn logs(ctx: &Context, a: LogsArgs) -> Result<i32> {
    let tail = match a.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid --tail {n}"))?,
        ),
    };
    // A missing container is a 1, as `docker logs` (and every verb on a named container) says.
    let found = engine(ctx).logs(&a.container, tail, a.follow, |l| {
        if a.timestamps {
            let mut stamped = l.clone();
            stamped.log = format!("{} {}", l.time, l.log);
            super::run::print_line(&stamped);
        } else {
            super::run::print_line(l);
        }
        true
    });
    match found {
        Err(e @ runtime::engine::EngineError::NotFound(_)) => {
            eprintln!("decant: {e}");
            Ok(1)
        }
        other => other.map(|()| 0).map_err(Into::into),
    }
}

pub fn monitor(a: MonitorArgs) -> i32 {
    use std::os::fd::FromRawFd;
    // SAFETY: the starter passed this descriptor (the status pipe) to us and nothing else in
    // this fresh process owns it.
    let fd = a
        .status_fd
        .filter(|fd| *fd > 2)
        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    // SAFETY: with --stdin the starter made fd 0 the container's standard input for us; this
    // process never reads its own stdin, so taking fd 0 over (it is closed once the container
    // is made) leaves no other owner.
    let stdin = a
        .stdin
        .then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(0) });
    let console_size = a.console_size.as_deref().and_then(|s| {
        let (r, c) = s.split_once('x')?;
        Some((r.parse().ok()?, c.parse().ok()?))
    });
    let opts = runtime::engine::StartOptions {
        stdin,
        console_size,
    };
    runtime::engine::monitor::run_with(&a.store, &a.id, fd, opts)
}

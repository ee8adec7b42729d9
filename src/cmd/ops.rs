//! `decant exec`, `pause`, `unpause`, `stats`, `top`, `container inspect` and
//! `container prune`: flags in, `runtime::engine::ops` calls, Docker-shaped output out.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args as ClapArgs, Subcommand};
use runtime::engine::ops::{ExecConfig, StatsSample};
use runtime::engine::{Engine, Status};

use super::Context;

#[derive(ClapArgs)]
pub struct ExecArgs {
    /// Detached: run in the background, print nothing.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open (the caller's stdin goes to the process).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal (it follows this terminal's size).
    #[arg(short, long)]
    pub tty: bool,
    /// USER[:GROUP], names or numbers.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set environment variables (K=V, or K to take it from this environment).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(ClapArgs)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct StatsArgs {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// One sample, then exit.
    #[arg(long)]
    pub no_stream: bool,
    /// `json`: one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct TopArgs {
    pub container: String,
}

#[derive(ClapArgs)]
pub struct InspectArgs {
    /// Containers: name, ID or a unique ID prefix.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(ClapArgs)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `decant container ...`.
#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Show containers' configuration and state as JSON.
    Inspect(InspectArgs),
    /// Remove every stopped container.
    Prune(PruneArgs),
}

fn engine(ctx: &Context) -> Engine {
    Engine::new(&ctx.store_root())
}

pub fn exec(ctx: &Context, a: ExecArgs) -> Result<i32> {
    let env = a
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    let cfg = ExecConfig {
        args: a.command,
        env,
        user: a.user,
        workdir: a.workdir,
        interactive: a.interactive,
        detach: a.detach,
        tty: a.tty && !a.detach,
        console_size: None,
    };
    if cfg.tty {
        return exec_tty(ctx, &a.container, cfg);
    }
    let p = engine(ctx).exec(&a.container, &cfg)?;
    if a.detach {
        return Ok(0);
    }
    Ok(p.wait()?.code())
}

/// `exec -t`: the pty's output to our stdout, our stdin (with -i) to the pty, in raw mode
/// when stdin is a terminal; the pty follows our terminal's size.
fn exec_tty(ctx: &Context, container: &str, mut cfg: ExecConfig) -> Result<i32> {
    use runtime::engine::tty;
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let size_of = if tty::terminal_size(stdout.as_fd()).is_some() {
        Some(stdout.as_fd())
    } else if tty::terminal_size(stdin.as_fd()).is_some() {
        Some(stdin.as_fd())
    } else {
        None
    };
    cfg.console_size = size_of.and_then(tty::terminal_size);
    let (p, master) = engine(ctx).exec_tty(container, &cfg)?;
    let _raw = cfg
        .interactive
        .then(|| tty::RawMode::enable(stdin.as_fd()))
        .flatten();
    let input = cfg.interactive.then(|| stdin.as_fd());
    tty::copy_terminal(&master, input, &mut stdout.lock(), size_of);
    Ok(p.wait()?.code())
}

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

pub fn pause(ctx: &Context, a: PauseArgs) -> Result<i32> {
    let e = engine(ctx);
    each(&a.containers, |n| {
        e.pause(n)?;
        println!("{n}");
        Ok(())
    })
}

pub fn unpause(ctx: &Context, a: PauseArgs) -> Result<i32> {
    let e = engine(ctx);
    each(&a.containers, |n| {
        e.unpause(n)?;
        println!("{n}");
        Ok(())
    })
}

/// Docker's binary units for stats: `1.5MiB`.
fn mib(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

fn stats_table(samples: &[StatsSample]) {
    let mut t = crate::output::Table::new(&[
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
    ]);
    for s in samples {
        t.row(vec![
            s.id.get(..12).unwrap_or(&s.id).to_string(),
            s.name.clone(),
            format!("{:.2}%", s.cpu_percent),
            format!("{} / {}", mib(s.memory_usage), mib(s.memory_limit)),
            format!("{:.2}%", s.memory_percent),
            s.pids.to_string(),
        ]);
    }
    t.print();
}

pub fn stats(ctx: &Context, a: StatsArgs) -> Result<i32> {
    let e = engine(ctx);
    let pick = || -> Result<Vec<_>> {
        if a.containers.is_empty() {
            Ok(e.list()?
                .into_iter()
                .filter(|c| a.all || c.status == Status::Running)
                .collect())
        } else {
            a.containers
                .iter()
                .map(|n| e.find(n).map_err(Into::into))
                .collect()
        }
    };
    let json = match a.format.as_deref() {
        None => false,
        Some("json") | Some("{{json .}}") => true,
        Some(f) => anyhow::bail!("unknown format {f}: only json"),
    };
    let interval = Duration::from_millis(if a.no_stream { 100 } else { 1000 });
    loop {
        let list = pick()?;
        let samples = e.stats(&list, interval)?;
        let mut out = std::io::stdout().lock();
        if !a.no_stream {
            // Clear the screen and home the cursor, as docker stats redraws.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        if json {
            for s in &samples {
                let v = serde_json::json!({
                    "ID": s.id.get(..12).unwrap_or(&s.id),
                    "Name": s.name,
                    "CPUPerc": format!("{:.2}%", s.cpu_percent),
                    "MemUsage": format!("{} / {}", mib(s.memory_usage), mib(s.memory_limit)),
                    "MemPerc": format!("{:.2}%", s.memory_percent),
                    "PIDs": s.pids.to_string(),
                });
                writeln!(out, "{v}")?;
            }
            out.flush()?;
        } else {
            drop(out);
            stats_table(&samples);
        }
        if a.no_stream {
            return Ok(0);
        }
    }
}

pub fn top(ctx: &Context, a: TopArgs) -> Result<i32> {
    let procs = engine(ctx).top(&a.container)?;
    let mut t = crate::output::Table::new(&["UID", "PID", "PPID", "TIME", "CMD"]);
    for p in procs {
        t.row(vec![
            p.user,
            p.pid.to_string(),
            p.ppid.to_string(),
            p.time,
            p.cmd,
        ]);
    }
    t.print();
    Ok(0)
}

/// The JSON of container `key`, or `None` when no container has that name or id.
pub fn inspect_value(ctx: &Context, key: &str) -> Result<Option<serde_json::Value>> {
    let e = engine(ctx);
    match e.find(key) {
        Ok(c) => Ok(Some(e.inspect(&c)?)),
        Err(runtime::engine::EngineError::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub fn container(ctx: &Context, c: ContainerCommand) -> Result<i32> {
    match c {
        ContainerCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &a.containers {
                match inspect_value(ctx, n)? {
                    Some(v) => out.push(v),
                    None => {
                        eprintln!("decant: No such container: {n}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { 1 } else { 0 })
        }
        ContainerCommand::Prune(a) => {
            if !a.force {
                eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .take(1024)
                    .read_line(&mut line)
                    .context("reading the answer")?;
                if !matches!(line.trim(), "y" | "Y" | "yes" | "Yes") {
                    return Ok(0);
                }
            }
            let pruned = engine(ctx).prune()?;
            if !pruned.ids.is_empty() {
                println!("Deleted Containers:");
                for id in &pruned.ids {
                    println!("{id}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                crate::output::docker_size(pruned.reclaimed)
            );
            Ok(0)
        }
    }
}

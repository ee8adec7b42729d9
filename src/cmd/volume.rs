//! `decant volume ls|create|inspect|rm|prune`: flags in, `runtime::engine::volumes` calls,
//! Docker-shaped output out.

use std::io::{BufRead, Read};

use anyhow::{Context as _, Result};
use clap::{Args as ClapArgs, Subcommand};
use runtime::engine::Engine;

use super::Context;

#[derive(ClapArgs)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(ClapArgs)]
pub struct CreateArgs {
    /// The volume's name (a random 64-hex one when left out).
    pub name: Option<String>,
}

#[derive(ClapArgs)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(ClapArgs)]
pub struct RmArgs {
    /// Say nothing about volumes that do not exist (a volume in use is still refused).
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(ClapArgs)]
pub struct PruneArgs {
    /// Named volumes too (default: anonymous ones only).
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `decant volume ...`.
#[derive(Subcommand)]
pub enum Command {
    /// List volumes.
    Ls(LsArgs),
    /// Make a volume.
    Create(CreateArgs),
    /// Show volumes as JSON.
    Inspect(InspectArgs),
    /// Remove volumes no container uses.
    Rm(RmArgs),
    /// Remove every volume no container uses.
    Prune(PruneArgs),
}

pub fn run(ctx: &Context, c: Command) -> Result<i32> {
    let e = Engine::new(&ctx.store_root());
    match c {
        Command::Ls(a) => {
            let list = e.volume_list()?;
            if a.quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                let mut t = crate::output::Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in list {
                    t.row(vec!["local".to_string(), v.name]);
                }
                t.print();
            }
            Ok(0)
        }
        Command::Create(a) => {
            let (v, _) = e.volume_create(a.name.as_deref())?;
            println!("{}", v.name);
            Ok(0)
        }
        Command::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &a.names {
                match e.volume(n) {
                    Ok(v) => out.push(e.volume_inspect(&v)?),
                    Err(err) => {
                        eprintln!("decant: {err}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { 1 } else { 0 })
        }
        Command::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                match e.volume_remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(_) if a.force && e.volume(n).is_err() => {}
                    Err(err) => {
                        eprintln!("decant: {err}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        Command::Prune(a) => {
            if !a.force {
                eprint!("WARNING! This will remove {} volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ",
                    if a.all { "all local" } else { "anonymous local" });
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
            let pruned = e.volume_prune(a.all)?;
            if !pruned.names.is_empty() {
                println!("Deleted Volumes:");
                for n in &pruned.names {
                    println!("{n}");
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

//! `decant image ls|rm|prune|inspect|history|tag`: the docker `image` management verbs.

use anyhow::Result;
use clap::{Args as ClapArgs, Subcommand};

use super::Context;

#[derive(Subcommand)]
pub enum Command {
    /// List images.
    #[command(alias = "list")]
    Ls(super::images::Args),
    /// Remove images.
    Rm(super::rmi::Args),
    /// Remove dangling (untagged) images and the blobs only they used.
    Prune(PruneArgs),
    /// Show images as JSON.
    Inspect(super::inspect::Args),
    /// Show how an image was made.
    History(super::history::Args),
    /// Give an image another name.
    Tag(super::tag::Args),
}

#[derive(ClapArgs)]
pub struct PruneArgs {
    /// Do not ask (prune never asks when stdin is not a terminal).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Context, c: Command) -> Result<()> {
    match c {
        Command::Ls(a) => super::images::run(ctx, a),
        Command::Rm(a) => super::rmi::run(ctx, a),
        Command::Prune(a) => prune(ctx, a),
        Command::Inspect(a) => super::inspect::run(ctx, a),
        Command::History(a) => super::history::run(ctx, a),
        Command::Tag(a) => super::tag::run(ctx, a),
    }
}

fn prune(ctx: &Context, a: PruneArgs) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !a.force && std::io::stdin().is_terminal() {
        eprint!("WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let store = ctx.open_store()?;
    let lines = store.prune_dangling()?;
    if !lines.is_empty() {
        println!("Deleted Images:");
    }
    for l in &lines {
        println!("{l}");
    }
    let gc = store.gc()?;
    println!(
        "Total reclaimed space: {}",
        crate::output::docker_size(gc.bytes_freed)
    );
    Ok(())
}

//! The `decant` binary: flags, glue and output. Every behaviour lives in the library crates
//! (`import`, `snapshot`) where tests reach it; this file only parses the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod output;

#[derive(Parser)]
#[command(
    name = "decant",
    version,
    about = "Lift virtual machines into OCI containers, unprivileged"
)]
struct Cli {
    /// The image store (an OCI image layout). Default: $DECANT_ROOT, /var/lib/decant as root,
    /// else $XDG_DATA_HOME/decant.
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a VM disk, a partition dump or a tarball as a single-layer image.
    Import(cmd::import::Args),
    /// Show what a disk holds: format, partitions, volumes, filesystems, root and mount plan.
    InspectDisk(cmd::inspect_disk::Args),
    /// List images.
    Images(cmd::images::Args),
    /// Show images' configuration and layers as JSON.
    Inspect(cmd::inspect::Args),
    /// Show how an image was made.
    History(cmd::history::Args),
    /// Give an image another name.
    Tag(cmd::tag::Args),
    /// Remove images (untag, and delete what nothing else uses).
    Rmi(cmd::rmi::Args),
    /// Manage images (ls, rm, prune, inspect, history, tag).
    #[command(subcommand)]
    Image(cmd::image::Command),
    /// The low-level OCI runtime (create, start, run, state, kill, delete on a bundle), as runc.
    Runtime(cmd::runtime::Args),
    /// Create and start a container from an image.
    #[command(disable_help_flag = true)]
    Run(cmd::run::RunArgs),
    /// Create a container (start it with `start`).
    #[command(disable_help_flag = true)]
    Create(cmd::run::CreateArgs),
    /// Start containers.
    Start(cmd::container::StartArgs),
    /// Stop containers: the stop signal, then SIGKILL after the timeout.
    Stop(cmd::container::StopArgs),
    /// Restart containers: stop (the stop signal, SIGKILL after the timeout), then start.
    Restart(cmd::container::StopArgs),
    /// Send a signal (default KILL) to containers.
    Kill(cmd::container::KillArgs),
    /// Remove containers.
    Rm(cmd::container::RmArgs),
    /// List containers.
    Ps(cmd::container::PsArgs),
    /// Show a container's output.
    Logs(cmd::container::LogsArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(cmd::container::WaitArgs),
    /// List a container's published ports.
    Port(cmd::container::PortArgs),
    /// Run a command in a running container.
    Exec(cmd::ops::ExecArgs),
    /// Freeze every process of containers.
    Pause(cmd::ops::PauseArgs),
    /// Thaw paused containers.
    Unpause(cmd::ops::PauseArgs),
    /// Show containers' CPU, memory and process use.
    Stats(cmd::ops::StatsArgs),
    /// Show the processes of a container.
    Top(cmd::ops::TopArgs),
    /// Manage containers (inspect, prune).
    #[command(subcommand)]
    Container(cmd::ops::ContainerCommand),
    /// Write images to a docker-archive or oci-archive tar.
    Save(cmd::archive::SaveArgs),
    /// Load images from a docker-archive or oci-archive tar.
    Load(cmd::archive::LoadArgs),
    /// Kubernetes manifests (generate).
    #[command(subcommand)]
    Kube(cmd::kube::Command),
    /// Show or control the services of a container run by decant-init (--init=host).
    Svc(cmd::svc::Args),
    /// Create a new image from a container's changes.
    Commit(cmd::commit::CommitArgs),
    /// List the changes to files of a container's filesystem (A added, C changed, D deleted).
    Diff(cmd::commit::DiffArgs),
    /// Export a container's filesystem as a tar archive.
    Export(cmd::commit::ExportArgs),
    /// Save a container's state and run configuration as an image; `snapshot ls CONTAINER`.
    Snapshot(cmd::commit::SnapshotArgs),
    /// Replace a container with one made from a snapshot: same name and configuration.
    Restore(cmd::commit::RestoreArgs),
    /// Manage volumes (ls, create, inspect, rm, prune).
    #[command(subcommand)]
    Volume(cmd::volume::Command),
    /// Make an image smaller: remove files and packages, verified by probes, into one layer.
    Strip(cmd::strip::StripArgs),
    /// Show where an image's bytes are, per package and directory, and what could go.
    Size(cmd::strip::SizeArgs),
    /// Log in to a registry (credentials go to the standard auth files).
    Login(cmd::registry::LoginArgs),
    /// Log out from a registry.
    Logout(cmd::registry::LogoutArgs),
    /// Push an image to a registry.
    Push(cmd::registry::PushArgs),
    /// Pull an image from a registry.
    Pull(cmd::registry::PullArgs),
    /// The per-container monitor (started by run/start; not for users).
    #[command(name = "__monitor", hide = true)]
    Monitor(cmd::container::MonitorArgs),
}

/// Docker's exit status for a failed container command: the engine's own code (125, 126,
/// 127), else 125.
fn container_verb(r: anyhow::Result<i32>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("decant: {}", one_line(&e));
            let code = e
                .downcast_ref::<runtime::engine::EngineError>()
                .map(|r| r.exit_code())
                .or_else(|| {
                    e.downcast_ref::<runtime::RuntimeError>()
                        .map(|r| r.exit_code())
                })
                .unwrap_or(125);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
    }
}

fn main() -> ExitCode {
    // A usage error is decant's own error: 125, as Docker's CLI (clap would exit 2); help
    // and version go to stdout and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 125 } else { 0 });
        }
    };
    let ctx = cmd::Context { store: cli.store };
    let result = match cli.command {
        Command::Import(a) => cmd::import::run(&ctx, a),
        Command::InspectDisk(a) => cmd::inspect_disk::run(&ctx, a),
        Command::Images(a) => cmd::images::run(&ctx, a),
        Command::Inspect(a) => cmd::inspect::run(&ctx, a),
        Command::History(a) => cmd::history::run(&ctx, a),
        Command::Tag(a) => cmd::tag::run(&ctx, a),
        Command::Rmi(a) => cmd::rmi::run(&ctx, a),
        Command::Image(c) => cmd::image::run(&ctx, c),
        Command::Strip(a) => cmd::strip::run_strip(&ctx, a),
        Command::Size(a) => cmd::strip::run_size(&ctx, a),
        Command::Login(a) => cmd::registry::login(&ctx, a),
        Command::Logout(a) => cmd::registry::logout(&ctx, a),
        Command::Push(a) => cmd::registry::push(&ctx, a),
        Command::Pull(a) => cmd::registry::pull(&ctx, a),
        Command::Run(a) => return container_verb(cmd::run::run(&ctx, a)),
        Command::Create(a) => return container_verb(cmd::run::run_create(&ctx, a)),
        Command::Start(a) => return container_verb(cmd::container::start(&ctx, a)),
        Command::Stop(a) => return container_verb(cmd::container::stop(&ctx, a)),
        Command::Restart(a) => return container_verb(cmd::container::restart(&ctx, a)),
        Command::Kill(a) => return container_verb(cmd::container::kill(&ctx, a)),
        Command::Rm(a) => return container_verb(cmd::container::rm(&ctx, a)),
        Command::Ps(a) => return container_verb(cmd::container::ps(&ctx, a)),
        Command::Logs(a) => return container_verb(cmd::container::logs(&ctx, a)),
        Command::Wait(a) => return container_verb(cmd::container::wait(&ctx, a)),
        Command::Port(a) => return container_verb(cmd::container::port(&ctx, a)),
        Command::Exec(a) => return container_verb(cmd::ops::exec(&ctx, a)),
        Command::Pause(a) => return container_verb(cmd::ops::pause(&ctx, a)),
        Command::Unpause(a) => return container_verb(cmd::ops::unpause(&ctx, a)),
        Command::Stats(a) => return container_verb(cmd::ops::stats(&ctx, a)),
        Command::Top(a) => return container_verb(cmd::ops::top(&ctx, a)),
        Command::Container(c) => return container_verb(cmd::ops::container(&ctx, c)),
        Command::Save(a) => cmd::archive::save(&ctx, a),
        Command::Load(a) => cmd::archive::load(&ctx, a),
        Command::Kube(c) => cmd::kube::run(&ctx, c),
        Command::Svc(a) => return container_verb(cmd::svc::run(&ctx, a)),
        Command::Commit(a) => return container_verb(cmd::commit::commit(&ctx, a)),
        Command::Diff(a) => return container_verb(cmd::commit::diff(&ctx, a)),
        Command::Export(a) => return container_verb(cmd::commit::export(&ctx, a)),
        Command::Snapshot(a) => return container_verb(cmd::commit::snapshot(&ctx, a)),
        Command::Restore(a) => return container_verb(cmd::commit::restore(&ctx, a)),
        Command::Volume(c) => return container_verb(cmd::volume::run(&ctx, c)),
        Command::Monitor(a) => {
            return ExitCode::from(cmd::container::monitor(a).clamp(0, 255) as u8)
        }
        Command::Runtime(a) => match cmd::runtime::run(a) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("decant: {}", one_line(&e));
                let code = e
                    .downcast_ref::<runtime::RuntimeError>()
                    .map(|r| r.exit_code())
                    .unwrap_or(125);
                return ExitCode::from(code.clamp(0, 255) as u8);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decant: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The chain of contexts as one line, outermost first, without repeating what an inner error
/// already says.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for m in e.chain().map(|c| c.to_string()) {
        if !line.contains(&m) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&m);
        }
    }
    line
}

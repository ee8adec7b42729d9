//! `decant runtime`: the low-level OCI runtime CLI, driven exactly as runc is
//! (`decant runtime run --bundle DIR ID`), over the `runtime` crate.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args as ClapArgs, Subcommand};
use runtime::{CreateOptions, RuntimeRoot};

#[derive(ClapArgs)]
pub struct Args {
    /// State directory (default /run/decant/runtime as root, $XDG_RUNTIME_DIR/decant/runtime).
    #[arg(long, value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ClapArgs)]
pub struct BundleArgs {
    /// The bundle: a directory with config.json and the root filesystem.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to receive the pty master when the process has a terminal.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    pub id: String,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a container; its process waits for `start`.
    Create(BundleArgs),
    /// Start a created container.
    Start { id: String },
    /// Create, start and wait for a container; exits with its status.
    Run(BundleArgs),
    /// The container's OCI state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init (or every process with --all).
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Remove a stopped container (or a running one with --force).
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    List,
}

fn opts(b: &BundleArgs) -> CreateOptions {
    CreateOptions {
        pid_file: b.pid_file.clone(),
        console_socket: b.console_socket.clone(),
        ..CreateOptions::default()
    }
}

/// Runs the command; `Ok(code)` is the exit status to leave with.
pub fn run(a: Args) -> Result<i32> {
    let root = a
        .root
        .map(RuntimeRoot::new)
        .unwrap_or_else(RuntimeRoot::default_for_user);
    match a.command {
        Command::Create(b) => {
            runtime::create(&root, &b.id, &b.bundle, &opts(&b))?;
        }
        Command::Start { id } => runtime::start(&root, &id)?,
        Command::Run(b) => {
            let p = runtime::run(&root, &b.id, &b.bundle, &opts(&b))?;
            let status = p.wait()?;
            runtime::delete(&root, &b.id, false)?;
            return Ok(status.code());
        }
        Command::State { id } => println!(
            "{}",
            serde_json::to_string_pretty(&runtime::state(&root, &id)?)?
        ),
        Command::Kill { id, signal, all } => {
            runtime::kill(&root, &id, runtime::engine::parse_signal(&signal)?, all)?
        }
        Command::Delete { id, force } => runtime::delete(&root, &id, force)?,
        Command::List => {
            let mut t = crate::output::Table::new(&["ID", "PID", "STATUS", "BUNDLE"]);
            for s in runtime::list(&root)? {
                t.row(vec![
                    s.id().to_string(),
                    s.pid().map(|p| p.to_string()).unwrap_or_default(),
                    format!("{:?}", s.status()).to_lowercase(),
                    s.bundle().display().to_string(),
                ]);
            }
            t.print();
        }
    }
    Ok(0)
}

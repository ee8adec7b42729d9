//! `decant svc CONTAINER [status|start|stop|restart|reload] [NAME...]`: the services of a
//! container whose PID 1 is decant-init in services mode (`run --init=host`, or an image made
//! with `import --init`). It talks to the init's control socket, reached on the host through
//! the init's root (`/proc/<pid>/root/run/decant-init.sock`), so nothing is exec'd in the
//! container and the container needs no tools; the client and its output (one line per
//! service, like `supervisorctl status`, with the source added) are decant-init's own
//! (`supervisor::control`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use runtime::engine::{Engine, Status};

use super::Context;

/// How long start/stop/restart wait for the services to settle before printing their state.
const SETTLE: Duration = Duration::from_secs(120);

#[derive(ClapArgs)]
pub struct Args {
    /// Container name or id.
    pub container: String,
    /// status (default), start, stop, restart or reload.
    #[arg(value_parser = ["status", "start", "stop", "restart", "reload"])]
    pub action: Option<String>,
    /// Services (`all` for every one; status without names shows all).
    pub names: Vec<String>,
}

/// The control socket of container `key`'s init, as seen from the host.
pub fn socket_of(engine: &Engine, key: &str) -> Result<PathBuf> {
    let c = engine.find(key)?;
    if c.status != Status::Running || c.pid <= 0 {
        bail!("container {key} is not running");
    }
    if engine.is_paused(&c) {
        bail!("container {key} is paused; unpause it first");
    }
    let socket = PathBuf::from(format!("/proc/{}/root", c.pid)).join(
        supervisor::DEFAULT_SOCKET
            .strip_prefix('/')
            .unwrap_or(supervisor::DEFAULT_SOCKET),
    );
    if !socket.exists() {
        bail!(
            "container {key} has no decant-init control socket at {} (run it with --init=host, \
             or from an image imported with --init)",
            supervisor::DEFAULT_SOCKET
        );
    }
    Ok(socket)
}

pub fn run(ctx: &Context, a: Args) -> Result<i32> {
    let engine = Engine::new(&ctx.store_root());
    let socket = socket_of(&engine, &a.container)?;
    let action = a.action.unwrap_or_else(|| "status".into());
    if action != "status" && a.names.is_empty() {
        bail!("svc {action} needs a service NAME or all");
    }
    let mut args = vec![action];
    args.extend(a.names);
    match supervisor::control::ctl(&socket, &args, SETTLE) {
        // decant-init ctl's 2: the socket did not answer; as an error of decant's own.
        2 => Ok(125),
        code => Ok(code),
    }
}

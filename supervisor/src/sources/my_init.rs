//! phusion my_init's duties: `/etc/container_environment/*` imported into the services'
//! environment, `/etc/my_init.d/*` then `/etc/rc.local` run once before services start, and
//! `/etc/my_init.pre_shutdown.d` / `post_shutdown.d` run on the way down.
//!
//! The scripts run one at a time while the init keeps reaping (exits of other processes are
//! handed to the services as usual), each bounded by [`SCRIPT_TIMEOUT`].

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use std::os::fd::AsFd;

use crate::log;
use crate::pid1::{reap_all, wait_signal, Init};
use crate::service::{signal_proc, Exit};
use crate::sources::{list_dir, CONFIG_FILE_CAP};

/// How long one startup or shutdown script may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Most variables imported from /etc/container_environment.
const ENV_CAP: usize = 4096;

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Imports `/etc/container_environment/NAME` files (content = value, one trailing newline
/// dropped) into `env`.
pub fn import_env(root: &Path, env: &mut Vec<(String, String)>) {
    let dir = root.join("etc/container_environment");
    for p in list_dir(&dir).into_iter().take(ENV_CAP) {
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if name.is_empty() || name.contains('=') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() > CONFIG_FILE_CAP {
            log::warn(&format!(
                "{}: not a small regular file; skipped",
                p.display()
            ));
            continue;
        }
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        let mut v = String::from_utf8_lossy(&data).into_owned();
        if v.ends_with('\n') {
            v.pop();
        }
        env.retain(|(k, _)| *k != name);
        env.push((name, v));
    }
}

/// Runs `/etc/my_init.d/*` then `/etc/rc.local`.
pub fn run_startup(init: &mut Init) {
    let root = init.opts.root.clone();
    run_dir_scripts(init, &root.join("etc/my_init.d"));
    let rc = root.join("etc/rc.local");
    if is_executable(&rc) {
        run_script(init, &rc);
    }
}

/// Runs the executable files of a directory in name order.
pub fn run_dir_scripts(init: &mut Init, dir: &Path) {
    for p in list_dir(dir) {
        if is_executable(&p) {
            run_script(init, &p);
        }
    }
}

/// Runs one script to its end (or [`SCRIPT_TIMEOUT`]), reaping everything meanwhile.
pub fn run_script(init: &mut Init, path: &Path) -> Option<Exit> {
    log::info(&format!("running {}", path.display()));
    run_command(init, Command::new(path), &path.display().to_string())
}

/// Runs `cmd` (in the init's environment, signals unblocked) to its end or [`SCRIPT_TIMEOUT`],
/// reaping everything meanwhile; `label` names it in messages. The first-boot `ssh-keygen -A`
/// goes through here too.
pub fn run_command(init: &mut Init, mut cmd: Command, label: &str) -> Option<Exit> {
    cmd.env_clear()
        .envs(init.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // SAFETY: the closure only calls sigemptyset/sigprocmask (async-signal-safe) in the child.
    unsafe {
        cmd.pre_exec(|| {
            crate::service::reset_sigmask();
            Ok(())
        });
    }
    let child = cmd.spawn();
    let pid = match child {
        Ok(c) => c.id() as i32,
        Err(e) => {
            log::warn(&format!("{label}: cannot run: {e}"));
            return None;
        }
    };
    let until = Instant::now() + SCRIPT_TIMEOUT;
    let mut killed = false;
    loop {
        let mut exits = Vec::new();
        reap_all(&mut exits);
        let mut mine = None;
        let mut others = Vec::new();
        for (p, e) in exits {
            if p == pid {
                mine = Some(e);
            } else {
                others.push((p, e));
            }
        }
        init.dispatch_exits(others, Instant::now());
        if let Some(e) = mine {
            if e != Exit::Code(0) {
                log::warn(&format!("{label} failed ({})", e.describe()));
            }
            return Some(e);
        }
        let now = Instant::now();
        if now >= until && !killed {
            log::warn(&format!(
                "{label}: still running after {SCRIPT_TIMEOUT:?}; killed"
            ));
            signal_proc(pid, Signal::SIGKILL, false);
            killed = true;
        }
        init.drain_signals_deferred();
        wait_signal(init.sigfd.as_fd(), Duration::from_millis(500));
    }
}

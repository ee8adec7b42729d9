//! runit / phusion service directories: `/etc/service/NAME/{run,finish,down,log/run}`.
//!
//! `run` is exec'd in the service directory and restarted whenever it ends, at most once a
//! second; `finish` gets the exit code and signal (`-1 SIG` when killed, `CODE 0` otherwise);
//! a `down` file lists the service but does not start it; `log/run` becomes a service
//! `NAME/log` whose stdin is the read end of a pipe that `run`'s stdout writes into. The init
//! keeps both ends open so neither side sees EOF when the other restarts (as runsv does).

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::service::{Input, Output, Restart, Source, Spec};
use crate::sources::{list_dir, ConfigError};

fn executable(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err("is not an executable file".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn runit_spec(name: &str, dir: &Path, run: PathBuf) -> Spec {
    let mut s = Spec::new(name, Source::Runit, &run, vec![run.display().to_string()]);
    s.dir = Some(dir.to_path_buf());
    s.restart = Restart::Always;
    s.startsecs = 0;
    s.min_interval = Duration::from_secs(1);
    s.stopwait = Duration::from_secs(7);
    s.killasgroup = true;
    s
}

pub fn load(
    root: &Path,
    pipes: &mut Vec<(OwnedFd, OwnedFd)>,
    specs: &mut Vec<Spec>,
    errors: &mut Vec<ConfigError>,
) {
    for dir in list_dir(&root.join("etc/service")) {
        if !dir.is_dir() {
            continue;
        }
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let run = dir.join("run");
        if let Err(e) = executable(&run) {
            let err = ConfigError::new(&run, 0, format!("runit service '{name}': run {e}"));
            specs.push(Spec::broken(&name, Source::Runit, &run, err.to_string()));
            errors.push(err);
            continue;
        }
        let mut s = runit_spec(&name, &dir, run);
        if dir.join("down").exists() {
            s.autostart = false;
        }
        let finish = dir.join("finish");
        if executable(&finish).is_ok() {
            s.finish = Some(finish);
        }
        let log_run = dir.join("log/run");
        let mut log_spec = None;
        if log_run.exists() {
            match executable(&log_run) {
                Err(e) => {
                    let err = ConfigError::new(&log_run, 0, format!("runit log service: run {e}"));
                    log_spec = Some(Spec::broken(
                        &format!("{name}/log"),
                        Source::Runit,
                        &log_run,
                        err.to_string(),
                    ));
                    errors.push(err);
                }
                Ok(()) => match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
                    Ok(p) => {
                        let idx = pipes.len();
                        pipes.push(p);
                        s.stdout = Output::Pipe(idx);
                        let mut l = runit_spec(&format!("{name}/log"), &dir.join("log"), log_run);
                        l.stdin = Input::Pipe(idx);
                        // The logger starts first and stops last, so no line is lost.
                        l.priority = s.priority - 1;
                        log_spec = Some(l);
                    }
                    Err(e) => errors.push(ConfigError::new(&log_run, 0, format!("pipe: {e}"))),
                },
            }
        }
        specs.push(s);
        specs.extend(log_spec);
    }
}

//! decant-init: a host-like PID 1 for containers made from VMs. It finds the services an image
//! defines (runit directories, supervisord configs, enabled systemd units, my_init scripts),
//! runs them with supervisord's state machine in this one process (no per-service supervisor
//! processes), reaps every zombie, forwards signals, serves a control socket and shuts
//! everything down cleanly. With `-- CMD` and no services it is a tini-like init for CMD.
//!
//! It depends on no other decant crate (only nix and libc) so the static binary stays small.

pub mod control;
pub mod firstboot;
pub mod log;
pub mod memory;
pub mod pid1;
pub mod service;
pub mod shutdown;
pub mod sources;

use std::path::PathBuf;
use std::time::Duration;

use service::{Input, Output, Restart, Service, Source, Spec};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/decant-init.sock";
/// Default grace period between SIGTERM and SIGKILL for leftover processes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How decant-init runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where configuration is looked for (`/etc/...` below it). Default `/`.
    pub root: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Grace period of the final SIGTERM → SIGKILL.
    pub grace: Duration,
    /// The main command (tini case): its exit ends the init with its status.
    pub main: Option<Vec<String>>,
    /// With a main command, also start the image's services.
    pub with_services: bool,
    pub policy: sources::Policy,
    /// Print state lines even in the tini case.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            root: PathBuf::from("/"),
            socket: PathBuf::from(DEFAULT_SOCKET),
            grace: DEFAULT_GRACE,
            main: None,
            with_services: false,
            policy: sources::Policy::default(),
            verbose: false,
        }
    }
}

/// Runs the init to the end and returns its exit code (the main command's status, or 0 after a
/// clean shutdown).
pub fn run(opts: Options) -> i32 {
    let sigfd = match pid1::signal_fd() {
        Ok(f) => f,
        Err(e) => {
            log::warn(&format!("cannot set up signal handling: {e}"));
            return 1;
        }
    };
    pid1::become_subreaper();
    let tini = opts.main.is_some() && !opts.with_services;
    if tini && !opts.verbose {
        log::set_quiet(true);
    }
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("DECANT_INIT_"))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    let run_dir = opts.root.join("run");
    let mut init = pid1::Init {
        notify_dir: run_dir.join("decant-init"),
        run_dir,
        opts: opts.clone(),
        services: Vec::new(),
        sigfd,
        control: None,
        relays: Vec::new(),
        pipes: Vec::new(),
        env,
        main: None,
        main_exit: None,
        shutdown: None,
        children_left: true,
        deferred: Vec::new(),
    };
    let mut specs = Vec::new();
    if !tini {
        // Identity first: my_init scripts and services may read the machine id or start sshd.
        firstboot::run(&mut init);
        sources::my_init::import_env(&opts.root, &mut init.env);
        sources::my_init::run_startup(&mut init);
        specs = sources::load(&opts.root, &opts.policy, &mut init.pipes);
    }
    if let Some(argv) = &opts.main {
        let mut s = Spec::new(
            "main",
            Source::Main,
            std::path::Path::new("-"),
            argv.clone(),
        );
        s.restart = Restart::No;
        s.startsecs = 0;
        s.stdin = Input::Inherit;
        s.stdout = Output::Inherit(1);
        s.stderr = Output::Inherit(2);
        s.priority = i32::MAX;
        s.stopasgroup = true;
        s.killasgroup = true;
        init.main = Some(specs.len());
        specs.push(s);
    }
    if specs.is_empty() {
        log::info("no services found; waiting for a signal");
    }
    init.services = specs.into_iter().map(Service::new).collect();
    if !tini {
        match control::listen(&opts.socket) {
            Ok(l) => init.control = Some(l),
            Err(e) => log::warn(&format!(
                "control socket {}: {e}; running without it",
                opts.socket.display()
            )),
        }
    }
    let code = init.run();
    if init.control.is_some() {
        let _ = std::fs::remove_file(&opts.socket);
    }
    code
}

//! The `decant-init` binary: PID 1 of a host-like container, or `decant-init ctl ...`, the
//! client of its control socket. Arguments are parsed by hand (no clap) to keep the static
//! binary small.
//!
//! ```text
//! decant-init [--root DIR] [--socket PATH] [--grace SECS] [--skip GLOBS] [--allow GLOBS]
//!             [--no-default-skip] [--with-services] [--verbose] [-- CMD ARGS...]
//! decant-init ctl [--socket PATH] status|start|stop|restart|reload [NAME...|all]
//! ```
//! Environment: DECANT_INIT_ROOT, DECANT_INIT_SOCKET, DECANT_INIT_GRACE, DECANT_INIT_SKIP,
//! DECANT_INIT_ALLOW (comma-separated globs of systemd units).

use std::path::PathBuf;
use std::time::Duration;

use supervisor::{control, Options};

fn usage() -> ! {
    eprintln!(
        "usage: decant-init [--root DIR] [--socket PATH] [--grace SECS] [--skip GLOBS] \
         [--allow GLOBS] [--no-default-skip] [--with-services] [--verbose] [-- CMD ARGS...]\n       \
         decant-init ctl [--socket PATH] status|start|stop|restart|reload [NAME...|all]"
    );
    std::process::exit(2)
}

fn globs(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn main() {
    supervisor::memory::no_fault_around();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Options::default();
    if let Ok(v) = std::env::var("DECANT_INIT_ROOT") {
        opts.root = PathBuf::from(v);
    }
    if let Ok(v) = std::env::var("DECANT_INIT_SOCKET") {
        opts.socket = PathBuf::from(v);
    }
    if let Ok(v) = std::env::var("DECANT_INIT_GRACE") {
        match v.parse::<f64>() {
            Ok(s) if (0.0..=3600.0).contains(&s) => opts.grace = Duration::from_secs_f64(s),
            _ => eprintln!("decant-init: DECANT_INIT_GRACE={v} is not 0..3600 seconds; ignored"),
        }
    }
    if let Ok(v) = std::env::var("DECANT_INIT_SKIP") {
        opts.policy.skip.extend(globs(&v));
    }
    if let Ok(v) = std::env::var("DECANT_INIT_ALLOW") {
        opts.policy.allow.extend(globs(&v));
    }
    let mut it = args.into_iter();
    let mut ctl: Option<Vec<String>> = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next().unwrap_or_else(|| {
                eprintln!("decant-init: {name} needs a value");
                usage()
            })
        };
        match a.as_str() {
            "--root" => opts.root = PathBuf::from(value("--root")),
            "--socket" => opts.socket = PathBuf::from(value("--socket")),
            "--grace" => match value("--grace").parse::<f64>() {
                Ok(s) if (0.0..=3600.0).contains(&s) => opts.grace = Duration::from_secs_f64(s),
                _ => usage(),
            },
            "--skip" => opts.policy.skip.extend(globs(&value("--skip"))),
            "--allow" => opts.policy.allow.extend(globs(&value("--allow"))),
            "--no-default-skip" => opts.policy.skip.clear(),
            "--with-services" => opts.with_services = true,
            "--verbose" | "-v" => opts.verbose = true,
            "--help" | "-h" => usage(),
            "--" => {
                // An empty command is no main service: an image's entrypoint
                // `decant-init --with-services --` with no Cmd runs only the services.
                let rest: Vec<String> = it.by_ref().collect();
                if !rest.is_empty() {
                    opts.main = Some(rest);
                }
            }
            "ctl" if ctl.is_none() && opts.main.is_none() => ctl = Some(Vec::new()),
            _ if ctl.is_some() => {
                if let Some(c) = ctl.as_mut() {
                    c.push(a);
                }
            }
            _ => {
                eprintln!("decant-init: unknown argument '{a}'");
                usage()
            }
        }
    }
    if let Some(c) = ctl {
        std::process::exit(control::ctl(&opts.socket, &c, Duration::from_secs(120)));
    }
    std::process::exit(supervisor::run(opts));
}

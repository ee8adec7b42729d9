//! `decant strip` and `decant size`: flags in, `snapshot::strip` out, and the `Prober` that
//! runs each `--probe` in a container of the candidate through `runtime::engine`.
//!
//! `--probe-service` and `--probe-http` share ONE host-like container per candidate (decant-init
//! in services mode as PID 1, as `run --init=host`, each HTTP port published on
//! `127.0.0.1:0`), started once per trial and removed after it. The service probes ask the init's
//! control socket (as `decant svc` does); the HTTP probe is a minimal HTTP/1.0 GET over std::net,
//! which is all a status line needs (no HTTP client crate for this).
//!
//! `--trace` runs the baseline under `runtime::trace::Tracer` (fanotify, set up before the
//! first probe container starts); each probe container's upper dir is walked before the
//! container is removed, adding what the workload wrote.

use std::cell::RefCell;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use runtime::engine::ports::PortMapping;
use runtime::engine::{ContainerConfig, Engine, NetworkMode};
use snapshot::store::{Reference, Store};
use snapshot::strip::rules::Rules;
use snapshot::strip::run::{strip, ProbeOutcome, Prober, StripOptions, StripReport};
use snapshot::strip::size::size;
use snapshot::strip::trace::Traced;
use snapshot::strip::StripError;

use super::Context;
use crate::output::{bytes, Table};

#[derive(ClapArgs)]
pub struct StripArgs {
    /// Name for the stripped image (NAME[:TAG]).
    #[arg(short, long)]
    pub tag: String,
    /// Remove paths matching GLOB (`*`, `?`, `[..]` within a name, `**` across directories);
    /// a matching directory goes with everything under it.
    #[arg(long, value_name = "GLOB")]
    pub remove: Vec<String>,
    /// Keep paths matching GLOB, whatever removes them.
    #[arg(long, value_name = "GLOB")]
    pub keep: Vec<String>,
    /// A shipped profile (docs, man, locales, caches, logs, kernel, udev, getty, identity;
    /// vm = all) or a file of `remove GLOB` / `keep GLOB` lines.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Vec<String>,
    /// Remove an installed package (dpkg or rpm): its files and its database entry.
    #[arg(long, value_name = "NAME")]
    pub remove_package: Vec<String>,
    /// Also remove the packages that depend on a removed one (the plan is printed).
    #[arg(long)]
    pub cascade: bool,
    /// Allow removing Essential and Priority: required packages.
    #[arg(long)]
    pub force: bool,
    /// Remove the conffiles of removed packages too.
    #[arg(long)]
    pub purge: bool,
    /// A shell command run (`sh -c`) in a container of each candidate; exit 0 passes.
    #[arg(long, value_name = "CMD")]
    pub probe: Vec<String>,
    /// The candidate runs host-like (`--init=host`) with PORT published on 127.0.0.1; a
    /// 2xx/3xx answer to `GET /PATH` (default `/`) within the timeout passes.
    #[arg(long, value_name = "PORT[/PATH]")]
    pub probe_http: Vec<String>,
    /// In the same host-like container, decant-init reports service NAME RUNNING and it stays
    /// so for a second more; FATAL, EXITED, BACKOFF or the timeout fails.
    #[arg(long, value_name = "NAME")]
    pub probe_service: Vec<String>,
    /// Seconds a probe may run before it counts as failed.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub probe_timeout: u64,
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Trace the files the probes' workload uses (fanotify; root only) and propose, package by
    /// package and directory by directory, what it never touched; the probes verify each.
    #[arg(long)]
    pub trace: bool,
    pub image: String,
}

#[derive(ClapArgs)]
pub struct SizeArgs {
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    pub image: String,
}

/// A `--probe-http PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpProbe {
    port: u16,
    /// Starts with `/`.
    path: String,
}

impl HttpProbe {
    fn parse(spec: &str) -> Result<HttpProbe> {
        let (port, path) = match spec.split_once('/') {
            Some((p, rest)) => (p, format!("/{rest}")),
            None => (spec, "/".to_string()),
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => anyhow::bail!("--probe-http {spec:?}: PORT must be 1..65535 (PORT[/PATH])"),
        };
        // The path goes into a request line: nothing that could end or split it.
        anyhow::ensure!(
            !path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()),
            "--probe-http {spec:?}: the path may not hold spaces or control characters"
        );
        Ok(HttpProbe { port, path })
    }

    fn label(&self) -> String {
        format!("--probe-http {}{}", self.port, self.path)
    }
}

/// Longest HTTP answer head read; a status line is far shorter.
const HTTP_HEAD_CAP: u64 = 4096;
/// How long a service must stay RUNNING once the init reports it so. RUNNING itself is only
/// reported after the service's startsecs (supervisord's rule), which the socket does not show.
const SERVICE_STABLE: Duration = Duration::from_secs(1);
/// Pause between two polls of a port or of the control socket.
const POLL: Duration = Duration::from_millis(100);

/// Runs each `--probe` in a fresh container of the image, then removes the container; the
/// host-like probes share one container of their own.
struct EngineProber {
    engine: Engine,
    exe: PathBuf,
    probes: Vec<String>,
    http: Vec<HttpProbe>,
    services: Vec<String>,
    /// decant-init, found once up front when a host-like probe is given.
    init: Option<PathBuf>,
    timeout: Duration,
    /// While tracing: what the probe containers' upper dirs held, and why a walk failed.
    upper: RefCell<Option<runtime::trace::Seen>>,
    upper_errors: RefCell<Vec<String>>,
}

/// Most upper-dir walk errors kept for the report.
const MAX_TRACE_ERRORS: usize = 5;

/// Removes the probe container however the probe ends; while tracing, first records what
/// the workload wrote into its upper dir.
struct Remove<'a>(&'a EngineProber, String);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        if let Some(seen) = self.0.upper.borrow_mut().as_mut() {
            let upper = self.0.engine.containers_dir().join(&self.1).join("upper");
            if let Err(e) = runtime::trace::walk_upper(&upper, seen) {
                let mut errs = self.0.upper_errors.borrow_mut();
                if errs.len() < MAX_TRACE_ERRORS {
                    errs.push(e.to_string());
                }
            }
        }
        let _ = self.0.engine.remove(&self.1, true);
    }
}

fn outcome(probe: &str, t0: Instant, passed: bool, detail: String) -> ProbeOutcome {
    ProbeOutcome {
        probe: probe.to_string(),
        passed,
        detail,
        millis: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// What one GET said: a status code (0: the answer is not HTTP), or an error while there is no
/// answer yet (refused, reset, closed before a status line: the service is not up, or the
/// forwarder found nobody listening inside), which the caller retries until its deadline.
fn http_get(addr: SocketAddr, path: &str, left: Duration) -> Result<u16, String> {
    let left = left.max(Duration::from_millis(10));
    let mut s = TcpStream::connect_timeout(&addr, left).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: decant-strip\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    let mut r = (&mut s).take(HTTP_HEAD_CAP);
    while !head.contains(&b'\n') {
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err("connection closed before a status line".into());
    }
    let mut words = line.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Ok(0),
    }
}

impl EngineProber {
    fn one(&self, base: &ContainerConfig, probe: &str) -> Result<ProbeOutcome, StripError> {
        let t0 = Instant::now();
        let mut cfg = base.clone();
        cfg.cmd = vec!["/bin/sh".into(), "-c".into(), probe.to_string()];
        let perr = |e: runtime::engine::EngineError| StripError::Probe(format!("{probe}: {e}"));
        let c = self.engine.create(cfg).map_err(perr)?;
        let _guard = Remove(self, c.id.clone());
        let done = |passed: bool, detail: String| outcome(probe, t0, passed, detail);
        if let Err(e) = self.engine.start(&c.id, &self.exe) {
            return Ok(done(false, format!("could not start: {e}")));
        }
        let Some(end) = self.engine.wait_exit(&c.id, self.timeout).map_err(perr)? else {
            return Ok(done(
                false,
                format!("timed out after {} s", self.timeout.as_secs()),
            ));
        };
        let code = end.exit_code.unwrap_or(-1);
        if code == 0 {
            return Ok(done(true, String::new()));
        }
        let mut tail = Vec::new();
        let _ = self.engine.logs(&c.id, Some(3), false, |l| {
            tail.push(l.log.trim_end().to_string());
            true
        });
        let mut detail = format!("exit {code}");
        if code == 127 {
            detail.push_str(" (command not found)");
        }
        if !tail.is_empty() {
            detail.push_str(": ");
            detail.push_str(&tail.join(" / "));
        }
        Ok(done(false, detail))
    }

    /// The host-like container: decant-init in services mode as PID 1 (no command: the
    /// image's services are the workload), run as root as `run --init=host` does, every HTTP
    /// probe's port published on a free 127.0.0.1 port. Runs the service probes, then the HTTP
    /// probes, stopping at the first failure.
    fn host_like(
        &self,
        base: &ContainerConfig,
        init: &Path,
        out: &mut Vec<ProbeOutcome>,
    ) -> Result<(), StripError> {
        let first = self
            .services
            .first()
            .map(|s| format!("--probe-service {s}"))
            .or_else(|| self.http.first().map(HttpProbe::label))
            .unwrap_or_default();
        let t0 = Instant::now();
        let perr = |e: runtime::engine::EngineError| StripError::Probe(format!("{first}: {e}"));
        let mut ports: Vec<PortMapping> = Vec::new();
        for h in &self.http {
            if !ports.iter().any(|p| p.container_port == h.port) {
                ports.push(
                    format!("127.0.0.1:0:{}", h.port)
                        .parse::<PortMapping>()
                        .map_err(perr)?,
                );
            }
        }
        let mut cfg = base.clone();
        cfg.entrypoint = Vec::new();
        cfg.cmd = Vec::new();
        cfg.user = None;
        cfg.init = Some(init.to_path_buf());
        cfg.init_host = true;
        cfg.ports = ports;
        let c = self.engine.create(cfg).map_err(perr)?;
        let _guard = Remove(self, c.id.clone());
        if let Err(e) = self.engine.start(&c.id, &self.exe) {
            out.push(outcome(
                &first,
                t0,
                false,
                format!("the host-like container could not start: {e}"),
            ));
            return Ok(());
        }
        let live = self.engine.load(&c.id).map_err(perr)?;
        for name in &self.services {
            let o = self.service(&c.id, live.pid, name);
            let failed = !o.passed;
            out.push(o);
            if failed {
                return Ok(());
            }
        }
        for h in &self.http {
            let host = live
                .ports
                .iter()
                .find(|p| p.container_port == h.port)
                .map(|p| SocketAddr::new(p.host_ip, p.host_port));
            let o = match host {
                Some(addr) => self.http(&c.id, addr, h),
                None => outcome(
                    &h.label(),
                    Instant::now(),
                    false,
                    format!("port {} was not published", h.port),
                ),
            };
            let failed = !o.passed;
            out.push(o);
            if failed {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Why the container is no longer running, when it is not.
    fn ended(&self, id: &str) -> Option<String> {
        match self.engine.load(id) {
            Ok(c) if c.is_live() => None,
            Ok(c) => Some(format!(
                "the container exited (code {})",
                c.exit_code.unwrap_or(-1)
            )),
            Err(e) => Some(format!("the container is gone: {e}")),
        }
    }

    /// Polls decant-init's control socket until service `name` has been RUNNING for
    /// `SERVICE_STABLE`; a state it does not come back from fails at once.
    fn service(&self, id: &str, pid: i32, name: &str) -> ProbeOutcome {
        let label = format!("--probe-service {name}");
        let t0 = Instant::now();
        let deadline = t0 + self.timeout;
        let socket = PathBuf::from(format!("/proc/{pid}/root")).join(
            supervisor::DEFAULT_SOCKET
                .strip_prefix('/')
                .unwrap_or(supervisor::DEFAULT_SOCKET),
        );
        let mut last = "the control socket did not answer".to_string();
        let mut running_since: Option<Instant> = None;
        loop {
            if let Some(why) = self.ended(id) {
                return outcome(&label, t0, false, format!("{why}; {name}: {last}"));
            }
            match supervisor::control::request(&socket, &format!("status {name}")) {
                Err(e) => last = e.to_string(),
                Ok(reply) => {
                    let line = reply.lines().next().unwrap_or_default().trim().to_string();
                    if line.contains("ERROR") {
                        return outcome(&label, t0, false, line);
                    }
                    let state = line.split_whitespace().nth(2).unwrap_or_default();
                    let tail = line
                        .split_whitespace()
                        .skip(3)
                        .collect::<Vec<_>>()
                        .join(" ");
                    last = format!("{state} ({tail})");
                    match state {
                        "RUNNING" => {
                            let since = *running_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= SERVICE_STABLE {
                                return outcome(&label, t0, true, String::new());
                            }
                        }
                        // Not up yet: the init starts services in priority order.
                        "STARTING" => running_since = None,
                        "STOPPED" if tail.contains("Not started") => running_since = None,
                        _ => return outcome(&label, t0, false, format!("{name} is {last}")),
                    }
                }
            }
            if Instant::now() >= deadline {
                return outcome(
                    &label,
                    t0,
                    false,
                    format!(
                        "timed out after {} s: {name} is {last}",
                        self.timeout.as_secs()
                    ),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// GETs the path through the published port until an answer, retrying while the port
    /// refuses (the service is not up yet); 2xx and 3xx pass.
    fn http(&self, id: &str, addr: SocketAddr, h: &HttpProbe) -> ProbeOutcome {
        let label = h.label();
        let t0 = Instant::now();
        let deadline = t0 + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match http_get(addr, &h.path, left.min(Duration::from_secs(5))) {
                Ok(code) if (200..400).contains(&code) => {
                    return outcome(&label, t0, true, format!("HTTP {code}"))
                }
                Ok(0) => {
                    return outcome(
                        &label,
                        t0,
                        false,
                        format!("{addr} answered something that is not HTTP"),
                    )
                }
                Ok(code) => {
                    return outcome(
                        &label,
                        t0,
                        false,
                        format!("GET {} answered HTTP {code}", h.path),
                    )
                }
                Err(e) => e,
            };
            if let Some(why) = self.ended(id) {
                return outcome(&label, t0, false, format!("{why}; {addr}: {last}"));
            }
            if Instant::now() >= deadline {
                return outcome(
                    &label,
                    t0,
                    false,
                    format!(
                        "timed out after {} s: nothing answered on port {} ({addr}: {last})",
                        self.timeout.as_secs(),
                        h.port
                    ),
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Prober for EngineProber {
    fn probes(&self) -> Vec<String> {
        let mut p = self.probes.clone();
        p.extend(self.services.iter().map(|s| format!("--probe-service {s}")));
        p.extend(self.http.iter().map(HttpProbe::label));
        p
    }

    fn run(&mut self, store: &Store, image_id: &str) -> Result<Vec<ProbeOutcome>, StripError> {
        let base = self.base(store, image_id)?;
        self.probe_all(&base)
    }

    fn run_traced(
        &mut self,
        store: &Store,
        image_id: &str,
    ) -> Result<(Vec<ProbeOutcome>, Traced), StripError> {
        let base = self.base(store, image_id)?;
        let terr = |e: runtime::trace::TraceError| StripError::Probe(format!("--trace: {e}"));
        let index = runtime::trace::Index::of_layers(&base.lower_dirs).map_err(terr)?;
        let tracer = runtime::trace::Tracer::start(index, &base.lower_dirs).map_err(terr)?;
        *self.upper.borrow_mut() = Some(runtime::trace::Seen::default());
        self.upper_errors.borrow_mut().clear();
        let out = self.probe_all(&base);
        let upper = self.upper.borrow_mut().take().unwrap_or_default();
        let mut seen = tracer.finish().map_err(terr)?;
        let out = out?;
        let mut incomplete: Vec<String> = self.upper_errors.borrow_mut().drain(..).collect();
        if seen.overflow {
            incomplete.push("the fanotify queue overflowed: events were lost".into());
        }
        if seen.capped || upper.capped {
            incomplete.push(format!(
                "a cap was reached ({} indexed files, {} touched paths)",
                runtime::trace::MAX_INDEXED,
                runtime::trace::MAX_TOUCHED
            ));
        }
        seen.touched.extend(upper.touched);
        Ok((
            out,
            Traced {
                touched: seen.touched,
                events: seen.events,
                matched: seen.matched,
                upper: upper.upper,
                incomplete,
            },
        ))
    }
}

impl EngineProber {
    /// The container config every probe of `image_id` starts from (its layers unpacked).
    fn base(&self, store: &Store, image_id: &str) -> Result<ContainerConfig, StripError> {
        let rec = store.resolve(image_id)?;
        let (config, _) = store.config(&rec)?;
        let (manifest, _) = store.manifest(&rec)?;
        // The same layer directories `run` uses (a rootless user with a subuid range gets
        // them unpacked with their real owners inside that range).
        let digests: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        let lower_dirs = super::run::layer_dirs(store, &digests)
            .map_err(|e| StripError::Probe(format!("{e:#}")))?;
        let ic = config.config().clone().unwrap_or_default();
        let base = ContainerConfig {
            image: image_id.to_string(),
            image_id: image_id.to_string(),
            lower_dirs,
            env: ic.env().clone().unwrap_or_default(),
            workdir: ic.working_dir().clone(),
            user: ic.user().clone().filter(|u| !u.is_empty()),
            network: NetworkMode::Private,
            ..ContainerConfig::default()
        };
        Ok(base)
    }

    /// Every probe against `base`, stopping at the first failure.
    fn probe_all(&self, base: &ContainerConfig) -> Result<Vec<ProbeOutcome>, StripError> {
        let mut out = Vec::new();
        for p in &self.probes {
            let o = self.one(base, p)?;
            let failed = !o.passed;
            out.push(o);
            if failed {
                return Ok(out);
            }
        }
        if let Some(init) = &self.init {
            self.host_like(base, init, &mut out)?;
        }
        Ok(out)
    }
}

pub fn run_strip(ctx: &Context, a: StripArgs) -> Result<()> {
    let json = matches!(a.format.as_deref(), Some("json"));
    if let Some(f) = a.format.as_deref().filter(|f| *f != "json") {
        anyhow::bail!("unknown --format {f:?} (only json)");
    }
    let tag: Reference = a.tag.parse().with_context(|| format!("--tag {}", a.tag))?;
    let mut rules = Rules::default();
    for p in &a.profile {
        rules.profile(p)?;
    }
    for g in &a.remove {
        rules.remove(g)?;
    }
    for g in &a.keep {
        rules.keep(g)?;
    }
    anyhow::ensure!(
        rules.rules.iter().any(|r| !r.keep) || !a.remove_package.is_empty() || a.trace,
        "nothing to remove: give --remove, --profile, --remove-package or --trace"
    );
    anyhow::ensure!(a.probe_timeout > 0, "--probe-timeout must be at least 1 s");
    anyhow::ensure!(
        !a.trace || runtime::engine::running_as_root(),
        "--trace needs root (fanotify filesystem marks need CAP_SYS_ADMIN)"
    );
    let http = a
        .probe_http
        .iter()
        .map(|h| HttpProbe::parse(h))
        .collect::<Result<Vec<_>>>()?;
    for s in &a.probe_service {
        anyhow::ensure!(
            !s.is_empty() && !s.chars().any(char::is_whitespace),
            "--probe-service {s:?}: a service name has no spaces"
        );
    }
    let exe = std::env::current_exe().context("finding the decant binary")?;
    // Found before anything is made, so a missing init is one line and the store is untouched.
    let init = if http.is_empty() && a.probe_service.is_empty() {
        None
    } else {
        Some(runtime::engine::find_init(&exe)?)
    };
    let store = ctx.open_store()?;
    let mut prober = EngineProber {
        engine: Engine::new(&ctx.store_root()),
        exe,
        probes: a.probe.clone(),
        http,
        services: a.probe_service.clone(),
        init,
        timeout: Duration::from_secs(a.probe_timeout),
        upper: RefCell::new(None),
        upper_errors: RefCell::new(Vec::new()),
    };
    let opts = StripOptions {
        rules,
        packages: a.remove_package.clone(),
        cascade: a.cascade,
        force: a.force,
        purge: a.purge,
        tag: Some(tag),
        trace: a.trace,
    };
    let t0 = Instant::now();
    let mut log = |l: &str| eprintln!("{l}");
    let report = strip(&store, &a.image, &opts, &mut prober, &mut log)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, t0.elapsed());
    }
    Ok(())
}

fn pct(after: u64, before: u64) -> String {
    if after == 0 {
        return "-".into();
    }
    format!("{:.1}x", before as f64 / after as f64)
}

fn print_report(r: &StripReport, took: Duration) {
    println!(
        "{} -> {} ({})",
        r.source,
        r.tag.clone().unwrap_or_default(),
        r.image_id
    );
    let mut t = Table::new(&["", "BEFORE", "AFTER", "SMALLER BY"]);
    t.row(vec![
        "uncompressed".into(),
        bytes(r.bytes_before),
        bytes(r.bytes_after),
        pct(r.bytes_after, r.bytes_before),
    ]);
    t.row(vec![
        "compressed".into(),
        bytes(r.compressed_before),
        bytes(r.compressed_after),
        pct(r.compressed_after, r.compressed_before),
    ]);
    t.print();
    println!(
        "{} round(s), {} candidate(s) probed, {}",
        r.rounds.len(),
        r.trials.len(),
        crate::output::duration(took)
    );
    for o in &r.baseline {
        println!("baseline probe {:?}: passes", o.probe);
    }
    if !r.removed_packages.is_empty() {
        println!("removed packages: {}", r.removed_packages.join(", "));
    }
    if let Some(t) = &r.trace {
        println!(
            "trace: {} event(s), {} on the image, {} path(s) touched ({} written), {} package(s) touched",
            t.events, t.matched_events, t.paths_touched, t.upper_paths, t.packages_touched
        );
        println!(
            "trace proposed {} package group(s), {} director(ies); removed packages: {}; removed directories: {}",
            t.proposed_packages.len(),
            t.proposed_dirs.len(),
            if t.removed_packages.is_empty() { "-".to_string() } else { t.removed_packages.join(", ") },
            if t.removed_dirs.is_empty() { "-".to_string() } else { t.removed_dirs.join(", ") },
        );
    }
    for (g, why) in &r.kept {
        println!("kept {g}: {why}");
    }
    let mut t = Table::new(&["DIRECTORY", "REMOVED", "REMAINING"]);
    for (d, b) in &r.per_directory {
        t.row(vec![d.clone(), bytes(b.removed), bytes(b.remaining)]);
    }
    t.print();
    let mut pk: Vec<_> = r
        .per_package
        .iter()
        .filter(|(_, b)| b.removed > 0)
        .collect();
    pk.sort_by_key(|(_, b)| std::cmp::Reverse(b.removed));
    if !pk.is_empty() {
        let mut t = Table::new(&["PACKAGE", "REMOVED", "REMAINING"]);
        for (p, b) in pk.iter().take(20) {
            t.row(vec![(*p).clone(), bytes(b.removed), bytes(b.remaining)]);
        }
        t.print();
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

pub fn run_size(ctx: &Context, a: SizeArgs) -> Result<()> {
    if let Some(f) = a.format.as_deref().filter(|f| *f != "json") {
        anyhow::bail!("unknown --format {f:?} (only json)");
    }
    let store = ctx.open_store()?;
    let r = size(&store, &a.image)?;
    if a.format.is_some() {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{}: {} in {} files, {} layer(s), {} compressed",
        r.image,
        bytes(r.bytes),
        r.files,
        r.layers,
        bytes(r.compressed)
    );
    let mut t = Table::new(&["DIRECTORY", "SIZE", "FILES"]);
    for d in &r.directories {
        t.row(vec![d.name.clone(), bytes(d.bytes), d.files.to_string()]);
    }
    t.print();
    match &r.packages {
        Some(p) => {
            let mut t = Table::new(&["PACKAGE", "SIZE", "FILES"]);
            for d in p.iter().take(snapshot::strip::size::TOP) {
                t.row(vec![d.name.clone(), bytes(d.bytes), d.files.to_string()]);
            }
            t.print();
        }
        None => println!(
            "no package database (/var/lib/dpkg/status, rpmdb.sqlite): per-directory figures only"
        ),
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    let mut t = Table::new(&["CANDIDATE", "SAVES", "FILES"]);
    for d in &r.candidates {
        t.row(vec![d.name.clone(), bytes(d.bytes), d.files.to_string()]);
    }
    t.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_probe_specs() {
        let p = HttpProbe::parse("8080/index.html").unwrap();
        assert_eq!((p.port, p.path.as_str()), (8080, "/index.html"));
        assert_eq!(p.label(), "--probe-http 8080/index.html");
        assert_eq!(HttpProbe::parse("80").unwrap().path, "/");
        for bad in ["", "0", "65536", "http/x", "80/a b", "80/a\r\nX: y"] {
            let e = HttpProbe::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--probe-http"), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    /// A one-shot server answering `reply` (then closing) on a free port.
    fn serve(reply: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(&reply);
            }
        });
        addr
    }

    #[test]
    fn http_get_reads_only_the_status_line() {
        let t = Duration::from_secs(5);
        let a = serve(b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n".to_vec());
        assert_eq!(http_get(a, "/", t), Ok(302));
        // Not HTTP, and a head with no line end (read up to the cap, no more).
        assert_eq!(http_get(serve(b"SSH-2.0-x\r\n".to_vec()), "/", t), Ok(0));
        assert_eq!(http_get(serve(vec![b'H'; 1 << 20]), "/", t), Ok(0));
        // Closed before a status line: not up yet, so the caller retries.
        let e = http_get(serve(Vec::new()), "/", t).unwrap_err();
        assert!(e.contains("before a status line"), "{e}");
        // Nobody listening.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(http_get(dead, "/", t).is_err());
    }
}

//! `decant strip` and `decant size`: flags in, `snapshot::strip` out, and the `Prober` that
//! runs each `--probe` in a container of the candidate through `runtime::engine`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use runtime::engine::{ContainerConfig, Engine, NetworkMode};
use snapshot::layer::cache::LayerCache;
use snapshot::store::{Reference, Store};
use snapshot::strip::rules::Rules;
use snapshot::strip::run::{strip, ProbeOutcome, Prober, StripOptions, StripReport};
use snapshot::strip::size::size;
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
    /// Remove a dpkg package: its files, its info files and its status paragraph.
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
    /// Seconds a probe may run before it counts as failed.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub probe_timeout: u64,
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    pub image: String,
}

#[derive(ClapArgs)]
pub struct SizeArgs {
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    pub image: String,
}

/// Runs each probe in a fresh container of the image, then removes the container.
struct EngineProber {
    engine: Engine,
    exe: PathBuf,
    probes: Vec<String>,
    timeout: Duration,
}

/// Removes the probe container however the probe ends.
struct Remove<'a>(&'a Engine, String);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1, true);
    }
}

impl EngineProber {
    fn one(&self, base: &ContainerConfig, probe: &str) -> Result<ProbeOutcome, StripError> {
        let t0 = Instant::now();
        let mut cfg = base.clone();
        cfg.cmd = vec!["/bin/sh".into(), "-c".into(), probe.to_string()];
        let perr = |e: runtime::engine::EngineError| StripError::Probe(format!("{probe}: {e}"));
        let c = self.engine.create(cfg).map_err(perr)?;
        let _guard = Remove(&self.engine, c.id.clone());
        let done = |passed: bool, detail: String| ProbeOutcome {
            probe: probe.to_string(),
            passed,
            detail,
            millis: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
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
}

impl Prober for EngineProber {
    fn probes(&self) -> Vec<String> {
        self.probes.clone()
    }

    fn run(&mut self, store: &Store, image_id: &str) -> Result<Vec<ProbeOutcome>, StripError> {
        let rec = store.resolve(image_id)?;
        let (config, _) = store.config(&rec)?;
        let (manifest, _) = store.manifest(&rec)?;
        let rootless = !runtime::engine::running_as_root();
        let cache = LayerCache::open(store).map_err(|e| StripError::Probe(e.to_string()))?;
        let mut lower_dirs = Vec::new();
        for l in manifest.layers() {
            lower_dirs.push(
                cache
                    .ensure(store, l.digest().as_ref(), rootless)
                    .map_err(|e| StripError::Probe(e.to_string()))?,
            );
        }
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
        let mut out = Vec::new();
        for p in &self.probes {
            let o = self.one(&base, p)?;
            let failed = !o.passed;
            out.push(o);
            if failed {
                break;
            }
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
        rules.rules.iter().any(|r| !r.keep) || !a.remove_package.is_empty(),
        "nothing to remove: give --remove, --profile or --remove-package"
    );
    anyhow::ensure!(a.probe_timeout > 0, "--probe-timeout must be at least 1 s");
    let store = ctx.open_store()?;
    let mut prober = EngineProber {
        engine: Engine::new(&ctx.store_root()),
        exe: std::env::current_exe().context("finding the decant binary")?,
        probes: a.probe.clone(),
        timeout: Duration::from_secs(a.probe_timeout),
    };
    let opts = StripOptions {
        rules,
        packages: a.remove_package.clone(),
        cascade: a.cascade,
        force: a.force,
        purge: a.purge,
        tag: Some(tag),
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
        None => println!("no package database (/var/lib/dpkg/status): per-directory figures only"),
    }
    let mut t = Table::new(&["CANDIDATE", "SAVES", "FILES"]);
    for d in &r.candidates {
        t.row(vec![d.name.clone(), bytes(d.bytes), d.files.to_string()]);
    }
    t.print();
    Ok(())
}

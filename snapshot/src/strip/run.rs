//! The strip loop: a baseline probe of the source image, then rounds (packages, then file
//! rules). Each round's candidate (the flattened image minus everything accepted so far and
//! the round's groups) is written as ONE reproducible layer into a throwaway image and handed
//! to the `Prober`; a failing round is bisected (split in halves, directories into their
//! children) until every group is accepted or shown to be needed. The result is written once
//! more as the final image; the source image is never changed.
//!
//! With `--trace` the baseline run is traced (`Prober::run_traced`, on the SOURCE image, so
//! the workload's view is complete), and after the explicit rounds two more rounds feed the
//! proposals of `trace` (untouched packages, then untouched directories) into the same loop:
//! nothing is removed that the probes did not pass without.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::flat::Flat;
use super::pkgdb::PackageDb;
use super::plan::{Candidate, Group, Planner};
use super::rules::Rules;
use super::trace::{self, Traced};
use super::StripError;
use crate::image::{write_image, HistoryEntry, ImageMeta, LayerRef};
use crate::layer::cache::LayerCache;
use crate::store::{ImageRecord, Reference, Store};

/// Most candidates one strip may test (each is a layer write and a container run).
pub const MAX_TRIALS: usize = 500;

/// What one probe said about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    pub probe: String,
    pub passed: bool,
    /// Why it failed (exit code, timeout, last output), or empty.
    pub detail: String,
    pub millis: u64,
}

/// Runs probes against a stored image. snapshot defines it; the binary implements it with the
/// container engine, so this crate stays free of the runtime.
pub trait Prober {
    /// The probes, as the user gave them (empty: nothing is verified).
    fn probes(&self) -> Vec<String>;
    /// Runs the probes against image `image_id` (`sha256:..`), stopping at the first failure.
    fn run(&mut self, store: &Store, image_id: &str) -> Result<Vec<ProbeOutcome>, StripError>;
    /// As `run`, with file-access tracing on from before the first container starts: also
    /// what the workload touched.
    fn run_traced(
        &mut self,
        _store: &Store,
        _image_id: &str,
    ) -> Result<(Vec<ProbeOutcome>, Traced), StripError> {
        Err(StripError::Refused(
            "--trace: this prober cannot trace file access".into(),
        ))
    }
}

/// What to strip.
#[derive(Debug, Clone, Default)]
pub struct StripOptions {
    pub rules: Rules,
    pub packages: Vec<String>,
    pub cascade: bool,
    pub force: bool,
    pub purge: bool,
    pub tag: Option<Reference>,
    /// Trace the baseline and propose what it never touched.
    pub trace: bool,
}

/// One tested candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub round: String,
    /// Groups this trial removed on top of what was already accepted.
    pub groups: usize,
    pub passed: bool,
    pub outcomes: Vec<ProbeOutcome>,
}

/// Bytes removed and remaining under one name (package or top-level directory).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Bytes {
    pub removed: u64,
    pub remaining: u64,
    /// Files of this package the file rules removed (recorded for dpkg, see plan.rs).
    pub rule_files: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct StripReport {
    pub source: String,
    pub image_id: String,
    pub tag: Option<String>,
    pub layer_digest: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub compressed_before: u64,
    pub compressed_after: u64,
    pub rounds: Vec<String>,
    pub trials: Vec<Trial>,
    pub baseline: Vec<ProbeOutcome>,
    pub removed_packages: Vec<String>,
    /// Groups kept because a probe needed them: (group, why).
    pub kept: Vec<(String, String)>,
    pub per_package: BTreeMap<String, Bytes>,
    pub per_directory: BTreeMap<String, Bytes>,
    /// What `--trace` saw, proposed and removed (None without `--trace`).
    pub trace: Option<TraceReport>,
    /// Things the user should know (no package database, rpm not handled, keys to regenerate).
    pub notes: Vec<String>,
}

/// The `--trace` part of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceReport {
    /// fanotify events read (host-wide) and those on files of the image.
    pub events: u64,
    pub matched_events: u64,
    /// Distinct image paths touched (opened, executed, written; symlinks to them included).
    pub paths_touched: usize,
    /// Paths the probe containers created, changed or deleted (upper dirs).
    pub upper_paths: u64,
    /// Installed packages with a touched file.
    pub packages_touched: usize,
    /// Why the trace may be incomplete (then the probes alone decide).
    pub incomplete: Vec<String>,
    /// Proposals: package groups (a package with its dependents among the proposals) and
    /// directories (`/usr/share/X`).
    pub proposed_packages: Vec<Vec<String>>,
    pub proposed_dirs: Vec<String>,
    /// Untouched directories not proposed (a name a glob cannot spell, or over the cap).
    pub dirs_not_proposed: usize,
    /// What of the proposals the final image lacks.
    pub removed_packages: Vec<String>,
    pub removed_dirs: Vec<String>,
}

struct Ctx<'a> {
    store: &'a Store,
    flat: &'a Flat,
    planner: &'a Planner<'a>,
    meta: ImageMeta,
    prober: &'a mut dyn Prober,
    trials: Vec<Trial>,
    log: &'a mut dyn FnMut(&str),
}

impl Ctx<'_> {
    /// Writes the candidate as a one-layer image; returns (image id, layer).
    fn write(
        &self,
        c: &Candidate,
        history: Vec<HistoryEntry>,
        tag: Option<&Reference>,
    ) -> Result<(String, LayerRef), StripError> {
        let s = self
            .flat
            .write_candidate(self.store, &c.removed, &c.replace)?;
        let layer = LayerRef {
            digest: s.digest.clone(),
            diff_id: s.diff_id.clone(),
            size: s.size,
            media_type: s.media_type.to_string(),
        };
        let mut meta = self.meta.clone();
        meta.history = history;
        let id = write_image(self.store, &meta, std::slice::from_ref(&layer), tag)?;
        Ok((id.digest().to_string(), layer))
    }

    /// Probes the candidate removing `groups`; the throwaway image is removed afterwards.
    fn trial(&mut self, round: &str, groups: &[&Group], new: usize) -> Result<bool, StripError> {
        if self.trials.len() >= MAX_TRIALS {
            return Err(StripError::Refused(format!(
                "more than {MAX_TRIALS} candidates tested; narrow the rules"
            )));
        }
        let c = self.planner.candidate(groups);
        if self.prober.probes().is_empty() {
            // Nothing to verify: no candidate to write either (the report says so).
            return Ok(true);
        }
        let (id, layer) = self.write(&c, Vec::new(), None)?;
        let outcomes = self.prober.run(self.store, &id);
        forget(self.store, &id, &layer.digest);
        let outcomes = outcomes?;
        let passed = outcomes.iter().all(|o| o.passed);
        (self.log)(&format!(
            "  {round}: {} accepted + {new} new group(s), {} bytes: {}",
            groups.len().saturating_sub(new),
            c.removed_bytes(self.flat),
            if passed {
                "probes pass"
            } else {
                "a probe fails"
            }
        ));
        self.trials.push(Trial {
            round: round.to_string(),
            groups: new,
            passed,
            outcomes,
        });
        Ok(passed)
    }

    /// Accepts every group of `todo` that the probes allow on top of `accepted`.
    fn solve(
        &mut self,
        round: &str,
        accepted: &mut Vec<Group>,
        todo: Vec<Group>,
        kept: &mut Vec<(Group, String)>,
    ) -> Result<(), StripError> {
        if todo.is_empty() {
            return Ok(());
        }
        let all: Vec<&Group> = accepted.iter().chain(&todo).collect();
        if self.trial(round, &all, todo.len())? {
            accepted.extend(todo);
            return Ok(());
        }
        if todo.len() == 1 {
            let g = todo
                .into_iter()
                .next()
                .ok_or_else(|| StripError::Internal("empty".into()))?;
            match self.planner.split(&g) {
                Some(kids) => return self.solve(round, accepted, kids, kept),
                None => {
                    let why = self
                        .trials
                        .last()
                        .and_then(|t| t.outcomes.iter().find(|o| !o.passed))
                        .map(|o| format!("{} fails without it: {}", o.probe, o.detail))
                        .unwrap_or_default();
                    kept.push((g, why));
                    return Ok(());
                }
            }
        }
        let mut a = todo;
        let b = a.split_off(a.len() / 2);
        self.solve(round, accepted, a, kept)?;
        self.solve(round, accepted, b, kept)
    }
}

/// Drops a throwaway candidate image and its unpacked copy, unless another image uses the layer.
fn forget(store: &Store, id: &str, layer: &str) {
    let _ = store.remove(id, true);
    let used = store.images().is_ok_and(|imgs| {
        imgs.iter().any(|r| {
            store
                .manifest(r)
                .is_ok_and(|(m, _)| m.layers().iter().any(|l| l.digest().to_string() == layer))
        })
    });
    if !used {
        if let Ok(cache) = LayerCache::open(store) {
            for rootless in [false, true] {
                if let Ok(p) = cache.path(layer, rootless) {
                    let _ = crate::layer::unpack::remove_tree(&p);
                    // The cache's per-layer lock and report files go with it.
                    for ext in ["lock", "skipped"] {
                        let mut side = p.clone().into_os_string();
                        side.push(".");
                        side.push(ext);
                        let _ = std::fs::remove_file(side);
                    }
                }
            }
        }
    }
}

/// The packages to remove for `names`, each with what `--cascade` adds, checked against
/// protection (dpkg: Essential/required; rpm: the base packages) and reverse dependencies.
pub fn package_groups(
    db: &PackageDb,
    names: &[String],
    cascade: bool,
    force: bool,
) -> Result<Vec<Vec<String>>, StripError> {
    db.removable()?;
    let mut out = Vec::new();
    for name in names {
        let Some(key) = db.find(name) else {
            return Err(StripError::Refused(format!(
                "unknown package {name}: {} has no such package",
                db.file()
            )));
        };
        let (installed, status) = db.state(key);
        if !installed {
            return Err(StripError::Refused(format!(
                "package {name} is not installed (status: {status})"
            )));
        }
        let protect = |k: &str| -> Result<(), StripError> {
            match db.protection(k) {
                Some(why) if !force => Err(StripError::Refused(format!(
                    "package {k} is {why} and protected; use --force to remove it anyway"
                ))),
                _ => Ok(()),
            }
        };
        protect(key)?;
        let mut gone: BTreeSet<String> = [key.clone()].into();
        for _ in 0..db.keys().len() {
            let broken = db.broken_by(&gone);
            if broken.is_empty() {
                break;
            }
            if !cascade {
                let list: Vec<String> = broken
                    .iter()
                    .map(|(d, g)| format!("{d} (needs {g})"))
                    .collect();
                return Err(StripError::Refused(format!(
                    "package {name} is needed by: {}; use --cascade to remove them too",
                    list.join(", ")
                )));
            }
            for (d, _) in broken {
                protect(&d)?;
                gone.insert(d);
            }
        }
        // The requested package first, so the printed plan reads "X with its dependents ...".
        gone.remove(key);
        out.push(std::iter::once(key.clone()).chain(gone).collect());
    }
    Ok(out)
}

/// The top-level name of a path (`/usr` for `usr/bin/ls` and for `usr` itself).
pub fn top(path: &[u8]) -> String {
    let first = path.split(|&b| b == b'/').next().unwrap_or_default();
    format!("/{}", String::from_utf8_lossy(first))
}

/// Owner package of each path (the first that lists it), for per-package figures.
pub fn owners(db: Option<&PackageDb>) -> std::collections::HashMap<Vec<u8>, String> {
    let mut m = std::collections::HashMap::new();
    if let Some(db) = db {
        for k in db.keys() {
            for f in db.files(k) {
                m.entry(f.clone()).or_insert_with(|| k.clone());
            }
        }
    }
    m
}

/// Strips `source` into a new image.
pub fn strip(
    store: &Store,
    source: &str,
    opts: &StripOptions,
    prober: &mut dyn Prober,
    log: &mut dyn FnMut(&str),
) -> Result<StripReport, StripError> {
    let rec: ImageRecord = store.resolve(source)?;
    let (manifest, _) = store.manifest(&rec)?;
    let (_, config_raw) = store.config(&rec)?;
    let layers: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    let compressed_before = manifest
        .layers()
        .iter()
        .fold(0u64, |a, l| a.saturating_add(l.size()));
    let flat = Flat::read(store, &layers)?;
    let db = PackageDb::from_flat(&flat)?;
    let mut notes = Vec::new();
    if db.is_none() {
        let unread = super::rpm::unread_note(&flat);
        notes.push(unread.clone().unwrap_or_else(|| {
            if opts.trace {
                "no package database (/var/lib/dpkg/status, rpmdb.sqlite): file rules and --trace directories only, no package proposals".to_string()
            } else {
                "no package database (/var/lib/dpkg/status, rpmdb.sqlite): file rules only".to_string()
            }
        }));
        if !opts.packages.is_empty() {
            return Err(StripError::Refused(format!(
                "image {source} has no {}; --remove-package cannot work, use file rules (--remove, --profile)",
                unread.map_or("dpkg database (/var/lib/dpkg/status) or rpm database (rpmdb.sqlite)".into(), |_| "readable package database (its rpm database is BerkeleyDB, which is not read)".to_string())
            )));
        }
    }
    if opts
        .rules
        .rules
        .iter()
        .any(|r| !r.keep && r.source.starts_with("profile identity"))
    {
        notes.push("ssh host keys and machine-id removed: regenerated at first boot by decant-init (host-like runs); runs without the init must run `ssh-keygen -A` and systemd-machine-id-setup themselves".into());
    }
    let pkg_groups = match &db {
        Some(d) if !opts.packages.is_empty() => {
            package_groups(d, &opts.packages, opts.cascade, opts.force)?
        }
        _ => Vec::new(),
    };
    for g in &pkg_groups {
        if g.len() > 1 {
            log(&format!(
                "plan: removing {} with its dependents {}",
                g.first().map(String::as_str).unwrap_or(""),
                g.get(1..).unwrap_or_default().join(", ")
            ));
        }
    }
    let planner = Planner::new(&flat, db.as_ref(), &opts.rules, opts.purge);
    let rule_groups = planner.rule_groups();
    let probes = prober.probes();
    if opts.trace && probes.is_empty() {
        return Err(StripError::Refused(
            "--trace needs a probe (--probe, --probe-http, --probe-service): tracing watches the probes' workload".into(),
        ));
    }

    // Refuse a rule set that would leave no file at all.
    {
        let everything: Vec<Group> = pkg_groups
            .iter()
            .cloned()
            .map(Group::Packages)
            .chain(rule_groups.iter().cloned())
            .collect();
        let refs: Vec<&Group> = everything.iter().collect();
        let c = planner.candidate(&refs);
        let files = flat
            .entries
            .iter()
            .filter(|e| e.kind != crate::EntryKind::Dir)
            .count();
        let left = flat
            .entries
            .iter()
            .zip(&c.removed)
            .filter(|(e, r)| e.kind != crate::EntryKind::Dir && !**r)
            .count();
        if files > 0 && left == 0 {
            return Err(StripError::Refused(format!(
                "the rules would remove every file of the image ({files} files); nothing would be left to run"
            )));
        }
    }

    // The stripped image keeps its command, env, labels and healthcheck; its history is
    // written anew (one flattened layer, then the rounds).
    let mut meta = crate::commit::meta_from_config(&config_raw)
        .map_err(|why| StripError::Refused(format!("{source}: image config: {why}")))?;
    meta.history.clear();
    let mut traced = None;
    let baseline = if probes.is_empty() {
        notes.push("no probes given: nothing was verified, every removal was accepted".into());
        Vec::new()
    } else {
        let b = if opts.trace {
            log("tracing the probes on the source image");
            let (b, t) = prober.run_traced(store, rec.id.digest())?;
            traced = Some(t);
            b
        } else {
            prober.run(store, rec.id.digest())?
        };
        if let Some(f) = b.iter().find(|o| !o.passed) {
            return Err(StripError::Probe(format!(
                "{} fails on the source image already ({}); nothing to verify against",
                f.probe, f.detail
            )));
        }
        b
    };

    // The trace's proposals: package groups, and directories as remove rules after the
    // user's (so a user rule still names what it removes, and --keep wins over them).
    let mut rules = opts.rules.clone();
    let explicit = rules.rules.len();
    let mut trace_report = None;
    let mut trace_pkgs: Vec<Vec<String>> = Vec::new();
    if let Some(t) = &traced {
        let touched = trace::with_symlinks(&flat, &t.touched);
        if let Some(d) = &db {
            trace_pkgs = trace::propose_packages(d, &flat, &touched);
        }
        let (dirs, not_proposed) = trace::propose_dirs(&flat, &touched);
        for d in &dirs {
            rules.remove_from(
                &format!("/{}", String::from_utf8_lossy(d)),
                "--trace: untouched",
            )?;
        }
        let packages_touched = db.as_ref().map_or(0, |d| {
            d.keys()
                .into_iter()
                .filter(|k| {
                    d.state(k).0
                        && d.files(k)
                            .iter()
                            .any(|f| touched.contains(f) || touched.contains(&flat.resolve_top(f)))
                })
                .count()
        });
        log(&format!(
            "trace: {} event(s), {} on the image, {} path(s) touched, {} package(s) touched; proposing {} package group(s), {} director(ies)",
            t.events,
            t.matched,
            touched.len(),
            packages_touched,
            trace_pkgs.len(),
            dirs.len()
        ));
        for why in &t.incomplete {
            notes.push(format!(
                "the trace is incomplete ({why}): the probes alone decided what it missed"
            ));
        }
        trace_report = Some(TraceReport {
            events: t.events,
            matched_events: t.matched,
            paths_touched: touched.len(),
            upper_paths: t.upper,
            packages_touched,
            incomplete: t.incomplete.clone(),
            proposed_packages: trace_pkgs.clone(),
            proposed_dirs: dirs
                .iter()
                .map(|d| format!("/{}", String::from_utf8_lossy(d)))
                .collect(),
            dirs_not_proposed: not_proposed,
            ..TraceReport::default()
        });
    }
    let planner = if traced.is_some() {
        Planner::new(&flat, db.as_ref(), &rules, opts.purge)
    } else {
        planner
    };
    let (rule_groups, trace_dirs): (Vec<Group>, Vec<Group>) = planner
        .rule_groups()
        .into_iter()
        .partition(|g| matches!(g, Group::Files { rule, .. } if *rule < explicit));

    let mut ctx = Ctx {
        store,
        flat: &flat,
        planner: &planner,
        meta,
        prober,
        trials: Vec::new(),
        log,
    };

    let mut accepted: Vec<Group> = Vec::new();
    let mut kept: Vec<(Group, String)> = Vec::new();
    let mut rounds = Vec::new();
    if !pkg_groups.is_empty() {
        (ctx.log)(&format!(
            "round {}: {} package group(s)",
            rounds.len() + 1,
            pkg_groups.len()
        ));
        let name = format!("round {} (packages)", rounds.len() + 1);
        ctx.solve(
            &name,
            &mut accepted,
            pkg_groups.into_iter().map(Group::Packages).collect(),
            &mut kept,
        )?;
        rounds.push(name);
    }
    if !rule_groups.is_empty() {
        (ctx.log)(&format!(
            "round {}: {} path group(s) from the rules",
            rounds.len() + 1,
            rule_groups.len()
        ));
        let name = format!("round {} (file rules)", rounds.len() + 1);
        ctx.solve(&name, &mut accepted, rule_groups, &mut kept)?;
        rounds.push(name);
    }
    if traced.is_some() {
        // Only what the rounds so far have not removed already.
        let done = planner.candidate(&accepted.iter().collect::<Vec<_>>());
        let pkgs: Vec<Group> = trace_pkgs
            .into_iter()
            .filter(|g| g.iter().any(|p| !done.packages.contains(p)))
            .map(Group::Packages)
            .collect();
        if !pkgs.is_empty() {
            (ctx.log)(&format!(
                "round {}: {} untouched package group(s) from the trace",
                rounds.len() + 1,
                pkgs.len()
            ));
            let name = format!("round {} (trace: packages)", rounds.len() + 1);
            ctx.solve(&name, &mut accepted, pkgs, &mut kept)?;
            rounds.push(name);
        }
        let done = planner.candidate(&accepted.iter().collect::<Vec<_>>());
        let dirs: Vec<Group> = trace_dirs
            .into_iter()
            .filter(|g| match g {
                Group::Files { root, .. } => {
                    let end = planner.ends.get(*root).copied().unwrap_or(*root + 1);
                    (*root..end).any(|j| {
                        planner.planned.get(j).copied().flatten().is_some()
                            && !done.removed.get(j).copied().unwrap_or(true)
                    })
                }
                Group::Packages(_) => false,
            })
            .collect();
        if !dirs.is_empty() {
            (ctx.log)(&format!(
                "round {}: {} untouched director(ies) from the trace",
                rounds.len() + 1,
                dirs.len()
            ));
            let name = format!("round {} (trace: directories)", rounds.len() + 1);
            ctx.solve(&name, &mut accepted, dirs, &mut kept)?;
            rounds.push(name);
        }
    }

    let refs: Vec<&Group> = accepted.iter().collect();
    let fin = planner.candidate(&refs);
    let mut history = vec![HistoryEntry {
        created: Some(ctx.meta.created.clone()),
        created_by: Some(format!("decant strip {source}")),
        comment: Some(format!(
            "{} layer(s) of {} flattened into one",
            layers.len(),
            rec.id.short()
        )),
        ..HistoryEntry::default()
    }];
    for r in &rounds {
        let t: Vec<&Trial> = ctx.trials.iter().filter(|t| &t.round == r).collect();
        history.push(HistoryEntry {
            created: Some(ctx.meta.created.clone()),
            created_by: Some(format!("decant strip {r}")),
            comment: Some(format!(
                "{} candidate(s) probed, {} passed",
                t.len(),
                t.iter().filter(|t| t.passed).count()
            )),
            empty_layer: true,
            ..HistoryEntry::default()
        });
    }
    let (id, layer) = ctx.write(&fin, history, opts.tag.as_ref())?;
    let summary_after = fin.removed_bytes(&flat);

    let own = owners(db.as_ref());
    let mut per_package: BTreeMap<String, Bytes> = BTreeMap::new();
    let mut per_directory: BTreeMap<String, Bytes> = BTreeMap::new();
    for (e, r) in flat.entries.iter().zip(&fin.removed) {
        let slot = |b: &mut Bytes| {
            if *r {
                b.removed = b.removed.saturating_add(e.size);
            } else {
                b.remaining = b.remaining.saturating_add(e.size);
            }
        };
        slot(per_directory.entry(top(&e.path)).or_default());
        if db.is_some() {
            let owner = own
                .get(&e.path)
                .cloned()
                .unwrap_or_else(|| "(no package)".into());
            slot(per_package.entry(owner).or_default());
        }
    }
    for (pkg, n) in &fin.rule_files {
        per_package.entry(pkg.clone()).or_default().rule_files = *n;
    }
    notes.extend(fin.rule_files_note());
    if let Some(tr) = trace_report.as_mut() {
        tr.removed_packages = tr
            .proposed_packages
            .iter()
            .flatten()
            .filter(|p| fin.packages.contains(*p))
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        tr.removed_dirs = tr
            .proposed_dirs
            .iter()
            .filter(|d| {
                flat.find(d.trim_start_matches('/').as_bytes())
                    .is_some_and(|i| fin.removed.get(i).copied().unwrap_or(false))
            })
            .cloned()
            .collect();
        if !tr.removed_dirs.is_empty() && db.is_some() {
            notes.push("--trace removed whole directories: files of packages that stay may be among them (dpkg --verify lists them), as with --remove".into());
        }
    }
    let bytes_before = flat.total_bytes();
    Ok(StripReport {
        source: source.to_string(),
        image_id: id,
        tag: opts.tag.as_ref().map(Reference::familiar),
        layer_digest: layer.digest,
        bytes_before,
        bytes_after: bytes_before.saturating_sub(summary_after),
        compressed_before,
        compressed_after: layer.size,
        rounds,
        trials: ctx.trials,
        baseline,
        removed_packages: fin.packages.into_iter().collect(),
        kept: kept
            .iter()
            .map(|(g, why)| (planner.describe(g, &rules), why.clone()))
            .collect(),
        per_package,
        per_directory,
        trace: trace_report,
        notes,
    })
}

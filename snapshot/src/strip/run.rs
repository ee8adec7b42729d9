//! The strip loop: a baseline probe of the source image, then rounds (packages, then file
//! rules). Each round's candidate (the flattened image minus everything accepted so far and
//! the round's groups) is written as ONE reproducible layer into a throwaway image and handed
//! to the `Prober`; a failing round is bisected (split in halves, directories into their
//! children) until every group is accepted or shown to be needed. The result is written once
//! more as the final image; the source image is never changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::flat::Flat;
use super::pkgdb::PackageDb;
use super::plan::{Candidate, Group, Planner};
use super::rules::Rules;
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
    /// Things the user should know (no package database, rpm not handled, keys to regenerate).
    pub notes: Vec<String>,
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
            "no package database (/var/lib/dpkg/status, rpmdb.sqlite): file rules only".to_string()
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
        notes.push("ssh host keys removed: run `ssh-keygen -A` before sshd starts (decant-init does not yet); machine-id removed: systemd-machine-id-setup or dbus-uuidgen --ensure regenerates it".into());
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
    let mut ctx = Ctx {
        store,
        flat: &flat,
        planner: &planner,
        meta,
        prober,
        trials: Vec::new(),
        log,
    };
    let probes = ctx.prober.probes();
    let baseline = if probes.is_empty() {
        notes.push("no probes given: nothing was verified, every removal was accepted".into());
        Vec::new()
    } else {
        let b = ctx.prober.run(store, rec.id.digest())?;
        if let Some(f) = b.iter().find(|o| !o.passed) {
            return Err(StripError::Probe(format!(
                "{} fails on the source image already ({}); nothing to verify against",
                f.probe, f.detail
            )));
        }
        b
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
            .map(|(g, why)| (planner.describe(g, &opts.rules), why.clone()))
            .collect(),
        per_package,
        per_directory,
        notes,
    })
}

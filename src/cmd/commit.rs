//! `decant commit`, `diff`, `export`, `snapshot [ls]` and `restore`: the container's overlay
//! upper dir (from the engine) turned into an image, a change list or a tar by
//! `snapshot::commit`; a snapshot is a commit that also carries the container's run
//! configuration as a label, and `restore` makes the container again from one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args as ClapArgs;
use runtime::engine::commit::{SavedRun, RUN_CONFIG_LABEL, SNAPSHOT_OF_LABEL};
use runtime::engine::{Container, Engine};
use snapshot::commit::{CommitOptions, Source};
use snapshot::store::{ImageId, Reference, Store};

use super::Context;

#[derive(ClapArgs)]
pub struct CommitArgs {
    /// Commit message (the history comment).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL, HEALTHCHECK).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// Freeze the container while committing.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub pause: bool,
    /// One layer holding the whole filesystem instead of the image's layers plus the changes.
    #[arg(long)]
    pub squash: bool,
    /// Boot the image host-like everywhere: put the static decant-init ($DECANT_INIT or next
    /// to the decant binary) into a layer of its own at /usr/local/sbin/decant-init and make it
    /// the entrypoint in services mode (as `import --init`).
    #[arg(long)]
    pub init: bool,
    pub container: String,
    /// The new image's name, REPOSITORY[:TAG].
    pub repository: Option<String>,
}

#[derive(ClapArgs)]
pub struct DiffArgs {
    pub container: String,
}

#[derive(ClapArgs)]
pub struct ExportArgs {
    /// Write to a file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(ClapArgs)]
pub struct SnapshotArgs {
    /// `CONTAINER [NAME]` to take a snapshot (NAME: a tag of the container's repository, or
    /// REPOSITORY[:TAG]; default `<container>:snap-<unix time>`), or `ls CONTAINER`.
    #[arg(num_args = 1..=2, required = true, value_name = "CONTAINER [NAME] | ls CONTAINER")]
    pub args: Vec<String>,
}

#[derive(ClapArgs)]
pub struct RestoreArgs {
    pub container: String,
    /// The snapshot image (a name or an id).
    pub snapshot: String,
}

fn source(s: &runtime::engine::commit::CommitSource) -> Source {
    Source {
        upper: s.upper.clone(),
        lowers: s.lower_dirs.clone(),
        exclude: s.exclude.clone(),
        root: Some(s.merged.clone()),
    }
}

/// Commits container `key`; returns the image id and the container as it was.
fn commit_container(
    ctx: &Context,
    key: &str,
    mut opts: CommitOptions,
    pause: bool,
    tag: Option<&Reference>,
) -> Result<(ImageId, Container)> {
    let engine = Engine::new(&ctx.store_root());
    let src = engine.commit_source(key)?;
    let c = src.container.clone();
    let store = ctx.open_store()?;
    let parent = store
        .resolve(&c.config.image_id)
        .with_context(|| format!("the image of container {} ({})", c.name, c.config.image))?;
    if opts.created_by.is_empty() {
        // As docker: what the container ran made the layer.
        opts.created_by = c.config.args().join(" ");
    }
    let _frozen = if pause {
        engine.freeze_for_commit(&c)?
    } else {
        None
    };
    let done = snapshot::commit::commit(&store, &parent, &source(&src), &opts, tag)
        .with_context(|| format!("commit of container {}", c.name))?;
    for s in &done.layer.skipped {
        eprintln!("WARNING: {s}");
    }
    Ok((done.id, c))
}

fn parse_tag(s: &str) -> Result<Reference> {
    Reference::parse(s).with_context(|| format!("invalid reference format: {s}"))
}

/// `commit`: prints `sha256:<id>`.
pub fn commit(ctx: &Context, a: CommitArgs) -> Result<i32> {
    let tag = a.repository.as_deref().map(parse_tag).transpose()?;
    let opts = CommitOptions {
        message: a.message,
        author: a.author,
        changes: a.change,
        squash: a.squash,
        init: if a.init {
            let exe = std::env::current_exe().context("locating the decant binary")?;
            Some(runtime::engine::find_init(&exe)?)
        } else {
            None
        },
        ..CommitOptions::default()
    };
    let (id, _) = commit_container(ctx, &a.container, opts, a.pause, tag.as_ref())?;
    println!("{}", id.digest());
    Ok(0)
}

/// `diff`: `A|C|D /path`, one per line.
pub fn diff(ctx: &Context, a: DiffArgs) -> Result<i32> {
    let src = Engine::new(&ctx.store_root()).commit_source(&a.container)?;
    let changes = snapshot::commit::diff(&source(&src))?;
    let mut out = std::io::stdout().lock();
    for c in changes {
        if writeln!(out, "{c}").is_err() {
            break;
        }
    }
    Ok(0)
}

/// `export`: the flattened filesystem as a tar, to `-o FILE` (written beside it and renamed,
/// so a failure leaves no half file) or to standard output when that is not a terminal.
pub fn export(ctx: &Context, a: ExportArgs) -> Result<i32> {
    let src = Engine::new(&ctx.store_root()).commit_source(&a.container)?;
    match &a.output {
        Some(path) => {
            let name = path
                .file_name()
                .with_context(|| format!("{}: not a file name", path.display()))?;
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(".decant-tmp");
            let tmp = path.with_file_name(tmp_name);
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let r = snapshot::commit::export(&source(&src), std::io::BufWriter::new(f))
                .map_err(anyhow::Error::from)
                .and_then(|(w, _)| {
                    let f = w.into_inner().map_err(|e| e.into_error())?;
                    f.sync_all()?;
                    Ok(())
                })
                .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
            if let Err(e) = r {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("export of {} to {}", a.container, path.display())));
            }
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = std::io::BufWriter::new(std::io::stdout());
            let (mut w, _) = snapshot::commit::export(&source(&src), out)?;
            w.flush().context("writing the tar to standard output")?;
        }
    }
    Ok(0)
}

/// The repository a container's snapshots are tagged in: its name, lowercased.
fn snapshot_ref(container: &str, name: Option<&str>) -> Result<Reference> {
    let repo = container.to_ascii_lowercase();
    match name {
        Some(n) if n.contains(':') || n.contains('/') => parse_tag(n),
        Some(n) => parse_tag(&format!("{repo}:{n}")),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            parse_tag(&format!("{repo}:snap-{now}"))
        }
    }
}

/// `snapshot CONTAINER [NAME]` and `snapshot ls CONTAINER`.
pub fn snapshot(ctx: &Context, a: SnapshotArgs) -> Result<i32> {
    match a.args.as_slice() {
        [ls, container] if ls == "ls" => snapshot_ls(ctx, container),
        [container] => take_snapshot(ctx, container, None),
        [container, name] => take_snapshot(ctx, container, Some(name)),
        _ => bail!("usage: decant snapshot CONTAINER [NAME] | decant snapshot ls CONTAINER"),
    }
}

fn take_snapshot(ctx: &Context, key: &str, name: Option<&str>) -> Result<i32> {
    let engine = Engine::new(&ctx.store_root());
    let c = engine.find(key)?;
    let mut tag = snapshot_ref(&c.name, name)?;
    if name.is_none() {
        // Two snapshots in one second get -2, -3, ... rather than moving the first one's tag.
        let base = tag.tag().unwrap_or("snap").to_string();
        let store = ctx.open_store()?;
        let mut n = 1;
        while store.resolve(&tag.full()).is_ok() && n < 1000 {
            n += 1;
            tag = tag.with_tag(&format!("{base}-{n}"))?;
        }
    }
    let opts = CommitOptions {
        message: Some(format!("snapshot of container {}", c.name)),
        created_by: format!("decant snapshot {}", c.name),
        labels: vec![
            (RUN_CONFIG_LABEL.into(), SavedRun::of(&c).to_json()?),
            (SNAPSHOT_OF_LABEL.into(), c.name.clone()),
        ],
        ..CommitOptions::default()
    };
    let (id, _) = commit_container(ctx, &c.id, opts, true, Some(&tag))?;
    println!("{}\t{}", tag.familiar(), id.digest());
    Ok(0)
}

fn label(store: &Store, rec: &snapshot::store::ImageRecord, key: &str) -> Option<String> {
    let (_, raw) = store.config(rec).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.pointer("/config/Labels")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

fn snapshot_ls(ctx: &Context, key: &str) -> Result<i32> {
    // A removed container's snapshots are still listed by its name.
    let name = match Engine::new(&ctx.store_root()).find(key) {
        Ok(c) => c.name,
        Err(_) => key.to_string(),
    };
    let store = ctx.open_store()?;
    let mut rows = Vec::new();
    for rec in store.images()? {
        if label(&store, &rec, SNAPSHOT_OF_LABEL).as_deref() == Some(name.as_str()) {
            let created = rec.created.clone().unwrap_or_default();
            let names = rec.familiar_refs();
            let shown = if names.is_empty() {
                vec!["<none>".to_string()]
            } else {
                names
            };
            for n in shown {
                rows.push((created.clone(), n, rec.id.short().to_string()));
            }
        }
    }
    rows.sort();
    println!("{:<40} {:<14} CREATED", "SNAPSHOT", "IMAGE ID");
    for (created, n, id) in rows {
        println!("{n:<40} {id:<14} {created}");
    }
    Ok(0)
}

/// `restore CONTAINER SNAPSHOT`: the container is stopped and removed, and one with the same
/// name and the snapshot's run configuration is created from the snapshot and started. The
/// snapshot is read and its layers unpacked first, so a bad snapshot leaves the container.
pub fn restore(ctx: &Context, a: RestoreArgs) -> Result<i32> {
    let store = ctx.open_store()?;
    let rec = store.resolve(&a.snapshot)?;
    let json = label(&store, &rec, RUN_CONFIG_LABEL).with_context(|| {
        format!(
            "image {} is not a snapshot: it has no {RUN_CONFIG_LABEL} label",
            a.snapshot
        )
    })?;
    let saved = SavedRun::from_json(&a.snapshot, &json)?;
    let engine = Engine::new(&ctx.store_root());
    let old = match engine.find(&a.container) {
        Ok(c) => Some(c),
        Err(runtime::engine::EngineError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (manifest, _) = store.manifest(&rec)?;
    // As `create` unpacks them, so a restored container is the same as a new one.
    let lower_dirs = super::run::layer_dirs(
        &store,
        &manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect::<Vec<_>>(),
    )?;
    let exe = std::env::current_exe().context("finding the decant binary")?;
    let init = if saved.init {
        Some(runtime::engine::find_init(&exe)?)
    } else {
        None
    };
    let mut config = saved.config;
    config.name = Some(match &old {
        Some(c) => c.name.clone(),
        None => a.container.clone(),
    });
    config.image = a.snapshot.clone();
    config.image_id = rec.id.digest().to_string();
    config.lower_dirs = lower_dirs;
    config.init = init;
    if let Some(c) = &old {
        engine.remove(&c.id, true)?;
    }
    let c = engine.create(config)?;
    engine.start(&c.id, &exe)?;
    println!("{}", c.id);
    Ok(0)
}

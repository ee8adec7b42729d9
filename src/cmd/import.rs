//! `decant import`: a disk, a partition dump or a tarball → a single-layer image.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use import::job::{self, ImportReport, ImportRequest};
use import::plan::{self, Plan, PlanOptions};
use import::policy::PolicyOptions;
use snapshot::layer::{Compression, LayerOptions};
use snapshot::store::Reference;

use super::Context;
use crate::output;

#[derive(ClapArgs)]
pub struct Args {
    /// A disk image (raw, qcow2, vdi, vmdk, vhd), a partition dump, a tarball, or - for a
    /// tarball on stdin.
    pub source: PathBuf,
    /// Name the image REPOSITORY[:TAG].
    #[arg(short, long)]
    pub tag: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// USER, WORKDIR, VOLUME, STOPSIGNAL, HEALTHCHECK).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Commit message for the history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Layer compression: gzip (read by every tool) or zstd (Docker 23+, containerd 1.5+).
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Compression level (gzip 1-9, zstd 1-19).
    #[arg(long)]
    pub level: Option<i32>,
    /// Clamp file times to this Unix time (default: $SOURCE_DATE_EPOCH when set).
    #[arg(long, value_name = "EPOCH")]
    pub timestamp: Option<i64>,
    /// Keep kernels and initrds in /boot.
    #[arg(long)]
    pub keep_boot: bool,
    /// Keep /lib/modules.
    #[arg(long)]
    pub keep_modules: bool,
    /// Leave out paths matching GLOB (`/var/cache/**`).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Keep paths matching GLOB even when a rule would leave them out.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Keep security.selinux labels (dropped by default: they mean nothing on another host).
    #[arg(long)]
    pub keep_selinux: bool,
    /// The root volume when a disk holds several: partition number, UUID=, LABEL=, PARTUUID=,
    /// PARTLABEL= or VG/LV.
    #[arg(long, value_name = "VOLUME")]
    pub root: Option<String>,
    /// The parent of a differencing disk (VDI), when it is not beside it.
    #[arg(long, value_name = "FILE")]
    pub parent: Option<PathBuf>,
    /// Boot the image host-like everywhere: put the static decant-init (found as $DECANT_INIT
    /// or next to the decant binary) into a layer of its own at /usr/local/sbin/decant-init and
    /// make it the entrypoint, in services mode (the Cmd is cleared).
    #[arg(long)]
    pub init: bool,
    /// Show the plan (what would be imported) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar and no summary; print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the report as JSON instead of the summary.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let tag = a
        .tag
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .context("--tag")?;
    let compression: Compression = a
        .compression
        .parse()
        .map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    let clamp = match a.timestamp {
        Some(t) => Some(t),
        None => std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .map(|v| v.trim().parse::<i64>())
            .transpose()
            .context("SOURCE_DATE_EPOCH is not a number")?,
    };
    let json = match a.format.as_deref() {
        None => false,
        Some("json") => true,
        Some(f) => anyhow::bail!("--format {f}: only json is supported"),
    };
    let init = if a.init {
        let exe = std::env::current_exe().context("finding the decant binary")?;
        Some(runtime::engine::find_init(&exe)?)
    } else {
        None
    };
    // The store is opened (and, the first time, created) only once the input is known to be
    // readable: a bad disk leaves no trace, not even an empty layout.
    let opts = PlanOptions {
        root: a.root.clone(),
        disk: import::disk::DiskOptions {
            parent: a.parent.clone(),
        },
        spool_dir: snapshot::store::Store::temp_dir_of(&ctx.store_root()),
    };
    let opened = plan::open(&a.source, &opts).map_err(|e| naming_source(&a.source, e.into()))?;
    if a.dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&opened.plan)?);
        } else {
            super::inspect_disk::print_plan(&opened.plan);
        }
        return Ok(());
    }
    let store = ctx.open_store()?;
    let req = ImportRequest {
        tag,
        policy: PolicyOptions {
            keep_boot: a.keep_boot,
            keep_modules: a.keep_modules,
            exclude: a.exclude.clone(),
            include: a.include.clone(),
            ..PolicyOptions::default()
        },
        layer: LayerOptions {
            compression,
            level: a.level,
            keep_selinux: a.keep_selinux,
            clamp_mtime: clamp,
            ..LayerOptions::default()
        },
        changes: a.changes.clone(),
        message: a.message.clone(),
        init,
    };

    let counter = Arc::new(AtomicU64::new(0));
    let expected = opened.plan.expected_bytes;
    let show_bar = !a.quiet && !json && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let pb = indicatif::ProgressBar::new(expected.max(1));
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb
    });
    let report = std::thread::scope(|s| {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(pb) = &bar {
            let (pb, counter, done) = (pb.clone(), counter.clone(), done.clone());
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let n = counter.load(Ordering::Relaxed);
                    if n > pb.length().unwrap_or(0) {
                        pb.set_length(n);
                    }
                    pb.set_position(n);
                    std::thread::sleep(Duration::from_millis(100));
                }
                pb.finish_and_clear();
            });
        }
        let r = job::run(opened, &req, &store, counter.clone());
        done.store(true, Ordering::Relaxed);
        r
    })
    .map_err(|e| naming_source(&a.source, e.into()))?;

    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !a.quiet {
            print_summary(&report);
        }
        println!("{}", report.image_id);
    }
    Ok(())
}

/// How the source is named in error messages: the path as given, `stdin` for `-` (the name
/// the tarball reader uses).
fn source_name(source: &Path) -> String {
    if source == Path::new("-") {
        "stdin".into()
    } else {
        source.display().to_string()
    }
}

/// One line naming the source once: the readers' errors already start with the file's name,
/// so "importing FILE" is only added to those that do not mention it.
fn naming_source(source: &Path, e: anyhow::Error) -> anyhow::Error {
    let name = source_name(source);
    if e.to_string().contains(&name) {
        e
    } else {
        e.context(format!("importing {name}"))
    }
}

/// `(partition dump, 48.0 MiB)`, `(qcow2 v3, 72.0 MiB virtual, gpt partition table)`.
fn describe_source(p: &Plan) -> String {
    let Some(d) = &p.disk else {
        return p.kind.clone();
    };
    let bare = p.scheme == "none";
    let format = match (d.format.as_str(), d.subformat.is_empty()) {
        ("raw", _) if bare => "partition dump".to_string(),
        ("raw", _) => "raw disk".to_string(),
        (f, true) => f.to_string(),
        (f, false) => format!("{f} {}", d.subformat),
    };
    let size = if d.format == "raw" {
        output::bytes(d.virtual_size)
    } else {
        format!("{} virtual", output::bytes(d.virtual_size))
    };
    if bare {
        if d.format == "raw" {
            format!("{format}, {size}")
        } else {
            format!("{format}, {size}, a bare filesystem")
        }
    } else {
        format!("{format}, {size}, {} partition table", p.scheme)
    }
}

fn print_summary(r: &ImportReport) {
    let p = &r.plan;
    eprintln!("Imported {} ({})", p.source.display(), describe_source(p));
    if let Some(root) = &p.root {
        eprintln!("  root: volume {root}");
    }
    for m in &p.mounts {
        match m.status.as_str() {
            "grafted" => eprintln!(
                "  grafted {} from volume {}",
                m.mountpoint,
                m.volume.as_deref().unwrap_or("?")
            ),
            "unresolved" => eprintln!(
                "  not grafted: {} ({}): {}",
                m.mountpoint,
                m.spec,
                m.reason.as_deref().unwrap_or("no reason given")
            ),
            "skipped" => eprintln!(
                "  skipped fstab {} {} ({}): {}",
                m.fstype,
                m.mountpoint,
                m.spec,
                m.reason.as_deref().unwrap_or("not a disk filesystem")
            ),
            _ => {}
        }
    }
    if let Some(g) = &p.guest {
        let os = g
            .os_release
            .as_ref()
            .and_then(|o| o.pretty_name.clone())
            .unwrap_or_else(|| g.os.clone());
        eprintln!("  guest: {os}, {}", g.architecture);
    }
    for n in &p.notes {
        eprintln!("  note: {n}");
    }
    if !r.policy.excluded.is_empty() {
        eprintln!("Left out (a VM is not a container; --keep-boot, --keep-modules, --include change this):");
        for g in &r.policy.excluded {
            eprintln!(
                "  {:>7} entries {:>10}  {}",
                g.count,
                output::bytes(g.bytes),
                g.reason
            );
        }
    }
    for (path, size) in &r.policy.truncated {
        eprintln!(
            "  truncated {path}: hole-filled log of apparent size {}",
            output::bytes(*size)
        );
    }
    for s in &r.layer.skipped {
        eprintln!("  skipped: {s}");
    }
    eprintln!(
        "Layer: {} entries, {} tar, {} {}",
        r.layer.entries,
        output::bytes(r.layer.tar_size),
        output::bytes(r.layer.size),
        r.layer.media_type.rsplit('+').next().unwrap_or("tar")
    );
    eprintln!("  diff_id {}", r.layer.diff_id);
    eprintln!("  digest  {}", r.layer.digest);
    match &r.tag {
        Some(t) => eprintln!("Image {} tagged {t}", short_id(&r.image_id)),
        None => eprintln!("Image {} (untagged)", short_id(&r.image_id)),
    }
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "Done in {} ({}/s read)",
        output::duration(r.elapsed),
        output::bytes((r.bytes_read as f64 / secs) as u64)
    );
}

pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

//! `decant inspect-disk`: what a disk holds and what `import` would do with it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use import::plan::{self, Plan, PlanOptions};

use super::Context;
use crate::output::{self, Table};

#[derive(ClapArgs)]
pub struct Args {
    /// A disk image, a partition dump or a tarball.
    pub disk: PathBuf,
    /// The root volume when there are several (as for import).
    #[arg(long, value_name = "VOLUME")]
    pub root: Option<String>,
    /// The parent of a differencing disk (VDI).
    #[arg(long, value_name = "FILE")]
    pub parent: Option<PathBuf>,
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let spool = std::env::temp_dir();
    let _ = ctx;
    let opts = PlanOptions {
        root: a.root,
        disk: import::disk::DiskOptions { parent: a.parent },
        spool_dir: spool,
    };
    let opened =
        plan::open(&a.disk, &opts).with_context(|| format!("inspecting {}", a.disk.display()))?;
    match a.format.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&opened.plan)?),
        None => print_plan(&opened.plan),
        Some(f) => anyhow::bail!("--format {f}: only json is supported"),
    }
    Ok(())
}

/// The plan for people.
pub fn print_plan(p: &Plan) {
    println!("Source:     {}", p.source.display());
    if let Some(d) = &p.disk {
        println!(
            "Format:     {} ({}), virtual size {}",
            d.format,
            d.subformat,
            output::bytes(d.virtual_size)
        );
        let mut b = d.backing.as_deref();
        while let Some(parent) = b {
            println!(
                "Backing:    {} ({} {})",
                parent.file.display(),
                parent.format,
                parent.subformat
            );
            b = parent.backing.as_deref();
        }
    }
    println!("Table:      {}", p.scheme);
    if !p.volumes.is_empty() {
        let mut t = Table::new(&[
            "VOLUME",
            "START",
            "SIZE",
            "TYPE",
            "FILESYSTEM",
            "LABEL",
            "UUID",
            "ROOT",
        ]);
        for v in &p.volumes {
            t.row(vec![
                v.name.clone(),
                v.start.to_string(),
                output::bytes(v.size),
                v.type_name.clone(),
                v.filesystem.clone(),
                v.label.clone().unwrap_or_default(),
                v.uuid.clone().unwrap_or_default(),
                if v.is_root {
                    "yes".into()
                } else {
                    String::new()
                },
            ]);
        }
        println!();
        t.print();
    }
    if let Some(r) = &p.root {
        println!();
        println!("Root:       volume {r}");
    }
    if !p.mounts.is_empty() {
        println!();
        let mut t = Table::new(&["MOUNTPOINT", "DEVICE", "TYPE", "PLAN", "VOLUME", "WHY"]);
        for m in &p.mounts {
            t.row(vec![
                m.mountpoint.clone(),
                m.spec.clone(),
                m.fstype.clone(),
                m.status.clone(),
                m.volume.clone().unwrap_or_default(),
                m.reason.clone().unwrap_or_default(),
            ]);
        }
        t.print();
    }
    if let Some(g) = &p.guest {
        println!();
        let os = g
            .os_release
            .as_ref()
            .and_then(|o| o.pretty_name.clone())
            .unwrap_or_else(|| "unknown".into());
        println!("OS:         {os}");
        println!(
            "Arch:       {}/{}{}",
            g.os,
            g.architecture,
            g.variant
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        );
    }
    for n in &p.notes {
        println!("Note:       {n}");
    }
}

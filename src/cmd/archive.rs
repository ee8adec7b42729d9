//! `decant save IMAGE... [-o FILE] [--format docker-archive|oci-archive]` and
//! `decant load [-i FILE] [-q]`: glue around `snapshot::archive`, with docker's wording.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args as ClapArgs;
use snapshot::archive::{self, ArchiveFormat};

use super::Context;

#[derive(ClapArgs)]
pub struct SaveArgs {
    /// Images: name[:tag] (a name alone: every tag of it), ID, or name@digest.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// docker-archive (what `docker load` reads) or oci-archive.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
}

#[derive(ClapArgs)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print only the loaded image lines (decant shows no progress either way).
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn save(ctx: &Context, a: SaveArgs) -> Result<()> {
    let format: ArchiveFormat = a.format.parse()?;
    let store = ctx.open_store()?;
    match &a.output {
        Some(path) => save_to_file(&store, &a.images, format, path),
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = BufWriter::with_capacity(1 << 20, stdout.lock());
            archive::save(&store, &a.images, format, out)?;
            Ok(())
        }
    }
}

/// Writes next to `path` and renames into place, so a failed save leaves no half archive.
fn save_to_file(
    store: &snapshot::store::Store,
    images: &[String],
    format: ArchiveFormat,
    path: &Path,
) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".decant-save-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let out = archive::save(store, images, format, BufWriter::with_capacity(1 << 20, f))?;
        let f: File = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn load(ctx: &Context, a: LoadArgs) -> Result<()> {
    let store = ctx.open_store()?;
    let loaded = match &a.input {
        Some(path) => {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            archive::load(&store, io::BufReader::with_capacity(1 << 20, f))
                .with_context(|| format!("loading {}", path.display()))?
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            archive::load(&store, stdin.lock()).context("loading from standard input")?
        }
    };
    let mut out = io::stdout().lock();
    for img in loaded {
        if img.names.is_empty() {
            writeln!(out, "Loaded image ID: {}", img.id.digest())?;
        }
        for n in &img.names {
            writeln!(out, "Loaded image: {n}")?;
        }
    }
    Ok(())
}

//! `decant images`: docker's table, one row per name; dangling images as `<none>`.

use anyhow::Result;
use clap::Args as ClapArgs;
use snapshot::store::{ImageRecord, Reference};

use super::Context;
use crate::output::{self, Table};

#[derive(ClapArgs)]
pub struct Args {
    /// Only images whose name matches REPOSITORY[:TAG].
    pub filter: Option<String>,
    /// Only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Show full IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// One row: an image under one of its names.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    repository: String,
    tag: String,
    #[serde(rename = "ID")]
    id: String,
    digest: String,
    created_at: String,
    size: u64,
}

pub fn rows_of(rec: &ImageRecord) -> Vec<(String, String)> {
    let refs = rec.references();
    if refs.is_empty() && rec.refs.is_empty() {
        return vec![("<none>".into(), "<none>".into())];
    }
    if refs.is_empty() {
        return rec
            .refs
            .iter()
            .map(|r| (r.clone(), "<none>".into()))
            .collect();
    }
    refs.iter()
        .map(|r| {
            (
                r.familiar_repository(),
                r.tag().unwrap_or("<none>").to_string(),
            )
        })
        .collect()
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let store = ctx.open_store()?;
    let mut records = store.images()?;
    records.sort_by(|x, y| y.created.cmp(&x.created));
    let filter = a.filter.as_deref().map(Reference::parse).transpose()?;
    let has_tag = a
        .filter
        .as_deref()
        .is_some_and(|f| f.rsplit('/').next().is_some_and(|l| l.contains(':')));
    let mut rows = Vec::new();
    for rec in &records {
        for (repo, tag) in rows_of(rec) {
            if let Some(f) = &filter {
                if repo != f.familiar_repository() || has_tag && Some(tag.as_str()) != f.tag() {
                    continue;
                }
            }
            rows.push(Row {
                repository: repo,
                tag,
                id: rec.id.digest().to_string(),
                digest: rec.manifest_digest.clone(),
                created_at: rec.created.clone().unwrap_or_default(),
                size: rec.size,
            });
        }
    }
    match a.format.as_deref() {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        Some(f) => anyhow::bail!("--format {f}: only json is supported"),
        None => {}
    }
    let short = |id: &str| {
        if a.no_trunc {
            id.to_string()
        } else {
            super::import::short_id(id).to_string()
        }
    };
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                println!("{}", short(&r.id));
            }
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut t = Table::new(&header);
    for r in rows {
        let mut cells = vec![r.repository, r.tag];
        if a.digests {
            cells.push(r.digest);
        }
        cells.extend([
            short(&r.id),
            output::ago(&r.created_at),
            output::docker_size(r.size),
        ]);
        t.row(cells);
    }
    t.print();
    Ok(())
}

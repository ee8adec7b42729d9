//! `decant history IMAGE`: the config's history, newest first, as docker shows it.

use anyhow::Result;
use clap::Args as ClapArgs;

use super::Context;
use crate::output::{self, Table};

#[derive(ClapArgs)]
pub struct Args {
    pub image: String,
    /// Do not truncate CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// `json` for scripts.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let store = ctx.open_store()?;
    let rec = store.resolve(&a.image)?;
    let config = super::inspect::read_json(&store, rec.id.digest())?;
    let manifest = super::inspect::read_json(&store, &rec.manifest_digest)?;
    let history = config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    // Pair non-empty history entries with layers, in order.
    let mut layer_iter = layers.iter();
    let mut rows = Vec::new();
    for h in &history {
        let empty = h
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layer_iter
                .next()
                .and_then(|l| l.get("size"))
                .and_then(|s| s.as_u64())
                .unwrap_or(0)
        };
        let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        rows.push((s("created"), s("created_by"), size, s("comment")));
    }
    rows.reverse();
    if a.format.as_deref() == Some("json") {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, by, size, comment)| serde_json::json!({"Created": c, "CreatedBy": by, "Size": size, "Comment": comment}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    for (i, (created, by, size, comment)) in rows.into_iter().enumerate() {
        let by = if a.no_trunc || by.chars().count() <= 45 {
            by
        } else {
            format!("{}…", by.chars().take(44).collect::<String>())
        };
        let id = if i == 0 {
            rec.id.short().to_string()
        } else {
            "<missing>".into()
        };
        t.row(vec![
            id,
            output::ago(&created),
            by,
            output::docker_size(size),
            comment,
        ]);
    }
    t.print();
    Ok(())
}

//! `decant inspect IMAGE|CONTAINER...`: docker-style JSON with the config, RootFS and the
//! manifest of images; containers (when no image has the name) as `container inspect` shows them.

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use serde_json::{json, Value};
use snapshot::store::{ImageRecord, Store};

use super::Context;

#[derive(ClapArgs)]
pub struct Args {
    /// Images: name[:tag], ID (or a unique prefix), or name@digest; else containers.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Largest config or manifest decant will read: real ones are a few KiB.
pub const MAX_JSON_BLOB: usize = 16 << 20;

pub fn read_json(store: &Store, digest: &str) -> Result<Value> {
    let bytes = store.read_blob(digest, MAX_JSON_BLOB)?;
    serde_json::from_slice(&bytes).with_context(|| format!("blob {digest} is not JSON"))
}

pub fn describe(store: &Store, rec: &ImageRecord) -> Result<Value> {
    let config = read_json(store, rec.id.digest())?;
    let manifest = read_json(store, &rec.manifest_digest)?;
    let tags: Vec<String> = rec.familiar_refs();
    Ok(json!({
        "Id": rec.id.digest(),
        "RepoTags": tags,
        "RepoNames": rec.refs,
        "Created": config.get("created").cloned().unwrap_or(Value::Null),
        "Author": config.get("author").cloned().unwrap_or(Value::Null),
        "Architecture": config.get("architecture").cloned().unwrap_or(Value::Null),
        "Variant": config.get("variant").cloned().unwrap_or(Value::Null),
        "Os": config.get("os").cloned().unwrap_or(Value::Null),
        "OsVersion": config.get("os.version").cloned().unwrap_or(Value::Null),
        "Config": config.get("config").cloned().unwrap_or(Value::Null),
        "RootFS": {
            "Type": config.pointer("/rootfs/type").cloned().unwrap_or(Value::Null),
            "Layers": config.pointer("/rootfs/diff_ids").cloned().unwrap_or(Value::Null),
        },
        "Size": rec.size,
        "Manifest": {
            "Digest": rec.manifest_digest,
            "MediaType": rec.manifest_media_type,
            "Layers": manifest.get("layers").cloned().unwrap_or(Value::Null),
        },
    }))
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let store = ctx.open_store()?;
    let mut out = Vec::new();
    for name in &a.images {
        // Images first, then containers (as docker inspect does without --type).
        match store.resolve(name) {
            Ok(rec) => out.push(describe(&store, &rec)?),
            Err(err) => match super::ops::inspect_value(ctx, name)? {
                Some(v) => out.push(v),
                None => return Err(err.into()),
            },
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

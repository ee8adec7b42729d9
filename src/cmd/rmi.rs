//! `decant rmi [-f] IMAGE...`: docker's Untagged/Deleted lines; blobs other images share stay;
//! an image a container uses is refused. Each image that cannot be removed gives one line on
//! stderr (the last one as the command's error), and the others are still removed.

use anyhow::Result;
use clap::Args as ClapArgs;

use super::Context;

#[derive(ClapArgs)]
pub struct Args {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image by ID even when it has several names.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let store = ctx.open_store()?;
    let mut failed: Vec<String> = Vec::new();
    let in_use = runtime::engine::Engine::new(&ctx.store_root()).images_in_use()?;
    for image in &a.images {
        // An image a container uses stays, even with -f (its layers are the container's root).
        if let Ok(rec) = store.resolve(image) {
            if let Some((ctr, _)) = in_use.iter().find(|(_, id)| id == rec.id.digest()) {
                failed.push(format!(
                    "conflict: unable to remove image {image}: container {ctr} is using its referenced image {}",
                    rec.id.short()
                ));
                continue;
            }
        }
        match store.remove(image, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    // The last failure is the command's error (main prints it); earlier ones are said here.
    let last = failed.pop();
    for f in &failed {
        eprintln!("decant: {f}");
    }
    match last {
        Some(f) => Err(anyhow::anyhow!(f)),
        None => Ok(()),
    }
}

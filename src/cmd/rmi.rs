//! `decant rmi [-f] IMAGE...`: docker's Untagged/Deleted lines; blobs other images share stay;
//! an image a container uses is refused.

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
    let mut failed = None;
    let in_use = runtime::engine::Engine::new(&ctx.store_root()).images_in_use()?;
    for image in &a.images {
        // An image a container uses stays, even with -f (its layers are the container's root).
        if let Ok(rec) = store.resolve(image) {
            if let Some((ctr, _)) = in_use.iter().find(|(_, id)| id == rec.id.digest()) {
                eprintln!(
                    "decant: conflict: unable to remove image {image}: container {ctr} is using its referenced image {}",
                    rec.id.short()
                );
                failed = Some(image.clone());
                continue;
            }
        }
        match store.remove(image, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("decant: {e}");
                failed = Some(image.clone());
            }
        }
    }
    match failed {
        Some(i) => anyhow::bail!("could not remove {i}"),
        None => Ok(()),
    }
}

//! `decant rmi [-f] IMAGE...`: docker's Untagged/Deleted lines; blobs other images share stay.

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
    for image in &a.images {
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

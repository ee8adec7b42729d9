//! `decant tag SOURCE TARGET`.

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use snapshot::store::Reference;

use super::Context;

#[derive(ClapArgs)]
pub struct Args {
    /// An image: name[:tag], ID or name@digest.
    pub source: String,
    /// The new name, REPOSITORY[:TAG].
    pub target: String,
}

pub fn run(ctx: &Context, a: Args) -> Result<()> {
    let target = Reference::parse(&a.target).with_context(|| format!("tag {}", a.target))?;
    ctx.open_store()?.tag(&a.source, &target)?;
    Ok(())
}

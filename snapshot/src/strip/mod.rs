//! `decant strip` and `decant size`: make an image smaller by removing what its workload does
//! not need, proving after every round, with probes run in containers of the candidate, that
//! it still works.
//!
//! One idea per file: `glob` (path patterns), `rules` (--remove/--keep and the shipped
//! profiles), `flat` (the image's flattened tree and the one-layer candidate writer), `dpkg` and
//! `rpm` (the package databases: reading them and removing packages truthfully), `pkgdb` (the
//! one face plan, run and size see of either), `plan` (what a set of
//! removal groups means for the tree and the database), `run` (the rounds, bisection and the
//! report), `size` (where an image's bytes are), `trace` (what `--trace` proposes from the
//! paths a traced workload touched).

pub mod dpkg;
pub mod flat;
pub mod glob;
pub mod pkgdb;
pub mod plan;
pub mod rpm;
pub mod rules;
pub mod run;
pub mod size;
pub mod trace;

use crate::store::StoreError;

/// Why strip or size could not go on. One line each.
#[derive(Debug, thiserror::Error)]
pub enum StripError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {digest}: {why}")]
    Layer { digest: String, why: String },
    #[error("writing the candidate layer: {0}")]
    Write(String),
    #[error("{file}: {why}")]
    Dpkg { file: String, why: String },
    #[error("{file}: {why}")]
    Rpm { file: String, why: String },
    #[error("rules: {0}")]
    Rules(String),
    #[error("{0}")]
    Refused(String),
    #[error("probe: {0}")]
    Probe(String),
    #[error("internal: {0}")]
    Internal(String),
}

//! One module per command: flags in, library calls, output out.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use snapshot::store::Store;

pub mod archive;
pub mod commit;
pub mod container;
pub mod history;
pub mod image;
pub mod images;
pub mod import;
pub mod inspect;
pub mod inspect_disk;
pub mod kube;
pub mod ops;
pub mod registry;
pub mod rmi;
pub mod run;
pub mod runtime;
pub mod strip;
pub mod svc;
pub mod tag;
pub mod volume;

/// What every command shares: where the store is.
pub struct Context {
    pub store: Option<PathBuf>,
}

impl Context {
    pub fn store_root(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(Store::default_root)
    }

    pub fn open_store(&self) -> Result<Store> {
        let root = self.store_root();
        Store::open(&root).with_context(|| format!("opening the image store {}", root.display()))
    }
}

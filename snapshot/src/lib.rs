//! decant's image store (an OCI image layout on disk), the layer writer and reader, and the
//! image metadata (config, manifest, index) built on them.

pub mod archive;
pub mod change;
pub mod commit;
pub mod image;
pub mod init_layer;
pub mod kube;
pub mod layer;
pub mod registry;
pub mod store;
pub mod strip;

pub use layer::entry::{path_order, Entry, EntryKind, FileTree, Timestamp};

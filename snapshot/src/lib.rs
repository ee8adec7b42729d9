//! decant's image store (an OCI image layout on disk), the layer writer and reader, and the
//! image metadata (config, manifest, index) built on them.

pub mod change;
pub mod image;
pub mod layer;
pub mod registry;
pub mod store;

pub use layer::entry::{path_order, Entry, EntryKind, FileTree, Timestamp};

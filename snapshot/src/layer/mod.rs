//! OCI layers: the `Entry`/`FileTree` interface every file source speaks, the writer that turns
//! entries into a compressed pax tar with its digests, and the reader that turns a layer blob
//! back into entries.

pub mod cache;
pub(crate) mod compress;
pub mod entry;
mod pax;
pub mod reader;
pub mod unpack;
pub mod writer;

pub use compress::{Compression, UnknownCompression, DEFAULT_GZIP_LEVEL};
pub use reader::{
    is_opaque_marker, is_whiteout, LayerReadError, LayerReader, OPAQUE_MARKER, WHITEOUT_PREFIX,
};
pub use writer::{write_tree, LayerError, LayerOptions, LayerSummary, LayerWriter};

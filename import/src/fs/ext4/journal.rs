//! jbd2 journal replay, in memory. INTERFACE ONLY until the journal work lands: `replay` refuses.
//!
//! A disk copied from a running VM has RECOVER set: committed transactions in the journal that
//! were never written to their home blocks. `replay` scans the journal and returns an overlay
//! `BlockSource` that reads the replayed version of those blocks and the base for all others,
//! without ever writing the user's file.

use std::io;
use std::sync::Arc;

use crate::block::BlockSource;

/// Why a journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{file}: journal: {problem}")]
    Corrupt { file: String, problem: String },
    #[error("{file}: journal: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
}

/// The filesystem with the journal's committed transactions applied.
pub struct JournalReplay {
    base: Arc<dyn BlockSource>,
}

impl BlockSource for JournalReplay {
    fn len(&self) -> u64 {
        self.base.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.base.read_at(offset, buf)
    }
    fn name(&self) -> &str {
        self.base.name()
    }
}

/// Replays the journal whose blocks (journal logical block i lives at filesystem block
/// `journal_blocks[i]`) sit on `base`, a filesystem of `block_size`-byte blocks.
/// `Ok(None)` when the journal holds nothing to replay.
pub fn replay(
    base: Arc<dyn BlockSource>,
    block_size: u32,
    journal_blocks: Vec<u64>,
) -> Result<Option<JournalReplay>, JournalError> {
    let _ = (block_size, journal_blocks);
    Err(JournalError::Corrupt {
        file: base.name().to_string(),
        problem: "replay is not implemented yet".into(),
    })
}

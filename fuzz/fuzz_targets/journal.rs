//! jbd2 journal replay: the first half of the input is the filesystem, the journal is the
//! second half's blocks (1 KiB blocks).
#![no_main]
use std::sync::Arc;

use import::block::{BlockSource, MemSource};
use import::fs::ext4::journal::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let blocks = (data.len() / 1024) as u64;
    if blocks < 2 {
        return;
    }
    let src: Arc<dyn BlockSource> = Arc::new(MemSource::new(data.to_vec(), "fuzz.img"));
    let journal: Vec<u64> = (blocks / 2..blocks).collect();
    if let Ok(Some(r)) = replay(src, 1024, journal) {
        let mut buf = [0u8; 3000];
        for b in 0..blocks {
            let _ = r.read_at(b * 1024 / 2, &mut buf);
        }
    }
});

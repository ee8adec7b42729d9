//! The ext2/3/4 reader on arbitrary bytes: open, walk every entry, read every file.
#![no_main]
use std::io::Read;
use std::sync::Arc;

use import::block::MemSource;
use import::fs::ext4::Ext4;
use libfuzzer_sys::fuzz_target;
use snapshot::FileTree;

fuzz_target!(|data: &[u8]| {
    let src = Arc::new(MemSource::new(data.to_vec(), "fuzz.img"));
    let Ok(fs) = Ext4::open(src, 1) else { return };
    let mut tree = fs.tree();
    let mut buf = [0u8; 65536];
    for _ in 0..10_000 {
        match tree.next_entry() {
            Ok(Some(_)) => while let Ok(n @ 1..) = tree.content().read(&mut buf) { let _ = n; },
            _ => break,
        }
    }
});

//! The tarball reader (plain and compressed) on arbitrary bytes.
#![no_main]
use std::io::Read;

use import::tarball::TarballTree;
use libfuzzer_sys::fuzz_target;
use snapshot::FileTree;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("decant-fuzz-{}.tar", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(mut tree) = TarballTree::open(&path, &dir) {
        let mut buf = [0u8; 65536];
        while let Ok(Some(_)) = tree.next_entry() {
            while let Ok(n @ 1..) = tree.content().read(&mut buf) {
                let _ = n;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});

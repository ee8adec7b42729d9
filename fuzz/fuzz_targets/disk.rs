//! Every virtual disk format (sniffed from the bytes, as `decant import` does): open it and read
//! scattered blocks.
#![no_main]
use import::disk::{open_disk, DiskOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("decant-fuzz-{}.disk", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(disk) = open_disk(&path, &DiskOptions::default()) {
        let len = disk.len();
        let mut buf = vec![0u8; 4096];
        for i in 0..64u64 {
            let off = len.saturating_sub(4096).wrapping_mul(i) / 64;
            let _ = disk.read_at(off, &mut buf);
        }
    }
    let _ = std::fs::remove_file(&path);
});

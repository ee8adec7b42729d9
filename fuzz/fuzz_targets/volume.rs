//! Partition tables and LVM (MBR, GPT, EBR chains, PV labels) on arbitrary bytes.
#![no_main]
use std::sync::Arc;

use import::block::MemSource;
use import::volume::discover;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = discover(Arc::new(MemSource::new(data.to_vec(), "fuzz.disk")));
});

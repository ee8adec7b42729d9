//! The LVM2 text metadata parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = import::volume::lvm::parse_metadata(data);
});

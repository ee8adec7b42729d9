//! fstab parsing and classification.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entries, _) = import::fstab::parse(&text);
    for e in &entries {
        let _ = import::fstab::classify(e);
    }
});

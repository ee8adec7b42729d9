//! Helpers the disk-format tests share: running the fixture tools (qemu-img, ...), patching
//! bytes into a fixture, the deterministic test data, and the one-line-error check.

#![allow(dead_code)] // each test binary uses its own subset

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

pub const MIB: usize = 1 << 20;

/// Runs a fixture tool; a missing tool fails the test with its name.
pub fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for this test and could not run: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Overwrites `bytes` at `offset` of the file (damaging a fixture on purpose).
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// `len` xorshift bytes from `seed`: incompressible, so qemu allocates every cluster.
pub fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x = seed;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    data
}

/// The error of an open that must fail: one line that names the file.
pub fn expect_open_err<T>(path: &Path, r: Result<T, impl std::fmt::Display>) -> String {
    let e = match r {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "multi-line error: {e}");
    assert!(e.contains(p(path)), "error does not name the file: {e}");
    e
}

//! The real Debian VM of the tests: debootstrap bookworm with openssh-server, cron,
//! rsyslog and nginx-light, as bench/make-vm.sh makes it (EXT4_ONLY=1: the root filesystem
//! only), cached in /var/tmp/decant-bench across runs and test binaries. The first build needs
//! the Debian mirror and about two minutes; the lock file keeps two test binaries from building
//! it at once (whichever gets the lock first builds, the others find it made).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{tool, Env};

/// The cache directory bench/make-vm.sh fills; `rootfs/` in it is the VM's tree.
pub const WORK: &str = "/var/tmp/decant-bench";

/// The VM's root filesystem image (`WORK/rootfs.ext4`), built or found under the lock, once
/// per test binary.
pub fn rootfs_ext4() -> &'static Path {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let work = Path::new(WORK);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/make-vm.sh");
        let lock = std::fs::File::create("/var/tmp/decant-bench.lock").expect("lock file");
        lock.lock().expect("lock");
        // The filesystems only: the disk images in other formats are the benchmarks' business.
        tool(
            "env",
            &[
                "EXT4_ONLY=1",
                "bash",
                script.to_str().expect("utf8 path"),
                work.to_str().expect("utf8 path"),
            ],
        );
        work.join("rootfs.ext4")
    })
}

/// Imports the VM's root filesystem into `env`'s store as `tag`.
pub fn import(env: &Env, tag: &str) {
    let disk = rootfs_ext4().to_str().expect("utf8 path");
    env.run(&[
        "import",
        "-q",
        "--compression",
        "zstd",
        "--level",
        "1",
        "-t",
        tag,
        disk,
    ])
    .ok();
}

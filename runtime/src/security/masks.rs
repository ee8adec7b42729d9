//! Masked and read-only paths in the container's /proc and /sys.
//!
//! Masked files get /dev/null bound over them, masked directories an empty read-only tmpfs;
//! read-only paths are bound onto themselves and remounted read-only, nosuid, nodev, noexec.
//! A remount inside a user namespace must keep the flags the kernel locked on the source mount,
//! so they are read back with statvfs and kept. Paths missing in this container are skipped.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use super::SecurityError;

/// runc's list.
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// runc's list.
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn fail(path: &str, problem: String) -> SecurityError {
    SecurityError::Mask {
        path: path.to_string(),
        problem,
    }
}

/// Masks `masked` and makes `readonly` read-only, in the current mount namespace.
pub fn apply(masked: &[String], readonly: &[String]) -> Result<(), SecurityError> {
    for p in masked {
        mask(p)?;
    }
    for p in readonly {
        make_readonly(p)?;
    }
    Ok(())
}

fn mask(path: &str) -> Result<(), SecurityError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(path, format!("stat: {e}"))),
    };
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | secure,
            Some("size=0,mode=0555"),
        )
        .map_err(|e| fail(path, format!("mounting an empty read-only tmpfs: {e}")))
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| fail(path, format!("binding /dev/null over it: {e}")))
    }
}

fn make_readonly(path: &str) -> Result<(), SecurityError> {
    if !Path::new(path).exists() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail(path, format!("binding onto itself: {e}")))?;
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    let locked = statvfs(path)
        .map_err(|e| fail(path, format!("statvfs: {e}")))?
        .flags();
    for (fs, ms) in [
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if locked.contains(fs) {
            flags |= ms;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| fail(path, format!("remounting read-only: {e}")))
}

//! cgroup v2 files: one directory for everything, OCI values converted to v2 units.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory};

use super::fs;
use super::CgroupError;

/// Controllers decant turns on for its groups (where the parent offers them).
pub(super) const WANTED: &[&str] = &["cpu", "cpuset", "memory", "pids", "io", "hugetlb"];

/// The controllers a v2 group can use (its `cgroup.controllers`).
pub(super) fn controllers(dir: &Path) -> Vec<String> {
    fs::read(&dir.join("cgroup.controllers"), fs::SMALL)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Delegates the wanted controllers from `dir` to its children. Each one separately and on a
/// best-effort basis: a busy or threaded parent refuses some, and then the limit that needs it
/// fails later with a message naming the controller.
pub(super) fn enable_subtree(dir: &Path) {
    let available = controllers(dir);
    let file = dir.join("cgroup.subtree_control");
    for c in WANTED.iter().filter(|c| available.iter().any(|a| a == *c)) {
        let _ = std::fs::write(&file, format!("+{c}"));
    }
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

pub(super) fn memory(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    if let Some(r) = m.reservation() {
        fs::write(&dir.join("memory.low"), &limit(r))?;
    }
    if let Some(l) = m.limit() {
        fs::write(&dir.join("memory.max"), &limit(l))?;
    }
    if let Some(swap) = m.swap() {
        // OCI's swap is memory+swap, v2's memory.swap.max is swap alone.
        let v = match (swap, m.limit()) {
            (s, _) if s < 0 => "max".to_string(),
            (s, Some(l)) if l >= 0 => s
                .checked_sub(l)
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    CgroupError::Invalid(format!(
                        "memory+swap {s} is less than the memory limit {l}"
                    ))
                })?
                .to_string(),
            (s, _) => s.to_string(),
        };
        let file = dir.join("memory.swap.max");
        if !file.exists() {
            return Err(CgroupError::MissingController {
                controller: "memory swap accounting".into(),
                flag: "--memory-swap".into(),
                why: format!("{} is missing", file.display()),
            });
        }
        fs::write(&file, &v)?;
    }
    Ok(())
}

/// cpu.weight from v1 shares, with the conversion runc and crun use (2..262144 → 1..10000).
pub(super) fn weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

pub(super) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares() {
        fs::write(&dir.join("cpu.weight"), &weight(s).to_string())?;
    }
    if c.quota().is_some() || c.period().is_some() {
        let period = c.period().unwrap_or(100_000);
        let quota = match c.quota() {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        fs::write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    Ok(())
}

pub(super) fn cpuset(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = c.cpus() {
        fs::write(&dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(mems) = c.mems() {
        fs::write(&dir.join("cpuset.mems"), mems)?;
    }
    Ok(())
}

pub(super) fn pids_max(dir: &Path, limit: i64) -> Result<(), CgroupError> {
    let v = if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    };
    fs::write(&dir.join("pids.max"), &v)
}

/// The `unified` map of the OCI spec: raw v2 file writes. Keys must be plain file names.
pub(super) fn unified(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
        return Err(CgroupError::Invalid(format!(
            "unified key {key:?} is not a cgroup file name"
        )));
    }
    fs::write(&dir.join(key), value)
}

/// The v2 files and units, written into a directory standing in for a group (this host's
/// cgroup2 mount carries no memory, cpu or pids controller, so the kernel side is exercised
/// by the v1 tests; these check what the conversions write).
#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder};

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn memory_limits_in_v2_units() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("memory.swap.max"), "").unwrap();
        let m = LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .reservation(32i64 << 20)
            .swap(96i64 << 20)
            .build()
            .unwrap();
        memory(t.path(), &m).unwrap();
        assert_eq!(read(t.path(), "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(t.path(), "memory.low"), (32u64 << 20).to_string());
        // OCI's swap counts memory too; v2's memory.swap.max is the swap alone.
        assert_eq!(read(t.path(), "memory.swap.max"), (32u64 << 20).to_string());
        let unlimited = LinuxMemoryBuilder::default()
            .limit(-1)
            .swap(-1)
            .build()
            .unwrap();
        memory(t.path(), &unlimited).unwrap();
        assert_eq!(read(t.path(), "memory.max"), "max");
        assert_eq!(read(t.path(), "memory.swap.max"), "max");
        let less = LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .swap(1i64 << 20)
            .build()
            .unwrap();
        assert!(memory(t.path(), &less).is_err());
        // No swap accounting: the flag is refused, naming the file.
        let t2 = tempfile::tempdir().unwrap();
        let e = memory(t2.path(), &m).unwrap_err().to_string();
        assert!(e.contains("memory.swap.max"), "{e}");
    }

    #[test]
    fn cpu_and_pids_in_v2_units() {
        let t = tempfile::tempdir().unwrap();
        let c = LinuxCpuBuilder::default()
            .quota(50_000i64)
            .period(100_000u64)
            .shares(1024u64)
            .build()
            .unwrap();
        cpu(t.path(), &c).unwrap();
        assert_eq!(read(t.path(), "cpu.max"), "50000 100000");
        assert_eq!(read(t.path(), "cpu.weight"), "39");
        let no_quota = LinuxCpuBuilder::default()
            .period(100_000u64)
            .build()
            .unwrap();
        cpu(t.path(), &no_quota).unwrap();
        assert_eq!(read(t.path(), "cpu.max"), "max 100000");
        assert_eq!((weight(0), weight(2), weight(262_144)), (100, 1, 10_000));
        pids_max(t.path(), 10).unwrap();
        assert_eq!(read(t.path(), "pids.max"), "10");
        pids_max(t.path(), 0).unwrap();
        assert_eq!(read(t.path(), "pids.max"), "max");
    }
}

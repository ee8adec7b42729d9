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

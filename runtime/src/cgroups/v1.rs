//! cgroup v1 files: one directory per controller hierarchy, limits in bytes and microseconds.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory};

use super::fs;
use super::CgroupError;

/// cpuset refuses tasks until cpus and mems are set; a new group starts empty, so copy the
/// parent's (as runc does) for every level we created.
pub(super) fn init_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if fs::read(&own, fs::SMALL)?.trim().is_empty() {
            let from = fs::read(&parent.join(file), fs::SMALL)?;
            fs::write(&own, from.trim())?;
        }
    }
    Ok(())
}

/// `-1` (or a missing value) means unlimited in OCI; v1 takes -1 too.
pub(super) fn memory(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    if let Some(r) = m.reservation() {
        fs::write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
    }
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    match (m.limit(), m.swap()) {
        (Some(limit), Some(swap)) => {
            if !memsw_file.exists() {
                return Err(CgroupError::MissingController {
                    controller: "memory swap accounting".into(),
                    flag: "--memory-swap".into(),
                    why: format!(
                        "{} is missing (boot with swapaccount=1)",
                        memsw_file.display()
                    ),
                });
            }
            // memsw must stay >= limit at every step: raise memsw first when growing.
            if fs::write(&limit_file, &limit.to_string()).is_err() {
                fs::write(&memsw_file, &swap.to_string())?;
                fs::write(&limit_file, &limit.to_string())?;
            } else {
                fs::write(&memsw_file, &swap.to_string())?;
            }
        }
        (Some(limit), None) => fs::write(&limit_file, &limit.to_string())?,
        (None, Some(swap)) => fs::write(&memsw_file, &swap.to_string())?,
        (None, None) => {}
    }
    if let Some(s) = m.swappiness() {
        fs::write(&dir.join("memory.swappiness"), &s.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        fs::write(&dir.join("memory.oom_control"), "1")?;
    }
    Ok(())
}

pub(super) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares() {
        fs::write(&dir.join("cpu.shares"), &s.to_string())?;
    }
    // The period first: a quota is checked against the period in force.
    if let Some(p) = c.period() {
        fs::write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
    }
    if let Some(q) = c.quota() {
        let q = if q <= 0 { -1 } else { q };
        fs::write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
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

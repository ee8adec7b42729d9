//! Small helpers for cgroupfs files: every read capped, every error naming the file.

use std::path::Path;

use super::CgroupError;

/// cgroup control files hold a few numbers; cgroup.procs of a huge group is the largest we read.
pub(super) const SMALL: u64 = 64 << 10;
pub(super) const PROCS: u64 = 16 << 20;

pub(super) fn io(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn read(path: &Path, cap: u64) -> Result<String, CgroupError> {
    super::detect::read_capped(path, cap)
}

pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io(path, e))
}

pub(super) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.display().to_string(),
        problem: format!("expected a number, found {:?}", truncate(text.trim())),
    })
}

/// A number, or `None` for "max" (v2) / the "unlimited" huge value (v1).
pub(super) fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let v = parse_u64(path, t)?;
    // v1 reports "no limit" as PAGE_COUNTER_MAX in bytes (about 2^63 rounded to pages).
    Ok(if v >= 1 << 62 { None } else { Some(v) })
}

/// The value of `key` in a flat keyed file ("usage_usec 123", "frozen 1").
pub(super) fn keyed(path: &Path, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            return it.next().map(|v| parse_u64(path, v)).transpose();
        }
    }
    Ok(None)
}

pub(super) fn pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = read(path, PROCS)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.display().to_string(),
                problem: format!("not a pid: {:?}", truncate(l)),
            })
        })
        .collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

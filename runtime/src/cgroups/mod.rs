//! cgroups v1, v2 and hybrid. INTERFACE ONLY until the cgroups work lands: `manager_for` refuses.
//!
//! Every container gets one group (per v1 controller, or one v2 directory) under a parent of
//! decant's own (`decant/<id>`), removed when the container goes.

use oci_spec::runtime::LinuxResources;

/// Why a cgroup operation failed; one line naming the file it touched.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroups: {0}")]
    Unsupported(String),
}

/// Resource usage read from the cgroup files (`decant stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
}

/// One container's cgroup(s).
pub trait CgroupManager: Send + Sync {
    /// Creates the group(s); idempotent.
    fn create(&self) -> Result<(), CgroupError>;
    /// Moves `pid` into the group(s).
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    /// Writes memory, cpu and pids limits.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    fn freeze(&self) -> Result<(), CgroupError>;
    fn thaw(&self) -> Result<(), CgroupError>;
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// Every process in the group(s).
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Removes the group(s); the processes must be gone.
    fn destroy(&self) -> Result<(), CgroupError>;
    /// The path to join for exec (`/sys/fs/cgroup/...`), per hierarchy.
    fn paths(&self) -> Vec<std::path::PathBuf>;
}

/// The manager for container `id` on this host (v1, v2 or hybrid, detected).
pub fn manager_for(id: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    Err(CgroupError::Unsupported(format!("container {id}: cgroup support is not built yet")))
}

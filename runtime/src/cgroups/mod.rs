//! cgroups v1, v2 and hybrid.
//!
//! Every container gets one group (per v1 controller, or one v2 directory) under a parent of
//! decant's own (`decant/<id>`), removed when the container goes. The layout is detected from
//! /proc/self/mountinfo ([`detect`]); one manager ([`hybrid::Manager`]) serves all three
//! layouts by taking each controller from the hierarchy that carries it.
//!
//! Rootless on cgroup v1 (no hierarchy writable): the manager does nothing, and only the
//! operations that need a group (a limit, pause, stats, ps) fail, with a message saying why.
//! On v2 the device allow-list is not enforced (it needs an eBPF program; see
//! `security::devices`). blockIO, hugepage, network and rdma resources are refused.

pub mod detect;
mod fs;
pub mod hybrid;
mod v1;
mod v2;

use oci_spec::runtime::LinuxResources;

pub use detect::{Layout, Mode};
pub use hybrid::Manager;

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
    #[error("{path}: {problem}")]
    Parse { path: String, problem: String },
    #[error("{controller} controller not available: cannot set {flag} ({why})")]
    MissingController {
        controller: String,
        flag: String,
        why: String,
    },
    #[error("{path}: still holds {procs} process(es); stop the container first")]
    Busy { path: String, procs: usize },
    #[error("{path}: {what}")]
    Timeout { path: String, what: String },
    #[error("cgroups: {0}")]
    Invalid(String),
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
    /// The files a single-threaded process writes "0" to, to move itself into the group(s):
    /// `tasks` on v1, `cgroup.procs` on v2. A thread moving itself through v1's `tasks` spares
    /// the kernel its global threadgroup lock, whose first writer after a quiet spell waits a
    /// whole RCU grace period (about 5 ms here: the largest single cost of a container start
    /// when the runtime writes the child's pid into `cgroup.procs`, as runc and crun do).
    fn self_join_files(&self) -> Vec<std::path::PathBuf>;
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
    let layout = Layout::detect()?;
    Ok(Box::new(Manager::new(id, &layout)?))
}

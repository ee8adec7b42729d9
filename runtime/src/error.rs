//! The runtime's error type. Every variant renders as one line naming the container or file,
//! the step, and what went wrong, so the CLI can print it as is; `exit_code` maps it to the
//! Docker convention (125 runtime error, 126 not executable, 127 not found).

use std::path::Path;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or directory of the runtime (state dir, bundle, fifo) could not be used.
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The bundle's config.json is unusable.
    #[error("{path}: {problem}")]
    Spec { path: String, problem: String },
    /// The container does not exist, exists already, or is in the wrong state.
    #[error("container {id}: {problem}")]
    Container { id: String, problem: String },
    /// A stored state file is damaged.
    #[error("{path}: state: {problem}")]
    State { path: String, problem: String },
    /// The container's process failed while setting itself up or could not exec; `code` is
    /// 126 (not executable), 127 (not found) or 125 (anything else).
    #[error("container {id}: {message}")]
    Init {
        id: String,
        code: i32,
        message: String,
    },
    /// The container asked for resource limits and its cgroup could not be made.
    #[error("container {id}: {source}")]
    Cgroup {
        id: String,
        #[source]
        source: crate::cgroups::CgroupError,
    },
    /// A system call of the runtime itself (not the container's) failed.
    #[error("container {id}: {op}: {errno}")]
    Sys {
        id: String,
        op: String,
        errno: nix::errno::Errno,
    },
}

impl RuntimeError {
    /// The exit status a Docker-like CLI reports for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Init { code, .. } => *code,
            _ => 125,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, op: &'static str, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.as_ref().display().to_string(),
            op,
            source,
        }
    }

    pub(crate) fn container(id: &str, problem: impl Into<String>) -> Self {
        RuntimeError::Container {
            id: id.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn sys(id: &str, op: impl Into<String>, errno: nix::errno::Errno) -> Self {
        RuntimeError::Sys {
            id: id.to_string(),
            op: op.into(),
            errno,
        }
    }
}

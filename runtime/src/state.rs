//! What the runtime remembers about a container between commands, and how it decides the
//! container's status from that record and /proc.
//!
//! The process that created a container exits long before the container does, so the status
//! cannot live in memory: the record stores the init pid together with its start time (field 22
//! of /proc/<pid>/stat), and a pid whose start time differs has been recycled by some other
//! process, which makes the container "stopped". "created" is told from "running" by the
//! exec fifo: it exists until `start` has released the init process.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{ContainerState, State};
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// The state file's name inside a container's state directory.
pub(crate) const STATE_FILE: &str = "state.json";
/// The fifo the init process blocks on until `start`.
pub(crate) const EXEC_FIFO: &str = "exec.fifo";
/// The container's config.json, copied byte for byte at create time (exec needs its seccomp
/// profile even if the bundle changes later).
pub(crate) const CONFIG_COPY: &str = "config.json";

/// A state file larger than this is not ours: refuse it rather than read it.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// The on-disk record of one container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    /// Host pid of the container's init; 0 while it is being created.
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat when the init was recorded.
    pub start_time: u64,
    /// The process running `create`, to tell a create in progress from a crashed one.
    pub creator_pid: i32,
    pub creator_start_time: u64,
    /// Whether a cgroup was made for the container (and must be removed with it).
    pub cgroup: bool,
    /// Whether the container has a pid namespace of its own (killing init kills everything).
    pub own_pid_ns: bool,
    /// Seconds since the epoch when created.
    pub created: u64,
}

/// A process as /proc shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Reads state (field 3) and start time (field 22) of `pid` from /proc/<pid>/stat; `None` when
/// the process does not exist.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// The command name (field 2) may hold spaces and parentheses: the fields after it start after
/// the LAST ')'.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was just read; field 22 is 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Whether `pid` is still the process that had `start_time`, and not a zombie.
pub(crate) fn is_alive(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some(s) => s.start_time == start_time && s.state != 'Z' && s.state != 'X',
        None => false,
    }
}

impl Record {
    /// The container's status, decided from /proc and the fifo.
    pub fn status(&self, dir: &Path) -> ContainerState {
        if self.pid == 0 {
            return if is_alive(self.creator_pid, self.creator_start_time) {
                ContainerState::Creating
            } else {
                ContainerState::Stopped
            };
        }
        if !is_alive(self.pid, self.start_time) {
            return ContainerState::Stopped;
        }
        if dir.join(EXEC_FIFO).exists() {
            ContainerState::Created
        } else {
            ContainerState::Running
        }
    }

    /// The OCI state document for this record.
    pub fn to_state(&self, dir: &Path) -> State {
        let status = self.status(dir);
        let mut st = State::default();
        st.set_version(self.oci_version.clone());
        st.set_id(self.id.clone());
        st.set_status(status);
        // Like runc: a stopped container has no pid to show.
        let pid = (status != ContainerState::Stopped && self.pid > 0).then_some(self.pid);
        st.set_pid(pid);
        st.set_bundle(self.bundle.clone());
        st.set_annotations(self.annotations.clone());
        st
    }

    /// Loads `dir/state.json`, refusing oversized or malformed files.
    pub fn load(dir: &Path) -> Result<Record, RuntimeError> {
        use std::io::Read;
        let path = dir.join(STATE_FILE);
        let file = std::fs::File::open(&path).map_err(|e| RuntimeError::io(&path, "open", e))?;
        let mut text = Vec::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| RuntimeError::io(&path, "read", e))?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return Err(RuntimeError::State {
                path: path.display().to_string(),
                problem: format!("larger than {MAX_STATE_BYTES} bytes"),
            });
        }
        serde_json::from_slice(&text).map_err(|e| RuntimeError::State {
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    }

    /// Writes `dir/state.json` atomically (temp file + rename), so a reader never sees half.
    pub fn save(&self, dir: &Path) -> Result<(), RuntimeError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| RuntimeError::State {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| RuntimeError::io(&tmp, "create", e))?;
        f.write_all(&bytes)
            .map_err(|e| RuntimeError::io(&tmp, "write", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| RuntimeError::io(&path, "rename", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_command_name() {
        let line =
            "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let s = parse_proc_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_proc_stat("1234 (x) S 1 2 3"), None);
        assert_eq!(parse_proc_stat("no paren"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn own_process_is_alive_and_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).unwrap();
        assert!(is_alive(me, st.start_time));
        assert!(!is_alive(me, st.start_time + 1));
        assert!(!is_alive(0, 0));
    }

    #[test]
    fn damaged_state_file_is_an_error() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{\"ociVersion\": 3").unwrap();
        let e = Record::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json: state:"), "{e}");
        assert!(!e.contains('\n'));
    }
}

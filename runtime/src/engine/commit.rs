//! What `commit`, `diff`, `export`, `snapshot` and `restore` need from a container: where its
//! changes (the overlay upper dir) and its image layers are, which of its paths are mounts
//! that must stay out of an image, the freezer held around the commit, and its run
//! configuration in a form that can travel inside an image (a label) and come back as a new
//! container. The image side lives in `snapshot::commit`; this crate knows no image format.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ops::freezer_frozen;
use super::{Container, ContainerConfig, Engine, EngineError, Status};
use crate::cgroups;

/// The image label holding a snapshot's run configuration (`SavedRun` as JSON).
pub const RUN_CONFIG_LABEL: &str = "io.decant.run-config";
/// The image label naming the container a snapshot was taken of (its name).
pub const SNAPSHOT_OF_LABEL: &str = "io.decant.snapshot.container";
/// A run configuration label larger than this is refused as damaged.
pub const MAX_RUN_CONFIG: usize = 256 << 10;

/// A container's filesystem as a commit reads it.
#[derive(Debug, Clone)]
pub struct CommitSource {
    pub container: Container,
    /// The overlay upper dir: every change the container made.
    pub upper: PathBuf,
    /// The image's unpacked layers, bottom first.
    pub lower_dirs: Vec<PathBuf>,
    /// Absolute container paths that are mounts (binds, tmpfs, decant's /etc/hosts,
    /// /etc/hostname, /etc/resolv.conf): not the container's own changes.
    pub exclude: Vec<String>,
    /// The merged overlay mount (mounted while the container runs).
    pub merged: PathBuf,
}

/// File in the container's directory naming the pid of a commit that holds it frozen, so a
/// commit killed with SIGKILL (no chance to thaw) is told apart from a user's `pause`.
const FREEZE_MARK: &str = "commit-frozen";

/// The freezer held for a commit; thaws on drop.
pub struct Frozen {
    id: String,
    mark: PathBuf,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Ok(m) = cgroups::manager_for(&self.id) {
            let _ = m.thaw();
        }
        let _ = std::fs::remove_file(&self.mark);
    }
}

/// Whether the freeze mark names a live process (a commit still running).
fn mark_alive(mark: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(mark) else {
        return false;
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// A container's run configuration without what is specific to this host's store (the
/// unpacked layer paths, the image id, the path of decant-init).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub config: ContainerConfig,
    /// `--init` was given.
    #[serde(default)]
    pub init: bool,
}

impl SavedRun {
    pub fn of(c: &Container) -> SavedRun {
        let mut config = c.config.clone();
        config.name = Some(c.name.clone());
        config.lower_dirs.clear();
        config.image_id.clear();
        let init = config.init.take().is_some();
        SavedRun { config, init }
    }

    pub fn to_json(&self) -> Result<String, EngineError> {
        serde_json::to_string(self)
            .map_err(|e| EngineError::Invalid(format!("run configuration: {e}")))
    }

    /// Reads the label's JSON; `image` names the snapshot in the message.
    pub fn from_json(image: &str, s: &str) -> Result<SavedRun, EngineError> {
        if s.len() > MAX_RUN_CONFIG {
            return Err(EngineError::Invalid(format!(
                "image {image}: label {RUN_CONFIG_LABEL}: {} bytes, over the {MAX_RUN_CONFIG}-byte cap",
                s.len()
            )));
        }
        serde_json::from_str(s).map_err(|e| {
            EngineError::Invalid(format!("image {image}: label {RUN_CONFIG_LABEL}: {e}"))
        })
    }
}

impl Engine {
    /// Where container `key`'s changes and layers are.
    pub fn commit_source(&self, key: &str) -> Result<CommitSource, EngineError> {
        let c = self.find(key)?;
        let dir = self.container_dir(&c.id)?;
        if super::copyroot::existing(&dir).is_some() {
            // Its changes are mixed into the copy: no upper dir holds them apart.
            return Err(EngineError::Invalid(format!(
                "container {}: runs on a copy of its layers (rootless, overlay refused); commit, diff, export and snapshot need its overlay upper dir",
                c.name
            )));
        }
        let mut exclude: Vec<String> = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        exclude.extend(c.config.binds.iter().map(|b| b.container.clone()));
        // Named and anonymous volumes are not part of the image, as Docker.
        exclude.extend(c.config.volumes.iter().map(|v| v.container.clone()));
        exclude.extend(c.config.tmpfs.iter().cloned());
        Ok(CommitSource {
            upper: dir.join("upper"),
            lower_dirs: c.config.lower_dirs.clone(),
            exclude,
            merged: self.merged_dir(&c.id),
            container: c,
        })
    }

    /// Freezes a running container for a commit (Docker's default `--pause`); `None` when
    /// there is nothing to freeze (not running) or it is paused already (it stays paused).
    /// A freeze left by a commit that was killed is taken over (and thawed at the end).
    pub fn freeze_for_commit(&self, c: &Container) -> Result<Option<Frozen>, EngineError> {
        let mark = self.container_dir(&c.id)?.join(FREEZE_MARK);
        let left_by_dead_commit = mark.exists() && !mark_alive(&mark);
        if c.status != Status::Running || (freezer_frozen(&c.id) && !left_by_dead_commit) {
            return Ok(None);
        }
        let m = cgroups::manager_for(&c.id)
            .map_err(|e| EngineError::Invalid(format!("container {}: {e}", c.name)))?;
        std::fs::write(&mark, std::process::id().to_string())
            .map_err(super::io_err(&mark, "write"))?;
        let frozen = Frozen {
            id: c.id.clone(),
            mark,
        };
        m.freeze()
            .map_err(|e| EngineError::Invalid(format!("container {}: {e}", c.name)))?;
        Ok(Some(frozen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_run_drops_host_paths_and_round_trips() {
        let c = Container {
            id: "a".repeat(64),
            name: "game".into(),
            config: ContainerConfig {
                image: "ex".into(),
                image_id: "sha256:00".into(),
                lower_dirs: vec!["/var/lib/decant/x".into()],
                cmd: vec!["sh".into()],
                env: vec!["A=1".into()],
                init: Some("/usr/lib/decant/decant-init".into()),
                ..ContainerConfig::default()
            },
            created: 0,
            status: Status::Exited,
            pid: 0,
            monitor_pid: 0,
            monitor_start: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            ports: vec![],
            restart_count: 0,
            oom_killed: false,
        };
        let s = SavedRun::of(&c);
        assert!(s.init);
        assert!(s.config.lower_dirs.is_empty() && s.config.init.is_none());
        assert_eq!(s.config.name.as_deref(), Some("game"));
        let back = SavedRun::from_json("img", &s.to_json().unwrap()).unwrap();
        assert_eq!(back, s);
        let e = SavedRun::from_json("img", "{").unwrap_err().to_string();
        assert!(e.contains(RUN_CONFIG_LABEL) && !e.contains('\n'), "{e}");
    }
}

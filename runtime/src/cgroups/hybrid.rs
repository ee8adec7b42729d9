//! The one manager for v1, v2 and hybrid hosts: each controller is served by the hierarchy
//! that carries it (a v1 mount of its own, or the cgroup2 mount), so a hybrid host such as
//! this one (v1 controllers, a cgroup2 mount holding only hugetlb) needs no special case.
//!
//! Groups live at `<base>/decant/<id>` in every hierarchy, where `<base>` is the topmost
//! directory between the mount's root and our own cgroup that we may write: the root for real
//! root, the delegated subtree (e.g. `user@1000.service`) for a rootless user on v2. A
//! hierarchy with no writable directory is left out; when that leaves nothing (rootless on v1)
//! the manager does nothing and refuses only the operations that need a group (limits, pause,
//! stats).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::detect::{Hierarchy, Layout, Mode, Version};
use super::{fs, v1, v2, CgroupError, CgroupManager, Stats};

/// One directory of the container's group.
#[derive(Debug, Clone)]
struct Group {
    version: Version,
    /// `<base>/decant/<id>`.
    dir: PathBuf,
    /// v1: the controllers of its hierarchy.
    controllers: Vec<String>,
}

/// The container's groups on this host.
#[derive(Debug)]
pub struct Manager {
    id: String,
    mode: Mode,
    groups: Vec<Group>,
    /// Why some hierarchies were left out (for error messages).
    left_out: Vec<String>,
}

/// How long freeze/thaw waits for the state to read back, and destroy for a busy group.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
/// Nested groups made inside the container (by systemd, say) are removed too, within bounds.
const MAX_NESTED: usize = 10_000;
const MAX_DEPTH: usize = 32;

fn can_write(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// The topmost writable directory from the mount point down to our own cgroup.
fn base_for(h: &Hierarchy) -> Option<PathBuf> {
    if can_write(&h.mount_point) {
        return Some(h.mount_point.clone());
    }
    let own = h.own_dir()?;
    let rel = own.strip_prefix(&h.mount_point).ok()?;
    let mut dir = h.mount_point.clone();
    for part in rel.components() {
        dir.push(part);
        if can_write(&dir) {
            return Some(dir);
        }
    }
    None
}

/// Container ids become directory names: keep them plain.
fn check_id(id: &str) -> Result<(), CgroupError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::Invalid(format!(
            "container id {id:?} cannot name a cgroup"
        )))
    }
}

impl Manager {
    /// The manager for container `id` on the given layout.
    pub fn new(id: &str, layout: &Layout) -> Result<Manager, CgroupError> {
        check_id(id)?;
        let mode = layout.mode();
        let mut groups = Vec::new();
        let mut left_out = Vec::new();
        for h in &layout.hierarchies {
            // Named v1 hierarchies (systemd's) carry no controller: not ours to populate.
            if h.version == Version::V1 && h.controllers.is_empty() {
                continue;
            }
            let label = match h.version {
                Version::V1 => h.controllers.join(","),
                Version::V2 => "cgroup2".to_string(),
            };
            match base_for(h) {
                Some(base) => groups.push(Group {
                    version: h.version,
                    dir: base.join("decant").join(id),
                    controllers: h.controllers.clone(),
                }),
                None => left_out.push(format!(
                    "{label} hierarchy at {} is not writable by uid {}",
                    h.mount_point.display(),
                    nix::unistd::geteuid()
                )),
            }
        }
        Ok(Manager {
            id: id.to_string(),
            mode,
            groups,
            left_out,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The group serving `controller`: its v1 hierarchy, else the v2 group when it offers it.
    fn group_for(&self, controller: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.version == Version::V1 && g.controllers.iter().any(|c| c == controller))
            .or_else(|| {
                self.groups.iter().find(|g| {
                    g.version == Version::V2
                        && v2::controllers(&g.dir).iter().any(|c| c == controller)
                })
            })
    }

    fn v2_group(&self) -> Option<&Group> {
        self.groups.iter().find(|g| g.version == Version::V2)
    }

    fn missing(&self, controller: &str, flag: &str) -> CgroupError {
        let why = if self.groups.is_empty() && !self.left_out.is_empty() {
            format!(
                "{}; rootless containers on cgroup v1 run without limits",
                self.left_out.join("; ")
            )
        } else {
            format!("container {}: no cgroup hierarchy here offers it", self.id)
        };
        CgroupError::MissingController {
            controller: controller.into(),
            flag: flag.into(),
            why,
        }
    }

    fn need(&self, controller: &str, flag: &str) -> Result<&Group, CgroupError> {
        self.group_for(controller)
            .ok_or_else(|| self.missing(controller, flag))
    }

    fn create_group(g: &Group) -> Result<(), CgroupError> {
        let parent = g
            .dir
            .parent()
            .ok_or_else(|| CgroupError::Invalid(format!("{}: no parent", g.dir.display())))?;
        let base = parent
            .parent()
            .ok_or_else(|| CgroupError::Invalid(format!("{}: no parent", parent.display())))?;
        let cpuset = g.version == Version::V1 && g.controllers.iter().any(|c| c == "cpuset");
        for (dir, above) in [(parent, base), (g.dir.as_path(), parent)] {
            if g.version == Version::V2 {
                v2::enable_subtree(above);
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fs::io(dir, e)),
            }
            if cpuset {
                v1::init_cpuset(dir)?;
            }
        }
        Ok(())
    }

    /// Writes `value` to the freezer and waits until `done` reads back.
    fn freezer(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value, state_file, done): (PathBuf, &str, PathBuf, &str) = if let Some(g) = self
            .groups
            .iter()
            .find(|g| g.version == Version::V1 && g.controllers.iter().any(|c| c == "freezer"))
        {
            let f = g.dir.join("freezer.state");
            (
                f.clone(),
                if frozen { "FROZEN" } else { "THAWED" },
                f,
                if frozen { "FROZEN" } else { "THAWED" },
            )
        } else if let Some(g) = self
            .v2_group()
            .filter(|g| g.dir.join("cgroup.freeze").exists())
        {
            (
                g.dir.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                g.dir.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            )
        } else {
            return Err(self.missing("freezer", if frozen { "pause" } else { "unpause" }));
        };
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            // v1 may stop in FREEZING while tasks are busy: writing again retries them.
            fs::write(&file, value)?;
            let state = fs::read(&state_file, fs::SMALL)?;
            if state.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            if start.elapsed() > FREEZE_TIMEOUT {
                if frozen {
                    let _ = self.freezer(false);
                }
                return Err(CgroupError::Timeout {
                    path: state_file.display().to_string(),
                    what: format!("did not reach {done:?} within {FREEZE_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Removes `dir` and the groups nested in it, deepest first.
    fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
        let mut order = Vec::new();
        let mut stack = vec![(dir.to_path_buf(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            if order.len() >= MAX_NESTED || depth > MAX_DEPTH {
                return Err(CgroupError::Invalid(format!(
                    "{}: more than {MAX_NESTED} nested groups or deeper than {MAX_DEPTH}",
                    dir.display()
                )));
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
            order.push(d);
        }
        for d in order.iter().rev() {
            Self::rmdir(d)?;
        }
        Ok(())
    }

    fn rmdir(dir: &Path) -> Result<(), CgroupError> {
        let start = Instant::now();
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    // Live processes: say so at once. An empty but busy group is a task still
                    // exiting, which leaves a moment after it is reaped: retry briefly.
                    let procs = fs::pids(&dir.join("cgroup.procs")).unwrap_or_default();
                    if !procs.is_empty() {
                        return Err(CgroupError::Busy {
                            path: dir.display().to_string(),
                            procs: procs.len(),
                        });
                    }
                    if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > RMDIR_TIMEOUT {
                        return Err(fs::io(dir, e));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

impl CgroupManager for Manager {
    fn create(&self) -> Result<(), CgroupError> {
        self.groups.iter().try_for_each(Self::create_group)
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for g in &self.groups {
            fs::write(&g.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn self_join_files(&self) -> Vec<PathBuf> {
        self.groups
            .iter()
            .map(|g| match g.version {
                Version::V1 => g.dir.join("tasks"),
                Version::V2 => g.dir.join("cgroup.procs"),
            })
            .collect()
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(m) = r.memory() {
            let asked = m.limit().is_some() || m.swap().is_some() || m.reservation().is_some();
            if asked || m.swappiness().is_some() || m.disable_oom_killer().is_some() {
                let g = self.need("memory", "--memory")?;
                match g.version {
                    Version::V1 => v1::memory(&g.dir, m)?,
                    Version::V2 => v2::memory(&g.dir, m)?,
                }
            }
        }
        if let Some(c) = r.cpu() {
            if c.shares().is_some() || c.quota().is_some() || c.period().is_some() {
                let g = self.need("cpu", "--cpus")?;
                match g.version {
                    Version::V1 => v1::cpu(&g.dir, c)?,
                    Version::V2 => v2::cpu(&g.dir, c)?,
                }
            }
            if c.cpus().is_some() || c.mems().is_some() {
                let g = self.need("cpuset", "--cpuset-cpus")?;
                match g.version {
                    Version::V1 => v1::cpuset(&g.dir, c)?,
                    Version::V2 => v2::cpuset(&g.dir, c)?,
                }
            }
        }
        if let Some(p) = r.pids() {
            let g = self.need("pids", "--pids-limit")?;
            match g.version {
                Version::V1 => v1::pids_max(&g.dir, p.limit())?,
                Version::V2 => v2::pids_max(&g.dir, p.limit())?,
            }
        }
        if let Some(devices) = r.devices() {
            // v1 only; on v2 the list is not enforced (see security::devices). Rootless v1 has
            // no devices group either, and the container cannot mknod anyway.
            if let Some(g) = self
                .groups
                .iter()
                .find(|g| g.version == Version::V1 && g.controllers.iter().any(|c| c == "devices"))
            {
                for d in devices {
                    let line = crate::security::devices::v1_line(d)
                        .map_err(|p| CgroupError::Invalid(format!("{}: {p}", g.dir.display())))?;
                    let file = if d.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    fs::write(&g.dir.join(file), &line)?;
                }
            }
        }
        if let Some(map) = r.unified().as_ref().filter(|m| !m.is_empty()) {
            let g = self
                .v2_group()
                .ok_or_else(|| self.missing("cgroup2", "unified"))?;
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            for k in keys {
                if let Some(v) = map.get(k) {
                    v2::unified(&g.dir, k, v)?;
                }
            }
        }
        let unsupported = [
            (
                "blockIO",
                r.block_io()
                    .as_ref()
                    .is_some_and(|b| *b != Default::default()),
            ),
            (
                "hugepageLimits",
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            ),
            (
                "network",
                r.network()
                    .as_ref()
                    .is_some_and(|n| *n != Default::default()),
            ),
            ("rdma", r.rdma().as_ref().is_some_and(|m| !m.is_empty())),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CgroupError::Unsupported(format!(
                "container {}: resources.{name} is not supported by decant",
                self.id
            )));
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.freezer(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.freezer(false)
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        if self.groups.is_empty() {
            return Err(self.missing("memory", "stats"));
        }
        let mut s = Stats::default();
        if let Some(g) = self.group_for("memory") {
            let (usage, limit) = match g.version {
                Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
                Version::V2 => ("memory.current", "memory.max"),
            };
            let p = g.dir.join(usage);
            s.memory_usage = fs::parse_u64(&p, &fs::read(&p, fs::SMALL)?)?;
            let p = g.dir.join(limit);
            s.memory_limit = fs::parse_limit(&p, &fs::read(&p, fs::SMALL)?)?;
        }
        let cpuacct = self
            .groups
            .iter()
            .find(|g| g.version == Version::V1 && g.controllers.iter().any(|c| c == "cpuacct"));
        if let Some(g) = cpuacct {
            let p = g.dir.join("cpuacct.usage");
            s.cpu_usage_ns = fs::parse_u64(&p, &fs::read(&p, fs::SMALL)?)?;
        } else if let Some(g) = self.v2_group() {
            // cpu.stat exists in every v2 group, with or without the cpu controller.
            let p = g.dir.join("cpu.stat");
            let usec = fs::keyed(&p, &fs::read(&p, fs::SMALL)?, "usage_usec")?.unwrap_or(0);
            s.cpu_usage_ns = usec.saturating_mul(1000);
        }
        if let Some(g) = self.group_for("pids") {
            let p = g.dir.join("pids.current");
            s.pids_current = fs::parse_u64(&p, &fs::read(&p, fs::SMALL)?)?;
            let p = g.dir.join("pids.max");
            s.pids_limit = fs::parse_limit(&p, &fs::read(&p, fs::SMALL)?)?;
        }
        Ok(s)
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(g) = self.groups.first() else {
            return Err(self.missing("any", "ps/top"));
        };
        let mut all = fs::pids(&g.dir.join("cgroup.procs"))?;
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        // Every hierarchy is tried; the first failure is reported.
        let mut first = None;
        for g in &self.groups {
            if let Err(e) = Self::remove_tree(&g.dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.groups.iter().map(|g| g.dir.clone()).collect()
    }
}

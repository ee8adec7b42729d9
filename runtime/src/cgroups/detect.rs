//! Finds the cgroup hierarchies of this host (v1, v2 or both: "hybrid") from
//! /proc/self/mountinfo, and our own position in each from /proc/self/cgroup.
//!
//! We parse these files ourselves: they are small line formats and no crate in our tree reads
//! them. The kernel writes them, but we still treat them as untrusted text: malformed lines
//! are skipped, never indexed blindly.

use std::path::{Path, PathBuf};

/// The version of one hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The host's layout as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies (no cgroup2 mount).
    V1,
    /// One cgroup2 mount and no v1 controller hierarchy.
    V2,
    /// v1 controller hierarchies next to a cgroup2 mount (often holding no controllers).
    Hybrid,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Where it is mounted (`/sys/fs/cgroup/memory`).
    pub mount_point: PathBuf,
    /// The cgroup path the mount shows as its root (`/` unless bind-mounted or namespaced).
    pub mount_root: String,
    /// v1: the controllers of the mount ("cpu", "cpuacct", ...); v2: empty here, the manager
    /// reads `cgroup.controllers` where it places its groups.
    pub controllers: Vec<String>,
    /// v1: `name=` of a named hierarchy (systemd's), which has no controllers.
    pub name: Option<String>,
    /// Our own cgroup in this hierarchy, as /proc/self/cgroup shows it.
    pub own_path: Option<String>,
}

impl Hierarchy {
    /// The directory of our own cgroup, when /proc/self/cgroup names one inside this mount.
    pub fn own_dir(&self) -> Option<PathBuf> {
        let own = self.own_path.as_deref()?;
        let rel = if self.mount_root == "/" {
            own
        } else {
            let rest = own.strip_prefix(self.mount_root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return None;
        }
        Some(if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        })
    }
}

/// Every cgroup hierarchy mounted here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
}

/// At most this many bytes are read from /proc/self/mountinfo (a host with tens of thousands
/// of mounts is still far below it).
const MAX_MOUNTINFO: u64 = 16 << 20;

impl Layout {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Layout, super::CgroupError> {
        let mountinfo = read_capped(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO)?;
        let cgroup = read_capped(Path::new("/proc/self/cgroup"), 1 << 20)?;
        Ok(Layout::parse(&mountinfo, &cgroup))
    }

    /// The layout described by a mountinfo text and a /proc/<pid>/cgroup text.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Layout {
        let own = parse_proc_cgroup(proc_cgroup);
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for line in mountinfo.lines() {
            let Some(mut h) = parse_mount(line) else {
                continue;
            };
            // A hierarchy mounted twice (bind mounts): keep the first.
            if hierarchies.iter().any(|o| {
                o.version == h.version && o.controllers == h.controllers && o.name == h.name
            }) {
                continue;
            }
            h.own_path = own
                .iter()
                .find(|(ctrls, _)| match h.version {
                    Version::V2 => ctrls.is_empty(),
                    Version::V1 => {
                        let mut want: Vec<String> = h.controllers.clone();
                        if let Some(n) = &h.name {
                            want.push(format!("name={n}"));
                        }
                        want.sort();
                        !ctrls.is_empty() && *ctrls == want
                    }
                })
                .map(|(_, p)| p.clone());
            hierarchies.push(h);
        }
        Layout { hierarchies }
    }

    pub fn mode(&self) -> Mode {
        let v1 = self
            .hierarchies
            .iter()
            .any(|h| h.version == Version::V1 && !h.controllers.is_empty());
        let v2 = self.hierarchies.iter().any(|h| h.version == Version::V2);
        match (v1, v2) {
            (true, true) => Mode::Hybrid,
            (false, true) => Mode::V2,
            _ => Mode::V1,
        }
    }

    pub fn v2(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }

    /// The v1 hierarchy carrying `controller`.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && h.controllers.iter().any(|c| c == controller))
    }
}

/// Reads at most `cap` bytes of a (proc or cgroup) file as text.
pub(super) fn read_capped(path: &Path, cap: u64) -> Result<String, super::CgroupError> {
    use std::io::Read;
    let io = |source| super::CgroupError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf).map_err(io)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `hierarchy-id:controllers:path` lines → (sorted controller list, path); v2 has an empty list.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let mut list: Vec<String> = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            list.sort();
            Some((list, path.to_string()))
        })
        .collect()
}

/// Mount options of a v1 cgroup mount that are not controllers.
fn is_v1_option(opt: &str) -> bool {
    matches!(
        opt,
        "rw" | "ro" | "noprefix" | "xattr" | "clone_children" | "cpuset_v2_mode" | "all" | "none"
    ) || opt.starts_with("release_agent=")
        || opt.starts_with("name=")
}

/// One mountinfo line: `id parent maj:min root mountpoint opts [optional...] - fstype src super`.
fn parse_mount(line: &str) -> Option<Hierarchy> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let root = unescape(fields.get(3)?);
    let mount_point = PathBuf::from(unescape(fields.get(4)?));
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let superopts = right.next().unwrap_or("");
    match fstype {
        "cgroup2" => Some(Hierarchy {
            version: Version::V2,
            mount_point,
            mount_root: root,
            controllers: Vec::new(),
            name: None,
            own_path: None,
        }),
        "cgroup" => {
            let mut controllers: Vec<String> = superopts
                .split(',')
                .filter(|o| !o.is_empty() && !is_v1_option(o))
                .map(str::to_string)
                .collect();
            controllers.sort();
            let name = superopts
                .split(',')
                .find_map(|o| o.strip_prefix("name="))
                .map(str::to_string);
            Some(Hierarchy {
                version: Version::V1,
                mount_point,
                mount_root: root,
                controllers,
                name,
                own_path: None,
            })
        }
        _ => None,
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            if let Some(oct) = bytes.get(i + 1..i + 4) {
                if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = oct
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(v) = u8::try_from(v) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:32 / /mnt/again\\040memory rw,relatime - cgroup cgroup rw,memory
";
    const HYBRID_CG: &str = "9:name=systemd:/user.slice\n4:memory:/process_api/e85606\n2:cpu,cpuacct:/\n0::/user.slice\n";

    #[test]
    fn hybrid_layout() {
        let l = Layout::parse(HYBRID, HYBRID_CG);
        assert_eq!(l.mode(), Mode::Hybrid);
        assert_eq!(l.hierarchies.len(), 4, "{l:#?}");
        let mem = l.v1("memory").expect("memory");
        assert_eq!(mem.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            mem.own_dir(),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/e85606"))
        );
        let cpu = l.v1("cpuacct").expect("cpuacct");
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            cpu.own_dir(),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        let sd = l
            .hierarchies
            .iter()
            .find(|h| h.name.as_deref() == Some("systemd"))
            .expect("systemd");
        assert!(sd.controllers.is_empty());
        assert_eq!(sd.own_path.as_deref(), Some("/user.slice"));
        assert_eq!(
            l.v2().and_then(|h| h.own_path.clone()).as_deref(),
            Some("/user.slice")
        );
    }

    #[test]
    fn pure_v2_layout_in_a_namespace() {
        let mi = "25 1 0:22 /user.slice/user-1000.slice /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";
        let l = Layout::parse(mi, cg);
        assert_eq!(l.mode(), Mode::V2);
        let h = l.v2().expect("v2");
        assert_eq!(
            h.own_dir(),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user@1000.service/app.slice/x.scope"
            ))
        );
        // A position outside the mount's root has no directory here.
        let l = Layout::parse(mi, "0::/system.slice/other\n");
        assert_eq!(l.v2().and_then(|h| h.own_dir()), None);
        let l = Layout::parse(mi, "0::/user.slice/user-1000.slice/../../etc\n");
        assert_eq!(l.v2().and_then(|h| h.own_dir()), None);
    }

    #[test]
    fn v1_only_and_garbage() {
        let mi = "1 2 3\n\n - - -\n35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory\n\\\\\\ - cgroup2\n";
        let l = Layout::parse(mi, "garbage\n::\n");
        assert_eq!(l.mode(), Mode::V1);
        assert_eq!(l.hierarchies.len(), 1);
        assert_eq!(unescape("a\\040b\\"), "a b\\");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn this_host_parses() {
        let l = Layout::detect().expect("detect");
        assert!(
            !l.hierarchies.is_empty(),
            "no cgroup hierarchy found on this host"
        );
    }
}

//! Namespaces: which ones a spec asks for, creating them with one `clone`, writing a new user
//! namespace's id maps from outside, and joining a running container's namespaces for exec.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::RuntimeError;

/// The clone flag for a namespace type.
pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME has no CloneFlags constant in nix; its value is fixed by the kernel ABI.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The /proc/<pid>/ns/<name> entry for a namespace type.
fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// What a spec asks of namespaces: new ones (one clone flag set) and existing ones to join
/// by path (opened by the parent; joined by the child before it clones the init).
#[derive(Debug)]
pub(crate) struct NsPlan {
    pub new: CloneFlags,
    pub join: Vec<(CloneFlags, OwnedFd)>,
    pub user: bool,
    pub pid: bool,
    pub mount: bool,
    pub uts: bool,
    pub net: bool,
}

impl NsPlan {
    pub fn from_spec(spec: &Spec, id: &str) -> Result<NsPlan, RuntimeError> {
        let mut plan = NsPlan {
            new: CloneFlags::empty(),
            join: Vec::new(),
            user: false,
            pid: false,
            mount: false,
            uts: false,
            net: false,
        };
        let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        let mut seen = CloneFlags::empty();
        // Join the user namespace first: it grants the rights to join the others.
        let mut list: Vec<_> = namespaces.map(|v| v.iter().collect()).unwrap_or_default();
        list.sort_by_key(|n| n.typ() != LinuxNamespaceType::User);
        for ns in list {
            let flag = clone_flag(ns.typ());
            if seen.contains(flag) {
                return Err(RuntimeError::container(
                    id,
                    format!(
                        "namespace {} listed twice in config.json",
                        proc_name(ns.typ())
                    ),
                ));
            }
            seen |= flag;
            match ns.typ() {
                LinuxNamespaceType::User => plan.user = true,
                LinuxNamespaceType::Pid => plan.pid = true,
                LinuxNamespaceType::Mount => plan.mount = true,
                LinuxNamespaceType::Uts => plan.uts = true,
                LinuxNamespaceType::Network => plan.net = true,
                _ => {}
            }
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    let fd = File::open(path)
                        .map_err(|e| RuntimeError::io(path, "open namespace", e))?;
                    plan.join.push((flag, fd.into()));
                }
                _ => plan.new |= flag,
            }
        }
        if !plan.mount {
            return Err(RuntimeError::container(
                id,
                "config.json has no mount namespace; decant needs one",
            ));
        }
        Ok(plan)
    }
}

/// Namespaces of `pid` that differ from ours, opened for `setns`, user namespace first.
pub(crate) fn namespaces_of(
    pid: i32,
    id: &str,
) -> Result<Vec<(CloneFlags, OwnedFd)>, RuntimeError> {
    let order = [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Time,
        LinuxNamespaceType::Mount,
    ];
    let mut out = Vec::new();
    for typ in order {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(typ)));
        let mine = Path::new("/proc/self/ns").join(proc_name(typ));
        let Ok(their_meta) = std::fs::metadata(&theirs) else {
            // This kernel lacks the namespace type (time before 5.6); nothing to join.
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(RuntimeError::container(
                    id,
                    "the container's init process is gone",
                ));
            }
            continue;
        };
        if let Ok(my_meta) = std::fs::metadata(&mine) {
            if my_meta.ino() == their_meta.ino() && my_meta.dev() == their_meta.dev() {
                continue;
            }
        }
        let fd = File::open(&theirs).map_err(|e| RuntimeError::io(&theirs, "open namespace", e))?;
        out.push((clone_flag(typ), fd.into()));
    }
    Ok(out)
}

/// Joins the given namespaces in order (the caller must be single-threaded for mnt and user).
pub(crate) fn join(list: &[(CloneFlags, OwnedFd)]) -> Result<(), (String, nix::errno::Errno)> {
    for (flag, fd) in list {
        nix::sched::setns(fd, *flag).map_err(|e| {
            (
                format!("setns {:#x} (fd {})", flag.bits(), fd.as_raw_fd()),
                e,
            )
        })?;
    }
    Ok(())
}

/// Creates a child in new namespaces with fork semantics (the child continues from here on a
/// copy of the stack) and CLONE_PARENT, so the container's init is a child of the process that
/// called the runtime (which can then wait for it) and not of the short-lived helper.
///
/// Must be called from a single-threaded process (the helper forked by the runtime): the child
/// shares no memory with it and no atfork handlers run.
pub(crate) fn clone_child(flags: CloneFlags) -> nix::Result<i32> {
    let all = flags.bits() as libc::c_ulong
        | libc::CLONE_PARENT as libc::c_ulong
        | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork: the child
    // gets a copy-on-write copy of the address space and continues on its own copy of this
    // stack. The caller is single-threaded, so no lock can be held by a thread that does not
    // exist in the child.
    let ret = unsafe { libc::syscall(libc::SYS_clone, all, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(ret as i32)
    }
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Whether /etc/subuid (or subgid) grants `user` or `uid` a range (read bounded, see
/// `userns`).
fn sub_ranges(file: &str, user: Option<&str>, uid: u32) -> bool {
    crate::userns::read_bounded(Path::new(file))
        .is_some_and(|text| crate::userns::parse_subid(&text, user, uid).is_some())
}

fn user_name(uid: u32) -> Option<String> {
    crate::userns::user_name(uid)
}

fn find_tool(name: &str) -> Option<PathBuf> {
    crate::userns::find_tool(name)
}

/// Writes the uid and gid maps of the new user namespace of `pid`. Root writes them directly;
/// a user with /etc/subuid and /etc/subgid ranges goes through newuidmap/newgidmap (setuid
/// helpers that check the ranges); any other user may map only itself, after denying
/// setgroups (the kernel's rule for unprivileged gid maps).
pub(crate) fn write_id_maps(
    pid: i32,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
    id: &str,
) -> Result<(), RuntimeError> {
    if uid_maps.is_empty() || gid_maps.is_empty() {
        return Err(RuntimeError::container(
            id,
            "user namespace without uidMappings and gidMappings in config.json",
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: &str| -> Result<(), RuntimeError> {
        let p = proc.join(name);
        std::fs::write(&p, text).map_err(|e| RuntimeError::io(&p, "write", e))
    };
    let own_only = |maps: &[LinuxIdMapping], own: u32| matches!(maps, [m] if m.host_id() == own && m.size() == 1);
    if euid != 0 {
        let egid = nix::unistd::getegid().as_raw();
        let simple = own_only(uid_maps, euid) && own_only(gid_maps, egid);
        let name = user_name(euid);
        let helpers = find_tool("newuidmap").zip(find_tool("newgidmap"));
        if let (false, Some((newuid, newgid))) = (simple, helpers) {
            if sub_ranges("/etc/subuid", name.as_deref(), euid)
                && sub_ranges("/etc/subgid", name.as_deref(), euid)
            {
                for (tool, maps) in [(newuid, uid_maps), (newgid, gid_maps)] {
                    let mut cmd = std::process::Command::new(&tool);
                    cmd.arg(pid.to_string());
                    for m in maps {
                        cmd.arg(m.container_id().to_string())
                            .arg(m.host_id().to_string())
                            .arg(m.size().to_string());
                    }
                    let out = cmd
                        .output()
                        .map_err(|e| RuntimeError::io(&tool, "run", e))?;
                    if !out.status.success() {
                        let msg = String::from_utf8_lossy(&out.stderr);
                        return Err(RuntimeError::container(
                            id,
                            format!("{}: {}", tool.display(), msg.trim().replace('\n', "; ")),
                        ));
                    }
                }
                return Ok(());
            }
        }
        if !simple {
            return Err(RuntimeError::container(
                id,
                "rootless: only the current user and group can be mapped without /etc/subuid and /etc/subgid ranges and newuidmap/newgidmap",
            ));
        }
        write("setgroups", "deny")?;
    }
    write("uid_map", &map_text(uid_maps))?;
    write("gid_map", &map_text(gid_maps))
}

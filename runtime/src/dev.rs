//! /dev inside the container: the standard device nodes and symlinks every program expects.
//!
//! With real root the nodes are made with mknod. In a user namespace mknod is refused by the
//! kernel, so each node is an empty file with the host's node bind-mounted on it (what runc and
//! Podman do rootless).

use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::process::ChildError;
use crate::rootfs::{resolve, Kind};

/// One device node to make, path relative to the rootfs.
#[derive(Debug, Clone)]
pub(crate) struct DevicePlan {
    pub path: String,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// null, zero, full, random, urandom, tty: what runc and Podman always provide.
pub(crate) fn default_devices() -> Vec<DevicePlan> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .iter()
    .map(|(name, major, minor)| DevicePlan {
        path: format!("dev/{name}"),
        kind: SFlag::S_IFCHR,
        major: *major,
        minor: *minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Turns a spec device into a plan, refusing paths outside /dev-like sanity and odd types.
pub(crate) fn plan_device(d: &LinuxDevice) -> Result<DevicePlan, String> {
    let path = d
        .path()
        .to_str()
        .ok_or_else(|| format!("device path {:?} is not UTF-8", d.path()))?;
    let rel = crate::rootfs::relative_dest(path)?;
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(format!("device {path}: type \"a\" is not a node type")),
    };
    let major = u64::try_from(d.major())
        .map_err(|_| format!("device {path}: negative major {}", d.major()))?;
    let minor = u64::try_from(d.minor())
        .map_err(|_| format!("device {path}: negative minor {}", d.minor()))?;
    Ok(DevicePlan {
        path: rel,
        kind,
        major,
        minor,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Makes the nodes under the rootfs opened as `root`.
pub(crate) fn create_devices(
    root: &impl AsFd,
    devices: &[DevicePlan],
    bind: bool,
) -> Result<(), ChildError> {
    for d in devices {
        let (parent_rel, name) = match d.path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", d.path.as_str()),
        };
        let parent = resolve(root, parent_rel, Some(Kind::Dir))?;
        match nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(ChildError::sys(format!("remove /{}", d.path), e)),
        }
        if bind {
            let host = Path::new("/").join(&d.path);
            let target = resolve(root, &d.path, Some(Kind::File))?;
            nix::mount::mount(
                Some(&host),
                &crate::rootfs::fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ChildError::sys(format!("bind {} onto /{}", host.display(), d.path), e))?;
        } else {
            let dev = nix::sys::stat::makedev(d.major, d.minor);
            nix::sys::stat::mknodat(&parent, name, d.kind, Mode::from_bits_truncate(d.mode), dev)
                .map_err(|e| ChildError::sys(format!("mknod /{}", d.path), e))?;
            nix::unistd::fchownat(
                &parent,
                name,
                Some(nix::unistd::Uid::from_raw(d.uid)),
                Some(nix::unistd::Gid::from_raw(d.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ChildError::sys(format!("chown /{}", d.path), e))?;
        }
    }
    Ok(())
}

/// /dev/fd, stdin, stdout, stderr and ptmx symlinks (and core where the kernel has kcore).
pub(crate) fn create_symlinks(root: &impl AsFd, has_devpts: bool) -> Result<(), ChildError> {
    let dev = resolve(root, "dev", Some(Kind::Dir))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if has_devpts {
        // The ptmx of the container's own devpts instance, not the host's.
        let _ = nix::unistd::unlinkat(&dev, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(ChildError::sys(format!("symlink /dev/{name}"), e)),
        }
    }
    Ok(())
}

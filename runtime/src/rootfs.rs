//! The container's mount namespace: propagation, the rootfs bound onto itself, the spec's
//! mounts, /dev, then pivot_root into it.
//!
//! Every mount target inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT) and mounted
//! through its /proc/self/fd path, so a symlink planted in an image (say /proc -> /etc on the
//! host) cannot send a mount outside the rootfs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use crate::dev::DevicePlan;
use crate::process::ChildError;

/// At most this many path components in a mount destination.
const MAX_COMPONENTS: usize = 255;

/// What to create when a path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// One spec mount, parsed in the parent (so bad options fail before anything is forked).
#[derive(Debug, Clone)]
pub(crate) struct MountPlan {
    /// Destination relative to the rootfs, no `..`, no leading `/`.
    pub dest: String,
    pub typ: String,
    pub source: Option<PathBuf>,
    pub flags: MsFlags,
    pub data: String,
    pub propagation: Option<MsFlags>,
    pub bind: bool,
}

/// Everything the init needs to build its filesystem view.
#[derive(Debug, Clone)]
pub(crate) struct RootfsPlan {
    pub rootfs: PathBuf,
    pub propagation: MsFlags,
    pub mounts: Vec<MountPlan>,
    /// Whether /dev is ours to populate (no bind of the host's /dev over it).
    pub setup_dev: bool,
    pub devices: Vec<DevicePlan>,
    /// In a user namespace: no mknod, flags locked by the kernel must be kept on remount.
    pub user_ns: bool,
    pub readonly: bool,
    /// Whether the host is pure cgroup v2 (a "cgroup" mount can then be a fresh cgroup2).
    pub cgroup2_host: bool,
    pub new_cgroup_ns: bool,
}

/// "/a/b/../c" style destinations are refused; returns "a/b".
pub(crate) fn relative_dest(dest: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in Path::new(dest).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| format!("path {dest:?} is not UTF-8"))?
                    .to_string(),
            ),
            Component::ParentDir => return Err(format!("path {dest:?} contains \"..\"")),
            Component::Prefix(_) => return Err(format!("path {dest:?} is not a Unix path")),
        }
    }
    if parts.len() > MAX_COMPONENTS {
        return Err(format!(
            "path {dest:?} has more than {MAX_COMPONENTS} components"
        ));
    }
    Ok(parts.join("/"))
}

/// Parses mount options into flags, propagation and fs data (the same table as mount(8)).
pub(crate) fn parse_options(
    options: &[String],
) -> Result<(MsFlags, Option<MsFlags>, bool, String), String> {
    let mut flags = MsFlags::empty();
    let mut prop = None;
    let mut bind = false;
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                bind = true;
                (MsFlags::empty(), MsFlags::empty())
            }
            "rbind" => {
                bind = true;
                (MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                prop = Some(propagation_flags(o)?);
                (MsFlags::empty(), MsFlags::empty())
            }
            "tmpcopyup" | "idmap" | "ridmap" | "remount" => {
                return Err(format!(
                    "mount option {o:?} is not supported by decant's runtime"
                ))
            }
            other if other.starts_with("x-") || other.starts_with("X-") => {
                (MsFlags::empty(), MsFlags::empty())
            }
            other => {
                data.push(other);
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    Ok((flags, prop, bind, data.join(",")))
}

/// "rslave" and friends as mount flags.
pub(crate) fn propagation_flags(name: &str) -> Result<MsFlags, String> {
    Ok(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => return Err(format!("unknown mount propagation {other:?}")),
    })
}

/// Parses one spec mount; relative bind sources are taken from the bundle, like runc.
pub(crate) fn plan_mount(m: &Mount, bundle: &Path) -> Result<MountPlan, String> {
    let dest_s = m
        .destination()
        .to_str()
        .ok_or_else(|| format!("mount destination {:?} is not UTF-8", m.destination()))?;
    if !dest_s.starts_with('/') {
        return Err(format!("mount destination {dest_s:?} is not absolute"));
    }
    let dest = relative_dest(dest_s)?;
    let (flags, propagation, mut bind, data) =
        parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().clone().unwrap_or_default();
    if typ == "bind" {
        bind = true;
    }
    let source = m.source().as_ref().map(|s| {
        if s.is_absolute() || !bind {
            s.clone()
        } else {
            bundle.join(s)
        }
    });
    if bind && source.is_none() {
        return Err(format!("bind mount on {dest_s} has no source"));
    }
    if !bind && typ.is_empty() {
        return Err(format!("mount on {dest_s} has no type"));
    }
    Ok(MountPlan {
        dest,
        typ,
        source,
        flags,
        data,
        propagation,
        bind,
    })
}

/// The path through which an fd's file can be named in mount(2).
pub(crate) fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn open_in_root(root: &impl AsFd, rel: &str) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = if rel.is_empty() { "." } else { rel };
    nix::fcntl::openat2(root.as_fd(), rel, how)
}

/// Opens `rel` (O_PATH) inside the rootfs `root`, symlinks resolved as if `root` were `/`;
/// when missing and `create` says so, makes the missing directories and the last component.
/// A dangling symlink on the way is followed (inside the rootfs) and its target created, as
/// runc does: an image's `/var/run -> /run` must still take a mount on /var/run.
pub(crate) fn resolve(
    root: &impl AsFd,
    rel: &str,
    create: Option<Kind>,
) -> Result<OwnedFd, ChildError> {
    let mut path = rel.to_string();
    for _ in 0..MAX_SYMLINKS {
        match open_in_root(root, &path) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(ChildError::sys(format!("open /{path} in the rootfs"), e)),
        }
        let Some(kind) = create else {
            return Err(ChildError::sys(
                format!("open /{path} in the rootfs"),
                Errno::ENOENT,
            ));
        };
        match create_walk(root, &path, kind)? {
            Walk::Done(fd) => return Ok(fd),
            Walk::Redirect(next) => path = next,
        }
    }
    Err(ChildError::msg(format!(
        "/{rel} in the rootfs: more than {MAX_SYMLINKS} symlinks"
    )))
}

/// Symlinks followed while creating one path, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

enum Walk {
    Done(OwnedFd),
    /// A dangling symlink: resolve this path instead.
    Redirect(String),
}

/// Joins and normalises a path inside the rootfs; `..` stops at the root, as RESOLVE_IN_ROOT.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

fn create_walk(root: &impl AsFd, rel: &str, kind: Kind) -> Result<Walk, ChildError> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > MAX_COMPONENTS {
        return Err(ChildError::msg(format!(
            "/{rel}: more than {MAX_COMPONENTS} components"
        )));
    }
    let mut parent = open_in_root(root, "").map_err(|e| ChildError::sys("open the rootfs", e))?;
    for (i, name) in parts.iter().enumerate() {
        let before = parts.get(..i).unwrap_or_default().join("/");
        let prefix = parts.get(..=i).unwrap_or_default().join("/");
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(ChildError::sys(format!("open /{prefix} in the rootfs"), e)),
        }
        match nix::fcntl::readlinkat(&parent, *name) {
            Ok(target) => {
                let target = target.to_string_lossy().into_owned();
                let base = if target.starts_with('/') {
                    ""
                } else {
                    before.as_str()
                };
                let rest = parts.get(i + 1..).unwrap_or_default().join("/");
                return Ok(Walk::Redirect(normalize(&format!(
                    "{base}/{target}/{rest}"
                ))));
            }
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(ChildError::sys(format!("readlink /{prefix}"), e)),
        }
        let last = i + 1 == parts.len();
        if last && kind == Kind::File {
            match nix::fcntl::openat(
                &parent,
                *name,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(ChildError::sys(format!("create /{prefix}"), e)),
            }
        } else {
            match nix::sys::stat::mkdirat(&parent, *name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(ChildError::sys(format!("mkdir /{prefix}"), e)),
            }
        }
        parent = open_in_root(root, &prefix)
            .map_err(|e| ChildError::sys(format!("open /{prefix} in the rootfs"), e))?;
    }
    Ok(Walk::Done(parent))
}

/// Flags the kernel locks on a mount made in a less privileged namespace: a remount in a user
/// namespace must repeat them or it is refused.
fn locked_flags(fd: &impl AsFd) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::fstatvfs(fd) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Flags that a bind mount only takes through a second, remounting call.
const REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

fn remount_bind(fd: &OwnedFd, flags: MsFlags, user_ns: bool, what: &str) -> Result<(), ChildError> {
    let mut f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | (flags & REMOUNT_FLAGS);
    if user_ns {
        f |= locked_flags(fd) & !MsFlags::MS_RDONLY;
    }
    nix::mount::mount(None::<&str>, &fd_path(fd), None::<&str>, f, None::<&str>)
        .map_err(|e| ChildError::sys(format!("remount {what}"), e))
}

/// Makes a whole mount tree read-only (a remount only changes the top mount).
fn recursive_readonly(fd: &OwnedFd, what: &str) -> Result<(), ChildError> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a valid, initialised
    // struct laid out as the kernel's struct mount_attr, and an empty NUL-terminated path.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(ChildError::sys(
            format!("make {what} read-only"),
            Errno::last(),
        ));
    }
    Ok(())
}

fn do_bind(
    root: &OwnedFd,
    source: &Path,
    dest: &str,
    rec: bool,
    flags: MsFlags,
    user_ns: bool,
) -> Result<OwnedFd, ChildError> {
    let meta = std::fs::metadata(source)
        .map_err(|e| ChildError::msg(format!("bind source {}: {e}", source.display())))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target = resolve(root, dest, Some(kind))?;
    let mut f = MsFlags::MS_BIND;
    if rec {
        f |= MsFlags::MS_REC;
    }
    nix::mount::mount(
        Some(source),
        &fd_path(&target),
        None::<&str>,
        f,
        None::<&str>,
    )
    .map_err(|e| ChildError::sys(format!("bind {} onto /{dest}", source.display()), e))?;
    // The fd names the directory under the new mount: reopen to reach the mount itself.
    let mounted = resolve(root, dest, None)?;
    if !(flags & REMOUNT_FLAGS).is_empty() {
        remount_bind(&mounted, flags, user_ns, &format!("/{dest}"))?;
        if rec && flags.contains(MsFlags::MS_RDONLY) {
            recursive_readonly(&mounted, &format!("/{dest}"))?;
        }
    }
    Ok(mounted)
}

fn mount_one(root: &OwnedFd, m: &MountPlan, plan: &RootfsPlan) -> Result<(), ChildError> {
    let mounted = if m.bind {
        let source = m
            .source
            .as_deref()
            .ok_or_else(|| ChildError::msg(format!("bind on /{} has no source", m.dest)))?;
        do_bind(
            root,
            source,
            &m.dest,
            m.flags.contains(MsFlags::MS_REC),
            m.flags,
            plan.user_ns,
        )?
    } else if m.typ == "cgroup" || m.typ == "cgroup2" {
        if plan.cgroup2_host && plan.new_cgroup_ns {
            let target = resolve(root, &m.dest, Some(Kind::Dir))?;
            nix::mount::mount(
                Some("cgroup2"),
                &fd_path(&target),
                Some("cgroup2"),
                m.flags - MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| ChildError::sys(format!("mount cgroup2 on /{}", m.dest), e))?;
            resolve(root, &m.dest, None)?
        } else {
            // v1 or hybrid host: the host's hierarchies, read-only unless asked otherwise.
            do_bind(
                root,
                Path::new("/sys/fs/cgroup"),
                &m.dest,
                true,
                m.flags,
                plan.user_ns,
            )?
        }
    } else {
        let target = resolve(root, &m.dest, Some(Kind::Dir))?;
        let source = m.source.clone().unwrap_or_else(|| PathBuf::from(&m.typ));
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        match nix::mount::mount(
            Some(&source),
            &fd_path(&target),
            Some(m.typ.as_str()),
            m.flags,
            data,
        ) {
            Ok(()) => resolve(root, &m.dest, None)?,
            // sysfs needs a network namespace owned by our user namespace, mqueue an ipc one:
            // without them, show the host's, read-only as far as the spec says.
            Err(Errno::EPERM) if plan.user_ns && (m.typ == "sysfs" || m.typ == "mqueue") => {
                let host = Path::new("/").join(&m.dest);
                do_bind(
                    root,
                    &host,
                    &m.dest,
                    true,
                    m.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    true,
                )?
            }
            Err(e) => {
                return Err(ChildError::sys(
                    format!("mount {} on /{}", m.typ, m.dest),
                    e,
                ))
            }
        }
    };
    if let Some(p) = m.propagation {
        nix::mount::mount(
            None::<&str>,
            &fd_path(&mounted),
            None::<&str>,
            p,
            None::<&str>,
        )
        .map_err(|e| ChildError::sys(format!("set propagation of /{}", m.dest), e))?;
    }
    Ok(())
}

/// Builds the container's filesystem view and pivots into it. Runs in the init process, in
/// its new mount namespace.
pub(crate) fn setup(plan: &RootfsPlan) -> Result<(), ChildError> {
    // Nothing we mount may propagate back to the host.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        plan.propagation,
        None::<&str>,
    )
    .map_err(|e| ChildError::sys("set / propagation", e))?;
    nix::mount::mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ChildError::sys(format!("bind {} onto itself", plan.rootfs.display()), e))?;
    let root: OwnedFd = nix::fcntl::open(
        &plan.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ChildError::sys(format!("open {}", plan.rootfs.display()), e))?;
    let mut has_devpts = false;
    for m in &plan.mounts {
        mount_one(&root, m, plan)?;
        has_devpts |= m.typ == "devpts" && m.dest == "dev/pts";
    }
    if plan.setup_dev {
        crate::dev::create_devices(&root, &plan.devices, plan.user_ns)?;
        crate::dev::create_symlinks(&root, has_devpts)?;
    }
    pivot(&root)?;
    Ok(())
}

fn pivot(root: &OwnedFd) -> Result<(), ChildError> {
    nix::unistd::fchdir(root).map_err(|e| ChildError::sys("chdir into the rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // container's tree, with no directory for the old root left behind in the image.
    nix::unistd::pivot_root(".", ".").map_err(|e| ChildError::sys("pivot_root", e))?;
    nix::mount::mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ChildError::sys("make the old root a slave", e))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| ChildError::sys("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| ChildError::sys("chdir /", e))
}

/// After pivot_root: makes / read-only when the spec says `root.readonly`.
pub(crate) fn readonly_root(user_ns: bool) -> Result<(), ChildError> {
    let fd: OwnedFd = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ChildError::sys("open /", e))?;
    remount_bind(&fd, MsFlags::MS_RDONLY, user_ns, "/ read-only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_cannot_climb() {
        assert_eq!(relative_dest("/dev/pts").unwrap(), "dev/pts");
        assert_eq!(relative_dest("/./a//b/").unwrap(), "a/b");
        assert!(relative_dest("/a/../../etc").is_err());
        assert_eq!(relative_dest("/").unwrap(), "");
    }

    #[test]
    fn normalize_clamps_at_the_root() {
        assert_eq!(normalize("/a/../../../etc/./x/"), "etc/x");
        assert_eq!(normalize("a/b/../c"), "a/c");
    }

    #[test]
    fn options_parse_like_mount8() {
        let opts: Vec<String> = ["rbind", "ro", "nosuid", "rslave", "mode=755", "x-foo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, prop, bind, data) = parse_options(&opts).unwrap();
        assert!(bind);
        assert!(flags.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(prop, Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(data, "mode=755");
        assert!(parse_options(&["idmap".to_string()]).is_err());
    }
}

//! Turns a `ContainerConfig` into the OCI runtime spec this crate runs: the Podman-like
//! defaults of `crate::spec`, plus the container's command, user, mounts, limits, network and
//! capabilities. The user is resolved inside the container's root through openat2
//! RESOLVE_IN_ROOT, so a hostile image's symlinked /etc/passwd cannot reach host files.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCpu, LinuxMemory, LinuxNamespaceType, LinuxPids, LinuxResources,
    Mount, Spec, User,
};

use super::{io_err, ContainerConfig, EngineError, NetworkMode};

/// /etc/passwd or /etc/group larger than this is refused.
const MAX_ID_FILE: u64 = 16 << 20;
/// CFS period for `--cpus`, as Docker.
const CPU_PERIOD: u64 = 100_000;

fn start_err(message: String) -> EngineError {
    EngineError::Start { code: 125, message }
}

/// Opens `rel` (absolute in the container) with every symlink resolved inside `root`, with
/// `flags` (O_CLOEXEC is added); `None` when it does not exist.
pub(super) fn open_in_root(
    root: &Path,
    rel: &str,
    flags: libc::c_int,
) -> Result<Option<OwnedFd>, EngineError> {
    let dir = std::fs::File::open(root).map_err(io_err(root, "open"))?;
    let c = std::ffi::CString::new(rel)
        .map_err(|_| start_err(format!("{rel}: a path with a NUL byte")))?;
    // SAFETY: open_how is plain old data; all zeroes is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the path and the open_how struct (whose size we pass) and returns
    // a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(io_err(&root.join(rel.trim_start_matches('/')), "open")(e));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Reads `rel` (absolute in the container) with every symlink resolved inside `root`;
/// `None` when it does not exist.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<Vec<u8>>, EngineError> {
    let Some(fd) = open_in_root(root, rel, libc::O_RDONLY)? else {
        return Ok(None);
    };
    let f = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    f.take(MAX_ID_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(&root.join(rel.trim_start_matches('/')), "read"))?;
    if bytes.len() as u64 > MAX_ID_FILE {
        return Err(start_err(format!("{rel}: larger than {MAX_ID_FILE} bytes")));
    }
    Ok(Some(bytes))
}

/// The entries of a colon-separated file (passwd, group) as fields.
fn entries(bytes: &[u8]) -> impl Iterator<Item = Vec<&str>> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(':').collect())
}

/// The home directory of `uid` in the image's /etc/passwd; "/" when it has none (Docker's
/// default), "/root" for root without an entry. A passwd that cannot be read gives the
/// default too: HOME is a convenience, never a reason to refuse a start.
fn home_of(root: &Path, uid: u32) -> String {
    let passwd = read_in_root(root, "/etc/passwd")
        .ok()
        .flatten()
        .unwrap_or_default();
    let want = uid.to_string();
    let home = entries(&passwd)
        .find(|f| f.get(2) == Some(&want.as_str()))
        .and_then(|f| f.get(5).map(|h| h.to_string()))
        .filter(|h| h.starts_with('/'));
    home.unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_string())
}

/// Resolves `USER[:GROUP]` (names or numbers) against the root's /etc/passwd and /etc/group
/// as Docker does: numbers pass through, names must exist; the user's supplementary groups
/// come from /etc/group.
pub fn resolve_user(root: &Path, spec: &str) -> Result<User, EngineError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_root(root, "/etc/group")?.unwrap_or_default();
    let (uid, mut gid, name) = if let Ok(n) = u.parse::<u32>() {
        let row = entries(&passwd).find(|f| f.get(2) == Some(&u));
        let gid = row
            .as_ref()
            .and_then(|f| f.get(3))
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        (n, gid, row.and_then(|f| f.first().map(|s| s.to_string())))
    } else {
        let f = entries(&passwd)
            .find(|f| f.first() == Some(&u))
            .ok_or_else(|| {
                start_err(format!(
                    "unable to find user {u}: no matching entries in passwd file"
                ))
            })?;
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u32>().ok());
        match (num(2), num(3)) {
            (Some(uid), Some(gid)) => (uid, gid, Some(u.to_string())),
            _ => {
                return Err(start_err(format!(
                    "unable to find user {u}: a damaged passwd entry"
                )))
            }
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entries(&group)
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2).and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    start_err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut extra: Vec<u32> = match (&name, g) {
        (Some(n), None) => entries(&group)
            .filter(|f| {
                f.get(3)
                    .is_some_and(|m| m.split(',').any(|m| m == n.as_str()))
            })
            .filter_map(|f| f.get(2).and_then(|s| s.parse().ok()))
            .take(65_536)
            .collect(),
        _ => Vec::new(),
    };
    extra.retain(|x| *x != gid);
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids((!extra.is_empty()).then_some(extra));
    Ok(user)
}

fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn parse_cap(c: &str) -> Result<Capability, EngineError> {
    serde_json::from_value(serde_json::Value::String(cap_name(c)))
        .map_err(|_| EngineError::Invalid(format!("unknown capability: {c}")))
}

/// Refuses unknown capability names at create time.
pub(super) fn check_caps(c: &ContainerConfig) -> Result<(), EngineError> {
    for name in c.cap_add.iter().chain(&c.cap_drop) {
        if !name.eq_ignore_ascii_case("ALL") {
            parse_cap(name)?;
        }
    }
    Ok(())
}

/// The default set with `--cap-add` / `--cap-drop` (`ALL` works in both, as Docker).
fn capabilities(c: &ContainerConfig) -> Result<oci_spec::runtime::LinuxCapabilities, EngineError> {
    let all = crate::security::caps::all_capabilities();
    if c.privileged {
        return Ok(all);
    }
    let mut caps = crate::security::default_capabilities();
    let mut set: Capabilities = caps.bounding().clone().unwrap_or_default();
    if c.cap_drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        set.clear();
    }
    for a in &c.cap_add {
        if a.eq_ignore_ascii_case("ALL") {
            set.extend(all.bounding().clone().unwrap_or_default());
        } else {
            set.insert(parse_cap(a)?);
        }
    }
    for d in &c.cap_drop {
        if !d.eq_ignore_ascii_case("ALL") {
            set.remove(&parse_cap(d)?);
        }
    }
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    Ok(caps)
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// The identity maps of the ids in our namespace's map file `path` (see `userns`).
fn identity(path: &str) -> Vec<oci_spec::runtime::LinuxIdMapping> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    crate::userns::identity_maps(&text)
        .into_iter()
        .filter_map(|(id, count)| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(id)
                .host_id(id)
                .size(count)
                .build()
                .ok()
        })
        .collect()
}

/// At most this many host device nodes are passed to a --privileged container.
const MAX_HOST_DEVICES: usize = 4096;

/// Nodes the runtime makes itself in every container's /dev (or links to its own devpts):
/// the host's are not copied over them.
const OWN_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "ptmx"];

/// The character and block nodes at the top level of the host's `dev` (Podman's
/// --privileged; the pts, shm and mqueue subtrees are the container's own), with their
/// numbers, modes and owners. Unreadable entries are skipped: this is the host's view.
fn host_devices(dev: &Path) -> Vec<oci_spec::runtime::LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(dir) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.filter_map(Result::ok) {
        if out.len() >= MAX_HOST_DEVICES {
            break;
        }
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if OWN_NODES.contains(&name) {
            continue;
        }
        // symlink_metadata: a link (/dev/core, /dev/fd) is not a node.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = meta.file_type();
        let typ = if ft.is_char_device() {
            oci_spec::runtime::LinuxDeviceType::C
        } else if ft.is_block_device() {
            oci_spec::runtime::LinuxDeviceType::B
        } else {
            continue;
        };
        let rdev = meta.rdev();
        let mut d = oci_spec::runtime::LinuxDevice::default();
        d.set_path(Path::new("/dev").join(name));
        d.set_typ(typ);
        d.set_major(libc::major(rdev) as i64);
        d.set_minor(libc::minor(rdev) as i64);
        d.set_file_mode(Some(meta.mode() & 0o7777));
        d.set_uid(Some(meta.uid()));
        d.set_gid(Some(meta.gid()));
        out.push(d);
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The spec for container `c` whose directory is `dir` and whose root is mounted at `rootfs`.
pub fn build_spec(c: &ContainerConfig, dir: &Path, rootfs: &Path) -> Result<Spec, EngineError> {
    // The rootless monitor is uid 0 in its own user namespace: the container still gets a
    // user namespace (mapping that 0 to 0) and a devpts without the unmapped tty group.
    let rootless = super::rootless();
    let args = match &c.init {
        // Services mode: the image's services, and the command (if any) as the main one.
        Some(_) if c.init_host => [super::restart::INIT_PATH, "--with-services", "--"]
            .into_iter()
            .map(str::to_string)
            .chain(c.args())
            .collect(),
        // The tini case of decant-init: it reaps zombies and forwards signals to the command.
        Some(_) => [super::restart::INIT_PATH.to_string(), "--".to_string()]
            .into_iter()
            .chain(c.args())
            .collect(),
        None => c.args(),
    };
    let mut spec = crate::spec::default_spec(rootfs, args, rootless);
    if rootless && super::in_user_namespace() {
        // Inside the monitor's namespace: every id it has (one, or 0 plus the subordinate
        // range) as itself, so the image's owners show through.
        if let Some(linux) = spec.linux_mut() {
            linux.set_uid_mappings(Some(identity("/proc/self/uid_map")));
            linux.set_gid_mappings(Some(identity("/proc/self/gid_map")));
        }
    }
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(c.read_only));
    }
    let hostname = std::fs::read_to_string(dir.join("hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    spec.set_hostname(Some(hostname.clone()));

    let mut env: Vec<String> = Vec::new();
    let mut put = |kv: &str| {
        let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
        env.retain(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) != key);
        env.push(kv.to_string());
    };
    put("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    put(&format!("HOSTNAME={hostname}"));
    for e in &c.env {
        put(e);
    }
    let user = match &c.user {
        Some(u) if !u.is_empty() => resolve_user(rootfs, u)?,
        _ => User::default(),
    };
    // As Docker: HOME from the user's passwd entry unless the image or `-e` set it.
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(rootfs, user.uid())));
    }
    if let Some(p) = spec.process_mut() {
        p.set_env(Some(env));
        p.set_cwd(PathBuf::from(
            c.workdir
                .as_deref()
                .filter(|w| !w.is_empty())
                .unwrap_or("/"),
        ));
        p.set_user(user);
        p.set_capabilities(Some(capabilities(c)?));
        p.set_terminal(Some(c.tty));
        if c.privileged {
            p.set_no_new_privileges(Some(false));
        }
    }

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for f in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(mount(
            &format!("/etc/{f}"),
            "bind",
            &dir.join(f),
            &["rbind", "rprivate"],
        ));
    }
    if let Some(init) = &c.init {
        // On /dev (our tmpfs): writable even with a read-only root, and never in the image.
        mounts.push(mount(
            super::restart::INIT_PATH,
            "bind",
            init,
            &["bind", "ro", "rprivate"],
        ));
    }
    for t in &c.tmpfs {
        mounts.push(mount(
            t,
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"],
        ));
    }
    let volumes = c.volumes.iter().map(super::volumes::VolumeMount::as_bind);
    for b in c.binds.iter().cloned().chain(volumes) {
        let mut opts = vec!["rbind", "rprivate"];
        if b.read_only {
            opts.push("ro");
        }
        mounts.push(mount(&b.container, "bind", &b.host, &opts));
    }
    if c.privileged {
        // Podman's --privileged: the container's own sysfs, writable.
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/sys"))
        {
            let opts = m.options().clone().unwrap_or_default();
            m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    spec.set_mounts(Some(mounts));

    let caps = capabilities(c)?;
    if let Some(linux) = spec.linux_mut() {
        if c.network == NetworkMode::Host {
            let ns = linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.typ() != LinuxNamespaceType::Network)
                .collect();
            linux.set_namespaces(Some(ns));
        }
        if c.privileged {
            linux.set_seccomp(None);
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
            // Rootless, the runtime binds each node from the host (mknod is refused in a
            // user namespace); opening one still takes the user's own rights on it.
            linux.set_devices(Some(host_devices(Path::new("/dev"))));
        } else {
            linux.set_seccomp(Some(crate::security::seccomp::seccomp_for_capabilities(
                &caps,
            )));
        }
        {
            let mut r = LinuxResources::default();
            // The devices cgroup list (enforced on v1 as root; see security::devices).
            r.set_devices(Some(if c.privileged {
                crate::security::devices::allow_all_devices()
            } else {
                crate::security::default_devices()
            }));
            if let Some(m) = c.memory {
                let mut mem = LinuxMemory::default();
                mem.set_limit(Some(m));
                // No swap beyond the limit: the limit is what the container gets.
                mem.set_swap(Some(m));
                r.set_memory(Some(mem));
            }
            if let Some(cpus) = c.cpus {
                let mut cpu = LinuxCpu::default();
                cpu.set_period(Some(CPU_PERIOD));
                cpu.set_quota(Some((cpus * CPU_PERIOD as f64).round() as i64));
                r.set_cpu(Some(cpu));
            }
            if let Some(p) = c.pids_limit {
                let mut pids = LinuxPids::default();
                pids.set_limit(p);
                r.set_pids(Some(pids));
            }
            linux.set_resources(Some(r));
        }
    }
    Ok(spec)
}

/// The /etc/hosts, /etc/hostname and /etc/resolv.conf the container sees (bind-mounted).
pub(super) fn write_etc_files(
    dir: &Path,
    hostname: &str,
    network: NetworkMode,
) -> Result<(), EngineError> {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io_err(&p, "write"))
    };
    let hosts = if network == NetworkMode::Host {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        )
    };
    write("hosts", hosts)?;
    write("hostname", format!("{hostname}\n"))?;
    let resolv = std::fs::File::open("/etc/resolv.conf")
        .and_then(|f| {
            let mut s = String::new();
            f.take(64 << 10).read_to_string(&mut s).map(|_| s)
        })
        .unwrap_or_default();
    write("resolv.conf", resolv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbad:x:zz\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n",
        )
        .unwrap();
        let u = resolve_user(t.path(), "alice").unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 1000));
        assert_eq!(u.additional_gids().as_deref(), Some(&[10u32][..]));
        let u = resolve_user(t.path(), "1000:wheel").unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 10));
        let u = resolve_user(t.path(), "4242").unwrap();
        assert_eq!((u.uid(), u.gid()), (4242, 0));
        let e = resolve_user(t.path(), "bob").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user bob: no matching entries in passwd file"
        );
        assert_eq!(e.exit_code(), 125);
        assert!(resolve_user(t.path(), "bad").is_err());
        assert!(resolve_user(t.path(), "alice:nogroup").is_err());
        // HOME as Docker: the passwd entry's, else "/" ("/root" for root).
        assert_eq!(home_of(t.path(), 1000), "/home/alice");
        assert_eq!(home_of(t.path(), 0), "/root");
        assert_eq!(home_of(t.path(), 4242), "/");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(home_of(empty.path(), 0), "/root");
        assert_eq!(home_of(&empty.path().join("missing"), 7), "/");
    }

    #[test]
    fn a_symlinked_passwd_stays_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        // Outside the root, a passwd that knows "outsider"; the root's /etc/passwd points at
        // the absolute path, which must resolve inside the root (and not exist there).
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "outsider:x:5:5::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), t.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve_user(t.path(), "outsider").is_err());
    }

    #[test]
    fn init_is_bound_read_only_and_runs_the_command() {
        let t = tempfile::tempdir().unwrap();
        let c = ContainerConfig {
            cmd: vec!["sh".into(), "-c".into(), "sleep 1".into()],
            init: Some(PathBuf::from("/opt/decant-init")),
            read_only: true,
            ..Default::default()
        };
        let s = build_spec(&c, t.path(), &t.path().join("merged")).unwrap();
        let args = s.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, ["/dev/init", "--", "sh", "-c", "sleep 1"]);
        let m = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/init"))
            .unwrap();
        assert_eq!(m.source().as_deref(), Some(Path::new("/opt/decant-init")));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn host_init_runs_services_with_an_optional_main_command() {
        let t = tempfile::tempdir().unwrap();
        let mut c = ContainerConfig {
            init: Some(PathBuf::from("/opt/decant-init")),
            init_host: true,
            ..Default::default()
        };
        let args = |c: &ContainerConfig| {
            let s = build_spec(c, t.path(), &t.path().join("merged")).unwrap();
            s.process().as_ref().unwrap().args().clone().unwrap()
        };
        assert_eq!(args(&c), ["/dev/init", "--with-services", "--"]);
        c.cmd = vec!["app".into(), "-v".into()];
        assert_eq!(
            args(&c),
            ["/dev/init", "--with-services", "--", "app", "-v"]
        );
    }

    #[test]
    fn caps_and_limits_reach_the_spec() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("hostname"), "box\n").unwrap();
        let c = ContainerConfig {
            cmd: vec!["sh".into()],
            env: vec!["A=1".into(), "PATH=/x".into()],
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into()],
            memory: Some(64 << 20),
            pids_limit: Some(10),
            network: NetworkMode::Host,
            ..Default::default()
        };
        let s = build_spec(&c, t.path(), &t.path().join("merged")).unwrap();
        let p = s.process().as_ref().unwrap();
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"PATH=/x".to_string()) && env.contains(&"HOSTNAME=box".to_string()));
        let b = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert!(b.contains(&Capability::NetAdmin) && !b.contains(&Capability::Chown));
        let linux = s.linux().as_ref().unwrap();
        assert!(!linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.pids().unwrap().limit(), 10);
        assert!(matches!(
            check_caps(&ContainerConfig {
                cap_add: vec!["NOPE".into()],
                ..Default::default()
            }),
            Err(EngineError::Invalid(_))
        ));
    }

    #[test]
    fn device_list_sysfs_and_host_nodes_follow_privileged() {
        use oci_spec::runtime::LinuxDeviceType;
        let t = tempfile::tempdir().unwrap();
        let spec = |privileged| {
            let c = ContainerConfig {
                cmd: vec!["sh".into()],
                privileged,
                ..Default::default()
            };
            build_spec(&c, t.path(), &t.path().join("merged")).unwrap()
        };
        let sys_opts = |s: &Spec| {
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == Path::new("/sys"))
                .unwrap()
                .options()
                .clone()
                .unwrap()
        };
        let s = spec(false);
        let linux = s.linux().as_ref().unwrap();
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(devices, crate::security::default_devices());
        assert!(!devices[0].allow() && devices[0].typ() == Some(LinuxDeviceType::A));
        assert!(sys_opts(&s).contains(&"ro".to_string()));
        assert!(linux.devices().is_none());
        assert!(linux.seccomp().is_some() && linux.masked_paths().is_some());

        let s = spec(true);
        let linux = s.linux().as_ref().unwrap();
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(devices, crate::security::devices::allow_all_devices());
        assert!(!sys_opts(&s).contains(&"ro".to_string()));
        assert!(linux.seccomp().is_none() && linux.masked_paths().is_none());
        // Host nodes: never the ones the runtime makes itself, never a link or a directory.
        let nodes = host_devices(Path::new("/dev"));
        assert!(nodes.iter().all(|d| {
            let name = d.path().file_name().unwrap().to_str().unwrap();
            !OWN_NODES.contains(&name) && d.path().parent() == Some(Path::new("/dev"))
        }));
        assert!(nodes
            .iter()
            .any(|d| d.path() == Path::new("/dev/console") || d.typ() == LinuxDeviceType::B));
        // (Not compared with `nodes`: another process may add a loop device in between.)
        assert!(linux.devices().as_ref().is_some_and(|d| !d.is_empty()));
        assert!(host_devices(&t.path().join("missing")).is_empty());
    }
}

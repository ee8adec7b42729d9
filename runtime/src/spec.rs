//! The bundle's config.json: loading it with bounds, and the default spec decant gives a
//! container when nobody wrote one (Podman-like, so users meet the behaviour they know).

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Mount, Process,
    Root, Spec, User,
};

use crate::error::RuntimeError;
use crate::security;

/// A config.json larger than this is refused (a default seccomp profile is about 20 KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The hostname a container gets when the spec's caller does not choose one.
pub const DEFAULT_HOSTNAME: &str = "decant";

/// Reads `bundle/config.json`, returning the parsed spec and the exact bytes (kept so the
/// state directory can hold a faithful copy; re-serializing would reorder fields).
pub fn load(bundle: &Path) -> Result<(Spec, Vec<u8>), RuntimeError> {
    let path = bundle.join("config.json");
    let file = std::fs::File::open(&path).map_err(|e| RuntimeError::io(&path, "open", e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RuntimeError::io(&path, "read", e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(RuntimeError::Spec {
            path: path.display().to_string(),
            problem: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    let spec = parse(&bytes, &path)?;
    Ok((spec, bytes))
}

/// Parses config.json bytes; `path` names the file in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Spec, RuntimeError> {
    serde_json::from_slice(bytes).map_err(|e| RuntimeError::Spec {
        path: path.display().to_string(),
        problem: format!("not a valid OCI runtime config: {e}"),
    })
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns
}

fn id_map(host: u32) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host)
        .size(1u32)
        .build()
        .unwrap_or_default()
}

/// The default mounts: /proc, a tmpfs /dev with /dev/pts, /dev/shm, /dev/mqueue, and /sys
/// read-only. `rootless` drops devpts' `gid=5` (the tty group is not mapped in a one-user
/// namespace, and the kernel refuses an unmapped gid).
pub fn default_mounts(rootless: bool) -> Vec<Mount> {
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !rootless {
        pts.push("gid=5");
    }
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount("/dev/pts", "devpts", "devpts", &pts),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// A Podman-like default spec for `rootfs` running `args`: namespaces pid, mount, ipc, uts,
/// network, cgroup (when the kernel has it) and, when `rootless`, a user namespace mapping the
/// current user and group to 0; hostname "decant"; PATH and TERM; cwd /; the security
/// module's capabilities, seccomp profile and masked/read-only paths; no_new_privs.
/// No resource limits: the caller adds them (they make a working cgroup mandatory).
pub fn default_spec(rootfs: &Path, args: Vec<String>, rootless: bool) -> Spec {
    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string());

    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));
    spec.set_root(Some(root));

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(User::default());
    process.set_args(Some(args));
    process.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "TERM=xterm".to_string(),
    ]));
    process.set_cwd(PathBuf::from("/"));
    process.set_capabilities(Some(security::default_capabilities()));
    process.set_no_new_privileges(Some(true));
    process.set_rlimits(None);
    spec.set_process(Some(process));

    spec.set_hostname(Some(DEFAULT_HOSTNAME.to_string()));
    spec.set_mounts(Some(default_mounts(rootless)));

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid),
        namespace(LinuxNamespaceType::Network),
        namespace(LinuxNamespaceType::Ipc),
        namespace(LinuxNamespaceType::Uts),
        namespace(LinuxNamespaceType::Mount),
    ];
    if Path::new("/proc/self/ns/cgroup").exists() {
        namespaces.push(namespace(LinuxNamespaceType::Cgroup));
    }
    let mut linux = oci_spec::runtime::Linux::default();
    if rootless {
        namespaces.push(namespace(LinuxNamespaceType::User));
        linux.set_uid_mappings(Some(vec![id_map(nix::unistd::geteuid().as_raw())]));
        linux.set_gid_mappings(Some(vec![id_map(nix::unistd::getegid().as_raw())]));
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(None);
    linux.set_seccomp(Some(security::default_seccomp()));
    linux.set_masked_paths(Some(security::default_masked_paths()));
    linux.set_readonly_paths(Some(security::default_readonly_paths()));
    linux.set_devices(None);
    spec.set_linux(Some(linux));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_sane() {
        let s = default_spec(Path::new("/r"), vec!["true".into()], true);
        assert_eq!(s.hostname().as_deref(), Some(DEFAULT_HOSTNAME));
        let linux = s.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].container_id(), 0);
        let pts = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/pts"))
            .unwrap();
        assert!(!pts.options().as_ref().unwrap().iter().any(|o| o == "gid=5"));
        // Survives a round trip through JSON, as a bundle would.
        let bytes = serde_json::to_vec(&s).unwrap();
        let back = parse(&bytes, Path::new("config.json")).unwrap();
        assert_eq!(
            back.process().as_ref().unwrap().args().as_ref().unwrap(),
            &vec!["true".to_string()]
        );
    }

    #[test]
    fn garbage_config_is_a_one_line_error() {
        let e = parse(b"{\"process\": 7", Path::new("/b/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/b/config.json: not a valid OCI runtime config"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}

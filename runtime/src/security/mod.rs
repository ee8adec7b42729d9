//! Capabilities, seccomp, masked and read-only paths, the device allow-list.
//!
//! Defaults follow Podman's (see ../shared/notes/runtime-and-init.md); `--privileged` lifts them.
//! The order the container's init process must use, after pivot_root:
//! [`apply_masks`]; [`caps::keep_caps_across_setuid`] when switching to a non-root user;
//! setgroups/setgid/setuid; [`apply_capabilities`]; [`set_no_new_privs`];
//! [`install_seccomp`] (the last step before exec).

pub mod caps;
pub mod devices;
pub mod masks;
pub mod seccomp;
mod syscalls;

use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp};

pub use caps::all_capabilities;
pub use devices::default_devices;
pub use seccomp::seccomp_for_capabilities;
pub use syscalls::syscall_number;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("capabilities: {0}")]
    Caps(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("{path}: {problem}")]
    Mask { path: String, problem: String },
}

/// Podman's default capability set (bounding = effective = permitted; no ambient).
pub fn default_capabilities() -> LinuxCapabilities {
    caps::default_capabilities()
}

/// The default seccomp profile (an allow-list equivalent to Docker's/Podman's default) for the
/// default capability set; use [`seccomp_for_capabilities`] after --cap-add/--cap-drop.
pub fn default_seccomp() -> LinuxSeccomp {
    seccomp::seccomp_for_capabilities(&caps::default_capabilities())
}

/// Paths masked in /proc and /sys (bind /dev/null or an empty read-only tmpfs).
pub fn default_masked_paths() -> Vec<String> {
    masks::default_masked_paths()
}

/// Paths made read-only in /proc.
pub fn default_readonly_paths() -> Vec<String> {
    masks::default_readonly_paths()
}

/// In the container's process, after setuid/setgid: applies the capability sets.
pub fn apply_capabilities(caps: &LinuxCapabilities) -> Result<(), SecurityError> {
    caps::apply(caps)
}

/// Compiles and installs the filter (the last step before exec; needs no_new_privs or
/// CAP_SYS_ADMIN).
pub fn install_seccomp(profile: &LinuxSeccomp) -> Result<(), SecurityError> {
    seccomp::install(profile)
}

/// In the container's mount namespace, after pivot_root: masks and read-only paths.
pub fn apply_masks(masked: &[String], readonly: &[String]) -> Result<(), SecurityError> {
    masks::apply(masked, readonly)
}

/// Sets PR_SET_NO_NEW_PRIVS on this thread (before [`install_seccomp`] when the process no
/// longer holds CAP_SYS_ADMIN).
pub fn set_no_new_privs() -> Result<(), SecurityError> {
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| SecurityError::Caps(format!("PR_SET_NO_NEW_PRIVS: {e}")))
}

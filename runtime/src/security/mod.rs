//! Capabilities, seccomp, masked and read-only paths, the device allow-list.
//! INTERFACE ONLY until the security work lands: every function refuses.
//!
//! Defaults follow Podman's (see ../shared/notes/runtime-and-init.md); `--privileged` lifts them.

use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp};

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
    LinuxCapabilities::default()
}

/// The default seccomp profile (an allow-list equivalent to Docker's/Podman's default).
pub fn default_seccomp() -> LinuxSeccomp {
    LinuxSeccomp::default()
}

/// Paths masked in /proc and /sys (bind /dev/null or an empty read-only tmpfs).
pub fn default_masked_paths() -> Vec<String> {
    Vec::new()
}

/// Paths made read-only in /proc.
pub fn default_readonly_paths() -> Vec<String> {
    Vec::new()
}

/// In the container's process, after setuid/setgid: applies the capability sets.
pub fn apply_capabilities(caps: &LinuxCapabilities) -> Result<(), SecurityError> {
    let _ = caps;
    Err(SecurityError::Caps("not built yet".into()))
}

/// Compiles and installs the filter (the last step before exec; needs no_new_privs or
/// CAP_SYS_ADMIN).
pub fn install_seccomp(profile: &LinuxSeccomp) -> Result<(), SecurityError> {
    let _ = profile;
    Err(SecurityError::Seccomp("not built yet".into()))
}

/// In the container's mount namespace, after pivot_root: masks and read-only paths.
pub fn apply_masks(masked: &[String], readonly: &[String]) -> Result<(), SecurityError> {
    let _ = (masked, readonly);
    Err(SecurityError::Mask { path: String::new(), problem: "not built yet".into() })
}

//! Capability sets: Podman's default and applying an OCI `LinuxCapabilities` to this process.
//!
//! The order the runtime must use in the container's init process (as runc does):
//! 1. [`keep_caps_across_setuid`] when the process will switch to a non-root uid, so the
//!    permitted set survives `setuid`;
//! 2. setgroups, setgid, setuid;
//! 3. [`apply`] (it re-raises the effective set from the permitted one first, because
//!    dropping the bounding set needs CAP_SETPCAP and setuid cleared the effective set);
//! 4. `PR_SET_NO_NEW_PRIVS` ([`super::set_no_new_privs`]), then the seccomp filter, then exec.

use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::SecurityError;

/// Podman's default set (bounding = effective = permitted; inheritable and ambient empty).
pub fn default_capabilities() -> LinuxCapabilities {
    let set: Capabilities = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::NetBindService,
        Capability::Setfcap,
        Capability::Setgid,
        Capability::Setpcap,
        Capability::Setuid,
        Capability::SysChroot,
    ]
    .into_iter()
    .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    caps
}

/// Every capability the running kernel knows that this process may still pass on
/// (`--privileged`): the kernel's set (up to /proc/sys/kernel/cap_last_cap) intersected with
/// our bounding set. A caller whose bounding set lacks one (a host or a CI runner that dropped
/// CAP_SYS_RESOURCE, say) could not raise it in the container: asking for it made capset
/// fail with EPERM.
pub fn all_capabilities() -> LinuxCapabilities {
    let supported = caps::runtime::thread_all_supported();
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_else(|_| supported.clone());
    let set: Capabilities = supported
        .intersection(&bounding)
        .copied()
        .filter_map(from_kernel)
        .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    caps
}

/// Keeps the permitted set across the coming setuid (PR_SET_KEEPCAPS).
pub fn keep_caps_across_setuid() -> Result<(), SecurityError> {
    caps::securebits::set_keepcaps(true).map_err(|e| SecurityError::Caps(e.to_string()))
}

/// The `caps` crate's name for an OCI capability (they share the kernel's names).
fn to_kernel(c: &Capability) -> Result<caps::Capability, SecurityError> {
    let name = serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("CAP_{c}"));
    name.parse()
        .map_err(|_| SecurityError::Caps(format!("unknown capability {name}")))
}

fn from_kernel(c: caps::Capability) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(c.to_string())).ok()
}

/// The kernel set for an OCI set, without the capabilities this kernel does not know (a
/// newer spec on an older kernel must not fail, as with runc).
fn kernel_set(
    set: &Option<Capabilities>,
    supported: &CapsHashSet,
) -> Result<CapsHashSet, SecurityError> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let k = to_kernel(c)?;
        if supported.contains(&k) {
            out.insert(k);
        }
    }
    Ok(out)
}

/// Sets bounding, inheritable, effective, permitted and ambient sets from `spec` (a missing set
/// means empty). See the module comment for where in the init sequence this goes.
pub fn apply(spec: &LinuxCapabilities) -> Result<(), SecurityError> {
    let err = |what: &str, e: caps::errors::CapsError| SecurityError::Caps(format!("{what}: {e}"));
    let supported = caps::runtime::thread_all_supported();
    let bounding = kernel_set(spec.bounding(), &supported)?;
    let effective = kernel_set(spec.effective(), &supported)?;
    let permitted = kernel_set(spec.permitted(), &supported)?;
    let inheritable = kernel_set(spec.inheritable(), &supported)?;
    let ambient = kernel_set(spec.ambient(), &supported)?;

    let current = caps::read(None, CapSet::Permitted).map_err(|e| err("reading permitted", e))?;
    caps::set(None, CapSet::Effective, &current).map_err(|e| err("raising effective", e))?;
    let held = caps::read(None, CapSet::Bounding).map_err(|e| err("reading bounding", e))?;
    for c in held.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *c)
            .map_err(|e| err(&format!("dropping {c} from bounding"), e))?;
    }
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| err("setting inheritable", e))?;
    caps::set(None, CapSet::Effective, &effective).map_err(|e| err("setting effective", e))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| err("setting permitted", e))?;
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| err("clearing ambient", e))?;
        // The kernel raises an ambient capability only when it is both permitted and
        // inheritable. `runc spec` writes ambient caps without inheritable ones and runc
        // carries on without them; so do we (the others are raised, errors still count).
        for c in ambient
            .intersection(&inheritable)
            .filter(|c| permitted.contains(c))
        {
            caps::raise(None, CapSet::Ambient, *c)
                .map_err(|e| err(&format!("raising ambient {c}"), e))?;
        }
    } else if !ambient.is_empty() {
        return Err(SecurityError::Caps(
            "ambient capabilities are not supported by this kernel".into(),
        ));
    }
    Ok(())
}

/// The bit mask of a set as /proc/<pid>/status prints it (CapEff, CapBnd, ...).
pub fn mask(set: &Capabilities) -> Result<u64, SecurityError> {
    let mut m = 0u64;
    for c in set {
        m |= to_kernel(c)?.bitmask();
    }
    Ok(m)
}

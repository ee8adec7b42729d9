//! The device allow-list written to the devices cgroup.
//!
//! On cgroup v1 the cgroup manager writes these rules to devices.deny/devices.allow. On cgroup
//! v2 the kernel wants an eBPF device program instead; decant does not load one, so there the
//! list is not enforced: the container's /dev is a tmpfs holding only the standard nodes, and
//! without CAP_MKNOD (not in the default set) no other node can be made.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(Some(typ));
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some(access.to_string()));
    d
}

/// The default list: deny everything, then allow mknod of any node (opening one still needs
/// its own rule, and mknod itself needs CAP_MKNOD, which the default set lacks) and
/// read/write on null, zero, full, random, urandom, tty, console, ptmx and the pty slaves.
/// /dev/net/tun (c 10:200) is left out as Podman's default leaves it out: a container that
/// needs it gets it with --privileged.
pub fn default_devices() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
        rule(true, C, Some(1), Some(3), "rwm"),
        rule(true, C, Some(1), Some(5), "rwm"),
        rule(true, C, Some(1), Some(7), "rwm"),
        rule(true, C, Some(1), Some(8), "rwm"),
        rule(true, C, Some(1), Some(9), "rwm"),
        rule(true, C, Some(5), Some(0), "rwm"),
        rule(true, C, Some(5), Some(1), "rwm"),
        rule(true, C, Some(5), Some(2), "rwm"),
        rule(true, C, Some(136), None, "rwm"),
    ]
}

/// `--privileged`: every device, as Podman's `a *:* rwm`.
pub fn allow_all_devices() -> Vec<LinuxDeviceCgroup> {
    vec![rule(true, LinuxDeviceType::A, None, None, "rwm")]
}

/// What the runtime writes for a spec's list: a deny-all first unless the list starts with
/// an `a` rule of its own (a v1 group inherits its parent's `a *:* rwm`, so a list of allow
/// rules alone would restrict nothing), then the spec's rules in order, then (as runc does)
/// the default allow rules, so the standard nodes the runtime creates in /dev stay usable
/// whatever the spec says. An empty list stays empty: nothing is restricted.
pub fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Vec<LinuxDeviceCgroup> {
    let Some(first) = spec.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(spec.len() + 13);
    if first.typ() != Some(LinuxDeviceType::A) {
        out.push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
    }
    out.extend(spec.iter().cloned());
    out.extend(default_devices().into_iter().filter(|d| d.allow()));
    out
}

/// The line for devices.allow/devices.deny ("c 1:3 rwm"), or an error naming the bad field.
pub fn v1_line(d: &LinuxDeviceCgroup) -> Result<String, String> {
    let typ = match d.typ().unwrap_or_default() {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => return Err("device type p (fifo) has no devices-cgroup rule".into()),
    };
    let num = |n: Option<i64>| match n {
        None | Some(-1) => Ok("*".to_string()),
        Some(v) if (0..=0xFFF_FFFF).contains(&v) => Ok(v.to_string()),
        Some(v) => Err(format!("device number {v} out of range")),
    };
    let access = d.access().as_deref().unwrap_or("rwm");
    if access.is_empty()
        || access.len() > 3
        || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
    {
        return Err(format!(
            "device access {access:?} is not a subset of \"rwm\""
        ));
    }
    if typ == "a" {
        return Ok("a".to_string());
    }
    Ok(format!(
        "{typ} {}:{} {access}",
        num(d.major())?,
        num(d.minor())?
    ))
}

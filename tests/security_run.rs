//! The security settings of `decant run` containers, seen from inside a real container of the
//! example image (busybox root imported from testdata's root.ext4) and from the host: Podman's
//! capability set, no_new_privs, the engine's seccomp profile, masked and read-only paths, the
//! device allow-list in the devices cgroup, private ipc and cgroup namespaces, --cap-add,
//! --cap-drop, --read-only, what `exec` inherits, and what --privileged lifts.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::Env;

/// Podman's default set: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6,
/// SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10, SYS_CHROOT 18, SETFCAP 31.
const PODMAN_CAPS: u64 = 0x8004_05fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;

/// The value of `field` ("CapEff:") in a /proc/PID/status text.
fn status(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

fn hex(text: &str, field: &str) -> u64 {
    u64::from_str_radix(&status(text, field), 16).expect("hex field")
}

/// Runs `sh -c script` in a new `--rm` container with `flags`; returns stdout and stderr
/// (whatever the exit status: scripts print what they test).
fn sh(env: &Env, flags: &[&str], script: &str) -> (String, String) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["ex", "sh", "-c", script]);
    let r = env.run(&args);
    assert!(
        r.status == 0,
        "{args:?}: exit {}\nstdout: {}\nstderr: {}",
        r.status,
        r.stdout,
        r.stderr
    );
    (r.stdout, r.stderr)
}

/// The line of `out` that starts with `key=`, without the key.
fn val<'a>(out: &'a str, key: &str) -> &'a str {
    let k = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(k.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {out}"))
}

/// `decant inspect ID` as JSON (the first object when it prints an array).
fn inspect(env: &Env, id: &str) -> serde_json::Value {
    let out = env.run(&["inspect", id]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    match v {
        serde_json::Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    }
}

/// The container's init pid on the host.
fn host_pid(env: &Env, id: &str) -> i32 {
    let pid = inspect(env, id)["State"]["Pid"]
        .as_i64()
        .expect("State.Pid");
    assert!(pid > 0, "container {id} is not running");
    i32::try_from(pid).expect("pid")
}

/// The container's group in the v1 devices hierarchy (this host and CI have one: the
/// list is enforced there).
fn devices_group(id: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup/devices");
    assert!(
        root.join("devices.list").exists(),
        "this test needs the cgroup v1 devices hierarchy at {}",
        root.display()
    );
    root.join("decant").join(id)
}

/// The kernel's dev_t split (glibc's encoding: 12 bits of major, 20 of minor, spread).
fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// A block device node at the top of the host's /dev that this (root) process can open for
/// reading: its name, major and minor. (Not every node opens here: a sandbox may refuse the
/// disk itself; a loop device does.)
fn openable_block_device() -> (String, u64, u64) {
    let found = openable_block_devices();
    if !found.is_empty() {
        return found.into_iter().next().expect("one");
    }
    // A machine without one yet: `losetup -f` asks loop-control for a free device, which
    // makes its node.
    let made = std::process::Command::new("losetup").arg("-f").output();
    assert!(
        made.as_ref().is_ok_and(|o| o.status.success()),
        "no block device in /dev opens for reading and `losetup -f` made none: {made:?}"
    );
    openable_block_devices()
        .into_iter()
        .next()
        .expect("no block device in /dev opens for reading (modprobe loop makes /dev/loop0)")
}

/// The block devices of /dev that this process can open for reading, by name.
fn openable_block_devices() -> Vec<(String, u64, u64)> {
    let mut found: Vec<(String, u64, u64)> = std::fs::read_dir("/dev")
        .expect("/dev")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            if !meta.file_type().is_block_device() {
                return None;
            }
            std::fs::File::open(e.path()).ok()?;
            let rdev = meta.rdev();
            Some((
                e.file_name().to_str()?.to_string(),
                major(rdev),
                minor(rdev),
            ))
        })
        .collect();
    found.sort();
    found
}

/// A detached `sleep 60` container with `flags`; its id.
fn detached(env: &Env, flags: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["ex", "sleep", "60"]);
    env.run(&args).ok().stdout.trim().to_string()
}

fn remove(env: &Env, id: &str) {
    env.run(&["rm", "-f", id]).ok();
}

#[test]
fn device_allow_list_is_enforced() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let (name, major, minor) = openable_block_device();
    // CAP_MKNOD is not in the default set: the node is made with --cap-add MKNOD, and then
    // only the devices cgroup stands between the container and the host's device.
    let script = format!(
        "busybox mknod /tmp/d b {major} {minor}; echo mknod=$?; \
         busybox head -c 1 /tmp/d >/dev/null; echo open=$?; \
         busybox head -c 1 /dev/zero | busybox wc -c | sed 's/^/zero=/'; \
         echo x > /dev/null; echo null=$?"
    );
    let (out, err) = sh(&env, &["--cap-add", "MKNOD"], &script);
    assert_eq!(val(&out, "mknod"), "0", "{out}{err}");
    assert_eq!(val(&out, "open"), "1", "{out}{err}");
    assert!(
        err.contains("/tmp/d: Operation not permitted"),
        "opening {major}:{minor} must be refused by the devices cgroup: {err}"
    );
    assert_eq!(val(&out, "zero").trim(), "1", "{out}");
    assert_eq!(val(&out, "null"), "0", "{out}");

    // The group's list is the allow-list, not the inherited `a *:* rwm`.
    let id = detached(&env, &[]);
    let list =
        std::fs::read_to_string(devices_group(&id).join("devices.list")).expect("devices.list");
    remove(&env, &id);
    let mut lines: Vec<&str> = list.lines().collect();
    lines.sort();
    let mut want = vec![
        "b *:* m",
        "c *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 136:* rwm",
        "c 5:0 rwm",
        "c 5:1 rwm",
        "c 5:2 rwm",
    ];
    want.sort();
    assert_eq!(lines, want, "{list}");

    // --privileged: the host's node is there and opens; the group allows everything.
    let (out, err) = sh(
        &env,
        &["--privileged"],
        &format!(
            "busybox stat -c '%t:%T' /dev/{name} | sed 's/^/dev=/'; \
             busybox head -c 1 /dev/{name} >/dev/null; echo open=$?"
        ),
    );
    assert_eq!(
        val(&out, "dev"),
        format!("{major:x}:{minor:x}"),
        "{out}{err}"
    );
    assert_eq!(val(&out, "open"), "0", "{out}{err}");
    let id = detached(&env, &["--privileged"]);
    let list =
        std::fs::read_to_string(devices_group(&id).join("devices.list")).expect("devices.list");
    remove(&env, &id);
    assert_eq!(list.trim(), "a *:* rwm");
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn default_security_settings() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let (out, err) = sh(
        &env,
        &[],
        "cat /proc/self/status; \
         busybox unshare -U true; echo unshare=$?; \
         mkdir -p /mnt; busybox mount -t tmpfs none /mnt; echo mount=$?; \
         echo 1 > /proc/sys/kernel/domainname; echo procsys=$?; \
         grep ' /sys ' /proc/mounts | sed 's/^/sys=/'; \
         grep -c . /proc/keys | sed 's/^/keys=/'; \
         grep -c . /proc/timer_list | sed 's/^/timer_list=/'; \
         echo ipc=$(readlink /proc/self/ns/ipc); echo cgroupns=$(readlink /proc/self/ns/cgroup); \
         cat /proc/self/cgroup | sed 's/^/cg=/'",
    );
    for f in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(status(&out, f), format!("{PODMAN_CAPS:016x}"), "{f}");
    }
    assert_eq!(hex(&out, "CapInh:"), 0);
    assert_eq!(hex(&out, "CapAmb:"), 0);
    assert_eq!(status(&out, "NoNewPrivs:"), "1");
    assert_eq!(status(&out, "Seccomp:"), "2");
    // unshare(CLONE_NEWUSER) needs no capability from the kernel: only the engine's seccomp
    // profile (namespaces are for CAP_SYS_ADMIN) refuses it.
    assert_eq!(val(&out, "unshare"), "1", "{out}");
    assert!(
        err.contains("unshare(0x10000000): Operation not permitted"),
        "{err}"
    );
    assert_ne!(val(&out, "mount"), "0", "{out}");
    assert!(err.contains("mount: permission denied"), "{err}");
    assert_ne!(val(&out, "procsys"), "0", "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    let sys = val(&out, "sys");
    assert!(sys.contains(" ro,") || sys.contains(" ro "), "{sys}");
    // Masked: /dev/null bound over the files.
    assert_eq!(val(&out, "keys"), "0", "{out}");
    assert_eq!(val(&out, "timer_list"), "0", "{out}");
    assert!(
        !std::fs::read_to_string("/proc/timer_list")
            .expect("host timer_list")
            .is_empty(),
        "the host's /proc/timer_list is not empty"
    );
    let host_ns = |n: &str| {
        std::fs::read_link(format!("/proc/self/ns/{n}"))
            .expect("ns link")
            .display()
            .to_string()
    };
    assert_ne!(val(&out, "ipc"), host_ns("ipc"));
    assert_ne!(val(&out, "cgroupns"), host_ns("cgroup"));
    let cg: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("cg=")).collect();
    assert!(!cg.is_empty());
    assert!(cg.iter().all(|l| l.ends_with(":/")), "{cg:?}");
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn cap_add_cap_drop_and_read_only() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let script = "cat /proc/self/status; touch /tmp/f; busybox chown 1000 /tmp/f; echo chown=$?; \
                  busybox ip link set lo mtu 1400; echo mtu=$?";
    let (out, err) = sh(
        &env,
        &["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"],
        script,
    );
    let want = (PODMAN_CAPS | CAP_NET_ADMIN) & !CAP_CHOWN;
    assert_eq!(hex(&out, "CapEff:"), want, "{out}");
    assert_eq!(hex(&out, "CapBnd:"), want, "{out}");
    assert_eq!(val(&out, "chown"), "1", "{out}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(val(&out, "mtu"), "0", "{out}{err}");
    // The default set: chown works, NET_ADMIN is missing.
    let (out, _) = sh(&env, &[], script);
    assert_eq!(hex(&out, "CapEff:"), PODMAN_CAPS);
    assert_eq!(val(&out, "chown"), "0", "{out}");
    assert_ne!(val(&out, "mtu"), "0", "{out}");

    let (out, err) = sh(
        &env,
        &["--read-only", "--tmpfs", "/tmp"],
        "touch /x; echo root=$?; touch /tmp/y; echo tmp=$?",
    );
    assert_eq!(val(&out, "root"), "1", "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(val(&out, "tmp"), "0", "{out}{err}");
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn exec_joins_the_container_under_its_settings() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = detached(&env, &[]);
    let pid = host_pid(&env, &id);
    let r = env
        .run(&[
            "exec",
            &id,
            "sh",
            "-c",
            "for n in mnt net ipc uts pid cgroup; do echo $n=$(readlink /proc/self/ns/$n); done; \
             cat /proc/self/cgroup | sed 's/^/cg=/'; cat /proc/self/status",
        ])
        .ok();
    let out = r.stdout;
    for n in ["mnt", "net", "ipc", "uts", "pid", "cgroup"] {
        let host = std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
            .expect("ns link")
            .display()
            .to_string();
        assert_eq!(val(&out, n), host, "{n} namespace");
    }
    let cg: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("cg=")).collect();
    assert!(!cg.is_empty());
    assert!(cg.iter().all(|l| l.ends_with(":/")), "{cg:?}");
    let host_cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        host_cg.contains(&format!("devices:/decant/{id}")),
        "{host_cg}"
    );
    assert_eq!(status(&out, "CapEff:"), format!("{PODMAN_CAPS:016x}"));
    assert_eq!(status(&out, "CapBnd:"), format!("{PODMAN_CAPS:016x}"));
    assert_eq!(status(&out, "NoNewPrivs:"), "1");
    assert_eq!(status(&out, "Seccomp:"), "2");
    // The group the exec'd process sits at the root of is the container's.
    let tasks = std::fs::read_to_string(devices_group(&id).join("cgroup.procs")).expect("procs");
    assert!(
        tasks.lines().any(|l| l.trim() == pid.to_string()),
        "{tasks}"
    );
    remove(&env, &id);
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn privileged_lifts_the_defaults() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let (out, err) = sh(
        &env,
        &["--privileged"],
        "cat /proc/self/status; \
         mkdir -p /mnt; busybox mount -t tmpfs none /mnt; echo mount=$?; \
         busybox unshare -U true; echo unshare=$?; \
         grep ' /sys ' /proc/mounts | sed 's/^/sys=/'; \
         grep -c . /proc/timer_list | sed 's/^/timer_list=/'; \
         grep -c ' /proc/sys ' /proc/self/mountinfo | sed 's/^/procsys=/'",
    );
    // Everything the kernel knows that the caller may pass on.
    let own = std::fs::read_to_string("/proc/self/status").expect("status");
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("cap_last_cap");
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let want = hex(&own, "CapBnd:") & known;
    assert_eq!(hex(&out, "CapEff:"), want, "{out}");
    assert_eq!(hex(&out, "CapBnd:"), want, "{out}");
    assert_eq!(status(&out, "NoNewPrivs:"), "0");
    assert_eq!(status(&out, "Seccomp:"), "0");
    assert_eq!(val(&out, "mount"), "0", "{out}{err}");
    assert_eq!(val(&out, "unshare"), "0", "{out}{err}");
    let sys = val(&out, "sys");
    assert!(sys.contains(" sysfs rw,"), "{sys}");
    assert_ne!(val(&out, "timer_list"), "0", "unmasked: {out}");
    // /proc/sys is not a read-only bind of its own: it is part of /proc.
    assert_eq!(val(&out, "procsys"), "0", "{out}");

    // The host's nodes are in /dev (not its pts/shm/mqueue subtrees). Listed before the run:
    // a node another process adds meanwhile (a new loop device) is not expected.
    let host: Vec<String> = std::fs::read_dir("/dev")
        .expect("/dev")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::symlink_metadata(e.path())
                .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (out, _) = sh(
        &env,
        &["--privileged"],
        "busybox ls /dev; echo pts=$(busybox ls /dev/pts)",
    );
    let inside: Vec<&str> = out.split_whitespace().collect();
    for n in &host {
        assert!(inside.contains(&n.as_str()), "/dev/{n} missing: {inside:?}");
    }
    // /dev/pts is the container's own devpts instance: no host pty shows there.
    assert_eq!(val(&out, "pts"), "ptmx", "{out}");

    let id = detached(&env, &["--privileged"]);
    assert_eq!(inspect(&env, &id)["HostConfig"]["Privileged"], true);
    remove(&env, &id);
    let id = detached(&env, &[]);
    assert_eq!(inspect(&env, &id)["HostConfig"]["Privileged"], false);
    remove(&env, &id);
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn rootless_privileged_gets_the_host_nodes_bound() {
    if !common::require_root("setpriv to nobody needs root") {
        return;
    }
    let dirs = common::user::UserDirs::new(
        "decant-sec-rootless",
        common::user::NOBODY,
        common::user::NOBODY,
    );
    let img = dirs.example_copy();
    let run = |args: &[&str]| {
        let r = dirs.run(args);
        assert_eq!(r.status, 0, "{args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    };
    run(&["import", "-t", "ex", img.to_str().expect("utf8")]);
    let (name, major, minor) = openable_block_device();
    let out = run(&[
        "run",
        "--rm",
        "--privileged",
        "ex",
        "sh",
        "-c",
        &format!(
            "busybox stat -c '%t:%T' /dev/{name} | sed 's/^/dev=/'; grep ' /sys ' /proc/mounts \
             | sed 's/^/sys=/'; grep Seccomp: /proc/self/status"
        ),
    ]);
    assert_eq!(val(&out, "dev"), format!("{major:x}:{minor:x}"), "{out}");
    assert!(val(&out, "sys").contains(" sysfs rw,"), "{out}");
    assert_eq!(status(&out, "Seccomp:"), "0");
    assert_eq!(run(&["ps", "-a", "-q"]).trim(), "");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(dirs.path().to_str().expect("utf8")),
        "a mount is left"
    );
}

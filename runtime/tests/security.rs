//! Security defaults on a real kernel: capabilities, seccomp and masks are applied in a child
//! process (this test binary re-run in a child mode) so the test process keeps its privileges.

use std::process::Command;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};
use runtime::security::{self, SecurityError};

const MODE: &str = "DECANT_SECURITY_CHILD";

/// Runs `child_entry` of this binary in `mode`; returns its "RESULT " lines.
fn run_child(mode: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .output()
        .expect("re-running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {mode} failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest's "test child_entry ... " has no newline before our first line.
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .map(str::to_string)
        .collect()
}

/// Whether the tests can run (root); otherwise says so on stderr, past libtest's capture.
fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"SKIPPED: needs root (namespaces, mounts, cgroups); CI runs as root and runs it\n",
    );
    false
}

fn errno_of(r: nix::Result<impl Sized>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn status_field(name: &str) -> String {
    // Capabilities are per thread and libtest may run us on a thread other than the leader.
    let s = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// The child side; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let result = match mode.as_str() {
        "caps" => child_caps(),
        "seccomp" => child_seccomp(),
        "custom_seccomp" => child_custom_seccomp(),
        "masks" => child_masks(),
        other => Err(format!("unknown mode {other}")),
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("RESULT {l}");
            }
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("child error: {e}");
            std::process::exit(3)
        }
    }
}

fn child_caps() -> Result<Vec<String>, String> {
    security::apply_capabilities(&security::default_capabilities()).map_err(|e| e.to_string())?;
    Ok(["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
        .iter()
        .map(|f| format!("{f} {}", status_field(f)))
        .collect())
}

fn child_seccomp() -> Result<Vec<String>, String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    // As the runtime does: drop to the default capabilities, then no_new_privs, then seccomp.
    security::apply_capabilities(&security::default_capabilities()).map_err(|e| e.to_string())?;
    security::set_no_new_privs().map_err(|e| e.to_string())?;
    security::install_seccomp(&security::default_seccomp()).map_err(|e| e.to_string())?;
    let mut out = vec![
        format!("mode {}", status_field("Seccomp:")),
        format!(
            "mount {}",
            errno_of(mount(
                Some("none"),
                "/mnt",
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>
            ))
        ),
        format!(
            "unshare_user {}",
            errno_of(unshare(CloneFlags::CLONE_NEWUSER))
        ),
        format!("unshare_ns {}", errno_of(unshare(CloneFlags::CLONE_NEWNS))),
        format!(
            "unshare_files {}",
            errno_of(unshare(CloneFlags::CLONE_FILES))
        ),
        format!("getpid {}", nix::unistd::getpid().as_raw() > 0),
    ];
    // SAFETY: personality only changes this process's execution domain flags; 0xffffffff
    // queries and ADDR_NO_RANDOMIZE (0x0040000) must be refused by the filter.
    let query = unsafe { libc::personality(0xffff_ffff) };
    // SAFETY: as above.
    let odd = unsafe { libc::personality(0x0040000) };
    out.push(format!("personality_query {}", query >= 0));
    out.push(format!(
        "personality_odd {odd} {}",
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    ));
    // SAFETY: clone3 with a null argument pointer and size 0 only probes the filter: the
    // filter answers ENOSYS before the kernel would look at the (absent) arguments.
    let clone3 = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    out.push(format!(
        "clone3 {clone3} {}",
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    ));
    let t = std::thread::spawn(|| 41 + 1)
        .join()
        .map_err(|_| "thread panicked".to_string())?;
    out.push(format!("thread {t}"));
    let mut buf = [0u8; 4];
    let f = std::fs::File::open("/dev/zero").map_err(|e| e.to_string())?;
    use std::io::Read;
    (&f).read_exact(&mut buf).map_err(|e| e.to_string())?;
    out.push(format!("read {}", buf == [0; 4]));
    let child = Command::new("/bin/true")
        .status()
        .map_err(|e| e.to_string())?;
    out.push(format!("spawn {}", child.success()));
    Ok(out)
}

fn child_custom_seccomp() -> Result<Vec<String>, String> {
    // Default allow, mkdir answers EACCES, sethostname answers EINVAL only for a length above 3: three
    // actions stacked in one profile.
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    let mkdir = LinuxSyscallBuilder::default()
        .names(vec![
            "mkdir".to_string(),
            "mkdirat".to_string(),
            "no_such_syscall".to_string(),
        ])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(13u32)
        .build()
        .map_err(|e| e.to_string())?;
    let uname = LinuxSyscallBuilder::default()
        .names(vec!["sethostname".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(22u32)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(1usize)
            .value(3u64)
            .op(LinuxSeccompOperator::ScmpCmpGt)
            .build()
            .map_err(|e| e.to_string())?])
        .build()
        .map_err(|e| e.to_string())?;
    profile.set_syscalls(Some(vec![mkdir, uname]));
    security::set_no_new_privs().map_err(|e| e.to_string())?;
    security::install_seccomp(&profile).map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("decant-seccomp-{}", std::process::id()));
    let mk = std::fs::create_dir(&dir).map_err(|e| e.raw_os_error().unwrap_or(0));
    // sethostname with a length above 3 gets EINVAL from the filter.
    // SAFETY: sethostname reads `len` bytes from a valid buffer; "abcd" (len 4 > 3) is refused
    // by the filter before the kernel changes anything.
    let long = unsafe { libc::sethostname(c"abcd".as_ptr(), 4) };
    let long_errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    Ok(vec![
        format!("mkdir {mk:?}"),
        format!("sethostname_long {long} {long_errno}"),
    ])
}

fn child_masks() -> Result<Vec<String>, String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    security::apply_masks(
        &security::default_masked_paths(),
        &security::default_readonly_paths(),
    )
    .map_err(|e| e.to_string())?;
    let len = |p: &str| std::fs::read(p).map(|b| b.len()).map_err(|e| e.to_string());
    let (kcore, keys, timers) = (
        len("/proc/kcore"),
        len("/proc/keys"),
        len("/proc/timer_list"),
    );
    let acpi = std::fs::read_dir("/proc/acpi")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/kernel/domainname")
        .map(|_| 0)
        .map_err(|e| e.raw_os_error().unwrap_or(0));
    let trigger = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .map(|_| 0)
        .map_err(|e| e.raw_os_error().unwrap_or(0));
    let firmware = std::fs::read_dir("/sys/firmware")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let readable = std::fs::read_to_string("/proc/sys/kernel/ostype").map(|s| s.trim().to_string());
    Ok(vec![
        format!("kcore {kcore:?}"),
        format!("keys {keys:?}"),
        format!("timer_list {timers:?}"),
        format!("acpi {acpi:?}"),
        format!("sys_write {write:?}"),
        format!("sysrq_write {trigger:?}"),
        format!("firmware {firmware:?}"),
        format!("ostype {readable:?}"),
    ])
}

#[test]
fn default_capabilities_are_podmans() {
    if !need_root() {
        return;
    }
    let caps = security::default_capabilities();
    let set = caps.bounding().clone().expect("bounding");
    let mask = security::caps::mask(&set).expect("mask");
    // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7, SETPCAP 8,
    // NET_BIND_SERVICE 10, SYS_CHROOT 18, SETFCAP 31.
    assert_eq!(mask, 0x8004_05fb);
    let lines = run_child("caps");
    let want = format!("{mask:016x}");
    for (field, expect) in [
        ("CapEff:", want.as_str()),
        ("CapPrm:", want.as_str()),
        ("CapBnd:", want.as_str()),
        ("CapInh:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
    ] {
        let got = lines
            .iter()
            .find_map(|l| l.strip_prefix(field))
            .map(str::trim);
        assert_eq!(got, Some(expect), "{field} in {lines:?}");
    }
}

#[test]
fn default_seccomp_denies_mount_and_namespaces() {
    if !need_root() {
        return;
    }
    let lines = run_child("seccomp");
    let has = |l: &str| lines.iter().any(|x| x == l);
    assert!(has("mode 2"), "{lines:?}");
    assert!(has("mount EPERM"), "{lines:?}");
    assert!(has("unshare_user EPERM"), "{lines:?}");
    assert!(has("unshare_ns EPERM"), "{lines:?}");
    assert!(has("unshare_files ok"), "{lines:?}");
    assert!(has("getpid true"), "{lines:?}");
    assert!(has("personality_query true"), "{lines:?}");
    assert!(has("personality_odd -1 1"), "{lines:?}");
    assert!(has("clone3 -1 38"), "{lines:?}");
    assert!(has("thread 42"), "{lines:?}");
    assert!(has("read true"), "{lines:?}");
    assert!(has("spawn true"), "{lines:?}");
}

#[test]
fn custom_profile_stacks_actions_and_skips_unknown_names() {
    if !need_root() {
        return;
    }
    let lines = run_child("custom_seccomp");
    assert!(lines.iter().any(|l| l == "mkdir Err(13)"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "sethostname_long -1 22"),
        "{lines:?}"
    );
}

#[test]
fn masks_hide_kcore_and_make_proc_sys_readonly() {
    if !need_root() {
        return;
    }
    let lines = run_child("masks");
    let has = |l: &str| lines.iter().any(|x| x == l);
    // This kernel may lack some of the masked files; each one present must be masked.
    for (path, line) in [
        ("/proc/kcore", "kcore Ok(0)"),
        ("/proc/keys", "keys Ok(0)"),
        ("/proc/timer_list", "timer_list Ok(0)"),
        ("/proc/acpi", "acpi Ok(0)"),
        ("/sys/firmware", "firmware Ok(0)"),
        ("/proc/sysrq-trigger", "sysrq_write Err(30)"),
    ] {
        if std::path::Path::new(path).exists() {
            assert!(has(line), "{path}: {lines:?}");
        }
    }
    assert!(has("sys_write Err(30)"), "{lines:?}");
    assert!(has("ostype Ok(\"Linux\")"), "{lines:?}");
}

#[test]
fn default_profile_compiles_for_both_architectures() {
    for arch in ["x86_64", "aarch64"] {
        let programs = security::seccomp::compile_for(&security::default_seccomp(), arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        // The default filter and the ENOSYS one for clone3.
        assert_eq!(programs.len(), 2, "{arch}");
        assert!(programs.iter().all(|p| p.len() < 4096), "{arch}");
    }
    let admin = {
        let mut c = security::default_capabilities();
        let mut b = c.bounding().clone().unwrap_or_default();
        b.insert(oci_spec::runtime::Capability::SysAdmin);
        c.set_bounding(Some(b));
        c
    };
    let p = security::seccomp_for_capabilities(&admin);
    let names: Vec<&String> = p
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names())
        .collect();
    assert!(names.iter().any(|n| *n == "mount"));
    let d = security::default_seccomp();
    let names: Vec<&String> = d
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names())
        .collect();
    assert!(!names
        .iter()
        .any(|n| ["mount", "kexec_load", "bpf", "keyctl", "reboot"].contains(&n.as_str())));
    assert!(
        names.iter().any(|n| *n == "chroot"),
        "SYS_CHROOT is in the default set"
    );
}

#[test]
fn hostile_profiles_are_refused() {
    let err = |p: &LinuxSeccomp| match security::seccomp::compile_for(p, "x86_64") {
        Err(SecurityError::Seccomp(m)) => m,
        other => panic!("expected an error, got {other:?}"),
    };
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActNotify);
    assert!(err(&p).contains("SCMP_ACT_NOTIFY"));

    let arg = |index: usize| {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(1u64)
            .build()
            .expect("arg")
    };
    let rule = |args| {
        LinuxSyscallBuilder::default()
            .names(vec!["read".to_string()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(args)
            .build()
            .expect("rule")
    };
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActErrno);
    p.set_syscalls(Some(vec![rule(vec![arg(9)])]));
    assert!(err(&p).contains("syscalls[0]"), "{}", err(&p));
    p.set_syscalls(Some(vec![rule((0..7).map(arg).collect())]));
    assert!(err(&p).contains("at most 6"));
    p.set_syscalls(Some(vec![rule(vec![]); 5000]));
    assert!(err(&p).contains("5000"));
    assert!(security::seccomp::compile_for(&p, "sparc").is_err());
    // 700 six-condition alternatives for one call overflow a BPF program: an error, not a panic.
    let mut big = Vec::new();
    for _ in 0..700 {
        big.push(rule((0..6).map(arg).collect()));
    }
    p.set_syscalls(Some(big));
    assert!(security::seccomp::compile_for(&p, "x86_64").is_err());
}

#[test]
fn device_rules_start_from_deny_all_and_keep_the_standard_nodes() {
    use oci_spec::runtime::LinuxDeviceType;
    use runtime::security::devices::{allow_all_devices, effective_rules, v1_line};
    let lines = |rules: &[oci_spec::runtime::LinuxDeviceCgroup]| -> Vec<(bool, String)> {
        rules
            .iter()
            .map(|d| (d.allow(), v1_line(d).expect("line")))
            .collect()
    };
    let default = lines(&effective_rules(&security::default_devices()));
    assert_eq!(default.first(), Some(&(false, "a".to_string())));
    for want in [
        "c 1:3 rwm",
        "c 1:9 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
        "b *:* m",
    ] {
        assert!(
            default.contains(&(true, want.to_string())),
            "{want} in {default:?}"
        );
    }
    // Podman's default leaves /dev/net/tun out; no rule opens a block device.
    assert!(!default.iter().any(|(a, l)| *a && l.starts_with("c 10:200")));
    assert!(!default
        .iter()
        .any(|(a, l)| *a && l.starts_with('b') && l != "b *:* m"));
    // A list of allow rules alone would leave the inherited `a *:* rwm`: a deny-all comes
    // first.
    let only_allow: Vec<_> = security::default_devices()
        .into_iter()
        .filter(|d| d.allow())
        .collect();
    assert_eq!(
        lines(&effective_rules(&only_allow)).first(),
        Some(&(false, "a".to_string()))
    );
    // --privileged: the allow-all stays first, nothing denies.
    let all = lines(&effective_rules(&allow_all_devices()));
    assert_eq!(all.first(), Some(&(true, "a".to_string())));
    assert!(all.iter().all(|(a, _)| *a), "{all:?}");
    assert_eq!(
        allow_all_devices()[0].typ(),
        Some(LinuxDeviceType::A),
        "allow-all is type a"
    );
    assert!(effective_rules(&[]).is_empty());
}

#[test]
fn all_capabilities_stay_within_the_callers_bounding_set() {
    let all = security::all_capabilities();
    let mask = security::caps::mask(&all.bounding().clone().expect("bounding")).expect("mask");
    let bnd = u64::from_str_radix(&status_field("CapBnd:"), 16).expect("CapBnd");
    assert_eq!(mask & !bnd, 0, "{mask:x} asks for more than {bnd:x}");
    // Every capability of the bounding set the kernel knows is in it.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    assert_eq!(mask, bnd & known);
}

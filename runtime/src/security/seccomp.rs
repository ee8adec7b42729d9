//! The default seccomp profile and the compiler from an OCI `LinuxSeccomp` to BPF.
//!
//! The profile follows the one Docker and Podman ship: deny (EPERM) by default, allow the
//! syscalls ordinary programs use, and allow the dangerous ones (mount, bpf, reboot, module
//! loading, ...) only when the container holds the capability that makes them meaningful.
//! Two places are stricter than Docker: `unshare` is allowed without CAP_SYS_ADMIN but only
//! without namespace flags (Docker denies it outright), and `clone3`, whose flags live in
//! memory BPF cannot read, answers ENOSYS so libc falls back to `clone`, which we can check.
//!
//! seccompiler compiles one filter with a single "match" action. An OCI profile has one action
//! per rule, so we stack filters: one carries the default action and allows every syscall any
//! rule names (with that rule's argument conditions), and one more per other action returns that
//! action for its rules and allows the rest. The kernel runs every stacked filter and keeps the
//! most restrictive answer, so a syscall gets its rule's action and anything unnamed gets the
//! default. When rules of different actions match the same call, the most restrictive wins.
//!
//! Limits of seccompiler that users may meet: the filter accepts only the native architecture
//! (a 32-bit x86 syscall from a compat binary kills the process instead of running it), the
//! `SCMP_ACT_NOTIFY` action is refused, and the `SECCOMP_FILTER_FLAG_LOG`/`SPEC_ALLOW` flags
//! are ignored (TSYNC is honoured).

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscalls::syscall_number;
use super::SecurityError;

/// Flags of `clone`/`unshare` that create namespaces: CLONE_NEWNS, CLONE_NEWCGROUP,
/// CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET.
pub const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Allowed for every container whatever its capabilities. Names that do not exist on the
/// running architecture are skipped when the filter is compiled.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
    "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
    "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "sync_file_range2", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
    // Architecture-specific helpers (x86_64; the arm ones are absent from aarch64's table
    // and skipped there).
    "arch_prctl", "modify_ldt",
    // ptrace cannot bypass seccomp since Linux 4.8, which Docker relies on too.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
];

/// Syscalls allowed only when the container holds the capability that governs them.
#[rustfmt::skip]
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "open_tree_attr",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "listmount",
            "statmount",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, &["process_madvise"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Personalities a program may switch to: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32 with
/// UNAME26, and the 0xffffffff query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The default profile for a container whose bounding set is `caps` (Docker's rule: privileged
/// syscalls follow the capabilities).
pub fn seccomp_for_capabilities(caps: &LinuxCapabilities) -> LinuxSeccomp {
    let held = |c: Capability| caps.bounding().as_ref().is_some_and(|b| b.contains(&c));
    let mut syscalls = vec![syscall(
        ALLOWED.iter().copied(),
        LinuxSeccompAction::ScmpActAllow,
    )];
    let mut extra: Vec<&str> = Vec::new();
    for (cap, names) in BY_CAPABILITY {
        if held(*cap) {
            for n in names.iter() {
                if !extra.contains(n) {
                    extra.push(n);
                }
            }
        }
    }
    if !extra.is_empty() {
        syscalls.push(syscall(
            extra.iter().copied(),
            LinuxSeccompAction::ScmpActAllow,
        ));
    }
    for p in PERSONALITIES {
        syscalls.push(with_args(
            syscall(["personality"], LinuxSeccompAction::ScmpActAllow),
            vec![arg(0, *p, None, LinuxSeccompOperator::ScmpCmpEq)],
        ));
    }
    // AF_VSOCK (40) reaches the host's hypervisor services: Docker denies it.
    syscalls.push(with_args(
        syscall(["socket"], LinuxSeccompAction::ScmpActAllow),
        vec![arg(0, 40, None, LinuxSeccompOperator::ScmpCmpNe)],
    ));
    if !held(Capability::SysAdmin) {
        // Threads and plain forks, never new namespaces.
        for name in ["clone", "unshare"] {
            syscalls.push(with_args(
                syscall([name], LinuxSeccompAction::ScmpActAllow),
                vec![arg(
                    0,
                    NAMESPACE_FLAGS,
                    Some(0),
                    LinuxSeccompOperator::ScmpCmpMaskedEq,
                )],
            ));
        }
        let mut clone3 = syscall(["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    } else {
        syscalls.push(syscall(["clone"], LinuxSeccompAction::ScmpActAllow));
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(Some(vec![
        oci_spec::runtime::Arch::ScmpArchX86_64,
        oci_spec::runtime::Arch::ScmpArchX86,
        oci_spec::runtime::Arch::ScmpArchX32,
        oci_spec::runtime::Arch::ScmpArchAarch64,
        oci_spec::runtime::Arch::ScmpArchArm,
    ]));
    profile.set_syscalls(Some(syscalls));
    profile
}

fn syscall<'a>(
    names: impl IntoIterator<Item = &'a str>,
    action: LinuxSeccompAction,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.into_iter().map(str::to_string).collect());
    s.set_action(action);
    s
}

fn with_args(mut s: LinuxSyscall, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    s.set_args(Some(args));
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field has a default, so building cannot fail.
    b.build().unwrap_or_default()
}

/// Caps on what a profile may ask for, so a hostile config.json cannot make us build an
/// unbounded program (the kernel refuses more than 4096 instructions per filter anyway).
const MAX_RULES: usize = 4096;
const MAX_ARGS: usize = 6;

/// Per syscall number, the alternatives that match it (`None`: it matches unconditionally).
type RuleMap = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// The BPF programs for `profile` on the architecture we run on, in installation order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SecurityError> {
    compile_for(profile, std::env::consts::ARCH)
}

/// As [`compile`], for a named architecture ("x86_64" or "aarch64").
pub fn compile_for(profile: &LinuxSeccomp, arch: &str) -> Result<Vec<BpfProgram>, SecurityError> {
    compile_with(profile, arch, build_allow_list)
}

/// `compile_for` with the builder of the allow-list program given (the tests compare ours
/// with seccompiler's).
fn compile_with(
    profile: &LinuxSeccomp,
    arch: &str,
    allow_list: fn(RuleMap, SeccompAction, TargetArch) -> Result<BpfProgram, SecurityError>,
) -> Result<Vec<BpfProgram>, SecurityError> {
    let target = TargetArch::try_from(arch)
        .map_err(|e| SecurityError::Seccomp(format!("architecture {arch}: {e}")))?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let empty = Vec::new();
    let rules = profile.syscalls().as_ref().unwrap_or(&empty);
    if rules.len() > MAX_RULES {
        return Err(SecurityError::Seccomp(format!(
            "profile has {} syscall rules, more than the {MAX_RULES} supported",
            rules.len()
        )));
    }
    // Per action: syscall number → alternatives (None = unconditional).
    let mut by_action: Vec<(SeccompAction, RuleMap)> = Vec::new();
    let mut named: RuleMap = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let act = action(
            rule.action(),
            rule.errno_ret().or(profile.default_errno_ret()),
        )?;
        let conditions = conditions(rule.args().as_deref().unwrap_or(&[]), i)?;
        for name in rule.names() {
            let Some(nr) = syscall_number(arch, name) else {
                continue;
            };
            add(&mut named, nr, &conditions, i)?;
            if act == SeccompAction::Allow {
                continue;
            }
            let slot = match by_action.iter().position(|(a, _)| *a == act) {
                Some(p) => p,
                None => {
                    by_action.push((act.clone(), BTreeMap::new()));
                    by_action.len() - 1
                }
            };
            if let Some((_, map)) = by_action.get_mut(slot) {
                add(map, nr, &conditions, i)?;
            }
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(allow_list(named, default.clone(), target)?);
    }
    // A rule naming the default action explicitly still gets its own filter, so it wins over
    // an allow rule for the same call as any other action would.
    for (act, map) in by_action {
        programs.push(build(map, SeccompAction::Allow, act, target)?);
    }
    Ok(programs)
}

fn add(
    map: &mut RuleMap,
    nr: i64,
    conditions: &[SeccompCondition],
    index: usize,
) -> Result<(), SecurityError> {
    let entry = map.entry(nr).or_insert_with(|| Some(Vec::new()));
    if conditions.is_empty() {
        *entry = None;
    } else if let Some(list) = entry {
        let rule = SeccompRule::new(conditions.to_vec())
            .map_err(|e| SecurityError::Seccomp(format!("syscalls[{index}]: {e}")))?;
        list.push(rule);
    }
    Ok(())
}

fn build(
    map: RuleMap,
    mismatch: SeccompAction,
    matched: SeccompAction,
    target: TargetArch,
) -> Result<BpfProgram, SecurityError> {
    let rules = map
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, matched, target)
        .map_err(|e| SecurityError::Seccomp(format!("building filter: {e}")))?;
    BpfProgram::try_from(filter)
        .map_err(|e| SecurityError::Seccomp(format!("compiling filter: {e}")))
}

/// The allow-list program: what `build(map, default, Allow, target)` decides, in far fewer
/// instructions. seccompiler tests one syscall number after another (about 4 instructions
/// each: 1,600 for the usual profile), and the kernel converts and JIT-compiles every
/// instruction at each container start (about 4 ms here). The syscalls allowed without
/// conditions are mostly runs of consecutive numbers, tested here as ranges (4 instructions
/// a range); the few with argument conditions keep seccompiler's chains, and the ranges take
/// the place of its final "not listed" return, which only the fall-through path reaches
/// with the syscall number still loaded. `tests::allow_list_matches_seccompiler` runs both
/// programs in a BPF interpreter over every syscall number and many arguments.
fn build_allow_list(
    map: RuleMap,
    default: SeccompAction,
    target: TargetArch,
) -> Result<BpfProgram, SecurityError> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut conditional = RuleMap::new();
    for (nr, rules) in map {
        match rules {
            Some(r) => {
                conditional.insert(nr, Some(r));
            }
            None => {
                let Ok(n) = u32::try_from(nr) else { continue };
                match ranges.last_mut() {
                    Some((_, end)) if end.checked_add(1) == Some(n) => *end = n,
                    _ => ranges.push((n, n)),
                }
            }
        }
    }
    let ret_default = bpf_stmt(BPF_RET | BPF_K, u32::from(default.clone()));
    let had_conditional = !conditional.is_empty();
    let mut prog = build(conditional, default, SeccompAction::Allow, target)?;
    // seccompiler's last instruction is the return for a number it does not list.
    prog.pop();
    if !had_conditional {
        // With no rules it stops after the architecture check, before loading the number.
        prog.push(bpf_stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_NR));
    }
    for (a, b) in ranges {
        prog.push(bpf_jump(BPF_JMP | BPF_JGT | BPF_K, b, 3, 0));
        prog.push(bpf_jump(BPF_JMP | BPF_JGE | BPF_K, a, 0, 1));
        prog.push(bpf_stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
        prog.push(ret_default.clone());
    }
    prog.push(ret_default);
    if prog.len() > BPF_MAXINSNS {
        return Err(SecurityError::Seccomp(format!(
            "the filter needs {} instructions, more than the kernel's {BPF_MAXINSNS}",
            prog.len()
        )));
    }
    Ok(prog)
}

/// The kernel's limit on a classic BPF program.
const BPF_MAXINSNS: usize = 4096;
/// Offset of the syscall number in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_RET: u16 = 0x06;
const BPF_K: u16 = 0x00;

fn bpf_stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SecurityError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SecurityError::Seccomp(
                "SCMP_ACT_NOTIFY is not supported by decant's seccomp compiler".into(),
            ))
        }
    })
}

fn conditions(
    args: &[LinuxSeccompArg],
    index: usize,
) -> Result<Vec<SeccompCondition>, SecurityError> {
    if args.len() > MAX_ARGS {
        return Err(SecurityError::Seccomp(format!(
            "syscalls[{index}]: {} argument conditions, at most {MAX_ARGS}",
            args.len()
        )));
    }
    args.iter()
        .map(|a| {
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
                LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
                LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
                LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
                LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
                LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
                // libseccomp: (arg & value) == valueTwo.
                LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
            };
            let value = match a.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                _ => a.value(),
            };
            let idx = u8::try_from(a.index()).map_err(|_| {
                SecurityError::Seccomp(format!(
                    "syscalls[{index}]: argument index {} out of range",
                    a.index()
                ))
            })?;
            SeccompCondition::new(idx, SeccompCmpArgLen::Qword, op, value).map_err(|e| {
                SecurityError::Seccomp(format!("syscalls[{index}]: argument {}: {e}", a.index()))
            })
        })
        .collect()
}

/// Compiles `profile` and installs it on the calling thread (all threads with TSYNC). The
/// caller must have set no_new_privs or hold CAP_SYS_ADMIN.
pub fn install(profile: &LinuxSeccomp) -> Result<(), SecurityError> {
    let programs = compile(profile)?;
    let tsync = profile
        .flags()
        .as_ref()
        .is_some_and(|f| f.contains(&LinuxSeccompFilterFlag::SeccompFilterFlagTsync));
    for program in &programs {
        let result = if tsync {
            seccompiler::apply_filter_all_threads(program)
        } else {
            seccompiler::apply_filter(program)
        };
        result.map_err(|e| SecurityError::Seccomp(format!("installing filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for what seccomp programs use, over `struct seccomp_data`
    /// (nr, arch, instruction pointer, six 64-bit arguments). Anything else fails the test.
    fn run(prog: &[seccompiler::sock_filter], data: &[u8; 64]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = prog.get(pc).expect("ran past the end of the program");
            let k = i.k;
            match i.code {
                0x20 => {
                    let o = k as usize;
                    a = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => a &= k,
                0x05 => pc += k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let t = match i.code {
                        0x15 => a == k,
                        0x25 => a > k,
                        0x35 => a >= k,
                        _ => a & k != 0,
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
                0x06 => return k,
                c => panic!("instruction {c:#x} at {pc} not interpreted"),
            }
            pc += 1;
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, v) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        d
    }

    fn reference(
        map: RuleMap,
        default: SeccompAction,
        target: TargetArch,
    ) -> Result<BpfProgram, SecurityError> {
        build(map, default, SeccompAction::Allow, target)
    }

    #[test]
    fn allow_list_matches_seccompiler() {
        let mut profiles = vec![crate::security::default_seccomp()];
        profiles.push(seccomp_for_capabilities(
            &crate::security::caps::all_capabilities(),
        ));
        let values: Vec<u64> = vec![
            0,
            1,
            2,
            8,
            0x20008,
            0x7e020000,
            0x10000000,
            0x20000,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
            0xffff_ffff_0000_0000,
        ];
        for arch in ["x86_64", "aarch64"] {
            let audit = if arch == "x86_64" {
                0xc000_003e
            } else {
                0xc000_00b7
            };
            for profile in &profiles {
                let ours = compile_with(profile, arch, build_allow_list).unwrap();
                let theirs = compile_with(profile, arch, reference).unwrap();
                assert_eq!(ours.len(), theirs.len());
                assert!(
                    ours[0].len() * 3 < theirs[0].len(),
                    "{arch}: {} instructions against seccompiler's {}",
                    ours[0].len(),
                    theirs[0].len()
                );
                let mut checked = 0u64;
                let nrs = (0..1200u32).chain(0x4000_0000..0x4000_0000 + 600).chain([
                    u32::MAX,
                    u32::MAX - 1,
                    0x8000_0000,
                ]);
                for nr in nrs {
                    let mut cases = vec![[0u64; 6]];
                    for i in 0..6 {
                        for v in &values {
                            let mut args = [0u64; 6];
                            args[i] = *v;
                            cases.push(args);
                        }
                    }
                    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(nr);
                    for _ in 0..8 {
                        let mut args = [0u64; 6];
                        for a in &mut args {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            *a = x;
                        }
                        cases.push(args);
                    }
                    for args in cases {
                        for a in [audit, 0x4000_0003] {
                            let d = data(a, nr, args);
                            for (p, q) in ours.iter().zip(&theirs) {
                                assert_eq!(
                                    run(p, &d),
                                    run(q, &d),
                                    "{arch} nr {nr} arch {a:#x} args {args:x?}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
                assert!(checked > 100_000);
            }
        }
    }

    #[test]
    fn a_profile_without_conditions_is_ranges_alone() {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        let mut r = oci_spec::runtime::LinuxSyscall::default();
        r.set_names(
            ["read", "write", "close", "getpid"]
                .map(String::from)
                .to_vec(),
        );
        r.set_action(LinuxSeccompAction::ScmpActAllow);
        p.set_syscalls(Some(vec![r]));
        let prog = compile_for(&p, "x86_64").unwrap();
        // read 0, write 1, close 3, getpid 39: the ranges 0..=1, 3..=3 and 39..=39.
        let d = |nr| data(0xc000_003e, nr, [0; 6]);
        let allow = libc::SECCOMP_RET_ALLOW;
        for (nr, want) in [
            (0, allow),
            (1, allow),
            (2, 0x50001),
            (3, allow),
            (39, allow),
            (40, 0x50001),
        ] {
            assert_eq!(run(&prog[0], &d(nr)), want, "nr {nr}");
        }
    }
}

//! cgroups on this host (v1 hybrid): real groups, real limits, real processes. Children that
//! must misbehave (allocate, fork) are this test binary re-run in a child mode, held on a pipe
//! until the parent has moved them into the group.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use runtime::cgroups::detect::{Layout, Version};
use runtime::cgroups::{CgroupError, CgroupManager, Manager, Mode};

const MODE: &str = "DECANT_CGROUP_CHILD";

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

/// This binary in `mode`, waiting for a line on stdin before it acts.
fn spawn_child(mode: &str) -> Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the child")
}

fn go(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("writing to the child");
    stdin.flush().expect("flush");
}

fn result_lines(child: Child) -> (std::process::ExitStatus, Vec<String>) {
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = text
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .collect();
    (out.status, lines)
}

#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let mut line = String::new();
    let _ = BufReader::new(std::io::stdin()).read_line(&mut line);
    match mode.as_str() {
        "hog" => {
            // 200 MiB, every page touched, in 1 MiB steps.
            let mut keep: Vec<Vec<u8>> = Vec::new();
            for _ in 0..200 {
                keep.push(vec![1u8; 1 << 20]);
            }
            println!("RESULT survived {}", keep.len());
        }
        "forker" => {
            let mut kids = Vec::new();
            let mut failed = 0;
            for _ in 0..30 {
                match Command::new("sleep").arg("10").spawn() {
                    Ok(c) => kids.push(c),
                    Err(_) => failed += 1,
                }
            }
            let spawned = kids.len();
            for mut k in kids {
                let _ = k.kill();
                let _ = k.wait();
            }
            println!("RESULT spawned {spawned} failed {failed}");
        }
        "busy" => {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(50) {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            // Charged to the new group (v1 does not move earlier charges along).
            let touched = vec![1u8; 8 << 20];
            println!("RESULT spun {} {}", x % 2 + 1, touched.len());
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        _ => {}
    }
    std::process::exit(0);
}

/// Removes the groups even when an assertion fails.
struct Cleanup<'a> {
    manager: &'a Manager,
    kids: Vec<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = self.manager.destroy();
    }
}

fn id(name: &str) -> String {
    format!("test-{}-{name}", std::process::id())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn group(manager: &Manager, controller: &str) -> std::path::PathBuf {
    manager
        .paths()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&format!("/{controller}")))
        .unwrap_or_else(|| panic!("no {controller} group in {:?}", manager.paths()))
}

fn limits(memory: i64, pids: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .build()
                .expect("memory"),
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .expect("pids"),
        )
        .build()
        .expect("resources")
}

#[test]
fn host_is_detected_as_hybrid() {
    if !need_root() {
        return;
    }
    let layout = Layout::detect().expect("detect");
    assert_eq!(
        layout.mode(),
        Mode::Hybrid,
        "this host is a v1 hybrid: {layout:#?}"
    );
    assert!(layout.v1("memory").is_some());
    assert!(layout.v2().is_some());
}

#[test]
fn limits_stats_freeze_and_destroy() {
    if !need_root() {
        return;
    }
    let manager = Manager::new(&id("life"), &Layout::detect().expect("detect")).expect("manager");
    manager.create().expect("create");
    manager.create().expect("create is idempotent");
    let mut guard = Cleanup {
        manager: &manager,
        kids: Vec::new(),
    };
    for p in manager.paths() {
        assert!(p.is_dir(), "{} missing", p.display());
    }
    let mut busy = spawn_child("busy");
    let pid = i32::try_from(busy.id()).expect("pid");
    manager.add_process(pid).expect("add");
    go(&mut busy);
    let mut out = BufReader::new(busy.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("RESULT spun") {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "busy child ended early"
        );
    }
    guard.kids.push(busy);

    manager.apply(&limits(64 << 20, 20)).expect("apply");
    let mem = group(&manager, "memory");
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&group(&manager, "pids").join("pids.max")), "20");
    assert!(read(&mem.join("cgroup.procs"))
        .lines()
        .any(|l| l == pid.to_string()));
    assert_eq!(manager.pids().expect("pids"), vec![pid]);

    let stats = manager.stats().expect("stats");
    assert!(stats.memory_usage >= 8 << 20, "{stats:?}");
    assert_eq!(stats.memory_limit, Some(64 << 20));
    assert!(
        stats.cpu_usage_ns > 10_000_000,
        "the child spun 50 ms: {stats:?}"
    );
    // pids counts tasks: the child's main thread and libtest's.
    assert!((1..=3).contains(&stats.pids_current), "{stats:?}");
    assert_eq!(stats.pids_limit, Some(20));

    manager.freeze().expect("freeze");
    assert_eq!(
        read(&group(&manager, "freezer").join("freezer.state")),
        "FROZEN"
    );
    manager.thaw().expect("thaw");
    assert_eq!(
        read(&group(&manager, "freezer").join("freezer.state")),
        "THAWED"
    );

    // A group with a process in it is not removed.
    match manager.destroy() {
        Err(CgroupError::Busy { path, procs }) => {
            assert_eq!(procs, 1);
            assert!(path.contains(&id("life")), "{path}");
        }
        other => panic!("destroy with a live process: {other:?}"),
    }
    for k in &mut guard.kids {
        k.kill().expect("kill");
        k.wait().expect("wait");
    }
    guard.kids.clear();
    manager.destroy().expect("destroy");
    for p in manager.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    manager.destroy().expect("destroy is idempotent");
}

#[test]
fn memory_hog_is_oom_killed() {
    use std::os::unix::process::ExitStatusExt;
    if !need_root() {
        return;
    }
    let manager = Manager::new(&id("oom"), &Layout::detect().expect("detect")).expect("manager");
    manager.create().expect("create");
    let guard = Cleanup {
        manager: &manager,
        kids: Vec::new(),
    };
    let mut hog = spawn_child("hog");
    manager
        .add_process(i32::try_from(hog.id()).expect("pid"))
        .expect("add");
    manager.apply(&limits(64 << 20, 100)).expect("apply");
    go(&mut hog);
    let (status, lines) = result_lines(hog);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?} {lines:?}");
    let mem = group(&manager, "memory");
    let failcnt: u64 = read(&mem.join("memory.failcnt")).parse().expect("failcnt");
    assert!(failcnt > 0);
    assert!(read(&mem.join("memory.oom_control"))
        .lines()
        .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"));
    drop(guard);
    assert!(!mem.exists());
}

#[test]
fn pids_limit_makes_fork_fail() {
    if !need_root() {
        return;
    }
    let manager = Manager::new(&id("pids"), &Layout::detect().expect("detect")).expect("manager");
    manager.create().expect("create");
    let guard = Cleanup {
        manager: &manager,
        kids: Vec::new(),
    };
    let mut forker = spawn_child("forker");
    manager
        .add_process(i32::try_from(forker.id()).expect("pid"))
        .expect("add");
    manager.apply(&limits(256 << 20, 5)).expect("apply");
    go(&mut forker);
    let (status, lines) = result_lines(forker);
    assert!(status.success(), "{status:?}");
    let line = lines
        .iter()
        .find(|l| l.starts_with("spawned"))
        .expect("result line");
    let nums: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(nums[0] <= 4 && nums[1] >= 26, "{line}");
    drop(guard);
}

#[test]
fn unified_hierarchy_groups_freeze_with_cgroup_freeze() {
    if !need_root() {
        return;
    }
    let mut layout = Layout::detect().expect("detect");
    layout.hierarchies.retain(|h| h.version == Version::V2);
    assert_eq!(layout.mode(), Mode::V2);
    let manager = Manager::new(&id("v2"), &layout).expect("manager");
    manager.create().expect("create");
    let mut guard = Cleanup {
        manager: &manager,
        kids: Vec::new(),
    };
    let dir = manager.paths().pop().expect("one v2 group");
    assert!(
        dir.starts_with("/sys/fs/cgroup/unified/decant"),
        "{}",
        dir.display()
    );
    let sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let pid = i32::try_from(sleeper.id()).expect("pid");
    guard.kids.push(sleeper);
    manager.add_process(pid).expect("add");
    assert_eq!(manager.pids().expect("pids"), vec![pid]);
    manager.freeze().expect("freeze");
    assert!(read(&dir.join("cgroup.events"))
        .lines()
        .any(|l| l == "frozen 1"));
    manager.thaw().expect("thaw");
    assert!(read(&dir.join("cgroup.events"))
        .lines()
        .any(|l| l == "frozen 0"));
    // No memory controller on this cgroup2 mount: a clear error naming the flag.
    let err = manager
        .apply(&limits(64 << 20, 10))
        .expect_err("no memory controller");
    assert!(
        err.to_string()
            .starts_with("memory controller not available: cannot set --memory"),
        "{err}"
    );
    // cpu.stat exists without the cpu controller.
    manager.stats().expect("stats");
    drop(guard);
    assert!(!dir.exists());
}

#[test]
fn no_writable_hierarchy_does_nothing_until_a_limit_is_asked() {
    let manager = Manager::new("rootless", &Layout::default()).expect("manager");
    manager.create().expect("create is a no-op");
    manager.add_process(1).expect("add is a no-op");
    manager
        .apply(&LinuxResources::default())
        .expect("no limits asked");
    assert!(manager.apply(&limits(1 << 20, 1)).is_err());
    assert!(manager.freeze().is_err());
    assert!(manager.paths().is_empty());
    manager.destroy().expect("destroy is a no-op");
}

#[test]
fn bad_ids_are_refused() {
    for bad in ["", ".", "..", "a/b", "../x", "a\nb", &"x".repeat(200)] {
        assert!(Manager::new(bad, &Layout::default()).is_err(), "{bad:?}");
    }
}

#[test]
fn v1_device_allow_list_is_written() {
    if !need_root() {
        return;
    }
    let manager = Manager::new(&id("dev"), &Layout::detect().expect("detect")).expect("manager");
    manager.create().expect("create");
    let guard = Cleanup {
        manager: &manager,
        kids: Vec::new(),
    };
    let resources = LinuxResourcesBuilder::default()
        .devices(runtime::security::default_devices())
        .build()
        .expect("resources");
    manager.apply(&resources).expect("apply devices");
    let list = read(&group(&manager, "devices").join("devices.list"));
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines.contains(&"c 1:3 rwm"), "{lines:?}");
    assert!(lines.contains(&"c 136:* rwm"), "{lines:?}");
    assert!(!lines.contains(&"a *:* rwm"), "{lines:?}");
    drop(guard);
}

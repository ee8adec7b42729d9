//! PID 1 duties of decant-init, run as a subreaper child and as real PID 1 of a new pid
//! namespace: exit status propagation, signal forwarding, zombie storms, crash-loop cost.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn tini_case_propagates_exit_code_and_signal_status() {
    let _r = root();
    let mut r = start_with(Command::new(BIN).args(["--", BUSYBOX, "sh", "-c", "echo out; exit 7"]));
    assert_eq!(r.wait_exit(secs(5)), 7);
    assert_eq!(
        r.output(),
        "out\n",
        "the tini case prints nothing of its own"
    );
    let mut r = start_with(Command::new(BIN).args(["--", BUSYBOX, "sh", "-c", "kill -KILL $$"]));
    assert_eq!(r.wait_exit(secs(5)), 137);
}

#[test]
fn signals_are_forwarded_to_a_trapping_shell() {
    let _r = root();
    let script = "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 42' TERM; \
                  echo ready; while true; do busybox sleep 0.05; done";
    let mut r = start_with(
        Command::new(BIN)
            .args(["--", BUSYBOX, "sh", "-c", script])
            .env("PATH", "/bin:/usr/bin"),
    );
    r.wait_for("ready", secs(5));
    r.signal(libc::SIGUSR1);
    r.wait_for("got USR1", secs(5));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(secs(5)), 42);
    assert!(r.output().contains("got TERM"));
}

/// 1000 orphaned grandchildren exit; none may remain a zombie one second later.
fn zombie_storm(mut cmd: Command) {
    let script = "i=0; while [ $i -lt 1000 ]; do (busybox true &); i=$((i+1)); done; \
                  echo storm-done; exec busybox sleep 30";
    cmd.args(["--", BUSYBOX, "sh", "-c", script])
        .env("PATH", "/bin:/usr/bin");
    let r = start_with(&mut cmd);
    r.wait_for("storm-done", secs(20));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(zombies_below(r.pid), 0, "zombies left below decant-init");
}

#[test]
fn zombie_storm_as_subreaper() {
    let _r = root();
    zombie_storm(Command::new(BIN));
}

#[test]
fn zombie_storm_as_pid1_of_a_pid_namespace() {
    need("/usr/bin/unshare");
    let mut c = Command::new("/usr/bin/unshare");
    c.args(["--pid", "--fork", "--mount-proc", BIN]);
    zombie_storm(c);
}

#[test]
fn pid1_in_namespace_stops_on_sigterm_and_exits_with_main_status() {
    need("/usr/bin/unshare");
    let script = "trap 'exit 5' TERM; echo up; while true; do busybox sleep 0.05; done";
    let mut r = start_with(
        Command::new("/usr/bin/unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGKILL",
                BIN,
                "--",
                BUSYBOX,
                "sh",
                "-c",
                script,
            ])
            .env("PATH", "/bin:/usr/bin"),
    );
    r.wait_for("up", secs(5));
    // unshare forwards nothing: signal decant-init itself (the child of unshare).
    let init = descendants(r.pid).into_iter().find(|p| {
        std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("decant-init"))
    });
    let init = init.expect("decant-init below unshare");
    // SAFETY: kill(2) on our own descendant.
    unsafe { libc::kill(init, libc::SIGTERM) };
    assert_eq!(r.wait_exit(secs(5)), 5);
}

#[test]
fn crash_loop_costs_under_five_percent_cpu() {
    let d = root();
    write(
        &d.path().join("etc/service/crash/run"),
        "#!/bin/busybox sh\nexit 1\n",
        true,
    );
    let r = start(d.path(), &[]);
    r.wait_for("spawned: 'crash'", secs(5));
    let t0 = stat(r.pid).unwrap().2;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = stat(r.pid).unwrap().2 - t0;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = ticks as f64 / hz / start.elapsed().as_secs_f64();
    assert!(cpu < 0.05, "crash loop used {:.1}% CPU", cpu * 100.0);
    let spawns = r.output().matches("spawned: 'crash'").count();
    assert!(
        (2..=5).contains(&spawns),
        "runit restarts at most once a second: {spawns} spawns"
    );
}

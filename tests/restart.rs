//! Restart policies and `--init` on the example image (busybox root imported from testdata's
//! root.ext4): on-failure counts, always after an exit and after a crash, unless-stopped and
//! always ended by stop, `rm -f` during the back-off; decant-init (built static here) as PID 1
//! stops a handler-less command on SIGTERM and reaps orphaned zombies. After each test nothing
//! of the containers is left.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{run_with_init, static_init, Env};

fn record(env: &Env, id: &str) -> serde_json::Value {
    let p = env
        .store()
        .join(".decant/containers")
        .join(id)
        .join("container.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// Polls the record until `done` holds, at most `secs` seconds.
#[track_caller]
fn until(
    env: &Env,
    id: &str,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = record(env, id);
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out; record: {r}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn runs(env: &Env, id: &str) -> usize {
    env.run(&["logs", id])
        .ok()
        .stdout
        .lines()
        .filter(|l| *l == "run")
        .count()
}

#[test]
fn on_failure_counts_its_restarts() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            "ex",
            "sh",
            "-c",
            "echo run; exit 3",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let r = until(&env, &id, 10, |r| r["status"] == "exited");
    assert_eq!(r["restart_count"], 2, "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["config"]["restart"], "on-failure:2", "{r}");
    // Stays exited: no fourth run.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(&env, &id), 3);
    assert!(env.run(&["ps", "-a"]).ok().stdout.contains("Exited (3)"));
    // A success is not a failure: on-failure does not restart it.
    let ok = env
        .run(&[
            "run",
            "-d",
            "--restart",
            "on-failure",
            "ex",
            "sh",
            "-c",
            "echo run",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let r = until(&env, &ok, 10, |r| r["status"] == "exited");
    assert_eq!(r["restart_count"], 0, "{r}");
    // Bad policies and --rm with a policy are refused before anything is made.
    for bad in [
        &["--restart", "sometimes"][..],
        &["--restart", "always", "--rm"],
    ] {
        let mut args = vec!["run"];
        args.extend_from_slice(bad);
        args.extend_from_slice(&["ex", "true"]);
        let r = env.run(&args);
        assert_eq!(r.status, 125, "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
    env.run(&["rm", &id, &ok]).ok();
    common::assert_containers_clean(&env, &[id, ok]);
}

#[test]
fn always_restarts_after_exit_and_crash_and_stop_ends_it() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&[
            "run",
            "-d",
            "--name",
            "again",
            "--restart",
            "always",
            "ex",
            "sh",
            "-c",
            "echo run; sleep 0.2",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    // ps shows the back-off as Docker does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = env.run(&["ps"]).ok().stdout;
        if ps.contains("Restarting (0)") && ps.contains("again") {
            break;
        }
        assert!(Instant::now() < deadline, "never seen restarting: {ps}");
        std::thread::sleep(Duration::from_millis(10));
    }
    until(&env, &id, 10, |r| r["restart_count"].as_u64() >= Some(2));
    let t = Instant::now();
    env.run(&["stop", "-t", "1", "again"]).ok();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let r = record(&env, &id);
    assert_eq!(r["status"], "exited", "{r}");
    let n = runs(&env, &id);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(runs(&env, &id), n, "restarted after stop");

    // After an explicit start the policy applies again; a crash (SIGKILL from outside, not
    // through decant) is restarted too.
    env.run(&["start", "again"]).ok();
    let r = until(&env, &id, 10, |r| r["status"] == "running");
    assert_eq!(r["restart_count"], 0, "{r}");
    let pid = r["pid"].as_i64().unwrap().to_string();
    common::tool("kill", &["-9", &pid]);
    let r = until(&env, &id, 10, |r| {
        r["restart_count"].as_u64() >= Some(1) && r["status"] == "running"
    });
    assert_eq!(r["exit_code"], serde_json::Value::Null, "{r}");
    env.run(&["rm", "-f", "again"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn unless_stopped_is_not_restarted_after_stop_and_rm_f_wins_over_backoff() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&[
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "ex",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo run; while true; do sleep 0.1; done",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    // The trap is set once "run" is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(&env, &id) == 0 {
        assert!(Instant::now() < deadline, "never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.run(&["stop", &id]).ok();
    std::thread::sleep(Duration::from_millis(500));
    let r = record(&env, &id);
    assert_eq!(r["status"], "exited", "{r}");
    assert_eq!(r["restart_count"], 0, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(runs(&env, &id), 1);

    // A container that fails at once spends its life in the back-off: rm -f must end it
    // there, and the monitor must not start it again behind rm's back.
    let busy = env
        .run(&[
            "run",
            "-d",
            "--restart",
            "always",
            "ex",
            "sh",
            "-c",
            "exit 1",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    until(&env, &busy, 10, |r| r["restart_count"].as_u64() >= Some(3));
    env.run(&["rm", "-f", &busy]).ok();
    env.run(&["rm", &id]).ok();
    std::thread::sleep(Duration::from_millis(300));
    common::assert_containers_clean(&env, &[id, busy]);
}

/// Zombies among the descendants of `pid` (host view).
fn zombies_under(pid: i32) -> usize {
    let mut parent = std::collections::HashMap::new();
    let mut state = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r.to_string()) else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        parent.insert(p, f[1].parse::<i32>().unwrap());
        state.insert(p, f[0].to_string());
    }
    state
        .iter()
        .filter(|(p, s)| {
            let mut q = **p;
            for _ in 0..64 {
                match parent.get(&q) {
                    Some(&pp) if pp == pid => return s.as_str() == "Z",
                    Some(&pp) if pp > 1 => q = pp,
                    _ => return false,
                }
            }
            false
        })
        .count()
}

#[test]
fn init_forwards_sigterm_and_reaps_zombies() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let init = static_init();
    // A missing or dynamic init is a one-line error and leaves nothing.
    for (path, why) in [
        (Path::new("/nonexistent/decant-init"), "No such file"),
        (Path::new("/bin/sh"), "dynamically linked"),
    ] {
        let r = run_with_init(&env, path, &["run", "--init", "ex", "true"]);
        assert_eq!(r.status, 125, "{}", r.stderr);
        assert!(r.stderr.contains(why), "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
    common::assert_containers_clean(&env, &[]);

    // sh -c 'sleep 100' as PID 1 installs no SIGTERM handler: the kernel drops the signal,
    // so stop waits for its timeout. Under decant-init the signal reaches sleep at once.
    let plain = env
        .run(&["run", "-d", "ex", "sh", "-c", "sleep 100; true"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let t = Instant::now();
    env.run(&["stop", "-t", "1", &plain]).ok();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    let with = run_with_init(
        &env,
        &init,
        &["run", "-d", "--init", "ex", "sh", "-c", "sleep 100"],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    until(&env, &with, 10, |r| r["status"] == "running");
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    env.run(&["stop", "-t", "10", &with]).ok();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(record(&env, &with)["exit_code"], 143);

    // An orphan (the subshell's sleep) goes to PID 1 when the subshell exits. Without an
    // init, PID 1 is the exec'd sleep, which never waits: a zombie stays. With --init it is
    // reaped.
    let script = "(sleep 0.1 &); exec sleep 100";
    let z0 = env
        .run(&["run", "-d", "ex", "sh", "-c", script])
        .ok()
        .stdout
        .trim()
        .to_string();
    let z1 = run_with_init(
        &env,
        &init,
        &["run", "-d", "--init", "ex", "sh", "-c", script],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    std::thread::sleep(Duration::from_millis(700));
    let pid0 = record(&env, &z0)["pid"].as_i64().unwrap() as i32;
    let pid1 = record(&env, &z1)["pid"].as_i64().unwrap() as i32;
    assert!(zombies_under(pid0) >= 1, "the control shows no zombie");
    assert_eq!(zombies_under(pid1), 0);
    // Inside, too: no process of the container is a zombie, and the exit code comes through.
    let r = run_with_init(
        &env,
        &init,
        &[
            "run",
            "--rm",
            "--init",
            "ex",
            "sh",
            "-c",
            "(sleep 0.1 &); sleep 0.5; cat /proc/[0-9]*/stat | grep -c ') Z '; exit 5",
        ],
    );
    assert_eq!(r.status, 5, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "0", "{}", r.stdout);
    env.run(&["rm", "-f", &plain, &with, &z0, &z1]).ok();
    common::assert_containers_clean(&env, &[plain, with, z0, z1]);
}

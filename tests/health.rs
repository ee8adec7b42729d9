//! HEALTHCHECK end to end on the example busybox image: a passing check makes the container
//! healthy and a failing one unhealthy after its retries (`ps` and `inspect` show both, as
//! docker), a paused one is not probed; a hanging check is killed at its timeout; `--no-healthcheck` disables the image's
//! check; an image committed with `-c 'HEALTHCHECK ...'` runs its check. Intervals are short
//! so each test takes a few seconds. After each test nothing of the containers is left.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

fn inspect(env: &Env, id: &str) -> Value {
    let out = env.run(&["inspect", id]).ok().stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Polls `State.Health` until `done` holds, at most `secs` seconds.
#[track_caller]
fn until_health(env: &Env, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = inspect(env, id)["State"]["Health"].clone();
        if done(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "timed out; State.Health: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ps_status(env: &Env, id: &str) -> String {
    let out = env.run(&["ps"]).ok().stdout;
    out.lines()
        .find(|l| l.starts_with(id.get(..12).unwrap()))
        .unwrap_or_else(|| panic!("{id} not in ps:\n{out}"))
        .to_string()
}

fn run_d(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    env.run(&all).ok().stdout.trim().to_string()
}

fn remove(env: &Env, ids: &[String]) {
    for id in ids {
        env.run(&["rm", "-f", id]).ok();
    }
    common::assert_containers_clean(env, ids);
}

#[test]
fn healthy_then_unhealthy_after_retries() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_d(
        &env,
        &[
            "--health-cmd",
            "test -f /tmp/ok && echo fine",
            "--health-interval",
            "300ms",
            // The first check comes after the start interval; once healthy, the interval
            // rules and failures count even inside the start period.
            "--health-start-period",
            "30s",
            "--health-start-interval",
            "1s",
            "--health-retries",
            "2",
            "ex",
            "sh",
            "-c",
            ": > /tmp/ok; exec sleep 60",
        ],
    );
    // Before the first check (after one interval): starting.
    let first = ps_status(&env, &id);
    assert!(first.contains("(health: starting)"), "{first}");

    let h = until_health(&env, &id, 10, |h| h["Status"] == "healthy");
    assert_eq!(h["FailingStreak"], 0);
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "fine\n");
    let line = ps_status(&env, &id);
    assert!(line.contains("Up ") && line.contains("(healthy)"), "{line}");
    let cfg = &inspect(&env, &id)["Config"]["Healthcheck"];
    assert_eq!(cfg["Test"][0], "CMD-SHELL");
    assert_eq!(cfg["Interval"], 300_000_000u64);

    // A paused container is not probed.
    env.run(&["pause", &id]).ok();
    std::thread::sleep(Duration::from_millis(400));
    let before = inspect(&env, &id)["State"]["Health"]["Log"].clone();
    std::thread::sleep(Duration::from_millis(700));
    let during = inspect(&env, &id)["State"]["Health"]["Log"].clone();
    assert_eq!(before, during, "checks ran while paused");
    env.run(&["unpause", &id]).ok();

    env.run(&["exec", &id, "rm", "/tmp/ok"]).ok();
    let h = until_health(&env, &id, 10, |h| h["Status"] == "unhealthy");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5, "{h}");
    assert_eq!(log.last().unwrap()["ExitCode"], 1);
    let line = ps_status(&env, &id);
    assert!(line.contains("(unhealthy)"), "{line}");

    // One success makes it healthy again.
    env.run(&["exec", &id, "sh", "-c", ": > /tmp/ok"]).ok();
    until_health(&env, &id, 10, |h| h["Status"] == "healthy");
    remove(&env, &[id]);
}

#[test]
fn a_hanging_check_is_killed_at_its_timeout() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_d(
        &env,
        &[
            "--health-cmd",
            "sleep 77",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "2",
            "ex",
            "sleep",
            "60",
        ],
    );
    let h = until_health(&env, &id, 10, |h| h["Status"] == "unhealthy");
    let log = h["Log"].as_array().unwrap();
    for r in log {
        assert_eq!(r["ExitCode"], -1, "{h}");
        assert!(
            r["Output"]
                .as_str()
                .unwrap()
                .contains("Health check exceeded timeout"),
            "{h}"
        );
    }
    // Killed, not left running: at most the check in progress is alive.
    let ps = env.run(&["exec", &id, "ps"]).ok().stdout;
    let hung = ps.lines().filter(|l| l.contains("sleep 77")).count();
    assert!(hung <= 1, "checks left running:\n{ps}");
    remove(&env, &[id]);
}

#[test]
fn image_healthcheck_runs_and_no_healthcheck_disables_it() {
    let Some(env) = common::container_env(&["-c", "HEALTHCHECK --interval=200ms CMD true"]) else {
        return;
    };
    let with = run_d(&env, &["ex", "sleep", "60"]);
    let off = run_d(&env, &["--no-healthcheck", "ex", "sleep", "60"]);
    let h = until_health(&env, &with, 10, |h| h["Status"] == "healthy");
    assert_eq!(h["Log"][0]["ExitCode"], 0);
    assert_eq!(
        inspect(&env, &with)["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    // Several intervals later the disabled one still has no health at all.
    std::thread::sleep(Duration::from_millis(600));
    let v = inspect(&env, &off);
    assert!(v["State"]["Health"].is_null(), "{v}");
    assert!(v["Config"]["Healthcheck"].is_null(), "{v}");
    let line = ps_status(&env, &off);
    assert!(!line.contains("health"), "{line}");
    // The other health flags conflict with disabling it.
    let r = env.run(&[
        "run",
        "-d",
        "--no-healthcheck",
        "--health-retries",
        "2",
        "ex",
        "true",
    ]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("--no-healthcheck"), "{}", r.stderr);
    remove(&env, &[with, off]);
}

#[test]
fn a_committed_healthcheck_runs() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let base = run_d(&env, &["--name", "box", "ex", "sleep", "60"]);
    env.run(&[
        "commit",
        "-c",
        "HEALTHCHECK --interval=1s --retries=1 CMD test -f /etc/passwd",
        "box",
        "checked",
    ])
    .ok();
    let id = run_d(&env, &["checked", "sleep", "60"]);
    let h = until_health(&env, &id, 10, |h| h["Status"] == "healthy");
    assert_eq!(h["Log"][0]["ExitCode"], 0);
    // Restarting the container starts its health over.
    env.run(&["restart", "-t", "0", &id]).ok();
    let after = inspect(&env, &id)["State"]["Health"].clone();
    assert_eq!(after["Status"], "starting", "{after}");
    until_health(&env, &id, 10, |h| h["Status"] == "healthy");
    remove(&env, &[base, id]);
}

#[test]
fn failures_in_the_start_period_do_not_count() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_d(
        &env,
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "200ms",
            "--health-start-interval",
            "100ms",
            "--health-start-period",
            "1500ms",
            "--health-retries",
            "1",
            "ex",
            "sleep",
            "60",
        ],
    );
    let t0 = Instant::now();
    // Failing checks run during the start period but leave it starting.
    let h = until_health(&env, &id, 10, |h| {
        h["Log"].as_array().is_some_and(|l| l.len() >= 3)
    });
    if t0.elapsed() < Duration::from_millis(1200) {
        assert_eq!(h["Status"], "starting", "{h}");
        assert_eq!(h["FailingStreak"], 0, "{h}");
    }
    let h = until_health(&env, &id, 10, |h| h["Status"] == "unhealthy");
    assert!(t0.elapsed() >= Duration::from_millis(1400), "{h}");
    remove(&env, &[id]);
}

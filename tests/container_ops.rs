//! The verbs on a running container (exec, pause/unpause, stats, top, inspect, container
//! prune) on the example image: exec joins the container's namespaces and passes its exit
//! code; the freezer stops and resumes a counting loop; stats/top see the container's
//! process; inspect shows its state and settings; prune removes only stopped containers.
//! After each test nothing is left: no record, mount, cgroup or monitor.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Env;

/// Starts a detached container `name` running `script`; returns its full id.
fn run_detached(env: &Env, name: &str, script: &str) -> String {
    let r = env
        .run(&["run", "-d", "--name", name, "ex", "sh", "-c", script])
        .ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "{}", r.stdout);
    id
}

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let r = env.run(&["inspect", name]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v[0].clone()
}

/// The counter the loop of `pause_freezes_and_unpause_resumes` writes.
fn counter(env: &Env, name: &str) -> u64 {
    let r = env.run(&["exec", name, "cat", "/tmp/n"]).ok();
    r.stdout.trim().parse().unwrap_or(0)
}

#[test]
fn exec_joins_the_container_and_passes_exit_codes() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_detached(&env, "box", "echo $$ > /tmp/init; sleep 1000");
    let r = env.run(&["exec", "box", "hostname"]).ok();
    assert_eq!(r.stdout.trim(), &id[..12]);
    // The same pid namespace as the container's init (pid 1 inside, which wrote /tmp/init).
    let r = env
        .run(&[
            "exec",
            "box",
            "sh",
            "-c",
            "readlink /proc/self/ns/pid; cat /tmp/init",
        ])
        .ok();
    let pid = inspect(&env, "box")["State"]["Pid"].as_i64().unwrap();
    let host_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(
        r.stdout,
        format!("{}\n1\n", host_ns.display()),
        "exec is not in the container's pid namespace"
    );
    // Environment, user and working directory flags.
    let r = env
        .run(&[
            "exec",
            "-e",
            "FOO=bar",
            "-u",
            "1000",
            "-w",
            "/tmp",
            "box",
            "sh",
            "-c",
            "echo $FOO; id -u; pwd",
        ])
        .ok();
    assert_eq!(r.stdout, "bar\n1000\n/tmp\n");
    assert_eq!(env.run(&["exec", "box", "sh", "-c", "exit 7"]).status, 7);
    assert_eq!(env.run(&["exec", "box", "no-such-command"]).status, 127);
    assert_eq!(env.run(&["exec", "box", "/etc/passwd"]).status, 126);
    // Detached: returns at once, the process runs inside.
    env.run(&["exec", "-d", "box", "sh", "-c", "touch /tmp/detached"])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.run(&["exec", "box", "ls", "/tmp/detached"]).status != 0 {
        assert!(Instant::now() < deadline, "the detached exec never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = env.run(&["exec", "nope", "true"]);
    assert_eq!(r.status, 125);
    assert!(r.stderr.contains("No such container"), "{}", r.stderr);
    env.run(&["rm", "-f", "box"]).ok();
    // A stopped container refuses exec.
    let r = env.run(&["run", "--name", "done", "ex", "true"]);
    assert_eq!(r.status, 0);
    let r = env.run(&["exec", "done", "true"]);
    assert_eq!(r.status, 125);
    assert!(r.stderr.contains("not running"), "{}", r.stderr);
    env.run(&["rm", "done"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn pause_freezes_and_unpause_resumes() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_detached(
        &env,
        "counter",
        "n=0; while true; do n=$((n+1)); echo $n > /tmp/n; usleep 10000 2>/dev/null || sleep 0.01; done",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&env, "counter") < 3 {
        assert!(Instant::now() < deadline, "the loop does not count");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.run(&["pause", "counter"]).ok();
    let freezer = Path::new("/sys/fs/cgroup/freezer/decant").join(&id);
    if freezer.exists() {
        let st = std::fs::read_to_string(freezer.join("freezer.state")).unwrap();
        assert_eq!(st.trim(), "FROZEN");
    }
    let ps = env.run(&["ps"]).ok();
    assert!(ps.stdout.contains("(Paused)"), "{}", ps.stdout);
    let v = inspect(&env, "counter");
    assert_eq!(v["State"]["Status"], "paused");
    assert_eq!(v["State"]["Paused"], true);
    // Exec is refused while paused (it would hang in the frozen cgroup).
    assert_eq!(env.run(&["exec", "counter", "true"]).status, 125);
    assert_ne!(env.run(&["pause", "counter"]).status, 0);
    let upper = env
        .store()
        .join(".decant/containers")
        .join(&id)
        .join("upper/tmp/n");
    let read = || {
        std::fs::read_to_string(&upper)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "the loop advanced while paused");
    env.run(&["unpause", "counter"]).ok();
    assert_ne!(env.run(&["unpause", "counter"]).status, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while read() <= frozen {
        assert!(Instant::now() < deadline, "the loop did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!env.run(&["ps"]).ok().stdout.contains("Paused"));
    // Stop of a paused container thaws it first, so the signal lands.
    env.run(&["pause", "counter"]).ok();
    let t = Instant::now();
    env.run(&["stop", "-t", "1", "counter"]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let v = inspect(&env, "counter");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["Running"], false);
    env.run(&["rm", "counter"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn stats_and_top_show_the_process() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = run_detached(&env, "busy", "exec sleep 1000");
    let r = env.run(&["stats", "--no-stream"]).ok();
    let mut lines = r.stdout.lines();
    let head = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with(&id[..12]) && row.contains("busy"),
        "{}",
        r.stdout
    );
    assert!(row.trim_end().ends_with(" 1"), "one process: {row}");
    let r = env
        .run(&["stats", "--no-stream", "--format", "json", "busy"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["Name"], "busy");
    assert_eq!(v["PIDs"], "1");
    assert!(v["MemUsage"].as_str().unwrap().contains(" / "), "{v}");

    let r = env.run(&["top", "busy"]).ok();
    let mut lines = r.stdout.lines();
    assert!(lines.next().unwrap().starts_with("UID"), "{}", r.stdout);
    let procs: Vec<&str> = lines.collect();
    assert_eq!(procs.len(), 1, "{}", r.stdout);
    assert!(procs[0].starts_with("root"), "{}", procs[0]);
    assert!(procs[0].ends_with("sleep 1000"), "{}", procs[0]);
    let pid = inspect(&env, "busy")["State"]["Pid"].as_i64().unwrap();
    assert!(
        procs[0].split_whitespace().nth(1) == Some(pid.to_string().as_str()),
        "{} vs {pid}",
        procs[0]
    );
    env.run(&["rm", "-f", "busy"]).ok();
    assert_ne!(env.run(&["top", "busy"]).status, 0);
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn inspect_shows_state_and_settings() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let host = env.path().join("vol");
    std::fs::create_dir(&host).unwrap();
    let bind = format!("{}:/data:ro", host.display());
    env.run(&[
        "create",
        "--name",
        "cfg",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "-v",
        &bind,
        "--read-only",
        "--cap-drop",
        "CHOWN",
        "--network",
        "none",
        "-e",
        "A=1",
        "ex",
        "sleep",
        "1000",
    ])
    .ok();
    let v = inspect(&env, "cfg");
    let id = v["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(v["Name"], "/cfg");
    assert_eq!(v["State"]["Status"], "created");
    assert_eq!(v["State"]["Running"], false);
    assert_eq!(v["State"]["Pid"], 0);
    assert_eq!(v["Path"], "sleep");
    assert_eq!(v["Args"], serde_json::json!(["1000"]));
    let hc = &v["HostConfig"];
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["Binds"], serde_json::json!([bind]));
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["CapDrop"], serde_json::json!(["CHOWN"]));
    assert_eq!(hc["NetworkMode"], "none");
    assert!(v["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("A=1")));
    assert!(v["Image"].as_str().unwrap().starts_with("sha256:"));
    let upper = v["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap();
    assert!(Path::new(upper).is_dir(), "{upper}");
    assert!(upper.contains(&id));

    env.run(&["start", "cfg"]).ok();
    let v = inspect(&env, &id[..10]);
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(v["State"]["Running"], true);
    assert!(v["State"]["Pid"].as_i64().unwrap() > 0);
    assert!(v["State"]["StartedAt"].as_str().unwrap().starts_with("20"));
    env.run(&["kill", "cfg"]).ok();
    env.run(&["wait", "cfg"]).ok();
    // `container inspect` shows only containers; the image name is not one.
    let r = env.run(&["container", "inspect", "cfg"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited");
    assert_eq!(v[0]["State"]["ExitCode"], 137);
    assert_eq!(env.run(&["container", "inspect", "ex"]).status, 1);
    // `inspect` of an image name still shows the image.
    assert!(inspect(&env, "ex")["RepoTags"].is_array());
    assert_ne!(env.run(&["inspect", "no-such-thing"]).status, 0);
    env.run(&["rm", "cfg"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn prune_removes_only_stopped_containers() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let live = run_detached(&env, "live", "sleep 1000");
    let r = env
        .run(&[
            "run",
            "--name",
            "gone",
            "ex",
            "sh",
            "-c",
            "head -c 5000 /dev/zero > /big",
        ])
        .ok();
    assert_eq!(r.status, 0);
    env.run(&["create", "--name", "fresh", "ex", "true"]).ok();
    let ids: Vec<String> = ["gone", "fresh"]
        .iter()
        .map(|n| inspect(&env, n)["Id"].as_str().unwrap().to_string())
        .collect();
    // Without -f it asks, and the empty answer (stdin is /dev/null) keeps everything.
    env.run(&["container", "prune"]).ok();
    assert!(env.run(&["ps", "-a"]).ok().stdout.contains("gone"));
    let r = env.run(&["container", "prune", "-f"]).ok();
    assert!(
        r.stdout.starts_with("Deleted Containers:\n"),
        "{}",
        r.stdout
    );
    for id in &ids {
        assert!(r.stdout.contains(id.as_str()), "{}", r.stdout);
    }
    assert!(!r.stdout.contains(&live), "{}", r.stdout);
    assert!(
        r.stdout.contains("Total reclaimed space: 5kB"),
        "{}",
        r.stdout
    );
    let ps = env.run(&["ps", "-a"]).ok();
    assert!(ps.stdout.contains("live"), "{}", ps.stdout);
    assert!(!ps.stdout.contains("gone") && !ps.stdout.contains("fresh"));
    let r = env.run(&["container", "prune", "-f"]).ok();
    assert_eq!(r.stdout, "Total reclaimed space: 0B\n");
    env.run(&["rm", "-f", "live"]).ok();
    let mut all = ids;
    all.push(live);
    common::assert_containers_clean(&env, &all);
}

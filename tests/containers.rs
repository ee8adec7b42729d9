//! `decant run` and the container verbs on the example image (busybox root imported from
//! testdata's root.ext4): exit codes, process settings, the detached lifecycle, limits,
//! volumes, rmi refusal; and after each test, nothing left: no mount, cgroup, process, record.

mod common;

use std::time::{Duration, Instant};

use common::Env;

fn id_of(env: &Env, name: &str) -> String {
    env.run(&["ps", "-a", "-q", "--no-trunc"]).ok();
    let out = env
        .run(&["ps", "-a", "--format", "json", "--no-trunc"])
        .ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Names"] == name)
        .map(|v| v["ID"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no container {name}: {}", out.stdout))
}

#[test]
fn exit_codes_and_process_settings() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env.run(&[
        "run",
        "--rm",
        "ex",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err\n"), "{}", r.stderr);
    assert_eq!(env.run(&["run", "--rm", "ex", "true"]).status, 0);
    let r = env.run(&["run", "--rm", "ex", "no-such-command"]);
    assert_eq!(r.status, 127, "{}", r.stderr);
    let r = env.run(&["run", "--rm", "ex", "/etc/passwd"]);
    assert_eq!(r.status, 126, "{}", r.stderr);
    let r = env.run(&["run", "--rm", "-u", "bob", "ex", "id"]);
    assert_eq!(r.status, 125);
    assert!(
        r.stderr
            .contains("unable to find user bob: no matching entries in passwd file"),
        "{}",
        r.stderr
    );
    let r = env
        .run(&[
            "run", "--rm", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000", "-h", "box", "ex", "sh",
            "-c", "echo $FOO; pwd; id -u; hostname; echo $$; ps -o pid > /tmp/ps; wc -l < /tmp/ps; cat /sys/class/net/lo/flags",
        ])
        .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        &["bar", "/tmp", "1000", "box", "1"],
        "{}",
        r.stdout
    );
    // Only the shell and ps (plus the header): host processes are invisible. (ps writes to a
    // file so no pipeline partner races it into or out of the list.)
    assert_eq!(lines[5].trim(), "3", "{}", r.stdout);
    // lo is up (IFF_UP) in the private network namespace.
    let flags = u32::from_str_radix(lines[6].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "{}", r.stdout);
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn detached_lifecycle_stop_and_rm() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env
        .run(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            "ex",
            "sh",
            "-c",
            "trap '' TERM; echo started; while true; do sleep 1; done",
        ])
        .ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "{}", r.stdout);
    let ps = env.run(&["ps"]).ok();
    assert!(
        ps.stdout.contains("stubborn") && ps.stdout.contains("Up "),
        "{}",
        ps.stdout
    );
    assert!(ps.stdout.contains(&id[..12]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = env.run(&["logs", "stubborn"]).ok();
        if logs.stdout == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {:?}", logs.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = env.run(&["rm", "stubborn"]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("is running"), "{}", r.stderr);
    let t = Instant::now();
    env.run(&["stop", "-t", "1", &id[..8]]).ok();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let ps = env.run(&["ps", "-a"]).ok();
    assert!(ps.stdout.contains("Exited (137)"), "{}", ps.stdout);
    assert!(!env.run(&["ps"]).ok().stdout.contains("stubborn"));
    assert_eq!(env.run(&["wait", "stubborn"]).ok().stdout, "137\n");
    // Started again, the same container keeps its upper dir.
    env.run(&["start", "stubborn"]).ok();
    assert!(env.run(&["ps"]).ok().stdout.contains("stubborn"));
    env.run(&["rm", "-f", "stubborn"]).ok();
    let r = env.run(&["logs", "stubborn"]);
    // As `docker logs` (and rm, stop, restart here): a missing container is a 1.
    assert_eq!(r.status, 1);
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn auto_remove_and_create_start() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env
        .run(&["run", "--rm", "--name", "gone", "ex", "echo", "bye"])
        .ok();
    assert_eq!(r.stdout, "bye\n");
    assert!(!env.run(&["ps", "-a"]).ok().stdout.contains("gone"));
    let id = env
        .run(&[
            "create",
            "--name",
            "later",
            "ex",
            "sh",
            "-c",
            "echo made > /m; cat /m; exit 4",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(env.run(&["ps", "-a"]).ok().stdout.contains("Created"));
    let r = env.run(&["start", "-a", "later"]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert_eq!(r.stdout, "made\n");
    // The upper dir survives the stop.
    let upper = env
        .store()
        .join(".decant/containers")
        .join(&id)
        .join("upper/m");
    assert_eq!(std::fs::read_to_string(upper).unwrap(), "made\n");
    env.run(&["rm", "later"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn limits_volumes_and_rmi() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env.run(&[
        "run",
        "--rm",
        "--memory",
        "32m",
        "ex",
        "sh",
        "-c",
        "x=$(busybox head -c 300000000 /dev/zero | busybox tr '\\0' a); echo survived",
    ]);
    assert_eq!(r.status, 137, "{} {}", r.stdout, r.stderr);
    let r = env.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "4",
        "ex",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
    ]);
    assert!(
        r.stderr.to_lowercase().contains("fork"),
        "{} {}",
        r.status,
        r.stderr
    );

    let host = env.path().join("vol");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let v = format!("{}:/data", host.display());
    let r = env
        .run(&[
            "run",
            "--rm",
            "-v",
            &v,
            "ex",
            "sh",
            "-c",
            "cat /data/in; echo back > /data/out",
        ])
        .ok();
    assert_eq!(r.stdout, "from host\n");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "back\n");
    let v = format!("{}:/data:ro", host.display());
    let r = env.run(&[
        "run",
        "--rm",
        "-v",
        &v,
        "ex",
        "sh",
        "-c",
        "echo no > /data/out",
    ]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("Read-only"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "back\n");

    env.run(&["create", "--name", "holder", "ex", "true"]).ok();
    let id = id_of(&env, "holder");
    let r = env.run(&["rmi", "ex"]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("is using"), "{}", r.stderr);
    assert!(env.run(&["images"]).ok().stdout.contains("ex"));
    env.run(&["rm", "holder"]).ok();
    env.run(&["rmi", "ex"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

#[test]
fn a_killed_monitor_shows_as_exited_and_is_cleaned() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&["run", "-d", "ex", "sleep", "100"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let monitor = *common::monitors_of(&id).first().expect("the monitor runs");
    common::tool("kill", &["-9", &monitor.to_string()]);
    std::thread::sleep(Duration::from_millis(200));
    let ps = env.run(&["ps", "-a"]).ok();
    assert!(ps.stdout.contains("Exited (255)"), "{}", ps.stdout);
    env.run(&["rm", &id]).ok();
    common::assert_containers_clean(&env, &[id]);
}

/// The overlay options of container `id`'s root, from the host's mount table.
fn root_mount_options(id: &str) -> String {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .find(|l| l.contains(&format!("rootfs/{id} ")))
        .unwrap_or_else(|| panic!("no root mount of {id} in:\n{table}"))
        .to_string()
}

#[test]
fn auto_remove_is_volatile_and_prune_sweeps_leftovers() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    // A `--rm` container's upper dir is thrown away: its overlay skips the sync at unmount.
    let rm = env
        .run(&["run", "-d", "--rm", "ex", "sleep", "30"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let kept = env
        .run(&["run", "-d", "ex", "sleep", "30"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(root_mount_options(&rm).contains("volatile"));
    assert!(!root_mount_options(&kept).contains("volatile"));
    env.run(&["stop", "-t", "0", &rm, &kept]).ok();
    env.run(&["rm", &kept]).ok();
    // What a monitor killed while removing a `--rm` container leaves: invisible to `ps -a`,
    // gone after `container prune`.
    let containers = env.store().join(".decant/containers");
    let left = containers.join(format!(".removed-{}", "0".repeat(64)));
    std::fs::create_dir_all(left.join("upper/etc")).unwrap();
    std::fs::write(left.join("upper/etc/f"), "x").unwrap();
    let ps = env.run(&["ps", "-a", "-q"]).ok();
    assert_eq!(ps.stdout, "", "{}", ps.stdout);
    env.run(&["container", "prune", "-f"]).ok();
    assert!(!left.exists());
    common::assert_containers_clean(&env, &[rm, kept]);
}

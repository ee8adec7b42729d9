//! The flags of `decant run`/`create` and the verbs around them (issue 4), each by what the
//! container sees or what the host shows: --env-file, --entrypoint, --tmpfs, --read-only,
//! --stop-signal, --stop-timeout, `kill -s`, --cpus, --memory syntax, -u USER:GROUP by names,
//! id prefixes and names, `stats` streaming, and the failure paths (unknown image, unknown user,
//! missing command) with what they leave. Every test ends with the leftovers check, which finds
//! the containers' traces by itself.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Env;

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let out = env.run(&["container", "inspect", name]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// One line on stderr, 125, and nothing left in the store.
#[track_caller]
fn refused(env: &Env, args: &[&str], says: &str) {
    let r = env.run(args);
    assert_eq!(r.status, 125, "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    common::assert_containers_clean(env, &[]);
}

#[test]
fn the_leftovers_check_finds_a_container_by_itself() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&["run", "-d", "ex", "sleep", "1000"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let left = common::leftovers(&env.store(), &[], env.born);
    let has = |what: &str| left.iter().any(|l| l.starts_with(what));
    assert!(has("record"), "{left:?}");
    assert!(has("runtime state"), "{left:?}");
    assert!(has("process"), "{left:?}");
    assert!(has("mount"), "{left:?}");
    // Found through the container's process, in every hierarchy decant populates.
    for h in common::cgroup_hierarchies() {
        let g = h.join("decant").join(&id);
        if g.exists() {
            assert!(
                left.contains(&format!("cgroup {}", g.display())),
                "{left:?}"
            );
        }
    }
    assert!(has("cgroup"), "{left:?}");
    env.run(&["rm", "-f", &id]).ok();
    common::assert_containers_clean(&env, &[]);
    // An empty group that no container of any test holds, made after the env: an orphan.
    let orphan = "0f".repeat(32);
    let h = common::cgroup_hierarchies()
        .into_iter()
        .find(|h| h.join("decant").is_dir())
        .expect("a hierarchy with a decant group");
    let g = h.join("decant").join(&orphan);
    std::fs::create_dir(&g).unwrap();
    let left = common::leftovers(&env.store(), &[], env.born);
    std::fs::remove_dir(&g).unwrap();
    assert_eq!(left, [format!("cgroup {}", g.display())]);
}

#[test]
fn env_file_comments_blank_lines_and_host_values() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let file = env.path().join("vars");
    std::fs::write(
        &file,
        "# a comment\n\nA=1\nB=two words\n  \nFROM_HOST\nNOT_ON_HOST\nC=\n",
    )
    .unwrap();
    let o = env
        .decant()
        .env("FROM_HOST", "host value")
        .env_remove("NOT_ON_HOST")
        .args(["run", "--rm", "--env-file", file.to_str().unwrap(), "ex"])
        .args([
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_HOST|${NOT_ON_HOST-unset}|${C-unset}\"",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "1|two words|host value|unset|\n"
    );
    // -e wins over the file, as Docker's.
    let r = env
        .run(&[
            "run",
            "--rm",
            "--env-file",
            file.to_str().unwrap(),
            "-e",
            "A=2",
            "ex",
            "sh",
            "-c",
            "echo $A",
        ])
        .ok();
    assert_eq!(r.stdout, "2\n");
    refused(
        &env,
        &[
            "run",
            "--rm",
            "--env-file",
            "/nonexistent/vars",
            "ex",
            "true",
        ],
        "/nonexistent/vars",
    );
}

#[test]
fn entrypoint_overrides_the_images() {
    let Some(env) = common::container_env(&["-c", "ENTRYPOINT [\"echo\", \"image\"]"]) else {
        return;
    };
    assert_eq!(
        env.run(&["run", "--rm", "ex", "a", "b"]).ok().stdout,
        "image a b\n"
    );
    assert_eq!(
        env.run(&["run", "--rm", "--entrypoint", "echo", "ex", "a", "b"])
            .ok()
            .stdout,
        "a b\n"
    );
    let r = env
        .run(&["run", "--rm", "--entrypoint", "/bin/hostname", "ex"])
        .ok();
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert_ne!(r.stdout, "image\n");
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn tmpfs_is_a_writable_tmpfs_on_a_read_only_root() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let r = env
        .run(&[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/x",
            "ex",
            "sh",
            "-c",
            "grep ' /x ' /proc/mounts; echo hi > /x/f && cat /x/f",
        ])
        .ok();
    let mut lines = r.stdout.lines();
    let mount = lines.next().unwrap_or_default();
    assert!(mount.starts_with("tmpfs /x tmpfs rw"), "{}", r.stdout);
    assert_eq!(lines.next(), Some("hi"), "{}", r.stdout);
    // --read-only: the root refuses a write, with the container's own message and code.
    let r = env.run(&["run", "--rm", "--read-only", "ex", "busybox", "touch", "/f"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("/f: Read-only file system"),
        "{}",
        r.stderr
    );
    // Without it the same write works.
    env.run(&["run", "--rm", "ex", "busybox", "touch", "/f"])
        .ok();
    common::assert_containers_clean(&env, &[]);
}

/// A container that says `ready`, then reports the signals it traps.
const TRAPPER: &str = "trap 'echo got USR1' USR1; trap 'echo got USR2; exit 7' USR2; \
                       echo ready; while true; do sleep 0.1; done";

#[test]
fn stop_signal_and_kill_s_reach_a_trap() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    env.run(&[
        "run",
        "-d",
        "--name",
        "t",
        "--stop-signal",
        "USR2",
        "ex",
        "sh",
        "-c",
        TRAPPER,
    ])
    .ok();
    common::wait_log(&env, "t", |l| l.contains("ready"));
    assert_eq!(inspect(&env, "t")["Config"]["StopSignal"], "USR2");
    // kill -s USR1: the trap runs, the container lives on.
    env.run(&["kill", "-s", "USR1", "t"]).ok();
    common::wait_log(&env, "t", |l| l.contains("got USR1"));
    assert_eq!(inspect(&env, "t")["State"]["Status"], "running");
    // stop sends the stop signal: the trap exits 7, long before the timeout.
    let t = Instant::now();
    env.run(&["stop", "t"]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(env.run(&["logs", "t"]).ok().stdout.contains("got USR2"));
    assert_eq!(inspect(&env, "t")["State"]["ExitCode"], 7);
    // kill's default is SIGKILL: 137.
    env.run(&["start", "t"]).ok();
    env.run(&["kill", "t"]).ok();
    assert_eq!(env.run(&["wait", "t"]).ok().stdout, "137\n");
    let r = env.run(&["kill", "-s", "NOPE", "t"]);
    assert_ne!(r.status, 0);
    env.run(&["rm", "t"]).ok();
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn stop_timeout_is_how_long_stop_waits_before_sigkill() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    // PID 1 without a TERM trap ignores SIGTERM: only the SIGKILL after the timeout ends it.
    env.run(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--stop-timeout",
        "2",
        "ex",
        "sh",
        "-c",
        "echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    common::wait_log(&env, "slow", |l| l.contains("ready"));
    let t = Instant::now();
    env.run(&["stop", "slow"]).ok();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(inspect(&env, "slow")["State"]["ExitCode"], 137);
    // -t on stop overrides it.
    env.run(&["start", "slow"]).ok();
    common::wait_log(&env, "slow", |l| l.matches("ready").count() == 2);
    let t = Instant::now();
    env.run(&["stop", "-t", "0", "slow"]).ok();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    env.run(&["rm", "slow"]).ok();
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn cpus_sets_the_cfs_quota_and_memory_syntax_is_checked() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&["run", "-d", "--cpus", "0.5", "ex", "sleep", "1000"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu/decant").join(&id);
    let read = |f: &str| {
        std::fs::read_to_string(v1.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", v1.display()))
            .trim()
            .to_string()
    };
    if v1.exists() {
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu.cfs_period_us"), "100000");
    } else {
        let v2 = std::path::Path::new("/sys/fs/cgroup/decant")
            .join(&id)
            .join("cpu.max");
        assert_eq!(std::fs::read_to_string(&v2).unwrap().trim(), "50000 100000");
    }
    env.run(&["rm", "-f", &id]).ok();
    refused(
        &env,
        &["run", "--memory", "12q", "ex", "true"],
        "invalid size: 12q",
    );
    refused(
        &env,
        &["run", "--memory", "-1", "ex", "true"],
        "invalid memory limit -1",
    );
}

#[test]
fn user_and_group_by_name_from_the_image() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    // The example image's /etc/passwd has alice (1000), its /etc/group root (0) and alice (1000).
    let who = "id -un; id -gn; id -u; id -g";
    let r = env
        .run(&["run", "--rm", "-u", "alice:root", "ex", "sh", "-c", who])
        .ok();
    assert_eq!(r.stdout, "alice\nroot\n1000\n0\n");
    let r = env
        .run(&["run", "--rm", "-u", "root:alice", "ex", "sh", "-c", who])
        .ok();
    assert_eq!(r.stdout, "root\nalice\n0\n1000\n");
    // A user's own group when none is given.
    let r = env
        .run(&["run", "--rm", "-u", "alice", "ex", "sh", "-c", who])
        .ok();
    assert_eq!(r.stdout, "alice\nalice\n1000\n1000\n");
    let r = env.run(&["run", "--rm", "-u", "alice:nogroup", "ex", "true"]);
    assert_eq!(r.status, 125, "{}", r.stderr);
    assert!(r.stderr.contains("nogroup"), "{}", r.stderr);
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn ids_prefixes_and_names() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    // Created until two ids share their first digit (at most 17 by pigeonhole).
    let mut ids: Vec<String> = Vec::new();
    let prefix = loop {
        let id = env
            .run(&["create", "ex", "true"])
            .ok()
            .stdout
            .trim()
            .to_string();
        assert_eq!(id.len(), 64, "{id}");
        if let Some(o) = ids.iter().find(|o| o[..1] == id[..1]) {
            let p = o[..1].to_string();
            ids.push(id);
            break p;
        }
        ids.push(id);
    };
    let r = env.run(&["rm", &prefix]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("multiple containers match"),
        "{}",
        r.stderr
    );
    // An unambiguous prefix works; unnamed containers are adjective_noun.
    let out = env.run(&["ps", "-a", "--format", "json"]).ok().stdout;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["Names"].as_str().unwrap();
        let (adj, noun) = name.split_once('_').unwrap_or_else(|| panic!("{name}"));
        // A name already taken gets a number after the noun, as Docker's.
        let noun = noun.trim_end_matches(|c: char| c.is_ascii_digit());
        for w in [adj, noun] {
            assert!(
                !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()),
                "{name}"
            );
        }
    }
    // A taken name is refused as Docker does, and the first container is untouched.
    env.run(&["create", "--name", "dup", "ex", "true"]).ok();
    let first = inspect(&env, "dup")["Id"].as_str().unwrap().to_string();
    let r = env.run(&["create", "--name", "dup", "ex", "true"]);
    assert_eq!(r.status, 125, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "Conflict. The container name \"/dup\" is already in use by container \"{first}\""
        )),
        "{}",
        r.stderr
    );
    ids.push(first);
    for id in &ids {
        env.run(&["rm", &id[..12]]).ok();
    }
    common::assert_containers_clean(&env, &ids);
}

#[test]
fn stats_streams_until_killed() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    env.run(&["run", "-d", "--name", "busy", "ex", "sleep", "1000"])
        .ok();
    let mut child = env
        .decant()
        .args(["stats", "busy"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let t = Instant::now();
    let mut refreshes = 0;
    let mut rows = 0;
    let mut line = String::new();
    while refreshes < 3 && t.elapsed() < Duration::from_secs(15) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // Each refresh clears the screen before its table.
        refreshes += line.matches("\x1b[2J").count();
        if line.contains("busy") {
            rows += 1;
        }
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "stats ended by itself");
    assert!(refreshes >= 3, "{refreshes} refreshes in {:?}", t.elapsed());
    assert!(rows >= 2, "{rows} rows");
    env.run(&["rm", "-f", "busy"]).ok();
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn failures_say_one_line_and_leave_a_listed_container() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    refused(
        &env,
        &["run", "no-such-image"],
        "No such image: no-such-image",
    );
    for (flag, value, says) in [
        ("-v", "/tmp:/x:zz", "unknown option zz"),
        ("-v", "/tmp:relative", "the container path must be absolute"),
        ("-p", "70000:80", "invalid hostPort: 70000"),
        ("-p", "abc", "invalid containerPort: abc"),
    ] {
        refused(&env, &["run", "--rm", flag, value, "ex", "true"], says);
    }
    refused(
        &env,
        &["run", "--rm", "-u", "nosuch", "ex", "true"],
        "unable to find user nosuch: no matching entries in passwd file",
    );
    // Without --rm the failed container stays, listed with its code, until `rm`.
    let cases: [(&str, &[&str], i32, &str); 3] = [
        (
            "nouser",
            &["-u", "nosuch", "ex", "true"],
            125,
            "unable to find user nosuch",
        ),
        ("nocmd", &["ex", "/nonexistent"], 127, "no such file"),
        ("noexec", &["ex", "/etc/passwd"], 126, "permission denied"),
    ];
    for (name, args, code, says) in cases {
        let mut a = vec!["run", "--name", name];
        a.extend_from_slice(args);
        let r = env.run(&a);
        assert_eq!(r.status, code, "{name}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        let ps = env.run(&["ps", "-a"]).ok().stdout;
        let row = ps
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {ps}"));
        assert!(row.contains(&format!("Exited ({code})")), "{row}");
        assert_eq!(inspect(&env, name)["State"]["ExitCode"], code);
        // Nothing runs for it: only its record is left, which `rm` takes.
        let left = common::leftovers(&env.store(), &[], env.born);
        assert!(
            left.iter().all(|l| l.starts_with("record ")),
            "{name}: {left:?}"
        );
        env.run(&["rm", name]).ok();
        common::assert_containers_clean(&env, &[]);
    }
}

/// A usage error is decant's own error: 125 as Docker's CLI, one clap message on stderr; help
/// exits 0 on stdout. No container environment needed.
#[test]
fn usage_errors_exit_125_and_help_0() {
    let env = Env::new();
    for args in [
        &["run", "--bogus", "img"][..],
        &["run"][..],
        &["ps", "--no-such-flag"][..],
        &["import"][..],
    ] {
        let r = env.run(args);
        assert_eq!(r.status, 125, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let r = env.run(&["run", "--help"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Usage: decant run"), "{}", r.stdout);
}

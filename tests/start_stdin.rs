//! `create -i` and `start -a -i`: a container made with an open standard input is fed the
//! starter's when started attached and interactive (again on each start), keeps a pipe that
//! never ends when started without one, and a container made without -i gets no input.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{Env, Run};

/// `decant start -a -i KEY` with `input` on its standard input.
fn start_fed(env: &Env, key: &str, input: &[u8]) -> Run {
    let mut child = env
        .decant()
        .args(["start", "-a", "-i", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn decant");
    {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input).expect("write input");
    }
    let o = child.wait_with_output().expect("wait decant");
    Run {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn start_attach_interactive_feeds_a_created_i_container() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&["create", "-i", "ex", "cat"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let r = start_fed(&env, &id, b"hi\n");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "hi\n");
    // Each start is fed anew, and a status other than 0 comes through.
    env.run(&["rm", &id]).ok();
    let id = env
        .run(&[
            "create",
            "-i",
            "ex",
            "sh",
            "-c",
            "read l; echo got $l; exit 3",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    for word in ["one", "two"] {
        let r = start_fed(&env, &id, format!("{word}\n").as_bytes());
        assert_eq!(r.status, 3, "{}", r.stderr);
        assert_eq!(r.stdout, format!("got {word}\n"));
    }
    env.run(&["rm", &id]).ok();
    // Made without -i: no input reaches it (as Docker), cat sees end of file at once.
    let id = env
        .run(&["create", "ex", "cat"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let r = start_fed(&env, &id, b"ignored\n");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    env.run(&["rm", &id]).ok();
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn create_i_started_detached_keeps_stdin_open() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    env.run(&["create", "-i", "--name", "open", "ex", "cat"])
        .ok();
    env.run(&["start", "open"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "open"]).ok().stdout).expect("json");
    assert_eq!(
        v[0]["State"]["Running"], true,
        "cat ended: its stdin was not held open: {v}"
    );
    // `run -d -i` is the same container.
    let r = env
        .run(&["run", "-d", "-i", "--name", "open2", "ex", "cat"])
        .ok();
    let id2 = r.stdout.trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "open2"]).ok().stdout).expect("json");
    assert_eq!(v[0]["State"]["Running"], true, "{v}");
    env.run(&["rm", "-f", "open", "open2"]).ok();
    common::assert_containers_clean(&env, &[id2]);
}

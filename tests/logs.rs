//! `decant logs` end to end (issue 4): `-f` follows a running container until it ends, `-t`
//! puts RFC 3339 nanosecond timestamps in front, `--tail N` (0 and `all` too), stdout and stderr
//! each on its own stream, and the container.log file is JSON lines with `log`, `stream` and
//! `time` as Docker's json-file driver writes them.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Env;

/// Whether `t` is `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, nine fraction digits).
fn is_rfc3339_nano(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 30
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            29 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The container's record directory (the only one in the store).
fn log_file(env: &Env, id: &str) -> std::path::PathBuf {
    env.store()
        .join(".decant/containers")
        .join(id)
        .join("container.log")
}

#[test]
fn follow_streams_until_the_container_ends() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    env.run(&[
        "run",
        "-d",
        "--name",
        "talk",
        "ex",
        "sh",
        "-c",
        "echo one; sleep 1; echo two >&2; sleep 0.5; echo three; exit 3",
    ])
    .ok();
    let t = Instant::now();
    let mut child = env
        .decant()
        .args(["logs", "-f", "talk"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line arrives while the container still runs.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 4];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"one\n");
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["container", "inspect", "talk"]).ok().stdout).unwrap();
    assert_eq!(v[0]["State"]["Status"], "running", "{:?}", t.elapsed());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let took = t.elapsed();
    assert!(status.success(), "{err}");
    assert_eq!(rest, "three\n");
    assert_eq!(err, "two\n");
    // It ended with the container: after its last line, not long after.
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(env.run(&["wait", "talk"]).ok().stdout, "3\n");
    // On a stopped container -f prints the log and returns at once.
    let t = Instant::now();
    let r = env.run(&["logs", "-f", "talk"]).ok();
    assert_eq!(r.stdout, "one\nthree\n");
    assert_eq!(r.stderr, "two\n");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    env.run(&["rm", "talk"]).ok();
    let r = env.run(&["logs", "talk"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No such container: talk"), "{}", r.stderr);
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn timestamps_tail_streams_and_the_json_file() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let id = env
        .run(&[
            "create",
            "--name",
            "five",
            "ex",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo $i; done; echo oops >&2; printf partial",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&["start", "-a", "five"]).ok();

    // The file: one JSON object a line, exactly log, stream and time.
    let text = std::fs::read_to_string(log_file(&env, &id)).unwrap();
    let mut entries = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let o = v.as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["log", "stream", "time"], "{line}");
        let time = o["time"].as_str().unwrap().to_string();
        assert!(is_rfc3339_nano(&time), "{line}");
        entries.push((
            o["stream"].as_str().unwrap().to_string(),
            o["log"].as_str().unwrap().to_string(),
            time,
        ));
    }
    let of = |stream: &str| -> String {
        entries
            .iter()
            .filter(|e| e.0 == stream)
            .map(|e| e.1.as_str())
            .collect()
    };
    assert_eq!(of("stdout"), "1\n2\n3\n4\n5\npartial");
    assert_eq!(of("stderr"), "oops\n");
    assert_eq!(entries.len(), 7, "{text}");

    // logs: each stream on its own; -t puts each line's time in front, in increasing order.
    let r = env.run(&["logs", "five"]).ok();
    assert_eq!(r.stdout, "1\n2\n3\n4\n5\npartial");
    assert_eq!(r.stderr, "oops\n");
    let r = env.run(&["logs", "-t", "five"]).ok();
    let mut last = String::new();
    let mut seen = Vec::new();
    for line in r.stdout.lines() {
        let (time, log) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(is_rfc3339_nano(time), "{line}");
        assert!(time > last.as_str(), "{time} after {last}");
        last = time.to_string();
        seen.push(log.to_string());
    }
    assert_eq!(seen, ["1", "2", "3", "4", "5", "partial"]);
    // The file's times are the ones shown.
    let stdout_times: Vec<&str> = entries
        .iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| e.2.as_str())
        .collect();
    let shown: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(shown, stdout_times);

    // --tail counts lines of both streams from the end, as Docker's.
    let tail = |n: &str| {
        let r = env.run(&["logs", "--tail", n, "five"]).ok();
        (r.stdout, r.stderr)
    };
    let last_entries = |n: usize| -> (String, String) {
        let from = entries.len().saturating_sub(n);
        let pick = |s: &str| {
            entries[from..]
                .iter()
                .filter(|e| e.0 == s)
                .map(|e| e.1.as_str())
                .collect::<String>()
        };
        (pick("stdout"), pick("stderr"))
    };
    assert_eq!(tail("0"), (String::new(), String::new()));
    assert_eq!(tail("2"), last_entries(2));
    assert_eq!(tail("all"), last_entries(entries.len()));
    assert_eq!(tail("100"), last_entries(entries.len()));
    let r = env.run(&["logs", "--tail", "x", "five"]);
    assert_eq!(r.status, 125, "{}", r.stderr);
    assert!(r.stderr.contains("invalid --tail x"), "{}", r.stderr);
    env.run(&["rm", "five"]).ok();
    common::assert_containers_clean(&env, &[id]);
}

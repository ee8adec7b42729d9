//! Rootless `decant run`: the tests run as root (as CI does) but execute decant as `nobody`
//! through `setpriv`, with HOME, XDG_DATA_HOME (the store) and XDG_RUNTIME_DIR (the runtime
//! state) in a temp dir owned by nobody, so the whole path a plain user takes is exercised:
//! the rootless layer unpack, the monitor's own user and mount namespace with the overlay
//! mounted inside it, no cgroup, and nothing left behind on the host. A refusal by the kernel
//! fails the test with decant's message; it never passes silently.

mod common;

use std::path::{Path, PathBuf};

use common::Run;

use common::user::UserDirs;

/// A temp dir for `nobody` (see `common::user`) and a readable copy of the example root
/// filesystem to import.
struct Nobody {
    dirs: UserDirs,
}

impl Nobody {
    fn new() -> Option<Nobody> {
        if !common::require_root("setpriv to nobody needs root") {
            return None;
        }
        let dirs = UserDirs::new(
            "decant-rootless",
            common::user::NOBODY,
            common::user::NOBODY,
        );
        dirs.example_copy();
        Some(Nobody { dirs })
    }

    fn path(&self) -> &Path {
        self.dirs.path()
    }

    fn store(&self) -> PathBuf {
        self.dirs.store()
    }

    fn runtime_dir(&self) -> PathBuf {
        self.path().join("run/decant/runtime")
    }

    /// Runs decant as nobody with a clean environment (no DECANT_ROOT: the store is found
    /// through XDG_DATA_HOME, as a user's would be).
    fn run(&self, args: &[&str]) -> Run {
        self.dirs.run(args)
    }

    /// As `run`, with or without XDG_RUNTIME_DIR (without it the state goes under the store).
    fn run_in(&self, args: &[&str], runtime_dir: bool) -> Run {
        self.dirs.run_env(args, runtime_dir, &[])
    }

    /// As `run_in`, with the variables `env` added.
    fn run_env(&self, args: &[&str], runtime_dir: bool, env: &[(&str, &str)]) -> Run {
        self.dirs.run_env(args, runtime_dir, env)
    }

    fn import(&self) {
        let img = self.path().join("root.ext4");
        self.run(&["import", "-t", "ex", img.to_str().expect("utf8")])
            .ok();
    }

    /// No container record, no runtime state, no mount under the temp dir, no monitor, and
    /// none of `pids` (the containers' processes) alive.
    #[track_caller]
    fn assert_clean(&self, pids: &[i32]) {
        // A `--rm` monitor removes the container's files after it reported the exit.
        for _ in 0..40 {
            if common::monitors_of(self.path().to_str().expect("utf8")).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let left: Vec<_> = std::fs::read_dir(self.store().join(".decant/containers"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "records left: {left:?}");
        let state: Vec<_> = std::fs::read_dir(self.runtime_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(state.is_empty(), "runtime state left: {state:?}");
        let s = self.path().to_str().expect("utf8");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(s), "a mount is left under {s}");
        let mut monitors = common::monitors_of(s);
        for _ in 0..40 {
            let gone = pids
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists() || zombie(*p));
            if monitors.is_empty() && gone {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            monitors = common::monitors_of(s);
        }
        assert!(monitors.is_empty(), "a monitor is left: pids {monitors:?}");
        // Any process started for it: its mount table names the temp dir.
        let mut procs = common::processes_of(s);
        for _ in 0..40 {
            if procs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            procs = common::processes_of(s);
        }
        assert!(procs.is_empty(), "processes left: {procs:?}");
        for p in pids {
            assert!(
                !Path::new(&format!("/proc/{p}")).exists() || zombie(*p),
                "container process {p} is left"
            );
        }
    }
}

/// A process that has exited and waits for its (re-parented) reaper is no longer running.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn rootless_run_rm_is_root_inside_and_leaves_nothing() {
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    let r = n.run(&[
        "run",
        "--rm",
        "ex",
        "sh",
        "-c",
        "id -u; id -g; cat /etc/os-release; cat /proc/self/uid_map",
    ]);
    assert_eq!(
        r.status, 0,
        "rootless run failed (the kernel or decant refused it):\n{}",
        r.stderr
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "id -u: {}", r.stdout);
    assert_eq!(lines.get(1), Some(&"0"), "id -g: {}", r.stdout);
    assert!(
        r.stdout.contains("NAME=\"decant-example\""),
        "no os-release: {}",
        r.stdout
    );
    // Uid 0 inside is nobody outside: one id mapped, the user itself.
    let map: Vec<&str> = lines
        .last()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        map,
        ["0", "0", "1"],
        "uid_map in the container: {}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("rootless: uid 65534 cannot write cgroups"),
        "no cgroup notice: {}",
        r.stderr
    );
    // The layer was unpacked the rootless way, into files nobody owns.
    let layers: Vec<String> = std::fs::read_dir(n.store().join(".decant/layers"))
        .expect("layer cache")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        layers.iter().any(|l| l.ends_with(".rootless")),
        "no rootless unpack: {layers:?}"
    );
    // Without XDG_RUNTIME_DIR the runtime state lives under the store, not in a shared /tmp.
    let r = n.run_in(
        &["run", "-d", "--name", "nox", "ex", "sleep", "1000"],
        false,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let id = r.stdout.trim().to_string();
    assert!(
        n.store().join(".decant/runtime").join(&id).is_dir(),
        "no runtime state under the store"
    );
    n.run_in(&["rm", "-f", "nox"], false).ok();
    assert!(!n.store().join(".decant/runtime").join(&id).exists());
    // Exit codes come through as they do for root.
    let r = n.run(&["run", "--rm", "ex", "sh", "-c", "exit 7"]);
    assert_eq!(r.status, 7, "{}", r.stderr);
    n.assert_clean(&[]);
}

#[test]
fn rootless_detached_lifecycle_ps_exec_stop_rm() {
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    // A root-owned mode 0 directory inside is a nobody-owned one in the upper dir: rm must
    // still remove it (and the overlay's own mode 0 work dir).
    let r = n.run(&[
        "run",
        "-d",
        "--name",
        "bg",
        "ex",
        "sh",
        "-c",
        "mkdir -p /locked/in; chmod 0 /locked/in /locked; exec sleep 1000",
    ]);
    assert_eq!(r.status, 0, "rootless run -d failed:\n{}", r.stderr);
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "{}", r.stdout);
    let ps = n.run(&["ps", "--format", "json", "--no-trunc"]).ok();
    let row: serde_json::Value = ps
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|v| v["Names"] == "bg")
        .unwrap_or_else(|| panic!("bg not in ps: {}", ps.stdout));
    assert_eq!(row["ID"], id.as_str());
    assert!(
        row["Status"].as_str().unwrap_or("").starts_with("Up"),
        "{row}"
    );
    assert!(
        n.runtime_dir().join(&id).is_dir(),
        "the runtime state is not under XDG_RUNTIME_DIR"
    );
    let inspect = n.run(&["inspect", "bg"]).ok();
    let v: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("inspect json");
    let pid = v[0]["State"]["Pid"].as_i64().expect("State.Pid") as i32;
    assert!(pid > 0, "{}", inspect.stdout);
    // The container's process belongs to nobody on the host.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uid_line.split_whitespace().nth(1) == Some("65534"),
        "{uid_line}"
    );
    let r = n
        .run(&["exec", "bg", "sh", "-c", "id -u; ls -d /locked"])
        .ok();
    assert_eq!(r.stdout, "0\n/locked\n");
    // No cgroup rootless here: top reads the pid namespace; pause and stats say why not.
    let r = n.run(&["top", "bg"]).ok();
    assert!(r.stdout.contains("sleep 1000"), "{}", r.stdout);
    for verb in ["pause", "stats"] {
        let args: &[&str] = if verb == "stats" {
            &["stats", "--no-stream", "bg"]
        } else {
            &["pause", "bg"]
        };
        let r = n.run(args);
        assert_ne!(r.status, 0, "{verb} worked without a cgroup: {}", r.stdout);
        assert!(
            r.stderr.contains(&format!(
                "rootless: {verb} needs a cgroup, and uid 65534 cannot write the cgroup hierarchy"
            )) && r.stderr.lines().count() == 1,
            "{verb}: {}",
            r.stderr
        );
    }
    // A running container is not removed without -f.
    let r = n.run(&["rm", "bg"]);
    assert_ne!(r.status, 0, "rm removed a running container");
    let t0 = std::time::Instant::now();
    n.run(&["stop", "-t", "1", "bg"]).ok();
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    let ps = n.run(&["ps", "-a", "--format", "json"]).ok();
    assert!(ps.stdout.contains("Exited"), "{}", ps.stdout);
    n.run(&["rm", "bg"]).ok();
    n.assert_clean(&[pid]);
}

#[test]
fn rootless_limits_are_refused_in_one_line() {
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    for flag in [["--memory", "64m"], ["--pids-limit", "10"], ["--cpus", "1"]] {
        let r = n.run(&["run", "--rm", flag[0], flag[1], "ex", "true"]);
        assert_eq!(r.status, 125, "{flag:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(
                "rootless: --memory, --cpus and --pids-limit need a cgroup, and uid 65534 cannot write the cgroup hierarchy"
            ),
            "{flag:?}: {}",
            r.stderr
        );
    }
    n.assert_clean(&[]);
}

#[test]
fn rootless_published_port_reaches_httpd_inside() {
    use std::io::{Read, Write};
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let publish = format!("127.0.0.1:{port}:80");
    let r = n.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "ex",
        "sh",
        "-c",
        "mkdir -p /www && echo rootless-hello > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    assert_eq!(r.status, 0, "rootless run -p failed:\n{}", r.stderr);
    let mut body = String::new();
    for _ in 0..50 {
        body.clear();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut body);
            if body.contains("rootless-hello") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        body.contains("rootless-hello"),
        "no answer through port {port}: {body:?}"
    );
    n.run(&["rm", "-f", "web"]).ok();
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} still held after rm -f"
    );
    n.assert_clean(&[]);
}

#[test]
fn rootless_copy_fallback_when_overlay_is_refused() {
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    // DECANT_NO_OVERLAY=1 makes the monitor take the overlay as refused, as a storage
    // filesystem without overlay support in a user namespace would.
    let no_overlay = [("DECANT_NO_OVERLAY", "1")];
    let r = n.run_env(
        &[
            "run",
            "-d",
            "--name",
            "cp",
            "ex",
            "sh",
            "-c",
            "echo kept > /data.txt; mkdir /locked; chmod 0 /locked; exec sleep 1000",
        ],
        true,
        &no_overlay,
    );
    assert_eq!(r.status, 0, "copy fallback failed:\n{}", r.stderr);
    let id = r.stdout.trim().to_string();
    let notes: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("copy of its layers"))
        .collect();
    assert_eq!(notes.len(), 1, "not one line about the copy: {}", r.stderr);
    assert!(
        notes[0].contains("overlay refused (DECANT_NO_OVERLAY=1)"),
        "{}",
        notes[0]
    );
    let dir = n.store().join(".decant/containers").join(&id);
    assert!(
        dir.join("rootfs/etc/os-release").is_file(),
        "no copied root"
    );
    let r = n
        .run(&["exec", "cp", "cat", "/etc/os-release", "/data.txt"])
        .ok();
    assert!(
        r.stdout.contains("decant-example") && r.stdout.ends_with("kept\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_dir(dir.join("upper")).expect("upper").count(),
        0,
        "the copy's changes went to the upper dir"
    );
    // Stop and start keep the copy (and its changes), without the note again; even with
    // overlay allowed now.
    n.run(&["stop", "-t", "1", "cp"]).ok();
    let r = n.run(&["start", "cp"]).ok();
    assert!(!r.stderr.contains("copy of its layers"), "{}", r.stderr);
    let r = n.run(&["exec", "cp", "cat", "/data.txt"]).ok();
    assert_eq!(r.stdout, "kept\n");
    // No upper dir holds its changes apart: diff says so rather than show nothing.
    let r = n.run(&["diff", "cp"]);
    assert_ne!(r.status, 0, "diff of a copied root: {}", r.stdout);
    assert!(
        r.stderr.contains("runs on a copy of its layers"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value =
        serde_json::from_str(&n.run(&["inspect", "cp"]).ok().stdout).expect("inspect json");
    assert_eq!(v[0]["Driver"], "vfs");
    // rm removes the copy with the container (mode 0 directory included).
    n.run(&["rm", "-f", "cp"]).ok();
    assert!(!dir.exists(), "the container's directory is left");
    n.assert_clean(&[]);
}

/// Not a test of its own: the UDP server of `rootless_udp_port_and_a_taken_port` runs inside a
/// rootless container (this same binary, through `chroot` into the host root bind-mounted
/// read-only, since busybox has no UDP server). Echoes datagrams upper-cased until `bye`.
#[test]
#[ignore = "run inside a container by rootless_udp_port_and_a_taken_port"]
fn rootless_udp_echo_server() {
    let port: u16 = std::env::var("DECANT_UDP_ECHO_PORT")
        .expect("DECANT_UDP_ECHO_PORT: run by rootless_udp_port_and_a_taken_port only")
        .parse()
        .unwrap();
    let s = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
    println!("listening");
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = s.recv_from(&mut buf).unwrap();
        let msg = &buf[..n];
        s.send_to(&msg.to_ascii_uppercase(), from).unwrap();
        if msg == b"bye" {
            return;
        }
    }
}

#[test]
fn rootless_udp_port_and_a_taken_port() {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};
    let Some(n) = Nobody::new() else {
        return;
    };
    n.import();
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let exe = std::env::current_exe().unwrap();
    let publish = format!("127.0.0.1:{port}:5353/udp");
    let r = n.run(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-v",
        "/:/host:ro",
        "-e",
        "DECANT_UDP_ECHO_PORT=5353",
        "-p",
        &publish,
        "ex",
        "busybox",
        "chroot",
        "/host",
        exe.to_str().unwrap(),
        "--exact",
        "rootless_udp_echo_server",
        "--ignored",
        "--nocapture",
    ]);
    assert_eq!(r.status, 0, "rootless run -p .../udp failed:\n{}", r.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = n.run(&["logs", "udp"]).ok().stdout;
        if logs.contains("listening") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start: {logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        n.run(&["port", "udp"]).ok().stdout,
        format!("5353/udp -> 127.0.0.1:{port}\n")
    );
    let ask = |msg: &str| -> String {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1500];
        loop {
            c.send(msg.as_bytes()).unwrap();
            if let Ok(n) = c.recv(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            assert!(Instant::now() < deadline, "no UDP answer on port {port}");
        }
    };
    assert_eq!(ask("hello"), "HELLO");
    assert_eq!(ask("bye"), "BYE");
    assert_eq!(n.run(&["wait", "udp"]).ok().stdout, "0\n");
    n.run(&["rm", "udp"]).ok();
    UdpSocket::bind(("127.0.0.1", port)).expect("the host port is free once the container went");

    // A host port that is taken (by root here) is refused in one line, for TCP and UDP, and
    // nothing is made.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (taken, proto) in [
        (tcp.local_addr().unwrap().port(), ""),
        (udp.local_addr().unwrap().port(), "/udp"),
    ] {
        let p = format!("127.0.0.1:{taken}:80{proto}");
        let r = n.run(&["run", "-d", "-p", &p, "ex", "sleep", "1000"]);
        assert_eq!(r.status, 125, "{p}: {} {}", r.stdout, r.stderr);
        let want = format!("Bind for 127.0.0.1:{taken} failed: port is already allocated");
        assert!(r.stderr.contains(&want), "{p}: {}", r.stderr);
        // One line besides the notice every rootless run gives.
        let other = r
            .stderr
            .lines()
            .filter(|l| !l.contains("rootless: uid 65534 cannot write cgroups"))
            .count();
        assert_eq!(other, 1, "{}", r.stderr);
        assert_eq!(n.run(&["ps", "-a", "-q"]).ok().stdout, "");
    }
    n.assert_clean(&[]);
}

//! Issue 4's test matrix on the imported Debian VM (tests/common/debian_vm.rs: debootstrap
//! bookworm with nginx-light, cached in /var/tmp/decant-bench), where tests/containers.rs and
//! its siblings run it on the busybox example: exit codes; env, workdir, users by name from
//! Debian's /etc/passwd, hostname; PID 1 and the host's PIDs invisible; /proc/sys read-only;
//! the default capability set; mount refused; a memory limit that OOM-kills; a pids limit;
//! nginx answering a plain client through `-p`; volumes rw and ro; restart policies; `stop -t 1`
//! on a process that ignores SIGTERM and `rm` refusing it while it runs; `logs -f`; exec;
//! pause/unpause; and a rootless run as nobody.
//!
//! The VM is imported once per test binary into a store every test shares (the import and the
//! first unpack of its layer are the slow part); the tests run in parallel, so each names its
//! containers `deb-<test>-<name>` and removes them when it ends, passed or failed. The store
//! lives in the target's temp dir: the last test to end checks that nothing of any container
//! is left (the harness's check) and deletes it; a filtered run that never reaches the last
//! test leaves it for the next run, which sweeps it first.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{debian_vm, Env, Run};

/// How many tests this file has (counted in its own source, so a new test cannot be
/// forgotten): the one that ends last runs the final check.
fn tests() -> usize {
    include_str!("debian_run.rs")
        .lines()
        .filter(|l| l.trim() == "#[test]")
        .count()
}
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// Every container id any test saw, for the final check of runtime state and cgroups.
static IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The Capability set of Podman's defaults (runtime/tests/lifecycle.rs checks the same mask on
/// the runtime alone): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, SYS_CHROOT, SETFCAP.
const DEFAULT_CAPS: &str = "00000000800405fb";

/// Where the shared store lives: one subdirectory per run.
fn shared_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-run")
}

/// The shared env with the Debian VM imported as `deb`; `None`, said loudly, when not root.
fn debian() -> Option<&'static Env> {
    static ENV: OnceLock<Env> = OnceLock::new();
    if !common::require_root("containers need namespaces, mounts and cgroups") {
        return None;
    }
    Some(ENV.get_or_init(|| {
        let root = shared_root();
        sweep(&root);
        std::fs::create_dir_all(&root).expect("mkdir shared root");
        let env = Env {
            dir: tempfile::Builder::new()
                .prefix("store")
                .tempdir_in(&root)
                .expect("tempdir"),
            born: std::time::SystemTime::now(),
        };
        let t = Instant::now();
        debian_vm::import(&env, "deb");
        eprintln!("debian_run: the VM imported in {:?}", t.elapsed());
        env
    }))
}

/// Removes what an earlier run left under `root`: its containers first (through decant, so
/// their mounts, cgroups and monitors go too), then the files.
fn sweep(root: &Path) {
    let Ok(dirs) = std::fs::read_dir(root) else {
        return;
    };
    for d in dirs.flatten() {
        let store = d.path().join("store");
        let decant = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_decant"))
                .env("DECANT_ROOT", &store)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("spawn decant")
        };
        if store.exists() {
            let ids = String::from_utf8_lossy(&decant(&["ps", "-a", "-q", "--no-trunc"]).stdout)
                .into_owned();
            for id in ids.split_whitespace() {
                decant(&["rm", "-f", id]);
            }
        }
        let _ = std::fs::remove_dir_all(d.path());
    }
}

/// One test's containers: named `deb-<test>-<name>`, removed when the test ends however it
/// ends; a clean end also checks that nothing of them is left.
struct Case {
    env: &'static Env,
    test: &'static str,
    names: Vec<String>,
    ids: Vec<String>,
}

impl Case {
    fn new(test: &'static str) -> Option<Case> {
        let env = debian()?;
        Some(Case {
            env,
            test,
            names: Vec::new(),
            ids: Vec::new(),
        })
    }

    /// The container name for `name`, registered for removal.
    fn name(&mut self, name: &str) -> String {
        let n = format!("deb-{}-{name}", self.test);
        self.names.push(n.clone());
        n
    }

    fn run(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }

    /// `run -d --name deb-<test>-<name> ARGS...`; the new container's full id.
    fn detached(&mut self, name: &str, args: &[&str]) -> String {
        let n = self.name(name);
        let mut a = vec!["run", "-d", "--name", n.as_str()];
        a.extend_from_slice(args);
        let r = self.run(&a).ok();
        let id = r.stdout.trim().to_string();
        assert_eq!(id.len(), 64, "{}", r.stdout);
        self.ids.push(id.clone());
        id
    }

    /// `inspect NAME`'s object.
    fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.run(&["container", "inspect", name]).ok().stdout;
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0].clone()
    }

    /// Polls `inspect NAME` until `done` holds (`secs` seconds at most).
    #[track_caller]
    fn until(
        &self,
        name: &str,
        secs: u64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.inspect(name);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out; {name}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's log once `ready` says so (10 s at most).
    #[track_caller]
    fn log_until(&self, name: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.run(&["logs", name]).ok().stdout;
            if ready(&logs) {
                return logs;
            }
            assert!(Instant::now() < deadline, "logs of {name}: {logs:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn remove(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut a = vec!["rm", "-f"];
        a.extend(self.names.iter().map(String::as_str));
        // Containers a test removed itself are no longer there: that is not an error here.
        let _ = self.run(&a);
        self.names.clear();
    }

    /// Removes the test's containers and checks that none of them left anything: no record,
    /// no runtime state, no cgroup, no monitor, no mount.
    #[track_caller]
    fn done(mut self) {
        let names = self.names.clone();
        self.remove();
        let ps = self
            .run(&["ps", "-a", "--format", "json", "--no-trunc"])
            .ok()
            .stdout;
        for line in ps.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("ps json");
            let name = v["Names"].as_str().unwrap_or_default();
            assert!(!names.iter().any(|n| n == name), "{name} is left: {line}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        for id in &self.ids {
            let mut left = common::monitors_of(id);
            for _ in 0..40 {
                if left.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                left = common::monitors_of(id);
            }
            assert!(left.is_empty(), "a monitor of {id} is left: pids {left:?}");
            assert!(
                !self
                    .env
                    .store()
                    .join(".decant/containers")
                    .join(id)
                    .exists(),
                "the record of {id} is left"
            );
            assert!(!mounts.contains(id.as_str()), "a mount of {id} is left");
            assert!(
                !Path::new("/run/decant/runtime").join(id).exists(),
                "runtime state of {id} left"
            );
            for c in ["memory", "pids", "cpu", "freezer", "unified"] {
                let g = Path::new("/sys/fs/cgroup").join(c).join("decant").join(id);
                assert!(!g.exists(), "cgroup {} left", g.display());
            }
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        self.remove();
        IDS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&mut self.ids);
        if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 != tests() {
            return;
        }
        // The last test: nothing of any container is left in the shared store, then it goes.
        let ids = IDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let env = self.env;
        let checked = (!std::thread::panicking()).then(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                common::assert_containers_clean(env, &ids)
            }))
        });
        let _ = std::fs::remove_dir_all(env.path());
        if let Some(Err(e)) = checked {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn exit_codes() {
    let Some(mut c) = Case::new("exit") else {
        return;
    };
    let n = c.name("true");
    assert_eq!(
        c.run(&["run", "--rm", "--name", &n, "deb", "true"]).status,
        0
    );
    let n = c.name("three");
    let r = c.run(&[
        "run",
        "--rm",
        "--name",
        &n,
        "deb",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!((r.status, r.stdout.as_str()), (3, "out\n"), "{}", r.stderr);
    assert!(r.stderr.contains("err\n"), "{}", r.stderr);
    // A directory is not executable: Docker's 126; a missing command: 127.
    let n = c.name("dir");
    let r = c.run(&["run", "--rm", "--name", &n, "deb", "/etc"]);
    assert_eq!(r.status, 126, "{}", r.stderr);
    let n = c.name("missing");
    let r = c.run(&["run", "--rm", "--name", &n, "deb", "no-such-command"]);
    assert_eq!(r.status, 127, "{}", r.stderr);
    c.done();
}

#[test]
fn env_workdir_users_by_name_and_hostname() {
    let Some(mut c) = Case::new("settings") else {
        return;
    };
    let image = c.run(&["inspect", "deb"]).ok().stdout;
    let image: serde_json::Value = serde_json::from_str(&image).expect("inspect json");
    let image = image.get(0).unwrap_or(&image);
    let path = image["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.strip_prefix("PATH="))
        .next()
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let n = c.name("env");
    let r = c
        .run(&[
            "run",
            "--rm",
            "--name",
            &n,
            "-e",
            "FOO=bar baz",
            "-w",
            "/srv",
            "-h",
            "debbox",
            "deb",
            "sh",
            "-c",
            "echo \"$FOO\"; echo \"$PATH\"; pwd; hostname; cat /etc/hostname; id -u; echo \"$HOME\"",
        ])
        .ok();
    let want = format!("bar baz\n{path}\n/srv\ndebbox\ndebbox\n0\n/root\n");
    assert_eq!(r.stdout, want);
    // Users by name, from the image's own /etc/passwd and /etc/group.
    let n = c.name("www");
    let r = c
        .run(&[
            "run",
            "--rm",
            "--name",
            &n,
            "-u",
            "www-data",
            "deb",
            "sh",
            "-c",
            "id -u; id -g; id -un; echo \"$HOME\"",
        ])
        .ok();
    // HOME from the passwd entry, as Docker sets it.
    assert_eq!(r.stdout, "33\n33\nwww-data\n/var/www\n");
    let n = c.name("nobody");
    let r = c.run(&[
        "run",
        "--rm",
        "--name",
        &n,
        "-u",
        "nobody:nogroup",
        "deb",
        "sh",
        "-c",
        "id -u; id -g; id -gn; touch /root/x",
    ]);
    assert_eq!(r.stdout, "65534\n65534\nnogroup\n", "{}", r.stderr);
    assert_ne!(r.status, 0, "nobody wrote to /root");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    let n = c.name("nouser");
    let r = c.run(&["run", "--rm", "--name", &n, "-u", "bob", "deb", "id"]);
    assert_eq!(r.status, 125);
    assert!(r.stderr.contains("unable to find user bob"), "{}", r.stderr);
    c.done();
}

#[test]
fn pid_namespace_proc_sys_capabilities_and_mount() {
    let Some(mut c) = Case::new("isolation") else {
        return;
    };
    let me = std::process::id();
    let script = format!(
        "echo pid=$$; cat /proc/1/comm; ps -eo pid=,comm= > /tmp/ps; cat /tmp/ps; \
         test -e /proc/{me} && echo host=visible || echo host=hidden; \
         grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
         (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo procsys=writable || echo procsys=readonly; \
         mount -t tmpfs none /mnt; echo mount=$?"
    );
    let n = c.name("ns");
    let r = c
        .run(&["run", "--rm", "--name", &n, "deb", "sh", "-c", &script])
        .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.get(..2), Some(&["pid=1", "sh"][..]), "{}", r.stdout);
    // Debian's procps reads /proc: only the shell (PID 1) and ps itself.
    let procs: Vec<Vec<&str>> = lines
        .iter()
        .skip(2)
        .take_while(|l| !l.starts_with("host="))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(procs.len(), 2, "{}", r.stdout);
    assert_eq!(procs[0], ["1", "sh"], "{}", r.stdout);
    assert_eq!(procs[1].get(1), Some(&"ps"), "{}", r.stdout);
    for want in [
        "host=hidden".to_string(),
        format!("CapEff:\t{DEFAULT_CAPS}"),
        format!("CapBnd:\t{DEFAULT_CAPS}"),
        "NoNewPrivs:\t1".to_string(),
        "Seccomp:\t2".to_string(),
        "procsys=readonly".to_string(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "no {want:?} in:\n{}",
            r.stdout
        );
    }
    // util-linux's mount, refused (exit 32, its "permission denied").
    let last = lines.last().copied().unwrap_or_default();
    assert_ne!(last, "mount=0", "mount was allowed: {}", r.stdout);
    assert!(
        r.stderr.to_lowercase().contains("permission denied"),
        "{}",
        r.stderr
    );
    c.done();
}

#[test]
fn a_memory_limit_oom_kills() {
    let Some(mut c) = Case::new("oom") else {
        return;
    };
    // dash keeps a command substitution's output in memory: 200 MB against 32 MiB.
    let n = c.name("hog");
    let r = c.run(&[
        "run",
        "--name",
        &n,
        "--memory",
        "32m",
        "deb",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(r.status, 137, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("survived"), "{}", r.stdout);
    let v = c.inspect(&n);
    assert_eq!(v["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    assert_eq!(v["HostConfig"]["Memory"], 32 << 20, "{v}");
    c.ids.push(v["Id"].as_str().unwrap_or_default().to_string());
    c.done();
}

#[test]
fn a_pids_limit_stops_forks() {
    let Some(mut c) = Case::new("pids") else {
        return;
    };
    let n = c.name("bomb");
    let t = Instant::now();
    let r = c.run(&[
        "run",
        "--rm",
        "--name",
        &n,
        "--pids-limit",
        "10",
        "deb",
        "sh",
        "-c",
        "for i in $(seq 30); do sleep 2 & done; wait; echo all-forked",
    ]);
    assert_ne!(r.status, 0, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("all-forked"), "{}", r.stdout);
    assert!(
        r.stderr.to_lowercase().contains("fork"),
        "{} {}",
        r.status,
        r.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    c.done();
}

/// A host port nobody holds right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GETs / from 127.0.0.1:port with a plain client, retrying while the server starts.
fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tried = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match tried {
            Ok(r) if r.starts_with("HTTP/") => return r,
            other => assert!(
                Instant::now() < deadline,
                "no answer on port {port}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nginx_answers_through_a_published_port() {
    let Some(mut c) = Case::new("web") else {
        return;
    };
    let port = free_port();
    let p = format!("{port}:80");
    c.detached("nginx", &["-p", &p, "deb", "nginx", "-g", "daemon off;"]);
    let r = http_get(port);
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.contains("Server: nginx"), "{r}");
    assert!(r.contains("<title>Welcome to nginx!</title>"), "{r}");
    // Its workers switched to the user its configuration names.
    let n = "deb-web-nginx";
    let ps = c
        .run(&["exec", n, "ps", "-C", "nginx", "-o", "user="])
        .ok()
        .stdout;
    assert!(
        ps.lines().any(|l| l.trim() == "www-data"),
        "no www-data worker: {ps}"
    );
    let t = Instant::now();
    c.run(&["stop", n]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The forwarder is gone with the container: the host port is free again.
    TcpListener::bind(("0.0.0.0", port)).expect("the port is still held after stop");
    c.done();
}

#[test]
fn volumes_rw_and_ro() {
    let Some(mut c) = Case::new("vol") else {
        return;
    };
    let host = tempfile::tempdir().expect("tempdir");
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    for d in [&rw, &ro] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::write(d.join("in"), "from host\n").expect("write");
    }
    let v_rw = format!("{}:/data", rw.display());
    let v_ro = format!("{}:/ro:ro", ro.display());
    let n = c.name("both");
    let r = c.run(&[
        "run",
        "--rm",
        "--name",
        &n,
        "-v",
        &v_rw,
        "-v",
        &v_ro,
        "deb",
        "sh",
        "-c",
        "cat /data/in /ro/in; echo back > /data/out; chown www-data /data/out; echo no > /ro/out",
    ]);
    assert_ne!(r.status, 0, "the ro volume took a write");
    assert_eq!(r.stdout, "from host\nfrom host\n");
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).expect("out"),
        "back\n"
    );
    // Root inside is root on the host; www-data is Debian's uid 33.
    assert_eq!(std::fs::metadata(rw.join("out")).expect("out").uid(), 33);
    assert!(!ro.join("out").exists());
    c.done();
}

#[test]
fn restart_policies() {
    let Some(mut c) = Case::new("restart") else {
        return;
    };
    let runs = |c: &Case, n: &str| {
        c.run(&["logs", n])
            .ok()
            .stdout
            .lines()
            .filter(|l| *l == "run")
            .count()
    };
    // on-failure:2: three runs, then it stays exited with the last status.
    c.detached(
        "fail",
        &[
            "--restart",
            "on-failure:2",
            "deb",
            "sh",
            "-c",
            "echo run; exit 3",
        ],
    );
    let fail = "deb-restart-fail";
    let v = c.until(fail, 15, |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 2
    });
    assert_eq!(v["State"]["ExitCode"], 3, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(&c, fail), 3);
    assert_eq!(c.inspect(fail)["RestartCount"], 2);

    // always: a crash (SIGKILL from outside decant) is restarted.
    c.detached(
        "always",
        &[
            "--restart",
            "always",
            "deb",
            "sh",
            "-c",
            "echo run; exec sleep 100",
        ],
    );
    let always = "deb-restart-always";
    let v = c.until(always, 10, |v| v["State"]["Status"] == "running");
    let pid = v["State"]["Pid"].as_i64().expect("pid").to_string();
    common::tool("kill", &["-9", &pid]);
    let v = c.until(always, 10, |v| {
        v["RestartCount"].as_u64() >= Some(1)
            && v["State"]["Status"] == "running"
            && v["State"]["Pid"].as_i64().map(|p| p.to_string()) != Some(pid.clone())
    });
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "always", "{v}");
    c.log_until(always, |l| l.lines().filter(|l| *l == "run").count() == 2);

    // unless-stopped: a stop is final.
    c.detached(
        "unless",
        &[
            "--restart",
            "unless-stopped",
            "deb",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo run; while :; do sleep 0.1; done",
        ],
    );
    let unless = "deb-restart-unless";
    c.log_until(unless, |l| l.contains("run"));
    c.run(&["stop", unless]).ok();
    std::thread::sleep(Duration::from_millis(500));
    let v = c.inspect(unless);
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["State"]["ExitCode"], 0, "{v}");
    assert_eq!(v["RestartCount"], 0, "{v}");
    assert_eq!(runs(&c, unless), 1);
    c.done();
}

#[test]
fn stop_kills_a_term_ignoring_process_and_rm_refuses_a_running_one() {
    let Some(mut c) = Case::new("stop") else {
        return;
    };
    c.detached(
        "stubborn",
        &["deb", "sh", "-c", "trap '' TERM; echo ready; sleep 100"],
    );
    let n = "deb-stop-stubborn";
    c.log_until(n, |l| l == "ready\n");
    let r = c.run(&["rm", n]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("is running"), "{}", r.stderr);
    assert_eq!(c.inspect(n)["State"]["Status"], "running");
    let t = Instant::now();
    c.run(&["stop", "-t", "1", n]).ok();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(c.run(&["wait", n]).ok().stdout, "137\n");
    let ps = c.run(&["ps", "-a"]).ok().stdout;
    assert!(
        ps.lines()
            .any(|l| l.contains(n) && l.contains("Exited (137)")),
        "{ps}"
    );
    c.run(&["rm", n]).ok();
    c.done();
}

#[test]
fn logs_follow_streams_until_the_container_ends() {
    let Some(mut c) = Case::new("logs") else {
        return;
    };
    c.detached(
        "talker",
        &[
            "deb",
            "sh",
            "-c",
            "echo one; sleep 1; echo two; sleep 0.5; echo three >&2",
        ],
    );
    let n = "deb-logs-talker";
    let mut child = c
        .env
        .decant()
        .args(["logs", "-f", n])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait logs -f") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("logs -f did not end when the container did");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(status.success(), "{err}");
    // It followed: the lines written after it started came through, each on its stream.
    assert_eq!(out, "one\ntwo\n");
    assert_eq!(err, "three\n");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}: logs -f ended before the container",
        started.elapsed()
    );
    c.done();
}

#[test]
fn exec_into_a_running_container() {
    let Some(mut c) = Case::new("exec") else {
        return;
    };
    c.detached("box", &["deb", "sleep", "1000"]);
    let n = "deb-exec-box";
    let version =
        std::fs::read_to_string(Path::new(debian_vm::WORK).join("rootfs/etc/debian_version"))
            .expect("the VM's debian_version");
    let r = c.run(&["exec", n, "cat", "/etc/debian_version"]).ok();
    assert_eq!(r.stdout, version);
    assert!(r.stdout.starts_with("12."), "{}", r.stdout);
    // The container's pid namespace (its PID 1 is the sleep) and the user by name.
    let r = c
        .run(&[
            "exec",
            "-u",
            "www-data",
            "-w",
            "/var/www",
            n,
            "sh",
            "-c",
            "cat /proc/1/comm; id -un; pwd",
        ])
        .ok();
    assert_eq!(r.stdout, "sleep\nwww-data\n/var/www\n");
    assert_eq!(c.run(&["exec", n, "sh", "-c", "exit 7"]).status, 7);
    assert_eq!(c.run(&["exec", n, "no-such-command"]).status, 127);
    c.done();
}

/// The `State:` line of /proc/PID/status.
fn proc_state(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn pause_freezes_and_unpause_resumes() {
    let Some(mut c) = Case::new("pause") else {
        return;
    };
    let id = c.detached(
        "counter",
        &[
            "deb",
            "sh",
            "-c",
            "n=0; while :; do n=$((n+1)); echo $n > /tmp/n; sleep 0.01; done",
        ],
    );
    let n = "deb-pause-counter";
    let upper = c
        .env
        .store()
        .join(".decant/containers")
        .join(&id)
        .join("upper/tmp/n");
    let read = || {
        std::fs::read_to_string(&upper)
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while read() < 3 {
        assert!(Instant::now() < deadline, "the loop does not count");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = c.inspect(n)["State"]["Pid"].as_i64().expect("pid");
    c.run(&["pause", n]).ok();
    let v = c.inspect(n);
    assert_eq!(v["State"]["Status"], "paused", "{v}");
    let freezer = Path::new("/sys/fs/cgroup/freezer/decant").join(&id);
    if freezer.exists() {
        let st = std::fs::read_to_string(freezer.join("freezer.state")).expect("freezer.state");
        assert_eq!(st.trim(), "FROZEN");
    }
    // The kernel shows a frozen task as D (uninterruptible, in the freezer), and its counter
    // stands still.
    let state = proc_state(pid);
    assert!(state.starts_with('D'), "PID 1 is {state} while paused");
    let frozen = read();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read(), frozen, "the loop advanced while paused");
    c.run(&["unpause", n]).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while read() <= frozen {
        assert!(Instant::now() < deadline, "the loop did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.inspect(n)["State"]["Status"], "running");
    c.done();
}

#[test]
fn rootless_run_of_the_debian_image() {
    let Some(c) = Case::new("rootless") else {
        return;
    };
    let dirs = common::user::UserDirs::new(
        "decant-deb-rootless",
        common::user::NOBODY,
        common::user::NOBODY,
    );
    // nobody imports the cached VM disk itself (it is world-readable).
    let disk = debian_vm::rootfs_ext4().to_str().expect("utf8 path");
    let r = dirs.run(&["import", "-q", "-t", "deb", disk]);
    assert_eq!(r.status, 0, "rootless import: {}", r.stderr);
    let r = dirs.run(&[
        "run",
        "--rm",
        "deb",
        "sh",
        "-c",
        "id -u; cat /etc/os-release",
    ]);
    assert_eq!(r.status, 0, "rootless run: {}", r.stderr);
    assert_eq!(r.stdout.lines().next(), Some("0"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{}",
        r.stdout
    );
    // Nothing of it is left: no record, no state, no mount, no monitor.
    let s = dirs.path().to_str().expect("utf8 path");
    let mut monitors = common::monitors_of(s);
    for _ in 0..40 {
        if monitors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        monitors = common::monitors_of(s);
    }
    assert!(monitors.is_empty(), "a monitor is left: {monitors:?}");
    let records = dirs.store().join(".decant/containers");
    let left: Vec<_> = std::fs::read_dir(&records)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    let state: Vec<_> = std::fs::read_dir(dirs.path().join("run/decant/runtime"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(state.is_empty(), "runtime state left: {state:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(s), "a mount is left under {s}");
    c.done();
}

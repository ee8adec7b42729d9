//! decant-init in services mode end to end: `run --init=host` boots a busybox image's runit
//! service and supervisord program, `decant svc` shows and controls them through the init's
//! control socket, `stop` shuts them down at once; `import --init` puts the static init into a
//! layer of its own and makes it the entrypoint, so the image boots host-like with no flag.
//! After each test nothing of the containers is left.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{run_with_init, static_init, tool, Env, Run};

/// A busybox root with one runit service (`web`: httpd on 8080) and one supervisord program
/// (`ticker`), as a tarball for `decant import`.
fn services_tarball(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in [
        "bin",
        "etc/service/web",
        "etc/supervisor/conf.d",
        "srv/www",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox"))
        .expect("/bin/busybox (busybox-static) is needed; .ci/run installs it");
    for a in ["sh", "sleep", "httpd", "cat", "ps", "wget", "kill", "grep"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(r.join("srv/www/index.html"), "served by runit\n").unwrap();
    let run = r.join("etc/service/web/run");
    std::fs::write(&run, "#!/bin/sh\nexec httpd -f -p 8080 -h /srv/www\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        r.join("etc/supervisor/conf.d/ticker.conf"),
        "[program:ticker]\ncommand=/bin/sleep 1000\nstartsecs=0\n",
    )
    .unwrap();
    let tar = dir.join("services.tar");
    tool(
        "tar",
        &["-C", r.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."],
    );
    tar
}

/// An env (root only, said loudly otherwise) with the services tarball imported as `svcimg`
/// and, with `init`, as `initimg` by `import --init`.
fn env_with_images(init: bool) -> Option<Env> {
    if !common::require_root("containers need namespaces, mounts and cgroups") {
        return None;
    }
    let env = Env::new();
    let tar = services_tarball(env.path());
    let t = tar.to_str().unwrap();
    env.run(&["import", "-q", "-t", "svcimg", t]).ok();
    if init {
        run_with_init(
            &env,
            &static_init(),
            &["import", "-q", "--init", "-t", "initimg", t],
        )
        .ok();
    }
    Some(env)
}

/// The container's record.
fn record(env: &Env, id: &str) -> serde_json::Value {
    let p = env
        .store()
        .join(".decant/containers")
        .join(id)
        .join("container.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `decant svc ...`.
fn svc(env: &Env, args: &[&str]) -> Run {
    let mut a = vec!["svc"];
    a.extend_from_slice(args);
    env.run(&a)
}

/// The state column of service `name` in a `svc status` reply.
fn state_of<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(2))
}

/// Polls `svc CONTAINER status` until every one of `names` is RUNNING; returns the reply.
#[track_caller]
fn until_running(env: &Env, container: &str, names: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = svc(env, &[container, "status"]);
        if r.status == 0
            && names
                .iter()
                .all(|n| state_of(&r.stdout, n) == Some("RUNNING"))
        {
            return r.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "not all RUNNING: {names:?}\n{}{}",
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_of(status: &str, name: &str) -> String {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {status}"));
    line.split("pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no pid in {line}"))
        .to_string()
}

#[test]
fn host_init_runs_the_images_services_and_svc_controls_them() {
    let Some(env) = env_with_images(false) else {
        return;
    };
    let init = static_init();
    let id = run_with_init(
        &env,
        &init,
        &["run", "-d", "--init=host", "--name", "host", "svcimg"],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let status = until_running(&env, "host", &["web", "ticker"]);
    // Reads like supervisorctl status, with the source: name, source, state, pid, uptime.
    let web = status
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(cols.get(1..3), Some(&["runit", "RUNNING"][..]), "{web}");
    assert!(
        web.contains("pid ") && web.contains("uptime 0:00:"),
        "{web}"
    );
    assert_eq!(
        state_of(&status, "ticker"),
        Some("RUNNING"),
        "supervisord program: {status}"
    );
    // The services are the init's children and do their work.
    let page = env
        .run(&["exec", "host", "wget", "-qO-", "http://127.0.0.1:8080/"])
        .ok()
        .stdout;
    assert_eq!(page, "served by runit\n");
    let ps = env
        .run(&["exec", "host", "cat", "/proc/1/cmdline"])
        .ok()
        .stdout;
    assert!(ps.starts_with("/dev/init\0--with-services\0--"), "{ps:?}");

    // stop / start / restart wait for the state to settle and print it.
    let r = svc(&env, &["host", "stop", "ticker"]).ok();
    assert_eq!(
        state_of(&r.stdout, "ticker"),
        Some("STOPPED"),
        "{}",
        r.stdout
    );
    let r = svc(&env, &["host", "start", "ticker"]).ok();
    assert_eq!(
        state_of(&r.stdout, "ticker"),
        Some("RUNNING"),
        "{}",
        r.stdout
    );
    let before = pid_of(&status, "web");
    let r = svc(&env, &["host", "restart", "web"]).ok();
    assert_eq!(state_of(&r.stdout, "web"), Some("RUNNING"), "{}", r.stdout);
    assert_ne!(pid_of(&r.stdout, "web"), before, "{}", r.stdout);
    // One service's status; an unknown name is an error line and exit 1.
    let r = svc(&env, &["host", "status", "web"]).ok();
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    let r = svc(&env, &["host", "status", "nosuch"]);
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("nosuch: ERROR (no such process)"),
        "{}",
        r.stdout
    );
    let r = svc(&env, &["host", "stop"]);
    assert_eq!(r.status, 125, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);

    // A container without the host init, and no container: one line, Docker's 125.
    let plain = env
        .run(&["run", "-d", "svcimg", "sleep", "100"])
        .ok()
        .stdout
        .trim()
        .to_string();
    for key in [plain.as_str(), "nosuchcontainer"] {
        let r = svc(&env, &[key]);
        assert_eq!(r.status, 125, "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }

    // stop: every service ends on SIGTERM at once, so no grace period is waited out.
    let t = Instant::now();
    env.run(&["stop", "-t", "10", "host"]).ok();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let rec = record(&env, &id);
    assert_eq!(rec["exit_code"], 0, "a clean shutdown exits 0: {rec}");
    env.run(&["rm", "-f", "host", &plain]).ok();
    common::assert_containers_clean(&env, &[id, plain]);
}

#[test]
fn host_init_with_a_command_makes_it_the_main_service() {
    let Some(env) = env_with_images(false) else {
        return;
    };
    // The command runs beside the services and its status is the container's.
    let r = run_with_init(
        &env,
        &init_path(),
        &[
            "run",
            "--rm",
            "--init=host",
            "svcimg",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && exit 4; \
             sleep 0.2; done; exit 1",
        ],
    );
    assert_eq!(r.status, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("served by runit"), "{}", r.stdout);
    // Plain --init stays the tini case: no services, no control socket.
    let r = run_with_init(
        &env,
        &init_path(),
        &[
            "run",
            "--rm",
            "--init",
            "svcimg",
            "sh",
            "-c",
            "sleep 0.3; ps; test -e /run/decant-init.sock || exit 6",
        ],
    );
    assert_eq!(r.status, 6, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("httpd"), "{}", r.stdout);
    // A bad mode is refused before anything is made.
    let r = run_with_init(&env, &init_path(), &["run", "--init=vm", "svcimg", "true"]);
    assert_ne!(r.status, 0, "{}", r.stderr);
    common::assert_containers_clean(&env, &[]);
}

fn init_path() -> PathBuf {
    static_init()
}

#[test]
fn import_init_boots_the_image_host_like_without_a_flag() {
    let Some(env) = env_with_images(true) else {
        return;
    };
    let inspect: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "initimg"]).ok().stdout).unwrap();
    let img = inspect.get(0).unwrap_or(&inspect);
    let cfg = &img["Config"];
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/usr/local/sbin/decant-init", "--with-services", "--"]),
        "{img}"
    );
    assert!(cfg["Cmd"].is_null(), "{img}");
    let layers = img["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{img}");
    // The first layer is the plain import's, shared byte for byte.
    let plain: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "svcimg"]).ok().stdout).unwrap();
    let plain = plain.get(0).unwrap_or(&plain);
    assert_eq!(plain["RootFS"]["Layers"][0], layers[0]);

    // A dynamic or missing init is refused in one line before anything is stored.
    let before = env.store_state();
    let tar = env.path().join("services.tar");
    for (init, why) in [
        (Path::new("/bin/sh"), "dynamically linked"),
        (Path::new("/nonexistent/decant-init"), "No such file"),
    ] {
        let r = run_with_init(
            &env,
            init,
            &["import", "-q", "--init", "-t", "bad", tar.to_str().unwrap()],
        );
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert!(r.stderr.contains(why), "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(env.store_state(), before);

    // No --init flag and no DECANT_INIT: the image's own copy is PID 1.
    let id = env
        .run(&["run", "-d", "--name", "boot", "initimg"])
        .ok()
        .stdout
        .trim()
        .to_string();
    until_running(&env, "boot", &["web", "ticker"]);
    let cmdline = env
        .run(&["exec", "boot", "cat", "/proc/1/cmdline"])
        .ok()
        .stdout;
    assert!(
        cmdline.starts_with("/usr/local/sbin/decant-init\0"),
        "{cmdline:?}"
    );
    // --init=host on such an image does not nest a second init.
    let nested = run_with_init(&env, &init_path(), &["run", "-d", "--init=host", "initimg"])
        .ok()
        .stdout
        .trim()
        .to_string();
    until_running(&env, &nested, &["web", "ticker"]);
    let cmdline = env
        .run(&["exec", &nested, "cat", "/proc/1/cmdline"])
        .ok()
        .stdout;
    assert_eq!(cmdline, "/dev/init\0--with-services\0--\0", "{cmdline:?}");
    // A command given to `run` is the main service, as on Docker.
    let r = env.run(&["run", "--rm", "initimg", "sh", "-c", "exit 3"]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    env.run(&["rm", "-f", &id, &nested]).ok();
    common::assert_containers_clean(&env, &[id, nested]);
}

#[test]
fn commit_init_turns_a_container_into_a_host_like_image() {
    let Some(env) = env_with_images(false) else {
        return;
    };
    // A plain container of the services image, changed, then committed with --init.
    let id = env
        .run(&["run", "-d", "--name", "work", "svcimg", "sleep", "1000"])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&["exec", "work", "sh", "-c", "echo changed > /srv/www/note"])
        .ok();
    run_with_init(
        &env,
        &static_init(),
        &["commit", "--init", "work", "booted:1"],
    )
    .ok();
    let inspect: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "booted:1"]).ok().stdout).unwrap();
    let img = inspect.get(0).unwrap_or(&inspect);
    assert_eq!(
        img["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/sbin/decant-init", "--with-services", "--"]),
        "{img}"
    );
    // The image's layer, the container's changes, then the init's own layer.
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        3,
        "{img}"
    );
    // Committing a container of it again with --init adds no second init layer.
    let again = env
        .run(&["run", "-d", "--name", "again", "booted:1"])
        .ok()
        .stdout
        .trim()
        .to_string();
    until_running(&env, "again", &["web", "ticker"]);
    let note = env
        .run(&["exec", "again", "cat", "/srv/www/note"])
        .ok()
        .stdout;
    assert_eq!(note, "changed\n");
    run_with_init(
        &env,
        &static_init(),
        &["commit", "--init", "again", "booted:2"],
    )
    .ok();
    let inspect: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "booted:2"]).ok().stdout).unwrap();
    let img = inspect.get(0).unwrap_or(&inspect);
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        4,
        "{img}"
    );
    env.run(&["rm", "-f", &id, &again]).ok();
    common::assert_containers_clean(&env, &[id, again]);
}

/// The host port `decant port` shows for container port `ctr`.
fn host_port(env: &Env, container: &str, ctr: &str) -> u16 {
    let addr = env.run(&["port", container, ctr]).ok().stdout;
    addr.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port printed {addr:?}"))
}

/// The first line a TCP server at 127.0.0.1:`port` answers to `send`.
fn first_line(port: u16, send: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(send).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

/// The commands (comm) of every process below `pid`.
fn descendant_comms(pid: i32) -> Vec<String> {
    let mut parent = std::collections::HashMap::new();
    let mut comm = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        parent.insert(p, ppid);
        comm.insert(p, stat[open + 1..close].to_string());
    }
    let mut out = Vec::new();
    for (&p, c) in &comm {
        let mut q = p;
        for _ in 0..64 {
            match parent.get(&q) {
                Some(&pp) if pp == pid => {
                    out.push(c.clone());
                    break;
                }
                Some(&pp) if pp > 1 => q = pp,
                _ => break,
            }
        }
    }
    out
}

/// The test: a real Debian VM (debootstrap bookworm with openssh-server, cron, rsyslog
/// and nginx-light enabled with systemctl, as bench/make-vm.sh makes it, cached in
/// /var/tmp/decant-bench), imported and run detached with the host init: its systemd units
/// come up under PID 1 with no edits, nginx answers through -p, sshd gives its banner, and
/// `stop` ends it within its limit leaving nothing. The first run needs the Debian mirror and
/// about two minutes.
#[test]
fn a_debian_vm_boots_its_own_services() {
    if !common::require_root("debootstrap, containers") {
        return;
    }
    let work = Path::new(common::debian_vm::WORK);
    let env = Env::new();
    common::debian_vm::import(&env, "deb");
    let id = run_with_init(
        &env,
        &static_init(),
        &[
            "run",
            "-d",
            "--init=host",
            "--name",
            "vm",
            "-p",
            "80",
            "-p",
            "22",
            "deb",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let status = until_running(
        &env,
        "vm",
        &[
            "ssh.service",
            "cron.service",
            "rsyslog.service",
            "nginx.service",
        ],
    );
    let pid = record(&env, &id)["pid"].as_i64().unwrap() as i32;
    let comms = descendant_comms(pid);
    for daemon in ["sshd", "cron", "rsyslogd", "nginx"] {
        assert!(
            comms.iter().any(|c| c == daemon),
            "{daemon} is not under PID 1: {comms:?}\n{status}"
        );
    }
    let http = host_port(&env, "vm", "80");
    let line = first_line(http, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert!(line.starts_with("HTTP/1.1 200"), "nginx said {line:?}");
    let ssh = host_port(&env, "vm", "22");
    let line = first_line(ssh, b"");
    assert!(line.starts_with("SSH-2.0-OpenSSH"), "sshd said {line:?}");

    let t = Instant::now();
    env.run(&["stop", "vm"]).ok();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(descendant_comms(pid).is_empty());
    env.run(&["rm", "vm"]).ok();

    // First boot: without host keys and machine-id (as strip's identity profile leaves the
    // image), decant-init makes both before sshd starts, and the banner still answers.
    let old_id = std::fs::read_to_string(work.join("rootfs/etc/machine-id")).unwrap_or_default();
    env.run(&[
        "run",
        "--name",
        "noid",
        "deb",
        "sh",
        "-c",
        "rm /etc/ssh/ssh_host_* /etc/machine-id",
    ])
    .ok();
    env.run(&["commit", "noid", "deb:noid"]).ok();
    env.run(&["rm", "noid"]).ok();
    // The committed image's Cmd is the `rm` above, so the run names its own main command.
    let id2 = run_with_init(
        &env,
        &static_init(),
        &[
            "run",
            "-d",
            "--init=host",
            "--name",
            "vm2",
            "-p",
            "22",
            "deb:noid",
            "sleep",
            "600",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    until_running(&env, "vm2", &["ssh.service"]);
    let line = first_line(host_port(&env, "vm2", "22"), b"");
    assert!(line.starts_with("SSH-2.0-OpenSSH"), "sshd said {line:?}");
    let seen = env
        .run(&[
            "exec",
            "vm2",
            "sh",
            "-c",
            "ls /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_rsa_key; cat /etc/machine-id",
        ])
        .ok()
        .stdout;
    let mut seen = seen.lines();
    assert_eq!(seen.next(), Some("/etc/ssh/ssh_host_ed25519_key"));
    assert_eq!(seen.next(), Some("/etc/ssh/ssh_host_rsa_key"));
    let new_id = seen.next().unwrap_or_default();
    assert_eq!(new_id.len(), 32, "{new_id:?}");
    assert_ne!(new_id, old_id.trim());
    env.run(&["stop", "vm2"]).ok();
    env.run(&["rm", "vm2"]).ok();
    common::assert_containers_clean(&env, &[id, id2]);
}

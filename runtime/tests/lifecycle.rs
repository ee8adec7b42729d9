//! Real containers from a busybox-static rootfs made at test time: exit codes, environment,
//! user, hostname, PID namespace, the create/start/kill/delete lifecycle, exec, a rootless run,
//! runc on the same bundle, and hostile bundles. Every test checks that nothing is left
//! behind: no state directory, no mount, no cgroup, no process.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{ContainerState, Spec};
use runtime::{CreateOptions, RuntimeError, RuntimeRoot, Signal};

const APPLETS: &[&str] = &[
    "sh", "true", "false", "sleep", "echo", "cat", "ls", "id", "pwd", "hostname", "env", "grep",
    "wc", "ps", "test", "readlink", "mount", "unshare",
];

fn need_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    // Straight to stderr, past libtest's capture: a skip is seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED: needs root ({what}); CI runs as root and runs it\n").as_bytes(),
    );
    false
}

struct Bundle {
    tmp: tempfile::TempDir,
}

impl Bundle {
    /// A bundle dir with rootfs/bin/busybox and its applet links.
    fn new() -> Bundle {
        let tmp = tempfile::TempDir::new().unwrap();
        let bin = tmp.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "busybox-static is required: apt-get install busybox-static"
        );
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        for d in ["proc", "dev", "sys", "tmp", "etc", "work"] {
            std::fs::create_dir_all(tmp.path().join("rootfs").join(d)).unwrap();
        }
        std::fs::write(
            tmp.path().join("rootfs/etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("rootfs/bin/notexec"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            tmp.path().join("rootfs/bin/notexec"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Bundle { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    /// decant's default spec with the security parts (another module) switched off.
    fn spec(&self, args: &[&str], rootless: bool) -> Spec {
        let mut spec = runtime::spec::default_spec(
            Path::new("rootfs"),
            args.iter().map(|s| s.to_string()).collect(),
            rootless,
        );
        let mut process = spec.process().clone().unwrap();
        process.set_capabilities(None);
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(None);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        spec.set_linux(Some(linux));
        spec
    }

    fn write(&self, spec: &Spec) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(spec).unwrap(),
        )
        .unwrap();
    }
}

/// A runtime root in a temp dir; `Drop` force-deletes whatever a failed test left.
struct Env {
    root_dir: tempfile::TempDir,
    root: RuntimeRoot,
    ids: Vec<String>,
}

impl Env {
    fn new() -> Env {
        let root_dir = tempfile::TempDir::new().unwrap();
        let root = RuntimeRoot::new(root_dir.path().join("runtime"));
        Env {
            root_dir,
            root,
            ids: Vec::new(),
        }
    }

    fn id(&mut self, name: &str) -> String {
        let id = format!("{name}-{}", std::process::id());
        self.ids.push(id.clone());
        id
    }

    /// Asserts that container `id` left nothing behind.
    fn assert_clean(&self, id: &str, pid: Option<i32>, bundle: &Bundle) {
        assert!(
            !self.root.path().join(id).exists(),
            "state dir of {id} remains"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let b = bundle.path().to_str().unwrap();
        assert!(!mountinfo.contains(b), "a mount under {b} remains");
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for candidate in [entry.path().join("decant").join(id), entry.path().join(id)] {
                assert!(
                    !candidate.exists(),
                    "cgroup {} remains",
                    candidate.display()
                );
            }
        }
        if let Some(pid) = pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} remains"
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = runtime::delete(&self.root, id, true);
        }
    }
}

/// A file in the bundle dir to collect a container's output.
fn out_file(bundle: &Bundle, name: &str) -> (PathBuf, OwnedFd) {
    let p = bundle.path().join(name);
    let f = std::fs::File::create(&p).unwrap();
    (p, f.into())
}

fn read(p: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(p)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Runs `args` in a fresh container, returns (exit code, stdout).
fn run_capture(env: &mut Env, bundle: &Bundle, name: &str, spec: &Spec) -> (i32, String) {
    bundle.write(spec);
    let id = env.id(name);
    let (out, fd) = out_file(bundle, &format!("{name}.out"));
    let opts = CreateOptions {
        stdout: Some(fd),
        ..Default::default()
    };
    let p = runtime::run(&env.root, &id, bundle.path(), &opts)
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let st = runtime::state(&env.root, &id).unwrap();
    assert!(matches!(
        st.status(),
        &ContainerState::Running | ContainerState::Stopped
    ));
    let code = p.wait().unwrap().code();
    assert_eq!(
        runtime::state(&env.root, &id).unwrap().status(),
        &ContainerState::Stopped
    );
    runtime::delete(&env.root, &id, false).unwrap();
    env.assert_clean(&id, Some(p.pid()), bundle);
    (code, read(&out))
}

#[test]
fn exit_codes() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    assert_eq!(
        run_capture(&mut env, &b, "ok", &b.spec(&["true"], false)).0,
        0
    );
    assert_eq!(
        run_capture(
            &mut env,
            &b,
            "three",
            &b.spec(&["sh", "-c", "exit 3"], false)
        )
        .0,
        3
    );

    for (name, args, code, text) in [
        (
            "missing",
            &["nope"][..],
            127,
            "executable file not found in $PATH",
        ),
        ("missingpath", &["/bin/nope"][..], 127, "no such file"),
        ("notexec", &["/bin/notexec"][..], 126, "permission denied"),
        ("isdir", &["/etc"][..], 126, "permission denied"),
    ] {
        b.write(&b.spec(args, false));
        let id = env.id(name);
        let t = Instant::now();
        let err = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(err.exit_code(), code, "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(text), "{name}: {msg}");
        assert!(!msg.contains('\n'));
        env.assert_clean(&id, None, &b);
        // The same errors from create, before start.
        let err = runtime::create(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
        assert_eq!(err.exit_code(), code, "{name}: {err}");
        env.assert_clean(&id, None, &b);
    }
}

#[test]
fn env_cwd_user_hostname() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let mut spec = b.spec(
        &[
            "sh",
            "-c",
            "echo $FOO; pwd; id -u; id -g; hostname; cat /proc/self/status | grep Groups",
        ],
        false,
    );
    let mut p = spec.process().clone().unwrap();
    let mut e = p.env().clone().unwrap();
    e.push("FOO=bar baz".into());
    p.set_env(Some(e));
    p.set_cwd("/work".into());
    let mut user = p.user().clone();
    user.set_uid(1000);
    user.set_gid(1000);
    user.set_additional_gids(Some(vec![1001]));
    p.set_user(user);
    spec.set_process(Some(p));
    spec.set_hostname(Some("ctr-host".into()));
    let (code, out) = run_capture(&mut env, &b, "envs", &spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.get(..5),
        Some(&["bar baz", "/work", "1000", "1000", "ctr-host"][..]),
        "{out}"
    );
    assert!(
        lines
            .get(5)
            .is_some_and(|l| l.split_whitespace().skip(1).eq(["1001"])),
        "{out}"
    );
}

#[test]
fn pid1_and_host_pids_invisible() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let spec = b.spec(&["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'; ps -o pid,comm | wc -l; readlink /dev/stdout; ls /dev"], false);
    let (code, out) = run_capture(&mut env, &b, "pid1", &spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "{out}");
    // sh, ls and grep at most: no host process is visible.
    let n: u32 = lines.get(1).unwrap().trim().parse().unwrap();
    assert!(n <= 4, "{n} processes visible: {out}");
    let ps: u32 = lines.get(2).unwrap().trim().parse().unwrap();
    assert!(ps <= 5, "ps shows {ps} lines: {out}");
    assert_eq!(lines.get(3), Some(&"/proc/self/fd/1"));
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
    ] {
        assert!(lines.contains(&node), "/dev/{node} missing: {out}");
    }
}

fn wait_status(env: &Env, id: &str, want: ContainerState) {
    let t = Instant::now();
    while runtime::state(&env.root, id).unwrap().status() != &want {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{id} never became {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reap(pid: i32) -> i32 {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
        nix::sys::wait::WaitStatus::Exited(_, c) => c,
        nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_start_kill_delete() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    b.write(&b.spec(&["sleep", "30"], false));
    let id = env.id("life");
    let pid_file = b.path().join("pid");
    let opts = CreateOptions {
        pid_file: Some(pid_file.clone()),
        ..Default::default()
    };
    let st = runtime::create(&env.root, &id, b.path(), &opts).unwrap();
    assert_eq!(st.status(), &ContainerState::Created);
    let pid = st.pid().unwrap();
    assert_eq!(read(&pid_file), pid.to_string());
    // The OCI state document as `decant runtime state` prints it.
    let json = serde_json::to_value(runtime::state(&env.root, &id).unwrap()).unwrap();
    assert_eq!(json["status"], "created");
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["pid"], pid);
    assert!(json["ociVersion"].is_string() && json["bundle"].is_string());
    assert!(runtime::create(&env.root, &id, b.path(), &opts)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    assert_eq!(runtime::list(&env.root).unwrap().len(), 1);

    runtime::start(&env.root, &id).unwrap();
    assert_eq!(
        runtime::state(&env.root, &id).unwrap().status(),
        &ContainerState::Running
    );
    assert!(runtime::start(&env.root, &id).is_err());
    let e = runtime::delete(&env.root, &id, false).unwrap_err();
    assert!(e.to_string().contains("is running"), "{e}");

    // `sleep` as PID 1 has no SIGTERM handler: the kernel drops the signal.
    runtime::kill(&env.root, &id, Signal::SIGTERM, false).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        runtime::state(&env.root, &id).unwrap().status(),
        &ContainerState::Running
    );
    runtime::kill(&env.root, &id, Signal::SIGKILL, true).unwrap();
    assert_eq!(reap(pid), 137);
    let st = runtime::state(&env.root, &id).unwrap();
    assert_eq!(st.status(), &ContainerState::Stopped);
    assert_eq!(st.pid(), &None);
    assert!(runtime::kill(&env.root, &id, Signal::SIGKILL, false).is_err());
    runtime::delete(&env.root, &id, false).unwrap();
    env.assert_clean(&id, Some(pid), &b);
    assert!(runtime::state(&env.root, &id)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}

#[test]
fn sigterm_reaches_a_pid1_with_a_handler() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    b.write(&b.spec(
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo up > /tmp/up; while true; do sleep 0.05; done",
        ],
        false,
    ));
    let id = env.id("term");
    let p = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap();
    let t = Instant::now();
    while !b.rootfs().join("tmp/up").exists() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime::kill(&env.root, &id, Signal::SIGTERM, false).unwrap();
    assert_eq!(p.wait().unwrap().code(), 7);
    runtime::delete(&env.root, &id, false).unwrap();
    env.assert_clean(&id, Some(p.pid()), &b);
}

#[test]
fn delete_force_and_created_container() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    b.write(&b.spec(&["sleep", "30"], false));
    // A created container (never started) is killed by delete.
    let id = env.id("created");
    let st = runtime::create(&env.root, &id, b.path(), &CreateOptions::default()).unwrap();
    let pid = st.pid().unwrap();
    runtime::delete(&env.root, &id, false).unwrap();
    assert_eq!(reap(pid), 137);
    env.assert_clean(&id, Some(pid), &b);
    // A running one needs force.
    let id = env.id("forced");
    let p = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap();
    runtime::delete(&env.root, &id, true).unwrap();
    assert_eq!(p.wait().unwrap().code(), 137);
    env.assert_clean(&id, Some(p.pid()), &b);
}

#[test]
fn exec_joins_the_container() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let mut spec = b.spec(&["sleep", "30"], false);
    spec.set_hostname(Some("exec-host".into()));
    b.write(&spec);
    let id = env.id("exec");
    let init = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap();
    wait_status(&env, &id, ContainerState::Running);

    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "hostname; echo $$; cat /proc/1/cmdline; echo; id -u; pwd".into(),
    ]));
    let mut user = process.user().clone();
    user.set_uid(1000);
    process.set_user(user);
    process.set_cwd("/tmp".into());
    let (out, fd) = out_file(&b, "exec.out");
    let ep = runtime::exec(
        &env.root,
        &id,
        &process,
        &CreateOptions {
            stdout: Some(fd),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ep.wait().unwrap().code(), 0);
    let text = read(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"exec-host"), "{text}");
    let inner_pid: i32 = lines.get(1).unwrap().parse().unwrap();
    assert!(inner_pid > 1 && inner_pid < 100, "{text}");
    assert_eq!(
        lines.get(2).map(|l| l.replace('\0', " ")),
        Some("sleep 30 ".to_string()),
        "{text}"
    );
    assert_eq!(lines.get(3..5), Some(&["1000", "/tmp"][..]), "{text}");

    // A missing command in exec is 127, and leaves the container running.
    process.set_args(Some(vec!["nope".into()]));
    let e = runtime::exec(&env.root, &id, &process, &CreateOptions::default()).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");
    assert_eq!(
        runtime::state(&env.root, &id).unwrap().status(),
        &ContainerState::Running
    );

    runtime::kill(&env.root, &id, Signal::SIGKILL, false).unwrap();
    assert_eq!(init.wait().unwrap().code(), 137);
    assert!(runtime::exec(&env.root, &id, &process, &CreateOptions::default()).is_err());
    runtime::delete(&env.root, &id, false).unwrap();
    env.assert_clean(&id, Some(init.pid()), &b);
}

#[test]
fn readonly_root_and_bind_mounts() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let shared = b.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("in"), "from host\n").unwrap();
    let hosts = b.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let mut spec = b.spec(
        &["sh", "-c", "cat /data/in; cat /etc/hosts; echo x > /data/out; touch /ro/x 2>/dev/null || echo ro-ok; touch /x 2>/dev/null || echo root-ro"],
        false,
    );
    let mut mounts = spec.mounts().clone().unwrap();
    let bind = |src: &Path, dst: &str, ro: bool| {
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination(dst.into());
        m.set_typ(Some("bind".into()));
        m.set_source(Some(src.to_path_buf()));
        let mut o = vec!["rbind".to_string()];
        if ro {
            o.push("ro".into());
        }
        m.set_options(Some(o));
        m
    };
    mounts.push(bind(&shared, "/data", false));
    mounts.push(bind(&shared, "/ro", true));
    mounts.push(bind(&hosts, "/etc/hosts", true));
    spec.set_mounts(Some(mounts));
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let (code, out) = run_capture(&mut env, &b, "binds", &spec);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "from host\n127.0.0.1 localhost\nro-ok\nroot-ro\n");
    assert_eq!(read(&shared.join("out")), "x\n");
}

#[test]
fn hostile_bundles_fail_cleanly() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    // Garbage and truncated config.json.
    let good = serde_json::to_vec(&b.spec(&["true"], false)).unwrap();
    for (i, bytes) in [
        b"{".to_vec(),
        good[..good.len() / 2].to_vec(),
        b"[]".to_vec(),
        vec![0xff; 64],
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(b.path().join("config.json"), bytes).unwrap();
        let id = env.id(&format!("garbage{i}"));
        let e = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
        assert!(matches!(e, RuntimeError::Spec { .. }), "{e}");
        assert!(e.to_string().contains("config.json"));
        env.assert_clean(&id, None, &b);
    }
    // A mount destination that climbs out, a bad option, no command.
    let mut spec = b.spec(&["true"], false);
    let mut m = oci_spec::runtime::Mount::default();
    m.set_destination("/../../etc".into());
    m.set_typ(Some("tmpfs".into()));
    spec.set_mounts(Some(vec![m]));
    b.write(&spec);
    let id = env.id("climb");
    let e = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
    assert!(e.to_string().contains(".."), "{e}");
    env.assert_clean(&id, None, &b);
    let mut spec = b.spec(&["true"], false);
    spec.process_mut().as_mut().unwrap().set_args(Some(vec![]));
    b.write(&spec);
    let e = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
    assert!(e.to_string().contains("process.args is empty"), "{e}");
    env.assert_clean(&id, None, &b);
    // Bad ids never touch the disk.
    for bad in ["../x", "", ".hidden", "a/b"] {
        assert!(runtime::run(&env.root, bad, b.path(), &CreateOptions::default()).is_err());
    }

    // A symlink in the image pointing at a host directory: the mount lands inside the rootfs.
    let outside = b.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, b.rootfs().join("mnt")).unwrap();
    let mut spec = b.spec(&["sh", "-c", "echo inside > /mnt/f"], false);
    let mut mounts = spec.mounts().clone().unwrap();
    let mut m = oci_spec::runtime::Mount::default();
    m.set_destination("/mnt".into());
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some("tmpfs".into()));
    mounts.push(m);
    spec.set_mounts(Some(mounts));
    let (code, _) = run_capture(&mut env, &b, "symlink", &spec);
    assert_eq!(code, 0);
    assert!(
        b.rootfs().join(outside.strip_prefix("/").unwrap()).is_dir(),
        "the target was not made inside the rootfs"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "the host directory was written to"
    );
}

#[test]
fn damaged_state_is_reported_and_deletable() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    b.write(&b.spec(&["true"], false));
    let id = env.id("damaged");
    let p = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap();
    p.wait().unwrap();
    let state_file = env.root.path().join(&id).join("state.json");
    let text = std::fs::read(&state_file).unwrap();
    std::fs::write(&state_file, &text[..text.len() / 3]).unwrap();
    let e = runtime::state(&env.root, &id).unwrap_err().to_string();
    assert!(e.contains("state.json: state:"), "{e}");
    assert!(runtime::list(&env.root).is_err());
    runtime::delete(&env.root, &id, true).unwrap();
    env.assert_clean(&id, Some(p.pid()), &b);
}

#[test]
fn runc_runs_the_same_bundle() {
    if !need_root("runc") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let spec = b.spec(&["sh", "-c", "hostname; exit 3"], false);
    let (code, out) = run_capture(&mut env, &b, "ours", &spec);
    assert_eq!((code, out.as_str()), (3, "decant\n"));
    let runc_root = tempfile::TempDir::new().unwrap();
    let status = std::process::Command::new("runc")
        .arg("--root")
        .arg(runc_root.path())
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(format!("runc-{}", std::process::id()))
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("runc is required: apt-get install runc");
    assert_eq!(
        status.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&status.stdout), "decant\n");
}

#[test]
fn rootless_run_as_nobody() {
    if !need_root("to switch to uid 65534 for the rootless run") {
        return;
    }
    rootless_case(true);
    // Without a network namespace of its own, sysfs cannot be mounted: /sys is bound instead.
    rootless_case(false);
}

fn rootless_case(netns: bool) {
    let b = Bundle::new();
    let env = Env::new();
    std::fs::set_permissions(b.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.root_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, out_fd) = out_file(&b, "rootless.out");
    nix::unistd::fchown(&out_fd, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (_, err_fd) = out_file(&b, "rootless.err");
    nix::unistd::fchown(&err_fd, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    // The spec as the unprivileged user would write it: map 65534 to 0.
    let mut spec = b.spec(&["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$; ls /dev; cat /dev/null; echo hi > /dev/null && echo devnull-ok; ls /sys/kernel >/dev/null && echo sys-ok; touch /sys/x 2>/dev/null || echo sys-ro"], true);
    let mut linux = spec.linux().clone().unwrap();
    if !netns {
        let mut ns = linux.namespaces().clone().unwrap();
        ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        linux.set_namespaces(Some(ns));
    }
    let map = |h: u32| {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(h)
            .size(1u32)
            .build()
            .unwrap()
    };
    linux.set_uid_mappings(Some(vec![map(65534)]));
    linux.set_gid_mappings(Some(vec![map(65534)]));
    spec.set_linux(Some(linux));
    b.write(&spec);
    let id = format!("rootless-{netns}-{}", std::process::id());
    let root = env.root.clone();
    let bundle = b.path().to_path_buf();

    // SAFETY: the child only switches credentials, calls the runtime and _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = (|| -> Result<i32, String> {
                let nobody = nix::unistd::Gid::from_raw(65534);
                nix::unistd::setgroups(&[]).map_err(|e| e.to_string())?;
                nix::unistd::setresgid(nobody, nobody, nobody).map_err(|e| e.to_string())?;
                let u = nix::unistd::Uid::from_raw(65534);
                nix::unistd::setresuid(u, u, u).map_err(|e| e.to_string())?;
                let opts = CreateOptions {
                    stdout: Some(out_fd),
                    ..Default::default()
                };
                let p = runtime::run(&root, &id, &bundle, &opts).map_err(|e| e.to_string())?;
                let code = p.wait().map_err(|e| e.to_string())?.code();
                runtime::delete(&root, &id, false).map_err(|e| e.to_string())?;
                Ok(code)
            })();
            let c = match code {
                Ok(c) => c,
                Err(e) => {
                    let _ = nix::unistd::write(&err_fd, e.as_bytes());
                    99
                }
            };
            // SAFETY: ends the forked child without unwinding into the test harness.
            unsafe { libc::_exit(c) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let code = reap(child.as_raw());
            let err = std::fs::read_to_string(b.path().join("rootless.err")).unwrap_or_default();
            assert_eq!(code, 0, "rootless run failed: {err} / {}", read(&out));
            let text = read(&out);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.first(), Some(&"0"), "{text}");
            assert_eq!(
                lines
                    .get(1)
                    .map(|l| l.split_whitespace().collect::<Vec<_>>()),
                Some(vec!["0", "65534", "1"]),
                "{text}"
            );
            assert_eq!(lines.get(2), Some(&"1"), "{text}");
            assert!(
                lines.contains(&"urandom") && lines.contains(&"devnull-ok"),
                "{text}"
            );
            env.assert_clean(&id, None, &b);
        }
    }
}

#[test]
fn terminal_through_console_socket() {
    if !need_root("namespaces and mounts") {
        return;
    }
    use std::io::IoSliceMut;
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::os::unix::net::UnixListener;
    let b = Bundle::new();
    let mut env = Env::new();
    let mut spec = b.spec(&["sh", "-c", "tty; test -t 0 && echo interactive"], false);
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(true));
    spec.set_process(Some(p));
    b.write(&spec);
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = env.id("tty");
    // Without a console socket, a terminal is refused up front.
    let e = runtime::run(&env.root, &id, b.path(), &CreateOptions::default()).unwrap_err();
    assert!(e.to_string().contains("console socket"), "{e}");
    env.assert_clean(&id, None, &b);

    let opts = CreateOptions {
        console_socket: Some(sock.clone()),
        ..Default::default()
    };
    let proc_ = runtime::run(&env.root, &id, b.path(), &opts).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut master = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the fd was just received over SCM_RIGHTS and is ours alone.
            master = fds
                .first()
                .map(|fd| unsafe { std::fs::File::from_raw_fd(*fd) });
        }
    }
    let mut master = master.expect("no pty master received");
    let mut out = Vec::new();
    // The read ends with EIO once the container closes its side.
    let _ = master.read_to_end(&mut out);
    assert_eq!(proc_.wait().unwrap().code(), 0);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("/dev/pts/0\r\n") && text.contains("interactive"),
        "{text:?}"
    );
    runtime::delete(&env.root, &id, false).unwrap();
    env.assert_clean(&id, Some(proc_.pid()), &b);
}

#[test]
fn time_namespace_with_offsets() {
    if !need_root("namespaces and mounts") {
        return;
    }
    if !Path::new("/proc/self/ns/time").exists() {
        panic!("this kernel has no time namespaces (needs 5.6 or later)");
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let mut spec = b.spec(&["cat", "/proc/uptime"], false);
    let mut linux = spec.linux().clone().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    let mut time = oci_spec::runtime::LinuxNamespace::default();
    time.set_typ(oci_spec::runtime::LinuxNamespaceType::Time);
    ns.push(time);
    linux.set_namespaces(Some(ns));
    let mut off = oci_spec::runtime::LinuxTimeOffset::default();
    off.set_secs(Some(10_000_000));
    linux.set_time_offsets(Some([("boottime".to_string(), off)].into_iter().collect()));
    spec.set_linux(Some(linux));
    let (code, out) = run_capture(&mut env, &b, "timens", &spec);
    assert_eq!(code, 0, "{out}");
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime > 10_000_000.0, "{out}");
}

#[test]
fn runc_generated_spec_runs() {
    if !need_root("namespaces and mounts") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let st = std::process::Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(b.path())
        .status()
        .expect("runc is required: apt-get install runc");
    assert!(st.success());
    let bytes = std::fs::read(b.path().join("config.json")).unwrap();
    let mut spec: Spec = serde_json::from_slice(&bytes).unwrap();
    // runc's defaults minus what the security module (not part of this crate's tests) does.
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(false));
    p.set_capabilities(None);
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "ls /sys/fs/cgroup | grep -c . ; touch /x 2>/dev/null || echo ro".into(),
    ]));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    spec.set_linux(Some(linux));
    let (code, out) = run_capture(&mut env, &b, "runcspec", &spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .first()
            .and_then(|l| l.parse::<u32>().ok())
            .is_some_and(|n| n > 0),
        "no cgroup mount: {out}"
    );
    assert_eq!(lines.get(1), Some(&"ro"), "{out}");
}

/// The Podman-like defaults (`default_spec`) really hold inside the container: Podman's
/// capability set, the seccomp filter (mount and new user namespaces refused), masked and
/// read-only /proc paths, and no_new_privs.
#[test]
fn default_spec_applies_podman_security() {
    if !need_root("namespaces, mounts and seccomp") {
        return;
    }
    let b = Bundle::new();
    let mut env = Env::new();
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                  mount -t tmpfs none /tmp 2>/dev/null && echo mount=allowed || echo mount=refused; \
                  (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo procsys=writable || echo procsys=readonly; \
                  unshare -U true 2>/dev/null && echo userns=allowed || echo userns=refused; \
                  echo done";
    let spec = runtime::spec::default_spec(
        Path::new("rootfs"),
        vec!["sh".into(), "-c".into(), script.into()],
        false,
    );
    let (code, out) = run_capture(&mut env, &b, "defaults", &spec);
    assert_eq!(code, 0, "{out}");
    for want in [
        "CapEff:\t00000000800405fb",
        "CapBnd:\t00000000800405fb",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "mount=refused",
        "procsys=readonly",
        "userns=refused",
        "done",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

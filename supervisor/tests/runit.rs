//! runit/phusion-style images: run, finish with exit code and signal, down files, log/run fed by
//! a pipe, and my_init's environment, startup and shutdown scripts.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn run_finish_down_and_log() {
    let d = root();
    let svc = d.path().join("etc/service");
    let fin = d.path().join("finish-args");
    write(
        &svc.join("once/run"),
        "#!/bin/busybox sh\necho hello-from-run\nexit 3\n",
        true,
    );
    write(
        &svc.join("once/finish"),
        &format!("#!/bin/busybox sh\necho \"$1 $2\" >> {}\n", fin.display()),
        true,
    );
    write(
        &svc.join("once/log/run"),
        "#!/bin/busybox sh\nwhile read l; do echo \"LOG: $l\"; done\n",
        true,
    );
    write(
        &svc.join("off/run"),
        "#!/bin/busybox sh\nexec busybox sleep 30\n",
        true,
    );
    write(&svc.join("off/down"), "", false);
    write(&svc.join("broken/run"), "not executable", false);
    let r = start(d.path(), &[]);
    let o = r.wait_output(secs(5), |o| o.contains("once/log | LOG: hello-from-run"));
    assert!(!o.contains("spawned: 'off'"), "{o}");
    assert!(
        o.contains("broken/run: runit service 'broken': run is not an executable file"),
        "{o}"
    );
    r.wait_output(secs(5), |_| {
        std::fs::read_to_string(&fin).is_ok_and(|t| t.lines().count() >= 2)
    });
    assert_eq!(
        std::fs::read_to_string(&fin).unwrap().lines().next(),
        Some("3 0")
    );
    r.wait_socket(d.path());
    let (_, st) = r.ctl(d.path(), &["status"]);
    assert!(
        st.lines()
            .any(|l| l.starts_with("off ") && l.contains("runit") && l.contains("STOPPED")),
        "{st}"
    );
    assert!(
        st.lines()
            .any(|l| l.starts_with("broken ") && l.contains("FATAL")),
        "{st}"
    );
}

#[test]
fn finish_sees_the_signal() {
    let d = root();
    let fin = d.path().join("finish-args");
    let svc = d.path().join("etc/service/k");
    write(&svc.join("run"), "#!/bin/busybox sh\nkill -USR2 $$\n", true);
    write(
        &svc.join("finish"),
        &format!("#!/bin/busybox sh\necho \"$1 $2\" > {}\n", fin.display()),
        true,
    );
    let r = start(d.path(), &[]);
    r.wait_output(secs(5), |_| {
        std::fs::read_to_string(&fin).is_ok_and(|t| !t.is_empty())
    });
    assert_eq!(std::fs::read_to_string(&fin).unwrap().trim(), "-1 12");
}

#[test]
fn my_init_environment_startup_and_shutdown_scripts() {
    let d = root();
    let e = d.path().join("etc");
    let trace = d.path().join("trace");
    let t = trace.display();
    write(
        &e.join("container_environment/GREETING"),
        "bonjour\n",
        false,
    );
    write(
        &e.join("my_init.d/10-first"),
        &format!("#!/bin/busybox sh\necho init.d-$GREETING >> {t}\n"),
        true,
    );
    write(
        &e.join("rc.local"),
        &format!("#!/bin/busybox sh\necho rc.local >> {t}\n"),
        true,
    );
    write(
        &e.join("my_init.pre_shutdown.d/a"),
        &format!("#!/bin/busybox sh\necho pre >> {t}\n"),
        true,
    );
    write(
        &e.join("my_init.post_shutdown.d/a"),
        &format!("#!/bin/busybox sh\necho post >> {t}\n"),
        true,
    );
    write(
        &e.join("service/app/run"),
        &format!("#!/bin/busybox sh\necho service-$GREETING >> {t}\nexec busybox sleep 30\n"),
        true,
    );
    let mut r = start(d.path(), &[]);
    r.wait_for("spawned: 'app'", secs(5));
    std::thread::sleep(Duration::from_millis(200));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(secs(5)), 0);
    let got = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        got,
        "init.d-bonjour\nrc.local\nservice-bonjour\npre\npost\n"
    );
}

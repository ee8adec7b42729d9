//! systemd units of an image: enabled-unit discovery, types (simple, oneshot, forking, notify),
//! Exec prefixes and variables, ordering, cycles, bad syntax and the skip policy.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Writes /lib/systemd/system/NAME and enables it in multi-user.target.wants (absolute
/// symlink, as systemctl makes them).
fn unit(root: &Path, name: &str, text: &str) {
    write(&root.join("lib/systemd/system").join(name), text, false);
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(format!("/lib/systemd/system/{name}"), wants.join(name)).unwrap();
}

#[test]
fn enabled_units_run_in_order_with_types() {
    need("/usr/bin/python3");
    let d = root();
    let r0 = d.path();
    let t = r0.join("trace");
    let tr = t.display();
    write(
        &r0.join("etc/default/web"),
        "# defaults\nPORT=8080\nOPTS=\"-a -b\"\n",
        false,
    );
    unit(r0, "prep.service", &format!(
        "[Unit]\nDescription=prepare\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStartPre=-/bin/busybox false\nExecStart=/bin/busybox sh -c 'busybox sleep 0.3; echo prep >> {tr}'\n"));
    unit(r0, "web.service", &format!(
        "[Unit]\nAfter=prep.service network.target\nWants=extra.service\n[Service]\n\
         EnvironmentFile=/etc/default/web\nEnvironmentFile=-/etc/default/missing\nEnvironment=\"NAME=%n\" X=1\n\
         RuntimeDirectory=webrun\n\
         ExecStart=/bin/busybox sh -c 'echo web $PORT ${{NAME}} $0 >> {tr}; exec busybox sleep 30' $OPTS\n\
         Restart=on-failure\n"));
    write(
        &r0.join("lib/systemd/system/extra.service"),
        &format!(
            "[Service]\nExecStart=/bin/busybox sh -c 'echo extra >> {tr}; exec busybox sleep 30'\n"
        ),
        false,
    );
    std::fs::create_dir_all(r0.join("run")).unwrap();
    let pidfile = r0.join("run/daemon.pid");
    unit(
        r0,
        "daemon.service",
        &format!(
            "[Service]\nType=forking\nPIDFile=/run/daemon.pid\n\
         ExecStart=/bin/busybox sh -c 'busybox setsid busybox sleep 30 & echo $! > {}'\n",
            pidfile.display()
        ),
    );
    unit(r0, "notifier.service", &format!(
        "[Unit]\nAfter=daemon.service\n[Service]\nType=notify\n\
         ExecStart=/bin/busybox sh -c 'busybox sleep 0.3; echo notifying >> {tr}; \
         /usr/bin/python3 -c \"import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\\\"READY=1\\\", os.environ[\\\"NOTIFY_SOCKET\\\"])\"; exec busybox sleep 30'\n"));
    unit(r0, "after-notify.service", &format!(
        "[Unit]\nAfter=notifier.service\n[Service]\nExecStart=/bin/busybox sh -c 'echo after-notify >> {tr}; exec busybox sleep 30'\n"));
    unit(
        r0,
        "getty@tty1.service",
        "[Service]\nExecStart=/sbin/agetty tty1\n",
    );
    unit(
        r0,
        "systemd-timesyncd.service",
        "[Service]\nExecStart=/bin/false\n",
    );
    let r = start(r0, &[]);
    r.wait_output(secs(10), |_| {
        std::fs::read_to_string(&t)
            .is_ok_and(|x| x.contains("after-notify") && x.contains("extra") && x.contains("web"))
    });
    let trace = std::fs::read_to_string(&t).unwrap();
    let pos = |s: &str| {
        trace
            .find(s)
            .unwrap_or_else(|| panic!("{s} missing in {trace}"))
    };
    assert!(pos("prep") < pos("web 8080"), "{trace}");
    assert!(trace.contains("web 8080 web.service -a"), "{trace}");
    assert!(pos("notifying") < pos("after-notify"), "{trace}");
    assert!(r0.join("run/webrun").is_dir());
    let o = r.output();
    assert!(
        o.contains("getty@tty1.service left out by the container policy"),
        "{o}"
    );
    assert!(!o.contains("spawned: 'systemd-timesyncd.service'"));
    r.wait_socket(r0);
    let (_, st) = r.ctl(r0, &["status"]);
    let line = |n: &str| {
        st.lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("prep.service").contains("RUNNING"), "{st}");
    let daemon_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        line("daemon.service").contains(&format!("pid {daemon_pid}")),
        "{st}"
    );
    assert!(
        line("notifier.service").contains("systemd")
            && line("notifier.service").contains("RUNNING"),
        "{st}"
    );
    // Stopping the forking service signals the pid from its PIDFile.
    let (code, st) = r.ctl(r0, &["stop", "daemon"]);
    assert_eq!(code, 0, "{st}");
    assert!(st.contains("STOPPED"), "{st}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(stat(daemon_pid).is_none());
}

#[test]
fn cycles_and_bad_units_skip_only_themselves() {
    let d = root();
    let r0 = d.path();
    unit(
        r0,
        "a.service",
        "[Unit]\nAfter=b.service\n[Service]\nExecStart=/bin/busybox sleep 30\n",
    );
    unit(
        r0,
        "b.service",
        "[Unit]\nAfter=a.service\n[Service]\nExecStart=/bin/busybox sleep 30\n",
    );
    unit(
        r0,
        "bad.service",
        "[Service]\nExecStart=/bin/busybox sleep 30\nthis line is wrong\n",
    );
    unit(
        r0,
        "nouser.service",
        "[Service]\nUser=ghost\nExecStart=/bin/busybox sleep 30\n",
    );
    unit(r0, "noexec.service", "[Service]\nType=simple\n");
    unit(
        r0,
        "fine.service",
        "[Service]\nExecStart=/bin/busybox sleep 30\n",
    );
    let r = start(r0, &[]);
    let o = r.wait_for("spawned: 'fine.service'", secs(5));
    let lib = r0.join("lib/systemd/system");
    assert!(
        o.contains(&format!(
            "{}:3: expected 'Key=Value', found 'this line is wrong'",
            lib.join("bad.service").display()
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "{}:2: user 'ghost' does not exist",
            lib.join("nouser.service").display()
        )),
        "{o}"
    );
    assert!(o.contains("noexec.service has no ExecStart="), "{o}");
    assert!(o.contains("ordering cycle: a.service"), "{o}");
    // Exactly one of the cycle's units starts.
    let started = ["a.service", "b.service"]
        .iter()
        .filter(|n| {
            r.wait_output(secs(2), |_| true)
                .contains(&format!("spawned: '{n}'"))
        })
        .count();
    assert_eq!(started, 1, "{}", r.output());
    r.wait_socket(r0);
    let (_, st) = r.ctl(r0, &["status"]);
    assert!(
        st.lines().filter(|l| l.contains("FATAL")).count() == 4,
        "{st}"
    );
    assert!(st.contains("ordering cycle"), "{st}");
}

#[test]
fn restart_policy_and_start_limit() {
    let d = root();
    unit(
        d.path(),
        "flap.service",
        "[Service]\nExecStart=/bin/busybox false\nRestart=always\nRestartSec=50ms\n",
    );
    let r = start(d.path(), &[]);
    let o = r.wait_for("gave up: flap.service", secs(5));
    // systemd's start limit: 5 starts in 10 s.
    assert_eq!(o.matches("spawned: 'flap.service'").count(), 5, "{o}");
}

#[test]
fn policy_can_be_overridden() {
    let d = root();
    unit(
        d.path(),
        "getty@tty1.service",
        "[Service]\nExecStart=/bin/busybox sh -c 'echo instance-%i; exec busybox sleep 30'\n",
    );
    let r = start(d.path(), &["--allow", "getty@*"]);
    r.wait_for("getty@tty1.service | instance-tty1", secs(5));
}

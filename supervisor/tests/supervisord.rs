//! supervisord-style images: states, backoff, FATAL, autorestart=unexpected with exitcodes,
//! stopwaitsecs then SIGKILL, stopasgroup, logs, bad configuration, the control socket.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn conf(root: &std::path::Path, text: &str) {
    write(&root.join("etc/supervisor/conf.d/test.conf"), text, false);
}

#[test]
fn states_backoff_fatal_and_exitcodes() {
    let d = root();
    conf(
        d.path(),
        "[program:up]\ncommand=/bin/busybox sleep 30\nstartsecs=1\n\
         [program:dies]\ncommand=/bin/busybox sh -c 'exit 1'\nstartretries=1\n\
         [program:expected]\ncommand=/bin/busybox sh -c 'busybox sleep 0.3; exit 2'\nstartsecs=0\nexitcodes=0,2\n\
         [program:unexpected]\ncommand=/bin/busybox sh -c 'busybox sleep 0.3; exit 3'\nstartsecs=0\nexitcodes=0,2\n",
    );
    let r = start(d.path(), &[]);
    let o = r.wait_output(secs(10), |o| {
        o.contains("gave up: dies") && o.matches("spawned: 'unexpected'").count() >= 2
    });
    assert!(o.contains("success: up entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)"), "{o}");
    assert!(o.contains("exited: dies (exit status 1; not expected)"));
    assert!(o.contains("gave up: dies entered FATAL state, too many start retries too quickly"));
    // startretries=1: the first start and one retry.
    assert_eq!(o.matches("spawned: 'dies'").count(), 2, "{o}");
    assert!(o.contains("exited: expected (exit status 2; expected)"));
    assert_eq!(o.matches("spawned: 'expected'").count(), 1, "{o}");
    assert!(o.contains("exited: unexpected (exit status 3; not expected)"));
    r.wait_socket(d.path());
    let (_, st) = r.ctl(d.path(), &["status"]);
    let line = |n: &str| {
        st.lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("up").contains("supervisord RUNNING") && line("up").contains("pid "),
        "{st}"
    );
    assert!(line("dies").contains("FATAL"), "{st}");
    assert!(line("expected").contains("EXITED"), "{st}");
}

#[test]
fn backoff_delay_grows_one_second_per_attempt() {
    let d = root();
    conf(
        d.path(),
        "[program:b]\ncommand=/bin/busybox false\nstartretries=2\n",
    );
    let t0 = Instant::now();
    let r = start(d.path(), &[]);
    r.wait_for("gave up: b", secs(10));
    // Delays 1 s then 2 s between the three attempts.
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(2900) && el < Duration::from_secs(5),
        "{el:?}"
    );
    assert_eq!(r.output().matches("spawned: 'b'").count(), 3);
}

#[test]
fn ignoring_sigterm_is_killed_at_stopwaitsecs_and_group_members_go_too() {
    let d = root();
    let mark = d.path().join("child-alive");
    conf(
        d.path(),
        &format!(
            "[program:stubborn]\ncommand=/bin/busybox sh -c \"trap '' TERM; while true; do busybox sleep 0.05; done\"\n\
             startsecs=0\nstopwaitsecs=1\n\
             [program:shell]\ncommand=/bin/busybox sh -c 'busybox sleep 60 & echo $! > {}; wait'\nstartsecs=0\nstopasgroup=true\n",
            mark.display()
        ),
    );
    let mut r = start(d.path(), &[]);
    r.wait_output(secs(5), |o| {
        o.contains("spawned: 'stubborn'") && o.contains("spawned: 'shell'")
    });
    let until = Instant::now() + secs(5);
    while !mark.exists() || std::fs::read_to_string(&mark).unwrap().trim().is_empty() {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    let child: i32 = std::fs::read_to_string(&mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(secs(6)), 0);
    let el = t0.elapsed();
    let o = r.output();
    assert!(o.contains("killing 'stubborn'"), "{o}");
    assert!(
        o.contains("stopped: stubborn (terminated by SIGKILL)"),
        "{o}"
    );
    assert!(
        el >= Duration::from_millis(900) && el < Duration::from_millis(2500),
        "{el:?}\n{o}"
    );
    assert!(
        stat(child).is_none(),
        "the shell's child survived its group's stop"
    );
}

#[test]
fn shutdown_returns_at_once_when_everything_is_gone() {
    let d = root();
    conf(
        d.path(),
        "[program:a]\ncommand=/bin/busybox sleep 60\nstartsecs=0\nstopwaitsecs=10\n",
    );
    let mut r = start(d.path(), &["--grace", "10"]);
    r.wait_for("spawned: 'a'", secs(5));
    let t0 = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(secs(5)), 0);
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn leftover_processes_get_term_then_kill_after_grace() {
    let d = root();
    // A daemon that escapes its service (new session, parent exits) and ignores SIGTERM.
    conf(
        d.path(),
        "[program:forker]\ncommand=/bin/busybox sh -c \"busybox setsid busybox sh -c 'trap \\\"\\\" TERM; while true; do busybox sleep 0.05; done' & busybox sleep 60\"\nstartsecs=0\n",
    );
    let mut r = start(d.path(), &["--grace", "0.5"]);
    r.wait_for("spawned: 'forker'", secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(secs(5)), 0);
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(450) && el < Duration::from_secs(3),
        "{el:?}"
    );
    assert!(r.output().contains("grace period over"));
}

#[test]
fn output_prefix_logfiles_and_environment() {
    let d = root();
    let logf = d.path().join("out.log");
    conf(
        d.path(),
        &format!(
            "[program:talk]\ncommand=/bin/busybox sh -c 'echo out $GREETING; echo err >&2; busybox sleep 30'\n\
             environment=GREETING=\"hi, there\",OTHER=x\nstartsecs=0\n\
             [program:tofile]\ncommand=/bin/busybox sh -c 'echo to-file; echo both >&2; busybox sleep 30'\n\
             stdout_logfile={}\nredirect_stderr=true\nstartsecs=0\n\
             [program:direct]\ncommand=/bin/busybox sh -c 'echo plain-stdout; busybox sleep 30'\nstdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\nstartsecs=0\n",
            logf.display()
        ),
    );
    let r = start(d.path(), &[]);
    let o = r.wait_output(secs(5), |o| {
        o.contains("talk | err") && o.contains("talk | out hi, there") && o.contains("plain-stdout")
    });
    assert!(o.lines().any(|l| l == "plain-stdout"), "{o}");
    let until = Instant::now() + secs(5);
    loop {
        let t = std::fs::read_to_string(&logf).unwrap_or_default();
        if t.contains("to-file") && t.contains("both") {
            break;
        }
        assert!(Instant::now() < until, "log file: {t}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn numprocs_user_and_directory() {
    let d = root();
    write(
        &d.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nsvc:x:4321:4321::/home/svc:/bin/sh\n",
        false,
    );
    let out = d.path().join("ids");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    conf(
        d.path(),
        &format!(
            "[program:w]\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)02d\n\
             command=/bin/busybox sh -c 'echo $(busybox id -u) $HOME $(pwd) > {}/%(process_num)d; busybox sleep 30'\n\
             user=svc\ndirectory=/tmp\nstartsecs=0\n",
            out.display()
        ),
    );
    let r = start(d.path(), &[]);
    r.wait_output(secs(5), |o| {
        o.contains("spawned: 'w:w_00'") && o.contains("spawned: 'w:w_01'")
    });
    let until = Instant::now() + secs(5);
    loop {
        let t = std::fs::read_to_string(out.join("1")).unwrap_or_default();
        if !t.is_empty() {
            assert_eq!(t.trim(), "4321 /home/svc /tmp");
            break;
        }
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_config_skips_that_program_and_status_shows_why() {
    let d = root();
    conf(
        d.path(),
        "[program:good]\ncommand=/bin/busybox sleep 30\nstartsecs=0\n\
         [program:typo]\ncomand=/bin/true\n\
         [program:nocmd]\nautostart=true\n\
         [program:ghost]\ncommand=/bin/true\nuser=nobody-here\n",
    );
    let r = start(d.path(), &[]);
    let o = r.wait_for("spawned: 'good'", secs(5));
    let f = d
        .path()
        .join("etc/supervisor/conf.d/test.conf")
        .display()
        .to_string();
    assert!(
        o.contains(&format!("{f}:5: unknown key 'comand' in [program:typo]")),
        "{o}"
    );
    assert!(
        o.contains(&format!("{f}:6: [program:nocmd] has no command")),
        "{o}"
    );
    assert!(
        o.contains(&format!("{f}:10: user 'nobody-here' does not exist")),
        "{o}"
    );
    r.wait_socket(d.path());
    let (code, st) = r.ctl(d.path(), &["status", "typo"]);
    assert_eq!(code, 0);
    assert!(
        st.contains("typo") && st.contains("FATAL") && st.contains("unknown key 'comand'"),
        "{st}"
    );
}

#[test]
fn control_start_stop_restart() {
    let d = root();
    conf(
        d.path(),
        "[program:a]\ncommand=/bin/busybox sleep 30\nstartsecs=0\n\
         [program:manual]\ncommand=/bin/busybox sleep 30\nautostart=false\nstartsecs=0\n",
    );
    let r = start(d.path(), &[]);
    r.wait_for("spawned: 'a'", secs(5));
    r.wait_socket(d.path());
    let (_, st) = r.ctl(d.path(), &["status"]);
    assert!(
        st.contains("manual") && st.contains("STOPPED") && st.contains("Not started"),
        "{st}"
    );
    let (code, st) = r.ctl(d.path(), &["start", "manual"]);
    assert_eq!(code, 0, "{st}");
    assert!(st.contains("RUNNING"), "{st}");
    let (code, st) = r.ctl(d.path(), &["stop", "a"]);
    assert_eq!(code, 0);
    assert!(st.contains("STOPPED"), "{st}");
    let (code, st) = r.ctl(d.path(), &["restart", "manual"]);
    assert_eq!(code, 0);
    assert!(st.contains("RUNNING") && st.contains("restarts 1"), "{st}");
    let (code, st) = r.ctl(d.path(), &["stop", "nope"]);
    assert_eq!(code, 1);
    assert!(st.contains("nope: ERROR (no such process)"), "{st}");
    let (code, st) = r.ctl(d.path(), &["frobnicate"]);
    assert_eq!(code, 1, "{st}");
}

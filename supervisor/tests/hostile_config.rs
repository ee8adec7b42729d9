//! Damaged configuration must give errors, never a panic, and load fast: every truncation and
//! a sweep of byte flips of real-looking supervisord configs, systemd units and env files.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use supervisor::sources::{self, Policy};

const INI: &str =
    "[supervisord]\nnodaemon=true\n[include]\nfiles = /etc/supervisor/conf.d/*.conf\n\
[program:web]\ncommand=/usr/bin/python3 -m http.server %(ENV_PORT)s\nnumprocs=2\n\
process_name=%(program_name)s_%(process_num)02d\nenvironment=A=\"x,y\",B=2\nuser=www\n\
autorestart=unexpected\nexitcodes=0,2\nstopsignal=QUIT\nstopwaitsecs=5\n";

const UNIT: &str = "[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\n\
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run\n\n[Service]\nEnvironmentFile=-/etc/default/ssh\n\
ExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D $SSHD_OPTS\nExecReload=/usr/sbin/sshd -t\n\
ExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\nRestart=on-failure\nRestartPreventExitStatus=255\n\
Type=notify\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n\n[Install]\nWantedBy=multi-user.target\n";

fn load(root: &Path) {
    let mut pipes = Vec::new();
    let t = Instant::now();
    let _ = sources::load(root, &Policy::default(), &mut pipes);
    assert!(t.elapsed() < Duration::from_secs(1));
}

fn variants(text: &str) -> Vec<Vec<u8>> {
    let b = text.as_bytes();
    let mut v: Vec<Vec<u8>> = (0..b.len()).map(|i| b[..i].to_vec()).collect();
    for i in (0..b.len()).step_by(3) {
        for x in [b'[', b'=', b'%', b'"', b'\\', b'$', 0xff, b'\n', b'@', b'-'] {
            let mut c = b.to_vec();
            c[i] = x;
            v.push(c);
        }
    }
    v
}

#[test]
fn damaged_supervisord_configs_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("etc/supervisord.conf");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    for v in variants(INI) {
        std::fs::write(&f, &v).unwrap();
        load(d.path());
    }
}

#[test]
fn damaged_systemd_units_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let lib = d.path().join("lib/systemd/system");
    let wants = d.path().join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&wants).unwrap();
    symlink("/lib/systemd/system/ssh.service", wants.join("ssh.service")).unwrap();
    std::fs::create_dir_all(d.path().join("etc/default")).unwrap();
    std::fs::write(d.path().join("etc/default/ssh"), "SSHD_OPTS=\"-o 'a b'\n").unwrap();
    for v in variants(UNIT) {
        std::fs::write(lib.join("ssh.service"), &v).unwrap();
        load(d.path());
    }
}

#[test]
fn wants_loops_and_huge_files_are_bounded() {
    let d = tempfile::tempdir().unwrap();
    let sys = d.path().join("etc/systemd/system");
    let wants = sys.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    // A target that wants itself, and a unit symlink loop.
    std::fs::create_dir_all(sys.join("loop.target.wants")).unwrap();
    symlink("/etc/systemd/system/loop.target", wants.join("loop.target")).unwrap();
    symlink(
        "/etc/systemd/system/loop.target",
        sys.join("loop.target.wants/loop.target"),
    )
    .unwrap();
    symlink("a.service", sys.join("b.service")).unwrap();
    symlink("b.service", sys.join("a.service")).unwrap();
    symlink("/etc/systemd/system/a.service", wants.join("a.service")).unwrap();
    // A 2 MB unit: over the cap, refused with a message.
    let big = sys.join("big.service");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    symlink("/etc/systemd/system/big.service", wants.join("big.service")).unwrap();
    let mut pipes = Vec::new();
    let specs = sources::load(d.path(), &Policy::default(), &mut pipes);
    let big = specs
        .iter()
        .find(|s| s.name == "big.service")
        .expect("big listed");
    assert!(
        big.broken.as_deref().unwrap().contains("larger than the"),
        "{:?}",
        big.broken
    );
    assert!(!specs
        .iter()
        .any(|s| s.name == "a.service" && s.broken.is_none()));
}

//! decant-init's first boot, run as a subreaper child against a temporary image root: a
//! missing machine-id and missing ssh host keys are made before the first service starts; a
//! second boot changes nothing; the tini case does nothing of the kind.

mod common;
use common::*;
use std::process::Command;

/// An image root with sshd configured, the host's ssh-keygen as the image's, dbus installed,
/// no machine-id and no host keys, and one runit service that reports what it saw.
fn image() -> tempfile::TempDir {
    let d = root();
    let r = d.path();
    write(&r.join("etc/ssh/sshd_config"), "Port 22\n", false);
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::copy("/usr/bin/ssh-keygen", r.join("usr/bin/ssh-keygen"))
        .expect("ssh-keygen must be installed (openssh-client)");
    std::fs::create_dir_all(r.join("var/lib/dbus")).unwrap();
    write(
        &r.join("etc/service/check/run"),
        &format!(
            "#!/bin/busybox sh\n\
             test -s {0}/etc/ssh/ssh_host_ed25519_key && echo KEYS-READY\n\
             busybox readlink {0}/var/lib/dbus/machine-id\n\
             exec busybox sleep 30\n",
            r.display()
        ),
        true,
    );
    d
}

#[test]
fn identity_is_made_before_the_services_and_kept_on_the_next_boot() {
    let d = image();
    let r = d.path();
    let mut run = start(r, &[]);
    let o = run.wait_for("check | KEYS-READY", secs(10));
    let id = std::fs::read_to_string(r.join("etc/machine-id")).unwrap();
    assert_eq!(id.len(), 33, "{id:?}");
    // Absolute, as Debian's dbus makes it: it resolves inside the container.
    run.wait_for("check | /etc/machine-id", secs(5));
    let first = o.find("first boot: wrote /etc/machine-id").expect(&o);
    let keys = o
        .find("first boot: generated ssh host keys (ssh-keygen -A)")
        .expect(&o);
    let spawned = o.find("spawned: 'check'").expect(&o);
    assert!(first < keys && keys < spawned, "{o}");
    assert!(o.contains("linked /var/lib/dbus/machine-id"), "{o}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(secs(10)), 0);

    let key = std::fs::read(r.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let mut again = start(r, &[]);
    let o = again.wait_for("check | KEYS-READY", secs(10));
    assert!(!o.contains("first boot"), "{o}");
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit(secs(10)), 0);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/machine-id")).unwrap(),
        id
    );
    assert_eq!(
        std::fs::read(r.join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        key
    );
}

#[test]
fn a_failing_ssh_keygen_is_logged_and_the_services_start() {
    let d = image();
    let r = d.path();
    write(
        &r.join("usr/bin/ssh-keygen"),
        "#!/bin/busybox sh\necho 'no entropy today' >&2\nexit 1\n",
        true,
    );
    let mut run = start(r, &[]);
    let o = run.wait_for("spawned: 'check'", secs(10));
    assert!(o.contains("ssh-keygen -A failed (exit status 1)"), "{o}");
    assert!(o.contains("no entropy today"), "{o}");
    assert!(!o.contains("generated ssh host keys"), "{o}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(secs(10)), 0);
}

#[test]
fn the_tini_case_leaves_the_image_alone() {
    let d = image();
    let r = d.path();
    let mut run = start_with(
        Command::new(BIN)
            .arg("--root")
            .arg(r)
            .args(["--", BUSYBOX, "true"]),
    );
    assert_eq!(run.wait_exit(secs(5)), 0);
    assert!(!r.join("etc/machine-id").exists());
    assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
}

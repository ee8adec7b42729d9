//! The README's first command as an ordinary user: `testdata/make-example.sh` builds the example
//! disk without root (setcap is refused to a user, which it says in one line and goes on), and
//! decant imports it as that user into its own store.

mod common;

use std::process::Command;

/// The unprivileged user the test drops to (nobody).
const NOBODY: &str = "65534";

fn as_nobody(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .env("HOME", "/nonexistent")
        .current_dir("/")
        .output()
        .expect("setpriv (util-linux) could not run; .ci/run installs it")
}

#[test]
fn make_example_and_import_work_as_an_ordinary_user() {
    if !common::require_root("dropping to another user needs root") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("decant-nobody")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("example");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/make-example.sh");
    let o = as_nobody("bash", &[script, out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "make-example.sh as nobody: {stderr}");
    // setcap is installed here (CI installs libcap2-bin) and refused to nobody: one line says so.
    assert_eq!(
        stderr,
        "make-example.sh: setcap was refused (setting a file capability needs root); /bin/ping has no file capability\n"
    );
    for f in ["root.ext4", "boot.ext4", "disk.raw", "disk.qcow2"] {
        assert!(out.join(f).is_file(), "{f} made");
    }
    let store = dir.path().join("store");
    let o = as_nobody(
        "env",
        &[
            &format!("DECANT_ROOT={}", store.display()),
            env!("CARGO_BIN_EXE_decant"),
            "import",
            out.join("disk.qcow2").to_str().unwrap(),
            "--tag",
            "example:latest",
            "--quiet",
        ],
    );
    assert!(
        o.status.success(),
        "decant import as nobody: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = as_nobody(
        "env",
        &[
            &format!("DECANT_ROOT={}", store.display()),
            env!("CARGO_BIN_EXE_decant"),
            "images",
        ],
    );
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && listed.lines().any(|l| l.starts_with("example ")),
        "{listed}"
    );
}

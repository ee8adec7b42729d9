//! First boot: the per-machine identity a VM image must not share with every container made
//! from it. `decant strip`'s identity profile removes it and VM images often ship it empty; a
//! booting VM would regenerate it (systemd-machine-id-setup, the ssh-keygen of openssh's
//! units), but host-like containers run no systemd, so the init does it before any service:
//!
//! - `/etc/machine-id` missing, empty or `uninitialized` (systemd's first-boot marker): 32 random
//!   lowercase hex digits and a newline, as a version-4 UUID the way systemd makes it. A
//!   symlink there is left alone (it may point out of the image; someone chose it).
//! - `/var/lib/dbus/machine-id` (only when `/var/lib/dbus` exists, i.e. dbus is installed):
//!   missing or empty becomes a symlink to `/etc/machine-id`, which is what Debian's dbus
//!   package makes it, so dbus and systemd-style readers agree on one id. A regular file with an
//!   id, or a symlink, is left alone.
//! - sshd configured (`/etc/ssh/sshd_config` or an sshd binary) and no `/etc/ssh/ssh_host_*_key`:
//!   the image's own `ssh-keygen -A`, so the keys match its OpenSSH and its crypto policy.
//!
//! Nothing here is fatal: a read-only root or a failing ssh-keygen is logged in one line and the
//! services start anyway. `root` is a parameter so the tests run against a temporary directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::unistd::AccessFlags;

use crate::log;
use crate::pid1::Init;
use crate::service::Exit;

/// Largest machine-id file read; a real one is 33 bytes.
const MACHINE_ID_CAP: u64 = 4096;
/// Most entries of /etc/ssh looked at for host keys.
const SSH_DIR_CAP: usize = 4096;
/// Where an image keeps ssh-keygen and sshd, in search order.
const BIN_DIRS: [&str; 5] = ["usr/bin", "bin", "usr/sbin", "sbin", "usr/local/bin"];

/// What a first-boot step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Present,
    /// Done; the message says what.
    Done(String),
    /// Not done; the message says why (read-only root, odd file type, I/O error).
    Skipped(String),
}

/// 16 bytes from getrandom(2), blocking until the kernel's pool is ready (early boot).
fn random16() -> std::io::Result<[u8; 16]> {
    let mut buf = [0u8; 16];
    let mut got = 0usize;
    // Bounded: each round either fills bytes or was interrupted by a signal.
    for _ in 0..1000 {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        if rest.is_empty() {
            return Ok(buf);
        }
        // SAFETY: the pointer and length describe `rest`, a live, writable slice of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    if got == buf.len() {
        Ok(buf)
    } else {
        Err(std::io::Error::other("getrandom returned too little"))
    }
}

/// A new machine id: systemd's format (lowercase hex of a random v4 UUID, no dashes) + newline.
pub fn new_machine_id() -> std::io::Result<String> {
    let mut b = random16()?;
    if let Some(x) = b.get_mut(6) {
        *x = (*x & 0x0f) | 0x40;
    }
    if let Some(x) = b.get_mut(8) {
        *x = (*x & 0x3f) | 0x80;
    }
    let mut s = String::with_capacity(33);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s.push('\n');
    Ok(s)
}

/// Whether the file at `p` needs a new id: missing, empty, or systemd's `uninitialized`.
/// `Err` names why it must be left alone.
fn needs_id(p: &Path) -> Result<bool, String> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symlink; left alone", p.display()));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file; left alone", p.display()));
    }
    if meta.len() > MACHINE_ID_CAP {
        return Err(format!(
            "{}: {} bytes, over the {MACHINE_ID_CAP}-byte cap; left alone",
            p.display(),
            meta.len()
        ));
    }
    let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let t = String::from_utf8_lossy(&text);
    let t = t.trim();
    Ok(t.is_empty() || t == "uninitialized")
}

/// Why `dir` cannot be written to, when it cannot (read-only root, permissions).
fn unwritable(dir: &Path) -> Option<String> {
    match nix::unistd::access(dir, AccessFlags::W_OK) {
        Ok(()) => None,
        Err(Errno::EROFS) => Some("read-only root filesystem".into()),
        Err(e) => Some(format!("{} not writable: {}", dir.display(), e.desc())),
    }
}

/// Writes `/etc/machine-id` below `root` when it is missing, empty or `uninitialized`.
pub fn machine_id(root: &Path) -> Step {
    let etc = root.join("etc");
    if !etc.is_dir() {
        return Step::Skipped(format!("{} is not a directory", etc.display()));
    }
    let path = etc.join("machine-id");
    match needs_id(&path) {
        Ok(false) => return Step::Present,
        Ok(true) => {}
        Err(why) => return Step::Skipped(why),
    }
    if let Some(why) = unwritable(&etc) {
        return Step::Skipped(format!("{why}; /etc/machine-id not written"));
    }
    let id = match new_machine_id() {
        Ok(id) => id,
        Err(e) => return Step::Skipped(format!("getrandom: {e}; /etc/machine-id not written")),
    };
    // Written beside and renamed over, so a reader never sees a half-written id; O_NOFOLLOW and
    // O_EXCL so a planted symlink at the temporary name is not followed.
    let tmp = etc.join(".machine-id.decant-init");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&tmp, &path)
    };
    match write() {
        Ok(()) => Step::Done(format!("wrote /etc/machine-id ({})", id.trim())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Step::Skipped(format!("/etc/machine-id not written: {e}"))
        }
    }
}

/// Points `/var/lib/dbus/machine-id` at `/etc/machine-id` when dbus is installed and its copy is
/// missing or empty (call after [`machine_id`]).
pub fn dbus_machine_id(root: &Path) -> Step {
    let dir = root.join("var/lib/dbus");
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Step::Present;
    }
    let path = dir.join("machine-id");
    let empty_file = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Step::Skipped(format!("{}: {e}", path.display())),
        Ok(m) if m.is_file() && m.len() == 0 => true,
        Ok(_) => return Step::Present,
    };
    if let Some(why) = unwritable(&dir) {
        return Step::Skipped(format!("{why}; /var/lib/dbus/machine-id not linked"));
    }
    if empty_file {
        if let Err(e) = std::fs::remove_file(&path) {
            return Step::Skipped(format!("{}: {e}", path.display()));
        }
    }
    match std::os::unix::fs::symlink("/etc/machine-id", &path) {
        Ok(()) => Step::Done("linked /var/lib/dbus/machine-id to /etc/machine-id".into()),
        Err(e) => Step::Skipped(format!("/var/lib/dbus/machine-id not linked: {e}")),
    }
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The image's binary `name` below `root`, from the usual directories.
fn find_bin(root: &Path, name: &str) -> Option<PathBuf> {
    BIN_DIRS
        .iter()
        .map(|d| root.join(d).join(name))
        .find(|p| executable(p))
}

/// Whether `/etc/ssh` holds any `ssh_host_*_key`.
fn has_host_key(ssh: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(ssh) else {
        return false;
    };
    rd.take(SSH_DIR_CAP).flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.starts_with("ssh_host_") && n.ends_with("_key")
    })
}

/// The `ssh-keygen -A` to run when the image has sshd and no host key: `Ok(None)` when
/// nothing is needed, `Err` with the reason when it is needed but cannot run. Below a root
/// other than `/`, `-f ROOT` makes ssh-keygen write under it (OpenSSH 7.8 and later).
pub fn keygen_command(root: &Path) -> Result<Option<Command>, String> {
    let ssh = root.join("etc/ssh");
    let has_sshd = ssh.join("sshd_config").exists() || find_bin(root, "sshd").is_some();
    if !has_sshd || has_host_key(&ssh) {
        return Ok(None);
    }
    let Some(bin) = find_bin(root, "ssh-keygen") else {
        return Err("sshd has no host keys and the image has no ssh-keygen".into());
    };
    if !ssh.is_dir() {
        return Err(format!("{} is not a directory", ssh.display()));
    }
    if let Some(why) = unwritable(&ssh) {
        return Err(format!("{why}; ssh host keys not generated"));
    }
    let mut cmd = Command::new(bin);
    cmd.arg("-A");
    if root != Path::new("/") {
        cmd.arg("-f").arg(root);
    }
    // Its "generating new host keys" line would be a second line for one event.
    cmd.stdout(Stdio::null());
    Ok(Some(cmd))
}

fn report(step: Step) {
    match step {
        Step::Present => {}
        Step::Done(what) => log::info(&format!("first boot: {what}")),
        Step::Skipped(why) => log::warn(&format!("first boot: {why}")),
    }
}

/// Runs every first-boot step for the init's root (services mode, before any service).
pub fn run(init: &mut Init) {
    let root = init.opts.root.clone();
    report(machine_id(&root));
    report(dbus_machine_id(&root));
    match keygen_command(&root) {
        Ok(None) => {}
        Ok(Some(cmd)) => {
            // On failure run_command has logged why (and sshd will say it has no keys).
            let exit = crate::sources::my_init::run_command(init, cmd, "ssh-keygen -A");
            if exit == Some(Exit::Code(0)) {
                log::info("first boot: generated ssh host keys (ssh-keygen -A)");
            }
        }
        Err(why) => log::warn(&format!("first boot: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        d
    }

    fn valid_id(s: &str) -> bool {
        s.len() == 33
            && s.ends_with('\n')
            && s.trim_end()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn ids_are_random_v4_hex() {
        let a = new_machine_id().unwrap();
        let b = new_machine_id().unwrap();
        assert!(valid_id(&a), "{a:?}");
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[12], b'4');
        assert!(b"89ab".contains(&a.as_bytes()[16]), "{a}");
    }

    #[test]
    fn machine_id_missing_empty_or_uninitialized_is_written() {
        for before in [None, Some(""), Some("\n"), Some("uninitialized\n")] {
            let d = root();
            let p = d.path().join("etc/machine-id");
            if let Some(b) = before {
                fs::write(&p, b).unwrap();
            }
            assert!(matches!(machine_id(d.path()), Step::Done(_)), "{before:?}");
            let s = fs::read_to_string(&p).unwrap();
            assert!(valid_id(&s), "{s:?}");
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o444
            );
            assert!(!d.path().join("etc/.machine-id.decant-init").exists());
            // The second boot keeps it.
            assert_eq!(machine_id(d.path()), Step::Present);
            assert_eq!(fs::read_to_string(&p).unwrap(), s);
        }
    }

    #[test]
    fn machine_id_present_symlinked_or_odd_is_left_alone() {
        let d = root();
        let p = d.path().join("etc/machine-id");
        fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(machine_id(d.path()), Step::Present);
        fs::remove_file(&p).unwrap();
        // A symlink out of the root must not be written through.
        let outside = d.path().join("outside");
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        assert!(matches!(machine_id(d.path()), Step::Skipped(w) if w.contains("symlink")));
        assert!(!outside.exists());
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(matches!(machine_id(d.path()), Step::Skipped(w) if w.contains("not a regular")));
        fs::remove_dir(&p).unwrap();
        fs::write(&p, vec![b'0'; 10_000]).unwrap();
        assert!(matches!(machine_id(d.path()), Step::Skipped(w) if w.contains("cap")));
        // No /etc: not a distribution root; nothing is created.
        let bare = tempfile::tempdir().unwrap();
        assert!(matches!(machine_id(bare.path()), Step::Skipped(_)));
        assert!(!bare.path().join("etc").exists());
    }

    #[test]
    fn read_only_root_is_logged_not_fatal() {
        // A read-only bind mount of the temp root: EROFS whatever our uid.
        let d = root();
        fs::create_dir_all(d.path().join("etc/ssh")).unwrap();
        fs::write(d.path().join("etc/ssh/sshd_config"), "").unwrap();
        fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        fs::copy("/usr/bin/ssh-keygen", d.path().join("usr/bin/ssh-keygen")).unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(d.path())
            .arg(mnt.path())
            .status()
            .expect("mount must be installed");
        assert!(
            st.success(),
            "mount --bind -o ro failed (the tests run as root)"
        );
        let m = machine_id(mnt.path());
        let k = keygen_command(mnt.path()).err();
        let _ = Command::new("umount").arg(mnt.path()).status();
        assert!(
            matches!(&m, Step::Skipped(w) if w.contains("read-only")),
            "{m:?}"
        );
        assert!(k.is_some_and(|w| w.contains("read-only")));
        assert!(!d.path().join("etc/machine-id").exists());
    }

    #[test]
    fn dbus_id_becomes_a_link_when_dbus_is_installed() {
        let d = root();
        assert_eq!(dbus_machine_id(d.path()), Step::Present);
        assert!(!d.path().join("var/lib/dbus").exists());
        fs::create_dir_all(d.path().join("var/lib/dbus")).unwrap();
        let p = d.path().join("var/lib/dbus/machine-id");
        assert!(matches!(dbus_machine_id(d.path()), Step::Done(_)));
        assert_eq!(fs::read_link(&p).unwrap(), Path::new("/etc/machine-id"));
        assert_eq!(dbus_machine_id(d.path()), Step::Present);
        fs::remove_file(&p).unwrap();
        fs::write(&p, "").unwrap();
        assert!(matches!(dbus_machine_id(d.path()), Step::Done(_)));
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        fs::remove_file(&p).unwrap();
        fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(dbus_machine_id(d.path()), Step::Present);
    }

    #[test]
    fn keygen_only_for_sshd_without_keys() {
        let d = root();
        assert!(keygen_command(d.path()).unwrap().is_none());
        let ssh = d.path().join("etc/ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::write(ssh.join("sshd_config"), "Port 22\n").unwrap();
        let e = keygen_command(d.path()).err().unwrap();
        assert!(e.contains("no ssh-keygen"), "{e}");
        fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        fs::copy("/usr/bin/ssh-keygen", d.path().join("usr/bin/ssh-keygen"))
            .expect("ssh-keygen must be installed (openssh-client)");
        let mut cmd = keygen_command(d.path()).unwrap().unwrap();
        assert_eq!(cmd.get_program(), d.path().join("usr/bin/ssh-keygen"));
        let st = cmd.status().unwrap();
        assert!(st.success());
        for t in ["rsa", "ecdsa", "ed25519"] {
            let k = ssh.join(format!("ssh_host_{t}_key"));
            assert!(k.is_file() && ssh.join(format!("ssh_host_{t}_key.pub")).is_file());
        }
        assert!(keygen_command(d.path()).unwrap().is_none());
    }

    #[test]
    fn keygen_for_an_sshd_binary_without_config() {
        let d = root();
        fs::create_dir_all(d.path().join("etc/ssh")).unwrap();
        fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        fs::write(d.path().join("usr/sbin/sshd"), "").unwrap();
        assert!(
            keygen_command(d.path()).unwrap().is_none(),
            "not executable"
        );
        fs::set_permissions(
            d.path().join("usr/sbin/sshd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(keygen_command(d.path()).is_err(), "no ssh-keygen");
    }
}

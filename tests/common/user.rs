//! Running the built decant as an ordinary user: the tests run as root (as CI does) and start
//! decant through `setpriv` as another uid, with a clean environment whose HOME (and so
//! XDG_DATA_HOME, the store) and XDG_RUNTIME_DIR lie in a temp dir that user owns. One place
//! for the rootless, subuid, security and Debian tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Run;

/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// A temp dir for one user: `home/` (HOME; XDG_DATA_HOME is `home/data`) and `run/`
/// (XDG_RUNTIME_DIR, mode 0700), both owned by the user; the dir itself is world-readable so
/// the user can reach them.
pub struct UserDirs {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
}

impl UserDirs {
    pub fn new(prefix: &str, uid: u32, gid: u32) -> UserDirs {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        for (d, mode) in [("home", 0o755), ("run", 0o700)] {
            let p = dir.path().join(d);
            std::fs::create_dir(&p).expect("mkdir");
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        UserDirs { dir, uid, gid }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The user's store (found through XDG_DATA_HOME, as a user's would be).
    pub fn store(&self) -> PathBuf {
        self.path().join("home/data/decant")
    }

    /// A readable copy of the example root filesystem in the dir, to import.
    pub fn example_copy(&self) -> PathBuf {
        let img = self.path().join("root.ext4");
        std::fs::copy(super::example().join("root.ext4"), &img).expect("copy root.ext4");
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        img
    }

    /// Runs decant as the user with XDG_RUNTIME_DIR set.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, true, &[])
    }

    /// Runs decant as the user, with or without XDG_RUNTIME_DIR (without it the state goes
    /// under the store) and with the variables `env` added.
    pub fn run_env(&self, args: &[&str], runtime_dir: bool, env: &[(&str, &str)]) -> Run {
        let home = self.path().join("home");
        let mut cmd = Command::new("setpriv");
        // First: env_clear also drops what was set on the command before it.
        cmd.env_clear();
        if runtime_dir {
            cmd.env("XDG_RUNTIME_DIR", self.path().join("run"));
        }
        cmd.envs(env.iter().copied());
        let o = cmd
            .args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--",
                env!("CARGO_BIN_EXE_decant"),
            ])
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .current_dir(&home)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("setpriv could not run ({e}); util-linux provides it"));
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

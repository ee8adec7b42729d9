//! Where services come from: runit directories, supervisord configs, systemd units (all read
//! under the image root, each source optional) and the helpers they share (users from the
//! image's /etc/passwd, command-line splitting, glob matching, bounded file reading).
//!
//! A configuration error never stops the init: the service it concerns becomes a "broken" spec
//! (listed FATAL with the reason, never started), one line naming file and line is logged, and
//! every other service starts.

pub mod my_init;
pub mod runit;
pub mod supervisord;
pub mod systemd;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::log;
use crate::service::{Spec, User};

/// Largest configuration file read (unit, INI, passwd, environment file).
pub const CONFIG_FILE_CAP: u64 = 1 << 20;
/// Most entries read from one configuration directory.
pub const DIR_ENTRY_CAP: usize = 4096;

/// A configuration problem: one line naming file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.msg)
        } else {
            write!(f, "{}: {}", self.file.display(), self.msg)
        }
    }
}

impl ConfigError {
    pub fn new(file: &Path, line: usize, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// Which systemd units are left out, by glob on the unit name. Patterns in `allow` win.
#[derive(Debug, Clone)]
pub struct Policy {
    pub skip: Vec<String>,
    pub allow: Vec<String>,
}

/// Units that make no sense in a container: consoles, device management, the host's network
/// setup, mounts and swap, systemd's own services, hardware and boot-time helpers.
pub const DEFAULT_SKIP: &[&str] = &[
    "getty@*",
    "serial-getty@*",
    "console-getty*",
    "container-getty@*",
    "autovt@*",
    "systemd-*",
    "udev*",
    "*udevd*",
    "networking.service",
    "ifup@*",
    "ifupdown*",
    "NetworkManager*",
    "wpa_supplicant*",
    "ModemManager*",
    "dhcpcd*",
    "*.mount",
    "*.automount",
    "*.swap",
    "*.device",
    "*.socket",
    "*.timer",
    "*.path",
    "*.slice",
    "*.scope",
    "e2scrub*",
    "fstrim*",
    "apparmor*",
    "kmod*",
    "keyboard-setup*",
    "console-setup*",
    "setvtrgb*",
    "hwclock*",
    "plymouth*",
    "lvm2*",
    "mdmonitor*",
    "multipathd*",
    "cloud-init*",
    "cloud-config*",
    "cloud-final*",
    "qemu-guest-agent*",
    "open-vm-tools*",
    "vboxadd*",
    "irqbalance*",
    "smartd*",
    "smartmontools*",
    "thermald*",
    "acpid*",
    "chrony*",
    "ntp*",
    "remote-fs*",
    "emergency*",
    "rescue*",
];

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            skip: DEFAULT_SKIP.iter().map(|s| s.to_string()).collect(),
            allow: Vec::new(),
        }
    }
}

impl Policy {
    pub fn skips(&self, unit: &str) -> bool {
        !self.allow.iter().any(|p| glob_match(p, unit))
            && self.skip.iter().any(|p| glob_match(p, unit))
    }
}

/// Shell-style glob with `*` and `?` (iterative, linear in practice, no recursion).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

/// Reads a small text file, refusing files over [`CONFIG_FILE_CAP`].
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::new(path, 0, e.to_string()))?;
    if meta.len() > CONFIG_FILE_CAP {
        return Err(ConfigError::new(
            path,
            0,
            format!(
                "{} bytes: larger than the {CONFIG_FILE_CAP} byte cap",
                meta.len()
            ),
        ));
    }
    let data = std::fs::read(path).map_err(|e| ConfigError::new(path, 0, e.to_string()))?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// Sorted entries of a directory (at most [`DIR_ENTRY_CAP`]); empty when it does not exist.
pub fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().take(DIR_ENTRY_CAP).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// A path inside the image: absolute paths are taken relative to `root`.
pub fn in_root(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// Looks a user (name or numeric uid) up in the image's /etc/passwd, with its groups from
/// /etc/group.
pub fn lookup_user(root: &Path, who: &str, group: Option<&str>) -> Result<User, String> {
    let passwd_path = in_root(root, "etc/passwd");
    let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
    let numeric = who.parse::<u32>().ok();
    let mut found = None;
    for line in passwd.lines().take(100_000) {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(uid), Some(gid)) = (f.first(), f.get(2), f.get(3)) else {
            continue;
        };
        let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
            continue;
        };
        if *name == who || numeric == Some(uid) {
            found = Some(User {
                name: name.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: f.get(5).unwrap_or(&"/").to_string(),
            });
            break;
        }
    }
    let mut user = match (found, numeric) {
        (Some(u), _) => u,
        (None, Some(uid)) => User {
            name: who.to_string(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: "/".into(),
        },
        (None, None) => {
            return Err(format!(
                "user '{who}' does not exist in {}",
                passwd_path.display()
            ))
        }
    };
    let group_text = std::fs::read_to_string(in_root(root, "etc/group")).unwrap_or_default();
    if let Some(g) = group {
        let gid = g.parse::<u32>().ok().or_else(|| {
            group_text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&g)).then(|| f.get(2).and_then(|x| x.parse().ok()))?
            })
        });
        match gid {
            Some(gid) => {
                user.gid = gid;
                user.groups = vec![gid];
            }
            None => {
                return Err(format!(
                    "group '{g}' does not exist in the image's /etc/group"
                ))
            }
        }
    }
    for line in group_text.lines().take(100_000) {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(gid), Some(members)) = (f.get(2), f.get(3)) else {
            continue;
        };
        if members.split(',').any(|m| m == user.name) {
            if let Ok(gid) = gid.parse::<u32>() {
                if !user.groups.contains(&gid) && user.groups.len() < 64 {
                    user.groups.push(gid);
                }
            }
        }
    }
    Ok(user)
}

/// POSIX-shell-like word splitting: single quotes, double quotes with backslash escapes,
/// backslash outside quotes. Fails on an unterminated quote.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Loads every source under `root`. Runit log pipes are created into `pipes`.
pub fn load(root: &Path, policy: &Policy, pipes: &mut Vec<(OwnedFd, OwnedFd)>) -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    runit::load(root, pipes, &mut specs, &mut errors);
    supervisord::load(root, &mut specs, &mut errors);
    systemd::load(root, policy, &mut specs, &mut errors);
    for e in &errors {
        log::warn(&e.to_string());
    }
    // Two sources naming the same service: the first wins (runit, supervisord, systemd).
    let mut seen = std::collections::HashSet::new();
    specs.retain(|s| {
        let fresh = seen.insert(s.name.clone());
        if !fresh {
            log::warn(&format!(
                "{}: service '{}' is defined twice; this one is ignored",
                s.origin.display(),
                s.name
            ));
        }
        fresh
    });
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("getty@*", "getty@tty1.service"));
        assert!(glob_match("*.mount", "home.mount"));
        assert!(!glob_match("*.mount", "home.mount.service"));
        assert!(glob_match("systemd-*", "systemd-journald.service"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("udev*", "ssh.service"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"/bin/sh -c 'echo "hi there"' a\ b "x\"y""#).unwrap(),
            vec!["/bin/sh", "-c", "echo \"hi there\"", "a b", "x\"y"]
        );
        assert!(split_words("echo 'open").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn policy_allow_overrides_skip() {
        let mut p = Policy::default();
        assert!(p.skips("getty@tty1.service"));
        assert!(!p.skips("ssh.service"));
        p.allow.push("getty@*".into());
        assert!(!p.skips("getty@tty1.service"));
    }

    #[test]
    fn users_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbad line\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "www:x:33:\nadm:x:4:www,other\n").unwrap();
        let u = lookup_user(d.path(), "www", None).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (33, 33, vec![33, 4]));
        assert_eq!(u.home, "/var/www");
        assert!(lookup_user(d.path(), "nobody", None)
            .unwrap_err()
            .contains("'nobody' does not exist"));
        assert_eq!(lookup_user(d.path(), "1234", None).unwrap().uid, 1234);
        assert_eq!(lookup_user(d.path(), "www", Some("adm")).unwrap().gid, 4);
        assert!(lookup_user(d.path(), "www", Some("nogroup")).is_err());
    }
}

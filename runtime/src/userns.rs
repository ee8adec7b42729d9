//! The rootless user namespace: which ids a plain user's containers get, and entering it.
//!
//! Like Podman: when /etc/subuid and /etc/subgid grant the user ranges and the setuid helpers
//! newuidmap/newgidmap exist, namespace id 0 is the user and 1..=N are the range, so an image's
//! files of other owners (www-data, _apt) keep them and `chown` works inside. Otherwise only
//! the user itself is mapped, as 0 (the kernel lets any user write that one line).
//!
//! A process cannot map itself through newuidmap once it has unshared (the setuid helper does
//! not run as root inside a namespace that maps no root), so `enter` forks a helper first: the
//! helper stays outside, waits until its parent has unshared, runs the two tools on the
//! parent's pid, and reports. The same mapping is used by the monitor (the container's rootfs
//! and processes), by the layer unpack (owners written into the range) and by `rm` (the
//! range's files are removable only from inside).
//!
//! /etc/subuid is read as hostile: at most `MAX_SUBID_BYTES`, malformed lines skipped, ranges
//! whose end overflows refused.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// At most this much of /etc/subuid, /etc/subgid or /etc/passwd is read.
pub const MAX_SUBID_BYTES: u64 = 1 << 20;
/// At most this much of a helper's error text is kept.
const MAX_MESSAGE: u64 = 4096;

/// A subordinate id range: host ids `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The ids of a rootless user namespace: 0 is `uid`/`gid` on the host; with `sub`, container
/// ids 1..=count are the ranges, mapped by `helpers` (newuidmap, newgidmap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub sub: Option<(SubRange, SubRange)>,
    helpers: Option<(PathBuf, PathBuf)>,
}

/// The first well-formed range `text` (an /etc/subuid-format file) grants the user `name` or
/// `uid`. Lines are `owner:start:count`; a malformed line, a zero count, or a range that would
/// overflow (or leave no container id for it: 1 + count must fit) is skipped.
pub fn parse_subid(text: &str, name: Option<&str>, uid: u32) -> Option<SubRange> {
    let uid_text = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let owner = f.next()?;
        let start: u32 = f.next()?.trim().parse().ok()?;
        let count: u32 = f.next()?.trim().parse().ok()?;
        if f.next().is_some() || count == 0 || owner.is_empty() {
            return None;
        }
        if owner != uid_text && Some(owner) != name {
            return None;
        }
        start.checked_add(count)?;
        count.checked_add(1)?;
        Some(SubRange { start, count })
    })
}

/// `path`, at most `MAX_SUBID_BYTES` of it, invalid UTF-8 replaced; `None` when unreadable.
pub(crate) fn read_bounded(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_SUBID_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The login name of `uid` in /etc/passwd.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let text = read_bounded(Path::new("/etc/passwd"))?;
    let uid = uid.to_string();
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()? == uid).then(|| name.to_string())
    })
}

pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl IdMap {
    /// The mapping for the current user, from /etc/subuid, /etc/subgid and the helpers found.
    pub fn current() -> IdMap {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let helpers = find_tool("newuidmap").zip(find_tool("newgidmap"));
        let sub = helpers.as_ref().and_then(|_| {
            let name = user_name(uid);
            let u = parse_subid(
                &read_bounded(Path::new("/etc/subuid"))?,
                name.as_deref(),
                uid,
            )?;
            let g = parse_subid(
                &read_bounded(Path::new("/etc/subgid"))?,
                name.as_deref(),
                uid,
            )?;
            Some((u, g))
        });
        IdMap {
            uid,
            gid,
            sub,
            helpers: if sub.is_some() { helpers } else { None },
        }
    }

    /// Names the mapping in the layer cache (`subid-<uid start>-<count>-<gid start>-<count>`);
    /// `None` for the single-id map, whose unpack is the plain rootless one.
    pub fn tag(&self) -> Option<String> {
        self.sub
            .map(|(u, g)| format!("subid-{}-{}-{}-{}", u.start, u.count, g.start, g.count))
    }

    /// The uid and gid maps as `container:host:size` lines (Podman's inspect wording).
    pub fn lines(&self) -> (Vec<String>, Vec<String>) {
        let one = |own: u32, r: Option<SubRange>| {
            let mut v = vec![format!("0:{own}:1")];
            if let Some(r) = r {
                v.push(format!("1:{}:{}", r.start, r.count));
            }
            v
        };
        (
            one(self.uid, self.sub.map(|s| s.0)),
            one(self.gid, self.sub.map(|s| s.1)),
        )
    }

    /// One line saying which mapping containers get, for inspect and debugging.
    pub fn describe(&self) -> String {
        match self.sub {
            Some((u, g)) => format!(
                "uid 0 is {}, 1..={} are {}..; gid 0 is {}, 1..={} are {}.. (/etc/subuid, /etc/subgid)",
                self.uid, u.count, u.start, self.gid, g.count, g.start
            ),
            None => format!(
                "only uid {} and gid {} are mapped, as 0 (no /etc/subuid and /etc/subgid ranges with newuidmap and newgidmap)",
                self.uid, self.gid
            ),
        }
    }

    /// Moves this process into a new user namespace (plus `extra` namespaces, e.g. mount)
    /// with this mapping; it is then root there. The process must be single-threaded
    /// (unshare of a user namespace demands it).
    pub fn enter(&self, extra: CloneFlags) -> Result<(), String> {
        let flags = CloneFlags::CLONE_NEWUSER | extra;
        let Some((newuid, newgid)) = &self.helpers else {
            nix::sched::unshare(flags).map_err(|e| self.refused(e))?;
            for (file, text) in [
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("0 {} 1\n", self.uid)),
                ("gid_map", format!("0 {} 1\n", self.gid)),
            ] {
                let p = format!("/proc/self/{file}");
                std::fs::write(&p, text).map_err(|e| format!("rootless: write {p}: {e}"))?;
            }
            return Ok(());
        };
        let (uids, gids) = self.lines();
        let args = |v: &[String]| -> Vec<String> {
            v.iter()
                .flat_map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
                .collect()
        };
        let (uid_args, gid_args) = (args(&uids), args(&gids));
        let me = std::process::id();
        let (go_r, go_w) = pipe()?;
        let (msg_r, msg_w) = pipe()?;
        // SAFETY: the caller is single-threaded, so the child is a full copy in which every
        // lock is free; the child ends in `_exit` and never returns into our frames.
        match unsafe { libc::fork() } {
            -1 => Err(format!(
                "rootless: fork the id-map helper: {}",
                std::io::Error::last_os_error()
            )),
            0 => {
                drop(go_w);
                drop(msg_r);
                let mut b = [0u8; 1];
                let code = match nix::unistd::read(&go_r, &mut b) {
                    Ok(1) => match run_helpers(me, newuid, &uid_args, newgid, &gid_args) {
                        Ok(()) => 0,
                        Err(m) => {
                            let _ = nix::unistd::write(msg_w.as_fd(), m.as_bytes());
                            1
                        }
                    },
                    // The parent could not unshare: nothing to map.
                    _ => 1,
                };
                // SAFETY: ends this forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            child => {
                drop(go_r);
                drop(msg_w);
                let unshared = nix::sched::unshare(flags);
                if unshared.is_ok() {
                    let _ = nix::unistd::write(go_w.as_fd(), b"g");
                }
                drop(go_w);
                let mut msg = String::new();
                let _ = std::fs::File::from(msg_r)
                    .take(MAX_MESSAGE)
                    .read_to_string(&mut msg);
                let mut st = 0;
                // SAFETY: waits for our own child; `st` is writable.
                unsafe { libc::waitpid(child, &mut st, 0) };
                unshared.map_err(|e| self.refused(e))?;
                if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
                    let msg = msg.trim().replace('\n', "; ");
                    return Err(if msg.is_empty() {
                        "rootless: the id-map helper died".to_string()
                    } else {
                        msg
                    });
                }
                Ok(())
            }
        }
    }

    fn refused(&self, e: nix::errno::Errno) -> String {
        format!(
            "rootless: the kernel refused a user namespace to uid {}: {e}",
            self.uid
        )
    }

    /// Runs `f` in a child process inside a new user namespace with this mapping (as its
    /// root): for what only the namespace can do, such as unpacking files owned by the range
    /// or removing them. Refused when this process has threads (the child of a fork must not
    /// allocate then). Returns `f`'s error text, one line.
    pub fn run_inside(&self, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        if !single_threaded() {
            return Err(
                "rootless: cannot enter the user namespace from a process with threads".into(),
            );
        }
        let (r, w) = pipe()?;
        // SAFETY: single-threaded (checked above): the child is a full copy; it ends in
        // `_exit`.
        match unsafe { libc::fork() } {
            -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                drop(r);
                let res = self.enter(CloneFlags::empty()).and_then(|()| f());
                let code = match res {
                    Ok(()) => 0,
                    Err(m) => {
                        let _ = nix::unistd::write(w.as_fd(), m.replace('\n', " ").as_bytes());
                        1
                    }
                };
                // SAFETY: ends this forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            child => {
                drop(w);
                let mut msg = String::new();
                let _ = std::fs::File::from(r)
                    .take(MAX_MESSAGE)
                    .read_to_string(&mut msg);
                let mut st = 0;
                // SAFETY: waits for our own child; `st` is writable.
                unsafe { libc::waitpid(child, &mut st, 0) };
                if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                    Ok(())
                } else if msg.trim().is_empty() {
                    Err("rootless: the user-namespace helper died".into())
                } else {
                    Err(msg.trim().to_string())
                }
            }
        }
    }
}

/// newuidmap then newgidmap on `pid`; their stderr, one line, on failure.
fn run_helpers(
    pid: u32,
    newuid: &Path,
    uid_args: &[String],
    newgid: &Path,
    gid_args: &[String],
) -> Result<(), String> {
    for (tool, args) in [(newuid, uid_args), (newgid, gid_args)] {
        let out = std::process::Command::new(tool)
            .arg(pid.to_string())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("rootless: run {}: {e}", tool.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "rootless: {}: {}",
                tool.display(),
                text.trim().replace('\n', "; ")
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Whether this process has one thread (`/proc/self/stat` field 20); unknown counts as not.
pub(crate) fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    rest.split_whitespace().nth(17) == Some("1")
}

/// Identity maps for a container's own user namespace inside ours: every id our namespace
/// has (from `/proc/self/uid_map` or `gid_map`: `inside outside count` lines), as itself.
/// At most 340 lines are taken (the kernel's own limit).
pub fn identity_maps(map_text: &str) -> Vec<(u32, u32)> {
    map_text
        .lines()
        .take(340)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let inside: u32 = f.next()?.parse().ok()?;
            let _outside: u32 = f.next()?.parse().ok()?;
            let count: u32 = f.next()?.parse().ok()?;
            (count > 0 && inside.checked_add(count - 1).is_some()).then_some((inside, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_are_parsed_hostile_safely() {
        let text = "bob:100000:65536\nalice:200000:65536\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 1001),
            Some(SubRange {
                start: 200000,
                count: 65536
            })
        );
        // By uid as well as by name.
        assert_eq!(
            parse_subid("1001:300000:10\n", Some("alice"), 1001).map(|r| r.start),
            Some(300000)
        );
        assert_eq!(parse_subid(text, Some("carol"), 7), None);
        for bad in [
            "alice:100000\n",
            "alice:x:5\n",
            "alice:100000:0\n",
            "alice:4294967295:2\n",
            "alice:1:4294967295\n",
            "alice:1:2:3\n",
            ":1:2\n",
            "alice:-1:5\n",
            "\u{0}\u{ff}alice::\n",
        ] {
            assert_eq!(parse_subid(bad, Some("alice"), 1001), None, "{bad:?}");
        }
        // A bad line does not hide a good one after it.
        assert_eq!(
            parse_subid("alice:x:1\nalice:5:6\n", Some("alice"), 1).map(|r| (r.start, r.count)),
            Some((5, 6))
        );
        let long = "x".repeat(1 << 20);
        assert_eq!(parse_subid(&long, Some("alice"), 1), None);
    }

    #[test]
    fn identity_maps_cover_our_ids() {
        assert_eq!(
            identity_maps("0 1000 1\n1 100000 65536\n"),
            vec![(0, 1), (1, 65536)]
        );
        assert_eq!(identity_maps("0 0 4294967295\n"), vec![(0, 4294967295)]);
        assert!(identity_maps("garbage\n0 1\n5 5 0\n").is_empty());
    }

    #[test]
    fn map_lines_and_tag() {
        let m = IdMap {
            uid: 1000,
            gid: 1000,
            sub: Some((
                SubRange {
                    start: 100000,
                    count: 65536,
                },
                SubRange {
                    start: 200000,
                    count: 100,
                },
            )),
            helpers: None,
        };
        assert_eq!(m.tag().as_deref(), Some("subid-100000-65536-200000-100"));
        let (u, g) = m.lines();
        assert_eq!(u, ["0:1000:1", "1:100000:65536"]);
        assert_eq!(g, ["0:1000:1", "1:200000:100"]);
        let single = IdMap { sub: None, ..m };
        assert_eq!(single.tag(), None);
        assert!(single.describe().contains("only uid 1000"));
    }
}

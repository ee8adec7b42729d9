//! File-access tracing for `decant strip --trace`: which files of an image a workload opened,
//! read or executed while its containers ran.
//!
//! How (chosen by experiment on kernel 6.18, root): ONE fanotify group (`FAN_CLASS_NOTIF`,
//! notification only, nothing is ever blocked) with a `FAN_MARK_FILESYSTEM` mark for
//! `FAN_OPEN | FAN_OPEN_EXEC` on the filesystem holding the layer-cache dirs, set before the
//! first container starts, so the init and every service it starts are seen. `FAN_ACCESS`
//! is left out: every read follows an open, and since no container process can hold a file
//! opened before the mark, it adds no path, only host-wide events (every read on the host's
//! filesystem, each with an fd opened for us) and so a higher risk of queue overflow. An
//! open through the container's overlay is an open of the real lower/upper file, and the
//! kernel reports it on that filesystem. The experiment showed two things the plan did not
//! expect, which decided the matching:
//! - the event's path (the `/proc/self/fd` link of the event fd) is the overlay's *user* path,
//!   relative to the container's root (`/readme`), not the host path under the layer cache, and
//!   a host process opening its own `/usr/bin/cat` gives the same kind of path; so paths alone
//!   cannot tell the container's opens from the host's;
//! - `fstat` of the event fd gives the real file's device and inode (overlay passes them through
//!   for non-directories when all its layers are on one filesystem, as the layer cache is).
//!
//! So the tracer indexes the candidate's lower dirs by (device, inode) before it starts, and an
//! event counts only when its inode is one of the image's files: exact, whatever the mount
//! namespace, and immune to the host's own activity on the same filesystem (other builds, other
//! containers). Files the workload created or modified live in the container's upper dir;
//! `walk_upper` adds those when a probe container is removed. No runtime change was needed.
//!
//! Bounds: the index holds at most `MAX_INDEXED` files, the touched set at most `MAX_TOUCHED`
//! paths (both said in the result when reached); the reader thread closes every event fd at
//! once (nix's `FanotifyEvent` owns it). A full kernel queue (16384 events, the default: an
//! unlimited queue is unbounded kernel memory) is reported as `overflow`, which makes the
//! trace incomplete; strip still verifies every proposal with the probes.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

/// Most files of the image indexed (a 430 MB Debian VM has about 12,400).
pub const MAX_INDEXED: usize = 4_000_000;
/// Most distinct touched paths kept.
pub const MAX_TOUCHED: usize = 1_000_000;
/// Deepest directory nesting walked.
pub const MAX_DEPTH: usize = 512;
/// How long the reader waits for events before it looks at the stop flag again.
const POLL_MS: u16 = 100;

/// Why tracing could not be set up. One line each.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--trace needs root (fanotify filesystem marks need CAP_SYS_ADMIN)")]
    NotRoot,
    #[error("fanotify_init: {0}")]
    Init(Errno),
    #[error("fanotify_mark on the filesystem of {path}: {err}")]
    Mark { path: String, err: Errno },
    #[error("{path}: {why}")]
    Walk { path: String, why: String },
    #[error("reading fanotify events: {0}")]
    Read(Errno),
    #[error("the trace reader thread panicked")]
    Thread,
}

/// The image's files by (device, inode): what an event's file is, as image paths (several for
/// hard links).
#[derive(Debug, Default)]
pub struct Index {
    by_inode: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Files left out because the cap was reached.
    pub capped: bool,
}

fn walk_err(p: &Path, e: impl std::fmt::Display) -> TraceError {
    TraceError::Walk {
        path: p.display().to_string(),
        why: e.to_string(),
    }
}

/// Calls `f(relative path, metadata)` for every entry under `root` (not following symlinks),
/// depth first, refusing nesting deeper than `MAX_DEPTH`.
fn walk(
    root: &Path,
    f: &mut dyn FnMut(Vec<u8>, &std::fs::Metadata) -> bool,
) -> Result<(), TraceError> {
    let mut stack: Vec<(PathBuf, Vec<u8>, usize)> = vec![(root.to_path_buf(), Vec::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(walk_err(
                &dir,
                format!("nested deeper than {MAX_DEPTH} directories"),
            ));
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| walk_err(&dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| walk_err(&dir, e))?;
            let md = ent
                .metadata()
                .map_err(|e| walk_err(&dir.join(ent.file_name()), e))?;
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(ent.file_name().as_bytes());
            if md.is_dir() {
                stack.push((ent.path(), p.clone(), depth + 1));
            }
            if !f(p, &md) {
                return Ok(());
            }
        }
    }
    Ok(())
}

impl Index {
    /// Indexes the regular files of `lower_dirs` (an overlay's layers, any order).
    pub fn of_layers(lower_dirs: &[PathBuf]) -> Result<Index, TraceError> {
        let mut ix = Index::default();
        let mut n = 0usize;
        for dir in lower_dirs {
            walk(dir, &mut |p, md| {
                if !md.is_file() {
                    return true;
                }
                if n >= MAX_INDEXED {
                    ix.capped = true;
                    return false;
                }
                n += 1;
                let paths = ix.by_inode.entry((md.dev(), md.ino())).or_default();
                if !paths.contains(&p) {
                    paths.push(p);
                }
                true
            })?;
        }
        Ok(ix)
    }

    /// Number of indexed inodes.
    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }

    /// The image paths of a file, by its device and inode.
    pub fn paths(&self, dev: u64, ino: u64) -> Option<&[Vec<u8>]> {
        self.by_inode.get(&(dev, ino)).map(Vec::as_slice)
    }
}

/// What a trace saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Image paths (relative, no leading `/`) the workload opened, read, executed or wrote.
    pub touched: BTreeSet<Vec<u8>>,
    /// Events read (host-wide: the mark covers the whole filesystem).
    pub events: u64,
    /// Events on a file of the image.
    pub matched: u64,
    /// Paths found in upper dirs (created, modified or deleted by the workload).
    pub upper: u64,
    /// The kernel queue overflowed: events were lost and the trace is incomplete.
    pub overflow: bool,
    /// A cap was reached (index or touched set): the trace is incomplete.
    pub capped: bool,
}

impl Seen {
    fn touch(&mut self, p: Vec<u8>) {
        if self.touched.len() >= MAX_TOUCHED && !self.touched.contains(&p) {
            self.capped = true;
            return;
        }
        self.touched.insert(p);
    }
}

/// A running trace: a fanotify group marked on the layers' filesystem and a thread draining it.
pub struct Tracer {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<Seen, TraceError>>>,
}

/// Reads every queued event, recording the image files among them; false once the queue is
/// empty.
fn drain(fan: &Fanotify, index: &Index, seen: &mut Seen) -> Result<bool, TraceError> {
    let events = match fan.read_events() {
        Ok(ev) => ev,
        Err(Errno::EAGAIN) => return Ok(false),
        Err(Errno::EINTR) => return Ok(true),
        Err(e) => return Err(TraceError::Read(e)),
    };
    if events.is_empty() {
        return Ok(false);
    }
    for ev in events {
        seen.events = seen.events.saturating_add(1);
        if !ev.check_version() {
            continue;
        }
        if ev.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
            seen.overflow = true;
        }
        let Some(fd) = ev.fd() else { continue };
        let Ok(st) = nix::sys::stat::fstat(fd.as_fd()) else {
            continue;
        };
        #[allow(clippy::useless_conversion)]
        let (dev, ino) = (u64::from(st.st_dev), u64::from(st.st_ino));
        if let Some(paths) = index.paths(dev, ino) {
            seen.matched = seen.matched.saturating_add(1);
            for p in paths {
                seen.touch(p.clone());
            }
        }
        // `ev` drops here and closes its fd.
    }
    Ok(true)
}

impl Tracer {
    /// Marks the filesystem of each of `mark` (the layer-cache dirs) and starts the reader.
    /// Call before the first container starts.
    pub fn start(index: Index, mark: &[PathBuf]) -> Result<Tracer, TraceError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(TraceError::NotRoot);
        }
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::from_bits_truncate(
                (OFlag::O_RDONLY | OFlag::O_LARGEFILE | OFlag::O_CLOEXEC).bits() as u32,
            ),
        )
        .map_err(|e| match e {
            Errno::EPERM => TraceError::NotRoot,
            e => TraceError::Init(e),
        })?;
        let mask = MaskFlags::FAN_OPEN | MaskFlags::FAN_OPEN_EXEC;
        for p in mark {
            fan.mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                mask,
                nix::fcntl::AT_FDCWD,
                Some(p.as_path()),
            )
            .map_err(|err| TraceError::Mark {
                path: p.display().to_string(),
                err,
            })?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let capped = index.capped;
        let reader = std::thread::Builder::new()
            .name("decant-trace".into())
            .spawn(move || {
                let mut seen = Seen {
                    capped,
                    ..Seen::default()
                };
                loop {
                    let stopping = flag.load(Ordering::Acquire);
                    while drain(&fan, &index, &mut seen)? {}
                    if stopping {
                        return Ok(seen);
                    }
                    let mut fds = [PollFd::new(fan.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(POLL_MS)) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(TraceError::Read(e)),
                    }
                }
                // `fan` drops with the thread: the group and its mark go.
            })
            .map_err(|e| TraceError::Walk {
                path: "decant-trace thread".into(),
                why: e.to_string(),
            })?;
        Ok(Tracer {
            stop,
            reader: Some(reader),
        })
    }

    /// Stops tracing after draining what is queued, and returns what was seen.
    pub fn finish(mut self) -> Result<Seen, TraceError> {
        self.stop.store(true, Ordering::Release);
        match self.reader.take() {
            Some(h) => h.join().map_err(|_| TraceError::Thread)?,
            None => Ok(Seen::default()),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// Adds every non-directory path of a container's upper dir (files it created or modified,
/// whiteouts of files it deleted) to `seen`: the workload touched them.
pub fn walk_upper(upper: &Path, seen: &mut Seen) -> Result<(), TraceError> {
    walk(upper, &mut |p, md| {
        if !md.is_dir() {
            seen.upper = seen.upper.saturating_add(1);
            seen.touch(p);
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn root() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    #[test]
    fn index_maps_inodes_to_every_name() {
        let t = tempfile::TempDir::new().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(a.join("usr/bin")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("usr/bin/x"), "x").unwrap();
        std::fs::hard_link(a.join("usr/bin/x"), a.join("usr/bin/y")).unwrap();
        std::fs::write(b.join("z"), "z").unwrap();
        std::os::unix::fs::symlink("x", a.join("usr/bin/l")).unwrap();
        let ix = Index::of_layers(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(ix.len(), 2);
        let md = std::fs::metadata(a.join("usr/bin/x")).unwrap();
        let mut names = ix.paths(md.dev(), md.ino()).unwrap().to_vec();
        names.sort();
        assert_eq!(names, vec![b"usr/bin/x".to_vec(), b"usr/bin/y".to_vec()]);
        let e = Index::of_layers(&[t.path().join("missing")]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn absurd_nesting_is_refused() {
        let t = tempfile::TempDir::new().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..=MAX_DEPTH + 1 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let e = Index::of_layers(&[t.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested deeper than 512"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn upper_walk_records_files_and_whiteouts() {
        let t = tempfile::TempDir::new().unwrap();
        std::fs::create_dir_all(t.path().join("var/log")).unwrap();
        std::fs::write(t.path().join("var/log/app.log"), "x").unwrap();
        let mut want = vec![b"var/log/app.log".to_vec()];
        if root() {
            // A deleted lower file: overlay's whiteout, a 0/0 character device.
            nix::sys::stat::mknod(
                &t.path().join("var/log/old.log"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                0,
            )
            .unwrap();
            want.push(b"var/log/old.log".to_vec());
        }
        let mut seen = Seen::default();
        walk_upper(t.path(), &mut seen).unwrap();
        assert_eq!(seen.touched.iter().cloned().collect::<Vec<_>>(), want);
        assert_eq!(seen.upper, want.len() as u64);
    }

    /// The experiment this file's design rests on, kept as a test: a read and an exec through
    /// an overlay in another mount namespace are seen as the lower files' image paths; an
    /// untouched file is not; a host file with the same relative name is not.
    #[test]
    fn overlay_opens_are_seen_as_image_paths() {
        if !root() {
            eprintln!("SKIPPED overlay_opens_are_seen_as_image_paths: needs root (fanotify)");
            assert!(matches!(
                Tracer::start(Index::default(), &[PathBuf::from("/")]),
                Err(TraceError::NotRoot)
            ));
            return;
        }
        let t = tempfile::TempDir::new_in("/var/tmp").unwrap();
        let b = t.path();
        for d in ["lower/usr/bin", "upper", "work", "merged"] {
            std::fs::create_dir_all(b.join(d)).unwrap();
        }
        std::fs::write(b.join("lower/readme"), "hi").unwrap();
        std::fs::write(b.join("lower/unread"), "hi").unwrap();
        std::fs::write(b.join("lower/usr/bin/run"), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            b.join("lower/usr/bin/run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let ix = Index::of_layers(&[b.join("lower")]).unwrap();
        let tr = Tracer::start(ix, &[b.join("lower")]).unwrap();
        let script = format!(
            "mount -t overlay overlay -o lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work {0}/merged && cat {0}/merged/readme >/dev/null && {0}/merged/usr/bin/run && echo x > {0}/merged/new && cat /etc/hostname >/dev/null",
            b.display()
        );
        let st = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .status()
            .expect("unshare (util-linux) must be installed");
        assert!(st.success());
        let mut seen = tr.finish().unwrap();
        walk_upper(&b.join("upper"), &mut seen).unwrap();
        let got: Vec<String> = seen
            .touched
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(got, vec!["new", "readme", "usr/bin/run"], "{seen:?}");
        assert!(seen.events >= seen.matched && seen.matched >= 2, "{seen:?}");
    }
}

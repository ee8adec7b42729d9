//! `run -t`: the container's process gets a pseudo-terminal. The OCI runtime of this crate
//! makes the pty inside the container (so the process sees `/dev/pts/N` of its own devpts) and
//! sends the master over a console socket, as runc does; the monitor receives it, writes what
//! the process prints to the log, and feeds it the user's input (`-i`) until the process
//! exits. The user's side (raw mode, window size) is read and set here for the CLI, which has
//! no terminal code of its own. The pty follows the user's terminal's size by polling it
//! (no SIGWINCH handler in a CLI that is mostly blocked in reads).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{io_err, EngineError};

/// The start of the console socket's file name.
pub const CONSOLE_SOCKET: &str = "console";
/// How long the monitor waits for the runtime to send the pty master.
const MASTER_WAIT: Duration = Duration::from_secs(10);

/// The size (rows, columns) of the terminal on `fd`; `None` when it is not a terminal.
pub fn terminal_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; all zeroes is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass, which lives for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The user's terminal in raw mode while this lives (keys go to the container's pty as they
/// are typed; its line discipline echoes them); restored on drop.
pub struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode on `fd` when it is a terminal; `None` (nothing changed) otherwise.
    pub fn enable(fd: BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let fd = fd.try_clone_to_owned().ok()?;
        let saved = tcgetattr(&fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// The spec's console size for a pty of `rows` x `cols`.
pub(crate) fn console_box(rows: u16, cols: u16) -> Result<oci_spec::runtime::Box, EngineError> {
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(rows))
        .width(u64::from(cols))
        .build()
        .map_err(|e| EngineError::Invalid(format!("console size {rows}x{cols}: {e}")))
}

/// A listening console socket for container `id` in the runtime's state directory `root`
/// (a socket path must fit in 108 bytes, which a store path plus a 64-digit id may not).
pub(crate) fn console_listener(
    root: &Path,
    id: &str,
) -> Result<(UnixListener, std::path::PathBuf), EngineError> {
    std::fs::create_dir_all(root).map_err(io_err(root, "create"))?;
    let path = root.join(format!(
        "{}-{}.sock",
        CONSOLE_SOCKET,
        id.get(..16).unwrap_or(id)
    ));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(io_err(&path, "bind"))?;
    l.set_nonblocking(true)
        .map_err(io_err(&path, "set non-blocking"))?;
    Ok((l, path))
}

/// Accepts the runtime's connection on `l` and receives the pty master it sends.
pub(crate) fn receive_master(l: &UnixListener, path: &Path) -> Result<OwnedFd, EngineError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::FromRawFd;
    let bad = |why: String| EngineError::Start {
        code: 125,
        message: format!("{}: console socket: {why}", path.display()),
    };
    let deadline = Instant::now() + MASTER_WAIT;
    let stream = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(bad("the runtime never connected".into()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(bad(format!("accept: {e}"))),
        }
    };
    stream
        .set_read_timeout(Some(MASTER_WAIT))
        .map_err(|e| bad(format!("set a timeout: {e}")))?;
    stream
        .set_nonblocking(false)
        .map_err(|e| bad(format!("set blocking: {e}")))?;
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| bad(format!("receive the pty master: {e}")))?;
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| bad(format!("control message: {e}")))?
    {
        if let ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: SCM_RIGHTS just installed these descriptors in this process; nothing else
        // owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.len() != 1 {
        return Err(bad(format!("{} descriptors instead of one", owned.len())));
    }
    owned.pop().ok_or_else(|| bad("no descriptor".into()))
}

/// Copies `input` into the pty `master` until `input` ends or `stop` becomes readable
/// (the monitor closes its other end when the container's process exits). Run on a thread.
pub(crate) fn relay_input(input: OwnedFd, master: OwnedFd, stop: OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        let mut pfds = [
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut pfds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |p: &PollFd| !p.revents().unwrap_or(PollFlags::empty()).is_empty();
        if pfds.get(1).is_some_and(ready) {
            return;
        }
        if !pfds.first().is_some_and(ready) {
            continue;
        }
        let n = match nix::unistd::read(&input, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => return,
        };
        let mut rest = buf.get(..n).unwrap_or_default();
        while !rest.is_empty() {
            match nix::unistd::write(&master, rest) {
                Ok(w) => rest = rest.get(w..).unwrap_or_default(),
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(_) => return,
            }
        }
    }
}

/// `run -t` on the caller's side, on a thread of its own: once container `id` runs, keeps the
/// size of its pty (the monitor holds the master; the size can be set from the slave too,
/// which we reach as the container's fd 0) equal to the terminal `size_of`, until the
/// container stops. A hostile container may have put anything on its fd 0: it is opened
/// without blocking and used only if it is a pseudo-terminal slave.
pub fn follow_size(engine: super::Engine, id: String, size_of: OwnedFd) {
    std::thread::spawn(move || {
        let mut size = terminal_size(size_of.as_fd());
        loop {
            std::thread::sleep(SIZE_POLL);
            let pid = match engine.load_raw(&id) {
                Ok(c) if c.status == super::Status::Running => c.pid,
                Ok(c) if c.is_live() => continue,
                _ => return,
            };
            let now = terminal_size(size_of.as_fd());
            if now.is_none() || now == size {
                continue;
            }
            // Opened only for the change: a slave held open here would keep the monitor
            // from ever seeing the pty's end.
            if let (Some(slave), Some((rows, cols))) = (open_pty_slave(pid), now) {
                set_size(slave.as_fd(), rows, cols);
                size = now;
            }
        }
    });
}

/// The container process `pid`'s fd 0 when it is a pty slave (major 136-143).
fn open_pty_slave(pid: i32) -> Option<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/0"))
        .ok()?;
    let md = f.metadata().ok()?;
    let major = libc::major(md.rdev());
    (md.file_type().is_char_device() && (136..=143).contains(&major)).then(|| f.into())
}

fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a pointer valid for the call.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// How often `copy_terminal` looks at the terminal's size (polling needs no signal handler).
const SIZE_POLL: Duration = Duration::from_millis(200);

/// `exec -t` on the caller's side: copies the pty `master` to `out` and `input` (if any) to
/// the master until the process closes the pty; the pty follows the size of the terminal
/// `size_of`, if it is one.
pub fn copy_terminal(
    master: &OwnedFd,
    input: Option<BorrowedFd<'_>>,
    out: &mut dyn std::io::Write,
    size_of: Option<BorrowedFd<'_>>,
) {
    let mut buf = [0u8; 4096];
    let mut input = input;
    let mut size = size_of.and_then(terminal_size);
    loop {
        let mut pfds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = input {
            pfds.push(PollFd::new(i, PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(SIZE_POLL).unwrap_or(PollTimeout::NONE);
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready = |i: usize| {
            pfds.get(i)
                .and_then(|p| p.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (m_ready, i_ready) = (ready(0), ready(1));
        drop(pfds);
        if let Some(fd) = size_of {
            let now = terminal_size(fd);
            if now.is_some() && now != size {
                size = now;
                if let Some((rows, cols)) = now {
                    set_size(master.as_fd(), rows, cols);
                }
            }
        }
        if m_ready {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(Errno::EIO) => return,
                Ok(n) => {
                    let _ = out.write_all(buf.get(..n).unwrap_or_default());
                    let _ = out.flush();
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(_) => return,
            }
        }
        if let (true, Some(i)) = (i_ready, input) {
            match nix::unistd::read(i, &mut buf) {
                Ok(0) => input = None,
                Ok(n) => {
                    let mut rest = buf.get(..n).unwrap_or_default();
                    while !rest.is_empty() {
                        match nix::unistd::write(master, rest) {
                            Ok(w) => rest = rest.get(w..).unwrap_or_default(),
                            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                            Err(_) => return,
                        }
                    }
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(_) => input = None,
            }
        }
    }
}

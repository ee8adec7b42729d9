//! The PID 1 core: blocks the signals it handles and reads them from a signalfd (so SIGCHLD
//! wakes the loop at once: no polling), reaps every child including orphans with
//! `waitpid(-1, WNOHANG)`, forwards signals to the services' process groups, and runs the event
//! loop that drives services, the control socket, sd_notify sockets and output relays.
//!
//! When it is not PID 1 it makes itself a child subreaper, so orphans still come to it (this is
//! how the tests run it without a pid namespace).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::log::{self, Relay};
use crate::service::{Ctx, Exit, Service, Source};
use crate::shutdown::Shutdown;
use crate::{control, Options};

/// The signals PID 1 takes: SIGCHLD for reaping, the rest to act on or forward.
pub const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Blocks the handled signals and returns a signalfd for them. Blocked signals are delivered to
/// PID 1 of a namespace (only signals with default disposition and no handler are dropped).
pub fn signal_fd() -> std::io::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Makes this process the reaper of its orphaned descendants when it is not PID 1.
pub fn become_subreaper() {
    if std::process::id() != 1 {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no
        // memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    }
}

/// Reaps every child that has exited. Returns the (pid, exit) pairs and whether any child is
/// left at all (false after ECHILD).
pub fn reap_all(out: &mut Vec<(i32, Exit)>) -> bool {
    // Bounded: each round removes one zombie; the cap only guards against a kernel surprise.
    for _ in 0..1_000_000 {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(ws) => {
                if let Some(pe) = Exit::from_wait(ws) {
                    out.push(pe);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// The init: services, sockets and the shutdown in progress.
pub struct Init {
    pub opts: Options,
    pub services: Vec<Service>,
    pub sigfd: SignalFd,
    pub control: Option<UnixListener>,
    pub relays: Vec<Relay>,
    pub pipes: Vec<(OwnedFd, OwnedFd)>,
    pub env: Vec<(String, String)>,
    pub main: Option<usize>,
    pub main_exit: Option<Exit>,
    pub shutdown: Option<Shutdown>,
    pub children_left: bool,
    pub run_dir: PathBuf,
    pub notify_dir: PathBuf,
    /// Signals read while a startup script ran, handled when the loop starts.
    pub deferred: Vec<Signal>,
}

impl Init {
    /// Hands out what a service needs to spawn, splitting the borrows of `self`.
    pub fn with_service<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Service, &mut Ctx) -> R,
    ) -> Option<R> {
        let foreground = self.main == Some(i);
        let svc = self.services.get_mut(i)?;
        let mut ctx = Ctx {
            env: &self.env,
            relays: &mut self.relays,
            pipes: &self.pipes,
            run_dir: &self.run_dir,
            notify_dir: &self.notify_dir,
            foreground,
        };
        Some(f(svc, &mut ctx))
    }

    fn deps_ok(&self, i: usize) -> bool {
        let Some(svc) = self.services.get(i) else {
            return false;
        };
        svc.spec.after.iter().all(|dep| {
            self.services
                .iter()
                .filter(|s| &s.spec.name == dep)
                .all(|s| s.settled())
        })
    }

    /// Services in start order: priority ascending, then definition order.
    fn start_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.services.len()).collect();
        idx.sort_by_key(|&i| self.services.get(i).map_or(0, |s| s.spec.priority));
        idx
    }

    fn tick(&mut self, now: Instant) {
        for i in self.start_order() {
            let ok = self.deps_ok(i);
            self.with_service(i, |s, ctx| s.tick(now, ok, ctx));
        }
    }

    /// Hands reaped processes to their services (or logs them as unknown).
    pub fn dispatch_exits(&mut self, exits: Vec<(i32, Exit)>, now: Instant) {
        for (pid, exit) in exits {
            let mut matched = false;
            for i in 0..self.services.len() {
                if self
                    .with_service(i, |s, ctx| s.on_exit(pid, exit, now, ctx))
                    .unwrap_or(false)
                {
                    matched = true;
                    if self.main == Some(i) && self.main_exit.is_none() {
                        if let Some(s) = self.services.get(i) {
                            if s.pid.is_none() {
                                self.main_exit = Some(exit);
                            }
                        }
                    }
                    break;
                }
            }
            if !matched {
                log::info(&format!("reaped unknown pid {pid} ({})", exit.describe()));
            }
        }
    }

    fn on_signal(&mut self, sig: Signal, now: Instant) {
        match sig {
            Signal::SIGCHLD => {}
            _ if self.main.is_some() => {
                // The tini case: everything goes to the main command; its exit ends the init.
                if let Some(s) = self.main.and_then(|m| self.services.get(m)) {
                    s.forward(sig);
                }
            }
            Signal::SIGTERM | Signal::SIGINT => {
                if self.shutdown.is_none() {
                    log::info(&format!("received {}, shutting down", sig.as_str()));
                    self.begin_shutdown(now);
                }
            }
            _ => {
                for s in &self.services {
                    s.forward(sig);
                }
            }
        }
    }

    /// Reads pending signals without acting on them (while a my_init script runs).
    pub fn drain_signals_deferred(&mut self) {
        for _ in 0..1024 {
            match self.sigfd.read_signal() {
                Ok(Some(si)) => {
                    if let Ok(sig) = Signal::try_from(si.ssi_signo as i32) {
                        if sig != Signal::SIGCHLD && self.deferred.len() < 64 {
                            self.deferred.push(sig);
                        }
                    }
                }
                _ => break,
            }
        }
    }

    pub fn begin_shutdown(&mut self, now: Instant) {
        for s in &mut self.services {
            s.want_up = false;
        }
        let sd = Shutdown::new(self, now);
        self.shutdown = Some(sd);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.services.iter().filter_map(|s| s.deadline()).min();
        if let Some(sd) = &self.shutdown {
            if let Some(t) = sd.deadline() {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        }
        d
    }

    /// Runs until shutdown completes; returns the exit code.
    pub fn run(&mut self) -> i32 {
        let mut exits = Vec::new();
        for sig in std::mem::take(&mut self.deferred) {
            self.on_signal(sig, Instant::now());
        }
        let mut trimmed = false;
        loop {
            let now = Instant::now();
            if self.main_exit.is_some() && self.shutdown.is_none() {
                self.begin_shutdown(now);
            }
            self.tick(now);
            if !trimmed {
                // Start-up code (configuration parsing, first spawns) is done with.
                crate::memory::release_text();
                trimmed = true;
            }
            if let Some(mut sd) = self.shutdown.take() {
                let done = sd.step(self, now);
                self.shutdown = Some(sd);
                if done {
                    return self.main_exit.map_or(0, |e| e.shell_code());
                }
            }
            let timeout = match self.next_deadline() {
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::from(60_000u16),
            };
            self.wait_events(timeout, &mut exits);
            if !exits.is_empty() {
                let batch = std::mem::take(&mut exits);
                self.dispatch_exits(batch, Instant::now());
            }
        }
    }

    /// One poll round: signals, control clients, notify sockets, relays.
    fn wait_events(&mut self, timeout: PollTimeout, exits: &mut Vec<(i32, Exit)>) {
        let sig_raw = self.sigfd.as_fd().as_raw_fd();
        let ctl_raw = self.control.as_ref().map(|l| l.as_raw_fd());
        let notify_raw: Vec<(usize, i32)> = self
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.notify.as_ref().map(|n| (i, n.as_raw_fd())))
            .collect();
        let relay_raw: Vec<i32> = self.relays.iter().map(|r| r.raw_fd()).collect();
        let mut raws = vec![sig_raw];
        raws.extend(ctl_raw);
        raws.extend(notify_raw.iter().map(|(_, fd)| *fd));
        raws.extend(relay_raw.iter().copied());
        let revents: Vec<bool> = {
            // SAFETY: every raw fd above belongs to an object owned by `self` that lives across
            // this block; nothing closes them while the borrowed fds exist.
            let borrowed: Vec<BorrowedFd> = raws
                .iter()
                .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
                .collect();
            let mut fds: Vec<PollFd> = borrowed
                .iter()
                .map(|b| PollFd::new(*b, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                Err(_) => vec![false; raws.len()],
            }
        };
        let now = Instant::now();
        let mut k = 0usize;
        let mut next = || {
            let v = revents.get(k).copied().unwrap_or(false);
            k += 1;
            v
        };
        if next() {
            let mut sigs = Vec::new();
            for _ in 0..1024 {
                match self.sigfd.read_signal() {
                    Ok(Some(si)) => sigs.push(si.ssi_signo as i32),
                    _ => break,
                }
            }
            self.children_left = reap_all(exits);
            for s in sigs {
                if let Ok(sig) = Signal::try_from(s) {
                    self.on_signal(sig, now);
                }
            }
        }
        if ctl_raw.is_some() && next() {
            control::serve_one(self, now);
        }
        for (i, _) in &notify_raw {
            if next() {
                self.with_service(*i, |s, ctx| s.read_notify(ctx));
            }
        }
        let mut dead = Vec::new();
        for (j, _) in relay_raw.iter().enumerate() {
            if next() {
                if let Some(r) = self.relays.get_mut(j) {
                    if !r.pump() {
                        r.finish();
                        dead.push(j);
                    }
                }
            }
        }
        for j in dead.into_iter().rev() {
            if j < self.relays.len() {
                self.relays.remove(j);
            }
        }
    }

    /// True when the service list holds the single main command (the tini case).
    pub fn is_tini(&self) -> bool {
        self.services.len() == 1
            && self
                .services
                .first()
                .is_some_and(|s| s.spec.source == Source::Main)
    }
}

/// Unblocks signals again (for a process image that is not the init, e.g. after a failed setup).
pub fn unblock_all() {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}

/// Waits for a signal on the signalfd, at most `d`.
pub fn wait_signal(fd: BorrowedFd, d: Duration) {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = d.as_millis().min(60_000) as i32;
    let _ = poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    );
}

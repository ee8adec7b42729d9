//! The way down: my_init's pre-shutdown scripts, services stopped in reverse start order (all
//! services of one rank at once, each with its own stop signal and stopwait), post-shutdown
//! scripts, then SIGTERM to every process left, a grace period that ends as soon as nothing is
//! left, SIGKILL, exit.
//!
//! As PID 1 of a namespace "every process" is `kill(-1)`; as a subreaper it is every descendant
//! found in /proc (kill(-1) there would hit the whole machine).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::log;
use crate::pid1::{reap_all, Init};
use crate::service::signal_proc;
use crate::sources::my_init;

/// Most processes read from /proc when looking for descendants.
const PROC_SCAN_CAP: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Services,
    TermAll,
    Waiting,
    Killed,
}

pub struct Shutdown {
    ranks: Vec<i32>,
    current: usize,
    rank_deadline: Option<Instant>,
    phase: Phase,
    deadline: Option<Instant>,
}

impl Shutdown {
    pub fn new(init: &mut Init, _now: Instant) -> Shutdown {
        let root = init.opts.root.clone();
        my_init::run_dir_scripts(init, &root.join("etc/my_init.pre_shutdown.d"));
        let mut ranks: Vec<i32> = init.services.iter().map(|s| s.spec.priority).collect();
        ranks.sort_unstable_by(|a, b| b.cmp(a));
        ranks.dedup();
        Shutdown {
            ranks,
            current: 0,
            rank_deadline: None,
            phase: Phase::Services,
            deadline: None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match (self.rank_deadline, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances the shutdown; true when the init may exit.
    pub fn step(&mut self, init: &mut Init, now: Instant) -> bool {
        if self.phase == Phase::Services {
            loop {
                let Some(&rank) = self.ranks.get(self.current) else {
                    let root = init.opts.root.clone();
                    my_init::run_dir_scripts(init, &root.join("etc/my_init.post_shutdown.d"));
                    self.phase = Phase::TermAll;
                    break;
                };
                let members: Vec<usize> = (0..init.services.len())
                    .filter(|&i| {
                        init.services
                            .get(i)
                            .is_some_and(|s| s.spec.priority == rank)
                    })
                    .collect();
                if self.rank_deadline.is_none() {
                    let mut wait = Duration::ZERO;
                    for &i in &members {
                        init.with_service(i, |s, ctx| {
                            wait = wait.max(s.spec.stopwait);
                            s.stop(now, ctx);
                        });
                    }
                    self.rank_deadline = Some(now + wait + Duration::from_secs(1));
                }
                let busy: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&i| init.services.get(i).is_some_and(|s| s.has_process()))
                    .collect();
                if busy.is_empty() {
                    self.current += 1;
                    self.rank_deadline = None;
                    continue;
                }
                if self.rank_deadline.is_some_and(|d| now >= d) {
                    // Stop helpers or finish scripts that outlived every stop timeout.
                    for &i in &busy {
                        if let Some(s) = init.services.get(i) {
                            for p in s.pid.iter().chain(s.helper.as_ref().map(|(p, _)| p)) {
                                signal_proc(*p, Signal::SIGKILL, true);
                            }
                        }
                    }
                    self.current += 1;
                    self.rank_deadline = None;
                    continue;
                }
                return false;
            }
        }
        let mut exits = Vec::new();
        let left = reap_all(&mut exits);
        for (pid, e) in exits {
            log::info(&format!("reaped unknown pid {pid} ({})", e.describe()));
        }
        match self.phase {
            Phase::Services => false,
            Phase::TermAll => {
                if !left {
                    return true;
                }
                kill_everything(Signal::SIGTERM);
                self.deadline = Some(now + init.opts.grace);
                self.phase = Phase::Waiting;
                false
            }
            Phase::Waiting => {
                if !left {
                    return true;
                }
                if self.deadline.is_some_and(|d| now >= d) {
                    log::warn("grace period over: sending SIGKILL to every remaining process");
                    kill_everything(Signal::SIGKILL);
                    self.deadline = Some(now + Duration::from_secs(2));
                    self.phase = Phase::Killed;
                }
                false
            }
            Phase::Killed => !left || self.deadline.is_some_and(|d| now >= d),
        }
    }
}

/// Signals every other process of the namespace (PID 1) or every descendant (subreaper).
pub fn kill_everything(sig: Signal) {
    if std::process::id() == 1 {
        let _ = kill(Pid::from_raw(-1), sig);
        return;
    }
    for pid in descendants(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// The pids below `root` in the process tree, from /proc/*/stat.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for ent in rd.flatten().take(PROC_SCAN_CAP) {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = proc_stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if out.len() >= PROC_SCAN_CAP {
            break;
        }
        if let Some(kids) = children.remove(&p) {
            for k in kids {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// (ppid, state letter) of a process from /proc/PID/stat; the command name may hold spaces and
/// parentheses, so fields are counted after the last ')'.
pub fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state))
}

//! Shared helpers of the decant-init integration tests: run the built binary as a child (it
//! makes itself a subreaper) or as PID 1 of a new pid namespace, collect its output, and kill
//! it and every descendant when the test ends, whatever happens.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_decant-init");
pub const BUSYBOX: &str = "/bin/busybox";

/// Fails the test (never skips) when a tool the fixtures need is missing.
pub fn need(tool: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install it (Debian: busybox-static, util-linux, python3)"
    );
}

/// A TempDir image root.
pub fn root() -> tempfile::TempDir {
    need(BUSYBOX);
    tempfile::tempdir().expect("tempdir")
}

/// Writes a file (creating parents), optionally executable.
pub fn write(path: &Path, text: &str, exec: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    if exec {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A running decant-init with its stdout+stderr captured.
pub struct Running {
    pub child: Child,
    pub out: Arc<Mutex<String>>,
    pub pid: i32,
}

pub fn start_with(cmd: &mut Command) -> Running {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn decant-init");
    let out = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let pid = child.id() as i32;
    Running { child, out, pid }
}

/// decant-init with `--root ROOT --socket ROOT/ctl.sock --grace 1` and extra arguments.
pub fn start(root: &Path, extra: &[&str]) -> Running {
    let mut c = Command::new(BIN);
    c.arg("--root")
        .arg(root)
        .arg("--socket")
        .arg(root.join("ctl.sock"))
        .arg("--grace")
        .arg("1")
        .args(extra);
    start_with(&mut c)
}

impl Running {
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the output satisfies `pred`; panics with the output after `timeout`.
    pub fn wait_output(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + timeout;
        loop {
            let o = self.output();
            if pred(&o) {
                return o;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting; output so far:\n{o}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_output(timeout, |o| o.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our child's pid.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// Waits for exit (at most `timeout`) and returns the exit code (128+signal if killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                std::thread::sleep(Duration::from_millis(50));
                return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            assert!(
                Instant::now() < until,
                "decant-init did not exit in {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn ctl(&self, root: &Path, args: &[&str]) -> (i32, String) {
        let o = Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(root.join("ctl.sock"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// Waits until the control socket answers.
    pub fn wait_socket(&self, root: &Path) {
        let until = Instant::now() + Duration::from_secs(5);
        while !root.join("ctl.sock").exists() {
            assert!(
                Instant::now() < until,
                "no control socket; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Freeze the init first so it cannot restart a service we are about to kill.
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGSTOP);
        }
        for p in descendants(self.pid) {
            // SAFETY: kill(2) on processes below our own child.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (ppid, state) from /proc/PID/stat.
pub fn stat(pid: i32) -> Option<(i32, char, u64)> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &t[t.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    // utime, stime, cutime, cstime are fields 14..17 (1-based), i.e. 11..14 after ')'.
    let ticks: u64 = (11..=14)
        .filter_map(|i| f.get(i)?.parse::<u64>().ok())
        .sum();
    Some((ppid, state, ticks))
}

/// Every process below `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if let Some((ppid, _, _)) = stat(pid) {
                kids.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for k in kids.remove(&p).unwrap_or_default() {
            out.push(k);
            todo.push(k);
        }
    }
    out
}

pub fn zombies_below(pid: i32) -> usize {
    descendants(pid)
        .into_iter()
        .filter(|p| stat(*p).is_some_and(|s| s.1 == 'Z'))
        .count()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

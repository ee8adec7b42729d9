//! Log output of decant-init: its own state lines in supervisord's format, and the relay that
//! copies each service's stdout/stderr to the container's stdout with the service name in front.
//!
//! Lines are written with one `write` each so that lines of the init and of the services do not
//! interleave mid-line. Timestamps are UTC, computed here from the Unix time (no time crate: the
//! static binary must stay small).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest partial line a relay holds before it writes it out anyway.
pub const RELAY_LINE_CAP: usize = 4096;

/// `YYYY-MM-DD HH:MM:SS,mmm` in UTC, supervisord's log timestamp.
pub fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02} {:02}:{:02}:{:02},{ms:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Silences the init's own state lines (the tini case prints nothing of its own).
pub fn set_quiet(q: bool) {
    QUIET.store(q, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

fn write_line(line: &[u8]) {
    // One write per line; a broken stdout must not take PID 1 down, so errors are dropped.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line);
    let _ = out.flush();
}

/// A state line of the init itself, e.g. `2024-01-01 10:00:00,000 INFO spawned: 'x' with pid 3`.
pub fn info(msg: &str) {
    if quiet() {
        return;
    }
    let line = format!("{} INFO {msg}\n", timestamp(SystemTime::now()));
    write_line(line.as_bytes());
}

/// A warning line (bad configuration, failed spawn).
pub fn warn(msg: &str) {
    if quiet() {
        eprintln!("decant-init: {msg}");
        return;
    }
    let line = format!("{} WARN {msg}\n", timestamp(SystemTime::now()));
    write_line(line.as_bytes());
}

/// Copies one service stream to stdout, line by line, with `name | ` in front.
pub struct Relay {
    pub fd: OwnedFd,
    prefix: String,
    buf: Vec<u8>,
}

impl Relay {
    pub fn new(fd: OwnedFd, name: &str) -> Relay {
        Relay {
            fd,
            prefix: format!("{name} | "),
            buf: Vec::new(),
        }
    }

    /// Reads what is available. Returns false at end of file or on a read error (the relay is
    /// then done and should be dropped after `finish`).
    pub fn pump(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match nix::unistd::read(&self.fd, &mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                let data = chunk.get(..n).unwrap_or_default();
                self.buf.extend_from_slice(data);
                self.flush_lines(false);
                true
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => true,
            Err(_) => false,
        }
    }

    /// Writes out whatever partial line is left (at end of file).
    pub fn finish(&mut self) {
        self.flush_lines(true);
    }

    fn flush_lines(&mut self, all: bool) {
        let mut out = Vec::new();
        loop {
            let cut = match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.buf.len() >= RELAY_LINE_CAP || (all && !self.buf.is_empty()) => {
                    self.buf.len().min(RELAY_LINE_CAP)
                }
                None => break,
            };
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend(self.buf.drain(..cut));
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
        }
        if !out.is_empty() {
            write_line(&out);
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14 22:13:20,123");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00,000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }
}

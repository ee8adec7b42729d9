//! Restart policies (`--restart`) and the container init (`--init`).
//!
//! The policy is applied by the monitor (see `monitor::run`), which is the only process alive
//! when the container exits. Whether the user stopped the container is a separate mark file in
//! the container's directory rather than a field of the record: the monitor rewrites the record
//! while it runs, and a read-modify-write by `stop` could be lost under it, whereas creating a
//! file is atomic and never overwritten.
//!
//! `--init` runs the supervisor crate's `decant-init -- CMD` as PID 1. It is bind-mounted from
//! the host into every image, so it must be a static binary; a dynamic one is refused here,
//! before the container is made, rather than failing inside with "no such file" from a missing
//! loader.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{io_err, EngineError};

/// The first back-off delay before a restart, doubled after each one (as Docker).
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The back-off never grows beyond this (as Docker).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off to its start (as Docker).
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How often the monitor looks for the stop mark while it waits to restart.
const MARK_POLL: Duration = Duration::from_millis(20);
/// The file in a container's directory saying that the user stopped it.
pub const STOP_MARK: &str = "stopped-by-user";
/// Where `--init`'s binary appears inside the container (as Podman's catatonit).
pub const INIT_PATH: &str = "/dev/init";
/// Program headers of the init binary read at most (an ELF with more is refused).
const MAX_PHDR_BYTES: u64 = 64 << 10;

/// `--restart no|on-failure[:N]|always|unless-stopped`; stored in the record as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RestartPolicy {
    #[default]
    No,
    /// After a non-zero exit; at most `max` restarts, unlimited when 0 (as Docker).
    OnFailure {
        max: u32,
    },
    Always,
    /// As `Always`, except after an explicit stop.
    UnlessStopped,
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max } => write!(f, "on-failure:{max}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        let bad = |why: &str| EngineError::Invalid(format!("invalid restart policy {s}: {why}"));
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max = match count {
                    None => 0,
                    Some(c) => c
                        .parse::<u32>()
                        .map_err(|_| bad("the maximum retry count must be a number from 0"))?,
                };
                return Ok(RestartPolicy::OnFailure { max });
            }
            _ => return Err(bad("not one of no, on-failure[:N], always, unless-stopped")),
        };
        if count.is_some() {
            return Err(bad("a maximum retry count goes only with on-failure"));
        }
        Ok(policy)
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = EngineError;
    fn try_from(s: String) -> Result<Self, EngineError> {
        s.parse()
    }
}

impl RestartPolicy {
    /// Whether a container that exited with `code`, already restarted `restarts` times, is
    /// started again. An explicit stop (or kill, or `rm -f`) ends every policy, as in Docker,
    /// where only a daemon restart brings `always` containers back.
    pub fn should_restart(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match *self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
        }
    }
}

/// The next back-off delay: doubled, capped; back to the start after a run of 10 s or more.
pub fn next_backoff(current: Duration, ran: Duration) -> Duration {
    if ran >= BACKOFF_RESET {
        BACKOFF_START
    } else {
        current.saturating_mul(2).min(BACKOFF_MAX)
    }
}

/// Marks the container in `dir` as stopped by the user, so its monitor does not restart it.
pub fn mark_stopped(dir: &Path) -> Result<(), EngineError> {
    let p = dir.join(STOP_MARK);
    std::fs::write(&p, b"").map_err(io_err(&p, "write"))
}

/// Removes the stop mark (an explicit start lets the policy apply again).
pub fn clear_stopped(dir: &Path) -> Result<(), EngineError> {
    let p = dir.join(STOP_MARK);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&p, "remove")(e)),
    }
}

pub fn stopped_by_user(dir: &Path) -> bool {
    dir.join(STOP_MARK).exists()
}

/// Sleeps `delay` unless the stop mark appears; returns whether the wait ran to its end.
pub fn backoff_wait(dir: &Path, delay: Duration) -> bool {
    let end = Instant::now() + delay;
    loop {
        if stopped_by_user(dir) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep(MARK_POLL.min(end - now));
    }
}

impl super::Engine {
    /// `restart [-t N]`: stops the container if it runs (see `stop`), then starts it again
    /// with the same record, upper directory and volumes.
    pub fn restart(
        &self,
        key: &str,
        timeout: Option<u32>,
        exe: &Path,
    ) -> Result<super::Container, EngineError> {
        let c = self.stop(key, timeout)?;
        self.start(&c.id, exe)?;
        self.load(&c.id)
    }
}

/// The decant-init binary for `--init`: `$DECANT_INIT`, else `decant-init` next to `exe` (the
/// decant binary); it must exist and be statically linked.
pub fn find_init(exe: &Path) -> Result<PathBuf, EngineError> {
    let (path, how) = match std::env::var_os("DECANT_INIT").filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), "$DECANT_INIT"),
        None => (
            exe.parent().unwrap_or(Path::new("/")).join("decant-init"),
            "next to the decant binary",
        ),
    };
    let missing = |why: String| {
        EngineError::Invalid(format!(
            "--init: {} ({how}): {why}; build it static (supervisor/README.md) and put it next \
             to decant or name it in $DECANT_INIT",
            path.display()
        ))
    };
    let meta = std::fs::metadata(&path).map_err(|e| missing(e.to_string()))?;
    if !meta.is_file() {
        return Err(missing("not a regular file".into()));
    }
    let f = std::fs::File::open(&path).map_err(|e| missing(e.to_string()))?;
    if has_interpreter(f).map_err(missing)? {
        return Err(missing(
            "dynamically linked, so it cannot run in an image without its libraries".into(),
        ));
    }
    Ok(path)
}

/// Whether an ELF64 little-endian file names a program interpreter (PT_INTERP): a dynamic
/// binary. Anything else than such an ELF is an error naming the offset.
fn has_interpreter(f: impl Read) -> Result<bool, String> {
    let mut bytes = Vec::new();
    f.take(MAX_PHDR_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o.checked_add(2)?)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o.checked_add(4)?)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o.checked_add(8)?)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("ELF header at offset 0: not a 64-bit little-endian ELF file".into());
    }
    let (Some(phoff), Some(entsize), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Err("ELF header at offset 0: truncated".into());
    };
    if num > 0 && entsize < 4 {
        return Err(format!(
            "ELF header at offset 0x36: program header size {entsize} is too small"
        ));
    }
    for i in 0..u64::from(num) {
        let off = phoff
            .checked_add(i * u64::from(entsize))
            .and_then(|o| usize::try_from(o).ok());
        let Some(t) = off.and_then(u32_at) else {
            return Err(format!(
                "program header {i} at offset {phoff}+{i}*{entsize}: past the first \
                 {MAX_PHDR_BYTES} bytes of the file"
            ));
        };
        if t == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_print_and_decide() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            let p: RestartPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        for bad in [
            "sometimes",
            "always:2",
            "on-failure:-1",
            "on-failure:x",
            "no:1",
        ] {
            let e = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(serde_json::from_str::<RestartPolicy>("\"bogus\"").is_err());
        let of2 = RestartPolicy::OnFailure { max: 2 };
        assert!(of2.should_restart(1, 0, false) && of2.should_restart(1, 1, false));
        assert!(!of2.should_restart(1, 2, false) && !of2.should_restart(0, 0, false));
        let of = RestartPolicy::OnFailure { max: 0 };
        assert!(of.should_restart(137, 1000, false));
        assert!(RestartPolicy::Always.should_restart(0, 5, false));
        assert!(!RestartPolicy::Always.should_restart(0, 5, true));
        assert!(!RestartPolicy::UnlessStopped.should_restart(1, 0, true));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut d = BACKOFF_START;
        d = next_backoff(d, Duration::from_millis(5));
        assert_eq!(d, Duration::from_millis(200));
        for _ in 0..20 {
            d = next_backoff(d, Duration::ZERO);
        }
        assert_eq!(d, BACKOFF_MAX);
        assert_eq!(next_backoff(d, Duration::from_secs(11)), BACKOFF_START);
    }

    #[test]
    fn the_stop_mark_ends_the_backoff() {
        let t = tempfile::tempdir().unwrap();
        assert!(backoff_wait(t.path(), Duration::from_millis(30)));
        mark_stopped(t.path()).unwrap();
        let s = Instant::now();
        assert!(!backoff_wait(t.path(), Duration::from_secs(30)));
        assert!(s.elapsed() < Duration::from_secs(1));
        clear_stopped(t.path()).unwrap();
        clear_stopped(t.path()).unwrap();
        assert!(!stopped_by_user(t.path()));
    }

    #[test]
    fn elf_interpreter_detection_survives_hostile_files() {
        // This test binary is dynamic (no crt-static for tests).
        let me = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(has_interpreter(me), Ok(true));
        let mut h = [0u8; 64];
        h[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        // No program headers: static as far as we can tell.
        assert_eq!(has_interpreter(&h[..]), Ok(false));
        // Program headers far past the end, absurd counts, tiny entries, truncation.
        h[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        h[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        h[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(has_interpreter(&h[..])
            .unwrap_err()
            .contains("program header 0"));
        h[0x36..0x38].copy_from_slice(&1u16.to_le_bytes());
        assert!(has_interpreter(&h[..]).unwrap_err().contains("0x36"));
        assert!(has_interpreter(&h[..20]).unwrap_err().contains("truncated"));
        assert!(has_interpreter(&b"#!/bin/sh\n"[..]).is_err());
        assert!(has_interpreter(&b""[..]).is_err());
    }

    #[test]
    fn a_missing_or_dynamic_init_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        // No decant-init next to a fake decant (and no $DECANT_INIT in the test environment).
        if std::env::var_os("DECANT_INIT").is_none() {
            let e = find_init(&t.path().join("decant")).unwrap_err().to_string();
            assert!(e.contains("decant-init") && e.contains("next to"), "{e}");
            std::fs::copy(
                std::env::current_exe().unwrap(),
                t.path().join("decant-init"),
            )
            .unwrap();
            let e = find_init(&t.path().join("decant")).unwrap_err().to_string();
            assert!(e.contains("dynamically linked"), "{e}");
            assert!(!e.contains('\n'));
        }
    }
}

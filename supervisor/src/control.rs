//! The control socket: a unix stream socket (default `/run/decant-init.sock`, mode 0600) with a
//! one-line request and a text reply, then close. Requests: `status [NAME...]`,
//! `start|stop|restart|reload NAME...|all`. The reply to `status` reads like `supervisorctl
//! status`, with the source and restarts added; a service that could not be configured shows
//! FATAL and the configuration error.
//!
//! [`request`] is the client (used by `decant-init ctl` and meant for `decant svc`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::pid1::Init;
use crate::service::{Service, State};

/// Longest request line accepted.
const REQUEST_CAP: usize = 4096;
/// Longest reply the client reads.
const REPLY_CAP: usize = 1 << 20;

/// A failure of the control client.
#[derive(Debug)]
pub enum ControlError {
    Connect(String, std::io::Error),
    Io(String, std::io::Error),
    TooLong(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Connect(p, e) => write!(f, "control socket {p}: cannot connect: {e}"),
            ControlError::Io(p, e) => write!(f, "control socket {p}: {e}"),
            ControlError::TooLong(p) => {
                write!(f, "control socket {p}: reply longer than {REPLY_CAP} bytes")
            }
        }
    }
}

impl std::error::Error for ControlError {}

/// Binds the control socket (replacing a stale one) and makes it owner-only.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

/// One status line: name, source, state, description.
pub fn status_line(s: &Service) -> String {
    format!(
        "{:<32} {:<11} {:<9} {}",
        s.spec.name,
        s.spec.source.as_str(),
        s.state.as_str(),
        s.describe()
    )
}

/// Accepts one pending client and answers it. A client gets one second to send its line.
pub fn serve_one(init: &mut Init, now: Instant) {
    let Some(listener) = &init.control else {
        return;
    };
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while buf.len() < REQUEST_CAP && !buf.contains(&b'\n') {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let reply = handle(init, line.lines().next().unwrap_or(""), now);
    let _ = stream.write_all(reply.as_bytes());
}

/// Answers one request line.
pub fn handle(init: &mut Init, line: &str, now: Instant) -> String {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let names: Vec<&str> = words.collect();
    let select = |init: &Init, names: &[&str]| -> (Vec<usize>, Vec<String>) {
        if names.is_empty() || names.contains(&"all") {
            return ((0..init.services.len()).collect(), Vec::new());
        }
        let mut idx = Vec::new();
        let mut missing = Vec::new();
        for n in names {
            let found: Vec<usize> = (0..init.services.len())
                .filter(|&i| {
                    init.services.get(i).is_some_and(|s| {
                        s.spec.name == *n
                            || s.spec.name.strip_suffix(".service") == Some(n)
                            || s.spec.name.split(':').next() == Some(n)
                    })
                })
                .collect();
            if found.is_empty() {
                missing.push(format!("{n}: ERROR (no such process)\n"));
            }
            idx.extend(found);
        }
        (idx, missing)
    };
    let mut out = String::new();
    match verb {
        "status" => {
            let (idx, missing) = select(init, &names);
            for i in idx {
                if let Some(s) = init.services.get(i) {
                    out.push_str(&status_line(s));
                    out.push('\n');
                }
            }
            out.extend(missing);
        }
        "start" | "stop" | "restart" | "reload" => {
            if names.is_empty() {
                return format!("ERROR {verb} needs a NAME or all\n");
            }
            if init.shutdown.is_some() {
                return "ERROR shutting down\n".to_string();
            }
            let (idx, missing) = select(init, &names);
            for i in idx {
                let r = init.with_service(i, |s, ctx| {
                    let r = match verb {
                        "start" => s.request_start(),
                        "stop" => {
                            s.stop(now, ctx);
                            Ok(())
                        }
                        "restart" => s.request_restart(now, ctx),
                        _ => {
                            s.reload(ctx);
                            Ok(())
                        }
                    };
                    (s.spec.name.clone(), r)
                });
                match r {
                    Some((n, Ok(()))) => out.push_str(&format!("{n}: {verb} requested\n")),
                    Some((n, Err(e))) => out.push_str(&format!("{n}: ERROR ({e})\n")),
                    None => {}
                }
            }
            out.extend(missing);
        }
        _ => out.push_str(&format!(
            "ERROR unknown request '{verb}' (status, start, stop, restart, reload)\n"
        )),
    }
    out
}

/// Sends one request and returns the reply (the client side, for `decant-init ctl` and
/// `decant svc`).
pub fn request(socket: &Path, line: &str) -> Result<String, ControlError> {
    let p = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|e| ControlError::Connect(p.clone(), e))?;
    let io = |e| ControlError::Io(p.clone(), e);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.write_all(format!("{}\n", line.trim()).as_bytes())
        .map_err(|e| ControlError::Io(p.clone(), e))?;
    let mut reply = Vec::new();
    (&mut s)
        .take(REPLY_CAP as u64 + 1)
        .read_to_end(&mut reply)
        .map_err(|e| ControlError::Io(p.clone(), e))?;
    if reply.len() > REPLY_CAP {
        return Err(ControlError::TooLong(p));
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether a status line shows a state `ctl` should keep waiting on after a request.
fn transient(line: &str, verb: &str) -> bool {
    let state = line.split_whitespace().nth(2).unwrap_or("");
    match verb {
        "stop" => state == State::Stopping.as_str(),
        "start" | "restart" => {
            state == State::Starting.as_str()
                || state == State::Backoff.as_str()
                || state == State::Stopping.as_str()
                || (verb == "restart" && state == State::Stopped.as_str())
        }
        _ => false,
    }
}

/// `decant-init ctl VERB [NAME...]`: sends the request; for start/stop/restart waits (at most
/// `wait`) until the services settle and prints their status. Returns the process exit code.
pub fn ctl(socket: &Path, args: &[String], wait: Duration) -> i32 {
    let line = if args.is_empty() {
        "status".to_string()
    } else {
        args.join(" ")
    };
    let verb = args.first().map(String::as_str).unwrap_or("status");
    let reply = match request(socket, &line) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("decant-init ctl: {e}");
            return 2;
        }
    };
    let mut failed = reply.lines().any(|l| l.contains("ERROR"));
    if !matches!(verb, "start" | "stop" | "restart") || failed {
        print!("{reply}");
        return i32::from(failed);
    }
    let names = args.get(1..).unwrap_or_default().join(" ");
    let until = Instant::now() + wait;
    let mut status = String::new();
    while Instant::now() < until {
        status = match request(socket, &format!("status {names}")) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("decant-init ctl: {e}");
                return 2;
            }
        };
        if !status.lines().any(|l| transient(l, verb)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    print!("{status}");
    if verb != "stop" {
        failed |= status
            .lines()
            .any(|l| l.split_whitespace().nth(2).is_some_and(|s| s == "FATAL"));
    }
    i32::from(failed)
}

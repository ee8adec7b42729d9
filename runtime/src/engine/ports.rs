//! Published ports (`-p`, `-P`) without iptables or a veth: a private-network container has
//! only `lo`, so the monitor forwards in user space, like Docker's userland proxy. The host
//! sockets are bound before the container starts (so a taken port fails the start cleanly);
//! each TCP connection gets a socket opened inside the container's network namespace (a thread
//! that `setns`es there) connected to `127.0.0.1:CTR`, and bytes are copied both ways with a
//! small poll loop (bounded buffers, half-close passed on). UDP keeps one inner socket per
//! client address, dropped after an idle timeout. Everything stops when the stop pipe closes.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use super::EngineError;

/// Docker's wording for a host port someone else holds; `run` looks for it to clean up.
pub const ALLOCATED: &str = "port is already allocated";
/// Per direction of a TCP connection: what is read and not yet written.
const TCP_BUF: usize = 16 << 10;
/// Open TCP connections per container; more are accepted and closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// UDP client addresses remembered per published port; the least recently used goes first.
const MAX_FLOWS: usize = 256;
/// A UDP flow without traffic for this long is dropped (Docker's proxy uses 90 s).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// The largest UDP datagram.
const UDP_BUF: usize = 65_536;
/// Connecting to the container's port gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many ports per container (bounds a hostile record or command line).
pub const MAX_PORTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Proto {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(EngineError::Invalid(format!("invalid proto: {s}"))),
        }
    }
}

/// One published port: `host_port` 0 asks for a free one (replaced by the real one once bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// `80/tcp`, as `docker port` and EXPOSE write it.
    pub fn private(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }

    /// `0.0.0.0:8080` (IPv6 without brackets, as Docker prints `:::8080`).
    pub fn public(&self) -> String {
        format!("{}:{}", self.host_ip, self.host_port)
    }

    /// A mapping of an image's `EXPOSE`d port (`80`, `80/tcp`, `53/udp`) to a free host port.
    pub fn exposed(spec: &str) -> Result<PortMapping, EngineError> {
        let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        Ok(PortMapping {
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: 0,
            container_port: container_port(port)?,
            proto: proto.parse()?,
        })
    }
}

fn container_port(s: &str) -> Result<u16, EngineError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(EngineError::Invalid(format!("invalid containerPort: {s}"))),
    }
}

/// Docker's PORTS column entry: `0.0.0.0:8080->80/tcp`.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.public(), self.private())
    }
}

/// `-p [IP:][HOST:]CTR[/tcp|udp]`; an IPv6 address goes in brackets (`[::1]:8080:80`).
impl std::str::FromStr for PortMapping {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, p)) => (r, p.parse::<Proto>()?),
            None => (s, Proto::Tcp),
        };
        let (front, ctr) = match rest.rsplit_once(':') {
            Some((f, c)) => (Some(f), c),
            None => (None, rest),
        };
        let container_port = container_port(ctr)?;
        let (ip, host) = match front {
            None => (None, ""),
            Some(f) => match f.rsplit_once(':') {
                Some((ip, h)) => (Some(ip), h),
                None => (None, f),
            },
        };
        let host_port = if host.is_empty() {
            0
        } else {
            host.parse::<u16>()
                .map_err(|_| EngineError::Invalid(format!("invalid hostPort: {host}")))?
        };
        let host_ip = match ip {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| EngineError::Invalid(format!("invalid IP address: {ip}")))?,
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            proto,
        })
    }
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Host sockets bound for a container, not yet forwarding.
#[derive(Default)]
pub struct Bound {
    sockets: Vec<(PortMapping, Socket)>,
}

/// Binds every mapping on the host; the first failure closes what was bound and is returned
/// as Docker words it (`Bind for 0.0.0.0:8080 failed: port is already allocated`).
pub fn bind(mappings: &[PortMapping]) -> Result<Bound, EngineError> {
    if mappings.len() > MAX_PORTS {
        return Err(EngineError::Invalid(format!(
            "{} published ports: more than {MAX_PORTS}",
            mappings.len()
        )));
    }
    let mut bound = Bound::default();
    for m in mappings {
        let addr = SocketAddr::new(m.host_ip, m.host_port);
        let fail = |e: std::io::Error| {
            let why = if e.kind() == ErrorKind::AddrInUse {
                ALLOCATED.to_string()
            } else {
                e.to_string()
            };
            EngineError::Start {
                code: 125,
                message: format!("Bind for {} failed: {why}", m.public()),
            }
        };
        let (port, socket) = match m.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(addr).map_err(fail)?;
                let port = l.local_addr().map_err(fail)?.port();
                l.set_nonblocking(true).map_err(fail)?;
                (port, Socket::Tcp(l))
            }
            Proto::Udp => {
                let u = UdpSocket::bind(addr).map_err(fail)?;
                let port = u.local_addr().map_err(fail)?.port();
                u.set_nonblocking(true).map_err(fail)?;
                (port, Socket::Udp(u))
            }
        };
        let mut m = m.clone();
        m.host_port = port;
        bound.sockets.push((m, socket));
    }
    Ok(bound)
}

impl Bound {
    /// The mappings with the host ports actually bound.
    pub fn mappings(&self) -> Vec<PortMapping> {
        self.sockets.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Starts forwarding into the network namespace of process `pid` (the container's init).
    /// Whether no port is bound (nothing to forward).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub fn forward(self, pid: i32) -> Result<Forwarder, EngineError> {
        let mappings = self.mappings();
        if self.sockets.is_empty() {
            return Ok(Forwarder {
                stop: None,
                threads: Vec::new(),
                mappings,
            });
        }
        let ns_path = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&ns_path).map_err(|e| EngineError::Start {
            code: 125,
            message: format!("{ns_path}: open: {e}"),
        })?;
        let ns = Arc::new(OwnedFd::from(ns));
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Invalid(format!("pipe: {e}")))?;
        let stop_r = Arc::new(stop_r);
        let open = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for (m, s) in self.sockets {
            let (ns, stop) = (ns.clone(), stop_r.clone());
            let port = m.container_port;
            let t = match s {
                Socket::Tcp(l) => {
                    let open = open.clone();
                    std::thread::spawn(move || accept_loop(l, port, ns, stop, open))
                }
                Socket::Udp(u) => std::thread::spawn(move || udp_loop(u, port, ns, stop)),
            };
            threads.push(t);
        }
        Ok(Forwarder {
            stop: Some(stop_w),
            threads,
            mappings,
        })
    }
}

/// Forwarding in progress; `stop` (or drop) closes the host sockets and every connection.
pub struct Forwarder {
    stop: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    mappings: Vec<PortMapping>,
}

impl Forwarder {
    pub fn mappings(&self) -> &[PortMapping] {
        &self.mappings
    }

    /// Closes the stop pipe and waits for the listening threads, so the host ports are free
    /// when this returns (connection threads end on their own at their next poll).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `fds` (plus the stop pipe first) with `events`; `None` when the stop pipe closed or
/// poll failed, else each fd's returned events.
fn wait(
    stop: BorrowedFd<'_>,
    fds: &[(BorrowedFd<'_>, PollFlags)],
    timeout: PollTimeout,
) -> Option<Vec<PollFlags>> {
    let mut pfds = vec![PollFd::new(stop, PollFlags::POLLIN)];
    pfds.extend(fds.iter().map(|(fd, ev)| PollFd::new(*fd, *ev)));
    match nix::poll::poll(&mut pfds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(_) => return None,
    }
    let mut it = pfds
        .iter()
        .map(|p| p.revents().unwrap_or(PollFlags::empty()));
    if !it.next().unwrap_or(PollFlags::POLLHUP).is_empty() {
        return None;
    }
    Some(it.collect())
}

/// Moves the calling thread into the network namespace `ns` (only this thread: a network
/// namespace is per thread).
fn enter(ns: &OwnedFd) -> bool {
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
}

fn accept_loop(
    l: TcpListener,
    port: u16,
    ns: Arc<OwnedFd>,
    stop: Arc<OwnedFd>,
    open: Arc<AtomicUsize>,
) {
    while wait(
        stop.as_fd(),
        &[(l.as_fd(), PollFlags::POLLIN)],
        PollTimeout::NONE,
    )
    .is_some()
    {
        // Drain the backlog; a listener error other than "nothing more" waits for the next poll.
        while let Ok((client, _)) = l.accept() {
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (ns, stop, count) = (ns.clone(), stop.clone(), open.clone());
            let spawned = std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    connection(client, port, &ns, &stop);
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// One client: connect to the container's port from inside its namespace, then copy.
fn connection(client: TcpStream, port: u16, ns: &OwnedFd, stop: &OwnedFd) {
    if !enter(ns) {
        return;
    }
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let Ok(inner) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return;
    };
    if client.set_nonblocking(true).is_err() || inner.set_nonblocking(true).is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = inner.set_nodelay(true);
    copy_both(&client, &inner, stop.as_fd());
}

/// Bytes read from one side and not yet written to the other.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The source said EOF.
    eof: bool,
    /// The EOF was passed on (write side of the destination shut down).
    shut: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; TCP_BUF],
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }
    fn pending(&self) -> bool {
        self.start < self.end
    }
    /// What to poll for on the source and on the destination.
    fn wants(&self) -> (PollFlags, PollFlags) {
        if self.pending() {
            (PollFlags::empty(), PollFlags::POLLOUT)
        } else if !self.eof {
            (PollFlags::POLLIN, PollFlags::empty())
        } else {
            (PollFlags::empty(), PollFlags::empty())
        }
    }
    /// Reads and writes what can be done without blocking; `false` on a broken connection.
    fn step(&mut self, mut src: &TcpStream, mut dst: &TcpStream) -> bool {
        if !self.pending() && !self.eof {
            match src.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return false,
            }
        }
        while self.pending() {
            match dst.write(self.buf.get(self.start..self.end).unwrap_or_default()) {
                Ok(0) => return false,
                Ok(n) => self.start += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    break
                }
                Err(_) => return false,
            }
        }
        if self.eof && !self.pending() && !self.shut {
            // Half-close: the other direction may still carry the answer.
            let _ = dst.shutdown(Shutdown::Write);
            self.shut = true;
        }
        true
    }
}

fn copy_both(a: &TcpStream, b: &TcpStream, stop: BorrowedFd<'_>) {
    let mut ab = Pipe::new();
    let mut ba = Pipe::new();
    while !(ab.shut && ba.shut) {
        let (a_in, b_out) = ab.wants();
        let (b_in, a_out) = ba.wants();
        // A socket nobody waits on is left out: its hang-up would wake poll forever.
        let mut fds = Vec::with_capacity(2);
        if !(a_in | a_out).is_empty() {
            fds.push((a.as_fd(), a_in | a_out));
        }
        if !(b_in | b_out).is_empty() {
            fds.push((b.as_fd(), b_in | b_out));
        }
        if wait(stop, &fds, PollTimeout::NONE).is_none() {
            return;
        }
        if !ab.step(a, b) || !ba.step(b, a) {
            return;
        }
    }
}

struct Flow {
    client: SocketAddr,
    sock: UdpSocket,
    last: Instant,
}

fn udp_loop(host: UdpSocket, port: u16, ns: Arc<OwnedFd>, stop: Arc<OwnedFd>) {
    // This thread's new sockets belong to the container; `host` stays in the host's.
    if !enter(&ns) {
        return;
    }
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mut flows: Vec<Flow> = Vec::new();
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let mut fds = vec![(host.as_fd(), PollFlags::POLLIN)];
        fds.extend(flows.iter().map(|f| (f.sock.as_fd(), PollFlags::POLLIN)));
        let Some(ready) = wait(stop.as_fd(), &fds, PollTimeout::from(1000u16)) else {
            return;
        };
        let now = Instant::now();
        if ready.first().is_some_and(|r| !r.is_empty()) {
            // Bounded so the answers of existing flows are not starved.
            for _ in 0..64 {
                let Ok((n, from)) = host.recv_from(&mut buf) else {
                    break;
                };
                let data = buf.get(..n).unwrap_or_default();
                if let Some(f) = flows.iter_mut().find(|f| f.client == from) {
                    f.last = now;
                    let _ = f.sock.send(data);
                    continue;
                }
                let Some(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                    .and_then(|s| s.connect(target).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .ok()
                else {
                    continue;
                };
                if flows.len() >= MAX_FLOWS {
                    if let Some(i) = (0..flows.len()).min_by_key(|i| flows.get(*i).map(|f| f.last))
                    {
                        flows.swap_remove(i);
                    }
                }
                let _ = sock.send(data);
                flows.push(Flow {
                    client: from,
                    sock,
                    last: now,
                });
            }
        }
        for (f, r) in flows.iter_mut().zip(ready.iter().skip(1)) {
            if r.is_empty() {
                continue;
            }
            for _ in 0..64 {
                let Ok(n) = f.sock.recv(&mut buf) else {
                    break;
                };
                f.last = now;
                let _ = host.send_to(buf.get(..n).unwrap_or_default(), f.client);
            }
        }
        flows.retain(|f| now.duration_since(f.last) < UDP_IDLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_as_docker() {
        let m: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(m.to_string(), "0.0.0.0:8080->80/tcp");
        let m: PortMapping = "127.0.0.1:53:53/udp".parse().unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:53->53/udp");
        let m: PortMapping = "80".parse().unwrap();
        assert_eq!((m.host_port, m.container_port), (0, 80));
        let m: PortMapping = "127.0.0.1::80".parse().unwrap();
        assert_eq!(
            (m.host_port, m.host_ip.to_string()),
            (0, "127.0.0.1".into())
        );
        let m: PortMapping = "[::1]:8080:80".parse().unwrap();
        assert_eq!(m.to_string(), "::1:8080->80/tcp");
        for bad in [
            "",
            "x",
            "0",
            "8080:70000",
            "a:80",
            "1.2.3:80:80",
            "80/sctp",
            ":",
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert_eq!(PortMapping::exposed("53/udp").unwrap().private(), "53/udp");
        assert!(PortMapping::exposed("x/tcp").is_err());
    }

    #[test]
    fn a_taken_port_is_refused_in_dockers_words() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let want: PortMapping = format!("127.0.0.1:{port}:80").parse().unwrap();
        let e = bind(&[want]).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        assert_eq!(e.exit_code(), 125);
    }

    /// Forwarding into our own namespace (setns into it is allowed for root) exercises the
    /// copy loops without a container.
    #[test]
    fn tcp_and_udp_are_forwarded_and_released() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED (needs root: setns)");
            return;
        }
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let tport = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in server.incoming().take(1) {
                let mut s = s.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(b"echo:").unwrap();
                s.write_all(&got).unwrap();
            }
        });
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut b = [0u8; 100];
            if let Ok((n, from)) = echo.recv_from(&mut b) {
                echo.send_to(&b[..n], from).unwrap();
            }
        });
        let maps: Vec<PortMapping> = [
            format!("127.0.0.1::{tport}"),
            format!("127.0.0.1::{uport}/udp"),
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let bound = bind(&maps).unwrap();
        let got = bound.mappings();
        let fwd = bound.forward(std::process::id() as i32).unwrap();

        // A big body checks the bounded buffers; the half-close lets the server answer.
        let body = vec![b'x'; 200_000];
        let mut c = TcpStream::connect(("127.0.0.1", got[0].host_port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&body).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), body.len() + 5);
        assert!(back.starts_with(b"echo:xxx"));

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"ping", ("127.0.0.1", got[1].host_port)).unwrap();
        let mut b = [0u8; 16];
        let n = u.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping");

        fwd.stop();
        TcpListener::bind(("127.0.0.1", got[0].host_port)).expect("the port is free again");
        UdpSocket::bind(("127.0.0.1", got[1].host_port)).expect("the port is free again");
    }
}

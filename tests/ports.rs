//! Published ports end to end (root): busybox httpd inside the example image answers a plain
//! std client on the host through `-p` and `-P`; `ps` and `decant port` show the bindings; a
//! taken host port fails `run` with Docker's error, exit 125 and nothing left; the host port
//! is free again once the container stops.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A host port nobody holds right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs / from 127.0.0.1:port, retrying while httpd starts; the whole response.
fn get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tried = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match tried {
            Ok(r) if r.contains("200") => return r,
            other => assert!(
                Instant::now() < deadline,
                "no answer on port {port}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn httpd_answers_through_a_published_port_until_stopped() {
    let Some(env) = common::container_env(&["-c", "EXPOSE 80"]) else {
        return;
    };
    let port = free_port();
    let p = format!("127.0.0.1:{port}:80");
    env.run(&[
        "run", "-d", "--name", "web", "-p", &p, "ex", "httpd", "-f", "-p", "80", "-h", "/srv/www",
    ])
    .ok();
    let r = get(port);
    assert!(r.contains("hello from a VM"), "{r}");
    // Several connections, one after the other, each forwarded on its own.
    assert!(get(port).contains("hello from a VM"));
    let ps = env.run(&["ps"]).ok().stdout;
    assert!(ps.contains("PORTS"), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let out = env.run(&["port", "web"]).ok().stdout;
    assert_eq!(out, format!("80/tcp -> 127.0.0.1:{port}\n"));
    assert_eq!(
        env.run(&["port", "web", "80"]).ok().stdout,
        format!("127.0.0.1:{port}\n")
    );
    let r = env.run(&["port", "web", "81"]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("No public port '81/tcp'"), "{}", r.stderr);

    env.run(&["stop", "-t", "1", "web"]).ok();
    TcpListener::bind(("127.0.0.1", port)).expect("the host port is free after stop");
    assert_eq!(env.run(&["port", "web"]).ok().stdout, "");
    // Started again, the same port is bound again.
    env.run(&["start", "web"]).ok();
    assert!(get(port).contains("hello from a VM"));
    env.run(&["rm", "-f", "web"]).ok();
    TcpListener::bind(("127.0.0.1", port)).expect("the host port is free after rm -f");
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn publish_all_uses_the_images_exposed_ports() {
    let Some(env) = common::container_env(&["-c", "EXPOSE 80"]) else {
        return;
    };
    let id = env
        .run(&[
            "run", "-d", "-P", "ex", "httpd", "-f", "-p", "80", "-h", "/srv/www",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let addr = env.run(&["port", &id, "80/tcp"]).ok().stdout;
    let port: u16 = addr
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port printed {addr:?}"));
    assert!(get(port).contains("hello from a VM"));
    env.run(&["rm", "-f", &id]).ok();

    // On the host network there is nothing to forward: -p is dropped with Docker's warning.
    let r = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "host",
            "-p",
            "1:80",
            "ex",
            "true",
        ])
        .ok();
    assert!(
        r.stderr
            .contains("Published ports are discarded when using host network mode"),
        "{}",
        r.stderr
    );
    common::assert_containers_clean(&env, &[]);
}

#[test]
fn a_taken_port_fails_the_run_and_leaves_nothing() {
    let Some(env) = common::container_env(&["-c", "EXPOSE 80"]) else {
        return;
    };
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let p = format!("{port}:80");
    let want = format!("Bind for 0.0.0.0:{port} failed: port is already allocated");
    for detach in [false, true] {
        let mut args = vec!["run"];
        if detach {
            args.push("-d");
        }
        args.extend(["-p", &p, "ex", "true"]);
        let r = env.run(&args);
        assert_eq!(r.status, 125, "{} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains(&want), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert_eq!(env.run(&["ps", "-a", "-q"]).ok().stdout, "");
    }
    // A bad spec is refused before anything is made.
    let r = env.run(&["run", "-p", "80/sctp", "ex", "true"]);
    assert_eq!(r.status, 125);
    assert!(r.stderr.contains("invalid proto: sctp"), "{}", r.stderr);
    common::assert_containers_clean(&env, &[]);
}

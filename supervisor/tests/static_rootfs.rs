//! decant-init as a static binary in a root filesystem that holds nothing but itself and a
//! static busybox: built with `RUSTFLAGS="-C target-feature=+crt-static"` for
//! x86_64-unknown-linux-gnu (cached under the test target dir), then run as PID 1 of a new pid
//! namespace after chroot. Also reports the RSS with 20 services.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn static_binary() -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("static-init");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--profile",
            "init",
            "-p",
            "supervisor",
            "--bin",
            "decant-init",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo");
    assert!(st.success(), "static build failed");
    let bin = target_dir.join("x86_64-unknown-linux-gnu/init/decant-init");
    let file = Command::new("/usr/bin/ldd")
        .arg(&bin)
        .output()
        .expect("ldd");
    let text =
        String::from_utf8_lossy(&file.stdout).to_string() + &String::from_utf8_lossy(&file.stderr);
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "{text}"
    );
    bin
}

#[test]
fn static_init_runs_in_an_empty_rootfs_and_stays_small() {
    need("/usr/bin/unshare");
    need("/usr/sbin/chroot");
    let bin = static_binary();
    let d = root();
    let r0 = d.path();
    std::fs::copy(&bin, r0.join("decant-init")).unwrap();
    std::fs::copy(BUSYBOX, r0.join("busybox")).unwrap();
    for i in 0..20 {
        write(
            &r0.join(format!("etc/service/s{i:02}/run")),
            "#!/busybox sh\nexec /busybox sleep 30\n",
            true,
        );
    }
    write(
        &r0.join("etc/service/hello/run"),
        "#!/busybox sh\necho hello-static\nexec /busybox sleep 30\n",
        true,
    );
    let mut r = start_with(
        Command::new("/usr/bin/unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "/usr/sbin/chroot",
            ])
            .arg(r0)
            .args([
                "/decant-init",
                "--with-services",
                "--verbose",
                "--",
                "/busybox",
                "sh",
                "-c",
                "/busybox sleep 1.5; exit 3",
            ])
            .env_clear(),
    );
    r.wait_for("hello | hello-static", secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let init = descendants(r.pid)
        .into_iter()
        .find(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("decant-init"))
        })
        .expect("decant-init running");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let (rss, anon) = (field("VmRSS:"), field("RssAnon:"));
    eprintln!("decant-init with 21 services: VmRSS {rss} kB, of which RssAnon {anon} kB");
    // The target: at most 1.5 MB VmRSS. The init's own memory is the anonymous part;
    // the rest is the pages of the binary it runs (supervisor::memory keeps that to what it
    // touches).
    assert!(anon <= 512, "RssAnon {anon} kB: the init's own memory grew");
    assert!(rss <= 1536, "VmRSS {rss} kB is over the 1.5 MB target");
    assert_eq!(r.wait_exit(secs(10)), 3, "{}", r.output());
}

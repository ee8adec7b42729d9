//! Rootless `decant run` with /etc/subuid and /etc/subgid ranges: the test (root, as CI) makes
//! a system user of its own with a range in both files (removed again, the files restored, by
//! a drop guard), and runs decant as that user through `setpriv`. Inside the container uid 0
//! is the user, an image file of uid 33 stays uid 33, and `chown` works; `rm` removes what the
//! container gave to the range. The single-id case (no range) is tests/rootless.rs's `nobody`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Run;

/// Ids per range, as useradd gives.
const RANGE: u32 = 65536;

/// A system user with subordinate ranges, and a temp dir it owns; dropping it removes the
/// user and exactly the lines it added.
struct SubUser {
    name: String,
    uid: u32,
    start: u32,
    line: String,
    dirs: common::user::UserDirs,
}

/// Removes `line` (one whole line) from `file`, leaving every other byte as it was.
fn remove_line(file: &str, line: &str) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let mut out = String::with_capacity(text.len());
    let mut removed = false;
    for l in text.split_inclusive('\n') {
        if !removed && l.trim_end_matches('\n') == line {
            removed = true;
            continue;
        }
        out.push_str(l);
    }
    if removed {
        std::fs::write(file, out).expect("restore the subid file");
    }
}

/// Appends `line` to `file`, after a newline if the file does not end with one.
fn append_line(file: &str, line: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = text.clone();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    std::fs::write(file, out).expect("write the subid file");
}

impl Drop for SubUser {
    fn drop(&mut self) {
        for f in ["/etc/subuid", "/etc/subgid"] {
            remove_line(f, &self.line);
        }
        let _ = Command::new("userdel")
            .args(["-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl SubUser {
    fn new() -> Option<SubUser> {
        if !common::require_root("useradd and setpriv need root") {
            return None;
        }
        let pid = std::process::id();
        let name = format!("dcsub{pid}");
        // A system user: useradd gives it no range of its own; ours is far from the usual
        // allocations (from 100000 up) and unique per test process.
        common::tool(
            "useradd",
            &["-r", "-M", "-U", "-s", "/usr/sbin/nologin", &name],
        );
        let ids = |flag: &str| -> u32 {
            common::tool("id", &[flag, &name])
                .trim()
                .parse()
                .expect("numeric id")
        };
        let (uid, gid) = (ids("-u"), ids("-g"));
        let start = 1_000_000_000 + (pid % 20_000) * RANGE;
        let line = format!("{name}:{start}:{RANGE}");
        let u = SubUser {
            name,
            uid,
            start,
            line,
            dirs: common::user::UserDirs::new("decant-subuid", uid, gid),
        };
        for f in ["/etc/subuid", "/etc/subgid"] {
            append_line(f, &u.line);
        }
        // The example root with a web root owned by www-data (33), as Debian's.
        let rootfs = u.path().join("rootfs");
        common::tool(
            "cp",
            &[
                "-a",
                common::example().join("rootfs").to_str().expect("utf8"),
                rootfs.to_str().expect("utf8"),
            ],
        );
        common::tool(
            "chown",
            &[
                "-R",
                "33:33",
                rootfs.join("srv/www").to_str().expect("utf8"),
            ],
        );
        // And one file of an id past the range, which the namespace cannot give it.
        common::tool(
            "chown",
            &[
                "70000:70000",
                rootfs.join("var/log/syslog").to_str().expect("utf8"),
            ],
        );
        let img = u.path().join("root.ext4");
        common::tool(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-d",
                rootfs.to_str().expect("utf8"),
                "-E",
                "root_owner=0:0",
                img.to_str().expect("utf8"),
                "48M",
            ],
        );
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Some(u)
    }

    fn path(&self) -> &Path {
        self.dirs.path()
    }

    fn store(&self) -> PathBuf {
        self.dirs.store()
    }

    fn run(&self, args: &[&str]) -> Run {
        self.dirs.run(args)
    }
}

#[test]
fn subuid_range_keeps_image_owners_and_chown_works() {
    let Some(u) = SubUser::new() else {
        return;
    };
    for tool in ["newuidmap", "newgidmap"] {
        assert!(
            Path::new("/usr/bin").join(tool).exists(),
            "{tool} is missing: apt-get install uidmap"
        );
    }
    let img = u.path().join("root.ext4");
    u.run(&["import", "-t", "ex", img.to_str().expect("utf8")])
        .ok();
    let r = u.run(&[
        "run",
        "--rm",
        "ex",
        "sh",
        "-c",
        "id -u; busybox stat -c %u /srv/www/index.html; \
         busybox chown 1000 /srv/www/index.html && busybox stat -c %u /srv/www/index.html; \
         busybox stat -c %u /var/log/syslog; cat /proc/self/uid_map",
    ]);
    assert_eq!(
        r.status, 0,
        "rootless run with a subuid range failed:\n{}",
        r.stderr
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines.get(..4),
        // uid 70000 is past the range: the unpack kept it as the namespace's root.
        Some(&["0", "33", "1000", "0"][..]),
        "{}",
        r.stdout
    );
    // The container's namespace has every id of the range, not only 0.
    let sizes: u64 = lines
        .get(4..)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!(sizes, u64::from(RANGE) + 1, "uid_map: {}", r.stdout);
    // The layer was unpacked inside the namespace: uid 33 is the range's 33rd id on the host.
    let layers = u.store().join(".decant/layers");
    let mapped: Vec<PathBuf> = std::fs::read_dir(&layers)
        .expect("layer cache")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.to_string_lossy().contains(".subid-"))
        .collect();
    assert_eq!(mapped.len(), 1, "no mapped unpack in {}", layers.display());
    let meta = std::fs::metadata(mapped[0].join("srv/www/index.html")).expect("index.html");
    assert_eq!(meta.uid(), u.start + 32, "host owner of a uid 33 file");
    let name = mapped[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf8");
    let skipped = std::fs::read_to_string(layers.join(format!("{name}.skipped")))
        .expect("the unpack's report of what it kept");
    assert!(
        skipped.contains("ownership: 1 entries belong to other users"),
        "{skipped}"
    );
    // inspect says which ids the container gets.
    let r = u.run(&["run", "-d", "--name", "bg", "ex", "sh", "-c",
        "busybox chown -R 33:33 /home && mkdir /locked && busybox chown 7:7 /locked && chmod 0 /locked && exec sleep 1000"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&u.run(&["inspect", "bg"]).ok().stdout).expect("inspect json");
    let uid_map = &v[0]["HostConfig"]["IDMappings"]["UidMap"];
    assert_eq!(
        uid_map,
        &serde_json::json!([format!("0:{}:1", u.uid), format!("1:{}:{RANGE}", u.start)]),
        "{v}"
    );
    let r = u
        .run(&["exec", "bg", "sh", "-c", "busybox stat -c %u /home /locked"])
        .ok();
    assert_eq!(r.stdout, "33\n7\n");
    // rm removes what the container gave to the range (the user alone could not).
    u.run(&["rm", "-f", "bg"]).ok();
    let left: Vec<_> = std::fs::read_dir(u.store().join(".decant/containers"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    assert!(common::monitors_of(u.path().to_str().expect("utf8")).is_empty());
}

//! `decant strip` and `decant size` end to end: the example image (busybox, no package
//! database) and a fixture with a small but real dpkg database, made at test time and checked
//! afterwards with the host's own dpkg (`--audit`, `--verify`, `-l`) against the stripped tree.

mod common;

use std::path::{Path, PathBuf};

use common::strip::{example_rootfs, json, layer_blob, unpack_layer, write};
use common::{assert_containers_clean, container_env, tool, Env};
use serde_json::Value;

/// The paths in the final layer of a strip report.
fn layer_paths(env: &Env, report: &Value) -> Vec<String> {
    let blob = layer_blob(env, report);
    tool("tar", &["-tzf", blob.to_str().expect("utf8")])
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// No throwaway candidate is left: no dangling image, and no unpacked layer (or its lock or
/// report file) that no image in the store uses.
#[track_caller]
fn assert_no_candidates_left(env: &Env) {
    let images = env.run(&["images"]).ok().stdout;
    assert!(!images.contains("<none>"), "{images}");
    let store = env.store();
    let index: Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).expect("index"))
            .expect("json");
    let mut used = std::collections::HashSet::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let d = m["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let man: Value = serde_json::from_slice(
            &std::fs::read(store.join("blobs/sha256").join(d)).expect("manifest"),
        )
        .expect("json");
        for l in man["layers"].as_array().expect("layers") {
            used.insert(
                l["digest"]
                    .as_str()
                    .expect("digest")
                    .trim_start_matches("sha256:")
                    .to_string(),
            );
        }
    }
    for e in std::fs::read_dir(store.join(".decant/layers")).expect("layer cache") {
        let name = e
            .expect("dirent")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let hex = name.split('.').next().unwrap_or_default().to_string();
        assert!(
            used.contains(&hex),
            "layer cache entry {name} belongs to no image"
        );
    }
}

fn image_id(env: &Env, name: &str) -> String {
    let v = json(env, &["inspect", name]);
    v[0]["Id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn bisection_finds_the_needed_file_and_keeps_the_rest() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let before = json(&env, &["size", "ex", "--format", "json"]);
    let id_before = image_id(&env, "ex");
    let r = json(
        &env,
        &[
            "strip",
            "ex",
            "--tag",
            "ex:slim",
            "--remove",
            "/srv",
            "--remove",
            "/home",
            "--remove",
            "/etc/hostname",
            "--remove",
            "/etc/fstab",
            "--probe",
            "grep -q hello /srv/www/index.html",
            "--format",
            "json",
        ],
    );
    let kept: Vec<&str> = r["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .filter_map(|k| k[0].as_str())
        .collect();
    assert_eq!(kept.len(), 1, "{r}");
    assert!(
        kept[0].starts_with("/srv/www/index.html (--remove /srv)"),
        "{kept:?}"
    );
    assert!(r["kept"][0][1]
        .as_str()
        .unwrap_or_default()
        .contains("grep -q hello"));
    let paths = layer_paths(&env, &r);
    assert!(paths.iter().any(|p| p == "srv/www/index.html"), "{paths:?}");
    for gone in ["home/alice/notes.txt", "etc/hostname", "etc/fstab"] {
        assert!(
            !paths.iter().any(|p| p == gone),
            "{gone} still in {paths:?}"
        );
    }
    assert!(paths.iter().any(|p| p == "bin/busybox"));
    // More than the first trial: the round failed and was bisected.
    assert!(r["trials"].as_array().expect("trials").len() > 2, "{r}");
    assert_eq!(r["trials"][0]["passed"], false);
    // The stripped image runs, and the source did not change.
    let out = env
        .run(&["run", "--rm", "ex:slim", "cat", "/srv/www/index.html"])
        .ok();
    assert!(out.stdout.contains("hello from a VM"));
    assert_eq!(image_id(&env, "ex"), id_before);
    assert_eq!(json(&env, &["size", "ex", "--format", "json"]), before);
    let hist = env.run(&["history", "ex:slim"]).ok().stdout;
    assert!(hist.contains("decant strip round 1 (file rules)"), "{hist}");
    assert_no_candidates_left(&env);
    assert_containers_clean(&env, &[]);
}

#[test]
fn same_input_same_digest() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let args = |tag: &'static str| {
        vec![
            "strip",
            "ex",
            "--tag",
            tag,
            "--profile",
            "vm",
            "--remove",
            "/home",
            "--probe",
            "test -x /bin/busybox",
            "--format",
            "json",
        ]
    };
    let a = json(&env, &args("ex:a"));
    let b = json(&env, &args("ex:b"));
    assert_eq!(a["image_id"], b["image_id"]);
    assert_eq!(a["layer_digest"], b["layer_digest"]);
    assert!(
        a["compressed_after"].as_u64() < a["compressed_before"].as_u64()
            || a["bytes_after"].as_u64() < a["bytes_before"].as_u64()
    );
    assert!(a["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .any(|n| n.as_str().unwrap_or_default().contains("file rules only")));
    assert_containers_clean(&env, &[]);
}

#[test]
fn a_hanging_probe_times_out_and_the_removal_is_kept() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let r = json(
        &env,
        &[
            "strip",
            "ex",
            "--tag",
            "ex:slim",
            "--remove",
            "/srv",
            "--remove",
            "/home",
            "--probe",
            "test -f /srv/www/index.html || sleep 600",
            "--probe-timeout",
            "2",
            "--format",
            "json",
        ],
    );
    assert!(t0.elapsed().as_secs() < 60);
    let why = r["kept"][0][1].as_str().unwrap_or_default();
    assert!(why.contains("timed out after 2 s"), "{r}");
    let paths = layer_paths(&env, &r);
    assert!(paths.iter().any(|p| p == "srv/www/index.html"));
    assert!(!paths.iter().any(|p| p == "home/alice/notes.txt"));
    assert_containers_clean(&env, &[]);
}

#[test]
fn bad_input_gives_one_clear_line_and_leaves_the_store() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let state = env.store_state();
    for (args, want) in [
        (
            vec!["--remove-package", "coreutils"],
            "has no dpkg database",
        ),
        (vec!["--remove", "/*"], "would remove every file"),
        (
            vec!["--remove", "/home", "--probe", "no-such-command-x"],
            "fails on the source image already (exit 127 (command not found)",
        ),
        (
            vec![
                "--remove",
                "/home",
                "--probe",
                "sleep 30",
                "--probe-timeout",
                "1",
            ],
            "timed out after 1 s",
        ),
        (
            vec!["--profile", "/no/such/profile"],
            "not a shipped profile",
        ),
        (vec!["--remove", "/a/../b"], "'..' is not allowed"),
        (vec!["--keep", "/bin"], "nothing to remove"),
    ] {
        let mut a = vec!["strip", "ex", "--tag", "ex:bad"];
        a.extend(args.iter().copied());
        let r = env.run(&a);
        assert_eq!(r.status, 1, "{args:?}: {}", r.stderr);
        let last = r.stderr.lines().last().unwrap_or_default();
        assert!(last.contains(want), "{args:?}: {}", r.stderr);
        assert!(last.starts_with("decant: "), "{}", r.stderr);
    }
    assert_eq!(env.store_state(), state);
    let r = env.run(&["size", "nope"]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("No such image"), "{}", r.stderr);
    assert_containers_clean(&env, &[]);
}

/// A rootfs: the example's busybox tree plus a dpkg database of four packages.
fn dpkg_fixture(env: &Env) -> PathBuf {
    let root = example_rootfs(env);
    let w = |p: &str, s: &str| write(&root, p, s);
    w("usr/lib/libfoo.so.1", "libfoo\n");
    w("usr/bin/app", "#!/bin/sh\necho app\n");
    w("usr/bin/tool", "#!/bin/sh\necho tool\n");
    w("usr/share/app/data", &"app data\n".repeat(100));
    w("etc/app.conf", "setting=1\n");
    w("usr/bin/base-tool", "base\n");
    w("usr/share/doc/app/README", "read me\n");
    w("usr/share/doc/app/copyright", "licence\n");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("mkdir");
    std::fs::create_dir_all(root.join("etc/dpkg/dpkg.cfg.d")).expect("mkdir");
    let md5 = |p: &str| {
        let out = tool("md5sum", &[root.join(p).to_str().expect("utf8")]);
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let conf = md5("etc/app.conf");
    w(
        "var/lib/dpkg/status",
        &format!(
            "Package: base\nStatus: install ok installed\nPriority: required\nEssential: yes\nMaintainer: t <t@example.org>\nArchitecture: amd64\nVersion: 1\nDescription: base\n\n\
Package: libfoo1\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.0-1\nProvides: libfoo-abi (= 2)\nDescription: foo library\n\n\
Package: app\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: all\nVersion: 3\nDepends: libfoo1 (>= 2.0) | libfoo-alt, base\nConffiles:\n /etc/app.conf {conf}\nDescription: the app\n multi-line\n .\n description\n\n\
Package: tool\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@example.org>\nArchitecture: amd64\nVersion: 4\nPre-Depends: libfoo-abi\nDescription: a tool\n"
        ),
    );
    let lists = [
        ("base", "/.\n/usr\n/usr/bin\n/usr/bin/base-tool\n"),
        ("libfoo1:amd64", "/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n"),
        (
            "app",
            "/.\n/etc\n/etc/app.conf\n/usr\n/usr/bin\n/usr/bin/app\n/usr/share\n/usr/share/app\n/usr/share/app/data\n/usr/share/doc\n/usr/share/doc/app\n/usr/share/doc/app/README\n/usr/share/doc/app/copyright\n",
        ),
        ("tool", "/.\n/usr\n/usr/bin\n/usr/bin/tool\n"),
    ];
    for (name, list) in lists {
        w(&format!("var/lib/dpkg/info/{name}.list"), list);
        let sums: String = list
            .lines()
            .map(|l| l.trim_start_matches('/'))
            .filter(|l| root.join(l).is_file() && *l != "etc/app.conf")
            .map(|l| format!("{}  {l}\n", md5(l)))
            .collect();
        w(&format!("var/lib/dpkg/info/{name}.md5sums"), &sums);
    }
    w("var/lib/dpkg/info/app.postinst", "#!/bin/sh\n");
    // The multiarch database layout (`<pkg>:<arch>.list` for Multi-Arch: same packages).
    w("var/lib/dpkg/info/format", "1\n");
    w("var/lib/dpkg/info/app.conffiles", "/etc/app.conf\n");
    let img = env.path().join("dpkg.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            root.to_str().expect("utf8"),
            "-E",
            "root_owner=0:0",
            img.to_str().expect("utf8"),
            "32M",
        ],
    );
    env.run(&["import", "-t", "deb", img.to_str().expect("utf8")])
        .ok();
    root
}

/// `dpkg --audit`, `dpkg --verify` (files on disk against md5sums) and `dpkg -l` on a tree.
fn dpkg_check(root: &Path) -> Vec<String> {
    let admin = format!("--admindir={}", root.join("var/lib/dpkg").display());
    let audit = tool("dpkg", &[&admin, "--audit"]);
    assert!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    let verify = tool("dpkg", &[&format!("--root={}", root.display()), "--verify"]);
    assert!(verify.trim().is_empty(), "dpkg --verify: {verify}");
    let mut names: Vec<String> = tool(
        "dpkg-query",
        &[&admin, "-W", "-f", "${db:Status-Abbrev}${Package}\n"],
    )
    .lines()
    .map(str::to_string)
    .collect();
    names.sort();
    names
}

#[test]
fn remove_package_keeps_the_database_truthful() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let fixture = dpkg_fixture(&env);
    assert_eq!(
        dpkg_check(&fixture),
        vec!["ii app", "ii base", "ii libfoo1", "ii tool"]
    );
    let size = json(&env, &["size", "deb", "--format", "json"]);
    let pk = size["packages"].as_array().expect("packages");
    assert!(
        pk.iter()
            .any(|p| p["name"] == "app" && p["bytes"].as_u64() > Some(900)),
        "{size}"
    );

    let state = env.store_state();
    for (args, want) in [
        (vec!["--remove-package", "nosuch"], "unknown package nosuch"),
        (vec!["--remove-package", "base"], "Essential and protected; use --force"),
        (
            vec!["--remove-package", "libfoo1"],
            "package libfoo1 is needed by: app (needs libfoo1 | libfoo-alt), tool (needs libfoo-abi); use --cascade",
        ),
    ] {
        let mut a = vec!["strip", "deb", "--tag", "deb:bad"];
        a.extend(args.iter().copied());
        let r = env.run(&a);
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert_eq!(env.store_state(), state);

    let r = env.run(&[
        "strip",
        "deb",
        "--tag",
        "deb:slim",
        "--remove-package",
        "libfoo1",
        "--cascade",
        "--probe",
        "test -f /usr/bin/base-tool",
        "--format",
        "json",
    ]);
    let r = r.ok();
    assert!(
        r.stderr
            .contains("plan: removing libfoo1 with its dependents app, tool"),
        "{}",
        r.stderr
    );
    let rep: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        rep["removed_packages"],
        serde_json::json!(["app", "libfoo1", "tool"])
    );
    let out = env.path().join("slim");
    unpack_layer(&env, &rep, &out);
    assert_eq!(dpkg_check(&out), vec!["ii base"]);
    for gone in [
        "usr/bin/app",
        "usr/bin/tool",
        "usr/lib/libfoo.so.1",
        "usr/share/app",
        "var/lib/dpkg/info/app.list",
        "var/lib/dpkg/info/app.postinst",
        "var/lib/dpkg/info/libfoo1:amd64.md5sums",
    ] {
        assert!(!out.join(gone).exists(), "{gone} left");
    }
    // A directory another package still lists stays; one only the removed packages listed
    // and that is now empty goes, as dpkg does it; the conffile stays without --purge.
    assert!(out.join("usr/bin/base-tool").is_file());
    assert!(!out.join("usr/lib").exists());
    assert!(out.join("etc/app.conf").is_file());
    assert!(
        rep["per_package"]["app"]["removed"].as_u64() > Some(900),
        "{rep}"
    );

    let r = json(
        &env,
        &[
            "strip",
            "deb",
            "--tag",
            "deb:purged",
            "--remove-package",
            "app",
            "--purge",
            "--format",
            "json",
        ],
    );
    let out = env.path().join("purged");
    unpack_layer(&env, &r, &out);
    assert_eq!(dpkg_check(&out), vec!["ii base", "ii libfoo1", "ii tool"]);
    assert!(!out.join("etc/app.conf").exists());
    assert!(out.join("usr/lib/libfoo.so.1").is_file());
    assert_no_candidates_left(&env);
    assert_containers_clean(&env, &[]);
}

/// Issue 7, package-aware file rules: the docs profile removes a file of an installed package;
/// the report counts it for the package, the image records the profile's globs as dpkg
/// path filters (so apt-get does not bring the docs back), and `dpkg --audit` stays clean
/// while `dpkg --verify` names exactly the file the rule removed.
#[test]
fn file_rules_on_package_files_are_recorded_for_dpkg() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    dpkg_fixture(&env);
    let rep = json(
        &env,
        &[
            "strip",
            "deb",
            "--tag",
            "deb:nodocs",
            "--profile",
            "docs",
            "--format",
            "json",
        ],
    );
    assert_eq!(rep["per_package"]["app"]["rule_files"], 1, "{rep}");
    assert!(
        rep["notes"].as_array().expect("notes").iter().any(|n| n
            .as_str()
            .unwrap_or_default()
            .contains("removed 1 file(s) of 1 installed package(s) (most: app 1")),
        "{rep}"
    );
    let out = env.path().join("nodocs");
    unpack_layer(&env, &rep, &out);
    assert!(!out.join("usr/share/doc/app/README").exists());
    assert!(out.join("usr/share/doc/app/copyright").is_file());
    let cfg = std::fs::read_to_string(out.join("etc/dpkg/dpkg.cfg.d/decant-strip"))
        .expect("the dpkg filter file");
    let lines: Vec<&str> = cfg.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright"
        ]
    );
    let admin = format!("--admindir={}", out.join("var/lib/dpkg").display());
    let audit = tool("dpkg", &[&admin, "--audit"]);
    assert!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    let r = std::process::Command::new("dpkg")
        .arg(format!("--root={}", out.display()))
        .arg("--verify")
        .output()
        .expect("dpkg");
    let verify = String::from_utf8_lossy(&r.stdout);
    let missing: Vec<&str> = verify.lines().collect();
    assert_eq!(missing.len(), 1, "{verify}");
    assert!(
        missing[0].starts_with("missing") && missing[0].ends_with("/usr/share/doc/app/README"),
        "{verify}"
    );
    // A package installed later follows the filters (each line of a dpkg.cfg.d file is a long
    // option): its documentation stays out, its copyright comes in.
    let pkg = env.path().join("extra");
    for (p, text) in [
        ("DEBIAN/control", "Package: extra\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: extra\n"),
        ("usr/share/doc/extra/README", "read me\n"),
        ("usr/share/doc/extra/copyright", "licence\n"),
        ("usr/bin/extra", "extra\n"),
    ] {
        let f = pkg.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, text).expect("write");
    }
    let deb = env.path().join("extra.deb");
    tool(
        "dpkg-deb",
        &[
            "--build",
            pkg.to_str().expect("utf8"),
            deb.to_str().expect("utf8"),
        ],
    );
    let mut args = vec![
        format!("--root={}", out.display()),
        "--log=/dev/null".to_string(),
        "--force-script-chrootless".to_string(),
    ];
    args.extend(lines.iter().map(|l| format!("--{l}")));
    args.extend(["-i".to_string(), deb.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("dpkg", &argv);
    assert!(out.join("usr/bin/extra").is_file());
    assert!(out.join("usr/share/doc/extra/copyright").is_file());
    assert!(!out.join("usr/share/doc/extra/README").exists());
    let audit = tool("dpkg", &[&admin, "--audit"]);
    assert!(
        audit.trim().is_empty(),
        "dpkg --audit after an install: {audit}"
    );
    assert_containers_clean(&env, &[]);
}

//! `decant size` and `decant strip --remove-package` on an image with an rpm database: three
//! tiny noarch packages built with rpmbuild at test time (a Requires by name, a Provides, a
//! file dependency, a %config file), installed with the host's rpm into the example busybox
//! tree, tarred and imported. The stripped layer is checked with the host's rpm (`-qa`, `-V`,
//! `--whatprovides`) and sqlite3 (`PRAGMA integrity_check`): decant itself needs neither.

mod common;

use std::path::{Path, PathBuf};

use common::strip::{example_rootfs, json, unpack_layer};
use common::{assert_containers_clean, container_env, tool, Env};
use serde_json::Value;

const SPECS: [(&str, &str, &str); 3] = [
    (
        "alpha",
        "Version: 1.0\nRelease: 1\nProvides: alpha-cap\nRequires: beta\n",
        "mkdir -p %{buildroot}/usr/share/alpha %{buildroot}/etc\nhead -c 3000 /dev/zero > %{buildroot}/usr/share/alpha/data\necho conf > %{buildroot}/etc/alpha.conf\n%files\n/usr/share/alpha\n%config(noreplace) /etc/alpha.conf\n",
    ),
    (
        "beta",
        "Version: 2.0\nRelease: 3\nEpoch: 1\n",
        "mkdir -p %{buildroot}/usr/libexec/beta\nprintf '#!/bin/sh\\necho beta\\n' > %{buildroot}/usr/libexec/beta/run\n%files\n/usr/libexec/beta\n",
    ),
    (
        "gamma",
        "Version: 0.1\nRelease: 1\nRequires: /usr/libexec/beta/run\n",
        "mkdir -p %{buildroot}/usr/share/gamma\nhead -c 5000 /dev/zero > %{buildroot}/usr/share/gamma/big\n%files\n/usr/share/gamma\n",
    ),
];

/// The rpm flags that put the database where rpm-based distributions keep it (Debian's rpm
/// defaults to ~/.rpmdb).
fn rpm_at(root: &Path, args: &[&str]) -> String {
    let r = root.to_str().expect("utf8");
    let mut a = vec!["--root", r, "--dbpath", "/var/lib/rpm"];
    a.extend_from_slice(args);
    tool("rpm", &a)
}

/// The example tree plus the three packages, imported as `rpmimg`; returns the tree.
fn rpm_fixture(env: &Env) -> PathBuf {
    let dir = env.path().join("build");
    let top = dir.join("top");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut rpms = Vec::new();
    for (name, head, body) in SPECS {
        let spec = dir.join(format!("{name}.spec"));
        std::fs::write(
            &spec,
            format!("Name: {name}\nSummary: {name}\nLicense: MIT\nBuildArch: noarch\n{head}%description\n{name}\n%install\n{body}"),
        )
        .expect("spec");
        tool(
            "rpmbuild",
            &[
                "--define",
                &format!("_topdir {}", top.display()),
                "-bb",
                spec.to_str().expect("utf8"),
            ],
        );
        let rpm = std::fs::read_dir(top.join("RPMS/noarch"))
            .expect("RPMS")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
            })
            .expect("built rpm");
        rpms.push(rpm.display().to_string());
    }
    let root = example_rootfs(env);
    rpm_at(&root, &["--initdb"]);
    let mut args = vec!["-i", "--nodeps", "--ignorearch"];
    args.extend(rpms.iter().map(String::as_str));
    rpm_at(&root, &args);
    let tar = env.path().join("rpm.tar");
    tool(
        "tar",
        &[
            "-C",
            root.to_str().expect("utf8"),
            "-cf",
            tar.to_str().expect("utf8"),
            ".",
        ],
    );
    env.run(&["import", "-q", "-t", "rpmimg", tar.to_str().expect("utf8")])
        .ok();
    root
}

/// `rpm -qa` (sorted names), after `rpm -Va` and `PRAGMA integrity_check` pass.
fn rpm_check(root: &Path) -> Vec<String> {
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    assert_eq!(
        tool(
            "sqlite3",
            &[db.to_str().expect("utf8"), "PRAGMA integrity_check"]
        )
        .trim(),
        "ok"
    );
    let v = rpm_at(root, &["-V", "-a"]);
    assert!(v.trim().is_empty(), "rpm -Va: {v}");
    let mut names: Vec<String> = rpm_at(root, &["-qa", "--qf", "%{NAME}\n"])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn size_and_remove_package_keep_the_rpm_database_truthful() {
    let Some(env) = container_env(&[]) else {
        return;
    };
    let fixture = rpm_fixture(&env);
    assert_eq!(rpm_check(&fixture), vec!["alpha", "beta", "gamma"]);

    let size = json(&env, &["size", "rpmimg", "--format", "json"]);
    let pk = size["packages"].as_array().expect("packages");
    let bytes = |n: &str| {
        pk.iter()
            .find(|p| p["name"] == n)
            .and_then(|p| p["bytes"].as_u64())
    };
    assert_eq!(bytes("gamma"), Some(5000), "{size}");
    assert!(bytes("alpha") >= Some(3000), "{size}");
    let cands = size["candidates"].to_string();
    assert!(cands.contains("--remove-package gamma"), "{cands}");
    assert!(!cands.contains("--remove-package beta"), "{cands}");

    let state = env.store_state();
    for (args, want) in [
        (vec!["--remove-package", "nosuch"], "unknown package nosuch: /var/lib/rpm/rpmdb.sqlite has no such package"),
        (
            vec!["--remove-package", "beta"],
            "package beta is needed by: alpha (needs beta), gamma (needs /usr/libexec/beta/run); use --cascade",
        ),
    ] {
        let mut a = vec!["strip", "rpmimg", "--tag", "rpmimg:bad"];
        a.extend(args.iter().copied());
        let r = env.run(&a);
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert_eq!(env.store_state(), state);

    // A leaf goes alone; the database and the tree agree afterwards.
    let rep = json(
        &env,
        &[
            "strip",
            "rpmimg",
            "--tag",
            "rpmimg:nogamma",
            "--remove-package",
            "gamma",
            "--format",
            "json",
        ],
    );
    let out = env.path().join("nogamma");
    unpack_layer(&env, &rep, &out);
    assert_eq!(rpm_check(&out), vec!["alpha", "beta"]);
    assert!(!out.join("usr/share/gamma").exists());
    assert!(out.join("usr/share/alpha/data").is_file());

    // The cascade, verified by a probe in a container of each candidate.
    let r = env
        .run(&[
            "strip",
            "rpmimg",
            "--tag",
            "rpmimg:slim",
            "--remove-package",
            "beta",
            "--cascade",
            "--probe",
            "test -x /bin/busybox",
            "--format",
            "json",
        ])
        .ok();
    assert!(
        r.stderr
            .contains("plan: removing beta with its dependents alpha, gamma"),
        "{}",
        r.stderr
    );
    let rep: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        rep["removed_packages"],
        serde_json::json!(["alpha", "beta", "gamma"])
    );
    let out = env.path().join("slim");
    unpack_layer(&env, &rep, &out);
    assert!(rpm_check(&out).is_empty());
    let wp = std::process::Command::new("rpm")
        .args([
            "--root",
            out.to_str().expect("utf8"),
            "--dbpath",
            "/var/lib/rpm",
        ])
        .args(["-q", "--whatprovides", "alpha-cap"])
        .output()
        .expect("rpm");
    assert!(!wp.status.success(), "alpha-cap is still provided");
    for gone in ["usr/libexec/beta", "usr/share/alpha", "usr/share/gamma"] {
        assert!(!out.join(gone).exists(), "{gone} left");
    }
    // The %config file stays without --purge, as it does with dpkg; busybox is untouched.
    assert!(out.join("etc/alpha.conf").is_file());
    assert!(out.join("bin/busybox").exists());
    assert_containers_clean(&env, &[]);
}

/// A tree with `files` (path, content), tarred and imported as `name`.
fn import_tree(env: &Env, name: &str, files: &[(&str, Vec<u8>)]) {
    let root = env.path().join(name);
    for (p, data) in files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, data).expect("write");
    }
    let tar = env.path().join(format!("{name}.tar"));
    tool(
        "tar",
        &[
            "-C",
            root.to_str().expect("utf8"),
            "-cf",
            tar.to_str().expect("utf8"),
            ".",
        ],
    );
    env.run(&["import", "-q", "-t", name, tar.to_str().expect("utf8")])
        .ok();
}

#[test]
fn berkeley_db_is_named_and_a_damaged_sqlite_db_is_one_line() {
    let env = Env::new();
    import_tree(
        &env,
        "bdb",
        &[
            ("var/lib/rpm/Packages", vec![0x61; 8192]),
            ("usr/bin/x", b"x\n".to_vec()),
        ],
    );
    let size = json(&env, &["size", "bdb", "--format", "json"]);
    assert!(size["packages"].is_null(), "{size}");
    assert!(
        size["notes"]
            .to_string()
            .contains("BerkeleyDB rpm database"),
        "{size}"
    );
    let state = env.store_state();
    let r = env.run(&["strip", "bdb", "--tag", "bdb:s", "--remove-package", "x"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("BerkeleyDB"), "{}", r.stderr);
    assert_eq!(env.store_state(), state);

    // A real database cut short, and one with the schema root's page type flipped.
    let dir = env.path().join("db");
    std::fs::create_dir_all(&dir).expect("mkdir");
    rpm_at(&dir, &["--initdb"]);
    let good = std::fs::read(dir.join("var/lib/rpm/rpmdb.sqlite")).expect("db");
    let mut flipped = good.clone();
    flipped[100] ^= 0xff;
    for (name, data) in [("cut", good[..5000].to_vec()), ("flipped", flipped)] {
        import_tree(&env, name, &[("var/lib/rpm/rpmdb.sqlite", data)]);
        for args in [
            vec!["size", name],
            vec!["strip", name, "--tag", "x:y", "--remove-package", "x"],
        ] {
            let r = env.run(&args);
            assert_eq!(r.status, 1, "{args:?}: {}", r.stderr);
            let line = r.stderr.trim();
            assert!(
                !line.contains('\n') && line.contains("/var/lib/rpm/rpmdb.sqlite: "),
                "{args:?}: {line}"
            );
        }
    }
}

//! Volumes end to end (root) on the example image with `VOLUME /srv/www`: a named volume
//! made on first use keeps data across containers and mounts read-only with `:ro`; a new
//! named volume is filled from the image; the image's VOLUME gets an anonymous volume that
//! `rm -v` removes and `--rm` never leaves; a volume in use is refused by `volume rm`; `volume
//! ls`, `create`, `inspect`, `prune`; bad `-v` is a clear error leaving nothing.

mod common;

use common::Env;

fn volumes(env: &Env) -> Vec<String> {
    env.run(&["volume", "ls", "-q"])
        .ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn named_and_anonymous_volumes() {
    let Some(env) = common::container_env(&["-c", "VOLUME /srv/www"]) else {
        return;
    };
    // Made on first use; --rm leaves no anonymous volume for the image's VOLUME.
    env.run(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "ex",
        "sh",
        "-c",
        "echo one > /data/f",
    ])
    .ok();
    assert_eq!(volumes(&env), ["data"]);
    let r = env.run(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "ex",
        "sh",
        "-c",
        "cat /data/f; echo x > /data/g",
    ]);
    assert_ne!(r.status, 0, "a read-only volume took a write");
    assert_eq!(r.stdout, "one\n");
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);

    // A new named volume is filled from the image at its mount point.
    let r = env
        .run(&[
            "run",
            "--rm",
            "-v",
            "web:/srv/www",
            "ex",
            "cat",
            "/srv/www/index.html",
        ])
        .ok();
    assert!(r.stdout.contains("hello from a VM"), "{}", r.stdout);
    let web = env.store().join(".decant/volumes/web/_data/index.html");
    assert!(web.is_file(), "{} not filled", web.display());
    // Once used, it is never filled again: what the containers left is what they see.
    std::fs::remove_file(&web).unwrap();
    let r = env
        .run(&["run", "--rm", "-v", "web:/srv/www", "ex", "ls", "/srv/www"])
        .ok();
    assert_eq!(r.stdout, "");

    // The image's VOLUME gets an anonymous volume, filled, shown by inspect.
    env.run(&["run", "--name", "keep", "ex", "true"]).ok();
    let anon: Vec<String> = volumes(&env)
        .into_iter()
        .filter(|n| n.len() == 64)
        .collect();
    assert_eq!(anon.len(), 1, "{anon:?}");
    let anon = &anon[0];
    let data = env.store().join(".decant/volumes").join(anon).join("_data");
    assert!(data.join("index.html").is_file());
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["container", "inspect", "keep"]).ok().stdout).unwrap();
    let m = &v[0]["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], anon.as_str());
    assert_eq!(m["Destination"], "/srv/www");
    // In use by a stopped container: refused.
    let r = env.run(&["volume", "rm", anon]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("volume is in use"), "{}", r.stderr);
    env.run(&["rm", "-v", "keep"]).ok();
    assert!(!volumes(&env).contains(anon));

    // rm refuses a volume any container uses; it goes once the container does.
    env.run(&["create", "--name", "user", "-v", "data:/data", "ex", "true"])
        .ok();
    let r = env.run(&["volume", "rm", "data"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("remove data: volume is in use"),
        "{}",
        r.stderr
    );
    env.run(&["rm", "-v", "user"]).ok();
    // rm -v never takes a named volume.
    assert!(volumes(&env).contains(&"data".to_string()));
    env.run(&["volume", "rm", "data"]).ok();
    let r = env.run(&["volume", "rm", "data"]);
    assert!(r.stderr.contains("No such volume: data"), "{}", r.stderr);
    env.run(&["volume", "rm", "-f", "data"]).ok();

    // create, inspect, prune.
    assert_eq!(env.run(&["volume", "create", "made"]).ok().stdout, "made\n");
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["volume", "inspect", "made"]).ok().stdout).unwrap();
    assert_eq!(v[0]["Name"], "made");
    assert_eq!(v[0]["Driver"], "local");
    assert!(v[0]["Mountpoint"]
        .as_str()
        .unwrap()
        .ends_with(".decant/volumes/made/_data"));
    let ls = env.run(&["volume", "ls"]).ok().stdout;
    assert!(
        ls.starts_with("DRIVER")
            && ls
                .lines()
                .any(|l| l.split_whitespace().eq(["local", "made"])),
        "{ls}"
    );
    let r = env.run(&["volume", "prune", "-f"]).ok();
    assert!(!r.stdout.contains("made"), "{}", r.stdout);
    let r = env.run(&["volume", "prune", "-a", "-f"]).ok();
    assert!(
        r.stdout.contains("Deleted Volumes:\nmade\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Total reclaimed space:"), "{}", r.stdout);
    assert!(r.stdout.contains("\nweb\n"), "{}", r.stdout);

    // Bad -v: a clear one-line error, exit 125, nothing made.
    for bad in ["da$ta:/x", "data:rel", "data:/x:zz", "x:/c"] {
        let r = env.run(&["run", "--rm", "-v", bad, "ex", "true"]);
        assert_eq!(r.status, 125, "{bad}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    let r = env.run(&["run", "--rm", "-v", "a1:/d", "-v", "a2:/d", "ex", "true"]);
    assert!(
        r.stderr.contains("Duplicate mount point: /d"),
        "{}",
        r.stderr
    );
    assert!(volumes(&env).is_empty(), "{:?}", volumes(&env));
    common::assert_containers_clean(&env, &[]);
}

//! End to end on whole disks: a QCOW2 backing chain whose overlay changes, adds and deletes
//! files; a disk copied from a running VM (dirty journal); damaged disks at the command line;
//! and the image verbs (tag, rmi, prune) as users see them.

mod common;

use std::path::{Path, PathBuf};

use common::{example, tool, Env};

fn diff_id(env: &Env, tag: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", tag]).ok().stdout).unwrap();
    v[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string()
}

/// A root filesystem image of `tree` with a fixed UUID (so two versions differ only where the
/// files do).
fn mkfs(tree: &Path, out: &Path) {
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            tree.to_str().unwrap(),
            "-E",
            "root_owner=0:0",
            "-U",
            "5f3d0c1e-7a42-4e55-9d1b-0c0ffee00009",
            "-L",
            "root",
            out.to_str().unwrap(),
            "48M",
        ],
    );
}

/// Writes into the qcow2 `overlay` every 64 KiB chunk where `new` differs from `old`, with
/// qemu-io: the overlay holds the changes only, the rest reads through to the backing file.
fn write_changes(overlay: &Path, old: &[u8], new: &[u8], scratch: &Path) -> usize {
    const CHUNK: usize = 64 << 10;
    let mut cmds = Vec::new();
    for (i, (a, b)) in old.chunks(CHUNK).zip(new.chunks(CHUNK)).enumerate() {
        if a != b {
            let f = scratch.join(format!("chunk{i}"));
            std::fs::write(&f, b).unwrap();
            cmds.push(format!(
                "write -s {} {} {}",
                f.display(),
                i * CHUNK,
                b.len()
            ));
        }
    }
    for batch in cmds.chunks(200) {
        let mut args = vec!["-f".to_string(), "qcow2".to_string()];
        for c in batch {
            args.push("-c".into());
            args.push(c.clone());
        }
        args.push(overlay.to_str().unwrap().to_string());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        tool("qemu-io", &a);
    }
    cmds.len()
}

#[test]
fn qcow2_overlay_shows_the_overlays_view_of_the_files() {
    let env = Env::new();
    let dir = env.path();
    // Version A: the example root. Version B: a file changed, one added, one deleted.
    let a_tree = dir.join("a");
    let b_tree = dir.join("b");
    tool(
        "cp",
        &[
            "-a",
            example().join("rootfs").to_str().unwrap(),
            a_tree.to_str().unwrap(),
        ],
    );
    tool(
        "cp",
        &["-a", a_tree.to_str().unwrap(), b_tree.to_str().unwrap()],
    );
    std::fs::write(b_tree.join("etc/hostname"), "changed-in-the-overlay\n").unwrap();
    std::fs::write(b_tree.join("srv/added.txt"), "new in the overlay").unwrap();
    std::fs::remove_file(b_tree.join("home/alice/notes.txt")).unwrap();
    let (a_img, b_img) = (dir.join("a.ext4"), dir.join("b.ext4"));
    mkfs(&a_tree, &a_img);
    mkfs(&b_tree, &b_img);
    let base = dir.join("base.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            a_img.to_str().unwrap(),
            base.to_str().unwrap(),
        ],
    );
    // The overlay names its backing file relatively; the import runs from another directory.
    let overlay = dir.join("overlay.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            overlay.to_str().unwrap(),
        ],
    );
    let scratch = dir.join("chunks");
    std::fs::create_dir(&scratch).unwrap();
    let changed = write_changes(
        &overlay,
        &std::fs::read(&a_img).unwrap(),
        &std::fs::read(&b_img).unwrap(),
        &scratch,
    );
    assert!(
        changed > 0 && changed < 100,
        "a thin overlay: {changed} chunks changed"
    );

    env.run(&[
        "import",
        overlay.to_str().unwrap(),
        "--tag",
        "chain:overlay",
        "--quiet",
    ])
    .ok();
    env.run(&[
        "import",
        b_img.to_str().unwrap(),
        "--tag",
        "chain:b",
        "--quiet",
    ])
    .ok();
    env.run(&[
        "import",
        base.to_str().unwrap(),
        "--tag",
        "chain:base",
        "--quiet",
    ])
    .ok();
    assert_eq!(
        diff_id(&env, "chain:overlay"),
        diff_id(&env, "chain:b"),
        "the overlay's view is version B"
    );
    assert_ne!(diff_id(&env, "chain:overlay"), diff_id(&env, "chain:base"));
    let plan: serde_json::Value = serde_json::from_str(
        &env.run(&[
            "inspect-disk",
            overlay.to_str().unwrap(),
            "--format",
            "json",
        ])
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(
        plan["disk"]["backing"]["file"]
            .as_str()
            .map(|f| f.ends_with("base.qcow2")),
        Some(true),
        "{plan}"
    );
    let human = env
        .run(&["inspect-disk", overlay.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(
        human.contains("Backing:") && human.contains("base.qcow2"),
        "{human}"
    );
}

#[test]
fn a_disk_copied_from_a_running_vm_has_its_journal_replayed() {
    if !common::require_root("mounting an ext4 image to make a real dirty journal needs root") {
        return;
    }
    let env = Env::new();
    let dir = env.path();
    let img = dir.join("live.ext4");
    std::fs::copy(example().join("root.ext4"), &img).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    tool(
        "mount",
        &[
            "-o",
            "loop,commit=1",
            img.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ],
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(mnt.clone());
    // The VM keeps running: files written and synced into the journal, then the disk is copied
    // before the kernel checkpoints them home.
    let copy = dir.join("copied-while-running.ext4");
    let mut dirty = false;
    for attempt in 0..5 {
        std::fs::write(
            mnt.join(format!("etc/written-while-running-{attempt}")),
            format!("attempt {attempt}\n"),
        )
        .unwrap();
        std::fs::create_dir_all(mnt.join(format!("var/lib/app{attempt}"))).unwrap();
        tool("sync", &[]);
        std::fs::copy(&img, &copy).unwrap();
        let sb = tool("dumpe2fs", &["-h", copy.to_str().unwrap()]);
        if sb.contains("needs_recovery") {
            dirty = true;
            break;
        }
    }
    drop(guard);
    assert!(
        dirty,
        "could not catch the filesystem with needs_recovery set after 5 tries"
    );
    let r = env
        .run(&["import", copy.to_str().unwrap(), "--tag", "live"])
        .ok();
    assert!(
        r.stderr.contains("journal"),
        "the summary says the journal was replayed: {}",
        r.stderr
    );
    // The files written while running are in the image, as e2fsck would have recovered them.
    let fixed = dir.join("fsck.ext4");
    std::fs::copy(&copy, &fixed).unwrap();
    let _ = std::process::Command::new("e2fsck")
        .args(["-fy", fixed.to_str().unwrap()])
        .output();
    env.run(&["import", fixed.to_str().unwrap(), "--tag", "fsck"])
        .ok();
    assert_eq!(
        diff_id(&env, "live"),
        diff_id(&env, "fsck"),
        "replay in memory = e2fsck's recovery"
    );
    assert!(
        std::fs::read(&copy).unwrap()
            == std::fs::read(dir.join("copied-while-running.ext4")).unwrap()
    );
}

/// Damaged disks in every format: one line naming the file, exit 1, nothing in the store.
#[test]
fn damaged_disks_fail_with_one_line_and_leave_the_store_alone() {
    let env = Env::new();
    let dir = env.path();
    let raw = example().join("disk.raw");
    env.run(&[
        "import",
        example().join("root.ext4").to_str().unwrap(),
        "--tag",
        "good",
        "--quiet",
    ])
    .ok();
    let before = env.store_state();
    let qcow = dir.join("good.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    let q = std::fs::read(&qcow).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut bits = q.clone();
    bits[20..24].copy_from_slice(&30u32.to_be_bytes()); // cluster_bits
    cases.push(("cluster_bits.qcow2", bits));
    let mut huge = q.clone();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes()); // virtual size
    cases.push(("huge.qcow2", huge));
    cases.push(("truncated.qcow2", q[..q.len() / 3].to_vec()));
    let mut l1 = q.clone();
    l1[40..48].copy_from_slice(&(1u64 << 50).to_be_bytes()); // l1_table_offset past the end
    cases.push(("l1_past_end.qcow2", l1));
    let disk = std::fs::read(&raw).unwrap();
    cases.push(("cut_disk.raw", disk[..3 << 20].to_vec()));
    for (name, bytes) in &cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = env.run(&["import", p.to_str().unwrap(), "--tag", "bad", "--quiet"]);
        assert_eq!(r.status, 1, "{name}: {}", r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one line: {}", r.stderr);
        assert!(
            lines[0].contains(name),
            "{name}: names the file: {}",
            lines[0]
        );
        assert_eq!(env.store_state(), before, "{name}: store unchanged");
    }
    // A primary GPT header claiming 2^31 entries is damaged (its CRC no longer matches): the
    // backup header at the end of the disk is used, and the user is told.
    let mut gpt = disk.clone();
    gpt[512 + 80..512 + 84].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let p = dir.join("gpt_primary_damaged.raw");
    std::fs::write(&p, &gpt).unwrap();
    let r = env
        .run(&["import", p.to_str().unwrap(), "--tag", "backup-gpt"])
        .ok();
    assert!(
        r.stderr.contains("backup"),
        "the note says the backup GPT was used: {}",
        r.stderr
    );
    assert_eq!(diff_id(&env, "backup-gpt"), {
        env.run(&[
            "import",
            raw.to_str().unwrap(),
            "--tag",
            "intact",
            "--quiet",
        ])
        .ok();
        diff_id(&env, "intact")
    });
    let before = env.store_state();
    // A backing chain that loops back on itself.
    let a = dir.join("a.qcow2");
    let b = dir.join("b.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", a.to_str().unwrap(), "64M"],
    );
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            b.to_str().unwrap(),
        ],
    );
    tool(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            a.to_str().unwrap(),
        ],
    );
    let r = env.run(&["import", b.to_str().unwrap(), "--tag", "loop"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("cycle") || r.stderr.contains("loop"),
        "{}",
        r.stderr
    );
    assert_eq!(env.store_state(), before);
}

#[test]
fn tag_rmi_and_prune_speak_dockers_words() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    env.run(&["import", dump.to_str().unwrap(), "--tag", "vm:1", "--quiet"])
        .ok();
    env.run(&["tag", "vm:1", "registry.example:5000/team/vm:prod"])
        .ok();
    let images = env.run(&["images"]).ok().stdout;
    assert!(
        images.contains("registry.example:5000/team/vm") && images.contains("prod"),
        "{images}"
    );
    let ids = env.run(&["images", "-q"]).ok().stdout;
    assert_eq!(ids.lines().count(), 1, "one image, two names");
    let with_digests = env.run(&["images", "--digests"]).ok().stdout;
    assert!(
        with_digests.lines().next().unwrap().contains("DIGEST"),
        "{with_digests}"
    );
    assert!(with_digests.contains("sha256:"), "{with_digests}");
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["images", "--format", "json"]).ok().stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(
        |r| r["ID"].as_str().unwrap().starts_with("sha256:") && r["Size"].as_u64().unwrap() > 0
    ));
    assert!(rows
        .iter()
        .any(|r| r["Repository"] == "registry.example:5000/team/vm" && r["Tag"] == "prod"));
    // Removing one name only untags.
    let out = env.run(&["rmi", "vm:1"]).ok().stdout;
    assert_eq!(out.trim(), "Untagged: vm:1");
    // Moving the tag leaves the old image dangling; prune deletes it.
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "registry.example:5000/team/vm:prod",
        "--quiet",
        "--message",
        "second",
    ])
    .ok();
    let images = env.run(&["images"]).ok().stdout;
    assert!(
        images.contains("<none>"),
        "the old image is dangling: {images}"
    );
    let pruned = env.run(&["image", "prune", "-f"]).ok().stdout;
    assert!(
        pruned.contains("Deleted: sha256:") && pruned.contains("Total reclaimed space"),
        "{pruned}"
    );
    let r = env.run(&["rmi", "nosuch:image"]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("nosuch"), "{}", r.stderr);
    let r = env.run(&["tag", "registry.example:5000/team/vm:prod", "Bad/Name"]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("lowercase"), "{}", r.stderr);
    let out = env
        .run(&["rmi", "registry.example:5000/team/vm:prod"])
        .ok()
        .stdout;
    assert!(
        out.contains("Untagged: registry.example:5000/team/vm:prod")
            && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert_eq!(env.run(&["images", "-q"]).ok().stdout.trim(), "");
}

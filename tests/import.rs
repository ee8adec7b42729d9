//! End to end: `decant import` of the example VM disk (GPT, ext4 root + /boot, qcow2) and of
//! its partition dump, checked by the real OCI peers, plus the store's safety and what hostile
//! input does.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{example, tool, Env};

fn inspect(env: &Env, tag: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", tag]).ok().stdout).unwrap();
    v[0].clone()
}

/// The layer's diff_id (the uncompressed tar's digest, RootFS.Layers).
fn layer_digest(env: &Env, tag: &str) -> String {
    inspect(env, tag)["RootFS"]["Layers"][0]
        .as_str()
        .expect("RootFS.Layers[0]")
        .to_string()
}

/// The compressed layer blob's digest, as the manifest names it.
fn blob_digest(env: &Env, tag: &str) -> String {
    inspect(env, tag)["Manifest"]["Layers"][0]["digest"]
        .as_str()
        .expect("Manifest.Layers[0].digest")
        .to_string()
}

/// One entry of a layer as a test looks at it.
#[derive(Debug)]
struct LayerEntry {
    kind: tar::EntryType,
    mtime: u64,
    size: u64,
    /// The first 64 KiB of a file's content.
    head: Vec<u8>,
}

/// The first layer of `tag`, decompressed by gzip or zstd (the real CLIs) and listed.
fn layer_entries(env: &Env, tag: &str) -> std::collections::BTreeMap<String, LayerEntry> {
    let v = inspect(env, tag);
    let layer = &v["Manifest"]["Layers"][0];
    let digest = layer["digest"].as_str().unwrap();
    let blob = env
        .store()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let tool_name = if layer["mediaType"].as_str().unwrap().ends_with("zstd") {
        "zstd"
    } else {
        "gzip"
    };
    let out = Command::new(tool_name)
        .arg("-dc")
        .arg(&blob)
        .output()
        .unwrap_or_else(|e| panic!("{tool_name} could not run ({e})"));
    assert!(out.status.success(), "{tool_name} -dc {}", blob.display());
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let mut map = std::collections::BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_end_matches('/')
            .to_string();
        let h = e.header();
        let (kind, mtime, size) = (h.entry_type(), h.mtime().unwrap(), e.size());
        let mut head = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut e, 64 << 10), &mut head).unwrap();
        map.insert(
            path,
            LayerEntry {
                kind,
                mtime,
                size,
                head,
            },
        );
    }
    map
}

#[test]
fn example_disk_imports_and_every_oci_peer_reads_it() {
    let env = Env::new();
    let disk = example().join("disk.qcow2");
    let r = env
        .run(&["import", disk.to_str().unwrap(), "--tag", "example:1"])
        .ok();
    assert!(
        r.stdout.trim().starts_with("sha256:"),
        "stdout is the image id: {}",
        r.stdout
    );
    // The summary says what was grafted and what the policy left out, with sizes.
    for want in [
        "grafted /boot",
        "Left out",
        "truncated /var/log/lastlog",
        "diff_id sha256:",
        "tagged",
    ] {
        assert!(
            r.stderr.contains(want),
            "summary lacks {want:?}:\n{}",
            r.stderr
        );
    }
    let images = env.run(&["images"]).ok().stdout;
    assert!(
        images.lines().next().unwrap().starts_with("REPOSITORY"),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("example") && l.contains(" 1 ")),
        "{images}"
    );

    let store = env.store();
    let store = store.to_str().unwrap();
    let full = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(env.store().join("index.json")).unwrap(),
    )
    .unwrap()["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();
    // oci-image-tool validates the layout, the manifest, the config and the layer.
    tool(
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            &format!("name={full}"),
            store,
        ],
    );
    // skopeo reads it as it is and sees the guest's architecture and the import labels.
    let inspect: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &["inspect", &format!("oci:{store}:{full}")],
    ))
    .unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Labels"]["io.decant.import.format"], "qcow2");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);
    // umoci unpacks it (as root) and the tree is the guest's, with /boot grafted and the
    // capability on ping kept.
    if common::require_root("umoci unpack creates files owned by other users") {
        let bundle = env.path().join("bundle");
        tool(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{store}:{full}"),
                bundle.to_str().unwrap(),
            ],
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
            "example\n"
        );
        assert!(
            rootfs.join("boot/grub/grub.cfg").exists(),
            "/boot grafted from partition 1"
        );
        assert!(
            !rootfs.join("boot/vmlinuz-6.1.0-example").exists(),
            "kernels left out by policy"
        );
        assert!(
            rootfs.join("proc").is_dir()
                && std::fs::read_dir(rootfs.join("tmp"))
                    .unwrap()
                    .next()
                    .is_none()
        );
        assert!(!rootfs.join("lib/modules/6.1.0-example/dummy.ko").exists());
        assert_eq!(
            std::fs::metadata(rootfs.join("var/log/lastlog"))
                .unwrap()
                .len(),
            0,
            "lastlog truncated"
        );
        let caps = tool("getcap", &[rootfs.join("bin/ping").to_str().unwrap()]);
        assert!(
            caps.contains("cap_net_raw"),
            "file capability kept: {caps:?}"
        );
        use std::os::unix::fs::MetadataExt;
        let ping = std::fs::metadata(rootfs.join("bin/ping")).unwrap();
        assert_eq!(
            ping.ino(),
            std::fs::metadata(rootfs.join("bin/ping6")).unwrap().ino(),
            "hardlink kept"
        );
        let notes = std::fs::metadata(rootfs.join("home/alice/notes.txt")).unwrap();
        assert_eq!(
            notes.uid(),
            0,
            "mkfs -d with root_owner keeps numeric owners as staged"
        );
    }
}

#[test]
fn keep_flags_bring_back_what_the_policy_leaves_out() {
    let env = Env::new();
    let disk = example().join("disk.raw");
    let disk = disk.to_str().unwrap();
    env.run(&["import", disk, "--tag", "k:default", "--quiet"])
        .ok();
    env.run(&[
        "import",
        disk,
        "--tag",
        "k:all",
        "--keep-boot",
        "--keep-modules",
        "--quiet",
    ])
    .ok();
    env.run(&["import", disk, "--tag", "k:boot", "--keep-boot", "--quiet"])
        .ok();
    let kernel = "boot/vmlinuz-6.1.0-example";
    let initrd = "boot/initrd.img-6.1.0-example";
    let module = "lib/modules/6.1.0-example/dummy.ko";
    let default = layer_entries(&env, "k:default");
    for gone in [kernel, initrd, module] {
        assert!(!default.contains_key(gone), "{gone} left out by default");
    }
    // The directories stay, and what /boot holds besides kernels is kept.
    for kept in ["boot/grub/grub.cfg", "lib/modules"] {
        assert!(default.contains_key(kept), "{kept} kept by default");
    }
    let all = layer_entries(&env, "k:all");
    let raw_kernel = std::fs::read(example().join("bootfs/vmlinuz-6.1.0-example")).unwrap();
    let k = &all[kernel];
    assert_eq!(k.kind, tar::EntryType::Regular);
    assert_eq!(k.size, raw_kernel.len() as u64);
    assert_eq!(k.head[..], raw_kernel[..k.head.len()], "the guest's kernel");
    assert_eq!(
        all[initrd].size,
        std::fs::metadata(example().join("bootfs/initrd.img-6.1.0-example"))
            .unwrap()
            .len()
    );
    assert_eq!(all[module].head, b"module");
    let boot = layer_entries(&env, "k:boot");
    assert!(boot.contains_key(kernel) && boot.contains_key(initrd));
    assert!(
        !boot.contains_key(module),
        "--keep-boot alone leaves modules out"
    );

    let v: serde_json::Value = serde_json::from_str(
        &env.run(&["import", disk, "--dry-run", "--format", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["root"], "2");
    let r = env
        .run(&[
            "import",
            disk,
            "--tag",
            "k:x",
            "--exclude",
            "/srv/**",
            "--format",
            "json",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let reasons: Vec<String> = report["policy"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("/srv/**")),
        "user exclusion reported: {reasons:?}"
    );
    let x = layer_entries(&env, "k:x");
    assert!(!x.contains_key("srv/www/index.html") && default.contains_key("srv/www/index.html"));
}

#[test]
fn same_disk_in_every_format_gives_the_same_layer() {
    let env = Env::new();
    let dir = env.path();
    let raw = example().join("disk.raw");
    let mut digests = Vec::new();
    let formats: &[(&str, &[&str])] = &[
        ("raw", &[]),
        ("qcow2", &["-O", "qcow2"]),
        ("zqcow2", &["-c", "-O", "qcow2"]),
        ("vdi", &["-O", "vdi"]),
        ("vmdk", &["-O", "vmdk"]),
        ("svmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        ("vhd", &["-O", "vpc"]),
    ];
    for (name, args) in formats {
        let path = if *name == "raw" {
            raw.clone()
        } else {
            let out = dir.join(format!("disk.{name}"));
            let mut a = vec!["convert"];
            a.extend_from_slice(args);
            a.extend_from_slice(&[raw.to_str().unwrap(), out.to_str().unwrap()]);
            tool("qemu-img", &a);
            out
        };
        let tag = format!("fmt:{name}");
        env.run(&["import", path.to_str().unwrap(), "--tag", &tag, "--quiet"])
            .ok();
        digests.push((name.to_string(), layer_digest(&env, &tag)));
    }
    let first = digests[0].1.clone();
    assert!(
        digests.iter().all(|(_, d)| *d == first),
        "one disk, one layer: {digests:?}"
    );
    // The partition dump of the root alone differs only by the /boot graft: import it twice and
    // the digests are stable (reproducible), and different from the grafted disk's.
    let dump = example().join("root.ext4");
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "dump:a",
        "--quiet",
    ])
    .ok();
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "dump:b",
        "--quiet",
    ])
    .ok();
    assert_eq!(layer_digest(&env, "dump:a"), layer_digest(&env, "dump:b"));
    assert_ne!(layer_digest(&env, "dump:a"), first);
}

#[test]
fn zstd_layers_and_clamped_times() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "z:1",
        "--compression",
        "zstd",
        "--timestamp",
        "1000000000",
        "--quiet",
    ])
    .ok();
    let mt = inspect(&env, "z:1")["Manifest"]["Layers"][0]["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mt, "application/vnd.oci.image.layer.v1.tar+zstd");
    let mut c = env.decant();
    c.env("SOURCE_DATE_EPOCH", "1000000000").args([
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "z:2",
        "--compression",
        "zstd",
        "--quiet",
    ]);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        blob_digest(&env, "z:1"),
        blob_digest(&env, "z:2"),
        "--timestamp and SOURCE_DATE_EPOCH agree"
    );
    // The clamp is real: no entry is newer than the epoch, and older ones keep their time
    // (the example's files were made just now, so all of them are clamped).
    let clamped = layer_entries(&env, "z:1");
    assert!(clamped.len() > 40, "{}", clamped.len());
    for (p, e) in &clamped {
        assert_eq!(e.mtime, 1_000_000_000, "{p} clamped");
    }
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "z:far",
        "--timestamp",
        "4000000000",
        "--quiet",
    ])
    .ok();
    let unclamped = layer_entries(&env, "z:far");
    let hostname = &unclamped["etc/hostname"];
    assert!(
        hostname.mtime < 4_000_000_000 && hostname.mtime > 1_600_000_000,
        "an older time is kept: {}",
        hostname.mtime
    );
    let config = inspect(&env, "z:1");
    assert_eq!(
        config["Created"], "2001-09-09T01:46:40Z",
        "the config's time too"
    );
}

/// The same input gives the same compressed layer, gzip and zstd, in two separate stores.
#[test]
fn layer_blobs_are_reproducible_across_stores() {
    let a = Env::new();
    let b = Env::new();
    let dump = example().join("root.ext4");
    let dump = dump.to_str().unwrap();
    for env in [&a, &b] {
        env.run(&["import", dump, "--tag", "r:gz", "--quiet"]).ok();
        env.run(&[
            "import",
            dump,
            "--tag",
            "r:zst",
            "--compression",
            "zstd",
            "--quiet",
        ])
        .ok();
    }
    for tag in ["r:gz", "r:zst"] {
        assert_eq!(
            blob_digest(&a, tag),
            blob_digest(&b, tag),
            "{tag}: layer digest"
        );
        assert_eq!(
            layer_digest(&a, tag),
            layer_digest(&b, tag),
            "{tag}: diff_id"
        );
    }
    assert_ne!(blob_digest(&a, "r:gz"), blob_digest(&a, "r:zst"));
    assert_eq!(
        layer_digest(&a, "r:gz"),
        layer_digest(&a, "r:zst"),
        "one tar"
    );
}

#[test]
fn tarball_on_stdin_like_docker_import() {
    let env = Env::new();
    let tarball = env.path().join("root.tar.zst");
    let rootfs = example().join("rootfs");
    let sh = format!(
        "tar --numeric-owner -C {} -cf - . | zstd -q -o {}",
        rootfs.display(),
        tarball.display()
    );
    tool("bash", &["-c", &sh]);
    let f = std::fs::File::open(&tarball).unwrap();
    let out = env
        .decant()
        .args(["import", "-", "--tag", "fromtar", "--quiet"])
        .stdin(f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hist = env.run(&["history", "fromtar"]).ok().stdout;
    assert!(hist.contains("decant import"), "{hist}");
}

/// Runs decant under an address-space limit of 512 MiB (a good import of the example needs far
/// less): a reader that sized an allocation from damaged input would abort with "memory
/// allocation failed" instead of giving its one line.
fn run_bounded(env: &Env, args: &[&str]) -> (i32, String, String) {
    let o = Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 524288 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_decant"))
        .args(args)
        .env("DECANT_ROOT", env.store())
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(env.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash could not run");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Writes a tar built by python3's tarfile (which, unlike the tar crate, writes any name).
fn python_tar(out: &Path, body: &str) {
    let script = format!(
        r#"
import sys, tarfile, io
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def f(name, data=b""):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644
    t.addfile(i, io.BytesIO(data))
def d(name):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755
    t.addfile(i)
def l(name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target
    t.addfile(i)
{body}
t.close()
"#
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(out)
        .output()
        .expect("python3 could not run; .ci/run installs it");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// An ext4 of the example's tree with 4 KiB blocks, and debugfs's view of where things are.
fn damaged_ext4_fixture(dir: &Path) -> (Vec<u8>, u64, u64) {
    let img = dir.join("fixture.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            example().join("rootfs").to_str().unwrap(),
            "-E",
            "root_owner=0:0",
            img.to_str().unwrap(),
            "48M",
        ],
    );
    let debugfs = |req: &str| tool("debugfs", &["-R", req, img.to_str().unwrap()]);
    // The first directory block of /srv/www (not read while the plan looks for the guest).
    let dir_block: u64 = debugfs("blocks /srv/www")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The inode of /home/alice/notes.txt: its extent root is i_block, at offset 40.
    let imap = debugfs("imap /home/alice/notes.txt");
    let block: u64 = imap
        .split("located at block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let off = u64::from_str_radix(imap.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    let data = std::fs::read(&img).unwrap();
    std::fs::remove_file(&img).unwrap();
    (data, dir_block * 4096, block * 4096 + off + 40)
}

/// Every hostile input: one line on stderr naming the file once (and for a tarball the entry and
/// what is wrong), exit 1, no panic, bounded memory and time, the store unchanged (index.json
/// and the names in blobs/sha256), with and without --quiet.
#[test]
fn hostile_inputs_fail_cleanly_and_leave_the_store_alone() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    env.run(&["import", dump.to_str().unwrap(), "--tag", "good", "--quiet"])
        .ok();
    let before = env.store_state();
    assert!(before.1.len() >= 3, "the store holds an image: {before:?}");
    let dir = env.path();
    let original = std::fs::read(&dump).unwrap();
    // (file name, bytes, what the line must also say)
    let mut cases: Vec<(String, Vec<u8>, Vec<&str>)> = vec![
        ("empty".into(), Vec::new(), vec![]),
        (
            "garbage".into(),
            (0..100_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            vec![],
        ),
        (
            "half".into(),
            original[..original.len() / 2].to_vec(),
            vec!["truncated"],
        ),
    ];
    let mut bad_magic = original.clone();
    bad_magic[1024 + 56] = 0;
    cases.push(("badmagic".into(), bad_magic, vec![]));
    let mut zero_inodes = original.clone();
    zero_inodes[1024..1028].copy_from_slice(&[0, 0, 0, 0]);
    cases.push(("zeroinodes".into(), zero_inodes, vec!["s_inodes_count"]));
    let mut huge_block = original.clone();
    huge_block[1024 + 24] = 30; // s_log_block_size
    cases.push(("hugeblock".into(), huge_block, vec!["s_log_block_size"]));

    // Damage the reader only meets while writing the layer, after the plan was made.
    let (fixture, dir_block, extent_root) = damaged_ext4_fixture(dir);
    let put16 = |d: &mut Vec<u8>, at: u64, v: u16| {
        d[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes())
    };
    let mut rec_len0 = fixture.clone();
    put16(&mut rec_len0, dir_block + 4, 0);
    cases.push(("reclen0.ext4".into(), rec_len0, vec!["rec_len"]));
    let mut bad_extent = fixture.clone();
    put16(&mut bad_extent, extent_root, 0x1234); // eh_magic
    cases.push(("extentmagic.ext4".into(), bad_extent, vec!["magic"]));
    let mut deep_extent = fixture.clone();
    put16(&mut deep_extent, extent_root + 6, 10); // eh_depth
    cases.push(("extentdepth.ext4".into(), deep_extent, vec!["depth"]));
    let mut past_end = fixture.clone();
    let at = (extent_root + 12 + 8) as usize; // the first extent's ee_start_lo
    past_end[at..at + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    cases.push(("extentpastend.ext4".into(), past_end, vec!["past the end"]));

    // Hostile tarballs: the archive is refused as a whole, naming the entry.
    let tars: &[(&str, &str, &[&str])] = &[
        (
            "dotdot.tar",
            "d('etc')\nf('etc/ok', b'ok')\nf('../../etc/passwd', b'bad')",
            &["entry \"../../etc/passwd\"", "climbs above the root"],
        ),
        (
            "absolute.tar",
            "d('etc')\nf('/etc/passwd', b'bad')",
            &["entry \"/etc/passwd\"", "absolute name"],
        ),
        (
            "symlink.tar",
            "d('etc')\nl('etc/cron.d', '/etc/cron.d')\nf('etc/cron.d/evil', b'* * * * * root sh')",
            &["entry \"etc/cron.d/evil\"", "below /etc/cron.d, a symlink"],
        ),
    ];
    for (name, body, says) in tars {
        let p = dir.join(name);
        python_tar(&p, body);
        cases.push((name.to_string(), std::fs::read(&p).unwrap(), says.to_vec()));
    }
    let truncated = dir.join("whole.tar");
    python_tar(&truncated, "d('etc')\nf('etc/big', bytes(range(256)) * 40)");
    let whole = std::fs::read(&truncated).unwrap();
    cases.push((
        "truncated.tar".into(),
        whole[..3000].to_vec(),
        vec!["truncated"],
    ));
    for gz in ["dotdot.tar", "symlink.tar"] {
        // Compressed, the same: the spool is indexed like a plain archive.
        tool("gzip", &["-k", dir.join(gz).to_str().unwrap()]);
        let name = format!("{gz}.gz");
        cases.push((
            name.clone(),
            std::fs::read(dir.join(&name)).unwrap(),
            vec![],
        ));
    }

    for (name, bytes, says) in &cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        for quiet in [true, false] {
            let mut args = vec!["import", p.to_str().unwrap(), "--tag", "bad"];
            if quiet {
                args.push("--quiet");
            }
            let start = std::time::Instant::now();
            let (status, stdout, stderr) = run_bounded(&env, &args);
            assert_eq!(status, 1, "{name}: exit 1, got {status} ({stderr})");
            assert!(stdout.is_empty(), "{name}: no image id: {stdout}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{name}: one line: {stderr:?}");
            let line = lines[0];
            assert!(
                line.starts_with("decant: ") && line.matches(p.to_str().unwrap()).count() == 1,
                "{name}: names the file once: {line}"
            );
            for s in says {
                assert!(line.contains(s), "{name}: says {s:?}: {line}");
            }
            for crash in ["panicked", "memory allocation", "RUST_BACKTRACE"] {
                assert!(!stderr.contains(crash), "{name}: {stderr}");
            }
            assert!(start.elapsed().as_secs() < 20, "{name}: bounded time");
            assert_eq!(env.store_state(), before, "{name}: the store is unchanged");
        }
    }
    // The undamaged fixture imports under the same limit: the limit is not what failed above.
    let p = dir.join("fixture.ext4");
    std::fs::write(&p, &fixture).unwrap();
    let (status, _, stderr) = run_bounded(&env, &["import", p.to_str().unwrap(), "--quiet"]);
    assert_eq!(status, 0, "{stderr}");
    // And a tarball that only needs benign normalisation imports silently.
    let p = dir.join("benign.tar");
    python_tar(
        &p,
        "d('./etc/')\nf('./etc/hostname', b'x')\nf('etc//motd', b'm')\nd('srv/')",
    );
    let r = env
        .run(&["import", p.to_str().unwrap(), "--tag", "benign"])
        .ok();
    assert!(!r.stderr.contains("note:"), "nothing to say: {}", r.stderr);
}

#[test]
fn concurrent_imports_and_tags_share_one_store() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.decant()
                .args([
                    "import",
                    dump.to_str().unwrap(),
                    "--tag",
                    &format!("par:{i}"),
                    "--quiet",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let tags: Vec<_> = (0..4).map(|i| format!("par:{i}")).collect();
    let mut taggers = Vec::new();
    for t in &tags {
        taggers.push(
            env.decant()
                .args(["tag", t, &format!("{t}-again")])
                .spawn()
                .unwrap(),
        );
    }
    for mut t in taggers {
        assert!(t.wait().unwrap().success());
    }
    let listed = env.run(&["images", "--format", "json"]).ok().stdout;
    for t in &tags {
        let (repo, tag) = t.split_once(':').unwrap();
        assert!(
            listed.contains(&format!("\"{tag}\"")) && listed.contains(repo),
            "{t} listed: {listed}"
        );
        assert!(
            listed.contains(&format!("\"{tag}-again\"")),
            "{t}-again listed"
        );
    }
    // oci-image-tool's --ref filter misbehaves with 3 or more descriptors; without it, it
    // validates every image in the layout.
    tool(
        "oci-image-tool",
        &["validate", "--type", "image", env.store().to_str().unwrap()],
    );
}

#[test]
fn kill_9_during_import_leaves_a_valid_store() {
    let env = Env::new();
    let disk = example().join("disk.raw");
    env.run(&["import", disk.to_str().unwrap(), "--tag", "base", "--quiet"])
        .ok();
    for delay_ms in [5u64, 40, 120] {
        let mut child = env
            .decant()
            .args([
                "import",
                disk.to_str().unwrap(),
                "--tag",
                "victim",
                "--quiet",
                "--level",
                "9",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        tool(
            "oci-image-tool",
            &["validate", "--type", "image", env.store().to_str().unwrap()],
        );
    }
    // Running it again succeeds.
    env.run(&[
        "import",
        disk.to_str().unwrap(),
        "--tag",
        "victim",
        "--quiet",
    ])
    .ok();
    // Two names; one image or two, depending on whether both imports fell in the same second
    // (the config records the time of the import).
    let listed = env.run(&["images"]).ok().stdout;
    assert!(
        listed.contains("base") && listed.contains("victim"),
        "{listed}"
    );
    tool(
        "oci-image-tool",
        &["validate", "--type", "image", env.store().to_str().unwrap()],
    );
}

#[test]
fn inspect_disk_reports_the_plan_as_json() {
    let env = Env::new();
    let disk = example().join("disk.qcow2");
    let v: serde_json::Value = serde_json::from_str(
        &env.run(&["inspect-disk", disk.to_str().unwrap(), "--format", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["disk"]["format"], "qcow2");
    assert_eq!(v["disk"]["virtual_size"], 72 * 1024 * 1024);
    assert_eq!(v["scheme"], "gpt");
    let vols = v["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 3);
    assert_eq!(vols[0]["label"], "boot");
    assert_eq!(vols[1]["filesystem"], "ext4");
    assert_eq!(vols[1]["is_root"], true);
    assert_eq!(vols[2]["filesystem"], "Linux swap");
    assert_eq!(v["root"], "2");
    let mounts = v["mounts"].as_array().unwrap();
    let status = |mp: &str| {
        mounts
            .iter()
            .find(|m| m["mountpoint"] == mp)
            .map(|m| m["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("/").as_deref(), Some("root"));
    assert_eq!(status("/boot").as_deref(), Some("grafted"));
    assert_eq!(status("/proc").as_deref(), Some("skipped"));
    assert_eq!(status("none").as_deref(), Some("skipped"));
    assert_eq!(v["guest"]["architecture"], "amd64");
    assert_eq!(v["guest"]["os_release"]["id"], "decant-example");
    let human = env
        .run(&["inspect-disk", disk.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(
        human.contains("grafted") && human.contains("VOLUME"),
        "{human}"
    );
}

/// The summary of a partition dump and of a disk: what the source is, the fstab lines not
/// grafted and why, the layer's digest, the tag and the time taken.
#[test]
fn the_summary_names_the_source_the_mounts_the_digest_and_the_time() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    let r = env
        .run(&["import", dump.to_str().unwrap(), "--tag", "sum"])
        .ok();
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!("Imported {} (partition dump, 48.0 MiB)", dump.display()),
        "{}",
        r.stderr
    );
    for want in [
        "  not grafted: /boot (LABEL=boot): no volume on this disk matches LABEL=boot",
        "  skipped fstab swap none (/dev/sda3): swap",
        "  skipped fstab proc /proc (proc): proc is not a disk filesystem",
        "  skipped fstab tmpfs /tmp (tmpfs): tmpfs is not a disk filesystem",
        "  guest: decant example (busybox), amd64",
    ] {
        assert!(lines.contains(&want), "no {want:?} in:\n{}", r.stderr);
    }
    let id = r.stdout.trim();
    let v = inspect(&env, "sum");
    assert_eq!(v["Id"], id);
    let digest = format!(
        "  digest  {}",
        v["Manifest"]["Layers"][0]["digest"].as_str().unwrap()
    );
    let diff_id = format!("  diff_id {}", v["RootFS"]["Layers"][0].as_str().unwrap());
    assert!(
        lines.contains(&digest.as_str()),
        "{digest:?}:\n{}",
        r.stderr
    );
    assert!(
        lines.contains(&diff_id.as_str()),
        "{diff_id:?}:\n{}",
        r.stderr
    );
    let short = &id["sha256:".len()..][..12];
    assert!(
        lines.contains(&format!("Image {short} tagged sum:latest").as_str()),
        "{}",
        r.stderr
    );
    let done = lines.last().unwrap();
    assert!(
        done.starts_with("Done in ") && done.ends_with("/s read)"),
        "elapsed time last: {done}"
    );
    assert!(
        !r.stderr.contains(" , ") && !r.stderr.contains("()"),
        "{}",
        r.stderr
    );

    let disk = example().join("disk.qcow2");
    let r = env
        .run(&["import", disk.to_str().unwrap(), "--tag", "sum:disk"])
        .ok();
    let first = r.stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "Imported {} (qcow2 v3, 72.0 MiB virtual, gpt partition table)",
            disk.display()
        )
    );
    assert!(
        r.stderr.contains("  grafted /boot from volume 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("  skipped fstab swap none (/dev/sda3)"),
        "{}",
        r.stderr
    );
    // --quiet: the image id alone.
    let r = env.run(&["import", dump.to_str().unwrap(), "--quiet"]).ok();
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1);
}

/// Errors are one line naming the file once; a failed `rmi` is one line too.
#[test]
fn errors_are_one_line_naming_the_file_once() {
    let env = Env::new();
    let swap = env.path().join("sw.img");
    std::fs::File::create(&swap)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    tool("mkswap", &["-q", swap.to_str().unwrap()]);
    let r = env.run(&["import", swap.to_str().unwrap(), "--tag", "sw"]);
    assert_eq!(r.status, 1);
    assert_eq!(
        r.stderr,
        format!(
            "decant: {}: no filesystem decant can read: it holds Linux swap; decant reads ext2/3/4 filesystems\n",
            swap.display()
        )
    );
    let missing = env.path().join("nothere.img");
    let r = env.run(&["import", missing.to_str().unwrap()]);
    assert_eq!(r.status, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("nothere.img").count(), 1, "{}", r.stderr);

    env.run(&[
        "import",
        example().join("root.ext4").to_str().unwrap(),
        "--tag",
        "x",
        "--quiet",
    ])
    .ok();
    let r = env.run(&["rmi", "nothere"]);
    assert_eq!(r.status, 1);
    assert_eq!(r.stderr, "decant: No such image: nothere\n");
    // Several names: the ones that exist are removed; one line per name that does not.
    let r = env.run(&["rmi", "gone1", "x", "gone2"]);
    assert_eq!(r.status, 1);
    assert_eq!(
        r.stderr,
        "decant: No such image: gone1\ndecant: No such image: gone2\n"
    );
    assert!(r.stdout.contains("Untagged: x:latest"), "{}", r.stdout);
}

/// What the config of an import carries, as `decant inspect` and `decant history` show it.
#[test]
fn import_config_carries_the_guest_the_source_and_the_changes() {
    let env = Env::new();
    let dump = example().join("root.ext4");
    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "plain",
        "--quiet",
    ])
    .ok();
    let v = inspect(&env, "plain");
    assert_eq!(v["OsVersion"], "1.0", "VERSION_ID of /etc/os-release");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Architecture"], "amd64", "from /bin/sh's ELF header");
    assert_eq!(
        v["Config"]["Cmd"],
        serde_json::json!(["/bin/sh"]),
        "root's shell"
    );
    let labels = &v["Config"]["Labels"];
    assert_eq!(labels["io.decant.import.source"], "root.ext4");
    assert_eq!(labels["io.decant.import.format"], "raw");
    assert_eq!(labels["io.decant.import.root"], "disk");
    assert_eq!(labels["io.decant.import.os"], "decant example (busybox)");
    let hist = env.run(&["history", "plain"]).ok().stdout;
    assert!(hist.contains("decant import root.ext4"), "{hist}");

    env.run(&[
        "import",
        dump.to_str().unwrap(),
        "--tag",
        "changed",
        "--quiet",
        "--message",
        "moved off the old VM",
        "-c",
        "CMD [\"httpd\", \"-f\"]",
        "-c",
        "ENTRYPOINT [\"/bin/busybox\"]",
        "-c",
        "ENV A=1 B=two",
        "-c",
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "-c",
        "EXPOSE 80/tcp 53/udp",
        "-c",
        "LABEL owner=alice",
        "-c",
        "USER 1000:1000",
        "-c",
        "WORKDIR /srv/www",
        "-c",
        "VOLUME /data",
        "-c",
        "STOPSIGNAL SIGTERM",
    ])
    .ok();
    let c = &inspect(&env, "changed")["Config"];
    assert_eq!(c["Cmd"], serde_json::json!(["httpd", "-f"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/busybox"]));
    let envs: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for want in ["A=1", "B=two", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"] {
        assert!(envs.contains(&want), "{want} in {envs:?}");
    }
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c["Labels"]["owner"], "alice");
    assert_eq!(
        c["Labels"]["io.decant.import.source"], "root.ext4",
        "kept beside it"
    );
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/srv/www");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGTERM");
    let hist = env.run(&["history", "changed"]).ok().stdout;
    assert!(hist.contains("moved off the old VM"), "--message: {hist}");

    // A bad instruction is one line, and nothing is stored.
    let before = env.store_state();
    let r = env.run(&[
        "import",
        dump.to_str().unwrap(),
        "-c",
        "FROBNICATE x",
        "--quiet",
    ]);
    assert_eq!(r.status, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("FROBNICATE"), "{}", r.stderr);
    assert_eq!(env.store_state(), before);
}

/// A disk copied from a running VM (a journal that needs recovery): the import replays it in
/// memory and never writes the user's file: same bytes, same mtime, needs_recovery still set.
#[test]
fn journal_replay_never_writes_the_users_file() {
    let env = Env::new();
    let dir = env.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "before-crash\n").unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=dirty\n").unwrap();
    let img = dir.join("dirty.ext4");
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
            img.to_str().unwrap(),
            "16M",
        ],
    );
    // Journal a new content for the data block of /etc/hostname, committed but not checkpointed.
    let block = tool(
        "debugfs",
        &["-R", "blocks /etc/hostname", img.to_str().unwrap()],
    );
    let block = block.split_whitespace().next().unwrap();
    let mut data = b"after-replay\n".to_vec();
    data.resize(4096, 0);
    let newblock = dir.join("block");
    std::fs::write(&newblock, &data).unwrap();
    let script = dir.join("cmds");
    std::fs::write(
        &script,
        format!("jo\njw -b {block} {}\njc\n", newblock.display()),
    )
    .unwrap();
    tool(
        "debugfs",
        &["-w", "-f", script.to_str().unwrap(), img.to_str().unwrap()],
    );
    let needs_recovery = |img: &Path| {
        tool("dumpe2fs", &["-h", img.to_str().unwrap()])
            .lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
    };
    assert!(needs_recovery(&img), "the fixture's journal needs recovery");
    // Read-only for everybody but root: a write would have to force its way.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
    let hash = common::sha256_file(&img);
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let r = env
        .run(&["import", img.to_str().unwrap(), "--tag", "dirty"])
        .ok();
    assert!(
        r.stderr.contains("journal"),
        "the summary says so: {}",
        r.stderr
    );
    assert_eq!(
        common::sha256_file(&img),
        hash,
        "the file's bytes are unchanged"
    );
    let md = std::fs::metadata(&img).unwrap();
    assert_eq!(md.modified().unwrap(), mtime, "its mtime is unchanged");
    assert_eq!(md.permissions().mode() & 0o777, 0o444);
    assert!(needs_recovery(&img), "needs_recovery is still set");
    // And the replayed content is what the layer holds.
    let layer = layer_entries(&env, "dirty");
    assert_eq!(layer["etc/hostname"].head, b"after-replay\n");
}

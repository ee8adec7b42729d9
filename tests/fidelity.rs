//! Fidelity: a staged tree holding every edge case a VM's filesystem can hold is made into
//! ext2, ext3 and several ext4 variants with `mkfs.ext4 -d` (and into a tarball with GNU tar),
//! imported with the real binary, and the layer in the store is compared entry by entry with
//! the staged tree: type, mode, owner, mtime, size, content, link target, device numbers,
//! xattrs and hardlink groups.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{tool, Env, Meta};
use sha2::{Digest, Sha256};
use snapshot::layer::reader::LayerReader;
use snapshot::{EntryKind, FileTree};

/// Builds the staged tree (needs root: mknod, chown, setcap) and returns its path.
fn stage(dir: &Path) -> PathBuf {
    let s = dir.join("stage");
    let p = |rel: &str| s.join(rel);
    std::fs::create_dir_all(p("files")).unwrap();
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("b4095", 4095),
        ("b4096", 4096),
        ("mib_plus_one", 1 << 20 | 1),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(p(&format!("files/{name}")), data).unwrap();
    }
    std::fs::write(p("files/linked"), b"three names, one file").unwrap();
    std::fs::hard_link(p("files/linked"), p("files/linked2")).unwrap();
    std::fs::create_dir_all(p("other")).unwrap();
    std::fs::hard_link(p("files/linked"), p("other/linked3")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p("files/abs_link")).unwrap();
    std::os::unix::fs::symlink("../other/linked3", p("files/rel_link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("files/dangling")).unwrap();
    std::os::unix::fs::symlink("x".repeat(200), p("files/long_link")).unwrap();
    std::fs::create_dir_all(p("devices")).unwrap();
    tool("mkfifo", &[p("devices/fifo").to_str().unwrap()]);
    tool(
        "mknod",
        &[p("devices/null").to_str().unwrap(), "c", "1", "3"],
    );
    tool(
        "mknod",
        &[p("devices/loop9").to_str().unwrap(), "b", "7", "9"],
    );
    tool(
        "mknod",
        &[p("devices/bigminor").to_str().unwrap(), "c", "250", "70000"],
    );
    std::fs::create_dir_all(p("modes/sticky")).unwrap();
    for (name, mode) in [
        ("setuid", 0o4755),
        ("setgid", 0o2755),
        ("none", 0o000),
        ("odd", 0o1641),
    ] {
        std::fs::write(p(&format!("modes/{name}")), name).unwrap();
        std::fs::set_permissions(
            p(&format!("modes/{name}")),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    std::fs::set_permissions(
        p("modes/sticky"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::fs::create_dir_all(p("owners")).unwrap();
    for (name, owner) in [
        ("a", "1234:5678"),
        ("nobody", "65534:65534"),
        ("high", "4000000000:4000000001"),
    ] {
        std::fs::write(p(&format!("owners/{name}")), name).unwrap();
        tool(
            "chown",
            &["-h", owner, p(&format!("owners/{name}")).to_str().unwrap()],
        );
    }
    std::fs::create_dir_all(p("xattrs")).unwrap();
    std::fs::write(p("xattrs/small"), b"x").unwrap();
    tool(
        "setfattr",
        &[
            "-n",
            "user.note",
            "-v",
            "hello",
            p("xattrs/small").to_str().unwrap(),
        ],
    );
    tool(
        "setfattr",
        &[
            "-n",
            "trusted.secret",
            "-v",
            "0x00ff10",
            p("xattrs/small").to_str().unwrap(),
        ],
    );
    std::fs::write(p("xattrs/large"), b"y").unwrap();
    tool(
        "setfattr",
        &[
            "-n",
            "user.big",
            "-v",
            &"z".repeat(900),
            p("xattrs/large").to_str().unwrap(),
        ],
    );
    std::fs::write(p("xattrs/ping"), b"pretend ping").unwrap();
    tool(
        "setcap",
        &["cap_net_raw+ep", p("xattrs/ping").to_str().unwrap()],
    );
    // Sparse: 10 MiB with 4 KiB of data in the middle and a byte at the end (holes must come
    // back as zeros).
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(p("files/sparse")).unwrap();
        f.set_len(10 << 20).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
        // End with data: mkfs.ext4 -d with inline_data (e2fsprogs 1.47) records a file that ends
        // in a hole as ending at its last written block, which would test mkfs, not decant.
        f.seek(SeekFrom::Start((10 << 20) - 1)).unwrap();
        f.write_all(&[0xcd]).unwrap();
    }
    std::fs::create_dir_all(p("names")).unwrap();
    std::fs::write(
        s.join(std::ffi::OsStr::from_bytes(b"names/caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
    std::fs::write(
        s.join(std::ffi::OsStr::from_bytes(b"names/\xff\xfe")),
        b"bytes",
    )
    .unwrap();
    std::fs::write(p(&format!("names/{}", "n".repeat(250))), b"250").unwrap();
    std::fs::write(p(&format!("names/{}", "m".repeat(255))), b"255").unwrap();
    let mut deep = p("deep");
    for i in 0..40 {
        deep = deep.join(format!("level{i:02}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"deep").unwrap();
    std::fs::create_dir_all(p("big")).unwrap();
    for i in 0..3000 {
        std::fs::write(p(&format!("big/entry-{i:05}")), i.to_string()).unwrap();
    }
    std::fs::create_dir_all(p("times")).unwrap();
    for (name, when) in [
        ("y1960", "1960-06-01 12:00:00 UTC"),
        ("y2100", "2100-01-01 00:00:00 UTC"),
        ("nanos", "2020-02-02 02:02:02.123456789 UTC"),
    ] {
        std::fs::write(p(&format!("times/{name}")), name).unwrap();
        tool(
            "touch",
            &[
                "-h",
                "-d",
                when,
                p(&format!("times/{name}")).to_str().unwrap(),
            ],
        );
    }
    s
}

/// What a layer holds: path → (kind, mode, uid, gid, mtime, size, sha256, link target,
/// device, xattrs).
#[derive(Debug)]
struct LayerFile {
    kind: EntryKind,
    meta: Meta,
    xattrs: Vec<(String, String)>,
}

fn read_layer(env: &Env, tag: &str) -> BTreeMap<Vec<u8>, LayerFile> {
    let inspect: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", tag]).ok().stdout).unwrap();
    let manifest_digest = inspect[0]["Manifest"]["Digest"]
        .as_str()
        .expect("inspect shows the manifest digest")
        .to_string();
    let blob = |d: &str| {
        env.store()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "an import is a single layer");
    let f = std::fs::File::open(blob(layers[0]["digest"].as_str().unwrap())).unwrap();
    let mut r = LayerReader::new(std::io::BufReader::new(f)).unwrap();
    let mut out = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        r.content().read_to_end(&mut data).unwrap();
        let kind_char = match e.kind {
            EntryKind::File | EntryKind::Hardlink => '-',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::CharDevice => 'c',
            EntryKind::BlockDevice => 'b',
            EntryKind::Fifo => 'p',
        };
        let meta = Meta {
            kind: kind_char,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime.secs,
            size: e.size,
            sha256: (e.kind == EntryKind::File).then(|| hex(&Sha256::digest(&data))),
            target: if e.kind == EntryKind::Symlink {
                e.link_target.clone()
            } else {
                None
            },
            rdev: e.device,
        };
        let mut xattrs: Vec<(String, String)> = e
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    format!("0x{}", hex(v)),
                )
            })
            .collect();
        xattrs.sort();
        let path = e.path.clone();
        assert!(
            out.insert(
                path,
                LayerFile {
                    kind: e.kind,
                    meta,
                    xattrs
                }
            )
            .is_none(),
            "duplicate path in layer: {}",
            e.display_path()
        );
        if e.kind == EntryKind::Hardlink {
            let target = e.link_target.clone().unwrap();
            assert!(
                out.contains_key(&target),
                "{} links to {:?} which comes later or is missing",
                e.display_path(),
                String::from_utf8_lossy(&target)
            );
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares the layer with the staged tree. `narrow_times`: the filesystem keeps only 32-bit
/// seconds (128-byte inodes), so times outside 1901..2038 are not comparable.
fn compare(stage: &Path, layer: &BTreeMap<Vec<u8>, LayerFile>, narrow_times: bool, what: &str) {
    let staged = common::walk(stage);
    let staged_x = common::xattrs(stage);
    let mut problems = Vec::new();
    for (path, want) in &staged {
        let shown = String::from_utf8_lossy(path).into_owned();
        let Some(got) = layer.get(path) else {
            problems.push(format!("{shown}: missing from the layer"));
            continue;
        };
        let mut want = want.clone();
        let mut got_meta = got.meta.clone();
        if got.kind == EntryKind::Hardlink {
            // A later name of a hardlinked file: same metadata as the name carrying the data.
            got_meta.sha256 = want.sha256.clone();
            got_meta.size = want.size;
        }
        if want.kind == 'd' {
            want.size = 0;
        }
        if narrow_times && !(-(1i64 << 31)..(1i64 << 31)).contains(&want.mtime) {
            got_meta.mtime = want.mtime;
        }
        if got_meta != want {
            problems.push(format!(
                "{shown}:\n  staged {want:?}\n  layer  {got_meta:?}"
            ));
        }
        let wx = staged_x.get(&shown).cloned().unwrap_or_default();
        if got.xattrs != wx {
            problems.push(format!(
                "{shown}: xattrs staged {wx:?} layer {:?}",
                got.xattrs
            ));
        }
    }
    for path in layer.keys() {
        if !staged.contains_key(path) {
            problems.push(format!(
                "{}: in the layer but not staged",
                String::from_utf8_lossy(path)
            ));
        }
    }
    // Hardlink groups: the three names of files/linked are one file in the layer.
    let links: Vec<&LayerFile> = ["files/linked", "files/linked2", "other/linked3"]
        .iter()
        .map(|p| &layer[p.as_bytes()])
        .collect();
    assert_eq!(
        links.iter().filter(|l| l.kind == EntryKind::File).count(),
        1,
        "{what}: one name carries the data"
    );
    assert!(
        problems.is_empty(),
        "{what}: {} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_ext_variant_and_a_tarball_import_faithfully() {
    if !common::require_root(
        "staging devices, owners and capabilities needs mknod, chown and setcap",
    ) {
        return;
    }
    let env = Env::new();
    let stage = stage(env.path());
    let ino = std::fs::metadata(stage.join("files/linked")).unwrap().ino();
    assert_eq!(
        std::fs::metadata(stage.join("other/linked3"))
            .unwrap()
            .ino(),
        ino
    );
    let variants: &[(&str, &[&str], bool)] = &[
        ("ext2", &["-t", "ext2"], false),
        ("ext3", &["-t", "ext3"], false),
        ("ext4", &[], false),
        ("ext4-32bit-nocsum", &["-O", "^64bit,^metadata_csum"], false),
        ("ext4-inode128", &["-I", "128"], true),
        ("ext4-block1k", &["-b", "1024"], false),
        ("ext4-inline", &["-O", "inline_data"], false),
        ("ext4-blockmap", &["-O", "^extent,^64bit,^flex_bg"], false),
    ];
    for (name, args, narrow) in variants {
        let img = env.path().join(format!("{name}.img"));
        let mut a: Vec<&str> = vec![
            "-q",
            "-F",
            "-d",
            stage.to_str().unwrap(),
            "-E",
            "root_owner=0:0",
        ];
        if !args.contains(&"-b") {
            a.extend_from_slice(&["-b", "4096"]); // mke2fs would pick 1 KiB blocks for a small fs
        }
        a.extend_from_slice(args);
        a.extend_from_slice(&[img.to_str().unwrap(), "160M"]);
        tool("mkfs.ext4", &a);
        if !narrow {
            // mkfs.ext4 -d (e2fsprogs 1.47) drops the epoch bits of times past 2038: put the
            // staged time back the way a running kernel would have written it.
            tool(
                "debugfs",
                &[
                    "-w",
                    "-R",
                    "sif /times/y2100 mtime 21000101000000",
                    img.to_str().unwrap(),
                ],
            );
        }
        let tag = format!("fidelity:{name}");
        env.run(&["import", img.to_str().unwrap(), "--tag", &tag, "--quiet"])
            .ok();
        let mut layer = read_layer(&env, &tag);
        // mkfs.ext4 makes lost+found; the policy leaves it out. Nothing else may differ.
        assert!(
            !layer.contains_key(b"lost+found".as_slice()),
            "{name}: lost+found left out by policy"
        );
        layer.remove(b"lost+found".as_slice());
        compare(&stage, &layer, *narrow, name);
    }
    let tarball = env.path().join("stage.tar.gz");
    tool(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-C",
            stage.to_str().unwrap(),
            "-czf",
            tarball.to_str().unwrap(),
            ".",
        ],
    );
    env.run(&[
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "fidelity:tar",
        "--quiet",
    ])
    .ok();
    compare(&stage, &read_layer(&env, "fidelity:tar"), false, "tarball");
}

/// `umoci unpack` of an imported image gives back the staged tree, entry by entry: type, mode,
/// owner, size, content, link target, device numbers, xattrs (file capabilities included),
/// hardlink groups, and mtimes (umoci sets them on every entry, symlinks and directories too).
#[test]
fn umoci_unpack_gives_back_the_staged_tree() {
    if !common::require_root(
        "staging devices, owners and capabilities, and unpacking them, needs root",
    ) {
        return;
    }
    let env = Env::new();
    let stage = stage(env.path());
    let img = env.path().join("umoci.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            stage.to_str().unwrap(),
            "-E",
            "root_owner=0:0",
            img.to_str().unwrap(),
            "160M",
        ],
    );
    tool(
        "debugfs",
        &[
            "-w",
            "-R",
            "sif /times/y2100 mtime 21000101000000",
            img.to_str().unwrap(),
        ],
    );
    env.run(&[
        "import",
        img.to_str().unwrap(),
        "--tag",
        "umoci:1",
        "--quiet",
    ])
    .ok();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store().join("index.json")).unwrap()).unwrap();
    let full = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the tag's full reference")
        .to_string();
    let bundle = env.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{full}", env.store().display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let staged = common::walk(&stage);
    let unpacked = common::walk(&rootfs);
    let mut problems = Vec::new();
    for (path, want) in &staged {
        let shown = String::from_utf8_lossy(path);
        match unpacked.get(path) {
            None => problems.push(format!("{shown}: missing from the bundle")),
            Some(got) => {
                let mut want = want.clone();
                if want.kind == 'd' {
                    // A directory's size is the filesystem's business, not the image's.
                    want.size = 0;
                }
                let mut got = got.clone();
                if got.kind == 'd' {
                    got.size = 0;
                }
                if got != want {
                    problems.push(format!("{shown}:\n  staged   {want:?}\n  unpacked {got:?}"));
                }
            }
        }
    }
    for path in unpacked.keys() {
        if !staged.contains_key(path) {
            problems.push(format!(
                "{}: in the bundle but not staged",
                String::from_utf8_lossy(path)
            ));
        }
    }
    let (sx, ux) = (common::xattrs(&stage), common::xattrs(&rootfs));
    if sx != ux {
        problems.push(format!("xattrs:\n  staged   {sx:?}\n  unpacked {ux:?}"));
    }
    assert!(
        ux.get("xattrs/ping")
            .is_some_and(|x| x.iter().any(|(k, _)| k == "security.capability")),
        "the file capability is in the bundle: {ux:?}"
    );
    let ino = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(
        ino("files/linked"),
        ino("files/linked2"),
        "one hardlink group"
    );
    assert_eq!(
        ino("files/linked"),
        ino("other/linked3"),
        "one hardlink group"
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

//! Layer writer and reader: round trips for every entry kind and edge, checks with real peers
//! (GNU tar, gzip, zstd, python3's tarfile), determinism across thread counts, refused inputs,
//! and damaged blobs.

use std::io::{Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snapshot::layer::{
    write_tree, Compression, LayerError, LayerOptions, LayerReader, LayerSummary, LayerWriter,
};
use snapshot::{path_order, Entry, EntryKind, FileTree, Timestamp};

/// A version-2 file capability (cap_net_raw plus two bits whose byte is 0x0a, a newline, to
/// prove binary values survive pax).
fn capability() -> Vec<u8> {
    let mut v = vec![0x01, 0x00, 0x00, 0x02];
    v.extend_from_slice(&(0x2000u32 | 0x0a).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

fn file(path: &[u8], mode: u32, data: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = Entry::new(path, EntryKind::File, mode);
    e.size = data.len() as u64;
    e.mtime = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    (e, data.to_vec())
}

fn dir(path: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = Entry::new(path, EntryKind::Dir, 0o755);
    e.mtime = Timestamp {
        secs: 1_600_000_000,
        nanos: 0,
    };
    (e, Vec::new())
}

/// Compressible but not trivial content spanning several gzip chunks.
fn big_content(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x: u32 = 12345;
    while v.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let word = ["alpha ", "beta ", "gamma ", "delta\n", "epsilon "][(x >> 16) as usize % 5];
        v.extend_from_slice(word.as_bytes());
        if (x >> 8).is_multiple_of(7) {
            v.push((x >> 3) as u8);
        }
    }
    v.truncate(len);
    v
}

/// Every kind and edge the writer must carry, in path order.
fn sample() -> Vec<(Entry, Vec<u8>)> {
    let mut v = vec![dir(b"bin"), dir(b"dev"), dir(b"hl"), dir(b"odd")];
    v.push(file(b"bin/big", 0o755, &big_content(1_500_000)));
    let (mut ping, data) = file(b"bin/ping", 0o4755, b"\x7fELF fake ping");
    ping.xattrs = vec![
        (b"security.capability".to_vec(), capability()),
        (
            b"security.selinux".to_vec(),
            b"system_u:object_r:bin_t:s0".to_vec(),
        ),
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"user.empty".to_vec(), Vec::new()),
        (b"user.note".to_vec(), b"hello=world\n".to_vec()),
        (b"user.overlay.origin".to_vec(), b"x".to_vec()),
    ];
    v.push((ping, data));
    let mut sh = Entry::new(&b"bin/sh"[..], EntryKind::Symlink, 0o777);
    sh.link_target = Some(b"ping".to_vec());
    v.push((sh, Vec::new()));
    let mut null = Entry::new(&b"dev/null"[..], EntryKind::CharDevice, 0o666);
    null.device = Some((1, 3));
    v.push((null, Vec::new()));
    let mut loop0 = Entry::new(&b"dev/loop0"[..], EntryKind::BlockDevice, 0o660);
    loop0.device = Some((7, 0));
    loop0.gid = 6;
    v.push((loop0, Vec::new()));
    v.push((
        Entry::new(&b"dev/pipe"[..], EntryKind::Fifo, 0o600),
        Vec::new(),
    ));
    for name in [&b"hl/a"[..], b"hl/b", b"hl/c"] {
        let (mut e, d) = file(name, 0o644, b"shared content\n");
        e.hardlink_key = Some((1, 77));
        v.push((e, d));
    }
    let mut d = Entry::new(&b"hl/d"[..], EntryKind::Hardlink, 0o644);
    d.link_target = Some(b"hl/a".to_vec());
    v.push((d, Vec::new()));
    // Times: before 1970 with a fraction, far past the ustar field, nanoseconds.
    let (mut old, d) = file(b"odd/old", 0o640, b"old");
    old.mtime = Timestamp {
        secs: -86_400 * 365 - 1,
        nanos: 250_000_000,
    };
    v.push((old, d));
    let (mut future, d) = file(b"odd/future", 0o600, b"future");
    future.mtime = Timestamp {
        secs: 1 << 40,
        nanos: 0,
    };
    v.push((future, d));
    let (mut nanos, d) = file(b"odd/nanos", 0o1777 & 0o7777, b"n");
    nanos.mtime = Timestamp {
        secs: 1_700_000_000,
        nanos: 123_456_789,
    };
    nanos.mode = 0o2755;
    v.push((nanos, d));
    let (mut big_uid, d) = file(b"odd/uid", 0o644, b"u");
    big_uid.uid = 4_000_000_000;
    big_uid.gid = 3_000_000_000;
    v.push((big_uid, d));
    v.push(file(b"odd/name-\xff\xfe-latin1", 0o644, b"not utf-8"));
    v.push(file("odd/ünïcödé".as_bytes(), 0o644, b"utf-8"));
    v.push(file(b"odd/empty", 0o644, b""));
    let mut long_link = Entry::new(&b"odd/zlink"[..], EntryKind::Symlink, 0o777);
    long_link.link_target = Some([&b"../"[..]; 60].concat());
    v.push((long_link, Vec::new()));
    // 40 nested directories and a 250-byte file path inside them.
    let mut p = b"deep".to_vec();
    v.push(dir(&p));
    for i in 0..39 {
        p.extend_from_slice(format!("/d{i:02}").as_bytes());
        v.push(dir(&p));
    }
    let mut name = p.clone();
    name.push(b'/');
    name.resize(250, b'f');
    v.push(file(&name, 0o644, b"deep file"));
    v.sort_by(|a, b| path_order(&a.0.path, &b.0.path));
    v
}

fn opts(compression: Compression, threads: usize) -> LayerOptions {
    LayerOptions {
        compression,
        threads,
        ..LayerOptions::default()
    }
}

fn write(entries: &[(Entry, Vec<u8>)], o: LayerOptions) -> (Vec<u8>, LayerSummary) {
    let mut w = LayerWriter::new(Vec::new(), o);
    for (e, data) in entries {
        w.append(e, &mut Cursor::new(data)).unwrap();
    }
    w.finish().unwrap()
}

fn read_all(blob: &[u8]) -> Vec<(Entry, Vec<u8>)> {
    let mut r = LayerReader::new(blob).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        r.content().read_to_end(&mut data).unwrap();
        out.push((e, data));
    }
    out
}

/// What the reader should give back for what was written.
fn expected(entries: &[(Entry, Vec<u8>)]) -> Vec<(Entry, Vec<u8>)> {
    let mut first: std::collections::HashMap<(u64, u64), Vec<u8>> = Default::default();
    entries
        .iter()
        .map(|(e, d)| {
            let mut e = e.clone();
            let mut d = d.clone();
            e.xattrs.retain(|(n, v)| {
                !v.is_empty()
                    && !n.starts_with(b"trusted.overlay.")
                    && !n.starts_with(b"user.overlay.")
                    && n != b"security.selinux"
            });
            if let Some(key) = e.hardlink_key.take() {
                if let Some(p) = first.get(&key) {
                    e.kind = EntryKind::Hardlink;
                    e.link_target = Some(p.clone());
                    e.size = 0;
                    d.clear();
                } else {
                    first.insert(key, e.path.clone());
                }
            }
            (e, d)
        })
        .collect()
}

#[test]
fn round_trip_every_kind_and_compression() {
    let entries = sample();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (blob, s) = write(&entries, opts(c, 2));
        assert_eq!(s.entries, entries.len() as u64);
        assert_eq!(s.size, blob.len() as u64);
        assert_eq!(s.media_type, c.media_type());
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        let back = read_all(&blob);
        let want = expected(&entries);
        assert_eq!(back.len(), want.len());
        for (got, want) in back.iter().zip(&want) {
            assert_eq!(got, want, "{c:?} {}", want.0.display_path());
        }
    }
}

#[test]
fn digests_match_the_bytes() {
    use sha2::{Digest, Sha256};
    fn hex(b: &[u8]) -> String {
        let d = Sha256::digest(b);
        let hex: String = d.iter().map(|x| format!("{x:02x}")).collect();
        format!("sha256:{hex}")
    }
    let entries = sample();
    let (plain, sp) = write(&entries, opts(Compression::None, 1));
    assert_eq!(sp.diff_id, hex(&plain));
    assert_eq!(sp.digest, sp.diff_id);
    assert_eq!(sp.tar_size, plain.len() as u64);
    assert_eq!(plain.len() % 512, 0);
    assert!(plain.ends_with(&[0u8; 1024]));
    for c in [Compression::Gzip, Compression::Zstd] {
        let (blob, s) = write(&entries, opts(c, 2));
        assert_eq!(
            s.diff_id, sp.diff_id,
            "{c:?}: the tar must not depend on compression"
        );
        assert_eq!(s.digest, hex(&blob));
        assert_eq!(s.tar_size, sp.tar_size);
    }
    // The gzip blob decompresses (with a second implementation) to exactly the tar.
    let (gz, _) = write(&entries, opts(Compression::Gzip, 2));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
}

#[test]
fn same_bytes_for_any_thread_count() {
    let mut entries = sample();
    // Enough data for many gzip chunks and several zstd jobs.
    let (e, _) = file(b"zz-huge", 0o644, b"");
    let big = big_content(20 << 20);
    let mut e = e;
    e.size = big.len() as u64;
    entries.push((e, big));
    for c in [Compression::Gzip, Compression::Zstd] {
        let base = write(&entries, opts(c, 1));
        for t in [2, 4] {
            let other = write(&entries, opts(c, t));
            assert_eq!(base.1, other.1, "{c:?} threads {t}");
            assert!(base.0 == other.0, "{c:?} threads {t}: bytes differ");
        }
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn gzip_and_zstd_tools_accept_the_blobs() {
    let entries = sample();
    let dir = tempfile::tempdir().unwrap();
    for (c, tool, name) in [
        (Compression::Gzip, "gzip", "l.tar.gz"),
        (Compression::Zstd, "zstd", "l.tar.zst"),
    ] {
        let (blob, _) = write(&entries, opts(c, 2));
        let p = dir.path().join(name);
        std::fs::write(&p, &blob).unwrap();
        run(Command::new(tool).arg("-t").arg(&p));
        let out = run(Command::new(tool).arg("-dc").arg(&p));
        let (plain, _) = write(&entries, opts(Compression::None, 1));
        assert!(out.stdout == plain, "{tool} -dc differs from the tar");
    }
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-h", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr must be installed");
    out.status.success().then_some(out.stdout)
}

#[test]
fn gnu_tar_extracts_what_was_written() {
    let entries = sample();
    let (blob, _) = write(&entries, opts(Compression::Gzip, 2));
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer.tar.gz");
    std::fs::write(&layer, &blob).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let listing = run(Command::new("tar").arg("-tvzf").arg(&layer));
    assert!(String::from_utf8_lossy(&listing.stderr).is_empty());
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
        .arg(&layer)
        .arg("-C")
        .arg(&root));
    for (e, data) in &entries {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
        let m = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|err| panic!("{} not extracted: {err}", e.display_path()));
        let what = e.display_path();
        let ft = m.file_type();
        match e.kind {
            EntryKind::File | EntryKind::Hardlink => assert!(ft.is_file(), "{what}"),
            EntryKind::Dir => assert!(ft.is_dir(), "{what}"),
            EntryKind::Symlink => {
                assert!(ft.is_symlink(), "{what}");
                let t = std::fs::read_link(&p).unwrap();
                assert_eq!(t.as_os_str().as_bytes(), e.link_target.as_deref().unwrap());
            }
            EntryKind::CharDevice => assert!(ft.is_char_device(), "{what}"),
            EntryKind::BlockDevice => assert!(ft.is_block_device(), "{what}"),
            EntryKind::Fifo => assert!(ft.is_fifo(), "{what}"),
        }
        if let Some((ma, mi)) = e.device {
            let rdev = m.rdev();
            let major = ((rdev >> 8) & 0xfff) as u32;
            let minor = ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32;
            assert_eq!((major, minor), (ma, mi), "{what}");
        }
        if e.kind == EntryKind::Hardlink {
            // A link entry's own metadata is not applied: it is the first name's inode.
            continue;
        }
        assert_eq!(m.uid(), e.uid, "{what} uid");
        assert_eq!(m.gid(), e.gid, "{what} gid");
        if e.kind != EntryKind::Symlink {
            assert_eq!(m.mode() & 0o7777, e.mode, "{what} mode");
        }
        if e.kind == EntryKind::File {
            assert_eq!(std::fs::read(&p).unwrap(), *data, "{what} content");
        }
        // Directories get their mtime changed by later extraction only if tar fails to restore
        // it; GNU tar restores them at the end, so every kind is compared. Far-future times may
        // be clamped by the filesystem and are checked through python instead.
        if e.mtime.secs < (1 << 33) && e.kind != EntryKind::Symlink {
            assert_eq!(m.mtime(), e.mtime.secs, "{what} mtime");
            assert_eq!(
                m.mtime_nsec(),
                i64::from(e.mtime.nanos),
                "{what} mtime nanos"
            );
        }
    }
    let ping = root.join("bin/ping");
    assert_eq!(getxattr(&ping, "security.capability"), Some(capability()));
    assert_eq!(
        getxattr(&ping, "user.note"),
        Some(b"hello=world\n".to_vec())
    );
    assert_eq!(getxattr(&ping, "security.selinux"), None);
    let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("hl/a"), ino("hl/b"));
    assert_eq!(ino("hl/a"), ino("hl/c"));
    assert_eq!(ino("hl/a"), ino("hl/d"));
}

#[test]
fn python_tarfile_reads_the_pax_headers() {
    let entries = sample();
    let (blob, _) = write(&entries, opts(Compression::Gzip, 2));
    let script = r#"
import sys, tarfile, os, json
out = []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as t:
    for m in t:
        out.append({
            "name": os.fsencode(m.name).hex(), "type": m.type.decode(), "mode": m.mode,
            "uid": m.uid, "gid": m.gid, "mtime": str(m.mtime), "size": m.size,
            "link": os.fsencode(m.linkname).hex(), "dev": [m.devmajor, m.devminor],
            "xattrs": {k: os.fsencode(v).hex() if isinstance(v, str) else v.hex()
                       for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")},
        })
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    child.stdin.take().unwrap().write_all(&blob).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = v.as_array().unwrap();
    let want = expected(&entries);
    assert_eq!(got.len(), want.len());
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    for (g, (e, _)) in got.iter().zip(&want) {
        let what = e.display_path();
        assert_eq!(g["name"], hex(&e.path), "{what}");
        assert_eq!(g["uid"], e.uid, "{what}");
        assert_eq!(g["gid"], e.gid, "{what}");
        assert_eq!(g["mode"], e.mode, "{what}");
        assert_eq!(g["size"], e.size, "{what}");
        let secs = e.mtime.secs as f64 + f64::from(e.mtime.nanos) / 1e9;
        let py: f64 = g["mtime"].as_str().unwrap().parse().unwrap();
        assert!((py - secs).abs() < 1e-3, "{what}: mtime {py} vs {secs}");
        if let Some(l) = &e.link_target {
            assert_eq!(g["link"], hex(l), "{what}");
        }
        if let Some((ma, mi)) = e.device {
            assert_eq!(g["dev"], serde_json::json!([ma, mi]), "{what}");
        }
        for (n, val) in &e.xattrs {
            let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(n));
            assert_eq!(g["xattrs"][&key], hex(val), "{what} {key}");
        }
        assert_eq!(
            g["xattrs"].as_object().unwrap().len(),
            e.xattrs.len(),
            "{what}"
        );
    }
}

#[test]
fn keep_selinux_and_clamp_mtime() {
    let entries = sample();
    let o = LayerOptions {
        keep_selinux: true,
        clamp_mtime: Some(1_650_000_000),
        ..opts(Compression::None, 1)
    };
    let (blob, _) = write(&entries, o);
    for (e, _) in read_all(&blob) {
        assert!(
            e.mtime
                <= Timestamp {
                    secs: 1_650_000_000,
                    nanos: 0
                }
        );
        if e.path == b"bin/ping" {
            assert!(e.xattrs.iter().any(|(n, _)| n == b"security.selinux"));
        }
        if e.path == b"odd/old" {
            assert_eq!(e.mtime.secs, -86_400 * 365 - 1, "earlier times are kept");
        }
    }
}

struct VecTree {
    entries: std::vec::IntoIter<(Entry, Vec<u8>)>,
    content: Cursor<Vec<u8>>,
}

impl FileTree for VecTree {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        Ok(self.entries.next().map(|(e, d)| {
            self.content = Cursor::new(d);
            e
        }))
    }
    fn content(&mut self) -> &mut dyn Read {
        &mut self.content
    }
}

#[test]
fn write_tree_equals_append_and_reader_feeds_writer() {
    let entries = sample();
    let (blob, s) = write(&entries, opts(Compression::Gzip, 2));
    let mut tree = VecTree {
        entries: entries.clone().into_iter(),
        content: Cursor::new(Vec::new()),
    };
    let (blob2, s2) = write_tree(&mut tree, Vec::new(), opts(Compression::Gzip, 2)).unwrap();
    assert_eq!(s, s2);
    assert!(blob == blob2);
    // A layer read back and written again gives the same tar (hardlinks are now link
    // entries, which the writer passes through).
    let mut reader = LayerReader::new(&blob[..]).unwrap();
    let (_, s3) = write_tree(&mut reader, Vec::new(), opts(Compression::Gzip, 2)).unwrap();
    assert_eq!(s3.diff_id, s.diff_id);
}

fn append_err(entries: &[(Entry, Vec<u8>)], o: LayerOptions) -> LayerError {
    let mut w = LayerWriter::new(Vec::new(), o);
    for (e, data) in entries {
        if let Err(err) = w.append(e, &mut Cursor::new(data)) {
            return err;
        }
    }
    panic!("expected an error");
}

#[test]
fn refused_inputs() {
    let o = || opts(Compression::Gzip, 2);
    let e = append_err(&[file(b"b", 0o644, b""), file(b"a", 0o644, b"")], o());
    assert!(e.to_string().contains("/a: duplicate or unsorted"), "{e}");
    let e = append_err(&[file(b"a", 0o644, b""), file(b"a", 0o644, b"")], o());
    assert!(e.to_string().contains("duplicate or unsorted"), "{e}");
    let e = append_err(&[dir(b"a"), file(b"a/.wh.x", 0o644, b"")], o());
    assert!(matches!(e, LayerError::Whiteout { .. }), "{e}");
    let e = append_err(&[dir(b".wh.dir")], o());
    assert!(e.to_string().contains("/.wh.dir"), "{e}");
    let allowed = LayerOptions {
        allow_whiteouts: true,
        ..o()
    };
    let (blob, _) = write(&[dir(b"a"), file(b"a/.wh..wh..opq", 0, b"")], allowed);
    assert_eq!(read_all(&blob)[1].0.path, b"a/.wh..wh..opq");
    let (mut short, _) = file(b"short", 0o644, b"");
    short.size = 100;
    let e = append_err(&[(short, vec![1; 10])], o());
    assert!(
        e.to_string()
            .contains("/short: content ended after 10 of 100 bytes"),
        "{e}"
    );
    for bad in [&b"/abs"[..], b"a//b", b"a/../b", b"dir/", b"", b"nul\0"] {
        let e = append_err(&[file(bad, 0o644, b"")], o());
        assert!(matches!(e, LayerError::InvalidPath { .. }), "{e}");
    }
    let link = Entry::new(&b"l"[..], EntryKind::Symlink, 0o777);
    let e = append_err(&[(link, Vec::new())], o());
    assert!(matches!(e, LayerError::MissingLinkTarget { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn hostile_blobs_give_errors_not_panics() {
    let entries = sample();
    let (plain, _) = write(&entries, opts(Compression::None, 1));
    let (gz, _) = write(&entries, opts(Compression::Gzip, 2));
    let (zst, _) = write(&entries, opts(Compression::Zstd, 2));
    let start = Instant::now();
    let consume = |blob: &[u8]| -> Result<usize, std::io::Error> {
        let mut r = LayerReader::new(blob)?;
        let mut n = 0;
        while let Some(_e) = r.next_entry()? {
            std::io::copy(r.content(), &mut std::io::sink())?;
            n += 1;
        }
        Ok(n)
    };
    assert_eq!(consume(&plain).unwrap(), entries.len());
    // Truncations anywhere: inside headers, data, or at an entry boundary (a blob without its
    // end-of-archive marker is damaged, not a shorter layer).
    for cut in [
        1,
        100,
        511,
        512,
        513,
        2000,
        plain.len() / 2,
        plain.len() - 1030,
    ] {
        let r = consume(&plain[..cut]);
        assert!(r.is_err(), "cut at {cut} must fail");
        assert!(!r.unwrap_err().to_string().contains('\n'));
    }
    for blob in [&gz, &zst] {
        for cut in [3, 20, blob.len() / 2, blob.len() - 9] {
            assert!(consume(&blob[..cut]).is_err(), "compressed cut at {cut}");
        }
    }
    // Flipped bytes in every field of the first headers: checksum errors or bad fields.
    for off in (0..4096).step_by(37) {
        let mut b = plain.clone();
        b[off] ^= 0x5a;
        let _ = consume(&b);
    }
    let mut b = plain.clone();
    b[148] = b'9';
    let e = consume(&b).unwrap_err().to_string();
    assert!(e.contains("offset 0") && e.contains("checksum"), "{e}");
    // A pax header announcing an absurd size, and a bad pax record.
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(1 << 40);
    x.set_cksum();
    let e = consume(x.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("cap"), "{e}");
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(12);
    x.set_cksum();
    let mut blob = x.as_bytes().to_vec();
    blob.extend_from_slice(b"99 path=abc\n");
    blob.resize(1024 + 1024, 0);
    let e = consume(&blob).unwrap_err().to_string();
    assert!(e.contains("bad pax header"), "{e}");
    // A '..' path.
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..8].copy_from_slice(b"../evil\0");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    let mut blob = h.as_bytes().to_vec();
    blob.resize(2048, 0);
    let e = consume(&blob).unwrap_err().to_string();
    assert!(e.contains("'..'"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn reader_accepts_gnu_tar_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let long = "x".repeat(150);
    std::fs::create_dir_all(src.join(&long)).unwrap();
    std::fs::write(src.join(&long).join("f"), b"data").unwrap();
    std::os::unix::fs::symlink("f", src.join("s")).unwrap();
    for format in ["gnu", "pax", "ustar"] {
        let t = tmp.path().join(format!("{format}.tar"));
        let st = Command::new("tar")
            .args(["--format", format, "-cf"])
            .arg(&t)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .expect("GNU tar must be installed");
        if format == "ustar" {
            // ustar cannot hold the 152-byte directory name: GNU tar refuses it.
            continue;
        }
        assert!(st.success());
        let blob = std::fs::read(&t).unwrap();
        let got = read_all(&blob);
        let names: Vec<String> = got
            .iter()
            .map(|(e, _)| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        assert!(names.contains(&format!("{long}/f")), "{format}: {names:?}");
        let f = got.iter().find(|(e, _)| e.path.ends_with(b"/f")).unwrap();
        assert_eq!(f.1, b"data");
        let s = got.iter().find(|(e, _)| e.path == b"s").unwrap();
        assert_eq!(s.0.link_target.as_deref(), Some(&b"f"[..]));
    }
}

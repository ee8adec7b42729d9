//! The strip building blocks on layers made here: the flattened view of several layers
//! (whiteouts, opaque directories, a file replacing a directory), the one-layer candidate, the
//! plan over rules and packages, and damaged or foreign layers refused with one line.

use std::collections::BTreeMap;
use std::io::Cursor;

use snapshot::layer::{LayerOptions, LayerReader, LayerWriter};
use snapshot::store::Store;
use snapshot::strip::dpkg::Dpkg;
use snapshot::strip::flat::Flat;
use snapshot::strip::pkgdb::PackageDb;
use snapshot::strip::plan::{Group, Planner};
use snapshot::strip::rules::Rules;
use snapshot::{Entry, EntryKind, FileTree};

fn file(path: &str, data: &str) -> (Entry, Vec<u8>) {
    let mut e = Entry::new(path.as_bytes().to_vec(), EntryKind::File, 0o644);
    e.size = data.len() as u64;
    (e, data.as_bytes().to_vec())
}

fn dir(path: &str) -> (Entry, Vec<u8>) {
    (
        Entry::new(path.as_bytes().to_vec(), EntryKind::Dir, 0o755),
        Vec::new(),
    )
}

/// Stores a layer of `entries` (in path order) and returns its digest.
fn layer(store: &Store, entries: &[(Entry, Vec<u8>)]) -> String {
    let opts = LayerOptions {
        allow_whiteouts: true,
        threads: 1,
        ..LayerOptions::default()
    };
    let mut w = LayerWriter::new(store.blob_writer().unwrap(), opts);
    for (e, d) in entries {
        w.append(e, &mut Cursor::new(d)).unwrap();
    }
    let (blob, s) = w.finish().unwrap();
    blob.commit(Some(&s.digest)).unwrap();
    s.digest
}

fn paths(flat: &Flat) -> Vec<String> {
    flat.entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

/// Reads a stored layer back: path → content.
fn read_back(store: &Store, digest: &str) -> BTreeMap<String, String> {
    let f = std::fs::File::open(store.blob_path(digest).unwrap()).unwrap();
    let mut r = LayerReader::new(f).unwrap();
    let mut out = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut s = String::new();
        std::io::Read::read_to_string(r.content(), &mut s).unwrap();
        out.insert(String::from_utf8_lossy(&e.path).into_owned(), s);
    }
    out
}

fn two_layers(store: &Store) -> Vec<String> {
    let l1 = layer(
        store,
        &[
            dir("a"),
            file("a/x", "x1"),
            file("a/y", "y1"),
            dir("b"),
            file("b/z", "z1"),
            file("c", "c1"),
            dir("d"),
            file("d/old", "old"),
        ],
    );
    let l2 = layer(
        store,
        &[
            dir("a"),
            file("a/.wh.x", ""),
            file("a/y", "y2"),
            dir("b"),
            file("b/.wh..wh..opq", ""),
            file("b/w", "w2"),
            dir("c"),
            file("c/k", "k2"),
            file("d", "d is a file now"),
        ],
    );
    vec![l1, l2]
}

#[test]
fn flattening_applies_whiteouts_and_writes_one_layer() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let layers = two_layers(&store);
    let flat = Flat::read(&store, &layers).unwrap();
    assert_eq!(paths(&flat), ["a", "a/y", "b", "b/w", "c", "c/k", "d"]);
    assert_eq!(flat.entries[1].layer, 1);
    assert_eq!(flat.total_bytes(), 2 + 2 + 2 + 15);

    let none = vec![false; flat.entries.len()];
    let s = flat
        .write_candidate(&store, &none, &BTreeMap::new())
        .unwrap();
    let got = read_back(&store, &s.digest);
    assert_eq!(got["a/y"], "y2");
    assert_eq!(got["d"], "d is a file now");
    assert_eq!(got.len(), 7);
    // Same inputs, same bytes.
    let again = flat
        .write_candidate(&store, &none, &BTreeMap::new())
        .unwrap();
    assert_eq!(again.digest, s.digest);

    // Rules: remove b and c, keep c/k: c stays as the way to c/k.
    let mut rules = Rules::default();
    rules.remove("/b").unwrap();
    rules.remove("/c").unwrap();
    rules.keep("/c/k").unwrap();
    let p = Planner::new(&flat, None, &rules, false);
    let groups = p.rule_groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let refs: Vec<&Group> = groups.iter().collect();
    let c = p.candidate(&refs);
    let s = flat
        .write_candidate(&store, &c.removed, &c.replace)
        .unwrap();
    let got: Vec<String> = read_back(&store, &s.digest).into_keys().collect();
    assert_eq!(got, ["a", "a/y", "c", "c/k", "d"]);
    // A directory group splits into its children; a file group does not.
    let mut rules = Rules::default();
    rules.remove("/a").unwrap();
    let p = Planner::new(&flat, None, &rules, false);
    let g = p.rule_groups();
    let kids = p.split(&g[0]).unwrap();
    assert_eq!(kids.len(), 1);
    assert!(p.split(&kids[0]).is_none());
    assert_eq!(p.describe(&kids[0], &rules), "/a/y (--remove /a)");
}

#[test]
fn damaged_and_foreign_layers_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let layers = two_layers(&store);
    let blob = std::fs::read(store.blob_path(&layers[0]).unwrap()).unwrap();
    // Cut, and flipped, copies stored as their own blobs.
    let mut damaged = Vec::new();
    for cut in [10, blob.len() / 2, blob.len() - 4] {
        damaged.push(blob[..cut].to_vec());
    }
    for at in [12, blob.len() / 2, blob.len() - 6] {
        let mut b = blob.clone();
        b[at] ^= 0x55;
        damaged.push(b);
    }
    for d in damaged {
        let info = store.put_blob(&d).unwrap();
        let t0 = std::time::Instant::now();
        let e = Flat::read(&store, std::slice::from_ref(&info.digest)).unwrap_err();
        assert!(t0.elapsed().as_secs() < 5);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("layer {}", info.digest)), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // A foreign layer out of path order (plain tar from the tar crate).
    let mut b = tar::Builder::new(Vec::new());
    for p in ["z", "a"] {
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, p, &b"x"[..]).unwrap();
    }
    let info = store.put_blob(&b.into_inner().unwrap()).unwrap();
    let e = Flat::read(&store, &[info.digest]).unwrap_err().to_string();
    assert!(e.contains("/a is out of path order"), "{e}");
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(Flat::read(&store, &[missing]).is_err());
}

#[test]
fn package_plan_removes_owned_files_and_edits_status() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let status = "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 1\nDepends: a\n";
    let l = layer(
        &store,
        &[
            dir("bin"),
            file("bin/a", "a"),
            file("bin/b", "b"),
            dir("share"),
            dir("share/b"),
            file("share/b/data", "data"),
            dir("var"),
            dir("var/lib"),
            dir("var/lib/dpkg"),
            dir("var/lib/dpkg/info"),
            file("var/lib/dpkg/info/a.list", "/.\n/bin\n/bin/a\n"),
            file(
                "var/lib/dpkg/info/b.list",
                "/.\n/bin\n/bin/b\n/share\n/share/b\n/share/b/data\n",
            ),
            file("var/lib/dpkg/info/b.postinst", "#!/bin/sh\n"),
            file("var/lib/dpkg/status", status),
        ],
    );
    let flat = Flat::read(&store, &[l]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let p = Planner::new(&flat, Some(&db), &Rules::default(), false);
    let g = Group::Packages(vec!["b".into()]);
    let c = p.candidate(&[&g]);
    let s = flat
        .write_candidate(&store, &c.removed, &c.replace)
        .unwrap();
    let got = read_back(&store, &s.digest);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/a",
            "var",
            "var/lib",
            "var/lib/dpkg",
            "var/lib/dpkg/info",
            "var/lib/dpkg/info/a.list",
            "var/lib/dpkg/status"
        ]
    );
    assert_eq!(
        got["var/lib/dpkg/status"],
        "Package: a\nStatus: install ok installed\nVersion: 1\n\n"
    );
}

//! File rules on an image with a dpkg database: the files of installed packages they remove
//! are counted per package and recorded as dpkg `path-exclude` filters in
//! /etc/dpkg/dpkg.cfg.d/decant-strip, which the candidate layer adds (or extends, after an
//! earlier strip); files bisection kept are re-included; no database, no file.

use std::collections::BTreeMap;
use std::io::Cursor;

use snapshot::layer::{LayerOptions, LayerReader, LayerWriter};
use snapshot::store::Store;
use snapshot::strip::dpkg::{Dpkg, STRIP_CFG_HEADER};
use snapshot::strip::flat::Flat;
use snapshot::strip::pkgdb::PackageDb;
use snapshot::strip::plan::{Group, Planner};
use snapshot::strip::rules::Rules;
use snapshot::{Entry, EntryKind, FileTree};

const CFG: &str = "etc/dpkg/dpkg.cfg.d/decant-strip";

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

fn layer(store: &Store, entries: &[(Entry, Vec<u8>)]) -> String {
    let opts = LayerOptions {
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

/// The stored layer as (path, content) in its order.
fn read_back(store: &Store, digest: &str) -> Vec<(String, String)> {
    let f = std::fs::File::open(store.blob_path(digest).unwrap()).unwrap();
    let mut r = LayerReader::new(f).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut s = String::new();
        std::io::Read::read_to_string(r.content(), &mut s).unwrap();
        out.push((String::from_utf8_lossy(&e.path).into_owned(), s));
    }
    out
}

/// An image: package `app` with docs, a doc file of no package, and the dpkg database.
/// `cfg_dir`: whether /etc/dpkg/dpkg.cfg.d exists; `previous`: an earlier strip's file.
fn image(store: &Store, cfg_dir: bool, previous: Option<&str>) -> String {
    let status = "Package: app\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n";
    let list = "/.\n/usr\n/usr/bin\n/usr/bin/app\n/usr/share\n/usr/share/doc\n\
                /usr/share/doc/app\n/usr/share/doc/app/README\n/usr/share/doc/app/changelog.gz\n\
                /usr/share/doc/app/copyright\n";
    let mut e = vec![
        dir("etc"),
        dir("etc/dpkg"),
        file("etc/dpkg/dpkg.cfg", "# dpkg\n"),
    ];
    if cfg_dir {
        e.push(dir("etc/dpkg/dpkg.cfg.d"));
        if let Some(p) = previous {
            e.push(file(CFG, p));
        }
        e.push(file("etc/dpkg/dpkg.cfg.d/excludes", "path-exclude=/x/*\n"));
    }
    e.extend([
        dir("usr"),
        dir("usr/bin"),
        file("usr/bin/app", "app"),
        dir("usr/share"),
        dir("usr/share/doc"),
        dir("usr/share/doc/app"),
        file("usr/share/doc/app/README", "readme"),
        file("usr/share/doc/app/changelog.gz", "changes"),
        file("usr/share/doc/app/copyright", "licence"),
        file("usr/share/doc/notes", "not from a package"),
        dir("var"),
        dir("var/lib"),
        dir("var/lib/dpkg"),
        dir("var/lib/dpkg/info"),
        file("var/lib/dpkg/info/app.list", list),
        file("var/lib/dpkg/status", status),
    ]);
    layer(store, &e)
}

fn docs() -> Rules {
    let mut r = Rules::default();
    r.profile("docs").unwrap();
    r
}

fn filter_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn docs_profile_records_its_globs_for_dpkg() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let flat = Flat::read(&store, &[image(&store, true, None)]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let rules = docs();
    let p = Planner::new(&flat, Some(&db), &rules, false);
    let groups = p.rule_groups();
    let refs: Vec<&Group> = groups.iter().collect();
    let c = p.candidate(&refs);
    assert_eq!(c.rule_files, BTreeMap::from([("app".to_string(), 2)]));
    let note = c.rule_files_note().unwrap();
    assert!(
        note.contains("removed 2 file(s) of 1 installed package(s) (most: app 2"),
        "{note}"
    );
    assert!(note.contains("recorded as dpkg path-exclude"), "{note}");

    let s = flat
        .write_candidate(&store, &c.removed, &c.replace)
        .unwrap();
    let got = read_back(&store, &s.digest);
    let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    // Added in path order, inside the directory dpkg reads; the docs are gone but copyright.
    assert_eq!(
        names,
        [
            "etc",
            "etc/dpkg",
            "etc/dpkg/dpkg.cfg",
            "etc/dpkg/dpkg.cfg.d",
            CFG,
            "etc/dpkg/dpkg.cfg.d/excludes",
            "usr",
            "usr/bin",
            "usr/bin/app",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc/app",
            "usr/share/doc/app/copyright",
            "var",
            "var/lib",
            "var/lib/dpkg",
            "var/lib/dpkg/info",
            "var/lib/dpkg/info/app.list",
            "var/lib/dpkg/status",
        ]
    );
    let cfg = &got.iter().find(|(p, _)| p == CFG).unwrap().1;
    assert!(cfg.starts_with(STRIP_CFG_HEADER));
    assert_eq!(
        filter_lines(cfg),
        [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright"
        ]
    );
    // Same input, same bytes.
    let again = flat
        .write_candidate(&store, &c.removed, &c.replace)
        .unwrap();
    assert_eq!(again.digest, s.digest);
}

#[test]
fn files_bisection_kept_are_reincluded() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let flat = Flat::read(&store, &[image(&store, true, None)]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let p = Planner::new(&flat, Some(&db), &docs(), false);
    let groups = p.rule_groups();
    // Accept only the README; changelog.gz was "needed by a probe".
    let readme = groups
        .iter()
        .find(|g| {
            p.describe(g, &docs())
                .starts_with("/usr/share/doc/app/README")
        })
        .unwrap();
    let c = p.candidate(&[readme]);
    assert_eq!(c.rule_files, BTreeMap::from([("app".to_string(), 1)]));
    let cfg = String::from_utf8(c.replace[CFG.as_bytes()].clone()).unwrap();
    assert_eq!(
        filter_lines(&cfg),
        [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
            "path-include=/usr/share/doc/app/changelog.gz"
        ]
    );
    // Only the file of no package: nothing for dpkg.
    let notes = groups
        .iter()
        .find(|g| p.describe(g, &docs()).starts_with("/usr/share/doc/notes"))
        .unwrap();
    let c = p.candidate(&[notes]);
    assert!(c.rule_files.is_empty() && c.replace.is_empty());
    assert_eq!(c.rule_files_note(), None);
}

#[test]
fn an_earlier_strips_file_is_extended() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let before = format!("{STRIP_CFG_HEADER}path-exclude=/usr/share/man/*\n");
    let flat = Flat::read(&store, &[image(&store, true, Some(&before))]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let p = Planner::new(&flat, Some(&db), &docs(), false);
    let groups = p.rule_groups();
    let refs: Vec<&Group> = groups.iter().collect();
    let c = p.candidate(&refs);
    let s = flat
        .write_candidate(&store, &c.removed, &c.replace)
        .unwrap();
    let got = read_back(&store, &s.digest);
    let cfgs: Vec<&(String, String)> = got.iter().filter(|(p, _)| p == CFG).collect();
    assert_eq!(cfgs.len(), 1);
    assert_eq!(
        filter_lines(&cfgs[0].1),
        [
            "path-exclude=/usr/share/man/*",
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright"
        ]
    );
}

#[test]
fn no_database_or_no_config_dir_writes_no_file() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let flat = Flat::read(&store, &[image(&store, true, None)]).unwrap();
    let p = Planner::new(&flat, None, &docs(), false);
    let groups = p.rule_groups();
    let refs: Vec<&Group> = groups.iter().collect();
    let c = p.candidate(&refs);
    assert!(c.replace.is_empty() && c.rule_files.is_empty());

    let flat = Flat::read(&store, &[image(&store, false, None)]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let p = Planner::new(&flat, Some(&db), &docs(), false);
    let groups = p.rule_groups();
    let refs: Vec<&Group> = groups.iter().collect();
    let c = p.candidate(&refs);
    assert!(c.replace.is_empty());
    assert_eq!(c.rule_files.get("app"), Some(&2));
    assert!(c.rule_files_note().unwrap().contains("NOT recorded"));
}

#[test]
fn a_removal_rule_with_a_line_break_is_not_recorded() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let flat = Flat::read(&store, &[image(&store, true, None)]).unwrap();
    let db = PackageDb::Dpkg(Dpkg::from_flat(&flat).unwrap().unwrap());
    let mut rules = Rules::default();
    rules.remove("/usr/share/doc/app/READ[M\n]E").unwrap();
    let p = Planner::new(&flat, Some(&db), &rules, false);
    let groups = p.rule_groups();
    assert_eq!(groups.len(), 1, "the class matches README");
    let c = p.candidate(&[&groups[0]]);
    assert_eq!(c.rule_files.get("app"), Some(&1));
    assert!(c.replace.is_empty(), "{:?}", c.replace);
}

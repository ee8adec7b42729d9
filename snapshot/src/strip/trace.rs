//! `--trace` proposals: from the set of image paths a traced workload touched, what it never
//! needed, package by package and directory by directory. Pure (the tracing itself is
//! `runtime::trace`); the proposals go into the verified loop as ordinary groups, so nothing
//! here is trusted: every proposal is probed before it is kept.
//!
//! Packages: installed, not Essential/required, none of their files touched, and not needed by
//! a package that stays (the dependency closure of the touched and protected ones, every
//! alternative of an `a | b` kept: conservative). Each proposal is a package with its
//! dependents among the proposals, so any subset of accepted proposals leaves the database
//! consistent.
//! Directories: under `DIR_ROOTS` (/usr/share, /usr/lib, /opt, /srv, ...), the topmost
//! directories within `DIR_DEPTH` levels that hold no touched path. A symlink whose target is
//! touched counts as touched, since the workload may have gone through it.

use std::collections::{BTreeSet, HashMap};

use super::dpkg::Dpkg;
use super::flat::Flat;
use super::pkgdb::PackageDb;
use crate::layer::entry::EntryKind;

/// What a traced probe run saw, as the prober reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traced {
    /// Image paths (relative, no leading `/`) the workload opened, read, executed or wrote.
    pub touched: BTreeSet<Vec<u8>>,
    /// Events read (host-wide) and those on a file of the image.
    pub events: u64,
    pub matched: u64,
    /// Paths found in the probe containers' upper dirs.
    pub upper: u64,
    /// Why the trace may have missed files (queue overflow, a cap, an unreadable upper dir).
    pub incomplete: Vec<String>,
}

/// Where whole directories are proposed (relative to the image root).
pub const DIR_ROOTS: &[&str] = &[
    "usr/share",
    "usr/lib",
    "usr/lib64",
    "usr/libexec",
    "usr/local",
    "usr/include",
    "usr/src",
    "opt",
    "srv",
    "var/www",
    "var/cache",
    "home",
];
/// How many levels below a root a touched directory is opened up for untouched children
/// (`usr/lib/x86_64-linux-gnu/gconv` is 2 below `usr/lib`).
pub const DIR_DEPTH: usize = 2;
/// Most directory proposals (each becomes a rule; rules cost matching time per entry).
pub const MAX_DIR_PROPOSALS: usize = 2000;

/// The touched paths, with every symlink of the image whose target is touched (or holds a
/// touched path) added.
pub fn with_symlinks(flat: &Flat, touched: &BTreeSet<Vec<u8>>) -> BTreeSet<Vec<u8>> {
    let mut out = touched.clone();
    for e in &flat.entries {
        if e.kind != EntryKind::Symlink {
            continue;
        }
        let Some(t) = e.link_target.as_deref() else {
            continue;
        };
        let Some(target) = resolve(&e.path, t) else {
            continue;
        };
        let target = flat.resolve_top(&target);
        if holds(touched, &target) {
            out.insert(e.path.clone());
        }
    }
    out
}

/// The lexical target of a symlink at `link` (relative image path) pointing at `target`;
/// `None` when it climbs out of the image.
fn resolve(link: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    if !target.starts_with(b"/") {
        parts.extend(link.split(|&b| b == b'/'));
        parts.pop();
    }
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

/// Whether `path` or anything under it is in `set`.
pub fn holds(set: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    if path.is_empty() {
        return !set.is_empty();
    }
    if set.contains(path) {
        return true;
    }
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    set.range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix))
}

/// Whether package `key` has a touched file (its `.list` paths, also through a top-level
/// symlink such as merged /usr's `bin`).
fn package_touched(db: &Dpkg, flat: &Flat, key: &str, touched: &BTreeSet<Vec<u8>>) -> bool {
    db.packages.get(key).is_some_and(|p| {
        p.files
            .iter()
            .any(|f| touched.contains(f) || touched.contains(&flat.resolve_top(f)))
    })
}

/// The package proposals: each a package with its dependents among the proposals, requested
/// one first. `touched` should come from `with_symlinks`.
pub fn propose_packages(
    pdb: &PackageDb,
    flat: &Flat,
    touched: &BTreeSet<Vec<u8>>,
) -> Vec<Vec<String>> {
    // rpm images get directory proposals only (their dependencies are read by name, not
    // with the alternatives this walk needs).
    let PackageDb::Dpkg(db) = pdb else {
        return Vec::new();
    };
    let mut givers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (key, p) in &db.packages {
        if p.installed() {
            givers.entry(p.name.as_str()).or_default().push(key);
            for v in &p.provides {
                givers.entry(v.as_str()).or_default().push(key);
            }
        }
    }
    let mut gone: BTreeSet<String> = db
        .packages
        .iter()
        .filter(|(k, p)| p.installed() && !p.protected() && !package_touched(db, flat, k, touched))
        .map(|(k, _)| k.clone())
        .collect();
    // Give back what a staying package needs, until nothing staying lacks anything. Every
    // pass with a broken dependent gives back at least one package, so this ends.
    for _ in 0..=db.packages.len() {
        let broken = db.broken_by(&gone);
        if broken.is_empty() {
            break;
        }
        for (_, group) in broken {
            for alt in group.split(" | ") {
                for k in givers.get(alt).map(Vec::as_slice).unwrap_or_default() {
                    gone.remove(*k);
                }
            }
        }
    }
    gone.iter()
        .filter_map(|k| {
            super::run::package_groups(pdb, std::slice::from_ref(k), true, false)
                .ok()
                .and_then(|mut g| g.pop())
        })
        .collect()
}

/// The directory proposals (relative paths), in path order, and how many untouched
/// directories were left out because their name cannot be written as a glob or the cap was
/// reached. `touched` should come from `with_symlinks`.
pub fn propose_dirs(flat: &Flat, touched: &BTreeSet<Vec<u8>>) -> (Vec<Vec<u8>>, usize) {
    let parents = flat.parents();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    let mut roots: Vec<(usize, usize)> = DIR_ROOTS
        .iter()
        .filter_map(|r| flat.find(r.as_bytes()))
        .filter(|&i| {
            flat.entries
                .get(i)
                .is_some_and(|e| e.kind == EntryKind::Dir)
        })
        .map(|i| (i, 0))
        .collect();
    let mut offer = |i: usize, out: &mut Vec<Vec<u8>>| {
        let Some(e) = flat.entries.get(i) else { return };
        if out.len() >= MAX_DIR_PROPOSALS || !globbable(&e.path) {
            skipped += 1;
        } else {
            out.push(e.path.clone());
        }
    };
    // Children by parent, for the walk down.
    let mut kids: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, p) in parents.iter().enumerate() {
        if let Some(p) = p {
            kids.entry(*p).or_default().push(i);
        }
    }
    while let Some((i, depth)) = roots.pop() {
        let Some(e) = flat.entries.get(i) else {
            continue;
        };
        if !holds(touched, &e.path) {
            offer(i, &mut out);
            continue;
        }
        if depth >= DIR_DEPTH {
            continue;
        }
        for &k in kids.get(&i).map(Vec::as_slice).unwrap_or_default() {
            if flat
                .entries
                .get(k)
                .is_some_and(|c| c.kind == EntryKind::Dir)
            {
                roots.push((k, depth + 1));
            }
        }
    }
    out.sort();
    out.dedup();
    (out, skipped)
}

/// Whether a path can be a glob that matches exactly itself.
fn globbable(p: &[u8]) -> bool {
    std::str::from_utf8(p).is_ok_and(|s| {
        !s.contains(['*', '?', '[', ']'])
            && s.split('/')
                .all(|c| !c.is_empty() && c == c.trim() && c != "." && c != "..")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strip::flat::FlatEntry;

    fn flat(paths: &[(&str, EntryKind, Option<&str>)]) -> Flat {
        let mut entries: Vec<FlatEntry> = paths
            .iter()
            .map(|(p, k, t)| FlatEntry {
                path: p.as_bytes().to_vec(),
                kind: *k,
                size: 1,
                layer: 0,
                link_target: t.map(|t| t.as_bytes().to_vec()),
            })
            .collect();
        entries.sort_by(|a, b| crate::path_order(&a.path, &b.path));
        Flat::from_entries(entries)
    }

    fn set(p: &[&str]) -> BTreeSet<Vec<u8>> {
        p.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn strs(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    use EntryKind::{Dir, File, Symlink};

    fn tree() -> Flat {
        flat(&[
            ("bin", Symlink, Some("usr/bin")),
            ("usr", Dir, None),
            ("usr/bin", Dir, None),
            ("usr/bin/app", File, None),
            ("usr/bin/tool", File, None),
            ("usr/lib", Dir, None),
            ("usr/lib/libfoo.so.1", File, None),
            ("usr/lib/x86_64-linux-gnu", Dir, None),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", File, None),
            ("usr/lib/x86_64-linux-gnu/gconv", Dir, None),
            ("usr/lib/x86_64-linux-gnu/gconv/x.so", File, None),
            ("usr/share", Dir, None),
            ("usr/share/app", Dir, None),
            ("usr/share/app/data", File, None),
            ("usr/share/doc", Dir, None),
            ("usr/share/doc/app", Dir, None),
            ("usr/share/doc/app/README", File, None),
            ("usr/share/web", Dir, None),
            ("usr/share/web/current", Symlink, Some("../../../srv/v2")),
            ("usr/share/we*rd", Dir, None),
            ("srv", Dir, None),
            ("srv/v1", Dir, None),
            ("srv/v1/index.html", File, None),
            ("srv/v2", Dir, None),
            ("srv/v2/index.html", File, None),
            ("opt", Dir, None),
            ("opt/x", Dir, None),
            ("opt/x/y", File, None),
            ("var", Dir, None),
            ("var/lib", Dir, None),
            ("var/lib/dpkg", Dir, None),
            ("var/lib/dpkg/status", File, None),
        ])
    }

    #[test]
    fn symlinks_to_touched_paths_count_as_touched() {
        let f = tree();
        let t = with_symlinks(&f, &set(&["srv/v2/index.html", "usr/bin/app"]));
        assert!(t.contains(b"usr/share/web/current".as_slice()));
        assert!(t.contains(b"bin".as_slice()));
        assert!(holds(&t, b"usr/share/web"));
        assert!(!holds(&t, b"usr/share/we"));
        assert!(!holds(&t, b"srv/v1"));
        assert_eq!(resolve(b"a/b", b"../../.."), None);
        assert_eq!(resolve(b"a/b", b"/x/./y/"), Some(b"x/y".to_vec()));
    }

    #[test]
    fn untouched_directories_are_proposed_topmost_first() {
        let f = tree();
        let t = with_symlinks(
            &f,
            &set(&[
                "srv/v2/index.html",
                "usr/bin/app",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
            ]),
        );
        let (dirs, skipped) = propose_dirs(&f, &t);
        assert_eq!(
            strs(&dirs),
            vec![
                "opt",
                "srv/v1",
                "usr/lib/x86_64-linux-gnu/gconv",
                "usr/share/app",
                "usr/share/doc",
            ]
        );
        // `we*rd` cannot be a glob naming only itself.
        assert_eq!(skipped, 1);
        // Nothing touched: each root goes whole; var/lib (the database) is never a root.
        let (dirs, _) = propose_dirs(&f, &BTreeSet::new());
        assert_eq!(strs(&dirs), vec!["opt", "srv", "usr/lib", "usr/share"]);
        // Everything touched: nothing proposed.
        let all: BTreeSet<Vec<u8>> = f.entries.iter().map(|e| e.path.clone()).collect();
        assert!(propose_dirs(&f, &all).0.is_empty());
    }

    fn db() -> PackageDb {
        let status = "Package: base\nStatus: install ok installed\nPriority: required\nEssential: yes\nVersion: 1\nArchitecture: amd64\nDepends: libfoo1\n\n\
Package: libfoo1\nStatus: install ok installed\nPriority: optional\nVersion: 2\nArchitecture: amd64\nProvides: libfoo-abi\n\n\
Package: app\nStatus: install ok installed\nPriority: optional\nVersion: 3\nArchitecture: all\nDepends: libbar | libbaz, helper\n\n\
Package: helper\nStatus: install ok installed\nPriority: optional\nVersion: 1\nArchitecture: all\n\n\
Package: libbar\nStatus: install ok installed\nPriority: optional\nVersion: 1\nArchitecture: all\n\n\
Package: libbaz\nStatus: install ok installed\nPriority: optional\nVersion: 1\nArchitecture: all\n\n\
Package: tool\nStatus: install ok installed\nPriority: optional\nVersion: 4\nArchitecture: amd64\nDepends: docs\n\n\
Package: docs\nStatus: install ok installed\nPriority: optional\nVersion: 4\nArchitecture: all\n\n\
Package: gone\nStatus: deinstall ok config-files\nPriority: optional\nVersion: 1\nArchitecture: all\n";
        let mut files = HashMap::new();
        files.insert(b"var/lib/dpkg/status".to_vec(), status.as_bytes().to_vec());
        for (k, list) in [
            ("base", "/.\n/usr\n/usr/bin\n"),
            ("libfoo1", "/usr/lib/libfoo.so.1\n"),
            ("app", "/usr/bin/app\n/usr/share/app/data\n"),
            ("tool", "/bin/tool\n"),
            ("docs", "/usr/share/doc/app/README\n"),
        ] {
            files.insert(
                format!("var/lib/dpkg/info/{k}.list").into_bytes(),
                list.as_bytes().to_vec(),
            );
        }
        PackageDb::Dpkg(Dpkg::read(&files).unwrap().unwrap())
    }

    #[test]
    fn untouched_packages_are_proposed_with_their_dependents() {
        let f = tree();
        let d = db();
        // app is touched: it keeps helper and both alternatives it may use; base (Essential)
        // keeps libfoo1; tool is untouched and goes with docs, docs alone too.
        let t = with_symlinks(&f, &set(&["usr/bin/app"]));
        let mut p = propose_packages(&d, &f, &t);
        p.sort();
        assert_eq!(
            p,
            vec![
                vec!["docs".to_string(), "tool".to_string()],
                vec!["tool".to_string()],
            ]
        );
        // A touched file reached through merged /usr's `bin` symlink keeps its package.
        let t = with_symlinks(&f, &set(&["usr/bin/app", "usr/bin/tool"]));
        assert!(propose_packages(&d, &f, &t).is_empty());
        // Nothing touched: everything but the protected base and what it needs.
        let p = propose_packages(&d, &f, &BTreeSet::new());
        let names: BTreeSet<&str> = p.iter().flatten().map(String::as_str).collect();
        assert_eq!(
            names,
            ["app", "docs", "helper", "libbar", "libbaz", "tool"].into()
        );
        // Each proposal holds its dependents: removing libbar and libbaz needs app gone too.
        assert!(p.contains(&vec!["helper".to_string(), "app".to_string()]));
    }
}

//! The rpm database of an image (rpm 4.16+: `rpmdb.sqlite` under /var/lib/rpm or
//! /usr/lib/sysimage/rpm), read from the flattened tree with our own SQLite reader and rpm
//! header parser, and rewritten without removed packages by our own SQLite writer, so that
//! `rpm -qa`, `rpm -V` and scanners reading the database stay truthful. The older BerkeleyDB
//! `Packages` (RHEL 7/8) is recognised and said to be unread.
//!
//! Dependencies are names only, like dpkg's: REQUIRENAME against PROVIDENAME, package names and
//! file paths (file provides); versions are not compared, because strip only removes packages.
//! rpmlib() requirements and rich (boolean) dependencies are skipped: rpm itself satisfies the
//! former and the latter need an expression evaluator we do not have (said in the module).

pub mod header;
pub mod sqlite;
pub mod sqlwrite;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use header::{tag, Header};
use sqlite::{decode_record, Cell, Db, SchemaRow};

use super::StripError;

/// Where rpm keeps the sqlite database (the second is Fedora 36+'s, /var/lib/rpm links to it).
pub const SQLITE_PATHS: [&[u8]; 2] = [
    b"var/lib/rpm/rpmdb.sqlite",
    b"usr/lib/sysimage/rpm/rpmdb.sqlite",
];
/// The BerkeleyDB database of rpm < 4.16.
pub const BDB_PATHS: [&[u8]; 2] = [b"var/lib/rpm/Packages", b"usr/lib/sysimage/rpm/Packages"];
/// Most packages (a full Fedora install has ~3 000).
pub const MAX_PACKAGES: usize = 200_000;
/// Packages strip never removes without `--force`: rpm has no Essential flag, and without
/// these the image can no longer install or verify anything.
pub const PROTECTED: [&str; 5] = ["rpm", "glibc", "bash", "filesystem", "setup"];
/// rpmlib(...) requirements are flagged RPMSENSE_RPMLIB.
const RPMSENSE_RPMLIB: u64 = 1 << 24;
/// FILEFLAGS bit of a %config file.
const RPMFILE_CONFIG: u64 = 1;

/// Whether strip needs the content of this path in memory.
pub fn capture(path: &[u8]) -> bool {
    SQLITE_PATHS.iter().any(|p| {
        path == *p || (path.starts_with(p) && path.get(p.len()..) == Some(b"-wal".as_slice()))
    })
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    /// `[epoch:]version-release`.
    pub evr: String,
    pub arch: String,
    /// The row in Packages.
    pub hnum: i64,
    /// SIZE (or LONGSIZE): what rpm says the files take.
    pub size: u64,
    /// REQUIRENAME without rpmlib() and rich dependencies.
    pub requires: Vec<String>,
    pub provides: Vec<String>,
    /// Files and directories, without the leading `/`.
    pub files: Vec<Vec<u8>>,
    /// %config files, without the leading `/`.
    pub conffiles: Vec<Vec<u8>>,
    /// The absolute names as the header has them, for file provides.
    abs_files: Vec<Vec<u8>>,
}

/// One b-tree of the database with, per cell, the package row it belongs to (if any).
#[derive(Debug, Clone)]
struct TreeData {
    schema: SchemaRow,
    cells: Vec<(Cell, Option<i64>)>,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Rpm {
    /// Where it is in the image (no leading `/`).
    pub path: Vec<u8>,
    pub packages: BTreeMap<String, RpmPackage>,
    /// For each name some package requires: the packages giving it (by name, Provides, file).
    givers: HashMap<String, Vec<String>>,
    tables: Tables,
}

/// Every b-tree of the file with what the writer needs to rebuild it without some packages.
#[derive(Debug, Clone)]
struct Tables {
    page_size: usize,
    header: [u8; 100],
    trees: Vec<TreeData>,
    /// Schema rows without a b-tree (views, triggers), kept as they are.
    rowless: Vec<SchemaRow>,
    /// Why the database cannot be rewritten (a table we do not understand), if so.
    unwritable: Option<String>,
}

/// A note for an image with an rpm database we do not read (BerkeleyDB), if it has one.
pub fn unread_note(flat: &super::flat::Flat) -> Option<String> {
    let has_sqlite = SQLITE_PATHS.iter().any(|p| flat.find(p).is_some());
    let bdb = BDB_PATHS.iter().find(|p| flat.find(p).is_some())?;
    (!has_sqlite).then(|| {
        format!(
            "/{}: a BerkeleyDB rpm database (rpm < 4.16) is not read: no per-package figures, file rules only",
            String::from_utf8_lossy(bdb)
        )
    })
}

fn evr(h: &Header) -> String {
    let v = h.string(tag::VERSION).unwrap_or_default();
    let r = h.string(tag::RELEASE).unwrap_or_default();
    match h.ints(tag::EPOCH).first() {
        Some(e) => format!("{e}:{v}-{r}"),
        None => format!("{v}-{r}"),
    }
}

impl Rpm {
    /// Reads the database from captured files; `None` when the image has no rpmdb.sqlite.
    pub fn read(files: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Option<Rpm>, StripError> {
        let Some((path, data)) = SQLITE_PATHS
            .iter()
            .find_map(|p| files.get(*p).map(|d| (p.to_vec(), d)))
        else {
            return Ok(None);
        };
        let file = format!("/{}", String::from_utf8_lossy(&path));
        let err = |why: String| StripError::Rpm {
            file: file.clone(),
            why,
        };
        let mut wal = path.clone();
        wal.extend_from_slice(b"-wal");
        if let Some(w) = files.get(&wal).filter(|w| !w.is_empty()) {
            return Err(err(format!(
                "a {}-byte write-ahead log beside it is not checkpointed; run `rpm -qa` in the image once (it checkpoints) and import again",
                w.len()
            )));
        }
        let db = Db::open(&file, data).map_err(|e| err(e.what))?;
        let tables = Tables::read(&db).map_err(err)?;
        let Some(pk) = tables
            .trees
            .iter()
            .find(|t| t.schema.kind == "table" && t.schema.name == "Packages")
            .map(|t| t.cells.as_slice())
        else {
            return Err(err("sqlite_schema: no Packages table".into()));
        };
        let mut packages = BTreeMap::new();
        if pk.len() > MAX_PACKAGES {
            return Err(err(format!("more than {MAX_PACKAGES} packages")));
        }
        for (c, _) in pk {
            let hnum = c.rowid.unwrap_or(0);
            let v =
                decode_record(&c.payload).map_err(|w| err(format!("Packages row {hnum}: {w}")))?;
            let blob = v
                .get(1)
                .and_then(sqlite::Value::as_bytes)
                .ok_or_else(|| err(format!("Packages row {hnum}: no header blob")))?;
            let h = Header::parse(blob).map_err(|w| err(format!("Packages row {hnum}: {w}")))?;
            let p = package(&h, hnum).map_err(|w| err(format!("Packages row {hnum}: {w}")))?;
            // Same name twice (multilib, gpg-pubkey): keyed apart by arch, then by version.
            let mut key = p.name.clone();
            for alt in [
                format!("{}.{}", p.name, p.arch),
                format!("{}-{}.{}", p.name, p.evr, p.arch),
                format!("{}-{}.{}#{hnum}", p.name, p.evr, p.arch),
            ] {
                if !packages.contains_key(&key) {
                    break;
                }
                key = alt;
            }
            packages.insert(key, p);
        }
        let wanted: HashSet<&[u8]> = packages
            .values()
            .flat_map(|p| p.requires.iter().map(|r| r.as_bytes()))
            .collect();
        let mut givers: HashMap<String, Vec<String>> = HashMap::new();
        for (key, p) in &packages {
            let gives = std::iter::once(p.name.as_bytes())
                .chain(p.provides.iter().map(|v| v.as_bytes()))
                .chain(p.abs_files.iter().map(Vec::as_slice));
            for g in gives.filter(|g| wanted.contains(g)) {
                let list = givers
                    .entry(String::from_utf8_lossy(g).into_owned())
                    .or_default();
                if list.last() != Some(key) {
                    list.push(key.clone());
                }
            }
        }
        Ok(Some(Rpm {
            path,
            packages,
            givers,
            tables,
        }))
    }

    /// The database of the flattened image, with file paths resolved through top-level
    /// symlinks (merged /usr).
    pub fn from_flat(flat: &super::flat::Flat) -> Result<Option<Rpm>, StripError> {
        for p in SQLITE_PATHS {
            let big = flat
                .find(p)
                .and_then(|i| flat.entries.get(i))
                .filter(|e| e.kind == crate::EntryKind::File && !flat.captured.contains_key(p));
            if let Some(e) = big {
                return Err(StripError::Rpm {
                    file: format!("/{}", String::from_utf8_lossy(p)),
                    why: format!(
                        "{} bytes is more than the {} strip reads into memory",
                        e.size,
                        super::flat::MAX_CAPTURED_FILE
                    ),
                });
            }
        }
        let Some(mut db) = Rpm::read(&flat.captured)? else {
            return Ok(None);
        };
        for p in db.packages.values_mut() {
            for f in p.files.iter_mut().chain(p.conffiles.iter_mut()) {
                *f = flat.resolve_top(f);
            }
        }
        Ok(Some(db))
    }

    /// Why a package may not go without `--force`, if so.
    pub fn protection(&self, key: &str) -> Option<&'static str> {
        let p = self.packages.get(key)?;
        PROTECTED
            .contains(&p.name.as_str())
            .then_some("a base package of rpm systems (rpm, glibc, bash, filesystem, setup)")
    }

    /// Packages that need something only the packages in `gone` give (by name, Provides or
    /// file), and are not in `gone` themselves: (dependent, what it loses).
    pub fn broken_by(&self, gone: &BTreeSet<String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, p) in &self.packages {
            if gone.contains(key) {
                continue;
            }
            for r in &p.requires {
                let Some(g) = self.givers.get(r) else {
                    continue;
                };
                if g.iter().all(|k| gone.contains(k)) {
                    out.push((key.clone(), r.clone()));
                    break;
                }
            }
        }
        out
    }

    /// Packages another package needs and nothing else gives: not removable alone. One pass,
    /// for `decant size`'s candidate list (asking `broken_by` per package would be quadratic).
    pub fn needed(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        for (key, p) in &self.packages {
            for r in &p.requires {
                if let Some([only]) = self.givers.get(r).map(Vec::as_slice) {
                    if only != key {
                        out.insert(only.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether `without` can rewrite this database: Err names the table it does not understand.
    pub fn writable(&self) -> Result<(), String> {
        match &self.tables.unwritable {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// The database file without the rows of `gone`, every table and index rebuilt. Callers
    /// check `writable` first (a table without the hnum column would keep stale rows).
    pub fn without(&self, gone: &BTreeSet<String>) -> Vec<u8> {
        let hnums: HashSet<i64> = gone
            .iter()
            .filter_map(|k| self.packages.get(k).map(|p| p.hnum))
            .collect();
        self.tables.without(&hnums)
    }
}

impl Tables {
    /// Reads every b-tree of `db`, noting per cell the package row it belongs to: the rowid
    /// in Packages, column 1 (hnum) in rpm's index tables, the table rowid that ends an index
    /// record.
    fn read(db: &Db) -> Result<Tables, String> {
        let schema = db.schema().map_err(|e| e.what)?;
        let mut trees = Vec::new();
        let mut unwritable = None;
        for row in schema.iter().filter(|r| r.rootpage != 0) {
            let cells = db.walk(row.rootpage).map_err(|e| e.what)?;
            let name = row.name.as_str();
            let mut out = Vec::with_capacity(cells.len());
            for c in cells {
                let owner = match (row.kind.as_str(), name) {
                    ("table", "Packages") => c.rowid,
                    ("table", n) if n.starts_with("sqlite_") => None,
                    ("table", _) => {
                        let v = decode_record(&c.payload).map_err(|w| {
                            format!("table {name} row {}: {w}", c.rowid.unwrap_or(0))
                        })?;
                        let h = v.get(1).and_then(sqlite::Value::as_int);
                        if h.is_none() && unwritable.is_none() {
                            unwritable =
                                Some(format!("table {name} has no package number (hnum) column"));
                        }
                        h
                    }
                    ("index", _) => {
                        let v =
                            decode_record(&c.payload).map_err(|w| format!("index {name}: {w}"))?;
                        // An index record ends with the rowid of its table's row.
                        v.last().and_then(sqlite::Value::as_int)
                    }
                    _ => None,
                };
                out.push((c, owner));
            }
            trees.push(TreeData {
                schema: row.clone(),
                cells: out,
            });
        }
        Ok(Tables {
            page_size: db.page_size,
            header: db.header,
            trees,
            rowless: schema.iter().filter(|r| r.rootpage == 0).cloned().collect(),
            unwritable,
        })
    }

    /// The file without the rows of packages `hnums`, every table and index rebuilt.
    fn without(&self, hnums: &HashSet<i64>) -> Vec<u8> {
        // Rows dropped per table, so each index drops exactly its table's rows.
        let mut dropped: HashMap<&str, HashSet<i64>> = HashMap::new();
        for t in self.trees.iter().filter(|t| t.schema.kind == "table") {
            let set = dropped.entry(t.schema.name.as_str()).or_default();
            for (c, owner) in &t.cells {
                if owner.is_some_and(|h| hnums.contains(&h)) {
                    set.insert(c.rowid.unwrap_or(0));
                }
            }
        }
        let mut b = sqlwrite::Builder::new(self.page_size);
        let mut roots: HashMap<i64, u32> = HashMap::new();
        for t in &self.trees {
            let root = if t.schema.kind == "index" {
                let drop = dropped.get(t.schema.tbl_name.as_str());
                let recs: Vec<&[u8]> = t
                    .cells
                    .iter()
                    .filter(|(_, rowid)| {
                        !rowid.is_some_and(|r| drop.is_some_and(|d| d.contains(&r)))
                    })
                    .map(|(c, _)| c.payload.as_slice())
                    .collect();
                b.index(&recs)
            } else {
                let drop = dropped.get(t.schema.name.as_str());
                let rows: Vec<(i64, Vec<u8>)> = t
                    .cells
                    .iter()
                    .filter(|(c, _)| !drop.is_some_and(|d| d.contains(&c.rowid.unwrap_or(0))))
                    .map(|(c, _)| (c.rowid.unwrap_or(0), c.payload.clone()))
                    .collect();
                b.table(&rows, None)
            };
            roots.insert(t.schema.rowid, root);
        }
        let schema: Vec<(i64, Vec<u8>)> = self
            .schema_rows()
            .map(|r| {
                let root = roots.get(&r.rowid).copied().unwrap_or(0);
                (r.rowid, sqlwrite::schema_record(&r.values, root))
            })
            .collect();
        b.table(&schema, Some(1));
        b.finish(&self.header)
    }

    /// Every schema row, in rowid order (those without a b-tree too).
    fn schema_rows(&self) -> impl Iterator<Item = &SchemaRow> {
        let mut all: BTreeMap<i64, &SchemaRow> = BTreeMap::new();
        for t in &self.trees {
            all.insert(t.schema.rowid, &t.schema);
        }
        for r in &self.rowless {
            all.insert(r.rowid, r);
        }
        all.into_values()
    }
}

/// A package from its header.
fn package(h: &Header, hnum: i64) -> Result<RpmPackage, String> {
    let name = h.string(tag::NAME).ok_or("header has no NAME")?;
    let names = h.file_names()?;
    let flags = h.ints(tag::FILEFLAGS);
    let mut files = Vec::with_capacity(names.len());
    let mut conffiles = Vec::new();
    for (i, f) in names.iter().enumerate() {
        if f.first() != Some(&b'/') || f.contains(&0) {
            return Err(format!(
                "file {} is not an absolute path",
                String::from_utf8_lossy(f)
            ));
        }
        let rel = f.get(1..).unwrap_or_default();
        if rel.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(format!(
                "file {}: '..' in a path",
                String::from_utf8_lossy(f)
            ));
        }
        let rel = rel.strip_suffix(b"/").unwrap_or(rel).to_vec();
        if rel.is_empty() {
            continue;
        }
        if flags.get(i).is_some_and(|fl| fl & RPMFILE_CONFIG != 0) {
            conffiles.push(rel.clone());
        }
        files.push(rel);
    }
    let rflags = h.ints(tag::REQUIREFLAGS);
    let requires = h
        .strings(tag::REQUIRENAME)
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            rflags.get(*i).is_none_or(|f| f & RPMSENSE_RPMLIB == 0)
                && !r.starts_with(b"rpmlib(")
                && !r.starts_with(b"(")
        })
        .map(|(_, r)| String::from_utf8_lossy(r).into_owned())
        .collect();
    let provides = h
        .strings(tag::PROVIDENAME)
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let size = h
        .ints(tag::LONGSIZE)
        .first()
        .or_else(|| h.ints(tag::SIZE).first())
        .copied()
        .unwrap_or(0);
    Ok(RpmPackage {
        evr: evr(h),
        arch: h.string(tag::ARCH).unwrap_or_default(),
        name,
        hnum,
        size,
        requires,
        provides,
        files,
        conffiles,
        abs_files: names,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::OnceLock;

    fn run(cmd: &str, args: &[&str]) -> String {
        let o = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} is needed by this test (install it): {e}"));
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    const SPECS: [(&str, &str, &str); 4] = [
        (
            "alpha",
            "Version: 1.0\nRelease: 1\nProvides: alpha-cap\nRequires: beta\n",
            "mkdir -p %{buildroot}/usr/share/alpha %{buildroot}/etc\necho hello > %{buildroot}/usr/share/alpha/data.txt\necho conf > %{buildroot}/etc/alpha.conf\n%files\n/usr/share/alpha\n%config(noreplace) /etc/alpha.conf\n",
        ),
        (
            "beta",
            "Version: 2.0\nRelease: 3\nEpoch: 1\n",
            "mkdir -p %{buildroot}/usr/bin\nprintf '#!/bin/sh\\necho beta\\n' > %{buildroot}/usr/bin/beta\n%files\n/usr/bin/beta\n",
        ),
        (
            "gamma",
            "Version: 0.1\nRelease: 1\nRequires: /usr/bin/beta\n",
            "mkdir -p %{buildroot}/usr/share/gamma\nhead -c 5000 /dev/zero > %{buildroot}/usr/share/gamma/big\n%files\n/usr/share/gamma\n",
        ),
        ("filesystem", "Version: 3\nRelease: 1\n", "%files\n"),
    ];

    /// Builds the packages, installs them into a root and returns the database rpm wrote;
    /// made once per test binary, in a temp dir removed afterwards.
    fn db_bytes() -> Vec<u8> {
        static DB: OnceLock<Vec<u8>> = OnceLock::new();
        DB.get_or_init(|| {
            let tmp = tempfile::Builder::new()
                .prefix("decant-rpm")
                .tempdir()
                .expect("tempdir");
            let dir = tmp.path();
            let top = dir.join("top");
            let mut rpms = Vec::new();
            for (name, head, body) in SPECS {
                let spec = dir.join(format!("{name}.spec"));
                std::fs::write(
                    &spec,
                    format!("Name: {name}\nSummary: {name}\nLicense: MIT\nBuildArch: noarch\n{head}%description\n{name}\n%install\n{body}"),
                )
                .unwrap();
                run(
                    "rpmbuild",
                    &[
                        "--define",
                        &format!("_topdir {}", top.display()),
                        "-bb",
                        spec.to_str().unwrap(),
                    ],
                );
                rpms.push(
                    top.join("RPMS/noarch")
                        .join(format!("{name}-{}.noarch.rpm", evr_of(head))),
                );
            }
            let root = dir.join("root");
            std::fs::create_dir_all(&root).unwrap();
            let r = root.to_str().unwrap();
            run("rpm", &["--root", r, "--dbpath", "/var/lib/rpm", "--initdb"]);
            let mut args = vec!["--root", r, "--dbpath", "/var/lib/rpm", "-i", "--nodeps"];
            let names: Vec<String> = rpms.iter().map(|p| p.display().to_string()).collect();
            args.extend(names.iter().map(String::as_str));
            run("rpm", &args);
            std::fs::read(root.join("var/lib/rpm/rpmdb.sqlite")).expect("rpmdb.sqlite")
        })
        .clone()
    }

    fn evr_of(head: &str) -> String {
        let f = |k: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        format!("{}-{}", f("Version:"), f("Release:"))
    }

    fn read(bytes: Vec<u8>) -> Result<Option<Rpm>, StripError> {
        let mut f = HashMap::new();
        f.insert(SQLITE_PATHS[0].to_vec(), bytes);
        Rpm::read(&f)
    }

    #[test]
    fn reads_a_database_rpm_wrote() {
        let db = read(db_bytes()).unwrap().unwrap();
        assert_eq!(
            db.packages.keys().collect::<Vec<_>>(),
            vec!["alpha", "beta", "filesystem", "gamma"]
        );
        let a = &db.packages["alpha"];
        assert_eq!(a.evr, "1.0-1");
        assert_eq!(a.arch, "noarch");
        assert!(a.requires.contains(&"beta".to_string()), "{:?}", a.requires);
        assert!(a.provides.contains(&"alpha-cap".to_string()));
        assert_eq!(a.conffiles, vec![b"etc/alpha.conf".to_vec()]);
        assert!(a.files.contains(&b"usr/share/alpha/data.txt".to_vec()));
        assert_eq!(db.packages["beta"].evr, "1:2.0-3");
        assert_eq!(db.packages["gamma"].size, 5000);
        // beta goes: alpha (by name) and gamma (by file) lose it.
        let broken = db.broken_by(&["beta".to_string()].into());
        assert_eq!(
            broken,
            vec![
                ("alpha".to_string(), "beta".to_string()),
                ("gamma".to_string(), "/usr/bin/beta".to_string())
            ]
        );
        assert!(db.broken_by(&["alpha".to_string()].into()).is_empty());
        assert_eq!(db.needed(), ["beta".to_string()].into());
        assert!(db.protection("alpha").is_none());
        assert!(db.protection("filesystem").is_some());
        assert!(db.packages["filesystem"].files.is_empty());
    }

    #[test]
    fn package_groups_refuse_cascade_and_protect() {
        use super::super::pkgdb::PackageDb;
        use super::super::run::package_groups;
        let db = PackageDb::Rpm(Box::new(read(db_bytes()).unwrap().unwrap()));
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = package_groups(&db, &names(&["beta"]), false, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "package beta is needed by: alpha (needs beta), gamma (needs /usr/bin/beta); use --cascade to remove them too"
        );
        assert_eq!(
            package_groups(&db, &names(&["beta"]), true, false).unwrap(),
            vec![names(&["beta", "alpha", "gamma"])]
        );
        let e = package_groups(&db, &names(&["filesystem"]), false, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("filesystem is a base package") && e.contains("--force"),
            "{e}"
        );
        assert!(package_groups(&db, &names(&["filesystem"]), false, true).is_ok());
        let e = package_groups(&db, &names(&["zzz"]), false, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown package zzz: /var/lib/rpm/rpmdb.sqlite has no such package"
        );
    }

    #[test]
    fn rewritten_database_passes_sqlite_and_rpm() {
        let db = read(db_bytes()).unwrap().unwrap();
        db.writable().unwrap();
        // Nothing removed: the rebuilt file holds the same rows.
        let same = read(db.without(&BTreeSet::new())).unwrap().unwrap();
        assert_eq!(same.packages, db.packages);

        let dir = tempfile::tempdir().unwrap();
        let rpmdir = dir.path().join("var/lib/rpm");
        std::fs::create_dir_all(&rpmdir).unwrap();
        let gone: BTreeSet<String> = ["alpha".to_string(), "gamma".to_string()].into();
        let file = rpmdir.join("rpmdb.sqlite");
        std::fs::write(&file, db.without(&gone)).unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(run("sqlite3", &[f, "PRAGMA integrity_check"]).trim(), "ok");
        assert_eq!(
            run(
                "sqlite3",
                &[
                    f,
                    "SELECT key FROM Name ORDER BY key; SELECT count(*) FROM Basenames WHERE key != 'beta';"
                ]
            )
            .trim(),
            "beta\nfilesystem\n0"
        );
        let root = dir.path().to_str().unwrap();
        let q = |args: &[&str]| {
            let mut a = vec!["--root", root, "--dbpath", "/var/lib/rpm"];
            a.extend_from_slice(args);
            run("rpm", &a)
        };
        assert_eq!(q(&["-qa", "--qf", "%{NAME}\n"]).trim(), "beta\nfilesystem");
        assert_eq!(
            q(&["-q", "--whatprovides", "/usr/bin/beta"]).trim(),
            "beta-2.0-3.noarch"
        );
        let after = read(std::fs::read(&file).unwrap()).unwrap().unwrap();
        assert_eq!(
            after.packages.keys().collect::<Vec<_>>(),
            vec!["beta", "filesystem"]
        );
    }

    #[test]
    fn writer_builds_deep_trees_with_overflow_that_sqlite_accepts() {
        // Small pages, big blobs and long keys: several b-tree levels and overflow chains in
        // tables and indexes, more than a small rpm database reaches.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.sqlite");
        let s = src.to_str().unwrap();
        run(
            "sqlite3",
            &[
                s,
                "PRAGMA page_size=1024; PRAGMA journal_mode=WAL;
                 CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);
                 CREATE TABLE 'Name' (key 'TEXT' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL);
                 CREATE INDEX 'Name_key_idx' ON 'Name'(key ASC);
                 CREATE INDEX 'Name_hnum_idx' ON 'Name'(hnum ASC);
                 CREATE VIEW v AS SELECT key FROM Name;
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<900)
                   INSERT INTO Packages(blob) SELECT randomblob(x * 7 % 6000 + 1) FROM c;
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<6000)
                   INSERT INTO Name SELECT printf('%s-%d', substr(hex(randomblob(800)), 1, x * 13 % 1500), x), x % 900 + 1, x FROM c;",
            ],
        );
        let data = std::fs::read(&src).unwrap();
        let db = Db::open("src", &data).unwrap();
        let t = Tables::read(&db).unwrap();
        assert!(t.unwritable.is_none());
        let gone: HashSet<i64> = (1..=900).filter(|h| h % 3 == 0).collect();
        let out = dir.path().join("out.sqlite");
        std::fs::write(&out, t.without(&gone)).unwrap();
        let o = out.to_str().unwrap();
        assert_eq!(run("sqlite3", &[o, "PRAGMA integrity_check"]).trim(), "ok");
        // The source filtered by hand must equal the rewrite unfiltered.
        let q = "SELECT count(*), sum(length(blob)) FROM Packages WHERE hnum % 3 != 0;
                 SELECT count(*), sum(length(key)) FROM Name WHERE hnum % 3 != 0;
                 SELECT count(*) FROM Name WHERE key > '8' AND hnum % 3 != 0;
                 SELECT seq FROM sqlite_sequence;";
        let want = run("sqlite3", &[s, q]);
        let got = run(
            "sqlite3",
            &[
                o,
                &q.replace(" WHERE hnum % 3 != 0", "").replace(
                    "FROM Name WHERE key > '8' AND hnum % 3 != 0",
                    "FROM v WHERE key > '8'",
                ),
            ],
        );
        assert_eq!(got, want);
        // Through the indexes: the key index and the hnum index agree with the table.
        assert_eq!(
            run("sqlite3", &[o, "SELECT count(*) FROM Name INDEXED BY Name_hnum_idx WHERE hnum = 3; SELECT count(*) FROM Name INDEXED BY Name_hnum_idx WHERE hnum = 4;"]).trim(),
            format!("0\n{}", (1..=6000).filter(|x| x % 900 + 1 == 4).count())
        );
        // And it reads back with our reader.
        let back = std::fs::read(&out).unwrap();
        let t2 = Tables::read(&Db::open("out", &back).unwrap()).unwrap();
        assert_eq!(t2.trees.len(), t.trees.len());
    }

    #[test]
    fn damaged_copies_give_one_line_errors_and_no_panic() {
        let good = db_bytes();
        let t = std::time::Instant::now();
        let mut errors = 0;
        for n in [
            0,
            50,
            99,
            100,
            4095,
            4096,
            4097,
            good.len() / 2,
            good.len() - 1,
        ] {
            if let Err(e) = read(good[..n].to_vec()) {
                let m = e.to_string();
                assert!(
                    !m.contains('\n') && m.starts_with("/var/lib/rpm/rpmdb.sqlite: "),
                    "{m}"
                );
                errors += 1;
            }
        }
        assert!(errors >= 6);
        // Every page's b-tree header and first cell pointers, and bytes spread over the file.
        let ps = 4096;
        let mut spots: Vec<usize> = (0..good.len() / ps)
            .flat_map(|p| {
                let h = if p == 0 { 100 } else { 0 };
                (0..14).map(move |i| p * ps + h + i)
            })
            .collect();
        spots.extend((0..good.len()).step_by(997));
        for at in spots {
            for x in [0xffu8, 0x01, 0x80] {
                let mut d = good.clone();
                d[at] ^= x;
                if let Err(e) = read(d) {
                    assert!(!e.to_string().contains('\n'));
                }
            }
        }
        // A cycle: the schema root's right child pointing at itself.
        let mut d = good.clone();
        if d[100] == 5 {
            d[108..112].copy_from_slice(&1u32.to_be_bytes());
            assert!(read(d).unwrap_err().to_string().contains("twice"));
        }
        assert!(t.elapsed().as_secs() < 20, "too slow: {:?}", t.elapsed());
    }

    #[test]
    fn a_berkeley_db_is_named_and_a_wal_refused() {
        let mut f = HashMap::new();
        f.insert(SQLITE_PATHS[0].to_vec(), db_bytes());
        let mut wal = SQLITE_PATHS[0].to_vec();
        wal.extend_from_slice(b"-wal");
        f.insert(wal, vec![1; 32]);
        let e = Rpm::read(&f).unwrap_err().to_string();
        assert!(e.contains("write-ahead log"), "{e}");
        assert!(Rpm::read(&HashMap::new()).unwrap().is_none());
    }
}

//! The dpkg database of an image, read from the flattened tree: `var/lib/dpkg/status`
//! paragraphs, `info/<pkg>[:arch].list` and `.conffiles`. Enough of Depends/Pre-Depends
//! (alternatives, arch qualifiers, Provides) for a reverse-dependency walk; versions are parsed
//! past but not compared, because strip only removes packages: a dependency the remaining
//! packages satisfied before is satisfied after unless its provider is removed.
//!
//! Also the other side of file rules on a dpkg image: [`path_filter_file`] records what the
//! rules removed from installed packages as dpkg's own `path-exclude` filters in
//! `/etc/dpkg/dpkg.cfg.d/decant-strip`, as Debian's slim images do, so a later `apt-get install`
//! or upgrade inside the image does not bring the files back and `dpkg --verify` users can see
//! why they are missing.
//!
//! Written here rather than taken from a crate: the Debian control crates parse for building
//! packages (full version algebra, deb822 round trips) and we need a hostile-input reader with
//! caps and one-line errors that keeps each paragraph's exact bytes for rewriting status.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::StripError;

/// Most paragraphs in a status file (Debian has ~60 000 packages in total).
pub const MAX_PACKAGES: usize = 200_000;
/// Most paths in one .list file.
pub const MAX_LIST_PATHS: usize = 1_000_000;
/// Longest field we keep (a Description can be long; a hostile one is cut off by this).
pub const MAX_FIELD: usize = 1 << 20;

pub const STATUS: &[u8] = b"var/lib/dpkg/status";
/// Where strip records the path filters of its file rules (dpkg reads every file of the dir).
pub const STRIP_CFG: &[u8] = b"etc/dpkg/dpkg.cfg.d/decant-strip";
/// Most exact `path-include` lines one rule may need for package files bisection kept under
/// it; a rule needing more is not recorded at all (dpkg then brings its files back on an
/// upgrade rather than dropping a file the image kept).
pub const MAX_KEPT_PER_RULE: usize = 1000;
/// Most filter lines kept from an earlier strip's file.
pub const MAX_CFG_LINES: usize = 100_000;
/// The first lines of the file strip writes.
pub const STRIP_CFG_HEADER: &str = "\
# Written by decant strip: its file rules removed paths of installed packages from this image.
# dpkg leaves these paths out when it installs or upgrades a package (dpkg(1), --path-exclude;
# the last matching line decides), so apt-get does not bring them back; this is also why
# `dpkg --verify` reports them missing. Delete this file to get them back on reinstall.
";
pub const INFO: &[u8] = b"var/lib/dpkg/info/";

/// One installed (or otherwise recorded) package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub arch: Option<String>,
    pub version: String,
    /// The three Status words, e.g. `install ok installed`.
    pub status: String,
    pub essential: bool,
    pub priority: String,
    /// Depends and Pre-Depends: each inner Vec is one group of alternatives (names only).
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    /// Conffiles, without the leading `/`.
    pub conffiles: Vec<Vec<u8>>,
    /// Paths from the .list file, without the leading `/`.
    pub files: Vec<Vec<u8>>,
    /// Byte range of the paragraph in the status file (for rewriting).
    span: (usize, usize),
}

impl Package {
    pub fn installed(&self) -> bool {
        self.status.split_whitespace().nth(2) == Some("installed")
    }
    /// Essential or Priority: required.
    pub fn protected(&self) -> bool {
        self.essential || self.priority == "required"
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Dpkg {
    pub packages: BTreeMap<String, Package>,
    status: Vec<u8>,
}

fn err(file: &str, why: String) -> StripError {
    StripError::Dpkg {
        file: file.to_string(),
        why,
    }
}

/// Parses `name (>= 1) | other:any, third` into groups of alternative names.
pub fn parse_depends(v: &str) -> Vec<Vec<String>> {
    v.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt
                        .trim()
                        .split(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<')
                        .next()
                        .unwrap_or("");
                    let name = name.split(':').next().unwrap_or("");
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

impl Dpkg {
    /// Reads the database from captured files (path → content); `None` when the image has no
    /// `var/lib/dpkg/status`.
    pub fn read(files: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Option<Dpkg>, StripError> {
        let Some(status) = files.get(STATUS) else {
            return Ok(None);
        };
        let mut packages = BTreeMap::new();
        let text = status.as_slice();
        let mut pos = 0usize;
        let mut at_line = 1usize;
        while pos < text.len() {
            // Skip blank lines between paragraphs.
            while text.get(pos) == Some(&b'\n') {
                pos += 1;
                at_line += 1;
            }
            if pos >= text.len() {
                break;
            }
            let start = pos;
            let start_line = at_line;
            let mut end = pos;
            loop {
                let nl = text
                    .get(end..)
                    .and_then(|t| t.iter().position(|&b| b == b'\n'))
                    .map(|i| end + i);
                match nl {
                    Some(i) => {
                        at_line += 1;
                        end = i + 1;
                        if text.get(end) == Some(&b'\n') || end >= text.len() {
                            break;
                        }
                    }
                    None => {
                        end = text.len();
                        break;
                    }
                }
            }
            pos = end;
            let para = text.get(start..end).unwrap_or_default();
            let p = parse_paragraph(para, start_line)?;
            if packages.len() >= MAX_PACKAGES {
                return Err(err(
                    "/var/lib/dpkg/status",
                    format!("more than {MAX_PACKAGES} paragraphs"),
                ));
            }
            let fields = p;
            let get = |k: &str| {
                fields
                    .get(&k.to_ascii_lowercase())
                    .cloned()
                    .unwrap_or_default()
            };
            let name = get("Package");
            if name.is_empty() {
                return Err(err(
                    "/var/lib/dpkg/status",
                    format!("paragraph at line {start_line} has no Package field"),
                ));
            }
            let arch = Some(get("Architecture")).filter(|a| !a.is_empty());
            let mut depends = parse_depends(&get("Depends"));
            depends.extend(parse_depends(&get("Pre-Depends")));
            let provides = parse_depends(&get("Provides"))
                .into_iter()
                .flatten()
                .collect();
            let conffiles = get("Conffiles")
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|p| p.trim_start_matches('/').as_bytes().to_vec())
                .collect();
            let pkg = Package {
                name: name.clone(),
                arch,
                version: get("Version"),
                status: get("Status"),
                essential: get("Essential").eq_ignore_ascii_case("yes"),
                priority: get("Priority"),
                depends,
                provides,
                conffiles,
                files: Vec::new(),
                span: (start, end),
            };
            // Multi-Arch: same packages appear once per architecture; key them apart.
            let key = if packages.contains_key(&name) {
                format!("{name}:{}", pkg.arch.clone().unwrap_or_default())
            } else {
                name
            };
            packages.insert(key, pkg);
        }
        for pkg in packages.values_mut() {
            let mut names = vec![format!("{}.list", pkg.name)];
            if let Some(a) = &pkg.arch {
                names.push(format!("{}:{a}.list", pkg.name));
            }
            for n in names {
                let mut path = INFO.to_vec();
                path.extend_from_slice(n.as_bytes());
                if let Some(list) = files.get(&path) {
                    let file = format!("/{}", String::from_utf8_lossy(&path));
                    for (i, line) in list.split(|&b| b == b'\n').enumerate() {
                        if line.is_empty() {
                            continue;
                        }
                        if pkg.files.len() >= MAX_LIST_PATHS {
                            return Err(err(&file, format!("more than {MAX_LIST_PATHS} paths")));
                        }
                        if line.first() != Some(&b'/') || line.contains(&0) {
                            return Err(err(
                                &file,
                                format!("line {}: not an absolute path", i + 1),
                            ));
                        }
                        let rel = line.get(1..).unwrap_or_default();
                        if rel.split(|&b| b == b'/').any(|c| c == b"..") {
                            return Err(err(&file, format!("line {}: '..' in a path", i + 1)));
                        }
                        if !rel.is_empty() && rel != b"." {
                            pkg.files.push(rel.to_vec());
                        }
                    }
                }
            }
        }
        Ok(Some(Dpkg {
            packages,
            status: status.clone(),
        }))
    }

    /// The database of the flattened image, with listed paths resolved through top-level
    /// symlinks (merged /usr); `None` when the image has none.
    pub fn from_flat(flat: &super::flat::Flat) -> Result<Option<Dpkg>, StripError> {
        let Some(mut db) = Dpkg::read(&flat.captured)? else {
            return Ok(None);
        };
        for p in db.packages.values_mut() {
            for f in p.files.iter_mut().chain(p.conffiles.iter_mut()) {
                *f = flat.resolve_top(f);
            }
        }
        Ok(Some(db))
    }

    /// Looks a package up by name (`name` or `name:arch`).
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages.get(name).or_else(|| {
            let (n, a) = name.split_once(':')?;
            self.packages
                .values()
                .find(|p| p.name == n && p.arch.as_deref() == Some(a))
        })
    }

    /// Installed packages that depend on something only the packages in `gone` give (by name
    /// or Provides), and are not in `gone` themselves: (dependent, the group it loses).
    pub fn broken_by(&self, gone: &BTreeSet<String>) -> Vec<(String, String)> {
        let mut givers: HashMap<&str, Vec<&str>> = HashMap::new();
        for (key, p) in &self.packages {
            if !p.installed() {
                continue;
            }
            givers.entry(p.name.as_str()).or_default().push(key);
            for v in &p.provides {
                givers.entry(v.as_str()).or_default().push(key);
            }
        }
        let mut out = Vec::new();
        for (key, p) in &self.packages {
            if !p.installed() || gone.contains(key) {
                continue;
            }
            for group in &p.depends {
                let satisfied = group.iter().any(|alt| {
                    givers
                        .get(alt.as_str())
                        .is_some_and(|g| g.iter().any(|k| !gone.contains(*k)))
                });
                let was = group.iter().any(|alt| givers.contains_key(alt.as_str()));
                if was && !satisfied {
                    out.push((key.clone(), group.join(" | ")));
                    break;
                }
            }
        }
        out
    }

    /// The status file without the paragraphs of `gone`, as `dpkg --purge` leaves it.
    pub fn status_without(&self, gone: &BTreeSet<String>) -> Vec<u8> {
        let mut cut: Vec<(usize, usize)> = gone
            .iter()
            .filter_map(|k| self.packages.get(k).map(|p| p.span))
            .collect();
        cut.sort_unstable();
        let mut out = Vec::with_capacity(self.status.len());
        let mut pos = 0usize;
        for (s, e) in cut {
            out.extend_from_slice(self.status.get(pos..s).unwrap_or_default());
            pos = e;
            // The blank line that separated the paragraph from the next goes with it.
            while self.status.get(pos) == Some(&b'\n') {
                pos += 1;
            }
        }
        out.extend_from_slice(self.status.get(pos..).unwrap_or_default());
        out
    }

    /// Whether `file` (a name under info/) belongs to package `p`: `<name>[:arch].<ext>`.
    pub fn is_info_of(p: &Package, file: &[u8]) -> bool {
        let Some(dot) = file.iter().rposition(|&b| b == b'.') else {
            return false;
        };
        let stem = file.get(..dot).unwrap_or_default();
        stem == p.name.as_bytes()
            || p.arch
                .as_ref()
                .is_some_and(|a| stem == format!("{}:{a}", p.name).as_bytes())
    }
}

/// A strip glob (`/usr/share/doc`, `/var/log/**/*.log`) as a dpkg filter pattern. dpkg
/// matches with fnmatch(3) without FNM_PATHNAME, so `*` and `?` also match `/`: the pattern
/// matches at least what the glob does (`**/` becomes `*`, which may also match more in the
/// last component; a dpkg filter that leaves out slightly more is the lesser harm than one
/// that lets removed files back). `dir` adds `/*`: a directory's contents, since excluding a
/// directory's own path makes dpkg fail to unpack its files. `None` for a pattern with control
/// characters or a backslash (a line break would inject configuration).
pub fn dpkg_pattern(glob: &str, dir: bool) -> Option<String> {
    if glob.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let mut out = String::with_capacity(glob.len() + 2);
    let parts: Vec<&str> = glob.split('/').filter(|p| !p.is_empty()).collect();
    let mut glue = true;
    for (i, p) in parts.iter().enumerate() {
        if glue {
            out.push('/');
        }
        if *p == "**" {
            out.push('*');
            // `a/**/b` → `a/*b`: zero or more directories between a and b.
            glue = i + 1 == parts.len();
            if glue {
                break;
            }
        } else {
            out.push_str(p);
            glue = true;
        }
    }
    if dir {
        out.push_str("/*");
    }
    Some(out)
}

/// An exact path as a dpkg filter pattern (wildcards escaped); `None` for a name that is not
/// UTF-8 or has control characters.
pub fn dpkg_exact(path: &[u8]) -> Option<String> {
    let p = std::str::from_utf8(path).ok()?;
    if p.chars().any(char::is_control) {
        return None;
    }
    let mut out = String::with_capacity(p.len() + 1);
    out.push('/');
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Some(out)
}

/// The content of [`STRIP_CFG`]: the filter lines of an earlier strip (`previous`) merged with
/// the new ones, excludes first and includes after (the last matching line decides, and a
/// `keep` wins over every `remove` whatever the order), each line once. `None` when there is
/// nothing new to record.
pub fn path_filter_file(
    previous: Option<&[u8]>,
    exclude: &[String],
    include: &[String],
) -> Option<Vec<u8>> {
    let mut old_ex: Vec<String> = Vec::new();
    let mut old_in: Vec<String> = Vec::new();
    if let Some(prev) = previous {
        for line in String::from_utf8_lossy(prev).lines().take(MAX_CFG_LINES) {
            if let Some(p) = line.strip_prefix("path-exclude=") {
                old_ex.push(p.to_string());
            } else if let Some(p) = line.strip_prefix("path-include=") {
                old_in.push(p.to_string());
            }
        }
    }
    let new_ex: Vec<&String> = exclude.iter().filter(|p| !old_ex.contains(p)).collect();
    let new_in: Vec<&String> = include.iter().filter(|p| !old_in.contains(p)).collect();
    if new_ex.is_empty() && (new_in.is_empty() || previous.is_none()) {
        return None;
    }
    let mut out = String::from(STRIP_CFG_HEADER);
    let mut seen = BTreeSet::new();
    for p in old_ex.iter().chain(new_ex) {
        if seen.insert(("x", p.as_str())) {
            out.push_str(&format!("path-exclude={p}\n"));
        }
    }
    for p in old_in.iter().chain(new_in) {
        if seen.insert(("i", p.as_str())) {
            out.push_str(&format!("path-include={p}\n"));
        }
    }
    Some(out.into_bytes())
}

/// Fields of one paragraph, names lowercased; continuation lines joined with `\n`.
fn parse_paragraph(para: &[u8], line0: usize) -> Result<HashMap<String, String>, StripError> {
    let text = std::str::from_utf8(para).map_err(|e| {
        err(
            "/var/lib/dpkg/status",
            format!("paragraph at line {line0}: not UTF-8 ({e})"),
        )
    })?;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(k) = &current else {
                return Err(err(
                    "/var/lib/dpkg/status",
                    format!("line {}: continuation line before any field", line0 + i),
                ));
            };
            if let Some(v) = fields.get_mut(k) {
                if v.len() < MAX_FIELD {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(err(
                "/var/lib/dpkg/status",
                format!(
                    "line {}: expected `Field: value`, got {:.60?}",
                    line0 + i,
                    line
                ),
            ));
        };
        let k = k.trim().to_ascii_lowercase();
        fields.insert(k.clone(), v.trim().to_string());
        current = Some(k);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const STATUS_TEXT: &str = "Package: base\nStatus: install ok installed\nPriority: required\nEssential: yes\nVersion: 1\nArchitecture: amd64\nDescription: base\n multi line\n .\n\nPackage: libfoo1\nStatus: install ok installed\nPriority: optional\nVersion: 2.0-1\nArchitecture: amd64\nMulti-Arch: same\nProvides: libfoo-abi (= 2)\n\nPackage: app\nStatus: install ok installed\nPriority: optional\nVersion: 3\nArchitecture: all\nDepends: libfoo1 (>= 2.0) | libfoo-alt, base:any\nConffiles:\n /etc/app.conf 0123456789abcdef0123456789abcdef\n\nPackage: tool\nStatus: install ok installed\nPriority: optional\nVersion: 4\nArchitecture: amd64\nPre-Depends: libfoo-abi\n\nPackage: gone\nStatus: deinstall ok config-files\nPriority: optional\nVersion: 5\nArchitecture: amd64\n";

    fn db() -> Dpkg {
        let mut f = HashMap::new();
        f.insert(STATUS.to_vec(), STATUS_TEXT.as_bytes().to_vec());
        f.insert(
            b"var/lib/dpkg/info/libfoo1:amd64.list".to_vec(),
            b"/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n".to_vec(),
        );
        f.insert(
            b"var/lib/dpkg/info/app.list".to_vec(),
            b"/.\n/etc\n/etc/app.conf\n/usr\n/usr/bin\n/usr/bin/app\n".to_vec(),
        );
        Dpkg::read(&f).unwrap().unwrap()
    }

    #[test]
    fn reads_status_and_lists() {
        let d = db();
        assert_eq!(d.packages.len(), 5);
        let app = d.get("app").unwrap();
        assert_eq!(
            app.depends,
            vec![
                vec!["libfoo1".to_string(), "libfoo-alt".into()],
                vec!["base".into()]
            ]
        );
        assert_eq!(app.conffiles, vec![b"etc/app.conf".to_vec()]);
        assert_eq!(app.files.len(), 5);
        assert!(d.get("base").unwrap().protected());
        assert!(!d.get("gone").unwrap().installed());
        assert_eq!(d.get("libfoo1").unwrap().files.len(), 3);
        assert!(d.get("libfoo1:amd64").is_some());
        assert_eq!(
            d.get("tool").unwrap().depends,
            vec![vec!["libfoo-abi".to_string()]]
        );
    }

    #[test]
    fn reverse_dependencies() {
        let d = db();
        let gone: BTreeSet<String> = ["libfoo1".to_string()].into();
        let mut b: Vec<String> = d.broken_by(&gone).into_iter().map(|x| x.0).collect();
        b.sort();
        assert_eq!(b, vec!["app", "tool"]);
        let gone: BTreeSet<String> = ["app".to_string()].into();
        assert!(d.broken_by(&gone).is_empty());
    }

    #[test]
    fn status_rewrite_drops_the_paragraph() {
        let d = db();
        let gone: BTreeSet<String> = ["app".to_string()].into();
        let s = String::from_utf8(d.status_without(&gone)).unwrap();
        assert!(!s.contains("Package: app\n"));
        assert!(s.contains("Package: tool\n") && s.contains("Package: libfoo1\n"));
        assert!(!s.contains("\n\n\n"));
        let gone: BTreeSet<String> = ["gone".to_string()].into();
        let s = String::from_utf8(d.status_without(&gone)).unwrap();
        assert!(
            s.ends_with("Description: base\n multi line\n .\n\nPackage: libfoo1\n")
                || s.contains("Package: tool")
        );
        assert!(!s.contains("Package: gone"));
    }

    #[test]
    fn info_names() {
        let d = db();
        let p = d.get("libfoo1").unwrap();
        assert!(Dpkg::is_info_of(p, b"libfoo1:amd64.list"));
        assert!(Dpkg::is_info_of(p, b"libfoo1.md5sums"));
        assert!(!Dpkg::is_info_of(p, b"libfoo1-dev.list"));
    }

    #[test]
    fn hostile_databases() {
        for (status, want) in [
            ("Status: x\n", "no Package field"),
            (" cont\n", "continuation line before any field"),
            ("Package a\n", "expected `Field: value`"),
        ] {
            let mut f = HashMap::new();
            f.insert(STATUS.to_vec(), status.as_bytes().to_vec());
            let e = Dpkg::read(&f).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'));
        }
        let mut f = HashMap::new();
        f.insert(STATUS.to_vec(), b"Package: a\nVersion: 1\n".to_vec());
        f.insert(
            b"var/lib/dpkg/info/a.list".to_vec(),
            b"relative/path\n".to_vec(),
        );
        assert!(Dpkg::read(&f)
            .unwrap_err()
            .to_string()
            .contains("not an absolute path"));
        f.insert(
            b"var/lib/dpkg/info/a.list".to_vec(),
            b"/a/../../etc\n".to_vec(),
        );
        assert!(Dpkg::read(&f).unwrap_err().to_string().contains("'..'"));
        f.insert(STATUS.to_vec(), vec![0xff, 0xfe, b'\n']);
        assert!(Dpkg::read(&f).is_err());
        assert!(Dpkg::read(&HashMap::new()).unwrap().is_none());
    }

    #[test]
    fn dpkg_patterns() {
        let p = |g: &str, d: bool| dpkg_pattern(g, d).unwrap();
        assert_eq!(p("/usr/share/doc", true), "/usr/share/doc/*");
        assert_eq!(
            p("/usr/share/doc/*/copyright", false),
            "/usr/share/doc/*/copyright"
        );
        assert_eq!(p("/var/log/**/*.log", false), "/var/log/**.log");
        assert_eq!(p("/**/__pycache__", true), "/*__pycache__/*");
        assert_eq!(p("/usr/**", false), "/usr/*");
        assert_eq!(p("/lib/modules/[0-9]*", true), "/lib/modules/[0-9]*/*");
        assert_eq!(dpkg_pattern("/a\npath-exclude=/*", false), None);
        assert_eq!(dpkg_pattern("/a\\b", false), None);
        assert_eq!(
            dpkg_exact(b"usr/share/doc/a*b[1]/x?").unwrap(),
            "/usr/share/doc/a\\*b\\[1\\]/x\\?"
        );
        assert_eq!(dpkg_exact(b"a\nb"), None);
        assert_eq!(dpkg_exact(&[b'a', 0xff]), None);
    }

    #[test]
    fn filter_file_merges_with_an_earlier_strip() {
        let ex = vec!["/usr/share/doc/*".to_string()];
        let inc = vec!["/usr/share/doc/*/copyright".to_string()];
        assert_eq!(path_filter_file(None, &[], &inc), None);
        let first = path_filter_file(None, &ex, &inc).unwrap();
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(text.starts_with(STRIP_CFG_HEADER));
        assert!(text
            .ends_with("path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"));
        // The same rules again: nothing new, the file stays as it is.
        assert_eq!(path_filter_file(Some(&first), &ex, &inc), None);
        // More rules: old and new excludes first, then every include.
        let ex2 = vec!["/usr/share/man/*".to_string()];
        let second = path_filter_file(Some(&first), &ex2, &[]).unwrap();
        let lines: Vec<String> = String::from_utf8(second)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "path-exclude=/usr/share/doc/*",
                "path-exclude=/usr/share/man/*",
                "path-include=/usr/share/doc/*/copyright"
            ]
        );
        // A hostile earlier file: only its filter lines survive, bounded.
        let junk = b"force-all\npath-exclude=/x\n\xff\xfe\n".repeat(3);
        let merged = String::from_utf8(path_filter_file(Some(&junk), &ex, &[]).unwrap()).unwrap();
        assert!(!merged.contains("force-all"));
        assert_eq!(merged.matches("path-exclude=/x\n").count(), 1);
    }

    #[test]
    fn real_debootstrap_database_when_present() {
        // The bench rootfs exists on the development machine, not in CI; the fixtures above are
        // what CI checks.
        let root = std::path::Path::new("/var/tmp/decant-bench/rootfs/var/lib/dpkg");
        let Ok(status) = std::fs::read(root.join("status")) else {
            eprintln!(
                "note: {} not present; real-database check not run",
                root.display()
            );
            return;
        };
        let mut f = HashMap::new();
        f.insert(STATUS.to_vec(), status);
        for e in std::fs::read_dir(root.join("info")).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.ends_with(".list") {
                let mut p = INFO.to_vec();
                p.extend_from_slice(name.as_bytes());
                f.insert(p, std::fs::read(e.path()).unwrap());
            }
        }
        let d = Dpkg::read(&f).unwrap().unwrap();
        assert!(d.packages.len() > 50);
        assert!(d.get("dpkg").unwrap().protected());
        assert!(d
            .get("libc6")
            .unwrap()
            .files
            .iter()
            .any(|p| p.ends_with(b"libc.so.6")));
        let gone: BTreeSet<String> = ["libc6".to_string()].into();
        assert!(d.broken_by(&gone).len() > 10);
    }
}

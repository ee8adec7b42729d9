//! The tree-compare fallback of `commit` and `diff`, for a container root that has no overlay
//! upper dir: the whole root is walked and compared with the merged view of the image's
//! layers on what a layer carries (kind, mode, owner, mtime, size, xattrs, link target,
//! device numbers), as docker's naive differ does. Costs the size of the image, not of the
//! change: the upper-dir path (`walk::Mode::Diff`) is preferred whenever there is one.
//!
//! Contents are not read for the compare: a file rewritten with the same size and mtime is
//! missed, as it is by docker.
//!
//! Memory: the list of changed paths (capped at `walk::MAX_ENTRIES`), not the tree.

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::walk::{entry_for, LayerDir, Mode, Walker, MAX_DEPTH, MAX_DIR_ENTRIES, MAX_ENTRIES};
use super::{Change, ChangeKind};
use crate::layer::entry::{path_order, Entry, EntryKind, FileTree};
use crate::layer::WHITEOUT_PREFIX;

/// One difference found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `path` is new (`added`) or differs from the image: written from the root.
    Put { path: Vec<u8>, added: bool },
    /// `path` is in the image but not in the root.
    Gone { path: Vec<u8> },
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = parent.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

fn fs_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Whether two entries say the same thing in a layer (path aside).
fn same(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.size == b.size
        && a.link_target == b.link_target
        && a.device == b.device
        && a.xattrs == b.xattrs
}

/// Compares `root` with the merged `lowers` (top first).
struct Comparer<'a> {
    root: &'a Path,
    top: &'a LayerDir,
    lower: Walker,
    lowers: &'a [LayerDir],
    items: Vec<Item>,
}

impl Comparer<'_> {
    fn lower_entry(&self, rel: &[u8]) -> io::Result<Option<(Entry, Metadata)>> {
        let Some(md) = self.lower.lookup(rel)? else {
            return Ok(None);
        };
        // The topmost layer holding `rel` has the file lookup found.
        for l in self.lowers {
            let p = fs_path(&l.root, rel);
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.ino() == md.ino() && m.dev() == md.dev() {
                    return Ok(entry_for(rel.to_vec(), &p, &m)?.map(|e| (e, m)));
                }
            }
        }
        Ok(None)
    }

    /// Compares directory `rel` (present in the root); `in_lower`: it is a directory in the
    /// image too. Returns whether anything below it changed.
    fn dir(&mut self, rel: &[u8], in_lower: bool, depth: usize) -> io::Result<bool> {
        if depth > MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: directories nested deeper than {MAX_DEPTH} levels",
                    fs_path(self.root, rel).display()
                ),
            ));
        }
        let dir = fs_path(self.root, rel);
        let mut names = BTreeSet::new();
        for (n, de) in std::fs::read_dir(&dir)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("{}: read directory: {e}", dir.display()))
            })?
            .enumerate()
        {
            if n >= MAX_DIR_ENTRIES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: more than {MAX_DIR_ENTRIES} entries", dir.display()),
                ));
            }
            let name = de?.file_name().as_bytes().to_vec();
            if !self.top.excluded(&join_rel(rel, &name)) {
                names.insert(name);
            }
        }
        let lower_names: BTreeSet<Vec<u8>> = if in_lower {
            self.lower.list(rel)?.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let mut changed = false;
        for gone in lower_names.difference(&names) {
            if self.top.excluded(&join_rel(rel, gone)) {
                continue;
            }
            self.push(Item::Gone {
                path: join_rel(rel, gone),
            })?;
            changed = true;
        }
        let mut sorted: Vec<Vec<u8>> = names.into_iter().collect();
        sorted.sort_by(|a, b| path_order(a, b));
        for name in sorted {
            if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: a name starting with \".wh.\" would read as a whiteout and cannot be stored in a layer",
                        fs_path(self.root, &join_rel(rel, &name)).display()
                    ),
                ));
            }
            let child = join_rel(rel, &name);
            let p = fs_path(self.root, &child);
            let md = std::fs::symlink_metadata(&p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: lstat: {e}", p.display())))?;
            let Some(mine) = entry_for(child.clone(), &p, &md)? else {
                continue;
            };
            let theirs = if in_lower {
                self.lower_entry(&child)?
            } else {
                None
            };
            let differs = theirs.as_ref().is_none_or(|(t, _)| !same(&mine, t));
            let mark = self.items.len();
            if differs {
                self.push(Item::Put {
                    path: child.clone(),
                    added: theirs.is_none(),
                })?;
            }
            let mut below = false;
            if mine.kind == EntryKind::Dir {
                let lower_dir = theirs
                    .as_ref()
                    .is_some_and(|(t, _)| t.kind == EntryKind::Dir);
                below = self.dir(&child, lower_dir, depth + 1)?;
                if below && !differs {
                    // A directory holding a change is written too (docker lists it as C).
                    self.items.insert(
                        mark,
                        Item::Put {
                            path: child,
                            added: false,
                        },
                    );
                }
            }
            changed |= differs || below;
        }
        Ok(changed)
    }

    fn push(&mut self, item: Item) -> io::Result<()> {
        if self.items.len() as u64 >= MAX_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_ENTRIES} changes"),
            ));
        }
        self.items.push(item);
        Ok(())
    }
}

fn compare(top: &LayerDir, lowers: &[LayerDir]) -> io::Result<Vec<Item>> {
    let mut c = Comparer {
        root: &top.root,
        top,
        lower: Walker::new(lowers.to_vec(), Mode::Merge)?,
        lowers,
        items: Vec::new(),
    };
    c.dir(b"", true, 0)?;
    let mut items = c.items;
    // Whiteouts sort by their `.wh.` names among their siblings.
    let key = |i: &Item| -> Vec<u8> {
        match i {
            Item::Put { path, .. } => path.clone(),
            Item::Gone { path } => whiteout_name(path),
        }
    };
    items.sort_by(|a, b| path_order(&key(a), &key(b)));
    Ok(items)
}

fn whiteout_name(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => {
            let mut w = path.get(..=i).unwrap_or_default().to_vec();
            w.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            w.extend_from_slice(path.get(i + 1..).unwrap_or_default());
            w
        }
        None => {
            let mut w = WHITEOUT_PREFIX.as_bytes().to_vec();
            w.extend_from_slice(path);
            w
        }
    }
}

/// `diff` by comparing: A/C/D per changed path, sorted.
pub fn diff_by_compare(top: &LayerDir, lowers: &[LayerDir]) -> io::Result<Vec<Change>> {
    let mut out: Vec<Change> = compare(top, lowers)?
        .into_iter()
        .map(|i| match i {
            Item::Put { path, added } => Change {
                kind: if added {
                    ChangeKind::Added
                } else {
                    ChangeKind::Changed
                },
                path,
            },
            Item::Gone { path } => Change {
                kind: ChangeKind::Deleted,
                path,
            },
        })
        .collect();
    out.sort_by(|a, b| path_order(&a.path, &b.path));
    Ok(out)
}

/// The changes of `root` against the image as a diff layer's entries (whiteouts included).
pub struct CompareTree {
    root: PathBuf,
    items: std::vec::IntoIter<Item>,
    content: Option<File>,
    empty: io::Empty,
}

impl CompareTree {
    /// `top`: the root (and what to leave out of it); `lowers`: the image's layers, top first.
    pub fn new(top: &LayerDir, lowers: &[LayerDir]) -> io::Result<CompareTree> {
        Ok(CompareTree {
            root: top.root.clone(),
            items: compare(top, lowers)?.into_iter(),
            content: None,
            empty: io::empty(),
        })
    }
}

impl FileTree for CompareTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.content = None;
        for item in self.items.by_ref() {
            match item {
                Item::Gone { path } => {
                    return Ok(Some(Entry::new(
                        whiteout_name(&path),
                        EntryKind::File,
                        0o644,
                    )));
                }
                Item::Put { path, .. } => {
                    let p = fs_path(&self.root, &path);
                    let md = std::fs::symlink_metadata(&p).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: lstat: {e}", p.display()))
                    })?;
                    let Some(e) = entry_for(path, &p, &md)? else {
                        continue;
                    };
                    if e.kind == EntryKind::File && e.size > 0 {
                        self.content = Some(
                            std::fs::OpenOptions::new()
                                .read(true)
                                .custom_flags(libc::O_NOFOLLOW)
                                .open(&p)
                                .map_err(|e| {
                                    io::Error::new(e.kind(), format!("{}: open: {e}", p.display()))
                                })?,
                        );
                    }
                    return Ok(Some(e));
                }
            }
        }
        Ok(None)
    }

    fn content(&mut self) -> &mut dyn Read {
        match &mut self.content {
            Some(f) => f,
            None => &mut self.empty,
        }
    }
}

//! `GraftTree`: a root filesystem with other filesystems mounted into it, as one `FileTree`.
//!
//! This is what the guest saw at run time: at each fstab mountpoint, the mounted filesystem's
//! contents replace whatever the root had under that directory (a mount hides what it covers).
//! Both inputs are already in `path_order`, so grafting is a streaming merge: no tree is ever
//! held in memory. Mounts inside mounts (/var, then /var/log) nest: the inner one is grafted
//! into the outer one's tree first.

use std::collections::HashSet;
use std::io::{self, Read};

use snapshot::{path_order, Entry, EntryKind, FileTree};

/// One filesystem to mount into the tree.
pub struct Graft {
    /// Where, relative to the root, without leading or trailing `/` (`boot`, `var/log`).
    pub mountpoint: Vec<u8>,
    /// The mounted filesystem's files, paths relative to its own root.
    pub tree: Box<dyn FileTree + Send>,
    /// The mounted filesystem's root directory (its mode, owner and time become the
    /// mountpoint's, as they do in a running system). `None`: keep the root tree's directory.
    pub root: Option<Entry>,
}

/// A `FileTree` with grafts spliced in.
pub struct GraftTree {
    base: Box<dyn FileTree + Send>,
    /// Grafts not yet reached, in path order, none inside another (nested ones were folded).
    pending: std::collections::VecDeque<Graft>,
    /// The graft being streamed and its mountpoint.
    active: Option<(Vec<u8>, Box<dyn FileTree + Send>)>,
    /// The mountpoint streamed last: base entries below it are hidden.
    covered: Option<Vec<u8>>,
    /// A base entry read ahead while deciding where a graft goes.
    peeked: Option<Entry>,
    base_done: bool,
    /// Which tree the current entry came from: its content is read from there.
    current: Current,
    /// Ancestors of mountpoints, so a missing one can be made when a graft needs it.
    ancestors: HashSet<Vec<u8>>,
    seen_ancestors: HashSet<Vec<u8>>,
    /// Entries made up (missing mountpoint parents), to emit before the next real one.
    queued: std::collections::VecDeque<Entry>,
    empty: io::Empty,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Current {
    Base,
    Active,
    Made,
}

impl GraftTree {
    /// Grafts `grafts` into `base`. When two grafts share a mountpoint the later one wins, as
    /// the later mount would hide the earlier.
    pub fn new(base: Box<dyn FileTree + Send>, mut grafts: Vec<Graft>) -> GraftTree {
        // Shortest mountpoint first, then by order of appearance (stable sort).
        grafts.sort_by_key(|g| g.mountpoint.split(|&c| c == b'/').count());
        let mut top: Vec<Graft> = Vec::new();
        for g in grafts {
            if let Some(pos) = top.iter().position(|t| t.mountpoint == g.mountpoint) {
                top[pos] = g;
                continue;
            }
            top.push(g);
        }
        // Fold nested grafts into the deepest enclosing one, deepest first.
        let mut folded: Vec<Graft> = Vec::new();
        while let Some(g) = top.pop() {
            let parent = top
                .iter()
                .rposition(|p| is_under(&g.mountpoint, &p.mountpoint));
            match parent {
                Some(i) => {
                    let p = &mut top[i];
                    let rel = g.mountpoint[p.mountpoint.len() + 1..].to_vec();
                    let inner = std::mem::replace(&mut p.tree, Box::new(EmptyTree(io::empty())));
                    let mut nested = GraftTree::new(inner, Vec::new());
                    nested.add_pending(Graft {
                        mountpoint: rel,
                        tree: g.tree,
                        root: g.root,
                    });
                    p.tree = Box::new(nested);
                }
                None => folded.push(g),
            }
        }
        folded.sort_by(|a, b| path_order(&a.mountpoint, &b.mountpoint));
        let mut tree = GraftTree {
            base,
            pending: Default::default(),
            active: None,
            covered: None,
            peeked: None,
            base_done: false,
            current: Current::Made,
            ancestors: HashSet::new(),
            seen_ancestors: HashSet::new(),
            queued: Default::default(),
            empty: io::empty(),
        };
        for g in folded {
            tree.add_pending(g);
        }
        tree
    }

    /// Adds a graft that is not inside any other and sorts after those already pending.
    fn add_pending(&mut self, g: Graft) {
        let mut prefix = Vec::new();
        for comp in g.mountpoint.split(|&c| c == b'/') {
            if !prefix.is_empty() {
                self.ancestors.insert(prefix.clone());
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
        }
        let at = self
            .pending
            .iter()
            .position(|p| path_order(&g.mountpoint, &p.mountpoint).is_lt())
            .unwrap_or(self.pending.len());
        self.pending.insert(at, g);
    }

    fn next_base(&mut self) -> io::Result<Option<Entry>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        if self.base_done {
            return Ok(None);
        }
        let e = self.base.next_entry()?;
        if e.is_none() {
            self.base_done = true;
        }
        Ok(e)
    }

    /// Starts streaming `g`; returns the mountpoint's directory entry.
    fn activate(&mut self, g: Graft, base_dir: Option<Entry>) -> Entry {
        let mut dir = match (g.root, base_dir) {
            (Some(r), _) => r,
            (None, Some(b)) if b.kind == EntryKind::Dir => b,
            _ => Entry::new(Vec::new(), EntryKind::Dir, 0o755),
        };
        dir.path = g.mountpoint.clone();
        dir.kind = EntryKind::Dir;
        dir.size = 0;
        dir.link_target = None;
        dir.device = None;
        dir.hardlink_key = None;
        self.covered = Some(g.mountpoint.clone());
        self.active = Some((g.mountpoint, g.tree));
        dir
    }

    /// Queues directories that must exist before `mountpoint` but were not in the base tree.
    fn queue_missing_ancestors(&mut self, mountpoint: &[u8], like: &Entry) {
        let mut prefix = Vec::new();
        for comp in mountpoint.split(|&c| c == b'/') {
            if !prefix.is_empty() {
                if !self.seen_ancestors.contains(&prefix) {
                    let mut d = Entry::new(prefix.clone(), EntryKind::Dir, 0o755);
                    d.mtime = like.mtime;
                    self.seen_ancestors.insert(prefix.clone());
                    self.queued.push_back(d);
                }
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
        }
    }
}

/// True when `path` lies strictly below directory `dir`.
fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

impl FileTree for GraftTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                self.current = Current::Made;
                return Ok(Some(e));
            }
            if let Some((mp, tree)) = self.active.as_mut() {
                match tree.next_entry()? {
                    Some(mut e) => {
                        let mut p = mp.clone();
                        p.push(b'/');
                        p.extend_from_slice(&e.path);
                        e.path = p;
                        if e.kind == EntryKind::Hardlink {
                            if let Some(t) = e.link_target.as_mut() {
                                let mut full = mp.clone();
                                full.push(b'/');
                                full.extend_from_slice(t);
                                *t = full;
                            }
                        }
                        self.current = Current::Active;
                        return Ok(Some(e));
                    }
                    None => self.active = None,
                }
                continue;
            }
            let base = self.next_base()?;
            if let (Some(e), Some(c)) = (&base, &self.covered) {
                if is_under(&e.path, c) {
                    continue; // hidden by the mount just streamed
                }
            }
            let Some(g) = self.pending.front() else {
                self.current = Current::Base;
                return Ok(base);
            };
            match base {
                Some(e) if is_under(&e.path, &g.mountpoint) => continue, // hidden by the mount
                Some(e) if e.path == g.mountpoint => {
                    let g = self.pending.pop_front().expect("front exists");
                    let dir = self.activate(g, Some(e));
                    self.current = Current::Made;
                    return Ok(Some(dir));
                }
                Some(e) if path_order(&e.path, &g.mountpoint).is_lt() => {
                    if self.ancestors.contains(&e.path) && e.kind == EntryKind::Dir {
                        self.seen_ancestors.insert(e.path.clone());
                    }
                    self.current = Current::Base;
                    return Ok(Some(e));
                }
                other => {
                    // The mountpoint does not exist in the root: make it (and its parents).
                    let like = other
                        .clone()
                        .unwrap_or_else(|| Entry::new(Vec::new(), EntryKind::Dir, 0o755));
                    self.peeked = other;
                    let g = self.pending.pop_front().expect("front exists");
                    let mp = g.mountpoint.clone();
                    self.queue_missing_ancestors(&mp, &like);
                    let dir = self.activate(g, None);
                    self.queued.push_back(dir);
                }
            }
        }
    }

    fn content(&mut self) -> &mut dyn Read {
        match self.current {
            Current::Base => self.base.content(),
            Current::Active => match self.active.as_mut() {
                Some((_, t)) => t.content(),
                None => &mut self.empty,
            },
            Current::Made => &mut self.empty,
        }
    }
}

/// A tree with no entries (a placeholder while folding nested grafts).
struct EmptyTree(io::Empty);

impl FileTree for EmptyTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        Ok(None)
    }
    fn content(&mut self) -> &mut dyn Read {
        &mut self.0
    }
}

/// An in-memory `FileTree` (entries and their contents), for tests and small synthetic trees.
pub struct MemTree {
    entries: std::vec::IntoIter<(Entry, Vec<u8>)>,
    current: io::Cursor<Vec<u8>>,
}

impl MemTree {
    /// Entries must already be in `path_order`.
    pub fn new(entries: Vec<(Entry, Vec<u8>)>) -> MemTree {
        MemTree {
            entries: entries.into_iter(),
            current: io::Cursor::new(Vec::new()),
        }
    }
}

impl FileTree for MemTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        Ok(self.entries.next().map(|(e, data)| {
            self.current = io::Cursor::new(data);
            e
        }))
    }
    fn content(&mut self) -> &mut dyn Read {
        &mut self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> (Entry, Vec<u8>) {
        (
            Entry::new(p.as_bytes().to_vec(), EntryKind::Dir, 0o755),
            Vec::new(),
        )
    }
    fn file(p: &str, data: &str) -> (Entry, Vec<u8>) {
        let mut e = Entry::new(p.as_bytes().to_vec(), EntryKind::File, 0o644);
        e.size = data.len() as u64;
        (e, data.as_bytes().to_vec())
    }
    fn tree(v: Vec<(Entry, Vec<u8>)>) -> Box<dyn FileTree + Send> {
        Box::new(MemTree::new(v))
    }
    fn collect(t: &mut dyn FileTree) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = t.next_entry().unwrap() {
            let mut data = String::new();
            t.content().read_to_string(&mut data).unwrap();
            let kind = if e.kind == EntryKind::Dir { "/" } else { "" };
            out.push(format!(
                "{}{}{}",
                String::from_utf8_lossy(&e.path),
                kind,
                if data.is_empty() {
                    String::new()
                } else {
                    format!("={data}")
                }
            ));
        }
        out
    }

    #[test]
    fn mount_hides_what_it_covers_and_nests() {
        let root = tree(vec![
            dir("boot"),
            file("boot/hidden", "root's"),
            dir("etc"),
            file("etc/fstab", "x"),
            dir("var"),
            dir("var/log"),
            file("var/log/old", "hidden too"),
            file("var/zz", "root var"),
        ]);
        let boot = tree(vec![
            dir("grub"),
            file("grub/grub.cfg", "cfg"),
            file("vmlinuz", "kernel"),
        ]);
        let var = tree(vec![dir("lib"), file("lib/x", "var's"), dir("log")]);
        let log = tree(vec![file("syslog", "log!")]);
        let mut boot_root = Entry::new(Vec::new(), EntryKind::Dir, 0o700);
        boot_root.uid = 7;
        let mut g = GraftTree::new(
            root,
            vec![
                Graft {
                    mountpoint: b"var/log".to_vec(),
                    tree: log,
                    root: None,
                },
                Graft {
                    mountpoint: b"boot".to_vec(),
                    tree: boot,
                    root: Some(boot_root),
                },
                Graft {
                    mountpoint: b"var".to_vec(),
                    tree: var,
                    root: None,
                },
            ],
        );
        let got = collect(&mut g);
        assert_eq!(
            got,
            vec![
                "boot/",
                "boot/grub/",
                "boot/grub/grub.cfg=cfg",
                "boot/vmlinuz=kernel",
                "etc/",
                "etc/fstab=x",
                "var/",
                "var/lib/",
                "var/lib/x=var's",
                "var/log/",
                "var/log/syslog=log!",
            ]
        );
    }

    #[test]
    fn missing_mountpoints_and_parents_are_made_in_order() {
        let root = tree(vec![dir("etc"), file("etc/a", "1"), dir("usr")]);
        let data = tree(vec![file("f", "data")]);
        let tail = tree(vec![file("t", "tail")]);
        let mut g = GraftTree::new(
            root,
            vec![
                Graft {
                    mountpoint: b"srv/data".to_vec(),
                    tree: data,
                    root: None,
                },
                Graft {
                    mountpoint: b"zz".to_vec(),
                    tree: tail,
                    root: None,
                },
            ],
        );
        assert_eq!(
            collect(&mut g),
            vec![
                "etc/",
                "etc/a=1",
                "srv/",
                "srv/data/",
                "srv/data/f=data",
                "usr/",
                "zz/",
                "zz/t=tail"
            ]
        );
    }

    #[test]
    fn output_is_in_path_order() {
        let root = tree(vec![dir("a"), dir("a.b"), dir("b")]);
        let m = tree(vec![file("x", "1")]);
        let mut g = GraftTree::new(
            root,
            vec![Graft {
                mountpoint: b"a".to_vec(),
                tree: m,
                root: None,
            }],
        );
        let mut prev: Option<Vec<u8>> = None;
        while let Some(e) = g.next_entry().unwrap() {
            if let Some(p) = &prev {
                assert!(path_order(p, &e.path).is_lt(), "{:?} then {:?}", p, e.path);
            }
            prev = Some(e.path);
        }
    }
}

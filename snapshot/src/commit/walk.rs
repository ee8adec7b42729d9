//! A `FileTree` over a stack of overlayfs directories (a container's upper dir on top of the
//! image's unpacked layers), in two modes:
//!
//! - `Mode::Diff` walks one upper dir and turns overlayfs's own markers into OCI ones: a 0/0
//!   character device (or, rootless, an empty file with the `*.overlay.whiteout` xattr) becomes
//!   `.wh.<name>`, a directory with `trusted.overlay.opaque=y` (`user.overlay.opaque=y` with
//!   `userxattr`) gets a `.wh..wh..opq` entry. Only the upper dir is read, so the cost follows
//!   what changed, not the image.
//! - `Mode::Merge` walks the union of every layer, top first, as overlayfs would show it:
//!   whiteouts hide, opaque directories stop the descent, a non-directory hides what is below.
//!   `export` and `commit --squash` stream this.
//!
//! Paths listed in a layer's exclusion list (bind mounts, volumes, tmpfs, decant's own
//! /etc/hosts files) are treated as absent from that layer, with everything below them.
//!
//! Why our own walker rather than a crate (walkdir): we need overlay semantics across several
//! roots, sorted output in `FileTree` order, and xattrs; a plain walker gives none of these.
//!
//! The walk is path based (lstat/readdir/open by path). The directories are decant's own and
//! the container is frozen while commit reads them (unless `--pause=false`); a container that
//! keeps running could swap a directory for a symlink between our lstat and readdir, so the
//! final open of a file uses O_NOFOLLOW and every entry's type is taken from lstat, never from
//! a followed path.
//!
//! Caps: at most `MAX_DIR_ENTRIES` names per directory, `MAX_ENTRIES` in all, `MAX_DEPTH`
//! levels, xattr lists and values of 64 KiB (the kernel's own XATTR_SIZE_MAX).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::layer::entry::{path_order, Entry, EntryKind, FileTree, Timestamp};
use crate::layer::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Names read from one directory at most.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Entries one walk yields at most.
pub const MAX_ENTRIES: u64 = 1 << 26;
/// Deepest directory nesting followed.
pub const MAX_DEPTH: usize = 512;
/// Largest xattr name list or value read (XATTR_SIZE_MAX).
const MAX_XATTR: usize = 64 * 1024;

/// How the layers are read; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Diff,
    Merge,
}

/// One directory of the stack and the paths (relative, no leading '/') to leave out of it.
#[derive(Debug, Clone, Default)]
pub struct LayerDir {
    pub root: PathBuf,
    pub exclude: Vec<Vec<u8>>,
}

impl LayerDir {
    pub fn new(root: impl Into<PathBuf>) -> LayerDir {
        LayerDir {
            root: root.into(),
            exclude: Vec::new(),
        }
    }

    /// Whether `rel` is one of the excluded paths or below one.
    pub fn excluded(&self, rel: &[u8]) -> bool {
        self.exclude.iter().any(|x| {
            rel == x.as_slice()
                || (rel.len() > x.len() && rel.starts_with(x) && rel.get(x.len()) == Some(&b'/'))
        })
    }
}

/// One pending entry of the walk.
struct Node {
    /// The path as it will be emitted.
    rel: Vec<u8>,
    src: Src,
}

enum Src {
    /// A real file of layer `layer`; `contrib` (directories only): the layers whose directory
    /// of this path is merged into it, top first.
    Fs {
        path: PathBuf,
        md: Metadata,
        contrib: Vec<usize>,
        opaque: bool,
    },
    /// `.wh.<name>` (Diff mode): the metadata of the overlay whiteout it came from.
    Whiteout { md: Metadata },
    /// `.wh..wh..opq` (Diff mode): the metadata of its directory.
    Opaque { md: Metadata },
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn ctx(path: &Path, op: &str) -> impl FnOnce(io::Error) -> io::Error {
    let p = path.display().to_string();
    let op = op.to_string();
    move |e| io::Error::new(e.kind(), format!("{p}: {op}: {e}"))
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(parent.len() + name.len() + 1);
    if !parent.is_empty() {
        r.extend_from_slice(parent);
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

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ctx(path, "lstat")(e)),
    }
}

/// The extended attributes of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(path, "NUL in path".into()))?;
    let mut names = vec![0u8; MAX_XATTR];
    // SAFETY: c is a valid C string; names is a writable buffer of the length passed.
    let n = unsafe {
        libc::llistxattr(
            c.as_ptr(),
            names.as_mut_ptr().cast::<libc::c_char>(),
            names.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        // Filesystems without xattrs (and symlinks on some) simply have none.
        if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) {
            return Ok(Vec::new());
        }
        return Err(ctx(path, "llistxattr")(e));
    }
    names.truncate(usize::try_from(n).unwrap_or(0));
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(v) = getxattr(&c, path, name)? {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn getxattr(c: &CString, path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = CString::new(name).map_err(|_| invalid(path, "NUL in xattr name".into()))?;
    let mut buf = vec![0u8; MAX_XATTR];
    // SAFETY: both strings are valid C strings; buf is writable for the length passed.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        // Removed since it was listed, or a namespace we may not read: not there for us.
        if matches!(
            e.raw_os_error(),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) | Some(libc::EPERM)
        ) {
            return Ok(None);
        }
        return Err(ctx(path, "lgetxattr")(e));
    }
    buf.truncate(usize::try_from(n).unwrap_or(0));
    Ok(Some(buf))
}

fn xattr_is(path: &Path, name: &str, want: Option<&[u8]>) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(path, "NUL in path".into()))?;
    Ok(match getxattr(&c, path, name.as_bytes())? {
        Some(v) => want.is_none_or(|w| v == w),
        None => false,
    })
}

/// Whether `path` (already lstat'ed as `md`) is an overlayfs whiteout.
pub fn is_overlay_whiteout(path: &Path, md: &Metadata) -> io::Result<bool> {
    let ft = md.file_type();
    if ft.is_char_device() {
        return Ok(md.rdev() == 0);
    }
    if ft.is_file() && md.size() == 0 {
        return Ok(xattr_is(path, "trusted.overlay.whiteout", None)?
            || xattr_is(path, "user.overlay.whiteout", None)?);
    }
    Ok(false)
}

/// Whether directory `path` is opaque (hides the lower layers' contents).
pub fn is_overlay_opaque(path: &Path) -> io::Result<bool> {
    Ok(xattr_is(path, "trusted.overlay.opaque", Some(b"y"))?
        || xattr_is(path, "user.overlay.opaque", Some(b"y"))?)
}

/// The layer entry for file `path` (lstat'ed as `md`), named `rel`.
pub fn entry_for(rel: Vec<u8>, path: &Path, md: &Metadata) -> io::Result<Option<Entry>> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        // Sockets: a layer cannot carry them (oci-layers note, item 5).
        return Ok(None);
    };
    let mut e = Entry::new(rel, kind, md.mode() & 0o7777);
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime = Timestamp {
        secs: md.mtime(),
        nanos: u32::try_from(md.mtime_nsec()).unwrap_or(0),
    };
    match kind {
        EntryKind::File => {
            e.size = md.size();
            e.allocated = Some(md.blocks().saturating_mul(512));
            if md.nlink() > 1 {
                e.hardlink_key = Some((md.dev(), md.ino()));
            }
        }
        EntryKind::Symlink => {
            let t = std::fs::read_link(path).map_err(ctx(path, "readlink"))?;
            e.link_target = Some(t.as_os_str().as_bytes().to_vec());
        }
        EntryKind::CharDevice | EntryKind::BlockDevice => {
            e.device = Some((libc::major(md.rdev()), libc::minor(md.rdev())));
        }
        _ => {}
    }
    e.xattrs = xattrs(path)?
        .into_iter()
        .filter(|(n, _)| !n.starts_with(b"trusted.overlay.") && !n.starts_with(b"user.overlay."))
        .collect();
    Ok(Some(e))
}

/// Walks a stack of layer directories; see the module comment.
pub struct Walker {
    layers: Vec<LayerDir>,
    mode: Mode,
    /// Pending nodes per open directory level, in reverse order (the next one is last).
    stack: Vec<Vec<Node>>,
    yielded: u64,
    content: Option<File>,
    empty: io::Empty,
}

impl Walker {
    /// `layers`: top first. In `Mode::Diff` only the first is read.
    pub fn new(mut layers: Vec<LayerDir>, mode: Mode) -> io::Result<Walker> {
        if mode == Mode::Diff {
            layers.truncate(1);
        }
        let mut w = Walker {
            layers,
            mode,
            stack: Vec::new(),
            yielded: 0,
            content: None,
            empty: io::empty(),
        };
        let mut contrib = Vec::new();
        for (i, l) in w.layers.iter().enumerate() {
            contrib.push(i);
            if mode == Mode::Merge && is_overlay_opaque(&l.root)? {
                break;
            }
        }
        let level = w.children(b"", &contrib, false, None)?;
        w.stack.push(level);
        Ok(w)
    }

    /// Lists directory `rel` merged over the layers `contrib` (top first): the nodes in
    /// reverse emit order.
    fn children(
        &self,
        rel: &[u8],
        contrib: &[usize],
        opaque: bool,
        dir_md: Option<&Metadata>,
    ) -> io::Result<Vec<Node>> {
        // name -> node; None: hidden by a whiteout in a higher layer.
        let mut seen: BTreeMap<Vec<u8>, Option<Node>> = BTreeMap::new();
        for (pos, &li) in contrib.iter().enumerate() {
            let Some(layer) = self.layers.get(li) else {
                continue;
            };
            let dir = fs_path(&layer.root, rel);
            let rd = std::fs::read_dir(&dir).map_err(ctx(&dir, "read directory"))?;
            let mut n = 0usize;
            for de in rd {
                let de = de.map_err(ctx(&dir, "read directory"))?;
                n += 1;
                if n > MAX_DIR_ENTRIES {
                    return Err(invalid(
                        &dir,
                        format!("more than {MAX_DIR_ENTRIES} entries in one directory"),
                    ));
                }
                let name = de.file_name().as_bytes().to_vec();
                if seen.contains_key(&name) {
                    continue;
                }
                let child_rel = join_rel(rel, &name);
                if layer.excluded(&child_rel) {
                    continue;
                }
                let path = dir.join(de.file_name());
                let Some(md) = lstat(&path)? else {
                    continue;
                };
                if is_overlay_whiteout(&path, &md)? {
                    if self.mode == Mode::Diff {
                        let mut wh = WHITEOUT_PREFIX.as_bytes().to_vec();
                        wh.extend_from_slice(&name);
                        seen.insert(
                            wh.clone(),
                            Some(Node {
                                rel: join_rel(rel, &wh),
                                src: Src::Whiteout { md },
                            }),
                        );
                    }
                    seen.insert(name, None);
                    continue;
                }
                if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                    return Err(invalid(
                        &path,
                        "a name starting with \".wh.\" would read as a whiteout and cannot be stored in a layer".into(),
                    ));
                }
                let mut child_contrib = Vec::new();
                let mut child_opaque = false;
                if md.is_dir() {
                    child_contrib.push(li);
                    child_opaque = is_overlay_opaque(&path)?;
                    if self.mode == Mode::Merge && !child_opaque {
                        for &lj in contrib.get(pos + 1..).unwrap_or_default() {
                            let Some(lower) = self.layers.get(lj) else {
                                continue;
                            };
                            let lp = fs_path(&lower.root, &child_rel);
                            let Some(lmd) = lstat(&lp)? else {
                                continue;
                            };
                            if !lmd.is_dir() || lower.excluded(&child_rel) {
                                break;
                            }
                            child_contrib.push(lj);
                            if is_overlay_opaque(&lp)? {
                                break;
                            }
                        }
                    }
                }
                seen.insert(
                    name,
                    Some(Node {
                        rel: child_rel,
                        src: Src::Fs {
                            path,
                            md,
                            contrib: child_contrib,
                            opaque: child_opaque,
                        },
                    }),
                );
            }
            if self.mode == Mode::Merge && pos == 0 && opaque {
                break;
            }
        }
        if self.mode == Mode::Diff && opaque {
            if let Some(md) = dir_md {
                seen.insert(
                    OPAQUE_MARKER.as_bytes().to_vec(),
                    Some(Node {
                        rel: join_rel(rel, OPAQUE_MARKER.as_bytes()),
                        src: Src::Opaque { md: md.clone() },
                    }),
                );
            }
        }
        let mut nodes: Vec<Node> = seen.into_values().flatten().collect();
        nodes.sort_by(|a, b| path_order(&b.rel, &a.rel));
        Ok(nodes)
    }

    /// Whether `rel` exists in the merged view of the layers, and its lstat if so.
    pub fn lookup(&self, rel: &[u8]) -> io::Result<Option<Metadata>> {
        Ok(self.resolve(rel)?.map(|(md, _)| md))
    }

    /// `rel` in the merged view: its lstat and, for a directory, the layers merged into it
    /// (top first).
    fn resolve(&self, rel: &[u8]) -> io::Result<Option<(Metadata, Vec<usize>)>> {
        let mut contrib: Vec<usize> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            contrib.push(i);
            if is_overlay_opaque(&l.root)? {
                break;
            }
        }
        let mut found = match lstat(
            &self
                .layers
                .first()
                .map(|l| l.root.clone())
                .unwrap_or_default(),
        )? {
            Some(md) => md,
            None => return Ok(None),
        };
        let mut cur = Vec::new();
        for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if !found.is_dir() {
                return Ok(None);
            }
            cur = join_rel(&cur, comp);
            let mut next = Vec::new();
            let mut top: Option<Metadata> = None;
            for &li in &contrib {
                let Some(layer) = self.layers.get(li) else {
                    continue;
                };
                if layer.excluded(&cur) {
                    continue;
                }
                let p = fs_path(&layer.root, &cur);
                let Some(md) = lstat(&p)? else {
                    continue;
                };
                if top.is_none() {
                    if is_overlay_whiteout(&p, &md)? {
                        return Ok(None);
                    }
                    let is_dir = md.is_dir();
                    top = Some(md);
                    if !is_dir {
                        break;
                    }
                } else if !md.is_dir() {
                    break;
                }
                next.push(li);
                if is_overlay_opaque(&p)? {
                    break;
                }
            }
            match top {
                Some(md) => found = md,
                None => return Ok(None),
            }
            contrib = next;
        }
        Ok(Some((found, contrib)))
    }

    /// The names directory `rel` holds in the merged view (empty when it is not a directory).
    pub fn list(&self, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let Some((md, contrib)) = self.resolve(rel)? else {
            return Ok(Vec::new());
        };
        if !md.is_dir() {
            return Ok(Vec::new());
        }
        let nodes = self.children(rel, &contrib, false, None)?;
        Ok(nodes
            .into_iter()
            .rev()
            .filter_map(|n| n.rel.rsplit(|&b| b == b'/').next().map(<[u8]>::to_vec))
            .collect())
    }
}

impl FileTree for Walker {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.content = None;
        loop {
            let Some(level) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(node) = level.pop() else {
                self.stack.pop();
                continue;
            };
            self.yielded += 1;
            if self.yielded > MAX_ENTRIES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {MAX_ENTRIES} entries to walk"),
                ));
            }
            let entry = match node.src {
                Src::Whiteout { md } | Src::Opaque { md } => {
                    let mut e = Entry::new(node.rel, EntryKind::File, 0o644);
                    e.uid = md.uid();
                    e.gid = md.gid();
                    e.mtime = Timestamp {
                        secs: md.mtime(),
                        nanos: u32::try_from(md.mtime_nsec()).unwrap_or(0),
                    };
                    e
                }
                Src::Fs {
                    path,
                    md,
                    contrib,
                    opaque,
                } => {
                    let Some(e) = entry_for(node.rel.clone(), &path, &md)? else {
                        continue;
                    };
                    if e.kind == EntryKind::Dir {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(invalid(
                                &path,
                                format!("directories nested deeper than {MAX_DEPTH} levels"),
                            ));
                        }
                        let level = self.children(&node.rel, &contrib, opaque, Some(&md))?;
                        self.stack.push(level);
                    } else if e.kind == EntryKind::File && e.size > 0 {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&path)
                            .map_err(ctx(&path, "open"))?;
                        self.content = Some(f);
                    }
                    e
                }
            };
            return Ok(Some(entry));
        }
    }

    fn content(&mut self) -> &mut dyn Read {
        match &mut self.content {
            Some(f) => f,
            None => &mut self.empty,
        }
    }
}

//! Unpacks a layer (any `FileTree`, normally a `LayerReader`) into a directory, safely.
//!
//! A layer is hostile input and unpacking it is an attack surface (oci-layers note, item 10):
//! `..` and absolute paths, a symlink placed earlier that later entries write through (umoci
//! CVE-2021-29136), hardlinks to outside paths, device nodes. So nothing here ever uses a path
//! string below `dest`: every parent directory is resolved from a directory fd on `dest` with
//! openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) — symlinks are followed as if `dest` were
//! `/`, as docker's chrooted unpacker does — or, where openat2 is missing (old kernels,
//! seccomp) or the path is too long for it, by our own component walk that opens each
//! component with O_NOFOLLOW and interprets symlinks itself, clamped at `dest`. The final
//! component is never followed: it is created with O_EXCL / mkdirat / symlinkat / mknodat /
//! linkat, which do not follow, and metadata is set through the new fd or with NOFOLLOW.
//!
//! Why our own code instead of `tar::Archive::unpack`: it resolves paths as strings below the
//! destination, has no whiteout or rootless handling, and cannot take a `FileTree`.
//!
//! Metadata order per entry: content, lchown, chmod (after chown, which clears setuid), xattrs
//! (after chown, which clears security.capability), times last. Directories are created 0700
//! so their contents can be written even when their final mode forbids it (rootless); their
//! final mode and mtime are set in a last pass, after their contents stopped changing them.
//!
//! Memory: the last pass remembers every directory (path, mode, mtime), Apply mode remembers
//! every unpacked path (for opaque whiteouts), and multiply-named files from filesystem sources
//! remember their first name; each of these is capped at `MAX_TRACKED` entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::entry::{Entry, EntryKind, FileTree, Timestamp};
use super::reader::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Most paths (directories, unpacked names, hardlink keys) remembered while unpacking one layer;
/// a Debian VM has some 12,000 inodes, big ones a million.
pub const MAX_TRACKED: usize = 1 << 22;
/// Deepest path accepted (components). Our own walk and recursive removal hold one fd per
/// level, and the usual fd limit is 1024.
pub const MAX_DEPTH: usize = 512;
/// Symlinks followed while resolving one path, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;
/// Lines kept in `UnpackReport::skipped`; past this only a count is added.
const MAX_REPORT_LINES: usize = 1000;
/// Bytes copied per read; runs of zero-filled chunks become holes.
const CHUNK: usize = 256 * 1024;

/// How whiteout entries (`.wh.<name>`, `.wh..wh..opq`) are unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The directory will be an overlayfs lowerdir: `.wh.x` becomes a 0/0 character device `x`
    /// (rootless, where mknod is refused: an empty file with the `user.overlay.whiteout` xattr
    /// and its directory marked `user.overlay.opaque=x`, which overlayfs reads from lower
    /// layers since Linux 6.7); `.wh..wh..opq` sets `trusted.overlay.opaque=y` on the
    /// directory (`user.overlay.opaque=y` rootless, for mounts with `userxattr`).
    Overlay,
    /// The layer is applied onto a merged tree: `.wh.x` deletes `x`, `.wh..wh..opq` deletes
    /// what the directory held before this layer.
    Apply,
}

/// How to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
    /// Not root: files keep the current user as owner, device nodes are skipped, trusted.* and
    /// security.* xattrs are skipped; each is reported.
    pub rootless: bool,
    /// false: no xattrs at all are set.
    pub keep_xattrs: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries handled, whiteouts included.
    pub entries: u64,
    /// Content bytes of regular files.
    pub bytes: u64,
    /// One human line per thing not reproduced (`dev/sda: device node not created (rootless)`).
    pub skipped: Vec<String>,
}

/// Why an unpack stopped. One line naming the destination, the entry and the problem; read
/// errors carry the reader's own message (which names the tar offset).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unpack into {}: cannot open the destination directory: {source}", dest.display())]
    Dest { dest: PathBuf, source: io::Error },
    #[error("unpack into {}: reading the layer after {after}: {source}", dest.display())]
    Read {
        dest: PathBuf,
        after: String,
        source: io::Error,
    },
    #[error("unpack into {}: entry {path}: refused: {why}", dest.display())]
    Refused {
        dest: PathBuf,
        path: String,
        why: String,
    },
    #[error("unpack into {}: entry {path}: {op}: {source}", dest.display())]
    Io {
        dest: PathBuf,
        path: String,
        op: String,
        source: io::Error,
    },
}

/// Unpacks every entry of `tree` into the existing directory `dest`.
pub fn unpack(
    tree: &mut dyn FileTree,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_with(tree, dest, opts, false)
}

/// `unpack` resolving every path with our own component walk, as on kernels without openat2;
/// tests run the hostile layers through both resolvers.
#[doc(hidden)]
pub fn unpack_without_openat2(
    tree: &mut dyn FileTree,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_with(tree, dest, opts, true)
}

fn unpack_with(
    tree: &mut dyn FileTree,
    dest: &Path,
    opts: &UnpackOptions,
    force_walk: bool,
) -> Result<UnpackReport, UnpackError> {
    let mut u = Unpacker::new(dest, opts, force_walk)?;
    let mut last = String::from("the start");
    while let Some(e) = tree.next_entry().map_err(|source| UnpackError::Read {
        dest: dest.to_path_buf(),
        after: last.clone(),
        source,
    })? {
        u.entry(&e, tree.content())?;
        last = e.display_path();
    }
    u.finish()
}

/// Removes the tree at `path` (a directory or anything else) without following symlinks inside
/// it, making directories writable first so trees unpacked rootless with read-only directories
/// can be removed by their owner. Missing `path` is not an error. Returns the bytes freed
/// (allocated blocks, each inode counted once).
pub fn remove_tree(path: &Path) -> io::Result<u64> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to remove {}", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = File::open(parent)?;
    let name = sys::cstr(std::os::unix::ffi::OsStrExt::as_bytes(name))?;
    let mut seen = HashSet::new();
    match remove_at(pfd.as_fd(), &name, 0, &mut seen) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir` (recursively when a directory), never following a symlink. Returns
/// the bytes freed.
fn remove_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
) -> io::Result<u64> {
    let st = sys::lstatat(dir, name)?;
    let mut freed = 0u64;
    if seen.len() < MAX_TRACKED && seen.insert((st.st_dev, st.st_ino)) {
        freed = (st.st_blocks as u64).saturating_mul(512);
    }
    if !is_dir(&st) {
        sys::unlinkat(dir, name, 0)?;
        return Ok(freed);
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directory tree deeper than {MAX_DEPTH} levels"
        )));
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let fd = match sys::openat(dir, name, flags, 0) {
        Ok(fd) => fd,
        Err(e) if errno(&e) == libc::EACCES => {
            // Our own read-only directory (rootless): open it up to empty it. `name` is a
            // directory (lstat above), so chmod does not follow a symlink.
            sys::fchmodat(dir, name, 0o700)?;
            sys::openat(dir, name, flags, 0)?
        }
        Err(e) => return Err(e),
    };
    if st.st_mode & 0o700 != 0o700 {
        sys::fchmod(fd.as_fd(), 0o700)?;
    }
    for child in sys::list_dir(fd.as_fd(), MAX_TRACKED)? {
        freed = freed.saturating_add(remove_at(fd.as_fd(), &child, depth + 1, seen)?);
    }
    sys::unlinkat(dir, name, libc::AT_REMOVEDIR)?;
    Ok(freed)
}

/// Splits an entry path into components, refusing anything that is not a plain relative path.
fn split_path(p: &[u8]) -> Result<Vec<&[u8]>, String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    if p.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let comps: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
    for c in &comps {
        match *c {
            b"" => return Err("empty path component (double or trailing '/')".into()),
            b"." => return Err("'.' path component".into()),
            b".." => return Err("'..' path component".into()),
            _ => {}
        }
    }
    if comps.len() > MAX_DEPTH {
        return Err(format!("path deeper than {MAX_DEPTH} components"));
    }
    Ok(comps)
}

/// The deferred part of a directory's metadata.
#[derive(Clone, Copy)]
struct DirMeta {
    mode: u32,
    mtime: Timestamp,
}

struct Unpacker<'a> {
    dest: &'a Path,
    opts: &'a UnpackOptions,
    root: OwnedFd,
    /// Set after openat2 failed as unsupported: use our own walk from then on.
    no_openat2: bool,
    /// Tests force the walk to exercise it.
    force_walk: bool,
    report: UnpackReport,
    dirs: HashMap<Vec<u8>, DirMeta>,
    /// Apply mode: paths this layer created, which an opaque marker must not remove.
    unpacked: HashSet<Vec<u8>>,
    /// First name of each multiply-named file from a filesystem source.
    links: HashMap<(u64, u64), Vec<u8>>,
    ids: (u32, u32),
    /// Rootless, but as root of a user namespace that maps a range of ids (subuid): owners
    /// are set, and only those the namespace does not map are kept as ours and reported.
    chown_mapped: bool,
    foreign_owner: u64,
    skipped_xattrs: u64,
    extra_lines: u64,
    buf: Vec<u8>,
}

/// Where an entry's metadata is applied: through its own fd, or by name in its parent.
enum Target<'f> {
    Fd(BorrowedFd<'f>),
    At(BorrowedFd<'f>, &'f CStr),
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, opts: &'a UnpackOptions, force_walk: bool) -> Result<Self, UnpackError> {
        let root = File::open(dest)
            .and_then(|f| {
                if f.metadata()?.is_dir() {
                    Ok(OwnedFd::from(f))
                } else {
                    Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                }
            })
            .map_err(|source| UnpackError::Dest {
                dest: dest.to_path_buf(),
                source,
            })?;
        Ok(Unpacker {
            dest,
            opts,
            root,
            no_openat2: false,
            force_walk,
            report: UnpackReport::default(),
            dirs: HashMap::new(),
            unpacked: HashSet::new(),
            links: HashMap::new(),
            ids: sys::euid_egid(),
            chown_mapped: opts.rootless && sys::euid_egid() == (0, 0) && sys::in_user_namespace(),
            foreign_owner: 0,
            skipped_xattrs: 0,
            extra_lines: 0,
            buf: Vec::new(),
        })
    }

    fn refused(&self, e: &Entry, why: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            dest: self.dest.to_path_buf(),
            path: e.display_path(),
            why: why.into(),
        }
    }

    fn io(&self, e: &Entry, op: impl Into<String>, source: io::Error) -> UnpackError {
        UnpackError::Io {
            dest: self.dest.to_path_buf(),
            path: e.display_path(),
            op: op.into(),
            source,
        }
    }

    fn skip_line(&mut self, line: String) {
        if self.report.skipped.len() < MAX_REPORT_LINES {
            self.report.skipped.push(line);
        } else {
            self.extra_lines += 1;
        }
    }

    fn track(&self, e: &Entry, map_len: usize, what: &str) -> Result<(), UnpackError> {
        if map_len >= MAX_TRACKED {
            return Err(self.refused(e, format!("more than {MAX_TRACKED} {what} in one layer")));
        }
        Ok(())
    }

    /// Resolves the directory `comps` inside the root, following symlinks as if the root were
    /// `/`. With `create`, missing directories named by the path itself are made (0755).
    fn resolve_dir(&mut self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        if comps.is_empty() {
            return self.root.try_clone();
        }
        let joined = comps.join(&b'/');
        if !self.no_openat2 && !self.force_walk && joined.len() < libc::PATH_MAX as usize {
            let path = sys::cstr(&joined)?;
            match sys::openat2_in_root(self.root.as_fd(), &path, libc::O_RDONLY | libc::O_DIRECTORY)
            {
                Ok(fd) => return Ok(fd),
                Err(e) if matches!(errno(&e), libc::ENOSYS | libc::EPERM | libc::E2BIG) => {
                    self.no_openat2 = true;
                }
                // A missing directory to create: the walk creates it where the kernel would
                // have looked for it.
                Err(e) if errno(&e) == libc::ENOENT && create => {}
                Err(e) => return Err(e),
            }
        }
        self.walk(comps, create)
    }

    /// Our own RESOLVE_IN_ROOT: each component opened with O_NOFOLLOW from the directory
    /// before it; a symlink's target is spliced into the queue (an absolute one restarts at
    /// the root, `..` never climbs above it).
    fn walk(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        // (component, named by the entry itself rather than by a symlink's target)
        let mut queue: VecDeque<(Vec<u8>, bool)> =
            comps.iter().map(|c| (c.to_vec(), true)).collect();
        let mut links = 0usize;
        let mut steps = 0usize;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        while let Some((c, literal)) = queue.pop_front() {
            steps += 1;
            if steps > 64 * MAX_DEPTH {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(self.root.as_fd(), |f| f.as_fd());
            let name = sys::cstr(&c)?;
            match sys::openat(cur, &name, flags, 0) {
                Ok(fd) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(io::Error::other(format!(
                            "path resolves deeper than {MAX_DEPTH} directories"
                        )));
                    }
                    stack.push(fd);
                }
                Err(e) if matches!(errno(&e), libc::ELOOP | libc::ENOTDIR) => {
                    let target = match sys::readlinkat(cur, &name) {
                        Ok(t) => t,
                        Err(r) if errno(&r) == libc::EINVAL => {
                            return Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                        }
                        Err(r) => return Err(r),
                    };
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front((t.to_vec(), false));
                    }
                }
                Err(e) if errno(&e) == libc::ENOENT && create && literal => {
                    match sys::mkdirat(cur, &name, 0o755) {
                        Ok(()) => queue.push_front((c, literal)),
                        // Something is there that did not open: a dangling symlink.
                        Err(m) if errno(&m) == libc::EEXIST => return Err(e),
                        Err(m) => return Err(m),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => self.root.try_clone(),
        }
    }

    fn entry(&mut self, e: &Entry, content: &mut dyn Read) -> Result<(), UnpackError> {
        let comps = split_path(&e.path).map_err(|w| self.refused(e, w))?;
        let Some((name, parent_comps)) = comps.split_last() else {
            return Err(self.refused(e, "empty path"));
        };
        if e.mtime.nanos >= 1_000_000_000 {
            return Err(self.refused(
                e,
                format!("mtime nanoseconds {} out of range", e.mtime.nanos),
            ));
        }
        self.report.entries += 1;
        let parent = self
            .resolve_dir(parent_comps, true)
            .map_err(|s| self.io(e, "resolving the parent directory", s))?;
        let cname = sys::cstr(name).map_err(|s| self.io(e, "name", s))?;
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(e, parent.as_fd(), parent_comps, name, target);
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.track(e, self.unpacked.len(), "paths")?;
            self.unpacked.insert(e.path.clone());
        }

        // Something already there: a directory over a directory merges; anything else is
        // removed first (docker's semantics), never following a symlink.
        match sys::lstatat(parent.as_fd(), &cname) {
            Ok(st) if is_dir(&st) && e.kind == EntryKind::Dir => {
                let fd = sys::openat(
                    parent.as_fd(),
                    &cname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|s| self.io(e, "opening the existing directory", s))?;
                sys::fchmod(fd.as_fd(), 0o700).map_err(|s| self.io(e, "chmod", s))?;
                return self.finish_dir(e, fd.as_fd());
            }
            Ok(_) => {
                let mut seen = HashSet::new();
                remove_at(parent.as_fd(), &cname, 0, &mut seen)
                    .map_err(|s| self.io(e, "removing what the entry replaces", s))?;
            }
            Err(s) if errno(&s) == libc::ENOENT => {}
            Err(s) => return Err(self.io(e, "lstat", s)),
        }

        let p = parent.as_fd();
        match e.kind {
            EntryKind::File => {
                if let Some(key) = e.hardlink_key {
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.hardlink(e, p, &cname, &first);
                    }
                    self.track(e, self.links.len(), "hardlinked files")?;
                    self.links.insert(key, e.path.clone());
                }
                self.file(e, p, &cname, content)
            }
            EntryKind::Dir => {
                sys::mkdirat(p, &cname, 0o700).map_err(|s| self.io(e, "mkdir", s))?;
                let fd = sys::openat(
                    p,
                    &cname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|s| self.io(e, "opening the new directory", s))?;
                self.finish_dir(e, fd.as_fd())
            }
            EntryKind::Symlink => {
                let target = e
                    .link_target
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.refused(e, "symlink without a target"))?;
                let ctarget = CString::new(target)
                    .map_err(|_| self.refused(e, "symlink target contains a NUL byte"))?;
                sys::symlinkat(&ctarget, p, &cname).map_err(|s| self.io(e, "symlink", s))?;
                self.meta(e, Target::At(p, &cname), false)?;
                sys::set_times(p, Some(&cname), e.mtime).map_err(|s| self.io(e, "set times", s))
            }
            EntryKind::Hardlink => {
                let target = e
                    .link_target
                    .clone()
                    .ok_or_else(|| self.refused(e, "hardlink without a target"))?;
                self.hardlink(e, p, &cname, &target)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let fmt = match e.kind {
                    EntryKind::CharDevice => libc::S_IFCHR,
                    EntryKind::BlockDevice => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let (major, minor) = if e.kind == EntryKind::Fifo {
                    (0, 0)
                } else {
                    e.device
                        .ok_or_else(|| self.refused(e, "device node without device numbers"))?
                };
                if e.kind != EntryKind::Fifo && self.opts.rootless {
                    let line = format!(
                        "{}: device node not created (rootless)",
                        String::from_utf8_lossy(&e.path)
                    );
                    self.skip_line(line);
                    return Ok(());
                }
                sys::mknodat(p, &cname, fmt | 0o600, major, minor)
                    .map_err(|s| self.io(e, "mknod", s))?;
                self.meta(e, Target::At(p, &cname), true)?;
                sys::set_times(p, Some(&cname), e.mtime).map_err(|s| self.io(e, "set times", s))
            }
        }
    }

    fn file(
        &mut self,
        e: &Entry,
        dir: BorrowedFd<'_>,
        name: &CStr,
        content: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        let fd = sys::openat(
            dir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(|s| self.io(e, "create", s))?;
        let mut f = File::from(fd);
        if self.buf.len() != CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
        let mut done = 0u64;
        let mut hole = false;
        while done < e.size {
            let want = usize::try_from(e.size - done).unwrap_or(CHUNK).min(CHUNK);
            let Some(chunk) = self.buf.get_mut(..want) else {
                break;
            };
            let n = match content.read(chunk) {
                Ok(0) => {
                    return Err(
                        self.refused(e, format!("content ended after {done} of {} bytes", e.size))
                    )
                }
                Ok(n) => n,
                Err(s) if s.kind() == io::ErrorKind::Interrupted => continue,
                Err(s) => return Err(self.io(e, format!("reading content at byte {done}"), s)),
            };
            let data = chunk.get(..n).unwrap_or_default();
            // Zero-filled runs become holes: a VM's lastlog claims terabytes of them, and a
            // hostile layer's compressed zeros cannot fill the disk.
            if data.iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(n as i64))
                    .map_err(|s| self.io(e, "seek", s))?;
                hole = true;
            } else {
                f.write_all(data)
                    .map_err(|s| self.io(e, format!("writing at byte {done}"), s))?;
                hole = false;
            }
            done += n as u64;
        }
        if hole {
            f.set_len(e.size).map_err(|s| self.io(e, "set length", s))?;
        }
        self.report.bytes += done;
        self.meta(e, Target::Fd(f.as_fd()), true)?;
        sys::set_times(f.as_fd(), None, e.mtime).map_err(|s| self.io(e, "set times", s))
    }

    fn hardlink(
        &mut self,
        e: &Entry,
        dir: BorrowedFd<'_>,
        name: &CStr,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let comps =
            split_path(target).map_err(|w| self.refused(e, format!("hardlink target: {w}")))?;
        let Some((tname, tparent)) = comps.split_last() else {
            return Err(self.refused(e, "hardlink to the root"));
        };
        let tdir = self
            .resolve_dir(tparent, false)
            .map_err(|s| self.io(e, "resolving the hardlink target's directory", s))?;
        let ctname = sys::cstr(tname).map_err(|s| self.io(e, "name", s))?;
        sys::linkat(tdir.as_fd(), &ctname, dir, name).map_err(|s| {
            self.io(
                e,
                format!("hardlink to /{}", String::from_utf8_lossy(target)),
                s,
            )
        })
    }

    /// Ownership, xattrs, then the deferred mode and mtime of a directory.
    fn finish_dir(&mut self, e: &Entry, fd: BorrowedFd<'_>) -> Result<(), UnpackError> {
        self.meta(e, Target::Fd(fd), false)?;
        if !self.dirs.contains_key(&e.path) {
            self.track(e, self.dirs.len(), "directories")?;
        }
        self.dirs.insert(
            e.path.clone(),
            DirMeta {
                mode: e.mode & 0o7777,
                mtime: e.mtime,
            },
        );
        Ok(())
    }

    /// Owner, then mode (when `chmod`), then xattrs.
    fn meta(&mut self, e: &Entry, t: Target<'_>, chmod: bool) -> Result<(), UnpackError> {
        if self.opts.rootless && !self.chown_mapped {
            if (e.uid, e.gid) != self.ids {
                self.foreign_owner += 1;
            }
        } else {
            match match t {
                Target::Fd(fd) => sys::fchown(fd, e.uid, e.gid),
                Target::At(dir, name) => sys::lchownat(dir, name, e.uid, e.gid),
            } {
                Ok(()) => {}
                // An id outside the namespace's ranges: kept as ours, as a plain rootless
                // unpack would.
                Err(s) if self.chown_mapped && errno(&s) == libc::EINVAL => {
                    self.foreign_owner += 1;
                }
                Err(s) => return Err(self.io(e, format!("chown to {}:{}", e.uid, e.gid), s)),
            }
        }
        if chmod {
            let mode = e.mode & 0o7777;
            match t {
                Target::Fd(fd) => sys::fchmod(fd, mode),
                // Only devices and fifos just created by us come here.
                Target::At(dir, name) => sys::fchmodat(dir, name, mode),
            }
            .map_err(|s| self.io(e, format!("chmod {mode:o}"), s))?;
        }
        if !self.opts.keep_xattrs {
            return Ok(());
        }
        for (key, value) in &e.xattrs {
            let shown = String::from_utf8_lossy(key).into_owned();
            if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
                // A layer must not steer overlayfs (opaque, redirect, metacopy).
                let line = format!(
                    "{}: xattr {shown} dropped (overlayfs internal)",
                    String::from_utf8_lossy(&e.path)
                );
                self.skip_line(line);
                continue;
            }
            if self.opts.rootless && (key.starts_with(b"trusted.") || key.starts_with(b"security."))
            {
                self.skipped_xattrs += 1;
                continue;
            }
            let ckey = CString::new(key.as_slice())
                .map_err(|_| self.refused(e, "xattr name contains a NUL byte"))?;
            let r = match t {
                Target::Fd(fd) => sys::fsetxattr(fd, &ckey, value),
                Target::At(dir, name) => {
                    // No fd-relative lsetxattr before Linux 6.13: go through our own parent fd.
                    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                    p.extend_from_slice(name.to_bytes());
                    sys::cstr(&p).and_then(|p| sys::lsetxattr(&p, &ckey, value))
                }
            };
            match r {
                Ok(()) => {}
                Err(s) if errno(&s) == libc::EOPNOTSUPP => {
                    let line = format!(
                        "{}: xattr {shown} not set (not supported here)",
                        String::from_utf8_lossy(&e.path)
                    );
                    self.skip_line(line);
                }
                Err(s) => return Err(self.io(e, format!("set xattr {shown}"), s)),
            }
        }
        Ok(())
    }

    fn overlay_key(&self, what: &str) -> CString {
        let ns = if self.opts.rootless {
            "user"
        } else {
            "trusted"
        };
        CString::new(format!("{ns}.overlay.{what}")).unwrap_or_default()
    }

    fn whiteout(
        &mut self,
        e: &Entry,
        parent: BorrowedFd<'_>,
        parent_comps: &[&[u8]],
        name: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        if name == OPAQUE_MARKER.as_bytes() {
            return match self.opts.whiteouts {
                WhiteoutMode::Overlay => {
                    let key = self.overlay_key("opaque");
                    sys::fsetxattr(parent, &key, b"y")
                        .map_err(|s| self.io(e, "marking the directory opaque", s))
                }
                WhiteoutMode::Apply => {
                    let prefix = parent_comps.join(&b'/');
                    self.clear_dir(e, parent, &prefix, 0)
                }
            };
        }
        if matches!(target, b"" | b"." | b"..") {
            return Err(self.refused(e, "whiteout of an invalid name"));
        }
        let ctarget = sys::cstr(target).map_err(|s| self.io(e, "name", s))?;
        // Whatever the name holds now goes: in Apply mode that is the point, in Overlay mode
        // it can only be an earlier duplicate in this layer.
        match remove_at(parent, &ctarget, 0, &mut HashSet::new()) {
            Ok(_) => {}
            Err(s) if errno(&s) == libc::ENOENT => {}
            Err(s) => return Err(self.io(e, "removing the whited-out path", s)),
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            return Ok(());
        }
        match sys::mknodat(parent, &ctarget, libc::S_IFCHR, 0, 0) {
            Ok(()) => Ok(()),
            Err(s) if self.opts.rootless && errno(&s) == libc::EPERM => {
                self.xattr_whiteout(e, parent, &ctarget)
            }
            Err(s) => Err(self.io(e, "creating the whiteout device", s)),
        }
    }

    /// The whiteout overlayfs accepts in lower layers from unprivileged users: an empty file
    /// with `overlay.whiteout`, in a directory marked `overlay.opaque=x` (unless it is already
    /// fully opaque, `y`).
    fn xattr_whiteout(
        &mut self,
        e: &Entry,
        parent: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<(), UnpackError> {
        let fd = sys::openat(
            parent,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(|s| self.io(e, "creating the whiteout file", s))?;
        let key = self.overlay_key("whiteout");
        sys::fsetxattr(fd.as_fd(), &key, b"y")
            .map_err(|s| self.io(e, "marking the whiteout file", s))?;
        let opaque = self.overlay_key("opaque");
        match sys::fgetxattr_small(parent, &opaque) {
            Ok(v) if v == b"y" => Ok(()),
            _ => sys::fsetxattr(parent, &opaque, b"x")
                .map_err(|s| self.io(e, "marking the directory as holding whiteouts", s)),
        }
    }

    /// Apply mode's opaque marker: removes everything under `dir` that this layer did not
    /// create, descending into directories it did.
    fn clear_dir(
        &mut self,
        e: &Entry,
        dir: BorrowedFd<'_>,
        prefix: &[u8],
        depth: usize,
    ) -> Result<(), UnpackError> {
        if depth >= MAX_DEPTH {
            return Err(self.refused(e, format!("directory tree deeper than {MAX_DEPTH} levels")));
        }
        let names =
            sys::list_dir(dir, MAX_TRACKED).map_err(|s| self.io(e, "listing the directory", s))?;
        for child in names {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(child.to_bytes());
            if !self.unpacked.contains(&path) {
                remove_at(dir, &child, 0, &mut HashSet::new())
                    .map_err(|s| self.io(e, "clearing the opaque directory", s))?;
                continue;
            }
            let st = sys::lstatat(dir, &child).map_err(|s| self.io(e, "lstat", s))?;
            if is_dir(&st) {
                let fd = sys::openat(
                    dir,
                    &child,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|s| self.io(e, "opening a directory to clear", s))?;
                self.clear_dir(e, fd.as_fd(), &path, depth + 1)?;
            }
        }
        Ok(())
    }

    /// The last pass: directory modes and mtimes, now that their contents are written.
    fn finish(mut self) -> Result<UnpackReport, UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs {
            let e = Entry::new(path, EntryKind::Dir, meta.mode);
            let Ok(comps) = split_path(&e.path) else {
                continue;
            };
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            // A directory replaced or removed by a later entry is no longer ours to finish.
            let Ok(pfd) = self.resolve_dir(parent, false) else {
                continue;
            };
            let cname = sys::cstr(name).map_err(|s| self.io(&e, "name", s))?;
            let fd = match sys::openat(
                pfd.as_fd(),
                &cname,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => fd,
                Err(s) if matches!(errno(&s), libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => {
                    continue
                }
                Err(s) => return Err(self.io(&e, "opening the directory to finish it", s)),
            };
            sys::fchmod(fd.as_fd(), meta.mode)
                .map_err(|s| self.io(&e, format!("chmod {:o}", meta.mode), s))?;
            sys::set_times(fd.as_fd(), None, meta.mtime)
                .map_err(|s| self.io(&e, "set times", s))?;
        }
        if self.foreign_owner > 0 {
            let (u, g) = self.ids;
            let line = format!(
                "ownership: {} entries belong to other users; kept as uid {u} gid {g} (rootless)",
                self.foreign_owner
            );
            self.skip_line(line);
        }
        if self.skipped_xattrs > 0 {
            let line = format!(
                "xattrs: {} trusted.* or security.* attributes not set (rootless)",
                self.skipped_xattrs
            );
            self.skip_line(line);
        }
        if self.extra_lines > 0 {
            let n = self.extra_lines;
            self.report
                .skipped
                .push(format!("... and {n} more lines like the above"));
        }
        Ok(self.report)
    }
}

/// Thin fd-relative wrappers over the Linux calls std lacks; see the comment inside.
mod sys {
    // Thin, fd-relative wrappers over the Linux calls the unpacker needs and std does not offer
    // (openat2, mknodat, linkat, fchownat, utimensat, xattrs, reading a directory from an fd).
    // Each wrapper is one small `unsafe` block with its reason, so the unpacker itself stays safe
    // code. We call libc directly rather than pulling in nix or rustix: the set is small and fixed.

    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    use crate::layer::entry::Timestamp;

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// A C string from a name that the caller has already checked has no NUL.
    pub fn cstr(name: &[u8]) -> io::Result<CString> {
        CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
    }

    pub fn openat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: libc::c_int,
        mode: u32,
    ) -> io::Result<OwnedFd> {
        loop {
            // SAFETY: `name` is a valid NUL-terminated string and `dir` a live fd for the call.
            let r = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    flags | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            };
            match cvt(r) {
                // SAFETY: a non-negative return of openat is a new fd that nothing else owns.
                Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// openat2(2) with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: `path` is resolved as if `root`
    /// were `/`, so neither `..` nor an absolute symlink can leave it.
    pub fn openat2_in_root(
        root: BorrowedFd<'_>,
        path: &CStr,
        flags: libc::c_int,
    ) -> io::Result<OwnedFd> {
        // SAFETY: an all-zero `open_how` is valid (no flags, no mode, no resolve bits).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        loop {
            // SAFETY: `how` lives across the call and its size is passed; `path` is NUL-terminated.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if r >= 0 {
                let fd = libc::c_int::try_from(r)
                    .map_err(|_| io::Error::other("openat2 returned an out-of-range fd"))?;
                // SAFETY: a non-negative return of openat2 is a new fd that nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd and a NUL-terminated name.
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
            .map(drop)
    }

    pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd and a NUL-terminated name.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
    }

    pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd and NUL-terminated strings.
        cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
    }

    /// linkat without AT_SYMLINK_FOLLOW: a hardlink to a symlink links the symlink itself.
    pub fn linkat(
        old_dir: BorrowedFd<'_>,
        old: &CStr,
        new_dir: BorrowedFd<'_>,
        new: &CStr,
    ) -> io::Result<()> {
        // SAFETY: plain syscall on live fds and NUL-terminated names.
        cvt(unsafe {
            libc::linkat(
                old_dir.as_raw_fd(),
                old.as_ptr(),
                new_dir.as_raw_fd(),
                new.as_ptr(),
                0,
            )
        })
        .map(drop)
    }

    pub fn mknodat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let dev = libc::makedev(major, minor);
        // SAFETY: plain syscall on a live fd and a NUL-terminated name.
        cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, dev) })
            .map(drop)
    }

    /// lchown relative to a directory fd (never follows a symlink).
    pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd and a NUL-terminated name.
        cvt(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }

    pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd.
        cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
    }

    pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
    }

    /// chmod relative to a directory fd. Follows a final symlink, so callers use it only on names
    /// they have just created as something else.
    pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd and a NUL-terminated name.
        cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
            .map(drop)
    }

    fn timespecs(t: Timestamp) -> [libc::timespec; 2] {
        let ts = libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        };
        [ts, ts]
    }

    /// Sets atime and mtime of `name` in `dir` without following a symlink (`name` None: `dir`
    /// itself).
    pub fn set_times(dir: BorrowedFd<'_>, name: Option<&CStr>, t: Timestamp) -> io::Result<()> {
        let ts = timespecs(t);
        let r = match name {
            // SAFETY: `ts` is a live 2-element array; `n` is NUL-terminated.
            Some(n) => unsafe {
                libc::utimensat(
                    dir.as_raw_fd(),
                    n.as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
            // SAFETY: `ts` is a live 2-element array.
            None => unsafe { libc::futimens(dir.as_raw_fd(), ts.as_ptr()) },
        };
        cvt(r).map(drop)
    }

    pub fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: `value` is a live slice whose length is passed; `key` is NUL-terminated.
        cvt(unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
        .map(drop)
    }

    pub fn lsetxattr(path: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: `value` is a live slice whose length is passed; strings are NUL-terminated.
        cvt(unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
        .map(drop)
    }

    /// The value of xattr `key` on `fd`, up to 64 bytes (enough for the overlay markers we read).
    pub fn fgetxattr_small(fd: BorrowedFd<'_>, key: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is live and writable for its length, which is passed.
        let r = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(r).unwrap_or(0).min(buf.len());
        Ok(buf.get(..n).unwrap_or_default().to_vec())
    }

    /// lstat relative to a directory fd.
    pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is live and writable; `name` is NUL-terminated.
        cvt(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    /// The target of symlink `name` in `dir`; EINVAL when it is not a symlink.
    pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` is live and writable for its length, which is passed.
        let r = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(usize::try_from(r).unwrap_or(0));
        Ok(buf)
    }

    pub fn euid_egid() -> (u32, u32) {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        unsafe { (libc::geteuid(), libc::getegid()) }
    }

    /// Whether this process lives in a user namespace other than the initial one, whose map
    /// is the whole range `0 0 4294967295`.
    pub fn in_user_namespace() -> bool {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|t| t.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
    }

    /// The names in directory `dir` (without `.` and `..`), failing past `cap` names.
    pub fn list_dir(dir: BorrowedFd<'_>, cap: usize) -> io::Result<Vec<CString>> {
        // fdopendir takes ownership of the fd it is given, so it gets a duplicate, and the
        // directory is read from its start whatever `dir`'s offset is.
        let dup = dir.try_clone_to_owned()?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        // SAFETY: `raw` is an fd we own; on success the DIR takes it over.
        let d = unsafe { libc::fdopendir(raw) };
        if d.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(e);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; clearing it tells end-of-directory from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `d` is a live DIR from fdopendir, not yet closed.
            let ent = unsafe { libc::readdir64(d) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            // SAFETY: readdir64 returned a live entry whose d_name is NUL-terminated; we copy it
            // before the next readdir64 or closedir call.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if names.len() >= cap {
                break Err(io::Error::other(format!(
                    "directory has more than {cap} entries"
                )));
            }
            names.push(name.to_owned());
        };
        // SAFETY: `d` is live and closed exactly once; it closes `raw`.
        unsafe { libc::closedir(d) };
        result.map(|()| names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mount_overlay(lower: &str, m: &Path) {
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={lower}"))
            .arg(m)
            .status()
            .expect("test needs the `mount` tool");
        assert!(st.success(), "mounting an overlay failed");
    }

    /// The fallback for kernels that refuse an unprivileged 0/0 mknod: overlayfs must read the
    /// xattr whiteout from a lower layer.
    #[test]
    fn xattr_whiteouts_hide_lower_files() {
        let t = tempfile::TempDir::new().unwrap();
        let (l1, l2, m) = (t.path().join("l1"), t.path().join("l2"), t.path().join("m"));
        for d in [&l1, &l2, &m] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir(l1.join("a")).unwrap();
        std::fs::write(l1.join("a/gone"), b"x").unwrap();
        std::fs::write(l1.join("a/kept"), b"y").unwrap();
        std::fs::create_dir(l2.join("a")).unwrap();
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            rootless: false,
            keep_xattrs: true,
        };
        let mut u = Unpacker::new(&l2, &opts, false).unwrap();
        let dir = File::open(l2.join("a")).unwrap();
        let e = Entry::new(b"a/.wh.gone".to_vec(), EntryKind::File, 0);
        u.xattr_whiteout(&e, dir.as_fd(), c"gone").unwrap();
        mount_overlay(&format!("{}:{}", l2.display(), l1.display()), &m);
        let gone = m.join("a/gone").exists();
        let kept = m.join("a/kept").exists();
        let st = Command::new("umount").arg(&m).status().unwrap();
        assert!(st.success());
        assert!(!gone, "xattr whiteout not honoured");
        assert!(kept);
    }

    /// Our own walk clamps `..` and absolute symlinks at the root, like RESOLVE_IN_ROOT.
    #[test]
    fn walk_stays_in_root() {
        let t = tempfile::TempDir::new().unwrap();
        let root = t.path().join("r");
        std::fs::create_dir_all(root.join("x/y")).unwrap();
        std::os::unix::fs::symlink("/x", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("x/up")).unwrap();
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            rootless: false,
            keep_xattrs: true,
        };
        let u = Unpacker::new(&root, &opts, true).unwrap();
        let rootino = sys::lstatat(u.root.as_fd(), c".").unwrap().st_ino;
        let fd = u.walk(&[b"x", b"up"], false).unwrap();
        assert_eq!(sys::lstatat(fd.as_fd(), c".").unwrap().st_ino, rootino);
        let fd = u.walk(&[b"abs", b"y"], false).unwrap();
        let y = std::fs::metadata(root.join("x/y")).unwrap();
        assert_eq!(
            sys::lstatat(fd.as_fd(), c".").unwrap().st_ino,
            std::os::unix::fs::MetadataExt::ino(&y)
        );
        let fd = u.walk(&[b"x", b"up", b"new"], true).unwrap();
        assert!(root.join("new").is_dir());
        drop(fd);
        assert!(u.walk(&[b"abs", b"missing"], false).is_err());
    }
}

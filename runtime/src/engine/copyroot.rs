//! The copy fallback for a rootless container whose overlay cannot be mounted (a storage
//! filesystem that refuses an overlay upper dir in a user namespace, an older kernel, or
//! `DECANT_NO_OVERLAY=1`): the cached layers are applied in order into the container's own
//! `rootfs/` directory, which is then its root for good (stop/start keep it; rm removes it with
//! the container's directory). Slower to make and larger than an overlay, as Podman's `vfs`.
//!
//! The layers are the cache's overlay-format unpacks, so their whiteouts are read as overlayfs
//! would: a 0/0 character device or a file with an `overlay.whiteout` xattr removes the name
//! below; a directory with `overlay.opaque=y` hides everything below it. Owners are kept where
//! the namespace maps them, modes always; hard links become separate copies, device nodes are
//! left out (a user namespace cannot make them), xattrs and times are not copied.
//!
//! The source is our own unpack, but still walked without following symlinks, at most
//! `MAX_DEPTH` deep and `MAX_ENTRIES` entries in all.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, EngineError};

/// The copied root inside a container's directory.
pub const COPY_DIR: &str = "rootfs";
/// Deeper trees are refused (the unpack's own limit).
const MAX_DEPTH: usize = 512;
/// More entries over all layers are refused.
const MAX_ENTRIES: u64 = 10_000_000;

/// Whether the user asked for no overlay (`DECANT_NO_OVERLAY=1`), which rootless containers
/// then treat as an overlay the kernel refused.
pub fn overlay_disabled() -> bool {
    std::env::var_os("DECANT_NO_OVERLAY").is_some_and(|v| v == "1")
}

/// The container's copied root, when it has one.
pub fn existing(dir: &Path) -> Option<PathBuf> {
    let p = dir.join(COPY_DIR);
    p.is_dir().then_some(p)
}

/// Makes `<dir>/rootfs` from `lowers` (bottom first) through a temporary directory renamed
/// into place, so a crash never leaves a half copy that looks finished.
pub fn make(dir: &Path, lowers: &[PathBuf]) -> Result<PathBuf, EngineError> {
    let done = dir.join(COPY_DIR);
    let tmp = dir.join(".rootfs.tmp");
    match fs::remove_dir_all(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&tmp, "remove the stale")(e))
        }
        _ => {}
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp, "create"))?;
    let mut count = 0u64;
    let copied = lowers
        .iter()
        .try_for_each(|l| apply(l, &tmp, 0, &mut count));
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Some(top) = lowers.last() {
        if let Ok(m) = fs::symlink_metadata(top) {
            let _ = std::os::unix::fs::lchown(&tmp, Some(m.uid()), Some(m.gid()));
            let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(m.mode() & 0o7777));
        }
    }
    fs::rename(&tmp, &done).map_err(io_err(&tmp, "rename into place"))?;
    Ok(done)
}

/// The value of xattr `name` of `path` (not followed), when set; at most 16 bytes read.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and live for the call; `buf` is writable for
    // its full length, which is what we pass.
    let r = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
        )
    };
    usize::try_from(r)
        .ok()
        .and_then(|len| buf.get(..len).map(<[u8]>::to_vec))
}

fn overlay_xattr(path: &Path, what: &str) -> Option<Vec<u8>> {
    xattr(path, &format!("user.overlay.{what}"))
        .or_else(|| xattr(path, &format!("trusted.overlay.{what}")))
}

/// Removes whatever `path` is (not followed); absent is fine.
fn remove_any(path: &Path) -> Result<(), EngineError> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(io_err(path, "remove"))
}

/// Applies layer directory `src` onto `dst`.
fn apply(src: &Path, dst: &Path, depth: usize, count: &mut u64) -> Result<(), EngineError> {
    if depth > MAX_DEPTH {
        return Err(EngineError::Invalid(format!(
            "{}: copy fallback: deeper than {MAX_DEPTH} directories",
            src.display()
        )));
    }
    for entry in fs::read_dir(src).map_err(io_err(src, "read"))? {
        let entry = entry.map_err(io_err(src, "read"))?;
        *count += 1;
        if *count > MAX_ENTRIES {
            return Err(EngineError::Invalid(format!(
                "{}: copy fallback: more than {MAX_ENTRIES} entries",
                src.display()
            )));
        }
        let sp = entry.path();
        let dp = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&sp).map_err(io_err(&sp, "stat"))?;
        let ft = meta.file_type();
        let whiteout = (ft.is_char_device() && meta.rdev() == 0)
            || (ft.is_file() && overlay_xattr(&sp, "whiteout").is_some());
        if whiteout {
            remove_any(&dp)?;
            continue;
        }
        if ft.is_dir() {
            let opaque = overlay_xattr(&sp, "opaque").as_deref() == Some(b"y");
            match fs::symlink_metadata(&dp) {
                Ok(m) if m.is_dir() && !opaque => {}
                Ok(_) => {
                    remove_any(&dp)?;
                    fs::create_dir(&dp).map_err(io_err(&dp, "create"))?;
                }
                Err(_) => fs::create_dir(&dp).map_err(io_err(&dp, "create"))?,
            }
            // Open while its contents are written; the real mode comes after them.
            fs::set_permissions(&dp, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&dp, "chmod"))?;
            apply(&sp, &dp, depth + 1, count)?;
        } else {
            remove_any(&dp)?;
            if ft.is_file() {
                fs::copy(&sp, &dp).map_err(io_err(&sp, "copy"))?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&sp).map_err(io_err(&sp, "read link"))?;
                std::os::unix::fs::symlink(&target, &dp).map_err(io_err(&dp, "symlink"))?;
            } else if ft.is_fifo() {
                nix::unistd::mkfifo(&dp, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err(&dp, "mkfifo")(std::io::Error::from(e)))?;
            } else {
                // Device nodes and sockets: a user namespace cannot make them.
                continue;
            }
        }
        // An owner the namespace does not map stays ours.
        let _ = std::os::unix::fs::lchown(&dp, Some(meta.uid()), Some(meta.gid()));
        if !ft.is_symlink() {
            fs::set_permissions(&dp, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err(&dp, "chmod"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_opaque_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, dir) = (t.path().join("l1"), t.path().join("l2"), t.path().join("c"));
        for d in [&l1, &l2, &dir] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir_all(l1.join("keep")).unwrap();
        fs::write(l1.join("keep/a"), "a1").unwrap();
        fs::write(l1.join("gone"), "x").unwrap();
        fs::create_dir_all(l1.join("opq")).unwrap();
        fs::write(l1.join("opq/old"), "old").unwrap();
        fs::write(l1.join("script"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(l1.join("script"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("keep/a", l1.join("link")).unwrap();
        // Layer 2: replaces keep/a, whites out `gone` (the xattr form a rootless unpack
        // writes), makes opq opaque with a new file.
        fs::create_dir_all(l2.join("keep")).unwrap();
        fs::write(l2.join("keep/a"), "a2").unwrap();
        fs::write(l2.join("gone"), "").unwrap();
        let set = |p: &Path, k: &str, v: &[u8]| {
            let p = CString::new(p.as_os_str().as_bytes()).unwrap();
            let k = CString::new(k).unwrap();
            // SAFETY: NUL-terminated strings and a live buffer of the given length.
            let r =
                unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            r == 0
        };
        if !set(&l2.join("gone"), "user.overlay.whiteout", b"y") {
            panic!(
                "user xattrs refused on {}: {}",
                t.path().display(),
                std::io::Error::last_os_error()
            );
        }
        fs::create_dir_all(l2.join("opq")).unwrap();
        assert!(set(&l2.join("opq"), "user.overlay.opaque", b"y"));
        fs::write(l2.join("opq/new"), "new").unwrap();
        let root = make(&dir, &[l1.clone(), l2.clone()]).unwrap();
        assert_eq!(root, dir.join(COPY_DIR));
        assert_eq!(fs::read_to_string(root.join("keep/a")).unwrap(), "a2");
        assert!(!root.join("gone").exists());
        assert!(!root.join("opq/old").exists());
        assert_eq!(fs::read_to_string(root.join("opq/new")).unwrap(), "new");
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("keep/a")
        );
        let mode = fs::metadata(root.join("script"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!dir.join(".rootfs.tmp").exists());
        assert_eq!(existing(&dir), Some(root));
        // A layer that is gone is an error naming it, and leaves no half copy.
        let dir2 = t.path().join("c2");
        fs::create_dir(&dir2).unwrap();
        let e = make(&dir2, &[t.path().join("missing")]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(existing(&dir2).is_none() && !dir2.join(".rootfs.tmp").exists());
    }
}

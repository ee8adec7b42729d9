//! Volumes as Docker users know them: `-v NAME:/ctr[:ro]` (named), `-v /ctr` and the image's
//! VOLUME entries (anonymous, a 64-hex name), each a directory
//! `<store>/.decant/volumes/NAME/_data` bind-mounted into the container, with a small record
//! `volume.json` beside it. A volume is created on first use and, when new and empty, filled
//! from the image's content at its mount point the first time a container mounts it (the
//! monitor does it on the mounted root, see `populate`). A volume in use by any container (even
//! a stopped one) is never removed; `rm -v` and `--rm` remove a container's anonymous volumes.
//!
//! Volumes are made whole under a temporary name and renamed into place, so two commands making
//! the same named volume at once agree on one, and a crash leaves no half-made volume behind a
//! valid name.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{io_err, names, time, Bind, Container, ContainerConfig, Engine, EngineError};

/// The record beside a volume's data.
pub const VOLUME_RECORD: &str = "volume.json";
/// The directory a volume's content lives in (as Docker's local driver).
pub const DATA: &str = "_data";
/// At most this many volumes are listed (bounds a hostile directory).
const MAX_VOLUMES: usize = 100_000;
/// A volume record larger than this is refused as damaged.
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// Filling a new volume copies at most this many entries ...
const MAX_COPY_ENTRIES: usize = 1_000_000;
/// ... and descends at most this deep.
const MAX_COPY_DEPTH: usize = 256;
/// A container mounts at most this many volumes.
pub const MAX_VOLUME_MOUNTS: usize = 256;

/// A volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Unix nanoseconds.
    pub created: i64,
    /// Made for one container (`-v /ctr`, image VOLUME): `rm -v` and `--rm` remove it.
    pub anonymous: bool,
    /// A container has mounted it once: the image's content is never copied in again.
    #[serde(default)]
    pub populated: bool,
}

/// A volume as a container mounts it (in `ContainerConfig::volumes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    /// The volume's `_data` directory on the host.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub container: String,
    pub read_only: bool,
    pub anonymous: bool,
}

impl VolumeMount {
    /// The bind mount that puts the volume in the container.
    pub fn as_bind(&self) -> Bind {
        Bind {
            host: self.source.clone(),
            container: self.container.clone(),
            read_only: self.read_only,
        }
    }
}

/// A volume a container asks for: a named one (made when missing) or, with `name: None`, a
/// new anonymous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    pub name: Option<String>,
    pub container: String,
    pub read_only: bool,
}

/// One `-v` argument: a host directory or a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeArg {
    Bind(Bind),
    Volume(VolumeRequest),
}

/// Parses `-v HOST:CTR[:ro]`, `-v NAME:CTR[:ro]` (a source without a slash is a volume name,
/// as Docker) or `-v CTR` (an anonymous volume).
pub fn parse_volume_arg(s: &str) -> Result<VolumeArg, EngineError> {
    let bad = |why: &str| EngineError::Invalid(format!("volume {s}: {why}"));
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [ctr] => {
            if !ctr.starts_with('/') {
                return Err(bad("the container path must be absolute"));
            }
            Ok(VolumeArg::Volume(VolumeRequest {
                name: None,
                container: normalize(ctr),
                read_only: false,
            }))
        }
        [src, ctr, rest @ ..] if !src.contains('/') => {
            let read_only = match rest {
                [] | ["rw"] => false,
                ["ro"] => true,
                [o] => return Err(bad(&format!("unknown option {o} (ro or rw)"))),
                _ => return Err(bad("not NAME:CONTAINER[:ro]")),
            };
            if !valid_volume_name(src) {
                return Err(bad(&format!(
                    "\"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; if you intended to pass a host directory, use an absolute path"
                )));
            }
            if !ctr.starts_with('/') {
                return Err(bad("the container path must be absolute"));
            }
            Ok(VolumeArg::Volume(VolumeRequest {
                name: Some(src.to_string()),
                container: normalize(ctr),
                read_only,
            }))
        }
        _ => Ok(VolumeArg::Bind(s.parse()?)),
    }
}

/// `/data/` and `/data` are the same mount point.
fn normalize(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

/// Docker's rule for local volume names (it also makes the name a safe directory name).
pub fn valid_volume_name(name: &str) -> bool {
    name.len() >= 2 && names::valid_name(name)
}

fn no_such(name: &str) -> EngineError {
    EngineError::Invalid(format!("No such volume: {name}"))
}

/// What `volume prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedVolumes {
    pub names: Vec<String>,
    /// Bytes of the removed volumes' files.
    pub reclaimed: u64,
}

impl Engine {
    /// The directory holding one directory per volume.
    pub fn volumes_dir(&self) -> PathBuf {
        self.store_root().join(".decant").join("volumes")
    }

    /// A volume's directory (the name is checked, so it cannot leave the volumes directory).
    pub fn volume_dir(&self, name: &str) -> Result<PathBuf, EngineError> {
        if !valid_volume_name(name) {
            return Err(no_such(name));
        }
        Ok(self.volumes_dir().join(name))
    }

    /// A volume's record.
    pub fn volume(&self, name: &str) -> Result<Volume, EngineError> {
        let path = self.volume_dir(name)?.join(VOLUME_RECORD);
        load_record(&path, name)
    }

    /// Makes volume `name` (a new 64-hex name when `None`: anonymous); an existing named
    /// volume is returned as it is. The flag says whether this call made it.
    pub fn volume_create(&self, name: Option<&str>) -> Result<(Volume, bool), EngineError> {
        let anonymous = name.is_none();
        let name = match name {
            Some(n) => {
                if !valid_volume_name(n) {
                    return Err(EngineError::Invalid(format!(
                        "volume name {n:?} includes invalid characters, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed (at least 2)"
                    )));
                }
                match self.volume(n) {
                    Ok(v) => return Ok((v, false)),
                    // A damaged volume is reported, never made again over its data.
                    Err(e @ EngineError::Record { .. }) => return Err(e),
                    Err(_) => {}
                }
                n.to_string()
            }
            None => names::new_id().map_err(io_err(Path::new("/dev/urandom"), "read"))?,
        };
        let dir = self.volumes_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
        let tmp = dir.join(format!(".new-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let v = Volume {
            name: name.clone(),
            created: time::now(),
            anonymous,
            populated: false,
        };
        let made = (|| {
            std::fs::create_dir(&tmp).map_err(io_err(&tmp, "create"))?;
            let data = tmp.join(DATA);
            std::fs::create_dir(&data).map_err(io_err(&data, "create"))?;
            save_record(&tmp, &v)?;
            let dest = dir.join(&name);
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest, "rename"))
        })();
        match made {
            Ok(()) => Ok((v, true)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                // Made by another command meanwhile: that one is ours too.
                match self.volume(&name) {
                    Ok(v) if !anonymous => Ok((v, false)),
                    _ => Err(e),
                }
            }
        }
    }

    /// Every volume, by name; damaged records are left out.
    pub fn volume_list(&self) -> Result<Vec<Volume>, EngineError> {
        let dir = self.volumes_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, "read")(e)),
        };
        let mut out = Vec::new();
        for e in rd.take(MAX_VOLUMES) {
            let e = e.map_err(io_err(&dir, "read"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if valid_volume_name(&name) {
                if let Ok(v) = self.volume(&name) {
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The containers (any state) that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<Container>, EngineError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.config.volumes.iter().any(|v| v.name == name))
            .collect())
    }

    /// Docker-like `volume inspect` JSON.
    pub fn volume_inspect(&self, v: &Volume) -> Result<Value, EngineError> {
        let data = self.volume_dir(&v.name)?.join(DATA);
        Ok(json!({
            "CreatedAt": time::rfc3339(v.created),
            "Driver": "local",
            "Labels": if v.anonymous { json!({"com.docker.volume.anonymous": ""}) } else { json!({}) },
            "Mountpoint": data,
            "Name": v.name,
            "Options": {},
            "Scope": "local",
        }))
    }

    /// Removes a volume that no container uses.
    pub fn volume_remove(&self, name: &str) -> Result<(), EngineError> {
        self.volume(name)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            let ids: Vec<&str> = users.iter().map(|c| c.id.as_str()).collect();
            return Err(EngineError::Invalid(format!(
                "remove {name}: volume is in use - [{}]",
                ids.join(", ")
            )));
        }
        self.delete_volume(name)
    }

    fn delete_volume(&self, name: &str) -> Result<(), EngineError> {
        let dir = self.volume_dir(name)?;
        // Renamed away first, so a half-removed volume never shows under its name.
        let gone = self
            .volumes_dir()
            .join(format!(".rm-{}-{name}", std::process::id()));
        match std::fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_such(name)),
            Err(e) => return Err(io_err(&dir, "rename")(e)),
        }
        std::fs::remove_dir_all(&gone).map_err(io_err(&gone, "remove"))
    }

    /// Removes every volume no container uses: anonymous ones only unless `all` (as Docker
    /// 23 and later).
    pub fn volume_prune(&self, all: bool) -> Result<PrunedVolumes, EngineError> {
        let containers = self.list()?;
        let mut out = PrunedVolumes::default();
        for v in self.volume_list()? {
            if !(all || v.anonymous) {
                continue;
            }
            if containers
                .iter()
                .any(|c| c.config.volumes.iter().any(|m| m.name == v.name))
            {
                continue;
            }
            let size = super::ops::dir_size(&self.volume_dir(&v.name)?.join(DATA));
            match self.delete_volume(&v.name) {
                Ok(()) => {
                    out.names.push(v.name);
                    out.reclaimed = out.reclaimed.saturating_add(size);
                }
                // Removed by someone else meanwhile.
                Err(EngineError::Invalid(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Records a new container (see `create`) with its volumes: the requested ones and, for
    /// each of the image's VOLUME paths that no `-v`, volume or tmpfs covers, an anonymous one.
    /// Volumes this call made are removed again when the container cannot be made.
    pub fn create_with_volumes(
        &self,
        mut config: ContainerConfig,
        requests: &[VolumeRequest],
        image_volumes: &[String],
    ) -> Result<Container, EngineError> {
        let mut wanted: Vec<VolumeRequest> = requests.to_vec();
        for iv in image_volumes {
            if !iv.starts_with('/') {
                return Err(EngineError::Invalid(format!(
                    "the image's VOLUME {iv}: not an absolute path"
                )));
            }
            let p = normalize(iv);
            let covered = wanted.iter().any(|w| w.container == p)
                || config.binds.iter().any(|b| normalize(&b.container) == p)
                || config.tmpfs.iter().any(|t| normalize(t) == p);
            if !covered {
                wanted.push(VolumeRequest {
                    name: None,
                    container: p,
                    read_only: false,
                });
            }
        }
        if wanted.len() > MAX_VOLUME_MOUNTS {
            return Err(EngineError::Invalid(format!(
                "{} volumes: more than {MAX_VOLUME_MOUNTS}",
                wanted.len()
            )));
        }
        let mut seen: Vec<String> = config
            .binds
            .iter()
            .map(|b| normalize(&b.container))
            .collect();
        for w in &wanted {
            if seen.contains(&w.container) {
                return Err(EngineError::Invalid(format!(
                    "Duplicate mount point: {}",
                    w.container
                )));
            }
            seen.push(w.container.clone());
        }
        let mut made: Vec<String> = Vec::new();
        let result = (|| {
            for w in &wanted {
                let (v, new) = self.volume_create(w.name.as_deref())?;
                if new {
                    made.push(v.name.clone());
                }
                config.volumes.push(VolumeMount {
                    source: self.volume_dir(&v.name)?.join(DATA),
                    name: v.name,
                    container: w.container.clone(),
                    read_only: w.read_only,
                    anonymous: v.anonymous,
                });
            }
            self.create(config)
        })();
        if result.is_err() {
            for n in &made {
                let _ = self.delete_volume(n);
            }
        }
        result
    }

    /// Removes container `c`'s anonymous volumes that no other container uses (after `rm -v`
    /// or an `--rm` container's exit). Errors are left: the volume stays for `volume prune`.
    pub fn remove_anonymous_volumes(&self, c: &Container) {
        for v in c.config.volumes.iter().filter(|v| v.anonymous) {
            if matches!(self.volume_users(&v.name), Ok(u) if u.iter().all(|o| o.id == c.id)) {
                let _ = self.delete_volume(&v.name);
            }
        }
    }

    /// `rm [-f] [-v]`: removes a container and, with `volumes`, its anonymous volumes.
    pub fn remove_with_volumes(
        &self,
        key: &str,
        force: bool,
        volumes: bool,
    ) -> Result<Container, EngineError> {
        let c = self.remove(key, force)?;
        if volumes {
            self.remove_anonymous_volumes(&c);
        }
        Ok(c)
    }
}

fn load_record(path: &Path, name: &str) -> Result<Volume, EngineError> {
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            no_such(name)
        } else {
            io_err(path, "open")(e)
        }
    })?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path, "read"))?;
    let bad = |problem: String| EngineError::Record {
        path: path.display().to_string(),
        problem,
    };
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(bad(format!("larger than {MAX_RECORD_BYTES} bytes")));
    }
    let v: Volume = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if v.name != name {
        return Err(bad(format!("names volume {} instead", v.name)));
    }
    Ok(v)
}

/// Writes a volume's record in `dir` atomically (temp file + rename).
fn save_record(dir: &Path, v: &Volume) -> Result<(), EngineError> {
    let tmp = dir.join(format!(".{VOLUME_RECORD}.{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| EngineError::Record {
        path: tmp.display().to_string(),
        problem: e.to_string(),
    })?;
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp, "write"))?;
    let path = dir.join(VOLUME_RECORD);
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))
}

/// Fills each volume of `mounts` that no container mounted before and that is empty with the
/// content at its mount point in `rootfs` (the container's mounted root, before the container
/// runs), as Docker does; then marks it populated.
///
/// The mount point is opened with every symlink resolved inside `rootfs` (a hostile image
/// cannot make us copy host files); below it nothing is followed: symlinks are copied as
/// symlinks. The root is not in use by any process yet, so the tree cannot change under the
/// walk. Copied: directories, regular files, symlinks, fifos and device nodes with their mode
/// and owner; not copied: sockets, extended attributes, timestamps.
pub(crate) fn populate(rootfs: &Path, mounts: &[VolumeMount]) -> Result<(), EngineError> {
    for m in mounts {
        let Some(vdir) = m.source.parent() else {
            continue;
        };
        let mut v = load_record(&vdir.join(VOLUME_RECORD), &m.name)?;
        if v.populated {
            continue;
        }
        let empty = std::fs::read_dir(&m.source)
            .map_err(io_err(&m.source, "read"))?
            .next()
            .is_none();
        if empty {
            let src =
                super::spec::open_in_root(rootfs, &m.container, libc::O_RDONLY | libc::O_DIRECTORY);
            match src {
                Ok(Some(fd)) => {
                    let base = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                    let md = std::fs::metadata(&base).map_err(io_err(&base, "stat"))?;
                    let mut budget = MAX_COPY_ENTRIES;
                    copy_tree(&base, &m.source, 0, &mut budget).map_err(|e| {
                        EngineError::Start {
                            code: 125,
                            message: format!(
                                "filling volume {} from the image's {}: {e}",
                                m.name, m.container
                            ),
                        }
                    })?;
                    set_owner_and_mode(&m.source, &md);
                }
                // Nothing (or a non-directory) at the mount point: nothing to copy.
                Ok(None) => {}
                Err(EngineError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => return Err(e),
            }
        }
        v.populated = true;
        save_record(vdir, &v)?;
    }
    Ok(())
}

/// Owner first (chown clears set-id bits), then the mode; a rootless run cannot give files
/// away, so its chown errors are ignored.
fn set_owner_and_mode(path: &Path, md: &std::fs::Metadata) {
    let _ = std::os::unix::fs::lchown(path, Some(md.uid()), Some(md.gid()));
    if !md.file_type().is_symlink() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(md.mode() & 0o7777));
    }
}

/// Copies the entries of `src` into the existing directory `dst` (see `populate`).
fn copy_tree(src: &Path, dst: &Path, depth: usize, budget: &mut usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if depth > MAX_COPY_DEPTH {
        return Err(std::io::Error::other(format!(
            "{}: deeper than {MAX_COPY_DEPTH} directories",
            src.display()
        )));
    }
    for e in std::fs::read_dir(src)? {
        let e = e?;
        *budget = budget.checked_sub(1).ok_or_else(|| {
            std::io::Error::other(format!("more than {MAX_COPY_ENTRIES} entries"))
        })?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let md = std::fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to, depth + 1, budget)?;
        } else if ft.is_file() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut r = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&from)?;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)?;
            std::io::copy(&mut r, &mut w)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o777);
            nix::sys::stat::mknod(&to, kind, perm, md.rdev()).map_err(std::io::Error::from)?;
        } else {
            continue;
        }
        set_owner_and_mode(&to, &md);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_args_parse() {
        let VolumeArg::Volume(r) = parse_volume_arg("data:/srv/data/:ro").unwrap() else {
            panic!("not a volume");
        };
        assert_eq!(r.name.as_deref(), Some("data"));
        assert_eq!(r.container, "/srv/data");
        assert!(r.read_only);
        let VolumeArg::Volume(r) = parse_volume_arg("/scratch").unwrap() else {
            panic!("not a volume");
        };
        assert_eq!((r.name, r.container.as_str()), (None, "/scratch"));
        assert!(matches!(
            parse_volume_arg("/h:/c").unwrap(),
            VolumeArg::Bind(_)
        ));
        for bad in [
            "x:/c",
            "da$ta:/c",
            "data:rel",
            "data:/c:zz",
            "rel",
            "./h:/c",
        ] {
            let e = parse_volume_arg(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn create_list_remove_and_damaged_records() {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::new(t.path());
        let (v, new) = e.volume_create(Some("data")).unwrap();
        assert!(new && !v.anonymous);
        let (again, new) = e.volume_create(Some("data")).unwrap();
        assert!(!new);
        assert_eq!(again, v);
        let (anon, _) = e.volume_create(None).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        let names: Vec<String> = e
            .volume_list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(e.volume_dir("data").unwrap().join(DATA).is_dir());
        // A damaged record: an error naming the file, and left out of the list.
        std::fs::write(e.volume_dir("data").unwrap().join(VOLUME_RECORD), b"{\"na").unwrap();
        let err = e.volume("data").unwrap_err();
        assert!(matches!(err, EngineError::Record { .. }), "{err}");
        assert_eq!(e.volume_list().unwrap().len(), 1);
        let err = e.volume_create(Some("data")).unwrap_err();
        assert!(matches!(err, EngineError::Record { .. }), "{err}");
        assert!(err.to_string().contains("volume.json"), "{err}");
        // Truncated, absurdly large, or naming another volume: errors, not panics.
        let rec = e.volume_dir("data").unwrap().join(VOLUME_RECORD);
        std::fs::write(&rec, vec![b' '; (MAX_RECORD_BYTES + 1) as usize]).unwrap();
        assert!(e.volume("data").is_err());
        std::fs::write(&rec, br#"{"name":"other","created":0,"anonymous":false}"#).unwrap();
        assert!(e
            .volume("data")
            .unwrap_err()
            .to_string()
            .contains("names volume other"));
        std::fs::remove_dir_all(e.volume_dir("data").unwrap()).unwrap();
        assert!(e.volume("../x").is_err());
        assert!(e.volume_create(Some("../x")).is_err());
        // Prune takes the unused anonymous one only; `all` takes the rest.
        let p = e.volume_prune(false).unwrap();
        assert_eq!(p.names, vec![anon.name]);
        e.volume_create(Some("other")).unwrap();
        assert_eq!(
            e.volume_prune(true).unwrap().names,
            vec!["other".to_string()]
        );
        let err = e.volume_remove("nope").unwrap_err();
        assert_eq!(err.to_string(), "No such volume: nope");
    }

    #[test]
    fn populate_copies_the_image_content_once_and_stays_in_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("srv/sub")).unwrap();
        std::fs::write(root.join("srv/a"), b"hello").unwrap();
        std::fs::write(root.join("srv/sub/b"), b"deep").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("srv/link")).unwrap();
        // A mount point that is an absolute symlink must resolve inside the root.
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let e = Engine::new(&t.path().join("store"));
        let mut mounts = Vec::new();
        for (name, ctr) in [("vsrv", "/srv"), ("vesc", "/escape"), ("vnone", "/missing")] {
            e.volume_create(Some(name)).unwrap();
            mounts.push(VolumeMount {
                name: name.to_string(),
                source: e.volume_dir(name).unwrap().join(DATA),
                container: ctr.to_string(),
                read_only: false,
                anonymous: false,
            });
        }
        populate(&root, &mounts).unwrap();
        let data = &mounts[0].source;
        assert_eq!(std::fs::read(data.join("a")).unwrap(), b"hello");
        assert_eq!(std::fs::read(data.join("sub/b")).unwrap(), b"deep");
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(!mounts[1].source.join("secret").exists());
        assert!(e.volume("vsrv").unwrap().populated);
        // Once populated, never again: an emptied volume stays empty.
        std::fs::remove_dir_all(data).unwrap();
        std::fs::create_dir(data).unwrap();
        populate(&root, &mounts).unwrap();
        assert!(std::fs::read_dir(data).unwrap().next().is_none());
    }
}

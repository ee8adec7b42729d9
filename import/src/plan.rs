//! The import plan: what a source is, which volume holds the guest's root, and which of its
//! fstab mounts can be grafted. `decant inspect-disk` prints it; `decant import` executes it.
//!
//! Everything here is lazy: opening a plan reads headers, partition tables, superblocks, a few
//! small files (/etc/fstab, /etc/os-release, the ELF header of /bin/sh), never the data.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use snapshot::FileTree;

use crate::block::BlockSource;
use crate::disk::{self, DiskInfo, DiskOptions};
use crate::fs::ext4::Ext4;
use crate::fs::probe::{self, FsKind};
use crate::fs::FileLookup;
use crate::fstab::{self, DeviceSpec, Disposition};
use crate::graft::{Graft, GraftTree};
use crate::inspect::{self, GuestInfo};
use crate::tarball::TarballTree;
use crate::volume::{self, Volume};

/// Why an import cannot go ahead. One line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Disk(#[from] disk::DiskError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{file}: no filesystem decant can read: {found}")]
    NothingReadable { file: String, found: String },
    #[error("{file}: several Linux roots found ({candidates}); choose one with --root")]
    SeveralRoots { file: String, candidates: String },
    #[error("{file}: --root {selector}: no volume matches (volumes: {volumes})")]
    NoSuchRoot {
        file: String,
        selector: String,
        volumes: String,
    },
    #[error("{file}: --root {selector}: {reason}")]
    RootUnsupported {
        file: String,
        selector: String,
        reason: String,
    },
    #[error("{file}: --root {selector}: volume {volume} holds {fs}, which decant cannot read")]
    RootNotReadable {
        file: String,
        selector: String,
        volume: String,
        fs: String,
    },
}

/// Choices for opening a source.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--root`: partition number, `PARTUUID=`, `UUID=`, `LABEL=`, `PARTLABEL=` or `VG/LV`.
    pub root: Option<String>,
    pub disk: DiskOptions,
    /// Where a compressed tarball or stdin is spooled to (the store's temp dir).
    pub spool_dir: PathBuf,
}

/// One volume of the disk, as `inspect-disk` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    /// `1`, `5` (partitions as Linux numbers them), `vg0/root` (LVs), `disk` (no table).
    pub name: String,
    pub scheme: String,
    pub part_type: String,
    pub type_name: String,
    pub start: u64,
    pub size: u64,
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
    /// The filesystem found by signature (`ext4`, `xfs`, `swap`, `unknown`, ...).
    pub filesystem: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// A Linux root: /etc, /bin or /usr/bin, and /etc/fstab or /etc/os-release.
    pub is_root: bool,
    /// Why the filesystem could not be opened, when it could not.
    pub error: Option<String>,
}

/// One fstab line and what the import does with it.
#[derive(Debug, Clone, Serialize)]
pub struct MountReport {
    pub line: usize,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    /// `root`, `grafted`, `skipped` or `unresolved`.
    pub status: String,
    /// The volume it resolved to.
    pub volume: Option<String>,
    pub reason: Option<String>,
}

/// What the source is and how it will be imported.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub source: PathBuf,
    /// `disk` or `tarball`.
    pub kind: String,
    pub disk: Option<DiskInfo>,
    /// `gpt`, `mbr`, `none` (a bare filesystem), or `tar`.
    pub scheme: String,
    pub volumes: Vec<VolumeReport>,
    /// The `name` of the root volume.
    pub root: Option<String>,
    pub mounts: Vec<MountReport>,
    pub guest: Option<GuestInfo>,
    /// Bytes of file data expected (used blocks of the grafted filesystems), for progress.
    pub expected_bytes: u64,
    pub notes: Vec<String>,
}

/// A plan and the file tree that carries it out.
pub struct Opened {
    pub plan: Plan,
    pub tree: Box<dyn FileTree + Send>,
}

/// Opens `path` ("-" for a tarball on stdin): recognises tarballs and disks, finds the root,
/// grafts the fstab mounts.
pub fn open(path: &Path, opts: &PlanOptions) -> Result<Opened, PlanError> {
    if path == Path::new("-") || looks_like_tarball(path)? {
        return open_tarball(path, opts);
    }
    open_disk(path, opts)
}

/// Tar magic (`ustar` at 257) or a compressor's magic at the start of the file.
fn looks_like_tarball(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let h = &head[..n];
    let compressed = h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(b"BZh");
    Ok(compressed || h.get(257..262) == Some(b"ustar"))
}

fn open_tarball(path: &Path, opts: &PlanOptions) -> Result<Opened, PlanError> {
    let tree = TarballTree::open(path, &opts.spool_dir).map_err(io::Error::from)?;
    let guest = inspect::inspect(&tree).ok();
    let notes = tree.warnings().to_vec();
    let plan = Plan {
        source: path.to_path_buf(),
        kind: "tarball".into(),
        disk: None,
        scheme: "tar".into(),
        volumes: Vec::new(),
        root: None,
        mounts: Vec::new(),
        guest,
        expected_bytes: tree.total_bytes(),
        notes,
    };
    Ok(Opened {
        plan,
        tree: Box::new(tree),
    })
}

/// A volume with its filesystem, if decant can read it.
struct Found {
    volume: Volume,
    report: VolumeReport,
    fs: Option<Arc<Ext4>>,
    /// "vg/mirror: raid1 logical volumes are not supported ...": an LV listed, never read.
    unsupported: Option<String>,
}

fn volume_name(v: &Volume) -> String {
    match (&v.lvm, v.scheme.as_str()) {
        (Some((vg, lv)), _) => format!("{vg}/{lv}"),
        (None, "none") => "disk".into(),
        _ => v.index.to_string(),
    }
}

fn open_disk(path: &Path, opts: &PlanOptions) -> Result<Opened, PlanError> {
    let file = path.display().to_string();
    let image = disk::open_disk(path, &opts.disk)?;
    let info = image.info();
    let source: Arc<dyn BlockSource> = image.clone();
    let layout = volume::discover(source).map_err(io::Error::from)?;
    let mut notes: Vec<String> = info.notes.clone();
    notes.extend(layout.notes.iter().cloned());

    let mut found: Vec<Found> = Vec::new();
    for (i, v) in layout.volumes.into_iter().enumerate() {
        let name = volume_name(&v);
        let unsupported = volume::lvm::unsupported_reason(&v).map(|why| format!("{name}: {why}"));
        let kind = match unsupported {
            Some(_) => FsKind::Unknown,
            None => probe::probe(&*v.source)?,
        };
        let mut report = VolumeReport {
            name,
            scheme: v.scheme.clone(),
            part_type: v.part_type.clone(),
            type_name: v.type_name.clone(),
            start: v.start,
            size: v.size,
            partuuid: v.partuuid.clone(),
            partlabel: v.partlabel.clone(),
            filesystem: kind.name().to_string(),
            uuid: None,
            label: None,
            is_root: false,
            error: unsupported.clone(),
        };
        if unsupported.is_some() {
            report.filesystem = "unsupported".into();
        }
        let mut fs = None;
        if matches!(kind, FsKind::Vfat) {
            // Not read, but an fstab line may name it (UUID=ABCD-1234 /boot/efi): with its
            // id the line is reported as a FAT volume decant skips, not as a missing one.
            if let Some((id, label)) = fat_id(&*v.source) {
                report.uuid = Some(id);
                report.label = label;
            }
        }
        if matches!(kind, FsKind::Ext { .. }) {
            match Ext4::open(v.source.clone(), i as u64 + 1) {
                Ok(e) => {
                    let fi = e.info();
                    report.filesystem = fi.kind.to_string();
                    report.uuid = Some(fi.uuid.clone());
                    report.label = (!fi.label.is_empty()).then(|| fi.label.clone());
                    report.is_root = is_linux_root(&e);
                    if fi.journal_replayed {
                        notes.push(format!("{}: the journal needed recovery; it was replayed in memory (the file was not changed)", report.name));
                    }
                    fs = Some(Arc::new(e));
                }
                Err(err) => report.error = Some(err.to_string()),
            }
        }
        found.push(Found {
            volume: v,
            report,
            fs,
            unsupported,
        });
    }

    let root_idx = choose_root(&file, &found, opts.root.as_deref())?;
    let root_fs = found[root_idx]
        .fs
        .clone()
        .expect("choose_root returns a readable volume");
    if !found[root_idx].report.is_root {
        notes.push(format!(
            "{}: no Linux root (/etc with /bin or /usr/bin) on this volume; importing the filesystem as it is",
            found[root_idx].report.name
        ));
    }

    // The fstab of the chosen root decides what is grafted.
    let mut mounts = Vec::new();
    let mut grafts = Vec::new();
    let mut expected = used_bytes(&root_fs);
    if let Ok(text) = root_fs.read_file(b"/etc/fstab", 1 << 20) {
        let text = String::from_utf8_lossy(&text);
        let (entries, problems) = fstab::parse(&text);
        for p in problems {
            notes.push(format!("/etc/fstab line {}: {}", p.line, p.problem));
        }
        for e in entries {
            let mut m = MountReport {
                line: e.line,
                spec: e.spec.clone(),
                mountpoint: e.mountpoint.clone(),
                fstype: e.fstype.clone(),
                status: String::new(),
                volume: None,
                reason: None,
            };
            match fstab::classify(&e) {
                Disposition::Root(spec) => {
                    m.status = "root".into();
                    m.volume = spec
                        .and_then(|s| resolve(&found, &s))
                        .map(|i| found[i].report.name.clone());
                }
                Disposition::Skip(why) => {
                    m.status = "skipped".into();
                    m.reason = Some(why);
                }
                Disposition::Unresolvable(why) => {
                    m.status = "unresolved".into();
                    m.reason = Some(why);
                }
                Disposition::Graft(spec) => match resolve(&found, &spec) {
                    None => {
                        m.status = "unresolved".into();
                        m.reason = Some(no_match_reason(&found, &spec, &e.spec));
                    }
                    Some(i) if i == root_idx => {
                        m.status = "unresolved".into();
                        m.volume = Some(found[i].report.name.clone());
                        m.reason = Some("names the root volume itself".into());
                    }
                    Some(i) => {
                        m.volume = Some(found[i].report.name.clone());
                        match &found[i].fs {
                            Some(fs) => {
                                let mp = fstab::normalise_mountpoint(&e.mountpoint);
                                let root = fs.stat(b"/").ok().flatten();
                                grafts.push(Graft {
                                    mountpoint: mp.trim_start_matches('/').as_bytes().to_vec(),
                                    tree: Box::new(fs.tree()),
                                    root,
                                });
                                expected += used_bytes(fs);
                                m.status = "grafted".into();
                            }
                            None if found[i].unsupported.is_some() => {
                                m.status = "unresolved".into();
                                m.reason = Some(format!(
                                    "{}; {} is left empty",
                                    found[i].unsupported.as_deref().unwrap_or_default(),
                                    e.mountpoint
                                ));
                            }
                            None => {
                                m.status = "unresolved".into();
                                m.reason = Some(format!(
                                    "{} holds {}, which decant cannot read (ext2/3/4 only); {} is left empty",
                                    found[i].report.name,
                                    match found[i].report.filesystem.as_str() {
                                        "FAT" => "a FAT (vfat) filesystem",
                                        other => other,
                                    },
                                    e.mountpoint
                                ));
                            }
                        }
                    }
                },
            }
            mounts.push(m);
        }
    }

    let guest = inspect::inspect(&*root_fs).ok();
    let tree = GraftTree::new(Box::new(root_fs.tree()), grafts);
    let plan = Plan {
        source: path.to_path_buf(),
        kind: "disk".into(),
        disk: Some(info),
        scheme: layout.scheme,
        root: Some(found[root_idx].report.name.clone()),
        volumes: found.into_iter().map(|f| f.report).collect(),
        mounts,
        guest,
        expected_bytes: expected,
        notes,
    };
    Ok(Opened {
        plan,
        tree: Box::new(tree),
    })
}

/// Why an fstab spec matches no volume. A filesystem UUID or LABEL may live on an LV decant
/// lists but cannot read (its filesystem was never probed), so those LVs are named.
fn no_match_reason(found: &[Found], spec: &DeviceSpec, text: &str) -> String {
    let unread: Vec<String> = found
        .iter()
        .filter(|f| f.unsupported.is_some())
        .map(|f| format!("{} ({})", f.report.name, f.volume.part_type))
        .collect();
    if matches!(spec, DeviceSpec::Uuid(_) | DeviceSpec::Label(_)) && !unread.is_empty() {
        return format!(
            "no readable volume on this disk matches {text}; it may be on a logical volume decant cannot read: {}",
            unread.join(", ")
        );
    }
    format!("no volume on this disk matches {text}")
}

/// The volume id and label of a FAT filesystem, from its boot sector, as Linux shows them:
/// `UUID=ABCD-1234`, `LABEL=EFI`. `None` when the boot sector has no extended signature.
fn fat_id(src: &dyn BlockSource) -> Option<(String, Option<String>)> {
    let mut b = [0u8; 512];
    src.read_at(0, &mut b).ok()?;
    // FAT32 has no 16-bit sectors-per-FAT count (offset 22): its extended fields start at 64.
    let fat32 = b[22] == 0 && b[23] == 0;
    let ext = if fat32 { 0x40 } else { 0x24 };
    if !matches!(b.get(ext + 2), Some(0x28 | 0x29)) {
        return None;
    }
    let serial = u32::from_le_bytes(b.get(ext + 3..ext + 7)?.try_into().ok()?);
    let id = format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff);
    // Only the 0x29 signature has a label field.
    let label = (b[ext + 2] == 0x29)
        .then(|| b.get(ext + 7..ext + 18))
        .flatten()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .filter(|l| !l.is_empty() && l != "NO NAME");
    Some((id, label))
}

fn used_bytes(fs: &Ext4) -> u64 {
    fs.info().used_bytes
}

/// A Linux root: /etc, with /bin or /usr/bin, and with /etc/fstab or /etc/os-release.
fn is_linux_root(fs: &dyn FileLookup) -> bool {
    let exists = |p: &[u8]| matches!(fs.stat(p), Ok(Some(_)));
    exists(b"/etc")
        && (exists(b"/bin") || exists(b"/usr/bin"))
        && (exists(b"/etc/fstab") || exists(b"/etc/os-release") || exists(b"/usr/lib/os-release"))
}

fn choose_root(file: &str, found: &[Found], selector: Option<&str>) -> Result<usize, PlanError> {
    let names = || {
        found
            .iter()
            .map(|f| format!("{} ({})", f.report.name, f.report.filesystem))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(sel) = selector {
        let spec = parse_root_selector(sel);
        let idx = match &spec {
            Some(s) => resolve(found, s),
            None => found.iter().position(|f| f.report.name == sel),
        }
        .ok_or_else(|| PlanError::NoSuchRoot {
            file: file.into(),
            selector: sel.into(),
            volumes: names(),
        })?;
        if let Some(reason) = &found[idx].unsupported {
            return Err(PlanError::RootUnsupported {
                file: file.into(),
                selector: sel.into(),
                reason: reason.clone(),
            });
        }
        if found[idx].fs.is_none() {
            return Err(PlanError::RootNotReadable {
                file: file.into(),
                selector: sel.into(),
                volume: found[idx].report.name.clone(),
                fs: found[idx]
                    .report
                    .error
                    .clone()
                    .unwrap_or_else(|| found[idx].report.filesystem.clone()),
            });
        }
        return Ok(idx);
    }
    let roots: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].report.is_root)
        .collect();
    match roots.len() {
        1 => Ok(roots[0]),
        0 => {
            let readable: Vec<usize> = (0..found.len())
                .filter(|&i| found[i].fs.is_some())
                .collect();
            if readable.len() == 1 {
                return Ok(readable[0]);
            }
            if readable.is_empty() {
                // The error names the file once, in front; each reason says "it" for a
                // bare filesystem.
                let what = found
                    .iter()
                    .map(|f| match &f.report.error {
                        Some(e) => e
                            .strip_prefix(&format!("{file}: "))
                            .unwrap_or(e)
                            .to_string(),
                        None => probe_message(f),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(PlanError::NothingReadable {
                    file: file.into(),
                    found: what,
                });
            }
            Err(PlanError::SeveralRoots {
                file: file.into(),
                candidates: readable
                    .iter()
                    .map(|&i| found[i].report.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
        _ => Err(PlanError::SeveralRoots {
            file: file.into(),
            candidates: roots
                .iter()
                .map(|&i| describe(&found[i].report))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn probe_message(f: &Found) -> String {
    let what = &f.report.filesystem;
    if f.report.scheme == "none" {
        if what == "unknown" {
            "it holds no filesystem signature decant knows".to_string()
        } else {
            format!("it holds {what}; decant reads ext2/3/4 filesystems")
        }
    } else {
        format!("volume {} holds {what}", f.report.name)
    }
}

fn describe(r: &VolumeReport) -> String {
    let mut s = r.name.clone();
    if let Some(l) = &r.label {
        s.push_str(&format!(" LABEL={l}"));
    }
    if let Some(u) = &r.uuid {
        s.push_str(&format!(" UUID={u}"));
    }
    s
}

/// `--root` forms: `UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=`, `VG/LV`, or a volume name
/// (partition number).
fn parse_root_selector(sel: &str) -> Option<DeviceSpec> {
    if sel.contains('=') || sel.starts_with("/dev/") {
        return fstab::parse_spec(sel);
    }
    if let Some((vg, lv)) = sel.split_once('/') {
        return Some(DeviceSpec::Lvm(vg.into(), lv.into()));
    }
    None
}

/// Finds the volume an fstab device spec names.
fn resolve(found: &[Found], spec: &DeviceSpec) -> Option<usize> {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    found.iter().position(|f| match spec {
        DeviceSpec::Uuid(u) => eq(&f.report.uuid, u),
        DeviceSpec::Label(l) => f.report.label.as_deref() == Some(l.as_str()),
        DeviceSpec::PartUuid(u) => eq(&f.report.partuuid, u),
        DeviceSpec::PartLabel(l) => f.report.partlabel.as_deref() == Some(l.as_str()),
        DeviceSpec::Lvm(vg, lv) => f
            .volume
            .lvm
            .as_ref()
            .is_some_and(|(v, l)| v == vg && l == lv),
        // One disk is imported at a time: sdaN, vdaN, ... name partition N of it.
        DeviceSpec::Partition { number, .. } => {
            f.volume.lvm.is_none() && f.report.scheme != "none" && f.volume.index == *number
        }
    })
}

//! `/etc/fstab`: which filesystems the guest mounted where, and which of them can be grafted
//! into the image.
//!
//! Parsing follows fstab(5): whitespace-separated fields, `#` comments, octal escapes (`\040` for
//! a space in a mountpoint). Resolution maps the `fs_spec` forms a VM's fstab uses (UUID=,
//! LABEL=, PARTUUID=, PARTLABEL=, /dev/disk/by-{uuid,label,partuuid,partlabel},
//! /dev/mapper/VG-LV, /dev/VG/LV, /dev/sdXN and its vd/hd/xvd/nvme cousins) onto the volumes
//! found on the disk. /dev/disk/by-id and by-path name the VM's hardware, which an image does not
//! record: they are unresolved, saying so. Nothing is dropped silently: every line ends up
//! grafted, skipped with a reason, or unresolved with a reason.

/// One mount line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    /// 1-based line number in the file, for messages.
    pub line: usize,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// A malformed line: reported, never fatal (the rest of the fstab still counts).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabProblem {
    pub line: usize,
    pub problem: String,
}

/// Parses fstab text. Lines with fewer than 2 fields are problems; missing type/options take
/// fstab(5)'s defaults ("auto", "defaults").
pub fn parse(text: &str) -> (Vec<FstabEntry>, Vec<FstabProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = content.split_whitespace().map(unescape).collect();
        if fields.len() < 2 {
            problems.push(FstabProblem {
                line,
                problem: format!("expected at least 2 fields: {content:?}"),
            });
            continue;
        }
        entries.push(FstabEntry {
            line,
            spec: fields[0].clone(),
            mountpoint: fields[1].clone(),
            fstype: fields.get(2).cloned().unwrap_or_else(|| "auto".into()),
            options: fields
                .get(3)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_else(|| vec!["defaults".into()]),
        });
    }
    (entries, problems)
}

/// fstab(5) octal escapes: `\040` space, `\011` tab, `\012` newline, `\134` backslash.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.len() - i >= 4 {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystem types that are not on the disk: kernel pseudo filesystems and network mounts.
const PSEUDO_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "tmpfs",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "efivarfs",
    "bpf",
    "hugetlbfs",
    "mqueue",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "overlay",
    "none",
];
const NETWORK_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "sshfs",
    "fuse.sshfs",
    "glusterfs",
    "ceph",
    "9p",
    "davfs",
    "fuse.s3fs",
    "lustre",
    "afs",
    "virtiofs",
];

/// How an fstab line's source names its device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", content = "value", rename_all = "lowercase")]
pub enum DeviceSpec {
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// (volume group, logical volume)
    Lvm(String, String),
    /// A kernel device name's partition number: `/dev/sda2` → 2 on disk `a`.
    Partition {
        disk: String,
        number: usize,
    },
}

/// What to do with one fstab line, before looking at the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The root filesystem itself.
    Root(Option<DeviceSpec>),
    /// A filesystem on the disk to graft at the mountpoint.
    Graft(DeviceSpec),
    /// Not a disk filesystem or not wanted: the reason.
    Skip(String),
    /// A disk filesystem named in a way decant cannot map to a volume: the reason.
    Unresolvable(String),
}

/// Decides what an fstab line means for an import.
pub fn classify(e: &FstabEntry) -> Disposition {
    let fstype = e.fstype.as_str();
    if fstype == "swap" || e.mountpoint == "none" && fstype != "auto" || e.mountpoint == "swap" {
        return Disposition::Skip("swap".into());
    }
    if e.options.iter().any(|o| o == "bind" || o == "rbind") {
        return Disposition::Skip("bind mount".into());
    }
    if PSEUDO_TYPES.contains(&fstype) {
        return Disposition::Skip(format!("{fstype} is not a disk filesystem"));
    }
    if NETWORK_TYPES.contains(&fstype) || e.spec.starts_with("//") || e.spec.contains(":/") {
        return Disposition::Skip(format!("network filesystem ({fstype})"));
    }
    if !e.mountpoint.starts_with('/') {
        return Disposition::Unresolvable(format!(
            "mountpoint {:?} is not an absolute path",
            e.mountpoint
        ));
    }
    let spec = parse_spec(&e.spec);
    if normalise_mountpoint(&e.mountpoint) == "/" {
        return Disposition::Root(spec);
    }
    if e.options.iter().any(|o| o == "noauto") {
        return Disposition::Skip("noauto".into());
    }
    match spec {
        Some(s) => Disposition::Graft(s),
        None => Disposition::Unresolvable(unresolvable_reason(&e.spec)),
    }
}

/// Why a device name cannot be mapped to a volume of the image. `/dev/disk/by-id` and
/// `/dev/disk/by-path` name the disk as the VM's hardware showed it (model and serial, bus
/// position); a disk image records neither, so matching them would be a guess.
fn unresolvable_reason(spec: &str) -> String {
    if spec.starts_with("/dev/disk/by-id/") {
        format!(
            "{spec:?} names the device by hardware id (model, serial, WWN), which a disk image does not record"
        )
    } else if spec.starts_with("/dev/disk/by-path/") {
        format!(
            "{spec:?} names the device by its bus path in the VM, which a disk image does not record"
        )
    } else {
        format!("cannot map device {spec:?} to a volume on this disk")
    }
}

/// `/var//log/` → `/var/log`.
pub fn normalise_mountpoint(m: &str) -> String {
    let parts: Vec<&str> = m
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Parses an fstab source into the way it names a device.
pub fn parse_spec(spec: &str) -> Option<DeviceSpec> {
    let unquote = |s: &str| s.trim_matches('"').to_string();
    for (prefix, make) in [
        ("UUID=", DeviceSpec::Uuid as fn(String) -> DeviceSpec),
        ("LABEL=", DeviceSpec::Label),
        ("PARTUUID=", DeviceSpec::PartUuid),
        ("PARTLABEL=", DeviceSpec::PartLabel),
        ("/dev/disk/by-uuid/", DeviceSpec::Uuid),
        ("/dev/disk/by-label/", DeviceSpec::Label),
        ("/dev/disk/by-partuuid/", DeviceSpec::PartUuid),
        ("/dev/disk/by-partlabel/", DeviceSpec::PartLabel),
    ] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let value = if prefix.starts_with("/dev/") {
                unhex_udev(rest)
            } else {
                unquote(rest)
            };
            return Some(make(value));
        }
    }
    if let Some(rest) = spec.strip_prefix("/dev/mapper/") {
        return split_mapper_name(rest).map(|(vg, lv)| DeviceSpec::Lvm(vg, lv));
    }
    if let Some(rest) = spec.strip_prefix("/dev/") {
        if let Some(p) = parse_kernel_partition(rest) {
            return Some(p);
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty() && parts[0] != "disk" {
            return Some(DeviceSpec::Lvm(parts[0].to_string(), parts[1].to_string()));
        }
    }
    None
}

/// udev escapes characters in by-label links as `\x20`.
fn unhex_udev(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(h) = s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(h);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// device-mapper names join VG and LV with `-` and double any `-` inside either name.
fn split_mapper_name(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let vg = name[..i].replace("--", "-");
            let lv = name[i + 1..].replace("--", "-");
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg, lv));
        }
        i += 1;
    }
    None
}

/// `sda2`, `vdb1`, `hda5`, `xvda1`, `nvme0n1p3`, `mmcblk0p2` → the disk and partition number.
fn parse_kernel_partition(name: &str) -> Option<DeviceSpec> {
    for prefix in ["xvd", "sd", "vd", "hd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let letters: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            let digits = &rest[letters.len()..];
            if !letters.is_empty()
                && !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
            {
                let number = digits.parse().ok()?;
                return Some(DeviceSpec::Partition {
                    disk: letters,
                    number,
                });
            }
            return None;
        }
    }
    for prefix in ["nvme", "mmcblk"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let (disk, part) = rest.rsplit_once('p')?;
            if disk.is_empty() || part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            return Some(DeviceSpec::Partition {
                disk: disk.to_string(),
                number: part.parse().ok()?,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "\
# /etc/fstab: static file system information.
UUID=0b9e2f6a-1111-2222-3333-444455556666 /               ext4    errors=remount-ro 0       1
UUID=7c1d-AB12  /boot/efi       vfat    umask=0077      0       1
LABEL=boot /boot ext4 defaults 0 2
/dev/mapper/vg--data-var--log /var/log ext4 defaults 0 2
/dev/vg0/home /home ext4 defaults,noatime 0 2
/dev/sda3 none swap sw 0 0
proc /proc proc defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
server:/export /mnt/nfs nfs defaults 0 0
PARTUUID=\"abcd-02\" /srv ext4 noauto 0 0
/dev/disk/by-label/my\\x20data /data ext4 defaults 0 0
/dev/nvme0n1p4 /opt ext4 defaults 0 0
/srv/a\\040b /mnt/with\\040space none bind 0 0
broken
";

    #[test]
    fn parses_and_classifies_a_real_looking_fstab() {
        let (entries, problems) = parse(DEBIAN);
        assert_eq!(
            problems,
            vec![FstabProblem {
                line: 15,
                problem: "expected at least 2 fields: \"broken\"".into()
            }]
        );
        let got: Vec<(String, Disposition)> = entries
            .iter()
            .map(|e| (e.mountpoint.clone(), classify(e)))
            .collect();
        let want = vec![
            (
                "/".into(),
                Disposition::Root(Some(DeviceSpec::Uuid(
                    "0b9e2f6a-1111-2222-3333-444455556666".into(),
                ))),
            ),
            (
                "/boot/efi".into(),
                Disposition::Graft(DeviceSpec::Uuid("7c1d-AB12".into())),
            ),
            (
                "/boot".into(),
                Disposition::Graft(DeviceSpec::Label("boot".into())),
            ),
            (
                "/var/log".into(),
                Disposition::Graft(DeviceSpec::Lvm("vg-data".into(), "var-log".into())),
            ),
            (
                "/home".into(),
                Disposition::Graft(DeviceSpec::Lvm("vg0".into(), "home".into())),
            ),
            ("none".into(), Disposition::Skip("swap".into())),
            (
                "/proc".into(),
                Disposition::Skip("proc is not a disk filesystem".into()),
            ),
            (
                "/tmp".into(),
                Disposition::Skip("tmpfs is not a disk filesystem".into()),
            ),
            (
                "/mnt/nfs".into(),
                Disposition::Skip("network filesystem (nfs)".into()),
            ),
            ("/srv".into(), Disposition::Skip("noauto".into())),
            (
                "/data".into(),
                Disposition::Graft(DeviceSpec::Label("my data".into())),
            ),
            (
                "/opt".into(),
                Disposition::Graft(DeviceSpec::Partition {
                    disk: "0n1".into(),
                    number: 4,
                }),
            ),
            (
                "/mnt/with space".into(),
                Disposition::Skip("bind mount".into()),
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn kernel_names_and_mapper_names() {
        assert_eq!(
            parse_spec("/dev/sda2"),
            Some(DeviceSpec::Partition {
                disk: "a".into(),
                number: 2
            })
        );
        assert_eq!(
            parse_spec("/dev/xvdb11"),
            Some(DeviceSpec::Partition {
                disk: "b".into(),
                number: 11
            })
        );
        assert_eq!(parse_spec("/dev/hda"), None);
        assert_eq!(
            parse_spec("/dev/vda3"),
            Some(DeviceSpec::Partition {
                disk: "a".into(),
                number: 3
            })
        );
        assert_eq!(
            parse_spec("/dev/vdc12"),
            Some(DeviceSpec::Partition {
                disk: "c".into(),
                number: 12
            })
        );
        assert_eq!(
            parse_spec("/dev/hda5"),
            Some(DeviceSpec::Partition {
                disk: "a".into(),
                number: 5
            })
        );
        assert_eq!(
            parse_spec("/dev/hdb1"),
            Some(DeviceSpec::Partition {
                disk: "b".into(),
                number: 1
            })
        );
        assert_eq!(parse_spec("/dev/vda"), None);
        assert_eq!(parse_spec("/dev/vd1"), None);
        assert_eq!(parse_spec("/dev/hda1x"), None);
        assert_eq!(
            parse_spec("/dev/mmcblk0p2"),
            Some(DeviceSpec::Partition {
                disk: "0".into(),
                number: 2
            })
        );
        assert_eq!(
            parse_spec("/dev/mapper/a--b-c--d--e"),
            Some(DeviceSpec::Lvm("a-b".into(), "c-d-e".into()))
        );
        assert_eq!(parse_spec("/dev/mapper/nodash"), None);
        assert_eq!(parse_spec("/dev/disk/by-id/ata-XYZ"), None);
        assert_eq!(normalise_mountpoint("/var//log/"), "/var/log");
        assert_eq!(normalise_mountpoint("/"), "/");
    }

    #[test]
    fn by_id_and_by_path_are_unresolved_with_the_reason() {
        let (entries, _) = parse(
            "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part2 /srv ext4 defaults 0 2\n\
             /dev/disk/by-path/pci-0000:00:04.0-part3 /opt ext4 defaults 0 2\n\
             /dev/disk/by-foo/x /mnt ext4 defaults 0 2\n",
        );
        let reasons: Vec<String> = entries
            .iter()
            .map(|e| match classify(e) {
                Disposition::Unresolvable(why) => why,
                other => panic!("{}: {other:?}", e.spec),
            })
            .collect();
        assert!(
            reasons[0].contains("by-id") && reasons[0].contains("hardware id"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("by-path") && reasons[1].contains("bus path"),
            "{}",
            reasons[1]
        );
        assert!(reasons[2].contains("cannot map device"), "{}", reasons[2]);
    }

    #[test]
    fn hostile_lines_do_not_panic() {
        for t in [
            "\\",
            "a \\0",
            "a b\\777",
            "UUID= / ext4",
            "/dev/ / x",
            "\u{0}\u{0} \u{ff}",
            "a\\04",
        ] {
            let (entries, _) = parse(t);
            for e in &entries {
                let _ = classify(e);
            }
        }
    }
}

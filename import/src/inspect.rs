//! What the guest is: its OS release and its CPU architecture, read from its files through any
//! `FileLookup` (a filesystem reader or a tarball), for the image config's `os`/`architecture`
//! and for the import summary.
//!
//! Paths in the guest are resolved by `resolve_path`, which follows symlinks as the guest would
//! see them from inside its root: an absolute target starts again at the guest root, `..` stops
//! at the root, and nothing can lead out to the host.

use std::io;

use snapshot::EntryKind;

use crate::fs::FileLookup;

/// The most symlinks followed while resolving one path (Linux's MAXSYMLINKS).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// os-release files are a few hundred bytes; more than this is not read.
const MAX_OS_RELEASE: usize = 64 << 10;
/// Bytes of an ELF file needed for `elf_arch`.
const ELF_HEADER: usize = 64;

/// The fields of os-release(5) the image metadata uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
    pub name: Option<String>,
    pub version_codename: Option<String>,
}

/// What the guest is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestInfo {
    /// Always `linux` for now: the readers only handle Linux filesystems.
    pub os: String,
    /// OCI / GOARCH name: amd64, arm64, 386, arm, ppc64le, ppc64, s390x, riscv64, mips64le,
    /// mips64, mipsle, mips, loong64.
    pub architecture: String,
    /// `v7`, `v5` for arm; none otherwise.
    pub variant: Option<String>,
    pub os_release: Option<OsRelease>,
    /// `/bin/bash` if present, else `/bin/sh` if present.
    pub shell: Option<String>,
}

/// Binaries whose ELF header tells the architecture, tried in order.
const ARCH_PROBES: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/usr/bin/env",
    "/sbin/init",
    "/bin/busybox",
];

/// Inspects the guest. Fails with `NotFound` when none of the probe binaries (`/bin/sh`,
/// `/bin/bash`, `/usr/bin/env`, `/sbin/init`, `/bin/busybox`) is an ELF file, since then the
/// architecture is unknown and the caller must be told (a tarball of plain data, for instance).
pub fn inspect(fs: &dyn FileLookup) -> Result<GuestInfo, io::Error> {
    let mut os_release = None;
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = read_guest_file(fs, p.as_bytes(), MAX_OS_RELEASE)? {
            os_release = Some(parse_os_release(&String::from_utf8_lossy(&text)));
            break;
        }
    }

    let mut arch = None;
    for p in ARCH_PROBES {
        if let Some(head) = read_guest_file(fs, p.as_bytes(), ELF_HEADER)? {
            if let Some(a) = elf_arch(&head) {
                arch = Some(a);
                break;
            }
        }
    }
    let Some((architecture, variant)) = arch else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "cannot tell the guest's architecture: none of {} is an ELF binary",
                ARCH_PROBES.join(", ")
            ),
        ));
    };

    let mut shell = None;
    for p in ["/bin/bash", "/bin/sh"] {
        if resolve_regular(fs, p.as_bytes())?.is_some() {
            shell = Some(p.to_string());
            break;
        }
    }

    Ok(GuestInfo {
        os: "linux".to_string(),
        architecture,
        variant,
        os_release,
        shell,
    })
}

/// Resolves `path` to a regular file, treating a broken chain or a symlink loop (guest data
/// problems) as absent; real I/O errors still fail.
fn resolve_regular(fs: &dyn FileLookup, path: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let resolved = match resolve_path(fs, path) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(e),
    };
    match fs.stat(&resolved)? {
        Some(e) if matches!(e.kind, EntryKind::File | EntryKind::Hardlink) => Ok(Some(resolved)),
        _ => Ok(None),
    }
}

fn read_guest_file(fs: &dyn FileLookup, path: &[u8], max: usize) -> io::Result<Option<Vec<u8>>> {
    match resolve_regular(fs, path)? {
        Some(r) => Ok(Some(fs.read_file(&r, max)?)),
        None => Ok(None),
    }
}

/// Resolves every symlink in `path` inside the guest root and returns the absolute path of what
/// it names (`/usr/bin/dash` for `/bin/sh` on merged-usr Debian), or `None` when a component is
/// missing or not a directory. Absolute link targets start again at the guest root; `..` never
/// climbs above it. More than `MAX_SYMLINK_HOPS` links fail with `InvalidData`.
pub fn resolve_path(fs: &dyn FileLookup, path: &[u8]) -> io::Result<Option<Vec<u8>>> {
    // Components still to walk, last component first (so a link's target is pushed on top).
    let mut todo: Vec<Vec<u8>> = split(path).rev().map(<[u8]>::to_vec).collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0usize;
    while let Some(comp) = todo.pop() {
        match &comp[..] {
            b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = Vec::new();
        for c in done.iter().chain(std::iter::once(&comp)) {
            candidate.push(b'/');
            candidate.extend_from_slice(c);
        }
        let Some(entry) = fs.stat(&candidate)? else {
            return Ok(None);
        };
        match entry.kind {
            EntryKind::Symlink => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "resolving {}: more than {MAX_SYMLINK_HOPS} symbolic links (a loop?)",
                            String::from_utf8_lossy(path)
                        ),
                    ));
                }
                let target = entry.link_target.unwrap_or_default();
                if target.is_empty() {
                    return Ok(None);
                }
                if target.starts_with(b"/") {
                    done.clear();
                }
                todo.extend(split(&target).rev().map(<[u8]>::to_vec));
            }
            EntryKind::Dir => done.push(comp),
            _ => {
                // Only the last component may be a non-directory.
                if !todo.iter().all(|c| c == b".") {
                    return Ok(None);
                }
                done.push(comp);
            }
        }
    }
    Ok(Some(join(&done)))
}

fn split(p: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for c in comps {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

/// Parses os-release(5): `KEY=VALUE` lines, `#` comments, values quoted shell-style (double
/// quotes with `\"`, `\\`, `\$`, `` \` `` escapes; single quotes literal; unquoted with `\`
/// escapes). Unknown keys and malformed lines are ignored, as systemd does.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut r = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let value = unquote(raw.trim());
        let slot = match key {
            "ID" => &mut r.id,
            "VERSION_ID" => &mut r.version_id,
            "PRETTY_NAME" => &mut r.pretty_name,
            "NAME" => &mut r.name,
            "VERSION_CODENAME" => &mut r.version_codename,
            _ => continue,
        };
        *slot = Some(value);
    }
    r
}

fn unquote(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                            Some(other) => {
                                out.push('\\');
                                out.push(other);
                            }
                            None => out.push('\\'),
                        },
                        _ => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            // Unquoted whitespace ends a shell word; a trailing comment is not part of it.
            c if c.is_whitespace() => break,
            _ => out.push(c),
        }
    }
    out
}

/// The OCI architecture (and variant) of an ELF file from its first bytes: class and byte order
/// from `e_ident`, the machine from `e_machine`, for arm the float ABI from `e_flags`
/// (hard-float is armhf, `v7`; soft-float is Debian's armel, `v5`). `None` for anything that is
/// not ELF or not an architecture OCI names.
pub fn elf_arch(header: &[u8]) -> Option<(String, Option<String>)> {
    if header.get(0..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = match header.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match header.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = header.get(18..20)?;
    let machine = if little {
        u16::from_le_bytes([m[0], m[1]])
    } else {
        u16::from_be_bytes([m[0], m[1]])
    };
    let arch = match (machine, class64, little) {
        (3, false, true) => "386",
        (62, true, true) => "amd64",
        (40, false, true) => "arm",
        (183, true, true) => "arm64",
        (21, true, true) => "ppc64le",
        (21, true, false) => "ppc64",
        (22, true, false) => "s390x",
        (243, true, true) => "riscv64",
        (8, false, false) => "mips",
        (8, false, true) => "mipsle",
        (8, true, false) => "mips64",
        (8, true, true) => "mips64le",
        (258, true, true) => "loong64",
        _ => return None,
    };
    let variant = if arch == "arm" {
        // e_flags sits at offset 36 in a 32-bit header.
        const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
        let flags = header
            .get(36..40)
            .map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
            .unwrap_or(0);
        Some(
            if flags & EF_ARM_ABI_FLOAT_SOFT != 0 {
                "v5"
            } else {
                "v7"
            }
            .to_string(),
        )
    } else {
        None
    };
    Some((arch.to_string(), variant))
}

//! End to end: `decant save` / `decant load` in both archive formats, against skopeo (which
//! reads what save writes and writes what load reads), across stores, and with hostile
//! archives that must fail on one line and leave the store as it was.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{example, tool, Env};
use serde_json::Value;

/// An env with the example image imported as `ex:latest`.
fn env_with_example() -> Env {
    let env = Env::new();
    let root = example().join("root.ext4");
    env.run(&["import", "-t", "ex", root.to_str().unwrap()])
        .ok();
    env
}

fn inspect(env: &Env, image: &str) -> Value {
    let v: Value = serde_json::from_str(&env.run(&["inspect", image]).ok().stdout).unwrap();
    v[0].clone()
}

fn skopeo_inspect(transport: &str) -> Value {
    serde_json::from_str(&tool("skopeo", &["inspect", transport])).unwrap()
}

fn skopeo_config(transport: &str) -> Value {
    serde_json::from_str(&tool("skopeo", &["inspect", "--config", transport])).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn skopeo_reads_what_save_writes_and_bytes_are_reproducible() {
    let env = env_with_example();
    let want = inspect(&env, "ex");
    let docker = env.path().join("ex-docker.tar");
    let oci = env.path().join("ex-oci.tar");
    env.run(&["save", "ex", "-o", s(&docker)]).ok();
    env.run(&[
        "save",
        "--format",
        "oci-archive",
        "ex:latest",
        "-o",
        s(&oci),
    ])
    .ok();

    // docker-archive: uncompressed layers whose digests are the store's diff_ids, the same
    // config (image id), and the tag.
    let d = skopeo_inspect(&format!("docker-archive:{}", s(&docker)));
    assert_eq!(d["Layers"], want["RootFS"]["Layers"], "{d}");
    let names: Vec<String> = tool("tar", &["tf", s(&docker)])
        .lines()
        .map(str::to_string)
        .collect();
    let id_hex = want["Id"].as_str().unwrap().trim_start_matches("sha256:");
    assert!(names.contains(&format!("{id_hex}.json")), "{names:?}");
    let manifest: Value =
        serde_json::from_str(&tool("tar", &["xOf", s(&docker), "manifest.json"])).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "ex:latest");
    let cfg = skopeo_config(&format!("docker-archive:{}", s(&docker)));
    assert_eq!(cfg["rootfs"]["diff_ids"], want["RootFS"]["Layers"]);

    // oci-archive: the store's manifest and blobs as they are.
    let o = skopeo_inspect(&format!("oci-archive:{}", s(&oci)));
    assert_eq!(o["Digest"], want["Manifest"]["Digest"], "{o}");
    let layer_digests: Vec<Value> = want["Manifest"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].clone())
        .collect();
    assert_eq!(o["Layers"], Value::Array(layer_digests));
    let named = skopeo_inspect(&format!(
        "oci-archive:{}:docker.io/library/ex:latest",
        s(&oci)
    ));
    assert_eq!(named["Digest"], want["Manifest"]["Digest"]);

    // The same images give the same bytes, to a file or to stdout.
    let again = env.path().join("again.tar");
    env.run(&["save", "ex", "-o", s(&again)]).ok();
    assert_eq!(
        std::fs::read(&docker).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let out = env
        .decant()
        .args(["save", "--format", "oci-archive", "ex"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&oci).unwrap());
}

#[test]
fn load_reads_what_skopeo_writes() {
    let env = env_with_example();
    let want = inspect(&env, "ex");
    let src = format!("oci:{}:docker.io/library/ex:latest", s(&env.store()));
    let docker = env.path().join("sk-docker.tar");
    let oci = env.path().join("sk-oci.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &src,
            &format!("docker-archive:{}:x:t", s(&docker)),
        ],
    );
    tool(
        "skopeo",
        &["copy", "-q", &src, &format!("oci-archive:{}:x:t2", s(&oci))],
    );
    // docker load also takes a compressed archive (`docker save | gzip`).
    tool("gzip", &["-k", "-1", s(&docker)]);
    let other = Env::new();
    let r = other
        .run(&["load", "-i", &format!("{}.gz", s(&docker))])
        .ok();
    assert_eq!(r.stdout, "Loaded image: x:t\n");
    let r = other.run(&["load", "-i", s(&oci)]).ok();
    assert_eq!(r.stdout, "Loaded image: x:t2\n");
    for tag in ["x:t", "x:t2"] {
        let got = inspect(&other, tag);
        assert_eq!(got["Id"], want["Id"], "{tag}");
        assert_eq!(got["RootFS"]["Layers"], want["RootFS"]["Layers"], "{tag}");
    }
    // Loaded again, the layer the store has is reused: nothing new in the store.
    let before = other.store_state();
    let r = other.run(&["load", "-i", s(&docker)]).ok();
    assert_eq!(r.stdout, "Loaded image: x:t\n");
    assert_eq!(other.store_state(), before);
    // skopeo kept the gzip'd blob of the oci layout: the same manifest as ours.
    assert_eq!(
        inspect(&other, "x:t2")["Manifest"]["Digest"],
        want["Manifest"]["Digest"]
    );
    assert!(std::fs::read_dir(other.store().join(".decant/tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn round_trip_into_a_second_store_runs() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let want = inspect(&env, "ex");
    let other = Env::new();
    for format in ["docker-archive", "oci-archive"] {
        let file = env.path().join(format!("{format}.tar"));
        env.run(&["save", "--format", format, "ex", "-o", s(&file)])
            .ok();
        // Through a pipe, as `decant save | decant load`.
        let mut child = other
            .decant()
            .args(["load"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&std::fs::read(&file).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{format}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Loaded image: ex:latest\n"
        );
        let got = inspect(&other, "ex");
        assert_eq!(got["Id"], want["Id"], "{format}");
        assert_eq!(
            got["Manifest"]["Digest"], want["Manifest"]["Digest"],
            "{format}"
        );
    }
    let r = other.run(&["run", "--rm", "ex", "true"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    common::assert_containers_clean(&other, &[]);
}

#[test]
fn untagged_images_and_several_tags() {
    let env = env_with_example();
    env.run(&["tag", "ex", "ex:2"]).ok();
    env.run(&["tag", "ex", "other/name:v1"]).ok();
    let id = inspect(&env, "ex")["Id"].as_str().unwrap().to_string();
    let all = env.path().join("all.tar");
    // A repository alone means all its tags; the id adds no name.
    env.run(&["save", "ex", "other/name:v1", "-o", s(&all)])
        .ok();
    let other = Env::new();
    let r = other.run(&["load", "-i", s(&all)]).ok();
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Loaded image: ex:2",
            "Loaded image: ex:latest",
            "Loaded image: other/name:v1"
        ]
    );
    assert_eq!(inspect(&other, "other/name:v1")["Id"], id.as_str());
    let byid = env.path().join("byid.tar");
    env.run(&[
        "save",
        "--format",
        "oci-archive",
        &id[7..19],
        "-o",
        s(&byid),
    ])
    .ok();
    let third = Env::new();
    let r = third.run(&["load", "-q", "-i", s(&byid)]).ok();
    assert_eq!(r.stdout, format!("Loaded image ID: {id}\n"));
}

/// A tar member to build hostile archives with.
struct Member {
    name: Vec<u8>,
    data: Vec<u8>,
    /// The size the header claims, when not the data's.
    claimed: Option<u64>,
}

fn members_of(file: &Path) -> Vec<Member> {
    let mut ar = tar::Archive::new(std::fs::File::open(file).unwrap());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let name = e.path_bytes().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Member {
            name,
            data,
            claimed: None,
        });
    }
    out
}

fn write_tar(path: &Path, members: &[Member], end_marker: bool) {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_ustar();
        // Written into the field by hand: tar's set_path refuses `..`, which is the point.
        h.as_old_mut().name[..m.name.len()].copy_from_slice(&m.name);
        h.set_size(m.claimed.unwrap_or(m.data.len() as u64));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end_marker {
        out.resize(out.len() + 1024, 0);
    }
    std::fs::write(path, out).unwrap();
}

fn find<'a>(members: &'a mut [Member], suffix: &str) -> &'a mut Member {
    members
        .iter_mut()
        .find(|m| m.name.ends_with(suffix.as_bytes()))
        .unwrap_or_else(|| panic!("no member ending in {suffix}"))
}

#[test]
fn load_reuses_layers_the_store_has() {
    // The store keeps the layer as zstd: a load that compressed it again would add a gzip blob.
    let env = Env::new();
    let root = example().join("root.ext4");
    env.run(&[
        "import",
        "-t",
        "z",
        "--compression",
        "zstd",
        root.to_str().unwrap(),
    ])
    .ok();
    let want = inspect(&env, "z");
    let file = env.path().join("z.tar");
    env.run(&["save", "z", "-o", s(&file)]).ok();
    env.run(&["rmi", "z"]).ok();
    env.run(&[
        "import",
        "-t",
        "keep",
        "-c",
        "LABEL other=1",
        "--compression",
        "zstd",
        root.to_str().unwrap(),
    ])
    .ok();
    let before = env.store_state().1;
    let r = env.run(&["load", "-i", s(&file)]).ok();
    assert_eq!(r.stdout, "Loaded image: z:latest\n");
    let got = inspect(&env, "z");
    assert_eq!(got["Id"], want["Id"]);
    assert_eq!(
        got["Manifest"]["Layers"],
        inspect(&env, "keep")["Manifest"]["Layers"]
    );
    let added: Vec<String> = env
        .store_state()
        .1
        .into_iter()
        .filter(|b| !before.contains(b))
        .collect();
    // The config and the new manifest; no layer.
    assert_eq!(added.len(), 2, "{added:?}");
}

#[test]
fn docker_25_archives_with_both_layouts_load() {
    // docker 25+ writes an OCI layout plus a manifest.json whose paths point into blobs/.
    let env = env_with_example();
    let want = inspect(&env, "ex");
    let oci = env.path().join("o.tar");
    env.run(&["save", "--format", "oci-archive", "ex", "-o", s(&oci)])
        .ok();
    let mut m = members_of(&oci);
    let hex = |d: &Value| {
        d.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let layers: Vec<String> = want["Manifest"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("blobs/sha256/{}", hex(&l["digest"])))
        .collect();
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&want["Id"])),
        "RepoTags": ["d25:1"],
        "Layers": layers,
    }]);
    m.push(Member {
        name: b"manifest.json".to_vec(),
        data: manifest.to_string().into_bytes(),
        claimed: None,
    });
    let file = env.path().join("d25.tar");
    write_tar(&file, &m, true);
    let other = Env::new();
    let r = other.run(&["load", "-i", s(&file)]).ok();
    assert_eq!(r.stdout, "Loaded image: d25:1\n");
    let got = inspect(&other, "d25:1");
    assert_eq!(got["Id"], want["Id"]);
    assert_eq!(got["RootFS"]["Layers"], want["RootFS"]["Layers"]);
}

#[test]
fn multi_platform_oci_archives_load_this_platform() {
    use sha2::{Digest, Sha256};
    let env = env_with_example();
    let want = inspect(&env, "ex");
    let oci = env.path().join("o.tar");
    env.run(&["save", "--format", "oci-archive", "ex", "-o", s(&oci)])
        .ok();
    let mut m = members_of(&oci);
    let index = find(&mut m, "index.json");
    let outer: Value = serde_json::from_slice(&index.data).unwrap();
    let mut entry = outer["manifests"][0].clone();
    entry.as_object_mut().unwrap().remove("annotations");
    let arch = want["Architecture"].as_str().unwrap();
    let mut foreign = entry.clone();
    foreign["platform"] = serde_json::json!({"os": "linux", "architecture": "elsewhere"});
    entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign, entry],
    })
    .to_string()
    .into_bytes();
    let hex: String = Sha256::digest(&nested)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    index.data = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    })
    .to_string()
    .into_bytes();
    m.push(Member {
        name: format!("blobs/sha256/{hex}").into_bytes(),
        data: nested,
        claimed: None,
    });
    let file = env.path().join("multi.tar");
    write_tar(&file, &m, true);
    let other = Env::new();
    let r = other.run(&["load", "-i", s(&file)]).ok();
    assert_eq!(r.stdout, "Loaded image: multi:1\n");
    assert_eq!(inspect(&other, "multi:1")["Id"], want["Id"]);
}

#[track_caller]
fn assert_refused(env: &Env, file: &Path, want: &str) {
    let before = env.store_state();
    let t = Instant::now();
    let r = env.run(&["load", "-i", s(file)]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 1, "stdout {} stderr {}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    assert!(r.stderr.contains(want), "wanted {want:?} in {}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(env.store_state(), before, "the store changed");
    let tmp = env.store().join(".decant/tmp");
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "temp files left in {}",
        tmp.display()
    );
}

#[test]
fn hostile_archives_fail_on_one_line_and_change_nothing() {
    let src = env_with_example();
    let docker = src.path().join("d.tar");
    let oci = src.path().join("o.tar");
    src.run(&["save", "ex", "-o", s(&docker)]).ok();
    src.run(&["save", "--format", "oci-archive", "ex", "-o", s(&oci)])
        .ok();
    // The target store already holds an image, so "unchanged" means something.
    let env = env_with_example();
    env.run(&["tag", "ex", "keep:1"]).ok();
    env.run(&["rmi", "ex"]).ok();
    let dir = env.path();
    let case = |name: &str| -> PathBuf { dir.join(format!("{name}.tar")) };

    // Cut in the middle of the layer.
    let bytes = std::fs::read(&docker).unwrap();
    std::fs::write(case("truncated"), &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&env, &case("truncated"), "ends at offset");

    // A member path with `..`.
    let mut m = members_of(&docker);
    m.push(Member {
        name: b"../evil".to_vec(),
        data: b"x".to_vec(),
        claimed: None,
    });
    write_tar(&case("dotdot"), &m, true);
    assert_refused(&env, &case("dotdot"), "'..'");

    // manifest.json names a layer the archive lacks.
    let mut m = members_of(&docker);
    let mj = find(&mut m, "manifest.json");
    let text = String::from_utf8(mj.data.clone()).unwrap();
    let layer = text
        .split("\"Layers\":[\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    mj.data = text.replace(layer, "0000/layer.tar").into_bytes();
    write_tar(&case("missing"), &m, true);
    assert_refused(&env, &case("missing"), "0000/layer.tar");

    // A layer whose content is not what the config's diff_id says.
    let mut m = members_of(&docker);
    let l = find(&mut m, "layer.tar");
    let mut other = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    other.append_data(&mut h, "etc/x", &b"abc"[..]).unwrap();
    l.data = other.into_inner().unwrap();
    write_tar(&case("diffid"), &m, true);
    assert_refused(&env, &case("diffid"), "uncompressed digest is");

    // A header claiming a terabyte.
    let mut m = members_of(&docker);
    find(&mut m, "manifest.json").claimed = Some(1 << 40);
    write_tar(&case("huge"), &m, true);
    assert_refused(&env, &case("huge"), "manifest.json");

    // JSON over its cap (4 MiB for manifest.json), though valid.
    let mut m = members_of(&docker);
    let mj = find(&mut m, "manifest.json");
    mj.data.resize(5 << 20, b' ');
    write_tar(&case("bigjson"), &m, true);
    assert_refused(&env, &case("bigjson"), "over the 4194304-byte cap");

    // An oci-archive blob whose bytes do not match its name.
    let mut m = members_of(&oci);
    let big = m
        .iter_mut()
        .filter(|m| m.name.starts_with(b"blobs/sha256/"))
        .max_by_key(|m| m.data.len())
        .unwrap();
    let mid = big.data.len() / 2;
    big.data[mid] ^= 0xff;
    write_tar(&case("digest"), &m, true);
    assert_refused(&env, &case("digest"), "content digest is");

    // Neither format.
    write_tar(
        &case("neither"),
        &[Member {
            name: b"hello".to_vec(),
            data: b"hi".to_vec(),
            claimed: None,
        }],
        true,
    );
    assert_refused(&env, &case("neither"), "neither manifest.json");

    // Not a tar at all.
    std::fs::write(case("garbage"), vec![0x42u8; 4096]).unwrap();
    assert_refused(&env, &case("garbage"), "checksum");

    // Unknown image, bad format: exit 1 and no file left behind.
    let out = env.path().join("none.tar");
    let r = env.run(&["save", "nope", "-o", s(&out)]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("No such image: nope"), "{}", r.stderr);
    assert!(!out.exists());
    let r = env.run(&["save", "--format", "zip", "keep:1", "-o", s(&out)]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("unknown archive format"), "{}", r.stderr);
    let leftovers: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("decant-save"))
        .collect();
    assert!(leftovers.is_empty());
}

//! What the strip tests share: a command's JSON report, the final layer of a strip report
//! (listed or unpacked), and a copy of the example's busybox tree to build fixtures on.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{example, tool, Env};

/// Runs decant with `args` (which must succeed) and parses its standard output as JSON.
pub fn json(env: &Env, args: &[&str]) -> Value {
    let r = env.run(args).ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// The blob of the final layer of a strip report.
pub fn layer_blob(env: &Env, report: &Value) -> PathBuf {
    let digest = report["layer_digest"].as_str().expect("layer_digest");
    env.store()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Unpacks the final layer of a report into `dir` (as root: owners and modes as in the image).
pub fn unpack_layer(env: &Env, report: &Value, dir: &Path) {
    let blob = layer_blob(env, report);
    std::fs::create_dir_all(dir).expect("mkdir");
    tool(
        "tar",
        &[
            "-xzf",
            blob.to_str().expect("utf8"),
            "-C",
            dir.to_str().expect("utf8"),
        ],
    );
}

/// A copy of the example's busybox tree at `<env>/rootfs`, for a test to add to.
pub fn example_rootfs(env: &Env) -> PathBuf {
    let root = env.path().join("rootfs");
    tool(
        "cp",
        &[
            "-a",
            example().join("rootfs").to_str().expect("utf8"),
            root.to_str().expect("utf8"),
        ],
    );
    root
}

/// Writes `text` at `path` under `root`, making the parent directories.
pub fn write(root: &Path, path: &str, text: &str) {
    let f = root.join(path);
    std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    std::fs::write(f, text).expect("write");
}

//! End to end: `decant kube generate` for an image and for a container, each manifest checked
//! by `kubernetes-validate --strict` (the PyPI package CI installs) and read back with a real
//! YAML parser (PyYAML, which kubernetes-validate depends on) to check the fields.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{example, Env};
use serde_json::{json, Value};

/// kubernetes-validate, at /opt/decant-kv/bin or on PATH; the test fails without it.
fn validator() -> PathBuf {
    let opt = PathBuf::from("/opt/decant-kv/bin/kubernetes-validate");
    if opt.exists() {
        return opt;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.exists())
        .expect("kubernetes-validate is missing: .ci/run installs it (/opt/decant-kv, from PyPI)")
}

/// Validates `yaml` strictly and returns it parsed (by the validator's own Python and PyYAML).
#[track_caller]
fn validate(dir: &Path, name: &str, yaml: &str) -> Value {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    let v = validator();
    let o = Command::new(&v)
        .arg("--strict")
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        o.status.success(),
        "kubernetes-validate refused {name}:\n{}{}\n{yaml}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let script = std::fs::read_to_string(&v).unwrap();
    let python = script
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .expect("kubernetes-validate is a Python script")
        .trim()
        .to_string();
    let o = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&file)
        .output()
        .expect("run the validator's python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn image_manifests_validate() {
    let env = Env::new();
    let root = example().join("root.ext4");
    env.run(&[
        "import",
        "-t",
        "my_app",
        "-c",
        "EXPOSE 80 53/udp",
        "-c",
        "VOLUME /data",
        root.to_str().unwrap(),
    ])
    .ok();
    let pod = validate(
        env.path(),
        "pod.yaml",
        &env.run(&["kube", "generate", "my_app"]).ok().stdout,
    );
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "my-app");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "my_app:latest");
    // The image's own entrypoint, command and environment apply.
    assert!(c.get("command").is_none() && c.get("env").is_none(), "{c}");
    let mut ports = c["ports"].as_array().unwrap().clone();
    ports.sort_by_key(|p| p["containerPort"].as_u64());
    assert_eq!(
        ports,
        [
            json!({"containerPort": 53, "protocol": "UDP"}),
            json!({"containerPort": 80, "protocol": "TCP"})
        ]
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(pod["spec"]["volumes"][0]["emptyDir"], json!({}));

    let dep = validate(
        env.path(),
        "dep.yaml",
        &env.run(&["kube", "generate", "--deployment", "my_app:latest"])
            .ok()
            .stdout,
    );
    assert_eq!(dep["kind"], "Deployment");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["selector"]["matchLabels"]["app"], "my-app");
    assert_eq!(
        dep["spec"]["template"]["metadata"]["labels"]["app"],
        "my-app"
    );

    let r = env.run(&["kube", "generate", "nothing-here"]);
    assert_eq!(r.status, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("nothing-here"), "{}", r.stderr);
}

#[test]
fn container_manifests_validate() {
    let Some(env) = common::container_env(&[]) else {
        return;
    };
    let host = env.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    let id = env
        .run(&[
            "create",
            "--name",
            "Web.1",
            "-e",
            "GREETING=hello: world",
            "-e",
            "N=yes",
            "-p",
            "8080:80",
            "-p",
            "5353:53/udp",
            "-v",
            &format!("{}:/data:ro", host.display()),
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "ex",
            "sh",
            "-c",
            "echo \"$GREETING\"",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let yaml = env.run(&["kube", "generate", "Web.1"]).ok().stdout;
    let pod = validate(env.path(), "pod.yaml", &yaml);
    assert_eq!(pod["metadata"]["name"], "web-1");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "ex");
    assert_eq!(c["command"], json!(["sh", "-c", "echo \"$GREETING\""]));
    let env_list = c["env"].as_array().unwrap();
    assert!(env_list.contains(&json!({"name": "GREETING", "value": "hello: world"})));
    assert!(env_list.contains(&json!({"name": "N", "value": "yes"})));
    assert_eq!(
        c["ports"],
        json!([
            {"containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}
        ])
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "67108864"})
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"mountPath": "/data", "name": "vol-data", "readOnly": true}])
    );
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "vol-data", "hostPath": {"path": host.to_str().unwrap()}}])
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");

    let dep = validate(
        env.path(),
        "dep.yaml",
        &env.run(&["kube", "generate", "--deployment", &id])
            .ok()
            .stdout,
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["command"],
        c["command"]
    );
    assert_eq!(dep["spec"]["template"]["spec"]["restartPolicy"], "Always");

    // Made from an image id: the manifest names the image by a name a cluster can pull.
    let image_id = env
        .run(&["images", "-q", "ex"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let by_id = env
        .run(&["create", &image_id, "true"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let pod = validate(
        env.path(),
        "byid.yaml",
        &env.run(&["kube", "generate", &by_id]).ok().stdout,
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "ex:latest");

    env.run(&["rm", "Web.1", &by_id]).ok();
    common::assert_containers_clean(&env, &[id, by_id]);
}

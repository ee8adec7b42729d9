//! `kube generate`: a Kubernetes Pod (or Deployment) manifest that runs an image the way decant
//! runs it: command and args, environment, ports, volumes (emptyDir or hostPath), memory and
//! CPU limits, and decant-init as the entrypoint of host-like containers.
//!
//! Pure: it takes a neutral [`PodSpec`] (the binary fills it from a container record or an
//! image config) and returns text, so every mapping is unit-tested here. The YAML is written by
//! our own small emitter over `serde_json::Value` instead of a YAML crate: the documents are
//! plain maps, lists and scalars, and every string is written double-quoted with JSON escapes
//! (JSON strings are valid YAML double-quoted scalars), so no value (`yes`, `1e3`, `: x`,
//! newlines) can change type or structure.

use serde_json::{json, Map, Value};

/// Where decant-init lives inside an image that carries it (what `import --init` writes), used
/// as the Pod's entrypoint for containers decant runs with `--init`.
pub use crate::init_layer::INIT_IN_IMAGE;

/// Pod or Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeKind {
    Pod,
    Deployment,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePort {
    pub container_port: u16,
    /// `tcp` or `udp` (any case).
    pub protocol: String,
    /// The node port to bind (`hostPort`), when the user asked for a fixed one.
    pub host_port: Option<u16>,
}

/// Where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// Scratch space that lives as long as the Pod (docker's anonymous volumes); `memory`
    /// for a tmpfs.
    EmptyDir { memory: bool },
    /// A directory of the node (docker's bind mounts).
    HostPath(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVolume {
    pub mount_path: String,
    pub source: VolumeSource,
    pub read_only: bool,
}

/// What Kubernetes restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeRestart {
    Always,
    OnFailure,
    Never,
}

/// Everything the manifest says, neutral of where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    /// Any text; made DNS-1123 valid for metadata and container names.
    pub name: String,
    /// The image reference the cluster pulls.
    pub image: String,
    /// Replaces the image's ENTRYPOINT when set (Kubernetes `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's CMD when set (Kubernetes `args`).
    pub args: Option<Vec<String>>,
    /// `NAME=value` or `NAME` entries, in order; later entries win.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub ports: Vec<KubePort>,
    pub volumes: Vec<KubeVolume>,
    /// Bytes.
    pub memory_limit: Option<i64>,
    /// CPUs (1.5 = 1500m).
    pub cpu_limit: Option<f64>,
    /// Run decant-init (at [`INIT_IN_IMAGE`]) as PID 1 in front of the command, as `--init`.
    pub init: bool,
    /// With `init`: host-like, the services mode (`--init=host`, `--with-services`).
    pub init_services: bool,
    pub privileged: bool,
    pub read_only_root: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Numeric `uid[:gid]` only; names cannot be resolved outside the image.
    pub user: Option<String>,
    pub host_network: bool,
    pub restart: KubeRestart,
}

impl PodSpec {
    /// A spec that runs `image` with its own defaults.
    pub fn new(name: &str, image: &str) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            image: image.to_string(),
            command: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            ports: Vec::new(),
            volumes: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            init: false,
            init_services: false,
            privileged: false,
            read_only_root: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            user: None,
            host_network: false,
            restart: KubeRestart::Always,
        }
    }
}

/// Why a spec cannot become a manifest.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kube generate: {0}")]
    Invalid(String),
}

/// Turns any text into a DNS-1123 label (what Kubernetes wants for names): lower-case
/// letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters;
/// `decant` when nothing is left.
pub fn dns1123_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(63));
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 63 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "decant".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The manifest as YAML.
pub fn generate(spec: &PodSpec, kind: KubeKind) -> Result<String, KubeError> {
    Ok(to_yaml(&manifest(spec, kind)?))
}

/// The manifest as a JSON value (the same document [`generate`] writes as YAML).
pub fn manifest(spec: &PodSpec, kind: KubeKind) -> Result<Value, KubeError> {
    if spec.image.is_empty() {
        return Err(KubeError::Invalid("no image to run".into()));
    }
    let name = dns1123_label(&spec.name);
    let labels = json!({ "app": name });
    let pod_spec = pod_spec(spec, &name, kind)?;
    Ok(match kind {
        KubeKind::Pod => json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "labels": labels },
            "spec": pod_spec,
        }),
        KubeKind::Deployment => json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name, "labels": labels },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": pod_spec,
                },
            },
        }),
    })
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn pod_spec(spec: &PodSpec, name: &str, kind: KubeKind) -> Result<Value, KubeError> {
    let mut c = Map::new();
    c.insert("name".into(), name.into());
    c.insert("image".into(), spec.image.clone().into());
    let (command, args) = command_and_args(spec);
    if let Some(v) = command {
        c.insert("command".into(), strings(&v));
    }
    if let Some(v) = args {
        c.insert("args".into(), strings(&v));
    }
    if let Some(w) = spec.working_dir.as_ref().filter(|w| !w.is_empty()) {
        c.insert("workingDir".into(), w.clone().into());
    }
    let env = env_list(&spec.env)?;
    if !env.is_empty() {
        c.insert("env".into(), Value::Array(env));
    }
    if !spec.ports.is_empty() {
        let mut ports = Vec::new();
        for p in &spec.ports {
            let proto = p.protocol.to_ascii_uppercase();
            if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") || p.container_port == 0 {
                return Err(KubeError::Invalid(format!(
                    "port {}/{} cannot be published",
                    p.container_port, p.protocol
                )));
            }
            let mut o = Map::new();
            o.insert("containerPort".into(), p.container_port.into());
            o.insert("protocol".into(), proto.into());
            if let Some(h) = p.host_port.filter(|&h| h != 0) {
                o.insert("hostPort".into(), h.into());
            }
            ports.push(Value::Object(o));
        }
        c.insert("ports".into(), Value::Array(ports));
    }
    let mut limits = Map::new();
    if let Some(m) = spec.memory_limit.filter(|&m| m > 0) {
        limits.insert("memory".into(), m.to_string().into());
    }
    if let Some(cpu) = spec.cpu_limit.filter(|c| c.is_finite() && *c > 0.0) {
        let milli = (cpu * 1000.0).round().max(1.0);
        limits.insert("cpu".into(), format!("{milli}m").into());
    }
    if !limits.is_empty() {
        c.insert("resources".into(), json!({ "limits": limits }));
    }
    if let Some(sc) = security_context(spec)? {
        c.insert("securityContext".into(), sc);
    }
    let (mounts, volumes) = volumes(&spec.volumes)?;
    if !mounts.is_empty() {
        c.insert("volumeMounts".into(), Value::Array(mounts));
    }

    let mut p = Map::new();
    p.insert("containers".into(), json!([Value::Object(c)]));
    if !volumes.is_empty() {
        p.insert("volumes".into(), Value::Array(volumes));
    }
    if spec.host_network {
        p.insert("hostNetwork".into(), true.into());
    }
    // A Deployment's pods must restart always; a Pod says what decant's policy said.
    let restart = match (kind, spec.restart) {
        (KubeKind::Deployment, _) | (_, KubeRestart::Always) => "Always",
        (_, KubeRestart::OnFailure) => "OnFailure",
        (_, KubeRestart::Never) => "Never",
    };
    p.insert("restartPolicy".into(), restart.into());
    Ok(Value::Object(p))
}

/// Kubernetes `command` / `args`. With `init`, decant-init runs the whole command line after
/// `--`, unless the command already starts with it (a host-like image's own entrypoint).
fn command_and_args(spec: &PodSpec) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let is_init = |v: &Option<Vec<String>>| {
        v.as_ref()
            .and_then(|v| v.first())
            .is_some_and(|a| a.rsplit('/').next() == Some("decant-init"))
    };
    if !spec.init || is_init(&spec.command) {
        return (spec.command.clone(), spec.args.clone());
    }
    let mut command = vec![INIT_IN_IMAGE.to_string()];
    if spec.init_services {
        command.push("--with-services".to_string());
    }
    command.push("--".to_string());
    command.extend(spec.command.iter().flatten().cloned());
    command.extend(spec.args.iter().flatten().cloned());
    (Some(command), None)
}

fn env_list(env: &[String]) -> Result<Vec<Value>, KubeError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        if k.is_empty() || k.contains(['\0', '=']) {
            return Err(KubeError::Invalid(format!(
                "environment entry {e:?} has no name"
            )));
        }
        out.retain(|(n, _)| n != k);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect())
}

fn security_context(spec: &PodSpec) -> Result<Option<Value>, KubeError> {
    let mut sc = Map::new();
    if spec.privileged {
        sc.insert("privileged".into(), true.into());
    }
    if spec.read_only_root {
        sc.insert("readOnlyRootFilesystem".into(), true.into());
    }
    let caps = |v: &[String]| -> Vec<Value> {
        v.iter()
            .map(|c| {
                let c = c.to_ascii_uppercase();
                Value::String(c.strip_prefix("CAP_").unwrap_or(&c).to_string())
            })
            .collect()
    };
    let mut cm = Map::new();
    if !spec.cap_add.is_empty() {
        cm.insert("add".into(), Value::Array(caps(&spec.cap_add)));
    }
    if !spec.cap_drop.is_empty() {
        cm.insert("drop".into(), Value::Array(caps(&spec.cap_drop)));
    }
    if !cm.is_empty() {
        sc.insert("capabilities".into(), Value::Object(cm));
    }
    if let Some(u) = spec.user.as_ref().filter(|u| !u.is_empty()) {
        let (uid, gid) = u
            .split_once(':')
            .map_or((u.as_str(), None), |(a, b)| (a, Some(b)));
        let num = |s: &str| s.parse::<u32>().ok();
        match (num(uid), gid.map(num)) {
            (Some(uid), None) => {
                sc.insert("runAsUser".into(), uid.into());
            }
            (Some(uid), Some(Some(gid))) => {
                sc.insert("runAsUser".into(), uid.into());
                sc.insert("runAsGroup".into(), gid.into());
            }
            _ => {
                return Err(KubeError::Invalid(format!(
                    "user {u:?} is a name; Kubernetes needs a numeric uid[:gid]"
                )))
            }
        }
    }
    Ok((!sc.is_empty()).then_some(Value::Object(sc)))
}

/// volumeMounts of the container and volumes of the Pod, names unique and DNS-1123.
fn volumes(vols: &[KubeVolume]) -> Result<(Vec<Value>, Vec<Value>), KubeError> {
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let mut used: Vec<String> = Vec::new();
    for v in vols {
        if !v.mount_path.starts_with('/') {
            return Err(KubeError::Invalid(format!(
                "volume mount path {:?} is not absolute",
                v.mount_path
            )));
        }
        let base = dns1123_label(&format!("vol-{}", v.mount_path));
        let mut name = base.clone();
        let mut n = 1;
        while used.contains(&name) {
            n += 1;
            let suffix = format!("-{n}");
            let keep = base.len().min(63 - suffix.len());
            name = format!(
                "{}{suffix}",
                base.get(..keep).unwrap_or(&base).trim_end_matches('-')
            );
        }
        used.push(name.clone());
        let mut m = Map::new();
        m.insert("name".into(), name.clone().into());
        m.insert("mountPath".into(), v.mount_path.clone().into());
        if v.read_only {
            m.insert("readOnly".into(), true.into());
        }
        mounts.push(Value::Object(m));
        let source = match &v.source {
            VolumeSource::EmptyDir { memory: false } => json!({ "emptyDir": {} }),
            VolumeSource::EmptyDir { memory: true } => {
                json!({ "emptyDir": { "medium": "Memory" } })
            }
            VolumeSource::HostPath(p) => {
                if !p.starts_with('/') {
                    return Err(KubeError::Invalid(format!(
                        "host path {p:?} is not absolute"
                    )));
                }
                json!({ "hostPath": { "path": p } })
            }
        };
        let mut vol = Map::new();
        vol.insert("name".into(), name.into());
        if let Value::Object(s) = source {
            vol.extend(s);
        }
        volumes.push(Value::Object(vol));
    }
    Ok((mounts, volumes))
}

/// Block-style YAML of a JSON value: maps and lists on their own lines, strings
/// double-quoted with JSON escapes, keys quoted unless plain letters, digits and `._/-`.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_list(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // serde_json's string form is valid YAML double-quoted text.
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && k.as_bytes().first().is_some_and(u8::is_ascii_alphabetic);
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        emit_entry(k, v, indent, out);
    }
}

/// `key: value` at the current position (the indentation is already written).
fn emit_entry(k: &str, v: &Value, indent: usize, out: &mut String) {
    out.push_str(&key(k));
    out.push(':');
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_list(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn emit_list(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => {
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    emit_entry(k, v, indent + 2, out);
                }
            }
            Value::Array(inner) if is_block(item) => {
                out.push('\n');
                emit_list(inner, indent + 2, out);
            }
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> PodSpec {
        let mut s = PodSpec::new("My_Web.App", "localhost:5000/web:1");
        s.command = Some(vec!["/bin/sh".into(), "-c".into()]);
        s.args = Some(vec!["echo \"hi\": yes\n# not a comment".into()]);
        s.env = vec!["A=1".into(), "B=yes".into(), "A=2".into(), "EMPTY".into()];
        s.ports = vec![
            KubePort {
                container_port: 80,
                protocol: "tcp".into(),
                host_port: Some(8080),
            },
            KubePort {
                container_port: 53,
                protocol: "udp".into(),
                host_port: None,
            },
        ];
        s.volumes = vec![
            KubeVolume {
                mount_path: "/data".into(),
                source: VolumeSource::EmptyDir { memory: false },
                read_only: false,
            },
            KubeVolume {
                mount_path: "/data".into(),
                source: VolumeSource::HostPath("/srv/x".into()),
                read_only: true,
            },
            KubeVolume {
                mount_path: "/run".into(),
                source: VolumeSource::EmptyDir { memory: true },
                read_only: false,
            },
        ];
        s.memory_limit = Some(64 << 20);
        s.cpu_limit = Some(1.5);
        s
    }

    #[test]
    fn names_become_dns1123_labels() {
        assert_eq!(dns1123_label("My_Web.App"), "my-web-app");
        assert_eq!(dns1123_label("--x--"), "x");
        assert_eq!(dns1123_label("_"), "decant");
        assert_eq!(dns1123_label("ünï"), "n");
        let long = dns1123_label(&"a-".repeat(100));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn pod_carries_everything() {
        let v = manifest(&full_spec(), KubeKind::Pod).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["name"], "my-web-app");
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["name"], "my-web-app");
        assert_eq!(c["command"][0], "/bin/sh");
        assert_eq!(c["env"][0], json!({"name": "B", "value": "yes"}));
        assert_eq!(c["env"][1], json!({"name": "A", "value": "2"}));
        assert_eq!(c["env"][2], json!({"name": "EMPTY", "value": ""}));
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "protocol": "TCP", "hostPort": 8080})
        );
        assert_eq!(c["ports"][1]["protocol"], "UDP");
        assert_eq!(c["resources"]["limits"]["memory"], "67108864");
        assert_eq!(c["resources"]["limits"]["cpu"], "1500m");
        assert_eq!(c["volumeMounts"][0]["name"], "vol-data");
        assert_eq!(c["volumeMounts"][1]["name"], "vol-data-2");
        assert_eq!(c["volumeMounts"][1]["readOnly"], true);
        let vols = &v["spec"]["volumes"];
        assert_eq!(vols[1]["hostPath"]["path"], "/srv/x");
        assert_eq!(vols[2]["emptyDir"]["medium"], "Memory");
        assert_eq!(v["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn deployment_wraps_the_pod() {
        let mut s = full_spec();
        s.restart = KubeRestart::Never;
        let v = manifest(&s, KubeKind::Deployment).unwrap();
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "my-web-app");
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"]["app"],
            "my-web-app"
        );
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let pod = manifest(&s, KubeKind::Pod).unwrap();
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn init_goes_in_front_once() {
        let mut s = PodSpec::new("x", "x");
        s.init = true;
        s.command = Some(vec!["/bin/sh".into()]);
        s.args = Some(vec!["-c".into(), "true".into()]);
        let v = manifest(&s, KubeKind::Pod).unwrap();
        let c = &v["spec"]["containers"][0];
        assert_eq!(
            c["command"],
            json!([INIT_IN_IMAGE, "--", "/bin/sh", "-c", "true"])
        );
        let mut h = s.clone();
        h.init_services = true;
        assert_eq!(
            manifest(&h, KubeKind::Pod).unwrap()["spec"]["containers"][0]["command"],
            json!([
                INIT_IN_IMAGE,
                "--with-services",
                "--",
                "/bin/sh",
                "-c",
                "true"
            ])
        );
        assert!(c.get("args").is_none());
        s.command = Some(vec![INIT_IN_IMAGE.into()]);
        s.args = None;
        let v = manifest(&s, KubeKind::Pod).unwrap();
        assert_eq!(
            v["spec"]["containers"][0]["command"],
            json!([INIT_IN_IMAGE])
        );
    }

    #[test]
    fn bad_specs_are_errors() {
        let mut s = PodSpec::new("x", "x");
        s.user = Some("www-data".into());
        assert!(generate(&s, KubeKind::Pod).is_err());
        let mut s = PodSpec::new("x", "");
        assert!(generate(&s, KubeKind::Pod).is_err());
        s.image = "x".into();
        s.volumes.push(KubeVolume {
            mount_path: "rel".into(),
            source: VolumeSource::EmptyDir { memory: false },
            read_only: false,
        });
        assert!(generate(&s, KubeKind::Pod).is_err());
        let mut s = PodSpec::new("x", "x");
        s.env = vec!["=v".into()];
        assert!(generate(&s, KubeKind::Pod).is_err());
    }

    #[test]
    fn yaml_quotes_every_string() {
        let v = json!({
            "a": "yes",
            "b": ["1e3", {"k": "line\nnext", "n": 5}, []],
            "weird key": {},
            "t": true,
        });
        let y = to_yaml(&v);
        assert!(y.contains("a: \"yes\"\n"), "{y}");
        assert!(y.contains("- \"1e3\"\n"), "{y}");
        assert!(y.contains("- k: \"line\\nnext\"\n  n: 5\n"), "{y}");
        assert!(y.contains("\"weird key\": {}\n"), "{y}");
        assert!(y.contains("t: true\n"), "{y}");
        assert!(y.contains("\n- []\n"), "{y}");
    }
}

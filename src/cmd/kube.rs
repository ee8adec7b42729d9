//! `decant kube generate [--deployment] CONTAINER|IMAGE`: maps a container's record (or an
//! image's config) onto `snapshot::kube::PodSpec` and prints the manifest. The mapping lives
//! here because it reads runtime and store types; the manifest logic is in `snapshot::kube`.

use anyhow::{Context as _, Result};
use clap::{Args as ClapArgs, Subcommand};
use runtime::engine::{Container, Engine, EngineError, NetworkMode, RestartPolicy};
use serde_json::Value;
use snapshot::kube::{self, KubeKind, KubePort, KubeRestart, KubeVolume, PodSpec, VolumeSource};
use snapshot::store::Reference;

use super::Context;

#[derive(Subcommand)]
pub enum Command {
    /// Print a Kubernetes Pod (or Deployment) manifest that runs a container or an image.
    Generate(GenerateArgs),
}

#[derive(ClapArgs)]
pub struct GenerateArgs {
    /// A Deployment (1 replica) instead of a Pod.
    #[arg(long)]
    pub deployment: bool,
    /// A container (name or id), else an image.
    pub target: String,
}

pub fn run(ctx: &Context, c: Command) -> Result<()> {
    let Command::Generate(a) = c;
    let kind = if a.deployment {
        KubeKind::Deployment
    } else {
        KubeKind::Pod
    };
    let spec = match Engine::new(&ctx.store_root()).find(&a.target) {
        Ok(c) => {
            let mut spec = from_container(&c);
            // Run by id: the cluster needs a name it can pull.
            let store = ctx.open_store()?;
            let image = &c.config.image;
            let is_name = Reference::parse(image).is_ok_and(|r| {
                store
                    .resolve(image)
                    .is_ok_and(|rec| rec.refs.contains(&r.full()))
            });
            if !is_name {
                let named = store
                    .resolve(&c.config.image_id)
                    .ok()
                    .and_then(|r| r.familiar_refs().into_iter().next());
                if let Some(n) = named {
                    spec.image = n;
                }
            }
            spec
        }
        Err(EngineError::NotFound(_)) => from_image(ctx, &a.target)?,
        Err(e) => return Err(e.into()),
    };
    print!("{}", kube::generate(&spec, kind)?);
    Ok(())
}

fn from_container(c: &Container) -> PodSpec {
    let cfg = &c.config;
    let mut s = PodSpec::new(&c.name, &cfg.image);
    if cfg.entrypoint.is_empty() {
        s.command = Some(cfg.cmd.clone()).filter(|v| !v.is_empty());
    } else {
        s.command = Some(cfg.entrypoint.clone());
        s.args = Some(cfg.cmd.clone()).filter(|v| !v.is_empty());
    }
    s.env = cfg.env.clone();
    s.working_dir = cfg.workdir.clone();
    s.ports = cfg
        .ports
        .iter()
        .map(|p| KubePort {
            container_port: p.container_port,
            protocol: p.proto.to_string(),
            host_port: Some(p.host_port).filter(|&h| h != 0),
        })
        .collect();
    s.volumes = cfg
        .binds
        .iter()
        .map(|b| KubeVolume {
            mount_path: b.container.clone(),
            source: VolumeSource::HostPath(b.host.display().to_string()),
            read_only: b.read_only,
        })
        .chain(cfg.tmpfs.iter().map(|t| KubeVolume {
            mount_path: t.clone(),
            source: VolumeSource::EmptyDir { memory: true },
            read_only: false,
        }))
        .collect();
    s.memory_limit = cfg.memory;
    s.cpu_limit = cfg.cpus;
    s.init = cfg.init.is_some();
    s.init_services = cfg.init_host;
    s.privileged = cfg.privileged;
    s.read_only_root = cfg.read_only;
    s.cap_add = cfg.cap_add.clone();
    s.cap_drop = cfg.cap_drop.clone();
    match cfg.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) if u.split(':').all(|p| p.parse::<u32>().is_ok()) => s.user = Some(u.into()),
        Some(u) => {
            eprintln!("decant: user {u:?} left out: Kubernetes needs a numeric uid (runAsUser)")
        }
        None => {}
    }
    s.host_network = cfg.network == NetworkMode::Host;
    s.restart = match cfg.restart {
        RestartPolicy::No => KubeRestart::Never,
        RestartPolicy::OnFailure { .. } => KubeRestart::OnFailure,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => KubeRestart::Always,
    };
    s
}

/// An image runs with its own entrypoint, command, environment and user; the manifest adds
/// its exposed ports and its volumes (as emptyDir, docker's anonymous volumes).
fn from_image(ctx: &Context, name: &str) -> Result<PodSpec> {
    let store = ctx.open_store()?;
    let rec = store
        .resolve(name)
        .with_context(|| format!("no container or image named {name}"))?;
    let (_, bytes) = store.config(&rec)?;
    let config: Value = serde_json::from_slice(&bytes).context("image config is not JSON")?;
    // The name the cluster pulls: what the user typed if it names the image, else its first name.
    let reference = Reference::parse(name)
        .ok()
        .filter(|r| rec.refs.contains(&r.full()))
        .or_else(|| rec.references().into_iter().next());
    let image = reference
        .as_ref()
        .map(Reference::familiar)
        .unwrap_or_else(|| name.to_string());
    let pod_name = reference
        .as_ref()
        .map(|r| r.path().rsplit('/').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("image-{}", rec.id.short()));
    let mut s = PodSpec::new(&pod_name, &image);
    let keys = |field: &str| -> Vec<String> {
        config
            .pointer(&format!("/config/{field}"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for p in keys("ExposedPorts") {
        let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
        let port: u16 = port
            .parse()
            .with_context(|| format!("image exposes {p:?}, not a port"))?;
        s.ports.push(KubePort {
            container_port: port,
            protocol: proto.to_string(),
            host_port: None,
        });
    }
    for v in keys("Volumes") {
        s.volumes.push(KubeVolume {
            mount_path: v,
            source: VolumeSource::EmptyDir { memory: false },
            read_only: false,
        });
    }
    Ok(s)
}

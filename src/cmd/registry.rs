//! `decant login`, `logout`, `push`, `pull`: flags and docker's progress lines around
//! `snapshot::registry`.

use std::io::{BufRead, Read, Write};

use anyhow::{bail, Context as _, Result};
use clap::Args as ClapArgs;
use snapshot::registry::credentials::{AuthFiles, Saved};
use snapshot::registry::{self, short, ClientOptions, Credentials, PullEvent, PushEvent};
use snapshot::store::Reference;

use super::Context;

/// `--tls-verify[=true|false]`, as podman and skopeo spell it.
#[derive(ClapArgs, Clone, Copy)]
pub struct Tls {
    /// Require HTTPS with a verified certificate; `--tls-verify=false` talks plain HTTP (a
    /// local registry).
    #[arg(
        long = "tls-verify",
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
}

#[derive(ClapArgs)]
pub struct LoginArgs {
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (insecure: it shows in the process list; prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: Tls,
    /// The registry: host[:port].
    pub registry: String,
}

#[derive(ClapArgs)]
pub struct LogoutArgs {
    /// The registry: host[:port].
    pub registry: String,
}

#[derive(ClapArgs)]
pub struct PushArgs {
    #[command(flatten)]
    pub tls: Tls,
    /// Upload blobs larger than this many bytes in PATCH chunks of this size (default: one
    /// streamed PUT, 128 MiB chunks above 1 GiB).
    #[arg(long, hide = true, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// The image: name[:tag], ID or name@digest.
    pub image: String,
    /// Where to push it: registry/repository[:tag]. Default: the image's own name.
    pub dest: Option<String>,
}

#[derive(ClapArgs)]
pub struct PullArgs {
    #[command(flatten)]
    pub tls: Tls,
    /// Pull every tag of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// registry/repository[:tag|@digest].
    pub reference: String,
}

/// `host[:port]` from what users type (`https://host:5000/v2/` too), checked by the reference
/// grammar.
fn registry_host(s: &str) -> Result<String> {
    let t = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = t.split('/').next().unwrap_or(t);
    let r = Reference::parse(&format!("{host}/x")).with_context(|| format!("registry {s:?}"))?;
    if r.domain() != host && !(host == "index.docker.io" && r.domain() == "docker.io") {
        bail!("invalid registry {s:?}: expected host[:port]");
    }
    Ok(r.domain().to_string())
}

fn client_options(tls: Tls, registry: &str) -> Result<ClientOptions> {
    Ok(ClientOptions {
        tls_verify: tls.tls_verify,
        credentials: AuthFiles::from_env().get(registry)?,
    })
}

pub fn login(_ctx: &Context, a: LoginArgs) -> Result<()> {
    let registry = registry_host(&a.registry)?;
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(64 << 10)
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            bail!("login needs -p PASSWORD or --password-stdin (no interactive prompt)")
        }
    };
    let Some(username) = a.username.filter(|u| !u.is_empty()) else {
        bail!("login needs -u USERNAME");
    };
    if password.is_empty() {
        bail!("login: the password is empty");
    }
    let creds = Credentials { username, password };
    let mut client = registry::Client::connect(
        &registry,
        &ClientOptions {
            tls_verify: a.tls.tls_verify,
            credentials: Some(creds.clone()),
        },
    )
    .with_context(|| format!("login to {registry}"))?;
    client
        .check_login()
        .with_context(|| format!("login to {registry}"))?;
    match AuthFiles::from_env().save(&registry, &creds)? {
        Saved::File(p) => eprintln!(
            "WARNING! Your password will be stored unencrypted in {} (mode 0600).",
            p.display()
        ),
        Saved::Helper(h) => eprintln!("Credentials stored with docker-credential-{h}."),
    }
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(_ctx: &Context, a: LogoutArgs) -> Result<()> {
    let registry = registry_host(&a.registry)?;
    if AuthFiles::from_env().erase(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

pub fn push(ctx: &Context, a: PushArgs) -> Result<()> {
    let dest_s = a.dest.as_deref().unwrap_or(&a.image);
    let dest = Reference::parse(dest_s).with_context(|| format!("push {dest_s}"))?;
    let store = ctx.open_store()?;
    let opts = registry::PushOptions {
        client: client_options(a.tls, dest.domain())?,
        chunk_size: a.chunk_size,
    };
    let mut out = std::io::stdout();
    let mut show = |e: PushEvent| {
        let line = match e {
            PushEvent::Start { repository } => {
                format!("The push refers to repository [{repository}]")
            }
            PushEvent::Pushed { digest } => format!("{}: Pushed", short(&digest)),
            PushEvent::Exists { digest } => format!("{}: Layer already exists", short(&digest)),
            PushEvent::Mounted { digest, from } => {
                format!("{}: Mounted from {from}", short(&digest))
            }
            PushEvent::Done { tag, digest, size } => {
                format!("{tag}: digest: {digest} size: {size}")
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    registry::push(&store, &a.image, &dest, &opts, &mut show)
        .with_context(|| format!("push {}", dest.familiar()))?;
    Ok(())
}

pub fn pull(ctx: &Context, a: PullArgs) -> Result<()> {
    let r = Reference::parse(&a.reference).with_context(|| format!("pull {}", a.reference))?;
    if a.all_tags
        && (r.digest().is_some()
            || a.reference
                .rsplit('/')
                .next()
                .is_some_and(|l| l.contains(':')))
    {
        bail!("pull {}: tag can't be used with --all-tags/-a", a.reference);
    }
    let store = ctx.open_store()?;
    let opts = client_options(a.tls, r.domain())?;
    let mut out = std::io::stdout();
    let mut show = |e: PullEvent| {
        let line = match e {
            PullEvent::Start { tag, repository } => format!("{tag}: Pulling from {repository}"),
            PullEvent::Exists { digest } => format!("{}: Already exists", short(&digest)),
            PullEvent::Complete { digest } => format!("{}: Pull complete", short(&digest)),
            PullEvent::Digest { digest } => format!("Digest: {digest}"),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let outcomes = if a.all_tags {
        registry::pull_all_tags(&store, &r, &opts, &mut show)
    } else {
        registry::pull(&store, &r, &opts, &mut show).map(|o| vec![o])
    }
    .with_context(|| format!("pull {}", r.familiar()))?;
    for o in &outcomes {
        let name = o.reference.familiar();
        if o.up_to_date {
            println!("Status: Image is up to date for {name}");
        } else {
            println!("Status: Downloaded newer image for {name}");
        }
    }
    if !a.all_tags {
        if let Some(o) = outcomes.first() {
            println!("{}", o.reference.familiar());
        }
    }
    Ok(())
}

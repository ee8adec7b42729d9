//! `--change` instructions (`docker import --change` / `docker commit --change` syntax) applied
//! to an [`ImageMeta`].
//!
//! Supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL,
//! HEALTHCHECK. HEALTHCHECK is stored as docker stores it, a `Healthcheck` object in the
//! config's `config` (`Test`, and `Interval`, `Timeout`, `StartPeriod`, `StartInterval` in
//! nanoseconds, `Retries`): the OCI image spec has no such field, but docker, podman and
//! buildah read this one, and so does decant's runtime (runtime::engine::health).
//! ONBUILD is refused: it only matters to a build, which decant does not do, so accepting it
//! would silently do nothing. Differences from docker, on purpose: no `$VAR` expansion, and
//! ENTRYPOINT does not clear a CMD that came before it (docker clears only a CMD inherited from
//! a base image, and an import has none).

use crate::image::ImageMeta;

/// Most ports one EXPOSE range may expand to; docker has no cap, but a typo like
/// `1-65535` would put 65,535 keys in the config.
const MAX_PORT_RANGE: u32 = 1024;

/// A `--change` instruction that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --change {instruction:?}: {why}")]
pub struct ChangeError {
    pub instruction: String,
    pub why: String,
}

/// Applies one instruction, e.g. `ENV A=1 B="two words"` or `CMD ["/sbin/init"]`.
pub fn apply_change(meta: &mut ImageMeta, instruction: &str) -> Result<(), ChangeError> {
    let err = |why: String| ChangeError {
        instruction: instruction.chars().take(200).collect(),
        why,
    };
    let trimmed = instruction.trim();
    let (keyword, args) = match trimmed.split_once(|c: char| c.is_whitespace()) {
        Some((k, a)) => (k, a.trim()),
        None => (trimmed, ""),
    };
    let keyword = keyword.to_ascii_uppercase();
    if keyword.is_empty() {
        return Err(err("empty instruction".into()));
    }
    let need_args = |what: &str| -> Result<(), ChangeError> {
        if args.is_empty() {
            Err(err(format!("{what} requires at least one argument")))
        } else {
            Ok(())
        }
    };
    match keyword.as_str() {
        "CMD" => {
            need_args("CMD")?;
            meta.cmd = Some(exec_or_shell(args));
        }
        "ENTRYPOINT" => {
            need_args("ENTRYPOINT")?;
            meta.entrypoint = Some(exec_or_shell(args));
        }
        "ENV" => {
            need_args("ENV")?;
            for (k, v) in pairs(args, "ENV").map_err(err)? {
                if k.is_empty() {
                    return Err(err("ENV names cannot be empty".into()));
                }
                let prefix = format!("{k}=");
                meta.env.retain(|e| !e.starts_with(&prefix) && e != &k);
                meta.env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            need_args("LABEL")?;
            for (k, v) in pairs(args, "LABEL").map_err(err)? {
                if k.is_empty() {
                    return Err(err("LABEL names cannot be empty".into()));
                }
                meta.labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            need_args("EXPOSE")?;
            for w in words(args).map_err(err)? {
                for p in ports(&w).map_err(err)? {
                    meta.exposed_ports.insert(p);
                }
            }
        }
        "USER" => {
            need_args("USER")?;
            let w = words(args).map_err(err)?;
            match w.as_slice() {
                [one] => meta.user = Some(one.clone()),
                _ => return Err(err("USER takes exactly one argument (user[:group])".into())),
            }
        }
        "WORKDIR" => {
            need_args("WORKDIR")?;
            let base = meta.working_dir.as_deref().unwrap_or("/");
            meta.working_dir = Some(join_clean(base, args));
        }
        "VOLUME" => {
            need_args("VOLUME")?;
            let list = match json_array(args) {
                Some(v) => v,
                None => words(args).map_err(err)?,
            };
            if list.iter().any(|v| v.trim().is_empty()) {
                return Err(err("VOLUME paths cannot be empty".into()));
            }
            meta.volumes.extend(list);
        }
        "STOPSIGNAL" => {
            need_args("STOPSIGNAL")?;
            if !valid_signal(args) {
                return Err(err(format!(
                    "{args:?} is not a signal (a number 1-64 or a name like SIGTERM)"
                )));
            }
            meta.stop_signal = Some(args.to_string());
        }
        "HEALTHCHECK" => {
            need_args("HEALTHCHECK")?;
            meta.healthcheck = Some(healthcheck(args).map_err(err)?);
        }
        "ONBUILD" => {
            return Err(err(format!(
                "{keyword} is not supported: OCI image configs have no such field, so it would be ignored"
            )))
        }
        other => {
            return Err(err(format!(
                "{other} is not a supported instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL, HEALTHCHECK)"
            )))
        }
    }
    Ok(())
}

/// A container health check, as docker's config `Healthcheck` object. Durations are
/// nanoseconds; `None` (or 0 in JSON) means the runtime's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", arg...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

impl Healthcheck {
    /// Docker's JSON form (keys `Test`, `Interval`, ...; unset fields left out).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("Test".into(), self.test.clone().into());
        for (k, v) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        if let Some(r) = self.retries {
            m.insert("Retries".into(), r.into());
        }
        serde_json::Value::Object(m)
    }

    /// Reads docker's JSON form; `None` when it is not an object with a string-array `Test`.
    pub fn from_json(v: &serde_json::Value) -> Option<Healthcheck> {
        let test = v
            .get("Test")?
            .as_array()?
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?;
        let ns = |k: &str| v.get(k).and_then(|x| x.as_u64()).filter(|&n| n > 0);
        Some(Healthcheck {
            test,
            interval: ns("Interval"),
            timeout: ns("Timeout"),
            start_period: ns("StartPeriod"),
            start_interval: ns("StartInterval"),
            retries: v
                .get("Retries")
                .and_then(|x| x.as_u64())
                .and_then(|r| u32::try_from(r).ok())
                .filter(|&r| r > 0),
        })
    }
}

/// `NONE`, or `[--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D]
/// [--retries=N] CMD command` (exec form `CMD ["a","b"]` or shell form).
fn healthcheck(args: &str) -> Result<Healthcheck, String> {
    if args.eq_ignore_ascii_case("NONE") {
        return Ok(Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        });
    }
    let mut h = Healthcheck::default();
    let mut rest = args.trim_start();
    while let Some(opt) = rest.strip_prefix("--") {
        let (word, after) = opt
            .split_once(|c: char| c.is_whitespace())
            .unwrap_or((opt, ""));
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("option --{word} needs a value (--{word}=...)"))?;
        match k {
            "interval" => h.interval = Some(duration(v)?),
            "timeout" => h.timeout = Some(duration(v)?),
            "start-period" => h.start_period = Some(duration(v)?),
            "start-interval" => h.start_interval = Some(duration(v)?),
            "retries" => {
                h.retries = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| format!("--retries={v}: not a positive number"))?,
                )
            }
            other => return Err(format!("unknown HEALTHCHECK option --{other}")),
        }
        rest = after.trim_start();
    }
    let (kw, cmd) = rest
        .split_once(|c: char| c.is_whitespace())
        .unwrap_or((rest, ""));
    if !kw.eq_ignore_ascii_case("CMD") {
        return Err("HEALTHCHECK needs NONE or CMD followed by a command".into());
    }
    let cmd = cmd.trim();
    if cmd.is_empty() {
        return Err("HEALTHCHECK CMD needs a command".into());
    }
    h.test = match json_array(cmd) {
        Some(v) if !v.is_empty() => std::iter::once("CMD".to_string()).chain(v).collect(),
        Some(_) => return Err("HEALTHCHECK CMD [] is empty".into()),
        None => vec!["CMD-SHELL".into(), cmd.to_string()],
    };
    Ok(h)
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds; at least 1ms, as docker.
pub fn duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (like 30s, 1m30s, 500ms)");
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, r) = rest.split_at(digits);
        let unit_len = r.find(|c: char| c.is_ascii_digit()).unwrap_or(r.len());
        let (unit, r) = r.split_at(unit_len);
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        let add = n * mult;
        if !add.is_finite() || add >= u64::MAX as f64 {
            return Err(bad());
        }
        total = total.checked_add(add as u64).ok_or_else(bad)?;
        rest = r;
    }
    if total < 1_000_000 {
        return Err(format!("{s:?}: durations must be at least 1ms"));
    }
    Ok(total)
}

/// JSON array form (`["a","b"]`), else shell form wrapped in `/bin/sh -c`, as docker does
/// (a `[` that is not valid JSON is shell form too).
fn exec_or_shell(args: &str) -> Vec<String> {
    json_array(args).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), args.to_string()])
}

fn json_array(args: &str) -> Option<Vec<String>> {
    if !args.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(args).ok()
}

/// Splits shell-like words: whitespace separates, `"..."` and `'...'` quote, a backslash
/// escapes the next character (inside double quotes too).
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("trailing backslash".into()),
                }
            }
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == quote {
                        closed = true;
                        break;
                    }
                    if q == '\\' && quote == '"' {
                        match chars.next() {
                            Some(n) => cur.push(n),
                            None => break,
                        }
                    } else {
                        cur.push(q);
                    }
                }
                if !closed {
                    return Err(format!("unterminated {quote} quote"));
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `k=v k2="v 2"` pairs, or docker's legacy `k value with spaces` (one pair) when the first word
/// has no '='.
fn pairs(args: &str, what: &str) -> Result<Vec<(String, String)>, String> {
    let ws = words(args)?;
    let first_has_eq = ws.first().is_some_and(|w| w.contains('='));
    if !first_has_eq {
        let (k, rest) = match args.split_once(|c: char| c.is_whitespace()) {
            Some((k, r)) => (k, r.trim()),
            None => return Err(format!("{what} needs name=value (or \"name value\")")),
        };
        let v = words(rest)?.join(" ");
        return Ok(vec![(k.to_string(), v)]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("{what} expects name=value pairs, got {w:?}")),
        })
        .collect()
}

/// `80`, `80/tcp`, `53/udp`, `8000-8010/tcp` to normalised `port/proto` keys.
fn ports(w: &str) -> Result<Vec<String>, String> {
    let (range, proto) = match w.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("{w:?}: protocol must be tcp, udp or sctp"));
    }
    let port = |s: &str| -> Result<u32, String> {
        match s.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => Ok(p),
            _ => Err(format!("{w:?}: {s:?} is not a port number (1-65535)")),
        }
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("{w:?}: range ends before it starts"));
    }
    if hi - lo >= MAX_PORT_RANGE {
        return Err(format!(
            "{w:?}: a range may span at most {MAX_PORT_RANGE} ports"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'+' || c == b'-')
}

/// `base` joined with `p` (absolute `p` replaces it), with `.`, `..` and repeated `/` removed.
fn join_clean(base: &str, p: &str) -> String {
    let full = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> ImageMeta {
        let mut m = ImageMeta::default();
        for c in changes {
            apply_change(&mut m, c).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        m
    }

    #[test]
    fn cmd_and_entrypoint() {
        let m = apply(&[
            r#"CMD ["/sbin/init", "--log-level=info"]"#,
            "entrypoint /usr/bin/tini --",
        ]);
        assert_eq!(m.cmd.unwrap(), vec!["/sbin/init", "--log-level=info"]);
        assert_eq!(
            m.entrypoint.unwrap(),
            vec!["/bin/sh", "-c", "/usr/bin/tini --"]
        );
        let m = apply(&["CMD [not json"]);
        assert_eq!(m.cmd.unwrap(), vec!["/bin/sh", "-c", "[not json"]);
        let m = apply(&["ENTRYPOINT []"]);
        assert_eq!(m.entrypoint.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn env_forms() {
        let m = apply(&[
            r#"ENV A=1 B="two words" C=x\ y"#,
            "ENV LEGACY value with  spaces",
            "ENV A=replaced",
            "ENV Q='single $quoted'",
        ]);
        assert_eq!(
            m.env,
            vec![
                "B=two words",
                "C=x y",
                "LEGACY=value with spaces",
                "A=replaced",
                "Q=single $quoted"
            ]
        );
    }

    #[test]
    fn label_expose_volume_user_workdir_stopsignal() {
        let m = apply(&[
            r#"LABEL org.opencontainers.image.title="My VM" version=1"#,
            "LABEL legacy some value",
            "EXPOSE 80 53/udp 8000-8002/TCP",
            r#"VOLUME ["/data", "/var/log"]"#,
            "VOLUME /srv /home",
            "USER www-data:www-data",
            "WORKDIR /srv",
            "WORKDIR app/../web/./x",
            "STOPSIGNAL SIGRTMIN+3",
        ]);
        assert_eq!(m.labels["org.opencontainers.image.title"], "My VM");
        assert_eq!(m.labels["version"], "1");
        assert_eq!(m.labels["legacy"], "some value");
        let ports: Vec<_> = m.exposed_ports.iter().cloned().collect();
        assert_eq!(
            ports,
            vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        let vols: Vec<_> = m.volumes.iter().cloned().collect();
        assert_eq!(vols, vec!["/data", "/home", "/srv", "/var/log"]);
        assert_eq!(m.user.as_deref(), Some("www-data:www-data"));
        assert_eq!(m.working_dir.as_deref(), Some("/srv/web/x"));
        assert_eq!(m.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        assert_eq!(apply(&["STOPSIGNAL 15"]).stop_signal.as_deref(), Some("15"));
    }

    #[test]
    fn healthcheck_forms() {
        let m = apply(&["HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl -f http://localhost/"]);
        let h = m.healthcheck.unwrap();
        assert_eq!(h.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
        assert_eq!(h.interval, Some(90_000_000_000));
        assert_eq!(h.timeout, Some(500_000_000));
        assert_eq!(h.retries, Some(3));
        assert_eq!(Healthcheck::from_json(&h.to_json()), Some(h.clone()));
        let m = apply(&[r#"HEALTHCHECK CMD ["/bin/check", "-q"]"#]);
        assert_eq!(m.healthcheck.unwrap().test, vec!["CMD", "/bin/check", "-q"]);
        let m = apply(&["HEALTHCHECK none"]);
        assert_eq!(m.healthcheck.unwrap().test, vec!["NONE"]);
    }

    #[test]
    fn refused() {
        let cases: &[(&str, &str)] = &[
            ("", "empty instruction"),
            ("CMD", "requires at least one argument"),
            ("ENV", "requires at least one argument"),
            ("ENV A", "needs name=value"),
            ("ENV A=1 B", "expects name=value pairs"),
            ("ENV =x", "cannot be empty"),
            ("ENV A=\"open", "unterminated"),
            ("EXPOSE 0", "not a port number"),
            ("EXPOSE 70000", "not a port number"),
            ("EXPOSE 80/icmp", "protocol"),
            ("EXPOSE 90-80", "range ends"),
            ("EXPOSE 1-65535", "at most"),
            ("USER a b", "exactly one"),
            ("STOPSIGNAL kill", "not a signal"),
            ("STOPSIGNAL 99", "not a signal"),
            ("HEALTHCHECK", "requires at least one argument"),
            ("HEALTHCHECK --interval=5 CMD true", "not a duration"),
            ("HEALTHCHECK --retries=0 CMD true", "positive"),
            (
                "HEALTHCHECK --bogus=1 CMD true",
                "unknown HEALTHCHECK option",
            ),
            ("HEALTHCHECK RUN true", "NONE or CMD"),
            ("ONBUILD RUN x", "not supported"),
            ("RUN apt-get update", "not a supported instruction"),
            ("FROM debian", "not a supported instruction"),
        ];
        for (c, want) in cases {
            let mut m = ImageMeta::default();
            let e = apply_change(&mut m, c).expect_err(c);
            let msg = e.to_string();
            assert!(msg.contains(want), "{c}: {msg}");
            assert!(!msg.contains('\n'));
        }
    }
}

//! systemd units enabled in the image: the `.wants` of multi-user.target and default.target in
//! /etc/systemd/system, /lib/systemd/system and /usr/lib/systemd/system (plus what those units
//! Want=/Require=), read with their drop-ins and translated into specs: Type=simple, exec,
//! forking (PIDFile=), oneshot (RemainAfterExit=), notify; the Exec*= lines with `-` and `@`,
//! `$VAR`/`${VAR}` and `%` specifiers; Restart=, RestartSec=, User=, Group=,
//! WorkingDirectory=, Environment=, EnvironmentFile=, RuntimeDirectory=, KillSignal=,
//! KillMode=, TimeoutStopSec=, ConditionPathExists=.
//!
//! Order comes from After=/Before= among the chosen units. A cycle is broken the way systemd
//! does it, by dropping one unit's start (it shows FATAL with the file and line of its After=).
//! Units that make no sense in a container are left out by [`Policy`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::log;
use crate::service::{Cmd, Kind, Restart, Source, Spec};
use crate::sources::supervisord::parse_signal;
use crate::sources::{
    in_root, list_dir, lookup_user, read_config, split_words, ConfigError, Policy,
};

/// Most units considered (wanted units pulled in included).
const UNIT_CAP: usize = 2048;
/// systemd's default stop timeout is 90 s; a container is stopped within ~10 s, so 10 s here.
const DEFAULT_STOP: Duration = Duration::from_secs(10);

const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// A parsed unit: `(section, key) → [(value, line, file)]`, in order.
#[derive(Debug, Default)]
pub struct Unit {
    pub name: String,
    pub file: PathBuf,
    pub entries: Vec<(String, String, String, usize, PathBuf)>,
}

impl Unit {
    fn values(&self, section: &str, key: &str) -> Vec<(&str, usize, &Path)> {
        self.entries
            .iter()
            .filter(|(s, k, _, _, _)| s == section && k == key)
            .map(|(_, _, v, l, f)| (v.as_str(), *l, f.as_path()))
            .collect()
    }
    fn last(&self, section: &str, key: &str) -> Option<(&str, usize, &Path)> {
        self.values(section, key).pop()
    }
}

/// Parses unit-file syntax into `unit` (called for the file and each drop-in).
pub fn parse_unit_text(text: &str, file: &Path, unit: &mut Unit) -> Result<(), ConfigError> {
    let mut section = String::new();
    let mut pending: Option<(String, usize)> = None;
    for (n, raw) in text.lines().enumerate() {
        let lineno = n + 1;
        let (mut line, start) = match pending.take() {
            Some((mut acc, start)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (acc, start)
            }
            None => (raw.trim().to_string(), lineno),
        };
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            line = stripped.to_string();
            pending = Some((line, start));
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(ConfigError::new(
                    file,
                    start,
                    format!("bad section header '{line}'"),
                ));
            };
            section = name.to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError::new(
                file,
                start,
                format!("expected 'Key=Value', found '{line}'"),
            ));
        };
        if section.is_empty() {
            return Err(ConfigError::new(
                file,
                start,
                "assignment outside of any [section]",
            ));
        }
        unit.entries.push((
            section.clone(),
            k.trim().to_string(),
            v.trim().to_string(),
            start,
            file.to_path_buf(),
        ));
    }
    if let Some((_, start)) = pending {
        return Err(ConfigError::new(
            file,
            start,
            "line continuation at end of file",
        ));
    }
    Ok(())
}

/// `5`, `5s`, `100ms`, `1min 30s`, `infinity` (capped at one day).
pub fn parse_timespan(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if v == "infinity" {
        return Ok(Duration::from_secs(86_400));
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    if rest.is_empty() {
        return Err("empty time span".into());
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("'{v}' is not a time span"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let mult = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "ms" | "msec" => 0.001,
            "us" | "usec" => 0.000_001,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            _ => return Err(format!("'{v}' has an unknown time unit '{unit}'")),
        };
        let secs = (n * mult).clamp(0.0, 86_400.0);
        total = total.saturating_add(Duration::from_secs_f64(secs));
        rest = tail;
    }
    Ok(total.min(Duration::from_secs(86_400)))
}

/// Expands `%` specifiers.
fn specifiers(s: &str, unit: &str, home: &str, user: &str) -> String {
    let base = unit.rsplit_once('.').map_or(unit, |(b, _)| b);
    let (prefix, instance) = base.split_once('@').unwrap_or((base, ""));
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(base),
            Some('p') | Some('P') => out.push_str(prefix),
            Some('i') | Some('I') => out.push_str(instance),
            Some('t') => out.push_str("/run"),
            Some('h') => out.push_str(home),
            Some('u') => out.push_str(user),
            Some('%') => out.push('%'),
            Some(x) => {
                out.push('%');
                out.push(x);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Splits an Exec line and expands `${VAR}` in place and a lone `$VAR` into words.
pub fn parse_exec(v: &str, env: &HashMap<String, String>) -> Result<Option<Cmd>, String> {
    let mut v = v.trim();
    let mut cmd = Cmd::default();
    let mut at = false;
    while let Some(c) = v.chars().next() {
        match c {
            '-' => cmd.ignore_failure = true,
            '@' => at = true,
            '+' | '!' | ':' => {}
            _ => break,
        }
        v = v.get(1..).unwrap_or("");
    }
    if v.trim().is_empty() {
        return Ok(None);
    }
    let words = split_words(v)?;
    let mut argv = Vec::new();
    for w in words {
        if let Some(name) = w
            .strip_prefix('$')
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            if let Some(val) = env.get(name) {
                argv.extend(val.split_whitespace().map(str::to_string));
            }
            continue;
        }
        let mut out = String::new();
        let mut rest = w.as_str();
        while let Some(i) = rest.find("${") {
            out.push_str(rest.get(..i).unwrap_or(""));
            let after = rest.get(i + 2..).unwrap_or("");
            match after.find('}') {
                Some(j) => {
                    let name = after.get(..j).unwrap_or("");
                    out.push_str(env.get(name).map_or("", String::as_str));
                    rest = after.get(j + 1..).unwrap_or("");
                }
                None => {
                    out.push_str(rest.get(i..).unwrap_or(""));
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        argv.push(out);
    }
    if at {
        if argv.len() < 2 {
            return Err("'@' needs a program and an argv[0]".into());
        }
        let prog = argv.remove(0);
        cmd.arg0 = Some(argv.remove(0));
        argv.insert(0, prog);
    }
    cmd.argv = argv;
    Ok(Some(cmd))
}

/// `KEY=VALUE` lines of an EnvironmentFile (comments, quotes, `export` tolerated).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = match split_words(v) {
            Ok(w) if v.starts_with(['"', '\'']) => w.join(" "),
            _ => v.to_string(),
        };
        out.push((k.trim().to_string(), v));
    }
    out
}

/// Finds a unit file (templates via `name@.service`); None when missing or masked.
fn find_unit(root: &Path, name: &str) -> Option<PathBuf> {
    let template = name.split_once('@').map(|(p, rest)| {
        let suffix = rest.rsplit_once('.').map_or("", |(_, s)| s);
        format!("{p}@.{suffix}")
    });
    for dir in UNIT_DIRS {
        for candidate in std::iter::once(name.to_string()).chain(template.clone()) {
            let p = root.join(dir).join(&candidate);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&p).ok()?;
                    if target == Path::new("/dev/null") {
                        return None;
                    }
                    let resolved = if target.is_absolute() {
                        in_root(root, &target.display().to_string())
                    } else {
                        p.parent().unwrap_or(root).join(target)
                    };
                    if resolved.is_file() {
                        return Some(resolved);
                    }
                    continue;
                }
                if meta.is_file() {
                    if meta.len() == 0 {
                        return None;
                    }
                    return Some(p);
                }
            }
        }
    }
    None
}

/// The units wanted by a target, from every unit directory's `TARGET.wants/`.
fn wants_of(root: &Path, target: &str) -> Vec<String> {
    let mut v = Vec::new();
    for dir in UNIT_DIRS {
        for p in list_dir(&root.join(dir).join(format!("{target}.wants"))) {
            if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                v.push(n.to_string());
            }
        }
    }
    v
}

/// The name default.target points to, if it is a symlink.
fn default_target(root: &Path) -> Option<String> {
    for dir in UNIT_DIRS {
        if let Ok(t) = std::fs::read_link(root.join(dir).join("default.target")) {
            return t.file_name().and_then(|n| n.to_str()).map(str::to_string);
        }
    }
    None
}

fn load_unit(root: &Path, name: &str, file: &Path) -> Result<Unit, ConfigError> {
    let mut unit = Unit {
        name: name.to_string(),
        file: file.to_path_buf(),
        entries: Vec::new(),
    };
    parse_unit_text(&read_config(file)?, file, &mut unit)?;
    for dir in UNIT_DIRS {
        for p in list_dir(&root.join(dir).join(format!("{name}.d"))) {
            if p.extension().is_some_and(|e| e == "conf") {
                parse_unit_text(&read_config(&p)?, &p, &mut unit)?;
            }
        }
    }
    Ok(unit)
}

fn words_of(unit: &Unit, section: &str, key: &str) -> Vec<(String, usize, PathBuf)> {
    let mut out = Vec::new();
    for (v, l, f) in unit.values(section, key) {
        for w in v.split_whitespace() {
            out.push((w.to_string(), l, f.to_path_buf()));
        }
    }
    out
}

/// Translates a parsed unit into a spec.
pub fn unit_spec(root: &Path, unit: &Unit) -> Result<Option<Spec>, ConfigError> {
    let name = unit.name.as_str();
    let svc = "Service";
    let err = |l: usize, f: &Path, m: String| ConfigError::new(f, l, m);
    for (v, _, _) in unit.values("Unit", "ConditionPathExists") {
        let (neg, p) = match v.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, v),
        };
        if in_root(root, p).exists() == neg {
            log::info(&format!(
                "systemd: {name} skipped: ConditionPathExists={v} not met"
            ));
            return Ok(None);
        }
    }
    let user = match unit.last(svc, "User") {
        Some((u, l, f)) => {
            let group = unit.last(svc, "Group").map(|g| g.0);
            Some(lookup_user(root, u, group).map_err(|e| err(l, f, e))?)
        }
        None => match unit.last(svc, "Group") {
            Some((g, l, f)) => {
                let mut u = lookup_user(root, "0", Some(g)).map_err(|e| err(l, f, e))?;
                u.name = "root".into();
                u.home = "/root".into();
                Some(u)
            }
            None => None,
        },
    };
    let home = user
        .as_ref()
        .map_or("/root".to_string(), |u| u.home.clone());
    let uname = user.as_ref().map_or("root".to_string(), |u| u.name.clone());
    let sp = |s: &str| specifiers(s, name, &home, &uname);
    let mut env: Vec<(String, String)> = Vec::new();
    for (v, l, f) in unit.values(svc, "Environment") {
        let words = split_words(&sp(v)).map_err(|e| err(l, f, format!("Environment: {e}")))?;
        for w in words {
            match w.split_once('=') {
                Some((k, val)) => env.push((k.to_string(), val.to_string())),
                None => return Err(err(l, f, format!("Environment: '{w}' has no '='"))),
            }
        }
    }
    for (v, l, f) in unit.values(svc, "EnvironmentFile") {
        let (optional, p) = match v.strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, v),
        };
        let path = in_root(root, &sp(p));
        match read_config(&path) {
            Ok(t) => env.extend(parse_env_file(&t)),
            Err(_) if optional => {}
            Err(e) => return Err(err(l, f, format!("EnvironmentFile={p}: {}", e.msg))),
        }
    }
    let envmap: HashMap<String, String> = env.iter().cloned().collect();
    let exec = |key: &str| -> Result<Vec<Cmd>, ConfigError> {
        let mut out = Vec::new();
        for (v, l, f) in unit.values(svc, key) {
            match parse_exec(&sp(v), &envmap).map_err(|e| err(l, f, format!("{key}: {e}")))? {
                Some(c) => out.push(c),
                None => out.clear(),
            }
        }
        Ok(out)
    };
    let starts = exec("ExecStart")?;
    let type_ = match unit.last(svc, "Type") {
        Some((t, l, f)) => match t {
            "simple" | "exec" | "idle" | "dbus" => "simple",
            "forking" => "forking",
            "oneshot" => "oneshot",
            "notify" | "notify-reload" => "notify",
            other => {
                return Err(err(
                    l,
                    f,
                    format!("Type={other} is not a known service type"),
                ))
            }
        },
        None if starts.is_empty() => "oneshot",
        None => "simple",
    };
    let Some(first) = starts.first().cloned() else {
        return Err(ConfigError::new(
            &unit.file,
            0,
            format!("{name} has no ExecStart="),
        ));
    };
    if starts.len() > 1 && type_ != "oneshot" {
        let (_, l, f) = unit.last(svc, "ExecStart").unwrap_or(("", 0, &unit.file));
        return Err(err(
            l,
            f,
            "more than one ExecStart= is only allowed for Type=oneshot".into(),
        ));
    }
    let mut s = Spec::new(name, Source::Systemd, &unit.file, first.argv.clone());
    s.start = first;
    // Further ExecStart= lines of a oneshot run before it, in order: run them as pre-steps.
    let mut pre = exec("ExecStartPre")?;
    if starts.len() > 1 {
        let last = starts.len() - 1;
        pre.extend(starts.iter().take(last).cloned());
        if let Some(c) = starts.get(last) {
            s.start = c.clone();
        }
    }
    s.pre = pre;
    s.post = exec("ExecStartPost")?;
    s.stop_cmds = exec("ExecStop")?;
    s.reload_cmds = exec("ExecReload")?;
    let remain = match unit.last(svc, "RemainAfterExit") {
        Some((v, l, f)) => parse_yes(v).map_err(|e| err(l, f, format!("RemainAfterExit: {e}")))?,
        None => false,
    };
    s.kind = match type_ {
        "forking" => Kind::Forking {
            pidfile: unit
                .last(svc, "PIDFile")
                .map(|(p, _, _)| in_root(root, &sp(p))),
        },
        "oneshot" => Kind::Oneshot { remain },
        "notify" => Kind::Notify,
        _ => Kind::Simple,
    };
    s.env = env;
    s.user = user;
    s.startsecs = 0;
    s.restart = match unit.last(svc, "Restart") {
        None => Restart::No,
        Some((v, l, f)) => match v {
            "no" => Restart::No,
            "always" => Restart::Always,
            "on-failure" => Restart::OnFailure,
            "on-abnormal" | "on-abort" | "on-watchdog" => Restart::OnAbnormal,
            "on-success" => Restart::OnSuccess,
            _ => return Err(err(l, f, format!("Restart={v} is not a restart policy"))),
        },
    };
    s.restart_delay = match unit.last(svc, "RestartSec") {
        None => Duration::from_millis(100),
        Some((v, l, f)) => parse_timespan(v).map_err(|e| err(l, f, format!("RestartSec: {e}")))?,
    };
    s.start_limit = Some((5, Duration::from_secs(10)));
    s.stopwait = DEFAULT_STOP;
    for key in ["TimeoutStopSec", "TimeoutSec"] {
        if let Some((v, l, f)) = unit.last(svc, key) {
            s.stopwait = parse_timespan(v).map_err(|e| err(l, f, format!("{key}: {e}")))?;
            break;
        }
    }
    if let Some((v, l, f)) = unit.last(svc, "KillSignal") {
        s.stopsignal = parse_signal(v).map_err(|e| err(l, f, format!("KillSignal: {e}")))?;
    }
    let (group_stop, group_kill) = match unit.last(svc, "KillMode").map(|x| x.0) {
        Some("process") | Some("none") => (false, false),
        Some("mixed") => (false, true),
        _ => (true, true),
    };
    s.stopasgroup = group_stop;
    s.killasgroup = group_kill;
    for (v, l, f) in unit.values(svc, "SuccessExitStatus") {
        for w in v.split_whitespace() {
            if let Ok(c) = w.parse::<i32>() {
                s.exitcodes.push(c);
            } else if parse_signal(w).is_err() {
                return Err(err(
                    l,
                    f,
                    format!("SuccessExitStatus: '{w}' is neither code nor signal"),
                ));
            }
        }
    }
    if let Some((v, l, f)) = unit.last(svc, "WorkingDirectory") {
        let v = sp(v);
        let v = v.strip_prefix('-').unwrap_or(&v);
        let d = if v == "~" {
            home.clone()
        } else {
            v.to_string()
        };
        if !d.starts_with('/') {
            return Err(err(l, f, format!("WorkingDirectory={d} is not absolute")));
        }
        s.dir = Some(in_root(root, &d));
    }
    for (w, _, _) in words_of(unit, svc, "RuntimeDirectory") {
        s.runtime_dirs.push(PathBuf::from(sp(&w)));
    }
    if s.stopsignal == Signal::SIGKILL {
        s.stopwait = Duration::ZERO;
    }
    Ok(Some(s))
}

fn parse_yes(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean")),
    }
}

/// Chooses, parses and orders the enabled units.
pub fn load(root: &Path, policy: &Policy, specs: &mut Vec<Spec>, errors: &mut Vec<ConfigError>) {
    let mut targets = vec![
        "multi-user.target".to_string(),
        "default.target".to_string(),
    ];
    targets.extend(default_target(root));
    let mut queue: Vec<String> = Vec::new();
    for t in &targets {
        queue.extend(wants_of(root, t));
    }
    let mut seen_targets: HashSet<String> = targets.into_iter().collect();
    let mut chosen: BTreeMap<String, Unit> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut i = 0;
    while let Some(name) = queue.get(i).cloned() {
        i += 1;
        if visited.len() >= UNIT_CAP {
            break;
        }
        if !visited.insert(name.clone()) {
            continue;
        }
        if name.ends_with(".target") {
            if seen_targets.insert(name.clone()) {
                queue.extend(wants_of(root, &name));
            }
            continue;
        }
        if policy.skips(&name) {
            log::info(&format!("systemd: {name} left out by the container policy"));
            continue;
        }
        if !name.ends_with(".service") {
            continue;
        }
        let Some(file) = find_unit(root, &name) else {
            continue;
        };
        match load_unit(root, &name, &file) {
            Ok(unit) => {
                for key in ["Wants", "Requires", "BindsTo"] {
                    for (w, _, _) in words_of(&unit, "Unit", key) {
                        queue.push(w);
                    }
                }
                order.push(name.clone());
                chosen.insert(name, unit);
            }
            Err(e) => {
                specs.push(Spec::broken(&name, Source::Systemd, &file, e.to_string()));
                errors.push(e);
            }
        }
    }
    let mut built: Vec<Spec> = Vec::new();
    // Ordering edges (before → after), with where each was written.
    let mut after: HashMap<String, Vec<(String, usize, PathBuf)>> = HashMap::new();
    for name in &order {
        let Some(unit) = chosen.get(name) else {
            continue;
        };
        match unit_spec(root, unit) {
            Ok(Some(s)) => built.push(s),
            Ok(None) => continue,
            Err(e) => {
                specs.push(Spec::broken(
                    name,
                    Source::Systemd,
                    &unit.file,
                    e.to_string(),
                ));
                errors.push(e);
                continue;
            }
        }
        for (w, l, f) in words_of(unit, "Unit", "After") {
            after.entry(name.clone()).or_default().push((w, l, f));
        }
        for (w, l, f) in words_of(unit, "Unit", "Before") {
            after.entry(w).or_default().push((name.clone(), l, f));
        }
    }
    let names: HashSet<String> = built.iter().map(|s| s.name.clone()).collect();
    for v in after.values_mut() {
        v.retain(|(d, _, _)| names.contains(d));
    }
    let (levels, dropped) = order_units(&built, &after, errors);
    for mut s in built {
        if let Some(why) = dropped.get(&s.name) {
            specs.push(Spec::broken(
                &s.name,
                Source::Systemd,
                &s.origin,
                why.clone(),
            ));
            continue;
        }
        s.priority = levels.get(&s.name).copied().unwrap_or(0);
        s.after = after
            .get(&s.name)
            .map(|v| {
                v.iter()
                    .map(|(d, _, _)| d.clone())
                    .filter(|d| !dropped.contains_key(d))
                    .collect()
            })
            .unwrap_or_default();
        specs.push(s);
    }
}

/// Levels of a topological order (a unit's level is one more than those it is after). A unit
/// on a cycle is dropped (systemd deletes one start job) with one line naming the cycle.
fn order_units(
    built: &[Spec],
    after: &HashMap<String, Vec<(String, usize, PathBuf)>>,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, i32>, HashMap<String, String>) {
    let mut dropped: HashMap<String, String> = HashMap::new();
    let mut levels: HashMap<String, i32> = HashMap::new();
    for _round in 0..=built.len() {
        levels.clear();
        let mut remaining: Vec<&str> = built
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !dropped.contains_key(*n))
            .collect();
        let mut progress = true;
        while progress && !remaining.is_empty() {
            progress = false;
            remaining.retain(|n| {
                let deps: Vec<&(String, usize, PathBuf)> = after
                    .get(*n)
                    .map(|v| {
                        v.iter()
                            .filter(|(d, _, _)| !dropped.contains_key(d))
                            .collect()
                    })
                    .unwrap_or_default();
                if deps.iter().all(|(d, _, _)| levels.contains_key(d)) {
                    let lvl = deps
                        .iter()
                        .filter_map(|(d, _, _)| levels.get(d))
                        .max()
                        .map_or(0, |m| m + 1);
                    levels.insert(n.to_string(), lvl);
                    progress = true;
                    false
                } else {
                    true
                }
            });
        }
        let Some(start) = remaining.first().map(|s| s.to_string()) else {
            break;
        };
        // Walk "after" edges among the remaining units from `start` until one repeats.
        let rem: HashSet<&str> = remaining.iter().copied().collect();
        let mut path: Vec<(String, usize, PathBuf)> = Vec::new();
        let mut cur = start.clone();
        let mut cycle = None;
        for _ in 0..=rem.len() {
            if let Some(pos) = path.iter().position(|(n, _, _)| *n == cur) {
                cycle = Some(path.split_off(pos));
                break;
            }
            let next = after.get(&cur).and_then(|v| {
                v.iter()
                    .find(|(d, _, _)| rem.contains(d.as_str()) && !dropped.contains_key(d))
            });
            let Some((d, l, f)) = next else { break };
            path.push((cur.clone(), *l, f.clone()));
            cur = d.clone();
        }
        let cycle = cycle.unwrap_or(path);
        let Some((victim, line, file)) = cycle.first().cloned() else {
            dropped.insert(start.clone(), "ordering cycle".into());
            continue;
        };
        let names: Vec<String> = cycle
            .iter()
            .map(|(n, l, f)| format!("{n} ({}:{l})", f.display()))
            .collect();
        let msg = format!(
            "ordering cycle: {} -> {victim}; {victim} is not started to break it",
            names.join(" -> ")
        );
        let e = ConfigError::new(&file, line, msg);
        dropped.insert(victim, e.to_string());
        errors.push(e);
    }
    (levels, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timespan("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_timespan("1min 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timespan("2min30s").unwrap(), Duration::from_secs(150));
        assert!(parse_timespan("5 parsecs").is_err());
        assert!(parse_timespan("").is_err());
        assert_eq!(
            parse_timespan("infinity").unwrap(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn exec_lines() {
        let env: HashMap<String, String> = [("OPTS", "-a -b"), ("X", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = parse_exec("-/usr/sbin/cron -f $OPTS pre${X}post $NONE", &env)
            .unwrap()
            .unwrap();
        assert!(c.ignore_failure);
        assert_eq!(c.argv, ["/usr/sbin/cron", "-f", "-a", "-b", "prexpost"]);
        let c = parse_exec("@/bin/sh myname -c 'exit 0'", &env)
            .unwrap()
            .unwrap();
        assert_eq!(c.arg0.as_deref(), Some("myname"));
        assert_eq!(c.argv, ["/bin/sh", "-c", "exit 0"]);
        assert_eq!(parse_exec("", &env).unwrap(), None);
        assert!(parse_exec("/bin/x 'open", &env).is_err());
    }

    #[test]
    fn unit_syntax_errors_name_the_line() {
        let mut u = Unit::default();
        let e = parse_unit_text(
            "[Unit]\nDescription=x\nthis is wrong\n",
            Path::new("a.service"),
            &mut u,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.service:3: expected 'Key=Value', found 'this is wrong'"
        );
        let mut u = Unit::default();
        parse_unit_text(
            "[Service]\nExecStart=/bin/a \\\n  b\n",
            Path::new("a"),
            &mut u,
        )
        .unwrap();
        assert_eq!(u.entries[0].2, "/bin/a  b");
    }

    #[test]
    fn env_files() {
        let v = parse_env_file("# c\nA=1\nexport B=\"two words\"\nbad\nC='x'\n");
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
    }
}

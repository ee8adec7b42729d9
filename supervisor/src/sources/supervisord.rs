//! supervisord configuration: `/etc/supervisor/supervisord.conf`, `/etc/supervisord.conf`,
//! `/etc/supervisor/conf.d/*.conf` and the files of `[include] files=`, read as INI the way
//! Python's configparser does (`key = value` or `key: value`, `;`/`#` comments, indented
//! continuation lines), with supervisord's `[program:x]` keys, defaults and `%(name)s`
//! expansions. Paths in include globs are inside the image root.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::service::{Output, Restart, Source, Spec};
use crate::sources::{in_root, list_dir, lookup_user, read_config, split_words, ConfigError};

/// Most configuration files read (includes included).
const FILE_CAP: usize = 256;
/// Largest numprocs accepted.
const NUMPROCS_CAP: u32 = 1000;

/// One INI section with its keys (value and line number).
#[derive(Debug, Default)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub keys: Vec<(String, String, usize)>,
}

/// Parses INI text into sections. Errors name the line.
pub fn parse_ini(text: &str, file: &Path) -> Result<Vec<Section>, ConfigError> {
    let mut out: Vec<Section> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let lineno = n + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut().and_then(|s| s.keys.last_mut()) {
                last.1.push('\n');
                last.1.push_str(strip_comment(trimmed));
                continue;
            }
            return Err(ConfigError::new(
                file,
                lineno,
                "continuation line with no key before it",
            ));
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ConfigError::new(
                    file,
                    lineno,
                    format!("bad section header '{trimmed}'"),
                ));
            };
            out.push(Section {
                name: name.trim().to_string(),
                line: lineno,
                keys: Vec::new(),
            });
            continue;
        }
        let Some(pos) = trimmed.find(['=', ':']) else {
            return Err(ConfigError::new(
                file,
                lineno,
                format!("expected 'key = value', found '{trimmed}'"),
            ));
        };
        let (k, v) = trimmed.split_at(pos);
        let v = v.get(1..).unwrap_or("");
        let Some(sec) = out.last_mut() else {
            return Err(ConfigError::new(file, lineno, "key before any [section]"));
        };
        sec.keys.push((
            k.trim().to_lowercase(),
            strip_comment(v.trim()).to_string(),
            lineno,
        ));
    }
    Ok(out)
}

/// configparser drops an inline comment only after whitespace: `a ;b` → `a`.
fn strip_comment(v: &str) -> &str {
    let b = v.as_bytes();
    for i in 1..b.len() {
        if (b.get(i) == Some(&b';') || b.get(i) == Some(&b'#'))
            && b.get(i - 1).is_some_and(|c| c.is_ascii_whitespace())
        {
            return v.get(..i).unwrap_or(v).trim_end();
        }
    }
    v
}

/// Python `%`-formatting of `%(name)s`, `%(name)d`, `%(name)02d` and `%%`.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i + 1..).unwrap_or("");
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some(r) = after.strip_prefix('(') else {
            return Err(format!("bad '%' format in '{s}'"));
        };
        let Some(close) = r.find(')') else {
            return Err(format!("unterminated '%(' in '{s}'"));
        };
        let name = r.get(..close).unwrap_or("");
        let spec_and_rest = r.get(close + 1..).unwrap_or("");
        let Some(conv_at) = spec_and_rest.find(|c: char| c.is_ascii_alphabetic()) else {
            return Err(format!("'%({name})' has no conversion in '{s}'"));
        };
        let flags = spec_and_rest.get(..conv_at).unwrap_or("");
        let conv = spec_and_rest.get(conv_at..conv_at + 1).unwrap_or("");
        let Some(value) = vars.get(name) else {
            return Err(format!("unknown expansion '%({name})' in '{s}'"));
        };
        let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0).min(64);
        let zero = flags.starts_with('0');
        match conv {
            "s" => out.push_str(&format!("{value:>width$}")),
            "d" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| format!("'%({name})d' of a non-number in '{s}'"))?;
                if zero {
                    out.push_str(&format!("{n:0width$}"));
                } else {
                    out.push_str(&format!("{n:width$}"));
                }
            }
            c => return Err(format!("unsupported conversion '%{c}' in '{s}'")),
        }
        rest = spec_and_rest.get(conv_at + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean")),
    }
}

/// `TERM`, `SIGTERM` or a number.
pub fn parse_signal(v: &str) -> Result<Signal, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("'{v}' is not a signal"));
    }
    let up = v.to_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse::<Signal>()
        .map_err(|_| format!("'{v}' is not a signal"))
}

/// `KEY="val",KEY2=val2`: commas inside quotes belong to the value.
pub fn parse_environment(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in v.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            (None, '\n') => {}
            _ => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in environment '{v}'"));
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let Some((k, val)) = p.split_once('=') else {
            return Err(format!("environment entry '{p}' has no '='"));
        };
        out.push((k.trim().to_string(), val.to_string()));
    }
    Ok(out)
}

const KNOWN_KEYS: &[&str] = &[
    "command",
    "process_name",
    "numprocs",
    "numprocs_start",
    "priority",
    "autostart",
    "startsecs",
    "startretries",
    "autorestart",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "user",
    "redirect_stderr",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stdout_syslog",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "stderr_capture_maxbytes",
    "stderr_events_enabled",
    "stderr_syslog",
    "environment",
    "directory",
    "umask",
    "serverurl",
];

fn output(v: &str) -> Output {
    match v {
        "AUTO" | "auto" => Output::Relay,
        "NONE" | "none" => Output::Null,
        "/dev/stdout" | "/proc/self/fd/1" => Output::Inherit(1),
        "/dev/stderr" | "/proc/self/fd/2" => Output::Inherit(2),
        p => Output::File(PathBuf::from(p)),
    }
}

/// Builds the specs of one `[program:x]` section.
fn program(
    root: &Path,
    file: &Path,
    sec: &Section,
    prog: &str,
    host_env: &HashMap<String, String>,
) -> Result<Vec<Spec>, ConfigError> {
    let mut keys: HashMap<&str, (&str, usize)> = HashMap::new();
    for (k, v, line) in &sec.keys {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            return Err(ConfigError::new(
                file,
                *line,
                format!("unknown key '{k}' in [program:{prog}]"),
            ));
        }
        keys.insert(k.as_str(), (v.as_str(), *line));
    }
    let err = |line: usize, msg: String| ConfigError::new(file, line, msg);
    let get = |k: &str| keys.get(k).copied();
    let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
        match get(k) {
            Some((v, l)) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| err(l, format!("{k}: '{v}' is not a non-negative integer"))),
            None => Ok(default),
        }
    };
    let boolean = |k: &str, default: bool| -> Result<bool, ConfigError> {
        match get(k) {
            Some((v, l)) => parse_bool(v.trim()).map_err(|e| err(l, format!("{k}: {e}"))),
            None => Ok(default),
        }
    };
    let Some((command, cmd_line)) = get("command") else {
        return Err(err(sec.line, format!("[program:{prog}] has no command")));
    };
    let numprocs = num("numprocs", 1)?;
    if numprocs == 0 || numprocs > u64::from(NUMPROCS_CAP) {
        return Err(err(
            get("numprocs").map_or(sec.line, |x| x.1),
            format!("numprocs {numprocs} out of range 1..={NUMPROCS_CAP}"),
        ));
    }
    let numprocs_start = num("numprocs_start", 0)?;
    let (pname_tpl, pname_line) = get("process_name").unwrap_or(("%(program_name)s", sec.line));
    if numprocs > 1 && !pname_tpl.contains("process_num") {
        return Err(err(
            pname_line,
            "numprocs > 1 needs %(process_num)s in process_name".to_string(),
        ));
    }
    let autorestart = match get("autorestart") {
        None => Restart::Unexpected,
        Some((v, l)) => match v.trim().to_lowercase().as_str() {
            "unexpected" => Restart::Unexpected,
            x => match parse_bool(x) {
                Ok(true) => Restart::Always,
                Ok(false) => Restart::No,
                Err(_) => {
                    return Err(err(
                        l,
                        format!("autorestart: '{v}' is not true, false or unexpected"),
                    ))
                }
            },
        },
    };
    let exitcodes = match get("exitcodes") {
        None => vec![0],
        Some((v, l)) => v
            .split(',')
            .map(|c| c.trim().parse::<i32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| err(l, format!("exitcodes: '{v}' is not a list of integers")))?,
    };
    let stopsignal = match get("stopsignal") {
        None => Signal::SIGTERM,
        Some((v, l)) => parse_signal(v).map_err(|e| err(l, format!("stopsignal: {e}")))?,
    };
    let priority = match get("priority") {
        None => 999,
        Some((v, l)) => v
            .trim()
            .parse::<i32>()
            .map_err(|_| err(l, format!("priority: '{v}' is not an integer")))?,
    };
    let user = match get("user") {
        None => None,
        Some((v, l)) => Some(lookup_user(root, v.trim(), None).map_err(|e| err(l, e))?),
    };
    let mut specs = Vec::new();
    for n in 0..numprocs {
        let num_val = numprocs_start.saturating_add(n);
        let mut vars: HashMap<String, String> = HashMap::new();
        for (k, v) in host_env {
            vars.insert(format!("ENV_{k}"), v.clone());
        }
        vars.insert("program_name".into(), prog.into());
        vars.insert("group_name".into(), prog.into());
        vars.insert("process_num".into(), num_val.to_string());
        vars.insert("numprocs".into(), numprocs.to_string());
        vars.insert(
            "host_node_name".into(),
            host_env.get("HOSTNAME").cloned().unwrap_or_default(),
        );
        vars.insert(
            "here".into(),
            file.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        let x = |v: &str, l: usize| expand(v, &vars).map_err(|e| err(l, e));
        let pname = x(pname_tpl, pname_line)?;
        vars.insert("process_name".into(), pname.clone());
        let x = |v: &str, l: usize| expand(v, &vars).map_err(|e| err(l, e));
        let argv = split_words(&x(command, cmd_line)?)
            .map_err(|e| err(cmd_line, format!("command: {e}")))?;
        if argv.is_empty() {
            return Err(err(
                cmd_line,
                format!("[program:{prog}] has an empty command"),
            ));
        }
        let name = if numprocs > 1 {
            format!("{prog}:{pname}")
        } else {
            pname.clone()
        };
        let mut s = Spec::new(&name, Source::Supervisord, file, argv);
        s.autostart = boolean("autostart", true)?;
        s.startsecs = num("startsecs", 1)?;
        s.startretries = num("startretries", 3)?.min(u64::from(u32::MAX)) as u32;
        s.restart = autorestart;
        s.exitcodes = exitcodes.clone();
        s.stopsignal = stopsignal;
        s.stopwait = Duration::from_secs(num("stopwaitsecs", 10)?);
        s.stopasgroup = boolean("stopasgroup", false)?;
        s.killasgroup = boolean("killasgroup", s.stopasgroup)?;
        s.priority = priority;
        s.user = user.clone();
        s.redirect_stderr = boolean("redirect_stderr", false)?;
        if let Some((v, l)) = get("stdout_logfile") {
            s.stdout = output(&x(v.trim(), l)?);
        }
        if let Some((v, l)) = get("stderr_logfile") {
            s.stderr = output(&x(v.trim(), l)?);
        }
        if let Some((v, l)) = get("directory") {
            s.dir = Some(PathBuf::from(x(v.trim(), l)?));
        }
        if let Some((v, l)) = get("environment") {
            s.env =
                parse_environment(&x(v, l)?).map_err(|e| err(l, format!("environment: {e}")))?;
        }
        specs.push(s);
    }
    Ok(specs)
}

/// Reads the supervisord configuration files of the image.
pub fn load(root: &Path, specs: &mut Vec<Spec>, errors: &mut Vec<ConfigError>) {
    let mut queue: Vec<PathBuf> = vec![
        root.join("etc/supervisor/supervisord.conf"),
        root.join("etc/supervisord.conf"),
    ];
    queue.extend(
        list_dir(&root.join("etc/supervisor/conf.d"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf")),
    );
    let host_env: HashMap<String, String> = std::env::vars().collect();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut i = 0;
    while let Some(file) = queue.get(i).cloned() {
        i += 1;
        if seen.len() >= FILE_CAP {
            errors.push(ConfigError::new(
                &file,
                0,
                format!("more than {FILE_CAP} supervisord files; rest ignored"),
            ));
            break;
        }
        if !file.is_file() || !seen.insert(file.clone()) {
            continue;
        }
        let sections = match read_config(&file).and_then(|t| parse_ini(&t, &file)) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for sec in &sections {
            if let Some(prog) = sec.name.strip_prefix("program:") {
                match program(root, &file, sec, prog.trim(), &host_env) {
                    Ok(v) => specs.extend(v),
                    Err(e) => {
                        specs.push(Spec::broken(
                            prog.trim(),
                            Source::Supervisord,
                            &file,
                            e.to_string(),
                        ));
                        errors.push(e);
                    }
                }
            } else if sec.name == "include" {
                let here = file.parent().unwrap_or(root).to_path_buf();
                for (k, v, _) in &sec.keys {
                    if k != "files" {
                        continue;
                    }
                    for pat in v.split_whitespace() {
                        let full = if pat.starts_with('/') {
                            in_root(root, pat)
                        } else {
                            here.join(pat)
                        };
                        queue.extend(glob_files(&full));
                    }
                }
            } else if sec.name.starts_with("eventlistener:")
                || sec.name.starts_with("fcgi-program:")
            {
                errors.push(ConfigError::new(
                    &file,
                    sec.line,
                    format!("[{}] is not supported; skipped", sec.name),
                ));
            }
        }
    }
}

/// Files matching a glob whose wildcards are in the last component only (supervisord's usual
/// `conf.d/*.conf`).
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let Some(last) = pattern.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    if !last.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    list_dir(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| crate::sources::glob_match(last, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("program_name", "web"), ("process_num", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn python_percent_expansion() {
        assert_eq!(
            expand("%(program_name)s_%(process_num)02d", &vars()).unwrap(),
            "web_03"
        );
        assert_eq!(expand("100%% %(process_num)d", &vars()).unwrap(), "100% 3");
        assert!(expand("%(nope)s", &vars()).is_err());
        assert!(expand("%(program_name", &vars()).is_err());
        assert!(expand("%(program_name)d", &vars()).is_err());
    }

    #[test]
    fn environment_values() {
        assert_eq!(
            parse_environment(r#"A="x,y",B=2, C='q'"#).unwrap(),
            vec![
                ("A".into(), "x,y".into()),
                ("B".into(), "2".into()),
                ("C".into(), "q".into())
            ]
        );
        assert!(parse_environment("A=\"open").is_err());
        assert!(parse_environment("NOEQUALS").is_err());
    }

    #[test]
    fn ini_with_comments_and_continuations() {
        let t = "; c\n[program:a]\ncommand = /bin/x ; comment\nenvironment=A=1,\n  B=2\n";
        let s = parse_ini(t, Path::new("f")).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].keys[0], ("command".into(), "/bin/x".into(), 3));
        assert_eq!(s[0].keys[1].1, "A=1,\nB=2");
        let e = parse_ini("[program:a\n", Path::new("f")).unwrap_err();
        assert_eq!(e.to_string(), "f:1: bad section header '[program:a'");
        assert!(parse_ini("x=1\n", Path::new("f")).is_err());
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigquit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("BOGUS").is_err());
    }

    #[test]
    fn programs_with_errors_are_broken_others_load() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("etc/supervisor/conf.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("a.conf"),
            "[program:good]\ncommand=/bin/true\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)02d\n\
             [program:typo]\ncomand=/bin/true\n\
             [program:nocmd]\nautostart=true\n\
             [program:who]\ncommand=/bin/true\nuser=ghost\n",
        )
        .unwrap();
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        load(d.path(), &mut specs, &mut errors);
        let names: Vec<_> = specs.iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            names,
            ["good:good_00", "good:good_01", "typo", "nocmd", "who"]
        );
        let e: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let f = conf.join("a.conf").display().to_string();
        assert_eq!(
            e[0],
            format!("{f}:6: unknown key 'comand' in [program:typo]")
        );
        assert_eq!(e[1], format!("{f}:7: [program:nocmd] has no command"));
        assert!(
            e[2].starts_with(&format!("{f}:11: user 'ghost' does not exist")),
            "{}",
            e[2]
        );
        assert!(specs[2].broken.is_some() && specs[0].broken.is_none());
    }
}

//! The container policy: "a VM is not a container". What a booted machine's disk holds that an
//! image must not (kernel pseudo-filesystem contents, the kernel and its modules, swap files,
//! terabyte-sized hole-filled login logs), applied as a filter between any `FileTree` and the
//! layer writer, with a report of what was left out and why.
//!
//! The default rules are data: one table, `DEFAULT_RULES`, each rule with its patterns (see
//! `crate::glob` for the syntax), the kinds of entry it applies to, what it does, and the reason
//! shown to the user. User options add `--exclude` and `--include` globs.
//!
//! Semantics:
//! - A rule or `--exclude` that matches a directory leaves out everything below it too. Rules
//!   that should only empty a directory say so by matching its contents (`/proc/*`), so the
//!   directory itself stays (the runtime mounts over it).
//! - `--include` wins over `--exclude` and over the default rules, for the path it matches and,
//!   when that is a directory, for everything below it. When an included path lies below an
//!   excluded directory, the directories on the way are put back so the tree stays whole.
//! - Order of precedence for an entry: its own `--include` match, then the nearest decided
//!   ancestor, then `--exclude`, then the default rules in table order, then the hole-filled-file
//!   check.
//! - A hard link (`EntryKind::Hardlink`) whose target was left out is left out as well (its data
//!   went with the target) and reported in its own group. For this the filter remembers the
//!   paths of the regular files it left out (bounded by the size of the tree).

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read};

use snapshot::{Entry, EntryKind, FileTree};

use crate::glob::{Glob, GlobError};

/// What a rule does to the entries it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the entry out (and, for a directory, everything below it).
    Exclude,
    /// Keep the entry as an empty file with the same metadata; report its apparent size.
    Truncate,
}

/// Which entries a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Any,
    Dirs,
    Files,
    Symlinks,
}

/// The user option that turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unless {
    Never,
    KeepBoot,
    KeepModules,
}

/// One default rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub patterns: &'static [&'static str],
    pub applies: Applies,
    pub action: Action,
    pub unless: Unless,
    pub reason: &'static str,
}

/// The default rules, in the order they are tried and reported.
pub const DEFAULT_RULES: &[Rule] = &[
    Rule {
        patterns: &["/proc/*", "/sys/*"],
        applies: Applies::Any,
        action: Action::Exclude,
        unless: Unless::Never,
        reason: "kernel pseudo-filesystem contents (/proc, /sys): the runtime mounts its own",
    },
    Rule {
        patterns: &["/dev/*"],
        applies: Applies::Any,
        action: Action::Exclude,
        unless: Unless::Never,
        reason: "device nodes (/dev): the runtime provides /dev",
    },
    Rule {
        // /var/run is usually a symlink to /run and then has no contents here: the link stays.
        patterns: &["/run/*", "/var/run/*", "/tmp/*"],
        applies: Applies::Any,
        action: Action::Exclude,
        unless: Unless::Never,
        reason: "runtime and temporary files (/run, /var/run, /tmp) are emptied at boot",
    },
    Rule {
        patterns: &["lost+found"],
        applies: Applies::Dirs,
        action: Action::Exclude,
        unless: Unless::Never,
        reason: "fsck's lost+found directories belong to the filesystem, not the system",
    },
    Rule {
        // Top level only: `*.swap` elsewhere are systemd swap units, which are small text files.
        patterns: &["/swapfile", "/swap.img", "/*.swap"],
        applies: Applies::Files,
        action: Action::Exclude,
        unless: Unless::Never,
        reason: "swap files",
    },
    Rule {
        patterns: &[
            "/boot/vmlinuz*",
            "/boot/vmlinux*",
            "/boot/initrd*",
            "/boot/initramfs*",
            "/boot/System.map*",
            "/boot/config-*",
        ],
        applies: Applies::Any,
        action: Action::Exclude,
        unless: Unless::KeepBoot,
        reason: "kernel, initramfs and their maps in /boot (a container runs on the host's kernel; --keep-boot keeps them)",
    },
    Rule {
        patterns: &["/vmlinuz", "/vmlinuz.old", "/initrd.img", "/initrd.img.old"],
        applies: Applies::Symlinks,
        action: Action::Exclude,
        unless: Unless::KeepBoot,
        reason: "top-level links to the kernel and initramfs (they would dangle; --keep-boot keeps them)",
    },
    Rule {
        patterns: &["/lib/modules/*", "/usr/lib/modules/*"],
        applies: Applies::Any,
        action: Action::Exclude,
        unless: Unless::KeepModules,
        reason: "kernel modules (a container cannot load them; --keep-modules keeps them)",
    },
    Rule {
        patterns: &["/var/log/lastlog", "/var/log/faillog", "/var/log/tallylog"],
        applies: Applies::Files,
        action: Action::Truncate,
        unless: Unless::Never,
        reason: "login records sized by the highest UID (mostly holes)",
    },
];

/// What the user can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOptions {
    pub keep_boot: bool,
    pub keep_modules: bool,
    /// Globs of paths to leave out (see `crate::glob`).
    pub exclude: Vec<String>,
    /// Globs of paths to keep whatever else says; include wins over exclude and the rules.
    pub include: Vec<String>,
    /// A regular file larger than this whose allocated size is under an eighth of its size is
    /// truncated to empty (a hole-filled log). Only applies where the source knows `allocated`.
    pub max_sparse_log: u64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            keep_boot: false,
            keep_modules: false,
            exclude: Vec::new(),
            include: Vec::new(),
            max_sparse_log: 64 << 20,
        }
    }
}

struct CompiledRule {
    rule: &'static Rule,
    globs: Vec<Glob>,
}

/// The compiled policy: active default rules and the user's globs.
pub struct Policy {
    rules: Vec<(usize, CompiledRule)>,
    exclude: Vec<Glob>,
    include: Vec<Glob>,
    max_sparse_log: u64,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules.len())
            .field("exclude", &self.exclude)
            .field("include", &self.include)
            .field("max_sparse_log", &self.max_sparse_log)
            .finish()
    }
}

impl Default for Policy {
    fn default() -> Self {
        // The built-in patterns are constants and compile; an empty option set adds nothing.
        Policy::new(PolicyOptions::default()).unwrap_or(Policy {
            rules: Vec::new(),
            exclude: Vec::new(),
            include: Vec::new(),
            max_sparse_log: 64 << 20,
        })
    }
}

impl Policy {
    /// Compiles the default rules (minus those the options turn off) and the user's globs.
    pub fn new(options: PolicyOptions) -> Result<Policy, GlobError> {
        let mut rules = Vec::new();
        for (i, rule) in DEFAULT_RULES.iter().enumerate() {
            let off = match rule.unless {
                Unless::Never => false,
                Unless::KeepBoot => options.keep_boot,
                Unless::KeepModules => options.keep_modules,
            };
            if off {
                continue;
            }
            let globs = rule
                .patterns
                .iter()
                .map(|p| Glob::new(p))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push((i, CompiledRule { rule, globs }));
        }
        let compile = |v: &[String]| {
            v.iter()
                .map(|p| Glob::new(p))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            rules,
            exclude: compile(&options.exclude)?,
            include: compile(&options.include)?,
            max_sparse_log: options.max_sparse_log,
        })
    }
}

/// Entries left out for one reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExcludedGroup {
    /// Why, for the user.
    pub reason: String,
    /// The patterns of the rule (or the user's glob).
    pub rule: String,
    /// Entries left out (a directory and everything below it all count).
    pub count: u64,
    /// Sum of the sizes of the regular files left out.
    pub bytes: u64,
}

/// What the policy did, for the import summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyReport {
    /// Groups in a stable order: default rules in table order, then `--exclude` globs in the
    /// order given, then hard links to left-out files. Only groups that left something out.
    pub excluded: Vec<ExcludedGroup>,
    /// Files kept empty, with their apparent size, in path order.
    pub truncated: Vec<(String, u64)>,
    /// Entries passed through (truncated ones and put-back directories included).
    pub kept: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Rule(usize),
    User(usize),
    LinkToExcluded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Keep,
    Include,
    Exclude(GroupKey),
    Truncate,
}

#[derive(Debug)]
enum FrameState {
    Kept,
    Included,
    Excluded {
        group: GroupKey,
        /// The directory's entry, kept in case an include below it needs it put back.
        entry: Option<Entry>,
    },
}

#[derive(Debug)]
struct Frame {
    path: Vec<u8>,
    state: FrameState,
}

/// Whether the entry being served has content from the inner tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    Empty,
    Inner,
}

/// A `FileTree` that applies a `Policy` to another.
pub struct PolicyFilter<T: FileTree> {
    inner: T,
    policy: Policy,
    report: PolicyReport,
    ranks: Vec<GroupKey>,
    stack: Vec<Frame>,
    queue: VecDeque<(Entry, Serve)>,
    serve: Serve,
    excluded_files: HashSet<Vec<u8>>,
    empty: io::Empty,
}

impl<T: FileTree> PolicyFilter<T> {
    pub fn new(inner: T, policy: Policy) -> Self {
        PolicyFilter {
            inner,
            policy,
            report: PolicyReport::default(),
            ranks: Vec::new(),
            stack: Vec::new(),
            queue: VecDeque::new(),
            serve: Serve::Empty,
            excluded_files: HashSet::new(),
            empty: io::empty(),
        }
    }

    /// What has been left out or truncated so far (complete once `next_entry` returned `None`).
    pub fn report(&self) -> &PolicyReport {
        &self.report
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn group_mut(&mut self, key: GroupKey) -> &mut ExcludedGroup {
        let at = match self.ranks.binary_search(&key) {
            Ok(i) => i,
            Err(i) => {
                let (reason, rule) = match key {
                    GroupKey::Rule(r) => {
                        let rule = DEFAULT_RULES.get(r);
                        (
                            rule.map(|r| r.reason.to_string()).unwrap_or_default(),
                            rule.map(|r| r.patterns.join(" ")).unwrap_or_default(),
                        )
                    }
                    GroupKey::User(u) => {
                        let g = self.policy.exclude.get(u).map(|g| g.as_str().to_string());
                        let g = g.unwrap_or_default();
                        (format!("excluded by --exclude {g}"), g)
                    }
                    GroupKey::LinkToExcluded => (
                        "hard links to files that were left out".to_string(),
                        String::new(),
                    ),
                };
                self.ranks.insert(i, key);
                self.report.excluded.insert(
                    i,
                    ExcludedGroup {
                        reason,
                        rule,
                        count: 0,
                        bytes: 0,
                    },
                );
                i
            }
        };
        // `at` is a valid index: found, or just inserted there.
        &mut self.report.excluded[at]
    }

    fn decide(&self, e: &Entry) -> Decision {
        let p = &e.path;
        if self.policy.include.iter().any(|g| g.matches(p)) {
            return Decision::Include;
        }
        match self.stack.last().map(|f| &f.state) {
            Some(FrameState::Included) => return Decision::Include,
            Some(FrameState::Excluded { group, .. }) => return Decision::Exclude(*group),
            _ => {}
        }
        if let Some(i) = self.policy.exclude.iter().position(|g| g.matches(p)) {
            return Decision::Exclude(GroupKey::User(i));
        }
        for (i, c) in &self.policy.rules {
            let applies = match c.rule.applies {
                Applies::Any => true,
                Applies::Dirs => e.kind == EntryKind::Dir,
                Applies::Files => e.kind == EntryKind::File,
                Applies::Symlinks => e.kind == EntryKind::Symlink,
            };
            if applies && c.globs.iter().any(|g| g.matches(p)) {
                return match c.rule.action {
                    Action::Exclude => Decision::Exclude(GroupKey::Rule(*i)),
                    Action::Truncate => Decision::Truncate,
                };
            }
        }
        let hole_filled = e.kind == EntryKind::File
            && e.size > self.policy.max_sparse_log
            && e.allocated.is_some_and(|a| a < e.size / 8);
        if hole_filled {
            return Decision::Truncate;
        }
        Decision::Keep
    }
}

fn is_ancestor(dir: &[u8], path: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.get(dir.len()) == Some(&b'/')
}

impl<T: FileTree> FileTree for PolicyFilter<T> {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        loop {
            if let Some((e, serve)) = self.queue.pop_front() {
                self.serve = serve;
                return Ok(Some(e));
            }
            self.serve = Serve::Empty;
            let Some(mut e) = self.inner.next_entry()? else {
                return Ok(None);
            };
            while self
                .stack
                .last()
                .is_some_and(|f| !is_ancestor(&f.path, &e.path))
            {
                self.stack.pop();
            }
            let mut decision = self.decide(&e);
            if matches!(decision, Decision::Keep | Decision::Include)
                && e.kind == EntryKind::Hardlink
                && e.link_target
                    .as_ref()
                    .is_some_and(|t| self.excluded_files.contains(t))
            {
                decision = Decision::Exclude(GroupKey::LinkToExcluded);
            }
            match decision {
                Decision::Exclude(group) => {
                    let g = self.group_mut(group);
                    g.count += 1;
                    if e.kind == EntryKind::File {
                        g.bytes = g.bytes.saturating_add(e.size);
                        self.excluded_files.insert(e.path.clone());
                    }
                    if e.kind == EntryKind::Dir {
                        self.stack.push(Frame {
                            path: e.path.clone(),
                            state: FrameState::Excluded {
                                group,
                                entry: Some(e),
                            },
                        });
                    }
                }
                Decision::Keep | Decision::Include | Decision::Truncate => {
                    // Put back excluded directories on the way to an included entry.
                    let mut restored = Vec::new();
                    for f in &mut self.stack {
                        if let FrameState::Excluded { group, entry } = &mut f.state {
                            if let Some(dir) = entry.take() {
                                restored.push((*group, dir));
                            }
                        }
                    }
                    for (group, dir) in restored {
                        let g = self.group_mut(group);
                        g.count = g.count.saturating_sub(1);
                        if g.count == 0 {
                            if let Ok(i) = self.ranks.binary_search(&group) {
                                self.ranks.remove(i);
                                self.report.excluded.remove(i);
                            }
                        }
                        self.report.kept += 1;
                        self.queue.push_back((dir, Serve::Empty));
                    }
                    let mut serve = Serve::Inner;
                    if decision == Decision::Truncate {
                        self.report.truncated.push((e.display_path(), e.size));
                        e.size = 0;
                        e.allocated = Some(0);
                        serve = Serve::Empty;
                    }
                    if e.kind == EntryKind::Dir {
                        let state = if decision == Decision::Include {
                            FrameState::Included
                        } else {
                            FrameState::Kept
                        };
                        self.stack.push(Frame {
                            path: e.path.clone(),
                            state,
                        });
                    }
                    self.report.kept += 1;
                    self.queue.push_back((e, serve));
                }
            }
        }
    }

    fn content(&mut self) -> &mut dyn Read {
        match self.serve {
            Serve::Inner => self.inner.content(),
            Serve::Empty => &mut self.empty,
        }
    }
}

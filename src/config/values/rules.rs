//! The table of checked configuration keys: each key with how its value is
//! checked and the message a bad value gets, in the order they are checked.
//!
//! Owns what a valid value is, key by key; reporting (file, line, key) is
//! `values::validate`'s. Must not read files or the environment, and must
//! keep every message word for word (users and tests match on them).

use std::net::IpAddr;

use super::{memory_ok, parse_duration, parse_size};
use crate::config::schema::Settings;

/// How the value of one key is checked; a failed check says what is wrong.
pub(super) enum Check {
    /// A string, when set, that is not blank and holds no NUL byte
    /// ("must not be empty").
    NonEmpty(fn(&Settings) -> Option<&String>),
    /// A whole number, when set, from `lo` to `hi`; else "N is not `what`".
    Number {
        get: fn(&Settings) -> Option<i64>,
        lo: i64,
        hi: i64,
        what: &'static str,
    },
    /// Each value set (the one value, or every item of a list) passes `check`.
    Each {
        get: fn(&Settings) -> Vec<&str>,
        check: fn(&str) -> Result<(), String>,
    },
    /// A check of its own over the whole key.
    Other(fn(&Settings) -> Result<(), String>),
}

impl Check {
    /// What is wrong with the key's value in `s`, if anything.
    pub(super) fn run(&self, s: &Settings) -> Result<(), String> {
        match self {
            Check::NonEmpty(get) => match get(s) {
                Some(v) if v.trim().is_empty() || v.contains('\0') => {
                    Err("must not be empty".to_string())
                }
                _ => Ok(()),
            },
            Check::Number { get, lo, hi, what } => match get(s) {
                Some(n) if !(*lo..=*hi).contains(&n) => Err(format!("{n} is not {what}")),
                _ => Ok(()),
            },
            Check::Each { get, check } => get(s).into_iter().try_for_each(check),
            Check::Other(check) => check(s),
        }
    }
}

/// One checked key: `section.key` and how its value is checked.
pub(super) struct Rule {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    pub(super) check: Check,
}

/// The values of an optional string, as a list of none or one.
fn one(v: &Option<String>) -> Vec<&str> {
    v.as_deref().into_iter().collect()
}

/// The items of an optional list.
fn all(v: &Option<Vec<String>>) -> Vec<&str> {
    v.iter().flatten().map(String::as_str).collect()
}

/// Every checked key, in the order checked: the first bad value is reported.
pub(super) const RULES: &[Rule] = &[
    Rule {
        section: "defaults",
        key: "image",
        check: Check::NonEmpty(|s| s.defaults.as_ref()?.image.as_ref()),
    },
    Rule {
        section: "defaults",
        key: "profile",
        check: Check::NonEmpty(|s| s.defaults.as_ref()?.profile.as_ref()),
    },
    Rule {
        section: "defaults",
        key: "slot_limit",
        check: Check::Number {
            get: |s| s.defaults.as_ref()?.slot_limit,
            lo: 1,
            hi: 999,
            what: "a number from 1 to 999",
        },
    },
    Rule {
        section: "defaults",
        key: "environment",
        check: Check::Other(environment_ok),
    },
    Rule {
        section: "tool",
        key: "name",
        check: Check::Each {
            get: |s| s.tool.as_ref().map(|t| one(&t.name)).unwrap_or_default(),
            check: agent_ok,
        },
    },
    Rule {
        section: "tool",
        key: "binary",
        check: Check::NonEmpty(|s| s.tool.as_ref()?.binary.as_ref()),
    },
    Rule {
        section: "tool",
        key: "credentials_dir",
        check: Check::NonEmpty(|s| s.tool.as_ref()?.credentials_dir.as_ref()),
    },
    Rule {
        section: "tool",
        key: "args",
        check: Check::Each {
            get: |s| s.tool.as_ref().map(|t| all(&t.args)).unwrap_or_default(),
            check: |a| match a.contains('\0') {
                true => Err("an argument holds a NUL byte".into()),
                false => Ok(()),
            },
        },
    },
    Rule {
        section: "paths",
        key: "sessions_dir",
        check: Check::NonEmpty(|s| s.paths.as_ref()?.sessions_dir.as_ref()),
    },
    Rule {
        section: "paths",
        key: "storage_dir",
        check: Check::NonEmpty(|s| s.paths.as_ref()?.storage_dir.as_ref()),
    },
    Rule {
        section: "paths",
        key: "logs_dir",
        check: Check::NonEmpty(|s| s.paths.as_ref()?.logs_dir.as_ref()),
    },
    Rule {
        section: "incus",
        key: "socket",
        check: Check::NonEmpty(|s| s.incus.as_ref()?.socket.as_ref()),
    },
    Rule {
        section: "incus",
        key: "project",
        check: Check::NonEmpty(|s| s.incus.as_ref()?.project.as_ref()),
    },
    Rule {
        section: "incus",
        key: "storage_pool",
        check: Check::NonEmpty(|s| s.incus.as_ref()?.storage_pool.as_ref()),
    },
    Rule {
        section: "incus",
        key: "code_uid",
        check: Check::Number {
            get: |s| s.incus.as_ref()?.code_uid,
            lo: 0,
            hi: 65535,
            what: "a uid from 0 to 65535",
        },
    },
    Rule {
        section: "incus",
        key: "code_user",
        check: Check::Each {
            get: |s| {
                s.incus
                    .as_ref()
                    .map(|i| one(&i.code_user))
                    .unwrap_or_default()
            },
            check: user_ok,
        },
    },
    Rule {
        section: "incus",
        key: "group",
        check: Check::Each {
            get: |s| s.incus.as_ref().map(|i| one(&i.group)).unwrap_or_default(),
            check: group_ok,
        },
    },
    Rule {
        section: "notify",
        key: "webhook",
        check: Check::Each {
            get: |s| {
                s.notify
                    .as_ref()
                    .map(|n| one(&n.webhook))
                    .unwrap_or_default()
            },
            check: |u| match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Ok(())
                }
                _ => Err(format!("{u:?} is not an http:// or https:// URL")),
            },
        },
    },
    Rule {
        section: "notify",
        key: "command",
        check: Check::Other(
            |s| match s.notify.as_ref().and_then(|n| n.command.as_ref()) {
                Some(c) if c.first().is_none_or(|p| p.trim().is_empty()) => {
                    Err("the first entry must name a program".into())
                }
                _ => Ok(()),
            },
        ),
    },
    Rule {
        section: "tool",
        key: "api_url",
        check: Check::Each {
            get: |s| s.tool.as_ref().map(|t| one(&t.api_url)).unwrap_or_default(),
            check: |u| crate::forge::parse_host_entry(&format!("api={u}")).map(|_| ()),
        },
    },
    Rule {
        section: "git",
        key: "forward_hosts",
        check: Check::Each {
            get: |s| {
                s.git
                    .as_ref()
                    .map(|g| all(&g.forward_hosts))
                    .unwrap_or_default()
            },
            check: |h| crate::forge::parse_host_entry(h).map(|_| ()),
        },
    },
    Rule {
        section: "git",
        key: "push_branches",
        check: Check::Each {
            get: |s| {
                s.git
                    .as_ref()
                    .map(|g| all(&g.push_branches))
                    .unwrap_or_default()
            },
            check: |p| {
                if p.is_empty()
                    || p.starts_with("refs/")
                    || p.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    Err(format!("{p:?} is not a branch pattern (e.g. \"cci/**\")"))
                } else {
                    Ok(())
                }
            },
        },
    },
    Rule {
        section: "git",
        key: "repos",
        check: Check::Each {
            get: |s| s.git.as_ref().map(|g| all(&g.repos)).unwrap_or_default(),
            check: |p| {
                if p.trim().is_empty() || p.chars().any(char::is_control) {
                    Err(format!("{p:?} is not a folder path"))
                } else {
                    Ok(())
                }
            },
        },
    },
    Rule {
        section: "workspace",
        key: "protected_paths",
        check: Check::Each {
            get: |s| {
                s.workspace
                    .as_ref()
                    .map(|w| all(&w.protected_paths))
                    .unwrap_or_default()
            },
            check: crate::config::protected_path_ok,
        },
    },
    Rule {
        section: "incus",
        key: "allow_syscalls",
        check: Check::Each {
            get: |s| {
                s.incus
                    .as_ref()
                    .map(|i| all(&i.allow_syscalls))
                    .unwrap_or_default()
            },
            check: syscall_ok,
        },
    },
    Rule {
        section: "network",
        key: "allowed_domains",
        check: Check::Each {
            get: |s| {
                s.network
                    .as_ref()
                    .map(|n| all(&n.allowed_domains))
                    .unwrap_or_default()
            },
            check: |a| {
                // An address, range or name (both modes), or a wildcard or
                // NAME:PORT (proxy mode).
                crate::config::AllowEntry::parse(a)
                    .map(|_| ())
                    .or_else(|e| {
                        crate::proxy::Rule::parse(a, true)
                            .map(|_| ())
                            .map_err(|_| e.to_string())
                    })
            },
        },
    },
    Rule {
        section: "network",
        key: "refresh_interval_minutes",
        check: Check::Other(refresh_ok),
    },
    Rule {
        section: "network",
        key: "dns_servers",
        check: Check::Each {
            get: |s| {
                s.network
                    .as_ref()
                    .map(|n| all(&n.dns_servers))
                    .unwrap_or_default()
            },
            check: |d| match d.trim().parse::<IpAddr>() {
                Ok(_) => Ok(()),
                Err(_) => Err(format!("{d:?} is not an IP address")),
            },
        },
    },
    Rule {
        section: "limits",
        key: "cpu",
        check: Check::Number {
            get: |s| s.limits.as_ref()?.cpu,
            lo: 1,
            hi: 1024,
            what: "a number of CPUs from 1 to 1024",
        },
    },
    Rule {
        section: "limits",
        key: "processes",
        check: Check::Number {
            get: |s| s.limits.as_ref()?.processes,
            lo: 16,
            hi: 10_000_000,
            what: "a number from 16 to 10000000",
        },
    },
    Rule {
        section: "limits",
        key: "memory",
        check: Check::Each {
            get: |s| {
                s.limits
                    .as_ref()
                    .map(|l| one(&l.memory))
                    .unwrap_or_default()
            },
            check: |m| match memory_ok(m) {
                true => Ok(()),
                false => Err(format!(
                    "{m:?} is not a size (like 4GiB or 512MiB, at least 64MiB) or a percentage (1% to 100%)"
                )),
            },
        },
    },
    Rule {
        section: "limits",
        key: "disk",
        check: Check::Each {
            get: |s| s.limits.as_ref().map(|l| one(&l.disk)).unwrap_or_default(),
            check: |d| match parse_size(d).is_some_and(|b| b >= 64 << 20) {
                true => Ok(()),
                false => Err(format!("{d:?} is not a size like 20GiB (at least 64MiB)")),
            },
        },
    },
    Rule {
        section: "limits",
        key: "max_duration",
        check: Check::Each {
            get: |s| {
                s.limits
                    .as_ref()
                    .map(|l| one(&l.max_duration))
                    .unwrap_or_default()
            },
            check: |d| match parse_duration(d) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "{d:?} is not a duration like 90m, 2h or 1h30m (1s to 365d)"
                )),
            },
        },
    },
    Rule {
        section: "session",
        key: "max_bytes",
        check: Check::Number {
            get: |s| s.session.as_ref()?.max_bytes,
            lo: 1024,
            hi: 1 << 40,
            what: "a number of bytes from 1024 to 1 TiB",
        },
    },
    Rule {
        section: "session",
        key: "max_files",
        check: Check::Number {
            get: |s| s.session.as_ref()?.max_files,
            lo: 1,
            hi: 100_000_000,
            what: "a number from 1 to 100000000",
        },
    },
    Rule {
        section: "session",
        key: "max_depth",
        check: Check::Number {
            get: |s| s.session.as_ref()?.max_depth,
            lo: 1,
            hi: 4096,
            what: "a number from 1 to 4096",
        },
    },
    Rule {
        section: "caches",
        key: "max_size",
        check: Check::Each {
            get: |s| {
                s.caches
                    .as_ref()
                    .map(|c| one(&c.max_size))
                    .unwrap_or_default()
            },
            check: |d| match parse_size(d).is_some_and(|b| b >= 16 << 20) {
                true => Ok(()),
                false => Err(format!("{d:?} is not a size like 10GiB (at least 16MiB)")),
            },
        },
    },
    Rule {
        section: "snapshots",
        key: "keep",
        check: Check::Number {
            get: |s| s.snapshots.as_ref()?.keep,
            lo: 1,
            hi: 1000,
            what: "a number from 1 to 1000",
        },
    },
    Rule {
        section: "session",
        key: "record_max_bytes",
        check: Check::Number {
            get: |s| s.session.as_ref()?.record_max_bytes,
            lo: 4096,
            hi: 16 << 20,
            what: "a number from 4096 to 16777216",
        },
    },
];

/// `defaults.environment`: variable names (letters, digits and '_', not
/// starting with a digit) with values free of NUL bytes.
fn environment_ok(s: &Settings) -> Result<(), String> {
    let vars = s.defaults.as_ref().and_then(|d| d.environment.as_ref());
    for (k, v) in vars.into_iter().flatten() {
        let ok = !k.is_empty()
            && !k.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !v.contains('\0');
        if !ok {
            return Err(format!(
                "{k:?} is not a variable name (letters, digits and '_') with a value"
            ));
        }
    }
    Ok(())
}

/// `tool.name`: one of the agents cci knows.
fn agent_ok(name: &str) -> Result<(), String> {
    if crate::config::AGENT_NAMES.contains(&name) {
        return Ok(());
    }
    Err(format!(
        "unknown agent {name:?}; known agents: {}",
        crate::config::AGENT_NAMES.join(", ")
    ))
}

/// `incus.code_user`: a user name as `useradd` takes it.
fn user_ok(u: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&u.len())
        && u.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{u:?} is not a user name (lower-case letters, digits, '_' and '-')"
        )),
    }
}

/// `incus.group`: a group name.
fn group_ok(g: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&g.len())
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!("{g:?} is not a group name")),
    }
}

/// `incus.allow_syscalls`: one of the calls cci denies by default.
fn syscall_ok(name: &str) -> Result<(), String> {
    if crate::config::KERNEL_DENY.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    let names: Vec<&str> = crate::config::KERNEL_DENY.iter().map(|(n, _)| *n).collect();
    Err(format!("{name:?} is not one of {}", names.join(", ")))
}

/// `network.refresh_interval_minutes`: minutes as the watcher takes them.
fn refresh_ok(s: &Settings) -> Result<(), String> {
    match s.network.as_ref().and_then(|n| n.refresh_interval_minutes) {
        Some(m) if crate::config::parse_minutes(&m.to_string()).is_none() => Err(format!(
            "{m} is not a number of minutes between 0 and 10080"
        )),
        _ => Ok(()),
    }
}

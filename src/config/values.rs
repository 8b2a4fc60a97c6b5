//! Checking values, with the file, line and key of a bad one; sizes,
//! durations and paths.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::Settings;
use super::{ConfigError, line_of};

/// Keys whose values are host paths (made absolute against their file's folder).
pub const PATH_KEYS: &[&str] = &[
    "tool.credentials_dir",
    "paths.sessions_dir",
    "paths.storage_dir",
    "paths.logs_dir",
    "incus.socket",
];

/// `~` and `~/...` expanded to the home folder.
pub fn expand_home(p: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h,
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(p),
    }
}

/// `~` expanded and a relative path joined to `base`.
pub fn absolute(p: &str, base: &Path) -> PathBuf {
    let expanded = expand_home(p);
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// `4GiB`, `512MiB`, `1.5G`, `100000` (bytes) -> bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = if split == 0 {
        return None;
    } else {
        s.split_at(split)
    };
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024f64.powi(2),
        "GiB" | "G" => 1024f64.powi(3),
        "TiB" | "T" => 1024f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && (1.0..1e18).contains(&v)).then_some(v as u64)
}

/// `90m`, `2h`, `1h30m`, `45s`, `1d` -> a duration (at least a second).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        })?)?;
    }
    if !num.is_empty() {
        return None;
    }
    (1..=365 * 86_400)
        .contains(&total)
        .then(|| Duration::from_secs(total))
}

fn check(
    ok: bool,
    text: &str,
    source: &str,
    section: &str,
    key: &str,
    message: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if ok {
        return Ok(());
    }
    Err(ConfigError {
        file: source.into(),
        line: line_of(text, section, Some(key)),
        key: Some(format!("{section}.{key}")),
        message: message(),
    })
}

fn nonempty(v: &Option<String>) -> bool {
    v.as_ref()
        .is_none_or(|s| !s.trim().is_empty() && !s.contains('\0'))
}

fn in_range(v: Option<i64>, lo: i64, hi: i64) -> bool {
    v.is_none_or(|n| (lo..=hi).contains(&n))
}

/// Check the values of `s` (in section names, `prefix` is the profile's `profiles.NAME.`).
pub fn validate(s: &Settings, text: &str, source: &str, prefix: &str) -> Result<(), ConfigError> {
    let sec = |name: &str| format!("{prefix}{name}");
    let empty = || "must not be empty".to_string();
    if let Some(d) = &s.defaults {
        let section = sec("defaults");
        check(nonempty(&d.image), text, source, &section, "image", empty)?;
        check(
            nonempty(&d.profile),
            text,
            source,
            &section,
            "profile",
            empty,
        )?;
        check(
            in_range(d.slot_limit, 1, 999),
            text,
            source,
            &section,
            "slot_limit",
            || {
                format!(
                    "{} is not a number from 1 to 999",
                    d.slot_limit.unwrap_or(0)
                )
            },
        )?;
        for (k, v) in d.environment.iter().flatten() {
            let ok = !k.is_empty()
                && !k.bytes().next().is_some_and(|b| b.is_ascii_digit())
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.contains('\0');
            check(ok, text, source, &section, "environment", || {
                format!("{k:?} is not a variable name (letters, digits and '_') with a value")
            })?;
        }
    }
    if let Some(t) = &s.tool {
        let section = sec("tool");
        if let Some(name) = &t.name {
            let known = crate::sandbox::AGENTS.iter().any(|a| a.name == name);
            check(known, text, source, &section, "name", || {
                let names: Vec<&str> = crate::sandbox::AGENTS.iter().map(|a| a.name).collect();
                format!("unknown agent {name:?}; known agents: {}", names.join(", "))
            })?;
        }
        check(nonempty(&t.binary), text, source, &section, "binary", empty)?;
        check(
            nonempty(&t.credentials_dir),
            text,
            source,
            &section,
            "credentials_dir",
            empty,
        )?;
        let args_ok = t.args.iter().flatten().all(|a| !a.contains('\0'));
        check(args_ok, text, source, &section, "args", || {
            "an argument holds a NUL byte".into()
        })?;
    }
    if let Some(p) = &s.paths {
        let section = sec("paths");
        check(
            nonempty(&p.sessions_dir),
            text,
            source,
            &section,
            "sessions_dir",
            empty,
        )?;
        check(
            nonempty(&p.storage_dir),
            text,
            source,
            &section,
            "storage_dir",
            empty,
        )?;
        check(
            nonempty(&p.logs_dir),
            text,
            source,
            &section,
            "logs_dir",
            empty,
        )?;
    }
    if let Some(i) = &s.incus {
        let section = sec("incus");
        check(nonempty(&i.socket), text, source, &section, "socket", empty)?;
        check(
            nonempty(&i.project),
            text,
            source,
            &section,
            "project",
            empty,
        )?;
        check(
            nonempty(&i.storage_pool),
            text,
            source,
            &section,
            "storage_pool",
            empty,
        )?;
        check(
            in_range(i.code_uid, 0, 65535),
            text,
            source,
            &section,
            "code_uid",
            || format!("{} is not a uid from 0 to 65535", i.code_uid.unwrap_or(0)),
        )?;
        if let Some(u) = &i.code_user {
            let ok = (1..=32).contains(&u.len())
                && u.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && u.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            check(ok, text, source, &section, "code_user", || {
                format!("{u:?} is not a user name (lower-case letters, digits, '_' and '-')")
            })?;
        }
        if let Some(g) = &i.group {
            let ok = (1..=32).contains(&g.len())
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            check(ok, text, source, &section, "group", || {
                format!("{g:?} is not a group name")
            })?;
        }
        for name in i.allow_syscalls.iter().flatten() {
            let known = crate::sandbox::KERNEL_DENY.iter().any(|(n, _)| n == name);
            check(known, text, source, &section, "allow_syscalls", || {
                let names: Vec<&str> = crate::sandbox::KERNEL_DENY
                    .iter()
                    .map(|(n, _)| *n)
                    .collect();
                format!("{name:?} is not one of {}", names.join(", "))
            })?;
        }
    }
    if let Some(n) = &s.network {
        let section = sec("network");
        for a in n.allowed_domains.iter().flatten() {
            let parsed = crate::network::Entry::parse(a);
            check(
                parsed.is_ok(),
                text,
                source,
                &section,
                "allowed_domains",
                || parsed.err().map(|e| e.to_string()).unwrap_or_default(),
            )?;
        }
        if let Some(m) = n.refresh_interval_minutes {
            let ok = crate::network::parse_minutes(&m.to_string()).is_some();
            check(
                ok,
                text,
                source,
                &section,
                "refresh_interval_minutes",
                || format!("{m} is not a number of minutes between 0 and 10080"),
            )?;
        }
        for d in n.dns_servers.iter().flatten() {
            check(
                d.trim().parse::<IpAddr>().is_ok(),
                text,
                source,
                &section,
                "dns_servers",
                || format!("{d:?} is not an IP address"),
            )?;
        }
    }
    if let Some(l) = &s.limits {
        let section = sec("limits");
        check(
            in_range(l.cpu, 1, 1024),
            text,
            source,
            &section,
            "cpu",
            || {
                format!(
                    "{} is not a number of CPUs from 1 to 1024",
                    l.cpu.unwrap_or(0)
                )
            },
        )?;
        check(
            in_range(l.processes, 16, 10_000_000),
            text,
            source,
            &section,
            "processes",
            || {
                format!(
                    "{} is not a number from 16 to 10000000",
                    l.processes.unwrap_or(0)
                )
            },
        )?;
        if let Some(m) = &l.memory {
            check(memory_ok(m), text, source, &section, "memory", || {
                format!(
                    "{m:?} is not a size (like 4GiB or 512MiB, at least 64MiB) or a percentage (1% to 100%)"
                )
            })?;
        }
        if let Some(d) = &l.disk {
            let ok = parse_size(d).is_some_and(|b| b >= 64 << 20);
            check(ok, text, source, &section, "disk", || {
                format!("{d:?} is not a size like 20GiB (at least 64MiB)")
            })?;
        }
        if let Some(d) = &l.max_duration {
            check(
                parse_duration(d).is_some(),
                text,
                source,
                &section,
                "max_duration",
                || format!("{d:?} is not a duration like 90m, 2h or 1h30m (1s to 365d)"),
            )?;
        }
    }
    if let Some(x) = &s.session {
        let section = sec("session");
        check(
            in_range(x.max_bytes, 1024, 1 << 40),
            text,
            source,
            &section,
            "max_bytes",
            || {
                format!(
                    "{} is not a number of bytes from 1024 to 1 TiB",
                    x.max_bytes.unwrap_or(0)
                )
            },
        )?;
        check(
            in_range(x.max_files, 1, 100_000_000),
            text,
            source,
            &section,
            "max_files",
            || {
                format!(
                    "{} is not a number from 1 to 100000000",
                    x.max_files.unwrap_or(0)
                )
            },
        )?;
        check(
            in_range(x.max_depth, 1, 4096),
            text,
            source,
            &section,
            "max_depth",
            || {
                format!(
                    "{} is not a number from 1 to 4096",
                    x.max_depth.unwrap_or(0)
                )
            },
        )?;
    }
    for m in s.mounts.iter().flatten() {
        let at = || ConfigError {
            file: source.into(),
            line: text
                .lines()
                .position(|l| l.contains(&m.container) || l.contains(&m.host))
                .map(|i| i + 1),
            key: Some(format!("{prefix}mounts")),
            message: String::new(),
        };
        if let Err(why) = check_mount(&m.host, &m.container) {
            return Err(ConfigError {
                message: why,
                ..at()
            });
        }
    }
    Ok(())
}

fn memory_ok(m: &str) -> bool {
    match m.trim().strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| (1..=100).contains(&p)),
        None => parse_size(m).is_some_and(|b| b >= 64 << 20),
    }
}

/// A mount's paths are usable: a host path and an absolute, plain container path.
pub fn check_mount(host: &str, container: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err("a mount needs a host path".into());
    }
    let c = Path::new(container);
    let plain = c.is_absolute()
        && c.components().all(|p| {
            matches!(
                p,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
        && !container.contains('\0');
    if !plain || c == Path::new("/") {
        return Err(format!(
            "container path {container:?} must be absolute, without `..`, and not /"
        ));
    }
    Ok(())
}

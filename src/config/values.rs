//! Checking values (with the file, line and key of a bad one), the
//! environment layer, and the typed effective settings with cci's defaults.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::schema::{ModeName, Settings};
use super::{ConfigError, Flat, line_of};

/// Keys whose values are host paths (made absolute against their file's folder).
pub const PATH_KEYS: &[&str] = &[
    "tool.credentials_dir",
    "paths.sessions_dir",
    "paths.storage_dir",
    "paths.logs_dir",
    "incus.socket",
];

/// `~` expanded and a relative path joined to `base`.
pub fn absolute(p: &str, base: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let expanded = match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h,
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(p),
    };
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

/// Environment variables and the keys they set.
pub const ENV: &[(&str, &str)] = &[
    ("CCI_IMAGE", "defaults.image"),
    ("CCI_PERSISTENT", "defaults.persistent"),
    ("CCI_PROFILE", "defaults.profile"),
    ("CCI_SLOT_LIMIT", "defaults.slot_limit"),
    ("CCI_TOOL", "tool.name"),
    ("CCI_TOOL_BINARY", "tool.binary"),
    ("CCI_CREDENTIALS_DIR", "tool.credentials_dir"),
    ("CCI_SESSIONS_DIR", "paths.sessions_dir"),
    ("CCI_STORAGE_DIR", "paths.storage_dir"),
    ("CCI_LOGS_DIR", "paths.logs_dir"),
    ("CCI_INCUS_PROJECT", "incus.project"),
    ("CCI_STORAGE_POOL", "incus.storage_pool"),
    ("CCI_NETWORK", "network.mode"),
    ("CCI_NETWORK_ALLOW", "network.allowed_domains"),
    ("CCI_DNS_SERVERS", "network.dns_servers"),
    (
        "CCI_NETWORK_REFRESH_MINUTES",
        "network.refresh_interval_minutes",
    ),
    ("CCI_LIMIT_CPU", "limits.cpu"),
    ("CCI_LIMIT_MEMORY", "limits.memory"),
    ("CCI_LIMIT_PROCESSES", "limits.processes"),
    ("CCI_LIMIT_DISK", "limits.disk"),
    ("CCI_MAX_DURATION", "limits.max_duration"),
    ("CCI_SESSION_MAX_BYTES", "session.max_bytes"),
    ("CCI_SESSION_MAX_FILES", "session.max_files"),
    ("CCI_SESSION_MAX_DEPTH", "session.max_depth"),
];

/// The variable that sets `key`.
pub fn env_var_of(key: &str) -> &'static str {
    ENV.iter()
        .find(|(_, k)| *k == key)
        .map(|(v, _)| *v)
        .unwrap_or("CCI_*")
}

/// The `CCI_*` variables as a layer; a bad value names its variable.
pub fn env_layer(env: &BTreeMap<String, String>) -> Result<Flat, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut flat = Flat::new();
    for (var, key) in ENV {
        let Some(raw) = env.get(*var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let bad = |m: String| ConfigError {
            file: "environment".into(),
            line: None,
            key: Some(var.to_string()),
            message: m,
        };
        let list = || -> Value {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect()
        };
        let value = match *key {
            "defaults.persistent" => match raw.trim() {
                "1" | "true" | "yes" => Value::Bool(true),
                "0" | "false" | "no" => Value::Bool(false),
                _ => return Err(bad(format!("{raw:?} is not true or false"))),
            },
            "network.allowed_domains" | "network.dns_servers" => list(),
            "network.refresh_interval_minutes" => match raw.trim().parse::<f64>() {
                Ok(f) => serde_json::json!(f),
                Err(_) => return Err(bad(format!("{raw:?} is not a number"))),
            },
            k if k.starts_with("limits.")
                && !k.ends_with("memory")
                && !k.ends_with("disk")
                && !k.ends_with("max_duration")
                || k.starts_with("session.")
                || k == "defaults.slot_limit" =>
            {
                match raw.trim().parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => return Err(bad(format!("{raw:?} is not a whole number"))),
                }
            }
            k if PATH_KEYS.contains(&k) => {
                Value::String(absolute(raw.trim(), &cwd).display().to_string())
            }
            _ => Value::String(raw.clone()),
        };
        // Checked as a one-key file would be.
        let one: Flat = [(key.to_string(), value.clone())].into();
        let settings: Settings = serde_json::from_value(unflat_value(&one))
            .map_err(|e| bad(e.to_string().replace(" at line 1 column 1", "")))?;
        super::values::validate(&settings, "", "environment", "").map_err(|e| bad(e.message))?;
        flat.insert(key.to_string(), value);
    }
    Ok(flat)
}

fn unflat_value(flat: &Flat) -> Value {
    let mut root = serde_json::Map::new();
    for (k, v) in flat {
        if let Some((s, key)) = k.split_once('.') {
            let e = root
                .entry(s.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(m) = e {
                m.insert(key.into(), v.clone());
            }
        }
    }
    Value::Object(root)
}

/// The user agents and commands run as inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its uid.
    pub uid: u32,
    /// Its gid (the same number).
    pub gid: u32,
    /// Its name.
    pub name: String,
    /// Its home folder.
    pub home: String,
}

impl Account {
    /// The account called `name` with uid `uid`.
    pub fn new(uid: u32, name: &str) -> Account {
        Account {
            uid,
            gid: uid,
            name: name.to_string(),
            home: if name == "root" {
                "/root".into()
            } else {
                format!("/home/{name}")
            },
        }
    }
}

/// A host folder to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Host path (absolute).
    pub host: PathBuf,
    /// Container path.
    pub container: String,
    /// Read-only.
    pub readonly: bool,
}

/// The settings in force, with cci's defaults where nothing was set.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The profile applied.
    pub profile: Option<String>,
    /// Image alias.
    pub image: String,
    /// Keep session containers.
    pub persistent: bool,
    /// Most slots per workspace.
    pub slot_limit: u32,
    /// The agent.
    pub tool: String,
    /// Its program.
    pub tool_binary: Option<String>,
    /// Extra agent arguments.
    pub tool_args: Vec<String>,
    /// Where credentials are read from.
    pub credentials_dir: Option<PathBuf>,
    /// Where saved sessions live.
    pub sessions_dir: Option<PathBuf>,
    /// Mounted at /storage.
    pub storage_dir: Option<PathBuf>,
    /// Diagnostics go to `cci.log` here.
    pub logs_dir: Option<PathBuf>,
    /// The daemon's socket.
    pub socket: Option<PathBuf>,
    /// The Incus project.
    pub project: Option<String>,
    /// The root disks' pool.
    pub storage_pool: Option<String>,
    /// Mount without UID shifting.
    pub disable_shift: bool,
    /// The user inside.
    pub account: Account,
    /// Network mode.
    pub network: ModeName,
    /// Allowlist entries.
    pub allowed: Vec<String>,
    /// Allowlist refresh minutes.
    pub refresh_minutes: f64,
    /// Allowlist DNS servers.
    pub dns_servers: Vec<IpAddr>,
    /// Restricted mode blocks private networks.
    pub block_private: bool,
    /// Restricted mode blocks the metadata endpoint.
    pub block_metadata: bool,
    /// CPUs.
    pub cpu: Option<u32>,
    /// Memory limit (`limits.memory`).
    pub memory: String,
    /// Process limit.
    pub processes: u32,
    /// Root disk size.
    pub disk: Option<String>,
    /// Session time limit.
    pub max_duration: Option<Duration>,
    /// Limits of one saved state.
    pub session: crate::session::Limits,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
}

/// Memory limit when nothing is configured.
pub const DEFAULT_MEMORY: &str = "80%";
/// Process limit when nothing is configured.
pub const DEFAULT_PROCESSES: u32 = 4096;

impl Default for Effective {
    fn default() -> Effective {
        Effective::from_settings(Settings::default())
    }
}

impl Effective {
    /// Typed settings from merged (already checked) ones.
    pub fn from_settings(s: Settings) -> Effective {
        let d = s.defaults.unwrap_or_default();
        let t = s.tool.unwrap_or_default();
        let p = s.paths.unwrap_or_default();
        let i = s.incus.unwrap_or_default();
        let n = s.network.unwrap_or_default();
        let l = s.limits.unwrap_or_default();
        let x = s.session.unwrap_or_default();
        let base = crate::session::Limits::default();
        let path = |v: Option<String>| v.map(PathBuf::from);
        Effective {
            profile: None,
            image: d
                .image
                .unwrap_or_else(|| crate::image::DEFAULT_ALIAS.into()),
            persistent: d.persistent.unwrap_or(false),
            slot_limit: d.slot_limit.map_or(10, |n| n as u32),
            tool: t
                .name
                .unwrap_or_else(|| crate::sandbox::AGENTS[0].name.into()),
            tool_binary: t.binary,
            tool_args: t.args.unwrap_or_default(),
            credentials_dir: path(t.credentials_dir),
            sessions_dir: path(p.sessions_dir),
            storage_dir: path(p.storage_dir),
            logs_dir: path(p.logs_dir),
            socket: path(i.socket),
            project: i.project,
            storage_pool: i.storage_pool,
            disable_shift: i.disable_shift.unwrap_or(false),
            account: Account::new(
                i.code_uid.map_or(1000, |u| u as u32),
                i.code_user.as_deref().unwrap_or("code"),
            ),
            network: n.mode.or(d.network).unwrap_or(ModeName::Restricted),
            allowed: n.allowed_domains.unwrap_or_default(),
            refresh_minutes: n
                .refresh_interval_minutes
                .unwrap_or(crate::network::DEFAULT_REFRESH_MINUTES),
            dns_servers: n
                .dns_servers
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            block_private: n.block_private_networks.unwrap_or(true),
            block_metadata: n.block_metadata_endpoint.unwrap_or(true),
            cpu: l.cpu.map(|c| c as u32),
            memory: l.memory.unwrap_or_else(|| DEFAULT_MEMORY.into()),
            processes: l.processes.map_or(DEFAULT_PROCESSES, |n| n as u32),
            disk: l.disk,
            max_duration: l.max_duration.as_deref().and_then(parse_duration),
            session: crate::session::Limits {
                max_bytes: x.max_bytes.map_or(base.max_bytes, |n| n as u64),
                max_files: x.max_files.map_or(base.max_files, |n| n as u64),
                max_depth: x.max_depth.map_or(base.max_depth, |n| n as usize),
            },
            mounts: s
                .mounts
                .unwrap_or_default()
                .into_iter()
                .map(|m| MountSpec {
                    host: PathBuf::from(m.host),
                    container: m.container,
                    readonly: m.readonly,
                })
                .collect(),
        }
    }
}

impl Effective {
    /// Every key with the value in force (`null`: not set), in reference order.
    pub fn values(&self) -> Vec<(&'static str, Value)> {
        use serde_json::json;
        let path = |p: &Option<PathBuf>| json!(p.as_ref().map(|p| p.display().to_string()));
        let mode = match self.network {
            ModeName::Restricted => "restricted",
            ModeName::Allowlist => "allowlist",
            ModeName::Open => "open",
        };
        vec![
            ("defaults.image", json!(self.image)),
            ("defaults.persistent", json!(self.persistent)),
            ("defaults.slot_limit", json!(self.slot_limit)),
            ("defaults.profile", json!(self.profile)),
            ("tool.name", json!(self.tool)),
            ("tool.binary", json!(self.tool_binary)),
            ("tool.args", json!(self.tool_args)),
            ("tool.credentials_dir", path(&self.credentials_dir)),
            ("paths.sessions_dir", path(&self.sessions_dir)),
            ("paths.storage_dir", path(&self.storage_dir)),
            ("paths.logs_dir", path(&self.logs_dir)),
            ("incus.socket", path(&self.socket)),
            ("incus.project", json!(self.project)),
            ("incus.storage_pool", json!(self.storage_pool)),
            ("incus.disable_shift", json!(self.disable_shift)),
            ("incus.code_uid", json!(self.account.uid)),
            ("incus.code_user", json!(self.account.name)),
            ("network.mode", json!(mode)),
            ("network.allowed_domains", json!(self.allowed)),
            ("network.refresh_interval_minutes", json!(self.refresh_minutes)),
            (
                "network.dns_servers",
                json!(self.dns_servers.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
            ),
            ("network.block_private_networks", json!(self.block_private)),
            ("network.block_metadata_endpoint", json!(self.block_metadata)),
            ("limits.cpu", json!(self.cpu)),
            ("limits.memory", json!(self.memory)),
            ("limits.processes", json!(self.processes)),
            ("limits.disk", json!(self.disk)),
            (
                "limits.max_duration",
                json!(self.max_duration.map(|d| format!("{}s", d.as_secs()))),
            ),
            ("session.max_bytes", json!(self.session.max_bytes)),
            ("session.max_files", json!(self.session.max_files)),
            ("session.max_depth", json!(self.session.max_depth)),
            (
                "mounts",
                json!(self
                    .mounts
                    .iter()
                    .map(|m| json!({"host": m.host.display().to_string(), "container": m.container, "readonly": m.readonly}))
                    .collect::<Vec<_>>()),
            ),
        ]
    }
}

//! The untrusted-config gate. A workspace's `.cci.toml` comes with the
//! repository (and the agent can write it during one session for the next),
//! so on its own it may only tighten cci. The gate is an allowlist: [`RULES`]
//! names each key such a file may set and the one direction it may move it
//! (a stricter network mode, blocks only switched on, an allowlist only
//! narrowed to entries the layers below already admit, limits only lowered);
//! every other key (the image, profile, tool, session, path, Incus and DNS
//! keys, mounts, profile definitions) is ignored. What applied and what was
//! ignored is reported until the user approves that exact file with
//! `cci trust`, which pins its SHA-256; any change needs approval again.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Flat, Merged};

/// Approved workspace files: canonical path -> SHA-256 of the approved text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trusted {
    /// The approvals.
    pub files: BTreeMap<String, String>,
}

/// The SHA-256 of `text`, hex.
pub fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_of(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The approvals in `file` (none when it is missing or unreadable).
pub fn read(file: Option<&Path>) -> Trusted {
    file.and_then(|f| std::fs::read(f).ok())
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// Whether `path` with contents `text` is approved.
pub fn is_trusted(file: Option<&Path>, path: &Path, text: &str) -> bool {
    read(file).files.get(&key_of(path)) == Some(&hash(text))
}

/// Whether `path` was approved once (with other contents, if not trusted now).
pub fn was_trusted(file: Option<&Path>, path: &Path) -> bool {
    read(file).files.contains_key(&key_of(path))
}

/// Approve `path` as it is now (`text`), or withdraw the approval.
pub fn set(file: &Path, path: &Path, text: Option<&str>) -> std::io::Result<()> {
    let mut t = read(Some(file));
    match text {
        Some(text) => t.files.insert(key_of(path), hash(text)),
        None => t.files.remove(&key_of(path)),
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let data = serde_json::to_vec_pretty(&t).map_err(std::io::Error::other)?;
    crate::state::write_atomic(file, &data)
}

/// What an untrusted file may do with a key: the one direction it may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A network mode at least as strict as the one below.
    Stricter,
    /// Only `true` (a block switched on).
    OnlyTrue,
    /// Only `false` (e.g. containers not kept).
    OnlyFalse,
    /// Only this string (the stricter choice of two).
    Only(&'static str),
    /// Only entries the list below admits (an intersection; never an addition).
    Narrow,
    /// Entries added to the list below (a union; never a removal).
    Add,
    /// A limit not above the one below (cci's default when unset below).
    NotAbove(Measure),
}

/// How a limit is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A plain number.
    Count,
    /// Memory: a size or a percentage of the host's memory.
    Memory,
    /// A size (`20GiB`).
    Size,
    /// A duration (`90m`).
    Duration,
}

/// The keys an untrusted workspace file may set, each with its rule. Every
/// key not listed here is ignored.
pub const RULES: &[(&str, Rule)] = &[
    ("network.mode", Rule::Stricter),
    ("network.allowed_domains", Rule::Narrow),
    ("network.on_unknown", Rule::Only("deny")),
    ("network.block_private_networks", Rule::OnlyTrue),
    ("network.block_metadata_endpoint", Rule::OnlyTrue),
    ("defaults.persistent", Rule::OnlyFalse),
    ("defaults.ssh_agent", Rule::OnlyFalse),
    ("workspace.protected_paths", Rule::Add),
    ("workspace.writable_git_hooks", Rule::OnlyFalse),
    ("git.mode", Rule::Only("isolated")),
    ("git.forward", Rule::OnlyFalse),
    ("tool.credentials", Rule::Only("host")),
    ("git.push_default_branch", Rule::OnlyFalse),
    ("git.push_tags", Rule::OnlyFalse),
    ("git.push_ci", Rule::OnlyFalse),
    ("defaults.slot_limit", Rule::NotAbove(Measure::Count)),
    ("limits.cpu", Rule::NotAbove(Measure::Count)),
    ("limits.memory", Rule::NotAbove(Measure::Memory)),
    ("limits.processes", Rule::NotAbove(Measure::Count)),
    ("limits.disk", Rule::NotAbove(Measure::Size)),
    ("limits.max_duration", Rule::NotAbove(Measure::Duration)),
];

/// Special ranges not (yet) in the firewall's blocked sets that a literal
/// allowlist entry from an untrusted file may not touch: NAT64 (which can
/// embed any IPv4 address), IPv4-compatible, Teredo and the IETF protocol
/// block, 6to4 and its relay anycast, documentation ranges.
const SPECIAL: &[&str] = &[
    "64:ff9b::/96",
    "::/96",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
];

fn strictness(mode: &str) -> u8 {
    match mode {
        "allowlist" | "proxy" => 2,
        "restricted" => 1,
        _ => 0,
    }
}

/// A literal address or range (an address is its own /32 or /128).
fn literal(entry: &str) -> Option<ipnet::IpNet> {
    let e = entry.trim();
    e.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| e.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A literal that is private, loopback, link-local (metadata), NAT64,
/// multicast, otherwise special, or so wide it admits nearly everything.
pub fn special(net: ipnet::IpNet) -> bool {
    let wide = match net {
        ipnet::IpNet::V4(n) => n.prefix_len() < 8,
        ipnet::IpNet::V6(n) => n.prefix_len() < 16,
    };
    let overlaps = |r: &str| {
        r.parse::<ipnet::IpNet>()
            .is_ok_and(|r| r.contains(&net.network()) || net.contains(&r.network()))
    };
    wide || crate::config::BLOCKED_V4
        .iter()
        .chain(crate::config::BLOCKED_V6)
        .chain(SPECIAL)
        .any(|r| overlaps(r))
}

/// An allowlist entry as compared: trimmed, lower case, no final dot.
fn norm(entry: &str) -> String {
    entry.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Why `entry` may not be kept, given the list below (`None`: keep it).
/// Kept: an entry the list below has, or a public literal inside one of the
/// ranges below; special literals only as the list below has them.
fn refuse_entry(entry: &str, below: &[String]) -> Option<&'static str> {
    if below.iter().any(|b| norm(b) == norm(entry)) {
        return None;
    }
    match literal(entry) {
        Some(net) if special(net) => Some("private, local or special"),
        Some(net)
            if below
                .iter()
                .filter_map(|b| literal(b))
                .any(|b| b.contains(&net)) =>
        {
            None
        }
        _ => Some("not in the list below: an untrusted file may only narrow it"),
    }
}

/// The host's memory in bytes.
fn host_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// A limit's size for comparing (`None` when it cannot be read; unset is
/// unlimited).
fn amount(measure: Measure, v: &Value, percent_of: Option<f64>) -> Option<f64> {
    if v.is_null() {
        return Some(f64::INFINITY);
    }
    match measure {
        Measure::Count => v.as_f64(),
        Measure::Size => super::parse_size(v.as_str()?).map(|b| b as f64),
        Measure::Duration => super::parse_duration(v.as_str()?).map(|d| d.as_secs_f64()),
        Measure::Memory => {
            let s = v.as_str()?;
            match s.trim().strip_suffix('%') {
                Some(p) => Some(p.trim().parse::<f64>().ok()? / 100.0 * percent_of?),
                None => super::parse_size(s).map(|b| b as f64),
            }
        }
    }
}

/// Whether `v` is not above `below` (both the same kind of limit).
fn not_above(measure: Measure, v: &Value, below: &Value) -> bool {
    let percent = |x: &Value| x.as_str().is_some_and(|s| s.trim().ends_with('%'));
    // Two percentages compare as they are; a size with a percentage, by the host's memory.
    let of = if percent(v) && percent(below) {
        Some(1.0)
    } else {
        host_memory()
    };
    match (amount(measure, v, of), amount(measure, below, of)) {
        (Some(a), Some(b)) => a <= b,
        _ => false,
    }
}

/// What the gate did with one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Settings that apply (they only tighten), as `key = value`.
    pub applied: Vec<String>,
    /// Settings ignored, as `key = value (why)`.
    pub ignored: Vec<String>,
}

/// Keep in `flat` (the workspace layer) only what [`RULES`] allow, given
/// what the layers below set (`lower`; cci's default where they set nothing).
pub fn gate(flat: &mut Flat, lower: &Merged) -> Verdict {
    let defaults: BTreeMap<&str, Value> =
        super::Effective::default().values().into_iter().collect();
    let below = |key: &str| -> Value {
        lower
            .values
            .get(key)
            .map(|(v, _)| v.clone())
            .or_else(|| defaults.get(key).cloned())
            .unwrap_or(Value::Null)
    };
    let mut verdict = Verdict::default();
    let keys: Vec<String> = flat.keys().cloned().collect();
    for key in keys {
        let Some(v) = flat.remove(&key) else {
            continue;
        };
        let rule = RULES.iter().find(|(k, _)| *k == key).map(|(_, r)| *r);
        let why: Option<String> = match rule {
            None if key.starts_with("profiles.") => {
                Some("profile definitions need `cci trust`".into())
            }
            None if key == "mounts" => Some("an untrusted file may add no mounts".into()),
            None if key == "ports" => Some("an untrusted file may open no host ports".into()),
            None if key == "sockets" => Some("an untrusted file may forward no host socket".into()),
            None if key == "repos" => {
                Some("an untrusted file may send no other repository in".into())
            }
            None => Some("not a key an untrusted file may set".into()),
            Some(Rule::Stricter) => {
                let b = below(&key);
                let b = b.as_str().unwrap_or("restricted");
                (strictness(v.as_str().unwrap_or("")) < strictness(b))
                    .then(|| format!("looser than {b} below"))
            }
            Some(Rule::OnlyTrue) => (v != Value::Bool(true)).then(|| "may only be true".into()),
            Some(Rule::OnlyFalse) => (v != Value::Bool(false)).then(|| "may only be false".into()),
            Some(Rule::Only(want)) => {
                (v.as_str() != Some(want)).then(|| format!("may only be {want}"))
            }
            Some(Rule::NotAbove(m)) => {
                let b = below(&key);
                (!not_above(m, &v, &b)).then(|| format!("above {} below", limit_text(&b)))
            }
            Some(Rule::Add) => {
                let mut all: Vec<Value> = below(&key).as_array().cloned().unwrap_or_default();
                for e in v.as_array().into_iter().flatten() {
                    if !all.contains(e) {
                        all.push(e.clone());
                    }
                }
                verdict
                    .applied
                    .push(format!("{key} = {}", Value::Array(all.clone())));
                flat.insert(key.clone(), Value::Array(all));
                continue;
            }
            Some(Rule::Narrow) => {
                let b: Vec<String> = below(&key)
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect();
                let mut kept = Vec::new();
                for e in v.as_array().into_iter().flatten() {
                    let text = e.as_str().unwrap_or_default();
                    match refuse_entry(text, &b) {
                        None => kept.push(Value::String(text.to_string())),
                        Some(why) => verdict.ignored.push(format!("{key}: {e} ({why})")),
                    }
                }
                let same = kept.len() == b.len()
                    && kept.iter().all(|k| b.iter().any(|x| k.as_str() == Some(x)));
                if !same {
                    verdict
                        .applied
                        .push(format!("{key} = {}", Value::Array(kept.clone())));
                    flat.insert(key.clone(), Value::Array(kept));
                }
                continue;
            }
        };
        match why {
            Some(why) => verdict.ignored.push(format!("{key} = {v} ({why})")),
            None => {
                verdict.applied.push(format!("{key} = {v}"));
                flat.insert(key, v);
            }
        }
    }
    verdict
}

fn limit_text(v: &Value) -> String {
    match v {
        Value::Null => "no limit".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

//! The untrusted-config gate. A workspace's `.cci.toml` comes with the
//! repository, so on its own it may tighten cci but not loosen it: it cannot
//! make the network less strict than the layers below (`open`, or
//! `restricted` over `allowlist`), admit catch-all allowlist ranges, unblock
//! private networks or the metadata endpoint, mount host folders outside the
//! workspace, or set credential, path or Incus keys. Those settings are
//! ignored (and reported) until the user approves that exact file with
//! `cci trust`, which pins its SHA-256; any change needs approval again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

fn strictness(mode: &str) -> u8 {
    match mode {
        "allowlist" => 2,
        "restricted" => 1,
        _ => 0,
    }
}

/// An allowlist entry that admits (nearly) everything.
fn catch_all(entry: &str) -> bool {
    match entry.trim().parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(n)) => n.prefix_len() < 8,
        Ok(ipnet::IpNet::V6(n)) => n.prefix_len() < 16,
        Err(_) => entry.trim() == "*",
    }
}

fn inside(path: &Path, workspace: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let p = canon(path);
    let plain = p
        .components()
        .all(|c| !matches!(c, std::path::Component::ParentDir));
    plain && p.starts_with(canon(workspace))
}

/// Remove from `flat` (the workspace layer) what it may not set on its own,
/// given what the layers below set (`lower`); returns what was ignored.
pub fn gate(flat: &mut Flat, lower: &Merged, workspace: &Path) -> Vec<String> {
    let lower_mode = lower
        .values
        .get("network.mode")
        .and_then(|(v, _)| v.as_str())
        .unwrap_or("restricted")
        .to_string();
    let mut ignored = Vec::new();
    let keys: Vec<String> = flat.keys().cloned().collect();
    for key in keys {
        // A profile in the file is held to the same rules.
        let base = match key.strip_prefix("profiles.") {
            Some(rest) => rest.split_once('.').map_or(rest, |(_, k)| k).to_string(),
            None => key.clone(),
        };
        let Some(v) = flat.get(&key).cloned() else {
            continue;
        };
        let section = base.split('.').next().unwrap_or("");
        let drop_key = match base.as_str() {
            "network.mode" => strictness(v.as_str().unwrap_or("")) < strictness(&lower_mode),
            "network.block_private_networks" | "network.block_metadata_endpoint" => {
                v == Value::Bool(false)
            }
            "tool.credentials_dir" => true,
            _ => section == "paths" || section == "incus",
        };
        if drop_key {
            ignored.push(format!("{key} = {v}"));
            flat.remove(&key);
            continue;
        }
        if base == "network.allowed_domains"
            && let Value::Array(items) = v
        {
            let (wide, kept): (Vec<Value>, Vec<Value>) = items
                .into_iter()
                .partition(|e| e.as_str().is_some_and(catch_all));
            for w in &wide {
                ignored.push(format!("{key}: {w} (admits nearly everything)"));
            }
            flat.insert(key.clone(), Value::Array(kept));
        } else if base == "mounts"
            && let Value::Array(items) = v
        {
            let (kept, outside): (Vec<Value>, Vec<Value>) = items.into_iter().partition(|m| {
                m.get("host")
                    .and_then(Value::as_str)
                    .is_some_and(|h| inside(&PathBuf::from(h), workspace))
            });
            for m in &outside {
                ignored.push(format!(
                    "{key}: host {} (outside the workspace)",
                    m.get("host").cloned().unwrap_or(Value::Null)
                ));
            }
            flat.insert(key.clone(), Value::Array(kept));
        }
    }
    ignored
}

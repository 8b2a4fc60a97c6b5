//! The environment layer: `CCI_*` variables and the keys they set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::schema::Settings;
use super::values::{PATH_KEYS, absolute, validate};
use super::{ConfigError, Flat};

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
    ("CCI_REMOTE", "incus.remote"),
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
        let settings: Settings = serde_json::from_value(super::nest(&one))
            .map_err(|e| bad(e.to_string().replace(" at line 1 column 1", "")))?;
        validate(&settings, "", "environment", "").map_err(|e| bad(e.message))?;
        flat.insert(key.to_string(), value);
    }
    Ok(flat)
}

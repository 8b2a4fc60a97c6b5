//! Layered configuration. Lowest to highest: built-in defaults,
//! `/etc/cci/config.toml`, `~/.config/cci/config.toml`, the workspace's
//! `.cci.toml` (gated: see [`trust`]), the file in `$CCI_CONFIG`, the selected
//! profile, `CCI_*` environment variables; command-line flags are applied
//! over the result by the commands. A layer that omits a key never resets it;
//! `[[mounts]]` add up. Every value remembers where it came from.
//!
//! Pure but for reading the files and the environment; prints nothing.

mod allow_entry;
pub mod edit;
mod effective;
mod env;
mod file;
pub mod schema;
pub mod trust;
mod values;
mod vocab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// Escaping for the terminal (owned by [`crate::terminal`]; kept here for
/// the configuration's messages and its callers).
pub use crate::terminal::printable;
pub use allow_entry::{BadAllowEntry, Entry as AllowEntry};
pub use effective::{
    Account, CacheSettings, DEFAULT_CACHE_BYTES, DEFAULT_MEMORY, DEFAULT_PROCESSES,
    DEFAULT_SNAPSHOT_KEEP, Effective, MAX_RECORDING, MountSpec, Notify, PortSpec, SessionLimits,
    SocketSpec,
};
pub use file::{FileLayer, Layer, line_of, parse, read_file};
pub use schema::{CacheKind, CacheScope, Document, KEYS, ModeName, Settings};
pub use values::{expand_home, parse_duration, parse_size};
pub use vocab::{
    AGENT_NAMES, BLOCKED_V4, BLOCKED_V6, DEFAULT_ALIAS, DEFAULT_REFRESH_MINUTES, KERNEL_DENY,
    is_public, parse_minutes, protected_path_ok,
};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// cci's own default.
    Default,
    /// A file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A profile, defined at `from`.
    Profile {
        /// Its name.
        name: String,
        /// Where the profile's key was set.
        from: Box<Origin>,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line: 0 } => write!(f, "{}", path.display()),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Profile { name, from } => write!(f, "profile {name} ({from})"),
        }
    }
}

/// A configuration that cannot be used: which file, line and key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{where_}{key}{message}", where_ = self.place(), key = self.key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `environment`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn place(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}: ", self.file),
            None => format!("{}: ", self.file),
        }
    }

    fn new(
        source: &str,
        line: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: source.to_string(),
            line,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

/// A flat view of settings: `section.key` -> value (`mounts` -> array).
pub type Flat = BTreeMap<String, Value>;

/// Flatten `settings`; relative and `~` paths are made absolute against `base`.
pub fn flatten(settings: &Settings, base: &Path) -> Flat {
    let mut flat = Flat::new();
    let Ok(Value::Object(sections)) = serde_json::to_value(settings) else {
        return flat;
    };
    for (section, v) in sections {
        match v {
            Value::Object(keys) => {
                for (k, v) in keys {
                    if v.is_null() {
                        continue;
                    }
                    let key = if section == "defaults" && k == "network" {
                        "network.mode".to_string()
                    } else {
                        format!("{section}.{k}")
                    };
                    let v = if values::PATH_KEYS.contains(&key.as_str()) {
                        v.as_str()
                            .map(|s| Value::String(values::absolute(s, base).display().to_string()))
                            .unwrap_or(v)
                    } else {
                        v
                    };
                    flat.insert(key, v);
                }
            }
            Value::Array(items) => {
                let items = items
                    .into_iter()
                    .map(|mut m| {
                        if let Some(h) = m.get("host").and_then(Value::as_str) {
                            m["host"] =
                                Value::String(values::absolute(h, base).display().to_string());
                        }
                        m
                    })
                    .collect();
                flat.insert(section, Value::Array(items));
            }
            _ => {}
        }
    }
    flat
}

/// A flat view nested back into `{section: {key: value}}` (`mounts` as is).
fn nest<'a>(flat: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Value {
    let mut root = Map::new();
    for (key, v) in flat {
        match key.split_once('.') {
            Some((section, k)) => {
                let s = root
                    .entry(section.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = s {
                    m.insert(k.to_string(), v.clone());
                }
            }
            None => {
                root.insert(key.clone(), v.clone());
            }
        }
    }
    Value::Object(root)
}

/// Settings from a flat view (profile definitions left out).
pub fn unflatten(flat: &Flat) -> Settings {
    let settings = flat.iter().filter(|(k, _)| !k.starts_with("profiles."));
    serde_json::from_value(nest(settings)).unwrap_or_default()
}

/// Merged values with their origins.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// `section.key` -> (value, origin).
    pub values: BTreeMap<String, (Value, Origin)>,
}

impl Merged {
    /// Lay `flat` over what is there: each key replaces; `mounts` add up.
    pub fn apply(&mut self, flat: &Flat, origin: impl Fn(&str) -> Origin) {
        for (k, v) in flat {
            if (k == "mounts" || k == "ports" || k == "sockets")
                && let Some((Value::Array(have), _)) = self.values.get_mut(k)
                && let Value::Array(more) = v
            {
                have.extend(more.iter().cloned());
                continue;
            }
            self.values.insert(k.clone(), (v.clone(), origin(k)));
        }
    }

    /// The flat values.
    pub fn flat(&self) -> Flat {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// Where to look for the layers.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `/etc/cci/config.toml` (or `$CCI_SYSTEM_CONFIG`).
    pub system: Option<PathBuf>,
    /// `~/.config/cci/config.toml`.
    pub user: Option<PathBuf>,
    /// The workspace folder (its `.cci.toml`).
    pub workspace: Option<PathBuf>,
    /// `$CCI_CONFIG`.
    pub explicit: Option<PathBuf>,
    /// The environment (`CCI_*`).
    pub env: BTreeMap<String, String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// Where trust decisions are kept (`~/.cci/trusted.json`).
    pub trust_file: Option<PathBuf>,
}

impl Sources {
    /// The usual places, for a workspace folder.
    pub fn standard(workspace: Option<&Path>, profile: Option<String>) -> Sources {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME");
        let user = var("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("cci/config.toml"));
        Sources {
            system: Some(var("CCI_SYSTEM_CONFIG").unwrap_or_else(|| "/etc/cci/config.toml".into())),
            user,
            workspace: workspace.map(Path::to_path_buf),
            explicit: var("CCI_CONFIG"),
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("CCI_"))
                .collect(),
            profile,
            trust_file: home.map(|h| h.join(".cci/trusted.json")),
        }
    }
}

/// The loaded configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Every set value with its origin (profile definitions included).
    pub merged: Merged,
    /// The typed effective settings.
    pub effective: Effective,
    /// The profile applied, if any.
    pub profile: Option<String>,
    /// What the untrusted workspace file asked for and did not get.
    pub ignored: Vec<String>,
    /// What the untrusted workspace file set that applies (it only tightens).
    pub applied: Vec<String>,
    /// The workspace file, when there is one.
    pub workspace_file: Option<PathBuf>,
    /// That file was approved once and has changed since.
    pub changed_since_trust: bool,
    /// Every file looked at, and whether it was there.
    pub files: Vec<(PathBuf, bool)>,
}

impl Config {
    /// What to tell the user when an untrusted workspace file applies at all:
    /// which of its settings applied and which were ignored (printable lines;
    /// none when the file is trusted, missing or sets nothing).
    pub fn untrusted_notice(&self) -> Vec<String> {
        let Some(file) = &self.workspace_file else {
            return Vec::new();
        };
        if self.applied.is_empty() && self.ignored.is_empty() {
            return Vec::new();
        }
        let why = if self.changed_since_trust {
            "changed since you approved it"
        } else {
            "is not trusted"
        };
        let mut lines = vec![format!(
            "{} {why}, so only settings that tighten apply (`cci trust` approves the file as it is):",
            printable(&file.display().to_string())
        )];
        lines.extend(
            self.applied
                .iter()
                .map(|a| format!("  applied: {}", printable(a))),
        );
        lines.extend(
            self.ignored
                .iter()
                .map(|i| format!("  ignored: {}", printable(i))),
        );
        lines
    }
}

/// Load every layer of `sources`.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let mut merged = Merged::default();
    let mut ignored = Vec::new();
    let mut applied = Vec::new();
    let mut workspace_file = None;
    let mut changed_since_trust = false;
    let mut declared = std::collections::BTreeSet::new();
    let mut looked_at = Vec::new();
    let files = [
        (sources.system.clone(), Layer::System),
        (sources.user.clone(), Layer::User),
        (
            sources.workspace.as_ref().map(|w| w.join(".cci.toml")),
            Layer::Workspace,
        ),
        (sources.explicit.clone(), Layer::Explicit),
    ];
    for (path, layer) in files {
        let Some(path) = path else { continue };
        let found = read_file(&path, layer)?;
        looked_at.push((path.clone(), found.is_some()));
        let Some(file) = found else {
            if layer == Layer::Explicit {
                return Err(ConfigError::new(
                    &path.display().to_string(),
                    None,
                    Some("CCI_CONFIG"),
                    "names a file that does not exist",
                ));
            }
            continue;
        };
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let gated = layer == Layer::Workspace
            && !trust::is_trusted(sources.trust_file.as_deref(), &path, &file.text);
        if !gated {
            declared.extend(file.doc.profiles.iter().flatten().map(|(n, _)| n.clone()));
        }
        let mut flat = flatten(&file.doc.settings(), &base);
        for (name, p) in file.doc.profiles.iter().flatten() {
            for (k, v) in flatten(p, &base) {
                flat.insert(format!("profiles.{name}.{k}"), v);
            }
        }
        if layer == Layer::Workspace {
            workspace_file = Some(path.clone());
            if gated {
                let verdict = trust::gate(&mut flat, &merged);
                (applied, ignored) = (verdict.applied, verdict.ignored);
                changed_since_trust = trust::was_trusted(sources.trust_file.as_deref(), &path);
            }
        }
        let text = file.text.clone();
        merged.apply(&flat, |k| Origin::File {
            path: path.clone(),
            line: file::key_line(&text, k).unwrap_or(0),
        });
    }
    let env = env::env_layer(&sources.env)?;
    // The profile: --profile, else CCI_PROFILE, else [defaults] profile.
    let profile = sources
        .profile
        .clone()
        .or_else(|| {
            env.get("defaults.profile")
                .and_then(|v| v.as_str().map(String::from))
        })
        .or_else(|| {
            merged
                .values
                .get("defaults.profile")
                .and_then(|(v, _)| v.as_str().map(String::from))
        })
        .filter(|p| !p.is_empty());
    if let Some(name) = &profile {
        let prefix = format!("profiles.{name}.");
        let picked: Vec<(String, Value, Origin)> = merged
            .values
            .iter()
            .filter_map(|(k, (v, o))| {
                k.strip_prefix(&prefix)
                    .map(|rest| (rest.to_string(), v.clone(), o.clone()))
            })
            .collect();
        if !declared.contains(name) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            return Err(ConfigError::new(
                "profiles",
                None,
                None,
                format!(
                    "profile {name:?} is not defined (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        for (k, v, o) in picked {
            let flat: Flat = [(k.clone(), v)].into();
            merged.apply(&flat, |_| Origin::Profile {
                name: name.clone(),
                from: Box::new(o.clone()),
            });
        }
    }
    merged.apply(&env, |k| Origin::Env(env::env_var_of(k).to_string()));
    let mut effective = Effective::from_settings(unflatten(&merged.flat()));
    effective.profile = profile.clone();
    Ok(Config {
        merged,
        effective,
        profile,
        ignored,
        applied,
        workspace_file,
        changed_since_trust,
        files: looked_at,
    })
}

static CURRENT: OnceLock<Config> = OnceLock::new();

/// Make `config` the one this process uses (once; later calls are ignored).
pub fn install(config: Config) {
    let _ = CURRENT.set(config);
}

/// The configuration this process uses (built-in defaults until [`install`]).
pub fn current() -> &'static Effective {
    static DEFAULTS: OnceLock<Effective> = OnceLock::new();
    match CURRENT.get() {
        Some(c) => &c.effective,
        None => DEFAULTS.get_or_init(Effective::default),
    }
}

/// A commented example configuration (`cci config example`).
pub fn example() -> &'static str {
    include_str!("example.toml")
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;

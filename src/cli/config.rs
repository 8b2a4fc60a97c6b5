//! `cci config show|validate|example` and `cci trust`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{Cli, UsageError};
use crate::config::{self, Layer, Origin, trust};

/// `cci config` commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration in force and, for each key, where it came from.
    Show(ShowArgs),
    /// Check a configuration file (or, without one, every layer).
    Validate(ValidateArgs),
    /// Print a commented example configuration with every key.
    Example,
}

impl ConfigCommand {
    /// The workspace folder named with `-w`.
    pub fn workspace(&self) -> Option<PathBuf> {
        match self {
            ConfigCommand::Show(a) => a.workspace.clone(),
            ConfigCommand::Validate(a) => a.workspace.clone(),
            ConfigCommand::Example => None,
        }
    }
}

/// How `config show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// TOML, each value with a comment naming its layer.
    Toml,
    /// JSON: `{profile, files, values: {KEY: {value, from}}, ignored, applied}`.
    Json,
}

/// Options of `cci config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ShowFormat::Toml)]
    pub format: ShowFormat,
    /// The workspace whose .cci.toml applies [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
}

/// Options of `cci config validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check [default: every layer].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The workspace whose .cci.toml applies [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
}

/// Options of `cci trust`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The workspace whose .cci.toml to approve [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// Withdraw the approval instead.
    #[arg(long)]
    pub revoke: bool,
}

pub fn run(cli: &Cli, cmd: &ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Example => {
            print!("{}", config::example());
            Ok(0)
        }
        ConfigCommand::Validate(a) => validate(cli, a),
        ConfigCommand::Show(a) => {
            let loaded = super::load_config(cli)?;
            report_ignored(&loaded);
            show(&loaded, a.format)
        }
    }
}

fn validate(cli: &Cli, a: &ValidateArgs) -> anyhow::Result<i32> {
    match &a.file {
        Some(file) => match config::read_file(file, Layer::Explicit)? {
            Some(_) => {
                println!("{}: ok", file.display());
                Ok(0)
            }
            None => Err(UsageError(format!("{} does not exist", file.display())).into()),
        },
        None => {
            let loaded = super::load_config(cli)?;
            let files: Vec<String> = loaded
                .merged
                .values
                .values()
                .filter_map(|(_, o)| match o {
                    Origin::File { path, .. } => Some(path.display().to_string()),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if files.is_empty() {
                println!("configuration ok (no configuration files; cci's defaults)");
            } else {
                println!("configuration ok: {}", files.join(", "));
            }
            report_ignored(&loaded);
            Ok(0)
        }
    }
}

fn report_ignored(loaded: &config::Config) {
    for line in loaded.untrusted_notice() {
        eprintln!("cci: {line}");
    }
}

fn show(loaded: &config::Config, format: ShowFormat) -> anyhow::Result<i32> {
    let values = loaded.effective.values();
    let from = |key: &str| -> String {
        loaded
            .merged
            .values
            .get(key)
            .map(|(_, o)| o.to_string())
            .unwrap_or_else(|| "default".into())
    };
    match format {
        ShowFormat::Json => {
            let mut out = serde_json::Map::new();
            for (k, v) in &values {
                out.insert(k.to_string(), json!({"value": v, "from": from(k)}));
            }
            let files: Vec<Value> = loaded
                .files
                .iter()
                .map(|(p, found)| json!({"path": p.display().to_string(), "found": found}))
                .collect();
            let doc = json!({
                "profile": loaded.profile,
                "files": files,
                "values": out,
                "ignored": loaded.ignored,
                "applied": loaded.applied,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ShowFormat::Toml => {
            for (path, found) in &loaded.files {
                let how = if *found { "read" } else { "not there" };
                println!(
                    "# {}: {how}",
                    config::printable(&path.display().to_string())
                );
            }
            if let Some(p) = &loaded.profile {
                println!("# profile: {p}");
            }
            let mut section = "";
            for (k, v) in &values {
                if *k == "mounts" {
                    continue;
                }
                let (s, key) = k.split_once('.').unwrap_or(("", k));
                if s != section {
                    println!("\n[{s}]");
                    section = s;
                }
                match v {
                    Value::Null => println!("# {key} is not set  # {}", from(k)),
                    v => println!("{key} = {}  # {}", toml_value(v), from(k)),
                }
            }
            if let Some((_, Value::Array(mounts))) = values.iter().find(|(k, _)| *k == "mounts") {
                for m in mounts {
                    println!("\n[[mounts]]  # {}", from("mounts"));
                    for (k, v) in m.as_object().into_iter().flatten() {
                        println!("{k} = {}", toml_value(v));
                    }
                }
            }
            for a in &loaded.applied {
                println!(
                    "# applied (untrusted workspace file, tightens only): {}",
                    config::printable(a)
                );
            }
            for i in &loaded.ignored {
                println!(
                    "# ignored (untrusted workspace file): {}",
                    config::printable(i)
                );
            }
        }
    }
    Ok(0)
}

fn toml_value(v: &Value) -> String {
    toml::Value::try_from(v)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| v.to_string())
}

pub fn trust(a: &TrustArgs) -> anyhow::Result<i32> {
    let ws = match &a.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir()?,
    };
    let ws = std::fs::canonicalize(&ws)
        .map_err(|e| UsageError(format!("workspace {}: {e}", ws.display())))?;
    let path = ws.join(".cci.toml");
    let sources = config::Sources::standard(Some(&ws), None);
    let Some(store) = sources.trust_file.clone() else {
        return Err(UsageError("HOME is not set: nowhere to keep the approval".into()).into());
    };
    if a.revoke {
        trust::set(&store, &path, None)?;
        println!("{}: approval withdrawn", path.display());
        return Ok(0);
    }
    let Some(file) = config::read_file(&path, Layer::Workspace)? else {
        return Err(UsageError(format!("{} does not exist", path.display())).into());
    };
    // What the approval changes: the settings the gate holds back now.
    let before = config::load(&sources)?;
    trust::set(&store, &path, Some(&file.text))?;
    println!(
        "trusted {} (sha256 {}); its settings apply until it changes",
        path.display(),
        &trust::hash(&file.text)[..16]
    );
    for i in &before.ignored {
        println!("  now applies: {}", config::printable(i));
    }
    Ok(0)
}

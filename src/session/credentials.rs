//! The agent's credentials and settings at every start: copied in from the
//! host through the file API (never argv or config), 0600 for the user
//! inside, never back out; the sandbox settings merged into the agent's own.
//! A host file that holds more than the agent needs (`~/.claude.json`: MCP
//! server tokens, every host project's path and settings) goes in reduced to
//! the keys of [`MINIMAL`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{AgentFiles, Error, io_err};
use crate::config::Account;
use crate::incus::{Client, FileWrite};

/// The host folder the agent's credentials are read from: `configured`
/// (`[tool] credentials_dir` or `$CCI_CREDENTIALS_DIR`), else the invoking
/// user's home under sudo, else `$HOME`.
pub fn credentials_home(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = configured {
        return Some(d.to_path_buf());
    }
    if crate::state::is_root()
        && let Some(user) = std::env::var("SUDO_USER").ok().filter(|u| u != "root")
        && let Some(home) = home_of(&user)
    {
        return Some(home);
    }
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `user`'s home folder from /etc/passwd.
fn home_of(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| PathBuf::from(f[5]))
    })
}

/// What [`push_credentials`] put into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Credential files copied (relative to the home).
    pub credentials: Vec<String>,
    /// Settings files merged.
    pub settings: Vec<String>,
}

/// Credential files copied as a minimal JSON object: only these top-level
/// keys of the host's file (what the agent needs to start signed in and
/// without its first-run questions), never `mcpServers` (tokens in `env`
/// and `headers`), `projects` (other host paths), `env` or anything else.
pub const MINIMAL: &[(&str, &[&str])] = &[(
    ".claude.json",
    &[
        // The account and its API key, the same class as .credentials.json.
        "oauthAccount",
        "primaryApiKey",
        "userID",
        // First-run questions and notices already answered.
        "hasCompletedOnboarding",
        "lastOnboardingVersion",
        "lastReleaseNotesSeen",
        "bypassPermissionsModeAccepted",
        "hasAcknowledgedCostThreshold",
        "hasSeenTasksHint",
        "shiftEnterKeyBindingInstalled",
        // How it looks and behaves to the person at the terminal.
        "theme",
        "editorMode",
        "verbose",
        "autoUpdates",
        "preferredNotifChannel",
        "messageIdleNotifThresholdMs",
        "autoCompactEnabled",
        "diffTool",
    ],
)];

/// The host file `rel` as it goes into the container: whole, or reduced to
/// its allowlisted keys ([`MINIMAL`]; an unreadable file becomes `{}`).
pub fn minimal(rel: &str, data: Vec<u8>) -> Vec<u8> {
    let Some((_, keys)) = MINIMAL.iter().find(|(r, _)| *r == rel) else {
        return data;
    };
    let kept: Map<String, Value> = match serde_json::from_slice::<Value>(&data) {
        Ok(Value::Object(all)) => all
            .into_iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .collect(),
        _ => Map::new(),
    };
    serde_json::to_vec_pretty(&Value::Object(kept)).unwrap_or_else(|_| b"{}".to_vec())
}

/// Largest credential or settings file handled.
const MAX_SETTINGS: u64 = 16 << 20;

/// Copy the agent's credentials from `host_home` into the running
/// container (0600, owned by `code`; missing ones are skipped), then merge
/// the sandbox settings into its settings files, keeping every other key.
/// Contents go through the file API, never through argv or config.
pub async fn push_credentials(
    client: &Client,
    container: &str,
    files: &AgentFiles,
    host_home: Option<&Path>,
    host_api: bool,
    a: &Account,
) -> Result<Pushed, Error> {
    let mut pushed = Pushed::default();
    let private = FileWrite {
        uid: a.uid,
        gid: a.gid,
        mode: 0o600,
    };
    let dir = FileWrite {
        mode: 0o700,
        ..private
    };
    let mut written: BTreeSet<&str> = BTreeSet::new();
    if host_api {
        // No credential goes in; one an earlier session left is removed
        // (the agent's config file is cleaned below instead).
        for rel in files.credentials {
            if !files.settings.iter().any(|(r, _)| r == rel) {
                let _ = client
                    .delete_file(container, &format!("{}/{rel}", a.home))
                    .await;
            }
        }
    }
    // (Host mode: only the agent's config file, without its keys.)
    let is_settings = |rel: &str| files.settings.iter().any(|(r, _)| *r == rel);
    for rel in files
        .credentials
        .iter()
        .filter(|r| !host_api || is_settings(r))
    {
        let Some(home) = host_home else { break };
        let host = home.join(rel);
        let data = match std::fs::metadata(&host) {
            Ok(m) if m.is_file() && m.len() <= MAX_SETTINGS => {
                let data =
                    std::fs::read(&host).map_err(io_err(format!("reading {}", host.display())))?;
                let data = minimal(rel, data);
                if host_api {
                    let mut v: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
                    api_endpoint(rel, &mut v, true);
                    serde_json::to_vec_pretty(&v).unwrap_or_else(|_| b"{}".to_vec())
                } else {
                    data
                }
            }
            Ok(_) => {
                tracing::warn!("{} is not a small regular file; not copied", host.display());
                continue;
            }
            Err(_) => continue,
        };
        let path = format!("{}/{rel}", a.home);
        if let Some((parent, _)) = path.rsplit_once('/') {
            client.mkdir_all(container, parent, dir).await?;
        }
        // Replace whatever is there (a symlink is removed, not followed).
        let _ = client.delete_file(container, &path).await;
        client.write_file(container, &path, data, private).await?;
        written.insert(rel);
        pushed.credentials.push(rel.to_string());
    }
    for (rel, ours) in files.settings {
        let path = format!("{}/{rel}", a.home);
        let current = match client.read_file(container, &path).await {
            Ok((_, data)) if data.len() as u64 <= MAX_SETTINGS => Some(data),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let mut value = match current.as_deref().map(serde_json::from_slice::<Value>) {
            Some(Ok(v @ Value::Object(_))) => v,
            None => Value::Object(Map::new()),
            Some(_) => {
                // Not a JSON object: kept aside rather than lost.
                if let Some(data) = current.clone() {
                    client
                        .write_file(container, &format!("{path}.cci-invalid"), data, private)
                        .await?;
                }
                Value::Object(Map::new())
            }
        };
        let ours: Value = serde_json::from_str(ours).unwrap_or(Value::Null);
        merge(&mut value, &ours);
        api_endpoint(rel, &mut value, host_api);
        if *rel == ".claude/settings.json" {
            // How the dashboard knows what the agent does.
            crate::attention::hooks::install(&mut value);
        }
        let data = serde_json::to_vec_pretty(&value).unwrap_or_default();
        if let Some((parent, _)) = path.rsplit_once('/') {
            client.mkdir_all(container, parent, dir).await?;
        }
        if !written.contains(rel) {
            let _ = client.delete_file(container, &path).await;
        }
        client.write_file(container, &path, data, private).await?;
        pushed.settings.push(rel.to_string());
    }
    Ok(pushed)
}

/// Claude Code's settings for host credentials mode: its API through
/// cci's endpoint with a placeholder token, and no key of its own in its
/// config; in copy mode, the endpoint an earlier host-mode session set is
/// taken out again.
pub fn api_endpoint(rel: &str, value: &mut Value, host_api: bool) {
    let Value::Object(v) = value else { return };
    match rel {
        ".claude.json" if host_api => {
            for k in ["primaryApiKey", "oauthAccount"] {
                v.remove(k);
            }
        }
        ".claude/settings.json" => {
            let env = v.entry("env").or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(env) = env else { return };
            if host_api {
                env.insert(
                    "ANTHROPIC_BASE_URL".into(),
                    format!(
                        "http://127.0.0.1:{}{}",
                        crate::forge::PORT,
                        crate::forge::API_PREFIX
                    )
                    .into(),
                );
                env.insert(
                    "ANTHROPIC_AUTH_TOKEN".into(),
                    crate::forge::API_PLACEHOLDER.into(),
                );
            } else if env.get("ANTHROPIC_AUTH_TOKEN").and_then(Value::as_str)
                == Some(crate::forge::API_PLACEHOLDER)
            {
                env.remove("ANTHROPIC_AUTH_TOKEN");
                env.remove("ANTHROPIC_BASE_URL");
            }
            if env.is_empty() {
                v.remove("env");
            }
        }
        _ => {}
    }
}

/// Merge `ours` into `into`: objects key by key, anything else replaced.
pub fn merge(into: &mut Value, ours: &Value) {
    match (into, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_config_goes_in_reduced_to_its_allowlist() {
        let host = serde_json::json!({
            "oauthAccount": {"emailAddress": "a@b"},
            "userID": "u1",
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "mcpServers": {"gh": {"env": {"GITHUB_TOKEN": "CANARY"}}},
            "projects": {"/home/me/secret-project": {"mcpServers": {}}},
            "env": {"X": "CANARY"},
        });
        let got: Value =
            serde_json::from_slice(&minimal(".claude.json", host.to_string().into_bytes()))
                .unwrap();
        assert_eq!(
            got,
            serde_json::json!({
                "oauthAccount": {"emailAddress": "a@b"},
                "userID": "u1",
                "hasCompletedOnboarding": true,
                "theme": "dark",
            })
        );
        assert_eq!(minimal(".claude.json", b"not json".to_vec()), b"{}");
        // Other credential files go in whole.
        assert_eq!(minimal(".codex/auth.json", b"raw".to_vec()), b"raw");
    }

    #[test]
    fn host_mode_points_the_agent_at_the_endpoint_and_copy_mode_takes_it_back() {
        let mut settings = serde_json::json!({"env": {"FOO": "1"}});
        api_endpoint(".claude/settings.json", &mut settings, true);
        assert_eq!(
            settings["env"]["ANTHROPIC_AUTH_TOKEN"],
            crate::forge::API_PLACEHOLDER
        );
        assert_eq!(settings["env"]["FOO"], "1");
        api_endpoint(".claude/settings.json", &mut settings, false);
        assert_eq!(settings, serde_json::json!({"env": {"FOO": "1"}}));
        let mut config = serde_json::json!({"primaryApiKey": "k", "theme": "dark"});
        api_endpoint(".claude.json", &mut config, true);
        assert_eq!(config, serde_json::json!({"theme": "dark"}));
        // A user's own endpoint stays in copy mode.
        let mut own = serde_json::json!({"env": {"ANTHROPIC_BASE_URL": "https://gw", "ANTHROPIC_AUTH_TOKEN": "mine"}});
        api_endpoint(".claude/settings.json", &mut own, false);
        assert_eq!(own["env"]["ANTHROPIC_BASE_URL"], "https://gw");
    }

    #[test]
    fn settings_merge_keeps_the_users_keys() {
        let mut user: Value = serde_json::json!({
            "theme": "dark",
            "permissions": {"allow": ["Bash(ls)"], "defaultMode": "ask"},
            "projects": {"/other": {"x": 1}}
        });
        let ours = serde_json::json!({
            "permissions": {"defaultMode": "bypassPermissions"},
            "projects": {"/workspace": {"hasTrustDialogAccepted": true}}
        });
        merge(&mut user, &ours);
        assert_eq!(user["theme"], "dark");
        assert_eq!(user["permissions"]["allow"][0], "Bash(ls)");
        assert_eq!(user["permissions"]["defaultMode"], "bypassPermissions");
        assert_eq!(user["projects"]["/other"]["x"], 1);
        assert_eq!(
            user["projects"]["/workspace"]["hasTrustDialogAccepted"],
            true
        );
    }
}

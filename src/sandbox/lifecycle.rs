//! Ending and keeping containers from the host: `shutdown`, `persist`, and
//! `clean` (which only ever touches containers cci marked as its own).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::inventory::{self, SandboxInfo};
use super::launch::{launcher_running, remove};
use super::saving::{self, StateSave};
use super::shell::{Ended, end};
use super::spec::keys;
use crate::incus::{self, Client};

/// Save the session state of `name`, then stop it cleanly within `grace`
/// (then by force) and delete it unless it is persistent (or its state
/// could not be saved).
pub async fn shutdown(client: &Client, name: &str, grace: Duration) -> incus::Result<Ended> {
    end(client, name, grace).await
}

/// Stop (force) and delete a cci container at once; a running session's
/// state is saved first if that takes less than a minute.
pub async fn kill(client: &Client, name: &str) -> incus::Result<StateSave> {
    let info = inventory::get(client, name).await?;
    let state = if info.state == "Running" {
        let save = saving::save_now(client, name);
        match tokio::time::timeout(Duration::from_secs(60), save).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => StateSave::Failed(e.to_string()),
            Err(_) => StateSave::Failed("it took more than a minute".into()),
        }
    } else {
        StateSave::Nothing
    };
    remove(client, name).await?;
    Ok(state)
}

/// Mark `name` persistent: it is kept (stopped) when its session ends.
/// Returns false when it already was.
pub async fn persist(client: &Client, name: &str) -> incus::Result<bool> {
    let info = inventory::get(client, name).await?;
    if info.persistent() {
        return Ok(false);
    }
    if info.kind != "shell" {
        return Err(incus::Error::BadRequest(format!(
            "{name} runs a one-off `cci run` command; only session containers can be kept"
        )));
    }
    let patch = json!({"config": {keys::PERSISTENT: "true"}});
    client.update_instance(name, &patch, None).await?;
    Ok(true)
}

/// Why `clean` would remove a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanReason {
    /// A stopped ephemeral session container.
    SessionEnded,
    /// Created but never started, and the cci that made it is gone (an
    /// interrupted or failed launch).
    NeverStarted,
    /// Its workspace folder no longer exists.
    WorkspaceGone,
    /// A `cci run` container left stopped.
    RunLeftover,
    /// The container of a `cci build` that is no longer running.
    BuildLeftover,
}

impl CleanReason {
    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            CleanReason::SessionEnded => "session ended",
            CleanReason::NeverStarted => "never started (interrupted launch)",
            CleanReason::WorkspaceGone => "workspace folder is gone",
            CleanReason::RunLeftover => "leftover of cci run",
            CleanReason::BuildLeftover => "leftover of an interrupted cci build",
        }
    }
}

/// Why `clean` should remove `s`, or `None` to keep it. Running containers
/// are kept unless their workspace is gone; stopped persistent ones are kept
/// for reuse.
pub fn clean_reason(s: &SandboxInfo) -> Option<CleanReason> {
    if !Path::new(&s.workspace).is_dir() {
        return Some(CleanReason::WorkspaceGone);
    }
    if s.state != "Stopped" {
        return None;
    }
    if s.last_started.is_empty() {
        // Unless the cci that creates it is still at work.
        return (!launcher_running(&s.launch)).then_some(CleanReason::NeverStarted);
    }
    if s.kind == "run" {
        return Some(CleanReason::RunLeftover);
    }
    (!s.persistent()).then_some(CleanReason::SessionEnded)
}

/// A container `clean` would remove.
#[derive(Debug, Clone)]
pub struct CleanItem {
    /// Its name.
    pub name: String,
    /// `Running`, `Stopped`...
    pub state: String,
    /// Why it goes.
    pub reason: CleanReason,
}

/// Prefix of `cci build`'s containers: `cci-build-<pid>-<stamp>`.
const BUILD_PREFIX: &str = "cci-build-";

/// The containers `clean` would remove, with the reason for each: cci's
/// sandboxes (see [`clean_reason`]) and build containers whose cci is gone.
pub async fn clean_plan(client: &Client) -> incus::Result<Vec<CleanItem>> {
    let mut plan: Vec<CleanItem> = inventory::list(client)
        .await?
        .into_iter()
        .filter_map(|s| {
            clean_reason(&s).map(|reason| CleanItem {
                name: s.name,
                state: s.state,
                reason,
            })
        })
        .collect();
    for i in client.instances(BUILD_PREFIX, false).await? {
        let marked = i.config.get(keys::KIND).is_some_and(|k| k == "build");
        let token = &i.name[BUILD_PREFIX.len()..];
        if marked && !launcher_running(token) {
            plan.push(CleanItem {
                name: i.name,
                state: i.status,
                reason: CleanReason::BuildLeftover,
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: &str, mode: &'static str, kind: &str, started: bool, ws: &str) -> SandboxInfo {
        SandboxInfo {
            name: "cci-x-1".into(),
            state: state.into(),
            slot: 1,
            workspace: ws.into(),
            kind: kind.into(),
            mode,
            ipv4: None,
            created: String::new(),
            last_started: if started {
                "2026-01-01T00:00:00Z".into()
            } else {
                String::new()
            },
            image: "cci".into(),
            session: String::new(),
            agent: String::new(),
            network: String::new(),
            launch: "1-2-3".into(),
            saved: String::new(),
            save_error: String::new(),
            account: crate::config::Account::new(1000, "code"),
        }
    }

    #[test]
    fn clean_keeps_running_and_persistent_containers() {
        let ws = std::env::temp_dir();
        let ws = ws.to_str().unwrap();
        assert_eq!(
            clean_reason(&info("Running", "ephemeral", "shell", true, ws)),
            None
        );
        assert_eq!(
            clean_reason(&info("Stopped", "persistent", "shell", true, ws)),
            None
        );
        assert_eq!(
            clean_reason(&info("Stopped", "ephemeral", "shell", true, ws)),
            Some(CleanReason::SessionEnded)
        );
        assert_eq!(
            clean_reason(&info("Stopped", "persistent", "shell", false, ws)),
            Some(CleanReason::NeverStarted)
        );
        assert_eq!(
            clean_reason(&info("Stopped", "ephemeral", "run", true, ws)),
            Some(CleanReason::RunLeftover)
        );
        assert_eq!(
            clean_reason(&info(
                "Running",
                "persistent",
                "shell",
                true,
                "/no/such/cci/ws"
            )),
            Some(CleanReason::WorkspaceGone)
        );
    }
}

//! Ending and keeping containers from the host: `shutdown`, `persist`, and
//! `clean` (which only ever touches containers cci marked as its own).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::error::Error;
use super::inventory::{self, SandboxInfo};
use super::orphans::launcher_running;
use super::saving::{self, StateSave};
use super::shell::{Ended, end};
use super::spec::keys;
use super::teardown::remove;
use crate::host::Host;
use crate::incus::{self, InstanceStatus};

/// Save the session state of `name`, then stop it cleanly within `grace`
/// (then by force) and delete it unless it is persistent (or its state
/// could not be saved).
pub async fn shutdown(host: &Host, name: &str, grace: Duration) -> Result<Ended, Error> {
    end(host, name, grace, "shutdown").await
}

/// Stop (force) and delete a cci container at once; a running session's
/// state is saved first if that takes less than a minute.
pub async fn kill(host: &Host, name: &str) -> incus::Result<StateSave> {
    let info = inventory::get(host, name).await?;
    let state = if info.state == InstanceStatus::Running {
        let save = saving::save_now(host, name);
        match tokio::time::timeout(Duration::from_secs(60), save).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => StateSave::Failed(e.to_string()),
            Err(_) => StateSave::Failed("it took more than a minute".into()),
        }
    } else {
        StateSave::Nothing
    };
    if info.state == InstanceStatus::Running {
        super::records::finish(host, &info, "kill", None, Some(&state)).await;
    }
    remove(host, name).await?;
    Ok(state)
}

/// Mark `name` persistent: it is kept (stopped) when its session ends, and
/// `clean` leaves it stopped. A launched container stops being
/// Incus-ephemeral too, so a stop no longer deletes it. Returns false when
/// it already was.
pub async fn persist(host: &Host, name: &str) -> incus::Result<bool> {
    let info = inventory::get(host, name).await?;
    if info.persistent {
        return Ok(false);
    }
    let patch = match info.kind.as_str() {
        "shell" => json!({"config": {keys::PERSISTENT: "true"}}),
        "container" => json!({"config": {keys::PERSISTENT: "true"}, "ephemeral": false}),
        _ => {
            return Err(incus::Error::BadRequest(format!(
                "{name} runs a one-off `cci run` command; only session and launched containers can be kept (`cci run --persistent` keeps a run's)"
            )));
        }
    };
    host.client.update_instance(name, &patch, None).await?;
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
    /// A stopped container of `cci container launch` that is not kept.
    LaunchedStopped,
    /// A stopped persistent container (only with `clean --all`).
    KeptStopped,
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
            CleanReason::LaunchedStopped => "stopped launched container, not persistent",
            CleanReason::KeptStopped => "stopped persistent container; --all",
        }
    }
}

/// Why `clean` should remove `s`, or `None` to keep it. Running containers
/// are kept unless their workspace is gone (a launched container has none);
/// stopped persistent ones are kept for reuse, unless `all` (`clean --all`).
pub fn clean_reason(s: &SandboxInfo, all: bool) -> Option<CleanReason> {
    // Another machine's (a shared server): its workspace and its cci are
    // not here to judge.
    if !s.machine.is_empty() && s.machine != super::orphans::machine_tag() {
        return None;
    }
    if !s.is_launched() && !Path::new(&s.workspace).is_dir() {
        return Some(CleanReason::WorkspaceGone);
    }
    if s.state != InstanceStatus::Stopped {
        return None;
    }
    if s.last_started.is_empty() && s.launch != super::snapshots::FORKED {
        // Unless the cci that creates it is still at work (a fork is
        // complete when made: it is kept like any kept container).
        return (!launcher_running(&s.launch)).then_some(CleanReason::NeverStarted);
    }
    if s.persistent {
        return all.then_some(CleanReason::KeptStopped);
    }
    Some(match s.kind.as_str() {
        "run" => CleanReason::RunLeftover,
        "container" => CleanReason::LaunchedStopped,
        _ => CleanReason::SessionEnded,
    })
}

/// A container `clean` would remove.
#[derive(Debug, Clone)]
pub struct CleanItem {
    /// Its name.
    pub name: String,
    /// `Running`, `Stopped`...
    pub state: InstanceStatus,
    /// Why it goes.
    pub reason: CleanReason,
}

/// Prefix of `cci build`'s containers: `cci-build-<pid>-<stamp>`.
const BUILD_PREFIX: &str = "cci-build-";

/// The containers `clean` would remove, with the reason for each: cci's
/// containers (see [`clean_reason`]; `all`: stopped persistent ones too) and
/// build containers whose cci is gone.
pub async fn clean_plan(host: &Host, all: bool) -> incus::Result<Vec<CleanItem>> {
    let mut plan: Vec<CleanItem> = inventory::list(host)
        .await?
        .into_iter()
        .filter_map(|s| {
            clean_reason(&s, all).map(|reason| CleanItem {
                name: s.name,
                state: s.state,
                reason,
            })
        })
        .collect();
    for i in host.client.instances(BUILD_PREFIX, false).await? {
        let marked = i.config.get(keys::KIND).is_some_and(|k| k == "build")
            && i.config
                .get(keys::MACHINE)
                .is_none_or(|m| m == super::orphans::machine_tag());
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
            persistent: mode == "persistent",
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
            git_session: String::new(),
            location: String::new(),
            copy: false,
            machine: String::new(),
            account: crate::config::Account::new(1000, "code"),
        }
    }

    #[test]
    fn another_machines_containers_are_never_judged_here() {
        let mut theirs = info("Running", "ephemeral", "shell", true, "/no/such/cci/ws");
        theirs.machine = "0123456789ab".into();
        assert_eq!(clean_reason(&theirs, true), None);
        theirs.state = "Stopped".into();
        assert_eq!(clean_reason(&theirs, true), None);
        // Positive control: this machine's, with its folder gone.
        let mut ours = info("Running", "ephemeral", "shell", true, "/no/such/cci/ws");
        ours.machine = super::super::orphans::machine_tag().into();
        assert_eq!(clean_reason(&ours, false), Some(CleanReason::WorkspaceGone));
    }

    #[test]
    fn clean_keeps_running_and_persistent_containers() {
        let ws = std::env::temp_dir();
        let ws = ws.to_str().unwrap();
        let reason = |state, mode, kind, started, ws| {
            clean_reason(&info(state, mode, kind, started, ws), false)
        };
        assert_eq!(reason("Running", "ephemeral", "shell", true, ws), None);
        assert_eq!(reason("Stopped", "persistent", "shell", true, ws), None);
        assert_eq!(
            reason("Stopped", "ephemeral", "shell", true, ws),
            Some(CleanReason::SessionEnded)
        );
        assert_eq!(
            reason("Stopped", "persistent", "shell", false, ws),
            Some(CleanReason::NeverStarted)
        );
        assert_eq!(
            reason("Stopped", "ephemeral", "run", true, ws),
            Some(CleanReason::RunLeftover)
        );
        // `cci run --persistent` keeps its container.
        assert_eq!(reason("Stopped", "persistent", "run", true, ws), None);
        assert_eq!(
            reason("Running", "persistent", "shell", true, "/no/such/cci/ws"),
            Some(CleanReason::WorkspaceGone)
        );
    }

    #[test]
    fn launched_containers_have_no_workspace_to_lose() {
        let reason = |state, mode, started, all| {
            clean_reason(&info(state, mode, "container", started, ""), all)
        };
        assert_eq!(reason("Running", "ephemeral", true, false), None);
        assert_eq!(reason("Running", "ephemeral", true, true), None);
        assert_eq!(
            reason("Stopped", "ephemeral", true, false),
            Some(CleanReason::LaunchedStopped)
        );
        assert_eq!(reason("Stopped", "persistent", true, false), None);
        assert_eq!(
            reason("Stopped", "persistent", true, true),
            Some(CleanReason::KeptStopped)
        );
        assert_eq!(
            reason("Stopped", "ephemeral", false, false),
            Some(CleanReason::NeverStarted)
        );
    }

    #[test]
    fn clean_all_also_takes_stopped_persistent_sandboxes() {
        let ws = std::env::temp_dir();
        let ws = ws.to_str().unwrap();
        let kept = info("Stopped", "persistent", "shell", true, ws);
        assert_eq!(clean_reason(&kept, false), None);
        assert_eq!(clean_reason(&kept, true), Some(CleanReason::KeptStopped));
        let running = info("Running", "persistent", "shell", true, ws);
        assert_eq!(clean_reason(&running, true), None);
    }
}

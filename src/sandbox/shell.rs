//! Sessions: a container (new, or a persistent one reused) with the tmux
//! session running in it, and what happens when a terminal leaves it.

use std::time::Duration;

use serde_json::json;

use super::inventory::{self, SandboxInfo};
use super::launch::{Attempt, LaunchError, launch, remove};
use super::names::{Slot, container_name, workspace_prefix};
use super::spec::{SandboxSpec, keys};
use super::tmux::{self, SessionCommand};
use crate::incus::{self, Client};
use crate::network::{self, Nft};

/// What `cci shell` asks for.
#[derive(Debug, Clone)]
pub struct ShellRequest {
    /// The container to make (kind `shell`).
    pub spec: SandboxSpec,
    /// A fixed slot, or the lowest free one.
    pub slot: Option<Slot>,
    /// The workspace's slot limit.
    pub slot_limit: u32,
    /// The agent (empty for a plain shell), recorded on the container.
    pub agent: String,
    /// What the session runs (its argv already holds the session id).
    pub command: SessionCommand,
}

/// A running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its container.
    pub name: String,
    /// Its slot.
    pub slot: Slot,
    /// Its id (the agent's conversation id).
    pub id: String,
    /// Kept after the session ends.
    pub persistent: bool,
    /// An existing persistent container was reused.
    pub reused: bool,
}

/// A new session id.
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Open a session for `req` with id `id`: reuse the persistent container of
/// the asked slot (or, with `--persistent` and no slot, the lowest stopped
/// one), starting it if stopped; otherwise launch a new container. The
/// session exists when this returns. `attempt` names the container being
/// made meanwhile, so an interrupted caller can remove it.
pub async fn open(
    client: &Client,
    req: &ShellRequest,
    id: &str,
    attempt: &Attempt,
) -> Result<Session, LaunchError> {
    reap(client, &workspace_prefix(&req.spec.workspace.id)).await;
    if let Some(existing) = reusable(client, req).await? {
        return reuse(client, req, existing, id).await;
    }
    let mut spec = req.spec.clone();
    spec.marks.push((keys::SESSION, id.to_string()));
    spec.marks.push((keys::AGENT, req.agent.clone()));
    // A fresh container whose session fails to start is removed; on a busy
    // host that can be a fluke of its boot, so a second container is tried.
    let mut tries = 0;
    let launched = loop {
        let launched = launch(client, &spec, req.slot, req.slot_limit, attempt).await?;
        attempt.set(Some(&launched.name));
        let started = tmux::start(client, &launched.name, &req.command).await;
        attempt.set(None);
        match started {
            Ok(()) => break launched,
            Err(e) => {
                let _ = remove(client, &launched.name).await;
                let fluke = matches!(&e, LaunchError::SessionStart { message, .. } if message.starts_with("exit status"));
                if tries > 0 || !(fluke || matches!(e, LaunchError::Incus(_))) {
                    return Err(e);
                }
                tracing::debug!(
                    "session in {} did not start: {e}; trying again",
                    launched.name
                );
                tries += 1;
            }
        }
    };
    Ok(Session {
        name: launched.name,
        slot: launched.slot,
        id: id.to_string(),
        persistent: spec.persistent,
        reused: false,
    })
}

/// The persistent container this request should reuse, if any.
async fn reusable(client: &Client, req: &ShellRequest) -> incus::Result<Option<SandboxInfo>> {
    let ours = |s: &SandboxInfo| {
        s.workspace == req.spec.workspace.path_str() && s.persistent() && s.kind == "shell"
    };
    if let Some(slot) = req.slot {
        let name = container_name(&req.spec.workspace.id, slot);
        return match inventory::get(client, &name).await {
            Ok(s) => Ok(ours(&s).then_some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            // Not cci's: the launch reports the slot as taken.
            Err(incus::Error::Forbidden(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    if !req.spec.persistent {
        return Ok(None);
    }
    let prefix = workspace_prefix(&req.spec.workspace.id);
    let mut stopped: Vec<SandboxInfo> = inventory::list_prefix(client, &prefix, false)
        .await?
        .into_iter()
        .filter(|s| ours(s) && s.state == "Stopped" && s.slot <= req.slot_limit)
        .collect();
    stopped.sort_by_key(|s| s.slot);
    Ok(stopped.into_iter().next())
}

async fn reuse(
    client: &Client,
    req: &ShellRequest,
    existing: SandboxInfo,
    id: &str,
) -> Result<Session, LaunchError> {
    let name = existing.name.clone();
    let running = existing.state == "Running";
    let mut id = id.to_string();
    if running && tmux::alive(client, &name).await? {
        // Attach to the session that runs there rather than start another.
        id = existing.session.clone();
    } else {
        let patch = json!({"config": {keys::SESSION: id, keys::AGENT: req.agent}});
        client.update_instance(&name, &patch, None).await?;
        let mut tries = 0;
        loop {
            if !running || tries > 0 {
                network::start_guarded(client, &Nft::from_env(), &name).await?;
            }
            match tmux::start(client, &name, &req.command).await {
                // Seen when the daemon was still finishing the container's
                // previous shutdown as it started: start it once more.
                Err(LaunchError::Incus(incus::Error::InstanceNotRunning(_))) if tries == 0 => {
                    tries += 1;
                }
                r => break r?,
            }
        }
    }
    Ok(Session {
        name,
        slot: Slot::new(existing.slot).unwrap_or(Slot::MIN),
        id,
        persistent: true,
        reused: true,
    })
}

/// How a terminal left a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Detached: the session keeps running.
    Detached,
    /// The session ended; its container was deleted (ephemeral) or stopped (persistent).
    Ended {
        /// Whether the container was deleted.
        deleted: bool,
    },
}

/// After a terminal left `name`'s session: if the session still runs, it was
/// a detach; otherwise end the container (stop a persistent one, delete an
/// ephemeral one).
pub async fn after_detach(client: &Client, name: &str) -> incus::Result<Left> {
    if tmux::alive(client, name).await? {
        return Ok(Left::Detached);
    }
    let info = inventory::get(client, name).await?;
    end(client, &info).await?;
    Ok(Left::Ended {
        deleted: !info.persistent(),
    })
}

/// End a session's container: stop it when persistent, delete it otherwise.
pub async fn end(client: &Client, info: &SandboxInfo) -> incus::Result<()> {
    if !info.persistent() {
        return remove(client, &info.name).await;
    }
    stop(client, &info.name, Duration::from_secs(30)).await
}

/// Stop cleanly within `grace`, then by force; stopped already is fine, and
/// so is gone meanwhile (another cci may delete an ended session meanwhile).
pub async fn stop(client: &Client, name: &str, grace: Duration) -> incus::Result<()> {
    if client.stop_instance(name, Some(grace), false).await.is_ok() {
        return Ok(());
    }
    match client.stop_instance(name, None, true).await {
        Ok(()) => Ok(()),
        Err(e) => match client.instance(name).await {
            Ok((i, _)) if i.status == "Stopped" => Ok(()),
            Err(gone) if gone.is_not_found() => Ok(()),
            _ => Err(e),
        },
    }
}

/// Delete the ended sessions among containers named `prefix*`: stopped,
/// ephemeral `shell` containers that were started once and powered off from
/// inside while nobody was attached. A container another launch is creating
/// right now has never been started, and one starting is busy (the daemon
/// refuses to delete it), so neither is touched.
pub async fn reap(client: &Client, prefix: &str) {
    let Ok(all) = inventory::list_prefix(client, prefix, false).await else {
        return;
    };
    for s in all.iter().filter(|s| s.is_ended_session()) {
        // The daemon may still be finishing the stop (busy): wait a little.
        for _ in 0..25 {
            match client.delete_instance(&s.name).await {
                Ok(()) => tracing::debug!("deleted ended session {}", s.name),
                Err(e) if e.is_conflict() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => tracing::debug!("leaving {}: {e}", s.name),
            }
            break;
        }
    }
}

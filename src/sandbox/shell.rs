//! Sessions: a container (new, or a persistent one reused) with the tmux
//! session running in it, and what happens when a terminal leaves it.

use std::time::Duration;

use serde_json::json;

use super::agent::Agent;
use super::error::Error;
use super::inventory::{self, SandboxInfo};
use super::launch::{Attempt, launch};
use super::names::{PREFIX, Slot, container_name, workspace_prefix};
use super::saving::{self, SaveKind, StateSave};
use super::spec::{SandboxSpec, keys};
use super::teardown::{remove, stop};
use super::tmux::{self, SessionCommand};
use crate::host::Host;
use crate::incus::{self, InstanceStatus};
use crate::network;
use crate::session::Saved;

/// What `cci shell` asks for.
#[derive(Debug, Clone)]
pub struct ShellRequest {
    /// The container to make (kind `shell`).
    pub spec: SandboxSpec,
    /// A fixed slot, or the lowest free one.
    pub slot: Option<Slot>,
    /// The workspace's slot limit.
    pub slot_limit: u32,
    /// The agent (none for a plain shell), recorded on the container.
    pub agent: Option<Agent>,
    /// What the session runs (its argv already holds the session id).
    pub command: SessionCommand,
    /// A saved session to continue: its state is pushed in before the agent starts.
    pub resume: Option<Saved>,
    /// The network policy was asked for on the command line (not only
    /// configured): a kept container whose own is stricter refuses it
    /// instead of keeping its own.
    pub network_explicit: bool,
    /// An isolated git session: the repository is cloned in.
    pub git: Option<std::sync::Arc<super::isolated::Start>>,
    /// `[snapshots] auto`: a kept container is snapshotted before each
    /// session, and this many automatic snapshots kept.
    pub auto_snapshots: Option<u32>,
}

impl ShellRequest {
    fn agent_name(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| a.def.name.to_string())
            .unwrap_or_default()
    }
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
    /// The user its session runs as.
    pub account: crate::config::Account,
    /// The network mode in force, and what cci did about the one asked for.
    pub network: String,
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
    host: &Host,
    req: &ShellRequest,
    id: &str,
    attempt: &Attempt,
) -> Result<Session, Error> {
    let client = &host.client;
    reap(host, &workspace_prefix(&req.spec.workspace.id)).await;
    if req.resume.is_some() {
        let all = inventory::list_prefix(host, PREFIX, false).await?;
        if let Some(s) = all
            .iter()
            .find(|s| s.session == id && s.state == InstanceStatus::Running)
        {
            return Err(Error::ResumeRunning {
                id: id.into(),
                container: s.name.clone(),
            });
        }
    }
    if let Some(existing) = reusable(host, req).await? {
        let name = existing.name.clone();
        let ws = std::path::Path::new(req.spec.workspace.path_str());
        super::tripwire::arm(&name, &super::tripwire::fingerprint(ws), true);
        return saving::with_lock(&name, reuse(host, req, existing, id)).await;
    }
    let ws = std::path::Path::new(req.spec.workspace.path_str());
    let before = super::tripwire::fingerprint(ws);
    let mut spec = req.spec.clone();
    spec.marks.push((keys::SESSION, id.to_string()));
    spec.marks.push((keys::AGENT, req.agent_name()));
    // A fresh container whose session fails to start is removed; on a busy
    // host that can be a fluke of its boot, so a second container is tried.
    let mut tries = 0;
    let launched = loop {
        let launched = launch(host, &spec, req.slot, req.slot_limit, attempt).await?;
        attempt.set(Some(&launched.name));
        let account = &spec.account;
        if let Some(g) = &req.git
            && let Err(e) =
                super::isolated::begin(client, &launched.name, launched.slot.get(), account, g)
                    .await
        {
            attempt.set(None);
            let _ = remove(host, &launched.name).await;
            return Err(Error::Isolated(e));
        }
        if spec.extras.copy
            && let Err(e) =
                super::copied::copy_in(client, &launched.name, account, &spec.workspace.path).await
        {
            attempt.set(None);
            let _ = remove(host, &launched.name).await;
            return Err(Error::CopyIn(e));
        }
        let started = match prepare(host, &launched.name, req, account).await {
            Ok(()) => tmux::start(client, &launched.name, &req.command, account).await,
            Err(e) => Err(e),
        };
        attempt.set(None);
        match started {
            Ok(()) => {
                super::tripwire::arm(&launched.name, &before, false);
                break launched;
            }
            Err(e) => {
                let _ = remove(host, &launched.name).await;
                let fluke = matches!(&e, Error::SessionStart { message, .. } if message.starts_with("exit status"));
                if tries > 0 || !(fluke || matches!(e, Error::Incus(_))) {
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
        account: spec.account.clone(),
        network: spec.network.mode.to_string(),
    })
}

/// Restore the state to resume and copy the credentials into `name`, for
/// its user (`account`).
async fn prepare(
    host: &Host,
    name: &str,
    req: &ShellRequest,
    account: &crate::config::Account,
) -> Result<(), Error> {
    let Some(agent) = &req.agent else {
        return Ok(());
    };
    saving::prepare(host, name, agent, req.resume.as_ref(), account)
        .await
        .map_err(|source| Error::Prepare {
            container: name.into(),
            source,
        })
}

/// The persistent container this request should reuse, if any: looks up
/// what [`pick_kept`] chooses from.
async fn reusable(host: &Host, req: &ShellRequest) -> incus::Result<Option<SandboxInfo>> {
    let workspace = req.spec.workspace.path_str();
    if let Some(slot) = req.slot {
        let name = container_name(&req.spec.workspace.id, slot);
        let found = match inventory::get(host, &name).await {
            Ok(s) => vec![s],
            Err(e) if e.is_not_found() => vec![],
            // Not cci's: the launch reports the slot as taken.
            Err(incus::Error::Forbidden(_)) => vec![],
            Err(e) => return Err(e),
        };
        return Ok(pick_kept(Some(slot), workspace, req.slot_limit, found));
    }
    if !req.spec.persistent {
        return Ok(None);
    }
    let prefix = workspace_prefix(&req.spec.workspace.id);
    let found = inventory::list_prefix(host, &prefix, false).await?;
    Ok(pick_kept(None, workspace, req.slot_limit, found))
}

/// Which kept container to reuse (pure), among `found`: with a slot asked
/// for, `found` is that slot's container, reused (running or not) when it
/// is this `workspace`'s persistent shell; otherwise (`--persistent`
/// without a slot) the lowest-slot stopped one of them within `limit` — a
/// running one is somebody's session.
fn pick_kept(
    asked: Option<Slot>,
    workspace: &str,
    limit: u32,
    found: Vec<SandboxInfo>,
) -> Option<SandboxInfo> {
    let mut ours = found
        .into_iter()
        .filter(|s| s.workspace == workspace && s.persistent && s.kind == "shell");
    if asked.is_some() {
        return ours.next();
    }
    ours.filter(|s| s.state == InstanceStatus::Stopped && s.slot <= limit)
        .min_by_key(|s| s.slot)
}

async fn reuse(
    host: &Host,
    req: &ShellRequest,
    existing: SandboxInfo,
    id: &str,
) -> Result<Session, Error> {
    let client = &host.client;
    let name = existing.name.clone();
    if req.git.is_some() && existing.git_session.is_empty() {
        return Err(Error::Isolated(format!(
            "the kept container {name} mounts the workspace folder; an isolated session needs a new container (another --slot, or `cci kill {name}` first)"
        )));
    }
    // Forwarding first, so that vetting sees the container as it will run.
    super::forward::reconcile(
        client,
        &name,
        req.spec.extras.ssh_agent.as_ref(),
        &req.spec.extras.ports,
        &req.spec.extras.sockets,
        req.spec.extras.forge.as_ref(),
        &existing.account,
    )
    .await
    .map_err(|e| match e {
        super::forward::Error::Usage(why) => Error::Forward(why),
        super::forward::Error::Incus(e) => Error::Incus(e),
    })?;
    let network = honour_policy(host, req, &name).await?;

    let mut running = existing.state == InstanceStatus::Running;
    let mut id = id.to_string();
    let account = existing.account.clone();
    if running && tmux::alive(client, &name, &account).await? {
        // Attach to the session that runs there rather than start another.
        id = existing.session.clone();
    } else {
        if let Some(keep) = req.auto_snapshots {
            // A checkpoint to come back to; a session is not refused for
            // want of one.
            match super::snapshots::auto(host, &name, keep).await {
                Ok(snap) => tracing::info!("{name}: snapshot {snap} taken before the session"),
                Err(e) => eprintln!(
                    "cci: warning: {name}: no automatic snapshot before this session: {e}"
                ),
            }
        }
        if !running {
            network::start_guarded(client, host.policy(), &name).await?;
            running = true;
        }
        // The previous session's state first, if nobody saved it yet.
        let fresh = inventory::get(host, &name).await?;
        if let StateSave::Failed(why) =
            saving::save_state(host, &fresh, true, SaveKind::Final).await?
        {
            tracing::warn!("{name}: the previous session's state was not saved: {why}");
        }
        let patch = json!({"config": {keys::SESSION: id, keys::AGENT: req.agent_name()}});
        client.update_instance(&name, &patch, None).await?;
        prepare(host, &name, req, &fresh.account).await?;
        let mut tries = 0;
        loop {
            if !running || tries > 0 {
                network::start_guarded(client, host.policy(), &name).await?;
            }
            match tmux::start(client, &name, &req.command, &account).await {
                // Seen when the daemon was still finishing the container's
                // previous shutdown as it started: start it once more.
                Err(Error::Incus(incus::Error::InstanceNotRunning(_))) if tries == 0 => {
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
        account,
        network,
    })
}

/// Before a kept container is used again: vet what it inherits, and bring
/// its network policy to the one asked for when that is stricter. A looser
/// one asked for on the command line is refused; a looser one that only
/// comes from the configuration leaves the container's own in force.
/// Returns the mode in force, said for the user.
async fn honour_policy(host: &Host, req: &ShellRequest, name: &str) -> Result<String, Error> {
    use network::reuse::{Change, compare, reapply};
    let client = &host.client;
    let (instance, _) = client.instance(name).await?;
    super::vet::instance(&instance).map_err(Error::Unsafe)?;
    super::protect::sources_unmoved(&instance).map_err(Error::MountMoved)?;
    let Some(recorded) = network::Policy::of(&instance).transpose()? else {
        return Ok("not guarded".into());
    };
    let asked = &req.spec.network;
    match compare(&recorded, asked) {
        Change::Same => Ok(recorded.mode.to_string()),
        Change::Stricter => {
            reapply(client, host.policy(), name, asked).await?;
            Ok(format!("{} (was {}; tightened)", asked.mode, recorded.mode))
        }
        Change::Looser if req.network_explicit => Err(Error::LooserPolicy {
            container: name.into(),
            recorded: recorded.mode.to_string(),
            asked: asked.mode.to_string(),
        }),
        Change::Looser => Ok(format!(
            "{} (kept: the container's own is stricter than the configured {})",
            recorded.mode, asked.mode
        )),
    }
}

/// How a terminal left a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// Detached: the session keeps running.
    Detached,
    /// The session ended.
    Ended(Ended),
}

/// What ending a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The container was deleted (ephemeral); otherwise it is stopped.
    pub deleted: bool,
    /// The session had been ended elsewhere (a snapshot restore): the
    /// container was left as it is.
    pub elsewhere: bool,
    /// What became of the agent's state.
    pub state: StateSave,
    /// The warning when the session changed workspace files the host runs
    /// or obeys (see `tripwire`).
    pub warning: Option<String>,
}

/// After a terminal left `name`'s session: if the session still runs, it was
/// a detach; otherwise end the container (save its state, then stop a
/// persistent one or delete an ephemeral one).
pub async fn after_detach(host: &Host, name: &str) -> Result<Left, Error> {
    let info = inventory::get(host, name).await?;
    if tmux::alive(&host.client, name, &info.account).await? {
        return Ok(Left::Detached);
    }
    Ok(Left::Ended(
        end_session(
            host,
            name,
            Duration::from_secs(30),
            "exit",
            Some(&info.session),
        )
        .await?,
    ))
}

/// End a session's container: save its agent state, then stop it within
/// `grace` (then by force) and delete it unless it is persistent. An
/// ephemeral container whose state could not be saved is kept, stopped.
/// The session's record says it ended `how` (`exit`: from inside).
pub async fn end(host: &Host, name: &str, grace: Duration, how: &str) -> Result<Ended, Error> {
    end_session(host, name, grace, how, None).await
}

/// [`end`], but with `session` only if that session is still the
/// container's: one ended elsewhere meanwhile (a snapshot restore ends it
/// and starts the container again) leaves the container alone.
async fn end_session(
    host: &Host,
    name: &str,
    grace: Duration,
    how: &str,
    session: Option<&str>,
) -> Result<Ended, Error> {
    saving::with_lock(name, async {
        let info = inventory::get(host, name).await?;
        if let Some(s) = session
            && info.kind == "shell"
            && (s.is_empty() || info.session != s)
        {
            return Ok(Ended {
                deleted: false,
                elsewhere: true,
                state: StateSave::Nothing,
                warning: None,
            });
        }
        let unsaved = info.state_unsaved();
        // A stopped container (powered off inside, say) is started to save.
        let state = saving::save_state(host, &info, true, SaveKind::Final).await?;
        // Once per session: an earlier end (another cci) wrote it already.
        if unsaved || info.agent.is_empty() {
            super::records::finish(host, &info, how, None, Some(&state)).await;
        }
        let keep = info.persistent || matches!(state, StateSave::Failed(_));
        let ws = std::path::Path::new(&info.workspace);
        let changed = super::tripwire::check(name, ws);
        let warning = (!changed.is_empty()).then(|| super::tripwire::warning(ws, &changed));
        if keep {
            // What the session forwarded ends with it (a kept container
            // started later, for any reason, has none of it).
            if let Err(e) = super::forward::strip(&host.client, name).await {
                tracing::warn!(
                    "{name}: the forwarded SSH agent and ports stay until its next session: {e}"
                );
            }
            stop(&host.client, name, grace).await?;
        } else {
            remove(host, name).await?;
        }
        Ok(Ended {
            deleted: !keep,
            elsewhere: false,
            state,
            warning,
        })
    })
    .await
}

/// Settle the ended sessions among containers named `prefix*`: save the
/// state of stopped sessions nobody saved, and delete the stopped ephemeral
/// session containers that were started once and whose state is safe. A
/// container another launch is creating right now has never been started,
/// and one another cci is handling is locked, so neither is touched. Run
/// containers whose cci is gone (of any workspace) are removed too.
pub async fn reap(host: &Host, prefix: &str) {
    let ((), _) = tokio::join!(
        async {
            if let Ok(all) = inventory::list_prefix(host, prefix, false).await {
                saving::settle(host, &all).await;
            }
        },
        super::orphans::reap_runs(host)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(slot: u32, state: &str, workspace: &str, persistent: bool, kind: &str) -> SandboxInfo {
        let i: crate::incus::Instance = serde_json::from_value(json!({
            "name": format!("cci-ws-{slot}"),
            "status": state,
            "config": {
                keys::WORKSPACE: workspace,
                keys::SLOT: slot.to_string(),
                keys::KIND: kind,
                keys::PERSISTENT: persistent.to_string(),
                keys::ACCOUNT: "1000:agent",
            },
        }))
        .unwrap();
        SandboxInfo::from_instance(&i, &crate::config::Account::new(1000, "code")).unwrap()
    }

    fn slot_of(s: Option<SandboxInfo>) -> Option<u32> {
        s.map(|s| s.slot)
    }

    #[test]
    fn the_lowest_stopped_kept_shell_within_the_limit_is_reused() {
        let found = vec![
            kept(3, "Stopped", "/w", true, "shell"),
            kept(1, "Running", "/w", true, "shell"),
            kept(2, "Stopped", "/w", true, "shell"),
            kept(5, "Stopped", "/w", true, "shell"),
        ];
        assert_eq!(slot_of(pick_kept(None, "/w", 4, found)), Some(2));
    }

    #[test]
    fn only_this_workspaces_persistent_shells_are_reused() {
        let found = vec![
            kept(1, "Stopped", "/other", true, "shell"),
            kept(2, "Stopped", "/w", false, "shell"),
            kept(3, "Stopped", "/w", true, "run"),
        ];
        assert_eq!(slot_of(pick_kept(None, "/w", 9, found)), None);
        assert_eq!(slot_of(pick_kept(None, "/w", 9, vec![])), None);
    }

    #[test]
    fn a_slot_asked_for_reuses_its_kept_shell_running_or_not() {
        let two = Slot::new(2);
        let running = vec![kept(2, "Running", "/w", true, "shell")];
        assert_eq!(slot_of(pick_kept(two, "/w", 4, running)), Some(2));
        // Not a kept shell of this workspace: launched anew (or refused as taken).
        let ephemeral = vec![kept(2, "Running", "/w", false, "shell")];
        assert_eq!(slot_of(pick_kept(two, "/w", 4, ephemeral)), None);
        assert_eq!(slot_of(pick_kept(two, "/w", 4, vec![])), None);
    }
}

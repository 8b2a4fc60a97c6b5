//! The agent state of sessions around the container lifecycle: saved when a
//! session ends (whoever notices first), restored for `--resume`, and the
//! credentials copied in at every start. A container whose session state is
//! not saved yet is never deleted by upkeep; it is started, saved and stopped.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::agent::Agent;
use super::error::Error;
use super::inventory::{self, SandboxInfo};
use super::spec::keys;
use super::teardown::stop;
use crate::host::Host;
use crate::incus::{Client, InstanceStatus};
use crate::network;
use crate::session::{self, Origin, Saved, SessionId, Store};

/// What became of a session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSave {
    /// Saved as this session id.
    Saved {
        /// The session id.
        id: String,
        /// Entries left out (special files, symlinks leaving the folder).
        skipped: u64,
    },
    /// Nothing to save (no agent, no state folder, or saved already).
    Nothing,
    /// Saving failed; the earlier save (if any) is kept.
    Failed(String),
}

/// A lock on one container's lifecycle among this user's cci processes.
fn lock(name: &str, wait: bool) -> Option<File> {
    let dir = crate::state::dir("locks").ok()?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))
        .ok()?;
    if wait {
        f.lock().ok()?;
    } else {
        f.try_lock().ok()?;
    }
    Some(f)
}

/// The store of `agent` under `sessions_dir` (`[paths] sessions_dir`, else
/// the default).
pub fn store_of(sessions_dir: Option<&Path>, agent: &str) -> Result<Store, String> {
    Store::open(sessions_dir, agent).map_err(|e| format!("opening the session store: {e}"))
}

/// How a save is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    /// The session is over: save unless saved already, and record that it was.
    Final,
    /// Save now whatever was saved before (a checkpoint, or before a kill).
    Now,
}

/// Save the state of `info`'s session. A stopped container is started for
/// it and stopped again unless `keep_running`. The outcome is recorded on
/// the container.
pub async fn save_state(
    host: &Host,
    info: &SandboxInfo,
    keep_running: bool,
    kind: SaveKind,
) -> Result<StateSave, Error> {
    let client = &host.client;
    if kind == SaveKind::Final && !info.state_unsaved() {
        return Ok(StateSave::Nothing);
    }
    let agent = Agent::named(&info.agent, None).ok();
    if agent.is_none() && info.git_session.is_empty() {
        return Ok(StateSave::Nothing);
    }
    let mut info = info.clone();
    let mut started = false;
    let mut synced = false;
    let mut tries = 0;
    let outcome = loop {
        if info.state != InstanceStatus::Running {
            let (i, _) = host.client.instance(&info.name).await?;
            if let Err(why) = super::protect::sources_unmoved(&i) {
                return Ok(StateSave::Failed(why));
            }
            start_to_save(host, &info.name).await.map_err(|e| match e {
                network::Error::Incus(e) => Error::Incus(e),
                other => Error::SaveStart(other),
            })?;
            started = true;
        }
        // An isolated session's commits come to the host with its state:
        // when they cannot, the container is kept with them.
        if !synced {
            if let Err(why) = git_sync(host, &info).await {
                break StateSave::Failed(format!(
                    "the isolated session's commits were not brought to the host: {why}"
                ));
            }
            // A copied folder comes back into cci's folder for `cci sync`.
            if info.copy
                && let Err(why) =
                    super::copied::copy_out(&host.client, &info.name, &info.account).await
            {
                break StateSave::Failed(format!(
                    "the folder's copy was not brought to the host: {why}"
                ));
            }
            synced = true;
        }
        let Some(agent) = &agent else {
            break StateSave::Nothing;
        };
        match save_running(host, &info, agent).await {
            Ok(outcome) => break outcome,
            // A limit, the host, or a tar that stalls or never ends: trying
            // again changes nothing.
            Err(
                e @ (session::Error::Archive(_)
                | session::Error::Io { .. }
                | session::Error::TimedOut { .. }),
            ) => {
                break StateSave::Failed(e.to_string());
            }
            Err(e) => {
                // The container may have been going down as we saved (the
                // session powered it off): once stopped, start it to save.
                if tries > 0 || !went_down(client, &info.name).await {
                    break StateSave::Failed(e.to_string());
                }
                tries += 1;
                info = inventory::get(host, &info.name).await?;
            }
        }
    };
    let patch = match (&outcome, kind) {
        (StateSave::Failed(why), _) => {
            json!({"config": {keys::SAVE_ERROR: format!("{}: {why}", info.session)}})
        }
        (_, SaveKind::Now) => json!({"config": {keys::SAVE_ERROR: ""}}),
        (_, SaveKind::Final) => {
            json!({"config": {keys::SAVED: info.session, keys::SAVE_ERROR: ""}})
        }
    };
    let recorded = client.update_instance(&info.name, &patch, None).await;
    if started && !keep_running {
        stop(client, &info.name, Duration::from_secs(30)).await?;
    }
    recorded?;
    Ok(outcome)
}

/// Bring the commits of `info`'s isolated git session (if it has one) into
/// the host repository. A session whose record is gone (discarded) has
/// nothing to bring.
async fn git_sync(host: &Host, info: &SandboxInfo) -> Result<(), String> {
    if info.git_session.is_empty() {
        return Ok(());
    }
    let store =
        super::isolated::store(host.config.sessions_dir.as_deref()).map_err(|e| e.to_string())?;
    let max = host.config.session.max_bytes;
    let records =
        super::isolated::records_of(&store, &info.git_session).map_err(|e| e.to_string())?;
    for rec in records.iter().filter(|r| r.container == info.name) {
        super::isolated::sync(&host.client, &info.name, &info.account, rec, max)
            .await
            .map_err(|e| format!("{}: {e}", super::isolated::folder(&rec.dir)))?;
        match super::isolated::auto_merge(rec) {
            Some(Ok(done)) => tracing::info!("{}: session {} {done}", info.name, rec.id),
            Some(Err(why)) => tracing::warn!(
                "{}: session {} was not merged into {} ({why}); `cci merge {}` when ready",
                info.name,
                rec.id,
                rec.auto_merge,
                rec.id
            ),
            None => {}
        }
    }
    Ok(())
}

/// Start `name`, which is not running, to save from it. One powered off
/// from inside may still be going down (the daemon refuses to start it
/// then): wait until it is stopped, and try once more if the daemon was
/// still finishing the stop.
async fn start_to_save(host: &Host, name: &str) -> Result<(), network::Error> {
    let client = &host.client;
    went_down(client, name).await;
    // Nothing forwarded (the SSH agent, ports) while it only saves.
    super::forward::strip(client, name).await?;
    match network::start_guarded(client, host.policy(), name).await {
        Err(network::Error::Incus(e)) if !e.is_not_found() => {
            tracing::debug!("{name}: starting to save failed ({e}); once more when stopped");
            went_down(client, name).await;
            network::start_guarded(client, host.policy(), name).await
        }
        r => r,
    }
}

/// Whether `name` stops within a few seconds (it was shutting down).
async fn went_down(client: &Client, name: &str) -> bool {
    for _ in 0..50 {
        match client.instance(name).await {
            Ok((i, _)) if i.status == InstanceStatus::Stopped => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => return false,
        }
    }
    false
}

async fn save_running(
    host: &Host,
    info: &SandboxInfo,
    agent: &Agent,
) -> Result<StateSave, session::Error> {
    let bad = |e: String| session::Error::Io {
        what: "saving the session".into(),
        cause: std::io::Error::other(e),
    };
    let id: SessionId = info
        .session
        .parse()
        .map_err(|e: session::BadSessionId| bad(e.to_string()))?;
    let limits = host.config.session;
    let store = store_of(host.config.sessions_dir.as_deref(), agent.def.name).map_err(bad)?;
    let origin = Origin {
        id,
        tool: agent.def.name.into(),
        workspace: info.workspace.clone(),
        container: info.name.clone(),
        slot: info.slot,
        persistent: info.persistent,
        account: info.account.clone(),
    };
    Ok(
        match session::save(&host.client, &origin, &agent.def.files, &store, &limits).await? {
            Some((saved, tally)) => {
                for note in &tally.skipped {
                    tracing::info!("{}: left out of the saved state: {note}", info.name);
                }
                StateSave::Saved {
                    id: saved.id().to_string(),
                    skipped: tally.skipped_count,
                }
            }
            None => StateSave::Nothing,
        },
    )
}

/// Save `name`'s session state now, under its lifecycle lock (waiting for it).
pub async fn save_now(host: &Host, name: &str) -> Result<StateSave, Error> {
    let _lock = lock(name, true);
    let info = inventory::get(host, name).await?;
    save_state(host, &info, false, SaveKind::Now).await
}

/// Hold `name`'s lifecycle lock while `f` runs (other cci processes' upkeep
/// leaves the container alone meanwhile).
pub async fn with_lock<T>(name: &str, f: impl Future<Output = T>) -> T {
    let _lock = lock(name, true);
    f.await
}

/// Upkeep for the stopped session containers among `all`: save what is
/// unsaved (each container locked; one being handled elsewhere is skipped),
/// then delete the ephemeral ones whose state is safe.
pub async fn settle(host: &Host, all: &[SandboxInfo]) {
    for s in all {
        let ended = s.is_ended_session();
        let pending = s.state == InstanceStatus::Stopped && s.state_unsaved() && !s.save_failed();
        if !ended && !pending {
            continue;
        }
        let Some(_lock) = lock(&s.name, false) else {
            continue;
        };
        // Fresh: another cci may have just changed it.
        let Ok(s) = inventory::get(host, &s.name).await else {
            continue;
        };
        if s.state != InstanceStatus::Stopped {
            continue;
        }
        if s.state_unsaved() && !s.save_failed() {
            match save_state(host, &s, false, SaveKind::Final).await {
                Ok(StateSave::Failed(why)) => {
                    tracing::warn!("{}: session state not saved: {why}", s.name)
                }
                // The session ended with nobody attached: its record now.
                Ok(state) => super::records::finish(host, &s, "exit", None, Some(&state)).await,
                Err(e) => {
                    tracing::debug!("{}: cannot save its session state now: {e}", s.name);
                    continue;
                }
            }
        }
        let Ok(s) = inventory::get(host, &s.name).await else {
            continue;
        };
        if s.is_ended_session() && !s.state_unsaved() {
            delete_ended(&host.client, &s.name).await;
        }
    }
}

async fn delete_ended(client: &Client, name: &str) {
    // The daemon may still be finishing the stop (busy): wait a little.
    for _ in 0..25 {
        match client.delete_instance(name).await {
            Ok(()) => tracing::debug!("deleted ended session {name}"),
            Err(e) if e.is_conflict() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => tracing::debug!("leaving {name}: {e}"),
        }
        break;
    }
}

/// Push a saved session into the running container `name` and copy the
/// agent's credentials in: what a session needs before its agent starts.
pub async fn prepare(
    host: &Host,
    name: &str,
    agent: &Agent,
    resume: Option<&Saved>,
    account: &crate::config::Account,
) -> Result<(), session::Error> {
    let client = &host.client;
    let config = host.config;
    if let Some(saved) = resume {
        let limits = config.session;
        session::restore(client, name, &agent.def.files, saved, &limits, account).await?;
    }
    // `defaults.mount_claude_config = false`: the agent logs in inside.
    let home = if config.copy_credentials {
        session::credentials_home(config.credentials_dir.as_deref())
    } else {
        None
    };
    session::push_credentials(
        client,
        name,
        &agent.def.files,
        home.as_deref(),
        config.host_credentials,
        account,
    )
    .await?;
    super::caches::inside(client, name, &config.caches, account).await;
    Ok(())
}

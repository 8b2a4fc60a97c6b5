//! Checkpoints and forks of a sandbox: snapshots taken, listed, restored
//! and deleted (`cci snapshot`), automatic ones before a kept container's
//! session ([snapshots] auto), and `cci fork` (a new slot from a copy).
//!
//! A snapshot holds the container's files. What cci decided about the
//! container — its network mode, what it forwards, its session marks —
//! belongs to now, not to the moment of the snapshot: a restore puts the
//! files back and keeps all of that as it was just before (the daemon's
//! restore would also bring back the configuration of then, a looser
//! network mode or an SSH agent a later session did not ask for).

use std::time::Duration;

use serde_json::{Value, json};

use super::error::Error;
use super::inventory::{self, SandboxInfo};
use super::names::{Slot, container_name, parse_container_name};
use super::saving::{self, SaveKind, StateSave};
use super::spec::keys;
use crate::host::Host;
use crate::incus::{self, InstanceStatus, Snapshot};
use crate::network;

/// Names of automatic snapshots start so (only these are pruned).
pub const AUTO_PREFIX: &str = "auto-";

/// The launch mark of a fork: made by `cci fork`, never started yet, and
/// not an interrupted launch (`cci clean` keeps it).
pub const FORKED: &str = "forked";

/// Prefix of the short-lived snapshot a fork is copied from.
const FORK_PREFIX: &str = "cci-fork-";

/// Whether `snap` is a snapshot name cci accepts: 1 to 63 letters, digits,
/// `.`, `_`, `-`, starting with a letter or digit.
pub fn check_name(snap: &str) -> Result<(), String> {
    let ok = !snap.is_empty()
        && snap.len() <= 63
        && snap
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && snap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{snap:?} is not a snapshot name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// A snapshot name from the time: `PREFIX` and `YYYYMMDD-HHMMSS`.
pub fn stamp(prefix: &str) -> String {
    format!("{prefix}{}", crate::image::utc_stamp())
}

fn bad(msg: String) -> Error {
    Error::Usage(msg)
}

/// Take snapshot `snap` (default: `snap-` and the time) of `name`; with
/// `stateful`, its running processes' memory too where the host can.
pub async fn create(
    host: &Host,
    name: &str,
    snap: Option<&str>,
    stateful: bool,
) -> Result<String, Error> {
    let info = inventory::get(host, name).await?;
    let snap = match snap {
        Some(s) => s.to_string(),
        None => stamp("snap-"),
    };
    check_name(&snap).map_err(bad)?;
    if [AUTO_PREFIX, FORK_PREFIX]
        .iter()
        .any(|p| snap.starts_with(p))
    {
        return Err(bad(format!(
            "{snap:?}: names starting with {AUTO_PREFIX} or {FORK_PREFIX} are cci's own"
        )));
    }
    if stateful && info.state != InstanceStatus::Running {
        return Err(bad(format!(
            "--stateful keeps a running container's memory; {name} is {}",
            info.state.as_str().to_lowercase()
        )));
    }
    match host.client.create_snapshot(name, &snap, stateful).await {
        Ok(()) => Ok(snap),
        Err(e) if stateful && stateful_refused(&e) => Err(bad(format!(
            "this host cannot take stateful snapshots ({e}); they need CRIU on the host and migration.stateful on the container; a snapshot without --stateful keeps the files"
        ))),
        Err(incus::Error::Conflict(_)) => Err(Error::Incus(incus::Error::Conflict(format!(
            "{name} has a snapshot {snap:?} already"
        )))),
        Err(e) => Err(e.into()),
    }
}

/// Whether the daemon refused a stateful snapshot for want of support.
fn stateful_refused(e: &incus::Error) -> bool {
    let m = e.to_string().to_lowercase();
    ["stateful", "criu", "migration"]
        .iter()
        .any(|w| m.contains(w))
}

/// `name`'s snapshots, oldest first (cci's own short-lived fork sources aside).
pub async fn list(host: &Host, name: &str) -> Result<Vec<Snapshot>, Error> {
    inventory::get(host, name).await?;
    let mut all = host.client.snapshots(name).await?;
    all.retain(|s| !s.name.starts_with(FORK_PREFIX));
    Ok(all)
}

/// Delete snapshot `snap` of `name`.
pub async fn delete(host: &Host, name: &str, snap: &str) -> Result<(), Error> {
    inventory::get(host, name).await?;
    check_name(snap).map_err(bad)?;
    host.client
        .delete_snapshot(name, snap)
        .await
        .map_err(|e| not_found(e, name, snap))
}

fn not_found(e: incus::Error, name: &str, snap: &str) -> Error {
    if e.is_not_found() {
        Error::Incus(incus::Error::NotFound(format!(
            "{name} has no snapshot {snap:?} (`cci snapshot list {name}`)"
        )))
    } else {
        e.into()
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The container ran: its session was ended (its state saved first),
    /// and the container started again, restored.
    pub restarted: bool,
    /// The ended session's state.
    pub state: StateSave,
    /// The ended session changed workspace files the host runs (see
    /// `tripwire`).
    pub warning: Option<String>,
}

/// Put `name`'s files back as they were at `snap`. A running container's
/// session is ended first (its agent's state saved, what it forwarded
/// removed), the container stopped, restored and started again under its
/// network rules; its settings stay as they are now (see the module's note).
pub async fn restore(host: &Host, name: &str, snap: &str) -> Result<Restored, Error> {
    check_name(snap).map_err(bad)?;
    saving::with_lock(name, async {
        let client = &host.client;
        let info = inventory::get(host, name).await?;
        if !client.snapshots(name).await?.iter().any(|s| s.name == snap) {
            return Err(not_found(
                incus::Error::NotFound(String::new()),
                name,
                snap,
            ));
        }
        let (instance, _) = client.instance(name).await?;
        let running = info.state == InstanceStatus::Running;
        if running && instance.ephemeral {
            return Err(bad(format!(
                "{name} is ephemeral: stopping it for the restore would delete it (and its snapshots); `cci persist {name}` first"
            )));
        }
        if running && !info.persistent && info.kind == "shell" {
            return Err(bad(format!(
                "{name} runs a session and is not kept: ending its session for the restore would delete it; `cci persist {name}` first"
            )));
        }
        if running && info.kind == "run" {
            return Err(bad(format!("{name} runs a one-off `cci run` command")));
        }
        // The agent's state first: the restore takes its files back.
        let state = if running {
            saving::save_state(host, &info, true, SaveKind::Now).await?
        } else {
            saving::save_state(host, &info, false, SaveKind::Final).await?
        };
        if let StateSave::Failed(why) = &state {
            return Err(bad(format!(
                "the session's agent state could not be saved ({why}); nothing was restored"
            )));
        }
        let ws = std::path::Path::new(&info.workspace);
        let mut warning = None;
        if running {
            super::teardown::stop(client, name, Duration::from_secs(30)).await?;
            super::records::finish(host, &info, "restore", None, Some(&state)).await;
            let changed = super::tripwire::check(name, ws);
            warning = (!changed.is_empty()).then(|| super::tripwire::warning(ws, &changed));
        }
        // Nothing a session forwarded outlives it (nor comes back with
        // the snapshot's devices).
        super::forward::strip(client, name).await?;
        // cci's settings as they are now (after the save's marks).
        let (mut now, _) = client.instance_raw(name).await?;
        // The session that ran is over: an attached cci sees the mark gone
        // and leaves the restarted container alone.
        if running && let Some(config) = now.get_mut("config").and_then(Value::as_object_mut) {
            config.insert(keys::SESSION.into(), json!(""));
        }
        let restored = client.restore_snapshot(name, snap).await;
        // Today's settings back whatever the restore did (it may have
        // failed after changing them).
        let back = async {
            let (after, etag) = client.instance_raw(name).await?;
            client
                .put_instance(name, &settings_of_now(now, &after), etag.as_deref())
                .await
        }
        .await;
        restored.map_err(|e| not_found(e, name, snap))?;
        back?;
        if running && let Err(e) = network::start_guarded(client, host.policy(), name).await {
            return Err(bad(format!(
                "{name} was restored to {snap} but did not start again: {e}; `cci shell --slot {}` starts it with a session",
                info.slot
            )));
        }
        Ok(Restored {
            restarted: running,
            state,
            warning,
        })
    })
    .await
}

/// The definition to write back after a restore: `now`'s (from before it)
/// except the daemon's own `volatile.*` keys, which stay as the restore
/// left them (the daemon refuses changes to some, such as the id maps).
fn settings_of_now(mut now: Value, restored: &Value) -> Value {
    let volatile = |k: &str| k.starts_with("volatile.");
    if let Some(config) = now.get_mut("config").and_then(Value::as_object_mut) {
        config.retain(|k, _| !volatile(k));
        if let Some(r) = restored.get("config").and_then(Value::as_object) {
            config.extend(
                r.iter()
                    .filter(|(k, _)| volatile(k))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
    }
    now
}

/// Before a kept container's session: take an automatic snapshot and keep
/// the newest `keep` automatic ones. Returns the snapshot's name.
pub async fn auto(host: &Host, name: &str, keep: u32) -> Result<String, Error> {
    let client = &host.client;
    let mut snap = stamp(AUTO_PREFIX);
    let existing = client.snapshots(name).await?;
    if existing.iter().any(|s| s.name == snap) {
        // Two sessions within a second.
        snap.push_str("-1");
    }
    client.create_snapshot(name, &snap, false).await?;
    let autos: Vec<&Snapshot> = existing
        .iter()
        .filter(|s| s.name.starts_with(AUTO_PREFIX))
        .collect();
    // The new one counts among those kept.
    let excess = (autos.len() + 1).saturating_sub(keep.max(1) as usize);
    for old in autos.into_iter().take(excess) {
        if let Err(e) = client.delete_snapshot(name, &old.name).await {
            tracing::warn!(
                "{name}: removing the old automatic snapshot {}: {e}",
                old.name
            );
        }
    }
    Ok(snap)
}

/// What a fork made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forked {
    /// The new container.
    pub name: String,
    /// Its slot.
    pub slot: Slot,
}

/// A new kept container in another slot of `name`'s workspace (`slot`, or
/// the lowest free one up to `limit`), a copy of `name` as it is now: its
/// installed packages, its home and the agent's state there. It is made
/// stopped; `cci shell --slot N` starts a session in it, under the network
/// mode `name` has. It forwards nothing (a session asks again) and starts
/// its own session record.
pub async fn fork(
    host: &Host,
    name: &str,
    slot: Option<Slot>,
    limit: u32,
) -> Result<Forked, Error> {
    let client = &host.client;
    let info = inventory::get(host, name).await?;
    let (ws_id, _) = parse_container_name(name)
        .ok_or_else(|| bad(format!("{name} is not a workspace's container")))?;
    if info.kind != "shell" {
        return Err(bad(format!(
            "{name} is not a session container (a fork starts sessions: `cci shell --slot N`)"
        )));
    }
    if !info.git_session.is_empty() {
        return Err(bad(format!(
            "{name} holds an isolated git session; forking one is not supported (its commits come back through `cci diff`/`cci merge`; start a second isolated session instead)"
        )));
    }
    let source_snap = stamp(FORK_PREFIX);
    client.create_snapshot(name, &source_snap, false).await?;
    let made = copy_to_slot(host, &info, ws_id, &source_snap, slot, limit).await;
    if let Err(e) = client.delete_snapshot(name, &source_snap).await {
        tracing::warn!("{name}: removing the fork's source snapshot {source_snap}: {e}");
    }
    made
}

async fn copy_to_slot(
    host: &Host,
    info: &SandboxInfo,
    ws_id: &str,
    source_snap: &str,
    slot: Option<Slot>,
    limit: u32,
) -> Result<Forked, Error> {
    let client = &host.client;
    let (source, _) = client.instance(&info.name).await?;
    // The copy's own host-side port (two NICs cannot share one); its MAC
    // and address are new (the daemon's copy).
    let mut devices = serde_json::Map::new();
    if let Some(port) = network::port_of(&source)
        && let Some((key, dev)) = source
            .devices
            .iter()
            .find(|(_, d)| d.get("host_name").map(String::as_str) == Some(port.as_str()))
    {
        let mut dev = dev.clone();
        dev.insert("host_name".into(), network::PortName::random().to_string());
        devices.insert(key.clone(), json!(dev));
    }
    let candidates: Vec<Slot> = match slot {
        Some(s) if s.get() > limit => {
            return Err(Error::SlotAboveLimit { slot: s, limit });
        }
        Some(s) => vec![s],
        None => (1..=limit.max(1)).filter_map(Slot::new).collect(),
    };
    let from = format!("{}/{source_snap}", info.name);
    for s in candidates {
        let new = container_name(ws_id, s);
        if new == info.name {
            continue;
        }
        let config = json!({
            keys::SLOT: s.get().to_string(),
            keys::PERSISTENT: "true",
            keys::SESSION: "",
            keys::SAVED: "",
            keys::SAVE_ERROR: "",
            keys::LAUNCH: FORKED,
            keys::RECORD: "",
        });
        // Locked while it is made: a `cci shell` that picks it meanwhile
        // waits until nothing of the source's forwarding is left.
        let made = saving::with_lock(&new, async {
            client
                .copy_instance(&from, &new, &config, &Value::Object(devices.clone()))
                .await?;
            // Whatever the source forwarded stays with the source.
            if let Err(e) = super::forward::strip(client, &new).await {
                let _ = super::teardown::remove(host, &new).await;
                return Err(e);
            }
            Ok(())
        })
        .await;
        match made {
            Ok(()) => return Ok(Forked { name: new, slot: s }),
            Err(incus::Error::Conflict(_)) if slot.is_none() => continue,
            Err(incus::Error::Conflict(_)) => {
                return Err(Error::SlotInUse { slot: s, name: new });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::SlotsExhausted {
        workspace: info.workspace.clone(),
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_short_and_plain() {
        for good in ["snap-20261203-101010", "before-refactor", "a", "v1.2_x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "ü", &"x".repeat(64), "x\n"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_restore_keeps_the_settings_of_now_and_the_daemons_volatile_keys() {
        let now = json!({"config": {
            "user.cci.network": "restricted", "user.cci.session": "",
            "volatile.idmap.next": "[now]", "volatile.last_state.power": "RUNNING",
        }, "devices": {"eth0": {"host_name": "cci000000000001"}}});
        let restored = json!({"config": {
            "user.cci.network": "open", "user.cci.session": "old",
            "volatile.idmap.next": "[then]", "volatile.idmap.current": "[then]",
        }, "devices": {"eth0": {"host_name": "cci000000000001"}, "ssh-agent": {}}});
        let put = settings_of_now(now, &restored);
        assert_eq!(
            put["config"],
            json!({"user.cci.network": "restricted", "user.cci.session": "",
                   "volatile.idmap.next": "[then]", "volatile.idmap.current": "[then]"})
        );
        assert_eq!(
            put["devices"],
            json!({"eth0": {"host_name": "cci000000000001"}})
        );
    }

    #[test]
    fn stamps_name_the_time() {
        let s = stamp(AUTO_PREFIX);
        assert!(s.starts_with("auto-"), "{s}");
        assert_eq!(s.len(), "auto-".len() + "YYYYMMDD-HHMMSS".len(), "{s}");
        assert!(check_name(&s).is_ok());
    }
}

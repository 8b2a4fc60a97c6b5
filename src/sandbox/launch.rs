//! Launching a sandbox in a free slot, race-free: the create request itself
//! claims the name, and a name someone else claimed first means "next slot".
//! Which slots to try is decided in [`slots`] (pure); this file carries it
//! out against the daemon.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod slots;

use super::error::Error;

use super::names::{Slot, container_name, parse_container_name, workspace_prefix};
use super::spec::{SandboxSpec, keys};
use super::teardown::remove;
use crate::host::Host;
use crate::incus::{Client, InstanceStatus};
use crate::network::{self, Attachment, PolicyBackend};

/// A running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// Container name.
    pub name: String,
    /// Its slot.
    pub slot: Slot,
}

/// What a launch is doing right now, so a caller that interrupts it can
/// remove the half-made container (and only that one).
#[derive(Debug, Clone)]
pub struct Attempt {
    token: String,
    creating: Arc<Mutex<Option<String>>>,
}

impl Default for Attempt {
    fn default() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Attempt {
            // See `launcher_running` for what the parts are for.
            token: super::orphans::token(
                std::process::id(),
                &N.fetch_add(1, Ordering::Relaxed).to_string(),
            ),
            creating: Arc::default(),
        }
    }
}

impl Attempt {
    /// Mark `name` (or nothing) as this attempt's container-in-progress.
    pub(super) fn set(&self, name: Option<&str>) {
        if let Ok(mut a) = self.creating.lock() {
            *a = name.map(str::to_string);
        }
    }

    /// After an interrupted launch: remove the container it was creating, if
    /// that container is this launch's. The daemon may still be creating it,
    /// so look again for a short while before concluding there is none.
    pub async fn abandon(&self, host: &Host) {
        let client = &host.client;
        let Some(name) = self.creating.lock().ok().and_then(|a| a.clone()) else {
            return;
        };
        for _ in 0..20 {
            match self.owns(client, &name).await {
                Some(true) => {
                    let _ = remove(host, &name).await;
                    return;
                }
                Some(false) => return,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Whether `name` exists and was made by this launch (`None`: no such container).
    async fn owns(&self, client: &Client, name: &str) -> Option<bool> {
        match client.instance(name).await {
            Ok((i, _)) => Some(i.config.get(keys::LAUNCH) == Some(&self.token)),
            Err(e) if e.is_not_found() => None,
            Err(_) => Some(false),
        }
    }
}

use super::orphans::launcher_running;

/// Create and start a container for `spec` in `slot`, or in the lowest free
/// slot up to `limit`. `attempt` holds the name being created meanwhile.
pub async fn launch(
    host: &Host,
    spec: &SandboxSpec,
    slot: Option<Slot>,
    limit: u32,
    attempt: &Attempt,
) -> Result<Launched, Error> {
    let client = &host.client;
    super::profile::ensure(client).await?;
    let profiles = [
        "default".to_string(),
        super::profile::SANDBOX_PROFILE.to_string(),
    ];
    vet_profiles(client, spec, &profiles).await?;
    let net = network::prepare(client, &profiles, &spec.network).await?;
    let want = net.readiness();
    let g = Guarded {
        net: &net,
        host,
        fw: host.policy(),
    };
    let launched = allocate(client, spec, slot, limit, attempt, &g).await?;
    if !spec.extras.no_wait {
        attempt.set(Some(&launched.name));
        // While the container boots: remove run containers whose cci is gone.
        let (ready, _) = tokio::join!(
            network::ready::wait(client, &launched.name, &want, network::ready::bound()),
            super::orphans::reap_runs(host)
        );
        attempt.set(None);
        if let Err(e) = ready
            .map_err(Error::from)
            .and_then(|r| r.map_err(Error::from))
        {
            let _ = remove(host, &launched.name).await;
            return Err(e);
        }
    }
    Ok(launched)
}

/// Create and start a container in `slot` or the lowest free one, trying
/// the slots [`slots::plan`] orders.
async fn allocate(
    client: &Client,
    spec: &SandboxSpec,
    slot: Option<Slot>,
    limit: u32,
    attempt: &Attempt,
    g: &Guarded<'_>,
) -> Result<Launched, Error> {
    let used: BTreeSet<Slot> = match slot {
        // The create request claims the name: nothing to look up.
        Some(_) => BTreeSet::new(),
        None => client
            .instances(&workspace_prefix(&spec.workspace.id), false)
            .await?
            .iter()
            .filter_map(|i| parse_container_name(&i.name).map(|(_, s)| s))
            .collect(),
    };
    let plan = slots::plan(slot, &used, limit)?;
    let name_of = |slot: Slot| container_name(&spec.workspace.id, slot);
    for &slot in &plan.first {
        let name = name_of(slot);
        if create(client, spec, g, &name, slot, attempt).await? {
            return Ok(Launched { name, slot });
        }
    }
    // Every slot is taken. Those held by finished `cci run`s that the daemon
    // is still deleting (or by runs whose cci is gone) come free in a moment:
    // wait for one of them rather than fail for lack of slots. (A finished
    // `cci run` leaves its container to the daemon to stop and delete; give
    // it that moment before calling a slot taken.)
    if plan.reap {
        super::orphans::reap_runs(g.host).await;
    }
    for retry in &plan.second {
        let name = name_of(retry.slot);
        if (!retry.if_going_away || going_away(client, &name).await)
            && create(client, spec, g, &name, retry.slot, attempt).await?
        {
            return Ok(Launched {
                name,
                slot: retry.slot,
            });
        }
    }
    Err(match plan.asked {
        Some(slot) => Error::SlotInUse {
            slot,
            name: name_of(slot),
        },
        None => Error::SlotsExhausted {
            limit,
            workspace: spec.workspace.path_str().to_string(),
        },
    })
}

/// Refuse to launch when the profiles would hand the agent the host.
async fn vet_profiles(client: &Client, spec: &SandboxSpec, names: &[String]) -> Result<(), Error> {
    let mut profiles = Vec::with_capacity(names.len());
    for name in names {
        profiles.push(client.profile(name).await?.0);
    }
    let Some(slot) = Slot::new(1) else {
        return Ok(());
    };
    let own = spec.create_request("vet", slot, "");
    super::vet::profiles(&profiles, &own.config, &own.devices).map_err(Error::Unsafe)
}

/// Whether `name` is an Incus-ephemeral `cci run` container on its way out
/// (its run is over: stopping, stopped, or its cci gone) that is gone
/// within 5 s (the daemon deletes it once its forced stop is done). A run
/// container whose cci still runs it is in use: no wait.
async fn going_away(client: &Client, name: &str) -> bool {
    for _ in 0..50 {
        match client.instance(name).await {
            Err(e) if e.is_not_found() => return true,
            Ok((i, _)) if i.ephemeral && i.config.get(keys::KIND).is_some_and(|k| k == "run") => {
                let in_use = i.status == InstanceStatus::Running
                    && i.config
                        .get(keys::LAUNCH)
                        .is_some_and(|t| launcher_running(t));
                if in_use {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return false,
        }
    }
    false
}

/// The network side of a launch: the prepared NIC and the firewall.
struct Guarded<'a> {
    net: &'a Attachment,
    host: &'a Host,
    fw: &'a dyn PolicyBackend,
}

/// Try to create `name`; `Ok(false)` when another launch holds the name.
/// The container is created stopped, its firewall rules go in, and only
/// then does it start: no packet of it ever passes unfiltered.
async fn create(
    client: &Client,
    spec: &SandboxSpec,
    g: &Guarded<'_>,
    name: &str,
    slot: Slot,
    attempt: &Attempt,
) -> Result<bool, Error> {
    // As late as cci can look: a mount source swapped for a link since it
    // was planned (by an agent in another slot) mounts nothing.
    super::mounts::recheck(&spec.extras.mounts).map_err(Error::MountMoved)?;
    super::mounts::recheck(&spec.extras.protected).map_err(Error::MountMoved)?;
    super::forward::check_free(&spec.extras.ports, &[]).map_err(Error::Forward)?;
    attempt.set(Some(name));
    let req = spec.create_request(name, slot, &attempt.token);
    let result = network::create_guarded(client, g.fw, g.net, req).await;
    if result.is_err() && attempt.owns(client, name).await == Some(true) {
        // Our record exists but its creation failed half-way (or it lost a
        // race with another launch's attempt on the same name): ours to remove.
        let _ = remove(g.host, name).await;
    }
    attempt.set(None);
    slots::claimed(result, &spec.image)
}

//! Keeping the firewall in line with the daemon: rules of gone containers
//! removed, missing rules of running ones restored (or the container
//! stopped), allowlists resolved again. Used by every cci command (when no
//! watcher runs), by the watcher, and by `cci network repair|refresh`.

use std::collections::BTreeSet;

use super::{Bridge, Error, Mode, Policy, PolicyBackend, PortName, PortRules};
use super::{allow, ensure, hosts, keys, port_of, release};
use crate::incus::{Client, Instance};

/// What [`reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Guarded instances (any state).
    pub guarded: usize,
    /// Rules of containers that are gone, removed.
    pub removed: Vec<PortName>,
    /// Containers whose missing rules were put back.
    pub restored: Vec<String>,
    /// Running containers stopped because their rules could not be restored.
    pub stopped: Vec<String>,
}

/// Bring the firewall in line with the daemon: remove rules whose container
/// is gone, put back missing rules of existing guarded containers, and stop
/// a running one whose rules are missing and cannot be restored (fail closed).
pub async fn reconcile(client: &Client, fw: &dyn PolicyBackend) -> Result<Reconciled, Error> {
    // The rules first, then the containers: a container is always created
    // before its rules, so a port seen here whose container is missing from
    // the (later) list really is gone — never one that a concurrent launch
    // is just guarding. The tables serve every Incus project, so the list
    // is of every project: a port is released only when no container of
    // any project has it, and when the list cannot be had nothing is.
    let state = fw.state();
    let instances = client.instances_all_projects().await?;
    let guarded: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.config.contains_key(keys::MODE) && port_of(i).is_some())
        .collect();
    let mut out = Reconciled {
        guarded: guarded.len(),
        ..Default::default()
    };
    let state = match state {
        Ok(s) => s,
        // Nothing to guard: a machine without nft (or sudo) is fine.
        Err(_) if guarded.is_empty() => return Ok(out),
        // Not being able to read the rules says nothing about whether they
        // are in place (they live in the kernel): nothing is stopped for it.
        Err(e) => return Err(e),
    };
    if !state.tables && !state.ports.is_empty() {
        // The shared part is damaged (cci's inet table deleted): put it back.
        fw.restore_shared()?;
        out.restored.push("(shared rules)".into());
    }
    let live: BTreeSet<PortName> = guarded.iter().filter_map(|i| port_of(i)).collect();
    for port in state.ports.keys().filter(|p| !live.contains(*p)) {
        release(fw, port)?;
        out.removed.push(port.clone());
    }
    for inst in guarded {
        let Some(port) = port_of(inst) else { continue };
        // Only a running container needs its rules now: every way cci
        // starts one installs them first, and a launch in progress is
        // about to (doing it here as well would only add work).
        if state.ports.contains_key(&port) || !matches!(inst.status.as_str(), "Running" | "Frozen")
        {
            continue;
        }
        let own = inst.client(client);
        match ensure(&own, fw, inst).await {
            Ok(()) => out.restored.push(inst.name.clone()),
            Err(e) => {
                tracing::warn!("restoring the rules of {}: {e}", inst.name);
                out.stopped.extend(stop_running(&own, &[inst]).await);
            }
        }
    }
    Ok(out)
}

async fn stop_running(client: &Client, instances: &[&Instance]) -> Vec<String> {
    let mut stopped = Vec::new();
    for i in instances.iter().filter(|i| i.status == "Running") {
        if let Ok(true) = policy_needs_rules(i)
            && client
                .stop_instance(&i.name, Some(std::time::Duration::ZERO), true)
                .await
                .is_ok()
        {
            stopped.push(i.name.clone());
        }
    }
    stopped
}

fn policy_needs_rules(i: &Instance) -> Result<bool, Error> {
    Ok(Policy::of(i)
        .transpose()?
        .is_some_and(|p| p.mode != Mode::Open))
}

/// Re-resolve allowlist containers' domains (with `due_only`, only those
/// whose refresh interval has passed) and swap in the new addresses where
/// they changed — never widening on failure: a domain that does not resolve
/// keeps its last-known-good addresses. Returns the containers whose sets
/// changed.
pub async fn refresh(
    client: &Client,
    fw: &dyn PolicyBackend,
    due_only: bool,
) -> Result<Vec<String>, Error> {
    let mut changed = Vec::new();
    for inst in client.instances_all_projects().await? {
        let (Some(Ok(policy)), Some(port)) = (Policy::of(&inst), port_of(&inst)) else {
            continue;
        };
        if policy.mode != Mode::Allowlist || policy.allow.is_empty() {
            continue;
        }
        let interval = std::time::Duration::from_secs_f64(policy.refresh_minutes * 60.0);
        if due_only && allow::cache_age(&port).is_some_and(|age| age < interval) {
            continue;
        }
        let old = allow::load_cache(&port);
        let new = allow::resolve(&policy.allow, &policy.dns_servers, &old).await?;
        for (domain, ip) in &new.refused {
            tracing::warn!(
                "{}: refused {ip} for {domain} (not a public address)",
                inst.name
            );
        }
        if new.resolved == old {
            allow::store_cache(&port, &old)?; // refreshed: the clock starts again
            continue;
        }
        let (allow4, allow6) = allow::admitted(&policy.allow, &new.resolved);
        let r = PortRules {
            port: port.clone(),
            mode: policy.mode,
            bridge: Bridge::default(),
            allow4,
            allow6,
        };
        fw.refill(&r)?;
        allow::store_cache(&port, &new.resolved)?;
        if let Err(e) = hosts::write(&inst.client(client), &inst.name, &new.resolved).await {
            tracing::warn!("updating /etc/hosts of {}: {e}", inst.name);
        }
        changed.push(inst.name.clone());
    }
    Ok(changed)
}

//! Keeping the firewall in line with the daemon: rules of gone containers
//! removed, missing rules of running ones restored (or the container
//! stopped), allowlists resolved again. Used by every cci command (when no
//! watcher runs), by the watcher, and by `cci network repair|refresh`.

use std::collections::BTreeSet;

use super::{Bridge, Error, Mode, Policy, PolicyBackend, PortName, PortRules, State};
use super::{allow, ensure, hosts, keys, port_of, release};
use crate::incus::{Client, Instance, InstanceStatus};

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

/// What [`reconcile`] is to do, decided from the rules in force and the
/// instances alone (see [`plan`]).
#[derive(Debug, Clone)]
pub struct UpkeepPlan<'a> {
    /// Guarded instances (any state).
    pub guarded: usize,
    /// The shared part of the rules is damaged while ports are guarded.
    pub restore_shared: bool,
    /// Ports whose container is gone (in any project): their rules go.
    pub release: Vec<PortName>,
    /// Running (or frozen) guarded containers whose rules are missing.
    pub restore: Vec<Restore<'a>>,
}

/// A container whose missing rules are to be put back.
#[derive(Debug, Clone)]
pub struct Restore<'a> {
    /// The container.
    pub instance: &'a Instance,
    /// Stop it (fail closed) when its rules cannot be put back: it runs and
    /// its policy needs rules.
    pub stop_if_failed: bool,
}

/// The upkeep plan for `state` (the rules, read BEFORE the instances) and
/// `instances` (of every project). Pure.
///
/// The rules are read first, then the containers: a container is always
/// created before its rules, so a port seen in `state` whose container is
/// missing from the (later) list really is gone — never one that a
/// concurrent launch is just guarding. The tables serve every Incus
/// project, so a port is released only when no container of any project
/// has it. When the rules cannot be read: nothing guarded is fine (a
/// machine without nft or sudo), otherwise the error is returned and
/// nothing is done — not being able to read the rules says nothing about
/// whether they are in place, so nothing is stopped for it.
pub fn plan(state: Result<State, Error>, instances: &[Instance]) -> Result<UpkeepPlan<'_>, Error> {
    let guarded: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.config.contains_key(keys::MODE) && port_of(i).is_some())
        .collect();
    let mut plan = UpkeepPlan {
        guarded: guarded.len(),
        restore_shared: false,
        release: Vec::new(),
        restore: Vec::new(),
    };
    let state = match state {
        Ok(s) => s,
        Err(_) if guarded.is_empty() => return Ok(plan),
        Err(e) => return Err(e),
    };
    // The shared part is damaged (cci's inet table deleted): put it back.
    plan.restore_shared = !state.tables && !state.ports.is_empty();
    let live: BTreeSet<PortName> = guarded.iter().filter_map(|i| port_of(i)).collect();
    plan.release = state
        .ports
        .keys()
        .filter(|p| !live.contains(*p))
        .cloned()
        .collect();
    for inst in guarded {
        let Some(port) = port_of(inst) else { continue };
        // Only a running container needs its rules now: every way cci
        // starts one installs them first, and a launch in progress is
        // about to (doing it here as well would only add work).
        if state.ports.contains_key(&port)
            || !matches!(
                inst.status,
                InstanceStatus::Running | InstanceStatus::Frozen
            )
        {
            continue;
        }
        plan.restore.push(Restore {
            instance: inst,
            stop_if_failed: inst.status == InstanceStatus::Running
                && matches!(policy_needs_rules(inst), Ok(true)),
        });
    }
    Ok(plan)
}

/// The backend's part of `plan`, in order: the shared rules, then the
/// releases (the first failure stops it). Records what it did in `out`.
pub(super) fn apply_rules(
    fw: &dyn PolicyBackend,
    plan: &UpkeepPlan<'_>,
    out: &mut Reconciled,
) -> Result<(), Error> {
    if plan.restore_shared {
        fw.restore_shared()?;
        out.restored.push("(shared rules)".into());
    }
    for port in &plan.release {
        release(fw, port)?;
        out.removed.push(port.clone());
    }
    Ok(())
}

/// Bring the firewall in line with the daemon: remove rules whose container
/// is gone, put back missing rules of existing guarded containers, and stop
/// a running one whose rules are missing and cannot be restored (fail closed).
pub async fn reconcile(client: &Client, fw: &dyn PolicyBackend) -> Result<Reconciled, Error> {
    // The rules first, then the containers (see `plan`).
    let state = fw.state();
    let instances = client.instances_all_projects().await?;
    let plan = plan(state, &instances)?;
    let mut out = Reconciled {
        guarded: plan.guarded,
        ..Default::default()
    };
    apply_rules(fw, &plan, &mut out)?;
    for r in &plan.restore {
        let inst = r.instance;
        let own = inst.client(client);
        match ensure(&own, fw, inst).await {
            Ok(()) => out.restored.push(inst.name.clone()),
            Err(e) => {
                tracing::warn!("restoring the rules of {}: {e}", inst.name);
                if r.stop_if_failed
                    && own
                        .stop_instance(&inst.name, Some(std::time::Duration::ZERO), true)
                        .await
                        .is_ok()
                {
                    out.stopped.push(inst.name.clone());
                }
            }
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fake::{Call, FakeBackend, Op};

    /// A guarded instance as the daemon lists it.
    fn inst(name: &str, status: &str, mode: &str, port: &PortName, project: &str) -> Instance {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "status": status,
            "project": project,
            "config": { keys::MODE: mode },
            "expanded_devices": { "eth0": {
                "type": "nic", "network": "incusbr0", "host_name": port.as_str(),
                "ipv4.address": "10.0.0.5",
            }},
        }))
        .unwrap()
    }

    fn names<'a>(plan: &UpkeepPlan<'a>) -> Vec<&'a str> {
        plan.restore
            .iter()
            .map(|r| r.instance.name.as_str())
            .collect()
    }

    #[test]
    fn a_container_deleted_behind_ccis_back_loses_its_rules() {
        let (gone, kept) = (PortName::random(), PortName::random());
        let fw = FakeBackend::with_ports(&[&gone, &kept]);
        let all = [inst("b", "Running", "restricted", &kept, "")];
        let plan = plan(fw.state(), &all).unwrap();
        assert_eq!(plan.guarded, 1);
        assert_eq!(plan.release, std::slice::from_ref(&gone));
        assert!(plan.restore.is_empty() && !plan.restore_shared);
        let mut out = Reconciled::default();
        apply_rules(&fw, &plan, &mut out).unwrap();
        assert_eq!(fw.ports(), [kept]);
        assert_eq!(out.removed, [gone]);
    }

    #[test]
    fn ip_reuse_by_a_new_container_keeps_the_new_ports_rules() {
        // Rules are keyed on the port name, never the address: the new
        // container (same IP, its own port) keeps its rules, the old goes.
        let (old, new) = (PortName::random(), PortName::random());
        let fw = FakeBackend::with_ports(&[&old, &new]);
        let all = [inst("cci-ws-1", "Running", "restricted", &new, "")];
        let plan = plan(fw.state(), &all).unwrap();
        assert_eq!(plan.release, [old]);
        assert!(plan.restore.is_empty());
    }

    #[test]
    fn flushed_rules_come_back_for_running_containers_only() {
        let ports: Vec<PortName> = (0..4).map(|_| PortName::random()).collect();
        let fw = FakeBackend::with_ports(&ports.iter().collect::<Vec<_>>());
        fw.flush();
        let all = [
            inst("run", "Running", "restricted", &ports[0], ""),
            inst("off", "Stopped", "restricted", &ports[1], ""),
            inst("ice", "Frozen", "allowlist", &ports[2], ""),
            inst("open", "Running", "open", &ports[3], ""),
        ];
        let plan = plan(fw.state(), &all).unwrap();
        // Nothing left to release, and no shared part without ports.
        assert!(plan.release.is_empty() && !plan.restore_shared);
        assert_eq!(names(&plan), ["run", "ice", "open"]);
        // Fail closed: stopped when its rules cannot come back — only a
        // running container whose policy needs rules.
        let stop: Vec<bool> = plan.restore.iter().map(|r| r.stop_if_failed).collect();
        assert_eq!(stop, [true, false, false]);
    }

    #[test]
    fn a_damaged_shared_part_is_put_back_before_any_release() {
        let (live, gone) = (PortName::random(), PortName::random());
        let fw = FakeBackend::with_ports(&[&live, &gone]);
        fw.drop_shared();
        let all = [inst("a", "Running", "restricted", &live, "")];
        let plan = plan(fw.state(), &all).unwrap();
        assert!(plan.restore_shared);
        let mut out = Reconciled::default();
        apply_rules(&fw, &plan, &mut out).unwrap();
        assert_eq!(
            fw.calls(),
            [Call::State, Call::RestoreShared, Call::Release(gone)]
        );
        assert_eq!(out.restored, ["(shared rules)"]);
    }

    #[test]
    fn a_launch_in_progress_is_left_alone() {
        // Created (stopped) and guarded next: its port is not in the rules
        // yet; upkeep neither guards it nor touches anything.
        let fw = FakeBackend::new();
        let all = [inst(
            "new",
            "Stopped",
            "restricted",
            &PortName::random(),
            "",
        )];
        let plan = plan(fw.state(), &all).unwrap();
        assert!(plan.release.is_empty() && plan.restore.is_empty() && !plan.restore_shared);
        assert_eq!(plan.guarded, 1);
    }

    #[test]
    fn a_port_of_another_project_is_kept() {
        let p = PortName::random();
        let fw = FakeBackend::with_ports(&[&p]);
        let all = [inst("x", "Running", "restricted", &p, "other")];
        assert!(plan(fw.state(), &all).unwrap().release.is_empty());
    }

    #[test]
    fn a_container_cci_does_not_guard_keeps_nothing() {
        // A cci-shaped port on an instance that records no policy is not
        // guarded: its rules are released.
        let p = PortName::random();
        let fw = FakeBackend::with_ports(&[&p]);
        let mut i = inst("x", "Running", "restricted", &p, "");
        i.config.clear();
        let plan = plan(fw.state(), std::slice::from_ref(&i)).unwrap();
        assert_eq!((plan.guarded, plan.release), (0, vec![p]));
    }

    #[test]
    fn unreadable_rules_stop_nothing() {
        let fw = FakeBackend::new();
        fw.fail(Op::State);
        // Nothing guarded: fine (a machine without nft).
        let none = plan(fw.state(), &[]).unwrap();
        assert_eq!(none.guarded, 0);
        // Something guarded: an error, and no plan to act on.
        let all = [inst("a", "Running", "restricted", &PortName::random(), "")];
        assert!(plan(fw.state(), &all).is_err());
    }

    #[test]
    fn a_failed_release_stops_the_upkeep_there() {
        let (a, b) = (PortName::random(), PortName::random());
        let fw = FakeBackend::with_ports(&[&a, &b]);
        fw.fail(Op::Release);
        let plan = plan(fw.state(), &[]).unwrap();
        let mut out = Reconciled::default();
        assert!(apply_rules(&fw, &plan, &mut out).is_err());
        assert_eq!(fw.calls().len(), 2, "state, then one release");
        assert!(out.removed.is_empty());
        assert_eq!(fw.ports().len(), 2);
    }
}

//! Guarding a container: attach the guarded NIC to its create request,
//! create it stopped, install its rules, and only then start it; release the
//! rules when it is gone. Fail closed: a container whose rules cannot be
//! applied does not start. Owns the ordering, not the rules' text
//! ([`super::rules`]) nor how they are enforced ([`super::PolicyBackend`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::allow::{self, Entry};
use super::policy::{Mode, Policy, keys};
use super::port::{PortName, port_of};
use super::rules::{self, Bridge, PortRules};
use super::{Error, PolicyBackend, hosts, spawn_watcher};
use crate::incus::transport::StringMap;
use crate::incus::{Client, Instance, InstanceCreate};

/// The NIC keys that keep a container from claiming another's MAC or IP
/// addresses, or sending router advertisements.
const FILTERING: [&str; 3] = [
    "security.ipv4_filtering",
    "security.ipv6_filtering",
    "security.mac_filtering",
];

/// The network ACL `instance`'s NIC carries, as the daemon has it: exactly
/// one NIC, carrying an ACL, dropping what it does not allow, filtering
/// spoofed addresses; else None.
fn acl_on_nic(instance: &Instance) -> Option<String> {
    let nics: Vec<_> = instance
        .expanded_devices
        .values()
        .filter(|d| d.get("type").is_some_and(|t| t == "nic"))
        .collect();
    match nics.as_slice() {
        [d] if d
            .get("security.acls.default.egress.action")
            .is_some_and(|a| a == "drop")
            && d.get("security.acls.default.ingress.action")
                .is_some_and(|a| a == "drop")
            && FILTERING
                .iter()
                .all(|k| d.get(*k).is_some_and(|v| v == "true")) =>
        {
            d.get("security.acls").cloned()
        }
        _ => None,
    }
}

/// The default profile's NIC and the bridge it sits on, looked up once per
/// launch; turns create requests into guarded ones.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub(super) policy: Policy,
    pub(super) nic: Option<(String, StringMap)>,
    pub(super) bridge: Bridge,
    pub(super) resolved: allow::Resolved,
    /// The daemon is on another machine: its NIC gets no port of cci's
    /// (no local rule could guard it), and the ACL below instead.
    pub(super) remote: Option<String>,
    /// On a remote, restricted and allowlist modes: the network ACL the
    /// server enforces on the NIC (made before the container).
    pub(super) acl: Option<crate::incus::acls::NetworkAcl>,
}

impl Attachment {
    /// The policy it applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Make sure the background watcher runs (see [`watch`]); a failure is
/// reported, not fatal: the rules are in place, only their upkeep is missing.
pub fn start_watcher() {
    if let Err(e) = spawn_watcher() {
        tracing::error!(
            "cannot start the network watcher (rules of deleted containers stay until the next cci command): {e}"
        );
    }
}

/// Look up what [`Attachment::attach`] needs for `profiles` (as the create
/// request lists them) and, in allowlist mode, resolve the domains — failing
/// (closed) when one of them gives no usable address.
pub async fn prepare(
    client: &Client,
    profiles: &[String],
    policy: &Policy,
) -> Result<Attachment, Error> {
    if let Some(remote) = client.remote() {
        super::backend::Remote {
            remote: remote.into(),
        }
        .check(policy.mode)?;
    }
    let mut devices = Vec::new();
    for name in profiles {
        let (profile, _) = client.profile(name).await?;
        devices.push((name.clone(), profile.devices));
    }
    let nic = the_nic(devices)?;
    let mut bridge = Bridge::default();
    let mut bridge_config = StringMap::new();
    if let Some((_, dev)) = &nic {
        let network = dev
            .get("network")
            .or_else(|| dev.get("parent"))
            .cloned()
            .unwrap_or_default();
        let net = client.network(&network).await?;
        if net.kind != "bridge" && policy.mode != Mode::Open {
            return Err(Error::Unsupported {
                network,
                kind: net.kind,
            });
        }
        bridge = bridge_of(&net.config);
        bridge_config = net.config;
    }
    let mut resolved = allow::Resolved::default();
    if policy.mode == Mode::Allowlist {
        let r = allow::resolve(&policy.allow, &policy.dns_servers, &resolved).await?;
        let missing = r.unresolved();
        if !missing.is_empty() {
            return Err(Error::Unresolved(missing.join(", ")));
        }
        resolved = r.resolved;
    }
    let acl = match client.remote() {
        Some(remote) if nic.is_some() && policy.mode != Mode::Open => {
            Some(remote_acl(client, remote, policy, &bridge_config).await?)
        }
        _ => None,
    };
    Ok(Attachment {
        policy: policy.clone(),
        nic,
        bridge,
        resolved,
        remote: client.remote().map(str::to_string),
        acl,
    })
}

/// The network ACL for a container of `policy` on remote `remote`: the
/// server must filter with nftables (Incus enforces NIC ACLs only so); its
/// own addresses are read now. Unused ACLs cci left there are removed.
async fn remote_acl(
    client: &Client,
    remote: &str,
    policy: &Policy,
    bridge_config: &StringMap,
) -> Result<crate::incus::acls::NetworkAcl, Error> {
    let refuse = |why: String| Error::RemoteUnenforced {
        mode: policy.mode.to_string(),
        remote: remote.into(),
        why,
    };
    let info = client.server().await?;
    if info.environment.firewall != "nftables" {
        return Err(refuse(format!(
            "its Incus filters with {:?}, and applies network ACLs to a container's NIC only with nftables",
            info.environment.firewall
        )));
    }
    // Every address of the server: of each cluster member (the container
    // may land on any), and what its name resolves to (a NAT or floating
    // address in front of it).
    let members = if info.environment.server_clustered {
        client.cluster_members().await?
    } else {
        Vec::new()
    };
    let mut host: Vec<std::net::IpAddr> = client
        .host_addresses(&members)
        .await?
        .iter()
        .filter_map(|a| a.address.parse().ok())
        .collect();
    if let Some(endpoint) = client.endpoint().https()
        && let Ok(found) = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await
    {
        host.extend(found.map(|a| a.ip()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // What cci left behind (containers deleted by the daemon itself).
    if let Ok(all) = client.acls().await {
        for old in all.iter().filter(|a| super::acl::stale(a, now)) {
            let _ = client.delete_acl(&old.name).await;
        }
    }
    super::acl::plan(
        &super::acl::new_name(),
        policy,
        &super::acl::BridgeNets::from_config(bridge_config),
        &host,
        now,
    )
    .ok_or_else(|| refuse("no ACL expresses it".into()))
}

/// The one NIC the profiles give (in order, a later profile's device
/// replacing an earlier one of the same name, as Incus expands them). More
/// than one is refused: cci guards exactly one port per container, and an
/// unguarded second NIC would be a way around every rule.
pub(super) fn the_nic(
    profiles: Vec<(String, std::collections::HashMap<String, StringMap>)>,
) -> Result<Option<(String, StringMap)>, Error> {
    let mut devices: std::collections::BTreeMap<String, (String, StringMap)> = Default::default();
    for (profile, devs) in profiles {
        for (key, dev) in devs {
            devices.insert(key, (profile.clone(), dev));
        }
    }
    let mut nics: Vec<(String, String, StringMap)> = devices
        .into_iter()
        .filter(|(_, (_, d))| d.get("type").is_some_and(|t| t == "nic"))
        .map(|(key, (profile, dev))| (key, profile, dev))
        .collect();
    if nics.len() > 1 {
        return Err(Error::ManyNics(
            nics.iter()
                .map(|(key, profile, _)| format!("{key:?} (profile {profile:?})"))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    Ok(nics.pop().map(|(key, _, dev)| (key, dev)))
}

/// The bridge an existing guarded instance's NIC sits on, as it is now.
pub(super) async fn bridge_of_instance(
    client: &Client,
    instance: &Instance,
) -> Result<Bridge, Error> {
    let Some(port) = port_of(instance) else {
        return Ok(Bridge::default());
    };
    let network = instance
        .expanded_devices
        .values()
        .find(|d| d.get("host_name").map(String::as_str) == Some(port.as_str()))
        .and_then(|d| d.get("network").or_else(|| d.get("parent")).cloned());
    match network {
        Some(n) => Ok(bridge_of(&client.network(&n).await?.config)),
        None => Ok(Bridge::default()),
    }
}

pub(super) fn bridge_of(config: &StringMap) -> Bridge {
    let addr = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.split('/').next())
            .map(str::to_string)
    };
    Bridge {
        v4: addr("ipv4.address").and_then(|a| a.parse::<Ipv4Addr>().ok()),
        v6: addr("ipv6.address").and_then(|a| a.parse::<Ipv6Addr>().ok()),
    }
}

impl Attachment {
    /// Give `req` the guarded NIC on `port` (fixed host-side name, IP, IPv6
    /// and MAC anti-spoofing), record the policy on the instance, and keep it
    /// from autostarting after a host reboot before cci's rules exist.
    pub fn attach(&self, req: &mut InstanceCreate, port: &PortName) {
        if let (Some((key, dev)), Some(acl)) = (&self.nic, &self.acl) {
            // The server enforces the ACL on the container's own NIC: drop
            // by default both ways, only what the ACL allows passes.
            let mut dev = dev.clone();
            dev.insert("security.acls".into(), acl.name.clone());
            dev.insert("security.acls.default.egress.action".into(), "drop".into());
            dev.insert("security.acls.default.ingress.action".into(), "drop".into());
            for k in FILTERING {
                dev.insert(k.into(), "true".into());
            }
            req.devices.insert(key.clone(), dev);
            req.config
                .insert(super::acl::ACL_KEY.into(), acl.name.clone());
        }
        if let Some((key, dev)) = &self.nic
            && self.remote.is_none()
        {
            let mut dev = dev.clone();
            dev.insert("host_name".into(), port.to_string());
            for k in FILTERING {
                dev.insert(k.into(), "true".into());
            }
            req.devices.insert(key.clone(), dev);
        } else if let Some((key, dev)) = &self.nic
            && self.acl.is_none()
        {
            // A remote in open mode: no ACL, but no spoofing of the other
            // containers on the server's bridge either.
            let mut dev = dev.clone();
            for k in FILTERING {
                dev.insert(k.into(), "true".into());
            }
            req.devices.insert(key.clone(), dev);
        }
        req.config
            .insert(keys::MODE.into(), self.policy.mode.as_str().into());
        if !self.policy.allow.is_empty() {
            let list: Vec<String> = self.policy.allow.iter().map(Entry::to_string).collect();
            req.config.insert(keys::ALLOW.into(), list.join(","));
        }
        if self.policy.mode == Mode::Proxy {
            if !self.policy.rules.is_empty() {
                req.config
                    .insert(keys::ALLOW.into(), self.policy.rules.join(","));
            }
            if self.policy.ask_unknown {
                req.config.insert(keys::ON_UNKNOWN.into(), "ask".into());
            }
            // Its tools find the proxy through the usual variables.
            for (k, v) in super::egress::environment(&self.bridge) {
                req.config.insert(k, v);
            }
        }
        if self.policy.mode == Mode::Allowlist {
            req.config.insert(
                keys::REFRESH.into(),
                self.policy.refresh_minutes.to_string(),
            );
        }
        if matches!(self.policy.mode, Mode::Allowlist | Mode::Proxy)
            && !self.policy.dns_servers.is_empty()
        {
            let list: Vec<String> = self
                .policy
                .dns_servers
                .iter()
                .map(|s| s.to_string())
                .collect();
            req.config.insert(keys::DNS.into(), list.join(","));
        }
        if self.policy.mode == Mode::Restricted {
            if self.policy.lan {
                req.config.insert(keys::LAN.into(), "open".into());
            }
            if self.policy.metadata {
                req.config.insert(keys::METADATA.into(), "open".into());
            }
        }
        req.config.insert("boot.autostart".into(), "false".into());
        req.start = false;
    }

    /// Install the rules for `port` (before the container's first start).
    /// Open mode has nothing to enforce: a firewall that cannot be used is
    /// only logged there.
    pub fn guard(&self, fw: &dyn PolicyBackend, port: &PortName) -> Result<(), Error> {
        if self.remote.is_some() {
            // Nothing cci could install there: the backend only refuses the
            // modes it cannot enforce (checked at `prepare` already).
            return fw.guard(&PortRules {
                port: port.clone(),
                mode: self.policy.mode,
                bridge: self.bridge.clone(),
                allow4: Vec::new(),
                allow6: Vec::new(),
            });
        }
        if self.nic.is_none() {
            return Ok(());
        }
        match install(fw, port, &self.policy, &self.bridge, &self.resolved) {
            Err(e) if self.policy.mode == Mode::Open => {
                tracing::debug!("open mode, no rules for {port}: {e}");
                Ok(())
            }
            r => r,
        }
    }
}

/// Create `req` with the guarded NIC, stopped; install its rules; then
/// start it. When the rules or the start fail, the container is deleted and
/// its rules removed (fail closed). A failed create is left to the caller,
/// who knows whether a half-made record is its own.
pub async fn create_guarded(
    client: &Client,
    fw: &dyn PolicyBackend,
    att: &Attachment,
    req: InstanceCreate,
) -> Result<(), Error> {
    let started = guarded_create(client, fw, att, req, PortName::random()).await;
    if started.is_ok() {
        start_watcher();
    }
    started
}

/// The daemon's part of [`create_guarded`] (a seam for unit tests).
pub(super) trait Daemon {
    /// Create the instance (stopped: `req.start` is false).
    async fn create(&self, req: &InstanceCreate) -> Result<(), Error>;
    /// Write an allowlist container's `/etc/hosts`.
    async fn write_hosts(&self, name: &str, resolved: &allow::Resolved) -> Result<(), Error>;
    /// Write a proxy-mode container's apt setting.
    async fn write_apt_conf(&self, name: &str, bridge: &Bridge) -> Result<(), Error>;
    /// Start it.
    async fn start(&self, name: &str) -> Result<(), Error>;
    /// Stop it by force and delete it; failures are ignored.
    async fn discard(&self, name: &str);
    /// Make a remote container's network ACL.
    async fn put_acl(&self, acl: &crate::incus::acls::NetworkAcl) -> Result<(), Error>;
    /// The ACL the container's NIC carries, as the daemon has it.
    async fn acl_of(&self, name: &str) -> Result<Option<String>, Error>;
    /// Delete an ACL; failures are ignored.
    async fn drop_acl(&self, name: &str);
}

impl Daemon for Client {
    async fn create(&self, req: &InstanceCreate) -> Result<(), Error> {
        Ok(self.create_instance(req).await?)
    }

    async fn put_acl(&self, acl: &crate::incus::acls::NetworkAcl) -> Result<(), Error> {
        Ok(self.create_acl(acl).await?)
    }

    async fn acl_of(&self, name: &str) -> Result<Option<String>, Error> {
        let (instance, _) = self.instance(name).await?;
        Ok(acl_on_nic(&instance))
    }

    async fn drop_acl(&self, name: &str) {
        if let Err(e) = self.delete_acl(name).await {
            tracing::debug!("deleting network ACL {name}: {e}");
        }
    }

    async fn write_hosts(&self, name: &str, resolved: &allow::Resolved) -> Result<(), Error> {
        hosts::write(self, name, resolved).await
    }

    async fn write_apt_conf(&self, name: &str, bridge: &Bridge) -> Result<(), Error> {
        let Some(text) = super::egress::apt_conf(bridge) else {
            return Ok(());
        };
        // An image without apt has no folder for it: nothing to tell.
        if self
            .stat_file(name, "/etc/apt/apt.conf.d")
            .await
            .is_err_and(|e| e.is_not_found())
        {
            return Ok(());
        }
        let root = crate::incus::FileWrite {
            uid: 0,
            gid: 0,
            mode: 0o644,
        };
        self.write_file(name, super::egress::APT_CONF, text.into_bytes(), root)
            .await?;
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        Ok(self.start_instance(name).await?)
    }

    async fn discard(&self, name: &str) {
        let _ = self
            .stop_instance(name, Some(std::time::Duration::ZERO), true)
            .await;
        let _ = self.delete_instance(name).await;
    }
}

/// [`create_guarded`] on `port`, without starting the watcher: create
/// stopped -> rules (-> `/etc/hosts`) -> start; on any failure after the
/// create, discard the container, then release its rules.
pub(super) async fn guarded_create<D: Daemon>(
    daemon: &D,
    fw: &dyn PolicyBackend,
    att: &Attachment,
    mut req: InstanceCreate,
    port: PortName,
) -> Result<(), Error> {
    att.attach(&mut req, &port);
    if let Some(acl) = &att.acl {
        daemon.put_acl(acl).await?;
        if let Err(e) = daemon.create(&req).await {
            daemon.drop_acl(&acl.name).await;
            return Err(e);
        }
    } else {
        daemon.create(&req).await?;
    }
    let started = async {
        att.guard(fw, &port)?;
        // A remote's policy is the ACL on the NIC: checked as the daemon
        // has it before anything runs (fail closed).
        if let Some(acl) = &att.acl
            && daemon.acl_of(&req.name).await?.as_deref() != Some(acl.name.as_str())
        {
            return Err(Error::RemoteUnenforced {
                mode: att.policy.mode.to_string(),
                remote: att.remote.clone().unwrap_or_default(),
                why: format!(
                    "its container {} does not carry network ACL {}",
                    req.name, acl.name
                ),
            });
        }
        if att.policy.mode == Mode::Allowlist {
            daemon.write_hosts(&req.name, &att.resolved).await?;
        }
        if att.policy.mode == Mode::Proxy {
            daemon.write_apt_conf(&req.name, &att.bridge).await?;
        }
        match daemon.start(&req.name).await {
            // Incus puts an ACL's rules in the bridge family with
            // connection tracking, which some kernels lack.
            Err(Error::Incus(e)) if att.acl.is_some() && e.to_string().contains("ct state") => {
                Err(Error::RemoteUnenforced {
                    mode: att.policy.mode.to_string(),
                    remote: att.remote.clone().unwrap_or_default(),
                    why: "its kernel has no connection tracking for bridges (nf_conntrack_bridge), which Incus needs to apply a network ACL to a container's NIC".into(),
                })
            }
            r => r,
        }
    }
    .await;
    if started.is_err() {
        daemon.discard(&req.name).await;
        let _ = release(fw, &port);
        if let Some(acl) = &att.acl {
            daemon.drop_acl(&acl.name).await;
        }
    }
    started
}

/// Start an existing container, its rules (re)installed first.
pub async fn start_guarded(
    client: &Client,
    fw: &dyn PolicyBackend,
    name: &str,
) -> Result<(), Error> {
    let (instance, _) = client.instance(name).await?;
    ensure(client, fw, &instance).await?;
    // A remote's container: its ACL must still be on its NIC (fail closed).
    if let Some(remote) = client.remote() {
        let mode = instance.config.get(keys::MODE).map(String::as_str);
        let want = instance.config.get(super::acl::ACL_KEY);
        let guarded_there = port_of(&instance).is_some();
        let refuse = |why: String| Error::RemoteUnenforced {
            mode: mode.unwrap_or("restricted").to_string(),
            remote: remote.into(),
            why,
        };
        match want {
            Some(acl) if acl_on_nic(&instance).as_ref() != Some(acl) => {
                return Err(refuse(format!(
                    "{name}'s NIC no longer carries network ACL {acl}"
                )));
            }
            None if !guarded_there && mode.is_some_and(|m| m != "open") => {
                return Err(refuse(format!("{name} has no network ACL")));
            }
            _ => {}
        }
    }
    client.start_instance(name).await?;
    if port_of(&instance).is_some() {
        start_watcher();
    }
    Ok(())
}

fn install(
    fw: &dyn PolicyBackend,
    port: &PortName,
    policy: &Policy,
    bridge: &Bridge,
    resolved: &allow::Resolved,
) -> Result<(), Error> {
    let (allow4, allow6) = match policy.mode {
        Mode::Restricted => rules::exempt(policy.lan, policy.metadata),
        _ => allow::admitted(&policy.allow, resolved),
    };
    let rules = PortRules {
        port: port.clone(),
        mode: policy.mode,
        bridge: bridge.clone(),
        allow4,
        allow6,
    };
    if policy.mode == Mode::Allowlist {
        allow::store_cache(port, resolved)?;
    }
    fw.guard(&rules)
}

/// Remove every rule of `port` (and its cache); nothing to remove is fine.
pub fn release(fw: &dyn PolicyBackend, port: &PortName) -> Result<(), Error> {
    fw.release(port)?;
    allow::drop_cache(port);
    Ok(())
}

/// (Re)install the rules of an existing guarded instance, e.g. before cci
/// starts it again: its recorded policy, its bridge as it is now, and for an
/// allowlist the last-known-good addresses (resolved afresh when none).
pub async fn ensure(
    client: &Client,
    fw: &dyn PolicyBackend,
    instance: &Instance,
) -> Result<(), Error> {
    let (Some(policy), Some(port)) = (Policy::of(instance), port_of(instance)) else {
        return Ok(());
    };
    let policy = policy?;
    let network = instance
        .expanded_devices
        .values()
        .find(|d| d.get("host_name").map(String::as_str) == Some(port.as_str()))
        .and_then(|d| d.get("network").or_else(|| d.get("parent")).cloned())
        .unwrap_or_default();
    let bridge = bridge_of(&client.network(&network).await?.config);
    let mut resolved = allow::load_cache(&port);
    if policy.mode == Mode::Allowlist {
        let r = allow::resolve(&policy.allow, &policy.dns_servers, &resolved).await?;
        if resolved.domains.is_empty() && !r.unresolved().is_empty() {
            return Err(Error::Unresolved(r.unresolved().join(", ")));
        }
        resolved = r.resolved;
    }
    install(fw, &port, &policy, &bridge, &resolved)
}

//! Network isolation: each container's mode (restricted, allowlist, open)
//! enforced by cci's own nftables tables on the host, keyed on the
//! container's fixed host-side interface name, in place before the container
//! starts and removed when it is gone. Fails closed: a container whose rules
//! cannot be applied does not start (and a running one is stopped).
//!
//! Owns: policy -> rules ([`rules`]), running nft ([`nft`]), allowlist
//! resolution ([`allow`]) and reconciliation with the daemon. Prints nothing.

pub mod allow;
mod hosts;
pub mod nft;
pub mod plan_policy;
pub mod ready;
pub mod reuse;
pub mod rules;
mod upkeep;
mod watch;

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::incus::transport::StringMap;
use crate::incus::{self, Client, Instance, InstanceCreate};
pub use allow::Entry;
pub use nft::{Firewall, Nft, State};
pub use rules::{Bridge, PortRules};
pub use upkeep::{Reconciled, reconcile, refresh};
pub use watch::{spawn_watcher, watch, watcher_running};

/// Instance config keys cci's network policy lives in.
pub mod keys {
    /// The mode (`restricted`, `allowlist`, `open`).
    pub const MODE: &str = "user.cci.network";
    /// Allowlist entries, comma-separated.
    pub const ALLOW: &str = "user.cci.network.allow";
    /// Allowlist refresh interval in minutes.
    pub const REFRESH: &str = "user.cci.network.refresh_minutes";
    /// DNS servers allowlists are resolved with, comma-separated (empty: the host's).
    pub const DNS: &str = "user.cci.network.dns";
    /// Restricted mode: `open` when private networks are reachable.
    pub const LAN: &str = "user.cci.network.lan";
    /// Restricted mode: `open` when the metadata endpoint is reachable.
    pub const METADATA: &str = "user.cci.network.metadata";
}

/// Allowlists are resolved again this often unless configured otherwise.
pub const DEFAULT_REFRESH_MINUTES: f64 = 30.0;

/// Why a container's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// nft is not installed (or could not be run).
    #[error(
        "cannot run `{command}` ({reason}): cci needs nftables to isolate containers; install it (`apt install nftables`) or use --network open"
    )]
    NftMissing {
        /// What was run.
        command: String,
        /// Why it failed.
        reason: String,
    },
    /// nft refused us.
    #[error(
        "`{command}` is not permitted: network isolation needs root; run cci as root, or let this user run nft through sudo without a password (sudoers: `USER ALL=(root) NOPASSWD: /usr/sbin/nft`)"
    )]
    NftPermission {
        /// What was run.
        command: String,
    },
    /// nft failed otherwise.
    #[error("applying the firewall rules failed: {0}")]
    Nft(String),
    /// An allowlist entry is neither a domain, an address nor a CIDR.
    #[error("allowlist entry {0:?} is not a domain name, an IP address or a CIDR")]
    BadAllowEntry(String),
    /// An unknown mode.
    #[error("unknown network mode {0:?} (expected restricted, allowlist or open)")]
    BadMode(String),
    /// The resolver could not be set up.
    #[error("DNS resolver: {0}")]
    Resolver(String),
    /// Allowlisted domains resolved to nothing usable.
    #[error(
        "allowlist domains gave no usable (public) address: {0}; the container is not started (check the names, or the DNS servers: --dns-server)"
    )]
    Unresolved(String),
    /// The container's NIC is not on a bridge cci can guard.
    #[error(
        "network {network:?} is a {kind}, not an Incus bridge: cci can only isolate containers on a managed bridge (use --network open to run without isolation)"
    )]
    Unsupported {
        /// The network.
        network: String,
        /// Its type.
        kind: String,
    },
    /// The profiles give a container more than one NIC.
    #[error(
        "the container would get more than one network device: {0}; cci guards exactly one, so it refuses to launch (remove the extra NIC from the profile, or override it in a profile of its own)"
    )]
    ManyNics(String),
    /// A container's /etc/hosts could not be updated.
    #[error("updating /etc/hosts of {container}: {reason}")]
    HostsFile {
        /// The container.
        container: String,
        /// What went wrong.
        reason: String,
    },
    /// The last-known-good cache could not be written.
    #[error("saving the allowlist cache: {0}")]
    Cache(String),
    /// The daemon said no.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

/// A container's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Internet yes; LAN, metadata, the host and other containers no.
    #[default]
    Restricted,
    /// Only the allowlisted destinations (and DNS through the bridge).
    Allowlist,
    /// No restriction (anti-spoofing still on).
    Open,
}

impl Mode {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Restricted => "restricted",
            Mode::Allowlist => "allowlist",
            Mode::Open => "open",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode, Error> {
        match s {
            "restricted" => Ok(Mode::Restricted),
            "allowlist" => Ok(Mode::Allowlist),
            "open" => Ok(Mode::Open),
            _ => Err(Error::BadMode(s.to_string())),
        }
    }
}

/// What every port name starts with; the firewall drops frames from any
/// interface with this prefix that has no rules.
pub const PORT_PREFIX: &str = "cci";

/// A container NIC's host-side interface name as cci makes them: `cci` and
/// 12 hex digits (15 characters, the kernel's limit). Nothing else ever gets
/// into an nft script as a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortName(String);

impl PortName {
    /// A fresh random name.
    pub fn random() -> PortName {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        PortName(format!("{PORT_PREFIX}{}", &hex[..12]))
    }

    /// Accept only names of cci's shape.
    pub fn parse(s: &str) -> Result<PortName, Error> {
        let ok = s.len() == 15
            && s.starts_with(PORT_PREFIX)
            && s[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(PortName(s.to_string()))
        } else {
            Err(Error::Nft(format!("{s:?} is not a cci port name")))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a container may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// Allowlist mode: what is allowed (an empty list allows nothing).
    pub allow: Vec<Entry>,
    /// Allowlist mode: minutes between refreshes.
    pub refresh_minutes: f64,
    /// Allowlist mode: DNS servers to resolve with (empty: the host's).
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Restricted mode: private networks (LAN) are reachable.
    pub lan: bool,
    /// Restricted mode: the cloud metadata endpoint is reachable.
    pub metadata: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            mode: Mode::default(),
            allow: Vec::new(),
            refresh_minutes: DEFAULT_REFRESH_MINUTES,
            dns_servers: Vec::new(),
            lan: false,
            metadata: false,
        }
    }
}

impl Policy {
    /// The policy recorded on an instance cci created (`None`: not guarded).
    pub fn of(instance: &Instance) -> Option<Result<Policy, Error>> {
        let mode = instance.config.get(keys::MODE)?;
        Some((|| {
            Ok(Policy {
                mode: mode.parse()?,
                allow: allow::parse_list(instance.config.get(keys::ALLOW).map_or("", |s| s))?,
                refresh_minutes: instance
                    .config
                    .get(keys::REFRESH)
                    .and_then(|m| parse_minutes(m))
                    .unwrap_or(DEFAULT_REFRESH_MINUTES),
                dns_servers: parse_servers(instance.config.get(keys::DNS).map_or("", |s| s))?,
                lan: instance.config.get(keys::LAN).is_some_and(|v| v == "open"),
                metadata: instance
                    .config
                    .get(keys::METADATA)
                    .is_some_and(|v| v == "open"),
            })
        })())
    }
}

/// DNS server addresses, comma-separated.
pub fn parse_servers(text: &str) -> Result<Vec<std::net::IpAddr>, Error> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| Error::Resolver(format!("{s:?} is not a DNS server address")))
        })
        .collect()
}

/// A refresh interval in minutes: positive and finite (fractions allowed).
pub fn parse_minutes(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0 && *m <= 7.0 * 24.0 * 60.0)
}

/// The guarded NIC of an instance: its host-side interface, if cci named it.
pub fn port_of(instance: &Instance) -> Option<PortName> {
    instance
        .expanded_devices
        .values()
        .filter(|d| d.get("type").is_some_and(|t| t == "nic"))
        .find_map(|d| PortName::parse(d.get("host_name")?).ok())
}

/// The default profile's NIC and the bridge it sits on, looked up once per
/// launch; turns create requests into guarded ones.
#[derive(Debug, Clone)]
pub struct Attachment {
    policy: Policy,
    nic: Option<(String, StringMap)>,
    bridge: Bridge,
    resolved: allow::Resolved,
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
    let mut devices = Vec::new();
    for name in profiles {
        let (profile, _) = client.profile(name).await?;
        devices.push((name.clone(), profile.devices));
    }
    let nic = the_nic(devices)?;
    let mut bridge = Bridge::default();
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
    Ok(Attachment {
        policy: policy.clone(),
        nic,
        bridge,
        resolved,
    })
}

/// The one NIC the profiles give (in order, a later profile's device
/// replacing an earlier one of the same name, as Incus expands them). More
/// than one is refused: cci guards exactly one port per container, and an
/// unguarded second NIC would be a way around every rule.
fn the_nic(
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

fn bridge_of(config: &StringMap) -> Bridge {
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
        if let Some((key, dev)) = &self.nic {
            let mut dev = dev.clone();
            dev.insert("host_name".into(), port.to_string());
            for k in [
                "security.ipv4_filtering",
                "security.ipv6_filtering",
                "security.mac_filtering",
            ] {
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
        if self.policy.mode == Mode::Allowlist {
            req.config.insert(
                keys::REFRESH.into(),
                self.policy.refresh_minutes.to_string(),
            );
            if !self.policy.dns_servers.is_empty() {
                let list: Vec<String> = self
                    .policy
                    .dns_servers
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                req.config.insert(keys::DNS.into(), list.join(","));
            }
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
    pub fn guard(&self, fw: &dyn Firewall, port: &PortName) -> Result<(), Error> {
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
    fw: &dyn Firewall,
    att: &Attachment,
    mut req: InstanceCreate,
) -> Result<(), Error> {
    let port = PortName::random();
    att.attach(&mut req, &port);
    client.create_instance(&req).await?;
    let started = async {
        att.guard(fw, &port)?;
        if att.policy.mode == Mode::Allowlist {
            hosts::write(client, &req.name, &att.resolved).await?;
        }
        client.start_instance(&req.name).await?;
        Ok(())
    }
    .await;
    if started.is_ok() {
        start_watcher();
    } else {
        let _ = client
            .stop_instance(&req.name, Some(std::time::Duration::ZERO), true)
            .await;
        let _ = client.delete_instance(&req.name).await;
        let _ = release(fw, &port);
    }
    started
}

/// Start an existing container, its rules (re)installed first.
pub async fn start_guarded(client: &Client, fw: &dyn Firewall, name: &str) -> Result<(), Error> {
    let (instance, _) = client.instance(name).await?;
    ensure(client, fw, &instance).await?;
    client.start_instance(name).await?;
    if port_of(&instance).is_some() {
        start_watcher();
    }
    Ok(())
}

fn install(
    fw: &dyn Firewall,
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
    fw.apply(&rules::install(&rules))
}

/// Remove every rule of `port` (and its cache); nothing to remove is fine.
pub fn release(fw: &dyn Firewall, port: &PortName) -> Result<(), Error> {
    fw.apply(&rules::remove(port))?;
    allow::drop_cache(port);
    Ok(())
}

/// (Re)install the rules of an existing guarded instance, e.g. before cci
/// starts it again: its recorded policy, its bridge as it is now, and for an
/// allowlist the last-known-good addresses (resolved afresh when none).
pub async fn ensure(client: &Client, fw: &dyn Firewall, instance: &Instance) -> Result<(), Error> {
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

#[cfg(test)]
mod tests;

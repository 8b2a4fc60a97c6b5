//! Which containers are cci's, and what each one is. A container is cci's only
//! when it carries the marks cci sets at creation: [`keys::WORKSPACE`] for a
//! sandbox, [`keys::KIND`] `container` for one `cci container launch` made
//! (which has no workspace and no slot).

use std::collections::HashMap;

use serde::Serialize;

use super::spec::{Kind, keys};
use crate::config::Account;
use crate::host::Host;
use crate::incus::{self, Instance, InstanceStatus};

/// One cci container as `cci list` and `cci info` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    /// Container name.
    pub name: String,
    /// `Running`, `Stopped`...
    pub state: InstanceStatus,
    /// Slot number (0: none, for a launched container).
    pub slot: u32,
    /// Host path of the workspace (empty for a launched container).
    pub workspace: String,
    /// `shell`, `run` or `container` (made by `cci container launch`).
    pub kind: String,
    /// Kept after its session ends (shown as `mode`: see [`Self::mode`]).
    #[serde(rename = "mode", serialize_with = "mode_word")]
    pub persistent: bool,
    /// eth0's IPv4 address while running.
    pub ipv4: Option<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Last start (RFC 3339), empty when never started.
    pub last_started: String,
    /// The image alias it came from.
    pub image: String,
    /// The session id (empty for `run` containers).
    pub session: String,
    /// The agent the session runs (empty for plain shells and `run`).
    pub agent: String,
    /// Its network mode (`restricted`, `allowlist`, `open`; empty when unguarded).
    pub network: String,
    /// The token of the launch that made it.
    #[serde(skip)]
    pub launch: String,
    /// The session whose state was last saved to the host.
    #[serde(skip)]
    pub saved: String,
    /// Why saving the session's state failed (`ID: reason`), if it did.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub save_error: String,
    /// The isolated git session at /workspace (its id), if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub git_session: String,
    /// The machine whose cci made it (empty: made before cci recorded it).
    #[serde(skip)]
    pub machine: String,
    /// Its workspace is a copy (a remote server; see `sandbox::copied`).
    #[serde(skip)]
    pub copy: bool,
    /// The cluster member it runs on (empty on a standalone server).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// The user that runs inside (as recorded at creation).
    #[serde(skip)]
    pub account: crate::config::Account,
}

impl SandboxInfo {
    /// The info for `instance`, or `None` when cci did not create it. A
    /// container without a recorded user is taken to run as `account` (the
    /// configured one).
    pub fn from_instance(instance: &Instance, account: &Account) -> Option<SandboxInfo> {
        let key = |k: &str| instance.config.get(k).cloned().unwrap_or_default();
        let workspace = match instance.config.get(keys::WORKSPACE) {
            Some(w) => w.clone(),
            None if key(keys::KIND) == Kind::Container.as_str() => String::new(),
            None => return None,
        };
        // Never started: the daemon says 1970 (or year 1 in older versions).
        let never = ["0001-", "1970-01-01T00:00:00"];
        let last_started = if never.iter().any(|p| instance.last_used_at.starts_with(p)) {
            String::new()
        } else {
            instance.last_used_at.clone()
        };
        Some(SandboxInfo {
            name: instance.name.clone(),
            state: instance.status.clone(),
            slot: key(keys::SLOT).parse().unwrap_or(0),
            workspace,
            kind: key(keys::KIND),
            persistent: key(keys::PERSISTENT) == "true",
            ipv4: instance.state.as_ref().and_then(|s| s.ipv4("eth0")),
            created: instance.created_at.clone(),
            last_started,
            image: key(keys::IMAGE),
            session: key(keys::SESSION),
            agent: key(keys::AGENT),
            network: key(crate::network::keys::MODE),
            launch: key(keys::LAUNCH),
            saved: key(keys::SAVED),
            save_error: key(keys::SAVE_ERROR),
            git_session: key(keys::GIT_SESSION),
            copy: key(super::copied::COPY_KEY) == "true",
            machine: key(keys::MACHINE),
            location: match instance.location.as_str() {
                "none" => String::new(),
                l => l.to_string(),
            },
            account: key(keys::ACCOUNT)
                .split_once(':')
                .and_then(|(uid, name)| Some(Account::new(uid.parse().ok()?, name)))
                .unwrap_or_else(|| account.clone()),
        })
    }

    /// `persistent` or `ephemeral`, as `cci list` says it.
    pub fn mode(&self) -> &'static str {
        if self.persistent {
            "persistent"
        } else {
            "ephemeral"
        }
    }

    /// Made by `cci container launch` (no workspace, no slot, no session).
    pub fn is_launched(&self) -> bool {
        self.kind == Kind::Container.as_str()
    }

    /// An agent session whose state has not been saved to the host yet.
    pub fn state_unsaved(&self) -> bool {
        self.kind == "shell"
            && !self.agent.is_empty()
            && !self.session.is_empty()
            && !self.last_started.is_empty()
            && self.saved != self.session
    }

    /// Saving this session's state failed before (so upkeep does not retry it).
    pub fn save_failed(&self) -> bool {
        !self.session.is_empty()
            && self
                .save_error
                .strip_prefix(self.session.as_str())
                .is_some_and(|r| r.starts_with(':'))
    }

    /// An ephemeral session container that was started and has stopped: its
    /// session is over and only the container is left.
    pub fn is_ended_session(&self) -> bool {
        self.state == InstanceStatus::Stopped
            && !self.persistent
            && self.kind == "shell"
            && !self.last_started.is_empty()
    }
}

/// [`SandboxInfo::persistent`] as its word (the JSON has always said `mode`).
fn mode_word<S: serde::Serializer>(persistent: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *persistent {
        "persistent"
    } else {
        "ephemeral"
    })
}

/// Every cci container, by name: sandboxes and launched containers (whose
/// names are the user's, so every instance is looked at).
pub async fn list(host: &Host) -> incus::Result<Vec<SandboxInfo>> {
    list_prefix(host, "", true).await
}

/// Every cci container, by name, as [`list`] gives them but with each
/// running one's IPv4 address from its network's DHCP leases (matched by
/// the NIC's MAC address, which Incus filters) instead of every container's
/// full state: what `cci list` shows, for a fraction of the daemon's time.
/// Containers on a network without leases fall back to [`list`].
pub async fn list_quick(host: &Host) -> incus::Result<Vec<SandboxInfo>> {
    let account = &host.config.account;
    let instances = host.client.instances("", false).await?;
    let ours: Vec<(SandboxInfo, &Instance)> = instances
        .iter()
        .filter_map(|i| Some((SandboxInfo::from_instance(i, account)?, i)))
        .collect();
    let nic = |i: &Instance| -> Option<(String, String)> {
        let network = i.expanded_devices.get("eth0")?.get("network")?.clone();
        let mac = i.config.get("volatile.eth0.hwaddr")?.to_ascii_lowercase();
        Some((network, mac))
    };
    let running: Vec<&Instance> = ours
        .iter()
        .filter(|(s, _)| s.state == InstanceStatus::Running)
        .map(|(_, i)| *i)
        .collect();
    let mut networks: Vec<String> = Vec::new();
    for i in &running {
        match nic(i) {
            Some((n, _)) if !networks.contains(&n) => networks.push(n),
            Some(_) => {}
            None => return list(host).await,
        }
    }
    let leases =
        futures_util::future::join_all(networks.iter().map(|n| host.client.network_leases(n)))
            .await;
    // By (network, MAC); a MAC with two IPv4 leases on one network is
    // trusted with neither (the full state says then).
    let mut by_mac: HashMap<(String, String), Option<String>> = HashMap::new();
    for (network, l) in networks.iter().zip(leases) {
        let Ok(l) = l else { return list(host).await };
        for lease in l.into_iter().filter(|l| l.kind != "gateway") {
            if lease.address.parse::<std::net::Ipv4Addr>().is_ok() {
                let key = (network.clone(), lease.hwaddr.to_ascii_lowercase());
                by_mac
                    .entry(key)
                    .and_modify(|a| *a = None)
                    .or_insert(Some(lease.address));
            }
        }
    }
    if by_mac.values().any(Option::is_none) {
        return list(host).await;
    }
    let mut all: Vec<SandboxInfo> = ours
        .into_iter()
        .map(|(mut s, i)| {
            if s.state == InstanceStatus::Running {
                s.ipv4 = nic(i).and_then(|key| by_mac.get(&key).cloned().flatten());
            }
            s
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// A token for one `cci container launch`: this process's id first, so
/// `clean` can tell whether the launch is still under way.
pub fn launch_token() -> String {
    super::orphans::token(std::process::id(), "c")
}

/// The marks of a container `cci container launch` makes: cci's, of kind
/// `container`, not kept (`persistent` false) until `cci persist` says so.
pub fn launch_marks(config: &mut HashMap<String, String>, image: &str, launch_token: &str) {
    for (k, v) in [
        (keys::KIND, Kind::Container.as_str()),
        (keys::PERSISTENT, "false"),
        (keys::IMAGE, image),
        (keys::VERSION, env!("CARGO_PKG_VERSION")),
        (keys::LAUNCH, launch_token),
        (keys::MACHINE, super::orphans::machine_tag()),
    ] {
        config.insert(k.into(), v.into());
    }
}

/// The cci containers whose names start with `prefix`, by name; with
/// `with_state` they carry their addresses (which costs more).
pub async fn list_prefix(
    host: &Host,
    prefix: &str,
    with_state: bool,
) -> incus::Result<Vec<SandboxInfo>> {
    let account = &host.config.account;
    let mut all: Vec<SandboxInfo> = host
        .client
        .instances(prefix, with_state)
        .await?
        .iter()
        .filter_map(|i| SandboxInfo::from_instance(i, account))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// One cci container by name; a container cci did not create is refused.
pub async fn get(host: &Host, name: &str) -> incus::Result<SandboxInfo> {
    let (instance, _) = host.client.instance(name).await?;
    SandboxInfo::from_instance(&instance, &host.config.account).ok_or_else(|| {
        incus::Error::Forbidden(format!(
            "{name} was not created by cci (it has no {} or {} key); cci leaves it alone",
            keys::WORKSPACE,
            keys::KIND
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_says_the_daemons_status_and_the_mode_word() {
        let i: Instance = serde_json::from_value(serde_json::json!({
            "name": "cci-ws-2", "status": "Running",
            "created_at": "2026-01-01T00:00:00Z", "last_used_at": "1970-01-01T00:00:00Z",
            "config": {
                keys::WORKSPACE: "/w", keys::SLOT: "2", keys::KIND: "shell",
                keys::PERSISTENT: "true", keys::IMAGE: "cci",
            },
        }))
        .unwrap();
        let s = SandboxInfo::from_instance(&i, &Account::new(1000, "code")).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"name":"cci-ws-2","state":"Running","slot":2,"workspace":"/w","kind":"shell","mode":"persistent","ipv4":null,"created":"2026-01-01T00:00:00Z","last_started":"","image":"cci","session":"","agent":"","network":""}"#
        );
        let mut off = s.clone();
        off.state = InstanceStatus::parse("Stopped");
        off.persistent = false;
        let v = serde_json::to_value(&off).unwrap();
        assert_eq!(
            (&v["state"], &v["mode"]),
            (&"Stopped".into(), &"ephemeral".into())
        );
        // A standalone server says `none`: nothing shown; a cluster's member is.
        let mut on = i.clone();
        on.location = "none".into();
        assert_eq!(
            SandboxInfo::from_instance(&on, &Account::new(1000, "code"))
                .unwrap()
                .location,
            ""
        );
        on.location = "node2".into();
        let s = SandboxInfo::from_instance(&on, &Account::new(1000, "code")).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap()["location"], "node2");
    }
}

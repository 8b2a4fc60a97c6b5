//! Instances: create, get, list, state changes, conditional update, delete.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Error, Result};
use super::transport::{StringMap, encode, null_default};
use super::{Client, InstanceStatus};

/// How long a create/start/stop/delete may take before we give up waiting.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Which image an instance starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A local alias, e.g. `cci`.
    Alias(String),
    /// A full or unique partial fingerprint.
    Fingerprint(String),
    /// An alias on a remote image server, pulled by the daemon.
    Remote {
        /// The server's URL, e.g. `https://images.linuxcontainers.org`.
        server: String,
        /// `simplestreams` or `incus`.
        protocol: String,
        /// The alias there, e.g. `debian/12`.
        alias: String,
    },
}

/// Everything needed to create an instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceCreate {
    /// The new instance's name.
    pub name: String,
    /// `container` (the default) or `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the root file system comes from.
    pub source: Value,
    /// Profiles applied in order (`["default"]` when empty).
    pub profiles: Vec<String>,
    /// Instance config keys.
    pub config: StringMap,
    /// Devices, each a map of options.
    pub devices: HashMap<String, StringMap>,
    /// Deleted by the daemon when it stops.
    pub ephemeral: bool,
    /// Start it right after creation.
    pub start: bool,
    /// Free text.
    pub description: String,
    /// On a cluster: the member to create it on (None: the scheduler's choice).
    #[serde(skip)]
    pub target: Option<String>,
}

impl InstanceCreate {
    /// A container named `name` from `image`, with the default profile.
    pub fn container(name: &str, image: &ImageRef) -> Self {
        let source = match image {
            ImageRef::Alias(a) => serde_json::json!({"type": "image", "alias": a}),
            ImageRef::Fingerprint(f) => serde_json::json!({"type": "image", "fingerprint": f}),
            ImageRef::Remote {
                server,
                protocol,
                alias,
            } => serde_json::json!({
                "type": "image", "mode": "pull", "server": server,
                "protocol": protocol, "alias": alias,
            }),
        };
        InstanceCreate {
            name: name.to_string(),
            kind: "container".into(),
            source,
            profiles: vec!["default".into()],
            ..Default::default()
        }
    }
}

/// An instance as the daemon describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    /// Its name.
    pub name: String,
    /// `Running`, `Stopped`, `Frozen`...
    #[serde(default)]
    pub status: InstanceStatus,
    /// Local config keys.
    #[serde(default, deserialize_with = "null_default")]
    pub config: StringMap,
    /// Local devices.
    #[serde(default, deserialize_with = "null_default")]
    pub devices: HashMap<String, StringMap>,
    /// Config with profiles applied.
    #[serde(default, deserialize_with = "null_default")]
    pub expanded_config: StringMap,
    /// Devices with profiles applied.
    #[serde(default, deserialize_with = "null_default")]
    pub expanded_devices: HashMap<String, StringMap>,
    /// Profiles applied.
    #[serde(default, deserialize_with = "null_default")]
    pub profiles: Vec<String>,
    /// Deleted by the daemon when it stops.
    #[serde(default)]
    pub ephemeral: bool,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// Last start (RFC 3339; year 1 when never started).
    #[serde(default)]
    pub last_used_at: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `container` or `virtual-machine`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Runtime state (only in lists fetched with state).
    #[serde(default)]
    pub state: Option<InstanceState>,
    /// The Incus project it belongs to (empty: not reported, the client's own).
    #[serde(default)]
    pub project: String,
    /// The cluster member it is on (`none` on a standalone server).
    #[serde(default)]
    pub location: String,
}

impl Instance {
    /// A client addressing this instance's own project (the same client
    /// when the daemon did not say which).
    pub fn client(&self, client: &Client) -> Client {
        if self.project.is_empty() {
            client.clone()
        } else {
            client.clone().with_project(Some(self.project.clone()))
        }
    }
}

impl Instance {
    /// True when the instance is running.
    pub fn is_running(&self) -> bool {
        self.status == InstanceStatus::Running
    }
}

/// Runtime state of an instance.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InstanceState {
    /// `Running`, `Stopped`...
    #[serde(default)]
    pub status: InstanceStatus,
    /// PID of the init process on the host (0 when stopped).
    #[serde(default)]
    pub pid: i64,
    /// Network interfaces by name.
    #[serde(default)]
    pub network: Option<HashMap<String, NetworkState>>,
    /// CPU time used since the start.
    #[serde(default)]
    pub cpu: Option<CpuState>,
    /// Memory in use.
    #[serde(default)]
    pub memory: Option<MemoryState>,
}

/// An instance's CPU use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuState {
    /// Nanoseconds of CPU time since it started.
    #[serde(default)]
    pub usage: i64,
}

/// An instance's memory use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemoryState {
    /// Bytes in use now.
    #[serde(default)]
    pub usage: i64,
}

/// One interface of a running instance.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkState {
    /// Its addresses.
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<NetworkAddress>,
    /// Name of the host side of the pair (veth).
    #[serde(default)]
    pub host_name: String,
    /// MAC address.
    #[serde(default)]
    pub hwaddr: String,
}

/// One address of an interface.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkAddress {
    /// `inet` or `inet6`.
    #[serde(default)]
    pub family: String,
    /// The address.
    #[serde(default)]
    pub address: String,
    /// `global`, `link`, `local`.
    #[serde(default)]
    pub scope: String,
}

impl InstanceState {
    /// The first global IPv4 address of interface `nic`, if any.
    pub fn ipv4(&self, nic: &str) -> Option<String> {
        let iface = self.network.as_ref()?.get(nic)?;
        iface
            .addresses
            .iter()
            .find(|a| a.family == "inet" && a.scope == "global")
            .map(|a| a.address.clone())
    }
}

/// A state change request.
#[derive(Debug, Clone, Serialize)]
pub struct StateChange {
    /// `start`, `stop`, `restart`, `freeze`, `unfreeze`.
    pub action: String,
    /// Seconds to wait for a clean stop before failing (-1: for ever).
    pub timeout: i64,
    /// Kill instead of a clean shutdown.
    pub force: bool,
    /// Keep the state (not used by cci).
    pub stateful: bool,
}

impl StateChange {
    fn new(action: &str) -> Self {
        StateChange {
            action: action.into(),
            timeout: -1,
            force: false,
            stateful: false,
        }
    }
}

impl Client {
    /// Create an instance (and start it when `spec.start`), waiting until done.
    pub async fn create_instance(&self, spec: &InstanceCreate) -> Result<()> {
        let path = match &spec.target {
            Some(member) => format!("/1.0/instances?target={}", encode(member)),
            None => "/1.0/instances".to_string(),
        };
        let req = self.transport.request(Method::POST, &path).json(spec);
        let op = self.transport.operation(req).await?;
        match self.wait_operation(&op.id, Some(LIFECYCLE_TIMEOUT)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.explain_create_failure(spec, e).await),
        }
    }

    /// The daemon reports a taken name as a database constraint and a missing
    /// image alias only as "Image not provided"; say what they mean.
    async fn explain_create_failure(&self, spec: &InstanceCreate, e: Error) -> Error {
        if matches!(&e, Error::Conflict(m) if m.to_ascii_lowercase().contains("unique constraint"))
        {
            return Error::Conflict(format!("Instance \"{}\" already exists", spec.name));
        }
        let Some(alias) = spec.source.get("alias").and_then(Value::as_str) else {
            return e;
        };
        match self.image_alias(alias).await {
            Err(Error::NotFound(_)) => Error::NotFound(format!("Image \"{alias}\" not found")),
            _ => e,
        }
    }

    /// One instance and its ETag (for [`Client::update_instance`]).
    pub async fn instance(&self, name: &str) -> Result<(Instance, Option<String>)> {
        let path = format!("/1.0/instances/{}", encode(name));
        let s = self
            .transport
            .sync(self.transport.request(Method::GET, &path))
            .await?;
        Ok((s.value, s.etag))
    }

    /// Every instance of every project, each with its `project` (what cci's
    /// host-wide firewall upkeep must see: its rules serve all projects).
    pub async fn instances_all_projects(&self) -> Result<Vec<Instance>> {
        // The daemon refuses a project together with `all-projects`.
        let mut anywhere = self.clone();
        anywhere.transport.set_project(None);
        anywhere
            .transport
            .get("/1.0/instances?recursion=1&all-projects=true")
            .await
    }

    /// All instances whose name starts with `prefix` (all when empty); with
    /// `with_state` each carries its runtime state (addresses), which costs more.
    pub async fn instances(&self, prefix: &str, with_state: bool) -> Result<Vec<Instance>> {
        let recursion = if with_state { 2 } else { 1 };
        let all: Vec<Instance> = self
            .transport
            .get(&format!("/1.0/instances?recursion={recursion}"))
            .await?;
        Ok(all
            .into_iter()
            .filter(|i| i.name.starts_with(prefix))
            .collect())
    }

    /// The text the instance's console has printed since it started (its
    /// boot messages; written by the instance: untrusted). Capped in size.
    pub async fn console_log(&self, name: &str) -> Result<String> {
        let (_, body) = self
            .raw_get(&format!("/1.0/instances/{}/console?type=log", encode(name)))
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// An instance's runtime state.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState> {
        self.transport
            .get(&format!("/1.0/instances/{}/state", encode(name)))
            .await
    }

    /// Apply a state change and wait for it.
    pub async fn change_state(&self, name: &str, change: &StateChange) -> Result<()> {
        let path = format!("/1.0/instances/{}/state", encode(name));
        let req = self.transport.request(Method::PUT, &path).json(change);
        let op = self.transport.operation(req).await?;
        let wait = if change.timeout > 0 {
            Duration::from_secs(change.timeout as u64 + 30)
        } else {
            LIFECYCLE_TIMEOUT
        };
        self.wait_operation(&op.id, Some(wait)).await?;
        Ok(())
    }

    /// Start a stopped instance.
    pub async fn start_instance(&self, name: &str) -> Result<()> {
        self.change_state(name, &StateChange::new("start")).await
    }

    /// Stop an instance: cleanly within `timeout` (None: no limit), or at once with `force`.
    pub async fn stop_instance(
        &self,
        name: &str,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<()> {
        let mut c = StateChange::new("stop");
        c.force = force;
        c.timeout = timeout.map_or(-1, |t| t.as_secs() as i64);
        self.change_state(name, &c).await
    }

    /// Ask for a forced stop and return without waiting for it: the daemon
    /// carries it out (and deletes an ephemeral instance) on its own.
    pub async fn begin_force_stop(&self, name: &str) -> Result<()> {
        let mut c = StateChange::new("stop");
        c.force = true;
        let path = format!("/1.0/instances/{}/state", encode(name));
        let req = self.transport.request(Method::PUT, &path).json(&c);
        self.transport.operation(req).await?;
        Ok(())
    }

    /// Restart an instance.
    pub async fn restart_instance(&self, name: &str, force: bool) -> Result<()> {
        let mut c = StateChange::new("restart");
        c.force = force;
        self.change_state(name, &c).await
    }

    /// Freeze all processes of an instance.
    pub async fn freeze_instance(&self, name: &str) -> Result<()> {
        self.change_state(name, &StateChange::new("freeze")).await
    }

    /// Thaw a frozen instance.
    pub async fn unfreeze_instance(&self, name: &str) -> Result<()> {
        self.change_state(name, &StateChange::new("unfreeze")).await
    }

    /// Merge `patch` (config, devices, profiles...) into an instance. With `etag`
    /// the update only applies if nobody changed the instance since it was read
    /// (otherwise a `Conflict`).
    pub async fn update_instance(
        &self,
        name: &str,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<()> {
        let path = format!("/1.0/instances/{}", encode(name));
        let mut req = self.transport.request(Method::PATCH, &path).json(patch);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        self.finish(req, LIFECYCLE_TIMEOUT).await
    }

    /// Unset config `keys` of an instance: its whole definition is read and
    /// written back (a PATCH cannot unset), guarded by its ETag so that a
    /// change made meanwhile is not lost (a `Conflict` instead). Nothing to
    /// unset: nothing written.
    pub async fn unset_config(&self, name: &str, keys: &[&str]) -> Result<()> {
        let (mut body, etag) = self.instance_raw(name).await?;
        let mut changed = false;
        if let Some(config) = body.get_mut("config").and_then(Value::as_object_mut) {
            for k in keys {
                changed |= config.remove(*k).is_some();
            }
        }
        if !changed {
            return Ok(());
        }
        self.put_instance(name, &body, etag.as_deref()).await
    }

    /// Delete a stopped instance.
    pub async fn delete_instance(&self, name: &str) -> Result<()> {
        let path = format!("/1.0/instances/{}", encode(name));
        let op = self
            .transport
            .operation(self.transport.request(Method::DELETE, &path))
            .await?;
        self.wait_operation(&op.id, Some(LIFECYCLE_TIMEOUT)).await?;
        Ok(())
    }
}

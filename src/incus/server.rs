//! `GET /1.0`: the daemon's version, API extensions and environment.

use reqwest::Method;
use serde::Deserialize;

use super::Client;
use super::error::{Error, Result};

/// What the daemon says about itself.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    /// API extensions this daemon supports; gate features on these.
    #[serde(default)]
    pub api_extensions: Vec<String>,
    /// `stable` for released daemons.
    #[serde(default)]
    pub api_status: String,
    /// `1.0`.
    #[serde(default)]
    pub api_version: String,
    /// `trusted` when the client may use the full API.
    #[serde(default)]
    pub auth: String,
    /// Host and daemon details.
    #[serde(default)]
    pub environment: ServerEnvironment,
}

/// The `environment` part of [`ServerInfo`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerEnvironment {
    /// The daemon's version, e.g. `6.0.4`.
    #[serde(default)]
    pub server_version: String,
    /// The daemon's process id on the host.
    #[serde(default)]
    pub server_pid: i64,
    /// The host kernel's version.
    #[serde(default)]
    pub kernel_version: String,
    /// Storage drivers available.
    #[serde(default)]
    pub storage: String,
    /// Whether the kernel supports idmapped mounts (`shift=true` disks).
    #[serde(default)]
    pub kernel_features: std::collections::HashMap<String, String>,
    /// Whether the server is a member of a cluster.
    #[serde(default)]
    pub server_clustered: bool,
    /// The firewall driver (`nftables` or `xtables`).
    #[serde(default)]
    pub firewall: String,
}

impl ServerInfo {
    /// True when the daemon supports API extension `name`.
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions.iter().any(|e| e == name)
    }

    /// The extensions from `wanted` this daemon lacks.
    pub fn missing_extensions<'a>(&self, wanted: &[&'a str]) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|w| !self.has_extension(w))
            .collect()
    }
}

impl Client {
    /// The daemon's self-description.
    pub async fn server(&self) -> Result<ServerInfo> {
        self.transport.get("/1.0").await
    }

    /// Whether the daemon is going away: shutting down or restarting (it then
    /// answers writes with 503 "Shutting down" while it waits for running
    /// execs to end), or gone. Asks with a POST to the read-only resources
    /// endpoint, which changes nothing either way (501 otherwise).
    pub async fn going_away(&self) -> bool {
        let req = self.transport.request(Method::POST, "/1.0/resources");
        matches!(
            self.transport.sync_unit(req).await,
            Err(Error::Daemon { status: 503, .. }
                | Error::Unreachable { .. }
                | Error::RemoteUnreachable { .. })
        )
    }

    /// The names of a cluster's members.
    pub async fn cluster_members(&self) -> Result<Vec<String>> {
        let urls: Vec<String> = self.transport.get("/1.0/cluster/members").await?;
        Ok(urls
            .iter()
            .filter_map(|u| u.rsplit('/').next())
            .map(|n| {
                percent_encoding::percent_decode_str(n)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect())
    }

    /// Have the daemon trust the client certificate this connection
    /// presents, with a trust token from `incus config trust add`.
    pub async fn redeem_trust_token(&self, token: &str) -> Result<()> {
        let req = self.transport.request(Method::POST, "/1.0/certificates");
        let body = serde_json::json!({ "trust_token": token, "type": "client" });
        self.transport
            .sync_unit(super::transport::json(req, &body))
            .await
    }
}

//! Network ACLs (`/1.0/network-acls`): rules the daemon enforces on an
//! instance's NIC. Create, list, delete; nothing about what the rules mean.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::Client;
use super::error::Result;
use super::transport::{StringMap, encode, json};

/// One rule of an ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    /// `allow`, `reject` or `drop`.
    pub action: String,
    /// `enabled` (or `disabled`, `logged`).
    pub state: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Source addresses (CIDRs, comma-separated); empty: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Destination addresses (CIDRs, comma-separated); empty: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    /// `tcp`, `udp`, `icmp4`, `icmp6`; empty: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Source ports (tcp and udp only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_port: String,
    /// Destination ports (tcp and udp only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_port: String,
    /// ICMP type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub icmp_type: String,
}

/// A network ACL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkAcl {
    /// Its name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Rules for traffic into the NIC's instance.
    #[serde(default)]
    pub ingress: Vec<AclRule>,
    /// Rules for traffic out of it.
    #[serde(default)]
    pub egress: Vec<AclRule>,
    /// `user.*` keys.
    #[serde(default)]
    pub config: StringMap,
    /// What uses it (read only).
    #[serde(default, skip_serializing)]
    pub used_by: Vec<String>,
}

/// An address on one of the server's interfaces.
#[derive(Debug, Clone, Deserialize)]
pub struct InterfaceAddress {
    /// `inet` or `inet6`.
    #[serde(default)]
    pub family: String,
    /// The address.
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Deserialize)]
struct NetworkState {
    #[serde(default)]
    addresses: Vec<InterfaceAddress>,
}

impl Client {
    /// Every network ACL.
    pub async fn acls(&self) -> Result<Vec<NetworkAcl>> {
        self.transport.get("/1.0/network-acls?recursion=1").await
    }

    /// Create `acl`.
    pub async fn create_acl(&self, acl: &NetworkAcl) -> Result<()> {
        let req = self.transport.request(Method::POST, "/1.0/network-acls");
        self.transport.sync_unit(json(req, acl)).await
    }

    /// Delete ACL `name`.
    pub async fn delete_acl(&self, name: &str) -> Result<()> {
        let req = self.transport.request(
            Method::DELETE,
            &format!("/1.0/network-acls/{}", encode(name)),
        );
        self.transport.sync_unit(req).await
    }

    /// The addresses of every interface the server has (its own
    /// addresses, as a container would have to be kept from them): asked
    /// in the default project (the only one that lists the host's own
    /// interfaces), of each of `members` on a cluster.
    pub async fn host_addresses(&self, members: &[String]) -> Result<Vec<InterfaceAddress>> {
        let default = self.clone().with_project(None);
        let targets: Vec<Option<&String>> = if members.is_empty() {
            vec![None]
        } else {
            members.iter().map(Some).collect()
        };
        let mut out = Vec::new();
        for target in targets {
            let on = |path: String| match target {
                Some(m) => format!("{path}?target={}", encode(m)),
                None => path,
            };
            let names: Vec<String> = default.transport.get(&on("/1.0/networks".into())).await?;
            for url in names {
                let name = url.rsplit('/').next().unwrap_or_default();
                let name = name.split('?').next().unwrap_or_default();
                let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                let state: Result<NetworkState> = default
                    .transport
                    .get(&on(format!("/1.0/networks/{}/state", encode(&name))))
                    .await;
                // An interface gone meanwhile has no addresses to keep from.
                match state {
                    Ok(s) => out.extend(s.addresses),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }
}

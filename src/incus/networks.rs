//! Networks and storage pools: list and get, enough for setup checks.

use serde::Deserialize;

use super::Client;
use super::error::Result;
use super::transport::{StringMap, encode};

/// A network known to the daemon.
#[derive(Debug, Clone, Deserialize)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// `bridge`, `macvlan`, `physical`, `loopback`...
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Managed by Incus (it runs DHCP/DNS and NAT for it).
    #[serde(default)]
    pub managed: bool,
    /// Config keys (`ipv4.address`...).
    #[serde(default)]
    pub config: StringMap,
    /// `Created`, `Errored`...
    #[serde(default)]
    pub status: String,
}

/// An address the daemon gave out on a managed network (DHCP lease or
/// static allocation).
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkLease {
    /// The MAC address it belongs to.
    #[serde(default)]
    pub hwaddr: String,
    /// The address.
    #[serde(default)]
    pub address: String,
    /// `static`, `dynamic`, `gateway`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// A storage pool.
#[derive(Debug, Clone, Deserialize)]
pub struct StoragePool {
    /// Its name.
    pub name: String,
    /// `btrfs`, `zfs`, `dir`, `lvm`...
    #[serde(default)]
    pub driver: String,
    /// `Created`...
    #[serde(default)]
    pub status: String,
    /// Config keys.
    #[serde(default)]
    pub config: StringMap,
}

impl StoragePool {
    /// True for drivers that clone an image instantly (copy-on-write).
    pub fn is_copy_on_write(&self) -> bool {
        matches!(self.driver.as_str(), "btrfs" | "zfs" | "lvm" | "ceph")
    }
}

impl Client {
    /// Every network.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        self.transport.get("/1.0/networks?recursion=1").await
    }

    /// One network.
    pub async fn network(&self, name: &str) -> Result<Network> {
        self.transport
            .get(&format!("/1.0/networks/{}", encode(name)))
            .await
    }

    /// The addresses a managed network gave out (the daemon's own record,
    /// not what instances say about themselves).
    pub async fn network_leases(&self, name: &str) -> Result<Vec<NetworkLease>> {
        self.transport
            .get(&format!("/1.0/networks/{}/leases", encode(name)))
            .await
    }

    /// Every storage pool.
    pub async fn storage_pools(&self) -> Result<Vec<StoragePool>> {
        self.transport.get("/1.0/storage-pools?recursion=1").await
    }

    /// One storage pool.
    pub async fn storage_pool(&self, name: &str) -> Result<StoragePool> {
        self.transport
            .get(&format!("/1.0/storage-pools/{}", encode(name)))
            .await
    }
}

//! Custom storage volumes: list, get, create and delete.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::Client;
use super::error::Result;
use super::transport::{StringMap, encode};

/// Creating a volume may take a while on a busy pool.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A custom volume as the daemon describes it (what cci reads of it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Volume {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Config keys.
    #[serde(default)]
    pub config: StringMap,
    /// The instances (and profiles) that use it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

fn path(pool: &str, name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}/volumes/custom/{}",
        encode(pool),
        encode(name)
    )
}

impl Client {
    /// The custom volumes of `pool`.
    pub async fn volumes(&self, pool: &str) -> Result<Vec<Volume>> {
        self.transport
            .get(&format!(
                "/1.0/storage-pools/{}/volumes/custom?recursion=1",
                encode(pool)
            ))
            .await
    }

    /// Delete custom volume `name` of `pool` (the daemon refuses while
    /// an instance uses it).
    pub async fn delete_volume(&self, pool: &str, name: &str) -> Result<()> {
        let req = self.transport.request(Method::DELETE, &path(pool, name));
        self.finish(req, TIMEOUT).await
    }

    /// Custom volume `name` of `pool`.
    pub async fn volume(&self, pool: &str, name: &str) -> Result<Volume> {
        self.transport.get(&path(pool, name)).await
    }

    /// Create an empty custom file system volume.
    pub async fn create_volume(
        &self,
        pool: &str,
        name: &str,
        description: &str,
        config: &StringMap,
    ) -> Result<()> {
        let req = self
            .transport
            .request(
                Method::POST,
                &format!("/1.0/storage-pools/{}/volumes/custom", encode(pool)),
            )
            .json(&json!({
                "name": name,
                "type": "custom",
                "content_type": "filesystem",
                "description": description,
                "config": config,
            }));
        self.finish(req, TIMEOUT).await
    }
}

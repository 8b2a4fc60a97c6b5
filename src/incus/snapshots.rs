//! Instance snapshots (create, list, restore, delete) and copies of an
//! instance (from one of its snapshots).

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Client;
use super::error::Result;
use super::transport::encode;

/// Restores and copies move a whole root file system.
const TIMEOUT: Duration = Duration::from_secs(600);

/// One snapshot as the daemon describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// Its name (without the instance's).
    pub name: String,
    /// When it was taken (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// It holds the running processes' memory too.
    #[serde(default)]
    pub stateful: bool,
    /// Its size on disk in bytes, where the pool tells (-1 or absent: unknown).
    #[serde(default)]
    pub size: Option<i64>,
}

fn base(instance: &str) -> String {
    format!("/1.0/instances/{}/snapshots", encode(instance))
}

impl Client {
    /// The snapshots of `instance`, oldest first.
    pub async fn snapshots(&self, instance: &str) -> Result<Vec<Snapshot>> {
        let mut all: Vec<Snapshot> = self
            .transport
            .get(&format!("{}?recursion=1", base(instance)))
            .await?;
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all)
    }

    /// Take snapshot `snap` of `instance` (with its memory when `stateful`).
    pub async fn create_snapshot(&self, instance: &str, snap: &str, stateful: bool) -> Result<()> {
        let req = self
            .transport
            .request(Method::POST, &base(instance))
            .json(&json!({"name": snap, "stateful": stateful}));
        let op = self.transport.operation(req).await?;
        self.wait_operation(&op.id, Some(TIMEOUT)).await?;
        Ok(())
    }

    /// Delete snapshot `snap` of `instance`.
    pub async fn delete_snapshot(&self, instance: &str, snap: &str) -> Result<()> {
        let path = format!("{}/{}", base(instance), encode(snap));
        let op = self
            .transport
            .operation(self.transport.request(Method::DELETE, &path))
            .await?;
        self.wait_operation(&op.id, Some(TIMEOUT)).await?;
        Ok(())
    }

    /// Put `instance` back as it was at `snap`: its files and its
    /// configuration (the daemon's restore; a running instance is stopped
    /// and started by the daemon).
    pub async fn restore_snapshot(&self, instance: &str, snap: &str) -> Result<()> {
        let path = format!("/1.0/instances/{}", encode(instance));
        let req = self
            .transport
            .request(Method::PUT, &path)
            .json(&json!({"restore": snap}));
        self.finish(req, TIMEOUT).await
    }

    /// Create `name` as a copy of `source` (`instance/snapshot`), without
    /// snapshots, stopped; `config` and `devices` are laid over the
    /// source's own.
    pub async fn copy_instance(
        &self,
        source: &str,
        name: &str,
        config: &Value,
        devices: &Value,
    ) -> Result<()> {
        let body = json!({
            "name": name,
            "source": {"type": "copy", "source": source, "instance_only": true},
            "config": config,
            "devices": devices,
        });
        let req = self
            .transport
            .request(Method::POST, "/1.0/instances")
            .json(&body);
        let op = self.transport.operation(req).await?;
        self.wait_operation(&op.id, Some(TIMEOUT)).await?;
        Ok(())
    }

    /// Replace `instance`'s whole definition (what a PUT takes: config,
    /// devices, profiles...) with `writable`'s, guarded by `etag` when given.
    pub async fn put_instance(
        &self,
        instance: &str,
        writable: &Value,
        etag: Option<&str>,
    ) -> Result<()> {
        let path = format!("/1.0/instances/{}", encode(instance));
        let put: serde_json::Map<String, Value> = writable
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "architecture"
                        | "config"
                        | "devices"
                        | "ephemeral"
                        | "profiles"
                        | "stateful"
                        | "description"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut req = self.transport.request(Method::PUT, &path).json(&put);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        self.finish(req, TIMEOUT).await
    }

    /// `instance`'s definition as raw JSON, and its ETag.
    pub async fn instance_raw(&self, instance: &str) -> Result<(Value, Option<String>)> {
        let path = format!("/1.0/instances/{}", encode(instance));
        let s = self
            .transport
            .sync::<Value>(self.transport.request(Method::GET, &path))
            .await?;
        Ok((s.value, s.etag))
    }
}

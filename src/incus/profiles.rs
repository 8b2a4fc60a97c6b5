//! Profiles: get, list, create, update, delete.

use std::collections::HashMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::Client;
use super::error::Result;
use super::transport::{StringMap, encode};

/// A profile: config and devices applied to instances that use it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Config keys.
    #[serde(default)]
    pub config: StringMap,
    /// Devices.
    #[serde(default)]
    pub devices: HashMap<String, StringMap>,
    /// Instances and other objects using it (read only).
    #[serde(default, skip_serializing)]
    pub used_by: Vec<String>,
}

impl Client {
    /// Every profile.
    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        self.transport.get("/1.0/profiles?recursion=1").await
    }

    /// One profile and its ETag.
    pub async fn profile(&self, name: &str) -> Result<(Profile, Option<String>)> {
        let path = format!("/1.0/profiles/{}", encode(name));
        let s = self
            .transport
            .sync(self.transport.request(Method::GET, &path))
            .await?;
        Ok((s.value, s.etag))
    }

    /// Create a profile.
    pub async fn create_profile(&self, profile: &Profile) -> Result<()> {
        self.transport
            .sync_unit(
                self.transport
                    .request(Method::POST, "/1.0/profiles")
                    .json(profile),
            )
            .await
    }

    /// Replace a profile's description, config and devices (conditional on `etag`).
    pub async fn update_profile(&self, profile: &Profile, etag: Option<&str>) -> Result<()> {
        let path = format!("/1.0/profiles/{}", encode(&profile.name));
        let mut req = self.transport.request(Method::PUT, &path).json(profile);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        self.transport.sync_unit(req).await
    }

    /// Delete a profile (it must be unused).
    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        let path = format!("/1.0/profiles/{}", encode(name));
        self.transport
            .sync_unit(self.transport.request(Method::DELETE, &path))
            .await
    }
}

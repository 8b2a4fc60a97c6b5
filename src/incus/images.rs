//! Images: list, get, aliases, split-image import, publish an instance, delete.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::json;

use super::Client;
use super::error::{Error, Result};
use super::transport::{StringMap, encode};

/// How long an import or publish may take.
const IMAGE_TIMEOUT: Duration = Duration::from_secs(1800);

/// An image in the daemon's store.
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Aliases pointing at it.
    #[serde(default)]
    pub aliases: Vec<AliasRef>,
    /// Free-form properties (`description`, `os`...).
    #[serde(default)]
    pub properties: StringMap,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Upload time (RFC 3339).
    #[serde(default)]
    pub uploaded_at: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// Architecture, e.g. `x86_64`.
    #[serde(default)]
    pub architecture: String,
    /// `container` or `virtual-machine`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl Image {
    /// The image's description property.
    pub fn description(&self) -> &str {
        self.properties
            .get("description")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// An alias as listed on an image.
#[derive(Debug, Clone, Deserialize)]
pub struct AliasRef {
    /// The alias name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
}

/// An alias with its target.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageAlias {
    /// The alias name.
    pub name: String,
    /// The fingerprint it points to.
    pub target: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
}

/// How to publish an instance as an image.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Aliases to create for the new image.
    pub aliases: Vec<String>,
    /// Image properties (`description`, ...).
    pub properties: StringMap,
    /// Compression (`none`, `gzip`, `zstd`...); the daemon's default when unset.
    pub compression: Option<String>,
}

impl Client {
    /// Every image.
    pub async fn images(&self) -> Result<Vec<Image>> {
        self.transport.get("/1.0/images?recursion=1").await
    }

    /// One image by fingerprint.
    pub async fn image(&self, fingerprint: &str) -> Result<Image> {
        self.transport
            .get(&format!("/1.0/images/{}", encode(fingerprint)))
            .await
    }

    /// One alias.
    pub async fn image_alias(&self, name: &str) -> Result<ImageAlias> {
        self.transport
            .get(&format!("/1.0/images/aliases/{}", encode(name)))
            .await
    }

    /// Point a new alias at `target`.
    pub async fn create_image_alias(
        &self,
        name: &str,
        target: &str,
        description: &str,
    ) -> Result<()> {
        let body = json!({"name": name, "target": target, "description": description});
        self.transport
            .sync_unit(
                self.transport
                    .request(Method::POST, "/1.0/images/aliases")
                    .json(&body),
            )
            .await
    }

    /// Re-point an existing alias.
    pub async fn update_image_alias(
        &self,
        name: &str,
        target: &str,
        description: &str,
    ) -> Result<()> {
        let body = json!({"target": target, "description": description});
        let path = format!("/1.0/images/aliases/{}", encode(name));
        self.transport
            .sync_unit(self.transport.request(Method::PUT, &path).json(&body))
            .await
    }

    /// Point `name` at `target`, creating or moving the alias.
    pub async fn set_image_alias(&self, name: &str, target: &str, description: &str) -> Result<()> {
        match self.image_alias(name).await {
            Ok(_) => self.update_image_alias(name, target, description).await,
            Err(e) if e.is_not_found() => self.create_image_alias(name, target, description).await,
            Err(e) => Err(e),
        }
    }

    /// Remove an alias (the image stays).
    pub async fn delete_image_alias(&self, name: &str) -> Result<()> {
        let path = format!("/1.0/images/aliases/{}", encode(name));
        self.transport
            .sync_unit(self.transport.request(Method::DELETE, &path))
            .await
    }

    /// Import a split image (metadata tarball + rootfs tarball); returns its fingerprint.
    pub async fn import_split_image(&self, metadata: &Path, rootfs: &Path) -> Result<String> {
        async fn part(path: &Path, name: &str) -> Result<Part> {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            Part::stream_with_length(body, len)
                .file_name(name.to_string())
                .mime_str("application/octet-stream")
                .map_err(|e| Error::Protocol(e.to_string()))
        }
        let form = Form::new()
            .part("metadata", part(metadata, "metadata").await?)
            .part("rootfs", part(rootfs, "rootfs").await?);
        let req = self
            .transport
            .request(Method::POST, "/1.0/images")
            .multipart(form);
        let op = self.transport.operation(req).await?;
        let done = self.wait_operation(&op.id, Some(IMAGE_TIMEOUT)).await?;
        done.metadata_str("fingerprint")
            .map(str::to_string)
            .ok_or_else(|| Error::Protocol("image import returned no fingerprint".into()))
    }

    /// Publish a (stopped) instance as an image; returns its fingerprint.
    pub async fn publish_instance(&self, instance: &str, publish: &Publish) -> Result<String> {
        let aliases: Vec<_> = publish.aliases.iter().map(|a| json!({"name": a})).collect();
        let mut body = json!({
            "source": {"type": "instance", "name": instance},
            "aliases": aliases,
            "properties": publish.properties,
            "public": false,
        });
        if let Some(c) = &publish.compression {
            body["compression_algorithm"] = json!(c);
        }
        let req = self
            .transport
            .request(Method::POST, "/1.0/images")
            .json(&body);
        let op = self.transport.operation(req).await?;
        let done = self.wait_operation(&op.id, Some(IMAGE_TIMEOUT)).await?;
        done.metadata_str("fingerprint")
            .map(str::to_string)
            .ok_or_else(|| Error::Protocol("publish returned no fingerprint".into()))
    }

    /// Delete an image by fingerprint.
    pub async fn delete_image(&self, fingerprint: &str) -> Result<()> {
        let path = format!("/1.0/images/{}", encode(fingerprint));
        let op = self
            .transport
            .operation(self.transport.request(Method::DELETE, &path))
            .await?;
        self.wait_operation(&op.id, Some(IMAGE_TIMEOUT)).await?;
        Ok(())
    }
}

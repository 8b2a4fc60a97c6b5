//! Managing images (`cci image list|publish|delete|cleanup`): what the
//! commands do against the daemon, returned as data for the CLI to render.

use crate::incus::{self, Client, Image, Publish};

/// Images, newest first: those with an alias starting with `prefix`
/// (default `cci`), or all of them.
pub async fn list(client: &Client, prefix: Option<&str>, all: bool) -> incus::Result<Vec<Image>> {
    let prefix = prefix.unwrap_or("cci");
    let mut images: Vec<Image> = client
        .images()
        .await?
        .into_iter()
        .filter(|i| all || i.aliases.iter().any(|a| a.name.starts_with(prefix)))
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(images)
}

/// Publish `container` as image `alias`; its fingerprint.
pub async fn publish(
    client: &Client,
    container: &str,
    alias: &str,
    description: Option<String>,
) -> incus::Result<String> {
    let mut p = Publish {
        aliases: vec![alias.to_string()],
        ..Default::default()
    };
    let description = description.unwrap_or_else(|| format!("published from {container} by cci"));
    p.properties.insert("description".into(), description);
    client.publish_instance(container, &p).await
}

/// The fingerprint an alias (or a unique fingerprint prefix of at least 12
/// characters) names.
pub async fn resolve(client: &Client, name: &str) -> incus::Result<String> {
    match client.image_alias(name).await {
        Ok(a) => return Ok(a.target),
        Err(e) if !e.is_not_found() => return Err(e),
        Err(_) => {}
    }
    let all = client.images().await?;
    let found: Vec<&Image> = all
        .iter()
        .filter(|i| name.len() >= 12 && i.fingerprint.starts_with(name))
        .collect();
    match found[..] {
        [one] => Ok(one.fingerprint.clone()),
        _ => Err(incus::Error::NotFound(format!("image {name:?}"))),
    }
}

/// Delete the image `name` names; its fingerprint.
pub async fn delete(client: &Client, name: &str) -> incus::Result<String> {
    let fingerprint = resolve(client, name).await?;
    client.delete_image(&fingerprint).await?;
    Ok(fingerprint)
}

/// The prefix versions are named after: `claudeyard-node-42-` (as the
/// original's example wrote it) is `claudeyard-node-42`, whose versions are
/// `claudeyard-node-42-YYYYMMDD-HHMMSS`.
pub fn versions_prefix(given: &str) -> &str {
    given.strip_suffix('-').unwrap_or(given)
}

/// What `cleanup` did with one old version.
#[derive(Debug)]
pub enum Cleaned {
    /// Kept: the prefix's own alias points to it.
    Current(String),
    /// Deleted.
    Deleted(String),
    /// Its deletion failed.
    Failed(String, incus::Error),
}

/// Delete the timestamped versions of `prefix` (see [`versions_prefix`])
/// but the newest `keep`, never the one the prefix's own alias points to.
pub async fn cleanup(client: &Client, prefix: &str, keep: usize) -> incus::Result<Vec<Cleaned>> {
    let current = match client.image_alias(prefix).await {
        Ok(a) => Some(a.target),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let mut versions: Vec<(String, String, String)> = Vec::new();
    for i in client.images().await? {
        for a in &i.aliases {
            if let Some(stamp) = super::version_stamp(prefix, &a.name) {
                versions.push((stamp.to_string(), a.name.clone(), i.fingerprint.clone()));
            }
        }
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out = Vec::new();
    for (_, alias, fingerprint) in versions.into_iter().skip(keep) {
        if current.as_deref() == Some(fingerprint.as_str()) {
            out.push(Cleaned::Current(alias));
            continue;
        }
        match client.delete_image(&fingerprint).await {
            Ok(()) => out.push(Cleaned::Deleted(alias)),
            Err(e) => out.push(Cleaned::Failed(alias, e)),
        }
    }
    Ok(out)
}

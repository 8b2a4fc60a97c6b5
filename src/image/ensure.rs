//! Whether an image is there, and the first-use build of a missing default
//! image (`cci shell` and `cci run` build it before starting, once). Prints
//! nothing: the caller says what happens and runs the build.

use super::{BuildRequest, DEFAULT_ALIAS, DEFAULT_SCRIPT, default_base};
use crate::incus::{self, Client};

/// Whether the image alias exists.
pub async fn exists(client: &Client, alias: &str) -> incus::Result<bool> {
    match client.image_alias(alias).await {
        Ok(_) => Ok(true),
        // (A missing project is not a missing image: nothing to build there.)
        Err(e) if e.is_not_found() && !e.to_string().contains("Project not found") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `image` must be built before its first use: only when it is
/// missing and was not named on the command line (`named`: such an image
/// must exist, it is never built).
pub async fn must_build(client: &Client, image: &str, named: bool) -> incus::Result<bool> {
    Ok(!named && !exists(client, image).await?)
}

/// The default image's build request (`cci build` without options; the
/// base from CCI_BUILD_BASE, else the default one).
pub async fn default_request(client: &Client, network: crate::network::Policy) -> BuildRequest {
    let base = match std::env::var("CCI_BUILD_BASE") {
        Ok(b) if !b.is_empty() => b,
        _ => default_base(client).await,
    };
    BuildRequest {
        alias: DEFAULT_ALIAS.into(),
        base,
        script: DEFAULT_SCRIPT.into(),
        force: false,
        versioned: true,
        network,
        // The agent sessions start by default.
        agents: vec![crate::config::current().tool.clone()],
    }
}

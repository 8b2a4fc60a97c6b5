//! A typed, async client for the Incus REST API.
//!
//! One file per API area (`instances`, `exec`, `files`, `images`...), each an
//! `impl Client` block sharing one [`Transport`] and one response decoder.
//! This module knows nothing about cci: no naming rules, no policies.

pub mod acls;
pub mod error;
pub mod events;
pub mod exec;
pub mod files;
pub mod images;
pub mod instances;
pub mod networks;
pub mod operations;
pub mod profiles;
pub mod pull;
pub mod server;
pub mod snapshots;
pub mod status;
pub mod tls;
pub mod transport;
pub mod volumes;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{Error, Result};
pub use events::{Event, Events};
pub use exec::{
    CappedBuf, ExecOutput, ExecRequest, MAX_CAPTURED_STDERR, MAX_CAPTURED_STDOUT, TerminalControl,
};
pub use files::{FileInfo, FileKind, FileWrite};
pub use images::{Image, ImageAlias, Publish};
pub use instances::{ImageRef, Instance, InstanceCreate, InstanceState, StateChange};
pub use operations::Operation;
pub use profiles::Profile;
pub use server::ServerInfo;
pub use snapshots::Snapshot;
pub use status::InstanceStatus;
pub use transport::{Endpoint, Https, Transport, discover_socket};
pub use volumes::Volume;

use reqwest::RequestBuilder;
use transport::Answer;

/// A connection to one Incus daemon. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

impl Client {
    /// A client for the local daemon, its socket found as [`discover_socket`] says.
    pub fn local() -> Result<Self> {
        Self::unix(discover_socket())
    }

    /// A client for the daemon listening on `socket`.
    pub fn unix(socket: PathBuf) -> Result<Self> {
        Ok(Client {
            transport: Transport::unix(socket)?,
        })
    }

    /// A client for a daemon on another machine.
    pub fn https(endpoint: Https) -> Result<Self> {
        Ok(Client {
            transport: Transport::https(endpoint)?,
        })
    }

    /// The remote's name, None for the local daemon.
    pub fn remote(&self) -> Option<&str> {
        self.transport.endpoint().remote()
    }

    /// Use Incus project `project` (None or `default`: the default project).
    pub fn with_project(mut self, project: Option<String>) -> Self {
        self.transport.set_project(project);
        self
    }

    /// Where this client sends requests.
    pub fn endpoint(&self) -> &Endpoint {
        self.transport.endpoint()
    }

    /// Send a request that may answer sync or async; wait for the latter.
    async fn finish(&self, req: RequestBuilder, timeout: Duration) -> Result<()> {
        match self.transport.answer(req).await? {
            Answer::Sync(_) => Ok(()),
            Answer::Async(op) => self.wait_operation(&op.id, Some(timeout)).await.map(|_| ()),
        }
    }
}

/// Install rustls's crypto provider (ring) for this process: every HTTP
/// client (the daemon's, the git forwarder's upstream one) is built after
/// it. Calling it again does nothing.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! The host cci works against, built once by the CLI and handed down: the
//! Incus client, the firewall that enforces network policies, and the
//! configuration in force. Domain code takes a [`Host`] (or only the piece
//! it needs) and never builds a side effect or reads a process global of
//! its own; a test can hand it another client, firewall or configuration.

use crate::config::Effective;
use crate::incus::Client;
use crate::network::{Nft, PolicyBackend};

/// What a command runs against.
pub struct Host {
    /// On a remote daemon: what stands in for the firewall there.
    remote: Option<crate::network::backend::Remote>,
    /// The Incus daemon.
    pub client: Client,
    /// Host nftables, today's one policy backend (the domain uses it only
    /// through [`Host::policy`]; the network watcher needs nft itself).
    pub firewall: Nft,
    /// The settings in force.
    pub config: &'static Effective,
}

impl Host {
    /// The host made of these parts.
    pub fn new(client: Client, firewall: Nft, config: &'static Effective) -> Host {
        let remote = client
            .remote()
            .map(|r| crate::network::backend::Remote { remote: r.into() });
        Host {
            remote,
            client,
            firewall,
            config,
        }
    }

    /// The backend that enforces network policies: host nftables for the
    /// local daemon; for a remote, the server's own network ACLs (see
    /// `network::acl`).
    pub fn policy(&self) -> &dyn PolicyBackend {
        match &self.remote {
            Some(r) => r,
            None => &self.firewall,
        }
    }

    /// The remote's name, None for the local daemon.
    pub fn remote(&self) -> Option<&str> {
        self.client.remote()
    }
}

//! The policy-backend seam: how a container's network policy is enforced.
//! Everything above it (guarding, upkeep, refresh, `src/sandbox/`) speaks
//! only [`PolicyBackend`] in terms of [`PortRules`] and [`PortName`]; how
//! the rules become real is the backend's business.
//!
//! Host nftables is the one implementation today: every
//! [`super::Firewall`] (the `nft` program, [`super::Nft`]) is a backend,
//! turning each call into one atomic script from [`super::rules`] (the impl
//! is in [`super::nft`]). A second backend — Incus network ACLs enforced by
//! the daemon, for remote servers where cci cannot run nft — would implement
//! this trait directly (on a type that is not a `Firewall`) and be handed
//! down in place of `Nft`; nothing in `src/sandbox/` changes.
//!
//! Owns the contract, not the policy (see [`super::policy`]) nor the
//! ordering around a container's start (see [`super::guard`]).

use std::collections::BTreeMap;

use super::rules::PortRules;
use super::{Error, PortName};

/// What a backend enforces right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Guarded ports and the packets their rules dropped so far.
    pub ports: BTreeMap<PortName, u64>,
    /// Packets from guarded containers dropped on their way to the host itself.
    pub to_host: u64,
    /// Packets dropped between containers on the bridge.
    pub between_slots: u64,
    /// The shared part of the rules (for nft: both of cci's tables) is in place.
    pub tables: bool,
    /// Proxy mode: what each port tried to reach around the proxy (TCP
    /// and UDP destinations the firewall dropped, last hour, bounded).
    pub blocked: BTreeMap<PortName, Vec<Blocked>>,
}

/// A destination a proxy-mode container tried to reach directly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    /// The address.
    pub address: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The port.
    pub port: u16,
    /// Packets dropped.
    pub packets: u64,
}

/// Enforces cci's network policy, one guarded port per container.
///
/// The contract every backend keeps (the callers rely on it to fail closed):
/// - [`guard`](Self::guard) puts the whole policy of one port in force, all
///   or nothing, replacing what the port had; it is called while the
///   container is stopped, and an `Err` means the container must not start
///   (the caller deletes or stops it). It also puts the shared part (what
///   every port relies on) in place when it is missing. Calling it again
///   with the same rules is harmless.
/// - A port the backend does not know is blocked, not open: losing a port's
///   rules (a flushed table) must block its container until they are back.
/// - [`release`](Self::release) removes every rule of one port and nothing
///   else; a port with no rules is fine (`Ok`). It is called only once the
///   container is gone (or never started), so releasing is never a way
///   around the policy of a running container.
/// - [`refill`](Self::refill) swaps the allowlist addresses of a port that
///   is guarded already, atomically; on `Err` the old addresses stay.
/// - [`state`](Self::state) reports what is in force. An `Err` says nothing
///   about whether rules are in place: callers stop nothing for it, and
///   release nothing.
/// - [`restore_shared`](Self::restore_shared) puts back the shared part
///   when it is damaged while ports are guarded.
///
/// Reconciliation with the daemon ([`super::reconcile`]) is built on these:
/// read the state first, then the containers, release ports whose container
/// is gone, guard again running ones whose port is missing, and stop those
/// whose rules cannot be put back.
pub trait PolicyBackend: Send + Sync {
    /// Put `rules` in force for its port (before its container starts).
    fn guard(&self, rules: &PortRules) -> Result<(), Error>;
    /// Swap in the allowlist addresses of `rules` for its guarded port.
    fn refill(&self, rules: &PortRules) -> Result<(), Error>;
    /// Remove every rule of `port`; nothing to remove is fine.
    fn release(&self, port: &PortName) -> Result<(), Error>;
    /// Put the shared part of the rules back.
    fn restore_shared(&self) -> Result<(), Error>;
    /// What is in force now (empty when nothing is).
    fn state(&self) -> Result<State, Error>;
}

/// The backend for a daemon on another machine, where cci cannot run nft:
/// the daemon enforces restricted and allowlist modes itself, with the
/// network ACL attached to the container's NIC when it is created (see
/// [`super::acl`]; nothing is left to install here). Proxy mode cannot be
/// enforced there (cci's proxy listens on this machine's bridge) and is
/// refused before its container starts, never silently weakened.
pub struct Remote {
    /// The remote's name.
    pub remote: String,
}

impl Remote {
    /// Refuse `mode` unless the server can enforce it.
    pub fn check(&self, mode: super::Mode) -> Result<(), Error> {
        let why = match mode {
            super::Mode::Proxy => {
                "cci's filtering proxy listens on this machine, not on the server"
            }
            // Incus (6.12 on) lets a NIC with ACLs reach the bridge's DNS
            // ahead of every ACL rule: names would leak through the server's
            // resolver, which an allowlist must not allow.
            super::Mode::Allowlist => {
                "the server's Incus answers DNS on the bridge ahead of any network ACL, so names would leak past the allowlist"
            }
            _ => return Ok(()),
        };
        Err(Error::RemoteUnenforced {
            mode: mode.to_string(),
            remote: self.remote.clone(),
            why: format!("{why} (restricted mode works there, through an Incus network ACL)"),
        })
    }
}

impl PolicyBackend for Remote {
    fn guard(&self, rules: &PortRules) -> Result<(), Error> {
        self.check(rules.mode)
    }
    fn refill(&self, rules: &PortRules) -> Result<(), Error> {
        Err(Error::RemoteUnenforced {
            mode: rules.mode.to_string(),
            remote: self.remote.clone(),
            why: "an allowlist on a remote is resolved once, when its container starts".into(),
        })
    }
    fn release(&self, _port: &PortName) -> Result<(), Error> {
        Ok(())
    }
    fn restore_shared(&self) -> Result<(), Error> {
        Ok(())
    }
    fn state(&self) -> Result<State, Error> {
        Ok(State::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Mode;

    #[test]
    fn a_remote_refuses_proxy_and_allowlist_modes() {
        let b = Remote {
            remote: "far".into(),
        };
        for m in [Mode::Open, Mode::Restricted] {
            assert!(b.check(m).is_ok());
        }
        for m in [Mode::Proxy, Mode::Allowlist] {
            let e = b.check(m).unwrap_err().to_string();
            assert!(e.contains("cannot be enforced on remote far"), "{e}");
        }
    }
}

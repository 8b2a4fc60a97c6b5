//! Network isolation: each container's mode (restricted, allowlist, open)
//! enforced by cci's own nftables tables on the host, keyed on the
//! container's fixed host-side interface name, in place before the container
//! starts and removed when it is gone. Fails closed: a container whose rules
//! cannot be applied does not start (and a running one is stopped).
//!
//! Owns: the policy ([`policy`]: modes, keys), port names ([`port`]: the
//! only interface names that reach a rule), guarding ([`guard`]: create
//! stopped -> rules -> start; release), policy -> rules ([`rules`]), running
//! nft ([`nft`]), allowlist resolution ([`allow`]) and reconciliation with
//! the daemon ([`upkeep`], [`watch`]). Prints nothing. This file only maps
//! the modules and re-exports what the rest of cci uses as
//! `crate::network::...`.

pub mod acl;
pub mod allow;
pub mod backend;
pub mod egress;
mod error;
#[cfg(test)]
mod fake;
mod guard;
mod hosts;
pub mod nft;
mod policy;
mod port;
pub mod ready;
pub mod reuse;
pub mod rules;
mod status;
mod upkeep;
mod watch;

pub use allow::Entry;
pub use backend::PolicyBackend;
pub use error::Error;
pub use guard::{
    Attachment, create_guarded, ensure, prepare, release, start_guarded, start_watcher,
};
pub use nft::{Firewall, Nft, State};
pub use policy::{DEFAULT_REFRESH_MINUTES, Mode, Policy, keys, parse_minutes, parse_servers};
pub use port::{PORT_PREFIX, PortName, port_of};
pub use rules::{Bridge, PortRules};
pub use status::{StatusRow, status};
pub use upkeep::{Reconciled, reconcile, refresh};
pub use watch::{spawn_watcher, watch, watcher_running};

#[cfg(test)]
mod tests;

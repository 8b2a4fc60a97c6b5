//! The egress proxy ("egress by name"): a host-side forward proxy for
//! containers in network mode `proxy`, which can reach nothing but it. It
//! decides each connection by the name asked for, not by addresses
//! resolved ahead of time: `CONNECT host:port` tunnels (TLS checked against
//! its server name) and plain `http://` requests.
//!
//! Threat model: the caller is a hostile root inside a container. All it
//! sends is untrusted: every read is bounded in size and time, nothing
//! reaches upstream before the destination is decided, names are validated
//! (ASCII, punycode for IDN) before they are resolved or logged, raw bytes
//! are never logged, and control characters in anything shown are escaped
//! ([`log::clean`]). A name is also checked against where it leads: an
//! answer in a private, loopback, link-local (metadata), CGNAT, multicast
//! or otherwise special range is refused unless an address rule allows that
//! address (DNS rebinding). A tunnel's TLS ClientHello must name the
//! CONNECT host (no fronting through an allowed name); non-TLS bytes need a
//! rule naming the port. Callers are identified by source address only:
//! the firewall (outside this module) must make spoofing impossible and
//! keep containers from reaching anything but this proxy.
//!
//! Owns: rules and policies ([`rules`]), reading TLS server names
//! ([`sni`]), the proxy ([`server`]), asking the user
//! ([`approvals`]), the decision log ([`log`]), resolution and dialing
//! ([`resolve`]) and the control channel with the live policy table
//! ([`control`]). [`run`] puts them together. Prints nothing; logs through
//! `tracing`.
//!
//! Deviations from the first sketch: [`Policy`] also carries `on_unknown`
//! (it is per container); [`server::Context`] also holds a [`Dial`] (the
//! one way out, so tests stay on loopback and integration can mark or bind
//! the upstream sockets); `Deny` on the control channel removes a rule
//! (rules only allow; see [`control`]).

pub mod approvals;
pub mod log;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod sni;

pub use approvals::{Approvals, Pending};
pub use log::{Decision, DecisionLog, Follow, Sink, suggest, to_toml};
pub use resolve::{Dial, Resolve, SystemResolver, TcpDial};
pub use rules::{OnUnknown, Policy, Rule, RuleError};
pub use server::{Context, Limits, Policies, serve};

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! The network policy as cci records it: the modes, the instance config
//! keys it lives in, and parsing it back from an instance. Pure: runs
//! nothing, touches no firewall (see [`super::guard`] for enforcing it).

use super::Error;
use super::allow::{self, Entry};
use crate::incus::Instance;

/// Instance config keys cci's network policy lives in.
pub mod keys {
    /// The mode (`restricted`, `allowlist`, `open`).
    pub const MODE: &str = "user.cci.network";
    /// Allowlist entries, comma-separated.
    pub const ALLOW: &str = "user.cci.network.allow";
    /// Allowlist refresh interval in minutes.
    pub const REFRESH: &str = "user.cci.network.refresh_minutes";
    /// DNS servers allowlists are resolved with, comma-separated (empty: the host's).
    pub const DNS: &str = "user.cci.network.dns";
    /// Restricted mode: `open` when private networks are reachable.
    pub const LAN: &str = "user.cci.network.lan";
    /// Restricted mode: `open` when the metadata endpoint is reachable.
    pub const METADATA: &str = "user.cci.network.metadata";
    /// Proxy mode: `ask` when unknown names wait for the user.
    pub const ON_UNKNOWN: &str = "user.cci.network.on_unknown";
}

// How often allowlists are resolved again, and what a refresh interval may
// be: owned by the configuration, which validates and defaults it.
pub use crate::config::{DEFAULT_REFRESH_MINUTES, parse_minutes};

/// A container's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Internet yes; LAN, metadata, the host and other containers no.
    #[default]
    Restricted,
    /// Only the allowlisted destinations (and DNS through the bridge).
    Allowlist,
    /// Only cci's filtering proxy, which decides by name (no DNS).
    Proxy,
    /// No restriction (anti-spoofing still on).
    Open,
}

impl Mode {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Restricted => "restricted",
            Mode::Allowlist => "allowlist",
            Mode::Proxy => "proxy",
            Mode::Open => "open",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode, Error> {
        match s {
            "restricted" => Ok(Mode::Restricted),
            "allowlist" => Ok(Mode::Allowlist),
            "proxy" => Ok(Mode::Proxy),
            "open" => Ok(Mode::Open),
            _ => Err(Error::BadMode(s.to_string())),
        }
    }
}

/// What a container may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// Allowlist mode: what is allowed (an empty list allows nothing).
    pub allow: Vec<Entry>,
    /// Allowlist mode: minutes between refreshes.
    pub refresh_minutes: f64,
    /// Allowlist mode: DNS servers to resolve with (empty: the host's).
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Restricted mode: private networks (LAN) are reachable.
    pub lan: bool,
    /// Restricted mode: the cloud metadata endpoint is reachable.
    pub metadata: bool,
    /// Proxy mode: its rules (see [`crate::proxy::Rule`]), canonical.
    pub rules: Vec<String>,
    /// Proxy mode: unknown names wait for the user.
    pub ask_unknown: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            mode: Mode::default(),
            allow: Vec::new(),
            refresh_minutes: DEFAULT_REFRESH_MINUTES,
            dns_servers: Vec::new(),
            lan: false,
            metadata: false,
            rules: Vec::new(),
            ask_unknown: false,
        }
    }
}

impl Policy {
    /// The policy recorded on an instance cci created (`None`: not guarded).
    pub fn of(instance: &Instance) -> Option<Result<Policy, Error>> {
        let mode = instance.config.get(keys::MODE)?;
        Some((|| {
            let mode: Mode = mode.parse()?;
            let listed = instance.config.get(keys::ALLOW).map_or("", |s| s);
            // Proxy mode keeps its rules as written (wildcards, NAME:PORT).
            let (allow, rules) = if mode == Mode::Proxy {
                (Vec::new(), proxy_rules(listed)?)
            } else {
                (allow::parse_list(listed)?, Vec::new())
            };
            Ok(Policy {
                mode,
                allow,
                rules,
                ask_unknown: instance
                    .config
                    .get(keys::ON_UNKNOWN)
                    .is_some_and(|v| v == "ask"),
                refresh_minutes: instance
                    .config
                    .get(keys::REFRESH)
                    .and_then(|m| parse_minutes(m))
                    .unwrap_or(DEFAULT_REFRESH_MINUTES),
                dns_servers: parse_servers(instance.config.get(keys::DNS).map_or("", |s| s))?,
                lan: instance.config.get(keys::LAN).is_some_and(|v| v == "open"),
                metadata: instance
                    .config
                    .get(keys::METADATA)
                    .is_some_and(|v| v == "open"),
            })
        })())
    }
}

/// Proxy rules, comma-separated (as cci recorded them: trusted).
pub fn proxy_rules(text: &str) -> Result<Vec<String>, Error> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            crate::proxy::Rule::parse(s.trim(), true)
                .map(|r| r.to_string())
                .map_err(|e| Error::BadRule(format!("{s:?}: {e}")))
        })
        .collect()
}

/// DNS server addresses, comma-separated.
pub fn parse_servers(text: &str) -> Result<Vec<std::net::IpAddr>, Error> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| Error::Resolver(format!("{s:?} is not a DNS server address")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_strictly() {
        assert_eq!("allowlist".parse::<Mode>().unwrap(), Mode::Allowlist);
        assert!("opne".parse::<Mode>().is_err());
        assert!("Open".parse::<Mode>().is_err());
    }
}

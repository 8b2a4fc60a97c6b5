//! Allowlist entries, their resolution on the host, and the last-known-good
//! cache. A DNS answer never widens what a container may reach beyond public
//! addresses, and a failed lookup never empties or widens a working list.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::{Error, PortName};

// One allowlist entry as the user wrote it: owned by the configuration,
// which validates every layer's entries.
pub use crate::config::AllowEntry as Entry;

impl From<crate::config::BadAllowEntry> for Error {
    fn from(e: crate::config::BadAllowEntry) -> Error {
        Error::BadAllowEntry(e.0)
    }
}

/// Parse a comma- or space-separated list (as kept in the instance config).
pub fn parse_list(text: &str) -> Result<Vec<Entry>, Error> {
    text.split([',', ' ', '\n'])
        .filter(|s| !s.trim().is_empty())
        .map(|t| Entry::parse(t).map_err(Error::from))
        .collect()
}

// Whether a DNS answer may be admitted: owned by the configuration, next
// to the blocked ranges.
pub use crate::config::is_public;

/// What each domain resolved to (public addresses only), as cached on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// Domain -> its admitted addresses.
    pub domains: BTreeMap<String, Vec<IpAddr>>,
}

/// The outcome of resolving a list.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// The addresses to admit per domain (fresh, or last-known-good).
    pub resolved: Resolved,
    /// Domains that gave no usable answer this time (kept from the cache if known).
    pub failed: Vec<String>,
    /// Addresses a DNS answer offered that were refused (private, metadata...).
    pub refused: Vec<(String, IpAddr)>,
}

impl Resolution {
    /// Domains with no address at all (neither fresh nor cached).
    pub fn unresolved(&self) -> Vec<&str> {
        self.failed
            .iter()
            .filter(|d| self.resolved.domains.get(*d).is_none_or(|a| a.is_empty()))
            .map(String::as_str)
            .collect()
    }
}

/// The resolver for `servers`, or the host's `/etc/resolv.conf` when empty.
fn resolver(servers: &[IpAddr]) -> Result<Resolver<TokioRuntimeProvider>, Error> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    opts.cache_size = 0;
    let mut builder = if servers.is_empty() {
        Resolver::builder_tokio().map_err(|e| Error::Resolver(e.to_string()))?
    } else {
        let config = ResolverConfig::from_name_servers(
            servers
                .iter()
                .copied()
                .map(NameServerConfig::udp_and_tcp)
                .collect(),
        );
        Resolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    *builder.options_mut() = opts;
    builder.build().map_err(|e| Error::Resolver(e.to_string()))
}

/// Resolve every domain of `entries` (through `servers`, or the host's
/// resolvers); a domain that fails keeps its
/// addresses from `previous` (last-known-good), never fewer checks.
pub async fn resolve(
    entries: &[Entry],
    servers: &[IpAddr],
    previous: &Resolved,
) -> Result<Resolution, Error> {
    let mut out = Resolution::default();
    let domains: Vec<&str> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Domain(d) => Some(d.as_str()),
            Entry::Net(_) => None,
        })
        .collect();
    if domains.is_empty() {
        return Ok(out);
    }
    let resolver = resolver(servers)?;
    for domain in domains {
        // A fully qualified name: no search domains appended.
        let answer = resolver.lookup_ip(format!("{domain}.")).await;
        let mut admitted = Vec::new();
        if let Ok(answer) = answer {
            for ip in answer.iter() {
                if is_public(ip) {
                    admitted.push(ip);
                } else {
                    out.refused.push((domain.to_string(), ip));
                }
            }
        }
        admitted.sort();
        admitted.dedup();
        if admitted.is_empty() {
            out.failed.push(domain.to_string());
            if let Some(old) = previous.domains.get(domain) {
                out.resolved.domains.insert(domain.to_string(), old.clone());
            }
        } else {
            out.resolved.domains.insert(domain.to_string(), admitted);
        }
    }
    Ok(out)
}

/// The admitted networks: literal entries plus every resolved address.
pub fn admitted(entries: &[Entry], resolved: &Resolved) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let nets = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Net(n) => Some(*n),
            Entry::Domain(_) => None,
        })
        .chain(
            resolved
                .domains
                .values()
                .flatten()
                .map(|ip| IpNet::from(*ip)),
        );
    for net in nets {
        match net {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6.push(n),
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    (v4, v6)
}

/// Where a port's last-known-good resolution is kept.
fn cache_path(port: &PortName) -> Result<PathBuf, Error> {
    let dir = crate::state::dir("network").map_err(|e| Error::Cache(e.to_string()))?;
    Ok(dir.join(format!("{port}.json")))
}

/// The cached resolution of `port` (empty when there is none or it is unreadable).
pub fn load_cache(port: &PortName) -> Resolved {
    cache_path(port)
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Keep `resolved` as `port`'s last-known-good (atomically).
pub fn store_cache(port: &PortName, resolved: &Resolved) -> Result<(), Error> {
    let path = cache_path(port)?;
    let data = serde_json::to_vec_pretty(resolved).map_err(|e| Error::Cache(e.to_string()))?;
    crate::state::write_atomic(&path, &data).map_err(|e| Error::Cache(e.to_string()))
}

/// How long ago `port`'s addresses were last resolved.
pub fn cache_age(port: &PortName) -> Option<std::time::Duration> {
    let modified = std::fs::metadata(cache_path(port).ok()?)
        .ok()?
        .modified()
        .ok()?;
    modified.elapsed().ok()
}

/// Forget `port`'s cache.
pub fn drop_cache(port: &PortName) {
    if let Ok(p) = cache_path(port) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_lines_and_keep_the_entry_error() {
        // Entry parsing itself is tested where it lives (config::allow_entry).
        assert!(parse_list("a.com, x y").is_err());
        assert_eq!(parse_list("a.com, 1.2.3.4\nb.org").unwrap().len(), 3);
    }

    #[test]
    fn dns_answers_in_private_or_special_ranges_are_refused() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "172.20.0.1",
            "169.254.169.254",
            "127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            // NAT64 (a DNS64 answer): any IPv4 address behind it, private too.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::808:808",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} admitted");
        }
        for ip in ["198.51.100.7", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} refused");
        }
    }

    #[test]
    fn admitted_joins_literals_and_answers_without_duplicates() {
        let entries = parse_list("a.com, 198.51.100.7, 2001:db8::/48").unwrap();
        let mut resolved = Resolved::default();
        resolved.domains.insert(
            "a.com".into(),
            vec![
                "198.51.100.7".parse().unwrap(),
                "198.51.100.8".parse().unwrap(),
            ],
        );
        let (v4, v6) = admitted(&entries, &resolved);
        assert_eq!(v4.len(), 2);
        assert_eq!(v6, vec!["2001:db8::/48".parse::<Ipv6Net>().unwrap()]);
    }
}

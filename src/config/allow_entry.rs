//! One allowlist entry (`[network] allowed_domains`) and its parser. Owned
//! by the configuration, which validates every layer's entries; the network
//! layer resolves them and re-exports the type as `network::Entry`.

use std::net::IpAddr;

use ipnet::IpNet;

/// An allowlist entry is neither a domain, an address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowlist entry {0:?} is not a domain name, an IP address or a CIDR")]
pub struct BadAllowEntry(pub String);

/// One allowlist entry as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    /// A domain name, resolved on the host.
    Domain(String),
    /// A literal address or CIDR, admitted as written (the user's choice).
    Net(IpNet),
}

impl Entry {
    /// Parse `example.com`, `198.51.100.7`, `198.51.100.0/24` or `2001:db8::/32`.
    pub fn parse(text: &str) -> Result<Entry, BadAllowEntry> {
        let t = text.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Entry::Net(net.trunc()));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Entry::Net(IpNet::from(ip)));
        }
        let name = t.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() <= 253 && name.contains('.') && name.split('.').all(label_ok) {
            return Ok(Entry::Domain(name));
        }
        Err(BadAllowEntry(text.to_string()))
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Domain(d) => f.write_str(d),
            Entry::Net(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_domains_addresses_and_networks() {
        assert_eq!(
            Entry::parse("API.Example.com.").unwrap(),
            Entry::Domain("api.example.com".into())
        );
        assert_eq!(
            Entry::parse("198.51.100.7").unwrap(),
            Entry::Net("198.51.100.7/32".parse().unwrap())
        );
        assert_eq!(
            Entry::parse("198.51.100.9/24").unwrap(),
            Entry::Net("198.51.100.0/24".parse().unwrap())
        );
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a..b",
            "a b.com",
            "*",
            "x.com/8",
            "$(id).com",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Entry::parse("x y").unwrap_err().to_string(),
            "allowlist entry \"x y\" is not a domain name, an IP address or a CIDR"
        );
    }
}

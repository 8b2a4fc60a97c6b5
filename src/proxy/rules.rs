//! Proxy rules: what a container in proxy mode may reach, by name or by
//! address, and the policy that decides one destination. Pure: no I/O.
//!
//! Forms (names are compared in lower case, a final dot ignored):
//! - `api.example.com`: that name exactly;
//! - `*.example.com`: any name under `example.com`, at any depth, but not
//!   `example.com` itself;
//! - `*`: any name (trusted configuration only; never an address);
//! - `10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`, `2001:db8::1`: addresses;
//! - any of these with a port: `example.com:22`, `*.example.com:8443`,
//!   `10.0.0.1:5432`, `10.0.0.0/8:5432`, `[2001:db8::1]:8080`.
//!
//! A rule without a port allows ports 80 and 443 only. Names must be ASCII
//! (internationalized names in their punycode form, `xn--...`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The ports a rule without a port allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Nothing was given.
    #[error("empty rule")]
    Empty,
    /// A name with characters outside ASCII.
    #[error("{0:?} is not ASCII: write internationalized names in their punycode form (xn--...)")]
    NotAscii(String),
    /// Not a valid host name.
    #[error("{0:?} is not a valid host name")]
    BadName(String),
    /// A port that is not 1-65535.
    #[error("{0:?} is not a valid port (1-65535)")]
    BadPort(String),
    /// A wildcard too wide for an untrusted configuration.
    #[error(
        "{0:?} is too wide: a project configuration may not allow every name or a whole top-level domain"
    )]
    TooWide(String),
    /// A wildcard anywhere but as the whole first label.
    #[error("{0:?}: a wildcard is only allowed as the first label (`*.example.com`)")]
    BadWildcard(String),
}

/// What a rule matches, before the port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Any name (`*`).
    AnyName,
    /// One name, normalized.
    Name(String),
    /// Any name strictly under this one (`*.` + it).
    Under(String),
    /// Addresses (a single address is a full-length prefix).
    Net(IpNet),
}

/// One rule: a target and, optionally, a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// What it matches.
    pub target: Target,
    /// The one port it allows; `None`: [`DEFAULT_PORTS`].
    pub port: Option<u16>,
}

impl Rule {
    /// Parse `text`. `trusted` is false for configuration the user did not
    /// write themselves (a project's): it may not allow `*` or a wildcard
    /// over a single label (`*.com`).
    pub fn parse(text: &str, trusted: bool) -> Result<Rule, RuleError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(RuleError::Empty);
        }
        // `[v6 or v6/len]` with an optional `:port`.
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| RuleError::BadName(s.to_string()))?;
            let net = parse_net(inside).ok_or_else(|| RuleError::BadName(s.to_string()))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| RuleError::BadPort(p.to_string()))?,
                )?),
            };
            return Ok(Rule {
                target: Target::Net(net),
                port,
            });
        }
        // A bare IPv6 address or network (its colons are not a port).
        if let Some(net) = parse_net(s) {
            return Ok(Rule {
                target: Target::Net(net),
                port: None,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        };
        if host.contains(':') {
            return Err(RuleError::BadName(s.to_string()));
        }
        if let Some(net) = parse_net(host) {
            return Ok(Rule {
                target: Target::Net(net),
                port,
            });
        }
        let target = if host == "*" {
            if !trusted {
                return Err(RuleError::TooWide(s.to_string()));
            }
            Target::AnyName
        } else if let Some(parent) = host.strip_prefix("*.") {
            let parent = normalize_name(parent).map_err(|e| match e {
                RuleError::BadName(_) => RuleError::BadName(s.to_string()),
                e => e,
            })?;
            if !trusted && !parent.contains('.') {
                return Err(RuleError::TooWide(s.to_string()));
            }
            Target::Under(parent)
        } else {
            Target::Name(normalize_name(host)?)
        };
        Ok(Rule { target, port })
    }

    /// Whether the rule allows `port`.
    pub fn allows_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    /// Whether the rule names its port (rather than allowing the default ones).
    pub fn names_port(&self) -> bool {
        self.port.is_some()
    }

    /// Whether the rule matches the (normalized) name `host`, any port.
    fn matches_name(&self, host: &str) -> bool {
        match &self.target {
            Target::AnyName => true,
            Target::Name(n) => n == host,
            Target::Under(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            Target::Net(_) => false,
        }
    }

    /// Whether the rule matches the address `ip`, any port.
    fn matches_addr(&self, ip: IpAddr) -> bool {
        match &self.target {
            Target::Net(net) => net.contains(&canonical_ip(ip)),
            _ => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.target {
            Target::AnyName => "*".to_string(),
            Target::Name(n) => n.clone(),
            Target::Under(p) => format!("*.{p}"),
            Target::Net(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
            Target::Net(net) => net.to_string(),
        };
        match (self.port, &self.target) {
            (None, _) => f.write_str(&host),
            (Some(p), Target::Net(IpNet::V6(_))) => write!(f, "[{host}]:{p}"),
            (Some(p), _) => write!(f, "{host}:{p}"),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = RuleError;
    /// Parse as trusted (see [`Rule::parse`]).
    fn from_str(s: &str) -> Result<Rule, RuleError> {
        Rule::parse(s, true)
    }
}

// Kept as their canonical text (the state file, the control channel).
impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        let text = String::deserialize(d)?;
        Rule::parse(&text, true).map_err(serde::de::Error::custom)
    }
}

/// What to do with a destination no rule allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    /// Refuse it.
    #[default]
    Deny,
    /// Hold it and ask the user (see [`super::Approvals`]).
    Ask,
}

/// One container's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Its rules, in no significant order.
    pub rules: Vec<Rule>,
    /// What happens to a destination no rule allows.
    pub on_unknown: OnUnknown,
}

impl Policy {
    /// The rule allowing the name `host` on `port`, if any (None: deny). An
    /// IP literal never matches here (see [`Policy::decide_addr`]). A rule
    /// naming the port wins over one allowing it by default, so the caller
    /// can tell whether the port was named.
    pub fn decide_name(&self, host: &str, port: u16) -> Option<&Rule> {
        let host = normalize_name(host).ok()?;
        self.best(|r| r.matches_name(&host), port)
    }

    /// The rule allowing the address `ip` on `port`, if any (None: deny).
    /// Only address rules match addresses (`*` does not).
    pub fn decide_addr(&self, ip: IpAddr, port: u16) -> Option<&Rule> {
        self.best(|r| r.matches_addr(ip), port)
    }

    fn best(&self, matches: impl Fn(&Rule) -> bool, port: u16) -> Option<&Rule> {
        let mut found = self
            .rules
            .iter()
            .filter(|r| r.allows_port(port) && matches(r));
        let first = found.next()?;
        if first.names_port() {
            return Some(first);
        }
        Some(found.find(|r| r.names_port()).unwrap_or(first))
    }
}

/// A host name as compared: ASCII, lower case, without its final dot;
/// labels of 1-63 letters, digits, `-` or `_` (not starting or ending with
/// `-`), 253 characters at most; the last label not all digits (that is a
/// mistyped address). No wildcard.
pub fn normalize_name(name: &str) -> Result<String, RuleError> {
    if !name.is_ascii() {
        return Err(RuleError::NotAscii(name.to_string()));
    }
    let n = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if n.contains('*') {
        return Err(RuleError::BadWildcard(name.to_string()));
    }
    let bad = || RuleError::BadName(name.to_string());
    if n.is_empty() || n.len() > 253 {
        return Err(bad());
    }
    for label in n.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(bad());
        }
    }
    if n.rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(n)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(canonical_ip(ip)));
    }
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

fn parse_port(p: &str) -> Result<u16, RuleError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(RuleError::BadPort(p.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        Rule::parse(s, false).unwrap()
    }

    fn policy(rules: &[&str]) -> Policy {
        Policy {
            rules: rules
                .iter()
                .map(|s| Rule::parse(s, true).unwrap())
                .collect(),
            on_unknown: OnUnknown::Deny,
        }
    }

    #[test]
    fn rules_read_back_in_canonical_form() {
        for (text, canon) in [
            ("API.Example.com.", "api.example.com"),
            ("*.Example.COM", "*.example.com"),
            ("example.com:22", "example.com:22"),
            ("*.example.com:8443", "*.example.com:8443"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7"),
            ("10.0.0.1:5432", "10.0.0.1:5432"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8::1", "2001:db8::1"),
            ("[2001:db8::1]:8080", "[2001:db8::1]:8080"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            (" _dmarc.example.com ", "_dmarc.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(r(text).to_string(), canon, "{text}");
            assert_eq!(r(canon).to_string(), canon, "{canon} again");
        }
    }

    #[test]
    fn bad_rules_are_refused_with_their_reason() {
        for text in [
            "",
            "ex ample.com",
            "-a.com",
            "a..com",
            "10.0.0.256",
            "a.com:0",
            "a.com:65536",
            "a.com:+1",
            "a.com:",
            "[2001:db8::1",
            "[2001:db8::1]8080",
            "a:b:c",
            "foo.*.com",
            "*",
            "*.",
            "*.com",
            "*.*.com",
        ] {
            assert!(Rule::parse(text, false).is_err(), "{text:?} accepted");
        }
        assert!(matches!(
            Rule::parse("bücher.example", true),
            Err(RuleError::NotAscii(_))
        ));
        assert!(matches!(
            Rule::parse("*", false),
            Err(RuleError::TooWide(_))
        ));
        assert!(matches!(
            Rule::parse("*.com:22", false),
            Err(RuleError::TooWide(_))
        ));
        // Trusted configuration may.
        assert_eq!(Rule::parse("*", true).unwrap().target, Target::AnyName);
        assert!(Rule::parse("*.internal", true).is_ok());
        assert!(Rule::parse("*.", true).is_err());
    }

    #[test]
    fn a_rule_without_a_port_allows_80_and_443_only() {
        let p = policy(&["example.com", "ssh.example.com:22"]);
        assert!(p.decide_name("example.com", 443).is_some());
        assert!(p.decide_name("example.com", 80).is_some());
        assert!(p.decide_name("example.com", 22).is_none());
        assert!(p.decide_name("ssh.example.com", 22).is_some());
        assert!(p.decide_name("ssh.example.com", 443).is_none());
    }

    #[test]
    fn wildcards_match_any_depth_but_not_the_parent() {
        let p = policy(&["*.example.com"]);
        assert!(p.decide_name("a.example.com", 443).is_some());
        assert!(p.decide_name("a.b.EXAMPLE.com.", 443).is_some());
        assert!(p.decide_name("example.com", 443).is_none());
        assert!(p.decide_name("badexample.com", 443).is_none());
        assert!(p.decide_name("example.com.evil.net", 443).is_none());
    }

    #[test]
    fn any_name_never_allows_an_address() {
        let p = policy(&["*"]);
        assert!(p.decide_name("anything.example", 443).is_some());
        assert!(p.decide_addr("192.0.2.7".parse().unwrap(), 443).is_none());
        assert!(p.decide_name("192.0.2.7", 443).is_none());
    }

    #[test]
    fn addresses_match_networks_and_ports() {
        let p = policy(&["10.0.0.0/8", "192.0.2.7:5432", "[2001:db8::1]:8080"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.decide_addr(ip("10.9.9.9"), 443).is_some());
        assert!(p.decide_addr(ip("::ffff:10.9.9.9"), 80).is_some());
        assert!(p.decide_addr(ip("10.9.9.9"), 22).is_none());
        assert!(p.decide_addr(ip("192.0.2.7"), 5432).is_some());
        assert!(p.decide_addr(ip("192.0.2.8"), 5432).is_none());
        assert!(p.decide_addr(ip("2001:db8::1"), 8080).is_some());
        assert!(p.decide_addr(ip("2001:db8::2"), 8080).is_none());
        assert!(p.decide_name("10.9.9.9", 443).is_none());
    }

    #[test]
    fn a_rule_naming_the_port_wins() {
        let p = policy(&["github.com", "github.com:443"]);
        assert_eq!(
            p.decide_name("github.com", 443).map(|r| r.to_string()),
            Some("github.com:443".into())
        );
        assert_eq!(
            p.decide_name("github.com", 80).map(|r| r.to_string()),
            Some("github.com".into())
        );
    }

    #[test]
    fn rules_serialize_as_their_text() {
        let rules = vec![r("*.example.com:8443"), r("[2001:db8::1]:8080")];
        let json = serde_json::to_string(&rules).unwrap();
        assert_eq!(json, r#"["*.example.com:8443","[2001:db8::1]:8080"]"#);
        let back: Vec<Rule> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rules);
    }
}

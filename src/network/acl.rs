//! Network policy on a remote server, where cci cannot run nft: an Incus
//! network ACL per container, attached to its NIC when it is created
//! (default actions `drop` both ways), so the server's own daemon enforces
//! restricted mode (allowlist is refused there: see `backend::Remote`).
//!
//! An ACL's drop rules always win over its allow rules, whatever their
//! order, so "everything but the private ranges" cannot be said with a
//! drop and a catch-all allow. The allowed destinations are computed here
//! instead, as address ranges: the whole space minus the blocked ranges
//! (plus what the configuration unblocks), minus every address of the
//! server itself and the bridge's subnets (other containers), and only
//! allows are written. An empty list is never written (that would mean
//! any destination).
//!
//! What it cannot do, compared to nft (see docs/remotes.md): no counters
//! or log, no proxy or allowlist mode, and the server's addresses are those
//! it has at the start.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::policy::{Mode, Policy};
use crate::config::{BLOCKED_V4, BLOCKED_V6};
use crate::incus::acls::{AclRule, NetworkAcl};

/// The key on an instance naming its ACL.
pub const ACL_KEY: &str = "user.cci.acl";

/// The key on an ACL saying when it was made (seconds since 1970).
const CREATED_KEY: &str = "user.cci.created";

/// How old an unused ACL of cci's must be before it is removed (one being
/// attached right now is not).
pub const SWEEP_AFTER_SECS: u64 = 600;

/// The bridge a container's NIC sits on, as the ACL needs it.
#[derive(Debug, Clone, Default)]
pub struct BridgeNets {
    /// Its IPv4 address and subnet.
    pub v4: Option<Ipv4Net>,
    /// Its IPv6 address and subnet.
    pub v6: Option<Ipv6Net>,
}

impl BridgeNets {
    /// From the bridge's config (`ipv4.address = 10.1.2.1/24`...).
    pub fn from_config(config: &std::collections::HashMap<String, String>) -> BridgeNets {
        BridgeNets {
            v4: config.get("ipv4.address").and_then(|a| a.parse().ok()),
            v6: config.get("ipv6.address").and_then(|a| a.parse().ok()),
        }
    }
}

/// `from` minus every range of `remove`, as the fewest ranges that cover
/// exactly what is left.
pub fn subtract(from: &[IpNet], remove: &[IpNet]) -> Vec<IpNet> {
    let mut left: Vec<IpNet> = from.iter().map(IpNet::trunc).collect();
    for r in remove {
        let r = r.trunc();
        let mut next = Vec::new();
        for f in left {
            minus(f, r, &mut next);
        }
        left = next;
    }
    IpNet::aggregate(&left)
}

fn minus(f: IpNet, r: IpNet, out: &mut Vec<IpNet>) {
    if r.contains(&f) {
        return;
    }
    if !f.contains(&r) {
        out.push(f);
        return;
    }
    // r lies strictly inside f: keep the half without it, split the other.
    if let Ok(halves) = f.subnets(f.prefix_len() + 1) {
        for h in halves {
            minus(h, r, out);
        }
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().filter_map(|n| n.parse().ok()).collect()
}

fn rule(action: &str, what: &str) -> AclRule {
    AclRule {
        action: action.into(),
        state: "enabled".into(),
        description: what.into(),
        ..AclRule::default()
    }
}

fn join(list: &[IpNet]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The ACL for `policy` (restricted mode) of a container on `bridge`, on a
/// server with addresses `host`. None for a mode an ACL does not carry.
pub fn plan(
    name: &str,
    policy: &Policy,
    bridge: &BridgeNets,
    host: &[IpAddr],
    now: u64,
) -> Option<NetworkAcl> {
    let mut egress = Vec::new();
    let mut ingress = Vec::new();
    // The bridge's services: DHCP, DNS (restricted only), router
    // solicitation; and the answers that are not replies to a connection.
    if let Some(v4) = bridge.v4 {
        let a = v4.addr();
        egress.push(AclRule {
            protocol: "udp".into(),
            destination: format!("{a}/32,255.255.255.255/32"),
            destination_port: "67".into(),
            ..rule("allow", "DHCP")
        });
        for p in ["udp", "tcp"] {
            egress.push(AclRule {
                protocol: p.into(),
                destination: format!("{a}/32"),
                destination_port: "53".into(),
                ..rule("allow", "DNS of the bridge")
            });
        }
        ingress.push(AclRule {
            protocol: "udp".into(),
            source: format!("{a}/32"),
            source_port: "67".into(),
            ..rule("allow", "DHCP answers")
        });
    }
    if let Some(v6) = bridge.v6 {
        let a = v6.addr();
        egress.push(AclRule {
            protocol: "icmp6".into(),
            destination: "ff02::2/128".into(),
            icmp_type: "133".into(),
            ..rule("allow", "router solicitation")
        });
        egress.push(AclRule {
            protocol: "udp".into(),
            destination: format!("ff02::1:2/128,{a}/128"),
            destination_port: "547".into(),
            ..rule("allow", "DHCPv6")
        });
        for p in ["udp", "tcp"] {
            egress.push(AclRule {
                protocol: p.into(),
                destination: format!("{a}/128"),
                destination_port: "53".into(),
                ..rule("allow", "DNS of the bridge")
            });
        }
        ingress.push(AclRule {
            protocol: "icmp6".into(),
            source: "fe80::/10".into(),
            icmp_type: "134".into(),
            ..rule("allow", "router advertisements")
        });
        ingress.push(AclRule {
            protocol: "udp".into(),
            source: "fe80::/10".into(),
            source_port: "547".into(),
            ..rule("allow", "DHCPv6 answers")
        });
    }
    // Never the server itself, never another container on the bridge.
    let mut never: Vec<IpNet> = host.iter().map(|a| IpNet::from(*a)).collect();
    never.extend(bridge.v4.map(|n| IpNet::V4(n.trunc())));
    never.extend(bridge.v6.map(|n| IpNet::V6(n.trunc())));
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = match policy.mode {
        Mode::Restricted => {
            let (ex4, ex6) = super::rules::exempt(policy.lan, policy.metadata);
            let all4 = subtract(&nets(&["0.0.0.0/0"]), &nets(BLOCKED_V4));
            let all6 = subtract(&nets(&["::/0"]), &nets(BLOCKED_V6));
            let mut v4 = all4;
            v4.extend(ex4.into_iter().map(IpNet::V4));
            let mut v6 = all6;
            v6.extend(ex6.into_iter().map(IpNet::V6));
            (
                subtract(&IpNet::aggregate(&v4), &never),
                subtract(&IpNet::aggregate(&v6), &never),
            )
        }
        // Allowlist is refused on remotes (see `backend::Remote::check`).
        Mode::Open | Mode::Proxy | Mode::Allowlist => return None,
    };
    for list in [v4, v6] {
        if !list.is_empty() {
            egress.push(AclRule {
                destination: join(&list),
                ..rule("allow", "the internet")
            });
        }
    }
    let mut config = std::collections::HashMap::new();
    config.insert(CREATED_KEY.to_string(), now.to_string());
    Some(NetworkAcl {
        name: name.into(),
        description: format!("cci: {} mode", policy.mode),
        ingress,
        egress,
        config,
        used_by: Vec::new(),
    })
}

/// Whether `acl` is one of cci's, unused and old enough to remove.
pub fn stale(acl: &NetworkAcl, now: u64) -> bool {
    acl.name.starts_with("cci-")
        && acl.used_by.is_empty()
        && acl
            .config
            .get(CREATED_KEY)
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|t| now.saturating_sub(t) >= SWEEP_AFTER_SECS)
}

/// A fresh ACL name.
pub fn new_name() -> String {
    format!("cci-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn covers(list: &[IpNet], addr: &str) -> bool {
        let a: IpAddr = addr.parse().unwrap();
        list.iter().any(|n| n.contains(&a))
    }

    #[test]
    fn subtraction_leaves_exactly_the_rest() {
        let left = subtract(&[n("10.0.0.0/8")], &[n("10.1.2.3/32")]);
        assert_eq!(left.len(), 24);
        assert!(!covers(&left, "10.1.2.3"));
        assert!(covers(&left, "10.1.2.2") && covers(&left, "10.1.2.4"));
        assert!(covers(&left, "10.255.0.1") && covers(&left, "10.0.0.0"));
        assert!(subtract(&[n("10.0.0.0/8")], &[n("0.0.0.0/0")]).is_empty());
        assert_eq!(
            subtract(&[n("10.0.0.0/8")], &[n("11.0.0.0/8")]),
            [n("10.0.0.0/8")]
        );
    }

    fn egress_allowed(acl: &NetworkAcl, proto: &str, addr: &str) -> bool {
        let a: IpAddr = addr.parse().unwrap();
        acl.egress.iter().any(|r| {
            r.action == "allow"
                && (r.protocol.is_empty() || r.protocol == proto)
                && r.destination_port.is_empty()
                && r.destination
                    .split(',')
                    .any(|d| d.parse::<IpNet>().is_ok_and(|d| d.contains(&a)))
        })
    }

    #[test]
    fn restricted_allows_the_internet_only() {
        let bridge = BridgeNets {
            v4: Some("10.50.0.1/24".parse().unwrap()),
            v6: Some("fd42::1/64".parse().unwrap()),
        };
        let host: Vec<IpAddr> = vec![
            "198.51.100.99".parse().unwrap(),
            "2001:db8:99::99".parse().unwrap(),
        ];
        let policy = Policy {
            mode: Mode::Restricted,
            ..Policy::default()
        };
        let acl = plan("cci-x", &policy, &bridge, &host, 7).unwrap();
        assert!(egress_allowed(&acl, "tcp", "198.51.100.10"));
        assert!(egress_allowed(&acl, "tcp", "2606:4700::1"));
        for no in [
            "10.99.0.10",
            "172.16.99.10",
            "192.168.99.10",
            "169.254.169.254",
            "127.0.0.1",
            "198.51.100.99",
            "10.50.0.1",
            "10.50.0.7",
            "224.0.0.1",
            "2001:db8:99::99",
            "fd42::5",
            "fe80::1",
        ] {
            assert!(!egress_allowed(&acl, "tcp", no), "{no}");
        }
        // No rule is an empty allow (which would mean anything).
        assert!(
            acl.egress
                .iter()
                .all(|r| r.action != "allow" || !r.destination.is_empty())
        );
        // The LAN and the metadata endpoint, when the configuration says so;
        // the server itself and the other containers never.
        let open = Policy {
            mode: Mode::Restricted,
            lan: true,
            metadata: true,
            ..Policy::default()
        };
        let acl = plan("cci-x", &open, &bridge, &host, 7).unwrap();
        assert!(egress_allowed(&acl, "tcp", "10.99.0.10"));
        assert!(egress_allowed(&acl, "tcp", "169.254.169.254"));
        assert!(!egress_allowed(&acl, "tcp", "10.50.0.7"));
        assert!(!egress_allowed(&acl, "tcp", "198.51.100.99"));
    }

    #[test]
    fn only_restricted_mode_has_an_acl() {
        let bridge = BridgeNets::default();
        assert!(plan("cci-x", &Policy::default(), &bridge, &[], 7).is_some());
        for mode in [Mode::Open, Mode::Proxy, Mode::Allowlist] {
            let p = Policy {
                mode,
                ..Policy::default()
            };
            assert!(plan("cci-x", &p, &bridge, &[], 7).is_none());
        }
    }

    #[test]
    fn only_old_unused_acls_of_ccis_are_swept() {
        let bridge = BridgeNets::default();
        let acl = plan("cci-x", &Policy::default(), &bridge, &[], 1000).unwrap();
        assert!(!stale(&acl, 1000 + SWEEP_AFTER_SECS - 1));
        assert!(stale(&acl, 1000 + SWEEP_AFTER_SECS));
        let used = NetworkAcl {
            used_by: vec!["/1.0/instances/a".into()],
            ..acl.clone()
        };
        assert!(!stale(&used, u64::MAX));
        let theirs = NetworkAcl {
            name: "web".into(),
            ..acl
        };
        assert!(!stale(&theirs, u64::MAX));
        assert_eq!(new_name().len(), 16);
    }
}

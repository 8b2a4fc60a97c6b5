//! Policy -> nftables script. Pure: builds the text `nft -f -` applies as one
//! atomic transaction; never runs anything.
//!
//! Layout (cci's own tables, nothing else is touched):
//! - `table bridge cci` sees every frame a container sends, keyed on its
//!   host-side port (the NIC's fixed `host_name`). Its `input` hook gets what
//!   goes up to the host (to the host itself or to be routed out): a verdict
//!   map sends each guarded port to its own chain (`out_PORT`) holding the
//!   mode's policy. Its `forward` hook gets frames switched to another port of
//!   the bridge (other containers): dropped from and to isolated ports.
//! - `table inet cci` catches traffic to the host's own addresses (any local
//!   address: bridge gateway, uplink...), which the bridge cannot tell apart
//!   from routed traffic: the port chain tags what it lets up with a mark bit,
//!   and a prerouting chain drops tagged packets whose destination is local
//!   (`fib daddr type local`) unless they answer a connection the host opened.
//!   The bit is cleared there, before routing, so nothing else ever sees it.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{Mode, PortName};

/// The mark bit that tags "from a guarded container, check for a local
/// destination" between the bridge and the inet prerouting hook.
pub const MARK: u32 = 0x0cc1_0000;

/// Destinations restricted and allowlist modes never reach (IPv4): "this"
/// network, private ranges, shared address space (CGNAT), loopback,
/// link-local (cloud metadata), IETF protocol assignments, benchmarking,
/// multicast and reserved.
pub const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// The IPv6 equivalents: unspecified, loopback, IPv4-mapped, local-use
/// NAT64, discard, unique local (ULA), link-local, multicast.
pub const BLOCKED_V6: &[&str] = &[
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The host's side of the bridge the containers sit on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bridge {
    /// The bridge's IPv4 address (DHCP and DNS server), if it has one.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address, if IPv6 is configured on it.
    pub v6: Option<Ipv6Addr>,
}

/// What one container may reach: its port, mode, and (allowlist) the
/// addresses admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// Host-side interface of the container's NIC.
    pub port: PortName,
    /// Its mode.
    pub mode: Mode,
    /// The bridge it sits on.
    pub bridge: Bridge,
    /// Allowlist mode: IPv4 destinations admitted.
    pub allow4: Vec<Ipv4Net>,
    /// Allowlist mode: IPv6 destinations admitted.
    pub allow6: Vec<Ipv6Net>,
}

/// Restricted mode: the ranges a policy unblocks — private networks (`lan`)
/// and the cloud metadata endpoint (`metadata`).
pub fn exempt(lan: bool, metadata: bool) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4: Vec<&str> = Vec::new();
    let mut v6: Vec<&str> = Vec::new();
    if lan {
        v4.extend([
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
        ]);
        v6.push("fc00::/7");
    }
    if metadata {
        v4.push("169.254.169.254/32");
        v6.push("fd00:ec2::254/128");
    }
    (
        v4.iter().filter_map(|n| n.parse().ok()).collect(),
        v6.iter().filter_map(|n| n.parse().ok()).collect(),
    )
}

/// The tables, sets and hook chains every script starts with. Idempotent:
/// `add` of what exists is a no-op, and the hook chains are flushed and
/// refilled, so a deleted or damaged skeleton comes back whole.
pub fn skeleton() -> String {
    let mut s = String::new();
    let b = "bridge cci";
    let _ = writeln!(s, "add table {b}");
    let _ = writeln!(s, "add map {b} out_ports {{ type ifname : verdict ; }}");
    let _ = writeln!(s, "add set {b} isolated {{ type ifname ; }}");
    let _ = writeln!(
        s,
        "add set {b} blocked4 {{ type ipv4_addr ; flags interval ; auto-merge ; }}"
    );
    let _ = writeln!(
        s,
        "add set {b} blocked6 {{ type ipv6_addr ; flags interval ; auto-merge ; }}"
    );
    let _ = writeln!(s, "flush set {b} blocked4");
    let _ = writeln!(
        s,
        "add element {b} blocked4 {{ {} }}",
        BLOCKED_V4.join(", ")
    );
    let _ = writeln!(s, "flush set {b} blocked6");
    let _ = writeln!(
        s,
        "add element {b} blocked6 {{ {} }}",
        BLOCKED_V6.join(", ")
    );
    let _ = writeln!(s, "add counter {b} between_slots");
    let _ = writeln!(
        s,
        "add chain {b} from_containers {{ type filter hook input priority -205 ; policy accept ; }}"
    );
    let _ = writeln!(s, "flush chain {b} from_containers");
    let _ = writeln!(s, "add rule {b} from_containers iifname vmap @out_ports");
    let _ = writeln!(
        s,
        "add chain {b} between_ports {{ type filter hook forward priority -205 ; policy accept ; }}"
    );
    let _ = writeln!(s, "flush chain {b} between_ports");
    for dir in ["iifname", "oifname"] {
        let _ = writeln!(
            s,
            "add rule {b} between_ports {dir} @isolated counter name between_slots drop"
        );
    }

    // Where tagged packets are checked depends on br_netfilter: with it the
    // inet prerouting hook runs before the bridge's input hook (so only
    // input and forward see the tag); without it, after (prerouting sees the
    // tag, before routing). Check in both places and clear the tag wherever
    // it is seen first.
    let i = "inet cci";
    let _ = writeln!(s, "add table {i}");
    let _ = writeln!(s, "add counter {i} to_host");
    for (chain, hook) in [
        ("tagged_pre", "prerouting"),
        ("tagged_in", "input"),
        ("tagged_fwd", "forward"),
    ] {
        let _ = writeln!(
            s,
            "add chain {i} {chain} {{ type filter hook {hook} priority -160 ; policy accept ; }}"
        );
        let _ = writeln!(s, "flush chain {i} {chain}");
    }
    for chain in ["to_host_check", "local_check"] {
        let _ = writeln!(s, "add chain {i} {chain}");
        let _ = writeln!(s, "flush chain {i} {chain}");
    }
    let tagged = format!("meta mark & {MARK:#010x} == {MARK:#010x}");
    let clear = format!("meta mark set meta mark & {:#010x}", !MARK);
    let _ = writeln!(s, "add rule {i} tagged_pre {tagged} jump to_host_check");
    let _ = writeln!(s, "add rule {i} tagged_in {tagged} jump local_check");
    let _ = writeln!(s, "add rule {i} tagged_fwd {tagged} {clear}");
    // Before routing: drop what is addressed to this host.
    let _ = writeln!(s, "add rule {i} to_host_check {clear}");
    let _ = writeln!(s, "add rule {i} to_host_check ct direction reply accept");
    let _ = writeln!(
        s,
        "add rule {i} to_host_check fib daddr type local counter name to_host drop"
    );
    // Local delivery: everything here is addressed to this host.
    let _ = writeln!(s, "add rule {i} local_check {clear}");
    let _ = writeln!(s, "add rule {i} local_check ct direction reply accept");
    let _ = writeln!(s, "add rule {i} local_check counter name to_host drop");
    s
}

/// Names of one port's objects.
struct Names {
    chain: String,
    counter: String,
    allow4: String,
    allow6: String,
}

fn names(port: &PortName) -> Names {
    Names {
        chain: format!("out_{port}"),
        counter: format!("drop_{port}"),
        allow4: format!("allow4_{port}"),
        allow6: format!("allow6_{port}"),
    }
}

/// The script that installs (or replaces) one container's rules, skeleton
/// included: after it, the port is guarded by exactly `r`.
pub fn install(r: &PortRules) -> String {
    let mut s = skeleton();
    let b = "bridge cci";
    let p = r.port.as_str();
    let n = names(&r.port);
    let _ = writeln!(s, "add counter {b} {}", n.counter);
    let _ = writeln!(s, "add chain {b} {}", n.chain);
    let _ = writeln!(s, "flush chain {b} {}", n.chain);
    let rule = |s: &mut String, body: &str| {
        let _ = writeln!(s, "add rule {b} {} {body}", n.chain);
    };
    let drop = format!("counter name {} drop", n.counter);
    if r.mode != Mode::Open {
        // What the container needs from the bridge: address resolution (the
        // last rule of an allowlist drops everything else, ARP included),
        // DHCP, neighbour discovery, and DNS — except in allowlist mode, which
        // gets no DNS at all (its names are in its /etc/hosts).
        let dns = r.mode != Mode::Allowlist;
        rule(&mut s, "ether type arp accept");
        rule(&mut s, "udp dport 67 accept");
        if let (Some(v4), true) = (r.bridge.v4, dns) {
            rule(
                &mut s,
                &format!("ip daddr {v4} meta l4proto {{ tcp, udp }} th dport 53 accept"),
            );
        }
        match r.bridge.v6 {
            Some(v6) => {
                rule(
                    &mut s,
                    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
                );
                rule(&mut s, "udp dport 547 accept");
                if dns {
                    rule(
                        &mut s,
                        &format!("ip6 daddr {v6} meta l4proto {{ tcp, udp }} th dport 53 accept"),
                    );
                }
            }
            None => rule(&mut s, &format!("ether type ip6 {drop}")),
        }
        // Everything else going up gets the local-destination check.
        rule(&mut s, &format!("meta mark set meta mark | {MARK:#010x}"));
        if let Some(v4) = r.bridge.v4 {
            rule(&mut s, &format!("ip daddr {v4} accept"));
        }
        if let Some(v6) = r.bridge.v6 {
            rule(&mut s, &format!("ip6 daddr {v6} accept"));
        }
    }
    match r.mode {
        Mode::Open => rule(&mut s, "accept"),
        Mode::Restricted => {
            // Ranges the configuration unblocked (LAN, metadata endpoint).
            if !r.allow4.is_empty() {
                let list: Vec<String> = r.allow4.iter().map(|n| n.to_string()).collect();
                rule(
                    &mut s,
                    &format!("ip daddr {{ {} }} accept", list.join(", ")),
                );
            }
            if !r.allow6.is_empty() {
                let list: Vec<String> = r.allow6.iter().map(|n| n.to_string()).collect();
                rule(
                    &mut s,
                    &format!("ip6 daddr {{ {} }} accept", list.join(", ")),
                );
            }
            rule(&mut s, &format!("ip daddr @blocked4 {drop}"));
            rule(&mut s, &format!("ip6 daddr @blocked6 {drop}"));
        }
        Mode::Allowlist => {
            // No DNS (or DNS over TLS) to any server, allowed or not.
            rule(
                &mut s,
                &format!("meta l4proto {{ tcp, udp }} th dport {{ 53, 853 }} {drop}"),
            );
            let _ = writeln!(
                s,
                "add set {b} {} {{ type ipv4_addr ; flags interval ; auto-merge ; }}",
                n.allow4
            );
            let _ = writeln!(
                s,
                "add set {b} {} {{ type ipv6_addr ; flags interval ; auto-merge ; }}",
                n.allow6
            );
            s.push_str(&fill_allow(r));
            rule(
                &mut s,
                &format!("ip daddr @{} meta l4proto {{ tcp, udp }} accept", n.allow4),
            );
            rule(
                &mut s,
                &format!("ip6 daddr @{} meta l4proto {{ tcp, udp }} accept", n.allow6),
            );
            rule(&mut s, &drop);
        }
    }
    let _ = writeln!(
        s,
        "add element {b} out_ports {{ \"{p}\" : jump {} }}",
        n.chain
    );
    if r.mode == Mode::Open {
        // A port that was isolated before (an earlier mode) is no longer.
        let _ = writeln!(s, "add element {b} isolated {{ \"{p}\" }}");
        let _ = writeln!(s, "delete element {b} isolated {{ \"{p}\" }}");
    } else {
        let _ = writeln!(s, "add element {b} isolated {{ \"{p}\" }}");
    }
    s
}

/// Swap an allowlist port's admitted addresses in one step (the sets must exist).
pub fn fill_allow(r: &PortRules) -> String {
    let n = names(&r.port);
    let mut s = String::new();
    refill(
        &mut s,
        &n.allow4,
        r.allow4.iter().map(|n| n.trunc().to_string()),
    );
    refill(
        &mut s,
        &n.allow6,
        r.allow6.iter().map(|n| n.trunc().to_string()),
    );
    s
}

/// Empty `set` and fill it with `items` (no element list when there are none).
fn refill(s: &mut String, set: &str, items: impl Iterator<Item = String>) {
    let _ = writeln!(s, "flush set bridge cci {set}");
    let list: Vec<String> = items.collect();
    if !list.is_empty() {
        let _ = writeln!(s, "add element bridge cci {set} {{ {} }}", list.join(", "));
    }
}

/// The script that removes every object of `port`, whether or not it (or
/// the table) exists: each is added first, then deleted, in one transaction.
pub fn remove(port: &PortName) -> String {
    let mut s = skeleton();
    let b = "bridge cci";
    let p = port.as_str();
    let n = names(port);
    let _ = writeln!(s, "add chain {b} {}", n.chain);
    let _ = writeln!(s, "add counter {b} {}", n.counter);
    for (set, kind) in [(&n.allow4, "ipv4_addr"), (&n.allow6, "ipv6_addr")] {
        let _ = writeln!(s, "add set {b} {set} {{ type {kind} ; flags interval ; }}");
    }
    let _ = writeln!(
        s,
        "add element {b} out_ports {{ \"{p}\" : jump {} }}",
        n.chain
    );
    let _ = writeln!(s, "add element {b} isolated {{ \"{p}\" }}");
    let _ = writeln!(s, "delete element {b} out_ports {{ \"{p}\" }}");
    let _ = writeln!(s, "delete element {b} isolated {{ \"{p}\" }}");
    let _ = writeln!(s, "flush chain {b} {}", n.chain);
    let _ = writeln!(s, "delete chain {b} {}", n.chain);
    let _ = writeln!(s, "delete counter {b} {}", n.counter);
    let _ = writeln!(s, "delete set {b} {}", n.allow4);
    let _ = writeln!(s, "delete set {b} {}", n.allow6);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> PortName {
        PortName::parse("cci0123456789ab").unwrap()
    }

    fn rules(mode: Mode) -> PortRules {
        PortRules {
            port: port(),
            mode,
            bridge: Bridge {
                v4: Some("10.1.2.1".parse().unwrap()),
                v6: None,
            },
            allow4: vec!["198.51.100.7/32".parse().unwrap()],
            allow6: vec![],
        }
    }

    fn chain_rules(script: &str) -> Vec<&str> {
        script
            .lines()
            .filter_map(|l| l.strip_prefix("add rule bridge cci out_cci0123456789ab "))
            .collect()
    }

    #[test]
    fn restricted_lets_dhcp_and_dns_to_the_bridge_then_blocks_private_ranges() {
        let s = install(&rules(Mode::Restricted));
        let r = chain_rules(&s);
        assert_eq!(r[0], "ether type arp accept");
        assert_eq!(r[1], "udp dport 67 accept");
        assert!(r[2].starts_with("ip daddr 10.1.2.1 ") && r[2].ends_with("th dport 53 accept"));
        assert_eq!(
            r[3],
            "ether type ip6 counter name drop_cci0123456789ab drop"
        );
        let mark = r
            .iter()
            .position(|l| l.starts_with("meta mark set"))
            .unwrap();
        let bridge = r
            .iter()
            .position(|l| *l == "ip daddr 10.1.2.1 accept")
            .unwrap();
        assert!(
            mark < bridge,
            "the local check must apply to the bridge address"
        );
        assert!(r.contains(&"ip daddr @blocked4 counter name drop_cci0123456789ab drop"));
        assert!(s.contains("add element bridge cci isolated { \"cci0123456789ab\" }"));
        assert!(!s.contains("delete"));
        assert!(s.contains("10.0.0.0/8") && s.contains("169.254.0.0/16") && s.contains("fc00::/7"));
    }

    #[test]
    fn allowlist_drops_foreign_dns_admits_only_its_set_and_ends_in_drop() {
        let s = install(&rules(Mode::Allowlist));
        let r = chain_rules(&s);
        let dns = r
            .iter()
            .position(|l| l.contains("th dport { 53, 853 }"))
            .unwrap();
        let allow = r
            .iter()
            .position(|l| l.starts_with("ip daddr @allow4_"))
            .unwrap();
        assert!(dns < allow);
        assert_eq!(*r.last().unwrap(), "counter name drop_cci0123456789ab drop");
        assert_eq!(
            r[0], "ether type arp accept",
            "the gateway must stay resolvable"
        );
        assert!(
            !r.iter().any(|l| l.contains("dport 53 accept")),
            "no DNS at all"
        );
        assert!(s.contains("add element bridge cci allow4_cci0123456789ab { 198.51.100.7/32 }"));
        // No IPv6 addresses: the set is flushed and left empty (no empty element list).
        assert!(s.contains("flush set bridge cci allow6_cci0123456789ab"));
        assert!(!s.contains("allow6_cci0123456789ab { }"));
    }

    #[test]
    fn open_accepts_and_is_not_isolated() {
        let s = install(&rules(Mode::Open));
        assert_eq!(chain_rules(&s), vec!["accept"]);
        assert!(s.contains("delete element bridge cci isolated { \"cci0123456789ab\" }"));
    }

    #[test]
    fn ipv6_bridge_admits_neighbour_discovery_before_blocking() {
        let mut r = rules(Mode::Restricted);
        r.bridge.v6 = Some("fd42::1".parse().unwrap());
        let s = install(&r);
        let r = chain_rules(&s);
        assert!(
            r.iter()
                .any(|l| l.starts_with("icmpv6 type { nd-router-solicit"))
        );
        assert!(r.contains(&"ip6 daddr fd42::1 accept"));
        assert!(!r.iter().any(|l| l.starts_with("ether type ip6")));
    }

    #[test]
    fn restricted_exemptions_come_before_the_blocked_ranges() {
        let mut r = rules(Mode::Restricted);
        (r.allow4, r.allow6) = exempt(false, true);
        let s = install(&r);
        let lines = chain_rules(&s);
        let accept = lines
            .iter()
            .position(|l| *l == "ip daddr { 169.254.169.254/32 } accept")
            .unwrap();
        let blocked = lines.iter().position(|l| l.contains("@blocked4")).unwrap();
        assert!(accept < blocked);
        assert!(!s.contains("10.0.0.0/8 } accept"));
        let (v4, _) = exempt(true, false);
        assert!(v4.iter().any(|n| n.to_string() == "192.168.0.0/16"));
        assert_eq!(exempt(false, false), (vec![], vec![]));
    }

    #[test]
    fn removal_adds_then_deletes_every_object_of_exactly_that_port() {
        let s = remove(&port());
        for obj in ["chain", "counter", "set"] {
            assert!(s.contains(&format!("delete {obj} bridge cci ")));
        }
        let deletes: Vec<&str> = s.lines().filter(|l| l.starts_with("delete")).collect();
        assert_eq!(deletes.len(), 6);
        assert!(deletes.iter().all(|l| l.contains("cci0123456789ab")));
    }

    #[test]
    fn tag_is_checked_and_cleared_in_every_inet_hook() {
        let s = skeleton();
        assert!(s.contains("meta mark set meta mark & 0xf33effff"));
        for hook in ["prerouting", "input", "forward"] {
            assert!(s.contains(&format!("hook {hook} priority -160")), "{hook}");
        }
    }
}

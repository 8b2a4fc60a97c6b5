//! Unit tests of the nft scripts (text only; nothing runs).

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
    assert_eq!(
        r[0],
        "ether type != { arp, ip, ip6 } counter name drop_cci0123456789ab drop"
    );
    assert_eq!(r[1], "ether type arp accept");
    assert_eq!(
        r[2],
        "ip daddr { 10.1.2.1, 255.255.255.255 } udp sport 68 udp dport 67 accept"
    );
    assert!(r[3].starts_with("ip daddr 10.1.2.1 ") && r[3].ends_with("th dport 53 accept"));
    assert_eq!(
        r[4],
        "ether type ip6 counter name drop_cci0123456789ab drop"
    );
    assert_eq!(*r.last().unwrap(), "accept", "the chain ends in a verdict");
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
        r[1], "ether type arp accept",
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
    assert!(r.contains(
        &"ip6 daddr { ff02::/16, fe80::/10, fd42::1 } icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept"
    ));
    assert!(r.contains(&"ip6 daddr { ff02::1:2, fd42::1 } udp sport 546 udp dport 547 accept"));
    assert!(r.contains(&"ip6 daddr fd42::1 accept"));
    assert!(!r.iter().any(|l| l.starts_with("ether type ip6")));
}

#[test]
fn dhcp_and_neighbour_discovery_reach_only_the_bridge_and_link_groups() {
    for mode in [Mode::Restricted, Mode::Allowlist] {
        for v6 in [None, Some("fd42::1".parse().unwrap())] {
            let mut r = rules(mode);
            r.bridge.v6 = v6;
            let s = install(&r);
            for l in chain_rules(&s) {
                let unbound = ["dport 67", "dport 547", "icmpv6"]
                    .iter()
                    .any(|k| l.contains(k) && !l.starts_with("ip"));
                assert!(!unbound, "{mode}: {l:?} is not bound to a destination");
            }
            if v6.is_none() {
                // No IPv6 exception at all on a v4-only bridge: IPv6 is dropped.
                assert!(!s.contains("547") && !s.contains("icmpv6"));
            }
        }
    }
}

#[test]
fn a_bridge_without_ipv4_gets_no_dhcp_exception() {
    let mut r = rules(Mode::Restricted);
    r.bridge.v4 = None;
    assert!(!install(&r).contains("dport 67"));
}

#[test]
fn a_port_missing_from_the_map_is_dropped_both_ways() {
    let s = skeleton();
    let vmap = s
        .find("add rule bridge cci from_containers iifname vmap @out_ports")
        .unwrap();
    let tail = s
        .find("add rule bridge cci from_containers iifname \"cci*\" counter name unguarded drop")
        .unwrap();
    assert!(vmap < tail);
    for dir in ["iifname", "oifname"] {
        assert!(s.contains(&format!(
            "add rule bridge cci between_ports {dir} \"cci*\" {dir} != @out_ports counter name unguarded drop"
        )));
    }
    // With the tail in place every port chain must end in a verdict.
    for mode in [Mode::Restricted, Mode::Allowlist, Mode::Open] {
        let s = install(&rules(mode));
        let last = *chain_rules(&s).last().unwrap();
        assert!(
            last.ends_with("accept") || last.ends_with("drop"),
            "{mode}: {last}"
        );
    }
}

#[test]
fn nat64_is_blocked() {
    assert!(BLOCKED_V6.contains(&"64:ff9b::/96"));
    assert!(install(&rules(Mode::Restricted)).contains("64:ff9b::/96"));
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
    assert_eq!(deletes.len(), 8);
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

#[test]
fn proxy_mode_reaches_the_proxy_untagged_and_nothing_else() {
    let s = install(&rules(Mode::Proxy));
    let r = chain_rules(&s);
    let proxy = r
        .iter()
        .position(|l| *l == "ip daddr 10.1.2.1 tcp dport 47128 accept")
        .unwrap_or_else(|| panic!("{r:?}"));
    let mark = r
        .iter()
        .position(|l| l.starts_with("meta mark set"))
        .unwrap();
    assert!(proxy < mark, "the proxy is reached before the tag: {r:?}");
    assert!(
        !r.iter().any(|l| l.contains("dport 53 accept")),
        "no DNS: {r:?}"
    );
    assert!(!s.contains("@allow4"), "no addresses admitted");
    // Every port chain ends in a drop, after remembering what was tried.
    assert_eq!(
        r.last().copied(),
        Some("counter name drop_cci0123456789ab drop")
    );
    assert!(s.contains("update @seen4_cci0123456789ab { ip daddr . meta l4proto . th dport }"));
    assert!(s.contains("update @seen6_cci0123456789ab { ip6 daddr . meta l4proto . th dport }"));
}

//! Policy -> nftables script. Pure: builds the text `nft -f -` applies as one
//! atomic transaction; never runs anything.
//!
//! Layout (cci's own tables, nothing else is touched):
//! - `table bridge cci` sees every frame a container sends, keyed on its
//!   host-side port (the NIC's fixed `host_name`). Its `input` hook gets what
//!   goes up to the host (to the host itself or to be routed out): a verdict
//!   map sends each guarded port to its own chain (`out_PORT`) holding the
//!   mode's policy, which always ends in a verdict. Its `forward` hook gets
//!   frames switched to another port of the bridge (other containers):
//!   dropped from and to isolated ports. Both fail closed: a frame from (or
//!   to) a `cci*` port that is not in the map is dropped (counter
//!   `unguarded`), so a lost map entry blocks a container instead of
//!   opening it.
//! - `table inet cci` catches traffic to the host's own addresses (any local
//!   address: bridge gateway, uplink...), which the bridge cannot tell apart
//!   from routed traffic: the port chain tags what it lets up with a mark bit,
//!   and a prerouting chain drops tagged packets whose destination is local
//!   (`fib daddr type local`) unless they answer a connection the host opened.
//!   The bit is cleared there, before routing, so nothing else ever sees it.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{Mode, PORT_PREFIX, PortName};

/// The mark bit that tags "from a guarded container, check for a local
/// destination" between the bridge and the inet prerouting hook.
pub const MARK: u32 = 0x0cc1_0000;

// Destinations restricted and allowlist modes never reach (IPv4, IPv6):
// owned by the configuration, whose trust checks refuse them too.
pub use crate::config::{BLOCKED_V4, BLOCKED_V6};

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
    // Fail closed: a cci port missing from the map (its entry deleted, or
    // never made) is dropped, not let through by the chain's policy.
    let _ = writeln!(s, "add counter {b} unguarded");
    let _ = writeln!(
        s,
        "add rule {b} from_containers iifname \"{PORT_PREFIX}*\" counter name unguarded drop"
    );
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
        // Between containers too, a cci port without rules is dropped.
        let _ = writeln!(
            s,
            "add rule {b} between_ports {dir} \"{PORT_PREFIX}*\" {dir} != @out_ports counter name unguarded drop"
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

/// How many destinations a proxy-mode port's dropped-traffic sets hold.
pub const SEEN_SIZE: u32 = 512;

/// The prefixes of a proxy-mode port's dropped-traffic sets.
pub const SEEN_PREFIXES: [&str; 2] = ["seen4_", "seen6_"];

/// Names of one port's objects.
struct Names {
    chain: String,
    counter: String,
    allow4: String,
    allow6: String,
    seen4: String,
    seen6: String,
}

fn names(port: &PortName) -> Names {
    Names {
        chain: format!("out_{port}"),
        counter: format!("drop_{port}"),
        allow4: format!("allow4_{port}"),
        allow6: format!("allow6_{port}"),
        seen4: format!("seen4_{port}"),
        seen6: format!("seen6_{port}"),
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
        for body in bridge_services(r, &drop) {
            rule(&mut s, &body);
        }
        // Proxy mode: cci's proxy on the bridge, the one local destination
        // let through untagged (nothing else of the host).
        if r.mode == Mode::Proxy {
            let port = super::egress::PORT;
            if let Some(v4) = r.bridge.v4 {
                rule(&mut s, &format!("ip daddr {v4} tcp dport {port} accept"));
            }
            if let Some(v6) = r.bridge.v6 {
                rule(&mut s, &format!("ip6 daddr {v6} tcp dport {port} accept"));
            }
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
            // Every port chain ends in a verdict: falling back into
            // `from_containers` would meet its final drop.
            rule(&mut s, "accept");
        }
        // Nothing but the proxy (above): no DNS, no address at all. What
        // it tries anyway is remembered (bounded, an hour) for
        // `cci network log`.
        Mode::Proxy => {
            for (set, kind, addr) in [
                (&n.seen4, "ipv4_addr", "ip daddr"),
                (&n.seen6, "ipv6_addr", "ip6 daddr"),
            ] {
                let _ = writeln!(
                    s,
                    "add set {b} {set} {{ type {kind} . inet_proto . inet_service ; flags dynamic,timeout ; timeout 1h ; size {SEEN_SIZE} ; counter ; }}"
                );
                rule(
                    &mut s,
                    &format!(
                        "meta l4proto {{ tcp, udp }} update @{set} {{ {addr} . meta l4proto . th dport }}"
                    ),
                );
            }
            rule(&mut s, &drop);
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

/// What a guarded (not open) container needs from the bridge, before its
/// mode's policy: only the frame types IP needs (ARP, IPv4, IPv6; anything
/// else is dropped), DHCP to the bridge or the broadcast address, on an IPv6
/// bridge neighbour discovery and DHCPv6 to the link's multicast groups or
/// the bridge (IPv6 is dropped outright on a bridge without it), and DNS to
/// the bridge — except in allowlist mode, which gets no DNS at all (its
/// names are in its /etc/hosts), and proxy mode (the proxy resolves). None of these reaches any other address.
fn bridge_services(r: &PortRules, drop: &str) -> Vec<String> {
    let dns = !matches!(r.mode, Mode::Allowlist | Mode::Proxy);
    let mut out = vec![
        format!("ether type != {{ arp, ip, ip6 }} {drop}"),
        "ether type arp accept".to_string(),
    ];
    if let Some(v4) = r.bridge.v4 {
        out.push(format!(
            "ip daddr {{ {v4}, 255.255.255.255 }} udp sport 68 udp dport 67 accept"
        ));
        if dns {
            out.push(format!(
                "ip daddr {v4} meta l4proto {{ tcp, udp }} th dport 53 accept"
            ));
        }
    }
    match r.bridge.v6 {
        Some(v6) => {
            out.push(format!(
                "ip6 daddr {{ ff02::/16, fe80::/10, {v6} }} icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept"
            ));
            out.push(format!(
                "ip6 daddr {{ ff02::1:2, {v6} }} udp sport 546 udp dport 547 accept"
            ));
            if dns {
                out.push(format!(
                    "ip6 daddr {v6} meta l4proto {{ tcp, udp }} th dport 53 accept"
                ));
            }
        }
        None => out.push(format!("ether type ip6 {drop}")),
    }
    out
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
    for (set, kind) in [(&n.seen4, "ipv4_addr"), (&n.seen6, "ipv6_addr")] {
        let _ = writeln!(
            s,
            "add set {b} {set} {{ type {kind} . inet_proto . inet_service ; flags dynamic,timeout ; timeout 1h ; size {SEEN_SIZE} ; counter ; }}"
        );
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
    let _ = writeln!(s, "delete set {b} {}", n.seen4);
    let _ = writeln!(s, "delete set {b} {}", n.seen6);
    s
}

#[cfg(test)]
mod tests;

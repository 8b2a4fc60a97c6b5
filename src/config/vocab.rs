//! The vocabulary the configuration validates: agent names, the kernel
//! interfaces a sandbox goes without, the default image alias, the refresh
//! interval, the blocked address ranges and the shape of a protected path.
//! Owned here so the configuration depends on no other cci module; the
//! modules that act on these (`sandbox`, `image`, `network`) import them from
//! here and re-export them where their callers expect them.

use std::path::{Component, Path};

/// Every agent name cci knows, in the order of `sandbox::AGENTS`; the first
/// is the default.
pub const AGENT_NAMES: &[&str] = &["claude", "opencode", "codex", "aider"];

/// Kernel interfaces a sandbox goes without unless the configuration opts
/// back in (`[incus] allow_syscalls`): each name stands for its system calls,
/// which answer ENOSYS inside (so programs take their fallback paths).
pub const KERNEL_DENY: &[(&str, &[&str])] = &[
    (
        "io_uring",
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
    ),
    ("bpf", &["bpf"]),
    ("userfaultfd", &["userfaultfd"]),
    ("keyctl", &["keyctl", "add_key", "request_key"]),
    ("perf_event_open", &["perf_event_open"]),
];

/// The alias of the default image sessions start from.
pub const DEFAULT_ALIAS: &str = "cci";

/// Allowlists are resolved again this often unless configured otherwise.
pub const DEFAULT_REFRESH_MINUTES: f64 = 30.0;

/// A refresh interval in minutes: positive and finite (fractions allowed).
pub fn parse_minutes(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0 && *m <= 7.0 * 24.0 * 60.0)
}

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

/// The IPv6 equivalents: unspecified, loopback, IPv4-mapped, NAT64 (the
/// well-known prefix: a DNS64 answer for a private IPv4 address), local-use
/// NAT64, discard, unique local (ULA), link-local, multicast.
pub const BLOCKED_V6: &[&str] = &[
    "::/96",
    "2001::/32",
    "2002::/16",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Whether an address may be reached by name: not private, loopback,
/// link-local (metadata), multicast, NAT64 (`64:ff9b::/96`, where a DNS64
/// answer can hide any IPv4 address) or otherwise special (an IPv4-mapped
/// IPv6 address is judged as its IPv4 address).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let blocked: &[&str] = if ip.is_ipv4() { BLOCKED_V4 } else { BLOCKED_V6 };
    !blocked
        .iter()
        .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
        .any(|n| n.contains(&ip))
}

/// A configured protected path is plain and relative (checked for every
/// configuration layer).
pub fn protected_path_ok(rel: &str) -> Result<(), String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{rel:?} must be a path inside the workspace: relative, without `.` or `..`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_paths_are_plain_and_relative() {
        for bad in ["/etc", "../x", "a/../b", "./a", ""] {
            assert!(protected_path_ok(bad).is_err(), "{bad}");
        }
        for good in [".envrc", "a/b", ".git/hooks"] {
            assert!(protected_path_ok(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn minutes_are_positive_finite_and_at_most_a_week() {
        assert_eq!(parse_minutes(" 1.5 "), Some(1.5));
        assert_eq!(parse_minutes("10080"), Some(10080.0));
        for bad in ["0", "-1", "NaN", "inf", "10081", "x", ""] {
            assert_eq!(parse_minutes(bad), None, "{bad}");
        }
    }
}

//! A kept (persistent) container asked to run under another policy than the
//! one it was made with: [`compare`] decides (pure), [`reapply`] carries a
//! stricter one out. A looser one is never applied silently.

use std::net::IpAddr;

use super::allow::{Entry, is_public};
use super::{Error, Mode, Policy, PolicyBackend, keys};
use crate::incus::Client;

/// How a requested policy relates to the one a container records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The same policy.
    Same,
    /// Reaches nothing the recorded one does not.
    Stricter,
    /// Would reach something the recorded one does not.
    Looser,
}

/// What `entry` may reach beyond the public internet (a literal address or
/// range that is not all public).
fn private_literal(entry: &Entry) -> bool {
    match entry {
        Entry::Domain(_) => false,
        Entry::Net(n) => !is_public(n.network()) || !is_public(n.broadcast()),
    }
}

/// Whether proxy rule `r` names addresses rather than names.
fn address_rule(r: &str) -> bool {
    matches!(
        crate::proxy::Rule::parse(r, true).map(|r| r.target),
        Ok(crate::proxy::rules::Target::Net(_))
    )
}

/// How `requested` compares with `recorded`.
pub fn compare(recorded: &Policy, requested: &Policy) -> Change {
    if recorded == requested {
        return Change::Same;
    }
    let not_looser = match (recorded.mode, requested.mode) {
        (Mode::Open, _) => true,
        (_, Mode::Open) => false,
        (Mode::Restricted, Mode::Restricted) => {
            (!requested.lan || recorded.lan) && (!requested.metadata || recorded.metadata)
        }
        (Mode::Allowlist, Mode::Restricted) => false,
        (Mode::Restricted, Mode::Allowlist) => {
            !requested.allow.iter().any(private_literal) || (recorded.lan && recorded.metadata)
        }
        (Mode::Allowlist, Mode::Allowlist) => {
            let same_dns = requested.dns_servers == recorded.dns_servers
                || requested.allow.iter().all(|e| matches!(e, Entry::Net(_)));
            same_dns && requested.allow.iter().all(|e| recorded.allow.contains(e))
        }
        // By name through the proxy: private addresses only by an address
        // rule.
        (Mode::Restricted, Mode::Proxy) => {
            !requested.rules.iter().any(|r| address_rule(r)) || (recorded.lan && recorded.metadata)
        }
        (Mode::Proxy, Mode::Proxy) => {
            requested.rules.iter().all(|r| recorded.rules.contains(r))
                && (!requested.ask_unknown || recorded.ask_unknown)
        }
        // Names resolved ahead and names decided per connection reach
        // different things: neither is within the other.
        (Mode::Proxy, _) | (_, Mode::Proxy) => false,
    };
    if not_looser {
        Change::Stricter
    } else {
        Change::Looser
    }
}

/// The `user.cci.network*` config keys that record `policy` on an instance
/// (an empty value removes a key).
pub fn record(policy: &Policy) -> Vec<(&'static str, String)> {
    let join = |items: Vec<String>| items.join(",");
    let allowlist = policy.mode == Mode::Allowlist;
    let restricted = policy.mode == Mode::Restricted;
    let proxy = policy.mode == Mode::Proxy;
    vec![
        (keys::MODE, policy.mode.as_str().to_string()),
        (
            keys::ALLOW,
            if proxy {
                join(policy.rules.clone())
            } else {
                join(policy.allow.iter().map(Entry::to_string).collect())
            },
        ),
        (
            keys::ON_UNKNOWN,
            if proxy && policy.ask_unknown {
                "ask"
            } else {
                ""
            }
            .into(),
        ),
        (
            keys::REFRESH,
            if allowlist {
                policy.refresh_minutes.to_string()
            } else {
                String::new()
            },
        ),
        (
            keys::DNS,
            if allowlist || proxy {
                join(policy.dns_servers.iter().map(IpAddr::to_string).collect())
            } else {
                String::new()
            },
        ),
        (
            keys::LAN,
            if restricted && policy.lan { "open" } else { "" }.into(),
        ),
        (
            keys::METADATA,
            if restricted && policy.metadata {
                "open"
            } else {
                ""
            }
            .into(),
        ),
    ]
}

/// Record `policy` on the guarded container `name` and put its rules (and,
/// in allowlist mode, its `/etc/hosts`) in force, running or not.
pub async fn reapply(
    client: &Client,
    fw: &dyn PolicyBackend,
    name: &str,
    policy: &Policy,
) -> Result<(), Error> {
    let mut config: serde_json::Map<String, serde_json::Value> = record(policy)
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    // Into proxy mode: its tools are pointed at the proxy too.
    let bridge = if policy.mode == Mode::Proxy {
        let (instance, _) = client.instance(name).await?;
        let bridge = super::guard::bridge_of_instance(client, &instance).await?;
        for (k, v) in super::egress::environment(&bridge) {
            config.insert(k, serde_json::Value::String(v));
        }
        Some(bridge)
    } else {
        None
    };
    // Empty values read as unset (see `Policy::of`).
    client
        .update_instance(name, &serde_json::json!({ "config": config }), None)
        .await?;
    let (instance, _) = client.instance(name).await?;
    super::ensure(client, fw, &instance).await?;
    if policy.mode == Mode::Allowlist
        && let Some(port) = super::port_of(&instance)
    {
        super::hosts::write(client, name, &super::allow::load_cache(&port)).await?;
    }
    if let Some(bridge) = bridge {
        use super::guard::Daemon;
        client.write_apt_conf(name, &bridge).await?;
        super::egress::register(client, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: Mode, allow: &[&str]) -> Policy {
        Policy {
            mode,
            allow: allow.iter().map(|a| Entry::parse(a).unwrap()).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn modes_order_by_what_they_reach() {
        use Change::*;
        let open = policy(Mode::Open, &[]);
        let restricted = policy(Mode::Restricted, &[]);
        let allow = policy(Mode::Allowlist, &["example.com"]);
        assert_eq!(compare(&open, &restricted), Stricter);
        assert_eq!(compare(&open, &allow), Stricter);
        assert_eq!(compare(&restricted, &allow), Stricter);
        assert_eq!(compare(&restricted, &open), Looser);
        assert_eq!(compare(&allow, &restricted), Looser);
        assert_eq!(compare(&allow, &open), Looser);
        assert_eq!(compare(&allow, &allow.clone()), Same);
    }

    #[test]
    fn allowlists_may_only_shrink() {
        use Change::*;
        let two = policy(Mode::Allowlist, &["a.example", "b.example"]);
        let one = policy(Mode::Allowlist, &["a.example"]);
        let other = policy(Mode::Allowlist, &["c.example"]);
        assert_eq!(compare(&two, &one), Stricter);
        assert_eq!(compare(&one, &two), Looser);
        assert_eq!(compare(&one, &other), Looser);
        let mut dns = one.clone();
        dns.dns_servers = vec!["198.51.100.53".parse().unwrap()];
        assert_eq!(compare(&one, &dns), Looser, "another resolver");
        let restricted = policy(Mode::Restricted, &[]);
        let lan = policy(Mode::Allowlist, &["10.0.0.0/8"]);
        assert_eq!(compare(&restricted, &lan), Looser, "a LAN literal");
    }

    #[test]
    fn restricted_exemptions_are_looser() {
        let plain = policy(Mode::Restricted, &[]);
        let mut lan = plain.clone();
        lan.lan = true;
        assert_eq!(compare(&plain, &lan), Change::Looser);
        assert_eq!(compare(&lan, &plain), Change::Stricter);
    }

    #[test]
    fn the_record_clears_what_a_mode_does_not_use() {
        let r = record(&policy(Mode::Restricted, &[]));
        assert!(r.contains(&(keys::MODE, "restricted".into())));
        assert!(r.contains(&(keys::ALLOW, String::new())));
        assert!(r.contains(&(keys::REFRESH, String::new())));
        let a = record(&policy(Mode::Allowlist, &["a.example", "198.51.100.7"]));
        assert!(a.contains(&(keys::ALLOW, "a.example,198.51.100.7/32".into())));
    }
}

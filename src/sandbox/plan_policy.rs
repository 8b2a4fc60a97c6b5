//! The network policy a new container gets, from the command's flags and
//! the configuration: a pure decision (no output, no daemon); the caller
//! reports what it says.

use std::net::IpAddr;

use crate::config::{Effective, ModeName};
use crate::network::{Entry, Mode, Policy};

/// What the command line asked for (`--network`, `--allow`,
/// `--refresh-minutes`, `--dns-server`); unset ones come from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags<'a> {
    /// `--network`.
    pub mode: Option<Mode>,
    /// `--allow` (replaces the configured allowlist).
    pub allow: &'a [String],
    /// `--refresh-minutes`.
    pub refresh_minutes: Option<f64>,
    /// `--dns-server` (replaces the configured ones).
    pub dns_servers: &'a [IpAddr],
}

/// The policy decided on.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The policy.
    pub policy: Policy,
    /// Allowlist mode with no entries: the container gets no network access.
    pub allows_nothing: bool,
}

/// The policy `flags` ask for under `cfg`; `Err`: a bad entry, or an
/// allowlist given for another mode (a usage error).
pub fn plan(flags: &Flags, cfg: &Effective) -> Result<Planned, String> {
    let mode = flags.mode.unwrap_or(match cfg.network {
        ModeName::Restricted => Mode::Restricted,
        ModeName::Allowlist => Mode::Allowlist,
        ModeName::Proxy => Mode::Proxy,
        ModeName::Open => Mode::Open,
    });
    // The configured allowlist serves when no --allow is given.
    let given: Vec<&String> = if !flags.allow.is_empty() {
        flags.allow.iter()
    } else if matches!(mode, Mode::Allowlist | Mode::Proxy) {
        cfg.allowed.iter()
    } else {
        [].iter()
    }
    .filter(|a| !a.trim().is_empty())
    .collect();
    if !given.is_empty() && !matches!(mode, Mode::Allowlist | Mode::Proxy) {
        return Err(format!(
            "--allow only applies to --network allowlist or proxy (the mode is {mode})"
        ));
    }
    // Proxy mode decides by name: wildcards and NAME:PORT too (the
    // configuration's trust checks have narrowed an untrusted list).
    let (allow, rules) = if mode == Mode::Proxy {
        let rules: Vec<String> = given
            .iter()
            .map(|a| {
                crate::proxy::Rule::parse(a.trim(), true)
                    .map(|r| r.to_string())
                    .map_err(|e| format!("--allow {a:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        (Vec::new(), rules)
    } else {
        let allow: Vec<Entry> = given
            .iter()
            .map(|a| {
                Entry::parse(a).map_err(|e| {
                    if a.contains('*') || a.contains(':') && !a.contains("::") {
                        format!("{e} (wildcards and NAME:PORT need --network proxy)")
                    } else {
                        e.to_string()
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        (allow, Vec::new())
    };
    let allows_nothing = allow.is_empty()
        && rules.is_empty()
        && matches!(mode, Mode::Allowlist | Mode::Proxy)
        && !cfg.ask_unknown;
    let dns_servers = if flags.dns_servers.is_empty() {
        cfg.dns_servers.clone()
    } else {
        flags.dns_servers.to_vec()
    };
    Ok(Planned {
        policy: Policy {
            mode,
            allow,
            refresh_minutes: flags.refresh_minutes.unwrap_or(cfg.refresh_minutes),
            dns_servers,
            lan: !cfg.block_private,
            metadata: !cfg.block_metadata,
            rules,
            ask_unknown: mode == Mode::Proxy && cfg.ask_unknown,
        },
        allows_nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_configuration_and_allow_needs_allowlist_mode() {
        let cfg = Effective {
            network: ModeName::Allowlist,
            allowed: vec!["example.com".into(), " ".into()],
            ..Effective::default()
        };
        let p = plan(&Flags::default(), &cfg).unwrap();
        assert_eq!(p.policy.mode, Mode::Allowlist);
        assert_eq!(p.policy.allow.len(), 1);
        assert!(!p.allows_nothing);
        let none = plan(
            &Flags {
                allow: &[" ".into()],
                ..Flags::default()
            },
            &cfg,
        )
        .unwrap();
        assert!(none.allows_nothing);
        let open = plan(
            &Flags {
                mode: Some(Mode::Open),
                ..Flags::default()
            },
            &cfg,
        )
        .unwrap();
        assert!(open.policy.allow.is_empty());
        let e = plan(
            &Flags {
                mode: Some(Mode::Open),
                allow: &["example.com".into()],
                ..Flags::default()
            },
            &cfg,
        )
        .unwrap_err();
        assert!(e.contains("the mode is open"), "{e}");
    }
}

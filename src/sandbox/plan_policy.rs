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
        ModeName::Open => Mode::Open,
    });
    // The configured allowlist serves when no --allow is given.
    let given: &[String] = if !flags.allow.is_empty() {
        flags.allow
    } else if mode == Mode::Allowlist {
        &cfg.allowed
    } else {
        &[]
    };
    let allow: Vec<Entry> = given
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| Entry::parse(a).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if !allow.is_empty() && mode != Mode::Allowlist {
        return Err(format!(
            "--allow only applies to --network allowlist (the mode is {mode})"
        ));
    }
    let allows_nothing = allow.is_empty() && mode == Mode::Allowlist;
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

//! Name resolution in a build container before its script runs, decided in
//! seconds: a resolver that gives no answer would otherwise stall every
//! download of the script for minutes. The decision is made inside the
//! container by `image-scripts/dns-check.sh`; this module reads its verdict
//! and turns it into a step to report or an error that says what to fix.

use std::time::Duration;

use crate::incus::{Client, ExecRequest};

/// The check run in the build container.
const SCRIPT: &str = include_str!("../../image-scripts/dns-check.sh");

/// How long a local stub resolver that is still starting is waited for.
const STUB_WAIT_SECS: u32 = 8;

/// The whole check, however the container behaves (the script bounds
/// itself to about 20 s in the worst case; this is the backstop).
const HARD_LIMIT: Duration = Duration::from_secs(40);

/// The probe name unless `CCI_BUILD_DNS_PROBE` says otherwise.
pub const DEFAULT_PROBE: &str = "deb.debian.org";

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Names resolve.
    Ok,
    /// They resolve since /etc/resolv.conf was rewritten.
    Repaired {
        /// The nameservers before.
        was: String,
        /// The nameservers now (the image keeps them).
        now: String,
    },
    /// A resolver answers, but not with the probe name.
    Unresolved {
        /// The nameservers asked.
        now: String,
    },
    /// No resolver answered.
    Silent {
        /// The nameservers the base had.
        was: String,
        /// The nameservers asked last.
        now: String,
    },
}

/// Parse the script's line (`VERDICT WAS|NOW`).
pub fn parse(line: &str) -> Option<Verdict> {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (was, now) = rest.split_once('|').unwrap_or((rest, rest));
    let name = |s: &str| match s.trim() {
        "" => "none".to_string(),
        s => s.to_string(),
    };
    let (was, now) = (name(was), name(now));
    match word {
        "ok" => Some(Verdict::Ok),
        "repaired" => Some(Verdict::Repaired { was, now }),
        "unresolved" => Some(Verdict::Unresolved { now }),
        "silent" => Some(Verdict::Silent { was, now }),
        _ => None,
    }
}

/// The probe name (`CCI_BUILD_DNS_PROBE`; empty skips the check) and the
/// extra resolvers (`CCI_BUILD_DNS`, comma-separated addresses).
pub fn settings() -> (Option<String>, Vec<String>) {
    let probe = std::env::var("CCI_BUILD_DNS_PROBE").unwrap_or_else(|_| DEFAULT_PROBE.into());
    let probe = Some(probe.trim().to_string()).filter(|p| !p.is_empty());
    let extra = std::env::var("CCI_BUILD_DNS").unwrap_or_default();
    let extra = extra
        .split(',')
        .map(str::trim)
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string)
        .collect();
    (probe, extra)
}

/// Run the check for `probe` in `container` with the extra resolvers.
pub async fn check(client: &Client, container: &str, probe: &str, extra: &[String]) -> Verdict {
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        SCRIPT.into(),
        "dns-check".into(),
        probe.into(),
        STUB_WAIT_SECS.to_string(),
    ];
    argv.extend(extra.iter().cloned());
    let run = ExecRequest::new(&argv).repeatable().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let silent = || Verdict::Silent {
        was: "(unknown: the check did not finish)".into(),
        now: "(unknown)".into(),
    };
    match tokio::time::timeout(HARD_LIMIT, client.exec_capture(container, &run, None)).await {
        Ok(Ok(out)) => parse(&out.stdout_text()).unwrap_or(Verdict::Ok),
        Ok(Err(e)) => {
            tracing::warn!("the DNS check could not run in {container}: {e}");
            Verdict::Ok
        }
        Err(_) => silent(),
    }
}

/// The error for a resolver that gave no answer.
pub fn silent_message(probe: &str, base: &str, was: &str, now: &str) -> String {
    let asked = if was == now {
        format!("{now} (from /etc/resolv.conf of the base {base})")
    } else {
        format!("{now} (cci replaced the base's {was}, which did not answer either)")
    };
    format!(
        "names do not resolve in the build container: the resolver {asked} gave no answer \
         for {probe}, so the build script would wait minutes on every download. Fix the \
         base's DNS (/etc/resolv.conf, or its resolver service), or name a resolver the \
         build may use with CCI_BUILD_DNS=IP[,IP] (the Incus bridge's address is the usual \
         one), or skip this check with CCI_BUILD_DNS_PROBE= when the script needs no network"
    )
}

/// The step reported for a verdict that lets the build go on.
pub fn step(probe: &str, verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Ok | Verdict::Silent { .. } => None,
        Verdict::Repaired { was, now } => Some(format!(
            "names did not resolve through {was}; /etc/resolv.conf now uses {now} (the image keeps it)"
        )),
        Verdict::Unresolved { now } => Some(format!(
            "warning: {probe} does not resolve through {now} (it answers, but not with an \
             address); the build script may not reach the network"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_the_scripts_line() {
        assert_eq!(parse("ok\n"), Some(Verdict::Ok));
        assert_eq!(
            parse("repaired 127.0.0.53|10.0.0.1 9.9.9.9\n"),
            Some(Verdict::Repaired {
                was: "127.0.0.53".into(),
                now: "10.0.0.1 9.9.9.9".into()
            })
        );
        assert_eq!(
            parse("silent |"),
            Some(Verdict::Silent {
                was: "none".into(),
                now: "none".into()
            })
        );
        assert_eq!(
            parse("unresolved 192.0.2.1|192.0.2.1"),
            Some(Verdict::Unresolved {
                now: "192.0.2.1".into()
            })
        );
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn the_silent_message_names_the_resolver_and_the_ways_out() {
        let m = silent_message("deb.debian.org", "my-base", "192.0.2.53", "192.0.2.53");
        for part in [
            "192.0.2.53",
            "my-base",
            "deb.debian.org",
            "CCI_BUILD_DNS=",
            "CCI_BUILD_DNS_PROBE=",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let m = silent_message("x", "b", "127.0.0.53", "10.1.2.1");
        assert!(m.contains("replaced the base's 127.0.0.53"), "{m}");
    }
}

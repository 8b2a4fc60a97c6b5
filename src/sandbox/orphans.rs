//! Run containers nobody waits for any more. `cci run` force-stops its
//! ephemeral container when the command ends, and the daemon deletes it;
//! should that stop be lost (the cci killed with SIGKILL, a request the
//! daemon dropped under load), the container would run on for ever. Every
//! launch, `cci list` and the network watcher look for such orphans: a run
//! container whose launching cci process is gone, and remove them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::names::PREFIX;
use super::spec::keys;
use super::teardown::remove;
use crate::host::Host;
use crate::incus::{Client, Instance};

/// Whether the cci process that made launch `token` is still running on
/// this machine. A launch token is `<pid>-<nanos>-<n>-<start>`, where
/// `<start>` is that process's start time in clock ticks since boot
/// ([`start_ticks`]): a process with that pid and that start time is the
/// one (a pid used again has another). A fifth part names the machine
/// ([`machine_tag`]). A token without a start time (a build's
/// `<pid>-<stamp>`, or one of an older cci) falls back to the process being
/// a `cci`.
pub fn launcher_running(token: &str) -> bool {
    let parts: Vec<&str> = token.split('-').collect();
    // A launch from another machine (a shared remote server): its process
    // is not here to look at, so it is never judged gone from here.
    if parts.get(4).is_some_and(|m| *m != machine_tag()) {
        return true;
    }
    let Some(pid) = parts
        .first()
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p > 0)
    else {
        return false;
    };
    match parts.get(3).and_then(|s| s.parse::<u64>().ok()) {
        Some(start) => start_ticks(pid) == Some(start),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == "cci"),
    }
}

/// This machine, in launch tokens: a hash of `/etc/machine-id` (else of
/// the host name), 12 hex digits.
pub fn machine_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        use sha2::Digest;
        let id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        sha2::Sha256::digest(id.trim().as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// A launch token for process `pid` (see [`launcher_running`]): `kind` is
/// a counter or a letter telling launches of one process apart.
pub fn token(pid: u32, kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{pid}-{nanos}-{kind}-{}-{}",
        start_ticks(pid).unwrap_or_default(),
        machine_tag()
    )
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`
/// field 22), or `None` when there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The run containers among `all` whose cci is gone (`alive` says whether a
/// launch token's process runs). Kept (non-ephemeral) containers are never
/// orphans: someone asked for them to stay.
pub fn orphaned(all: &[Instance], alive: impl Fn(&str) -> bool) -> Vec<String> {
    all.iter()
        .filter(|i| i.name.starts_with(PREFIX) && i.ephemeral)
        .filter(|i| i.config.get(keys::KIND).is_some_and(|k| k == "run"))
        .filter(|i| i.config.get(keys::PERSISTENT).is_none_or(|p| p != "true"))
        .filter(|i| !i.config.get(keys::LAUNCH).is_some_and(|t| alive(t)))
        .map(|i| i.name.clone())
        .collect()
}

/// Remove the orphaned run containers of this project; returns their names.
/// Best effort: a failure is logged and the next command tries again.
pub async fn reap_runs(host: &Host) -> Vec<String> {
    remove_all(host, find(&host.client).await).await
}

/// For a background caller that looks again and again (the network
/// watcher): remove only the orphans it first saw at least [`GRACE`] ago
/// (`seen` remembers when), so a run that just ended is left to the
/// daemon's own delete and a foreground command gets there first.
pub async fn reap_runs_after_grace(
    host: &Host,
    seen: &std::sync::Mutex<HashMap<String, Instant>>,
) -> Vec<String> {
    let now = find(&host.client).await;
    let ripe = match seen.lock() {
        Ok(mut seen) => {
            seen.retain(|n, _| now.contains(n));
            now.into_iter()
                .filter(|n| seen.entry(n.clone()).or_insert_with(Instant::now).elapsed() >= GRACE)
                .collect()
        }
        Err(_) => Vec::new(),
    };
    remove_all(host, ripe).await
}

/// How long the watcher leaves an orphan to others.
pub const GRACE: Duration = Duration::from_secs(5);

async fn find(client: &Client) -> Vec<String> {
    match client.instances(PREFIX, false).await {
        Ok(all) => orphaned(&all, launcher_running),
        Err(e) => {
            tracing::debug!("looking for orphaned run containers: {e}");
            Vec::new()
        }
    }
}

async fn remove_all(host: &Host, names: Vec<String>) -> Vec<String> {
    let results = futures_util::future::join_all(names.iter().map(|name| remove(host, name))).await;
    names
        .into_iter()
        .zip(results)
        .filter_map(|(name, r)| match r {
            Ok(()) => Some(name),
            Err(e) => {
                tracing::warn!("removing orphaned run container {name}: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, ephemeral: bool, token: &str, persistent: bool) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": name, "status": "Running", "ephemeral": ephemeral,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        i.config.insert(keys::KIND.into(), "run".into());
        i.config.insert(keys::LAUNCH.into(), token.into());
        if persistent {
            i.config.insert(keys::PERSISTENT.into(), "true".into());
        }
        i
    }

    #[test]
    fn only_ephemeral_runs_whose_cci_is_gone_are_orphans() {
        let mut session = run("cci-aaaaaaaa-3", true, "gone", false);
        session.config.insert(keys::KIND.into(), "session".into());
        let all = vec![
            run("cci-aaaaaaaa-1", true, "alive", false),
            run("cci-aaaaaaaa-2", true, "gone", false),
            session,
            run("cci-aaaaaaaa-4", false, "gone", false),
            run("cci-aaaaaaaa-5", true, "gone", true),
            run("other-1", true, "gone", false),
        ];
        assert_eq!(orphaned(&all, |t| t == "alive"), vec!["cci-aaaaaaaa-2"]);
    }

    #[test]
    fn a_launch_token_names_its_process_and_when_it_started() {
        let me = std::process::id();
        let start = start_ticks(me).unwrap_or_default();
        assert!(start > 0);
        assert!(launcher_running(&format!("{me}-5-0-{start}")));
        // The same pid with another start time: the pid was used again.
        assert!(!launcher_running(&format!("{me}-5-0-{}", start + 1)));
        assert!(!launcher_running(&format!("{}-5-0-{start}", u32::MAX - 1)));
        // Without a start time: only a process named cci counts.
        assert!(!launcher_running(&format!("{me}-5-0")));
        assert!(!launcher_running(""));
        assert!(!launcher_running("0-1-2"));
        // Today's tokens; another machine's launch is never judged from here.
        assert!(launcher_running(&token(me, "7")));
        assert!(!launcher_running(&format!(
            "{me}-5-0-{}-{}",
            start + 1,
            machine_tag()
        )));
        assert!(launcher_running(&format!(
            "{me}-5-0-{}-0123456789ab",
            start + 1
        )));
        assert!(!launcher_running("abc"));
    }
}

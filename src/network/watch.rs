//! The network watcher: a small background cci process that keeps the
//! firewall in line while guarded containers exist, whether or not any cci
//! command runs in the foreground. It removes the rules of a container as
//! soon as the daemon deletes it, puts back rules that vanished (nft
//! flushed, table deleted) within a few seconds, and refreshes allowlists
//! at each container's interval. One per user (a lock file); it exits when nothing is
//! guarded any more. It logs through `tracing` into its own log (see
//! [`watch`]), never to a terminal.

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use super::nft::Monitor;
use super::{Error, Nft, reconcile, refresh};
use crate::incus::{self, Client, Event, Events};

/// How often rules are checked even without events (a vanished table is
/// noticed at once through `nft monitor`; this is the fallback).
const TICK: Duration = Duration::from_secs(5);

fn lock_file() -> std::io::Result<File> {
    crate::state::lock_file("network", "watch.lock")
}

/// Whether a watcher runs for this user (it holds the lock).
pub fn watcher_running() -> bool {
    crate::state::lock_held("network", "watch.lock")
}

/// Start the watcher in the background unless one is running. It outlives
/// this process (its own process group, no terminal); its log is
/// `~/.cci/logs/network-watch.log`.
pub fn spawn_watcher() -> std::io::Result<()> {
    {
        let lock = lock_file()?;
        if lock.try_lock().is_err() {
            return Ok(()); // one is running
        }
    }
    // It serves every cci of this user for as long as containers exist, so
    // it takes nothing from this command's environment that would change how
    // it enforces (a `CCI_NFT` meant for one command).
    let mut cmd = Command::new(std::env::current_exe()?);
    // Its firewall is this machine's: it always watches the local daemon.
    cmd.args(["network", "watch", "--remote", "local"])
        .env_remove("CCI_NFT")
        .env_remove("CCI_REMOTE");
    crate::state::spawn_daemon(cmd, "network-watch.log")
}

/// Run the watcher until nothing is guarded. Returns at once when another
/// watcher holds the lock. `upkeep` runs at every check too (the sandbox
/// layer's: removing run containers whose cci is gone); it returns what it
/// removed.
pub async fn watch<U, F>(client: &Client, fw: &Nft, upkeep: U) -> Result<(), Error>
where
    U: Fn() -> F,
    F: std::future::Future<Output = Vec<String>>,
{
    use tracing::instrument::WithSubscriber;
    let lock = lock_file().map_err(|e| Error::Cache(e.to_string()))?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    keep_in_line(client, fw, upkeep, lock)
        .with_subscriber(log_subscriber())
        .await
}

/// The watcher's log: its stderr, which [`spawn_watcher`] makes
/// `~/.cci/logs/network-watch.log`. The watcher's own lines (this module,
/// info and up) always go there; other diagnostics as `CCI_LOG` says.
fn log_subscriber() -> impl tracing::Subscriber + Send + Sync {
    let mut filter = tracing_subscriber::EnvFilter::from_env("CCI_LOG");
    if let Ok(own) = format!("{}=info", module_path!()).parse() {
        filter = filter.add_directive(own);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish()
}

/// The watcher's loop, holding `lock`, until nothing is guarded.
async fn keep_in_line<U, F>(client: &Client, fw: &Nft, upkeep: U, lock: File) -> Result<(), Error>
where
    U: Fn() -> F,
    F: std::future::Future<Output = Vec<String>>,
{
    let mut events = None;
    let mut monitor = None;
    let mut idle_ticks = 0;
    loop {
        match reconcile(client, fw).await {
            Ok(r) => {
                for p in &r.removed {
                    tracing::info!("[watch] removed the rules of gone container port {p}");
                }
                for n in &r.restored {
                    tracing::info!("[watch] restored the rules of {n}");
                }
                for n in &r.stopped {
                    tracing::warn!("[watch] stopped {n}: its rules could not be restored");
                }
                idle_ticks = if r.guarded == 0 { idle_ticks + 1 } else { 0 };
            }
            Err(e) => tracing::error!("[watch] {e}"),
        }
        for n in upkeep().await {
            tracing::info!("[watch] removed {n}: a run container whose cci is gone");
        }
        // Proxy-mode containers need their proxy: started again when gone.
        if idle_ticks == 0 && !super::egress::proxy_running() {
            match client.instances("", false).await {
                Ok(all) => super::egress::upkeep(client, &all).await,
                Err(e) => tracing::error!("[watch] {e}"),
            }
        }
        if idle_ticks >= 2 {
            // Let go, then look once more: a launch that found the lock
            // held just now counted on this watcher.
            let _ = lock.unlock();
            match client.instances_all_projects().await {
                Ok(all) if all.iter().any(|i| i.config.contains_key(super::keys::MODE)) => {}
                _ => return Ok(()),
            }
            if lock.try_lock().is_err() {
                return Ok(());
            }
            idle_ticks = 0;
        }
        match refresh(client, fw, true).await {
            Ok(changed) => {
                for n in changed {
                    tracing::info!("[watch] allowlist of {n} refreshed");
                }
            }
            Err(e) => tracing::error!("[watch] refresh: {e}"),
        }
        if events.is_none() {
            events = client.events(&["lifecycle"]).await.ok();
        }
        if monitor.is_none() {
            monitor = fw.monitor().ok();
        }
        let deadline = tokio::time::sleep(TICK);
        tokio::pin!(deadline);
        // Wake early when a container is deleted or started, or when
        // something touches cci's tables: rules follow at once.
        loop {
            tokio::select! {
                _ = deadline.as_mut() => break,
                ev = next_event(&mut events) => match ev {
                    Some(Ok(ev)) => {
                        if ev.action().is_some_and(|a| a == "instance-deleted" || a == "instance-started") {
                            // Let a burst (many launches at once) settle into one check.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break;
                        }
                    }
                    _ => {
                        events = None;
                        break;
                    }
                },
                line = next_line(&mut monitor) => match line {
                    Some(l) if touches_cci(&l) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                    Some(_) => {}
                    None => monitor = None,
                },
            }
        }
    }
}

async fn next_event(events: &mut Option<Events>) -> Option<incus::Result<Event>> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn next_line(monitor: &mut Option<Monitor>) -> Option<String> {
    match monitor {
        Some(m) => m.lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Whether an `nft monitor` line says cci's rules were removed or flushed.
fn touches_cci(line: &str) -> bool {
    (line.starts_with("delete ") || line.starts_with("flush "))
        && (line.contains(" bridge cci") || line.contains(" inet cci") || line.contains("ruleset"))
}

#[cfg(test)]
mod tests {
    use super::{log_subscriber, touches_cci};

    #[test]
    fn the_watchers_own_lines_are_logged_at_info() {
        let logged = tracing::subscriber::with_default(log_subscriber(), || {
            tracing::enabled!(tracing::Level::INFO)
        });
        assert!(logged);
    }

    #[test]
    fn monitor_lines_that_matter() {
        assert!(touches_cci("delete table bridge cci"));
        assert!(touches_cci("delete chain inet cci tagged_in"));
        assert!(touches_cci("flush ruleset"));
        assert!(!touches_cci("add table inet cci"));
        assert!(!touches_cci("delete table inet incus"));
        assert!(!touches_cci("# new generation 12 by process 3 (nft)"));
    }
}

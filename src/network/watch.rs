//! The network watcher: a small background cci process that keeps the
//! firewall in line while guarded containers exist, whether or not any cci
//! command runs in the foreground. It removes the rules of a container as
//! soon as the daemon deletes it, puts back rules that vanished (nft
//! flushed, table deleted) within a few seconds, and refreshes allowlists
//! at each container's interval. One per user (a lock file); it exits when nothing is
//! guarded any more.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Error, Firewall, reconcile, refresh};
use crate::incus::Client;

/// How often rules are checked even without events.
const TICK: Duration = Duration::from_secs(5);

fn lock_file() -> std::io::Result<File> {
    let dir = crate::state::dir("network")?;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("watch.lock"))
}

/// Start the watcher in the background unless one is running. It outlives
/// this process (its own process group, no terminal); its log is
/// `~/.cci/logs/network-watch.log`.
pub fn spawn_watcher() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    {
        let lock = lock_file()?;
        if lock.try_lock().is_err() {
            return Ok(()); // one is running
        }
    }
    let log = crate::state::dir("logs")?.join("network-watch.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // It serves every cci of this user for as long as containers exist, so
    // it takes nothing from this command's environment that would change how
    // it enforces (a `CCI_NFT` meant for one command).
    Command::new(std::env::current_exe()?)
        .args(["network", "watch"])
        .env_remove("CCI_NFT")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// Run the watcher until nothing is guarded. Returns at once when another
/// watcher holds the lock.
pub async fn watch(client: &Client, fw: &dyn Firewall) -> Result<(), Error> {
    let lock = lock_file().map_err(|e| Error::Cache(e.to_string()))?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    let mut events = None;
    let mut idle_ticks = 0;
    loop {
        match reconcile(client, fw).await {
            Ok(r) => {
                for p in &r.removed {
                    eprintln!("[watch] removed the rules of gone container port {p}");
                }
                for n in &r.restored {
                    eprintln!("[watch] restored the rules of {n}");
                }
                for n in &r.stopped {
                    eprintln!("[watch] stopped {n}: its rules could not be restored");
                }
                idle_ticks = if r.guarded == 0 { idle_ticks + 1 } else { 0 };
            }
            Err(e) => eprintln!("[watch] {e}"),
        }
        if idle_ticks >= 2 {
            // Let go, then look once more: a launch that found the lock
            // held just now counted on this watcher.
            let _ = lock.unlock();
            match client.instances("", false).await {
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
                    eprintln!("[watch] allowlist of {n} refreshed");
                }
            }
            Err(e) => eprintln!("[watch] refresh: {e}"),
        }
        if events.is_none() {
            events = client.events(&["lifecycle"]).await.ok();
        }
        let deadline = tokio::time::sleep(TICK);
        tokio::pin!(deadline);
        // Wake early for a deletion, creation or start: rules follow at once.
        loop {
            let Some(stream) = events.as_mut() else {
                deadline.as_mut().await;
                break;
            };
            tokio::select! {
                _ = deadline.as_mut() => break,
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => {
                        if ev.action().is_some_and(|a| a == "instance-deleted" || a == "instance-started") {
                            break;
                        }
                    }
                    _ => {
                        events = None;
                        break;
                    }
                },
            }
        }
    }
}

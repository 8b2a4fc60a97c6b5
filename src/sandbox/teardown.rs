//! Taking a sandbox container down, the reverse of a launch: stop it
//! (cleanly, then by force), or stop and delete it and only then release its
//! firewall rules (see `network::release`). A leaf: it knows nothing of
//! sessions or launches.

use std::time::Duration;

use crate::host::Host;
use crate::incus::{self, Client, InstanceStatus};
use crate::network::{self, PortName};

/// Stop cleanly within `grace`, then by force; stopped already is fine, and
/// so is gone meanwhile (another cci may delete an ended session meanwhile).
pub async fn stop(client: &Client, name: &str, grace: Duration) -> incus::Result<()> {
    if client.stop_instance(name, Some(grace), false).await.is_ok() {
        return Ok(());
    }
    match client.stop_instance(name, None, true).await {
        Ok(()) => Ok(()),
        Err(e) => match client.instance(name).await {
            Ok((i, _)) if i.status == InstanceStatus::Stopped => Ok(()),
            Err(gone) if gone.is_not_found() => Ok(()),
            _ => Err(e),
        },
    }
}

/// Stop (force) and delete `name`; gone already is fine. Retries (for up to
/// 5 s) only while the daemon is still busy with it or it is still running,
/// e.g. mid-create or mid-start; any other error is returned at once.
pub async fn remove(host: &Host, name: &str) -> incus::Result<()> {
    let client = &host.client;
    let instance = client.instance(name).await.ok().map(|(i, _)| i);
    let port = instance.as_ref().and_then(network::port_of);
    // A remote container's network ACL (a stale one is swept later too).
    let acl = instance
        .as_ref()
        .and_then(|i| i.config.get(network::acl::ACL_KEY).cloned());
    let released = |port: Option<PortName>| {
        if let Some(p) = port
            && let Err(e) = network::release(host.policy(), &p)
        {
            tracing::warn!("removing the firewall rules of {name}: {e}");
        }
    };
    let mut tries = 0;
    loop {
        let _ = client
            .stop_instance(name, Some(Duration::from_secs(0)), true)
            .await;
        match client.delete_instance(name).await {
            Ok(()) => {
                released(port);
                if let Some(acl) = &acl {
                    let _ = client.delete_acl(acl).await;
                }
                return Ok(());
            }
            Err(e) if e.is_not_found() => {
                released(port);
                if let Some(acl) = &acl {
                    let _ = client.delete_acl(acl).await;
                }
                return Ok(());
            }
            Err(e @ (incus::Error::Conflict(_) | incus::Error::InstanceRunning(_)))
                if tries < 50 =>
            {
                tracing::debug!("deleting {name}: {e}; trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

//! `cci network status`: every guarded container with its mode, port and
//! the packets its rules dropped, and the shared counters, as data.

use serde::Serialize;

use super::{Error, Policy, PolicyBackend, State, port_of};
use crate::incus::{Client, InstanceStatus};

/// One container under a network policy.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    /// Its name.
    pub container: String,
    /// Running, stopped...
    pub state: InstanceStatus,
    /// Its recorded mode (or why the record is invalid).
    pub mode: String,
    /// Its guarded port (host-side NIC).
    pub port: String,
    /// Whether its rules are in force.
    pub rules: bool,
    /// Packets they dropped so far.
    pub dropped: u64,
}

/// What is enforced now, and for whom.
pub async fn status(
    client: &Client,
    fw: &dyn PolicyBackend,
) -> Result<(Vec<StatusRow>, State), Error> {
    let state = fw.state()?;
    let mut rows = Vec::new();
    for i in client.instances("", false).await? {
        let Some(policy) = Policy::of(&i) else {
            continue;
        };
        let port = port_of(&i);
        let dropped = port.as_ref().and_then(|p| state.ports.get(p).copied());
        rows.push(StatusRow {
            container: i.name.clone(),
            state: i.status.clone(),
            mode: policy.map_or_else(|e| format!("invalid ({e})"), |p| p.mode.to_string()),
            port: port.map(|p| p.to_string()).unwrap_or_default(),
            rules: dropped.is_some(),
            dropped: dropped.unwrap_or(0),
        });
    }
    Ok((rows, state))
}

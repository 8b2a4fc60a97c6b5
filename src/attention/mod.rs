//! Attention: which slot needs the user. One row per cci container (its
//! agent's state, for how long, CPU, memory, network requests blocked since
//! it started, the last line of its screen), taken with one batched daemon
//! query for all containers (with their CPU and memory, which cost the
//! daemon far more, every few ticks) plus a look into each session ([`probe`]);
//! the state decided by [`derive`] from the agent's hook events
//! ([`hooks`]) or its screen. [`snapshot`] looks once; [`Watch`] keeps one
//! monitor per session and reports every change as an [`Event`].
//!
//! Everything a container says is the agent's: shown, bounded, never acted
//! on. This module only reads; the dashboard's actions go through the
//! sandbox lifecycle.

pub mod derive;
pub mod hooks;
pub mod notify;
pub mod probe;
mod watch;

use std::collections::HashMap;

use serde::Serialize;

pub use derive::{AgentState, Basis};
pub use watch::{Event, Watch};

use crate::host::Host;
use crate::incus::{self, Instance, InstanceStatus};
use crate::sandbox::SandboxInfo;

/// One slot as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Container name.
    pub name: String,
    /// Host path of the workspace (empty for a launched container).
    pub workspace: String,
    /// Slot number (0: none).
    pub slot: u32,
    /// `shell`, `run` or `container`.
    pub kind: String,
    /// The agent its session runs (empty: a plain shell or none).
    pub agent: String,
    /// The container's status (`Running`, `Stopped`...).
    pub status: InstanceStatus,
    /// The agent's state.
    pub state: AgentState,
    /// Since when (Unix seconds), when known.
    pub since: Option<u64>,
    /// The agent's notification or exit status.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// How the state was decided: `hooks`, `screen` or `container`.
    pub basis: Basis,
    /// CPU time since the container started, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the last look, percent of one core (a watch only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Its network mode (empty when unguarded).
    pub network: String,
    /// Network requests cci's egress proxy refused since the container
    /// started (proxy mode; 0 otherwise).
    pub blocked: u64,
    /// The last non-blank line of its screen, printable.
    pub last_line: String,
}

impl Row {
    /// The workspace's last path part (the dashboard's short name).
    pub fn workspace_short(&self) -> &str {
        self.workspace
            .rsplit('/')
            .find(|p| !p.is_empty())
            .unwrap_or(&self.workspace)
    }

    /// Whether a session runs in it (something to look at).
    fn has_session(&self) -> bool {
        self.kind == "shell" && self.status == InstanceStatus::Running
    }
}

/// The row of `i` (a cci container) before its session is looked at.
fn base_row(info: &SandboxInfo, i: &Instance) -> Row {
    let state = i.state.as_ref();
    let running = info.state == InstanceStatus::Running;
    Row {
        name: info.name.clone(),
        workspace: info.workspace.clone(),
        slot: info.slot,
        kind: info.kind.clone(),
        agent: info.agent.clone(),
        status: info.state.clone(),
        state: if running {
            AgentState::Running
        } else {
            AgentState::Stopped
        },
        since: None,
        detail: String::new(),
        basis: Basis::Container,
        cpu_seconds: state
            .and_then(|s| s.cpu.as_ref())
            .map_or(0.0, |c| c.usage.max(0) as f64 / 1e9),
        cpu_percent: None,
        memory_bytes: state
            .and_then(|s| s.memory.as_ref())
            .map_or(0, |m| m.usage.max(0) as u64),
        network: info.network.clone(),
        blocked: 0,
        last_line: String::new(),
    }
}

/// Apply one look at the session to its row.
fn apply(row: &mut Row, probe: &probe::Probe, now: u64) {
    let d = derive::derive(probe, row.agent == "claude", now);
    row.state = d.state;
    row.since = d.since;
    row.detail = d.detail;
    row.basis = d.basis;
    row.last_line = probe.last_line.clone();
}

/// Every cci container with its account, from one batched query.
async fn containers(
    client: &crate::incus::Client,
    account: &crate::config::Account,
    with_state: bool,
) -> incus::Result<Vec<(SandboxInfo, Instance)>> {
    let mut all: Vec<(SandboxInfo, Instance)> = client
        .instances("", with_state)
        .await?
        .into_iter()
        .filter_map(|i| Some((SandboxInfo::from_instance(&i, account)?, i)))
        .collect();
    all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(all)
}

/// Now, Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every cci container's row, looked at once (sessions concurrently).
pub async fn snapshot(host: &Host) -> incus::Result<Vec<Row>> {
    // (The daemon fails the whole stateful list when one container goes
    // while it gathers: the list alone then, without CPU and memory.)
    let all = match containers(&host.client, &host.config.account, true).await {
        Ok(all) => all,
        Err(_) => containers(&host.client, &host.config.account, false).await?,
    };
    let mut rows: Vec<Row> = all.iter().map(|(s, i)| base_row(s, i)).collect();
    let looks = futures_util::future::join_all(all.iter().zip(&rows).map(|((s, _), row)| {
        let client = host.client.clone();
        let want = row.has_session();
        async move {
            if want {
                // A session that does not answer (its agent stalls the
                // look) shows no state rather than holding up the rest.
                let look = probe::once(&client, &s.name, &s.account);
                tokio::time::timeout(std::time::Duration::from_secs(5), look)
                    .await
                    .ok()?
                    .ok()
            } else {
                None
            }
        }
    }))
    .await;
    let now = now();
    let blocked = Blocked::read();
    for (((info, _), row), look) in all.iter().zip(rows.iter_mut()).zip(looks) {
        if let Some(p) = look {
            apply(row, &p, now);
        }
        row.blocked = blocked.since(&row.name, &info.last_started);
    }
    Ok(rows)
}

/// Refused network requests by container, from the egress proxy's log.
#[derive(Debug, Default)]
pub struct Blocked {
    /// Per container: the refusals' times (Unix milliseconds) and counts.
    seen: HashMap<String, Vec<(u64, u64)>>,
}

impl Blocked {
    /// Everything the log holds now.
    pub fn read() -> Blocked {
        let mut b = Blocked::default();
        if let Ok(path) = crate::network::egress::decisions_log() {
            b.add(&crate::proxy::log::read(&path, None).unwrap_or_default());
        }
        b
    }

    /// Count these decisions in.
    pub fn add(&mut self, decisions: &[crate::proxy::log::Decision]) {
        for d in decisions
            .iter()
            .filter(|d| !d.allowed && !d.container.is_empty())
        {
            let times = self.seen.entry(d.container.clone()).or_default();
            times.push((d.time, 1 + d.repeats));
            // Bounded: the oldest go (a long-running container's count
            // then starts later, which the dashboard can live with).
            if times.len() > 4096 {
                times.drain(..1024);
            }
        }
    }

    /// Refusals of `container` since `started` (RFC 3339; all when empty).
    pub fn since(&self, container: &str, started: &str) -> u64 {
        let from = crate::state::parse_rfc3339(started).map_or(0, |s| s * 1000);
        self.seen.get(container).map_or(0, |t| {
            t.iter().filter(|(at, _)| *at >= from).map(|(_, n)| n).sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_from_the_last_start() {
        let d = |c: &str, time: u64, allowed: bool, repeats: u64| crate::proxy::log::Decision {
            time,
            container: c.into(),
            host: "x".into(),
            port: 443,
            allowed,
            reason: "no-rule".into(),
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            repeats,
        };
        let mut b = Blocked::default();
        b.add(&[
            d("a", 1_000, false, 0),
            d("a", 2_000_000, false, 4),
            d("a", 2_000_001, true, 0),
            d("b", 2_000_000, false, 0),
            d("", 2_000_000, false, 0),
        ]);
        assert_eq!(b.since("a", ""), 6);
        assert_eq!(b.since("a", "1970-01-01T00:16:40Z"), 5);
        assert_eq!(b.since("b", "1970-01-01T00:16:40Z"), 1);
        assert_eq!(b.since("c", ""), 0);
    }

    #[test]
    fn the_short_workspace_is_its_last_part() {
        let mut r = Row {
            name: "n".into(),
            workspace: "/home/u/src/proj/".into(),
            slot: 1,
            kind: "shell".into(),
            agent: "claude".into(),
            status: InstanceStatus::Running,
            state: AgentState::Idle,
            since: None,
            detail: String::new(),
            basis: Basis::Hooks,
            cpu_seconds: 0.0,
            cpu_percent: None,
            memory_bytes: 0,
            network: String::new(),
            blocked: 0,
            last_line: String::new(),
        };
        assert_eq!(r.workspace_short(), "proj");
        r.workspace = String::new();
        assert_eq!(r.workspace_short(), "");
    }
}

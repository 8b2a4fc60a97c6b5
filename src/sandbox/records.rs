//! Writing a session's record ([`crate::session::record`]) as it ends:
//! read from the container (the agent's log of state changes and its last
//! state line, through the file API, bounded, trusted for nothing but
//! numbers), the egress proxy's log and the saved state. A record that
//! cannot be written is logged; it never holds up the end of a session.

use super::inventory::SandboxInfo;
use super::saving::StateSave;
use crate::attention::hooks::{EVENTS_FILE, STATE_FILE};
use crate::host::Host;
use crate::session::record::{self, Record};

/// The most of the agent's files read.
const MAX_READ: usize = 1 << 20;

/// How long reading one of the agent's files may take: the agent can make
/// it a FIFO that never answers, and the end of a session must not wait
/// long (the two small files are read at once).
const READ_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A file of the agent's home, as text (empty when it cannot be read).
async fn home_file(host: &Host, info: &SandboxInfo, name: &str) -> String {
    let path = format!("{}/{name}", info.account.home);
    match tokio::time::timeout(READ_TIME, host.client.read_file(&info.name, &path)).await {
        Ok(Ok((_, data))) => {
            let tail = &data[data.len().saturating_sub(MAX_READ)..];
            String::from_utf8_lossy(tail).into_owned()
        }
        Ok(Err(_)) | Err(_) => String::new(),
    }
}

/// The record of `info`'s session now; `ended`: it is over, `how`.
pub async fn make(
    host: &Host,
    info: &SandboxInfo,
    ended: Option<&str>,
    exit_status: Option<i32>,
    saved: Option<&StateSave>,
) -> Record {
    let (now_text, now) = crate::session::store_now();
    let (log, state) = tokio::join!(
        home_file(host, info, EVENTS_FILE),
        home_file(host, info, STATE_FILE)
    );
    // `exited EPOCH STATUS`, or `exited EPOCH limit` from the time limit.
    let mut words = state.split_whitespace();
    let (mut how, mut status) = (ended.map(str::to_string), exit_status);
    if words.next() == Some("exited") {
        let detail = words.nth(1).unwrap_or("");
        if detail == "limit" && how.as_deref() == Some("exit") {
            how = Some("limit".into());
        }
        if status.is_none() {
            status = detail.parse().ok();
        }
    }
    let (waiting, idle) = if info.agent == "claude" {
        let started = crate::state::parse_rfc3339(&info.last_started).unwrap_or(0);
        let (w, i) = record::waited(&log, started, now);
        (Some(w), Some(i))
    } else {
        (None, None)
    };
    let (mut allowed, mut blocked) = (0, 0);
    if let Ok(path) = crate::network::egress::decisions_log() {
        let from = crate::state::parse_rfc3339(&info.last_started).map_or(0, |s| s * 1000);
        for d in crate::proxy::log::read(&path, Some(&info.name)).unwrap_or_default() {
            if d.time >= from {
                let n = 1 + d.repeats;
                if d.allowed {
                    allowed += n;
                } else {
                    blocked += n;
                }
            }
        }
    }
    let saved_bytes = match saved {
        Some(StateSave::Saved { id, .. }) => saved_bytes(host, &info.agent, id),
        _ => None,
    };
    Record {
        id: info.session.clone(),
        container: info.name.clone(),
        workspace: info.workspace.clone(),
        slot: info.slot,
        image: info.image.clone(),
        agent: info.agent.clone(),
        kind: info.kind.clone(),
        network: info.network.clone(),
        started: info.last_started.clone(),
        ended: ended.map(|_| now_text),
        ended_by: how,
        exit_status: status,
        waiting_seconds: waiting,
        idle_seconds: idle,
        saved_bytes,
        network_allowed: allowed,
        network_blocked: blocked,
        recording_bytes: None,
    }
}

fn saved_bytes(host: &Host, agent: &str, id: &str) -> Option<u64> {
    let store = super::saving::store_of(host.config.sessions_dir.as_deref(), agent).ok()?;
    Some(store.get(&id.parse().ok()?).ok()??.meta.bytes)
}

/// Write the record of `info`'s session, ended `how`.
pub async fn finish(
    host: &Host,
    info: &SandboxInfo,
    how: &str,
    exit_status: Option<i32>,
    saved: Option<&StateSave>,
) {
    if info.session.is_empty() {
        return;
    }
    let mut r = make(host, info, Some(how), exit_status, saved).await;
    let root = match crate::session::store_root(host.config.sessions_dir.as_deref()) {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!("{}: the session's record was not written: {e}", info.name);
            return;
        }
    };
    r.recording_bytes = keep_recording(host, info, &root).await;
    let written = record::write(&root, &r);
    if let Err(e) = written {
        tracing::warn!("{}: the session's record was not written: {e}", info.name);
    }
}

/// Bring the session's recording (if it was recorded) to the host as
/// asciicast; its size.
async fn keep_recording(host: &Host, info: &SandboxInfo, root: &std::path::Path) -> Option<u64> {
    // Only a session started to be recorded (an agent could write a
    // recording of its own otherwise), with the cap it started with.
    let (i, _) = tokio::time::timeout(READ_TIME, host.client.instance(&info.name))
        .await
        .ok()?
        .ok()?;
    let cap: u64 = i.config.get(super::spec::keys::RECORD)?.parse().ok()?;
    let cap = cap.min(crate::config::MAX_RECORDING) as usize;
    let path = format!("{}/{}", info.account.home, super::tmux::RECORDING);
    let read = host.client.read_file(&info.name, &path);
    let (_, raw) = tokio::time::timeout(READ_TIME * 2, read).await.ok()?.ok()?;
    let raw = &raw[..raw.len().min(cap)];
    let cast = record::to_asciicast(raw, cap);
    let id = info.session.parse().ok()?;
    match record::write_recording(root, &id, &cast) {
        Ok(()) => Some(cast.len() as u64),
        Err(e) => {
            tracing::warn!("{}: the recording was not kept: {e}", info.name);
            None
        }
    }
}

//! One record per session: what ran where, how long, how it ended, the time
//! its agent waited for the user, its saved state and its network requests.
//! Written when the session ends, next to the saved sessions
//! (`records/ID.json`, 0600, atomically); read by `cci session list|show`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::id::SessionId;

/// A session's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The session id.
    pub id: String,
    /// Its container.
    pub container: String,
    /// Host path of the workspace.
    pub workspace: String,
    /// Its slot.
    pub slot: u32,
    /// The image it started from.
    pub image: String,
    /// The agent (empty: a plain shell).
    pub agent: String,
    /// `shell`, or `run` (`cci run --prompt`).
    pub kind: String,
    /// Its network mode.
    pub network: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339; `None` while it runs).
    pub ended: Option<String>,
    /// How it ended: `exit` (from inside), `limit` (the time limit),
    /// `shutdown`, `kill`, `timeout` or `interrupt` (`cci run`).
    pub ended_by: Option<String>,
    /// The agent's (or the run's) exit status, when known.
    pub exit_status: Option<i32>,
    /// Seconds the agent waited for an answer (a permission, a question);
    /// `None` for agents without hooks.
    pub waiting_seconds: Option<u64>,
    /// Seconds it sat idle at its prompt after a turn.
    pub idle_seconds: Option<u64>,
    /// Bytes of its saved state, when saved.
    pub saved_bytes: Option<u64>,
    /// Network requests cci's egress proxy let through.
    pub network_allowed: u64,
    /// Network requests it refused.
    pub network_blocked: u64,
    /// Bytes of its terminal recording (`--record`), when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_bytes: Option<u64>,
}

/// The folder of the records under the sessions root.
fn dir(root: &Path) -> PathBuf {
    root.join("records")
}

/// Write `r` (replacing an earlier one of its id).
pub fn write(root: &Path, r: &Record) -> io::Result<()> {
    let id: SessionId =
        r.id.parse()
            .map_err(|e: super::BadSessionId| io::Error::other(e.to_string()))?;
    let d = dir(root);
    std::fs::create_dir_all(&d)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    let data = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
    crate::state::write_atomic(&d.join(format!("{id}.json")), &data)
}

/// The record of session `id`, if one was written.
pub fn read(root: &Path, id: &SessionId) -> Option<Record> {
    let data = std::fs::read(dir(root).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Remove the record of `id` (with its saved session).
pub fn remove(root: &Path, id: &SessionId) {
    let _ = std::fs::remove_file(dir(root).join(format!("{id}.json")));
    let _ = std::fs::remove_file(recording_path(root, id));
}

/// Every record, newest start first.
pub fn all(root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: SessionId = name.strip_suffix(".json")?.parse().ok()?;
            read(root, &id)
        })
        .collect();
    out.sort_by(|a, b| b.started.cmp(&a.started));
    out
}

/// The recording of session `id` (asciicast v2), where it is kept.
pub fn recording_path(root: &Path, id: &SessionId) -> PathBuf {
    dir(root).join(format!("{id}.cast"))
}

/// Keep `cast` as the recording of `id` (0600, atomically).
pub fn write_recording(root: &Path, id: &SessionId, cast: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(dir(root))?;
    crate::state::write_atomic(&recording_path(root, id), cast)
}

/// A session's raw recording (`size W H`, then `SECONDS.NANOS BASE64`
/// lines, written inside the container: untrusted) as asciicast v2: a
/// header line, then `[seconds, "o", text]` per chunk. Lines that do not
/// read are skipped; time never runs backwards; a character split between
/// chunks is joined; events that would take it past `max` bytes are left out.
pub fn to_asciicast(raw: &[u8], max: usize) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8_lossy(raw);
    let (mut w, mut h) = (80u32, 24u32);
    let mut out = Vec::new();
    let mut t0: Option<f64> = None;
    let mut last = 0f64;
    let mut carry: Vec<u8> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            continue;
        };
        if a == "size" {
            w = b.parse().unwrap_or(80).clamp(1, 1000);
            h = parts
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(24)
                .clamp(1, 1000);
            continue;
        }
        let Ok(at) = a.parse::<f64>() else { continue };
        if !at.is_finite() {
            continue;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b) else {
            continue;
        };
        let start = *t0.get_or_insert(at);
        last = (at - start).max(last);
        carry.extend_from_slice(&bytes);
        let (chunk, rest) = match std::str::from_utf8(&carry) {
            Ok(_) => (std::mem::take(&mut carry), Vec::new()),
            Err(e) if e.error_len().is_none() => {
                let cut = e.valid_up_to();
                (carry[..cut].to_vec(), carry[cut..].to_vec())
            }
            Err(_) => (std::mem::take(&mut carry), Vec::new()),
        };
        carry = rest;
        if chunk.is_empty() {
            continue;
        }
        let event = serde_json::json!([
            (last * 1000.0).round() / 1000.0,
            "o",
            String::from_utf8_lossy(&chunk)
        ])
        .to_string();
        if out.len() + event.len() + 1 > max.saturating_sub(HEADER_ROOM) {
            break;
        }
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    let header = serde_json::json!({
        "version": 2, "width": w, "height": h,
        "timestamp": t0.map_or(0, |t| t as u64),
    });
    let mut cast = header.to_string().into_bytes();
    cast.push(b'\n');
    cast.extend(out);
    cast
}

/// Room kept for the asciicast header line.
const HEADER_ROOM: usize = 256;

/// The output events of an asciicast v2 recording: (seconds, text).
pub fn cast_events(cast: &str) -> Vec<(f64, String)> {
    cast.lines()
        .skip(1)
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let a = v.as_array()?;
            (a.get(1)?.as_str()? == "o").then_some(())?;
            Some((a.first()?.as_f64()?, a.get(2)?.as_str()?.to_string()))
        })
        .collect()
}

/// Seconds spent waiting for an answer and idle at the prompt, from a
/// session's log of changes (`WORD EPOCH` lines: `notify` waits, `stop`
/// and `started` sit idle, anything else works) between `start` and `end`.
/// The log is the agent's to write: lines that do not read are skipped,
/// times are held within the session, and the sums never pass its length.
pub fn waited(log: &str, start: u64, end: u64) -> (u64, u64) {
    let end = end.max(start);
    let marks: Vec<(&str, u64)> = log
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let word = w.next()?;
            let at: u64 = w.next()?.parse().ok()?;
            Some((word, at.clamp(start, end)))
        })
        .collect();
    let (mut waiting, mut idle) = (0u64, 0u64);
    for (i, (word, at)) in marks.iter().enumerate() {
        let until = marks.get(i + 1).map_or(end, |(_, t)| *t);
        let span = until.saturating_sub(*at);
        match *word {
            "notify" => waiting = waiting.saturating_add(span),
            "stop" | "started" => idle = idle.saturating_add(span),
            _ => {}
        }
    }
    let most = end - start;
    (waiting.min(most), idle.min(most))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_and_idle_time_add_up_from_the_log() {
        let log = "started 100\nprompt 110\ntool 115\nnotify 120\ntool 150\nstop 160\nbad line\nprompt 200\nexited 230\n";
        assert_eq!(waited(log, 0, 300), (30, 10 + 40));
        // Still waiting at the end: counted to the end.
        assert_eq!(waited("prompt 10\nnotify 20\n", 0, 50), (30, 0));
        assert_eq!(waited("", 0, 50), (0, 0));
        assert_eq!(waited("notify 90\nstop 80\n", 0, 100), (0, 20));
        // Forged times stay within the session and never overflow.
        let forged =
            "notify 0\nprompt 18446744073709551615\nnotify 0\nprompt 18446744073709551615\n";
        let (w, i) = waited(forged, 1000, 1100);
        assert!(w <= 100 && i == 0, "{w} {i}");
        // The pane's `exited EPOCH STATUS` lines read too.
        assert_eq!(waited("stop 10\nexited 30 0\n", 0, 40), (0, 20));
    }

    #[test]
    fn a_recording_becomes_asciicast_with_split_characters_joined() {
        use base64::Engine;
        let b = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let u = "ü".as_bytes();
        let raw = format!(
            "size 100 30\n1000.5 {}\n1001.0 {}\n999.0 {}\nnot a line\n1002.25 !!!\n1003.0 {}\n",
            b(b"hello \x1b[31m"),
            b(&[u[0]]),
            b(&[u[1], b'!']),
            b(b"bye")
        );
        let cast = String::from_utf8(to_asciicast(raw.as_bytes(), 1 << 20)).unwrap();
        let mut lines = cast.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            (
                header["version"].as_u64(),
                header["width"].as_u64(),
                header["height"].as_u64()
            ),
            (Some(2), Some(100), Some(30))
        );
        let events = cast_events(&cast);
        assert_eq!(
            events,
            [
                (0.0, "hello \u{1b}[31m".to_string()),
                (0.5, "ü!".to_string()),
                (2.5, "bye".to_string())
            ]
        );
        assert_eq!(
            cast_events(&String::from_utf8(to_asciicast(b"", 1 << 20)).unwrap()),
            []
        );
        // Capped: the events that fit, whole.
        let small = String::from_utf8(to_asciicast(raw.as_bytes(), 256 + 40)).unwrap();
        assert!(small.len() <= 256 + 40, "{small}");
        assert_eq!(cast_events(&small), [(0.0, "hello \u{1b}[31m".to_string())]);
    }

    #[test]
    fn records_are_written_private_and_read_back_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let a = Record {
            id: "11111111-1111-4111-8111-111111111111".into(),
            started: "2026-12-01T00:00:00Z".into(),
            ..Record::default()
        };
        let b = Record {
            id: "22222222-2222-4222-8222-222222222222".into(),
            started: "2026-12-02T00:00:00Z".into(),
            ended_by: Some("kill".into()),
            ..Record::default()
        };
        write(d.path(), &a).unwrap();
        write(d.path(), &b).unwrap();
        let ids: Vec<String> = all(d.path()).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [b.id.clone(), a.id.clone()]);
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.path().join("records"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o700);
        let bad = Record {
            id: "../evil".into(),
            ..Record::default()
        };
        assert!(write(d.path(), &bad).is_err());
        remove(d.path(), &a.id.parse().unwrap());
        assert_eq!(all(d.path()).len(), 1);
    }
}

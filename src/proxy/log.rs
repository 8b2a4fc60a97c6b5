//! The decision log: one JSON line per proxied connection, appended to a
//! private file rotated at a size bound (one old file kept), read back
//! filtered by container (once, or following appends across rotations),
//! and [`suggest`]: a minimal allowlist from what a container did.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The longest line the reader accepts (longer ones are skipped).
const MAX_LINE: usize = 64 * 1024;

/// One connection's outcome: what was asked, by whom, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When it ended (or was refused), Unix milliseconds.
    pub time: u64,
    /// The container (empty for an unknown caller).
    pub container: String,
    /// The destination as asked (a name or an address), control characters
    /// escaped (see [`clean`]).
    pub host: String,
    /// The destination port (0 when the request was unreadable).
    pub port: u16,
    /// Whether any byte went through.
    pub allowed: bool,
    /// Why: `rule`, `approved`, `no-rule`, `not-approved`,
    /// `private-address`, `sni-mismatch`, `no-sni`, `not-tls`, `bad-tls`,
    /// `bad-request`, `upstream-failed`, `timeout`, `unknown-caller`, `busy`.
    pub reason: Cow<'static, str>,
    /// The rule that allowed it (canonical text), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Bytes sent upstream (client to server).
    pub bytes_up: u64,
    /// Bytes sent back (server to client).
    pub bytes_down: u64,
    /// Further decisions like this one (same container, destination,
    /// outcome and reason) folded into this record, their bytes added; see
    /// [`FOLD_WINDOW`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Within this time after a decision is written, the same decision again
/// (same container, destination, port, outcome and reason) is counted, not
/// written, and one record with the count and the bytes follows when the
/// time is up: an agent hammering a name, refused or allowed, cannot rotate
/// the log's history away.
pub const FOLD_WINDOW: Duration = Duration::from_secs(10);

/// The distinct decisions of one container written per window; more are
/// folded into one record for the container (destination `*`, port 0).
const MAX_FOLDS_PER_CONTAINER: usize = 64;

/// Where decisions go.
pub trait Sink: Send + Sync {
    /// Record one decision. Must not block for long (called from the
    /// proxy's tasks).
    fn record(&self, decision: &Decision);
}

/// `s` safe to print and log: printable ASCII kept, anything else as
/// `\xNN`, at most 300 characters. Names reaching a decision are validated
/// already; this is for what was not (a bad request).
pub fn clean(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes().take(300) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The log file: appends, and rotates to `<path>.1` past `max_bytes`.
/// Decisions recorded through [`Sink`] are folded (see [`FOLD_WINDOW`]).
pub struct DecisionLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
    folds: Mutex<Folds>,
}

/// (container, destination, port, allowed, reason)
type FoldKey = (String, String, u16, bool, String);

/// Decisions written in the current window of each, and what was folded
/// since.
#[derive(Default)]
struct Folds {
    open: HashMap<FoldKey, Fold>,
}

struct Fold {
    opened: Instant,
    /// The last refusal folded, `repeats` counting the folded ones less one.
    folded: Option<Decision>,
}

impl Folds {
    /// What to write for `d` now (nothing when folded).
    fn take(&mut self, mut d: Decision, now: Instant, window: Duration) -> Vec<Decision> {
        let mut out = self.expire(now, window);
        let key_of = |d: &Decision| -> FoldKey {
            (
                d.container.clone(),
                d.host.clone(),
                d.port,
                d.allowed,
                d.reason.to_string(),
            )
        };
        let mut key = key_of(&d);
        if !self.open.contains_key(&key) {
            let of_container = self.open.keys().filter(|k| k.0 == d.container).count();
            if of_container >= MAX_FOLDS_PER_CONTAINER {
                d.host = "*".into();
                d.port = 0;
                key = key_of(&d);
            }
        }
        match self.open.get_mut(&key) {
            Some(fold) => {
                let total = match &fold.folded {
                    Some(f) => f.repeats + 1,
                    None => 0,
                };
                let (up, down) = fold
                    .folded
                    .as_ref()
                    .map_or((0, 0), |f| (f.bytes_up, f.bytes_down));
                d.bytes_up += up;
                d.bytes_down += down;
                d.repeats += total;
                fold.folded = Some(d);
            }
            None => {
                self.open.insert(
                    key,
                    Fold {
                        opened: now,
                        folded: None,
                    },
                );
                out.push(d);
            }
        }
        out
    }

    /// The folds whose window is over: their records, and room for new ones.
    fn expire(&mut self, now: Instant, window: Duration) -> Vec<Decision> {
        let mut out = Vec::new();
        self.open.retain(|_, fold| {
            if now.duration_since(fold.opened) < window {
                return true;
            }
            out.extend(fold.folded.take());
            false
        });
        out.sort_by_key(|d| d.time);
        out
    }

    /// Everything folded, now (at the end).
    fn drain(&mut self) -> Vec<Decision> {
        let mut out: Vec<Decision> = self.open.drain().filter_map(|(_, f)| f.folded).collect();
        out.sort_by_key(|d| d.time);
        out
    }
}

impl DecisionLog {
    /// Append to `path` (created 0600), rotating past `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<DecisionLog> {
        let log = DecisionLog {
            path: path.to_path_buf(),
            max_bytes,
            file: Mutex::new(None),
            folds: Mutex::new(Folds::default()),
        };
        let opened = log.open_file()?;
        if let Ok(mut f) = log.file.lock() {
            *f = Some(opened);
        }
        Ok(log)
    }

    fn open_file(&self) -> io::Result<(File, u64)> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let size = f.metadata()?.len();
        Ok((f, size))
    }

    /// The rotated file.
    pub fn old_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Append one record.
    pub fn append(&self, d: &Decision) -> io::Result<()> {
        let mut line = serde_json::to_vec(d).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .map_err(|_| io::Error::other("decision log lock poisoned"))?;
        let rotate = match &*guard {
            Some((_, size)) => *size > 0 && size + line.len() as u64 > self.max_bytes,
            None => false,
        };
        if rotate {
            *guard = None;
            std::fs::rename(&self.path, Self::old_path(&self.path))?;
        }
        if guard.is_none() {
            *guard = Some(self.open_file()?);
        }
        if let Some((f, size)) = guard.as_mut() {
            f.write_all(&line)?;
            *size += line.len() as u64;
        }
        Ok(())
    }

    /// Write the folded refusals whose window is over (called on a timer),
    /// or all of them (`all`, at the end).
    pub fn flush_folds(&self, all: bool) {
        let due = match self.folds.lock() {
            Ok(mut f) if all => f.drain(),
            Ok(mut f) => f.expire(Instant::now(), FOLD_WINDOW),
            Err(_) => return,
        };
        self.write_all(&due);
    }

    fn write_all(&self, records: &[Decision]) {
        for d in records {
            if let Err(e) = self.append(d) {
                tracing::error!("[proxy] writing the decision log: {e}");
            }
        }
    }
}

impl Sink for DecisionLog {
    fn record(&self, d: &Decision) {
        let due = match self.folds.lock() {
            Ok(mut f) => f.take(d.clone(), Instant::now(), FOLD_WINDOW),
            Err(_) => vec![d.clone()],
        };
        self.write_all(&due);
    }
}

/// The records of `path` (the rotated file first), of `container` only
/// when given. Unreadable lines are skipped.
pub fn read(path: &Path, container: Option<&str>) -> io::Result<Vec<Decision>> {
    let mut out = Vec::new();
    for p in [DecisionLog::old_path(path), path.to_path_buf()] {
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            text.split(|b| *b == b'\n')
                .filter_map(|l| parse_line(l, container)),
        );
    }
    Ok(out)
}

fn parse_line(line: &[u8], container: Option<&str>) -> Option<Decision> {
    if line.is_empty() || line.len() > MAX_LINE {
        return None;
    }
    let d: Decision = serde_json::from_slice(line).ok()?;
    match container {
        Some(c) if d.container != c => None,
        _ => Some(d),
    }
}

/// Following the log as it grows: each [`Follow::poll`] returns the
/// complete lines appended since the last. A rotation is noticed (the path
/// names another file): the old file is read to its end, then the new one
/// from its start. Two rotations between polls lose the middle file.
pub struct Follow {
    path: PathBuf,
    container: Option<String>,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Follow {
    /// Follow `path` from its current end (`from_start`: from its start),
    /// keeping `container`'s records only when given.
    pub fn new(path: &Path, container: Option<&str>, from_start: bool) -> Follow {
        let mut file = File::open(path).ok();
        if !from_start && let Some(f) = file.as_mut() {
            let _ = f.seek(SeekFrom::End(0));
        }
        Follow {
            path: path.to_path_buf(),
            container: container.map(str::to_string),
            file,
            partial: Vec::new(),
        }
    }

    /// The records appended since the last call (possibly none).
    pub fn poll(&mut self) -> io::Result<Vec<Decision>> {
        let mut out = Vec::new();
        if let Some(f) = self.file.as_mut() {
            Self::drain(f, &mut self.partial, self.container.as_deref(), &mut out)?;
        }
        // Rotated (or created since)? Then the path is another file.
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let ours = match &self.file {
            Some(f) => f.metadata().ok().map(|m| (m.dev(), m.ino())),
            None => None,
        };
        if current.is_some() && current != ours {
            self.partial.clear();
            self.file = File::open(&self.path).ok();
            if let Some(f) = self.file.as_mut() {
                Self::drain(f, &mut self.partial, self.container.as_deref(), &mut out)?;
            }
        }
        Ok(out)
    }

    /// Wait (polling every `every`) until records come, and return them.
    pub async fn next(&mut self, every: Duration) -> io::Result<Vec<Decision>> {
        loop {
            let got = self.poll()?;
            if !got.is_empty() {
                return Ok(got);
            }
            tokio::time::sleep(every).await;
        }
    }

    fn drain(
        f: &mut File,
        partial: &mut Vec<u8>,
        container: Option<&str>,
        out: &mut Vec<Decision>,
    ) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            partial.extend_from_slice(&buf[..n]);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                out.extend(parse_line(&line[..line.len() - 1], container));
            }
            if partial.len() > MAX_LINE {
                partial.clear(); // not ours: never grow without bound
            }
        }
    }
}

/// The parent a wildcard would use for `name`: its last two labels, or
/// three when the last is a two-letter country code and the one before
/// it has at most three letters (`example.co.uk`, `example.com.au`). A
/// rough stand-in for the public suffix list: good for a suggestion, which
/// the user reads before using.
fn parent_of(name: &str) -> Option<String> {
    let labels: Vec<&str> = name.split('.').collect();
    let n = labels.len();
    if n < 2 {
        return None;
    }
    let keep = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        3
    } else {
        2
    };
    if n < keep {
        return None;
    }
    Some(labels[n - keep..].join("."))
}

/// A minimal allowlist covering `records` (allowed and refused alike;
/// give one container's): each name once, with its port when it is not
/// 80 or 443; three or more distinct names under one parent (see
/// `parent_of`) on the same port become `*.parent`. Addresses are kept as
/// address rules. Unreadable requests and unknown callers are skipped.
/// Sorted.
pub fn suggest(records: &[Decision]) -> Vec<String> {
    use super::rules::{DEFAULT_PORTS, Rule, Target};
    // (name or address, port or None for the default ports)
    let mut wanted: BTreeSet<(String, Option<u16>, bool)> = BTreeSet::new();
    for d in records {
        if d.port == 0 || matches!(&*d.reason, "bad-request" | "unknown-caller") {
            continue;
        }
        let port = (!DEFAULT_PORTS.contains(&d.port)).then_some(d.port);
        let Ok(rule) = Rule::parse(&d.host, true) else {
            continue;
        };
        match rule.target {
            Target::Name(n) => wanted.insert((n, port, true)),
            Target::Net(net) => wanted.insert((net.addr().to_string(), port, false)),
            _ => false,
        };
    }
    // Distinct names strictly under each parent, per port.
    let mut under: BTreeMap<(String, Option<u16>), BTreeSet<String>> = BTreeMap::new();
    for (name, port, is_name) in &wanted {
        if let (true, Some(parent)) = (*is_name, parent_of(name))
            && parent != *name
        {
            under
                .entry((parent, *port))
                .or_default()
                .insert(name.clone());
        }
    }
    let mut out = BTreeSet::new();
    let mut collapsed = BTreeSet::new();
    for ((parent, port), names) in &under {
        if names.len() >= 3 {
            collapsed.extend(names.iter().map(|n| (n.clone(), *port)));
            out.insert(with_port(&format!("*.{parent}"), *port, true));
        }
    }
    for (name, port, is_name) in &wanted {
        if !collapsed.contains(&(name.clone(), *port)) {
            out.insert(with_port(name, *port, *is_name));
        }
    }
    out.into_iter().collect()
}

fn with_port(host: &str, port: Option<u16>, is_name: bool) -> String {
    match port {
        None => host.to_string(),
        Some(p) if !is_name && host.contains(':') => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
    }
}

/// `rules` as a configuration snippet to paste.
pub fn to_toml(rules: &[String]) -> String {
    let mut s = String::from("[network]\nallowed_domains = [\n");
    for r in rules {
        s.push_str(&format!("    {},\n", toml_string(r)));
    }
    s.push_str("]\n");
    s
}

fn toml_string(s: &str) -> String {
    // Rules are ASCII without quotes or backslashes; escape anyway.
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(container: &str, host: &str, port: u16, allowed: bool) -> Decision {
        Decision {
            time: 1,
            container: container.into(),
            host: host.into(),
            port,
            allowed,
            reason: if allowed {
                "rule".into()
            } else {
                "no-rule".into()
            },
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            repeats: 0,
        }
    }

    #[test]
    fn a_refusal_repeated_is_folded_into_one_record_per_window() {
        let mut folds = Folds::default();
        let w = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // The first is written at once; the next 99 within the window are not.
        assert_eq!(folds.take(rec("c", "x.com", 443, false), at(0), w).len(), 1);
        for i in 0..99 {
            let mut d = rec("c", "x.com", 443, false);
            d.time = 100 + i;
            assert!(folds.take(d, at(1), w).is_empty());
        }
        // Another destination, or another container, is its own.
        assert_eq!(folds.take(rec("c", "y.com", 443, false), at(2), w).len(), 1);
        assert_eq!(folds.take(rec("d", "x.com", 443, false), at(2), w).len(), 1);
        // Once the window is over, one record says how many were folded.
        let due = folds.expire(at(11), w);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].repeats, due[0].time), (98, 198));
        assert_eq!(due[0].host, "x.com");
        // And the next one is written again.
        assert_eq!(
            folds.take(rec("c", "x.com", 443, false), at(12), w).len(),
            1
        );
        assert!(folds.drain().is_empty());
    }

    #[test]
    fn allowed_connections_repeated_fold_too_with_their_bytes_added() {
        let mut folds = Folds::default();
        let w = Duration::from_secs(10);
        let now = Instant::now();
        let with_bytes = |up, down| {
            let mut d = rec("c", "x.com", 443, true);
            (d.bytes_up, d.bytes_down) = (up, down);
            d
        };
        assert_eq!(folds.take(with_bytes(1, 10), now, w).len(), 1);
        for _ in 0..3 {
            assert!(folds.take(with_bytes(2, 20), now, w).is_empty());
        }
        // A refusal of the same destination is its own record.
        assert_eq!(folds.take(rec("c", "x.com", 443, false), now, w).len(), 1);
        let rest = folds.drain();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].allowed);
        assert_eq!(
            (rest[0].repeats, rest[0].bytes_up, rest[0].bytes_down),
            (2, 6, 60)
        );
    }

    #[test]
    fn many_distinct_refusals_of_one_container_fold_into_a_catch_all() {
        let mut folds = Folds::default();
        let w = Duration::from_secs(10);
        let now = Instant::now();
        let mut written = 0;
        for i in 0..1000 {
            written += folds
                .take(rec("c", &format!("h{i}.com"), 443, false), now, w)
                .len();
        }
        // 64 names, then one catch-all record, then folded into it.
        assert_eq!(written, MAX_FOLDS_PER_CONTAINER + 1);
        let rest = folds.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].host.as_str(), rest[0].port), ("*", 0));
        assert_eq!(
            rest[0].repeats + 1 + 1,
            1000 - MAX_FOLDS_PER_CONTAINER as u64
        );
        // Another container is not affected.
        assert_eq!(folds.take(rec("e", "h1.com", 443, false), now, w).len(), 1);
    }

    #[test]
    fn the_log_is_private_and_rotates_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let log = DecisionLog::open(&path, 600).unwrap();
        for i in 0..20 {
            log.append(&rec("c1", &format!("h{i}.example.com"), 443, true))
                .unwrap();
        }
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::metadata(&path).unwrap().len() <= 600);
        assert!(DecisionLog::old_path(&path).exists());
        // Read back in order, the oldest rotated away.
        let all = read(&path, None).unwrap();
        assert!(all.len() < 20 && all.len() >= 4, "{}", all.len());
        assert_eq!(all.last().unwrap().host, "h19.example.com");
        let hosts: Vec<_> = all.iter().map(|d| d.host.clone()).collect();
        let mut sorted = hosts.clone();
        sorted.sort_by_key(|h| h[1..h.find('.').unwrap()].parse::<u32>().unwrap());
        assert_eq!(hosts, sorted);
    }

    #[test]
    fn reading_filters_by_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = DecisionLog::open(&path, DEFAULT_MAX_BYTES).unwrap();
        log.append(&rec("a", "x.com", 443, true)).unwrap();
        log.append(&rec("b", "y.com", 443, false)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        log.append(&rec("a", "z.com", 22, false)).unwrap();
        let a = read(&path, Some("a")).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].host, "z.com");
    }

    #[test]
    fn following_sees_appends_partial_lines_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = DecisionLog::open(&path, 400).unwrap();
        log.append(&rec("a", "before.com", 443, true)).unwrap();
        let mut follow = Follow::new(&path, Some("a"), false);
        assert!(follow.poll().unwrap().is_empty());
        log.append(&rec("a", "one.com", 443, true)).unwrap();
        log.append(&rec("b", "other.com", 443, true)).unwrap();
        let got = follow.poll().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].host, "one.com");
        // A line written in two pieces is returned once complete.
        let line = serde_json::to_string(&rec("a", "split.com", 443, true)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&line.as_bytes()[..10]).unwrap();
        assert!(follow.poll().unwrap().is_empty());
        f.write_all(&line.as_bytes()[10..]).unwrap();
        f.write_all(b"\n").unwrap();
        assert_eq!(follow.poll().unwrap()[0].host, "split.com");
        // Rotation: nothing lost, nothing twice.
        let mut seen = Vec::new();
        for i in 0..6 {
            log.append(&rec("a", &format!("r{i}.com"), 443, true))
                .unwrap();
            if i % 2 == 1 {
                seen.extend(follow.poll().unwrap().into_iter().map(|d| d.host));
            }
        }
        assert!(DecisionLog::old_path(&path).exists());
        let want: Vec<String> = (0..6).map(|i| format!("r{i}.com")).collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn following_waits_for_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = std::sync::Arc::new(DecisionLog::open(&path, DEFAULT_MAX_BYTES).unwrap());
        let mut follow = Follow::new(&path, None, true);
        let writer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.append(&rec("a", "late.com", 443, true)).unwrap();
        });
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            follow.next(Duration::from_millis(10)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got[0].host, "late.com");
    }

    #[test]
    fn suggestions_collapse_three_subdomains_and_keep_odd_ports() {
        let records = vec![
            rec("a", "api.github.com", 443, true),
            rec("a", "codeload.github.com", 443, false),
            rec("a", "objects.github.com", 443, false),
            rec("a", "github.com", 443, true),
            rec("a", "github.com", 22, false),
            rec("a", "pypi.org", 443, false),
            rec("a", "files.pythonhosted.org", 443, true),
            rec("a", "a.example.co.uk", 443, true),
            rec("a", "b.example.co.uk", 80, true),
            rec("a", "c.example.co.uk", 443, false),
            rec("a", "x.one.com", 8443, true),
            rec("a", "y.one.com", 443, true),
            rec("a", "z.one.com", 443, true),
            rec("a", "192.0.2.7", 5432, false),
            rec("a", "2001:db8::1", 8080, false),
            rec("a", "", 0, false),
        ];
        let got = suggest(&records);
        assert_eq!(
            got,
            vec![
                "*.example.co.uk",
                "*.github.com",
                "192.0.2.7:5432",
                "[2001:db8::1]:8080",
                "files.pythonhosted.org",
                "github.com",
                "github.com:22",
                "pypi.org",
                "x.one.com:8443",
                "y.one.com",
                "z.one.com",
            ]
        );
        // Every suggestion is a rule an untrusted configuration accepts.
        for r in &got {
            crate::proxy::Rule::parse(r, false).unwrap();
        }
        let toml = to_toml(&got);
        let parsed: toml::Value = toml::from_str(&toml).unwrap();
        assert_eq!(
            parsed["network"]["allowed_domains"]
                .as_array()
                .unwrap()
                .len(),
            11
        );
    }

    #[test]
    fn clean_escapes_control_and_non_ascii() {
        assert_eq!(clean("a\nb\x1b[31mé"), "a\\x0ab\\x1b[31m\\xc3\\xa9");
    }
}

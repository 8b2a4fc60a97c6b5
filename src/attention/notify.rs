//! Telling the user when a slot wants them (`[notify]`): a host program, a
//! webhook, or (in `cci status`) the terminal bell, when an agent starts
//! waiting, finishes its turn, exits, or its container stops. Debounced: a
//! change is told only once it has held for [`DEBOUNCE`], so a flicker
//! (waiting, then working again at once) tells nothing. A notifier that
//! fails or hangs is logged and given up on; it never touches a session.
//!
//! The background notifier (`cci events --notify`, started by `cci shell`
//! when a command or webhook is configured) is one per user, and ends once
//! no cci container has run for [`IDLE_EXIT`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{AgentState, Event};
use crate::config::Notify as Settings;
use crate::config::schema::NotifyOn;

/// How long a change must hold before it is told.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// The longest a notifier program or webhook may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The background notifier ends after this long with nothing running.
pub const IDLE_EXIT: Duration = Duration::from_secs(120);

/// The kind of notification an event is, if any.
pub fn kind(e: &Event) -> Option<NotifyOn> {
    match e.event.as_str() {
        "waiting" => Some(NotifyOn::Waiting),
        "idle" if e.from == Some(AgentState::Working) => Some(NotifyOn::Finished),
        "exited" => Some(NotifyOn::Exited),
        "stopped" if e.from.is_some_and(|f| f != AgentState::Stopped) => Some(NotifyOn::Stopped),
        _ => None,
    }
}

/// The one-line message of a notification.
pub fn message(e: &Event, k: NotifyOn) -> String {
    let ws = e
        .workspace
        .rsplit('/')
        .find(|p| !p.is_empty())
        .unwrap_or("");
    let what = match k {
        NotifyOn::Waiting => "waits for you",
        NotifyOn::Finished => "finished its turn",
        NotifyOn::Exited => "exited",
        NotifyOn::Stopped => "stopped",
    };
    let agent = if e.agent.is_empty() {
        "session"
    } else {
        &e.agent
    };
    let mut m = format!("{agent} in {ws} (slot {}, {}) {what}", e.slot, e.container);
    if !e.detail.is_empty() {
        m.push_str(": ");
        m.push_str(&e.detail);
    }
    crate::config::printable(&m)
}

/// What a notifier gets as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `waiting`, `finished`, `exited` or `stopped`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
    /// The change that made it.
    pub event: Event,
}

/// The most notices one container sends per [`RATE_WINDOW`] (an agent
/// making its state flicker cannot flood the user).
pub const RATE: usize = 6;
/// (see [`RATE`])
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Debounce bookkeeping: the pending notice of each container, and when
/// each sent its last ones.
#[derive(Debug, Default)]
pub struct Debounce {
    pending: HashMap<String, (Notice, Instant)>,
    sent: HashMap<String, Vec<Instant>>,
}

impl Debounce {
    /// Take in a tick's events (`on`: the kinds wanted).
    pub fn observe(&mut self, events: &[Event], on: &[NotifyOn], now: Instant) {
        for e in events {
            if e.event == "blocked" {
                continue;
            }
            match kind(e).filter(|k| on.contains(k)) {
                Some(k) => {
                    let notice = Notice {
                        kind: k.word(),
                        message: message(e, k),
                        event: e.clone(),
                    };
                    self.pending.insert(e.container.clone(), (notice, now));
                }
                // Any other change takes back what was pending.
                None => {
                    self.pending.remove(&e.container);
                }
            }
        }
    }

    /// The notices that have held long enough.
    pub fn due(&mut self, now: Instant) -> Vec<Notice> {
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= DEBOUNCE)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Notice> = Vec::new();
        for k in &ready {
            let Some((n, _)) = self.pending.remove(k) else {
                continue;
            };
            let sent = self.sent.entry(k.clone()).or_default();
            sent.retain(|t| now.duration_since(*t) < RATE_WINDOW);
            if sent.len() < RATE {
                sent.push(now);
                out.push(n);
            } else {
                tracing::info!("{k}: more than {RATE} notices a minute; this one dropped");
            }
        }
        out.sort_by_key(|n| n.event.time);
        out
    }
}

/// Tell `settings`' program and webhook about `n`; failures are logged.
pub async fn send(settings: &Settings, http: &reqwest::Client, n: &Notice) {
    let body = serde_json::to_vec(n).unwrap_or_default();
    if let Some((program, args)) = settings.command.split_first()
        && let Err(e) = run(program, args, &n.message, &body).await
    {
        tracing::warn!("notify command {program}: {e}");
    }
    if let Some(url) = &settings.webhook {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .timeout(TIMEOUT)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {}
            // The URL may hold a token: only its host is logged.
            Ok(r) => tracing::warn!("notify webhook {}: HTTP {}", host_of(url), r.status()),
            Err(_) => tracing::warn!("notify webhook {}: not reached", host_of(url)),
        }
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// Run the program with the message as its last argument and the notice
/// on its input; killed after [`TIMEOUT`].
async fn run(program: &str, args: &[String], message: &str, json: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(message)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is fine.
        let _ = tokio::time::timeout(TIMEOUT, stdin.write_all(json)).await;
    }
    match tokio::time::timeout(TIMEOUT, child.wait()).await {
        Ok(status) => {
            let status = status?;
            if status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("ended with {status}")))
            }
        }
        Err(_) => {
            let _ = child.kill().await;
            Err(std::io::Error::other("took too long; killed"))
        }
    }
}

/// The lock held by the one background notifier of this user.
fn lock() -> std::io::Result<std::fs::File> {
    crate::state::lock_file("", "notify.lock")
}

/// Start the background notifier unless one runs (or nothing is to be told).
pub fn spawn(settings: &Settings) -> std::io::Result<()> {
    if !settings.has_notifier() {
        return Ok(());
    }
    if lock()?.try_lock().is_err() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    // It serves this user's sessions on the local daemon.
    cmd.args(["events", "--notify", "--remote", "local"])
        .env_remove("CCI_REMOTE");
    crate::state::spawn_daemon(cmd, "notify.log")
}

/// The background notifier: watch every slot and tell; end after
/// [`IDLE_EXIT`] with no cci container running. One per user.
pub async fn serve(host: &crate::host::Host) -> anyhow::Result<()> {
    let lock = lock()?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    let settings = host.config.notify.clone();
    crate::incus::tls_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut watch = super::Watch::new(host);
    let mut debounce = Debounce::default();
    let mut last_running = Instant::now();
    loop {
        match watch.tick().await {
            Ok((rows, events)) => {
                let now = Instant::now();
                if rows
                    .iter()
                    .any(|r| r.status == crate::incus::InstanceStatus::Running)
                {
                    last_running = now;
                }
                debounce.observe(&events, &settings.on, now);
                for n in debounce.due(now) {
                    tracing::info!("{}: {}", n.kind, n.message);
                    send(&settings, &http, &n).await;
                }
            }
            Err(e) => tracing::warn!("looking at the containers: {e}"),
        }
        if last_running.elapsed() > IDLE_EXIT {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(container: &str, event: &str, from: Option<AgentState>) -> Event {
        Event {
            time: 1,
            container: container.into(),
            workspace: "/home/u/proj".into(),
            slot: 2,
            agent: "claude".into(),
            event: event.into(),
            from,
            detail: String::new(),
        }
    }

    #[test]
    fn the_changes_that_notify() {
        use AgentState::*;
        assert_eq!(
            kind(&ev("a", "waiting", Some(Working))),
            Some(NotifyOn::Waiting)
        );
        assert_eq!(
            kind(&ev("a", "idle", Some(Working))),
            Some(NotifyOn::Finished)
        );
        assert_eq!(kind(&ev("a", "idle", Some(Waiting))), None);
        assert_eq!(kind(&ev("a", "exited", Some(Idle))), Some(NotifyOn::Exited));
        assert_eq!(
            kind(&ev("a", "stopped", Some(Idle))),
            Some(NotifyOn::Stopped)
        );
        assert_eq!(kind(&ev("a", "stopped", None)), None);
        assert_eq!(kind(&ev("a", "working", Some(Idle))), None);
        assert_eq!(
            message(&ev("cci-x-2", "waiting", None), NotifyOn::Waiting),
            "claude in proj (slot 2, cci-x-2) waits for you"
        );
    }

    #[test]
    fn a_change_is_told_once_it_held_and_a_flicker_not_at_all() {
        use AgentState::*;
        let all = NotifyOn::ALL;
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.observe(&[ev("a", "waiting", Some(Working))], &all, t0);
        assert!(d.due(t0 + Duration::from_secs(1)).is_empty());
        // Working again at once: nothing to tell.
        d.observe(
            &[ev("a", "working", Some(Waiting))],
            &all,
            t0 + Duration::from_secs(1),
        );
        assert!(d.due(t0 + Duration::from_secs(5)).is_empty());
        d.observe(
            &[
                ev("a", "waiting", Some(Working)),
                ev("b", "exited", Some(Idle)),
            ],
            &all,
            t0,
        );
        let due = d.due(t0 + DEBOUNCE);
        assert_eq!(due.len(), 2);
        assert!(d.due(t0 + DEBOUNCE * 3).is_empty(), "told once");
        // At most RATE a minute from one container.
        let mut d = Debounce::default();
        let mut told = 0;
        for i in 0..20u32 {
            let at = t0 + Duration::from_secs(u64::from(i) * 3);
            d.observe(&[ev("f", "waiting", Some(Working))], &all, at);
            told += d.due(at + DEBOUNCE).len();
        }
        assert_eq!(told, RATE);
        let mut d = Debounce::default();
        // Kinds not wanted are not told.
        d.observe(
            &[ev("a", "waiting", Some(Working))],
            &[NotifyOn::Exited],
            t0,
        );
        assert!(d.due(t0 + DEBOUNCE).is_empty());
    }

    #[tokio::test]
    async fn a_failing_or_hanging_program_is_given_up_on() {
        let e = run("false", &[], "m", b"{}").await.unwrap_err();
        assert!(e.to_string().contains("ended with"), "{e}");
        assert!(run("/no/such/program", &[], "m", b"{}").await.is_err());
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let script = format!(
            "cat > {}; printf '%s' \"$0\" >> {}",
            out.display(),
            out.display()
        );
        run("sh", &["-c".into(), script], "the message", b"{\"kind\":1}")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"kind\":1}the message"
        );
    }
}

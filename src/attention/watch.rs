//! Watching every slot: one monitor exec per session, held open and
//! restarted when it ends while the container runs; one batched daemon
//! query per tick for the containers themselves; each tick's rows and the
//! changes since the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::probe::{self, Probe};
use super::{AgentState, Blocked, Row, apply, base_row, containers, now};
use crate::host::Host;
use crate::incus::{self, Client};

/// Seconds between a monitor's looks inside the container.
const LOOK_EVERY: u32 = 1;
/// How long a tick waits for a new session's first look.
const FIRST_LOOK: Duration = Duration::from_millis(1500);
/// How soon a monitor that ended is started again.
const RESTART_AFTER: Duration = Duration::from_secs(3);

/// Every so many ticks, whether the daemon is going away (see `tick`).
const GOING_AWAY_EVERY: u32 = 2;
/// Every this many ticks the containers' CPU and memory are asked for too
/// (the daemon gathers every container's whole state for it: ten times
/// the cost of the list alone); the ticks between show the last figures.
const STATE_EVERY: u32 = 5;

/// One change of one slot.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When it was seen (Unix milliseconds).
    pub time: u64,
    /// The container.
    pub container: String,
    /// Its workspace.
    pub workspace: String,
    /// Its slot.
    pub slot: u32,
    /// Its agent.
    pub agent: String,
    /// What happened: a state's word (`working`, `waiting`, `idle`,
    /// `exited`, `starting`, `running`, `stopped`), `removed` (the
    /// container is gone) or `blocked` (a network request was refused).
    pub event: String,
    /// The state before (for state changes; absent for a container first
    /// seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<AgentState>,
    /// The notification, exit status, or refused destination.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A monitor's shared slot: its last look, and whether it still runs.
#[derive(Default)]
struct Seen {
    look: Option<Probe>,
    /// Every look since the last tick (bounded), so a state shorter than a
    /// tick still makes its event.
    queue: Vec<Probe>,
    ended: Option<Instant>,
}

/// Watches every slot; [`Watch::tick`] gives the rows and the changes.
pub struct Watch {
    client: Client,
    account: crate::config::Account,
    monitors: HashMap<String, (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)>,
    /// The daemon was going away at the last look.
    going: bool,
    cpu: HashMap<String, (f64, Instant)>,
    /// The last CPU and memory figures: (cpu seconds, percent, memory).
    usage: HashMap<String, (f64, Option<f64>, u64)>,
    ticks: u32,
    last: HashMap<String, Row>,
    blocked: Blocked,
    follow: Option<crate::proxy::log::Follow>,
    first: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for (_, (_, task)) in self.monitors.drain() {
            task.abort();
        }
    }
}

impl Watch {
    /// A watch over `host`'s containers.
    pub fn new(host: &Host) -> Watch {
        let path = crate::network::egress::decisions_log().ok();
        let mut blocked = Blocked::default();
        if let Some(p) = &path {
            blocked.add(&crate::proxy::log::read(p, None).unwrap_or_default());
        }
        Watch {
            client: host.client.clone(),
            account: host.config.account.clone(),
            monitors: HashMap::new(),
            going: false,
            cpu: HashMap::new(),
            usage: HashMap::new(),
            ticks: 0,
            last: HashMap::new(),
            blocked,
            follow: path.map(|p| crate::proxy::log::Follow::new(&p, None, false)),
            first: true,
        }
    }

    /// Start a monitor for `name`'s session, unless one runs (or ended
    /// moments ago).
    fn keep_monitor(&mut self, name: &str, account: &crate::config::Account) {
        if let Some((seen, task)) = self.monitors.get(name) {
            let ended = seen.lock().map(|s| s.ended).unwrap_or(None);
            match ended {
                None if !task.is_finished() => return,
                Some(t) if t.elapsed() < RESTART_AFTER => return,
                _ => {}
            }
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (client, container, account, shared) = (
            self.client.clone(),
            name.to_string(),
            account.clone(),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            let each = |p: Probe| {
                if let Ok(mut s) = shared.lock() {
                    if s.queue.len() < 64 {
                        s.queue.push(p.clone());
                    }
                    s.look = Some(p);
                }
                true
            };
            let _ = probe::stream(&client, &container, &account, LOOK_EVERY, each).await;
            if let Ok(mut s) = shared.lock() {
                s.ended = Some(Instant::now());
            }
        });
        // A restarted monitor keeps showing the last look until a new one.
        if let Some((old, _)) = self.monitors.get(name)
            && let (Ok(old), Ok(mut new)) = (old.lock(), seen.lock())
        {
            new.look = old.look.clone();
        }
        self.monitors.insert(name.to_string(), (seen, task));
    }

    fn look_of(&self, name: &str) -> Option<Probe> {
        let (seen, _) = self.monitors.get(name)?;
        seen.lock().ok()?.look.clone()
    }

    /// The looks at `name` since the last call.
    fn queued(&self, name: &str) -> Vec<Probe> {
        self.monitors
            .get(name)
            .and_then(|(seen, _)| seen.lock().ok().map(|mut s| std::mem::take(&mut s.queue)))
            .unwrap_or_default()
    }

    /// Look at everything now: the rows, and what changed since the last
    /// tick (nothing on the first).
    pub async fn tick(&mut self) -> incus::Result<(Vec<Row>, Vec<Event>)> {
        let began = Instant::now();
        // A daemon that shuts down waits for running execs to end: the
        // monitors let go of it as soon as it starts to (a restart, an
        // upgrade), and start again once it answers.
        if self.going || (!self.monitors.is_empty() && self.ticks.is_multiple_of(GOING_AWAY_EVERY))
        {
            self.going = self.client.going_away().await;
            if self.going {
                // Their last looks stay: shown, and compared with, until
                // the restarted monitors look again.
                for (_, task) in self.monitors.values() {
                    task.abort();
                }
                self.ticks = self.ticks.wrapping_add(1);
                return Err(incus::Error::ShuttingDown);
            }
        }
        // Fresh figures now and then, and whenever a container is new.
        let with_state = self.ticks.is_multiple_of(STATE_EVERY);
        self.ticks = self.ticks.wrapping_add(1);
        let mut all = match containers(&self.client, &self.account, with_state).await {
            Ok(all) => all,
            // The daemon fails the whole stateful list when one container
            // goes while it gathers: the list alone then.
            Err(e) if with_state => {
                tracing::debug!("the containers' state: {e}");
                containers(&self.client, &self.account, false).await?
            }
            Err(e) => return Err(e),
        };
        if !with_state
            && all.iter().any(|(s, _)| {
                s.state == crate::incus::InstanceStatus::Running
                    && !self.usage.contains_key(&s.name)
            })
            && let Ok(fresh) = containers(&self.client, &self.account, true).await
        {
            all = fresh;
        }
        let with_state = with_state || all.iter().any(|(_, i)| i.state.is_some());
        let mut rows: Vec<Row> = all.iter().map(|(s, i)| base_row(s, i)).collect();
        // Monitors for the sessions; none for the rest.
        let wanted: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].has_session()).collect();
        for &i in &wanted {
            self.keep_monitor(&rows[i].name, &all[i].0.account);
        }
        self.monitors.retain(|name, (_, task)| {
            let keep = wanted.iter().any(|&i| &rows[i].name == name);
            if !keep {
                task.abort();
            }
            keep
        });
        // New sessions: their first look, briefly awaited.
        let deadline = Instant::now() + FIRST_LOOK;
        while Instant::now() < deadline
            && wanted.iter().any(|&i| {
                self.look_of(&rows[i].name).is_none() && self.monitor_alive(&rows[i].name)
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut events = Vec::new();
        let new_blocked = match self.follow.as_mut() {
            Some(f) => f.poll().unwrap_or_default(),
            None => Vec::new(),
        };
        self.blocked.add(&new_blocked);
        let now = now();
        let millis = now * 1000;
        for ((info, _), row) in all.iter().zip(rows.iter_mut()) {
            // What the row was, then each look since, then what it is.
            let mut prev = self
                .last
                .get(&row.name)
                .map(|b| (b.state, b.detail.clone()));
            let mut change = |row: &Row, prev: &mut Option<(AgentState, String)>| {
                let now_is = (row.state, row.detail.clone());
                if prev.as_ref() != Some(&now_is) {
                    if !self.first {
                        events.push(Event {
                            time: millis,
                            container: row.name.clone(),
                            workspace: row.workspace.clone(),
                            slot: row.slot,
                            agent: row.agent.clone(),
                            event: row.state.word().into(),
                            from: prev.as_ref().map(|p| p.0),
                            detail: row.detail.clone(),
                        });
                    }
                    *prev = Some(now_is);
                }
            };
            if row.has_session() {
                let queued = self.queued(&row.name);
                let n = queued.len();
                for look in queued.iter().take(n.saturating_sub(1)) {
                    let mut between = row.clone();
                    apply(&mut between, look, now);
                    change(&between, &mut prev);
                }
                if let Some(p) = self.look_of(&row.name) {
                    apply(row, &p, now);
                }
            }
            change(row, &mut prev);
            row.blocked = self.blocked.since(&row.name, &info.last_started);
            if with_state {
                let at = Instant::now();
                if let Some((cpu, when)) = self.cpu.insert(row.name.clone(), (row.cpu_seconds, at))
                {
                    let wall = at.duration_since(when).as_secs_f64();
                    if wall > 0.05 && row.cpu_seconds >= cpu {
                        row.cpu_percent = Some((row.cpu_seconds - cpu) / wall * 100.0);
                    }
                }
                if row.status == crate::incus::InstanceStatus::Running {
                    self.usage.insert(
                        row.name.clone(),
                        (row.cpu_seconds, row.cpu_percent, row.memory_bytes),
                    );
                } else {
                    self.usage.remove(&row.name);
                }
            } else if let Some((cpu, pct, mem)) = self.usage.get(&row.name) {
                row.cpu_seconds = *cpu;
                row.cpu_percent = *pct;
                row.memory_bytes = *mem;
            }
        }
        for (name, gone) in &self.last {
            if !rows.iter().any(|r| &r.name == name) {
                events.push(Event {
                    time: millis,
                    container: name.clone(),
                    workspace: gone.workspace.clone(),
                    slot: gone.slot,
                    agent: gone.agent.clone(),
                    event: "removed".into(),
                    from: Some(gone.state),
                    detail: String::new(),
                });
            }
        }
        for d in new_blocked.iter().filter(|d| !d.allowed) {
            if let Some(row) = rows.iter().find(|r| r.name == d.container) {
                events.push(Event {
                    time: d.time,
                    container: row.name.clone(),
                    workspace: row.workspace.clone(),
                    slot: row.slot,
                    agent: row.agent.clone(),
                    event: "blocked".into(),
                    from: None,
                    detail: format!("{}:{} ({})", d.host, d.port, d.reason),
                });
            }
        }
        self.cpu.retain(|n, _| rows.iter().any(|r| &r.name == n));
        self.usage.retain(|n, _| rows.iter().any(|r| &r.name == n));
        self.last = rows.iter().map(|r| (r.name.clone(), r.clone())).collect();
        self.first = false;
        // (tests/bench/status-20-containers.sh reads this.)
        tracing::debug!(
            "attention tick: {} us for {} containers",
            began.elapsed().as_micros(),
            rows.len()
        );
        Ok((rows, events))
    }

    fn monitor_alive(&self, name: &str) -> bool {
        self.monitors
            .get(name)
            .is_some_and(|(_, task)| !task.is_finished())
    }
}

//! Asking the user (`on_unknown = ask`): a connection no rule allows is
//! held as a pending request until the user approves it (through the
//! control channel) or the wait runs out (refused). Bounded: at most
//! [`MAX_PENDING`] requests wait at once, [`MAX_PENDING_PER_CONTAINER`] of
//! one container; more are refused at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::rules::Rule;

/// How long a request waits for the user by default.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The most requests waiting at once.
pub const MAX_PENDING: usize = 256;

/// The most requests of one container waiting at once (so one container
/// cannot crowd the others out).
pub const MAX_PENDING_PER_CONTAINER: usize = 16;

/// A request waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Short and unique while the proxy runs (`a1`, `a2`...).
    pub id: String,
    /// Who asks.
    pub container: String,
    /// Where to (a normalized name or an address).
    pub host: String,
    /// Which port.
    pub port: u16,
    /// Since when, Unix milliseconds.
    pub since: u64,
}

/// Called on an `always` approval: add `rule` to `container`'s live policy.
pub type AddRule = Box<dyn Fn(&str, &Rule) + Send + Sync>;

struct Waiting {
    info: Pending,
    answer: oneshot::Sender<()>,
}

/// The pending requests.
pub struct Approvals {
    timeout: Duration,
    next: AtomicU64,
    waiting: Mutex<HashMap<String, Waiting>>,
    add_rule: AddRule,
}

impl Approvals {
    /// Requests wait up to `timeout`; `add_rule` makes an `always`
    /// approval stick.
    pub fn new(timeout: Duration, add_rule: AddRule) -> Approvals {
        Approvals {
            timeout,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            add_rule,
        }
    }

    /// Hold `container`'s request for `host:port` until approved (true) or
    /// timed out (false).
    pub async fn ask(&self, container: &str, host: &str, port: u16) -> bool {
        let id = format!("a{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        {
            let Ok(mut waiting) = self.waiting.lock() else {
                return false;
            };
            let mine = waiting
                .values()
                .filter(|w| w.info.container == container)
                .count();
            if waiting.len() >= MAX_PENDING || mine >= MAX_PENDING_PER_CONTAINER {
                return false;
            }
            let info = Pending {
                id: id.clone(),
                container: container.to_string(),
                host: host.to_string(),
                port,
                since: super::now_ms(),
            };
            tracing::info!(
                "[proxy] {container} asks for {host}:{port}: `cci network approve {id}`"
            );
            waiting.insert(id.clone(), Waiting { info, answer: tx });
        }
        let approved = matches!(tokio::time::timeout(self.timeout, rx).await, Ok(Ok(())));
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&id);
        }
        approved
    }

    /// Let request `id` through; with `always`, every later one for the same
    /// destination too (a rule is added to the container's policy, and the
    /// others waiting for it now go through). False: no such request.
    pub fn approve(&self, id: &str, always: bool) -> bool {
        let Ok(mut waiting) = self.waiting.lock() else {
            return false;
        };
        let Some(w) = waiting.remove(id) else {
            return false;
        };
        let _ = w.answer.send(());
        if always {
            let rule = rule_for(&w.info.host, w.info.port);
            if let Some(rule) = &rule {
                (self.add_rule)(&w.info.container, rule);
            }
            let same: Vec<String> = waiting
                .values()
                .filter(|o| {
                    o.info.container == w.info.container
                        && o.info.host == w.info.host
                        && o.info.port == w.info.port
                })
                .map(|o| o.info.id.clone())
                .collect();
            for id in same {
                if let Some(o) = waiting.remove(&id) {
                    let _ = o.answer.send(());
                }
            }
        }
        true
    }

    /// The requests waiting now, oldest first.
    pub fn pending(&self) -> Vec<Pending> {
        let mut out: Vec<Pending> = match self.waiting.lock() {
            Ok(w) => w.values().map(|w| w.info.clone()).collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by_key(|p| (p.since, p.id.len(), p.id.clone()));
        out
    }
}

/// The rule an `always` approval adds: the exact name (or address) without
/// a port for 80 and 443 (so TLS on 443 keeps its SNI check), with the port
/// otherwise.
pub fn rule_for(host: &str, port: u16) -> Option<Rule> {
    let text = if super::rules::DEFAULT_PORTS.contains(&port) {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Rule::parse(&text, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn approval_lets_one_through_and_always_adds_a_rule() {
        let added = Arc::new(Mutex::new(Vec::new()));
        let sink = added.clone();
        let approvals = Arc::new(Approvals::new(
            Duration::from_secs(5),
            Box::new(move |c, r| sink.lock().unwrap().push(format!("{c} {r}"))),
        ));
        let a = approvals.clone();
        let first = tokio::spawn(async move { a.ask("c1", "x.example.com", 443).await });
        let a = approvals.clone();
        let second = tokio::spawn(async move { a.ask("c1", "x.example.com", 443).await });
        while approvals.pending().len() < 2 {
            tokio::task::yield_now().await;
        }
        let ids: Vec<String> = approvals.pending().into_iter().map(|p| p.id).collect();
        assert!(!approvals.approve("nope", false));
        assert!(approvals.approve(&ids[0], true));
        assert!(first.await.unwrap());
        assert!(second.await.unwrap());
        assert!(approvals.pending().is_empty());
        assert_eq!(*added.lock().unwrap(), vec!["c1 x.example.com".to_string()]);
    }

    #[tokio::test]
    async fn unanswered_requests_time_out_refused() {
        let approvals = Approvals::new(Duration::from_millis(20), Box::new(|_, _| {}));
        assert!(!approvals.ask("c1", "x.example.com", 22).await);
        assert!(approvals.pending().is_empty());
    }

    #[tokio::test]
    async fn one_container_cannot_hold_every_slot() {
        let approvals = Arc::new(Approvals::new(Duration::from_secs(5), Box::new(|_, _| {})));
        for i in 0..MAX_PENDING_PER_CONTAINER {
            let a = approvals.clone();
            tokio::spawn(async move { a.ask("greedy", &format!("h{i}.com"), 443).await });
        }
        while approvals.pending().len() < MAX_PENDING_PER_CONTAINER {
            tokio::task::yield_now().await;
        }
        assert!(!approvals.ask("greedy", "one-more.com", 443).await);
        let a = approvals.clone();
        let other = tokio::spawn(async move { a.ask("other", "x.com", 443).await });
        while approvals.pending().len() <= MAX_PENDING_PER_CONTAINER {
            tokio::task::yield_now().await;
        }
        let id = approvals
            .pending()
            .into_iter()
            .find(|p| p.container == "other")
            .unwrap()
            .id;
        assert!(approvals.approve(&id, false));
        assert!(other.await.unwrap());
    }

    #[test]
    fn always_rules_keep_odd_ports() {
        let s = |h, p| rule_for(h, p).map(|r| r.to_string());
        assert_eq!(s("a.com", 443).as_deref(), Some("a.com"));
        assert_eq!(s("a.com", 22).as_deref(), Some("a.com:22"));
        assert_eq!(s("2001:db8::1", 22).as_deref(), Some("[2001:db8::1]:22"));
    }
}

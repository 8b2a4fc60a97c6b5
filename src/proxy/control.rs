//! The control channel: how cci tells the running proxy which container
//! sits at which address and what it may reach, and how the user answers
//! pending requests. JSON lines over a Unix socket (one request, one
//! response, possibly several per connection), private to the proxy's
//! user: the socket is 0600 in a 0700 directory, and every peer's
//! credentials are checked (same uid, or root).
//!
//! The [`Registry`] is the proxy's live table (caller address ->
//! container -> policy), kept in a state file (written atomically) so a
//! restarted proxy gets its policies back.
//!
//! `Deny` removes a rule (as written, compared in canonical form); it does
//! not add a deny override: rules only ever allow, so removing the rule is
//! the whole of denying. Connections already open stay open.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::approvals::{Approvals, Pending};
use super::rules::{OnUnknown, Policy, Rule, canonical_ip};
use super::server::Policies;

/// The longest request or response line.
const MAX_LINE: u64 = 1024 * 1024;
/// How long one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What cci asks the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Add a rule to a running container's policy.
    Allow {
        /// The container.
        container: String,
        /// The rule (as cci validated it).
        rule: String,
    },
    /// Remove a rule from a running container's policy.
    Deny {
        /// The container.
        container: String,
        /// The rule, as it was allowed (compared in canonical form).
        rule: String,
    },
    /// A proxy-mode container starts (or its policy is replaced whole).
    SetPolicy {
        /// The container.
        container: String,
        /// Its addresses on the bridge (the callers it connects from).
        addresses: Vec<IpAddr>,
        /// Its rules.
        rules: Vec<String>,
        /// What happens to unlisted destinations.
        #[serde(default)]
        on_unknown: OnUnknown,
    },
    /// A container stopped: forget it.
    Forget {
        /// The container.
        container: String,
    },
    /// The requests waiting for approval.
    Pending,
    /// Approve a waiting request.
    Approve {
        /// Its id.
        id: String,
        /// Also every later request for the same destination (adds a rule).
        #[serde(default)]
        always: bool,
    },
    /// Is the proxy there?
    Ping,
    /// The addresses the proxy listens on now.
    Listening,
}

/// What the proxy answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// The requests waiting for approval.
    Pending {
        /// Oldest first.
        requests: Vec<Pending>,
    },
    /// The addresses listened on.
    Listening {
        /// Each bound by this proxy.
        addresses: Vec<std::net::SocketAddr>,
    },
    /// Not done, and why.
    Error {
        /// For the user.
        message: String,
    },
}

/// Why a control request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No proxy listens there.
    #[error("cannot reach the cci proxy at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The exchange failed.
    #[error("talking to the cci proxy: {0}")]
    Io(#[from] io::Error),
    /// The proxy answered something unreadable.
    #[error("the cci proxy answered something unreadable: {0}")]
    Protocol(String),
    /// It took too long.
    #[error("the cci proxy did not answer within {0:?}")]
    Timeout(Duration),
}

/// Send `req` to the proxy at `socket`, and return its answer.
pub async fn request(socket: &Path, req: &Request) -> Result<Response, Error> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|source| Error::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
        let mut line = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream).take(MAX_LINE);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        serde_json::from_str(&answer).map_err(|e| Error::Protocol(e.to_string()))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| Error::Timeout(TIMEOUT))?
}

/// Listen at `path`: its directory made 0700, a stale socket replaced,
/// the socket 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answer requests on `listener` until it fails.
pub async fn serve_control(
    listener: UnixListener,
    registry: Arc<Registry>,
    approvals: Arc<Approvals>,
) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("[proxy] control accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if !peer.is_some_and(|uid| uid == own || uid == 0) {
            tracing::warn!("[proxy] control connection from uid {peer:?} refused");
            continue;
        }
        let registry = registry.clone();
        let approvals = approvals.clone();
        tokio::spawn(async move {
            let _ = converse(stream, &registry, &approvals).await;
        });
    }
}

/// One control connection: requests in, answers out, until EOF.
async fn converse(
    stream: UnixStream,
    registry: &Registry,
    approvals: &Approvals,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(
            Duration::from_secs(60),
            (&mut reader).take(MAX_LINE).read_line(&mut line),
        )
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => answer(req, registry, approvals),
            Err(e) => Response::Error {
                message: format!("unreadable request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        if !line.ends_with('\n') {
            return Ok(()); // cut at the bound: no more lines from it
        }
    }
}

/// Carry out one request.
pub fn answer(req: Request, registry: &Registry, approvals: &Approvals) -> Response {
    let done = |r: Result<(), String>| match r {
        Ok(()) => Response::Ok,
        Err(message) => Response::Error { message },
    };
    match req {
        Request::Ping => Response::Ok,
        Request::Listening => Response::Listening {
            addresses: registry.listening(),
        },
        Request::Allow { container, rule } => done(registry.allow(&container, &rule)),
        Request::Deny { container, rule } => done(registry.deny(&container, &rule)),
        Request::SetPolicy {
            container,
            addresses,
            rules,
            on_unknown,
        } => done(registry.set(&container, &addresses, &rules, on_unknown)),
        Request::Forget { container } => done(registry.forget(&container)),
        Request::Pending => Response::Pending {
            requests: approvals.pending(),
        },
        Request::Approve { id, always } => {
            if approvals.approve(&id, always) {
                Response::Ok
            } else {
                Response::Error {
                    message: format!("no pending request {id:?} (answered, or timed out)"),
                }
            }
        }
    }
}

/// One container as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    addresses: Vec<IpAddr>,
    rules: Vec<Rule>,
    #[serde(default)]
    on_unknown: OnUnknown,
}

/// What the state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    containers: BTreeMap<String, Entry>,
}

/// The live table, and what it is derived into for lookups.
#[derive(Default)]
struct Table {
    state: State,
    by_addr: HashMap<IpAddr, String>,
    policies: HashMap<String, Arc<Policy>>,
}

impl Table {
    fn rebuild(&mut self) {
        self.by_addr.clear();
        self.policies.clear();
        for (name, e) in &self.state.containers {
            for a in &e.addresses {
                self.by_addr.insert(*a, name.clone());
            }
            self.policies.insert(
                name.clone(),
                Arc::new(Policy {
                    rules: e.rules.clone(),
                    on_unknown: e.on_unknown,
                }),
            );
        }
    }
}

/// Caller address -> container -> policy, kept in a state file.
///
/// Rules arriving here are parsed as trusted: the control socket is the
/// user's own, and cci has checked each configuration layer (a project's
/// with [`Rule::parse`]`(_, false)`) before sending.
pub struct Registry {
    table: RwLock<Table>,
    path: Option<PathBuf>,
    /// The addresses the proxy has bound (see [`Request::Listening`]).
    listening: RwLock<Vec<std::net::SocketAddr>>,
}

impl Registry {
    /// An empty registry kept nowhere (tests).
    pub fn in_memory() -> Registry {
        Registry {
            table: RwLock::new(Table::default()),
            path: None,
            listening: RwLock::default(),
        }
    }

    /// Note that the proxy listens on `addr`.
    pub fn listening_on(&self, addr: std::net::SocketAddr) {
        if let Ok(mut l) = self.listening.write()
            && !l.contains(&addr)
        {
            l.push(addr);
        }
    }

    /// The addresses the proxy listens on.
    pub fn listening(&self) -> Vec<std::net::SocketAddr> {
        self.listening.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// The registry kept at `path`, loaded from it when it exists.
    pub fn load(path: &Path) -> io::Result<Registry> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        let mut table = Table {
            state,
            ..Table::default()
        };
        table.rebuild();
        Ok(Registry {
            table: RwLock::new(table),
            path: Some(path.to_path_buf()),
            listening: RwLock::default(),
        })
    }

    /// Change the table with `f`, then rebuild and persist it. An error
    /// from `f` leaves everything as it was.
    fn change(&self, f: impl FnOnce(&mut State) -> Result<(), String>) -> Result<(), String> {
        let mut table = self
            .table
            .write()
            .map_err(|_| "the registry lock is poisoned".to_string())?;
        let mut next = table.state.clone();
        f(&mut next)?;
        if let Some(path) = &self.path {
            let data = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
            crate::state::write_atomic(path, &data)
                .map_err(|e| format!("saving {}: {e}", path.display()))?;
        }
        table.state = next;
        table.rebuild();
        Ok(())
    }

    /// Set `container`'s addresses and rules (replacing what it had). An
    /// address another container held is taken from it (reused by DHCP
    /// after that one stopped without a `Forget`).
    pub fn set(
        &self,
        container: &str,
        addresses: &[IpAddr],
        rules: &[String],
        on_unknown: OnUnknown,
    ) -> Result<(), String> {
        let rules = parse_rules(rules)?;
        let addresses: Vec<IpAddr> = addresses.iter().map(|a| canonical_ip(*a)).collect();
        self.change(|s| {
            for e in s.containers.values_mut() {
                e.addresses.retain(|a| !addresses.contains(a));
            }
            s.containers.insert(
                container.to_string(),
                Entry {
                    addresses,
                    rules,
                    on_unknown,
                },
            );
            Ok(())
        })
    }

    /// Forget `container` (no error when unknown).
    pub fn forget(&self, container: &str) -> Result<(), String> {
        self.change(|s| {
            s.containers.remove(container);
            Ok(())
        })
    }

    /// Add `rule` to `container`'s policy (once).
    pub fn allow(&self, container: &str, rule: &str) -> Result<(), String> {
        let rule = Rule::parse(rule, true).map_err(|e| e.to_string())?;
        self.change(|s| {
            let e = s
                .containers
                .get_mut(container)
                .ok_or_else(|| format!("{container} is not a running proxy-mode container"))?;
            if !e.rules.contains(&rule) {
                e.rules.push(rule);
            }
            Ok(())
        })
    }

    /// Remove `rule` from `container`'s policy.
    pub fn deny(&self, container: &str, rule: &str) -> Result<(), String> {
        let rule = Rule::parse(rule, true).map_err(|e| e.to_string())?;
        self.change(|s| {
            let e = s
                .containers
                .get_mut(container)
                .ok_or_else(|| format!("{container} is not a running proxy-mode container"))?;
            let before = e.rules.len();
            e.rules.retain(|r| *r != rule);
            if e.rules.len() == before {
                return Err(format!("{container} has no rule {rule}"));
            }
            Ok(())
        })
    }

    /// `container`'s addresses and what unknown names get (`None`: not
    /// known).
    pub fn held(&self, container: &str) -> Option<(Vec<IpAddr>, OnUnknown)> {
        let t = self.table.read().ok()?;
        let e = t.state.containers.get(container)?;
        Some((e.addresses.clone(), e.on_unknown))
    }

    /// The containers known, with their rules (canonical text).
    pub fn list(&self) -> Vec<(String, Vec<String>)> {
        match self.table.read() {
            Ok(t) => t
                .state
                .containers
                .iter()
                .map(|(n, e)| (n.clone(), e.rules.iter().map(Rule::to_string).collect()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Policies for Registry {
    fn policy_for(&self, caller: IpAddr) -> Option<(String, Arc<Policy>)> {
        let t = self.table.read().ok()?;
        let name = t.by_addr.get(&canonical_ip(caller))?;
        Some((name.clone(), t.policies.get(name)?.clone()))
    }
}

fn parse_rules(rules: &[String]) -> Result<Vec<Rule>, String> {
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        let rule = Rule::parse(r, true).map_err(|e| e.to_string())?;
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_registry_maps_callers_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let reg = Registry::load(&path).unwrap();
        reg.set(
            "c1",
            &[ip("10.0.0.5"), ip("fd42::5")],
            &["a.example.com".into()],
            OnUnknown::Deny,
        )
        .unwrap();
        reg.allow("c1", "b.example.com:22").unwrap();
        assert!(reg.allow("c2", "x.com").is_err());
        assert!(reg.allow("c1", "bad rule").is_err());
        let (name, policy) = reg.policy_for(ip("::ffff:10.0.0.5")).unwrap();
        assert_eq!(name, "c1");
        assert!(policy.decide_name("b.example.com", 22).is_some());
        assert!(reg.policy_for(ip("10.0.0.6")).is_none());

        let again = Registry::load(&path).unwrap();
        let (_, policy) = again.policy_for(ip("fd42::5")).unwrap();
        assert_eq!(policy.rules.len(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        again.deny("c1", "A.example.com.").unwrap();
        assert!(again.deny("c1", "a.example.com").is_err());
        // An address reused by another container moves to it.
        again
            .set("c2", &[ip("10.0.0.5")], &[], OnUnknown::Ask)
            .unwrap();
        assert_eq!(again.policy_for(ip("10.0.0.5")).unwrap().0, "c2");
        assert_eq!(again.policy_for(ip("fd42::5")).unwrap().0, "c1");
        again.forget("c2").unwrap();
        assert!(again.policy_for(ip("10.0.0.5")).is_none());
    }

    #[tokio::test]
    async fn requests_go_over_a_private_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run").join("proxy.sock");
        let listener = bind(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let registry = Arc::new(Registry::in_memory());
        let approvals = Arc::new(Approvals::new(Duration::from_secs(1), Box::new(|_, _| {})));
        let server = tokio::spawn(serve_control(listener, registry.clone(), approvals));

        assert_eq!(request(&sock, &Request::Ping).await.unwrap(), Response::Ok);
        let set = Request::SetPolicy {
            container: "c1".into(),
            addresses: vec![ip("10.0.0.5")],
            rules: vec!["a.com".into()],
            on_unknown: OnUnknown::Deny,
        };
        assert_eq!(request(&sock, &set).await.unwrap(), Response::Ok);
        let bad = Request::Allow {
            container: "c1".into(),
            rule: "a b".into(),
        };
        assert!(matches!(
            request(&sock, &bad).await.unwrap(),
            Response::Error { .. }
        ));
        assert_eq!(
            request(&sock, &Request::Pending).await.unwrap(),
            Response::Pending { requests: vec![] }
        );
        assert_eq!(registry.list(), vec![("c1".into(), vec!["a.com".into()])]);
        // A stale socket is replaced on the next bind.
        server.abort();
        drop(bind(&sock).unwrap());
    }

    #[test]
    fn requests_read_as_json_lines() {
        let r: Request =
            serde_json::from_str(r#"{"op":"approve","id":"a1","always":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Approve {
                id: "a1".into(),
                always: true
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"op":"set_policy","container":"c","addresses":["10.0.0.2"],"rules":["*.a.com"],"on_unknown":"ask"}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::SetPolicy {
                on_unknown: OnUnknown::Ask,
                ..
            }
        ));
    }
}

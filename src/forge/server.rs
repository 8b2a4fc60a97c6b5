//! The git forwarder (`cci forge serve`): one per user, started on demand,
//! gone a minute after its last grant. It serves each grant's socket,
//! adds the host's credential to requests for the grant's repositories and
//! decides every push before a byte of it goes upstream.
//!
//! Here: the daemon's life (grants, their sockets, which container uses
//! which), routing each request (git's smart HTTP, gh by its `Host`, the
//! agent's API under `/anthropic`), and the log. Deciding a push is in
//! [`super::push`], the credentials in [`super::creds`], sending upstream
//! in [`super::upstream`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::creds::credential;
use super::policy::{self, Route, Service};
use super::push::decide;
use super::upstream::{api, forward, gh_call, read_body};
use super::{Grant, LOCK, Repo};
use crate::incus::Client;

pub(super) type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest fetch request (wants and haves) and push (with its pack).
pub(super) const MAX_FETCH_REQUEST: usize = 64 << 20;
pub(super) const MAX_PUSH: usize = 512 << 20;
/// Longest a request body may take to arrive.
pub(super) const BODY_TIME: Duration = Duration::from_secs(300);
/// Most connections one session holds open at once.
const MAX_CONNECTIONS: usize = 32;
/// Most refusals of one session logged a minute (the rest are counted).
const MAX_REFUSALS_LOGGED: u32 = 60;
/// The log rotates to `log.jsonl.1` past this size.
const LOG_MAX_BYTES: u64 = 8 << 20;
/// How long a grant no container uses is kept, and the daemon without any.
const UNUSED: Duration = Duration::from_secs(60);
/// How long a grant waits for its container's device to appear.
const NEVER_USED: Duration = Duration::from_secs(30 * 60);

/// One forwarded operation (a line of the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unix ms.
    pub time_ms: u64,
    /// The container (when known).
    pub container: String,
    /// `host/path`.
    pub repo: String,
    /// `fetch` or `push`.
    pub op: String,
    /// A push's updates (`REF OLD..NEW`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    /// Whether it went upstream.
    pub allowed: bool,
    /// Why not (or what upstream said).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Every record of the log (a damaged line is skipped).
pub fn read_log(path: &Path) -> std::io::Result<Vec<Record>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// (`token_command`, host).
type TokenKey = (Option<String>, String);

pub(super) struct Shared {
    pub(super) http: reqwest::Client,
    pub(super) client: Client,
    /// Grant id → container name (from the daemon's devices).
    pub(super) names: std::sync::Mutex<HashMap<String, String>>,
    /// One push or cache update per repository at a time.
    pub(super) caches: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub(super) tokens: Mutex<HashMap<TokenKey, (Instant, Option<Credential>)>>,
    /// When a request last made the daemon be read for a container name.
    pub(super) last_lazy_scan: std::sync::Mutex<Option<Instant>>,
    /// Per grant: (window start, refusals in it, refusals not written).
    pub(super) log: std::sync::Mutex<HashMap<String, (Instant, u32, u32)>>,
}

#[derive(Clone)]
pub(super) struct Credential {
    pub(super) user: String,
    pub(super) secret: String,
}

impl Credential {
    pub(super) fn basic(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.user, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Run the daemon until no grant is left for a minute. Returns at once
/// when another one runs.
pub async fn serve(client: Client) -> anyhow::Result<()> {
    let lock = crate::state::lock_file("forge", LOCK)?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    crate::incus::tls_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(15))
        .build()?;
    let shared = Arc::new(Shared {
        http,
        client: client.clone(),
        names: Default::default(),
        caches: Default::default(),
        tokens: Default::default(),
        last_lazy_scan: Default::default(),
        log: Default::default(),
    });
    let grants = super::grants_dir()?;
    let sockets = super::sockets_dir()?;
    let mut served: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut last_grant = Instant::now();
    let mut last_scan: Option<Instant> = None;
    loop {
        let ids = grant_ids(&grants);
        if !ids.is_empty() {
            last_grant = Instant::now();
        } else if last_grant.elapsed() > UNUSED {
            tracing::info!("[forge] no grant left: stopping");
            break;
        }
        for id in &ids {
            if served.contains_key(id) {
                continue;
            }
            let path = sockets.join(id).join(super::SOCKET_NAME);
            let _ = std::fs::create_dir_all(sockets.join(id));
            let _ = std::fs::remove_file(&path);
            match tokio::net::UnixListener::bind(&path) {
                Ok(l) => {
                    // (Inside, where it is mounted, everyone is the agent.)
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
                    tracing::info!("[forge] serving grant {id}");
                    served.insert(
                        id.clone(),
                        tokio::spawn(accept(l, id.clone(), shared.clone())),
                    );
                }
                Err(e) => tracing::warn!("[forge] cannot listen on {}: {e}", path.display()),
            }
        }
        served.retain(|id, task| {
            let keep = ids.contains(id);
            if !keep {
                task.abort();
                let _ = std::fs::remove_dir_all(sockets.join(id));
                tracing::info!("[forge] grant {id} ended");
            }
            keep
        });
        if last_scan.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            last_scan = Some(Instant::now());
            if let Err(e) = scan(&client, &shared, &grants, &sockets).await {
                tracing::warn!("[forge] reading the daemon: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(lock);
    Ok(())
}

fn grant_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let id = n.strip_suffix(".json")?.to_string();
            (!id.starts_with('.') && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some(id)
        })
        .collect()
}

/// Learn which container uses which grant; drop grants no container's
/// device has used for a minute (their session is over).
async fn scan(
    client: &Client,
    shared: &Shared,
    grants: &Path,
    sockets: &Path,
) -> anyhow::Result<()> {
    let instances = client.instances_all_projects().await?;
    let mut names = HashMap::new();
    for i in &instances {
        for d in i.devices.values() {
            if let Some(c) = d.get("connect").and_then(|c| c.strip_prefix("unix:")) {
                let dir = Path::new(c).parent();
                if dir.and_then(Path::parent) == Some(sockets)
                    && let Some(id) = dir.and_then(Path::file_name)
                {
                    names.insert(id.to_string_lossy().into_owned(), i.name.clone());
                }
            }
        }
    }
    // A grant whose device was seen and is gone ended with its session; one
    // never seen is kept a while (its container may still be in the
    // making: an image to pull first).
    let seen_before: std::collections::HashSet<String> = shared
        .names
        .lock()
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    for id in grant_ids(grants) {
        if names.contains_key(&id) {
            continue;
        }
        let path = grants.join(format!("{id}.json"));
        let made = read_grant(grants, &id).map(|g| g.made_ms).unwrap_or(0);
        let age = crate::proxy::now_ms().saturating_sub(made);
        let limit = if seen_before.contains(&id) {
            UNUSED
        } else {
            NEVER_USED
        };
        if age > limit.as_millis() as u64 {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Ok(mut n) = shared.names.lock() {
        *n = names;
    }
    Ok(())
}

fn read_grant(grants: &Path, id: &str) -> Option<Grant> {
    let data = std::fs::read(grants.join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Per session: one push and four fetch requests read at once (each
/// held in memory), so a session cannot make the daemon hold more.
pub(super) struct Slots {
    pub(super) push: tokio::sync::Semaphore,
    pub(super) fetch: tokio::sync::Semaphore,
}

async fn accept(listener: tokio::net::UnixListener, id: String, shared: Arc<Shared>) {
    let slots = Arc::new(Slots {
        push: tokio::sync::Semaphore::new(1),
        fetch: tokio::sync::Semaphore::new(4),
    });
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(held) = connections.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (id, shared, slots) = (id.clone(), shared.clone(), slots.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (id, shared, slots) = (id.clone(), shared.clone(), slots.clone());
                async move { Ok::<_, Infallible>(handle(&shared, &slots, &id, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("[forge] connection: {e}");
            }
            drop(held);
        });
    }
}

pub(super) fn full(status: StatusCode, ctype: &str, data: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(data.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A refusal git shows the user (`remote: cci: ...`).
pub(super) fn refuse(status: StatusCode, msg: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("cci: {msg}\n"))
}

async fn handle(
    shared: &Shared,
    slots: &Slots,
    id: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Ok(grants) = super::grants_dir() else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cci's state folder is unreadable",
        );
    };
    let Some(grant) = read_grant(&grants, id) else {
        return refuse(StatusCode::FORBIDDEN, "this session's git access has ended");
    };
    // gh: its Host header names the API (never the loopback endpoint).
    let host_header = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some((forge, call)) = super::gh::route(&host_header, req.uri().path())
        && grant.upstreams.contains_key(&forge)
    {
        return gh_call(shared, slots, &grant, id, &forge, call, req).await;
    }
    if let Some(rest) = req.uri().path().strip_prefix(super::API_PREFIX) {
        let rest = rest.to_string();
        return api(shared, slots, &grant, &rest, req).await;
    }
    let Some((repo, asked, route)) = policy::route(req.uri().path(), req.uri().query()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not a git smart-HTTP request cci forwards",
        );
    };
    let mut container = container_of(shared, id);
    let due = shared.last_lazy_scan.lock().is_ok_and(|mut t| {
        let due = t.is_none_or(|t| t.elapsed() > Duration::from_secs(2));
        if due {
            *t = Some(Instant::now());
        }
        due
    });
    if container == "?" && due {
        // A new session: learn its container now.
        if let (Ok(g), Ok(s)) = (super::grants_dir(), super::sockets_dir()) {
            let _ = scan(&shared.client, shared, &g, &s).await;
        }
        container = container_of(shared, id);
    }
    let op = match route {
        Route::Refs { service } | Route::Rpc { service } => match service {
            Service::UploadPack => "fetch",
            Service::ReceivePack => "push",
        },
    };
    let mut record = Record {
        time_ms: crate::proxy::now_ms(),
        container,
        repo: repo.id(),
        op: op.into(),
        refs: Vec::new(),
        allowed: false,
        reason: String::new(),
    };
    let Some(allowed) = grant.repos.iter().find(|r| r.same(&repo)) else {
        let msg = format!(
            "{} is not this workspace's repository; git goes through cci for {} only",
            repo.id(),
            grant
                .repos
                .iter()
                .map(Repo::id)
                .collect::<Vec<_>>()
                .join(", ")
        );
        record.reason = msg.clone();
        append(shared, id, &record);
        return refuse(StatusCode::FORBIDDEN, &msg);
    };
    let Some(base) = grant.upstreams.get(&allowed.host) else {
        return refuse(StatusCode::FORBIDDEN, "that host is no longer forwarded");
    };
    let upstream = format!("{base}/{asked}");
    let want_method = match route {
        Route::Refs { .. } => hyper::Method::GET,
        Route::Rpc { .. } => hyper::Method::POST,
    };
    if req.method() != want_method {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "wrong method");
    }
    let cred = credential(shared, &grant, &allowed.host).await;
    match route {
        Route::Refs { service } => {
            let url = format!("{upstream}/info/refs?service={}", service.name());
            let out = shared.http.get(&url);
            forward(out, req.headers(), cred.as_ref(), &allowed.host).await
        }
        Route::Rpc { service } => {
            let (limit, slot) = match service {
                Service::UploadPack => (MAX_FETCH_REQUEST, &slots.fetch),
                Service::ReceivePack => (MAX_PUSH, &slots.push),
            };
            let Ok(_slot) = slot.acquire().await else {
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "the forwarder is stopping");
            };
            let headers = req.headers().clone();
            let body = match read_body(req.into_body(), limit).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let url = format!("{upstream}/{}", service.name());
            if service == Service::ReceivePack {
                if headers.contains_key(hyper::header::CONTENT_ENCODING) {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "a compressed push cannot be checked",
                    );
                }
                let push = match policy::parse_push(&body) {
                    Ok(p) => p,
                    Err(e) => {
                        record.reason = e.clone();
                        append(shared, id, &record);
                        return refuse(StatusCode::BAD_REQUEST, &e);
                    }
                };
                record.refs = push
                    .updates
                    .iter()
                    .map(|u| format!("{} {}..{}", u.name, short(&u.old), short(&u.new)))
                    .collect();
                let reasons = decide(
                    shared,
                    &grant,
                    allowed,
                    &upstream,
                    cred.as_ref(),
                    &push,
                    &body,
                )
                .await;
                if !reasons.is_empty() {
                    record.reason = reasons
                        .iter()
                        .map(|(r, w)| format!("{r}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    append(shared, id, &record);
                    let msg = format!("cci refused this push: {}\n", record.reason);
                    let report = policy::refusal_report(&push, &reasons, &msg);
                    return full(
                        StatusCode::OK,
                        "application/x-git-receive-pack-result",
                        report,
                    );
                }
            }
            record.allowed = true;
            append(shared, id, &record);
            let out = shared.http.post(&url).body(body);
            forward(out, &headers, cred.as_ref(), &allowed.host).await
        }
    }
}

pub(super) fn short(oid: &str) -> &str {
    &oid[..oid.len().min(10)]
}

pub(super) fn container_of(shared: &Shared, id: &str) -> String {
    shared
        .names
        .lock()
        .ok()
        .and_then(|n| n.get(id).cloned())
        .unwrap_or_else(|| "?".into())
}

/// Write `r` to the log: bounded in size, and a session's refusals past
/// [`MAX_REFUSALS_LOGGED`] a minute counted rather than written (one
/// record says how many when the minute ends), so a container cannot
/// flood the disk or push its earlier records out of the log.
pub(super) fn append(shared: &Shared, id: &str, r: &Record) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut held) = shared.log.lock() else {
        return;
    };
    let mut r = r.clone();
    let mut records = Vec::new();
    let window = held.entry(id.to_string()).or_insert((Instant::now(), 0, 0));
    if window.0.elapsed() > Duration::from_secs(60) {
        if window.2 > 0 {
            records.push(Record {
                time_ms: crate::proxy::now_ms(),
                container: r.container.clone(),
                repo: String::new(),
                op: "refusals".into(),
                refs: Vec::new(),
                allowed: false,
                reason: format!(
                    "{} more refusals in a minute, not logged one by one",
                    window.2
                ),
            });
        }
        *window = (Instant::now(), 0, 0);
    }
    if !r.allowed {
        window.1 += 1;
        if window.1 > MAX_REFUSALS_LOGGED {
            window.2 += 1;
            if records.is_empty() {
                return;
            }
        }
    }
    if window.1 <= MAX_REFUSALS_LOGGED || r.allowed {
        if r.refs.len() > 20 {
            let more = r.refs.len() - 20;
            r.refs.truncate(20);
            r.refs.push(format!("... and {more} more"));
        }
        if r.reason.len() > 2000 {
            let mut cut = 2000;
            while !r.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            r.reason.truncate(cut);
            r.reason.push_str(" ...");
        }
        records.push(r);
    }
    let Ok(path) = super::log_path() else { return };
    let mut line = Vec::new();
    for r in &records {
        if let Ok(l) = serde_json::to_vec(r) {
            line.extend(l);
            line.push(b'\n');
        }
    }
    // Bounded on the host's disk however often a container asks.
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX_BYTES) {
        let _ = std::fs::rename(&path, path.with_extension("jsonl.1"));
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&line));
    if let Err(e) = written {
        tracing::warn!("[forge] writing {}: {e}", path.display());
    }
}

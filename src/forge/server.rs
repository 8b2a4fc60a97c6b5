//! The git forwarder (`cci forge serve`): one per user, started on demand,
//! gone a minute after its last grant. It serves each grant's socket,
//! adds the host's credential to requests for the grant's repositories and
//! decides every push before a byte of it goes upstream.
//!
//! A push is checked in full: the updates against the rules
//! ([`policy::check`]), then, in a cci-owned bare cache of the repository
//! (fetched from upstream with the credential), that each updated branch
//! is where the client thinks it is and that the new commit descends from
//! it (the pack indexed there first): no force push. The cache is cci's,
//! never the agent's repository, so no hook or config of the agent's runs
//! on the host.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Frame};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::policy::{self, Push, Route, Service};
use super::{Grant, LOCK, Repo};
use crate::incus::Client;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest fetch request (wants and haves) and push (with its pack).
const MAX_FETCH_REQUEST: usize = 64 << 20;
const MAX_PUSH: usize = 512 << 20;
/// Longest a request body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(300);
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

struct Shared {
    http: reqwest::Client,
    client: Client,
    /// Grant id → container name (from the daemon's devices).
    names: std::sync::Mutex<HashMap<String, String>>,
    /// One push or cache update per repository at a time.
    caches: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    tokens: Mutex<HashMap<TokenKey, (Instant, Option<Credential>)>>,
    /// When a request last made the daemon be read for a container name.
    last_lazy_scan: std::sync::Mutex<Option<Instant>>,
    /// Per grant: (window start, refusals in it, refusals not written).
    log: std::sync::Mutex<HashMap<String, (Instant, u32, u32)>>,
}

#[derive(Clone)]
struct Credential {
    user: String,
    secret: String,
}

impl Credential {
    fn basic(&self) -> String {
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
            let path = sockets.join(format!("{id}.sock"));
            let _ = std::fs::remove_file(&path);
            match tokio::net::UnixListener::bind(&path) {
                Ok(l) => {
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
                let _ = std::fs::remove_file(sockets.join(format!("{id}.sock")));
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
                let c = Path::new(c);
                if c.parent() == Some(sockets)
                    && let Some(id) = c.file_stem()
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
struct Slots {
    push: tokio::sync::Semaphore,
    fetch: tokio::sync::Semaphore,
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

fn full(status: StatusCode, ctype: &str, data: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(data.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A refusal git shows the user (`remote: cci: ...`).
fn refuse(status: StatusCode, msg: &str) -> Response<Body> {
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
            let body = match tokio::time::timeout(
                BODY_TIME,
                Limited::new(req.into_body(), limit).collect(),
            )
            .await
            .unwrap_or_else(|_| Err("it took too long".into()))
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("the request could not be read: {e}"),
                    );
                }
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

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(10)]
}

fn container_of(shared: &Shared, id: &str) -> String {
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
fn append(shared: &Shared, id: &str, r: &Record) {
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

/// Send `out` upstream with the client's git headers and the credential;
/// stream the answer back. An upstream refusal of the credential becomes
/// a message that says where credentials come from.
async fn forward(
    out: reqwest::RequestBuilder,
    headers: &hyper::HeaderMap,
    cred: Option<&Credential>,
    host: &str,
) -> Response<Body> {
    let mut out = out.header("User-Agent", "git/cci-forwarder");
    for h in ["accept", "content-type", "content-encoding", "git-protocol"] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            out = out.header(h, v);
        }
    }
    if let Some(c) = cred {
        out = out.header("Authorization", c.basic());
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach {host}: {}", without_url(&e)),
            );
        }
    };
    let status = resp.status().as_u16();
    if status == 401 || status == 403 || (status == 404 && cred.is_none()) {
        let why = if cred.is_some() {
            format!("{host} refused the host's credential ({status})")
        } else {
            format!("no credential for {host} on the host ({status})")
        };
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "{why}: sign in on the host (`gh auth login`, a git credential helper) or set [git] token_command"
            ),
        );
    }
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let stream = futures_util::StreamExt::map(resp.bytes_stream(), |c| {
        c.map(Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// A reqwest error without its URL (none holds a secret, but keep the
/// message short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// The host's credential for `host`, cached for a minute (a failure for
/// ten seconds).
async fn credential(shared: &Shared, grant: &Grant, host: &str) -> Option<Credential> {
    let key = (grant.token_command.clone(), host.to_string());
    if let Some((at, c)) = shared.tokens.lock().await.get(&key) {
        let ttl = if c.is_some() { 60 } else { 10 };
        if at.elapsed() < Duration::from_secs(ttl) {
            return c.clone();
        }
    }
    // (Looked up without the lock: a slow helper holds up no one else.)
    let c = match lookup(grant.token_command.as_deref(), host).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("[forge] no credential for {host}: {e}");
            None
        }
    };
    shared
        .tokens
        .lock()
        .await
        .insert(key, (Instant::now(), c.clone()));
    c
}

async fn run(cmd: &mut tokio::process::Command, input: &[u8]) -> Result<String, String> {
    run_for(cmd, input, Duration::from_secs(20)).await
}

/// Run `cmd` with `input`, for at most `limit`: its output, or its first
/// line of complaint and exit status.
async fn run_for(
    cmd: &mut tokio::process::Command,
    input: &[u8],
    limit: Duration,
) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GH_PROMPT_DISABLED", "1")
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input).await;
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("took over {} s", limit.as_secs()))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} ({})",
            crate::proxy::log::clean(err.lines().next().unwrap_or("").trim()),
            out.status
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| "it printed no text".into())
}

/// `[git] token_command`, else `gh auth token`, else git's credential
/// helpers — all run on the host as the user, never inside.
async fn lookup(command: Option<&str>, host: &str) -> Result<Credential, String> {
    let token = |s: String| {
        let t = s.lines().next().unwrap_or("").trim().to_string();
        (!t.is_empty()).then_some(Credential {
            user: "x-access-token".into(),
            secret: t,
        })
    };
    if let Some(c) = command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(c).env("CCI_GIT_HOST", host);
        // (Its complaint is not repeated: it could hold a secret.)
        return run(&mut cmd, b"")
            .await
            .map_err(|e| {
                let status = e.rsplit_once(" (").map_or("", |(_, s)| s);
                format!("failed ({status}")
            })
            .and_then(|s| token(s).ok_or_else(|| "printed nothing".into()))
            .map_err(|e| format!("[git] token_command {e}"));
    }
    let mut gh = tokio::process::Command::new("gh");
    gh.args(["auth", "token", "--hostname", host]);
    let gh_said = match run(&mut gh, b"").await {
        Ok(s) => match token(s) {
            Some(c) => return Ok(c),
            None => "gh printed nothing".to_string(),
        },
        Err(e) => format!("gh: {e}"),
    };
    let mut git = tokio::process::Command::new("git");
    git.args(["credential", "fill"]);
    let said = run(
        &mut git,
        format!("protocol=https\nhost={host}\n\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("{gh_said}; git credential: {e}"))?;
    let field = |k: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    match (field("username"), field("password")) {
        (Some(user), Some(secret)) if !secret.is_empty() => Ok(Credential { user, secret }),
        _ => Err(format!("{gh_said}; git credential gave none")),
    }
}

/// Host git on cci's cache (`~/.cci/forge/cache/KEY.git`), with no system
/// or user config and the credential in its environment (never argv).
async fn cache_git(
    cache: &Path,
    cred: Option<&Credential>,
    args: &[&str],
    input: &[u8],
) -> Result<String, String> {
    cache_git_in(cache, None, cred, args, input).await
}

/// [`cache_git`], with the push's objects in `scratch` (new objects go
/// there, the cache's are borrowed): a checked pack never stays in the
/// cache.
async fn cache_git_in(
    cache: &Path,
    scratch: Option<&Path>,
    cred: Option<&Credential>,
    args: &[&str],
    input: &[u8],
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(s) = scratch {
        cmd.env("GIT_OBJECT_DIRECTORY", s)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", cache.join("objects"));
    } else {
        cmd.env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
    }
    cmd.arg("--git-dir")
        .arg(cache)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    match cred {
        Some(c) => cmd
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: {}", c.basic()),
            ),
        None => cmd.env_remove("GIT_CONFIG_COUNT"),
    };
    // A first fetch of a large repository takes a while.
    run_for(&mut cmd, input, Duration::from_secs(600)).await
}

fn cache_path(repo: &Repo) -> std::io::Result<PathBuf> {
    use sha2::Digest;
    let key = sha2::Sha256::digest(repo.id().to_ascii_lowercase().as_bytes());
    let hex: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Ok(crate::state::dir("forge/cache")?.join(format!("{hex}.git")))
}

/// Every reason to refuse `push` (empty: it may go upstream).
async fn decide(
    shared: &Shared,
    grant: &Grant,
    repo: &Repo,
    upstream: &str,
    cred: Option<&Credential>,
    push: &Push,
    body: &[u8],
) -> Vec<(String, String)> {
    if let Err(why) = policy::check_push(push) {
        return push
            .updates
            .iter()
            .map(|u| (u.name.clone(), why.clone()))
            .collect();
    }
    let mut reasons: Vec<(String, String)> = push
        .updates
        .iter()
        .filter_map(|u| {
            policy::check(u, &grant.push, None)
                .err()
                .map(|w| (u.name.clone(), w))
        })
        .collect();
    if !reasons.is_empty() {
        return reasons;
    }
    let all = |w: String| -> Vec<(String, String)> {
        push.updates
            .iter()
            .map(|u| (u.name.clone(), w.clone()))
            .collect()
    };
    let cache = match cache_path(repo) {
        Ok(c) => c,
        Err(e) => return all(format!("cci's cache: {e}")),
    };
    let lock = {
        let mut caches = shared.caches.lock().await;
        caches
            .entry(repo.id().to_ascii_lowercase())
            .or_default()
            .clone()
    };
    let _held = lock.lock().await;
    if !cache.join("HEAD").exists() {
        let mut init = tokio::process::Command::new("git");
        init.args(["init", "--bare", "-q"]).arg(&cache);
        if let Err(e) = run(&mut init, b"").await {
            return all(format!("cannot make cci's cache: {e}"));
        }
    }
    let host = &repo.host;
    // Where the remote's branches are now, and its default branch.
    if let Err(e) = cache_git(
        &cache,
        cred,
        &[
            "fetch",
            "--no-tags",
            "--prune",
            "-q",
            upstream,
            "+refs/heads/*:refs/up/*",
        ],
        b"",
    )
    .await
    {
        return all(format!("cannot read the branches on {host}: {e}"));
    }
    // (An empty repository has no HEAD to name; a failed ask refuses.)
    let default = match cache_git(
        &cache,
        cred,
        &["ls-remote", "--symref", upstream, "HEAD"],
        b"",
    )
    .await
    {
        Ok(s) => s.lines().find_map(|l| {
            l.strip_prefix("ref: refs/heads/")
                .and_then(|r| r.strip_suffix("\tHEAD"))
                .map(str::to_string)
        }),
        Err(e) => return all(format!("cannot learn {host}'s default branch: {e}")),
    };
    reasons = push
        .updates
        .iter()
        .filter_map(|u| {
            policy::check(u, &grant.push, default.as_deref())
                .err()
                .map(|w| (u.name.clone(), w))
        })
        .collect();
    if !reasons.is_empty() {
        return reasons;
    }
    // The pack goes into a scratch object folder that borrows the cache's
    // objects, removed when the check is done.
    let scratch = match crate::state::dir("forge/tmp") {
        Ok(d) => d.join(uuid::Uuid::new_v4().simple().to_string()),
        Err(e) => return all(format!("cci's scratch folder: {e}")),
    };
    if let Err(e) = std::fs::create_dir_all(scratch.join("pack")) {
        return all(format!("cci's scratch folder: {e}"));
    }
    let reasons = check_objects(&cache, &scratch, grant, host, push, body).await;
    let _ = std::fs::remove_dir_all(&scratch);
    reasons
}

/// Paths whose change makes the host run code with the repository's
/// secrets (CI definitions): refused unless `[git] push_ci` allows.
const CI_PATHS: &[&str] = &[
    ".github/workflows/",
    ".github/actions/",
    ".gitlab-ci.yml",
    ".gitlab/",
];

/// The checks that need the push's objects: each branch is where the
/// client thinks, moves forward only, and no commit new to the remote
/// touches CI definitions (unless allowed).
async fn check_objects(
    cache: &Path,
    scratch: &Path,
    grant: &Grant,
    host: &str,
    push: &Push,
    body: &[u8],
) -> Vec<(String, String)> {
    let git = |args: Vec<String>, input: &[u8]| {
        let input = input.to_vec();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cache_git_in(cache, Some(scratch), None, &args, &input).await
        }
    };
    let mut reasons = Vec::new();
    let pack = &body[push.pack_at..];
    if !pack.is_empty()
        && let Err(e) = git(
            vec!["index-pack".into(), "--stdin".into(), "--fix-thin".into()],
            pack,
        )
        .await
    {
        return push
            .updates
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    format!("cannot check the push against {host}'s history: {e}"),
                )
            })
            .collect();
    }
    for u in push.updates.iter().filter(|u| !u.deletes()) {
        let Some(branch) = u.name.strip_prefix("refs/heads/") else {
            // A new tag (the only other kind allowed): what it points at
            // is checked below.
            if let Some(why) = ci_change(&git, grant, &u.new).await {
                reasons.push((u.name.clone(), why));
            }
            continue;
        };
        let up = format!("refs/up/{branch}");
        let now = git(
            vec!["rev-parse".into(), "-q".into(), "--verify".into(), up],
            b"",
        )
        .await
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
        if u.creates() && !now.is_empty() {
            reasons.push((
                u.name.clone(),
                format!("{branch} exists on {host} already: fetch it first"),
            ));
            continue;
        }
        if !u.creates() && now != u.old {
            reasons.push((
                u.name.clone(),
                format!("{branch} moved on {host} since you fetched: fetch and try again"),
            ));
            continue;
        }
        if !u.creates() {
            match git(
                vec![
                    "merge-base".into(),
                    "--is-ancestor".into(),
                    u.old.clone(),
                    u.new.clone(),
                ],
                b"",
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.contains("exit status: 1") => {
                    reasons.push((
                        u.name.clone(),
                        "not a fast-forward: force pushes are not allowed".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    reasons.push((u.name.clone(), format!("cannot check the history: {e}")));
                    continue;
                }
            }
        }
        if let Some(why) = ci_change(&git, grant, &u.new).await {
            reasons.push((u.name.clone(), why));
        }
    }
    reasons
}

/// Why `new` may not go up because a commit not yet on the remote changes
/// a CI definition (`None`: it may).
async fn ci_change<F, Fut>(git: &F, grant: &Grant, new: &str) -> Option<String>
where
    F: Fn(Vec<String>, &[u8]) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    if grant.push.ci {
        return None;
    }
    // Every path a commit new to the remote changes (merges against each
    // parent, so nothing hides in a merge).
    let args = vec![
        "log".into(),
        "-m".into(),
        "--no-renames".into(),
        "--name-only".into(),
        "--format=".into(),
        new.to_string(),
        "--not".into(),
        "--glob=refs/up/*".into(),
    ];
    match git(args, b"").await {
        Ok(out) => out
            .lines()
            .find(|p| CI_PATHS.iter().any(|c| p.starts_with(c)))
            .map(|p| {
                format!(
                    "it changes {} (CI runs it with the repository's secrets; [git] push_ci = true allows)",
                    crate::proxy::log::clean(p)
                )
            }),
        Err(e) => Some(format!("cannot list what it changes: {e}")),
    }
}

/// Headers that belong to one hop, or carry the caller's (placeholder)
/// credential: never passed on.
const NOT_PASSED: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The agent's API in host credentials mode: `/anthropic/v1/...` goes to
/// the configured API with the host's key in place of whatever the caller
/// sent; the answer (a stream of events, too) comes back as it comes.
async fn api(
    shared: &Shared,
    slots: &Slots,
    grant: &Grant,
    rest: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Some(api) = &grant.api else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this session reaches its API directly ([tool] credentials = \"copy\")",
        );
    };
    let clean = rest.starts_with("/v1/")
        && rest
            .split('/')
            .all(|seg| seg != ".." && seg != "." && seg.bytes().all(|b| b.is_ascii_graphic()));
    if !clean || !matches!(*req.method(), hyper::Method::GET | hyper::Method::POST) {
        return refuse(
            StatusCode::FORBIDDEN,
            "only GET and POST under /v1/ reach the API",
        );
    }
    let Ok(_slot) = slots.fetch.acquire().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the forwarder is stopping");
    };
    let Some(key) = api_key(shared, api).await else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "no API key on the host: sign Claude Code in with an API key there or set [tool] api_key_command",
        );
    };
    let mut url = format!("{}{rest}", api.upstream);
    if let Some(q) = req.uri().query() {
        url = format!("{url}?{q}");
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_FETCH_REQUEST)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request could not be read: {e}"),
            );
        }
    };
    let mut out = shared.http.request(method, &url).body(body);
    for (k, v) in &headers {
        if !NOT_PASSED.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    out = out.header("x-api-key", key);
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach the API: {}", without_url(&e)),
            );
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut back = hyper::HeaderMap::new();
    for (k, v) in resp.headers() {
        if !NOT_PASSED.contains(&k.as_str()) {
            back.append(k, v.clone());
        }
    }
    let stream = futures_util::StreamExt::map(resp.bytes_stream(), |c| {
        c.map(Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = status;
    *r.headers_mut() = back;
    r
}

/// The host's API key: `api_key_command`, else `primaryApiKey` of the
/// host's `.claude.json`; cached as the git credential is.
async fn api_key(shared: &Shared, api: &super::ApiGrant) -> Option<String> {
    let key = (
        api.key_command.clone(),
        format!("api:{}", api.credentials_home.as_deref().unwrap_or("")),
    );
    if let Some((at, c)) = shared.tokens.lock().await.get(&key) {
        let ttl = if c.is_some() { 60 } else { 10 };
        if at.elapsed() < Duration::from_secs(ttl) {
            return c.as_ref().map(|c| c.secret.clone());
        }
    }
    let found = match &api.key_command {
        Some(c) => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c").arg(c);
            run(&mut cmd, b"")
                .await
                .map_err(|e| tracing::warn!("[forge] [tool] api_key_command: {e}"))
                .ok()
                .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        }
        None => api.credentials_home.as_ref().and_then(|h| {
            let data = std::fs::read(Path::new(h).join(".claude.json")).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
            v["primaryApiKey"].as_str().map(str::to_string)
        }),
    }
    .filter(|k| !k.is_empty())
    .map(|secret| Credential {
        user: String::new(),
        secret,
    });
    shared
        .tokens
        .lock()
        .await
        .insert(key, (Instant::now(), found.clone()));
    found.map(|c| c.secret)
}

/// A `gh` call: decided ([`super::gh`]), a mutation's target checked
/// upstream, then sent with the host's token in place of gh's placeholder.
async fn gh_call(
    shared: &Shared,
    slots: &Slots,
    grant: &Grant,
    id: &str,
    forge: &str,
    call: super::gh::Call,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    use super::gh::{self, Call};
    let method = req.method().clone();
    let mut record = Record {
        time_ms: crate::proxy::now_ms(),
        container: container_of(shared, id),
        repo: forge.to_string(),
        op: "gh".into(),
        refs: vec![match &call {
            Call::Rest(p) => format!("{method} {}", crate::proxy::log::clean(p)),
            Call::Graphql => "graphql".into(),
        }],
        allowed: false,
        reason: String::new(),
    };
    let repos: Vec<Repo> = grant
        .repos
        .iter()
        .filter(|r| r.host == forge)
        .cloned()
        .collect();
    let Some(base) = grant.upstreams.get(forge) else {
        return refuse(StatusCode::FORBIDDEN, "that host is not forwarded");
    };
    let Ok(_slot) = slots.fetch.acquire().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the forwarder is stopping");
    };
    let query = req.uri().query().map(str::to_string);
    let headers = req.headers().clone();
    let body = match tokio::time::timeout(
        BODY_TIME,
        Limited::new(req.into_body(), MAX_FETCH_REQUEST).collect(),
    )
    .await
    .unwrap_or_else(|_| Err("it took too long".into()))
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request could not be read: {e}"),
            );
        }
    };
    let cred = credential(shared, grant, forge).await;
    let decided: Result<(), String> = match &call {
        Call::Rest(path) => gh::rest_allowed(forge, method.as_str(), path, &repos),
        Call::Graphql if method != hyper::Method::POST => Err("GraphQL takes POST".into()),
        Call::Graphql => {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = doc.get("query").and_then(|q| q.as_str()).unwrap_or("");
            let vars = doc.get("variables").cloned().unwrap_or_default();
            match gh::graphql_targets(text, &vars) {
                Err(e) => Err(e),
                Ok(targets) => {
                    if !targets.is_empty() {
                        record.refs = targets
                            .iter()
                            .map(|(m, _)| format!("graphql {m}"))
                            .collect();
                    }
                    let mut result = Ok(());
                    for (mutation, node) in targets {
                        let url = gh::upstream(forge, base, &Call::Graphql);
                        let ask =
                            serde_json::json!({"query": gh::NODE_QUERY, "variables": {"id": node}});
                        let mut out = shared
                            .http
                            .post(&url)
                            .json(&ask)
                            .header("User-Agent", "cci-forwarder");
                        if let Some(c) = &cred {
                            out = out.header("Authorization", format!("token {}", c.secret));
                        }
                        let named = match out.send().await {
                            Ok(r) => r
                                .json::<serde_json::Value>()
                                .await
                                .ok()
                                .and_then(|a| gh::node_repo(&a)),
                            Err(_) => None,
                        };
                        let ours = named
                            .as_deref()
                            .and_then(|n| Repo::new(forge, n))
                            .is_some_and(|r| repos.iter().any(|g| g.same(&r)));
                        if !ours {
                            result = Err(format!(
                                "{mutation} acts on {}, not on this workspace's repository",
                                named.as_deref().map_or(
                                    "something cci cannot name".to_string(),
                                    crate::proxy::log::clean
                                )
                            ));
                            break;
                        }
                    }
                    result
                }
            }
        }
    };
    if let Err(why) = decided {
        record.reason = why.clone();
        append(shared, id, &record);
        return refuse(StatusCode::FORBIDDEN, &why);
    }
    record.allowed = true;
    append(shared, id, &record);
    let mut url = gh::upstream(forge, base, &call);
    if let Some(q) = query {
        url = format!("{url}?{q}");
    }
    let mut out = shared.http.request(method, &url).body(body);
    for (k, v) in &headers {
        if !NOT_PASSED.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    if let Some(c) = &cred {
        out = out.header("Authorization", format!("token {}", c.secret));
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach {forge}'s API: {}", without_url(&e)),
            );
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut back = hyper::HeaderMap::new();
    for (k, v) in resp.headers() {
        if !NOT_PASSED.contains(&k.as_str()) && k.as_str() != "location" {
            back.append(k, v.clone());
        }
    }
    let stream = futures_util::StreamExt::map(resp.bytes_stream(), |c| {
        c.map(Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = status;
    *r.headers_mut() = back;
    r
}

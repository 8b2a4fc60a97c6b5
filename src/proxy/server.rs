//! The proxy itself: one task per client connection, deciding by name.
//!
//! A connection carries one request: `CONNECT host:port` (a tunnel,
//! checked again on its first bytes: the TLS server name must be the
//! CONNECT host) or one plain HTTP request in absolute form
//! (`GET http://host/path`), forwarded with `Connection: close`. Nothing
//! reaches upstream before the destination is decided; everything read
//! from the client is bounded in size and time. Each connection ends in
//! exactly one [`Decision`] for the log.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::approvals::{Approvals, rule_for};
use super::log::{Decision, Sink, clean};
use super::resolve::{Dial, Resolve, TcpDial};
use super::rules::{OnUnknown, Policy, Rule, canonical_ip, normalize_name};
use super::sni::{self, Hello};
use super::zerocopy;
use crate::config::is_public;

/// The largest request head read from a client.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 100;
/// The most addresses of one name tried.
const MAX_ADDRESSES: usize = 8;
/// The longest one connection attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answering a refusal may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes read and dropped after a refusal (see [`handle`]).
const LINGER_BYTES: usize = 64 * 1024;
/// The longest line of chunked framing (size and extensions, a trailer).
const MAX_CHUNK_LINE: usize = 4096;

/// Which container a caller address is, and its rules. Consulted on every
/// connection: a change applies to the next one.
pub trait Policies: Send + Sync {
    /// The container at `caller` and its policy; `None`: not a container
    /// of ours (the connection is closed, nothing sent anywhere).
    fn policy_for(&self, caller: IpAddr) -> Option<(String, Arc<Policy>)>;
}

/// Bounds on what one client may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections handled at once (more wait in the listen queue).
    pub max_connections: usize,
    /// Connections one caller may hold at once (more are refused).
    pub max_per_caller: usize,
    /// Reading the request head.
    pub head_timeout: Duration,
    /// Waiting for a tunnel's first bytes.
    pub first_bytes_timeout: Duration,
    /// Resolving a name.
    pub resolve_timeout: Duration,
    /// Connecting upstream, all addresses together.
    pub connect_timeout: Duration,
    /// A tunnel or response without traffic either way is closed after this.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 2048,
            max_per_caller: 256,
            head_timeout: Duration::from_secs(10),
            first_bytes_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// What the proxy works with.
pub struct Context {
    /// Caller -> container and rules.
    pub policies: Arc<dyn Policies>,
    /// Names -> addresses.
    pub resolver: Arc<dyn Resolve>,
    /// Opening upstream connections.
    pub dial: Arc<dyn Dial>,
    /// Where decisions go.
    pub sink: Arc<dyn Sink>,
    /// Requests waiting for the user (`on_unknown = ask`); without it, ask
    /// behaves as deny.
    pub approvals: Option<Arc<Approvals>>,
    /// Bounds.
    pub limits: Limits,
    /// Connections per caller now.
    active: Mutex<HashMap<IpAddr, usize>>,
}

impl Context {
    /// A context dialing plain TCP, without approvals, default limits.
    pub fn new(
        policies: Arc<dyn Policies>,
        resolver: Arc<dyn Resolve>,
        sink: Arc<dyn Sink>,
    ) -> Context {
        Context {
            policies,
            resolver,
            dial: Arc::new(TcpDial),
            sink,
            approvals: None,
            limits: Limits::default(),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// With these approvals.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Context {
        self.approvals = Some(approvals);
        self
    }

    /// With this dialer.
    pub fn with_dial(mut self, dial: Arc<dyn Dial>) -> Context {
        self.dial = dial;
        self
    }

    /// With these limits.
    pub fn with_limits(mut self, limits: Limits) -> Context {
        self.limits = limits;
        self
    }

    /// Count a connection of `caller`, unless it holds too many.
    fn claim(&self, caller: IpAddr) -> Option<Slot<'_>> {
        let mut active = self.active.lock().ok()?;
        let n = active.entry(caller).or_insert(0);
        if *n >= self.limits.max_per_caller {
            return None;
        }
        *n += 1;
        Some(Slot { ctx: self, caller })
    }
}

/// One counted connection of a caller.
struct Slot<'a> {
    ctx: &'a Context,
    caller: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.ctx.active.lock()
            && let Some(n) = active.get_mut(&self.caller)
        {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.caller);
            }
        }
    }
}

/// Serve `listener` until it fails for good. Each connection is its own
/// task; at most `max_connections` at once.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections.max(1)));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, a connection reset while queued...:
                // wait a little rather than spin or give up.
                tracing::warn!("[proxy] accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            handle(stream, peer, &ctx).await;
            drop(permit);
        });
    }
}

/// What a connection's log record is built from.
struct Record {
    container: String,
    host: String,
    port: u16,
    rule: Option<String>,
    up: u64,
    down: u64,
}

impl Record {
    fn emit(self, sink: &dyn Sink, allowed: bool, reason: &'static str) {
        let d = Decision {
            time: super::now_ms(),
            container: self.container,
            host: self.host,
            port: self.port,
            allowed,
            reason: reason.into(),
            rule: self.rule,
            bytes_up: self.up,
            bytes_down: self.down,
            repeats: 0,
        };
        tracing::debug!(
            "[proxy] {} {}:{} {} {}",
            d.container,
            d.host,
            d.port,
            if allowed { "allowed" } else { "refused" },
            reason
        );
        sink.record(&d);
    }
}

/// One client connection, start to end, then its record.
async fn handle(mut client: TcpStream, peer: SocketAddr, ctx: &Context) {
    let caller = canonical_ip(peer.ip());
    let mut rec = Record {
        container: String::new(),
        host: String::new(),
        port: 0,
        rule: None,
        up: 0,
        down: 0,
    };
    let Some((container, policy)) = ctx.policies.policy_for(caller) else {
        tracing::debug!("[proxy] connection from unknown caller {caller} closed");
        // The host checking that the proxy listens is not a decision.
        let from_here =
            !peer.ip().is_loopback() && client.local_addr().is_ok_and(|l| l.ip() == peer.ip());
        if !from_here {
            rec.emit(&*ctx.sink, false, "unknown-caller");
        }
        return;
    };
    rec.container = container;
    let Some(_slot) = ctx.claim(caller) else {
        rec.emit(&*ctx.sink, false, "busy");
        return;
    };
    let (allowed, reason) = match session(&mut client, &policy, ctx, &mut rec).await {
        Ok(via) => (true, via),
        Err(refusal) => {
            if let Some(answer) = refusal.answer(&rec) {
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
                    client.write_all(answer.as_bytes()).await?;
                    client.shutdown().await?;
                    // Read what the client still sends (a little, for a
                    // short while): closing with unread bytes would reset
                    // the connection, and the answer could be lost.
                    let mut sink = [0u8; 4096];
                    let mut left = LINGER_BYTES;
                    while left > 0 {
                        match client.read(&mut sink).await? {
                            0 => break,
                            n => left = left.saturating_sub(n),
                        }
                    }
                    io::Result::Ok(())
                })
                .await;
            }
            (refusal.allowed, refusal.reason)
        }
    };
    rec.emit(&*ctx.sink, allowed, reason);
}

/// Why a connection ended without (all of) its traffic going through.
struct Refusal {
    /// The HTTP status answered, or 0 for none (a tunnel already open: close).
    status: u16,
    reason: &'static str,
    /// Said to the client after the status line (one line).
    detail: String,
    /// The rule a 403 suggests (default: the destination as asked).
    hint: Option<Rule>,
    /// Whether some traffic went through before it ended (an upstream
    /// connection that was open when the end came).
    allowed: bool,
}

impl Refusal {
    fn new(status: u16, reason: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            detail: detail.into(),
            hint: None,
            allowed: false,
        }
    }

    /// Closing a tunnel already established: nothing more is said.
    fn close(reason: &'static str) -> Refusal {
        Refusal::new(0, reason, "")
    }

    fn bad_request(detail: &str) -> Refusal {
        Refusal::new(400, "bad-request", detail)
    }

    /// The HTTP answer, if any.
    fn answer(&self, rec: &Record) -> Option<String> {
        let phrase = match self.status {
            0 => return None,
            400 => "Bad Request",
            403 => "Forbidden",
            502 => "Bad Gateway",
            _ => "Error",
        };
        let mut body = format!("cci proxy: {}\n", self.detail);
        if self.status == 403 && !rec.host.is_empty() {
            let rule = match &self.hint {
                Some(r) => r.to_string(),
                None => rule_for(&rec.host, rec.port)
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| rec.host.clone()),
            };
            body.push_str(&format!(
                "To allow it: cci network allow {} {}\n",
                clean(&rec.container),
                rule
            ));
        }
        Some(format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            body.len()
        ))
    }
}

/// A decided destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Name(String),
    Addr(IpAddr),
}

impl Dest {
    /// `host` (an authority's host part, IPv6 unbracketed) if it is a
    /// valid name or an address. Odd address spellings (`127.1`,
    /// `0x7f.0.0.1`) are not names either: refused.
    fn parse(host: &str) -> Option<Dest> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Dest::Addr(canonical_ip(ip)));
        }
        normalize_name(host).ok().map(Dest::Name)
    }

    fn text(&self) -> String {
        match self {
            Dest::Name(n) => n.clone(),
            Dest::Addr(ip) => ip.to_string(),
        }
    }
}

/// `host[:port]` or `[v6][:port]`, the host unbracketed.
fn split_authority(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['[', ']', '@', '/', ' ']) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|n| *n > 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    /// Its length in the buffer (what follows is body or tunnel bytes).
    len: usize,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Read up to the end of the request head (bounded in size; the caller
/// bounds the time). Returns the buffer, which may hold more.
async fn read_head(client: &mut TcpStream) -> Result<(Head, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let room = MAX_HEAD - buf.len();
        if room == 0 {
            return Err(Refusal::bad_request("request head too large"));
        }
        let n = client
            .read(&mut chunk[..room.min(4096)])
            .await
            .map_err(|_| Refusal::close("bad-request"))?;
        if n == 0 {
            return Err(Refusal::close("bad-request"));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(Refusal::bad_request("malformed request")),
    };
    let head = Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        len,
    };
    Ok((head, buf))
}

/// The connection after the caller is known: returns how it was allowed.
async fn session(
    client: &mut TcpStream,
    policy: &Policy,
    ctx: &Context,
    rec: &mut Record,
) -> Result<&'static str, Refusal> {
    let (head, buf) = tokio::time::timeout(ctx.limits.head_timeout, read_head(client))
        .await
        .map_err(|_| Refusal::close("timeout"))??;
    if head.method == "CONNECT" {
        let (host, port) = split_authority(&head.target)
            .and_then(|(h, p)| Some((h, p?)))
            .ok_or_else(|| Refusal::bad_request("CONNECT needs host:port"))?;
        let dest = Dest::parse(host).ok_or_else(|| Refusal::bad_request("bad host name"))?;
        rec.host = dest.text();
        rec.port = port;
        tunnel(client, &buf[head.len..], &dest, policy, ctx, rec).await
    } else {
        forward(client, &head, &buf[head.len..], policy, ctx, rec).await
    }
}

/// Decide `dest:port`, resolve it, check the addresses, and connect.
/// Returns the upstream connection, the rule (or approval) that allowed it
/// and how (`rule`, `approved`).
async fn open(
    dest: &Dest,
    port: u16,
    policy: &Policy,
    ctx: &Context,
    rec: &mut Record,
) -> Result<(TcpStream, Rule, &'static str), Refusal> {
    let shown = match dest {
        Dest::Addr(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        d => format!("{}:{port}", d.text()),
    };
    let decided = match dest {
        Dest::Name(n) => policy.decide_name(n, port),
        Dest::Addr(ip) => policy.decide_addr(*ip, port),
    };
    let (rule, via) = match decided {
        Some(r) => (r.clone(), "rule"),
        None => {
            let asked = match (&ctx.approvals, policy.on_unknown) {
                (Some(a), OnUnknown::Ask) => Some(a.ask(&rec.container, &rec.host, port).await),
                _ => None,
            };
            match (asked, rule_for(&rec.host, port)) {
                (Some(true), Some(r)) => (r, "approved"),
                (Some(_), _) => {
                    return Err(Refusal::new(
                        403,
                        "not-approved",
                        format!("{shown} was not approved in time"),
                    ));
                }
                (None, _) => {
                    return Err(Refusal::new(
                        403,
                        "no-rule",
                        format!("{shown} is not allowed for this container"),
                    ));
                }
            }
        }
    };
    rec.rule = Some(rule.to_string());
    let addrs = match dest {
        // An address was decided on as such (by a rule, or by the user).
        Dest::Addr(ip) => vec![*ip],
        Dest::Name(name) => {
            let answer =
                tokio::time::timeout(ctx.limits.resolve_timeout, ctx.resolver.resolve(name)).await;
            let addrs: Vec<IpAddr> = match answer {
                Ok(Ok(a)) => a.into_iter().map(canonical_ip).collect(),
                _ => Vec::new(),
            };
            if addrs.is_empty() {
                return Err(Refusal::new(
                    502,
                    "upstream-failed",
                    format!("{name} does not resolve"),
                ));
            }
            // DNS rebinding: a public name must not lead inside, unless
            // an address rule says that address may be reached.
            if let Some(ip) = addrs
                .iter()
                .find(|ip| !is_public(**ip) && policy.decide_addr(**ip, port).is_none())
            {
                return Err(Refusal {
                    hint: rule_for(&ip.to_string(), port),
                    ..Refusal::new(
                        403,
                        "private-address",
                        format!(
                            "{name} resolves to {ip}, a private or special address; an address rule must allow it"
                        ),
                    )
                });
            }
            addrs
        }
    };
    // Never the host itself, whatever a rule says.
    if let Some(ip) = addrs.iter().find(|ip| ctx.dial.refuses(**ip)) {
        return Err(Refusal::new(
            403,
            "host-address",
            format!("{shown} is this host ({ip}): never reachable through the proxy"),
        ));
    }
    let dial = async {
        for ip in addrs.iter().take(MAX_ADDRESSES) {
            let to = SocketAddr::new(*ip, port);
            if let Ok(Ok(s)) = tokio::time::timeout(ATTEMPT_TIMEOUT, ctx.dial.dial(to)).await {
                return Some(s);
            }
        }
        None
    };
    match tokio::time::timeout(ctx.limits.connect_timeout, dial).await {
        Ok(Some(s)) => Ok((s, rule, via)),
        _ => Err(Refusal::new(
            502,
            "upstream-failed",
            format!("cannot connect to {shown}"),
        )),
    }
}

/// `CONNECT`: open upstream, answer 200, check the first bytes, splice.
async fn tunnel(
    client: &mut TcpStream,
    early: &[u8],
    dest: &Dest,
    policy: &Policy,
    ctx: &Context,
    rec: &mut Record,
) -> Result<&'static str, Refusal> {
    let (mut upstream, rule, via) = open(dest, rec.port, policy, ctx, rec).await?;
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .map_err(|_| Refusal::close(via))?;
    // The first bytes: TLS must name the CONNECT host; anything else needs
    // a rule naming the port. With such a rule the server may speak first
    // (ssh banners, SMTP...): then its bytes go through unchecked.
    let mut first = early.to_vec();
    let mut greeting = Vec::new();
    let deadline = tokio::time::Instant::now() + ctx.limits.first_bytes_timeout;
    let mut chunk = [0u8; 4096];
    let mut from_server = [0u8; 4096];
    let mut client_done = false;
    loop {
        let verdict = sni::parse(&first);
        match verdict {
            Hello::NeedMore => {}
            Hello::Sni(name) => match dest {
                Dest::Name(n) if normalize_name(&name).ok().as_ref() != Some(n) => {
                    return Err(Refusal::close("sni-mismatch"));
                }
                _ => break,
            },
            Hello::NoSni => match dest {
                Dest::Name(_) => return Err(Refusal::close("no-sni")),
                Dest::Addr(_) => break,
            },
            Hello::NotTls if rule.names_port() => break,
            Hello::NotTls => return Err(Refusal::close("not-tls")),
            Hello::Malformed => return Err(Refusal::close("bad-tls")),
        }
        let room = (sni::MAX_BUFFER - first.len()).min(chunk.len());
        let server_first = rule.names_port() && first.is_empty();
        tokio::select! {
            r = client.read(&mut chunk[..room]), if !client_done => match r {
                // Done sending before a byte: the server may still speak
                // first (its greeting is what the client waits for).
                Ok(0) if server_first => client_done = true,
                Ok(0) | Err(_) => return Ok(via), // gone before a byte: nothing passed
                Ok(n) => first.extend_from_slice(&chunk[..n]),
            },
            r = upstream.read(&mut from_server), if server_first => match r {
                Ok(0) | Err(_) => return Ok(via),
                Ok(n) => {
                    greeting.extend_from_slice(&from_server[..n]);
                    break;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return Err(Refusal::close("timeout")),
        }
    }
    let fail = |reason| Refusal {
        allowed: true,
        ..Refusal::close(reason)
    };
    if !greeting.is_empty() {
        client.write_all(&greeting).await.map_err(|_| fail(via))?;
        rec.down += greeting.len() as u64;
    }
    if !first.is_empty() {
        upstream.write_all(&first).await.map_err(|_| fail(via))?;
        rec.up += first.len() as u64;
    }
    let (up, down) = splice(client, &mut upstream, ctx.limits.idle_timeout).await;
    rec.up += up;
    rec.down += down;
    Ok(via)
}

/// The relay buffer, each way.
const RELAY_BUF: usize = 64 * 1024;

/// Copy both ways until both sides are done or nothing moved for `idle`.
/// Returns the bytes (client to upstream, upstream to client).
async fn splice(client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) -> (u64, u64) {
    let activity = Activity::new();
    match zerocopy::Pipes::take() {
        // In the kernel, socket to pipe to socket (see `zerocopy`).
        Some(pipes) => {
            let (c, u) = (&*client, &*upstream);
            let touch = || activity.touch();
            let both = async {
                tokio::try_join!(
                    zerocopy::one_way(c, u, &pipes.up, &activity.up, touch),
                    zerocopy::one_way(u, c, &pipes.down, &activity.down, touch)
                )
            };
            activity.until_idle(both, idle).await;
        }
        // Enough relays splice already (or no pipe could be made): copy
        // through buffers.
        None => {
            let mut c = Counted::new(client, &activity.up, &activity);
            let mut u = Counted::new(upstream, &activity.down, &activity);
            // 64 KiB each way: bulk downloads run close to the link's speed.
            let copy =
                tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, RELAY_BUF, RELAY_BUF);
            activity.until_idle(copy, idle).await;
        }
    }
    (
        activity.up.load(Ordering::Relaxed),
        activity.down.load(Ordering::Relaxed),
    )
}

/// Traffic of one connection: bytes each way and when the last moved.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Run `work` until it ends or nothing moves for `idle`.
    async fn until_idle<F: std::future::Future>(&self, work: F, idle: Duration) {
        tokio::pin!(work);
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.epoch.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::select! {
                _ = &mut work => return,
                _ = tokio::time::sleep(idle - quiet) => {}
            }
        }
    }
}

/// A stream whose reads are counted (into `count`) and mark activity.
struct Counted<'a, S> {
    inner: S,
    count: &'a AtomicU64,
    activity: &'a Activity,
}

impl<'a, S> Counted<'a, S> {
    fn new(inner: S, count: &'a AtomicU64, activity: &'a Activity) -> Self {
        Counted {
            inner,
            count,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.count.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a request body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Headers never forwarded: hop-by-hop, and the proxy's own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
];

/// A plain HTTP request in absolute form: check, forward one request, relay
/// the response until upstream closes.
async fn forward(
    client: &mut TcpStream,
    head: &Head,
    early: &[u8],
    policy: &Policy,
    ctx: &Context,
    rec: &mut Record,
) -> Result<&'static str, Refusal> {
    let target = head.target.as_str();
    let rest = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
        .ok_or_else(|| {
            Refusal::bad_request("only http:// URLs in absolute form (use CONNECT for https)")
        })?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or("");
    let path = match path.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let (host, port) =
        split_authority(authority).ok_or_else(|| Refusal::bad_request("bad URL authority"))?;
    let port = port.unwrap_or(80);
    let dest = Dest::parse(host).ok_or_else(|| Refusal::bad_request("bad host name"))?;
    rec.host = dest.text();
    rec.port = port;
    // The Host header must name the same destination: a server behind a
    // shared address serves by Host, not by where we connected.
    let hosts: Vec<&[u8]> = head.values("host").collect();
    let agrees = match hosts.as_slice() {
        [one] => std::str::from_utf8(one)
            .ok()
            .and_then(|h| split_authority(h.trim()))
            .and_then(|(h, p)| Some((Dest::parse(h)?, p.unwrap_or(80))))
            .is_some_and(|(d, p)| d == dest && p == port),
        _ => false,
    };
    if !agrees {
        return Err(Refusal::bad_request(
            "the Host header must name the URL's host and port",
        ));
    }
    let framing = framing(head)?;
    let (mut upstream, _rule, via) = open(&dest, port, policy, ctx, rec).await?;
    // The request, in origin form, hop-by-hop headers dropped.
    let listed: Vec<String> = head
        .values("connection")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !matches!(t.as_str(), "host" | "content-length" | "transfer-encoding"))
        .collect();
    let mut out = format!("{} {} HTTP/1.{}\r\n", head.method, path, head.version).into_bytes();
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || listed.contains(&lower) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    let fail = |reason| Refusal {
        allowed: true,
        ..Refusal::new(502, reason, "upstream failed")
    };
    upstream
        .write_all(&out)
        .await
        .map_err(|_| fail("upstream-failed"))?;
    rec.up += out.len() as u64;

    // The body goes up while the response comes down; the response ends
    // the exchange (upstream closes: we asked for it).
    let activity = Activity::new();
    let sent = AtomicU64::new(0);
    let (client_r, mut client_w) = client.split();
    let (upstream_r, mut upstream_w) = upstream.split();
    let mut client_r = Counted::new(client_r, &activity.up, &activity);
    let pipes = zerocopy::Pipes::take();
    {
        let upload = send_body(early, &mut client_r, &mut upstream_w, framing, &sent);
        // The response passes as it comes (in the kernel when it can).
        let download = async {
            match &pipes {
                Some(p) => {
                    let (from, to) = (upstream_r.as_ref(), client_w.as_ref());
                    let _ =
                        zerocopy::one_way(from, to, &p.down, &activity.down, || activity.touch())
                            .await;
                }
                None => {
                    let mut r = tokio::io::BufReader::with_capacity(
                        RELAY_BUF,
                        Counted::new(upstream_r, &activity.down, &activity),
                    );
                    let _ = tokio::io::copy_buf(&mut r, &mut client_w).await;
                }
            }
        };
        let both = async {
            tokio::pin!(upload);
            tokio::pin!(download);
            let mut uploading = true;
            loop {
                tokio::select! {
                    r = &mut upload, if uploading => {
                        uploading = false;
                        if r.is_err() {
                            return; // a broken body: stop here
                        }
                    }
                    _ = &mut download => return,
                }
            }
        };
        activity.until_idle(both, ctx.limits.idle_timeout).await;
    }
    let _ = client_w.shutdown().await;
    rec.up += sent.load(Ordering::Relaxed);
    rec.down += activity.down.load(Ordering::Relaxed);
    Ok(via)
}

/// The body framing of `head`; refuses the ambiguous (both or several).
fn framing(head: &Head) -> Result<Framing, Refusal> {
    let te: Vec<&[u8]> = head.values("transfer-encoding").collect();
    let cl: Vec<&[u8]> = head.values("content-length").collect();
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => Ok(Framing::Length(0)),
        ([], [one]) => std::str::from_utf8(one)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .map(Framing::Length)
            .ok_or_else(|| Refusal::bad_request("bad Content-Length")),
        ([one], []) if one.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        _ => Err(Refusal::bad_request(
            "unsupported or ambiguous body framing (one Content-Length, or Transfer-Encoding: chunked)",
        )),
    }
}

/// Send exactly one body: the early bytes first, then from the client,
/// counting into `sent`. Whatever follows the body is never sent.
async fn send_body<R, W>(
    early: &[u8],
    client: &mut R,
    upstream: &mut W,
    framing: Framing,
    sent: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunked = Chunked::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let mut pending = early.to_vec();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // How much of `pending` is body, and whether the body ends there.
        let (take, done) = match framing {
            Framing::Length(_) => {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(pending.len());
                left -= take as u64;
                (take, left == 0)
            }
            Framing::Chunked => chunked
                .feed(&pending)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad chunked body"))?,
        };
        upstream.write_all(&pending[..take]).await?;
        sent.fetch_add(take as u64, Ordering::Relaxed);
        if done {
            return upstream.flush().await;
        }
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Following chunked framing over raw bytes (which are forwarded as they
/// are): where the body ends, and nothing more.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data: this many bytes left, then CRLF.
    Data(u64),
    /// The CRLF after a chunk's data: this many bytes left.
    Crlf(u8),
    /// Reading trailer lines, until an empty one.
    Trailers,
    Done,
}

impl Chunked {
    /// Take `bytes`: how many of them belong to the body, and whether it
    /// ended within them. `None`: broken framing.
    fn feed(&mut self, bytes: &[u8]) -> Option<(usize, bool)> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Size | ChunkState::Trailers => {
                    let b = bytes[i];
                    i += 1;
                    if b != b'\n' {
                        self.line.push(b);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return None;
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let size = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let size = std::str::from_utf8(size).ok()?.trim();
                    if size.is_empty() || size.len() > 15 {
                        return None;
                    }
                    let size = u64::from_str_radix(size, 16).ok()?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::Crlf(2)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Crlf(n) => {
                    let want = if n == 2 { b'\r' } else { b'\n' };
                    if bytes[i] != want {
                        return None;
                    }
                    i += 1;
                    self.state = if n == 2 {
                        ChunkState::Crlf(1)
                    } else {
                        ChunkState::Size
                    };
                }
            }
        }
        Some((i, self.state == ChunkState::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_with_and_without_ports() {
        assert_eq!(split_authority("a.com:443"), Some(("a.com", Some(443))));
        assert_eq!(split_authority("a.com"), Some(("a.com", None)));
        assert_eq!(
            split_authority("[2001:db8::1]:22"),
            Some(("2001:db8::1", Some(22)))
        );
        for bad in [
            "a.com:",
            "a.com:0",
            "a.com:99999",
            "u@a.com:1",
            "[::1",
            "",
            ":80",
        ] {
            assert_eq!(split_authority(bad), None, "{bad}");
        }
        assert_eq!(Dest::parse("127.1"), None);
        assert_eq!(Dest::parse("0x7f.0.0.1"), None);
        assert_eq!(
            Dest::parse("::ffff:127.0.0.1"),
            Some(Dest::Addr("127.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nGET http://evil/ HTTP/1.1\r\n";
        let end = body.len() - b"GET http://evil/ HTTP/1.1\r\n".len();
        // Whole, and one byte at a time.
        let mut c = Chunked::default();
        assert_eq!(c.feed(body), Some((end, true)));
        let mut c = Chunked::default();
        let mut total = 0;
        for (i, b) in body.iter().enumerate() {
            let (n, done) = c.feed(std::slice::from_ref(b)).unwrap();
            total += n;
            if done {
                assert_eq!(i + 1, end);
                break;
            }
        }
        assert_eq!(total, end);
        // Broken framing.
        assert_eq!(Chunked::default().feed(b"zz\r\n"), None);
        assert_eq!(Chunked::default().feed(b"1\r\nab\r\n"), None);
    }
}

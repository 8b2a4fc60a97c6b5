//! How requests reach the daemon: socket discovery, the HTTP client, websockets,
//! and the response envelope, decoded once for every API area.
//!
//! Two endpoints: the local daemon's Unix socket, and a daemon on another
//! machine over HTTPS with a client certificate (see [`super::tls`]); callers
//! do not see the difference.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Error, Result};
use super::operations::Operation;
pub use super::wire::{StringMap, encode, null_default};

mod websocket;

pub use websocket::{Io, WebSocket};

/// The longest a request may take, answer body included, when nothing in
/// it streams. Operation waits ask the daemon for at most 30 s at a time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest a request whose body streams (an image or file upload) may
/// take, answer included.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long opening a websocket (connect and handshake) may take; what runs
/// over it afterwards (exec sessions, events) is not bounded here.
pub const WEBSOCKET_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest JSON answer read.
pub const MAX_JSON_BODY: usize = 16 << 20;

/// The largest error answer kept (the rest is not read).
const MAX_ERROR_BODY: usize = 64 << 10;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The local daemon's Unix socket.
    Unix(PathBuf),
    /// A daemon on another machine.
    Https(Https),
}

/// A daemon reached over HTTPS.
#[derive(Debug, Clone)]
pub struct Https {
    /// The remote's name (for messages).
    pub remote: String,
    /// Its host name or address (no brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The TLS settings: the client certificate, how the server is checked.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

impl Https {
    /// `https://host:port`.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }
}

impl Endpoint {
    /// A human description of the endpoint, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Https(h) => format!("{} ({})", h.remote, h.url()),
        }
    }

    /// The HTTPS endpoint, None for the local daemon.
    pub fn https(&self) -> Option<&Https> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Https(h) => Some(h),
        }
    }

    /// The remote's name, None for the local daemon.
    pub fn remote(&self) -> Option<&str> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Https(h) => Some(&h.remote),
        }
    }
}

/// Find the local daemon's socket: `$INCUS_SOCKET`, else `$INCUS_DIR/unix.socket`,
/// else the first of the well-known paths that exists (else the first of them).
pub fn discover_socket() -> PathBuf {
    discover_socket_with(|k| std::env::var_os(k).map(PathBuf::from), |p| p.exists())
}

/// [`discover_socket`] with the environment and the file system passed in.
pub fn discover_socket_with(
    env: impl Fn(&str) -> Option<PathBuf>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(p) = env("INCUS_SOCKET").filter(|p| !p.as_os_str().is_empty()) {
        return p;
    }
    if let Some(dir) = env("INCUS_DIR").filter(|p| !p.as_os_str().is_empty()) {
        return dir.join("unix.socket");
    }
    const WELL_KNOWN: [&str; 2] = ["/var/lib/incus/unix.socket", "/run/incus/unix.socket"];
    WELL_KNOWN
        .iter()
        .map(PathBuf::from)
        .find(|p| exists(p))
        .unwrap_or_else(|| PathBuf::from(WELL_KNOWN[0]))
}

/// The response envelope every Incus endpoint answers with.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_code: u16,
    #[serde(default)]
    metadata: Value,
}

/// A successful synchronous answer.
pub struct Sync<T> {
    /// The decoded `metadata`.
    pub value: T,
    /// The `ETag` header, for a later conditional update.
    pub etag: Option<String>,
}

/// A decoded answer of either kind.
pub enum Answer {
    /// Done; the metadata.
    Sync(Value),
    /// Started in the background.
    Async(Operation),
}

/// The shared connection to the daemon.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    endpoint: Endpoint,
    project: Option<String>,
    /// [`REQUEST_TIMEOUT`] (shorter in tests).
    request_timeout: Duration,
}

impl Transport {
    /// A transport over the daemon's Unix socket.
    pub fn unix(socket: PathBuf) -> Result<Self> {
        super::tls_provider();
        let http = reqwest::Client::builder()
            .unix_socket(socket.as_path())
            .connect_timeout(Duration::from_secs(4))
            // No connection pool. incusd (6.0) peeks at the first bytes of every
            // accepted connection inside its accept loop, so a connection that is
            // open but has not sent a request blocks the whole daemon, including
            // the hooks of starting containers. A pooled client can open exactly
            // such a connection when it races a new connect against a returning
            // idle one. A Unix-socket connect costs microseconds, so connecting
            // per request is cheap and leaves no silent connection behind.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| Error::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            endpoint: Endpoint::Unix(socket),
            project: None,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// A transport to a daemon over HTTPS. Connections are pooled (the
    /// daemon's HTTPS listener does not stall on an idle connection, unlike
    /// its Unix socket).
    pub fn https(endpoint: Https) -> Result<Self> {
        super::tls_provider();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*endpoint.tls).clone())
            .connect_timeout(Duration::from_secs(4))
            // Never elsewhere: a redirect (to plain HTTP, to this machine)
            // would carry a request's body where the pin does not hold.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .build()
            .map_err(|e| Error::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            endpoint: Endpoint::Https(endpoint),
            project: None,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// Address every later request to this Incus project.
    pub fn set_project(&mut self, project: Option<String>) {
        self.project = project.filter(|p| !p.is_empty() && p != "default");
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `path` (which may carry a query) with the project added.
    fn path_with_project(&self, path: &str) -> String {
        match &self.project {
            Some(p) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}project={}", encode(p))
            }
            None => path.to_string(),
        }
    }

    /// A request builder for `path` (starting with `/1.0`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let base = match &self.endpoint {
            Endpoint::Unix(_) => "http://incus".to_string(),
            Endpoint::Https(h) => h.url(),
        };
        let url = format!("{base}{}", self.path_with_project(path));
        self.http.request(method, url)
    }

    /// Send a request, turning transport failures into [`Error`]s; no time
    /// bound (the caller bounds it, or reads a stream as it comes).
    pub async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| self.transport_error(e))
    }

    /// The time bound of `req`: [`UPLOAD_TIMEOUT`] when its body streams,
    /// else [`REQUEST_TIMEOUT`].
    fn limit_of(&self, req: &RequestBuilder) -> Duration {
        match req.try_clone() {
            Some(_) => self.request_timeout,
            None => UPLOAD_TIMEOUT.max(self.request_timeout),
        }
    }

    /// Run `fut` (part of a request) within `limit`.
    pub async fn bounded<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: "the Incus daemon to answer".into(),
                seconds: limit.as_secs(),
            })
        })
    }

    /// Send a request and read its whole answer (at most [`MAX_JSON_BODY`]),
    /// within its time bound.
    async fn exchange(&self, req: RequestBuilder) -> Result<(Envelope, Option<String>)> {
        let limit = self.limit_of(&req);
        self.bounded(limit, async {
            let resp = self.send(req).await?;
            self.envelope(resp).await
        })
        .await
    }

    /// The body of `resp`, failing when it is larger than `cap` bytes (and
    /// reading no more than that).
    pub async fn body_capped(&self, mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
        let too_big = || Error::Protocol(format!("the daemon's answer is larger than {cap} bytes"));
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len() + chunk.len() > cap {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    #[cfg(test)]
    fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Classify a failure to talk to the daemon at all.
    pub fn transport_error(&self, e: reqwest::Error) -> Error {
        if let Endpoint::Https(h) = &self.endpoint {
            return https_error(h, &e);
        }
        let socket = PathBuf::from(self.endpoint.describe());
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return self.io_error(io);
            }
            source = err.source();
        }
        if e.is_timeout() {
            return Error::Timeout {
                what: "the Incus daemon to answer".into(),
                seconds: 4,
            };
        }
        if e.is_connect() {
            return Error::Unreachable {
                socket,
                reason: e.to_string(),
            };
        }
        Error::Protocol(e.to_string())
    }

    /// Classify an I/O error on the socket.
    fn io_error(&self, io: &std::io::Error) -> Error {
        if let Endpoint::Https(h) = &self.endpoint {
            return https_error(h, io);
        }
        let socket = PathBuf::from(self.endpoint.describe());
        match io.kind() {
            std::io::ErrorKind::PermissionDenied => Error::SocketPermission { socket },
            std::io::ErrorKind::NotFound => Error::Unreachable {
                socket,
                reason: "no such socket".into(),
            },
            std::io::ErrorKind::ConnectionRefused => Error::Unreachable {
                socket,
                reason: "connection refused (the daemon is not running)".into(),
            },
            _ => Error::Unreachable {
                socket,
                reason: io.to_string(),
            },
        }
    }

    /// Decode an envelope, mapping `type: error` and HTTP errors to [`Error`].
    async fn envelope(&self, resp: reqwest::Response) -> Result<(Envelope, Option<String>)> {
        let status = resp.status();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = self.body_capped(resp, MAX_JSON_BODY).await?;
        let env: Envelope = match serde_json::from_slice(&body) {
            Ok(env) => env,
            Err(_) => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                return Err(Error::from_daemon(status.as_u16(), text));
            }
        };
        if env.kind == "error" || !status.is_success() {
            let code = if env.error_code != 0 {
                env.error_code
            } else {
                status.as_u16()
            };
            return Err(self.untrusted(Error::from_daemon(code, env.error)));
        }
        Ok((env, etag))
    }

    /// Send a request and decode a synchronous answer.
    pub async fn sync<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<Sync<T>> {
        let (env, etag) = self.exchange(req).await?;
        if env.kind != "sync" {
            return Err(Error::Protocol(format!(
                "expected a sync response, got {:?}",
                env.kind
            )));
        }
        let value = decode(env.metadata)?;
        Ok(Sync { value, etag })
    }

    /// Send a request whose answer carries no data we need.
    pub async fn sync_unit(&self, req: RequestBuilder) -> Result<()> {
        self.sync::<Value>(req).await.map(|_| ())
    }

    /// Send a request and decode an asynchronous answer (a started operation).
    pub async fn operation(&self, req: RequestBuilder) -> Result<Operation> {
        let (env, _) = self.exchange(req).await?;
        if env.kind != "async" {
            return Err(Error::Protocol(format!(
                "expected an async response, got {:?}",
                env.kind
            )));
        }
        decode(env.metadata)
    }

    /// Send a request that may answer either way (sync or a started operation).
    pub async fn answer(&self, req: RequestBuilder) -> Result<Answer> {
        let (env, _) = self.exchange(req).await?;
        if env.kind == "async" {
            Ok(Answer::Async(decode(env.metadata)?))
        } else {
            Ok(Answer::Sync(env.metadata))
        }
    }

    /// Send a request whose successful answer is not an envelope (file contents,
    /// logs); an error answer becomes an [`Error`]. The answer's headers come
    /// within the request's time bound; its body is the caller's to bound.
    pub async fn raw(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        let limit = self.limit_of(&req);
        self.bounded(limit, async {
            let resp = self.send(req).await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status();
            let body = match self.body_capped(resp, MAX_ERROR_BODY).await {
                Ok(b) => b,
                Err(e) => e.to_string().into_bytes(),
            };
            Err(self.untrusted(status_error(status, &body)))
        })
        .await
    }

    /// A remote's refusal as what it means: the daemon answers an untrusted
    /// client's every call but `GET /1.0` with 403 "not authorized".
    fn untrusted(&self, e: Error) -> Error {
        match (&self.endpoint, &e) {
            (Endpoint::Https(h), Error::Forbidden(m))
                if m.to_ascii_lowercase().contains("not authorized") =>
            {
                Error::Untrusted {
                    remote: h.remote.clone(),
                }
            }
            _ => e,
        }
    }

    /// GET `path` and decode the sync metadata.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.sync(self.request(Method::GET, path)).await?.value)
    }
}

/// A failure to talk to a remote at all, classified: a certificate that is
/// not the pinned one, nothing listening, no answer in time.
fn https_error(h: &Https, e: &(dyn std::error::Error + 'static)) -> Error {
    if let Some(m) = super::tls::mismatch_in(e) {
        return Error::RemoteCertificate {
            remote: h.remote.clone(),
            reason: m.to_string(),
        };
    }
    let mut reason = e.to_string();
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused: nothing listens there".into()
                }
                std::io::ErrorKind::TimedOut => "no answer in time".into(),
                _ => io.to_string(),
            };
            break;
        }
        if let Some(r) = err.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            reason = "no answer in time".into();
        }
        next = err.source();
    }
    if reason.to_ascii_lowercase().contains("certificate") {
        return Error::RemoteCertificate {
            remote: h.remote.clone(),
            reason,
        };
    }
    Error::RemoteUnreachable {
        remote: h.remote.clone(),
        url: h.url(),
        reason,
    }
}

/// Decode a JSON value into `T`, naming the type on failure.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::Protocol(format!("decoding {}: {e}", std::any::type_name::<T>())))
}

/// Map `reqwest`'s status into our error, for raw (non-envelope) answers.
pub fn status_error(status: StatusCode, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_code: u16,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => Error::from_daemon(
            if e.error_code != 0 {
                e.error_code
            } else {
                status.as_u16()
            },
            e.error,
        ),
        Err(_) => Error::from_daemon(
            status.as_u16(),
            String::from_utf8_lossy(body).trim().to_string(),
        ),
    }
}

/// A JSON body for requests.
pub fn json<T: Serialize>(req: RequestBuilder, body: &T) -> RequestBuilder {
    req.json(body)
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;

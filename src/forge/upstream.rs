//! Sending what was decided upstream and the answer back: git's smart
//! HTTP, the agent's API (host credentials mode) and gh's calls, each with
//! the host's credential in place of whatever the caller sent.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::{Request, Response, StatusCode, body::Frame};

use super::Grant;
use super::Repo;
use super::creds::{api_key, credential};
use super::server::{
    BODY_TIME, Body, Credential, MAX_FETCH_REQUEST, Record, Shared, Slots, append, container_of,
    refuse,
};

/// Send `out` upstream with the client's git headers and the credential;
/// stream the answer back. An upstream refusal of the credential becomes
/// a message that says where credentials come from.
pub(super) async fn forward(
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
    let mut r = Response::new(stream_of(resp));
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
pub(super) fn without_url(e: &reqwest::Error) -> String {
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

/// Headers that belong to one hop, or carry the caller's (placeholder)
/// credential: never passed on.
pub(super) const NOT_PASSED: &[&str] = &[
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
pub(super) async fn api(
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
    let body = match read_body(req.into_body(), MAX_FETCH_REQUEST).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let out = shared.http.request(method, &url).body(body);
    relay(out, &headers, ("x-api-key", key), "the API").await
}

/// A `gh` call: decided ([`super::gh`]), a mutation's target checked
/// upstream, then sent with the host's token in place of gh's placeholder.
pub(super) async fn gh_call(
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
    let body = match read_body(req.into_body(), MAX_FETCH_REQUEST).await {
        Ok(b) => b,
        Err(r) => return r,
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
    let out = shared.http.request(method, &url).body(body);
    let auth = cred
        .map(|c| format!("token {}", c.secret))
        .unwrap_or_default();
    relay(
        out,
        &headers,
        ("authorization", auth),
        &format!("{forge}'s API"),
    )
    .await
}

/// Read a request body: at most `limit` bytes, within [`BODY_TIME`].
pub(super) async fn read_body(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    match tokio::time::timeout(BODY_TIME, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request could not be read: {e}"),
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the request took too long to arrive",
        )),
    }
}

/// An upstream answer's body, streamed as it comes.
pub(super) fn stream_of(resp: reqwest::Response) -> Body {
    let stream = futures_util::StreamExt::map(resp.bytes_stream(), |c| {
        c.map(Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Send `out` with the caller's `headers` (but [`NOT_PASSED`]) and the
/// host's credential (`auth`: header and value; none when empty), and
/// stream the answer back with its headers (but [`NOT_PASSED`] and
/// `Location`: no redirect leads the caller elsewhere).
pub(super) async fn relay(
    mut out: reqwest::RequestBuilder,
    headers: &hyper::HeaderMap,
    auth: (&str, String),
    what: &str,
) -> Response<Body> {
    for (k, v) in headers {
        if !NOT_PASSED.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    if !auth.1.is_empty() {
        out = out.header(auth.0, auth.1);
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach {what}: {}", without_url(&e)),
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
    let mut r = Response::new(stream_of(resp));
    *r.status_mut() = status;
    *r.headers_mut() = back;
    r
}

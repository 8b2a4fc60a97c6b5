//! The proxy end to end, in process: a proxy on 127.0.0.1, upstream
//! servers on 127.0.0.1, a resolver with fixed answers and a dialer that
//! sends every upstream connection to the local test server (recording
//! where it was meant to go). Nothing leaves the machine.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::resolve::BoxFuture;
use super::sni::fake::{client_hello, records};
use super::*;

/// Answers from a table; anything else does not resolve.
struct Fixed(HashMap<String, Vec<IpAddr>>);

impl Resolve for Fixed {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let answer = self
            .0
            .get(host)
            .cloned()
            .ok_or_else(|| io::Error::other("NXDOMAIN"));
        Box::pin(async move { answer })
    }
}

/// Every upstream connection goes to `to`; `asked` keeps where it was
/// meant to go.
struct ToLocal {
    to: SocketAddr,
    asked: Mutex<Vec<SocketAddr>>,
}

impl Dial for ToLocal {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        self.asked.lock().unwrap().push(addr);
        Box::pin(TcpStream::connect(self.to))
    }

    // Every test upstream is on loopback (the real dialer refuses it).
    fn refuses(&self, _: IpAddr) -> bool {
        false
    }
}

/// Decisions kept in memory.
#[derive(Default)]
struct Memory(Mutex<Vec<Decision>>);

impl Sink for Memory {
    fn record(&self, d: &Decision) {
        self.0.lock().unwrap().push(d.clone());
    }
}

impl Memory {
    /// Wait for the `n`th decision and return it.
    async fn nth(&self, n: usize) -> Decision {
        for _ in 0..500 {
            if let Some(d) = self.0.lock().unwrap().get(n - 1) {
                return d.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no decision #{n}: {:?}", self.0.lock().unwrap());
    }
}

/// A test upstream: how many connections it got and every byte each sent.
#[derive(Default)]
struct Upstream {
    connections: AtomicUsize,
    received: Mutex<Vec<u8>>,
}

/// An upstream echoing what it gets.
async fn echo() -> (SocketAddr, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Upstream::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            s.received.lock().unwrap().extend_from_slice(&buf[..n]);
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An upstream speaking first (an SMTP-like greeting), then echoing.
async fn greeter() -> (SocketAddr, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Upstream::default());
    let s = seen.clone();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        s.connections.fetch_add(1, Ordering::SeqCst);
        conn.write_all(b"220 hello\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.unwrap();
        conn.write_all(&buf[..n]).await.unwrap();
    });
    (addr, seen)
}

/// An HTTP origin: answers one request (head plus Content-Length body)
/// with `ok`, closes its side, and records everything it got until the
/// proxy closes too.
async fn origin() -> (SocketAddr, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Upstream::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then the body it announces.
                let body_end = loop {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break end + 4 + len;
                    }
                };
                while got.len() < body_end {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "body cut short");
                    got.extend_from_slice(&buf[..n]);
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                conn.shutdown().await.unwrap();
                // Whatever else comes (nothing should) until the proxy closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                s.received.lock().unwrap().extend_from_slice(&got);
            });
        }
    });
    (addr, seen)
}

/// A running proxy and what it works with.
struct Proxy {
    addr: SocketAddr,
    registry: Arc<Registry>,
    approvals: Arc<Approvals>,
    log: Arc<Memory>,
    dial: Arc<ToLocal>,
}

/// Start a proxy for container `c1` at 127.0.0.1 with `rules`, names
/// resolving as `names` says, upstream connections going to `upstream`.
async fn proxy(
    rules: &[&str],
    on_unknown: OnUnknown,
    names: &[(&str, &str)],
    upstream: SocketAddr,
    ask_timeout: Duration,
) -> Proxy {
    let limits = Limits {
        first_bytes_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    proxy_with(rules, on_unknown, names, upstream, ask_timeout, limits).await
}

/// [`proxy`], with these limits.
async fn proxy_with(
    rules: &[&str],
    on_unknown: OnUnknown,
    names: &[(&str, &str)],
    upstream: SocketAddr,
    ask_timeout: Duration,
    limits: Limits,
) -> Proxy {
    let registry = Arc::new(Registry::in_memory());
    let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
    registry
        .set("c1", &["127.0.0.1".parse().unwrap()], &rules, on_unknown)
        .unwrap();
    let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (name, ip) in names {
        table
            .entry(name.to_string())
            .or_default()
            .push(ip.parse().unwrap());
    }
    let for_rules = registry.clone();
    let approvals = Arc::new(Approvals::new(
        ask_timeout,
        Box::new(move |c, r| for_rules.allow(c, &r.to_string()).unwrap()),
    ));
    let log = Arc::new(Memory::default());
    let dial = Arc::new(ToLocal {
        to: upstream,
        asked: Mutex::new(Vec::new()),
    });
    let ctx = Context::new(registry.clone(), Arc::new(Fixed(table)), log.clone())
        .with_dial(dial.clone())
        .with_approvals(approvals.clone())
        .with_limits(limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, Arc::new(ctx)));
    Proxy {
        addr,
        registry,
        approvals,
        log,
        dial,
    }
}

async fn simple(rules: &[&str], names: &[(&str, &str)]) -> (Proxy, Arc<Upstream>) {
    let (up, seen) = echo().await;
    let p = proxy(rules, OnUnknown::Deny, names, up, Duration::from_secs(1)).await;
    (p, seen)
}

/// Send `CONNECT target` and read the answer's head (all of it when the
/// proxy closes).
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    // (An unknown caller may find it closed already.)
    let _ = s
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    if !got.starts_with(b"HTTP/1.1 200") {
        let _ = s.read_to_end(&mut got).await;
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

/// Send `bytes` through an open tunnel and read as many back (the echo).
async fn round_trip(s: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    back
}

/// Whether the proxy closed `s` without sending anything more.
async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    matches!(r, Ok(Ok(0)) | Ok(Err(_)))
}

/// What the origin got (it records once the proxy closed).
async fn received(up: &Upstream) -> String {
    for _ in 0..500 {
        let got = up.received.lock().unwrap().clone();
        if !got.is_empty() {
            return String::from_utf8(got).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the origin got nothing");
}

fn hello(sni: Option<&str>) -> Vec<u8> {
    records(&client_hello(sni), 100)
}

const LOCAL: &[(&str, &str)] = &[
    ("api.test", "127.0.0.1"),
    ("a.b.example.test", "127.0.0.1"),
    ("example.test", "127.0.0.1"),
    ("priv.test", "10.0.0.1"),
    ("mixed.test", "198.51.100.1"),
    ("mixed.test", "10.0.0.1"),
    ("new.test", "127.0.0.1"),
];

#[tokio::test]
async fn an_allowed_name_is_tunneled_and_logged() {
    let (p, up) = simple(&["api.test", "127.0.0.0/8"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "api.test:443").await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    let h = hello(Some("API.test."));
    assert_eq!(round_trip(&mut s, &h).await, h);
    assert_eq!(round_trip(&mut s, b"more").await, b"more");
    drop(s);
    let d = p.log.nth(1).await;
    assert_eq!(
        (d.container.as_str(), d.host.as_str(), d.port),
        ("c1", "api.test", 443)
    );
    assert!(d.allowed);
    assert_eq!(d.reason, "rule");
    assert_eq!(d.rule.as_deref(), Some("api.test"));
    assert_eq!(d.bytes_up, h.len() as u64 + 4);
    assert_eq!(d.bytes_down, h.len() as u64 + 4);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        *p.dial.asked.lock().unwrap(),
        vec!["127.0.0.1:443".parse().unwrap()]
    );
}

#[tokio::test]
async fn an_unlisted_name_gets_403_with_how_to_allow_it() {
    let (p, up) = simple(&["api.test", "127.0.0.0/8"], LOCAL).await;
    let (_, answer) = connect(p.addr, "other.test:443").await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.contains("other.test:443"), "{answer}");
    assert!(
        answer.contains("cci network allow c1 other.test\n"),
        "{answer}"
    );
    let d = p.log.nth(1).await;
    assert!(!d.allowed);
    assert_eq!(
        (d.host.as_str(), d.reason.as_ref()),
        ("other.test", "no-rule")
    );
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    // A port the rule does not allow.
    let (_, answer) = connect(p.addr, "api.test:8443").await;
    assert!(
        answer.contains("cci network allow c1 api.test:8443\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_wildcard_matches_deeper_names_but_not_its_parent() {
    let (p, _) = simple(&["*.example.test", "127.0.0.0/8"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "a.b.example.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let h = hello(Some("a.b.example.test"));
    assert_eq!(round_trip(&mut s, &h).await, h);
    let (_, head) = connect(p.addr, "example.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn tls_must_name_the_connect_host() {
    let (p, up) = simple(&["api.test", "127.0.0.0/8"], LOCAL).await;
    // Another name (domain fronting).
    let (mut s, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(&hello(Some("evil.test"))).await.unwrap();
    assert!(closed(&mut s).await);
    let d = p.log.nth(1).await;
    assert_eq!((d.allowed, d.reason.as_ref()), (false, "sni-mismatch"));
    // No name at all.
    let (mut s, _) = connect(p.addr, "api.test:443").await;
    s.write_all(&hello(None)).await.unwrap();
    assert!(closed(&mut s).await);
    assert_eq!(p.log.nth(2).await.reason, "no-sni");
    // Not TLS, on a port the rule does not name.
    let (mut s, _) = connect(p.addr, "api.test:443").await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    assert_eq!(p.log.nth(3).await.reason, "not-tls");
    // Upstream was connected to, but got not one byte.
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn plain_bytes_pass_on_a_port_the_rule_names() {
    let (p, _) = simple(&["api.test:2222", "127.0.0.0/8:2222"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "api.test:2222").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let banner = b"SSH-2.0-OpenSSH_9.6\r\n";
    assert_eq!(round_trip(&mut s, banner).await, banner);
    // And a server speaking first is heard.
    let (up, _) = greeter().await;
    let p = proxy(
        &["mail.test:25", "127.0.0.0/8:25"],
        OnUnknown::Deny,
        &[("mail.test", "127.0.0.1")],
        up,
        Duration::from_secs(1),
    )
    .await;
    let (mut s, head) = connect(p.addr, "mail.test:25").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut greeting = [0u8; 11];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    assert_eq!(round_trip(&mut s, b"EHLO x\r\n").await, b"EHLO x\r\n");
}

#[tokio::test]
async fn an_address_needs_an_address_rule() {
    let (p, _) = simple(&["api.test", "*"], LOCAL).await;
    let (_, head) = connect(p.addr, "127.0.0.1:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(p.log.nth(1).await.reason, "no-rule");

    let (p, _) = simple(&["127.0.0.1"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "127.0.0.1:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // TLS to an address names no server: fine, the address was decided.
    let h = hello(None);
    assert_eq!(round_trip(&mut s, &h).await, h);
    let (_, head) = connect(p.addr, "[::ffff:127.0.0.1]:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_name_leading_inside_needs_an_address_rule() {
    let (p, up) = simple(&["priv.test", "mixed.test"], LOCAL).await;
    let (_, head) = connect(p.addr, "priv.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("cci network allow c1 10.0.0.1\n"), "{head}");
    assert_eq!(p.log.nth(1).await.reason, "private-address");
    // One private address among public ones is enough to refuse.
    let (_, head) = connect(p.addr, "mixed.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(p.log.nth(2).await.reason, "private-address");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);

    let (p, _) = simple(&["priv.test", "10.0.0.0/8"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "priv.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let h = hello(Some("priv.test"));
    assert_eq!(round_trip(&mut s, &h).await, h);
    assert_eq!(
        *p.dial.asked.lock().unwrap(),
        vec!["10.0.0.1:443".parse().unwrap()]
    );
}

#[tokio::test]
async fn bad_requests_get_400() {
    let (p, up) = simple(&["api.test", "127.0.0.0/8"], LOCAL).await;
    for req in [
        "CONNECT api.test HTTP/1.1\r\n\r\n",
        "CONNECT b\u{fc}cher.test:443 HTTP/1.1\r\n\r\n",
        "CONNECT 127.1:443 HTTP/1.1\r\n\r\n",
        "GET https://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n",
        "GET /relative HTTP/1.1\r\nHost: api.test\r\n\r\n",
        "GET http://u@api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n",
        "POST http://api.test/ HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "\x16\x03\x01garbage\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{req:?}: {answer}");
    }
    // An endless head is cut at 16 KiB.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let long = format!("GET http://api.test/{} HTTP/1.1\r\n", "a".repeat(20_000));
    let _ = s.write_all(long.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert!(answer.starts_with(b"HTTP/1.1 400"));
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    assert_eq!(p.log.nth(9).await.reason, "bad-request");
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form() {
    let (up, seen) = origin().await;
    let p = proxy(
        &["api.test", "127.0.0.0/8"],
        OnUnknown::Deny,
        LOCAL,
        up,
        Duration::from_secs(1),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST http://API.test/path?q=1 HTTP/1.1\r\nHost: api.test:80\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let d = p.log.nth(1).await;
    assert!(d.allowed);
    assert_eq!(d.bytes_down, answer.len() as u64);
    let got = received(&seen).await;
    assert_eq!(
        got,
        "POST /path?q=1 HTTP/1.1\r\nHost: api.test:80\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    assert_eq!(d.bytes_up, got.len() as u64);
}

#[tokio::test]
async fn the_host_header_must_match_the_url() {
    let (up, seen) = origin().await;
    let p = proxy(
        &["api.test", "127.0.0.0/8"],
        OnUnknown::Deny,
        LOCAL,
        up,
        Duration::from_secs(1),
    )
    .await;
    for req in [
        "GET http://api.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        "GET http://api.test/ HTTP/1.1\r\nHost: api.test:8080\r\n\r\n",
        "GET http://api.test/ HTTP/1.1\r\n\r\n",
        "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{req:?}: {answer}");
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_pipelined_second_request_goes_nowhere() {
    let (up, seen) = origin().await;
    let p = proxy(
        &["api.test", "127.0.0.0/8"],
        OnUnknown::Deny,
        LOCAL,
        up,
        Duration::from_secs(1),
    )
    .await;
    let evil = "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n";
    for first in [
        "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n".to_string(),
        "POST http://api.test/ HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n\r\nabc".to_string(),
        "POST http://api.test/ HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_string(),
    ] {
        seen.received.lock().unwrap().clear();
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(format!("{first}{evil}").as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("ok"), "{answer}");
        let got = received(&seen).await;
        assert!(!got.contains("evil"), "{got}");
    }
}

#[tokio::test]
async fn an_unknown_caller_gets_nothing() {
    let (up, seen) = echo().await;
    let p = proxy(&["*"], OnUnknown::Deny, LOCAL, up, Duration::from_secs(1)).await;
    p.registry.forget("c1").unwrap();
    let (mut s, answer) = connect(p.addr, "api.test:443").await;
    assert_eq!(answer, "");
    assert!(closed(&mut s).await);
    let d = p.log.nth(1).await;
    assert_eq!(
        (d.allowed, d.reason.as_ref(), d.container.as_str()),
        (false, "unknown-caller", "")
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn asking_then_approving_lets_it_through_and_always_sticks() {
    let (up, _) = echo().await;
    let p = proxy(
        &["127.0.0.0/8"],
        OnUnknown::Ask,
        LOCAL,
        up,
        Duration::from_secs(10),
    )
    .await;
    let addr = p.addr;
    let client = tokio::spawn(async move { connect(addr, "new.test:443").await });
    let mut pending = Vec::new();
    for _ in 0..500 {
        pending = p.approvals.pending();
        if !pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].container.as_str(),
            pending[0].host.as_str(),
            pending[0].port
        ),
        ("c1", "new.test", 443)
    );
    assert!(p.approvals.approve(&pending[0].id, true));
    let (mut s, head) = client.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let h = hello(Some("new.test"));
    assert_eq!(round_trip(&mut s, &h).await, h);
    drop(s);
    let d = p.log.nth(1).await;
    assert_eq!((d.allowed, d.reason.as_ref()), (true, "approved"));
    // Approved always: the next one passes without asking.
    let (_, head) = connect(p.addr, "new.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(p.log.nth(2).await.rule.as_deref(), Some("new.test"));
}

#[tokio::test]
async fn asking_without_an_answer_refuses() {
    let (up, seen) = echo().await;
    let p = proxy(
        &["127.0.0.0/8"],
        OnUnknown::Ask,
        LOCAL,
        up,
        Duration::from_millis(100),
    )
    .await;
    let (_, head) = connect(p.addr, "new.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("not approved"), "{head}");
    assert_eq!(p.log.nth(1).await.reason, "not-approved");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_rule_allowed_over_the_control_socket_applies_to_the_next_connection() {
    let (p, _) = simple(&["127.0.0.0/8"], LOCAL).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("proxy.sock");
    let listener = control::bind(&sock).unwrap();
    tokio::spawn(control::serve_control(
        listener,
        p.registry.clone(),
        p.approvals.clone(),
    ));
    let (_, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let allow = Request::Allow {
        container: "c1".into(),
        rule: "api.test".into(),
    };
    assert_eq!(request(&sock, &allow).await.unwrap(), Response::Ok);
    let (_, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let deny = Request::Deny {
        container: "c1".into(),
        rule: "api.test".into(),
    };
    assert_eq!(request(&sock, &deny).await.unwrap(), Response::Ok);
    let (_, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn a_silent_tunnel_times_out() {
    let (p, up) = simple(&["api.test", "127.0.0.0/8"], LOCAL).await;
    let (mut s, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Half a ClientHello, then nothing: closed after first_bytes_timeout.
    let h = hello(Some("api.test"));
    s.write_all(&h[..20]).await.unwrap();
    assert!(closed(&mut s).await);
    assert_eq!(p.log.nth(1).await.reason, "timeout");
    assert!(up.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_traffic_keeps_it_open() {
    let (up, _) = echo().await;
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let p = proxy_with(
        &["api.test", "127.0.0.0/8"],
        OnUnknown::Deny,
        LOCAL,
        up,
        Duration::from_secs(1),
        limits,
    )
    .await;
    let (mut s, _) = connect(p.addr, "api.test:443").await;
    let h = hello(Some("api.test"));
    assert_eq!(round_trip(&mut s, &h).await, h);
    // Traffic every 100 ms, for longer than the idle timeout: still open.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(round_trip(&mut s, b"x").await, b"x");
    }
    // Then silence: closed.
    assert!(closed(&mut s).await);
    let d = p.log.nth(1).await;
    assert!(d.allowed);
    assert_eq!(d.bytes_up, h.len() as u64 + 8);
}

#[tokio::test]
async fn one_caller_cannot_hold_more_than_its_share() {
    let (up, _) = echo().await;
    let limits = Limits {
        max_per_caller: 1,
        ..Limits::default()
    };
    let p = proxy_with(
        &["api.test", "127.0.0.0/8"],
        OnUnknown::Deny,
        LOCAL,
        up,
        Duration::from_secs(1),
        limits,
    )
    .await;
    let (mut first, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut second, head) = connect(p.addr, "api.test:443").await;
    assert_eq!(head, "");
    assert!(closed(&mut second).await);
    assert_eq!(p.log.nth(1).await.reason, "busy");
    // The first still works; once it is gone, there is room again.
    let h = hello(Some("api.test"));
    assert_eq!(round_trip(&mut first, &h).await, h);
    drop(first);
    p.log.nth(2).await;
    let (_, head) = connect(p.addr, "api.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn run_serves_the_control_socket_and_keeps_policies_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions::new(
        vec!["127.0.0.1:0".parse().unwrap()],
        dir.path().join("run").join("proxy.sock"),
        dir.path().join("state.json"),
        dir.path().join("decisions.log"),
    );
    let sock = opts.control.clone();
    let ping = |sock: std::path::PathBuf| async move {
        for _ in 0..500 {
            if let Ok(r) = request(&sock, &Request::Ping).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the proxy never answered");
    };
    let first = tokio::spawn(run(opts.clone()));
    assert_eq!(ping(sock.clone()).await, Response::Ok);
    let set = Request::SetPolicy {
        container: "c1".into(),
        addresses: vec!["10.1.2.3".parse().unwrap()],
        rules: vec!["a.example.com".into()],
        on_unknown: OnUnknown::Ask,
    };
    assert_eq!(request(&sock, &set).await.unwrap(), Response::Ok);
    first.abort();
    let _ = first.await;
    // A new proxy knows c1 (its rule can be removed).
    let second = tokio::spawn(run(opts));
    assert_eq!(ping(sock.clone()).await, Response::Ok);
    let deny = Request::Deny {
        container: "c1".into(),
        rule: "a.example.com".into(),
    };
    assert_eq!(request(&sock, &deny).await.unwrap(), Response::Ok);
    second.abort();
}

#[test]
fn the_real_dialer_never_dials_this_host() {
    let d = crate::proxy::TcpDial;
    for ip in [
        "127.0.0.1",
        "127.3.4.5",
        "0.0.0.0",
        "0.1.2.3",
        "::1",
        "::",
        "::ffff:127.0.0.1",
    ] {
        assert!(d.refuses(ip.parse().unwrap()), "{ip}");
    }
    // An address of one of this host's interfaces.
    let own = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("198.51.100.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    if let Ok(ip) = own
        && !ip.is_unspecified()
    {
        assert!(d.refuses(ip), "{ip}");
    }
    assert!(!d.refuses("198.51.100.77".parse().unwrap()));
}

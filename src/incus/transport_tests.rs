//! Unit tests of [`super`]: socket discovery, escaping, and a fake daemon
//! that never answers or answers too much.
use super::*;

#[test]
fn socket_discovery_order() {
    let none = |_: &str| None;
    assert_eq!(
        discover_socket_with(none, |_| false),
        PathBuf::from("/var/lib/incus/unix.socket")
    );
    assert_eq!(
        discover_socket_with(none, |p| p == Path::new("/run/incus/unix.socket")),
        PathBuf::from("/run/incus/unix.socket")
    );
    let dir = |k: &str| (k == "INCUS_DIR").then(|| PathBuf::from("/opt/incus"));
    assert_eq!(
        discover_socket_with(dir, |_| true),
        PathBuf::from("/opt/incus/unix.socket")
    );
    let both = |k: &str| match k {
        "INCUS_SOCKET" => Some(PathBuf::from("/tmp/s")),
        _ => Some(PathBuf::from("/opt/incus")),
    };
    assert_eq!(
        discover_socket_with(both, |_| true),
        PathBuf::from("/tmp/s")
    );
}

#[test]
fn query_values_are_escaped() {
    assert_eq!(encode("/a b/c&d=e"), "/a%20b/c%26d%3De");
    assert_eq!(encode("ok-_.~"), "ok-_.~");
}

/// A fake daemon on a Unix socket: reads a request, then answers with
/// `answer` (or never, when `None`).
async fn fake_daemon(answer: Option<Vec<u8>>) -> (tempfile::TempDir, PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("unix.socket");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = conn.write_all(&a).await;
                        let _ = conn.shutdown().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    (dir, sock)
}

fn http(body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

#[tokio::test]
async fn a_daemon_that_never_answers_times_out() {
    let (_d, sock) = fake_daemon(None).await;
    let t = Transport::unix(sock)
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));
    let start = std::time::Instant::now();
    let e = t.get::<Value>("/1.0").await.err().unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = t.websocket("/1.0/events").await.err().unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let e = t.raw(t.request(Method::GET, "/1.0")).await.err().unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn answers_are_capped_in_size() {
    // The positive control: a small answer is read.
    let ok = br#"{"type":"sync","metadata":{"a":1}}"#;
    let (_d, sock) = fake_daemon(Some(http(ok))).await;
    let t = Transport::unix(sock).unwrap();
    assert_eq!(t.get::<Value>("/1.0").await.unwrap()["a"], 1);
    // A huge one is refused, whatever its declared length.
    let mut big = br#"{"type":"sync","metadata":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_JSON_BODY));
    big.extend_from_slice(br#""}"#);
    let (_d, sock) = fake_daemon(Some(http(&big))).await;
    let t = Transport::unix(sock).unwrap();
    let e = t.get::<Value>("/1.0").await.err().unwrap();
    assert!(e.to_string().contains("larger than"), "{e}");
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..(MAX_JSON_BODY / 65536 + 2) {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend(std::iter::repeat_n(b' ', 65536));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (_d, sock) = fake_daemon(Some(chunked)).await;
    let t = Transport::unix(sock).unwrap();
    let e = t.get::<Value>("/1.0").await.err().unwrap();
    assert!(e.to_string().contains("larger than"), "{e}");
}

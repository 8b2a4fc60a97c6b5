//! Websockets to the daemon (exec streams, events): opening one over the
//! transport's endpoint within [`WEBSOCKET_TIMEOUT`], and the receive-only
//! stream wrapper for output websockets.
//!
//! Owns only how a websocket is opened and carried; what runs over it
//! (exec frames, events) belongs to the API areas. Must not know about cci.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use super::{Endpoint, Transport, WEBSOCKET_TIMEOUT};
use crate::incus::error::{Error, Result};

/// Any byte stream a websocket can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A websocket to the daemon.
pub type WebSocket = WebSocketStream<Box<dyn Io>>;

/// A stream for a websocket cci only reads from (a command's output). The
/// daemon pings every exec websocket as it connects and closes it as soon as
/// the command is done; the websocket library answers the ping before it
/// reads on, so a reader that got to it late fails writing the answer
/// ("broken pipe") and would lose the output still waiting in the socket.
/// Writes to a peer that is gone are dropped here instead: nothing the
/// daemon needs is lost, and the output is read to its end.
struct ReceiveOnly<S>(S);

fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, NotConnected};
    matches!(e.kind(), BrokenPipe | ConnectionReset | NotConnected)
}

impl<S: AsyncRead + Unpin> AsyncRead for ReceiveOnly<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReceiveOnly<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.0).poll_write(cx, buf) {
            std::task::Poll::Ready(Err(e)) if peer_gone(&e) => {
                std::task::Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_flush(cx) {
            std::task::Poll::Ready(Err(e)) if peer_gone(&e) => std::task::Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_shutdown(cx) {
            std::task::Poll::Ready(Err(e)) if peer_gone(&e) => std::task::Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// `s` as a websocket's stream, receive-only when asked.
fn wrap<S: Io + 'static>(s: S, receiving: bool) -> Box<dyn Io> {
    if receiving {
        Box::new(ReceiveOnly(s))
    } else {
        Box::new(s)
    }
}

impl Transport {
    /// Open a websocket on `path` (for exec streams and events).
    /// Opening it is bounded by [`WEBSOCKET_TIMEOUT`]; using it is not.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket> {
        self.open_websocket(path, false).await
    }

    /// [`Transport::websocket`] for a stream cci only reads to its end (see
    /// `ReceiveOnly`).
    pub async fn websocket_receiving(&self, path: &str) -> Result<WebSocket> {
        self.open_websocket(path, true).await
    }

    async fn open_websocket(&self, path: &str, receiving: bool) -> Result<WebSocket> {
        let limit = WEBSOCKET_TIMEOUT.min(self.request_timeout);
        self.bounded(limit, async {
            let (stream, base): (Box<dyn Io>, String) = match &self.endpoint {
                Endpoint::Unix(socket) => {
                    let s = tokio::net::UnixStream::connect(socket)
                        .await
                        .map_err(|e| self.io_error(&e))?;
                    (wrap(s, receiving), "ws://incus".into())
                }
                Endpoint::Https(h) => {
                    let tcp = tokio::net::TcpStream::connect((h.host.as_str(), h.port))
                        .await
                        .map_err(|e| self.io_error(&e))?;
                    let _ = tcp.set_nodelay(true);
                    let name = rustls::pki_types::ServerName::try_from(h.host.clone())
                        .map_err(|e| Error::Protocol(format!("{:?}: {e}", h.host)))?;
                    let tls = tokio_rustls::TlsConnector::from(h.tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| self.io_error(&e))?;
                    let url = h.url().replacen("https://", "wss://", 1);
                    (wrap(tls, receiving), url)
                }
            };
            let url = format!("{base}{}", self.path_with_project(path));
            let (ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| Error::Protocol(format!("opening websocket {path}: {e}")))?;
            Ok(ws)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_waiting_in_the_socket_is_read_after_the_peer_hung_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        b.write_all(b"output")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(b);
        let mut plain = a;
        // Positive control: a plain stream fails to answer the gone peer.
        let err = plain.write_all(b"pong").await;
        assert!(err.as_ref().is_err_and(peer_gone), "{err:?}");
        let mut r = ReceiveOnly(plain);
        r.write_all(b"pong").await.unwrap_or_else(|e| panic!("{e}"));
        r.flush().await.unwrap_or_else(|e| panic!("{e}"));
        let mut got = String::new();
        r.read_to_string(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, "output");
    }
}

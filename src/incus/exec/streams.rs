//! The byte streams of an exec: pumping a command's input and output
//! through its websockets, the capped buffer that keeps captured output
//! bounded, and the reader that counts consumed input (to tell whether a
//! command may be started again).
//!
//! Owns only moving bytes; starting commands, retries and exit codes are
//! `exec`'s. Must not know about cci.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::incus::error::{Error, Result};
use crate::incus::transport::WebSocket;

/// Copy frames from a websocket to `out` until the stream ends.
pub(super) async fn pump_out<O: AsyncWrite + Unpin>(ws: &mut WebSocket, out: &mut O) -> Result<()> {
    let (mut frames, mut bytes) = (0u64, 0u64);
    let ended = pump_frames(ws, out, &mut frames, &mut bytes).await;
    tracing::debug!("exec output stream: {frames} frame(s), {bytes} byte(s), ended: {ended:?}");
    ended.map(|_| ())
}

/// [`pump_out`]'s loop; says how the stream ended.
async fn pump_frames<O: AsyncWrite + Unpin>(
    ws: &mut WebSocket,
    out: &mut O,
    frames: &mut u64,
    bytes: &mut u64,
) -> Result<&'static str> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Binary(data)) => {
                *frames += 1;
                *bytes += data.len() as u64;
                out.write_all(&data)
                    .await
                    .map_err(|e| Error::io("writing command output", e))?;
                out.flush()
                    .await
                    .map_err(|e| Error::io("writing command output", e))?;
            }
            Ok(Message::Text(t)) if t.is_empty() => return Ok("empty text frame"),
            Ok(Message::Close(_)) => return Ok("close frame"),
            Ok(_) => {}
            // Before the end-of-stream frame: output may be missing, say so.
            Err(e) => return Err(Error::Protocol(format!("{BROKE_OFF}: {e}"))),
        }
    }
    Ok("end of stream")
}

/// How [`pump_out`]'s error for a stream the daemon cut begins.
pub(super) const BROKE_OFF: &str = "the command's output stream broke off";

/// Whether `e` is [`pump_out`]'s error for a stream the daemon cut (rather
/// than one of cci's own side, e.g. its output refused).
pub(super) fn broke_off(e: &Error) -> bool {
    matches!(e, Error::Protocol(m) if m.starts_with(BROKE_OFF))
}

/// Copy `input` into a websocket, then signal end of input with an empty text frame.
pub(super) async fn pump_in<I: AsyncRead + Unpin>(
    ws: &mut WebSocket,
    input: Option<&mut I>,
) -> Result<()> {
    if let Some(input) = input {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("reading command input", e))?;
            if n == 0 {
                break;
            }
            if ws.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                return Ok(()); // the command is gone; its exit code tells the rest
            }
        }
    }
    let _ = ws.send(Message::text("")).await;
    Ok(())
}

/// Close a websocket, not waiting long for the other side.
pub(super) async fn close(ws: &mut WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// A sink keeping the first `cap` bytes written to it and counting the rest,
/// which it accepts (the command is never held up) but drops.
#[derive(Debug)]
pub struct CappedBuf {
    data: Vec<u8>,
    cap: usize,
    pub(super) cut: u64,
}

impl CappedBuf {
    /// Keep at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedBuf {
            data: Vec::new(),
            cap,
            cut: 0,
        }
    }

    /// What was kept, with a line saying how much was cut when any was.
    pub fn into_noted(mut self) -> Vec<u8> {
        if self.cut > 0 {
            let note = format!("\n[cci: {} more bytes cut]", self.cut);
            self.data.extend_from_slice(note.as_bytes());
        }
        self.data
    }
}

impl AsyncWrite for CappedBuf {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let room = self.cap.saturating_sub(self.data.len()).min(buf.len());
        self.data.extend_from_slice(&buf[..room]);
        self.cut += (buf.len() - room) as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A reader that counts what it has handed out (to tell whether a command
/// consumed any of its input).
pub(super) struct CountingReader<I> {
    inner: I,
    pub(super) read: u64,
}

impl<I> CountingReader<I> {
    /// Count what `inner` hands out.
    pub(super) fn new(inner: I) -> Self {
        CountingReader { inner, read: 0 }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingReader<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captured_output_is_capped_and_says_so() {
        let mut b = CappedBuf::new(10);
        b.write_all(b"0123456").await.unwrap();
        b.write_all(b"789abcdef").await.unwrap();
        assert_eq!(b.into_noted(), b"0123456789\n[cci: 6 more bytes cut]");
        let mut b = CappedBuf::new(10);
        b.write_all(b"short").await.unwrap();
        assert_eq!(b.into_noted(), b"short");
    }
}

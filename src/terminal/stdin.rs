//! The terminal's input for an attached session, read so that it stops
//! when the session does: tokio's own stdin reads on a thread that stays
//! blocked in `read` after its reader is dropped and swallows the next key
//! — the dashboard's, after `cci status` attached and came back. This one
//! waits with `poll` and a short timeout, and reads only while wanted.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// How often the reading thread looks whether it is still wanted.
const LOOK: Duration = Duration::from_millis(50);

/// Standard input until dropped.
pub struct Stdin {
    rx: mpsc::Receiver<Vec<u8>>,
    held: Vec<u8>,
    stop: Arc<AtomicBool>,
}

impl Stdin {
    /// Start reading file descriptor 0.
    pub fn new() -> Stdin {
        let (tx, rx) = mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                let mut fds = libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for its length.
                let n = unsafe { libc::poll(&mut fds, 1, LOOK.as_millis() as i32) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                if n == 0 || done.load(Ordering::Relaxed) {
                    continue;
                }
                // SAFETY: reading into a buffer we own, for its length.
                let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if got <= 0 {
                    return;
                }
                if tx.blocking_send(buf[..got as usize].to_vec()).is_err() {
                    return;
                }
            }
        });
        Stdin {
            rx,
            held: Vec::new(),
            stop,
        }
    }
}

impl Default for Stdin {
    fn default() -> Self {
        Stdin::new()
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for Stdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.held.is_empty() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(data)) => this.held = data,
                // End of input.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.held.len().min(out.remaining());
        out.put_slice(&this.held[..n]);
        this.held.drain(..n);
        Poll::Ready(Ok(()))
    }
}

//! The user's terminal during an interactive command: raw mode that is always
//! restored (errors and panics included), window resizes and signals
//! forwarded, and the container's output filtered on its way to the screen
//! ([`filter`]).

mod filter;
mod stdin;

use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::incus::{self, Client, ExecRequest, TerminalControl};

pub use filter::{
    EscapeFilter, MAX_CSI, MAX_OSC, filter_all, printable, printable_lines, strip_controls,
};

/// Raw mode for as long as this value lives.
pub struct RawMode {
    active: bool,
}

impl RawMode {
    /// Put the terminal in raw mode when stdin is a terminal (otherwise do nothing).
    pub fn enable() -> std::io::Result<Self> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode { active: false });
        }
        crossterm::terminal::enable_raw_mode()?;
        Ok(RawMode { active: true })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.active {
            restore();
        }
    }
}

/// Leave raw mode if we are in it. Safe to call at any time (the panic hook does).
pub fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
}

/// The terminal's size as (columns, rows), 80x24 when there is none.
pub fn size() -> (u16, u16) {
    crossterm::terminal::size()
        .ok()
        .filter(|(w, h)| *w > 0 && *h > 0)
        .unwrap_or((80, 24))
}

/// A `TERM` the container surely has terminfo for: common basic terminals
/// pass through, anything else (ghostty, kitty, wezterm, alacritty,
/// tmux-256color...) becomes `xterm-256color`.
pub fn sanitize_term(term: &str) -> &str {
    const KNOWN: &[&str] = &[
        "xterm",
        "xterm-256color",
        "xterm-color",
        "vt100",
        "vt220",
        "linux",
        "dumb",
        "ansi",
    ];
    if KNOWN.contains(&term) {
        term
    } else {
        "xterm-256color"
    }
}

/// Forward SIGWINCH as resizes and SIGTERM/SIGHUP/SIGINT/SIGQUIT as signals.
async fn forward_signals(tx: mpsc::UnboundedSender<TerminalControl>) {
    let kinds = [
        (SignalKind::window_change(), 0),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::interrupt(), 2),
        (SignalKind::quit(), 3),
    ];
    let mut streams = Vec::new();
    for (kind, num) in kinds {
        if let Ok(s) = signal(kind) {
            streams.push((s, num));
        }
    }
    loop {
        let next = futures_util::future::select_all(
            streams
                .iter_mut()
                .map(|(s, n)| Box::pin(async move { s.recv().await.map(|_| *n) })),
        );
        let (got, _, _) = next.await;
        let msg = match got {
            Some(0) => {
                let (width, height) = size();
                TerminalControl::Resize { width, height }
            }
            Some(n) => TerminalControl::Signal(n),
            None => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Run `req` in `instance` on a PTY attached to this process's terminal; returns
/// the command's exit code. The terminal is restored however this ends.
pub async fn run_interactive(
    client: &Client,
    instance: &str,
    mut req: ExecRequest,
) -> incus::Result<i32> {
    let (width, height) = size();
    req.width = width;
    req.height = height;
    if let Ok(term) = std::env::var("TERM") {
        req.environment
            .entry("TERM".into())
            .or_insert_with(|| sanitize_term(&term).to_string());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let forwarder = tokio::spawn(forward_signals(tx));
    let raw =
        RawMode::enable().map_err(|e| incus::Error::io("setting the terminal to raw mode", e))?;
    // A daemon that shuts down waits (up to `core.shutdown_timeout`) for
    // attached execs to end, and one killed while serving an exec cannot exec
    // into that container again: let go as soon as it starts to go away.
    let result = tokio::select! {
        r = client.exec_interactive(instance, &req, stdin::Stdin::new(), Filtered::new(tokio::io::stdout()), rx) => r,
        _ = daemon_going_away(client) => Err(incus::Error::ShuttingDown),
    };
    drop(raw);
    forwarder.abort();
    result
}

/// A writer that passes everything through an [`EscapeFilter`]: what the
/// container sends reaches the terminal without clipboard, hyperlink,
/// passthrough or report-request sequences. Holds at most one write's
/// filtered output.
pub struct Filtered<W> {
    inner: W,
    filter: EscapeFilter,
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Filtered<W> {
    pub fn new(inner: W) -> Self {
        Filtered {
            inner,
            filter: EscapeFilter::new(),
            pending: Vec::new(),
        }
    }

    /// Write out what is pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Filtered<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.filter.push(buf, &mut this.pending);
        // Taken whole: what the terminal cannot take yet waits in `pending`.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Resolves once the daemon starts to shut down (checked every 2 s).
async fn daemon_going_away(client: &Client) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if client.going_away().await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_filters_across_writes() {
        use tokio::io::AsyncWriteExt;
        let mut w = Filtered::new(Vec::new());
        for part in [&b"ok \x1b]5"[..], b"2;c;eA==\x07\x1b[3", b"2mgreen"] {
            w.write_all(part).await.unwrap();
        }
        w.flush().await.unwrap();
        assert_eq!(w.inner, b"ok \x1b[32mgreen");
    }

    #[test]
    fn exotic_terminals_become_xterm_256color() {
        assert_eq!(sanitize_term("xterm"), "xterm");
        assert_eq!(sanitize_term("xterm-256color"), "xterm-256color");
        for exotic in [
            "xterm-ghostty",
            "xterm-kitty",
            "wezterm",
            "alacritty",
            "tmux-256color",
            "",
        ] {
            assert_eq!(sanitize_term(exotic), "xterm-256color", "{exotic}");
        }
    }
}

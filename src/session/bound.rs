//! The time bounds on a save or restore: a container's `tar` is the agent's
//! to replace, and one that sleeps or trickles for ever must not hold up the
//! cci command that is saving (`cci list`, `shell`, `attach`...). A save or
//! restore fails when its state stream stalls for [`STALL`] or when it runs
//! past [`TOTAL`]; the earlier saved state is kept, as for any failed save.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long the state stream may carry no byte (the container's `tar`
/// silent, or not reading) before the save or restore is given up.
pub const STALL: Duration = Duration::from_secs(45);

/// The longest one save or restore may take in all, however it trickles.
pub const TOTAL: Duration = Duration::from_secs(30 * 60);

/// A stream that counts the bytes going through it into a shared counter.
pub struct Progress<T> {
    inner: T,
    moved: Arc<AtomicU64>,
}

impl<T> Progress<T> {
    /// Count what goes through `inner` into `moved`.
    pub fn new(inner: T, moved: Arc<AtomicU64>) -> Self {
        Progress { inner, moved }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Progress<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Progress<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

/// Why a bounded run was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overrun {
    /// Nothing moved for this long.
    Stalled(Duration),
    /// It ran this long in all.
    TooLong(Duration),
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overrun::Stalled(d) => write!(
                f,
                "the container's tar sent or took nothing for {} s",
                d.as_secs()
            ),
            Overrun::TooLong(d) => write!(f, "it ran longer than {} s", d.as_secs()),
        }
    }
}

/// Run `fut` until it ends, `moved` stays still for `stall`, or `total` has
/// passed. Giving up drops `fut` (its streams close).
pub async fn bounded<T>(
    moved: &AtomicU64,
    stall: Duration,
    total: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, Overrun> {
    tokio::pin!(fut);
    let start = Instant::now();
    let mut last = (moved.load(Ordering::Relaxed), start);
    let tick = (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    loop {
        tokio::select! {
            r = &mut fut => return Ok(r),
            _ = ticks.tick() => {
                let now = moved.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                }
                if last.1.elapsed() >= stall {
                    return Err(Overrun::Stalled(stall));
                }
                if start.elapsed() >= total {
                    return Err(Overrun::TooLong(total));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[tokio::test]
    async fn a_silent_run_stalls_and_a_trickle_runs_out_of_time() {
        let moved = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let r = bounded(&moved, MS(200), MS(60_000), std::future::pending::<()>()).await;
        assert_eq!(r, Err(Overrun::Stalled(MS(200))));
        assert!(t.elapsed() < MS(2000));
        // Bytes that keep moving keep a run alive, up to the total.
        let (w, mut r) = tokio::io::duplex(64);
        let counter = moved.clone();
        let trickle = async move {
            let mut w = Progress::new(w, counter);
            loop {
                w.write_all(b"x").await.unwrap();
                tokio::time::sleep(MS(20)).await;
            }
        };
        tokio::spawn(async move { while r.read_u8().await.is_ok() {} });
        let t = Instant::now();
        let out = bounded(&moved, MS(200), MS(700), trickle).await;
        assert_eq!(out, Err(Overrun::TooLong(MS(700))));
        assert!(t.elapsed() >= MS(700) && t.elapsed() < MS(3000));
        assert!(moved.load(Ordering::Relaxed) > 10);
        // A run that ends in time is untouched.
        assert_eq!(bounded(&moved, MS(200), MS(700), async { 7 }).await, Ok(7));
    }
}

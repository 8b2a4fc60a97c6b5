//! Relaying a tunnel with splice(2): the bytes go from one socket into a
//! pipe and from the pipe to the other socket without being copied through
//! the proxy's memory. On a machine where the client, the server and the
//! proxy share a few cores, the copies a plain relay makes are what limits
//! a bulk download.
//!
//! How many bytes one splice moves matters as much: each round wakes the
//! proxy and the client once, and on a virtual machine a wake-up of an idle
//! CPU costs tens of microseconds. A pipe starts at 256 KiB; a direction
//! that turns out to carry bulk (a download) grows its pipe to 1 MiB, the
//! most an unprivileged process may ask for, while few others hold one.
//! Measured on 2 cores, a 1 GB download through the proxy ran at 0.70x
//! direct with 256 KiB pipes and about 0.8x with 1 MiB
//! (`tests/bench/proxy-vs-direct.sh`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// A pipe both of whose ends never block.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What the pipe holds at most (what the kernel gave).
    size: AtomicUsize,
    /// Whether it asked to grow (once), and whether it holds one of the
    /// [`MAX_GROWN`] places.
    tried: AtomicBool,
    holds: AtomicBool,
}

/// The pipe size asked for; the kernel's limits may leave the default
/// (64 KiB), which works too.
const PIPE_SIZE: usize = 256 * 1024;

/// A bulk direction's pipe: `fs.pipe-max-size`'s default, the most an
/// unprivileged process gets.
const BULK_PIPE_SIZE: usize = 1024 * 1024;

/// A direction that moved this much is bulk: its pipe grows.
const BULK_AFTER: u64 = 4 * 1024 * 1024;

/// The most grown pipes at once: with [`MAX_SPLICING`] relays of two
/// normal pipes, 22 MiB in all, a third of the per-user allowance.
const MAX_GROWN: usize = 8;

static GROWN: AtomicUsize = AtomicUsize::new(0);

/// The most relays spliced at once. The kernel counts pipe memory per user
/// (`fs.pipe-user-pages-soft`, 64 MiB by default) and, past it, gives every
/// new pipe of that user one page: a container holding many tunnels open
/// must not do that to the user's other programs. 32 relays of two 256 KiB
/// pipes take at most a quarter of it (and [`MAX_GROWN`] bulk pipes a bit
/// more); more relays copy through buffers.
const MAX_SPLICING: usize = 32;

static SPLICING: AtomicUsize = AtomicUsize::new(0);

/// The two pipes of one spliced relay, while it lasts (see [`MAX_SPLICING`]).
pub(super) struct Pipes {
    /// One way.
    pub up: Pipe,
    /// The other.
    pub down: Pipe,
}

impl Pipes {
    /// Two pipes, unless as many relays splice already or none can be made.
    pub(super) fn take() -> Option<Pipes> {
        let n = SPLICING.fetch_add(1, Ordering::Relaxed);
        let pipes = (n < MAX_SPLICING)
            .then(|| {
                Some(Pipes {
                    up: Pipe::new().ok()?,
                    down: Pipe::new().ok()?,
                })
            })
            .flatten();
        if pipes.is_none() {
            SPLICING.fetch_sub(1, Ordering::Relaxed);
        }
        pipes
    }
}

impl Drop for Pipes {
    fn drop(&mut self) {
        SPLICING.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors owned by no one else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let pipe = Pipe {
            read,
            write,
            size: AtomicUsize::new(0),
            tried: false.into(),
            holds: false.into(),
        };
        pipe.resize(PIPE_SIZE);
        Ok(pipe)
    }

    /// Ask for `size` bytes; the kernel may refuse (its limits), and the
    /// pipe keeps what it had. The pipe must be empty.
    fn resize(&self, size: usize) {
        let fd = self.write.as_raw_fd();
        // SAFETY: plain fcntls on a descriptor we own; a failure leaves
        // the pipe as it was, and its size is then read back.
        let got = unsafe {
            let set = libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int);
            if set > 0 {
                set
            } else {
                libc::fcntl(fd, libc::F_GETPIPE_SZ)
            }
        };
        // The kernel's default when even reading the size fails.
        let got = if got > 0 { got as usize } else { 64 * 1024 };
        self.size.store(got, Ordering::Relaxed);
    }

    /// Grow to [`BULK_PIPE_SIZE`] if fewer than [`MAX_GROWN`] pipes are
    /// grown; once per pipe. The pipe must be empty.
    fn grow(&self) {
        if self.tried.swap(true, Ordering::Relaxed) {
            return;
        }
        if GROWN.fetch_add(1, Ordering::Relaxed) >= MAX_GROWN {
            GROWN.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.resize(BULK_PIPE_SIZE);
        if self.size.load(Ordering::Relaxed) >= BULK_PIPE_SIZE {
            self.holds.store(true, Ordering::Relaxed);
        } else {
            // The kernel said no (the user's pipe allowance): no place held.
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if *self.holds.get_mut() {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Move up to `len` bytes from `from` to `to` (one of them a pipe).
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; null offsets mean
    // "the file position", which pipes and sockets do not have.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Relay `src` to `dst` through `pipe` until `src` ends, then end `dst`'s
/// sending side. Each byte read from `src` is added to `count` and calls
/// `moved`. The pipe is empty whenever `src` is read, so a splice that
/// would block there is `src` having nothing (and its readiness is rightly
/// cleared); the same holds for `dst` when the pipe is drained. Past
/// [`BULK_AFTER`] bytes the pipe grows (see the module's text).
pub(super) async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    count: &AtomicU64,
    moved: impl Fn(),
) -> io::Result<()> {
    let mut total = 0u64;
    loop {
        if total >= BULK_AFTER {
            pipe.grow();
        }
        let size = pipe.size.load(Ordering::Relaxed);
        src.readable().await?;
        let mut held = match src.try_io(Interest::READABLE, || {
            splice_once(src.as_raw_fd(), pipe.write.as_raw_fd(), size)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        total += held as u64;
        count.fetch_add(held as u64, Ordering::Relaxed);
        moved();
        while held > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice_once(pipe.read.as_raw_fd(), dst.as_raw_fd(), held)
            }) {
                Ok(n) => held -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    // SAFETY: shutdown on an open socket; an error (peer gone) is harmless.
    unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// The tests that count places of the whole process, one at a time.
    static PLACES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn no_more_than_so_many_relays_splice_at_once() {
        let _one = PLACES.lock().unwrap_or_else(|e| e.into_inner());
        let mut held = Vec::new();
        while let Some(p) = Pipes::take() {
            held.push(p);
            assert!(held.len() <= MAX_SPLICING);
        }
        assert!(Pipes::take().is_none());
        held.clear();
        assert!(Pipes::take().is_some(), "taken pipes are given back");
    }

    #[test]
    fn no_more_than_so_many_pipes_grow_and_each_once() {
        let _one = PLACES.lock().unwrap_or_else(|e| e.into_inner());
        let pipes: Vec<Pipe> = (0..MAX_GROWN + 2).map(|_| Pipe::new().unwrap()).collect();
        for p in &pipes {
            assert_eq!(p.size.load(Ordering::Relaxed), PIPE_SIZE);
            p.grow();
            p.grow();
        }
        let grown = |ps: &[Pipe]| {
            ps.iter()
                .filter(|p| p.size.load(Ordering::Relaxed) == BULK_PIPE_SIZE)
                .count()
        };
        assert_eq!(grown(&pipes), MAX_GROWN, "the others keep their size");
        assert_eq!(GROWN.load(Ordering::Relaxed), MAX_GROWN);
        drop(pipes);
        assert_eq!(GROWN.load(Ordering::Relaxed), 0, "places are given back");
        let again = Pipe::new().unwrap();
        again.grow();
        assert_eq!(again.size.load(Ordering::Relaxed), BULK_PIPE_SIZE);
    }

    #[test]
    fn relays_every_byte_both_ways_and_passes_the_end_on() {
        // Its download direction takes a place of a grown pipe.
        let _one = PLACES.lock().unwrap_or_else(|e| e.into_inner());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(relay_every_byte());
    }

    async fn relay_every_byte() {
        // client <-> (x | y) <-> server, relayed between x and y.
        let (mut client, x) = pair().await;
        let (y, mut server) = pair().await;
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let (p1, p2) = (Pipe::new().unwrap(), Pipe::new().unwrap());
        let relay = async {
            tokio::try_join!(
                one_way(&x, &y, &p1, &up, || {}),
                one_way(&y, &x, &p2, &down, || {})
            )
            .unwrap();
        };
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let ends = async {
            let sent = big.clone();
            let c = async {
                client.write_all(b"hello").await.unwrap();
                client.shutdown().await.unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                got
            };
            let s = async {
                let mut got = Vec::new();
                server.read_to_end(&mut got).await.unwrap();
                server.write_all(&sent).await.unwrap();
                server.shutdown().await.unwrap();
                got
            };
            tokio::join!(c, s)
        };
        let ((), (at_client, at_server)) = tokio::join!(relay, ends);
        assert_eq!(at_server, b"hello");
        assert!(at_client == big, "the download arrived changed");
        assert_eq!(up.load(Ordering::Relaxed), 5);
        assert_eq!(down.load(Ordering::Relaxed), big.len() as u64);
        assert_eq!(
            p1.size.load(Ordering::Relaxed),
            PIPE_SIZE,
            "5 bytes are no bulk"
        );
        assert_eq!(
            p2.size.load(Ordering::Relaxed),
            BULK_PIPE_SIZE,
            "the download's pipe grew"
        );
    }
}

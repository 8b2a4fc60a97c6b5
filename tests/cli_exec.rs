//! `cci container exec` as a user runs it: captured, streamed, and interactive
//! through a real pseudo-terminal.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestInstance, cci};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_json_raw_exit_codes_and_stdin() {
    let inst = TestInstance::running("cliexec").await;
    let name = inst.name.as_str();

    let out = cci()
        .args(["container", "exec", name, "--capture", "--"])
        .args(["sh", "-c", "echo out; echo err >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 7);

    let out = cci()
        .args([
            "container",
            "exec",
            name,
            "--capture",
            "--format",
            "raw",
            "--",
        ])
        .args(["printf", "a\\nb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"a\nb");

    // Streamed: stdin goes in, stdout and stderr come out separately.
    let mut child = cci()
        .args([
            "container",
            "exec",
            name,
            "--user",
            "1000",
            "--group",
            "1000",
        ])
        .args(["-e", "GREETING=hi,there=x", "--cwd", "/tmp", "--"])
        .args([
            "sh",
            "-c",
            "tr a-z A-Z; echo \"$GREETING $(id -u) $(pwd)\" >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"shout this\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "SHOUT THIS\n");
    assert_eq!(text(&out.stderr), "hi,there=x 1000 /tmp\n");

    let out = cci()
        .args([
            "container",
            "exec",
            "cci-test-no-such-instance",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

/// A pseudo-terminal: (master, slave).
fn openpty(cols: u16, rows: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the out-pointers; the rest are valid or null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // openpty does not set close-on-exec: without it, children other tests spawn
    // meanwhile would inherit (and keep open) this terminal.
    for fd in [master, slave] {
        // SAFETY: fcntl on fds we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both fds were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Make `slave` the command's standard streams and controlling terminal, as
/// a login would: a new session whose controlling TTY it is.
fn on_terminal(cmd: &mut std::process::Command, slave: &OwnedFd) {
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn set_size(fd: &OwnedFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0);
}

fn termios(fd: &OwnedFd) -> libc::termios {
    // SAFETY: tcgetattr fills the zeroed struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t
    }
}

/// Everything the terminal shows, read on a thread.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    fn new(master: &OwnedFd) -> Screen {
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Screen {
            rx,
            seen: String::new(),
        }
    }

    /// Wait until the screen shows `want` (after what was already matched).
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.seen.find(want) {
                self.seen.drain(..i + want.len());
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("terminal never showed {want:?}; it shows {:?}", self.seen),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_exec_on_a_real_terminal() {
    let inst = TestInstance::running("tty").await;
    let (master, slave) = openpty(91, 37);
    let before = termios(&slave);

    let mut cmd = cci();
    cmd.args(["container", "exec", "-t", &inst.name, "-e", "PS1=ready> "])
        .args(["--", "bash", "--norc", "-i"])
        .env("TERM", "xterm");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());

    // The child sees a TTY of the size we have. (Keys are sent only at the
    // prompt: a Ctrl-D typed while bash is between commands would be eaten.)
    screen.expect("ready> ");
    keys.write_all(b"test -t 0 && echo IS-A-TTY; stty size\n")
        .unwrap();
    screen.expect("IS-A-TTY");
    screen.expect("37 91");
    screen.expect("ready> ");

    // While cci runs, the user's terminal is raw (no echo, no line editing).
    let during = termios(&slave);
    assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0);

    // A resize of the user's terminal reaches the command.
    set_size(&slave, 120, 40);
    std::thread::sleep(Duration::from_millis(300));
    keys.write_all(b"stty size\n").unwrap();
    screen.expect("40 120");
    screen.expect("ready> ");

    // Ctrl-D at the prompt ends the shell, and cci with it.
    keys.write_all(b"\x04").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            while let Ok(b) = screen.rx.try_recv() {
                screen.seen.push_str(&String::from_utf8_lossy(&b));
            }
            panic!("cci did not exit after Ctrl-D; terminal: {:?}", screen.seen);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));

    // The terminal is back to how it was.
    let after = termios(&slave);
    assert_eq!(after.c_lflag, before.c_lflag);
    assert_eq!(after.c_iflag, before.c_iflag);
    assert_eq!(after.c_oflag, before.c_oflag);
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_exec_passes_the_exit_code_through() {
    let inst = TestInstance::running("ttyrc").await;
    let (_master, slave) = openpty(80, 24);
    let mut cmd = cci();
    cmd.args([
        "container",
        "exec",
        "-t",
        &inst.name,
        "--",
        "sh",
        "-c",
        "exit 9",
    ]);
    on_terminal(&mut cmd, &slave);
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(9));
}

//! What a hostile container can put on the user's terminal: escape sequences
//! that reach beyond the screen (clipboard, hyperlinks, DCS, report
//! requests) never arrive, through `attach`, `container exec -t`, `tmux
//! capture`, error messages or tables; text and colours still do.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::agent::{Sessions, background, cci_in, sh_in, text};
use common::pty::{on_terminal, openpty};
use common::{TestInstance, cci};

/// Every byte the terminal receives, unfiltered.
struct RawScreen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl RawScreen {
    fn new(master: &OwnedFd) -> RawScreen {
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
        RawScreen {
            rx,
            seen: Vec::new(),
        }
    }

    fn has(&self, want: &str) -> bool {
        contains(&self.seen, want.as_bytes())
    }

    /// Wait (30 s at most) until every one of `want` has arrived; returns all bytes.
    fn until(&mut self, want: &[&str]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !want.iter().all(|w| self.has(w)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend(b),
                Err(_) => panic!(
                    "the terminal never got all of {want:?}; it got {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
        self.seen.clone()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What must never reach the host terminal, by what gives it away.
const HOSTILE: &[&[u8]] = &[
    b"\x1b]52",
    b"Q0FOQVJZ",
    b"\x1b]8;",
    b"canary.invalid",
    b"\x1bP",
    b"$qm",
    b"\x1b_",
    b"APC-CANARY",
    b"\x1b[6n",
    b"\x1b[21t",
];

fn assert_clean(raw: &[u8]) {
    for bad in HOSTILE {
        assert!(
            !contains(raw, bad),
            "{:?} reached the terminal: {:?}",
            String::from_utf8_lossy(bad),
            String::from_utf8_lossy(raw)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_on_a_terminal_gets_colours_but_no_clipboard_links_or_dcs() {
    let inst = TestInstance::running("term").await;
    let (master, slave) = openpty(100, 30);
    let mut cmd = cci();
    cmd.args(["container", "exec", &inst.name, "-t", "--", "sh", "-c"])
        .arg(concat!(
            r"printf 'BEGIN \033[31mRED-OK\033[0m \033]52;c;Q0FOQVJZ\007 ",
            r"\033]8;;http://canary.invalid/\033\\LINK-OK\033]8;;\033\\ ",
            r"\033P$qm\033\\ \033_APC-CANARY\033\\ \033[6n\033[21t ",
            r"\033]2;TITLE-OK\007 END-MARK\n'"
        ));
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = RawScreen::new(&master);
    let raw = screen.until(&["END-MARK"]);
    let _ = child.wait();
    // Positive control: text, colours and the title arrive.
    for good in [
        &b"\x1b[31mRED-OK\x1b[0m"[..],
        b"LINK-OK",
        b"\x1b]2;TITLE-OK\x07",
    ] {
        assert!(
            contains(&raw, good),
            "{:?} missing: {:?}",
            String::from_utf8_lossy(good),
            String::from_utf8_lossy(&raw)
        );
    }
    assert_clean(&raw);
}

/// A workspace whose name holds a newline, an escape and a bell, with the
/// stand-in agent in it.
fn hostile_workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ws\n\x1b[31mRED\x07-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = dir.path().join(".fake-agent");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent"),
        &agent,
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_session_reaches_the_host_only_as_harmless_text() {
    let ws = hostile_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &[]);

    // Tables: the workspace path shows escaped, on the container's own line.
    let escaped = "ws\\n\\u{1b}[31mRED\\u{7}-";
    for args in [&["list"][..], &["tmux", "list"], &["info", &name]] {
        let out = cci().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(!shown.contains(['\x1b', '\x07']), "{args:?}: {shown:?}");
        assert!(
            shown
                .lines()
                .any(|l| l.contains(escaped) && (l.contains(name.as_str()) || args[0] == "info")),
            "{args:?}: {shown}"
        );
    }

    // Attached, the agent (the session's owner) lets its tmux pass sequences
    // straight through to the terminal and prints hostile ones.
    let (master, slave) = openpty(100, 30);
    let mut cmd = cci_in(ws.path(), "attach");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = RawScreen::new(&master);
    screen.until(&["agent> "]);
    let out = sh_in(
        &name,
        false,
        r#"T="tmux -S /home/code/.cci-tmux"; $T set -g allow-passthrough on || exit 1
tty=$($T display -p -t cci '#{pane_tty}') || exit 1
p() { printf '\033Ptmux;%b\033\\' "$1" >"$tty"; }
p '\033\033]52;c;Q0FOQVJZ\007'
p '\033\033]8;;http://canary.invalid/\007'
p '\033\033P$qm\033\033\\'
p '\033\033_APC-CANARY\033\033\\'
p '\033\033[6n'
p '\033\033]2;TITLE-OK\007'
printf '\033[32mGREEN-OK\033[0m END-MARK\n' >"$tty""#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Positive control: passthrough works here (the title came through it,
    // after the hostile ones), and text and colours arrive.
    let raw = screen.until(&["\x1b]2;TITLE-OK\x07", "GREEN-OK", "END-MARK"]);
    assert!(
        contains(&raw, b"\x1b[32m"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_clean(&raw);
    let _ = child.kill();
    let _ = child.wait();

    // The agent, root in its container, swaps tmux for its own program.
    let out = sh_in(
        &name,
        true,
        r#"t=$(command -v tmux); [ -e "$t.real" ] || mv "$t" "$t.real"
cat >"$t" <<'EOF'
#!/bin/sh
for a; do
    [ "$a" = capture-pane ] && { printf 'SCREEN-OK \033]52;c;Q0FOQVJZ\007 \033[31mred\033[0m \033P$qm\033\\ \302\2336n tail\r\n'; exit 0; }
    [ "$a" = send-keys ] && { printf 'ERR-OK \033]52;c;Q0FOQVJZ\007\n' >&2; exit 1; }
done
exec "$0.real" "$@"
EOF
chmod 755 "$t""#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // `tmux capture`: only text, newlines and tabs.
    let out = cci().args(["tmux", "capture", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("SCREEN-OK") && shown.contains("tail"),
        "{shown:?}"
    );
    assert!(
        !shown
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{shown:?}"
    );
    // `--escape`: colours, nothing that reaches beyond the screen.
    let out = cci()
        .args(["tmux", "capture", "--escape", &name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        contains(&out.stdout, b"\x1b[31mred\x1b[0m"),
        "{:?}",
        text(&out.stdout)
    );
    assert!(contains(&out.stdout, b"tail"));
    assert_clean(&out.stdout);
    assert!(!contains(&out.stdout, "\u{9b}".as_bytes()));

    // An error quoting the container's tmux: printable.
    let out = cci()
        .args(["tmux", "send", &name, "hello"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("ERR-OK") && err.contains("\\u{1b}]52"),
        "{err:?}"
    );
    assert!(!err.contains(['\x1b', '\x07']), "{err:?}");
}

//! Helpers for tests that drive agent sessions: the stand-in agent's
//! workspace, background sessions, typing into them, reading their state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{cci, client, containers_of, test_image};

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

/// Assert `out` succeeded (showing what it said when not); its stdout.
pub fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Removes every container of a workspace when dropped.
pub struct Sessions(pub PathBuf);

impl Drop for Sessions {
    fn drop(&mut self) {
        let ws = self.0.clone();
        super::block_on_thread(async move {
            let host = super::host(client().await);
            for name in containers_of(&ws).await {
                let _ = cci::sandbox::remove(&host, &name).await;
            }
        });
    }
}

/// `cci SUBCOMMAND --workspace WS` with the test image and the stand-in agent.
pub fn cci_in(ws: &Path, sub: &str) -> Command {
    let mut cmd = cci();
    cmd.env("CCI_IMAGE", test_image())
        .env("CCI_TOOL_BINARY", "/workspace/.fake-agent")
        .arg(sub)
        .arg("--workspace")
        .arg(ws)
        .stdin(Stdio::null());
    cmd
}

/// Start a background session; returns its container name.
pub fn background(ws: &Path, extra: &[&str]) -> String {
    let out = cci_in(ws, "shell")
        .arg("--background")
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Run `script` (safe to run twice) in `name` as `code` (or root).
pub fn sh_in(name: &str, root: bool, script: &str) -> Output {
    let id = if root { "0" } else { "1000" };
    let mut tries = 0;
    loop {
        let out = cci()
            .args(["container", "exec", name, "--user", id, "--group", id])
            .args(["-e", "HOME=/home/code"])
            .args(["--cwd", "/workspace", "--capture", "--format", "raw", "--"])
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // The daemon still loses track of a command now and then (far less
        // often since cci sets no syscall intercepts; see
        // docs/incus-notes.md), and `cci container exec` never repeats one:
        // these scripts may run twice.
        if text(&out.stderr).contains("Failed to retrieve PID") && tries < 3 {
            tries += 1;
            continue;
        }
        return out;
    }
}

/// Type `keys` into the session of `name` as the agent's user would.
pub fn send_keys(name: &str, keys: &str) {
    let out = cci()
        .args([
            "container",
            "exec",
            name,
            "--user",
            "1000",
            "--group",
            "1000",
        ])
        .args([
            "--",
            "tmux",
            "-S",
            "/home/code/.cci-tmux",
            "send-keys",
            "-t",
            "cci",
        ])
        .args([keys, "Enter"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The daemon may lose track of the command (see `sh_in`); the keys went
    // in all the same. "no server running", "not running": the session
    // ended meanwhile.
    let err = text(&out.stderr);
    let lost = [
        "Failed to retrieve PID",
        "no server running",
        "Instance is not running",
        "no current target",
    ]
    .iter()
    .any(|m| err.contains(m));
    if out.status.code() != Some(0) && !lost {
        let ps = sh_in(
            name,
            true,
            "ps axfo user,pid,args; journalctl -b --no-pager | tail -30",
        );
        panic!(
            "send-keys {keys:?} to {name}: {}; inside:\n{}",
            text(&out.stderr),
            text(&ps.stdout)
        );
    }
}

/// Leave the agent and then the shell, typing `exit` until the session ends
/// and the container has stopped (a key press the daemon lost is typed again).
pub async fn end_from_inside(name: &str) {
    let c = client().await;
    for _ in 0..20 {
        if c.instance(name).await.unwrap().0.status.as_str() == "Stopped" {
            return;
        }
        if c.instance(name).await.unwrap().0.is_running() {
            type_while_ending(name, "exit");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_state(name, |s| s == Some("Stopped")).await;
}

/// Type `keys` (then Enter) into `name`'s session as it may be ending: the
/// container going down under the command makes it fail in many ways
/// (killed with no message, the session or server gone); whether the keys
/// arrived is told by the container stopping, which the caller waits for.
fn type_while_ending(name: &str, keys: &str) {
    let _ = cci()
        .args([
            "container",
            "exec",
            name,
            "--user",
            "1000",
            "--group",
            "1000",
        ])
        .args([
            "--",
            "tmux",
            "-S",
            "/home/code/.cci-tmux",
            "send-keys",
            "-t",
            "cci",
        ])
        .args([keys, "Enter"])
        .stdin(Stdio::null())
        .output();
}

pub fn info(name: &str) -> serde_json::Value {
    let out = cci()
        .args(["info", name, "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    json(&out)
}

/// Poll the container's state until `want` holds (20 s at most).
pub async fn wait_state(name: &str, want: impl Fn(Option<&str>) -> bool) {
    let c = client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = match c.instance(name).await {
            Ok((i, _)) => Some(i.status.to_string()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("{e}"),
        };
        if want(state.as_deref()) {
            return;
        }
        if Instant::now() > deadline {
            if let Ok((i, _)) = c.instance(name).await {
                eprintln!(
                    "{name}: {} last used {} config {:?}",
                    i.status, i.last_used_at, i.config
                );
            }
            let ps = sh_in(
                name,
                true,
                "ps axfo user,pid,stat,args; T=\"tmux -S /home/code/.cci-tmux\"; $T list-panes -a -F \"#{pane_pid} #{pane_dead} #{pane_tty}\"; $T capture-pane -p -t cci; ls -l /proc/$(pgrep -f new-session)/fd; ls -l /dev/pts",
            );
            panic!("{name} stayed {state:?}; inside:\n{}", text(&ps.stdout));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait (20 s at most) until the session's screen in `name` shows `want`
/// (a long line may wrap, so line breaks are ignored); returns the screen.
pub fn screen_shows(name: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cci()
            .args(["tmux", "capture", name])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let screen = text(&out.stdout);
        if screen.contains(want) || screen.replace('\n', "").contains(want) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "never showed {want:?}: {screen}{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

//! A session survives a restart of the Incus daemon, `cci attach` works
//! after it, and `cci events` and `cci status --watch` watch on through it. (Its own test binary: the restart interrupts every daemon call,
//! so nothing else may run meanwhile.)

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lines::Lines;
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{cci, client, containers_left, test_image};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Restart incusd as a service manager does: SIGTERM (it waits for attached
/// execs to end, and leaves containers running), then start it again the way
/// the test setup does.
async fn restart_daemon() {
    let pid = client()
        .await
        .server()
        .await
        .unwrap()
        .environment
        .server_pid as i32;
    assert!(pid > 1, "the daemon did not say its pid");
    // SAFETY: kill on the daemon's process id.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "incusd did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/setup-host.sh");
    let out = Command::new("bash")
        .arg(setup)
        .env("CCI_INCUSD_LOG", "/var/log/incus-cci-tests.log")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restarting incusd: {}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_survives_a_daemon_restart() {
    let ws = common::agent_workspace();
    let shell = |sub: &str| {
        let mut cmd = cci();
        cmd.env("CCI_IMAGE", test_image())
            .env("CCI_TOOL_BINARY", "/workspace/.fake-agent")
            .arg(sub)
            .arg("--workspace")
            .arg(ws.path());
        cmd
    };
    let out = shell("shell")
        .arg("--background")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();
    // Watchers, started before the daemon goes away.
    let mut events = Lines::start(&["events", "--format", "json"]);
    let mut watch = Lines::start(&["status", "--watch", "--format", "json"]);
    watch.wait_for("the session's row", |l| l.contains(&name));

    // Attached when the daemon goes away: cci lets go at once (so the daemon
    // need not wait for it), says how to come back, and leaves the session.
    let (master, slave) = openpty(90, 25);
    let mut cmd = shell("attach");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());
    screen.expect("agent> ");
    keys.write_all(b"before\r").unwrap();
    screen.expect("HEARD[before]");
    restart_daemon().await;
    let status = wait_exit(&mut child, &mut screen);
    let said = screen.drain();
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(said.contains(&format!("cci attach {name}")), "{said}");

    // The container and its session still run; attach works again.
    let c = client().await;
    assert!(c.instance(&name).await.unwrap().0.is_running());
    let mut cmd = shell("attach");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    screen.expect("HEARD[before]");
    keys.write_all(b"after\r").unwrap();
    screen.expect("HEARD[after]");
    keys.write_all(b"\rexit\r").unwrap();
    screen.expect("/workspace$");
    keys.write_all(b"exit\r").unwrap();
    assert_eq!(wait_exit(&mut child, &mut screen).code(), Some(0));
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());

    // The watchers said the daemon went and came back, and saw the end.
    events.wait_for("its removal", |l| {
        l.contains(&name) && l.contains("\"removed\"")
    });
    for w in [&events, &watch] {
        let said = w.stderr();
        assert!(said.contains("does not answer"), "{said}");
        assert!(said.contains("answers again"), "{said}");
    }
    assert!(
        watch.child.try_wait().unwrap().is_none(),
        "status --watch ended"
    );
}

//! Checkpoints and forks (`cci snapshot`, `cci fork`, `[snapshots] auto`)
//! and host sockets forwarded in (`[[sockets]]`), against the real daemon
//! with the stand-in agent.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::agent::{Sessions, background, cci_in, json, ok, sh_in, text};
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{agent_workspace, cci, client};

/// `cci ARGS --workspace WS` (the test image, the stand-in agent).
fn in_ws(ws: &Path, args: &[&str]) -> Output {
    let mut cmd = cci_in(ws, args[0]);
    // `--workspace` goes after the subcommand's own subcommand.
    if args.len() > 1 && matches!(args[0], "snapshot") {
        cmd = cci();
        cmd.env("CCI_IMAGE", common::test_image())
            .args(args)
            .arg("--workspace")
            .arg(ws)
            .stdin(std::process::Stdio::null());
        return cmd.output().unwrap();
    }
    cmd.args(&args[1..]).output().unwrap()
}

fn home_file(name: &str, file: &str) -> String {
    text(&sh_in(name, false, &format!("cat /home/code/{file} 2>&1")).stdout)
}

fn snapshot_names(ws: &Path) -> Vec<String> {
    let out = in_ws(ws, &["snapshot", "list", "--format", "json"]);
    ok(&out);
    json(&out)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

async fn config_of(name: &str) -> std::collections::HashMap<String, String> {
    let (i, _) = client().await.instance(name).await.unwrap();
    i.config
}

/// `name`'s row in `cci network status --format json`.
fn firewall_row(name: &str) -> serde_json::Value {
    let out = cci()
        .args(["network", "status", "--format", "json"])
        .output()
        .unwrap();
    let all = json(&out);
    all["containers"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["container"] == name))
        .unwrap_or_else(|| panic!("{name}: {all}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_puts_files_back_and_keeps_the_settings_of_now() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &["--persistent", "--network", "open"]);
    ok(&sh_in(&name, false, "echo one > /home/code/marker"));

    ok(&in_ws(ws.path(), &["snapshot", "create", "--name", "s1"]));
    let out = in_ws(ws.path(), &["snapshot", "create"]);
    assert!(ok(&out).contains("snapshot snap-"), "{}", text(&out.stdout));
    let names = snapshot_names(ws.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "s1");
    assert!(names[1].starts_with("snap-"), "{names:?}");

    // Wrong input: a clear error each, and nothing changes.
    let out = in_ws(ws.path(), &["snapshot", "create", "--name", "a/b"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not a snapshot name"));
    let out = in_ws(ws.path(), &["snapshot", "create", "--name", "auto-x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = in_ws(ws.path(), &["snapshot", "create", "--name", "s1"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already"),
        "{}",
        text(&out.stderr)
    );
    let out = in_ws(ws.path(), &["snapshot", "restore", "nope"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no snapshot \"nope\""));
    // This host has no CRIU: said so, with what does work.
    let out = in_ws(
        ws.path(),
        &["snapshot", "create", "--stateful", "--name", "mem"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without --stateful"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot_names(ws.path()).len(), 2);

    // The session moves on: tighter network (asked on the command line),
    // more files.
    let again = background(
        ws.path(),
        &[
            "--slot",
            "1",
            "--network",
            "restricted",
            "--publish",
            "127.0.0.1:18931:8000",
        ],
    );
    assert_eq!(again, name);
    assert_eq!(config_of(&name).await["user.cci.network"], "restricted");
    ok(&sh_in(
        &name,
        false,
        "echo two > /home/code/marker; echo x > /home/code/extra",
    ));
    let session = config_of(&name).await["user.cci.session"].clone();

    // A terminal attached to the session: the restore ends it under it.
    let (master, slave) = openpty(100, 25);
    let mut cmd = cci_in(ws.path(), "attach");
    on_terminal(&mut cmd, &slave);
    let mut attached = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    screen.expect("[cci] 0:");

    let out = in_ws(ws.path(), &["snapshot", "restore", "s1"]);
    let said = ok(&out);
    assert!(said.contains("restored to s1"), "{said}");
    assert!(said.contains("restarted"), "{said}");
    let status = wait_exit(&mut attached, &mut screen);
    let said = screen.drain();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("ended from outside"), "{said}");

    // Files as at the snapshot; settings as now; the container runs under
    // its rules, and the attached cci did not stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (i, _) = client().await.instance(&name).await.unwrap();
    assert!(i.is_running(), "{:?}", i.status);
    assert_eq!(home_file(&name, "marker").trim(), "one");
    assert!(home_file(&name, "extra").contains("No such file"));
    assert_eq!(i.config["user.cci.network"], "restricted");
    assert_eq!(i.config["user.cci.persistent"], "true");
    // What the ended session forwarded is gone (the published port).
    assert!(
        !i.expanded_devices
            .values()
            .any(|d| d.get("type").map(String::as_str) == Some("proxy")),
        "{:?}",
        i.expanded_devices
    );
    let row = firewall_row(&name);
    assert_eq!(row["mode"], "restricted", "{row}");
    assert_eq!(row["rules"], true, "{row}");

    // The ended session has its record, ended by the restore.
    let out = cci()
        .args(["session", "show", &session, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["ended_by"], "restore", "{}", text(&out.stdout));

    // A new session starts in it as in any kept container.
    assert_eq!(background(ws.path(), &["--slot", "1"]), name);
    ok(&in_ws(ws.path(), &["snapshot", "delete", "s1"]));
    assert_eq!(snapshot_names(ws.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_is_a_new_slot_with_the_same_home_and_its_own_network_port() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &["--persistent"]);
    ok(&sh_in(&name, false, "echo packages > /home/code/marker"));

    let out = in_ws(ws.path(), &["fork"]);
    let said = ok(&out);
    assert!(said.contains("in slot 2"), "{said}");
    let fork = name.replace("-1", "-2");
    assert!(said.starts_with(&fork), "{said}");
    // The slot is taken now: a clear conflict.
    let out = cci().args(["fork", &name, "--slot", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    // A third, never started: `cci clean` keeps it (it is no broken launch).
    ok(&cci().args(["fork", &name, "--slot", "3"]).output().unwrap());
    let out = cci().args(["clean", "--force"]).output().unwrap();
    ok(&out);
    let third = name.replace("-1", "-3");
    assert!(
        common::containers_of(ws.path()).await.contains(&third),
        "{}",
        text(&out.stdout)
    );

    assert_eq!(background(ws.path(), &["--slot", "2"]), fork);
    assert_eq!(home_file(&fork, "marker").trim(), "packages");
    let a = config_of(&name).await;
    let b = config_of(&fork).await;
    assert_ne!(a["volatile.eth0.hwaddr"], b["volatile.eth0.hwaddr"]);
    assert_ne!(a["volatile.eth0.host_name"], b["volatile.eth0.host_name"]);
    assert_eq!(b["user.cci.slot"], "2");
    assert_ne!(a["user.cci.session"], b["user.cci.session"]);
    // Both under their own rules; the fork has its address.
    for n in [&name, &fork] {
        let row = firewall_row(n);
        assert_eq!(row["rules"], true, "{row}");
    }
    // Changes in one are not in the other.
    ok(&sh_in(&fork, false, "echo fork > /home/code/marker"));
    assert_eq!(home_file(&name, "marker").trim(), "packages");
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_snapshots_before_each_kept_session_keep_the_newest() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[snapshots]\nauto = true\nkeep = 2\n").unwrap();
    let start = || {
        let out = cci_in(ws.path(), "shell")
            .env("CCI_CONFIG", &config)
            .args(["--background", "--persistent", "--slot", "1"])
            .output()
            .unwrap();
        ok(&out).trim().to_string()
    };
    let name = start();
    // The first session starts from the image: nothing to go back to.
    assert!(snapshot_names(ws.path()).is_empty());
    let mut seen = Vec::new();
    for round in 0..3 {
        ok(&sh_in(
            &name,
            false,
            &format!("echo {round} > /home/code/round"),
        ));
        ok(&cci().args(["shutdown", &name]).output().unwrap());
        // Snapshot names have the second in them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(start(), name);
        let names = snapshot_names(ws.path());
        assert!(names.iter().all(|n| n.starts_with("auto-")), "{names:?}");
        seen.push(names);
    }
    assert_eq!(seen[0].len(), 1, "{seen:?}");
    assert_eq!(seen[1].len(), 2, "{seen:?}");
    assert_eq!(seen[2].len(), 2, "{seen:?}");
    // The oldest went; the newest holds the last round's file.
    assert!(!seen[2].contains(&seen[0][0]), "{seen:?}");
    let newest = seen[2][1].clone();
    ok(&in_ws(ws.path(), &["snapshot", "restore", &newest]));
    assert_eq!(home_file(&name, "round").trim(), "2");
}

/// A host socket that answers `echo:` and what it got, until dropped.
struct Echo {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn echo_server() -> Echo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    let _ = c.write_all(b"echo:");
                    let _ = c.write_all(&buf[..n]);
                }
            });
        }
    });
    Echo { path, _dir: dir }
}

const ASK: &str = "(printf ping; sleep 2) | timeout 10 nc -U /var/lib/echo.sock 2>&1";

#[tokio::test(flavor = "multi_thread")]
async fn a_host_socket_is_forwarded_when_configured_and_only_to_the_session_user() {
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[sockets]]\nhost = {:?}\ncontainer = \"/var/lib/echo.sock\"\n",
            echo.path.display().to_string()
        ),
    )
    .unwrap();
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let out = cci_in(ws.path(), "shell")
        .env("CCI_CONFIG", &config)
        .args(["--background", "--persistent"])
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    let heard = text(&sh_in(&name, false, ASK).stdout);
    assert_eq!(
        heard, "echo:ping",
        "the session user reaches the host socket"
    );
    // Another user inside does not.
    let other = cci()
        .args([
            "container",
            "exec",
            &name,
            "--user",
            "1001",
            "--group",
            "1001",
        ])
        .args(["--capture", "--format", "raw", "--", "sh", "-c", ASK])
        .output()
        .unwrap();
    assert!(
        text(&other.stdout).contains("Permission denied") && !text(&other.stdout).contains("echo:"),
        "{}",
        text(&other.stdout)
    );

    // The next session without the setting has it no more.
    assert_eq!(background(ws.path(), &["--slot", "1"]), name);
    let (i, _) = client().await.instance(&name).await.unwrap();
    assert!(
        !i.expanded_devices
            .values()
            .any(|d| d.get("type").map(String::as_str) == Some("proxy")
                && d.get("connect").is_some_and(|c| c.contains("echo.sock"))),
        "{:?}",
        i.expanded_devices
    );
    assert!(!text(&sh_in(&name, false, ASK).stdout).contains("echo:"));

    // A workspace's own .cci.toml may not forward one until trusted.
    let ws2 = agent_workspace();
    let _s2 = Sessions(ws2.path().to_path_buf());
    std::fs::write(
        ws2.path().join(".cci.toml"),
        format!(
            "[[sockets]]\nhost = {:?}\ncontainer = \"/var/lib/echo.sock\"\n",
            echo.path.display().to_string()
        ),
    )
    .unwrap();
    let out = cci_in(ws2.path(), "shell")
        .arg("--background")
        .output()
        .unwrap();
    let name2 = ok(&out).trim().to_string();
    assert!(
        text(&out.stderr).contains("sockets"),
        "the ignored setting is named: {}",
        text(&out.stderr)
    );
    assert!(!text(&sh_in(&name2, false, ASK).stdout).contains("echo:"));

    // Bad settings: said with file, line and key before anything starts.
    std::fs::write(
        &config,
        "[[sockets]]\nhost = \"/tmp\"\ncontainer = \"/run/x.sock\"\n",
    )
    .unwrap();
    let out = cci()
        .env("CCI_CONFIG", &config)
        .args(["config", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("sockets") && said.contains("config.toml:") && said.contains("/run"),
        "{said}"
    );
    std::fs::write(
        &config,
        "[[sockets]]\nhost = \"/tmp\"\ncontainer = \"/var/lib/x.sock\"\n",
    )
    .unwrap();
    let ws3 = agent_workspace();
    let _s3 = Sessions(ws3.path().to_path_buf());
    let out = cci_in(ws3.path(), "shell")
        .env("CCI_CONFIG", &config)
        .arg("--background")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not a Unix socket"));
    // A socket in the workspace: the agent could swap it for a link to
    // another, which the daemon would follow. Refused.
    let inside = ws3.path().join("app.sock");
    let _l = std::os::unix::net::UnixListener::bind(&inside).unwrap();
    std::fs::write(
        &config,
        format!(
            "[[sockets]]\nhost = {:?}\ncontainer = \"/var/lib/x.sock\"\n",
            inside.display().to_string()
        ),
    )
    .unwrap();
    let out = cci_in(ws3.path(), "shell")
        .env("CCI_CONFIG", &config)
        .arg("--background")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the agent can change"),
        "{}",
        text(&out.stderr)
    );
    assert!(common::containers_of(ws3.path()).await.is_empty());
}

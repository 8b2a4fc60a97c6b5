//! `cci status` (JSON, `--watch`, the full-screen dashboard) and `cci
//! events`: which slot needs the user. A stand-in agent
//! (`tests/fixtures/fake-agent`) runs the Claude Code hooks cci installs, as
//! Claude Code would, to drive each state; a plain shell session shows the
//! screen heuristic for agents without hooks.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::agent::{Sessions, background, cci_in, json, ok, send_keys};
use common::lines::Lines;
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{agent_workspace, cci};
use serde_json::Value;

/// The rows of `cci status --format json`.
fn rows() -> Vec<Value> {
    let out = cci()
        .args(["status", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    json(&out).as_array().unwrap().clone()
}

/// Poll `cci status --format json` (20 s at most) until `name`'s row
/// satisfies `want`; that row.
fn wait_row(name: &str, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = rows().into_iter().find(|r| r["name"] == name);
        if let Some(r) = row.as_ref().filter(|r| want(r)) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {row:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_events_follow_the_agent_through_its_hook_events() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    // Started with no terminal at all.
    let out = cci_in(ws.path(), "shell")
        .arg("--headless")
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    let row = wait_row(&name, "idle at its prompt", |r| {
        r["state"] == "idle" && r["last_line"] == "agent>"
    });
    assert_eq!(
        (&row["agent"], &row["basis"], &row["kind"], &row["status"]),
        (
            &"claude".into(),
            &"hooks".into(),
            &"shell".into(),
            &"Running".into()
        )
    );
    assert!(row["memory_bytes"].as_u64().unwrap() > 0, "{row}");
    // The JSON says what `cci list` says of every container.
    let list = json(&cci().args(["list", "--format", "json"]).output().unwrap());
    let status = rows();
    assert!(status.iter().any(|r| r["name"] == name), "{status:?}");
    for c in list.as_array().unwrap() {
        // (Other tests' containers come and go meanwhile.)
        let Some(r) = status.iter().find(|r| r["name"] == c["name"]) else {
            continue;
        };
        for (a, b) in [
            ("slot", "slot"),
            ("workspace", "workspace"),
            ("kind", "kind"),
        ] {
            assert_eq!(r[a], c[b], "{a} of {}", c["name"]);
        }
        assert_eq!(r["status"], c["state"]);
        assert_eq!(r["agent"], c["agent"]);
        assert_eq!(r["network"], c["network"]);
    }
    // `cci list` takes addresses from the network's leases: the same as
    // the container's own state says.
    let ours = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    let state = common::client().await.instance_state(&name).await.unwrap();
    assert_eq!(
        ours["ipv4"].as_str(),
        state.ipv4("eth0").as_deref(),
        "{ours}"
    );
    assert!(ours["ipv4"].is_string(), "{ours}");

    let mut events = Lines::start(&["events", "--format", "json"]);
    let mut watch = Lines::start(&["status", "--watch"]);
    watch.wait_for("the table", |l| {
        l.starts_with("NAME ") && l.contains("LAST LINE")
    });
    std::thread::sleep(Duration::from_millis(1500));

    send_keys(&name, "prompt fix the bug");
    let row = wait_row(&name, "working", |r| r["state"] == "working");
    assert_eq!(row["basis"], "hooks");
    send_keys(&name, "ask");
    let row = wait_row(&name, "waiting", |r| r["state"] == "waiting");
    assert_eq!(row["detail"], "Claude needs your permission to use Bash");
    events.wait_for("waiting", |l| {
        l.contains("\"event\":\"waiting\"") && l.contains(&name)
    });

    // The dashboard shows it, on a terminal of a fixed size.
    let (master, slave) = openpty(160, 24);
    let mut cmd = cci();
    cmd.arg("status").env("TERM", "xterm");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());
    // (Blank cells are skipped, not painted: words are matched, not spaces.)
    screen.expect("containers,");
    screen.expect(&name);
    screen.expect("waiting (Claude needs your permission");
    send_keys(&name, "done");
    screen.expect("idle");
    // `/` filters by workspace (other tests' containers run meanwhile), `s`
    // types a line into the selected session, Enter attaches and a detach
    // comes back.
    let path = ws.path().to_str().unwrap();
    let suffix = &path[path.len() - 6..];
    keys.write_all(format!("/{suffix}\r").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    keys.write_all(b"shello-dash\r").unwrap();
    common::agent::screen_shows(&name, "HEARD[hello-dash]");
    keys.write_all(b"\r").unwrap();
    screen.expect("HEARD[hello-dash]");
    std::thread::sleep(Duration::from_millis(500));
    keys.write_all(b"\x02d").unwrap();
    screen.expect("backfrom");
    keys.write_all(b"q").unwrap();
    let exit = wait_exit(&mut child, &mut screen);
    assert_eq!(exit.code(), Some(0));

    wait_row(&name, "idle after its turn", |r| r["state"] == "idle");
    send_keys(&name, "exit");
    let row = wait_row(&name, "exited", |r| r["state"] == "exited");
    assert_eq!(row["detail"], "status 0");

    // One line per change, in order, with the notification.
    let want = ["working", "waiting", "idle", "exited"];
    events.wait_for("the agent's exit", |l| {
        l.contains("\"event\":\"exited\"") && l.contains(&name)
    });
    let said: Vec<Value> = events
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["container"] == name)
        .collect();
    let words: Vec<&str> = said.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(words, want, "{said:?}");
    assert_eq!(
        said[1]["detail"],
        "Claude needs your permission to use Bash"
    );
    assert_eq!(said[1]["from"], "working");
    watch.wait_for("the exit", |l| {
        l.contains(&name) && l.contains(" exited (was ")
    });
    let printed = watch.lines.lock().unwrap().join("\n");
    assert!(
        printed.contains(" waiting (was working): Claude needs"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_without_hooks_is_read_from_its_screen() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    // A plain shell: no agent, no hooks.
    let name = background(ws.path(), &["--debug"]);
    let row = wait_row(&name, "idle at its prompt", |r| r["state"] == "idle");
    assert_eq!(
        (&row["basis"], &row["agent"]),
        (&"screen".into(), &"".into())
    );
    send_keys(&name, "read -p 'Overwrite the file? ' x");
    wait_row(&name, "waiting at a question", |r| {
        r["state"] == "waiting" && r["last_line"] == "Overwrite the file?"
    });
    send_keys(&name, "y");
    send_keys(&name, "while :; do echo tick; sleep 0.5; done");
    wait_row(&name, "working while it prints", |r| {
        r["state"] == "working"
    });
    send_keys(&name, "C-c");
}

/// Stop every background notifier of this user (one left by an earlier run
/// would keep the lock, with its own settings).
fn stop_notifiers() {
    let _ = std::process::Command::new("pkill")
        .args(["-f", "cci events --notify"])
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notifier_is_told_once_per_change_and_a_hostile_state_line_stays_harmless() {
    stop_notifiers();
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said");
    let pwned = dir.path().join("pwned");
    let script = dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s\\n' \"$1\" >> '{0}'; cat >> '{0}.json'; echo >> '{0}.json'\n",
            said.display()
        ),
    )
    .unwrap();
    // A webhook on this machine: each POST's body kept.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hook.local_addr().unwrap().port();
    let posted = std::sync::Arc::new(Mutex::new(Vec::<Value>::new()));
    let keep = posted.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        for conn in hook.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        let body = &data[end + 4..end + 4 + len];
                        if let Ok(v) = serde_json::from_slice(body) {
                            keep.lock().unwrap().push(v);
                        }
                        let _ =
                            conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
                        break;
                    }
                }
            }
        }
    });
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\ncommand = [\"sh\", \"{}\"]\nwebhook = \"http://127.0.0.1:{port}/hook?token=hook-secret\"\non = [\"waiting\", \"exited\"]\n",
            script.display()
        ),
    )
    .unwrap();
    // The notifier is every slot's: other tests' containers are told too.
    let mine = std::sync::Mutex::new(String::new());
    let lines = || -> Vec<String> {
        let name = mine.lock().unwrap().clone();
        std::fs::read_to_string(&said)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(", {name})")))
            .map(str::to_string)
            .collect()
    };
    let wait_lines = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines().len() < n {
            assert!(Instant::now() < deadline, "never told {n}: {:?}", lines());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // `cci shell` starts the notifier, which reads this configuration.
    let out = cci_in(ws.path(), "shell")
        .arg("--headless")
        .env("CCI_CONFIG", &config)
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    *mine.lock().unwrap() = name.clone();
    wait_row(&name, "idle", |r| r["state"] == "idle");

    send_keys(&name, "ask");
    wait_lines(1);
    assert!(
        lines()[0].ends_with(&format!(
            "(slot 1, {name}) waits for you: Claude needs your permission to use Bash"
        )),
        "{:?}",
        lines()
    );
    // Changes not asked for (`on`) tell nothing: working, then finished.
    send_keys(&name, "prompt more");
    wait_row(&name, "working", |r| r["state"] == "working");
    send_keys(&name, "done");
    wait_row(&name, "idle", |r| r["state"] == "idle");

    // The agent writes its own state line: it can make its row say
    // anything, but what it says only ever shows, without its controls.
    let hostile = format!(
        "printf '%s\\n' 'notify 9 {{\"message\":\"\\u001b]52;c;ZXZpbA==\\u0007 $(touch {}) ok\"}}' > ~/.cci-agent-state",
        pwned.display()
    );
    let out = common::agent::sh_in(&name, false, &hostile);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let row = wait_row(&name, "waiting, as it says", |r| r["state"] == "waiting");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("$(touch") && !detail.contains('\u{1b}'),
        "{detail:?}"
    );
    wait_lines(2);
    assert!(lines()[1].contains("$(touch") && !lines()[1].contains('\u{1b}'));

    send_keys(&name, "exit");
    wait_lines(3);
    assert!(lines()[2].ends_with("exited: status 0"), "{:?}", lines());
    // Told once each, and the program's input is the notice as JSON.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines().len(), 3, "{:?}", lines());
    let json_lines = std::fs::read_to_string(dir.path().join("said.json")).unwrap();
    let kinds: Vec<String> = json_lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|n| n["event"]["container"] == name.as_str())
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["waiting", "waiting", "exited"]);
    // The webhook got the same notices.
    let hooked: Vec<String> = posted
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n["event"]["container"] == name.as_str())
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hooked, kinds);
    assert!(!pwned.exists(), "the message ran as a command");
    stop_notifiers();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_prompt_works_headless_and_says_its_session_and_changes() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let prompt = "fix the bug; $(touch pwned)";
    let out = cci_in(ws.path(), "run")
        .args(["--prompt", prompt, "--format", "json"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["stdout"], format!("worked on: {prompt}\n"));
    assert_eq!(v["files_changed"], serde_json::json!(["answer.txt"]));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("answer.txt")).unwrap(),
        format!("{prompt}\n")
    );
    assert!(!ws.path().join("pwned").exists());
    // The conversation is a saved session of this workspace, to resume.
    let id = v["session"].as_str().unwrap().to_string();
    let said = common::agent::text(&out.stderr);
    assert!(said.contains(&format!("--resume={id}")), "{said}");
    let sessions = json(
        &cci()
            .args(["session", "list", "--format", "json"])
            .output()
            .unwrap(),
    );
    let saved = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not saved: {sessions}"));
    assert_eq!(saved["workspace"], ws.path().to_str().unwrap());
    assert!(common::containers_left(ws.path()).await.is_empty());
    // Its record: a run, ended by the agent's exit.
    let r = record(&id);
    assert_eq!(
        (&r["kind"], &r["ended_by"], &r["exit_status"]),
        (&"run".into(), &"exit".into(), &0.into()),
        "{r}"
    );
}

/// `cci session show ID --format json`.
fn record(id: &str) -> Value {
    let out = cci()
        .args(["session", "show", id, "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    json(&out)
}

/// Poll (40 s at most, running `cci list` so ended sessions are settled)
/// until session `id`'s record says it ended.
fn wait_ended(id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let _ = cci().arg("list").stdin(Stdio::null()).output();
        let out = cci()
            .args(["session", "show", id, "--format", "json"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            let r = json(&out);
            if r["ended"].is_string() && !r["running"].as_bool().unwrap_or(true) {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{id} never ended: {}",
            common::agent::text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_is_kept_for_every_way_a_session_ends() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let limited = dir.path().join("config.toml");
    std::fs::write(&limited, "[limits]\nmax_duration = \"6s\"\n").unwrap();
    let start = |config: Option<&std::path::Path>| -> (String, String) {
        let mut cmd = cci_in(ws.path(), "shell");
        cmd.arg("--headless");
        if let Some(c) = config {
            cmd.env("CCI_CONFIG", c);
        }
        let name = ok(&cmd.output().unwrap()).trim().to_string();
        let id = common::agent::info(&name)["session"]
            .as_str()
            .unwrap()
            .to_string();
        (name, id)
    };
    let (inside, inside_id) = start(None);
    let (shut, shut_id) = start(None);
    let (killed, killed_id) = start(None);
    let (_limit, limit_id) = start(Some(&limited));

    // A running session's record so far.
    wait_row(&inside, "idle", |r| r["state"] == "idle");
    send_keys(&inside, "ask");
    wait_row(&inside, "waiting", |r| r["state"] == "waiting");
    std::thread::sleep(Duration::from_secs(2));
    send_keys(&inside, "done");
    wait_row(&inside, "idle", |r| r["state"] == "idle");
    let live = record(&inside_id);
    assert_eq!(
        (&live["running"], &live["ended"]),
        (&true.into(), &Value::Null),
        "{live}"
    );
    assert!(live["waiting_seconds"].as_u64().unwrap() >= 2, "{live}");
    assert_eq!(live["container"], inside.as_str());

    // Ended from inside: the agent exits, then its shell.
    send_keys(&inside, "exit");
    wait_row(&inside, "exited", |r| r["state"] == "exited");
    send_keys(&inside, "exit");
    ok(&cci().args(["shutdown", "--force", &shut]).output().unwrap());
    ok(&cci().args(["kill", "--force", &killed]).output().unwrap());

    let r = wait_ended(&inside_id);
    assert_eq!(
        (&r["ended_by"], &r["exit_status"]),
        (&"exit".into(), &0.into()),
        "{r}"
    );
    assert!(r["waiting_seconds"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["idle_seconds"].as_u64().is_some(), "{r}");
    assert!(r["saved_bytes"].as_u64().unwrap() > 0, "{r}");
    for key in ["workspace", "slot", "image", "agent", "network", "started"] {
        assert!(!r[key].is_null() && r[key] != "", "{key}: {r}");
    }
    assert_eq!(r["saved"]["id"], inside_id.as_str());
    assert_eq!(wait_ended(&shut_id)["ended_by"], "shutdown");
    assert_eq!(wait_ended(&killed_id)["ended_by"], "kill");
    assert_eq!(wait_ended(&limit_id)["ended_by"], "limit");
    // Listed with the saved sessions.
    let list = json(
        &cci()
            .args(["session", "list", "--format", "json"])
            .output()
            .unwrap(),
    );
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == inside_id.as_str())
        .unwrap();
    assert_eq!(listed["record"]["ended_by"], "exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_session_replays_filtered_and_its_recording_is_capped() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[session]\nrecord_max_bytes = 65536\n").unwrap();
    let out = cci_in(ws.path(), "shell")
        .args(["--headless", "--record"])
        .env("CCI_CONFIG", &config)
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    let id = common::agent::info(&name)["session"]
        .as_str()
        .unwrap()
        .to_string();
    wait_row(&name, "idle", |r| r["state"] == "idle");
    send_keys(&name, "hello-recorded");
    common::agent::screen_shows(&name, "HEARD[hello-recorded]");
    // The agent prints a clipboard write, then far more than the cap.
    send_keys(&name, "exit");
    wait_row(&name, "exited", |r| r["state"] == "exited");
    send_keys(
        &name,
        "printf '\\033]52;c;ZXZpbA==\\007'; head -c 400000 /dev/zero | tr '\\0' x; echo END-OF-$((1 + 1))",
    );
    common::agent::screen_shows(&name, "END-OF-2");
    std::thread::sleep(Duration::from_secs(1));
    ok(&cci().args(["kill", "--force", &name]).output().unwrap());

    let r = record(&id);
    let kept = r["recording_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(kept > 100 && kept <= 65536, "{kept}");
    let cast = common::sessions_dir().join(format!("records/{id}.cast"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cast).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = cci()
        .args(["session", "replay", &id, "--speed", "1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = ok(&out);
    assert!(shown.contains("HEARD[hello-recorded]"), "{shown}");
    assert!(
        !shown.contains("\u{1b}]52"),
        "the clipboard write reached the terminal"
    );
    assert!(!shown.contains("END-OF-2"), "past the cap");
    // Never recorded: a clear error.
    let out = cci()
        .args(["session", "replay", "no-such-session"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        common::agent::text(&out.stderr)
    );
}

//! `cci shell`, `cci attach` and the session lifecycle, driven as a person
//! would: through a real pseudo-terminal, with a stand-in agent
//! (`tests/fixtures/fake-agent`) instead of the real one.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::agent::{
    Sessions, background, cci_in, end_from_inside, info, json, sh_in, text, wait_state,
};
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{agent_workspace, cci, client, containers_of};

#[tokio::test(flavor = "multi_thread")]
async fn shell_runs_the_agent_in_tmux_and_ends_with_the_session() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let (master, slave) = openpty(100, 30);
    let mut cmd = cci_in(ws.path(), "shell");
    // An exotic terminal type is mapped to one the container knows.
    cmd.args(["-e", "GREETING=a,b=c"])
        .env("TERM", "xterm-kitty");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());

    screen.expect("fake-agent ready: session");
    screen.expect("agent> ");
    keys.write_all(b"hello-there\r").unwrap();
    screen.expect("HEARD[hello-there]");

    let names = containers_of(ws.path()).await;
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    assert!(name.starts_with("cci-") && name.ends_with("-1"), "{name}");
    let i = info(name);
    assert_eq!(i["mode"], "ephemeral");
    assert_eq!(i["kind"], "shell");
    assert_eq!(i["agent"], "claude");
    assert_eq!(i["session_running"], true);
    // The agent runs as code in /workspace with the session id cci recorded,
    // and gets the sandbox environment and the --env pair.
    let out = sh_in(
        name,
        false,
        "cd ~ && cat .claude/fake-agent.run; grep -E '^(IS_SANDBOX|GREETING|HOME)=' .claude/fake-agent.env | sort",
    );
    let session = i["session"].as_str().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("{session} new code /workspace\nGREETING=a,b=c\nHOME=/home/code\nIS_SANDBOX=1\n")
    );

    // When the agent exits the user is in a shell in the sandbox.
    keys.write_all(b"exit\r").unwrap();
    screen.expect("exited (status 0)");
    screen.expect("/workspace$");
    keys.write_all(b"touch made-in-session; exit\r").unwrap();
    let status = wait_exit(&mut child, &mut screen);
    assert_eq!(status.code(), Some(0));
    let said = screen.drain();
    assert!(said.contains("session ended"), "{said}");
    // The agent's state was saved as this session before the container went.
    assert!(
        said.contains(&format!("agent state saved as session {session}")),
        "{said}"
    );
    let log = common::sessions_dir().join(format!(
        "sessions-claude/{session}/state/projects/-workspace/{session}.jsonl"
    ));
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("hello-there")
    );
    // The ephemeral container is gone, the workspace file stays, owned by the host user.
    assert!(containers_of(ws.path()).await.is_empty());
    let made = std::fs::metadata(ws.path().join("made-in-session")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1000, 1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn background_attach_detach_and_poweroff_inside() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &[]);
    assert!(name.ends_with("-1"), "{name}");
    // Docker can run inside: nesting is set (its overlay storage works
    // through the kernel; cli_run checks it).
    let (inst, _) = client().await.instance(&name).await.unwrap();
    assert_eq!(
        inst.config.get("security.nesting").map(String::as_str),
        Some("true")
    );

    // `cci attach` finds the one session of this workspace.
    let (master, slave) = openpty(90, 25);
    let mut cmd = cci_in(ws.path(), "attach");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());
    screen.expect("agent> ");
    // tmux handles key bindings once it has set up its client (status line shown).
    screen.expect("[cci] 0:");
    keys.write_all(b"ping\r").unwrap();
    screen.expect("HEARD[ping]");
    // Ctrl-b d detaches: cci exits, the session keeps running.
    // Typed like a person, a pause between the keys: tmux takes keys that
    // reach it together for a paste (a busy daemon may deliver them so; then
    // they are typed again).
    let mut status = None;
    for _ in 0..5 {
        keys.write_all(b"\x02").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        keys.write_all(b"d").unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while status.is_none() && Instant::now() < deadline {
            status = child.try_wait().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_some() {
            break;
        }
    }
    let status = status.unwrap_or_else(|| wait_exit(&mut child, &mut screen));
    assert_eq!(status.code(), Some(0));
    assert!(screen.drain().contains("detached"));
    assert_eq!(info(&name)["session_running"], true);

    // Attach by slot; end the agent, then power off from the shell.
    let mut cmd = cci_in(ws.path(), "attach");
    cmd.args(["--slot", "1"]);
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    screen.expect("agent> ");
    // (Enter first: a detach typed twice may have left a `d` on the line.)
    keys.write_all(b"\rexit\r").unwrap();
    screen.expect("/workspace$");
    keys.write_all(b"until sudo poweroff; do sleep 0.3; done\r")
        .unwrap();
    let status = wait_exit(&mut child, &mut screen);
    assert_eq!(status.code(), Some(0), "{}", screen.drain());
    wait_state(&name, |s| s.is_none()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_session_is_kept_and_reused() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &["--persistent"]);
    assert_eq!(info(&name)["mode"], "persistent");
    let out = sh_in(&name, true, "echo kept > /opt/installed-tool");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Shutdown stops and keeps it.
    let out = cci()
        .args(["shutdown", "--timeout", "10", &name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stopped and kept"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(info(&name)["state"], "Stopped");

    // The next persistent shell reuses (and starts) it, with what was installed.
    let again = background(ws.path(), &["--persistent"]);
    assert_eq!(again, name);
    let i = info(&name);
    assert_eq!(
        (i["state"].as_str(), i["session_running"].as_bool()),
        (Some("Running"), Some(true))
    );
    let out = sh_in(&name, false, "cat /opt/installed-tool");
    assert_eq!(text(&out.stdout), "kept\n", "{}", text(&out.stderr));

    // Its session ending from inside stops it and keeps it.
    end_from_inside(&name).await;
    // A plain shell on that slot reuses it too.
    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--slot", "1"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), name, "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn persist_keeps_a_running_session_and_shutdown_deletes_ephemeral_ones() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let kept = background(ws.path(), &[]);
    let gone = background(ws.path(), &[]);
    assert_ne!(kept, gone);

    let out = cci().args(["persist", &kept]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("now persistent"));
    assert_eq!(info(&kept)["mode"], "persistent");
    end_from_inside(&kept).await;

    let out = cci()
        .args(["shutdown", "--timeout", "10", &gone])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(deleted)"));
    assert_eq!(containers_of(ws.path()).await, vec![kept.clone()]);

    // An ephemeral session powered off while nobody is attached is cleaned
    // up by the next cci command.
    let off = background(ws.path(), &[]);
    let _ = sh_in(&off, true, "until poweroff; do sleep 0.3; done");
    wait_state(&off, |s| s == Some("Stopped")).await;
    // (The daemon may be finishing the stop at first; a later command then
    // deletes it.)
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = cci().args(["list", "--format", "json"]).output().unwrap();
        let listed: Vec<String> = json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert!(listed.contains(&kept), "{listed:?}");
        if !listed.contains(&off) && containers_of(ws.path()).await == vec![kept.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{off} was not cleaned up: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_state(&off, |s| s.is_none()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_isolate_homes_and_sixteen_launches_get_distinct_slots() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let children: Vec<_> = (0..16)
        .map(|_| {
            cci_in(ws.path(), "shell")
                .arg("--background")
                .env("CCI_SLOT_LIMIT", "20")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut names: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert_eq!(text(&out.stderr), "", "no error is shown");
            text(&out.stdout).trim().to_string()
        })
        .collect();
    // Distinct slots, all within the limit (two launches racing for a slot
    // may leave it to a third, so they need not be exactly 1..=16).
    names.sort_by_key(|n| n.rsplit('-').next().unwrap().parse::<u32>().unwrap());
    let mut slots: Vec<u32> = names
        .iter()
        .map(|n| n.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    slots.dedup();
    assert_eq!(slots.len(), 16, "{names:?}");
    assert!(slots.iter().all(|s| (1..=20).contains(s)), "{slots:?}");

    let out = sh_in(
        &names[0],
        false,
        "touch ~/only-in-slot-1 && ls ~/only-in-slot-1",
    );
    assert_eq!(out.status.code(), Some(0));
    let out = sh_in(&names[1], false, "ls ~/only-in-slot-1");
    assert_ne!(out.status.code(), Some(0), "slot 2 sees slot 1's home");

    // Two sessions run: attach cannot guess which one and lists them.
    let out = cci_in(ws.path(), "attach").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&names[15]),
        "{}",
        text(&out.stderr)
    );

    let out = cci().arg("shutdown").args(&names).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(containers_of(ws.path()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_bad_inputs_fail_clearly_and_leave_nothing() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = cci_in(ws.path(), "shell");
        cmd.arg("--background").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for (args, env, code, says) in [
        (&["--slot", "0"][..], &[][..], 2, "invalid slot"),
        (&["--slot", "-1"], &[], 2, "invalid slot"),
        (&["--slot", "abc"], &[], 2, "invalid slot"),
        (&["--slot", "11"], &[], 2, "above the slot limit"),
        (&["--tool", "claud"], &[], 2, "unknown agent"),
        (&["--image", "cci-test-no-such-image"], &[], 5, "not found"),
        (
            &[],
            &[("CCI_TOOL_BINARY", "/no/such/agent")],
            1,
            "not in the image",
        ),
    ] {
        let out = run(args, env);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(says), "{args:?}: {err}");
    }
    let out = cci()
        .args(["shell", "--background", "--workspace", "/no/such/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Attach with no session running says so.
    let out = cci_in(ws.path(), "attach").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no running session"));
    assert!(containers_of(ws.path()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_launch_leaves_no_container() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    for delay_ms in [50, 150, 300] {
        let child = cci_in(ws.path(), "shell")
            .arg("--background")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill on a child we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(0) {
            // It finished before the signal: a session that is fine to remove.
            let name = text(&out.stdout).trim().to_string();
            cci().args(["kill", &name]).output().unwrap();
            continue;
        }
        // Handled (exit 143), or, when it came before cci set up its
        // handler, the signal's default action: either way nothing is left.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.code() == Some(143) || out.status.signal() == Some(libc::SIGTERM),
            "{:?} {}",
            out.status,
            text(&out.stderr)
        );
        assert!(
            containers_of(ws.path()).await.is_empty(),
            "interrupted at {delay_ms} ms left a container"
        );
    }
}

/// `--publish`: what the agent serves inside is reachable on the host's
/// loopback; a taken port is a clear error before anything is made; a kept
/// container's next session publishes what it asks for; the port is
/// released with the container.
#[tokio::test(flavor = "multi_thread")]
async fn a_published_port_reaches_what_the_agent_serves_and_is_released() {
    use std::io::Read;
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    // Below the ephemeral range: a port the kernel gave out for a bind is
    // just as free for the next outgoing connection of any other test, which
    // may take it before this test binds it again.
    let free = |skip: u16| {
        (20000 + (std::process::id() % 5000) as u16..30000)
            .find(|p| *p != skip && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .unwrap()
    };
    let port = free(0);
    let other = free(port);
    let publish = |p: u16| format!("{p}:8000");

    // Taken: refused, nothing made.
    let held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--persistent", "--publish", &publish(port)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("taken"), "{}", text(&out.stderr));
    assert!(containers_of(ws.path()).await.is_empty());
    drop(held);

    let name = background(ws.path(), &["--persistent", "--publish", &publish(port)]);
    let serve = "setsid sh -c 'while true; do printf \"HTTP/1.0 200 OK\\r\\n\\r\\nhello-published\" | nc -l -q 1 127.0.0.1 8000; done' </dev/null >/dev/null 2>&1 &";
    let fetch = |p: u16| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut got = String::new();
        s.read_to_string(&mut got).ok()?;
        Some(got)
    };
    let reached = |p: u16| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if fetch(p).is_some_and(|g| g.contains("hello-published")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    let out = sh_in(&name, false, serve);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(reached(port), "the published port does not answer");
    // On the host's loopback only.
    let (inst, _) = client().await.instance(&name).await.unwrap();
    let listens: Vec<&str> = inst
        .devices
        .values()
        .filter_map(|d| d.get("listen").map(String::as_str))
        .collect();
    assert_eq!(listens, [format!("tcp:127.0.0.1:{port}")], "{listens:?}");

    // The kept container's next session asks for another port: the old one
    // is released, the new one answers.
    let out = cci()
        .args(["shutdown", "--timeout", "10", &name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let again = background(ws.path(), &["--persistent", "--publish", &publish(other)]);
    assert_eq!(again, name);
    sh_in(&name, false, serve);
    assert!(reached(other), "the newly published port does not answer");
    assert!(fetch(port).is_none(), "the old port is still published");

    // Gone with the container.
    let out = cci().args(["kill", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fetch(other).is_none(), "the port outlived its container");
}

/// `[tool] pre_launch`: the commands run inside before the agent, as its
/// user in the workspace; the first failure stops the list and is shown,
/// and the agent starts all the same unless `pre_launch_required`.
#[tokio::test(flavor = "multi_thread")]
async fn pre_launch_commands_run_before_the_agent_and_a_failure_is_shown() {
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let pre =
        "pre_launch = [\"echo ran-as-$(id -un) > /tmp/pre-1\", \"false\", \"touch /tmp/never\"]";
    let start = |required: bool, slot: &str| {
        let cfg = dir.path().join(format!("{slot}.toml"));
        std::fs::write(
            &cfg,
            format!("[tool]\n{pre}\npre_launch_required = {required}\n"),
        )
        .unwrap();
        let out = cci_in(ws.path(), "shell")
            .args(["--background", "--slot", slot])
            .env("CCI_CONFIG", &cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let pane_shows = |name: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = cci().args(["tmux", "capture", name]).output().unwrap();
            let pane = text(&out.stdout);
            if pane.contains(what) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "{what:?} not in the pane: {pane}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let name = start(false, "1");
    // (tmux's capture drops the prompt's trailing space)
    let pane = pane_shows(&name, "agent>");
    assert!(pane.contains("pre_launch failed (status 1)"), "{pane}");
    let out = sh_in(&name, false, "cat /tmp/pre-1; ls /tmp/never 2>&1");
    let said = text(&out.stdout);
    assert!(said.contains("ran-as-code"), "{said}");
    assert!(
        said.contains("No such file"),
        "the list went on after a failure: {said}"
    );

    let name = start(true, "2");
    let pane = pane_shows(&name, "did not start");
    assert!(pane.contains("pre_launch failed (status 1)"), "{pane}");
    assert!(!pane.contains("agent>"), "{pane}");
}

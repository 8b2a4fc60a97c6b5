//! Saved sessions against the real daemon: the agent's state saved when a
//! session ends and pushed back with `--resume`, credentials copied in and
//! never out, and a hostile agent's state folder (symlinks out, special
//! files, odd names, a folder swapped for a symlink mid-save, limits, a
//! kill -9 mid-save) never reaching outside the session folder on the host.

mod common;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::agent::{
    Sessions, background, cci_in, end_from_inside, info, json, ok, screen_shows, send_keys, sh_in,
    text,
};
use common::{agent_workspace, cci, client, containers_left, sessions_dir};

/// The saved session folder of `id`.
fn saved_dir(id: &str) -> PathBuf {
    sessions_dir().join("sessions-claude").join(id)
}

fn meta(id: &str) -> serde_json::Value {
    let data = std::fs::read(saved_dir(id).join("meta.json")).unwrap();
    serde_json::from_slice(&data).unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Type a line into the agent and wait until its log has `lines` lines.
fn say(name: &str, id: &str, line: &str, lines: usize) {
    send_keys(name, line);
    let log = format!("~/.claude/projects/-workspace/{id}.jsonl");
    for _ in 0..50 {
        let out = sh_in(name, false, &format!("wc -l < {log} 2>/dev/null || echo 0"));
        if text(&out.stdout).trim().parse::<usize>().unwrap_or(0) >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent in {name} never logged {line:?}");
}

/// Wait until the agent in `name` has started (in `mode`) and return what
/// it recorded: "ID MODE USER CWD". (The restored state holds the record of
/// the earlier run until the new one writes its own.)
fn agent_run(name: &str, mode: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = text(&sh_in(name, false, "cat ~/.claude/fake-agent.run 2>/dev/null").stdout);
        if last.split_whitespace().nth(1) == Some(mode) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent in {name} did not start in {mode} mode: {last:?}");
}

/// Every path under `root` with its lstat, not following symlinks.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut all = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            all.push((p, m));
        }
    }
    all
}

/// Folders 0700, files 0600 (no setuid), symlinks relative and inside.
fn assert_private_and_contained(root: &Path) {
    for (p, m) in walk(root) {
        let mode = m.permissions().mode() & 0o7777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{p:?}");
        } else if m.is_file() {
            assert_eq!(mode, 0o600, "{p:?}");
        } else if m.file_type().is_symlink() {
            let to = std::fs::read_link(&p).unwrap();
            assert!(to.is_relative(), "{p:?} -> {to:?}");
            assert!(
                !to.components()
                    .any(|c| c == std::path::Component::ParentDir),
                "{p:?} -> {to:?}"
            );
        } else {
            panic!("{p:?} is a special file");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_continues_the_saved_state_of_this_workspace_only() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let canonical = std::fs::canonicalize(ws.path()).unwrap();
    let name = background(ws.path(), &[]);
    let id = info(&name)["session"].as_str().unwrap().to_string();
    say(&name, &id, "first turn", 1);

    // The session ends inside with nobody attached: the container powers off
    // before anyone saved. It is kept until a later cci command saves it.
    end_from_inside(&name).await;
    let (inst, _) = client().await.instance(&name).await.unwrap();
    assert_eq!(inst.status.as_str(), "Stopped");
    let out = run(cci().args(["list", "--all", "--format", "json"]));
    ok(&out);
    let listed = json(&out);
    let ours: Vec<&serde_json::Value> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{listed}");
    assert_eq!(ours[0]["workspace"], canonical.to_str().unwrap());
    assert_eq!(ours[0]["container"], name.as_str());
    assert!(containers_left(ws.path()).await.is_empty());
    let m = meta(&id);
    assert_eq!(m["tool"], "claude");
    assert_eq!(m["slot"], 1);
    assert_eq!(m["persistent"], false);
    assert_eq!(m["cci_version"], env!("CARGO_PKG_VERSION"));
    let log = saved_dir(&id).join(format!("state/projects/-workspace/{id}.jsonl"));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("first turn")
    );

    // `cci info ID` shows it.
    let out = run(cci().args(["info", &id, "--format", "json"]));
    ok(&out);
    assert_eq!(json(&out)["workspace"], canonical.to_str().unwrap());

    // --resume picks it: the agent runs in resume mode and sees its turn.
    let out = run(cci_in(ws.path(), "shell").args(["--background", "--resume"]));
    ok(&out);
    let name2 = text(&out.stdout).trim().to_string();
    screen_shows(&name2, &format!("session {id} (resumed, 1 earlier turns)"));
    assert_eq!(
        agent_run(&name2, "resumed"),
        format!("{id} resumed code /workspace\n")
    );
    say(&name2, &id, "second turn", 2);
    // Not twice at once.
    let out = run(cci_in(ws.path(), "shell").args(["--background", "--continue"]));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&name2), "{}", text(&out.stderr));

    // Another workspace: nothing to resume there, and this id only with --force.
    let other = agent_workspace();
    let _o = Sessions(other.path().to_path_buf());
    let out = run(cci_in(other.path(), "shell").args(["--background", "--resume"]));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no saved claude session"));
    let flag = format!("--resume={id}");
    let out = run(cci_in(other.path(), "shell").args(["--background", &flag]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    for bad in ["../../etc", "/abs", "a\nb"] {
        let out = run(cci_in(other.path(), "shell").arg(format!("--resume={bad}")));
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("invalid session id"));
        assert!(!text(&out.stderr).contains('\n') || !text(&out.stderr).contains("a\nb"));
    }

    // kill saves the running session first.
    let out = run(cci().args(["kill", &name2]));
    ok(&out);
    assert!(text(&out.stdout).contains(&format!("agent state saved as session {id}")));
    let saved = std::fs::read_to_string(&log).unwrap();
    assert!(
        saved.contains("first turn") && saved.contains("second turn"),
        "{saved}"
    );

    let out = run(cci_in(other.path(), "shell").args(["--background", &flag, "--force"]));
    ok(&out);
    let name3 = text(&out.stdout).trim().to_string();
    screen_shows(&name3, &format!("session {id} (resumed, 2 earlier turns)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_copied_in_fresh_and_never_leak() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let canary = format!("CANARY-{}-cred", std::process::id());
    let canary2 = format!("CANARY-{}-acct", std::process::id());
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join(".claude")).unwrap();
    let cred = host.path().join(".claude/.credentials.json");
    std::fs::write(&cred, format!(r#"{{"token":"{canary}"}}"#)).unwrap();
    std::fs::write(
        host.path().join(".claude.json"),
        format!(r#"{{"theme":"solarized","oauthAccount":{{"email":"{canary2}"}}}}"#),
    )
    .unwrap();
    let out = run(cci_in(ws.path(), "shell")
        .arg("--background")
        .env("CCI_CREDENTIALS_DIR", host.path())
        .env("CCI_LOG", "trace"));
    ok(&out);
    let name = text(&out.stdout).trim().to_string();
    let mut logs = text(&out.stdout) + &text(&out.stderr);

    let got = sh_in(
        &name,
        true,
        "cd /home/code; stat -c '%a %U %G' .claude/.credentials.json .claude.json; cat .claude/.credentials.json",
    );
    assert_eq!(
        text(&got.stdout),
        format!("600 code code\n600 code code\n{{\"token\":\"{canary}\"}}")
    );
    let cfg = sh_in(&name, false, "cat ~/.claude.json");
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert_eq!(cfg["theme"], "solarized", "the user's keys are kept");
    assert_eq!(cfg["oauthAccount"]["email"], canary2.as_str());
    assert_eq!(cfg["hasCompletedOnboarding"], true);
    assert_eq!(
        cfg["projects"]["/workspace"]["hasTrustDialogAccepted"],
        true
    );

    // Never in the instance config, in any process's argv (container or
    // host), or in what cci printed (even at trace level).
    let (inst, _) = client().await.instance(&name).await.unwrap();
    let config = serde_json::to_string(&inst.config).unwrap()
        + &serde_json::to_string(&inst.devices).unwrap();
    let argv_inside = text(&sh_in(&name, true, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout);
    let mut argv_host = String::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(p.path().join("cmdline")) {
            argv_host.push_str(&text(&c));
        }
    }

    // The agent changes the credentials inside: the host copy stays as it was,
    // and the saved state holds no credentials.
    sh_in(&name, false, "echo changed > ~/.claude/.credentials.json");
    let out = run(cci().args(["shutdown", &name]).env("CCI_LOG", "trace"));
    ok(&out);
    logs += &(text(&out.stdout) + &text(&out.stderr));
    assert!(std::fs::read_to_string(&cred).unwrap().contains(&canary));
    let id = info_id(&out);
    let saved = saved_dir(&id);
    assert!(saved.join("state/settings.json").exists());
    assert!(!saved.join("state/.credentials.json").exists());
    let mut stored = String::new();
    for (p, m) in walk(&saved) {
        if m.is_file() {
            stored.push_str(&text(&std::fs::read(p).unwrap()));
        }
    }
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("state/settings.json")).unwrap()).unwrap();
    assert_eq!(settings["permissions"]["defaultMode"], "bypassPermissions");
    for (what, hay) in [
        ("instance config", &config),
        ("container argv", &argv_inside),
        ("host argv", &argv_host),
        ("cci output", &logs),
        ("saved session", &stored),
    ] {
        assert!(
            !hay.contains(&canary) && !hay.contains(&canary2),
            "canary in {what}"
        );
    }

    // Fresh at every start: a new token on the host is what the resumed session gets.
    std::fs::write(&cred, r#"{"token":"renewed"}"#).unwrap();
    let out = run(cci_in(ws.path(), "shell")
        .args(["--background", "--resume"])
        .env("CCI_CREDENTIALS_DIR", host.path()));
    ok(&out);
    let name = text(&out.stdout).trim().to_string();
    let got = sh_in(&name, false, "cat ~/.claude/.credentials.json");
    assert_eq!(text(&got.stdout), r#"{"token":"renewed"}"#);
}

/// The session id named in "agent state saved as session ID".
fn info_id(out: &Output) -> String {
    let all = text(&out.stdout);
    let at = all.find("saved as session ").expect(&all) + "saved as session ".len();
    all[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',')
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_state_folder_never_reaches_outside_the_session_folder() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let o = outside.path().to_str().unwrap();
    let name = background(ws.path(), &[]);
    let id = info(&name)["session"].as_str().unwrap().to_string();
    say(&name, &id, "hello", 1);
    let setup = format!(
        r#"set -e; cd ~/.claude
ln -sfn {o}/secret abs; ln -sfn ../../../../../../..{o} up; ln -sfn nothere dangling
ln -sfn projects inner; mkfifo fifo; printf x > suid; chmod 4755 suid
printf odd > "$(printf 'bad\nname\033[31m\377')"
ln projects/-workspace/{id}.jsonl hard; echo x > unreadable; chmod 000 unreadable
mkdir -p swap/d; for i in 1 2 3; do echo $i > swap/d/f$i; done"#
    );
    let out = sh_in(&name, false, &setup);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Root in the container can make a device node (the mknod intercept).
    sh_in(&name, true, "mknod /home/code/.claude/null c 1 3 || true");

    // A folder swapped for a symlink (to / and to the host path) over and over.
    let swapper = format!(
        "cd ~/.claude/swap; setsid -f sh -c 'while :; do mv d d.x; ln -s {o} d; rm d; ln -s / d; rm d; mv d.x d; done' >/dev/null 2>&1 </dev/null"
    );
    ok(&sh_in(&name, false, &swapper));
    for _ in 0..4 {
        let out = run(cci()
            .args(["session", "save", &name])
            .env("CCI_LOG", "info"));
        ok(&out);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains('\x1b'), "raw escape printed: {all:?}");
        assert!(!all.contains("bad\nname"), "raw newline printed: {all:?}");
    }
    sh_in(&name, false, "pkill -f 'mv d d.x' || true");

    // Under umask 000 as well.
    let bin = common::cci_bin();
    let out = run(Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" session save \"$1\""])
        .arg(&bin)
        .arg(&name)
        .env("CCI_SESSIONS_DIR", sessions_dir()));
    ok(&out);
    let state = saved_dir(&id).join("state");
    assert_private_and_contained(&saved_dir(&id));
    assert_eq!(
        std::fs::metadata(saved_dir(&id).parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    for gone in ["abs", "up", "fifo", "null", "unreadable"] {
        assert!(
            std::fs::symlink_metadata(state.join(gone)).is_err(),
            "{gone} was saved"
        );
    }
    assert_eq!(
        std::fs::read_link(state.join("dangling")).unwrap(),
        Path::new("nothere")
    );
    assert_eq!(
        std::fs::read_link(state.join("inner")).unwrap(),
        Path::new("projects")
    );
    assert_eq!(std::fs::read(state.join("suid")).unwrap(), b"x");
    assert!(
        std::fs::read_to_string(state.join("hard"))
            .unwrap()
            .contains("hello")
    );
    let odd = state.join(std::ffi::OsStr::from_bytes(b"bad\nname\x1b[31m\xff"));
    assert_eq!(std::fs::read(odd).unwrap(), b"odd");
    // Nothing was written outside: the host folder the links named is as it was.
    let names: BTreeSet<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "host secret"
    );

    // Export and restore go through the same checks.
    let dest = tempfile::tempdir().unwrap();
    let out = run(cci()
        .args(["session", "export", &id])
        .arg(dest.path().join("x")));
    ok(&out);
    assert!(dest.path().join("x/projects/-workspace").is_dir());
    assert!(std::fs::symlink_metadata(dest.path().join("x/abs")).is_err());
    ok(&run(cci().args(["kill", &name])));
    let out = run(cci_in(ws.path(), "shell").args(["--background", &format!("--resume={id}")]));
    ok(&out);
    let name = text(&out.stdout).trim().to_string();
    let seen = sh_in(
        &name,
        false,
        "cd ~/.claude; readlink inner; stat -c %a suid; cat hard | wc -l",
    );
    // (setuid is gone; the owner's execute bit is kept.)
    assert_eq!(text(&seen.stdout), "projects\n700\n1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_a_kill_mid_save_keep_the_previous_state() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &[]);
    let id = info(&name)["session"].as_str().unwrap().to_string();
    say(&name, &id, "hello", 1);
    ok(&sh_in(
        &name,
        false,
        "cd ~/.claude && echo A > marker && mkdir -p big && for i in $(seq 1 40); do head -c 1000000 /dev/urandom > big/f$i; done",
    ));
    ok(&run(cci().args(["session", "save", &name])));
    let first = meta(&id);
    let marker = saved_dir(&id).join("state/marker");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "A\n");

    ok(&sh_in(
        &name,
        false,
        "cd ~/.claude && echo B > marker && mkdir -p a/b/c/d",
    ));
    for (env, value, says) in [
        (
            "CCI_SESSION_MAX_BYTES",
            "2000000",
            "more than 2000000 bytes",
        ),
        ("CCI_SESSION_MAX_FILES", "5", "more than 5 files"),
        ("CCI_SESSION_MAX_DEPTH", "3", "deeper than 3"),
    ] {
        let out = run(cci().args(["session", "save", &name]).env(env, value));
        assert_eq!(out.status.code(), Some(1), "{env}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(says),
            "{env}: {}",
            text(&out.stderr)
        );
        assert_eq!(meta(&id), first, "{env}: the earlier save is kept");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "A\n");
    }
    let out = run(cci()
        .args(["session", "save", &name])
        .env("CCI_SESSION_MAX_BYTES", "-5"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("CCI_SESSION_MAX_BYTES"),
        "{}",
        text(&out.stderr)
    );

    // kill -9 at several points of a save: the old or the new session, whole.
    for delay in [30u64, 120, 250, 400, 600, 900] {
        let mut child = cci()
            .args(["session", "save", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let m = meta(&id);
        let content = std::fs::read_to_string(&marker).unwrap();
        if content == "B\n" {
            // The earlier save plus a/b/c/d.
            assert_eq!(m["entries"], first["entries"].as_u64().unwrap() + 4, "{m}");
        } else {
            assert_eq!(m, first);
        }
        let big = walk(&saved_dir(&id).join("state/big"));
        assert_eq!(big.len(), 40);
        assert!(big.iter().all(|(_, m)| m.len() == 1_000_000));
    }
    // The next cci removes what the killed ones left.
    ok(&run(cci().args(["session", "list"])));
    let leftovers: Vec<_> = std::fs::read_dir(saved_dir(&id).parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-") || n.starts_with(".old-"))
        .filter(|n| n.ends_with(&id))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    ok(&run(cci().args(["session", "save", &name])));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "B\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn import_export_and_clean_in_a_store_of_its_own() {
    let store = tempfile::tempdir().unwrap();
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let with_store = |cmd: &mut Command| {
        cmd.env("CCI_SESSIONS_DIR", store.path());
    };
    // A host ~/.claude with a conversation (a folder as cci exports it), a
    // link to a host secret, a FIFO and a hook script in it; credentials,
    // another project's transcript, shell snapshots, an IDE lock file and
    // settings next to it.
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join(".claude");
    let conv = "0b7c3c1e-8a8f-4a43-9f3e-2f1d0b8f6c11";
    let project = src.join("projects/-workspace");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join(format!("{conv}.jsonl")),
        "{\"said\":\"a\"}\n{\"said\":\"b\"}\n",
    )
    .unwrap();
    std::fs::write(src.join(".credentials.json"), "secret").unwrap();
    std::fs::write(home.path().join("secret"), "host secret").unwrap();
    std::os::unix::fs::symlink(home.path().join("secret"), project.join("abs")).unwrap();
    std::fs::write(project.join("hook.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        project.join("hook.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let fifo = std::ffi::CString::new(project.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let others = [
        "projects/-home-me-other/1f0e7a52-0000-4000-8000-000000000001.jsonl",
        "shell-snapshots/snapshot-bash-1.sh",
        "ide/12345.lock",
        "settings.json",
        "todos/t.json",
    ];
    for other in others {
        let p = src.join(other);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{\"authToken\": \"host token\"}").unwrap();
    }

    let mut cmd = cci();
    cmd.args(["session", "import"])
        .arg(&src)
        .arg("--workspace")
        .arg(ws.path());
    with_store(&mut cmd);
    let out = run(&mut cmd);
    ok(&out);
    assert!(text(&out.stdout).contains(conv), "{}", text(&out.stdout));
    let saved = store.path().join("sessions-claude").join(conv);
    assert_private_and_contained(&saved);
    let state = saved.join("state");
    for gone in [
        ".credentials.json",
        "projects/-workspace/abs",
        "projects/-workspace/fifo",
    ]
    .iter()
    .chain(&others)
    {
        assert!(
            std::fs::symlink_metadata(state.join(gone)).is_err(),
            "{gone}"
        );
    }
    assert!(
        state
            .join(format!("projects/-workspace/{conv}.jsonl"))
            .exists()
    );

    // Bad ids never touch a path.
    for bad in ["../../etc", "/abs", "a\nb", ""] {
        let mut cmd = cci();
        cmd.args(["session", "export", bad])
            .arg(home.path().join("out"));
        with_store(&mut cmd);
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let mut cmd = cci();
        cmd.args(["session", "import"])
            .arg(&src)
            .args(["--name", bad]);
        with_store(&mut cmd);
        assert_eq!(run(&mut cmd).status.code(), Some(2), "{bad:?}");
    }
    assert!(!home.path().join("out").exists());

    // Export: the hook keeps its executable bit; an existing folder is refused.
    let dest = home.path().join("exported");
    let mut cmd = cci();
    cmd.args(["session", "export", conv]).arg(&dest);
    with_store(&mut cmd);
    ok(&run(&mut cmd));
    assert_eq!(
        std::fs::metadata(dest.join("projects/-workspace/hook.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let mut cmd = cci();
    cmd.args(["session", "export", conv]).arg(&dest);
    with_store(&mut cmd);
    assert_eq!(run(&mut cmd).status.code(), Some(2));

    // The imported conversation resumes in a container.
    let mut cmd = cci_in(ws.path(), "shell");
    cmd.args(["--background", "--resume"]);
    with_store(&mut cmd);
    let out = run(&mut cmd);
    ok(&out);
    let name = text(&out.stdout).trim().to_string();
    screen_shows(&name, &format!("session {conv} (resumed, 2 earlier turns)"));
    let ran = sh_in(
        &name,
        false,
        "test -x ~/.claude/projects/-workspace/hook.sh && echo exec",
    );
    assert_eq!(text(&ran.stdout), "exec\n");
    ok(&run(cci()
        .args(["kill", &name])
        .env("CCI_SESSIONS_DIR", store.path())));

    // clean --sessions: --older-than keeps fresh ones; without it they go.
    let mut cmd = cci();
    cmd.args(["clean", "--sessions", "--older-than", "1", "-f"]);
    with_store(&mut cmd);
    let out = run(&mut cmd);
    ok(&out);
    assert!(saved.exists());
    let mut cmd = cci();
    cmd.args(["clean", "--sessions", "-f"]);
    with_store(&mut cmd);
    let out = run(&mut cmd);
    ok(&out);
    assert!(text(&out.stdout).contains(&format!("removed session {conv}")));
    assert!(!saved.exists());
}

/// Install `script` as the `tar` cci runs inside (root in the container is
/// the agent's; `/usr/local/bin` comes first in the exec path).
fn fake_tar(name: &str, script: &str) {
    ok(&sh_in(
        name,
        true,
        &format!(
            "printf '#!/bin/sh\\n%s\\n' '{script}' > /usr/local/bin/tar && chmod 755 /usr/local/bin/tar"
        ),
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tar_inside_that_streams_or_sleeps_for_ever_cannot_hang_cci() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let name = background(ws.path(), &[]);
    let id = info(&name)["session"].as_str().unwrap().to_string();
    say(&name, &id, "hello", 1);
    ok(&run(cci().args(["session", "save", &name])));
    let first = meta(&id);

    // Streams for ever: endless entries, every one left out (outside the
    // state folder), so only the count of entries read stops it.
    fake_tar(&name, "yes /dev/null | /bin/tar -cf - -T - 2>/dev/null");
    let t = std::time::Instant::now();
    let out = run(cci().args(["session", "save", &name]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("more than 200000 files"),
        "{}",
        text(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(120), "{:?}", t.elapsed());
    assert_eq!(meta(&id), first, "the earlier save is kept");

    // A good save clears the failure (an ended session with a failed save
    // is not saved again by upkeep).
    ok(&sh_in(&name, true, "rm /usr/local/bin/tar"));
    ok(&run(cci().args(["session", "save", &name])));
    let first = meta(&id);

    // Sleeps for ever. An explicit save gives up within the stall bound.
    fake_tar(&name, "exec sleep 100000");
    let t = std::time::Instant::now();
    let out = run(cci().args(["session", "save", &name]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let took = t.elapsed();
    let stall = cci::session::STALL;
    assert!(
        took >= stall && took < stall + Duration::from_secs(60),
        "{took:?}"
    );
    assert!(
        text(&out.stderr).contains("given up") && text(&out.stderr).contains("nothing for 45 s"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(meta(&id), first, "the earlier save is kept");

    // The container stops with its session unsaved; `cci list` saves ended
    // sessions: it gives up within the bound, and keeps the save.
    ok(&sh_in(&name, true, "rm /usr/local/bin/tar"));
    ok(&run(cci().args(["session", "save", &name])));
    let first = meta(&id);
    fake_tar(&name, "exec sleep 100000");
    let c = client().await;
    c.stop_instance(&name, None, true).await.unwrap();
    let t = std::time::Instant::now();
    let out = run(cci().args(["list", "--format", "json"]));
    ok(&out);
    let took = t.elapsed();
    assert!(
        took >= stall && took < stall + Duration::from_secs(75),
        "{took:?}"
    );
    assert_eq!(meta(&id), first, "the earlier save is kept");
    let why = info(&name)["save_error"].as_str().unwrap_or("").to_string();
    assert!(
        why.contains("given up") && why.contains("nothing for 45 s"),
        "{why:?}"
    );
    // Handled as any failed save: stopped again, kept, not saved again.
    assert_eq!(
        c.instance(&name).await.unwrap().0.status.as_str(),
        "Stopped"
    );
    let t = std::time::Instant::now();
    ok(&run(cci().args(["list"])));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

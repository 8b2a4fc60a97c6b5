//! codex, opencode and aider as cci starts them (`--tool NAME`): the
//! credentials copied in fresh, the state folder saved when the session
//! ends and put back with `--resume`, the agent told to continue its latest
//! conversation. The real programs need their services and accounts, so a
//! stand-in that takes exactly their flags and keeps its state where they
//! do runs instead (tests/fixtures/fake-other-agent).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::agent::{Sessions, cci_in, end_from_inside, json, ok, screen_shows, send_keys};
use common::{agent_workspace, cci, containers_left, sessions_dir};

/// The agent's credentials file under a home folder, and its state folder.
fn files(agent: &str) -> (Option<&'static str>, &'static str) {
    match agent {
        "codex" => (Some(".codex/auth.json"), ".codex"),
        "opencode" => (
            Some(".local/share/opencode/auth.json"),
            ".local/share/opencode",
        ),
        _ => (None, ".aider"),
    }
}

fn start(ws: &Path, creds: &Path, agent: &str, extra: &[&str]) -> String {
    let out = cci_in(ws, "shell")
        .env("CCI_CREDENTIALS_DIR", creds)
        .args(["--background", "--tool", agent, "--tool-binary"])
        .arg(format!("/workspace/.fake-{agent}"))
        .args(extra)
        .output()
        .unwrap();
    ok(&out).trim().to_string()
}

async fn saved_and_resumed(agent: &str) {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-other-agent"),
        ws.path().join(format!(".fake-{agent}")),
    )
    .unwrap();
    let creds = tempfile::tempdir().unwrap();
    let (cred, state) = files(agent);
    let token = format!("secret-{agent}-token");
    if let Some(c) = cred {
        let p = creds.path().join(c);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("{{\"token\": \"{token}\"}}")).unwrap();
    }
    let name = start(ws.path(), creds.path(), agent, &[]);
    let has = if cred.is_some() { "present" } else { "none" };
    screen_shows(
        &name,
        &format!("fake-{agent} ready: new, 0 earlier turns, credentials {has}"),
    );
    send_keys(&name, "first turn");
    screen_shows(&name, "HEARD[first turn]");

    // The session ends inside; a later command saves its state folder.
    end_from_inside(&name).await;
    ok(&cci()
        .args(["list", "--all"])
        .stdin(Stdio::null())
        .output()
        .unwrap());
    let out = cci()
        .args(["session", "list", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    let all = json(&out);
    let ours = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["container"] == name.as_str() && s["tool"] == agent)
        .unwrap_or_else(|| {
            let tools: Vec<_> = all
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["tool"].clone())
                .collect();
            panic!("no saved {agent} session of {name}; tools saved: {tools:?}")
        })
        .clone();
    assert!(containers_left(ws.path()).await.is_empty());
    let saved = Path::new(ours["path"].as_str().unwrap()).join("state");
    let history = std::fs::read_to_string(saved.join("history.jsonl")).unwrap();
    assert!(history.contains("first turn"), "{history}");
    // Credentials never come back with the state.
    let grep = std::process::Command::new("grep")
        .args(["-r", &token])
        .arg(sessions_dir())
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "{agent}: the token was saved");
    let _ = state;

    // --resume puts the folder back and the agent continues its latest.
    let id = ours["id"].as_str().unwrap().to_string();
    let again = start(ws.path(), creds.path(), agent, &[&format!("--resume={id}")]);
    screen_shows(
        &again,
        &format!("fake-{agent} ready: resumed, 1 earlier turns, credentials {has}"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_is_started_saved_and_resumed_like_claude() {
    saved_and_resumed("codex").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opencode_is_started_saved_and_resumed_like_claude() {
    saved_and_resumed("opencode").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aider_is_started_saved_and_resumed_like_claude() {
    saved_and_resumed("aider").await;
}

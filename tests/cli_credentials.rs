//! What of the host goes into a sandbox with the agent's credentials and a
//! command's environment: only what the agent needs, and no secret in the
//! host's process list.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::agent::{Sessions, cci_in, sh_in, text};
use common::{agent_workspace, cci, containers_left, test_image, workspace};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_config_goes_in_without_mcp_tokens_or_other_projects() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let token = format!("CANARY-{}-mcp-token", std::process::id());
    let other = format!("/home/someone/CANARY-{}-other-project", std::process::id());
    let host = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "oauthAccount": {"emailAddress": "user@example.invalid"},
        "userID": "user-id-1",
        "hasCompletedOnboarding": true,
        "lastOnboardingVersion": "9.9.9",
        "theme": "solarized",
        "mcpServers": {"github": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": token}}},
        "projects": {other.clone(): {"mcpServers": {"db": {"headers": {"Authorization": token}}}}},
        "env": {"SECRET": token},
    });
    std::fs::write(host.path().join(".claude.json"), config.to_string()).unwrap();
    let out = cci_in(ws.path(), "shell")
        .arg("--background")
        .env("CCI_CREDENTIALS_DIR", host.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();

    let got = sh_in(&name, false, "cat ~/.claude.json");
    let raw = text(&got.stdout);
    assert!(!raw.contains(&token), "the MCP token went in: {raw}");
    assert!(
        !raw.contains(&other),
        "another project's path went in: {raw}"
    );
    let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(cfg.get("mcpServers"), None);
    assert_eq!(cfg.get("env"), None);
    // Positive control: the allowed keys arrive, the sandbox's are merged.
    assert_eq!(
        cfg["oauthAccount"]["emailAddress"], "user@example.invalid",
        "{raw}"
    );
    assert_eq!(cfg["userID"], "user-id-1");
    assert_eq!(cfg["lastOnboardingVersion"], "9.9.9");
    assert_eq!(cfg["theme"], "solarized");
    assert_eq!(cfg["hasCompletedOnboarding"], true);
    assert_eq!(
        cfg["projects"]["/workspace"]["hasTrustDialogAccepted"],
        true
    );
    assert_eq!(cfg["projects"].as_object().unwrap().len(), 1, "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn env_values_from_the_environment_and_files_stay_out_of_host_argv() {
    let ws = workspace();
    let from_env = format!("CANARY-{}-from-env", std::process::id());
    let from_file = format!("CANARY-{}-from-file", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.env");
    std::fs::write(&file, format!("# secrets\nFROM_FILE={from_file}\n")).unwrap();
    let mut child = cci()
        .env("CCI_IMAGE", test_image())
        .env("CCI_TEST_SECRET", &from_env)
        .arg("run")
        .arg("--workspace")
        .arg(ws.path())
        .args(["-e", "CCI_TEST_SECRET", "--env-file"])
        .arg(&file)
        .args(["-e", "PLAIN=visible", "--", "sh", "-c"])
        .arg("echo \"got $CCI_TEST_SECRET $FROM_FILE $PLAIN\"; sleep 4")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // The command runs (it printed), so cci is running: read its argv now.
    let line = rx.recv_timeout(Duration::from_secs(90));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let line = line.unwrap_or_else(|_| panic!("cci run printed nothing: {err}"));
    assert_eq!(line, format!("got {from_env} {from_file} visible"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    // Positive control: the process list shows the arguments, and a value
    // given as KEY=VALUE (hence the warning in --help).
    assert!(cmdline.contains("CCI_TEST_SECRET"), "{cmdline}");
    assert!(cmdline.contains("PLAIN=visible"), "{cmdline}");
    assert!(!cmdline.contains(&from_env), "{cmdline}");
    assert!(!cmdline.contains(&from_file), "{cmdline}");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[test]
fn help_warns_about_values_on_the_command_line() {
    for sub in [&["run"][..], &["shell"], &["container", "exec"]] {
        let out = cci().args(sub).arg("--help").output().unwrap();
        let help = text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(help.contains("--env-file"), "{sub:?}: {help}");
        assert!(
            help.contains("visible in the host's process list"),
            "{sub:?}: {help}"
        );
    }
}

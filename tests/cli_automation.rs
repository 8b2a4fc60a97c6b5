//! The commands scripts use: `cci container ...`, `cci tmux ...`, completions.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{cci, client, containers_left, test_image, unique_name, workspace};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cci_out(args: &[&str]) -> Output {
    cci().args(args).stdin(Stdio::null()).output().unwrap()
}

fn code(args: &[&str]) -> Option<i32> {
    cci_out(args).status.code()
}

#[tokio::test(flavor = "multi_thread")]
async fn container_lifecycle_by_exit_codes_and_mounts() {
    let name = unique_name("ctl");
    let guard = common::TestInstance {
        name: name.clone(),
        client: client().await,
    };
    assert_eq!(code(&["container", "exists", &name]), Some(1));
    let out = cci_out(&["container", "launch", &test_image(), &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(code(&["container", "exists", &name]), Some(0));
    assert_eq!(code(&["container", "running", &name]), Some(0));
    assert_eq!(code(&["container", "stop", &name, "--force"]), Some(0));
    assert_eq!(code(&["container", "running", &name]), Some(1));
    assert_eq!(code(&["container", "start", &name]), Some(0));
    assert_eq!(code(&["container", "running", &name]), Some(0));

    // A host folder mounted read-only, with host ownership kept.
    let dir = workspace();
    std::fs::write(dir.path().join("shared.txt"), "from the host\n").unwrap();
    let src = dir.path().to_str().unwrap();
    let out = cci_out(&[
        "container",
        "mount",
        &name,
        "data",
        src,
        "/mnt/data",
        "--shift",
        "--readonly",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cci_out(&[
        "container",
        "exec",
        &name,
        "--capture",
        "--format",
        "raw",
        "--",
        "sh",
        "-c",
        "cat /mnt/data/shared.txt; stat -c %u /mnt/data; touch /mnt/data/x 2>/dev/null || echo read-only",
    ]);
    assert_eq!(
        text(&out.stdout),
        "from the host\n1000\nread-only\n",
        "{}",
        text(&out.stderr)
    );

    let out = cci_out(&["container", "list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap();
    assert_eq!(
        (me["status"].as_str(), me["ephemeral"].as_bool()),
        (Some("Running"), Some(false))
    );

    // Deleting a running container needs --force.
    assert_ne!(code(&["container", "delete", &name]), Some(0));
    assert_eq!(code(&["container", "delete", &name, "--force"]), Some(0));
    assert_eq!(code(&["container", "exists", &name]), Some(1));
    drop(guard);

    // An ephemeral one goes away when stopped.
    let eph = unique_name("eph");
    let _guard = common::TestInstance {
        name: eph.clone(),
        client: client().await,
    };
    assert_eq!(
        code(&["container", "launch", &test_image(), &eph, "--ephemeral"]),
        Some(0)
    );
    assert_eq!(code(&["container", "stop", &eph, "--force"]), Some(0));
    let deadline = Instant::now() + Duration::from_secs(15);
    while code(&["container", "exists", &eph]) == Some(0) {
        assert!(Instant::now() < deadline, "{eph} stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        code(&["container", "launch", "cci-test-no-such-image", &eph]),
        Some(5)
    );
}

/// Wait until the session's screen shows `want`.
fn screen_shows(name: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cci_out(&["tmux", "capture", name]);
        let screen = text(&out.stdout);
        if screen.contains(want) {
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

#[tokio::test(flavor = "multi_thread")]
async fn tmux_send_and_capture_reach_a_shell_session() {
    let ws = workspace();
    let agent = ws.path().join(".fake-agent");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent"),
        &agent,
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cci()
        .env("CCI_IMAGE", test_image())
        .env("CCI_TOOL_BINARY", "/workspace/.fake-agent")
        .args(["shell", "--background", "--workspace"])
        .arg(ws.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();

    screen_shows(&name, "agent>");
    assert_eq!(
        code(&["tmux", "send", &name, "hello from a script"]),
        Some(0)
    );
    screen_shows(&name, "HEARD[hello from a script]");
    assert_eq!(
        code(&["tmux", "send", &name, "--no-enter", "typed"]),
        Some(0)
    );
    assert_eq!(code(&["tmux", "send", &name, "--keys", "Enter"]), Some(0));
    let screen = screen_shows(&name, "HEARD[typed]");
    assert!(!screen.contains('\x1b'), "escape sequences are stripped");

    let out = cci_out(&["tmux", "list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|s| s["container"] == name.as_str())
    );

    // A container that is not cci's is refused; a stopped session says so.
    let out = cci_out(&["tmux", "capture", "cci-test-no-such-container"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(code(&["kill", &name]), Some(0));
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cci_out(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains("attach") && script.contains("shutdown"),
            "{shell}"
        );
    }
    assert_eq!(code(&["completion", "tcsh"]), Some(2));
}

//! The commands scripts use: `cci container ...`, `cci tmux ...`, completions.

mod common;

use common::agent::screen_shows;

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

/// Run cci and insist on success, showing its stderr otherwise.
fn succeeds(args: &[&str]) {
    let out = cci_out(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cci {args:?}: {}",
        text(&out.stderr)
    );
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

    // A host folder mounted read-only, its owner (1000) appearing as code.
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
    // The owner's mapping (raw.idmap) takes effect at the next start.
    assert_eq!(code(&["container", "stop", &name, "--force"]), Some(0));
    assert_eq!(code(&["container", "start", &name]), Some(0));
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

#[tokio::test(flavor = "multi_thread")]
async fn tmux_send_and_capture_reach_a_shell_session() {
    let ws = common::agent_workspace();
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
    succeeds(&["tmux", "send", &name, "hello from a script"]);
    screen_shows(&name, "HEARD[hello from a script]");
    succeeds(&["tmux", "send", &name, "--no-enter", "typed"]);
    succeeds(&["tmux", "send", &name, "--keys", "Enter"]);
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

#[tokio::test(flavor = "multi_thread")]
async fn file_push_and_pull_round_trip_with_modes() {
    use std::os::unix::fs::MetadataExt;
    let inst = common::TestInstance::running("files").await;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(tree.join("sub/deeper/secret"), "s\n").unwrap();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(&tree.join("sub/run.sh"), 0o755);
    mode(&tree.join("sub/deeper/secret"), 0o600);
    mode(&tree.join("sub/deeper"), 0o750);

    let remote = format!("{}:/srv/tree", inst.name);
    assert_eq!(
        code(&["file", "push", tree.to_str().unwrap(), &remote]),
        Some(2),
        "a folder needs -r"
    );
    let out = cci_out(&["file", "push", "-r", tree.to_str().unwrap(), &remote]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cci_out(&[
        "container",
        "exec",
        &inst.name,
        "--capture",
        "--format",
        "raw",
        "--",
        "sh",
        "-c",
        "stat -c '%a %n' /srv/tree/sub/run.sh /srv/tree/sub/deeper /srv/tree/sub/deeper/secret; /srv/tree/sub/run.sh",
    ]);
    assert_eq!(
        text(&out.stdout),
        "755 /srv/tree/sub/run.sh\n750 /srv/tree/sub/deeper\n600 /srv/tree/sub/deeper/secret\nhi\n"
    );

    // Back out: a folder with -r, into an existing folder; a single file.
    let dst = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&["file", "pull", &remote, dst.path().to_str().unwrap()]),
        Some(2),
        "needs -r"
    );
    let out = cci_out(&["file", "pull", "-r", &remote, dst.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let back = dst.path().join("tree");
    assert_eq!(
        std::fs::read_to_string(back.join("sub/deeper/secret")).unwrap(),
        "s\n"
    );
    assert_eq!(
        std::fs::metadata(back.join("sub/run.sh")).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(back.join("sub/deeper")).unwrap().mode() & 0o777,
        0o750
    );
    let one = dst.path().join("one.txt");
    let file = format!("{}:/srv/tree/a.txt", inst.name);
    assert_eq!(
        code(&["file", "pull", &file, one.to_str().unwrap()]),
        Some(0)
    );
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "alpha\n");
    // Nothing half-made is left next to the targets.
    let names: Vec<String> = std::fs::read_dir(dst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("cci-pull")), "{names:?}");
    let missing = format!("{}:/no/such/file", inst.name);
    assert_eq!(
        code(&["file", "pull", &missing, one.to_str().unwrap()]),
        Some(5)
    );
    assert_eq!(
        std::fs::read_to_string(&one).unwrap(),
        "alpha\n",
        "a failed pull keeps the old file"
    );
}

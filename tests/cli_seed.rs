//! The interface the original tool's README shows, as written there.

mod common;

use common::agent::{Sessions, background, info, json, ok, text};
use common::{agent_workspace, cci, test_image, workspace};

#[test]
fn version_says_cci_s_and_the_daemon_s() {
    let out = ok(&cci().arg("version").output().unwrap());
    assert_eq!(out, format!("cci {}\n", env!("CARGO_PKG_VERSION")));
    let v = json(
        &cci()
            .args(["version", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["incus"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    // Without a daemon it still answers.
    let out = cci()
        .env("INCUS_SOCKET", "/nonexistent/unix.socket")
        .args(["version", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["incus"], serde_json::Value::Null);
}

#[test]
fn images_is_image_list() {
    let a = ok(&cci()
        .args(["images", "--all", "--format", "json"])
        .output()
        .unwrap());
    let b = ok(&cci()
        .args(["image", "list", "--all", "--format", "json"])
        .output()
        .unwrap());
    assert_eq!(a, b);
    assert!(a.contains(&test_image()), "{a}");
}

#[test]
fn run_takes_the_command_with_or_without_a_double_dash() {
    let ws = workspace();
    let run = |args: &[&str]| {
        {
            let mut c = cci();
            c.env("CCI_IMAGE", test_image())
                .arg("run")
                .arg("--workspace")
                .arg(ws.path())
                .args(args);
            c
        }
        .output()
        .unwrap()
    };
    assert_eq!(ok(&run(&["echo", "hello", "-n", "--x"])), "hello -n --x\n");
    assert_eq!(ok(&run(&["--", "echo", "dashed"])), "dashed\n");
    let out = run(&["--timeout", "30", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // Options before the subcommand, as the original took them.
    let out = {
        let mut c = cci();
        c.args(["--image", &test_image(), "--workspace"])
            .arg(ws.path())
            .args(["run", "--", "echo", "global"]);
        c
    }
    .output()
    .unwrap();
    assert_eq!(ok(&out), "global\n");
    let out = cci().args(["--slot", "2", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an option list does not have");
    assert!(
        text(&out.stderr).contains("--slot"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn persist_all_keeps_every_running_session() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().into());
    let a = background(ws.path(), &[]);
    let b = background(ws.path(), &[]);
    let out = ok(&cci().args(["persist", "--all"]).output().unwrap());
    for name in [&a, &b] {
        assert!(out.contains(&format!("{name} is now persistent")), "{out}");
        assert_eq!(info(name)["mode"], "persistent");
    }
    let out = cci().arg("persist").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "names or --all");
}

/// The original tool's README configuration example, as written there.
const SEED_EXAMPLE: &str = include_str!("fixtures/seed-config.toml");

#[test]
fn the_original_tools_configuration_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, SEED_EXAMPLE).unwrap();
    ok(&cci()
        .args(["config", "validate"])
        .arg(&file)
        .output()
        .unwrap());
    let storage = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(storage.path(), Some(1000), Some(1000)).unwrap();
    let ws = workspace();
    let run = |extra: &[&str]| {
        {
            let mut c = cci();
            c.env("CCI_CONFIG", &file)
                // The example's image and storage folder, replaced by the
                // environment layer (above files and profiles) for the test.
                .env("CCI_IMAGE", test_image())
                .env("CCI_STORAGE_DIR", storage.path())
                .args(["--profile", "rust", "run", "--workspace"])
                .arg(ws.path())
                .args(extra);
            c
        }
        .output()
        .unwrap()
    };
    let shown = json(
        &cci()
            .env("CCI_CONFIG", &file)
            .args(["--profile", "rust", "config", "show", "--format", "json"])
            .output()
            .unwrap(),
    );
    let shown = shown.to_string();
    assert!(
        shown.contains("cci-rust") && shown.contains("RUST_BACKTRACE"),
        "{shown}"
    );
    // The profile's environment reaches the command; --env wins over it.
    assert_eq!(ok(&run(&["printenv", "RUST_BACKTRACE"])), "1\n");
    assert_eq!(
        ok(&run(&[
            "-e",
            "RUST_BACKTRACE=full",
            "printenv",
            "RUST_BACKTRACE"
        ])),
        "full\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launched_container_is_usable_when_launch_returns() {
    let name = common::unique_name("ready");
    let _guard = common::TestInstance {
        name: name.clone(),
        client: common::client().await,
    };
    ok(&cci()
        .args(["container", "launch", &test_image(), &name])
        .output()
        .unwrap());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, "kept\n").unwrap();
    ok(&cci()
        .args(["file", "push"])
        .arg(&f)
        .arg(format!("{name}:/tmp/f"))
        .output()
        .unwrap());
    // Before readiness, the boot mounted a fresh /tmp over it seconds later.
    let (i, _) = common::client().await.instance(&name).await.unwrap();
    let state = common::client().await.instance_state(&name).await.unwrap();
    assert!(
        state.ipv4("eth0").is_some(),
        "no address at hand-over: {i:?}"
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = cci()
        .args([
            "container",
            "exec",
            &name,
            "--capture",
            "--format",
            "raw",
            "--",
        ])
        .args(["cat", "/tmp/f"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "kept\n");
}

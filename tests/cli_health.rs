//! `cci health` and the daemon-level errors every command reports, run as a
//! user would run them (the built binary against the real daemon).

mod common;

use std::os::unix::net::UnixListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{cci, cci_bin, client, test_image};

fn run(cmd: &mut Command) -> (Output, Duration) {
    let start = Instant::now();
    let out = cmd.output().expect("running cci");
    (out, start.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_on_a_healthy_setup_exits_0() {
    client().await;
    let (out, _) = run(cci().args(["health", "--image", &test_image()]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for name in [
        "socket", "daemon", "api", "storage", "network", "profile", "image", "firewall",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} not ok in:\n{stdout}"
        );
    }
    assert!(stdout.trim_end().ends_with("healthy"), "{stdout}");

    let (out, _) = run(cci().args(["doctor", "--format", "json", "--image", &test_image()]));
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "healthy");
    assert_eq!(check(&report, "storage")["status"], "ok");
    assert!(
        check(&report, "daemon")["detail"]
            .as_str()
            .unwrap()
            .contains("Incus")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_with_a_missing_image_is_degraded_and_names_the_fix() {
    client().await;
    let (out, _) = run(cci().args([
        "health",
        "--format",
        "json",
        "--image",
        "cci-test-no-such-image",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "degraded");
    let image = check(&report, "image");
    assert_eq!(image["status"], "warn");
    assert!(
        image["fix"]
            .as_str()
            .unwrap()
            .contains("incus image alias create cci-test-no-such-image"),
        "{image}"
    );
}

#[test]
fn health_without_a_daemon_is_unhealthy_fast() {
    let (out, took) = run(cci()
        .env("INCUS_SOCKET", "/nonexistent/unix.socket")
        .args(["health", "--format", "json"]));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "unhealthy");
    let daemon = check(&report, "daemon");
    assert_eq!(daemon["status"], "fail");
    assert!(
        daemon["fix"].as_str().unwrap().contains("incus"),
        "{daemon}"
    );
    assert_eq!(check(&report, "storage")["status"], "skip");
}

/// A missing socket and a stale one (file left, nobody listening) both give a
/// one-line error naming the socket and how to start Incus, exit 3, fast.
#[test]
fn unreachable_daemon_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let stale = tmp.path().join("stale.socket");
    drop(UnixListener::bind(&stale).unwrap());
    for socket in [tmp.path().join("missing.socket"), stale] {
        let (out, took) =
            run(cci()
                .env("INCUS_SOCKET", &socket)
                .args(["container", "exec", "x", "--", "true"]));
        let stderr = text(&out.stderr);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
        assert!(stderr.contains("start"), "{stderr}");
    }
}

/// A user outside the Incus admin group is told so, and how to fix it.
#[tokio::test(flavor = "multi_thread")]
async fn socket_permission_denied_says_which_group() {
    client().await;
    // The build directory may not be reachable for `nobody`: run a copy.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("cci");
    std::fs::copy(cci_bin(), &bin).unwrap();
    let (out, _) = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["container", "exec", "x", "--", "true"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains("incus-admin"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["no-such-command"],
        vec!["container", "exec", "x"],
        vec!["container", "exec", "x", "-e", "NOEQUALS", "--", "true"],
        vec!["health", "--format", "yaml"],
    ] {
        let (out, _) = run(cci().args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let (out, _) = run(cci().arg("--version"));
    assert!(
        text(&out.stdout).starts_with("cci "),
        "{}",
        text(&out.stdout)
    );
    let (out, _) = run(cci().arg("--help"));
    assert!(text(&out.stdout).contains("health"));
}

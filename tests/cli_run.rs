//! `cci run` and the container management commands, as a user runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestInstance, cci, client, containers_left, test_image, workspace};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cci run` in `ws` from the test image.
fn run_in(ws: &Path) -> Command {
    let mut cmd = cci();
    cmd.env("CCI_IMAGE", test_image())
        .arg("run")
        .arg("--workspace")
        .arg(ws);
    cmd
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn run_mounts_the_workspace_with_host_ownership_both_ways() {
    let ws = workspace();
    let host_file = ws.path().join("from-host.txt");
    std::fs::write(&host_file, "written on the host\n").unwrap();
    std::os::unix::fs::chown(&host_file, Some(1000), Some(1000)).unwrap();

    let out = run_in(ws.path())
        .args(["--", "sh", "-c"])
        .arg("id -u; pwd; stat -c %u:%g from-host.txt; cat from-host.txt; echo made inside > inside.txt")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1000\n/workspace\n1000:1000\nwritten on the host\n"
    );
    let inside = std::fs::metadata(ws.path().join("inside.txt")).unwrap();
    assert_eq!((inside.uid(), inside.gid()), (1000, 1000));
    assert!(!ws.path().join("x").exists(), "the path was run by a shell");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_streams_output_live_and_passes_the_exit_code() {
    let ws = workspace();
    let start = Instant::now();
    let mut child = run_in(ws.path())
        .args(["-e", "GREETING=a,b=c", "--", "sh", "-c"])
        .arg("echo first; sleep 3; echo \"$GREETING $IS_SANDBOX $HOME\"; echo oops >&2; exit 3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first_at = start.elapsed();
    let second = lines.next().and_then(Result::ok);
    let out = child.wait_with_output().unwrap();
    // (cci's own words, when output went missing, say what the daemon did)
    assert_eq!(
        second.as_deref(),
        Some("a,b=c 1 /home/code"),
        "exit {:?}, stderr: {}",
        out.status.code(),
        text(&out.stderr)
    );
    assert!(
        start.elapsed() - first_at >= Duration::from_secs(2),
        "output was not streamed: first line after {first_at:?}, end after {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());

    // JSON output.
    let out = run_in(ws.path())
        .args([
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            "echo o; echo e >&2; exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let v = json(&out);
    assert_eq!(
        (v["stdout"].as_str(), v["stderr"].as_str()),
        (Some("o\n"), Some("e\n"))
    );
    assert_eq!(v["exit_code"], 4);
    assert!(v["duration_ms"].as_u64().unwrap() > 0);
    assert!(v["container"].as_str().unwrap().starts_with("cci-"));

    // Standard input is passed through.
    let mut child = run_in(ws.path())
        .args(["--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"quiet\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "QUIET\n", "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_deletes_its_container_on_timeout_and_on_signals() {
    let ws = workspace();
    let start = Instant::now();
    let out = run_in(ws.path())
        .args(["--timeout", "2", "--", "sleep", "60"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());

    // Ctrl-C while the command runs.
    let mut child = run_in(ws.path())
        .args(["--", "sh", "-c", "echo started; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());

    // SIGTERM in the middle of the launch leaves nothing behind.
    for delay_ms in [50, 150, 300] {
        let mut child = run_in(ws.path())
            .args(["--", "sleep", "60"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "after {delay_ms} ms");
        let left = containers_left(ws.path()).await;
        assert!(left.is_empty(), "after {delay_ms} ms left {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_runs_get_sixteen_slots() {
    let ws = workspace();
    // A barrier in the shared workspace: every run holds its slot until all
    // sixteen run at once (else a run that ended early frees a slot a late
    // one may rightly take; a slot given twice at once leaves it waiting
    // for a sixteenth that never comes, and the names below tell).
    let barrier = ws.path().join(".barrier");
    std::fs::create_dir(&barrier).unwrap();
    std::os::unix::fs::chown(&barrier, Some(1000), Some(1000)).unwrap();
    let script = "touch /workspace/.barrier/$(hostname); \
        for i in $(seq 900); do [ $(ls /workspace/.barrier | wc -l) -ge 16 ] && break; sleep 0.1; done; id -u";
    let children: Vec<_> = (0..16)
        .map(|_| {
            run_in(ws.path())
                .env("CCI_SLOT_LIMIT", "20")
                .args(["--format", "json", "--", "sh", "-c", script])
                .stdin(Stdio::null())
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
            assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
            let v = json(&out);
            assert_eq!(out.status.code(), Some(0), "{v}");
            assert_eq!(
                (v["stdout"].as_str(), v["stderr"].as_str()),
                (Some("1000\n"), Some("")),
                "{v}"
            );
            v["container"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 16, "{names:?}");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_rejects_bad_input_clearly() {
    let ws = workspace();
    for slot in ["0", "-1", "abc"] {
        let out = run_in(ws.path())
            .args(["--slot", slot, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "slot {slot}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("slot"), "{}", text(&out.stderr));
    }
    let out = run_in(ws.path())
        .env("CCI_SLOT_LIMIT", "3")
        .args(["--slot", "4", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("limit of 3"),
        "{}",
        text(&out.stderr)
    );

    let file = ws.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for (path, words) in [
        (ws.path().join("missing"), "does not exist"),
        (file, "not a directory"),
    ] {
        let out = run_in(&path).args(["--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(words), "{}", text(&out.stderr));
    }

    // A missing image named with --image is an error (only the default one,
    // or CCI_IMAGE's, is built on first use).
    let out = run_in(ws.path())
        .args(["--image", "cci-test-no-such-image", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = text(&out.stderr);
    assert!(
        err.contains("cci-test-no-such-image") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_and_kill_removes_only_cci_containers() {
    let ws = workspace();
    let mut child = run_in(ws.path())
        .args(["--slot", "3", "--", "sh", "-c", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "up");

    let out = cci().args(["list", "--format", "json"]).output().unwrap();
    let all = json(&out);
    let canonical = std::fs::canonicalize(ws.path()).unwrap();
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["workspace"] == canonical.to_str().unwrap())
        .unwrap_or_else(|| panic!("not listed: {all}"))
        .clone();
    assert_eq!(mine["slot"], 3);
    assert_eq!(mine["state"], "Running");
    assert_eq!(mine["kind"], "run");
    assert_eq!(mine["mode"], "ephemeral");
    let name = mine["name"].as_str().unwrap().to_string();
    assert!(name.ends_with("-3"));

    // Docker can run inside: nesting from the first boot, and what its
    // overlay storage does works as root inside, through the kernel alone
    // (no syscall intercepts: each would register a seccomp listener with
    // every exec, which loses commands under load).
    let c = client().await;
    let (inst, _) = c.instance(&name).await.unwrap();
    assert_eq!(inst.config["security.nesting"], "true");
    assert!(
        !inst
            .expanded_config
            .keys()
            .any(|k| k.starts_with("security.syscalls.intercept.")),
        "{:?}",
        inst.expanded_config
    );
    let overlay = "set -e; d=$(mktemp -d); cd $d; mkdir l u w m; echo x >l/f; \
        mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w,userxattr m; \
        rm m/f; mkdir m/new; test ! -e m/f; stat -c %F:%t:%T u/f; umount m; echo overlay-ok";
    let req = cci::incus::ExecRequest::new(&["sh", "-c", overlay]);
    let out = c.exec_capture(&name, &req, None).await.unwrap();
    assert_eq!(
        (out.stdout_text().as_str(), out.exit_code),
        ("character special file:0:0\noverlay-ok\n", 0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cci().arg("list").output().unwrap();
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with(&name)),
        "{}",
        text(&out.stdout)
    );

    // A container cci did not make is left alone.
    let other = TestInstance::create("notcci", false).await;
    let out = cci().args(["kill", &other.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not created by cci"));
    assert!(client().await.instance(&other.name).await.is_ok());

    // --all needs a terminal or --force.
    let out = cci()
        .args(["kill", "--all"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = cci().args(["kill", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        client()
            .await
            .instance(&name)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_rounds_never_run_out_of_slots() {
    // Four slots, four runs at a time, three rounds with no pause: each round
    // starts while the daemon still deletes the last one's containers.
    let ws = workspace();
    for round in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|i| {
                run_in(ws.path())
                    .env("CCI_SLOT_LIMIT", "4")
                    .args(["--", "echo", &format!("{round}-{i}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            assert_eq!(
                (out.status.code(), text(&out.stdout), text(&out.stderr)),
                (Some(0), format!("{round}-{i}\n"), String::new()),
                "round {round}"
            );
        }
    }
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_does_not_come_up_is_named_with_its_console_and_removed() {
    // No time to get a DHCP lease: what is missing is said, with the end of
    // the console log, and nothing is left.
    let ws = workspace();
    let out = run_in(ws.path())
        .env("CCI_READY_TIMEOUT", "0")
        .args(["--", "echo", "never"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!text(&out.stdout).contains("never"));
    assert!(
        err.contains("was not ready after 0 s: eth0 has no IPv4 address (no DHCP lease)"),
        "{err}"
    );
    assert!(err.contains("--no-wait"), "{err}");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
    // A bad value is refused before anything starts.
    let out = run_in(ws.path())
        .env("CCI_READY_TIMEOUT", "soon")
        .args(["--", "echo", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("CCI_READY_TIMEOUT=\"soon\" is not a number of seconds"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
    // Positive control: the same run, given its time, comes up.
    let out = run_in(ws.path())
        .args(["--", "echo", "up"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "up\n", "{}", text(&out.stderr));
}

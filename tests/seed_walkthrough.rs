//! The original tool's README, walked in order: each example it shows, run as
//! written (with the test image for `cci`, the stand-in agent for Claude
//! Code, and test names for `my-container`), must work. What the walk leaves
//! out, and why:
//! - `cci build` (minutes; `cli_image` builds images), `image publish` and
//!   `image delete` (`cli_image`);
//! - the `--all` forms of `shutdown`/`kill` and `cci clean`: they act on every
//!   cci container of the machine, other tests' included (`cli_run`,
//!   `cli_clean` test them on their own);
//! - `cci attach` and `cci shell` on a terminal (`cli_shell`): here sessions
//!   start with `--background`, as a script would.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Sessions, cci_in, json, ok};
use common::{TestInstance, agent_workspace, cci, client, test_image, unique_name, workspace};

fn run(args: &[&str]) -> Output {
    cci().args(args).stdin(Stdio::null()).output().unwrap()
}

fn code(args: &[&str]) -> Option<i32> {
    run(args).status.code()
}

fn session(ws: &Path, args: &[&str]) -> Output {
    let mut c: Command = cci_in(ws, "shell");
    c.args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_readme_walked_in_order() {
    // Installation: `cci --version`.
    assert!(ok(&run(&["--version"])).starts_with("cci "));

    // Basic commands: a session, a persistent one in slot 2, both listed.
    let ws = agent_workspace();
    let _sessions = Sessions(ws.path().to_path_buf());
    let first = ok(&session(ws.path(), &["--background"]))
        .trim()
        .to_string();
    let second = ok(&session(
        ws.path(),
        &["--background", "--persistent", "--slot", "2"],
    ))
    .trim()
    .to_string();
    assert!(second.ends_with("-2"), "{second}");
    let table = ok(&run(&["list", "--all"]));
    // The original's form: `NAME (ephemeral)` / `NAME (persistent)`.
    assert!(table.contains(&format!("{first} (ephemeral)")), "{table}");
    assert!(table.contains(&format!("{second} (persistent)")), "{table}");
    let all = json(&run(&["list", "--format=json"]));
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == first.as_str())
    );
    let both = json(&run(&["list", "--all", "--format=json"]));
    assert!(both["containers"].is_array() && both["sessions"].is_array());

    // Tmux automation on the running session.
    let listed = ok(&run(&["tmux", "list"]));
    assert!(listed.contains(&first), "{listed}");
    ok(&run(&[
        "tmux",
        "send",
        &first,
        "write a hello world script",
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = ok(&run(&["tmux", "capture", &first]));
        if screen.contains("HEARD[write a hello world script]") {
            break;
        }
        assert!(Instant::now() < deadline, "never heard: {screen}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Graceful shutdown with a timeout keeps the persistent one, stopped;
    // kill removes the other.
    ok(&run(&["shutdown", "--timeout=30", &second]));
    let (inst, _) = client().await.instance(&second).await.unwrap();
    assert_eq!(inst.status.as_str(), "Stopped");
    ok(&run(&["kill", &first]));
    assert!(client().await.instance(&first).await.is_err());
    ok(&run(&["kill", &second]));

    // Container management: launch (and an ephemeral one), lifecycle by
    // exit codes, mount, exec, capture.
    let my = unique_name("walk");
    let _mine = TestInstance {
        name: my.clone(),
        client: client().await,
    };
    ok(&run(&["container", "launch", &test_image(), &my]));
    let eph = unique_name("walk-eph");
    let _eph = TestInstance {
        name: eph.clone(),
        client: client().await,
    };
    ok(&run(&[
        "container",
        "launch",
        &test_image(),
        &eph,
        "--ephemeral",
    ]));
    assert_eq!(code(&["container", "stop", &eph]), Some(0));
    // An ephemeral container is gone once stopped.
    let deadline = Instant::now() + Duration::from_secs(15);
    while code(&["container", "exists", &eph]) == Some(0) {
        assert!(Instant::now() < deadline, "{eph} was kept");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&run(&["container", "stop", &my]));
    ok(&run(&["container", "start", &my]));
    ok(&run(&["container", "stop", &my, "--force"]));
    ok(&run(&["container", "start", &my]));
    let project = workspace();
    std::fs::write(project.path().join("package.json"), "{}\n").unwrap();
    std::os::unix::fs::chown(project.path().join("package.json"), Some(1000), Some(1000)).unwrap();
    let src = project.path().to_str().unwrap();
    ok(&run(&[
        "container",
        "mount",
        &my,
        "workspace",
        src,
        "/workspace",
        "--shift",
    ]));
    // cci maps the folder's owner (never a shifted mount, which would map
    // host root); a mapping takes effect when the container starts.
    ok(&run(&["container", "stop", &my]));
    ok(&run(&["container", "start", &my]));
    let listing = ok(&run(&[
        "container",
        "exec",
        &my,
        "--",
        "ls",
        "-la",
        "/workspace",
    ]));
    assert!(listing.contains("package.json"), "{listing}");
    let out = ok(&run(&[
        "container",
        "exec",
        &my,
        "--user",
        "1000",
        "--env",
        "FOO=bar",
        "--cwd",
        "/workspace",
        "--",
        "sh",
        "-c",
        "echo $FOO; stat -c %u package.json",
    ]));
    assert_eq!(out, "bar\n1000\n");
    let captured = json(&run(&[
        "container",
        "exec",
        &my,
        "--capture",
        "--",
        "echo",
        "hello",
    ]));
    assert_eq!(captured["stdout"], "hello\n");
    assert_eq!(captured["exit_code"], 0);
    let raw = ok(&run(&[
        "container",
        "exec",
        &my,
        "--capture",
        "--format=raw",
        "--",
        "pwd",
    ]));
    assert!(raw.ends_with('\n') && raw.starts_with('/'), "{raw:?}");
    assert_eq!(code(&["container", "exists", &my]), Some(0));
    assert_eq!(code(&["container", "running", &my]), Some(0));

    // File transfer, files and folders, both ways.
    let here = workspace();
    let cfg = here.path().join("config.json");
    std::fs::write(&cfg, "{\"a\": 1}\n").unwrap();
    let srcdir = here.path().join("src");
    std::fs::create_dir(&srcdir).unwrap();
    std::fs::write(srcdir.join("main.rs"), "fn main() {}\n").unwrap();
    ok(&run(&[
        "file",
        "push",
        cfg.to_str().unwrap(),
        &format!("{my}:/workspace/config.json"),
    ]));
    ok(&run(&[
        "file",
        "push",
        "-r",
        srcdir.to_str().unwrap(),
        &format!("{my}:/workspace/src"),
    ]));
    ok(&run(&[
        "container",
        "exec",
        &my,
        "--",
        "sh",
        "-c",
        "ls /workspace/src > /workspace/build.log",
    ]));
    let log = here.path().join("build.log");
    ok(&run(&[
        "file",
        "pull",
        &format!("{my}:/workspace/build.log"),
        log.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "main.rs\n");
    let saved = here.path().join("saved");
    ok(&run(&[
        "file",
        "pull",
        "-r",
        &format!("{my}:/workspace/src"),
        saved.to_str().unwrap(),
    ]));
    assert!(
        saved.join("main.rs").is_file() || saved.join("src/main.rs").is_file(),
        "{:?}",
        std::fs::read_dir(&saved).map(|d| d.count())
    );

    // Image management: list (filters, JSON), exists, cleanup.
    let images = ok(&run(&["image", "list", "--all"]));
    assert!(images.contains(&test_image()), "{images}");
    ok(&run(&["image", "list"]));
    let prefixed = ok(&run(&["image", "list", "--prefix", "cci-test-"]));
    assert!(prefixed.contains(&test_image()), "{prefixed}");
    let as_json = json(&run(&["image", "list", "--format", "json", "--all"]));
    assert!(as_json.is_array(), "{as_json}");
    assert_eq!(code(&["image", "exists", &test_image()]), Some(0));
    assert_eq!(
        code(&["image", "exists", "cci-test-no-such-image"]),
        Some(1)
    );
    let prefix = format!("{}-", unique_name("walk-img"));
    ok(&run(&["image", "cleanup", &prefix, "--keep", "3"]));

    // Container delete, plain and forced.
    ok(&run(&["container", "stop", &my, "--force"]));
    ok(&run(&["container", "delete", &my]));
    assert_eq!(code(&["container", "exists", &my]), Some(1));
    let other = unique_name("walk-del");
    let _other = TestInstance {
        name: other.clone(),
        client: client().await,
    };
    ok(&run(&["container", "launch", &test_image(), &other]));
    ok(&run(&["container", "delete", &other, "--force"]));
    assert_eq!(code(&["container", "exists", &other]), Some(1));

    // Session resume: the newest saved session of this workspace, and the
    // `--continue` alias (both end at once: the stand-in agent is left
    // running in the background).
    let resumed = ok(&session(ws.path(), &["--background", "--resume"]))
        .trim()
        .to_string();
    ok(&run(&["kill", &resumed]));
    let continued = ok(&session(ws.path(), &["--background", "--continue"]))
        .trim()
        .to_string();
    ok(&run(&["kill", &continued]));
}

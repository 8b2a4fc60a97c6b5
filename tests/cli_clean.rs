//! `cci clean`: removes ended sessions and interrupted launches, never a
//! running or persistent session and never a container cci did not make.
//! (Its own test binary: `clean --force` acts on every cci container, so it
//! must not run beside other tests' containers.)

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use cci::sandbox::{Kind, SandboxSpec, Slot, Workspace, container_name};
use common::{TestInstance, cci, client, containers_of, test_image, workspace};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shell_bg(ws: &Path, extra: &[&str]) -> String {
    let out = cci()
        .env("CCI_IMAGE", test_image())
        .args(["shell", "--background", "--debug", "--workspace"])
        .arg(ws)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn clean(args: &[&str]) -> Output {
    cci()
        .arg("clean")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_removes_only_ended_sessions_and_interrupted_launches() {
    let c = client().await;
    let ws = workspace();
    let running = shell_bg(ws.path(), &[]);
    let kept = shell_bg(ws.path(), &["--persistent"]);
    let out = cci()
        .args(["shutdown", "--timeout", "5", &kept])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // An ended session, as a poweroff inside leaves one when nobody is attached.
    let ended = shell_bg(ws.path(), &[]);
    c.stop_instance(&ended, None, true).await.unwrap();
    // A launch interrupted between create and start (its cci is gone).
    let spec = SandboxSpec {
        workspace: Workspace::resolve(ws.path()).unwrap(),
        image: test_image(),
        kind: Kind::Shell,
        persistent: false,
        nesting: false,
        marks: Vec::new(),
        network: Default::default(),
        extras: Default::default(),
        account: cci::config::current().account.clone(),
    };
    let half = container_name(&spec.workspace.id, Slot::new(9).unwrap());
    let mut req = spec.create_request(&half, Slot::new(9).unwrap(), "999999999-1-1");
    req.start = false;
    c.create_instance(&req).await.unwrap();
    // Not cci's, though its name starts like cci's.
    let foreign = TestInstance::create("clean", false).await;
    // The container of a cci build that was killed.
    let build = format!("cci-build-999999999-{}", std::process::id());
    let mut req =
        cci::incus::InstanceCreate::container(&build, &cci::incus::ImageRef::Alias(test_image()));
    req.config.insert("user.cci.kind".into(), "build".into());
    c.create_instance(&req).await.unwrap();

    let out = clean(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains(&format!("{ended}  Stopped  (session ended)")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("{half}  Stopped  (never started")),
        "{plan}"
    );
    let leftover = format!("{build}  Stopped  (leftover of an interrupted cci build)");
    assert!(plan.contains(&leftover), "{plan}");
    for name in [&running, &kept, &foreign.name] {
        assert!(
            !plan.contains(name.as_str()),
            "{name} would be cleaned: {plan}"
        );
    }

    // Off a terminal, only --force may destroy.
    let out = clean(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--force"));
    assert_eq!(containers_of(ws.path()).await.len(), 4);

    let out = clean(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut left = containers_of(ws.path()).await;
    left.sort();
    let mut want = vec![running.clone(), kept.clone()];
    want.sort();
    assert_eq!(left, want);
    assert!(c.instance(&foreign.name).await.is_ok());
    assert!(c.instance(&build).await.unwrap_err().is_not_found());

    let out = cci().arg("kill").args([&running, &kept]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// An Incus project of this test's own (sharing the default project's
/// images and profiles), so `clean --all --force` sees only its containers;
/// deleted on drop, after the containers declared later.
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::process::Command::new("incus")
            .args(["project", "delete", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_all_also_removes_kept_containers_and_saved_sessions() {
    let project = Project(format!("cci-test-cl{}", std::process::id()));
    let made = std::process::Command::new("incus")
        .args(["project", "create", &project.0])
        .args([
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=false",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let sessions = tempfile::tempdir().unwrap();
    let pc = cci::incus::Client::local()
        .unwrap()
        .with_project(Some(project.0.clone()));
    let in_project = |args: &[&str]| -> Output {
        cci()
            .env("CCI_INCUS_PROJECT", &project.0)
            .env("CCI_SESSIONS_DIR", sessions.path())
            .env("CCI_IMAGE", test_image())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |out: Output| -> String {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let guard = |name: &str| TestInstance {
        name: name.to_string(),
        client: pc.clone(),
    };
    let ws = workspace();
    let wsp = ws.path().to_str().unwrap();
    let kept = ok(in_project(&[
        "shell",
        "--background",
        "--debug",
        "--persistent",
        "-w",
        wsp,
    ]));
    let kept = kept.trim().to_string();
    let _g0 = guard(&kept);
    ok(in_project(&["shutdown", "--timeout", "5", &kept]));
    let names: Vec<String> = ["clstop", "clkept", "clrun"]
        .iter()
        .map(|t| common::unique_name(t))
        .collect();
    let _g: Vec<TestInstance> = names.iter().map(|n| guard(n)).collect();
    for n in &names {
        ok(in_project(&["container", "launch", &test_image(), n]));
    }
    let (stopped, kept_launched, running) = (&names[0], &names[1], &names[2]);
    ok(in_project(&["persist", kept_launched]));
    for n in [stopped, kept_launched] {
        ok(in_project(&["container", "stop", n, "--force"]));
    }
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("CLAUDE.md"), "notes\n").unwrap();
    let imported = ok(in_project(&[
        "session",
        "import",
        state.path().to_str().unwrap(),
        "--name",
        "cci-test-clean-all",
        "-w",
        wsp,
    ]));
    assert!(imported.contains("cci-test-clean-all"), "{imported}");

    let plan = ok(in_project(&["clean", "--dry-run"]));
    assert!(
        plan.contains(&format!("{stopped}  Stopped  (stopped launched container")),
        "{plan}"
    );
    for n in [&kept, kept_launched, running] {
        assert!(!plan.contains(n.as_str()), "{n} would be cleaned: {plan}");
    }
    let plan = ok(in_project(&["clean", "--all", "--dry-run"]));
    for n in [&kept, kept_launched] {
        assert!(
            plan.contains(&format!("{n}  Stopped  (stopped persistent container")),
            "{plan}"
        );
    }
    assert!(plan.contains("cci-test-clean-all"), "{plan}");
    assert!(!plan.contains(running.as_str()), "{plan}");

    ok(in_project(&["clean", "--all", "--force"]));
    for n in [&kept, stopped, kept_launched] {
        assert!(
            pc.instance(n).await.unwrap_err().is_not_found(),
            "{n} is left"
        );
    }
    assert_eq!(
        pc.instance(running).await.unwrap().0.status.as_str(),
        "Running"
    );
    let left = ok(in_project(&["session", "list"]));
    assert!(!left.contains("cci-test-clean-all"), "{left}");
    ok(in_project(&["kill", running]));
}

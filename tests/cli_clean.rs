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

//! A container `cci container launch` made is cci's: `list`, `info`,
//! `persist`, `shutdown` and `kill` manage it; a container cci did not make
//! stays untouched.

mod common;

use common::{TestInstance, client, test_image, unique_name};

use common::agent::text;
use common::{cci_ok as ok, run_cci as run};

/// `name`'s entry in `cci list --format json`, if listed.
fn listed(name: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&ok(&["list", "--format", "json"])).unwrap();
    v.as_array()?.iter().find(|c| c["name"] == name).cloned()
}

async fn launched(tag: &str, extra: &[&str]) -> TestInstance {
    let guard = TestInstance {
        name: unique_name(tag),
        client: client().await,
    };
    let image = test_image();
    let mut args = vec!["container", "launch", &image, &guard.name];
    args.extend_from_slice(extra);
    ok(&args);
    guard
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launched_container_is_listed_shown_kept_and_killed() {
    let c = client().await;
    let foreign = TestInstance::running("foreign").await;
    let inst = launched("launched", &["--ephemeral"]).await;
    let name = inst.name.as_str();

    let me = listed(name).expect("the launched container is listed");
    assert_eq!(me["kind"], "container", "{me}");
    assert_eq!(me["mode"], "ephemeral", "{me}");
    assert_eq!(
        (me["slot"].as_u64(), me["workspace"].as_str()),
        (Some(0), Some(""))
    );
    assert_eq!(me["image"], test_image().as_str());
    assert!(listed(&foreign.name).is_none(), "not cci's, not listed");
    let table = ok(&["list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{name} (ephemeral)")) && l.contains("container")),
        "{table}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", name, "--format", "json"])).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["state"].as_str()),
        (Some("container"), Some("Running"))
    );

    // Kept: persistent for cci, and no longer deleted by the daemon on stop.
    let out = ok(&["persist", name]);
    assert!(out.contains("is now persistent"), "{out}");
    assert_eq!(listed(name).unwrap()["mode"], "persistent");
    assert!(!c.instance(name).await.unwrap().0.ephemeral);
    let out = ok(&["shutdown", "--timeout", "5", name]);
    assert!(out.contains("stopped and kept"), "{out}");
    let (i, _) = c.instance(name).await.unwrap();
    assert_eq!(i.status.as_str(), "Stopped");

    let out = ok(&["kill", name]);
    assert!(out.contains(&format!("killed {name}")), "{out}");
    assert!(c.instance(name).await.unwrap_err().is_not_found());

    // A container cci did not make is refused by every command, and stays.
    for args in [
        &["kill", foreign.name.as_str()][..],
        &["shutdown", "--timeout", "5", &foreign.name],
        &["persist", &foreign.name],
        &["info", &foreign.name],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("not created by cci"),
            "{}",
            text(&out.stderr)
        );
    }
    let (i, _) = c.instance(&foreign.name).await.unwrap();
    assert_eq!(i.status.as_str(), "Running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launched_container_not_kept_is_deleted_by_shutdown() {
    let c = client().await;
    let inst = launched("launchedsd", &[]).await;
    let out = ok(&["shutdown", "--timeout", "5", &inst.name]);
    assert!(out.contains("(deleted)"), "{out}");
    assert!(c.instance(&inst.name).await.unwrap_err().is_not_found());
}

//! Instance lifecycle through the REST client, against the real daemon.

mod common;

use std::time::Duration;

use cci::incus::{Error, ImageRef, InstanceCreate};
use common::{TestInstance, client, test_image, unique_name};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn instance_lifecycle_create_start_freeze_update_stop_delete() {
    let inst = TestInstance::create("life", false).await;
    let c = &inst.client;

    let (i, etag) = c.instance(&inst.name).await.unwrap();
    assert_eq!(i.status.as_str(), "Stopped");
    assert!(etag.is_some(), "GET instance returns an ETag");

    let listed = c.instances("cci-test-life-", false).await.unwrap();
    assert!(listed.iter().any(|x| x.name == inst.name));
    assert!(listed.iter().all(|x| x.name.starts_with("cci-test-life-")));

    c.start_instance(&inst.name).await.unwrap();
    assert!(c.instance(&inst.name).await.unwrap().0.is_running());
    let with_state = c.instances(&inst.name, true).await.unwrap();
    assert!(with_state[0].state.as_ref().is_some_and(|s| s.pid > 0));

    c.freeze_instance(&inst.name).await.unwrap();
    assert_eq!(
        c.instance(&inst.name).await.unwrap().0.status.as_str(),
        "Frozen"
    );
    c.unfreeze_instance(&inst.name).await.unwrap();
    assert!(c.instance(&inst.name).await.unwrap().0.is_running());

    // Conditional update: the current ETag applies, a stale one is a conflict.
    let (_, etag) = c.instance(&inst.name).await.unwrap();
    c.update_instance(
        &inst.name,
        &json!({"config": {"user.cci-test": "one"}}),
        etag.as_deref(),
    )
    .await
    .unwrap();
    let (i, _) = c.instance(&inst.name).await.unwrap();
    assert_eq!(
        i.config.get("user.cci-test").map(String::as_str),
        Some("one")
    );
    let stale = c
        .update_instance(
            &inst.name,
            &json!({"config": {"user.cci-test": "two"}}),
            etag.as_deref(),
        )
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");

    // Deleting a running instance is refused with a typed error.
    let err = c.delete_instance(&inst.name).await.unwrap_err();
    assert!(
        matches!(err, Error::InstanceRunning(_) | Error::BadRequest(_)),
        "{err:?}"
    );

    c.restart_instance(&inst.name, true).await.unwrap();
    c.stop_instance(&inst.name, Some(Duration::from_secs(1)), true)
        .await
        .unwrap();
    assert_eq!(
        c.instance(&inst.name).await.unwrap().0.status.as_str(),
        "Stopped"
    );
    c.delete_instance(&inst.name).await.unwrap();
    assert!(c.instance(&inst.name).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_typed_with_the_daemons_words() {
    let c = client().await;

    let err = c.instance("cci-test-no-such-instance").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let missing_image = InstanceCreate::container(
        &unique_name("noimg"),
        &ImageRef::Alias("cci-test-no-such-image".into()),
    );
    let err = c.create_instance(&missing_image).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let bad = InstanceCreate::container("bad_name!", &ImageRef::Alias(test_image()));
    let err = c.create_instance(&bad).await.unwrap_err();
    assert!(
        matches!(err, Error::BadRequest(ref m) if m.to_lowercase().contains("name")),
        "{err:?}"
    );

    let inst = TestInstance::create("dup", false).await;
    let dup = InstanceCreate::container(&inst.name, &ImageRef::Alias(test_image()));
    let err = c.create_instance(&dup).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_report_instance_lifecycle() {
    let c = client().await;
    let mut events = c.events(&["lifecycle"]).await.unwrap();
    let inst = TestInstance::create("events", false).await;
    let want = format!("/1.0/instances/{}", inst.name);
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.action() == Some("instance-created") && ev.source() == Some(want.as_str()) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "an instance-created event for {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_storage_and_networks_for_setup_checks() {
    use cci::incus::profiles::Profile;
    let c = client().await;
    assert!(!c.storage_pools().await.unwrap().is_empty());
    let nets = c.networks().await.unwrap();
    let bridge = nets
        .iter()
        .find(|n| n.managed && n.kind == "bridge")
        .unwrap();
    assert_eq!(c.network(&bridge.name).await.unwrap().name, bridge.name);
    let pool = &c.storage_pools().await.unwrap()[0];
    assert_eq!(
        c.storage_pool(&pool.name).await.unwrap().driver,
        pool.driver
    );

    let name = unique_name("prof");
    let mut p = Profile {
        name: name.clone(),
        description: "test".into(),
        ..Default::default()
    };
    p.config.insert("limits.processes".into(), "500".into());
    c.create_profile(&p).await.unwrap();
    assert!(c.create_profile(&p).await.unwrap_err().is_conflict());
    let (got, etag) = c.profile(&name).await.unwrap();
    assert_eq!(
        got.config.get("limits.processes").map(String::as_str),
        Some("500")
    );
    p.config.insert("limits.processes".into(), "600".into());
    c.update_profile(&p, etag.as_deref()).await.unwrap();
    assert_eq!(
        c.profile(&name).await.unwrap().0.config["limits.processes"],
        "600"
    );
    assert!(c.profiles().await.unwrap().iter().any(|x| x.name == name));
    c.delete_profile(&name).await.unwrap();
    assert!(c.profile(&name).await.unwrap_err().is_not_found());
}

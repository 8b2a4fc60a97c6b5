//! `cci build custom` and `cci image ...` against the real daemon.

mod common;

use std::process::{Output, Stdio};

use common::{TestImage, cci, client, test_image, unique_name};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cci_out(args: &[&str]) -> Output {
    cci().args(args).stdin(Stdio::null()).output().unwrap()
}

/// The build containers of image `alias`.
async fn build_containers(alias: &str) -> Vec<String> {
    let c = client().await;
    c.instances("cci-build-", false)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.config.get("user.cci.build").map(String::as_str) == Some(alias))
        .map(|i| i.name)
        .collect()
}

/// `cci build custom NAME --script SCRIPT --base BASE`.
fn build_custom(name: &str, script: &std::path::Path, base: &str) -> Output {
    let script = script.to_str().unwrap();
    cci_out(&["build", "custom", name, "--script", script, "--base", base])
}

fn script(body: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_image_carries_the_scripts_work_and_skips_when_built() {
    let c = client().await;
    let name = unique_name("img");
    let s = script("set -e\necho 'made by the script' > /opt/cci-test-marker\necho done\n");
    let path = s.path().to_str().unwrap();
    let base = test_image();
    let out = cci_out(&["build", "custom", &name, "--script", path, "--base", &base]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["alias"].as_str(), v["skipped"].as_bool()),
        (Some(name.as_str()), Some(false))
    );
    let fingerprint = v["fingerprint"].as_str().unwrap().to_string();
    let _image = TestImage {
        fingerprint: fingerprint.clone(),
        client: c.clone(),
    };
    assert_eq!(c.image_alias(&name).await.unwrap().target, fingerprint);

    // Its effect is visible in a container made from it.
    let inst = common::TestInstance::from_image("imgrun", &name).await;
    let out = cci_out(&[
        "container",
        "exec",
        &inst.name,
        "--capture",
        "--format",
        "raw",
        "--",
        "cat",
        "/opt/cci-test-marker",
    ]);
    assert_eq!(
        text(&out.stdout),
        "made by the script\n",
        "{}",
        text(&out.stderr)
    );

    // Built already: skipped unless --force.
    let out = cci_out(&["build", "custom", &name, "--script", path, "--base", &base]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped"], true);
    assert_eq!(v["fingerprint"], fingerprint.as_str());
    assert!(build_containers(&name).await.is_empty());

    assert_eq!(cci_out(&["image", "exists", &name]).status.code(), Some(0));
    let out = cci_out(&["image", "list", "--prefix", &name, "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["fingerprint"], fingerprint.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_script_leaves_no_container_and_no_alias() {
    let name = unique_name("imgfail");
    let s = script("echo about to fail; exit 7\n");
    let out = build_custom(&name, s.path(), &test_image());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("exit status 7") && err.contains(".log"),
        "{err}"
    );
    // The log named in the error holds the script's output.
    let log = err.rsplit("output is in ").next().unwrap().trim();
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("about to fail")
    );
    assert_eq!(cci_out(&["image", "exists", &name]).status.code(), Some(1));
    assert_eq!(build_containers(&name).await, Vec::<String>::new());

    // Bad input: a missing base, a missing script.
    let out = build_custom(&name, s.path(), "cci-test-no-such-base");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("base image"));
    let out = cci_out(&[
        "build",
        "custom",
        &name,
        "--script",
        "/no/such/script",
        "--base",
        &test_image(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_delete_and_cleanup_keeps_the_newest_and_the_current() {
    let c = client().await;
    let inst = common::TestInstance::create("imgpub", false).await;
    let prefix = unique_name("ver");
    // Three versions, oldest first, and the plain alias on the oldest.
    let stamps = ["20260101-000000", "20260201-000000", "20260301-000000"];
    let mut fingerprints = Vec::new();
    for stamp in stamps {
        let alias = format!("{prefix}-{stamp}");
        let out = cci_out(&[
            "image",
            "publish",
            &inst.name,
            &alias,
            "--description",
            "cci test",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        fingerprints.push(c.image_alias(&alias).await.unwrap().target);
    }
    let _guards: Vec<TestImage> = fingerprints
        .iter()
        .map(|f| TestImage {
            fingerprint: f.clone(),
            client: c.clone(),
        })
        .collect();
    c.create_image_alias(&prefix, &fingerprints[0], "")
        .await
        .unwrap();

    let out = cci_out(&["image", "cleanup", &prefix, "--keep", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let exists = |stamp: &str| {
        cci_out(&["image", "exists", &format!("{prefix}-{stamp}")])
            .status
            .code()
    };
    assert_eq!(exists(stamps[2]), Some(0), "the newest is kept");
    assert_eq!(exists(stamps[1]), Some(1), "an old one goes");
    assert_eq!(
        exists(stamps[0]),
        Some(0),
        "the one `{prefix}` points to stays"
    );

    let out = cci_out(&["image", "delete", &prefix]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        cci_out(&["image", "exists", &prefix]).status.code(),
        Some(1)
    );
    assert_eq!(
        cci_out(&["image", "delete", "cci-test-no-such-alias"])
            .status
            .code(),
        Some(5)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_build_makes_the_agent_image() {
    let c = client().await;
    let alias = unique_name("full");
    // First use: a session whose image does not exist yet builds it (the
    // default build, from the base CCI_BUILD_BASE names), then starts.
    let ws = common::workspace();
    let out = cci()
        .env("CCI_IMAGE", &alias)
        .env("CCI_BUILD_BASE", test_image())
        .args(["shell", "--background", "--debug", "-w"])
        .arg(ws.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let session = text(&out.stdout).trim().to_string();
    assert!(
        text(&out.stderr).contains("building it first"),
        "{}",
        text(&out.stderr)
    );
    let fingerprint = c.image_alias(&alias).await.unwrap().target;
    let _image = TestImage {
        fingerprint: fingerprint.clone(),
        client: c.clone(),
    };
    assert_eq!(cci_out(&["kill", &session]).status.code(), Some(0));
    // Published under a timestamped version too, which the alias points at.
    let listed = cci_out(&["image", "list", "--prefix", &alias, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let aliases = v[0]["aliases"].as_array().unwrap();
    assert_eq!(aliases.len(), 2, "{aliases:?}");
    assert!(build_containers(&alias).await.is_empty());
    // `cci build` now has nothing to do.
    let out = cci_out(&["build", "--base", &test_image(), "--alias", &alias]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("exists"),
        "{}",
        text(&out.stdout)
    );

    // What sessions need is in it.
    let out = cci()
        .env("CCI_IMAGE", &alias)
        .arg("run")
        .arg("--workspace")
        .arg(ws.path())
        .args(["--", "sh", "-c"])
        .arg("for c in claude tmux git python3 node docker sudo poweroff; do command -v $c >/dev/null || echo missing $c; done; test -s \"$NODE_EXTRA_CA_CERTS\" || echo no-ca-bundle; claude --version >/dev/null && id -un && getent group docker | grep -c code && test -d ~/.claude && echo ok")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "code\n1\nok\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn debootstrap_base_is_built_locally_once_and_reused() {
    let c = client().await;
    let s = script("test -d /home/code && systemctl --version >/dev/null\n");
    // The first build on a machine makes `cci-base-bookworm` with debootstrap
    // (kept, as for users); the next one reuses it.
    for round in 0..2 {
        let name = unique_name("dbs");
        let out = build_custom(&name, s.path(), "debootstrap:bookworm");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let _image = TestImage {
            fingerprint: c.image_alias(&name).await.unwrap().target,
            client: c.clone(),
        };
        if round == 1 {
            let err = text(&out.stderr);
            assert!(
                err.contains("using the local base cci-base-bookworm"),
                "{err}"
            );
        }
    }
    let out = build_custom(&unique_name("dbs"), s.path(), "debootstrap:Bad Suite");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_base_that_cannot_be_reached_fails_clearly_and_leaves_nothing() {
    // This machine cannot reach images.linuxcontainers.org (no packet goes
    // further than its DNS lookup).
    let name = unique_name("remote");
    let s = script("true\n");
    let started = std::time::Instant::now();
    let out = build_custom(&name, s.path(), "images:debian/12");
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("images.linuxcontainers.org") && err.contains("debootstrap:bookworm"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(build_containers(&name).await.is_empty());
    assert!(client().await.image_alias(&name).await.is_err());
}

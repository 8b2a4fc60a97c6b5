//! Behaviours of the original tool cci lacked: `image cleanup` with the
//! original's dashed prefix and no `--keep 0`, `container mount` mapping the
//! folder's owner to `code`, `run --persistent`, `info` without a name.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{
    TestImage, TestInstance, cci, client, containers_of, test_image, unique_name, workspace,
};

use common::agent::text;
use common::{cci_ok as ok, run_cci as run};

#[tokio::test(flavor = "multi_thread")]
async fn image_cleanup_takes_the_originals_dashed_prefix_and_never_keep_0() {
    let c = client().await;
    let inst = TestInstance::create("imgclean", false).await;
    let prefix = unique_name("ver");
    let stamps = ["20260101-000000", "20260201-000000"];
    let mut guards = Vec::new();
    for stamp in stamps {
        let alias = format!("{prefix}-{stamp}");
        ok(&["image", "publish", &inst.name, &alias]);
        guards.push(TestImage {
            fingerprint: c.image_alias(&alias).await.unwrap().target,
            client: c.clone(),
        });
    }
    let exists = |stamp: &str| {
        run(&["image", "exists", &format!("{prefix}-{stamp}")])
            .status
            .code()
    };

    let out = run(&["image", "cleanup", &format!("{prefix}-"), "--keep", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("at least 1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!((exists(stamps[0]), exists(stamps[1])), (Some(0), Some(0)));

    let out = ok(&["image", "cleanup", &format!("{prefix}-"), "--keep", "1"]);
    assert!(
        out.contains(&format!("deleted {prefix}-{}", stamps[0])),
        "{out}"
    );
    assert_eq!((exists(stamps[0]), exists(stamps[1])), (Some(1), Some(0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn container_mount_maps_the_folders_owner_to_code_and_never_root() {
    let c = client().await;
    let inst = TestInstance {
        name: unique_name("mount"),
        client: c.clone(),
    };
    let name = inst.name.as_str();
    ok(&["container", "launch", &test_image(), name]);
    let dir = workspace(); // owned by 1000:1000
    std::fs::write(dir.path().join("mine.txt"), "from the host\n").unwrap();
    std::os::unix::fs::chown(dir.path().join("mine.txt"), Some(1000), Some(1000)).unwrap();
    let src = dir.path().to_str().unwrap();

    // Root's folder: refused, nothing added.
    let rooted = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(rooted.path(), Some(0), Some(0)).unwrap();
    let rsrc = rooted.path().to_str().unwrap();
    let out = run(&["container", "mount", name, "r", rsrc, "/mnt/r"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("owned by root"),
        "{}",
        text(&out.stderr)
    );
    assert!(!c.instance(name).await.unwrap().0.devices.contains_key("r"));

    let out = run(&["container", "mount", name, "data", src, "/mnt/data"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("appear as code"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("starts again"),
        "{}",
        text(&out.stderr)
    );
    let (i, _) = c.instance(name).await.unwrap();
    assert_eq!(i.config["raw.idmap"], "uid 1000 1000\ngid 1000 1000");
    assert!(
        !i.devices["data"].contains_key("shift"),
        "no shifted device"
    );
    // Without the mapping (opted out), root's folder may be mounted as is.
    ok(&[
        "container",
        "mount",
        name,
        "r",
        rsrc,
        "/mnt/r",
        "--shift=false",
        "--readonly",
    ]);

    ok(&["container", "stop", name, "--force"]);
    ok(&["container", "start", name]);
    let out = ok(&[
        "container",
        "exec",
        name,
        "--capture",
        "--format",
        "raw",
        "--",
        "sh",
        "-c",
        "stat -c '%u %g' /mnt/data/mine.txt /mnt/r; touch /mnt/data/by-root; su -s /bin/sh -c 'touch /mnt/data/by-code' \"$(id -nu 1000)\"",
    ]);
    assert_eq!(out, "1000 1000\n65534 65534\n");
    let by_code = std::fs::metadata(dir.path().join("by-code")).unwrap();
    assert_eq!((by_code.uid(), by_code.gid()), (1000, 1000));
    let by_root = std::fs::metadata(dir.path().join("by-root")).unwrap();
    assert!(
        by_root.uid() >= 100_000,
        "container root wrote as host {}",
        by_root.uid()
    );

    // A folder of another owner cannot appear as code too.
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(other.path(), Some(1001), Some(1001)).unwrap();
    let out = run(&[
        "container",
        "mount",
        name,
        "o",
        other.path().to_str().unwrap(),
        "/mnt/o",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_persistent_keeps_the_container_and_info_shows_the_newest() {
    let ws = workspace();
    let out = run(&["info", "-w", ws.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "nothing there yet: {}",
        text(&out.stderr)
    );

    let out = cci()
        .args(["run", "--persistent", "--image", &test_image(), "-w"])
        .arg(ws.path())
        .args(["sh", "-c", "touch /home/code/kept-mark"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left = containers_of(ws.path()).await;
    assert_eq!(left.len(), 1, "{left:?}");
    let name = left[0].clone();
    let _guard = TestInstance {
        name: name.clone(),
        client: client().await,
    };
    assert!(
        text(&out.stderr).contains(&format!("kept {name}")),
        "{}",
        text(&out.stderr)
    );

    // `cci info` in the workspace, without a name: that container.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "-w",
        ws.path().to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["name"], name.as_str());
    assert_eq!(
        (v["state"].as_str(), v["mode"].as_str()),
        (Some("Stopped"), Some("persistent"))
    );
    assert_eq!(v["kind"], "run");
    assert!(ok(&["list"]).contains(&format!("{name} (persistent)")));
    // Kept by clean; what the command left is still there.
    assert!(!ok(&["clean", "--dry-run"]).contains(&name));
    ok(&["container", "start", &name]);
    ok(&[
        "container",
        "exec",
        &name,
        "test",
        "-e",
        "/home/code/kept-mark",
    ]);
    ok(&["kill", &name]);
}

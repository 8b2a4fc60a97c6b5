//! Run containers whose `cci run` is gone: removed by the next command and
//! by the network watcher. A test binary of its own: any launch reaps such
//! containers, so a concurrent test's `cci run` would remove the orphans
//! before this test's positive control has looked at them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cci, client, containers_of, test_image, workspace};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_run_container_whose_cci_is_gone_is_removed_by_the_next_command() {
    // Runs whose cci is killed outright (SIGKILL: it cannot stop its
    // container), so their containers run on.
    let orphans = |wss: &[&Path]| {
        let mut children: Vec<_> = wss
            .iter()
            .map(|ws| {
                run_in(ws)
                    .args(["--", "sh", "-c", "echo up; sleep 300"])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in &mut children {
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "up");
        }
        for mut child in children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    };
    let running = |ws: PathBuf| async move {
        let c = client().await;
        let mut up = Vec::new();
        for n in containers_of(&ws).await {
            if let Ok((i, _)) = c.instance(&n).await
                && i.status.as_str() == "Running"
            {
                up.push(n);
            }
        }
        up
    };
    let (one, two, other) = (workspace(), workspace(), workspace());
    orphans(&[one.path(), two.path()]);
    // Positive control: their cci is gone, they run on.
    assert_eq!(running(one.path().into()).await.len(), 1);
    assert_eq!(running(two.path().into()).await.len(), 1);

    // `cci list` removes them (before it answers), and does not list them.
    let out = cci().args(["list", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(containers_of(one.path()).await, Vec::<String>::new());
    assert_eq!(containers_of(two.path()).await, Vec::<String>::new());

    // So does the next launch, in any workspace.
    orphans(&[one.path()]);
    assert_eq!(running(one.path().into()).await.len(), 1);
    let out = run_in(other.path()).args(["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(containers_of(one.path()).await, Vec::<String>::new());

    // With no command after it, the network watcher (it runs while a
    // guarded container exists, as this one is) removes it after its grace.
    orphans(&[two.path()]);
    assert_eq!(running(two.path().into()).await.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_of(two.path()).await.is_empty() {
        assert!(Instant::now() < deadline, "the watcher left it");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

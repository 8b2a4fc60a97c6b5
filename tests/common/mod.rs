//! Shared helpers for integration tests against the real Incus daemon.
//!
//! Tests never skip: without a daemon they fail, saying how to start one
//! (`tests/run.sh` sets everything up). Every instance a test creates is named
//! `cci-test-...` and removed when its guard drops, even when the test fails.

#![allow(dead_code)]

pub mod agent;
pub mod lines;
pub mod net;
pub mod pty;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use cci::incus::{Client, ImageRef, InstanceCreate};

/// The image integration tests launch (built by `tests/setup-incus.sh`).
pub fn test_image() -> String {
    std::env::var("CCI_TEST_IMAGE").unwrap_or_else(|_| "cci-test-base".into())
}

/// A client for the local daemon; panics with instructions when it is not there.
pub async fn client() -> Client {
    let client = Client::local().expect("building the Incus client");
    if let Err(e) = client.server().await {
        panic!("integration tests need a running Incus daemon (run `bash tests/run.sh`): {e}");
    }
    client
}

/// A name no other test (or test run) uses: `cci-test-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cci-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An instance that is force-deleted when this guard drops.
pub struct TestInstance {
    /// Its name.
    pub name: String,
    /// A client to reach it.
    pub client: Client,
}

impl TestInstance {
    /// Create (and start, when `start`) a container from the test image.
    pub async fn create(tag: &str, start: bool) -> TestInstance {
        Self::from(tag, &test_image(), start).await
    }

    /// A running container from the test image.
    pub async fn running(tag: &str) -> TestInstance {
        Self::create(tag, true).await
    }

    /// A running container from image `alias`.
    pub async fn from_image(tag: &str, alias: &str) -> TestInstance {
        Self::from(tag, alias, true).await
    }

    async fn from(tag: &str, alias: &str, start: bool) -> TestInstance {
        let client = client().await;
        let name = unique_name(tag);
        let guard = TestInstance {
            name: name.clone(),
            client: client.clone(),
        };
        let mut spec = InstanceCreate::container(&name, &ImageRef::Alias(alias.into()));
        spec.start = start;
        client
            .create_instance(&spec)
            .await
            .unwrap_or_else(|e| panic!("creating {name} from {alias}: {e}"));
        guard
    }
}

/// `client` with the host's nft and the configuration in force, as the CLI
/// makes them.
pub fn host(client: Client) -> cci::host::Host {
    cci::host::Host::new(
        client,
        cci::network::Nft::from_env(),
        cci::config::current(),
    )
}

impl Drop for TestInstance {
    fn drop(&mut self) {
        let (name, client) = (self.name.clone(), self.client.clone());
        block_on_thread(async move {
            let _ = cci::sandbox::remove(&host(client), &name).await;
        });
    }
}

/// Run `f` to completion from synchronous code (a `Drop`), on a thread with
/// its own runtime so it works inside and outside a test's runtime.
pub fn block_on_thread(f: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(f);
    })
    .join();
}

/// The `cci` binary built for these tests.
pub fn cci_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cci"))
}

/// A `cci` command with a clean environment for the daemon's socket.
pub fn cci() -> Command {
    let mut cmd = Command::new(cci_bin());
    cmd.env_remove("INCUS_SOCKET").env_remove("INCUS_DIR");
    // Saved sessions of every test go here, not into the real ~/.cci.
    cmd.env("CCI_SESSIONS_DIR", sessions_dir());
    cmd
}

/// Where the tests' `cci` keeps saved sessions.
pub fn sessions_dir() -> PathBuf {
    std::env::temp_dir().join("cci-test-sessions")
}

/// An image (by fingerprint) deleted when this guard drops.
pub struct TestImage {
    /// Its fingerprint.
    pub fingerprint: String,
    /// A client to reach it.
    pub client: Client,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let (fingerprint, client) = (self.fingerprint.clone(), self.client.clone());
        block_on_thread(async move {
            let _ = client.delete_image(&fingerprint).await;
        });
    }
}

/// A workspace owned by uid 1000 whose name a shell would misread.
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ws with space ' \" ; $(touch x) ü\n-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The cci containers of the workspace at `ws`, by name.
pub async fn containers_of(ws: &Path) -> Vec<String> {
    let canonical = std::fs::canonicalize(ws).unwrap();
    let c = client().await;
    c.instances("cci-", false)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.config.get("user.cci.workspace").map(String::as_str) == canonical.to_str())
        .map(|i| i.name)
        .collect()
}

/// The cci containers of `ws` once the daemon has finished deleting them:
/// `cci run` leaves the stop and delete of its ephemeral container to the
/// daemon, so wait (up to 15 s) for them to go; returns what is left.
pub async fn containers_left(ws: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let left = containers_of(ws).await;
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A hostile-named workspace holding the stand-in agent
/// (`tests/fixtures/fake-agent`) at `.fake-agent`, i.e. `/workspace/.fake-agent`.
pub fn agent_workspace() -> tempfile::TempDir {
    let ws = workspace();
    let agent = ws.path().join(".fake-agent");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent"),
        &agent,
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws
}

/// `cci ARGS`, its output.
pub fn run_cci(args: &[&str]) -> std::process::Output {
    cci().args(args).output().unwrap()
}

/// `cci ARGS`, which must succeed (its stderr shown when not); its stdout.
pub fn cci_ok(args: &[&str]) -> String {
    let out = run_cci(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

//! `cci run`: one command in a fresh sandbox that is always deleted after.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::launch::{Attempt, LaunchError, launch, remove};
use super::names::Slot;
use super::spec::{CODE_GID, CODE_HOME, CODE_UID, SandboxSpec, WORKSPACE_MOUNT};
use crate::container::ExecSpec;
use crate::incus::{self, Client, ExecRequest};

/// What to run, where.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The container to make.
    pub spec: SandboxSpec,
    /// A fixed slot, or the lowest free one.
    pub slot: Option<Slot>,
    /// The workspace's slot limit.
    pub slot_limit: u32,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Give up (and delete the container) after this long.
    pub timeout: Option<Duration>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with this code.
    Exited(i32),
    /// The timeout passed first.
    TimedOut,
    /// The caller's interrupt fired first (e.g. Ctrl-C), with this signal number.
    Interrupted(i32),
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The container used (deleted by now).
    pub container: String,
    /// How it ended.
    pub ending: Ending,
    /// Launch to end of command.
    pub duration: Duration,
}

/// The environment agents and commands get: who they are, where, and that they
/// are sandboxed; `extra` pairs last, so they win.
pub fn sandbox_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HOME", CODE_HOME),
        ("USER", "code"),
        ("LOGNAME", "code"),
        ("IS_SANDBOX", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".into(), crate::terminal::sanitize_term(&term).into()));
    }
    env.extend(extra.iter().cloned());
    env
}

/// Launch, run the command as `code` in `/workspace` with `stdin`/`stdout`/
/// `stderr` attached, and delete the container however the run ends: exit,
/// timeout, `interrupt`, or an error.
pub async fn run<I, O, E>(
    client: &Client,
    req: &RunRequest,
    stdin: Option<I>,
    stdout: O,
    stderr: E,
    interrupt: impl Future<Output = i32>,
) -> Result<RunOutcome, LaunchError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let attempt = Attempt::default();
    tokio::pin!(interrupt);
    let launched = tokio::select! {
        r = launch(client, &req.spec, req.slot, req.slot_limit, &attempt) => r?,
        signal = &mut interrupt => {
            attempt.abandon(client).await;
            return Ok(RunOutcome { container: String::new(), ending: Ending::Interrupted(signal), duration: start.elapsed() });
        }
    };
    let exec = ExecSpec {
        command: req.command.clone(),
        user: CODE_UID,
        group: CODE_GID,
        cwd: WORKSPACE_MOUNT.into(),
        env: sandbox_env(&req.env),
    }
    .request();
    let timeout = async {
        match req.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        r = exec_once(client, &launched.name, &exec, stdin, stdout, stderr) => r.map(Ending::Exited),
        _ = timeout => Ok(Ending::TimedOut),
        signal = &mut interrupt => Ok(Ending::Interrupted(signal)),
    };
    let duration = start.elapsed();
    let removed = remove(client, &launched.name).await;
    let ending = ending?;
    removed?;
    Ok(RunOutcome {
        container: launched.name,
        ending,
        duration,
    })
}

/// Run the command, retrying when the daemon failed to attach it to the
/// container (it says "Failed to retrieve PID of executing child process";
/// seen on a busy host right after a start) and no input was consumed yet, so
/// the command runs exactly once with all of its input.
async fn exec_once<I, O, E>(
    client: &Client,
    name: &str,
    exec: &ExecRequest,
    stdin: Option<I>,
    mut stdout: O,
    mut stderr: E,
) -> incus::Result<i32>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut stdin = stdin.map(Counted::new);
    let mut tries = 0u64;
    loop {
        let r = client
            .exec(name, exec, stdin.as_mut(), &mut stdout, &mut stderr)
            .await;
        match r {
            Err(e)
                if is_attach_failure(&e)
                    && tries < 10
                    && stdin.as_ref().is_none_or(|s| s.read == 0) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            r => return r,
        }
    }
}

fn is_attach_failure(e: &incus::Error) -> bool {
    matches!(e, incus::Error::Daemon { message, .. } if message.contains("Failed to retrieve PID"))
}

/// A reader that counts what it has handed out.
struct Counted<I> {
    inner: I,
    read: u64,
}

impl<I> Counted<I> {
    fn new(inner: I) -> Self {
        Counted { inner, read: 0 }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

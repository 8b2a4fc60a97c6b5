//! `cci run`: one command in a fresh sandbox that is always deleted after.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::launch::{Attempt, LaunchError, launch, remove};
use super::names::Slot;
use super::spec::{CODE_GID, CODE_HOME, CODE_UID, SandboxSpec, WORKSPACE_MOUNT};
use crate::container::ExecSpec;
use crate::incus::{Client, ExecRequest};

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
    // The daemon sometimes loses track of the first commands run in a
    // container that has just booted, and the user's command must run
    // exactly once: a harmless probe goes first (and is repeated if need be).
    let probe = ExecRequest::new(&["true"]).repeatable();
    let probed = client
        .exec(
            &launched.name,
            &probe,
            None::<tokio::io::Empty>,
            tokio::io::sink(),
            tokio::io::sink(),
        )
        .await;
    if let Err(e) = probed {
        let _ = remove(client, &launched.name).await;
        return Err(e.into());
    }
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
        r = client.exec(&launched.name, &exec, stdin, stdout, stderr) => r.map(Ending::Exited),
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

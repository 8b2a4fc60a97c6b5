//! `cci run`: one command in a fresh sandbox that is always deleted after.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::launch::{Attempt, LaunchError, launch, remove};
use super::names::Slot;
use super::spec::{CODE_GID, CODE_HOME, CODE_UID, SandboxSpec, WORKSPACE_MOUNT};
use crate::container::ExecSpec;
use crate::incus::{self, Client, CountingReader, ExecRequest};

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
        command: once_guarded(&req.command),
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

/// Exit status of [`ONCE_GUARD`] when the command already ran.
const ALREADY_RAN: i32 = 250;

/// Runs `"$@"` only if its marker folder (`$0`) did not exist yet, so a
/// command started twice runs once.
const ONCE_GUARD: &str = r#"mkdir "$0" 2>/dev/null || exit 250; exec "$@""#;

/// `command` wrapped in [`ONCE_GUARD`] with a marker unique to this run.
fn once_guarded(command: &[String]) -> Vec<String> {
    let marker = format!("{CODE_HOME}/.cci-run-{}", uuid::Uuid::new_v4());
    let mut argv = vec!["sh".into(), "-c".into(), ONCE_GUARD.into(), marker];
    argv.extend(command.iter().cloned());
    argv
}

/// Run the guarded command. When the daemon loses track of it ("Failed to
/// retrieve PID", seen on busy hosts; the command may or may not have run)
/// and no input was consumed, start it again: the guard makes sure it runs
/// once. When the guard says the first start did run it, its exit code is lost.
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
    let mut stdin = stdin.map(CountingReader::new);
    let mut tries = 0u64;
    loop {
        let r = client
            .exec(name, exec, stdin.as_mut(), &mut stdout, &mut stderr)
            .await;
        match r {
            Err(e)
                if e.is_attach_failure()
                    && tries < 10
                    && stdin.as_ref().is_none_or(|s| s.consumed() == 0) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Ok(ALREADY_RAN) if tries > 0 => {
                return Err(incus::Error::Daemon {
                    status: 500,
                    message: "the Incus daemon lost track of the command after starting it (\"Failed to retrieve PID of executing child process\"); it ran, but its exit code is unknown".into(),
                });
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_passes_the_command_as_arguments() {
        let argv = once_guarded(&["echo".into(), "a b; $(x)".into()]);
        assert_eq!(argv[..3], ["sh", "-c", ONCE_GUARD]);
        assert!(argv[3].starts_with("/home/code/.cci-run-"));
        assert_eq!(argv[4..], ["echo", "a b; $(x)"]);
    }
}

//! `cci run`: one command in a fresh sandbox that is always deleted after.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::Error;
use super::launch::{Attempt, launch};
use super::mounts::WORKSPACE_MOUNT;
use super::names::Slot;
use super::spec::SandboxSpec;
use super::teardown::{remove, stop};
use crate::config::Account;
use crate::container::ExecSpec;
use crate::host::Host;
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
    /// An isolated git session: the repository cloned in, commits back.
    pub git: Option<std::sync::Arc<super::isolated::Start>>,
    /// The command is this agent working on a prompt as session `id`
    /// (`cci run --prompt`): its credentials and settings go in first, its
    /// state is saved after (marks [`keys::AGENT`](super::spec::keys) and
    /// `SESSION` on the container say which).
    pub agent: Option<super::agent::Agent>,
    /// List the workspace files the command changed.
    pub list_changes: bool,
}

/// What became of an isolated run's commits.
#[derive(Debug, Clone)]
pub struct GitOutcome {
    /// The session.
    pub record: crate::git::SessionRecord,
    /// Brought to the host (`None`: no new commits), or why not (the
    /// container is then kept, stopped, with them).
    pub received: Result<Option<crate::git::Received>, String>,
    /// `--auto-merge`: what the merge did, or why it did not.
    pub merged: Option<Result<String, String>>,
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
    /// Workspace files the host runs or obeys that the command changed.
    pub changed: Vec<String>,
    /// An isolated run's commits, per repository.
    pub git: Vec<GitOutcome>,
    /// An agent run's saved state.
    pub state: Option<super::saving::StateSave>,
    /// The workspace files added, changed or removed (when asked, and the
    /// workspace was not too big to walk).
    pub files_changed: Option<Vec<String>>,
    /// A copied folder (a remote server): whether it came back for review.
    pub copied: Option<Result<(), String>>,
}

/// The environment agents and commands get: who they are (`a`), where, and
/// that they are sandboxed; `extra` pairs last, so they win.
pub fn sandbox_env(a: &Account, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HOME", a.home.as_str()),
        ("USER", a.name.as_str()),
        ("LOGNAME", a.name.as_str()),
        ("IS_SANDBOX", "1"),
        // Node (Claude Code) trusts the system's certificate authorities too,
        // including those the build added from the host.
        ("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
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
    host: &Host,
    req: &RunRequest,
    stdin: Option<I>,
    stdout: O,
    stderr: E,
    interrupt: impl Future<Output = i32>,
) -> Result<RunOutcome, Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let client = &host.client;
    let account = &req.spec.account;
    let start = Instant::now();
    let attempt = Attempt::default();
    let ws = std::path::Path::new(req.spec.workspace.path_str());
    let before = super::tripwire::fingerprint(ws);
    let files_before = if req.list_changes {
        super::changes::snapshot(ws)
    } else {
        None
    };
    tokio::pin!(interrupt);
    let launched = tokio::select! {
        r = launch(host, &req.spec, req.slot, req.slot_limit, &attempt) => r?,
        signal = &mut interrupt => {
            attempt.abandon(host).await;
            return Ok(RunOutcome { container: String::new(), ending: Ending::Interrupted(signal), duration: start.elapsed(), changed: Vec::new(), git: Vec::new(), state: None, files_changed: None, copied: None });
        }
    };
    let records = match &req.git {
        Some(g) => {
            match super::isolated::begin(client, &launched.name, launched.slot.get(), account, g)
                .await
            {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = dispose(host, &launched.name).await;
                    return Err(Error::Isolated(e));
                }
            }
        }
        None => None,
    };
    if req.spec.extras.copy
        && let Err(e) =
            super::copied::copy_in(client, &launched.name, account, &req.spec.workspace.path).await
    {
        let _ = dispose(host, &launched.name).await;
        return Err(Error::CopyIn(e));
    }
    if let Some(agent) = &req.agent
        && let Err(e) = super::saving::prepare(host, &launched.name, agent, None, account).await
    {
        let _ = dispose(host, &launched.name).await;
        return Err(Error::Prepare {
            container: launched.name.clone(),
            source: e,
        });
    }
    if req.agent.is_none() {
        // (An agent's session does this in `saving::prepare`.)
        super::caches::inside(client, &launched.name, &host.config.caches, account).await;
    }
    let marker = guard_marker(account);
    let exec = ExecSpec {
        command: once_guarded(&marker, &req.command),
        user: account.uid,
        group: account.gid,
        cwd: WORKSPACE_MOUNT.into(),
        env: sandbox_env(account, &req.env),
    }
    .request()
    // The guard makes a second start of it harmless.
    .repeatable();
    let timeout = async {
        match req.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        r = run_guarded(client, &launched.name, &exec, (&marker, account), stdin, stdout, stderr) => r.map(Ending::Exited),
        _ = timeout => Ok(Ending::TimedOut),
        signal = &mut interrupt => Ok(Ending::Interrupted(signal)),
    };
    let duration = start.elapsed();
    // An isolated run's commits come out before the container goes; when
    // they cannot, the container is kept (stopped) with them.
    let mut git = Vec::new();
    if let (Some(g), Some(records)) = (&req.git, records) {
        for record in records {
            let received =
                super::isolated::sync(client, &launched.name, account, &record, g.max_bytes)
                    .await
                    .map_err(|e| e.to_string());
            let merged = match &received {
                Ok(_) => super::isolated::auto_merge(&record),
                Err(_) => None,
            };
            git.push(GitOutcome {
                record,
                received,
                merged,
            });
        }
    }
    // A copied folder comes back into cci's folder (never into yours) for
    // review with `cci sync`.
    let copied = match req.spec.extras.copy {
        true => Some(
            super::copied::copy_out(client, &launched.name, account)
                .await
                .map(|_| ()),
        ),
        false => None,
    };
    // An agent's conversation is kept as a saved session (`cci shell
    // --resume=ID` continues it).
    let state = match &req.agent {
        Some(_) => Some(match super::inventory::get(host, &launched.name).await {
            Ok(info) => {
                let state =
                    super::saving::save_state(host, &info, true, super::saving::SaveKind::Now)
                        .await
                        .unwrap_or_else(|e| super::saving::StateSave::Failed(e.to_string()));
                let (how, status) = match &ending {
                    Ok(Ending::Exited(code)) => ("exit", Some(*code)),
                    Ok(Ending::TimedOut) => ("timeout", None),
                    Ok(Ending::Interrupted(_)) | Err(_) => ("interrupt", None),
                };
                super::records::finish(host, &info, how, status, Some(&state)).await;
                state
            }
            Err(e) => super::saving::StateSave::Failed(e.to_string()),
        }),
        None => None,
    };
    let keep_commits = git.iter().any(|g| g.received.is_err());
    if keep_commits && !req.spec.persistent {
        let patch = serde_json::json!({"ephemeral": false, "config": {super::spec::keys::PERSISTENT: "true"}});
        client.update_instance(&launched.name, &patch, None).await?;
    }
    // `cci run --persistent`: stopped and kept, not deleted.
    let removed = if req.spec.persistent || keep_commits {
        stop(client, &launched.name, Duration::from_secs(10)).await
    } else {
        dispose(host, &launched.name).await
    };
    let ending = ending?;
    removed?;
    Ok(RunOutcome {
        container: launched.name,
        ending,
        duration,
        changed: super::tripwire::changes(&before, &super::tripwire::fingerprint(ws)),
        git,
        state,
        files_changed: files_before
            .and_then(|b| Some(super::changes::diff(&b, &super::changes::snapshot(ws)?))),
        copied,
    })
}

/// Get rid of a run's container. It is ephemeral, so a forced stop is all it
/// takes: the daemon stops and deletes it on its own, and cci need not wait
/// the ~0.7 s that takes. Should the request fail, remove it the long way.
async fn dispose(host: &Host, name: &str) -> incus::Result<()> {
    match host.client.begin_force_stop(name).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("stopping {name}: {e}; removing it");
            remove(host, name).await
        }
    }
}

/// Exit status of [`ONCE_GUARD`] when another start of it runs the command.
const ALREADY_RAN: i32 = 250;

/// Runs `"$@"` only if its marker folder (`$0`) did not exist yet, so a
/// command started twice runs once, and leaves its exit status in the marker.
const ONCE_GUARD: &str = r#"mkdir "$0" 2>/dev/null || exit 250
echo $$ >"$0/pid"
("$@")
s=$?
echo "$s" >"$0/status"
exit "$s""#;

/// Prints `none` when the guarded command never started, else waits for it
/// to end and prints its exit status — or `lost` when its shell is gone
/// without one (killed), so nobody waits for ever. (The command runs in a
/// subshell: a builtin killed by a cut output stream takes only that.)
const GUARD_STATUS: &str = r#"[ -d "$1" ] || { echo none; exit 0; }
while [ ! -e "$1/status" ]; do
  if [ -e "$1/pid" ] && ! kill -0 "$(cat "$1/pid")" 2>/dev/null; then
    [ -e "$1/status" ] || { echo lost; exit 0; }
  fi
  sleep 0.1
done
cat "$1/status""#;

/// A marker folder unique to one run.
fn guard_marker(account: &Account) -> String {
    format!("{}/.cci-run-{}", account.home, uuid::Uuid::new_v4())
}

/// `command` wrapped in [`ONCE_GUARD`] with `marker`.
fn once_guarded(marker: &str, command: &[String]) -> Vec<String> {
    let mut argv = vec!["sh".into(), "-c".into(), ONCE_GUARD.into(), marker.into()];
    argv.extend(command.iter().cloned());
    argv
}

/// What became of a guarded command whose start the daemon lost track of.
async fn guard_status(
    client: &Client,
    name: &str,
    marker: &str,
    account: &Account,
) -> incus::Result<Option<i32>> {
    let req = ExecRequest::new(&["sh", "-c", GUARD_STATUS, "cci-status", marker])
        .as_user(account.uid, account.gid)
        .repeatable();
    let out = client.exec_capture(name, &req, None).await?;
    Ok(out.stdout_text().trim().parse().ok())
}

/// Run the guarded command. The daemon restarts it when it loses track of
/// it ("Failed to retrieve PID", seen on busy hosts; it may or may not have
/// run): the guard makes that safe. When the guard says an earlier start ran
/// it, wait for that run's exit status, and say that its output was cut.
/// The guard's marker is checked as its owner, `account`.
async fn run_guarded<I, O, E>(
    client: &Client,
    name: &str,
    exec: &ExecRequest,
    (marker, account): (&str, &Account),
    stdin: Option<I>,
    stdout: O,
    mut stderr: E,
) -> incus::Result<i32>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let code = client.exec(name, exec, stdin, stdout, &mut stderr).await?;
    if code != ALREADY_RAN {
        return Ok(code);
    }
    match guard_status(client, name, marker, account).await? {
        Some(ran) if ran != ALREADY_RAN => {
            let note = format!(
                "cci: the Incus daemon lost track of the command as it started it and cut its output streams; it ran and exited with status {ran} (141 means it was killed writing to the cut output)\n"
            );
            let _ = stderr.write_all(note.as_bytes()).await;
            Ok(ran)
        }
        Some(_) => Ok(code),
        None => {
            let note = "cci: the Incus daemon lost track of the command as it started it, and its shell ended without an exit status\n";
            let _ = stderr.write_all(note.as_bytes()).await;
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_passes_the_command_as_arguments() {
        let argv = once_guarded(
            &guard_marker(&Account::new(1000, "code")),
            &["echo".into(), "a b; $(x)".into()],
        );
        assert_eq!(argv[..3], ["sh", "-c", ONCE_GUARD]);
        assert!(argv[3].starts_with("/home/code/.cci-run-"));
        assert_eq!(argv[4..], ["echo", "a b; $(x)"]);
    }
}

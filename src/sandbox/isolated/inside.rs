//! The container's half of an isolated session: the bundle goes in and is
//! cloned; the session's commits come out as one bounded bundle. Everything
//! read back is the agent's: bounded in size and time, escaped in messages.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::config::Account;
use crate::incus::{self, Client, ExecRequest};
use crate::sandbox::mounts::WORKSPACE_MOUNT;

/// The longest cci waits for the session's commits to be bundled.
const COLLECT_TIME: Duration = Duration::from_secs(300);

/// Why a session's repository could not go in or come out.
#[derive(Debug, thiserror::Error)]
pub enum IsolatedError {
    /// The daemon failed.
    #[error(transparent)]
    Incus(#[from] incus::Error),
    /// A step inside failed.
    #[error("{0}")]
    Inside(String),
    /// A host file.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Make `/workspace` in `name`, owned by `account` (a session with no
/// folder mounted there: an isolated one, or a copied folder).
pub async fn make_workspace(
    client: &Client,
    name: &str,
    account: &Account,
) -> Result<(), IsolatedError> {
    let prep = ExecRequest::new(&[
        "install",
        "-d",
        "-o",
        &account.uid.to_string(),
        "-g",
        &account.gid.to_string(),
        WORKSPACE_MOUNT,
    ]);
    let out = client.exec_capture(name, &prep, None).await?;
    if out.exit_code != 0 {
        return Err(IsolatedError::Inside(format!(
            "making {WORKSPACE_MOUNT}: {}",
            crate::terminal::printable_lines(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(())
}

/// Where a session's repository takes its objects from.
pub enum SeedFrom<'a> {
    /// The read-only seed mirror mounted at this path inside (a local
    /// daemon: nothing is copied).
    Mounted(&'a str),
    /// A pack of the start commit's history, streamed in (a remote daemon,
    /// where no host folder can be mounted); the file is the pack.
    Pack(&'a Path),
}

/// Make the repository of `folder` in `name`, as `account`, on a new branch
/// `branch` at commit `start`, its objects from `from`, with no remote and
/// `identity` (name, email) as the repository's committer.
#[allow(clippy::too_many_arguments)]
pub async fn seed(
    client: &Client,
    name: &str,
    account: &Account,
    from: SeedFrom<'_>,
    start: &str,
    folder: &str,
    branch: &str,
    identity: Option<(String, String)>,
) -> Result<(), IsolatedError> {
    crate::git::names::check_oid(start).map_err(|e| IsolatedError::Inside(e.to_string()))?;
    let (who, mail) = identity.unwrap_or_else(|| ("cci agent".into(), "agent@cci.invalid".into()));
    // $1 mirror (empty: a pack on stdin), $2 branch, $3 folder, $4 name,
    // $5 email, $6 start. No clone: that would run git's transport in the
    // mirror (which belongs to the host user, not the account); the
    // objects are borrowed through `alternates` (or indexed from the pack),
    // the branch set and checked out.
    let script = r#"set -e
git init -q "$3" 2>&1
cd "$3"
if [ -n "$1" ]; then
  printf '%s/objects\n' "$1" > .git/objects/info/alternates
else
  git index-pack --stdin 2>&1 >/dev/null
fi
git symbolic-ref HEAD "refs/heads/$2"
git update-ref "refs/heads/$2" "$6"
git -c core.fsync=none -c checkout.workers=0 reset -q --hard 2>&1
git config user.name "$4"
git config user.email "$5""#;
    make_workspace(client, name, account).await?;
    let mirror = match from {
        SeedFrom::Mounted(m) => m,
        SeedFrom::Pack(_) => "",
    };
    let req = ExecRequest::new(&[
        "sh", "-c", script, "cci-seed", mirror, branch, folder, &who, &mail, start,
    ])
    .as_user(account.uid, account.gid)
    .env("HOME", &account.home);
    let out = match from {
        SeedFrom::Mounted(_) => client.exec_capture(name, &req, None).await?,
        SeedFrom::Pack(pack) => {
            let file = tokio::fs::File::open(pack)
                .await
                .map_err(|e| IsolatedError::Io(format!("reading {}", pack.display()), e))?;
            let mut stdout = incus::CappedBuf::new(incus::MAX_CAPTURED_STDOUT);
            let mut stderr = incus::CappedBuf::new(incus::MAX_CAPTURED_STDERR);
            let exit_code = client
                .exec(name, &req, Some(file), &mut stdout, &mut stderr)
                .await?;
            incus::ExecOutput {
                stdout: stdout.into_noted(),
                stderr: stderr.into_noted(),
                exit_code,
                truncated: false,
            }
        }
    };
    if out.exit_code != 0 {
        return Err(IsolatedError::Inside(format!(
            "cloning the repository inside: {}",
            crate::terminal::printable_lines(&out.stdout_text())
        )));
    }
    Ok(())
}

/// What came out of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// A bundle of the session branch, at this host path.
    Bundle,
    /// No commits beyond `base`.
    Nothing,
}

/// Exit status of the collect script when there is nothing new.
const NOTHING: i32 = 3;

/// Bundle BRANCH of /workspace in `name` (after committing what was left
/// uncommitted, hooks off) into `out`: only what is not in `base`, unless
/// the session no longer has `base` (then all of it). At most `max_bytes`.
#[allow(clippy::too_many_arguments)]
pub async fn collect(
    client: &Client,
    name: &str,
    account: &Account,
    folder: &str,
    branch: &str,
    base: &str,
    out: &Path,
    max_bytes: u64,
) -> Result<Collected, IsolatedError> {
    // $1 folder, $2 branch, $3 base. Output: the bundle, on stdout only.
    // cci's own git steps inside ignore what the agent configured (an
    // fsmonitor or hook that hangs would hold the session's end).
    let script = r#"cd "$1" || exit 2
git() { command git -c core.fsmonitor=false -c core.hooksPath=/dev/null -c core.untrackedCache=false "$@"; }
git rev-parse -q --verify "refs/heads/$2^{commit}" >/dev/null || { echo "the session branch $2 is gone" >&2; exit 2; }
if [ "$(git symbolic-ref -q HEAD)" = "refs/heads/$2" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  git add -A >/dev/null 2>&1
  git commit -q --no-verify -m "cci: uncommitted changes at the end of the session" >/dev/null 2>&1
fi
if git cat-file -e "$3^{commit}" 2>/dev/null; then
  [ "$(git rev-list --count "refs/heads/$2" "^$3")" = 0 ] && exit 3
  git bundle create -q - "refs/heads/$2" "^$3"; exit $?
fi
git bundle create -q - "refs/heads/$2""#;
    let req = ExecRequest::new(&["sh", "-c", script, "cci-collect", folder, branch, base])
        .as_user(account.uid, account.gid)
        .env("HOME", &account.home);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(|e| IsolatedError::Io(out.display().to_string(), e))?
    };
    let mut sink = Bounded {
        file: tokio::fs::File::from_std(file),
        left: max_bytes,
    };
    let mut err = incus::CappedBuf::new(4096);
    let code = tokio::time::timeout(
        COLLECT_TIME,
        client.exec(name, &req, None::<tokio::io::Empty>, &mut sink, &mut err),
    )
    .await
    .map_err(|_| {
        IsolatedError::Inside(format!(
            "bundling the session's commits took longer than {} s",
            COLLECT_TIME.as_secs()
        ))
    })??;
    match code {
        0 => Ok(Collected::Bundle),
        NOTHING => Ok(Collected::Nothing),
        _ => Err(IsolatedError::Inside(format!(
            "bundling the session's commits: {}",
            crate::terminal::printable_lines(&String::from_utf8_lossy(&err.into_noted()))
        ))),
    }
}

/// A file that refuses to grow past its bound.
struct Bounded {
    file: tokio::fs::File,
    left: u64,
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return Poll::Ready(Err(std::io::Error::other(
                "the session's bundle is larger than session.max_bytes",
            )));
        }
        let r = Pin::new(&mut self.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.left -= n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

//! The container side of an isolated git session (`--isolated`): the
//! repository goes in as one bundle and is cloned at /workspace on the
//! session branch, with no remote; at the end the session's new commits come
//! out as one bundle, which the host side ([`crate::git`]) verifies and
//! fetches with nothing of the session's config, hooks or filters.
//!
//! Everything read back from the container is hostile: the bundle is written
//! to a private host file, bounded in size and time, and only handed to
//! `crate::git`, which checks it.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::mounts::WORKSPACE_MOUNT;
use crate::config::Account;
use crate::incus::{self, Client, ExecRequest, FileWrite};

/// Where the bundle waits inside until it is cloned.
const SEED: &str = "/tmp/.cci-seed.bundle";

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

/// Clone `bundle` (holding `refs/heads/cci-start`, [`START_BRANCH`]) at
/// /workspace in `name`, as `account`, on a new branch `branch`, with no
/// remote left and `identity` (name, email) as the repository's committer.
pub async fn seed(
    client: &Client,
    name: &str,
    account: &Account,
    bundle: &Path,
    branch: &str,
    identity: Option<(String, String)>,
) -> Result<(), IsolatedError> {
    let file = tokio::fs::File::open(bundle)
        .await
        .map_err(|e| IsolatedError::Io(bundle.display().to_string(), e))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let owner = FileWrite {
        uid: account.uid,
        gid: account.gid,
        mode: 0o600,
    };
    client.write_file(name, SEED, body, owner).await?;
    let (who, mail) = identity.unwrap_or_else(|| ("cci agent".into(), "agent@cci.invalid".into()));
    // $1 bundle, $2 branch, $3 folder, $4 name, $5 email.
    let script = r#"set -e
git clone -q --branch cci-start "$1" "$3" 2>&1
cd "$3"
git checkout -q -b "$2" 2>&1
git branch -q -D cci-start 2>&1
git remote remove origin
git config user.name "$4"
git config user.email "$5"
rm -f "$1""#;
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
    let req = ExecRequest::new(&[
        "sh",
        "-c",
        script,
        "cci-seed",
        SEED,
        branch,
        WORKSPACE_MOUNT,
        &who,
        &mail,
    ])
    .as_user(account.uid, account.gid)
    .env("HOME", &account.home);
    let out = client.exec_capture(name, &req, None).await?;
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
pub async fn collect(
    client: &Client,
    name: &str,
    account: &Account,
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
    let req = ExecRequest::new(&[
        "sh",
        "-c",
        script,
        "cci-collect",
        WORKSPACE_MOUNT,
        branch,
        base,
    ])
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

/// The ref name the seed bundle carries; the session branch is made from it
/// inside.
pub const START_BRANCH: &str = "cci-start";

/// How an isolated session starts (`--branch`, `--session-branch`,
/// `--clean-only`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start from this host branch instead of HEAD.
    pub branch: Option<String>,
    /// The session branch's name [default `cci/<slot>`].
    pub session_branch: Option<String>,
    /// Refuse uncommitted changes instead of carrying them in.
    pub clean_only: bool,
}

/// The host side of a session about to start.
#[derive(Debug)]
pub struct Prepared {
    /// The user's repository.
    pub repo: crate::git::Repo,
    /// The host commit the session starts from.
    pub base: String,
    /// Paths of uncommitted changes carried in as the first commit.
    pub carried: Vec<String>,
    /// The bundle to clone inside (removed when this is dropped).
    pub bundle: TempFile,
    /// Its size.
    pub bundle_bytes: u64,
    /// What is not carried (submodules, LFS content), said to the user.
    pub notes: Vec<String>,
    /// The options.
    pub options: Options,
}

/// A host file removed when dropped.
#[derive(Debug)]
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A private scratch path under `~/.cci/tmp`.
fn scratch(tag: &str) -> Result<std::path::PathBuf, crate::git::GitError> {
    let dir = crate::state::dir("tmp")
        .map_err(|e| crate::git::GitError::io("cannot create ~/.cci/tmp", e))?;
    Ok(dir.join(format!("{tag}-{}.bundle", uuid::Uuid::new_v4())))
}

/// Take the snapshot of the repository at `ws` and bundle it for the
/// container: HEAD (or `--branch`, or an existing host branch named like
/// the session branch: it is continued) with uncommitted changes carried
/// in as a first commit (HEAD only; `--clean-only` refuses them).
pub fn prepare(ws: &Path, options: &Options) -> Result<Prepared, crate::git::GitError> {
    use crate::git::{GitError, Repo, names};
    let repo = Repo::discover(ws)?;
    if let Some(b) = &options.session_branch {
        names::check_branch(b)?;
    }
    let named = options.branch.clone().or_else(|| {
        options
            .session_branch
            .clone()
            .filter(|b| matches!(repo.resolve_commit(&format!("refs/heads/{b}")), Ok(Some(_))))
    });
    let (base, start, carried) = match named.filter(|b| Some(b) != repo.branch.as_ref()) {
        Some(b) => {
            names::check_branch(&b)?;
            let id = repo.resolve_commit(&format!("refs/heads/{b}"))?.ok_or(
                GitError::InvalidBranch {
                    name: b.clone(),
                    reason: "no such branch in the repository",
                },
            )?;
            (id.clone(), id, Vec::new())
        }
        None => {
            let s = repo.snapshot(!options.clean_only)?;
            (s.base, s.start, s.paths)
        }
    };
    let mut notes = Vec::new();
    if !repo.submodules.is_empty() {
        notes.push(format!(
            "submodules are not carried in (the session sees their commit ids only): {}",
            repo.submodules
                .iter()
                .map(|s| crate::config::printable(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if repo.uses_lfs {
        notes.push("Git LFS files go in as their pointer files, not their content".into());
    }
    let path = scratch("seed")?;
    let bundle = TempFile(path.clone());
    let info = repo.bundle_to(&start, START_BRANCH, &[], &path)?;
    Ok(Prepared {
        repo,
        base,
        carried,
        bundle,
        bundle_bytes: info.bytes,
        notes,
        options: options.clone(),
    })
}

/// Why a session's commits did not come back.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Getting them out of the container.
    #[error(transparent)]
    Out(#[from] IsolatedError),
    /// Taking them in on the host.
    #[error(transparent)]
    In(#[from] crate::git::GitError),
}

/// Bring the session's new commits from container `name` into the host
/// repository (`refs/cci/<id>/<branch>`). `None`: nothing new.
pub async fn sync(
    client: &Client,
    name: &str,
    account: &Account,
    rec: &crate::git::SessionRecord,
    max_bytes: u64,
) -> Result<Option<crate::git::Received>, SyncError> {
    let repo = crate::git::Repo::discover(&rec.repo_path)?;
    // What the host has of the session already need not come again.
    let have = repo
        .resolve_commit(&rec.session_ref()?)?
        .unwrap_or_else(|| rec.base.clone());
    let path = scratch("session")?;
    let file = TempFile(path.clone());
    match collect(client, name, account, &rec.branch, &have, &path, max_bytes).await? {
        Collected::Nothing => Ok(None),
        Collected::Bundle => {
            let got = repo.receive(&rec.id, &file.0, &rec.branch)?;
            Ok(Some(got))
        }
    }
}

/// The records of isolated sessions: `git-sessions` under `root` (the
/// saved-session folder), private.
pub fn store(root: &Path) -> Result<crate::git::SessionStore, crate::git::GitError> {
    let dir = root.join("git-sessions");
    let store = crate::git::SessionStore::at(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| crate::git::GitError::io(format!("cannot protect {}", dir.display()), e))?;
    Ok(store)
}

/// An isolated session about to start in a new container.
#[derive(Debug)]
pub struct Start {
    /// The host side, bundled.
    pub prepared: Prepared,
    /// The session id (the record's and the host refs').
    pub id: String,
    /// Where the record goes.
    pub store: crate::git::SessionStore,
    /// The most a bundle coming back may hold.
    pub max_bytes: u64,
    /// The committer inside (the host's `user.name`, `user.email`).
    pub identity: Option<(String, String)>,
}

/// Seed container `name` (in `slot`) and record the session; returns the
/// record. The record is written first, so a session whose cci dies
/// halfway is still known (and its commits fetchable while the container
/// lives).
pub async fn begin(
    client: &Client,
    name: &str,
    slot: u32,
    account: &Account,
    start: &Start,
) -> Result<crate::git::SessionRecord, String> {
    let p = &start.prepared;
    let branch = p
        .options
        .session_branch
        .clone()
        .unwrap_or_else(|| format!("cci/{slot}"));
    let rec = crate::git::SessionRecord {
        id: start.id.clone(),
        workspace: name
            .rsplit_once('-')
            .map(|(w, _)| w.to_string())
            .unwrap_or_default(),
        slot,
        branch: branch.clone(),
        base: p.base.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        container: name.to_string(),
        repo_path: p.repo.top.clone(),
    };
    start.store.save(&rec).map_err(|e| e.to_string())?;
    seed(
        client,
        name,
        account,
        &p.bundle.0,
        &branch,
        start.identity.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(rec)
}

/// The host's git identity (`user.name`, `user.email` of the user's own
/// configuration), for commits made inside.
pub fn host_identity(repo: &crate::git::Repo) -> Option<(String, String)> {
    let get = |key: &str| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo.top)
            .args(["config", "--get", key])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .ok()?;
        let v = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!v.is_empty() && !v.chars().any(char::is_control)).then_some(v)
    };
    Some((get("user.name")?, get("user.email")?))
}

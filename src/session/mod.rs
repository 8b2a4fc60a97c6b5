//! Session state: the agent's state folder saved from a container into the
//! host's session store and pushed into a new container to resume; the
//! credentials copied in fresh at every start; imports and exports.
//!
//! A save is one tar stream out of the container (`tar` run as the `code`
//! user, through exec) unpacked on the host by [`archive::extract`], which
//! trusts nothing in it. A restore is the reverse. Both are bounded in time
//! (`session::bound`) and keep at most 64 KiB of `tar`'s stderr. Knows nothing of slots or
//! tmux; talks to Incus only through [`crate::incus::Client`]; prints nothing.

pub mod archive;
mod bound;
mod credentials;
mod id;
mod import;
pub mod record;
mod store;
mod tarstream;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use archive::{ArchiveError, Limits, Tally, shown};
pub use bound::{STALL, TOTAL};
pub use credentials::{Pushed, credentials_home, merge, push_credentials};
pub use id::{BadSessionId, SessionId};
pub use import::{claude_project, import, import_selection};
pub use store::{Meta, Saved, Store, now as store_now, rfc3339, root as store_root};

use crate::incus::{self, CappedBuf, Client, ExecRequest, MAX_CAPTURED_STDERR};

use crate::config::Account;

/// What one agent keeps where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentFiles {
    /// Its state folder, relative to the home folder.
    pub state_dir: &'static str,
    /// Credential files copied from the host home into the container home
    /// (same relative path) at every start.
    pub credentials: &'static [&'static str],
    /// JSON settings merged into files of the container home at every start
    /// (path relative to the home, JSON object).
    pub settings: &'static [(&'static str, &'static str)],
}

impl AgentFiles {
    /// Names at the top of the state folder that are never saved: the
    /// credentials, copied in fresh at every start, never leave a container.
    pub fn never_saved(&self) -> Vec<&'static str> {
        self.credentials
            .iter()
            .filter_map(|c| c.strip_prefix(self.state_dir)?.strip_prefix('/'))
            .filter(|c| !c.contains('/'))
            .collect()
    }
}

/// Why a save, restore or credential copy failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon refused or failed.
    #[error(transparent)]
    Incus(#[from] incus::Error),
    /// The state broke a limit, or could not be written on the host.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The `tar` in the container failed.
    #[error("tar in {container} failed (status {status}): {stderr}")]
    Tar {
        /// The container.
        container: String,
        /// Its exit status.
        status: i32,
        /// What it said (escaped).
        stderr: String,
    },
    /// The container's side stalled or ran too long (its `tar` is the
    /// agent's to replace); given up.
    #[error("{what} was given up: {why}")]
    TimedOut {
        /// What was being done.
        what: String,
        /// How it overran.
        why: String,
    },
    /// A host file or folder could not be used.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |cause| Error::Io { what, cause }
}

/// Where a save came from, for its [`Meta`].
#[derive(Debug, Clone)]
pub struct Origin {
    /// Session id.
    pub id: SessionId,
    /// Agent name.
    pub tool: String,
    /// Workspace host path.
    pub workspace: String,
    /// Container name.
    pub container: String,
    /// Slot.
    pub slot: u32,
    /// Persistent container.
    pub persistent: bool,
    /// The user whose home holds the state.
    pub account: Account,
}

fn meta_for(origin: &Origin, tally: &Tally, how: &str) -> Meta {
    let (saved_at, saved_unix) = store::now();
    Meta {
        id: origin.id.to_string(),
        tool: origin.tool.clone(),
        workspace: origin.workspace.clone(),
        container: origin.container.clone(),
        slot: origin.slot,
        persistent: origin.persistent,
        saved_at,
        saved_unix,
        cci_version: env!("CARGO_PKG_VERSION").into(),
        bytes: tally.bytes,
        entries: tally.entries,
        skipped: tally.skipped_count,
        executables: tally.executables.clone(),
        origin: how.into(),
    }
}

/// How often a save or restore is tried again when the daemon lost track of
/// its `tar` (reading the state twice is harmless; each try starts afresh).
const TRIES: u32 = 4;

/// Run `op` until it ends other than by the daemon losing track of its
/// command, at most [`TRIES`] times.
async fn afresh<T, F, Fut>(what: &str, op: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut tries = 1;
    loop {
        match op().await {
            Err(Error::Incus(e)) if e.is_attach_failure() && tries < TRIES => {
                tracing::debug!("{what}: {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries))).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

/// The outcome of a `tar` in the container (`ran`) and of the host side of
/// its stream (`host`), as one: a command the daemon lost track of explains a
/// cut-off stream; otherwise the host side's error (a limit) explains why
/// the command's stream was cut off.
fn joined(
    ran: incus::Result<i32>,
    host: Result<Result<Tally, ArchiveError>, tokio::task::JoinError>,
    what: &str,
) -> Result<(i32, Tally), Error> {
    let host = host.map_err(|e| io_err(what)(std::io::Error::other(e.to_string())))?;
    match ran {
        Err(e) if e.is_attach_failure() => Err(e.into()),
        Err(e) => {
            host?;
            Err(e.into())
        }
        Ok(status) => Ok((status, host?)),
    }
}

/// Save the state folder of the running container `origin.container` as
/// session `origin.id`. The earlier save of that session stays until the new
/// one is complete; on any error (a limit, the container) it is kept.
/// `Ok(None)`: the container has no state folder.
pub async fn save(
    client: &Client,
    origin: &Origin,
    files: &AgentFiles,
    store: &Store,
    limits: &Limits,
) -> Result<Option<(Saved, Tally)>, Error> {
    let what = format!("saving the session state of {}", origin.container);
    let moved = Arc::new(AtomicU64::new(0));
    let run = afresh(&what, || {
        save_once(client, origin, files, store, limits, moved.clone())
    });
    within(&what, &moved, run).await
}

/// `run` within the time bounds of [`bound`] (`moved` counts its stream).
async fn within<T>(
    what: &str,
    moved: &AtomicU64,
    run: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    bound::bounded(moved, STALL, TOTAL, run)
        .await
        .unwrap_or_else(|why| {
            Err(Error::TimedOut {
                what: what.into(),
                why: why.to_string(),
            })
        })
}

async fn save_once(
    client: &Client,
    origin: &Origin,
    files: &AgentFiles,
    store: &Store,
    limits: &Limits,
    moved: Arc<AtomicU64>,
) -> Result<Option<(Saved, Tally)>, Error> {
    let container = &origin.container;
    let staging = store.staging(&origin.id).map_err(io_err(format!(
        "making a staging folder in {}",
        store.dir().display()
    )))?;
    let a = &origin.account;
    let probe = ExecRequest::new(&["test", "-d", &format!("{}/{}", a.home, files.state_dir)])
        .as_user(a.uid, a.gid)
        .repeatable();
    if client
        .exec_capture(container, &probe, None)
        .await?
        .exit_code
        != 0
    {
        return Ok(None);
    }
    // GNU tar never follows symlinks unless told; hard links go as copies;
    // unreadable files are left out rather than failing the save.
    let req = ExecRequest::new(&[
        "tar",
        "-C",
        &a.home,
        "--hard-dereference",
        "--ignore-failed-read",
        "--warning=no-file-changed",
        "--warning=no-file-ignored",
        "-cf",
        "-",
        "--",
        files.state_dir,
    ])
    .as_user(a.uid, a.gid);
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let dest = staging.state_dir();
    let (root, lim, skip) = (files.state_dir.to_string(), *limits, files.never_saved());
    let unpack = tokio::task::spawn_blocking(move || {
        archive::extract(
            tokio_util::io::SyncIoBridge::new(reader),
            &root,
            &dest,
            &lim,
            &skip,
        )
    });
    let mut stderr = CappedBuf::new(MAX_CAPTURED_STDERR);
    let writer = bound::Progress::new(writer, moved);
    let ran = client
        .exec(container, &req, None::<&[u8]>, writer, &mut stderr)
        .await;
    let (status, tally) = joined(ran, unpack.await, "unpacking the state")?;
    // 1: a file changed while it was read, which a live agent does.
    if status > 1 {
        let stderr = stderr.into_noted();
        return Err(Error::Tar {
            container: container.clone(),
            status,
            stderr: shown(&stderr[..stderr.len().min(2000)]),
        });
    }
    let meta = meta_for(origin, &tally, "container");
    let saved = store
        .commit(staging, meta)
        .map_err(io_err(format!("saving into {}", store.dir().display())))?;
    Ok(Some((saved, tally)))
}

/// Push the saved state `saved` into the running container's state folder.
pub async fn restore(
    client: &Client,
    container: &str,
    files: &AgentFiles,
    saved: &Saved,
    limits: &Limits,
    account: &Account,
) -> Result<Tally, Error> {
    let what = format!("restoring the session state into {container}");
    let moved = Arc::new(AtomicU64::new(0));
    let run = afresh(&what, || {
        restore_once(
            client,
            container,
            files,
            saved,
            limits,
            account,
            moved.clone(),
        )
    });
    within(&what, &moved, run).await
}

async fn restore_once(
    client: &Client,
    container: &str,
    files: &AgentFiles,
    saved: &Saved,
    limits: &Limits,
    a: &Account,
    moved: Arc<AtomicU64>,
) -> Result<Tally, Error> {
    let req = ExecRequest::new(&[
        "tar",
        "-C",
        &a.home,
        "--no-same-owner",
        "--no-overwrite-dir",
        "-xf",
        "-",
    ])
    .as_user(a.uid, a.gid);
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let owner = (u64::from(a.uid), u64::from(a.gid));
    let (src, root, lim, exec, skip) = (
        saved.state_dir(),
        files.state_dir.to_string(),
        *limits,
        saved.meta.executables.clone(),
        files.never_saved(),
    );
    let packer = tokio::task::spawn_blocking(move || {
        archive::pack(
            &src,
            &root,
            tokio_util::io::SyncIoBridge::new(writer),
            owner,
            &lim,
            &exec,
            &skip,
        )
    });
    let mut out = CappedBuf::new(MAX_CAPTURED_STDERR);
    let mut stderr = CappedBuf::new(MAX_CAPTURED_STDERR);
    let reader = bound::Progress::new(reader, moved);
    let ran = client
        .exec(container, &req, Some(reader), &mut out, &mut stderr)
        .await;
    let (status, tally) = joined(ran, packer.await, "packing the state")?;
    if status != 0 {
        let stderr = stderr.into_noted();
        return Err(Error::Tar {
            container: container.into(),
            status,
            stderr: shown(&stderr[..stderr.len().min(2000)]),
        });
    }
    Ok(tally)
}

/// Write saved session `saved`'s state to the new folder `dest` (files
/// 0600, the ones that were executable 0700).
pub fn export(saved: &Saved, dest: &Path, limits: &Limits) -> Result<Tally, Error> {
    use std::os::unix::fs::PermissionsExt;
    let tally = archive::copy_tree(
        &saved.state_dir(),
        dest,
        limits,
        &saved.meta.executables,
        &[],
    )?;
    for rel in &saved.meta.executables {
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            continue;
        }
        let path = dest.join(rel);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("setting the mode of {}", path.display())))?;
        }
    }
    Ok(tally)
}

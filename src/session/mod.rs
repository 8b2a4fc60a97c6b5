//! Session state: the agent's state folder saved from a container into the
//! host's session store and pushed into a new container to resume; the
//! credentials copied in fresh at every start; imports and exports.
//!
//! A save is one tar stream out of the container (`tar` run as the `code`
//! user, through exec) unpacked on the host by [`archive::extract`], which
//! trusts nothing in it. A restore is the reverse. Knows nothing of slots or
//! tmux; talks to Incus only through [`crate::incus::Client`]; prints nothing.

pub mod archive;
mod id;
mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use archive::{ArchiveError, Limits, Tally, shown};
pub use id::{BadSessionId, SessionId};
pub use store::{Meta, Saved, Store, rfc3339};

use crate::incus::{self, Client, ExecRequest, FileWrite};

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

fn lost_track(e: &Error) -> bool {
    matches!(e, Error::Incus(i) if i.is_attach_failure())
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
    let mut tries = 1;
    loop {
        match save_once(client, origin, files, store, limits).await {
            Err(e) if lost_track(&e) && tries < TRIES => {
                tracing::debug!("saving {}: {e}; trying again", origin.container);
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries))).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

async fn save_once(
    client: &Client,
    origin: &Origin,
    files: &AgentFiles,
    store: &Store,
    limits: &Limits,
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
    let mut stderr = Vec::new();
    let ran = client
        .exec(container, &req, None::<&[u8]>, writer, &mut stderr)
        .await;
    let unpacked = unpack
        .await
        .map_err(|e| io_err("unpacking the state")(std::io::Error::other(e.to_string())))?;
    // A lost command explains a cut-off stream; otherwise the unpacking's
    // error (a limit) explains why the command's output was cut off.
    let status = match ran {
        Err(e) if e.is_attach_failure() => return Err(e.into()),
        Err(e) => {
            unpacked?;
            return Err(e.into());
        }
        Ok(status) => status,
    };
    let tally = unpacked?;
    // 1: a file changed while it was read, which a live agent does.
    if status > 1 {
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
    let mut tries = 1;
    loop {
        match restore_once(client, container, files, saved, limits, account).await {
            // Unpacking the same files again is harmless.
            Err(e) if lost_track(&e) && tries < TRIES => {
                tracing::debug!("restoring into {container}: {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries))).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

async fn restore_once(
    client: &Client,
    container: &str,
    files: &AgentFiles,
    saved: &Saved,
    limits: &Limits,
    a: &Account,
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
    let mut out = Vec::new();
    let mut stderr = Vec::new();
    let ran = client
        .exec(container, &req, Some(reader), &mut out, &mut stderr)
        .await;
    let packed = packer
        .await
        .map_err(|e| io_err("packing the state")(std::io::Error::other(e.to_string())))?;
    let status = match ran {
        Err(e) if e.is_attach_failure() => return Err(e.into()),
        Err(e) => {
            packed?;
            return Err(e.into());
        }
        Ok(status) => status,
    };
    let tally = packed?;
    if status != 0 {
        return Err(Error::Tar {
            container: container.into(),
            status,
            stderr: shown(&stderr[..stderr.len().min(2000)]),
        });
    }
    Ok(tally)
}

/// The host folder the agent's credentials are read from: `[tool]
/// credentials_dir` (or `$CCI_CREDENTIALS_DIR`), else the invoking user's
/// home under sudo, else `$HOME`.
pub fn credentials_home() -> Option<PathBuf> {
    if let Some(d) = &crate::config::current().credentials_dir {
        return Some(d.clone());
    }
    if crate::state::is_root()
        && let Some(user) = std::env::var("SUDO_USER").ok().filter(|u| u != "root")
        && let Some(home) = home_of(&user)
    {
        return Some(home);
    }
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `user`'s home folder from /etc/passwd.
fn home_of(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| PathBuf::from(f[5]))
    })
}

/// What [`push_credentials`] put into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Credential files copied (relative to the home).
    pub credentials: Vec<String>,
    /// Settings files merged.
    pub settings: Vec<String>,
}

/// Largest credential or settings file handled.
const MAX_SETTINGS: u64 = 16 << 20;

/// Copy the agent's credentials from `host_home` into the running
/// container (0600, owned by `code`; missing ones are skipped), then merge
/// the sandbox settings into its settings files, keeping every other key.
/// Contents go through the file API, never through argv or config.
pub async fn push_credentials(
    client: &Client,
    container: &str,
    files: &AgentFiles,
    host_home: Option<&Path>,
    a: &Account,
) -> Result<Pushed, Error> {
    let mut pushed = Pushed::default();
    let private = FileWrite {
        uid: a.uid,
        gid: a.gid,
        mode: 0o600,
    };
    let dir = FileWrite {
        mode: 0o700,
        ..private
    };
    let mut written: BTreeSet<&str> = BTreeSet::new();
    for rel in files.credentials {
        let Some(home) = host_home else { break };
        let host = home.join(rel);
        let data = match std::fs::metadata(&host) {
            Ok(m) if m.is_file() && m.len() <= MAX_SETTINGS => {
                std::fs::read(&host).map_err(io_err(format!("reading {}", host.display())))?
            }
            Ok(_) => {
                tracing::warn!("{} is not a small regular file; not copied", host.display());
                continue;
            }
            Err(_) => continue,
        };
        let path = format!("{}/{rel}", a.home);
        if let Some((parent, _)) = path.rsplit_once('/') {
            client.mkdir_all(container, parent, dir).await?;
        }
        // Replace whatever is there (a symlink is removed, not followed).
        let _ = client.delete_file(container, &path).await;
        client.write_file(container, &path, data, private).await?;
        written.insert(rel);
        pushed.credentials.push(rel.to_string());
    }
    for (rel, ours) in files.settings {
        let path = format!("{}/{rel}", a.home);
        let current = match client.read_file(container, &path).await {
            Ok((_, data)) if data.len() as u64 <= MAX_SETTINGS => Some(data),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let mut value = match current.as_deref().map(serde_json::from_slice::<Value>) {
            Some(Ok(v @ Value::Object(_))) => v,
            None => Value::Object(Map::new()),
            Some(_) => {
                // Not a JSON object: kept aside rather than lost.
                if let Some(data) = current.clone() {
                    client
                        .write_file(container, &format!("{path}.cci-invalid"), data, private)
                        .await?;
                }
                Value::Object(Map::new())
            }
        };
        let ours: Value = serde_json::from_str(ours).unwrap_or(Value::Null);
        merge(&mut value, &ours);
        let data = serde_json::to_vec_pretty(&value).unwrap_or_default();
        if let Some((parent, _)) = path.rsplit_once('/') {
            client.mkdir_all(container, parent, dir).await?;
        }
        if !written.contains(rel) {
            let _ = client.delete_file(container, &path).await;
        }
        client.write_file(container, &path, data, private).await?;
        pushed.settings.push(rel.to_string());
    }
    Ok(pushed)
}

/// Merge `ours` into `into`: objects key by key, anything else replaced.
pub fn merge(into: &mut Value, ours: &Value) {
    match (into, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Import the host folder `src` (a `~/.claude` or a copy of one) as a saved
/// session of `workspace` with id `id` (default: the newest conversation
/// found in it, else a new id). Credentials in it are left out.
pub fn import(
    store: &Store,
    files: &AgentFiles,
    src: &Path,
    id: Option<SessionId>,
    workspace: &str,
    limits: &Limits,
) -> Result<(Saved, Tally), Error> {
    let meta = std::fs::metadata(src).map_err(io_err(format!("reading {}", src.display())))?;
    if !meta.is_dir() {
        return Err(Error::Io {
            what: format!("importing {}", src.display()),
            cause: std::io::Error::other("not a folder"),
        });
    }
    let id = id.unwrap_or_else(|| newest_conversation(src).unwrap_or_else(SessionId::new_random));
    let staging = store.staging(&id).map_err(io_err(format!(
        "making a staging folder in {}",
        store.dir().display()
    )))?;
    let dest = staging.state_dir();
    std::fs::remove_dir(&dest).map_err(io_err("preparing the import"))?;
    let skip = files.never_saved();
    let tally = archive::copy_tree(src, &dest, limits, &executables_in(src), &skip)?;
    let origin = Origin {
        id,
        tool: store.tool().into(),
        workspace: workspace.into(),
        container: String::new(),
        slot: 0,
        persistent: false,
        account: Account::new(0, "root"),
    };
    let meta = meta_for(&origin, &tally, "import");
    let saved = store
        .commit(staging, meta)
        .map_err(io_err(format!("saving into {}", store.dir().display())))?;
    Ok((saved, tally))
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

/// Executable regular files under `src` (not following symlinks), relative.
fn executables_in(src: &Path) -> BTreeSet<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = BTreeSet::new();
    let mut todo = vec![(src.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() && child.matches('/').count() < 64 => {
                    todo.push((e.path(), child))
                }
                Ok(t)
                    if t.is_file()
                        && e.metadata()
                            .is_ok_and(|m| m.permissions().mode() & 0o100 != 0) =>
                {
                    found.insert(child);
                }
                _ => {}
            }
        }
    }
    found
}

/// The id of the most recently written conversation (`projects/*/<id>.jsonl`).
fn newest_conversation(src: &Path) -> Option<SessionId> {
    let mut best: Option<(std::time::SystemTime, SessionId)> = None;
    for project in std::fs::read_dir(src.join("projects")).ok()?.flatten() {
        let Ok(files) = std::fs::read_dir(project.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<SessionId>().ok())
            else {
                continue;
            };
            let Ok(when) = f.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if best.as_ref().is_none_or(|(t, _)| when > *t) {
                best = Some((when, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_merge_keeps_the_users_keys() {
        let mut user: Value = serde_json::json!({
            "theme": "dark",
            "permissions": {"allow": ["Bash(ls)"], "defaultMode": "ask"},
            "projects": {"/other": {"x": 1}}
        });
        let ours = serde_json::json!({
            "permissions": {"defaultMode": "bypassPermissions"},
            "projects": {"/workspace": {"hasTrustDialogAccepted": true}}
        });
        merge(&mut user, &ours);
        assert_eq!(user["theme"], "dark");
        assert_eq!(user["permissions"]["allow"][0], "Bash(ls)");
        assert_eq!(user["permissions"]["defaultMode"], "bypassPermissions");
        assert_eq!(user["projects"]["/other"]["x"], 1);
        assert_eq!(
            user["projects"]["/workspace"]["hasTrustDialogAccepted"],
            true
        );
    }

    #[test]
    fn import_takes_the_newest_conversation_and_leaves_credentials_out() {
        let home = tempfile::tempdir().unwrap();
        let src = home.path().join(".claude");
        std::fs::create_dir_all(src.join("projects/-p")).unwrap();
        std::fs::write(src.join(".credentials.json"), "secret").unwrap();
        std::fs::write(src.join("projects/-p/old-1.jsonl"), "{}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(src.join("projects/-p/new-2.jsonl"), "{}").unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::open_in(root.path(), "claude").unwrap();
        let files = AgentFiles {
            state_dir: ".claude",
            credentials: &[".claude/.credentials.json", ".claude.json"],
            settings: &[],
        };
        assert_eq!(files.never_saved(), [".credentials.json"]);
        let (saved, _) = import(&store, &files, &src, None, "/w", &Limits::default()).unwrap();
        assert_eq!(saved.id(), "new-2");
        assert_eq!(saved.meta.origin, "import");
        assert!(saved.state_dir().join("projects/-p/old-1.jsonl").exists());
        assert!(!saved.state_dir().join(".credentials.json").exists());
        let out = root.path().join("export");
        export(&saved, &out, &Limits::default()).unwrap();
        assert!(out.join("projects/-p/new-2.jsonl").exists());
        assert!(
            export(&saved, &out, &Limits::default()).is_err(),
            "dest exists"
        );
    }
}

//! The saved sessions on the host: `~/.cci/sessions-<tool>/<id>/` holds
//! `meta.json` and `state/` (the agent's state folder). A session is made in
//! a private staging folder and swapped in by renames under a lock, so a
//! crash at any point leaves the old or the new session, never a mix; the
//! next [`Store::open`] puts back or removes what a crash left.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::archive::{read_small, write_private};
use super::id::SessionId;

/// What is known about a saved session (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Session id (also the agent's conversation id).
    pub id: String,
    /// The agent (`claude`...).
    pub tool: String,
    /// Host path of the workspace it belongs to.
    pub workspace: String,
    /// The container it was saved from (empty for imports).
    pub container: String,
    /// That container's slot (0 for imports).
    pub slot: u32,
    /// Whether that container was persistent.
    pub persistent: bool,
    /// When it was saved (RFC 3339, UTC).
    pub saved_at: String,
    /// The same, in seconds since 1970.
    pub saved_unix: u64,
    /// The cci that saved it.
    pub cci_version: String,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Files, folders and symlinks.
    pub entries: u64,
    /// Entries left out (special files, symlinks leaving the folder).
    pub skipped: u64,
    /// Executable files, relative to the state folder.
    #[serde(default)]
    pub executables: std::collections::BTreeSet<String>,
    /// Where it came from: `container`, or `import` of a host folder.
    #[serde(default)]
    pub origin: String,
}

/// A saved session.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its metadata.
    pub meta: Meta,
    /// Its folder.
    pub path: PathBuf,
}

impl Saved {
    /// The saved state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }
}

/// The saved sessions of one agent.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    tool: String,
}

/// A session being made; removed when dropped uncommitted.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    id: SessionId,
    done: bool,
}

impl Staging {
    /// Where its state goes (an empty private folder).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

const STAGING: &str = ".tmp-";
const OLD: &str = ".old-";

fn private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// The folder that holds every agent's `sessions-<tool>` folder:
/// `sessions_dir` (`[paths] sessions_dir` or `$CCI_SESSIONS_DIR`), else `~/.cci`.
pub fn root(sessions_dir: Option<&Path>) -> io::Result<PathBuf> {
    match sessions_dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            Ok(d.to_path_buf())
        }
        None => crate::state::dir(""),
    }
}

/// Now as (RFC 3339 UTC, seconds since 1970).
pub fn now() -> (String, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (rfc3339(secs), secs)
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, h, min, sec) = crate::state::utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}Z")
}

impl Store {
    /// The store of `tool` under [`root`] of `sessions_dir`, made private,
    /// with what a crash left put right.
    pub fn open(sessions_dir: Option<&Path>, tool: &str) -> io::Result<Store> {
        Store::open_in(&root(sessions_dir)?, tool)
    }

    /// The store of `tool` under `root`.
    pub fn open_in(root: &Path, tool: &str) -> io::Result<Store> {
        if tool.is_empty() || !tool.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(io::Error::other(format!("invalid agent name {tool:?}")));
        }
        let store = Store {
            dir: root.join(format!("sessions-{tool}")),
            tool: tool.to_string(),
        };
        private_dir(&store.dir)?;
        store.recover()?;
        Ok(store)
    }

    /// Every agent's store under [`root`] of `sessions_dir`.
    pub fn all(sessions_dir: Option<&Path>) -> io::Result<Vec<Store>> {
        let root = root(sessions_dir)?;
        let mut stores = Vec::new();
        for e in fs::read_dir(&root)? {
            let name = e?.file_name();
            let Some(tool) = name.to_str().and_then(|n| n.strip_prefix("sessions-")) else {
                continue;
            };
            if let Ok(s) = Store::open_in(&root, tool) {
                stores.push(s);
            }
        }
        stores.sort_by(|a, b| a.tool.cmp(&b.tool));
        Ok(stores)
    }

    /// The agent.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> io::Result<File> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        fs::set_permissions(self.dir.join(".lock"), fs::Permissions::from_mode(0o600))?;
        f.lock()?;
        Ok(f)
    }

    /// Put back a session whose replacement a crash interrupted; remove
    /// staging folders whose process is gone.
    fn recover(&self) -> io::Result<()> {
        let _lock = self.lock()?;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(rest) = name.strip_prefix(OLD) {
                // .old-<pid>-<n>-<id>
                let Some(id) = rest.splitn(3, '-').nth(2) else {
                    continue;
                };
                let live = self.dir.join(id);
                if id.parse::<SessionId>().is_ok() && !live.exists() {
                    fs::rename(e.path(), &live)?;
                } else if !live_pid(rest) {
                    fs::remove_dir_all(e.path())?;
                }
            } else if let Some(rest) = name.strip_prefix(STAGING)
                && !live_pid(rest)
            {
                fs::remove_dir_all(e.path())?;
            }
        }
        Ok(())
    }

    /// A private staging folder for session `id`.
    pub fn staging(&self, id: &SessionId) -> io::Result<Staging> {
        let path = self.dir.join(unique(STAGING, id));
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        fs::create_dir(path.join("state"))?;
        fs::set_permissions(path.join("state"), fs::Permissions::from_mode(0o700))?;
        Ok(Staging {
            path,
            id: id.clone(),
            done: false,
        })
    }

    /// Write `meta` into `staging` and make it the saved session `meta.id`,
    /// replacing an earlier save of it.
    pub fn commit(&self, mut staging: Staging, meta: Meta) -> io::Result<Saved> {
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        write_private(&staging.path.join("meta.json"), &json)?;
        File::open(&staging.path)?.sync_all()?;
        let live = self.dir.join(staging.id.as_str());
        let _lock = self.lock()?;
        let old = self.dir.join(unique(OLD, &staging.id));
        let had_old = match fs::rename(&live, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if let Err(e) = fs::rename(&staging.path, &live) {
            if had_old {
                let _ = fs::rename(&old, &live);
            }
            return Err(e);
        }
        staging.done = true;
        File::open(&self.dir)?.sync_all()?;
        if had_old {
            fs::remove_dir_all(&old)?;
        }
        Ok(Saved { meta, path: live })
    }

    /// The saved session `id`, if any.
    pub fn get(&self, id: &SessionId) -> io::Result<Option<Saved>> {
        let path = self.dir.join(id.as_str());
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let data = read_small(&path.join("meta.json"), 1 << 20)?;
        let meta: Meta = serde_json::from_slice(&data)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.join("meta.json").display())))?;
        if meta.id != id.as_str() {
            return Err(io::Error::other(format!(
                "{}: it names session {:?}",
                path.join("meta.json").display(),
                meta.id
            )));
        }
        Ok(Some(Saved { meta, path }))
    }

    /// Every saved session, newest first (unreadable ones are skipped with a warning).
    pub fn list(&self) -> io::Result<Vec<Saved>> {
        let mut all = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<SessionId>().ok()) else {
                continue;
            };
            match self.get(&id) {
                Ok(Some(s)) => all.push(s),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping saved session {id}: {e}"),
            }
        }
        all.sort_by(|a, b| (b.meta.saved_unix, &b.meta.id).cmp(&(a.meta.saved_unix, &a.meta.id)));
        Ok(all)
    }

    /// The newest saved session of `workspace`.
    pub fn newest_for(&self, workspace: &str) -> io::Result<Option<Saved>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|s| s.meta.workspace == workspace))
    }

    /// Remove saved session `id`; false when there was none.
    pub fn remove(&self, id: &SessionId) -> io::Result<bool> {
        let live = self.dir.join(id.as_str());
        let gone = self.dir.join(unique(STAGING, id));
        {
            let _lock = self.lock()?;
            match fs::rename(&live, &gone) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        fs::remove_dir_all(&gone)?;
        Ok(true)
    }
}

/// `<prefix><pid>-<n>-<id>`, unique to this process and call.
fn unique(prefix: &str, id: &SessionId) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{}-{n}-{id}", std::process::id())
}

/// Whether the pid at the start of `<pid>-...` is a live process.
fn live_pid(rest: &str) -> bool {
    let pid = rest.split('-').next().unwrap_or("");
    pid.parse::<u32>()
        .is_ok_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, ws: &str, at: u64) -> Meta {
        Meta {
            id: id.into(),
            tool: "claude".into(),
            workspace: ws.into(),
            container: "c".into(),
            slot: 1,
            persistent: false,
            saved_at: rfc3339(at),
            saved_unix: at,
            cci_version: "0".into(),
            bytes: 0,
            entries: 0,
            skipped: 0,
            executables: Default::default(),
            origin: "container".into(),
        }
    }

    fn save(store: &Store, id: &str, ws: &str, at: u64, content: &str) {
        let id: SessionId = id.parse().unwrap();
        let st = store.staging(&id).unwrap();
        fs::write(st.state_dir().join("f"), content).unwrap();
        store.commit(st, meta(id.as_str(), ws, at)).unwrap();
    }

    #[test]
    fn commit_replaces_and_newest_is_per_workspace() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open_in(root.path(), "claude").unwrap();
        save(&store, "a", "/w1", 10, "one");
        save(&store, "a", "/w1", 20, "two");
        save(&store, "b", "/w2", 30, "x");
        let a = store.get(&"a".parse().unwrap()).unwrap().unwrap();
        assert_eq!(fs::read_to_string(a.state_dir().join("f")).unwrap(), "two");
        assert_eq!(store.newest_for("/w1").unwrap().unwrap().id(), "a");
        assert_eq!(store.newest_for("/w2").unwrap().unwrap().id(), "b");
        assert!(store.newest_for("/w3").unwrap().is_none());
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(store.remove(&"a".parse().unwrap()).unwrap());
        assert!(!store.remove(&"a".parse().unwrap()).unwrap());
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn recovery_puts_back_an_interrupted_replacement() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open_in(root.path(), "claude").unwrap();
        save(&store, "a", "/w1", 10, "old");
        // A crash between the two renames: only ".old-" is left; and a
        // staging folder of a dead process.
        fs::rename(
            store.dir().join("a"),
            store.dir().join(".old-999999999-0-a"),
        )
        .unwrap();
        fs::create_dir(store.dir().join(".tmp-999999999-1-a")).unwrap();
        let store = Store::open_in(root.path(), "claude").unwrap();
        let a = store.get(&"a".parse().unwrap()).unwrap().unwrap();
        assert_eq!(fs::read_to_string(a.state_dir().join("f")).unwrap(), "old");
        assert!(!store.dir().join(".tmp-999999999-1-a").exists());
        // A staging folder dropped before its commit goes away.
        let st = store.staging(&"z".parse().unwrap()).unwrap();
        let p = st.path.clone();
        drop(st);
        assert!(!p.exists());
    }
}

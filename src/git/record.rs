//! What cci remembers about each git session on the host:
//! `~/.cci/git-sessions/<id>.json`, one file per session, written
//! atomically and private (0600 in a 0700 folder, see [`crate::state`]).
//! Ids are checked with [`names::check_session_id`], so a file name never
//! leaves the folder.

use super::{GitError, names};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The largest record file read.
const MAX_RECORD: u64 = 1 << 20;

/// One isolated git session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    /// The workspace id (as in container names).
    pub workspace: String,
    pub slot: u32,
    /// The session branch inside the container (`cci/<slot>`).
    pub branch: String,
    /// The host commit the session started from.
    pub base: String,
    /// Seconds since 1970.
    pub started: u64,
    /// The container's name.
    pub container: String,
    /// The host repository's top-level folder.
    pub repo_path: PathBuf,
    /// Where the clone is inside, below /workspace ("" for /workspace
    /// itself; a folder name when one session holds several repositories).
    #[serde(default)]
    pub dir: String,
    /// The session the container holds, shared by the records of its
    /// repositories ("": the record's own id).
    #[serde(default)]
    pub group: String,
    /// `--auto-merge BRANCH`: merged into this branch when the session ends
    /// ("": not).
    #[serde(default)]
    pub auto_merge: String,
}

/// A folder name for a repository inside a session: letters, digits, `.`,
/// `_` and `-`, not starting with `.` or `-`, at most 64 bytes.
pub fn dir_ok(dir: &str) -> bool {
    dir.len() <= 64
        && !dir.starts_with(['.', '-'])
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl SessionRecord {
    /// The container's session this record belongs to.
    pub fn group(&self) -> &str {
        if self.group.is_empty() {
            &self.id
        } else {
            &self.group
        }
    }

    /// The host ref that holds the session's commits.
    pub fn session_ref(&self) -> Result<String, GitError> {
        names::session_ref(&self.id, &self.branch)
    }

    fn check(&self) -> Result<(), GitError> {
        names::check_session_id(&self.id)?;
        if !self.group.is_empty() {
            names::check_session_id(&self.group)?;
        }
        if !self.auto_merge.is_empty() {
            names::check_branch(&self.auto_merge)?;
        }
        if !self.dir.is_empty() && !dir_ok(&self.dir) {
            return Err(GitError::InvalidSessionId {
                id: self.dir.clone(),
            });
        }
        names::check_branch(&self.branch)?;
        names::check_oid(&self.base)
    }
}

/// The folder of session records.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// `~/.cci/git-sessions`, created private.
    pub fn open() -> Result<SessionStore, GitError> {
        let dir = crate::state::dir("git-sessions")
            .map_err(|e| GitError::io("cannot create ~/.cci/git-sessions", e))?;
        Ok(SessionStore { dir })
    }

    /// A store in another folder (tests, or a custom state folder).
    pub fn at(dir: &Path) -> Result<SessionStore, GitError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| GitError::io(format!("cannot create {}", dir.display()), e))?;
        Ok(SessionStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, GitError> {
        names::check_session_id(id)?;
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Save (replace) a record.
    pub fn save(&self, rec: &SessionRecord) -> Result<(), GitError> {
        rec.check()?;
        let path = self.path(&rec.id)?;
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| GitError::io("cannot encode the session record", e.into()))?;
        crate::state::write_atomic(&path, &data)
            .map_err(|e| GitError::io(format!("cannot write {}", path.display()), e))
    }

    /// The record `id`, `None` when there is none.
    pub fn load(&self, id: &str) -> Result<Option<SessionRecord>, GitError> {
        let path = self.path(id)?;
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(GitError::io(format!("cannot read {}", path.display()), e)),
        };
        if !meta.is_file() || meta.len() > MAX_RECORD {
            return Err(GitError::io(
                format!("{} is not a session record", path.display()),
                std::io::Error::other("not a regular file of at most 1 MiB"),
            ));
        }
        let data = std::fs::read(&path)
            .map_err(|e| GitError::io(format!("cannot read {}", path.display()), e))?;
        let rec: SessionRecord = serde_json::from_slice(&data)
            .map_err(|e| GitError::io(format!("cannot parse {}", path.display()), e.into()))?;
        if rec.id != id {
            return Err(GitError::InvalidSessionId { id: rec.id });
        }
        rec.check()?;
        Ok(Some(rec))
    }

    /// Every readable record, sorted by start time then id; unreadable
    /// files are skipped.
    pub fn list(&self) -> Result<Vec<SessionRecord>, GitError> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| GitError::io(format!("cannot list {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if names::check_session_id(id).is_err() {
                continue;
            }
            if let Ok(Some(rec)) = self.load(id) {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Remove a record; whether there was one.
    pub fn remove(&self, id: &str) -> Result<bool, GitError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(GitError::io(format!("cannot remove {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, started: u64) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            workspace: "ws".into(),
            slot: 1,
            branch: "cci/1".into(),
            base: "a".repeat(40),
            started,
            container: "cci-ws-1".into(),
            repo_path: "/r".into(),
            dir: String::new(),
            group: String::new(),
            auto_merge: String::new(),
        }
    }

    #[test]
    fn records_round_trip_and_ids_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let s = SessionStore::at(d.path()).unwrap();
        s.save(&rec("b", 2)).unwrap();
        s.save(&rec("a", 1)).unwrap();
        assert_eq!(s.load("a").unwrap(), Some(rec("a", 1)));
        assert_eq!(s.load("zz").unwrap(), None);
        let ids: Vec<String> = s.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(rec("a", 1).session_ref().unwrap(), "refs/cci/a/cci/1");
        assert!(s.save(&rec("../x", 1)).is_err());
        assert!(s.load("../x").is_err());
        let mut bad = rec("c", 1);
        bad.branch = "-x".into();
        assert!(s.save(&bad).is_err());
        std::fs::write(d.path().join("d.json"), b"{not json").unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(s.remove("a").unwrap());
        assert!(!s.remove("a").unwrap());
        assert_eq!(s.list().unwrap().len(), 1);
    }
}

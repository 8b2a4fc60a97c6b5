//! The seed mirror: one bare repository per user repository, owned by cci
//! (`~/.cci/git-mirrors/<key>.git`), holding what isolated sessions of it
//! were given and nothing else. A session's start commit is added to it by
//! a local bundle of only the objects it lacks, so the second session of a
//! repository moves what changed since the first, not the repository again.
//!
//! The container gets the mirror as a read-only mount and clones from it
//! with `--shared`: its clone borrows the mirror's objects instead of
//! copying them, so a large repository is ready as soon as it is checked
//! out. Root inside cannot make a read-only mount writable, so what one
//! session's agent sees there is exactly what cci put there: objects of the
//! user's repository (the start commits of every isolated session of it,
//! including commits carrying uncommitted changes), never objects a session
//! made. Objects are never pruned from it (a kept container's clone keeps
//! borrowing them); `cci clean --git-mirrors` removes mirrors.

use std::path::{Path, PathBuf};

use crate::git::{GitError, Repo};

/// Where mirrors live, below `~/.cci`.
const DIR: &str = "git-mirrors";

/// The ref prefix of session starts in a mirror (`refs/heads/cci-seed-<id>`).
pub const SEED_PREFIX: &str = "cci-seed-";

/// How many of the newest session starts a new bundle is cut against (each
/// costs two git calls; older refs are dropped, their objects stay).
const KEEP_REFS: usize = 32;

/// A repository's mirror.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The bare repository.
    pub dir: PathBuf,
}

/// The mirror folder of every repository.
pub fn root() -> Result<PathBuf, GitError> {
    crate::state::dir(DIR).map_err(|e| GitError::io("cannot create ~/.cci/git-mirrors", e))
}

impl Mirror {
    /// The mirror of `repo` (made when missing): one per repository, shared
    /// by its worktrees.
    pub fn of(repo: &Repo) -> Result<Mirror, GitError> {
        use sha2::{Digest, Sha256};
        let common = repo
            .common_dir
            .canonicalize()
            .unwrap_or_else(|_| repo.common_dir.clone());
        let key = Sha256::digest(common.as_os_str().as_encoded_bytes());
        let key: String = key[..10].iter().map(|b| format!("{b:02x}")).collect();
        let dir = root()?.join(format!("{key}.git"));
        let mirror = Mirror { dir };
        let _lock = mirror.lock()?;
        if !mirror.dir.join("objects").is_dir() {
            mirror.init(repo)?;
        }
        Ok(mirror)
    }

    /// Made in a scratch folder and renamed into place, so no session ever
    /// sees half of one.
    fn init(&self, repo: &Repo) -> Result<(), GitError> {
        let tmp = self
            .dir
            .with_extension(format!("new-{}", uuid::Uuid::new_v4()));
        let _guard = crate::git::snapshot::Cleanup(tmp.clone());
        let git = repo.git();
        git.cmd(None)
            .args(["init", "-q", "--bare", "--template="])
            .arg(&tmp)
            .ok()?;
        let git_dir = format!("--git-dir={}", tmp.display());
        // Readable inside whatever the user's umask (the account there may
        // not be its owner); automatic gc would prune what clones borrow.
        for (k, v) in [("core.sharedRepository", "0644"), ("gc.auto", "0")] {
            git.cmd(None).arg(&git_dir).args(["config", k, v]).ok()?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::rename(&tmp, &self.dir)
            .map_err(|e| GitError::io(format!("cannot create {}", self.dir.display()), e))
    }

    /// One writer at a time (sessions of a repository may start together).
    fn lock(&self) -> Result<std::fs::File, GitError> {
        let path = self.dir.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| GitError::io(format!("cannot open {}", path.display()), e))?;
        file.lock()
            .map_err(|e| GitError::io(format!("cannot lock {}", path.display()), e))?;
        Ok(file)
    }

    fn git_dir(&self) -> String {
        format!("--git-dir={}", self.dir.display())
    }

    /// Whether the mirror holds commit `id` (and so all it reaches).
    fn has(&self, repo: &Repo, id: &str) -> Result<bool, GitError> {
        let out = repo
            .git()
            .cmd(None)
            .arg(self.git_dir())
            .args(["cat-file", "-e", "--end-of-options"])
            .arg(format!("{id}^{{commit}}"))
            .run()?;
        Ok(out.success())
    }

    /// The session starts held, newest first.
    fn starts(&self, repo: &Repo) -> Result<Vec<(String, String)>, GitError> {
        let out = repo
            .git()
            .cmd(None)
            .arg(self.git_dir())
            .args([
                "for-each-ref",
                "--sort=-creatordate",
                "--format=%(objectname) %(refname)",
                &format!("refs/heads/{SEED_PREFIX}*"),
            ])
            .ok_text()?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect())
    }

    /// Add commit `start` of `repo` as `refs/heads/cci-seed-<id>`, bringing
    /// in only the objects the mirror lacks (through `scratch`, a private
    /// file path). Returns the bytes that came in (0: all were there).
    pub fn add(&self, repo: &Repo, start: &str, id: &str, scratch: &Path) -> Result<u64, GitError> {
        crate::git::names::check_oid(start)?;
        crate::git::names::check_branch(&format!("{SEED_PREFIX}{id}"))?;
        let _lock = self.lock()?;
        let starts = self.starts(repo)?;
        let mut bytes = 0;
        if !self.has(repo, start)? {
            let have: Vec<String> = starts
                .iter()
                .take(KEEP_REFS)
                .map(|(c, _)| c.clone())
                .collect();
            let _file = crate::git::snapshot::Cleanup(scratch.to_path_buf());
            let info = repo.bundle_to(start, "cci-seed", &have, scratch)?;
            bytes = info.bytes;
            repo.git()
                .cmd(None)
                .arg(self.git_dir())
                .args(["bundle", "unbundle"])
                .arg(scratch)
                .ok()?;
        }
        let git = |args: &[&str]| repo.git().cmd(None).arg(self.git_dir()).args(args).ok();
        git(&[
            "update-ref",
            &format!("refs/heads/{SEED_PREFIX}{id}"),
            start,
        ])?;
        for (_, old) in starts.iter().skip(KEEP_REFS) {
            git(&["update-ref", "-d", old])?;
        }
        Ok(bytes)
    }
}

/// How recently used a mirror no container mounts is still kept (a session
/// may be starting with it).
const IN_USE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A mirror `cci clean --git-mirrors` may remove.
#[derive(Debug, Clone)]
pub struct Unused {
    pub dir: PathBuf,
    /// Its size on disk in bytes.
    pub bytes: u64,
}

/// Mirrors no container of any project mounts and no session used in the
/// last hour.
pub async fn unused(client: &crate::incus::Client) -> Result<Vec<Unused>, crate::incus::Error> {
    let mounted: std::collections::HashSet<PathBuf> = client
        .instances_all_projects()
        .await?
        .iter()
        .flat_map(|i| i.devices.values())
        .filter_map(|d| d.get("source"))
        .map(PathBuf::from)
        .collect();
    let Ok(root) = root() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let dir = e.path();
        if dir.extension().is_none_or(|x| x != "git") || mounted.contains(&dir) {
            continue;
        }
        let recent = std::fs::metadata(dir.join("refs/heads"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < IN_USE);
        if !recent {
            let bytes = size(&dir);
            out.push(Unused { dir, bytes });
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

/// Bytes below `dir` (links not followed).
fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Remove mirror `dir` (no session may be adding to it meanwhile).
pub fn remove(dir: &Path) -> std::io::Result<()> {
    let mirror = Mirror {
        dir: dir.to_path_buf(),
    };
    let lock = mirror.lock().map_err(std::io::Error::other)?;
    std::fs::remove_dir_all(dir)?;
    let _ = std::fs::remove_file(dir.with_extension("lock"));
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "safe.directory=*",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_second_start_brings_only_what_changed() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        sh(ws.path(), &["init", "-q", "-b", "main"]);
        let big: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        std::fs::write(ws.path().join("big.txt"), &big).unwrap();
        sh(ws.path(), &["add", "-A"]);
        sh(ws.path(), &["commit", "-q", "-m", "one"]);
        let repo =
            Repo::discover_with(crate::git::Git::new().with_home(home.path()), ws.path()).unwrap();
        let m = Mirror {
            dir: home.path().join("m.git"),
        };
        m.init(&repo).unwrap();
        let first = sh(ws.path(), &["rev-parse", "HEAD"]);
        let scratch = home.path().join("s.bundle");
        let full = m.add(&repo, &first, "a", &scratch).unwrap();
        assert!(full > 100_000, "{full}");
        assert!(!scratch.exists());
        assert_eq!(
            m.add(&repo, &first, "b", &scratch).unwrap(),
            0,
            "nothing new"
        );
        std::fs::write(ws.path().join("small.txt"), "x\n").unwrap();
        sh(ws.path(), &["add", "-A"]);
        sh(ws.path(), &["commit", "-q", "-m", "two"]);
        let second = sh(ws.path(), &["rev-parse", "HEAD"]);
        let inc = m.add(&repo, &second, "c", &scratch).unwrap();
        assert!(inc > 0 && inc < 2_000, "{inc}");
        assert!(m.has(&repo, &second).unwrap());
        let refs = m.starts(&repo).unwrap();
        assert_eq!(refs.len(), 3);
        // Files inside are readable by anyone (the account inside may not
        // own them), whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(m.dir.join("objects"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o005, 0o005, "{mode:o}");
    }
}

//! The commit a session starts from ([`Repo::snapshot`]) and the bundle that
//! carries it into the container ([`Repo::bundle_to`]).
//!
//! Uncommitted changes are carried as one commit on top of HEAD built in a
//! temporary index (a copy of the user's, so unchanged files are not hashed
//! again): the user's index and working tree are not touched. Ignored files
//! are never included (`git add -A` honours `.gitignore`). The bundle is
//! written from a scratch repository that borrows the user's objects
//! (`objects/info/alternates`), so no ref is created in the user's
//! repository, not even for a moment.

use super::{GitError, Repo, names};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The message of the commit that carries uncommitted changes.
pub const CARRY_MESSAGE: &str = "cci: uncommitted changes carried in from the host";

/// Where a session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// HEAD when the snapshot was taken.
    pub base: String,
    /// The session's first commit: `base`, or a commit on top of it with
    /// the uncommitted changes.
    pub start: String,
    /// Whether uncommitted changes were carried (`start != base`).
    pub carried: bool,
    /// The paths whose content the carry commit changes (raw, escape before
    /// printing).
    pub paths: Vec<String>,
}

/// A bundle written by [`Repo::bundle_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The commit `refs/heads/<branch>` points at in the bundle.
    pub start: String,
    /// Excluded commits the host knows (the receiver must have them: they
    /// are the bundle's prerequisites when reachable from `start`).
    pub excluded: Vec<String>,
    /// Excluded commits the host does not know (left out of the command).
    pub skipped: Vec<String>,
}

/// A unique name for temporary files.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Removes a file or folder when dropped.
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("lock"));
        }
    }
}

impl Repo {
    /// Changed, staged and untracked (not ignored) paths, as `git status`
    /// shows them (`XY path`, raw).
    pub fn changes(&self) -> Result<Vec<String>, GitError> {
        let out = self
            .cmd()
            .args([
                "status",
                "--porcelain=v1",
                "-z",
                "--no-renames",
                "--untracked-files=all",
                "--ignore-submodules=none",
            ])
            .ok()?;
        Ok(out
            .stdout
            .split(|&b| b == 0)
            .filter(|r| r.len() > 3)
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect())
    }

    /// The commit to start a session from. With changes and
    /// `carry_uncommitted`, a commit on top of HEAD holding them; with
    /// changes and not `carry_uncommitted`, [`GitError::Dirty`].
    pub fn snapshot(&self, carry_uncommitted: bool) -> Result<Snapshot, GitError> {
        let base = self.resolve_commit("HEAD")?.ok_or(GitError::NoCommits)?;
        let changes = self.changes()?;
        let clean = Snapshot {
            base: base.clone(),
            start: base.clone(),
            carried: false,
            paths: Vec::new(),
        };
        if changes.is_empty() {
            return Ok(clean);
        }
        if !carry_uncommitted {
            return Err(GitError::Dirty {
                paths: changes.iter().map(|c| c[3..].to_string()).collect(),
            });
        }
        // A private copy of the index next to the real one (split-index
        // files resolve there too); removed whatever happens.
        let tmp = self.git_dir.join(unique("cci-carry-index"));
        let _guard = Cleanup(tmp.clone());
        let real = self.git_dir.join("index");
        if real.exists() {
            std::fs::copy(&real, &tmp)
                .map_err(|e| GitError::io(format!("cannot copy {}", real.display()), e))?;
        } else {
            self.cmd()
                .env("GIT_INDEX_FILE", &tmp)
                .args(["read-tree", "--end-of-options", &base])
                .ok()?;
        }
        self.cmd()
            .env("GIT_INDEX_FILE", &tmp)
            .args(["add", "-A", "--", "."])
            .ok()?;
        let tree = self
            .cmd()
            .env("GIT_INDEX_FILE", &tmp)
            .arg("write-tree")
            .ok_text()?;
        let head_tree = self
            .cmd()
            .args(["rev-parse", "--verify", "--end-of-options"])
            .arg(format!("{base}^{{tree}}"))
            .ok_text()?;
        if tree == head_tree {
            return Ok(clean);
        }
        let paths = self.tree_changes(&head_tree, &tree)?;
        let start = self.commit_tree(&tree, &[&base], CARRY_MESSAGE.as_bytes())?;
        Ok(Snapshot {
            base,
            start,
            carried: true,
            paths,
        })
    }

    /// Paths that differ between two trees or commits (raw).
    pub(crate) fn tree_changes(&self, a: &str, b: &str) -> Result<Vec<String>, GitError> {
        let out = self
            .cmd()
            .args(["diff-tree", "-r", "-z", "--no-renames", "--name-only"])
            .args(["--end-of-options", a, b])
            .ok()?;
        Ok(out
            .stdout
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect())
    }

    /// Variables that give commit-tree an identity when the user has none.
    pub(crate) fn ident_env(&self) -> Result<Vec<(&'static str, String)>, GitError> {
        let out = self.cmd().args(["var", "GIT_COMMITTER_IDENT"]).run()?;
        if out.success() {
            return Ok(Vec::new());
        }
        Ok(vec![
            ("GIT_AUTHOR_NAME", "cci".into()),
            ("GIT_AUTHOR_EMAIL", "cci@localhost".into()),
            ("GIT_COMMITTER_NAME", "cci".into()),
            ("GIT_COMMITTER_EMAIL", "cci@localhost".into()),
        ])
    }

    /// A commit of `tree` with `parents` and `message` (from stdin), by the
    /// user (or `author`: name, email, date), returning its id.
    pub(crate) fn commit_tree_as(
        &self,
        tree: &str,
        parents: &[&str],
        message: &[u8],
        author: Option<(&str, &str, &str)>,
    ) -> Result<String, GitError> {
        let mut c = self.cmd();
        for (k, v) in self.ident_env()? {
            c = c.env(k, v);
        }
        if let Some((name, email, date)) = author {
            c = c
                .env("GIT_AUTHOR_NAME", name)
                .env("GIT_AUTHOR_EMAIL", email)
                .env("GIT_AUTHOR_DATE", date);
        }
        c = c.arg("commit-tree");
        for p in parents {
            names::check_oid(p)?;
            c = c.arg("-p").arg(p);
        }
        names::check_oid(tree)?;
        let id = c.arg(tree).stdin(message.to_vec()).ok_text()?;
        names::check_oid(&id)?;
        Ok(id)
    }

    pub(crate) fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &[u8],
    ) -> Result<String, GitError> {
        self.commit_tree_as(tree, parents, message, None)
    }

    /// Write a bundle to `out` whose only ref, `refs/heads/<branch>`, points
    /// at `start`, leaving out what is reachable from `exclude` (commits the
    /// receiver already has; unknown ones are skipped).
    pub fn bundle_to(
        &self,
        start: &str,
        branch: &str,
        exclude: &[String],
        out: &Path,
    ) -> Result<BundleInfo, GitError> {
        names::check_branch(branch)?;
        names::check_oid(start)?;
        if self.resolve_commit(start)?.as_deref() != Some(start) {
            return Err(GitError::InvalidCommitId {
                given: start.to_string(),
            });
        }
        let (mut excluded, mut skipped) = (Vec::new(), Vec::new());
        for x in exclude {
            names::check_oid(x)?;
            match self.resolve_commit(x)? {
                Some(id) => excluded.push(id),
                None => skipped.push(x.clone()),
            }
        }
        for x in &excluded {
            if self.is_ancestor(start, x)? {
                return Err(GitError::EmptyBundle {
                    start: start.to_string(),
                });
            }
        }
        let out = if out.is_absolute() {
            out.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| GitError::io("current folder", e))?
                .join(out)
        };
        // A scratch bare repository borrowing the user's objects.
        let scratch = std::env::temp_dir().join(unique("cci-bundle"));
        {
            use std::os::unix::fs::DirBuilderExt;
            // Private, and never a folder (or link) someone else made.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&scratch)
                .map_err(|e| GitError::io(format!("cannot create {}", scratch.display()), e))?;
        }
        let _guard = Cleanup(scratch.clone());
        self.git
            .cmd(None)
            .args(["init", "-q", "--bare", "--template="])
            .arg(&scratch)
            .ok()?;
        let objects = self.common_dir.join("objects");
        let objects = objects.canonicalize().unwrap_or(objects);
        let mut alt = quote_alternate(&objects.into_os_string().into_encoded_bytes());
        alt.push(b'\n');
        std::fs::write(scratch.join("objects/info/alternates"), alt)
            .map_err(|e| GitError::io("cannot write the scratch repository", e))?;
        let git_dir = format!("--git-dir={}", scratch.display());
        self.git
            .cmd(None)
            .arg(&git_dir)
            .args(["update-ref", &format!("refs/heads/{branch}"), start])
            .ok()?;
        self.git
            .cmd(None)
            .arg(&git_dir)
            .args(["bundle", "create", "--quiet"])
            .arg(&out)
            .arg(format!("refs/heads/{branch}"))
            .args(excluded.iter().map(|x| format!("^{x}")))
            .ok()?;
        let bytes = std::fs::metadata(&out)
            .map_err(|e| GitError::io(format!("cannot read {}", out.display()), e))?
            .len();
        Ok(BundleInfo {
            path: out,
            bytes,
            start: start.to_string(),
            excluded,
            skipped,
        })
    }
}

/// A path as one line of `objects/info/alternates`: as it is when plain,
/// else C-quoted (git unquotes a line that starts with `"`), so a newline,
/// quote or backslash in a folder name cannot break it.
fn quote_alternate(path: &[u8]) -> Vec<u8> {
    let plain = path
        .iter()
        .all(|&b| b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\');
    if plain {
        return path.to_vec();
    }
    let mut out = vec![b'"'];
    for &b in path {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

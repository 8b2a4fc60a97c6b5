//! The host side of isolated git sessions: take a snapshot of the user's
//! repository, pack it into a bundle for the container, receive the session's
//! commits back into `refs/cci/<session>/<branch>`, review them (log, diff,
//! files) and merge them (merge, squash, select), or discard them.
//!
//! # Threat model
//!
//! The agent in the container is hostile and controls every byte of the
//! session repository: commits, trees, blobs, `.gitattributes`,
//! `.gitmodules`, file names, commit messages, ref names and whatever
//! configuration and hooks it puts in its own clone. **Nothing it wrote may
//! execute on the host.** What holds:
//!
//! - Only objects cross over, never configuration: a bundle carries commits,
//!   trees and blobs, and a ref name cci checks ([`names`]). The session's
//!   `.git/config`, hooks, `core.fsmonitor`, `core.hooksPath` stay in the
//!   container.
//! - Every host git command goes through one runner ([`run::Git`]) that
//!   clears inherited `GIT_*` variables, ignores the system configuration and
//!   switches off hooks, fsmonitor, external diff, textconv, pagers,
//!   submodule recursion and every transport.
//! - Agent-chosen strings never become options: ref names pass
//!   [`names::check_branch`] (stricter than `check-ref-format`), commit ids
//!   must be full hex ids, and `--end-of-options` / `--` come before anything
//!   not written by cci.
//! - A received bundle is read before use: exactly one ref, the expected
//!   `refs/heads/<branch>` naming a commit, prerequisites present
//!   (`git bundle verify`); its pack goes through
//!   `index-pack --strict` (every object fsck-checked: `.git` tree entries,
//!   `.gitmodules` option injection ..., all links present) and only then
//!   does cci set `refs/cci/<session>/<branch>` (no tags, no `FETCH_HEAD`,
//!   no other ref).
//! - Review reads objects only (`cat-file --batch`, `diff-tree`-style two-tree
//!   diffs with `--no-ext-diff --no-textconv`), never a checkout.
//! - Merges are computed without a working tree (`merge-tree --write-tree`,
//!   `commit-tree`, `update-ref`); a conflict writes no ref, no index and no
//!   file (merge-tree may leave unreferenced objects in the object store,
//!   which `git gc` removes). Only a merge into the checked-out branch touches
//!   the working tree, with `read-tree -m -u` (two-tree fast-forward of the
//!   index, refused when it would overwrite uncommitted changes).
//!
//! Attributes in the session's tree (`filter=`, `diff=`, `merge=`) can only
//! *name* drivers; the commands are defined by configuration, and only the
//! host's configuration is read. With no host driver of that name nothing
//! runs. A driver the **user** defined (for example `filter.lfs.*` in
//! `~/.gitconfig`) is the user's own program: its `smudge` runs when a merge
//! into the checked-out branch writes files that the session's
//! `.gitattributes` route through it (and its `clean` when git re-reads
//! racily clean files just written), exactly as for any `git pull`. Review
//! (log, diff, files), receive, discard and merges into another branch run
//! no driver (`diff` drivers are off through `--no-textconv`).
//!
//! Text from the session (subjects, paths, messages) is returned raw in the
//! data structures; render it with [`printable`] / [`printable_lines`] (or
//! `crate::config::printable`) before it reaches a terminal. Error messages
//! are already escaped.
//!
//! cci's git never contacts a network: a partial clone's missing objects
//! are not fetched (operations that need them fail), and submodules are
//! neither fetched nor updated.
//!
//! Minimum git: 2.38 (`merge-tree --write-tree`); checked by
//! [`Repo::discover`]. Cherry-picks are made with synthetic merge bases, so
//! `merge-tree --merge-base` (2.40) is not needed.

mod error;
pub mod merge;
pub mod names;
pub mod receive;
pub mod record;
pub mod review;
pub mod run;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use error::GitError;
pub use merge::{MergeKind, MergeMode, MergeOutcome};
pub use receive::Received;
pub use record::{SessionRecord, SessionStore};
pub use review::{Commit, DiffFile, DiffReport, TreeEntry};
pub use run::Git;
pub use snapshot::{BundleInfo, Snapshot};

use std::path::{Path, PathBuf};

/// The oldest git cci works with.
pub const MIN_GIT: (u32, u32) = (2, 38);

/// `s` with control characters escaped, for one terminal line.
pub fn printable(s: &str) -> String {
    crate::config::printable(s)
}

/// `s` with control characters but newline and tab escaped (patch text).
pub fn printable_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| {
            line.split('\t')
                .map(crate::config::printable)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The user's repository (a working tree, not bare).
#[derive(Debug, Clone)]
pub struct Repo {
    git: Git,
    /// Top-level folder of the working tree.
    pub top: PathBuf,
    /// This working tree's git folder (`.git`, or `.git/worktrees/x`).
    pub git_dir: PathBuf,
    /// The folder holding objects and refs shared by all worktrees.
    pub common_dir: PathBuf,
    /// The checked-out branch (short name), `None` when HEAD is detached.
    pub branch: Option<String>,
    /// HEAD's commit, `None` on an unborn branch.
    pub head: Option<String>,
    /// Paths of submodules (gitlinks) in HEAD's tree: not carried into the
    /// session (the container gets the gitlink, not the submodule's files).
    pub submodules: Vec<String>,
    /// Whether HEAD's tree has a `.gitmodules` file.
    pub has_gitmodules: bool,
    /// Whether a `.gitattributes` in HEAD's tree routes files through
    /// `filter=lfs`: the session gets the pointer files, not the content.
    pub uses_lfs: bool,
}

impl Repo {
    /// The repository that holds `path`, with the `git` on `PATH`.
    pub fn discover(path: &Path) -> Result<Repo, GitError> {
        Repo::discover_with(Git::new(), path)
    }

    /// The repository that holds `path`, run with `git`.
    pub fn discover_with(git: Git, path: &Path) -> Result<Repo, GitError> {
        let (major, minor, patch) = git.version()?;
        if (major, minor) < MIN_GIT {
            return Err(GitError::GitTooOld {
                found: format!("{major}.{minor}.{patch}"),
                needed: "2.38",
            });
        }
        let not_repo = || GitError::NotARepository {
            path: path.to_path_buf(),
        };
        if !path.is_dir() {
            return Err(not_repo());
        }
        let out = git
            .cmd(Some(path))
            .args(["rev-parse", "--is-bare-repository"])
            .run()?;
        if !out.success() {
            let said = out.stderr_text();
            if said.contains("dubious ownership") {
                // Owned by another user: git will not touch it for us, and
                // cci does not override that.
                return Err(GitError::Command {
                    args: "rev-parse".into(),
                    status: "refused".into(),
                    stderr: said,
                });
            }
            return Err(not_repo());
        }
        // One value per call: a path may hold a newline.
        let bare = out.text().starts_with("true");
        let git_dir = PathBuf::from(
            git.cmd(Some(path))
                .args(["rev-parse", "--absolute-git-dir"])
                .ok_text()?,
        );
        if bare {
            return Err(GitError::Bare {
                path: path.to_path_buf(),
            });
        }
        let top = git
            .cmd(Some(path))
            .args(["rev-parse", "--show-toplevel"])
            .run()?;
        if !top.success() || top.text().is_empty() {
            // Inside the .git folder itself.
            return Err(not_repo());
        }
        let top = PathBuf::from(top.text());
        let common = git
            .cmd(Some(&top))
            .args(["rev-parse", "--git-common-dir"])
            .ok_text()?;
        let common_dir = if Path::new(&common).is_absolute() {
            PathBuf::from(common)
        } else {
            top.join(common)
        };
        let mut repo = Repo {
            git,
            top,
            git_dir,
            common_dir,
            branch: None,
            head: None,
            submodules: Vec::new(),
            has_gitmodules: false,
            uses_lfs: false,
        };
        repo.branch = repo.current_branch()?;
        repo.head = repo.resolve_commit("HEAD")?;
        if let Some(head) = repo.head.clone() {
            repo.scan_tree(&head)?;
        }
        Ok(repo)
    }

    /// A git command in the top-level folder.
    pub(crate) fn cmd(&self) -> run::Cmd<'_> {
        self.git.cmd(Some(&self.top))
    }

    /// The git runner this repository uses.
    pub fn git(&self) -> &Git {
        &self.git
    }

    /// The checked-out branch now (short name), `None` when detached.
    pub fn current_branch(&self) -> Result<Option<String>, GitError> {
        let out = self.cmd().args(["symbolic-ref", "-q", "HEAD"]).run()?;
        Ok(out
            .success()
            .then(|| out.text())
            .and_then(|r| r.strip_prefix("refs/heads/").map(str::to_string)))
    }

    /// The full commit id `rev` names, `None` when it names none. `rev` is
    /// cci's own text or a checked name; it still goes after
    /// `--end-of-options`.
    pub fn resolve_commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let out = self
            .cmd()
            .args(["rev-parse", "-q", "--verify", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .run()?;
        let id = out.text();
        Ok((out.success() && names::is_oid(&id)).then_some(id))
    }

    /// Whether `a` is an ancestor of (or equal to) `b`.
    pub(crate) fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, GitError> {
        let out = self
            .cmd()
            .args(["merge-base", "--is-ancestor", "--end-of-options", a, b])
            .run()?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(run::failed("merge-base --is-ancestor", &out)),
        }
    }

    /// The null object id of this repository's hash (for "must not exist").
    pub(crate) fn null_oid(&self, like: &str) -> String {
        "0".repeat(like.len())
    }

    /// Submodules and LFS in HEAD's tree.
    fn scan_tree(&mut self, head: &str) -> Result<(), GitError> {
        let out = self
            .cmd()
            .args([
                "ls-tree",
                "-r",
                "-z",
                "--full-tree",
                "--end-of-options",
                head,
            ])
            .ok()?;
        let mut attrs = Vec::new();
        for rec in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let Some((meta, path)) = rec.split_once('\t') else {
                continue;
            };
            let mut m = meta.split(' ');
            let (mode, _kind, oid) = (m.next(), m.next(), m.next());
            if mode == Some("160000") {
                self.submodules.push(path.to_string());
            }
            if path == ".gitmodules" {
                self.has_gitmodules = true;
            }
            if (path == ".gitattributes" || path.ends_with("/.gitattributes"))
                && let Some(oid) = oid
            {
                attrs.push(oid.to_string());
            }
        }
        for oid in attrs.iter().take(1000) {
            let blob = self
                .cmd()
                .args(["cat-file", "blob", "--end-of-options", oid])
                .ok()?;
            if String::from_utf8_lossy(&blob.stdout).contains("filter=lfs") {
                self.uses_lfs = true;
                break;
            }
        }
        Ok(())
    }
}

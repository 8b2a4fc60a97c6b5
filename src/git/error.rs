//! What can go wrong in the host-side git work. Every message that may quote
//! text from the session (paths, ref names, git's stderr about them) is shown
//! with control characters escaped, so printing an error is safe on a terminal.

use super::printable_lines;

/// Paths (or commits) joined for a message, escaped, at most 20 listed.
fn list(items: &[String]) -> String {
    let mut shown: Vec<String> = items
        .iter()
        .take(20)
        .map(|p| crate::config::printable(p))
        .collect();
    if items.len() > 20 {
        shown.push(format!("... and {} more", items.len() - 20));
    }
    shown.join(", ")
}

/// An error of the host-side git layer.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The folder is not inside a git working tree.
    #[error(
        "{} is not a git repository; run without --isolated to mount it instead",
        crate::config::printable(&.path.display().to_string())
    )]
    NotARepository { path: std::path::PathBuf },
    /// A bare repository has no working tree to start from.
    #[error(
        "{} is a bare git repository; isolated sessions need a working tree",
        crate::config::printable(&.path.display().to_string())
    )]
    Bare { path: std::path::PathBuf },
    /// HEAD has no commit yet.
    #[error("the repository has no commits yet; commit something first")]
    NoCommits,
    /// Uncommitted changes and `--clean-only`.
    #[error("the working tree has uncommitted changes (--clean-only): {}", list(.paths))]
    Dirty { paths: Vec<String> },
    /// A branch name that fails the strict check.
    #[error("invalid branch name {:?}: {reason}", crate::config::printable(.name))]
    InvalidBranch { name: String, reason: &'static str },
    /// A session id that is not a safe file and ref name.
    #[error("invalid session id {:?}: letters, digits, '-' and '_' only, 1 to 64, not starting with '-'", crate::config::printable(.id))]
    InvalidSessionId { id: String },
    /// Something that should be a full commit id is not.
    #[error("{:?} is not a full commit id", crate::config::printable(.given))]
    InvalidCommitId { given: String },
    /// The bundle does not hold exactly the expected ref, or is malformed.
    #[error("rejected bundle: {}", printable_lines(.reason))]
    BadBundle { reason: String },
    /// The bundle builds on commits this repository does not have.
    #[error("the bundle needs commits this repository does not have: {}", list(.commits))]
    MissingPrerequisites { commits: Vec<String> },
    /// Nothing to put in a bundle: the receiver has everything already.
    #[error("nothing to send: the receiver already has {start}")]
    EmptyBundle { start: String },
    /// A merge with conflicts; nothing was changed.
    #[error("the merge conflicts in: {}; nothing was changed", list(.paths))]
    Conflict { paths: Vec<String> },
    /// Updating the working tree would overwrite uncommitted changes.
    #[error("merging would overwrite uncommitted changes; commit or stash them first: {}", printable_lines(.detail))]
    WouldOverwrite { detail: String },
    /// A merge into the current branch while HEAD is detached.
    #[error("HEAD is detached: give a branch to merge into (--into BRANCH)")]
    DetachedHead,
    /// The target branch is checked out in another worktree.
    #[error("branch {:?} is checked out in another worktree ({}); merge there or choose another branch", crate::config::printable(.branch), crate::config::printable(.worktree))]
    CheckedOutElsewhere { branch: String, worktree: String },
    /// A selected commit is not one of the session's commits.
    #[error("{} is not a commit of this session", crate::config::printable(.commit))]
    NotInSession { commit: String },
    /// A selected commit is a merge (it cannot be picked on its own).
    #[error("{commit} is a merge commit and cannot be picked on its own")]
    MergeCommitSelected { commit: String },
    /// The host's git is too old.
    #[error(
        "git {found} is too old: cci needs git {needed} or newer (for `git merge-tree --write-tree`)"
    )]
    GitTooOld { found: String, needed: &'static str },
    /// A git command failed.
    #[error("git {} failed ({status}): {}", crate::config::printable(.args), printable_lines(.stderr.trim_end()))]
    Command {
        args: String,
        status: String,
        stderr: String,
    },
    /// Running git (or a file operation around it) failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GitError::Io {
            context: context.into(),
            source,
        }
    }
}

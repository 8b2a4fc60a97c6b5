//! Applying a session to a host branch ([`Repo::merge`]) without a
//! checkout: the result is computed with `git merge-tree --write-tree`
//! (a merge, a squash, or one cherry-pick per selected commit), committed
//! with `commit-tree` and published with `update-ref` (old value checked).
//! A conflict stops before any ref, index or file changes. Only a merge into
//! the checked-out branch updates the working tree, with a two-tree
//! `read-tree -m -u`, checked first with `-n` on a copy of the index: a
//! refusal (it would overwrite uncommitted changes) leaves the index byte
//! for byte as it was. The session ref is never changed.
//!
//! Cherry-picks need a three-way merge with the picked commit's parent as
//! base. `merge-tree --merge-base` only exists from git 2.40, so cci makes
//! that base explicit instead: a parentless commit of the parent's tree, and
//! on top of it one commit with the target's tree and one with the picked
//! tree; their only merge base is the parent's tree. This works from 2.38.
//! The synthetic commits are never referenced (gc removes them).

use super::{GitError, Repo, names};

/// How to apply a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeMode {
    /// A fast-forward when possible, else a merge commit.
    Merge,
    /// One commit with all of the session's changes.
    Squash,
    /// These commits (full or abbreviated ids of the session) cherry-picked
    /// one by one, in the session's order (oldest first) whatever the order
    /// given.
    Select(Vec<String>),
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeKind {
    /// Nothing to do: the branch already has the session's changes.
    UpToDate,
    FastForward,
    MergeCommit,
    Squash,
    /// This many commits were picked (empty picks are skipped).
    Picked(usize),
}

/// The result of [`Repo::merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The branch merged into (short name).
    pub branch: String,
    /// Its commit before (`None`: the branch was created).
    pub previous: Option<String>,
    /// Its commit now.
    pub tip: String,
    pub kind: MergeKind,
    /// Whether the checked-out working tree was updated.
    pub worktree_updated: bool,
}

/// A fixed identity for the synthetic commits of a cherry-pick.
const SYNTHETIC: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "cci"),
    ("GIT_AUTHOR_EMAIL", "cci@localhost"),
    ("GIT_AUTHOR_DATE", "@0 +0000"),
    ("GIT_COMMITTER_NAME", "cci"),
    ("GIT_COMMITTER_EMAIL", "cci@localhost"),
    ("GIT_COMMITTER_DATE", "@0 +0000"),
];

/// Text safe in an identity: no control characters, no `<` or `>`.
fn ident_part(s: &str, fallback: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect();
    let s = s.trim();
    if s.is_empty() {
        fallback.to_string()
    } else {
        s.to_string()
    }
}

impl Repo {
    /// `git merge-tree --write-tree`: the merged tree, or the conflicting paths.
    fn merge_trees(
        &self,
        ours: &str,
        theirs: &str,
    ) -> Result<Result<String, Vec<String>>, GitError> {
        names::check_oid(ours)?;
        names::check_oid(theirs)?;
        let out = self
            .cmd()
            .args([
                "merge-tree",
                "--write-tree",
                "-z",
                "--name-only",
                "--no-messages",
            ])
            .args([ours, theirs])
            .run()?;
        let mut fields = out.stdout.split(|&b| b == 0);
        let tree = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        match out.code {
            Some(0) if names::is_oid(&tree) => Ok(Ok(tree)),
            Some(1) => {
                let mut paths: Vec<String> = fields
                    .take_while(|f| !f.is_empty())
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                paths.dedup();
                Ok(Err(paths))
            }
            _ => Err(super::run::failed("merge-tree --write-tree", &out)),
        }
    }

    fn tree_of(&self, commit: &str) -> Result<String, GitError> {
        self.cmd()
            .args(["rev-parse", "--verify", "--end-of-options"])
            .arg(format!("{commit}^{{tree}}"))
            .ok_text()
    }

    /// A synthetic, never referenced commit (fixed identity, unsigned).
    fn synthetic(&self, tree: &str, parent: Option<&str>) -> Result<String, GitError> {
        let mut c = self.cmd();
        for (k, v) in SYNTHETIC {
            c = c.env(k, v);
        }
        c = c.args(["commit-tree", "--no-gpg-sign"]);
        if let Some(p) = parent {
            c = c.args(["-p", p]);
        }
        c.arg(tree)
            .stdin(b"cci: synthetic merge base\n".to_vec())
            .ok_text()
    }

    /// The tree of `commit` (whose parent is `parent`) applied on `onto`.
    fn pick_tree(
        &self,
        onto: &str,
        commit: &str,
        parent: &str,
    ) -> Result<Result<String, Vec<String>>, GitError> {
        let base = self.synthetic(&self.tree_of(parent)?, None)?;
        let ours = self.synthetic(&self.tree_of(onto)?, Some(&base))?;
        let theirs = self.synthetic(&self.tree_of(commit)?, Some(&base))?;
        self.merge_trees(&ours, &theirs)
    }

    /// The worktree folder that has `refs/heads/<branch>` checked out.
    fn checked_out_in(&self, branch: &str) -> Result<Option<String>, GitError> {
        let out = self
            .cmd()
            .args(["worktree", "list", "--porcelain", "-z"])
            .ok()?;
        let want = format!("branch refs/heads/{branch}");
        let mut path = String::new();
        for f in out.stdout.split(|&b| b == 0) {
            let f = String::from_utf8_lossy(f);
            if let Some(p) = f.strip_prefix("worktree ") {
                path = p.to_string();
            } else if f == want {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Apply the session `session_ref` (started at `base`) to the checked-out
    /// branch (`into: None`) or to `into` (created at `base` when missing).
    pub fn merge(
        &self,
        session_ref: &str,
        base: &str,
        into: Option<&str>,
        mode: MergeMode,
    ) -> Result<MergeOutcome, GitError> {
        let (sid, sbranch, session) = self.session_tip(session_ref)?;
        names::check_oid(base)?;
        let current = self.current_branch()?;
        let (branch, is_current) = match into {
            None => (current.clone().ok_or(GitError::DetachedHead)?, true),
            Some(b) => {
                names::check_branch(b)?;
                (b.to_string(), current.as_deref() == Some(b))
            }
        };
        if !is_current && let Some(wt) = self.checked_out_in(&branch)? {
            return Err(GitError::CheckedOutElsewhere {
                branch,
                worktree: wt,
            });
        }
        let full = format!("refs/heads/{branch}");
        let previous = self.resolve_commit(&full)?;
        if is_current && previous.is_none() {
            return Err(GitError::NoCommits);
        }
        let target = previous.clone().unwrap_or_else(|| base.to_string());
        let label = format!("{sid}/{sbranch}");
        let conflict = |paths| Err(GitError::Conflict { paths });
        let (tip, kind) = match mode {
            MergeMode::Merge | MergeMode::Squash if self.is_ancestor(&session, &target)? => {
                (target.clone(), MergeKind::UpToDate)
            }
            MergeMode::Merge if self.is_ancestor(&target, &session)? => {
                (session.clone(), MergeKind::FastForward)
            }
            MergeMode::Merge => match self.merge_trees(&target, &session)? {
                Err(paths) => return conflict(paths),
                Ok(tree) => {
                    let msg = format!("Merge cci session {label}\n");
                    let id = self.commit_tree(&tree, &[&target, &session], msg.as_bytes())?;
                    (id, MergeKind::MergeCommit)
                }
            },
            MergeMode::Squash => match self.merge_trees(&target, &session)? {
                Err(paths) => return conflict(paths),
                Ok(tree) if tree == self.tree_of(&target)? => (target.clone(), MergeKind::UpToDate),
                Ok(tree) => {
                    let commits = self.log(session_ref, base)?;
                    let mut msg = format!(
                        "cci: squash of session {label} ({} commits)\n\n",
                        commits.len()
                    );
                    for c in commits.iter().rev() {
                        msg.push_str(&format!("* {}\n", super::printable(&c.subject)));
                    }
                    let id = self.commit_tree(&tree, &[&target], msg.as_bytes())?;
                    (id, MergeKind::Squash)
                }
            },
            MergeMode::Select(wanted) => {
                let (tip, n) = self.pick(session_ref, base, &target, &wanted)?;
                let kind = if tip == target {
                    MergeKind::UpToDate
                } else {
                    MergeKind::Picked(n)
                };
                (tip, kind)
            }
        };
        let mut outcome = MergeOutcome {
            branch,
            previous: previous.clone(),
            tip: tip.clone(),
            kind,
            worktree_updated: false,
        };
        if previous.as_deref() == Some(tip.as_str()) {
            outcome.kind = MergeKind::UpToDate;
            return Ok(outcome);
        }
        let msg = format!("cci merge: session {label}");
        if is_current {
            self.advance_checked_out(&target, &tip, &msg)?;
            outcome.worktree_updated = true;
        } else {
            let old = previous.unwrap_or_else(|| self.null_oid(&tip));
            self.cmd()
                .args([
                    "update-ref",
                    "-m",
                    &msg,
                    "--end-of-options",
                    &full,
                    &tip,
                    &old,
                ])
                .ok()?;
        }
        Ok(outcome)
    }

    /// Cherry-pick the selected session commits onto `onto`; returns the new
    /// tip and how many commits were made.
    fn pick(
        &self,
        session_ref: &str,
        base: &str,
        onto: &str,
        wanted: &[String],
    ) -> Result<(String, usize), GitError> {
        let ids = self.session_commit_ids(session_ref, base)?;
        let mut chosen = Vec::new();
        for w in wanted {
            let ok = w.len() >= 4 && w.bytes().all(|b| b.is_ascii_hexdigit());
            let w = w.to_ascii_lowercase();
            let found: Vec<&String> = ids.iter().filter(|i| ok && i.starts_with(&w)).collect();
            match found.as_slice() {
                [one] => chosen.push((*one).clone()),
                _ => return Err(GitError::NotInSession { commit: w }),
            }
        }
        // The session's order, oldest first.
        let ordered: Vec<String> = ids
            .iter()
            .rev()
            .filter(|i| chosen.contains(i))
            .cloned()
            .collect();
        let mut tip = onto.to_string();
        let mut made = 0;
        for c in self.read_commits(&ordered)? {
            let [parent] = c.parents.as_slice() else {
                return Err(GitError::MergeCommitSelected { commit: c.id });
            };
            let tree = match self.pick_tree(&tip, &c.id, parent)? {
                Ok(tree) => tree,
                Err(paths) => return Err(GitError::Conflict { paths }),
            };
            if tree == self.tree_of(&tip)? {
                continue;
            }
            let tz = if c.author_tz.len() == 5
                && (c.author_tz.starts_with('+') || c.author_tz.starts_with('-'))
                && c.author_tz[1..].bytes().all(|b| b.is_ascii_digit())
            {
                c.author_tz.clone()
            } else {
                "+0000".to_string()
            };
            let date = format!("@{} {tz}", c.author_time.max(0));
            let name = ident_part(&c.author_name, "unknown");
            let email = ident_part(&c.author_email, "unknown");
            let mut msg = c.message.trim_end().to_string();
            msg.push_str(&format!("\n\n(cherry picked from commit {})\n", c.id));
            tip =
                self.commit_tree_as(&tree, &[&tip], msg.as_bytes(), Some((&name, &email, &date)))?;
            made += 1;
        }
        Ok((tip, made))
    }

    /// Move the checked-out branch from `from` to `to`, updating index and
    /// working tree by a two-tree read-tree (which keeps unrelated local
    /// changes and refuses to overwrite changed files).
    fn advance_checked_out(&self, from: &str, to: &str, msg: &str) -> Result<(), GitError> {
        // The check runs on a copy of the index (refreshed, or read-tree
        // calls unchanged files dirty), so a refusal leaves the user's index
        // byte for byte as it was.
        let tmp = self
            .git_dir
            .join(super::snapshot::unique("cci-merge-index"));
        let _guard = super::snapshot::Cleanup(tmp.clone());
        let real = self.git_dir.join("index");
        std::fs::copy(&real, &tmp)
            .map_err(|e| GitError::io(format!("cannot copy {}", real.display()), e))?;
        let read_tree = ["read-tree", "-m", "-u", "--no-recurse-submodules"];
        let _ = self
            .cmd()
            .env("GIT_INDEX_FILE", &tmp)
            .args(["update-index", "-q", "--refresh"])
            .run()?;
        let dry = self
            .cmd()
            .env("GIT_INDEX_FILE", &tmp)
            .args(read_tree)
            .args(["-n", from, to])
            .run()?;
        if !dry.success() {
            return Err(GitError::WouldOverwrite {
                detail: dry.stderr_text(),
            });
        }
        let _ = self.cmd().args(["update-index", "-q", "--refresh"]).run()?;
        let rt = self.cmd().args(read_tree).args([from, to]).run()?;
        if !rt.success() {
            return Err(GitError::WouldOverwrite {
                detail: rt.stderr_text(),
            });
        }
        let upd = self
            .cmd()
            .args(["update-ref", "-m", msg, "HEAD", to, from])
            .run()?;
        if !upd.success() {
            // Put the tree back where the branch still is.
            let _ = self.cmd().args(read_tree).args([to, from]).run();
            return Err(super::run::failed("update-ref HEAD", &upd));
        }
        Ok(())
    }
}

impl Repo {
    /// The session id, branch and tip commit of `session_ref`.
    fn session_tip<'a>(
        &self,
        session_ref: &'a str,
    ) -> Result<(&'a str, &'a str, String), GitError> {
        let (sid, sbranch) = names::parse_session_ref(session_ref)?;
        let tip = self
            .resolve_commit(session_ref)?
            .ok_or_else(|| GitError::InvalidBranch {
                name: session_ref.to_string(),
                reason: "no such session ref",
            })?;
        Ok((sid, sbranch, tip))
    }

    /// Merge the session `session_ref` into the checked-out branch with
    /// git's own `merge`, leaving a conflict in git's usual state (markers in
    /// the files, `git merge --abort` undoes it) instead of changing nothing.
    /// Only on the user's request (`cci merge --leave-conflicts`), through
    /// the same runner: no hook or fsmonitor runs; drivers are the user's
    /// own. The working tree must have no uncommitted changes to tracked
    /// files. Returns the conflicting paths (empty: merged cleanly).
    pub fn merge_leaving_conflicts(&self, session_ref: &str) -> Result<Vec<String>, GitError> {
        let (sid, sbranch, session) = self.session_tip(session_ref)?;
        if self.current_branch()?.is_none() {
            return Err(GitError::DetachedHead);
        }
        let dirty = self
            .cmd()
            .args(["status", "--porcelain", "--untracked-files=no"])
            .ok_text()?;
        if !dirty.is_empty() {
            return Err(GitError::WouldOverwrite { detail: dirty });
        }
        let msg = format!("Merge cci session {sid}/{sbranch}");
        let out = self
            .cmd()
            .args([
                "merge",
                "--no-ff",
                "--no-edit",
                "-m",
                &msg,
                "--end-of-options",
            ])
            .arg(&session)
            .run()?;
        if out.success() {
            return Ok(Vec::new());
        }
        let unmerged = self
            .cmd()
            .args(["diff", "--name-only", "--diff-filter=U", "-z"])
            .ok()?;
        let paths: Vec<String> = unmerged
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if paths.is_empty() {
            return Err(super::run::failed("merge", &out));
        }
        Ok(paths)
    }
}

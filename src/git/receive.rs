//! Taking a session's commits back from the container ([`Repo::receive`])
//! and dropping them ([`Repo::discard`]).
//!
//! The bundle comes from the container and is hostile until checked: its
//! header must list exactly one ref, `refs/heads/<branch>` with a full
//! object id, `git bundle verify` must find every prerequisite, and only
//! then is it fetched, with a refspec cci builds, into
//! `refs/cci/<session>/<branch>` (no tags, no `FETCH_HEAD`, no submodules,
//! objects fsck-checked, hooks off).

use super::{GitError, Repo, names};
use std::io::Read;
use std::path::Path;

/// The longest bundle header cci reads (refs and prerequisites).
const MAX_HEADER: u64 = 1 << 20;

/// What [`Repo::receive`] fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `refs/cci/<session>/<branch>`.
    pub session_ref: String,
    /// The commit it now points at.
    pub tip: String,
    /// What it pointed at before, if it existed.
    pub previous: Option<String>,
    /// Commits now reachable from `tip` that were not before (from the
    /// previous tip, or from any other ref of the repository).
    pub new_commits: u64,
    /// Whether the session's history was rewritten since the previous
    /// receive (the previous tip is not an ancestor of the new one).
    pub rewritten: bool,
}

/// The refs a bundle header lists, read without git: (id, ref name).
fn header_refs(bundle: &Path) -> Result<Vec<(String, String)>, GitError> {
    let f = std::fs::File::open(bundle)
        .map_err(|e| GitError::io(format!("cannot open {}", bundle.display()), e))?;
    let mut head = Vec::new();
    f.take(MAX_HEADER)
        .read_to_end(&mut head)
        .map_err(|e| GitError::io(format!("cannot read {}", bundle.display()), e))?;
    let bad = |reason: &str| GitError::BadBundle {
        reason: reason.to_string(),
    };
    let mut lines = head.split(|&b| b == b'\n');
    match lines.next() {
        Some(b"# v2 git bundle") | Some(b"# v3 git bundle") => {}
        _ => return Err(bad("not a git bundle (v2 or v3)")),
    }
    let mut refs = Vec::new();
    for line in lines {
        if line.is_empty() {
            return Ok(refs);
        }
        if line.starts_with(b"-") || line.starts_with(b"@") {
            continue; // a prerequisite or a capability
        }
        let line = String::from_utf8_lossy(line);
        let (id, name) = line
            .split_once(' ')
            .ok_or_else(|| bad("a malformed ref line"))?;
        refs.push((id.to_string(), name.to_string()));
    }
    Err(bad("the header does not end within 1 MiB"))
}

impl Repo {
    /// Check `bundle` and fetch its `refs/heads/<branch>` into
    /// `refs/cci/<session_id>/<branch>`.
    pub fn receive(
        &self,
        session_id: &str,
        bundle: &Path,
        branch: &str,
    ) -> Result<Received, GitError> {
        let session_ref = names::session_ref(session_id, branch)?;
        let bundle = bundle
            .canonicalize()
            .map_err(|e| GitError::io(format!("cannot open {}", bundle.display()), e))?;
        let wanted = format!("refs/heads/{branch}");
        // Our own reading of the header, then git's: both must agree.
        for refs in [header_refs(&bundle)?, self.list_heads(&bundle)?] {
            match refs.as_slice() {
                [(id, name)] if *name == wanted && names::is_oid(id) => {}
                [] => {
                    return Err(GitError::BadBundle {
                        reason: "it holds no ref".into(),
                    });
                }
                _ => {
                    let listed: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
                    return Err(GitError::BadBundle {
                        reason: format!(
                            "expected only {wanted}, found: {}",
                            listed.join(", ")
                        ),
                    });
                }
            }
        }
        let tip = self.list_heads(&bundle)?.remove(0).0;
        self.verify_bundle(&bundle)?;
        let previous = self.resolve_commit(&session_ref)?;
        self.cmd()
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
                "--no-prune",
                "--end-of-options",
            ])
            .arg(&bundle)
            .arg(format!("+{wanted}:{session_ref}"))
            .ok()?;
        let now = self.resolve_commit(&session_ref)?;
        if now.as_deref() != Some(tip.as_str()) {
            return Err(GitError::BadBundle {
                reason: format!("{session_ref} is not at the bundle's {tip} after the fetch"),
            });
        }
        let mut count = self.cmd().args(["rev-list", "--count", &tip]);
        count = match &previous {
            Some(p) => count.arg(format!("^{p}")),
            None => count
                .arg("--not")
                .arg(format!("--exclude={session_ref}"))
                .arg("--all"),
        };
        let new_commits = count.ok_text()?.trim().parse().unwrap_or(0);
        let rewritten = match &previous {
            Some(p) => !self.is_ancestor(p, &tip)?,
            None => false,
        };
        Ok(Received {
            session_ref,
            tip,
            previous,
            new_commits,
            rewritten,
        })
    }

    /// `git bundle list-heads`: (id, ref name) per line.
    fn list_heads(&self, bundle: &Path) -> Result<Vec<(String, String)>, GitError> {
        let out = self
            .cmd()
            .args(["bundle", "list-heads"])
            .arg(bundle)
            .run()?;
        if !out.success() {
            return Err(GitError::BadBundle {
                reason: out.stderr_text(),
            });
        }
        Ok(out
            .text()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect())
    }

    /// `git bundle verify`: prerequisites present, bundle readable.
    fn verify_bundle(&self, bundle: &Path) -> Result<(), GitError> {
        let out = self
            .cmd()
            .args(["bundle", "verify"])
            .arg(bundle)
            .run()?;
        if out.success() {
            return Ok(());
        }
        let err = out.stderr_text();
        if err.contains("lacks these prerequisite commits") {
            let commits = err
                .lines()
                .filter_map(|l| l.strip_prefix("error: "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| names::is_oid(w))
                .map(str::to_string)
                .collect();
            return Err(GitError::MissingPrerequisites { commits });
        }
        Err(GitError::BadBundle { reason: err })
    }

    /// The refs of a session (`refs/cci/<session_id>/...`).
    pub fn session_refs(&self, session_id: &str) -> Result<Vec<String>, GitError> {
        names::check_session_id(session_id)?;
        let out = self
            .cmd()
            .args(["for-each-ref", "--format=%(refname)"])
            .arg(format!("refs/cci/{session_id}/"))
            .ok_text()?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Delete every ref of a session; returns the refs deleted.
    pub fn discard(&self, session_id: &str) -> Result<Vec<String>, GitError> {
        let refs = self.session_refs(session_id)?;
        if refs.is_empty() {
            return Ok(refs);
        }
        let mut script = Vec::new();
        for r in &refs {
            script.extend_from_slice(format!("delete {r}\0\0").as_bytes());
        }
        self.cmd()
            .args(["update-ref", "-z", "--stdin"])
            .stdin(script)
            .ok()?;
        Ok(refs)
    }
}

//! Taking a session's commits back from the container ([`Repo::receive`])
//! and dropping them ([`Repo::discard`]).
//!
//! The bundle comes from the container and is hostile until checked: its
//! header must list exactly one ref, `refs/heads/<branch>` with a full
//! object id (cci's own reading and `git bundle list-heads` must agree),
//! and `git bundle verify` must find every prerequisite. Its pack is then
//! indexed with `git index-pack --stdin --fix-thin --strict`, which fsck-checks
//! every object (a tree entry named `.git`, a `.gitmodules` with an option
//! as URL ... are refused) and that all links resolve, and only then does
//! cci point `refs/cci/<session>/<branch>` at the tip with `update-ref`.
//! `git fetch` is not used: git 2.39's does not fsck what it unbundles,
//! whatever `transfer.fsckObjects` says (2.47's does), and it would read the
//! user's `fetch.*` and `remote.*` settings.

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
    /// receive (the previous tip is not an ancestor of the new one). The
    /// previous tip stays in the ref's reflog (`<session_ref>@{1}`) until
    /// the session is discarded.
    pub rewritten: bool,
}

/// The refs a bundle header lists, read without git: (id, ref name).
/// Also returns where the pack starts.
fn header_refs(bundle: &Path) -> Result<(Vec<(String, String)>, u64), GitError> {
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
    let mut offset = 0u64;
    let mut advance = |line: &[u8]| offset += line.len() as u64 + 1;
    let first = lines.next();
    advance(first.unwrap_or_default());
    match first {
        Some(b"# v2 git bundle") | Some(b"# v3 git bundle") => {}
        _ => return Err(bad("not a git bundle (v2 or v3)")),
    }
    let mut refs = Vec::new();
    for line in lines {
        advance(line);
        if line.is_empty() {
            return Ok((refs, offset));
        }
        if line.starts_with(b"@filter") {
            return Err(bad("partial (filtered) bundles are not accepted"));
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
        let (ours, pack_at) = header_refs(&bundle)?;
        for refs in [ours, self.list_heads(&bundle)?] {
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
                        reason: format!("expected only {wanted}, found: {}", listed.join(", ")),
                    });
                }
            }
        }
        let tip = self.list_heads(&bundle)?.remove(0).0;
        self.verify_bundle(&bundle)?;
        let previous = self.resolve_commit(&session_ref)?;
        self.index_pack(&bundle, pack_at)?;
        let kind = self
            .cmd()
            .args(["cat-file", "-t", "--end-of-options", &tip])
            .ok_text()?;
        if kind != "commit" {
            return Err(GitError::BadBundle {
                reason: format!("{wanted} points at a {kind}, not a commit"),
            });
        }
        // With a reflog: an earlier tip stays reachable (`<ref>@{1}`) if
        // the session rewrote its history.
        let old = previous.clone().unwrap_or_else(|| self.null_oid(&tip));
        self.cmd()
            .args([
                "update-ref",
                "--create-reflog",
                "-m",
                "cci: session commits received",
            ])
            .args(["--end-of-options", &session_ref, &tip, &old])
            .ok()?;
        let now = self.resolve_commit(&session_ref)?;
        if now.as_deref() != Some(tip.as_str()) {
            return Err(GitError::BadBundle {
                reason: format!("{session_ref} is not at the bundle's {tip} after the update"),
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

    /// Index the bundle's pack (from byte `at`) with full object checks.
    fn index_pack(&self, bundle: &Path, at: u64) -> Result<(), GitError> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(bundle)
            .map_err(|e| GitError::io(format!("cannot open {}", bundle.display()), e))?;
        f.seek(SeekFrom::Start(at))
            .map_err(|e| GitError::io(format!("cannot read {}", bundle.display()), e))?;
        let out = self
            .cmd()
            .args(["index-pack", "--stdin", "--fix-thin", "--strict"])
            .stdin_file(f)
            .run()?;
        if out.success() {
            Ok(())
        } else {
            Err(GitError::BadBundle {
                reason: format!(
                    "its objects fail git's checks: {}",
                    out.stderr_text().trim_end()
                ),
            })
        }
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
        let out = self.cmd().args(["bundle", "verify"]).arg(bundle).run()?;
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

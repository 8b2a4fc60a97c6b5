//! Starting isolated git sessions from the command line (`--isolated`,
//! `--repo`, `--repos-in`): which repositories go in, under which folder,
//! and what the user is told about them.

use super::UsageError;
use crate::config::printable;
use crate::git::SessionStore;
use crate::sandbox::isolated;
use crate::terminal::printable_lines;

/// The records of isolated sessions: `git-sessions` in the saved-session
/// folder (`[paths] sessions_dir`, else `~/.cci`), private.
pub fn store(cfg: &crate::config::Effective) -> anyhow::Result<SessionStore> {
    Ok(isolated::store(cfg.sessions_dir.as_deref())?)
}

/// An isolated session about to start for `workspace` (`None`: mounted).
pub fn start(
    cfg: &crate::config::Effective,
    workspace: &crate::sandbox::Workspace,
    git: &super::sandbox_args::GitArgs,
) -> anyhow::Result<Option<std::sync::Arc<crate::sandbox::isolated::Start>>> {
    if !git.isolated(cfg) {
        if git.branch.is_some()
            || git.session_branch.is_some()
            || git.clean_only
            || git.auto_merge.is_some()
        {
            return Err(UsageError(
                "--branch, --session-branch, --clean-only and --auto-merge are for isolated sessions: add --isolated".into(),
            )
            .into());
        }
        return Ok(None);
    }
    let ws = std::path::Path::new(workspace.path_str());
    // `[git] repos`, relative to the workspace, when no flag names any.
    let configured: Vec<std::path::PathBuf> = cfg
        .git_repos
        .iter()
        .map(|r| ws.join(crate::config::expand_home(r)))
        .collect();
    let git = &if git.repos.is_empty() && git.repos_in.is_none() && !configured.is_empty() {
        super::sandbox_args::GitArgs {
            repos: configured,
            ..git.clone()
        }
    } else {
        git.clone()
    };
    if git.repos.is_empty() && git.repos_in.is_none() {
        return Ok(Some(std::sync::Arc::new(begin_parts(
            cfg,
            git,
            vec![(String::new(), ws.to_path_buf())],
        )?)));
    }
    let mut repos: Vec<std::path::PathBuf> = git.repos.clone();
    if let Some(dir) = &git.repos_in {
        repos.extend(find_repos(dir)?);
    }
    if repos.is_empty() {
        return Err(UsageError(format!(
            "no git repository in {}",
            printable(
                &git.repos_in
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
                    .to_string()
            )
        ))
        .into());
    }
    let names = isolated::dir_names(&repos);
    Ok(Some(std::sync::Arc::new(begin_parts(
        cfg,
        git,
        names.into_iter().zip(repos).collect(),
    )?)))
}

/// The git repositories in `dir` and one level below (their top folders).
fn find_repos(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..2 {
        let mut next = Vec::new();
        for d in &level {
            let mut entries: Vec<_> = std::fs::read_dir(d)?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                if std::fs::symlink_metadata(e.join(".git")).is_ok() {
                    out.push(e);
                } else {
                    next.push(e);
                }
            }
        }
        level = next;
    }
    Ok(out)
}

/// Prepare every repository (each named by its folder inside) and say
/// what is carried.
fn begin_parts(
    cfg: &crate::config::Effective,
    git: &super::sandbox_args::GitArgs,
    repos: Vec<(String, std::path::PathBuf)>,
) -> anyhow::Result<isolated::Start> {
    let id = crate::sandbox::new_session_id();
    let mut parts = Vec::new();
    for (n, (dir, path)) in repos.into_iter().enumerate() {
        let prepared = isolated::prepare(&path, &git.options())?;
        let at = isolated::folder(&dir);
        if !prepared.carried.is_empty() {
            eprintln!(
                "cci: {at}: carried {} uncommitted path(s) in as the session's first commit (--clean-only refuses them): {}",
                prepared.carried.len(),
                prepared
                    .carried
                    .iter()
                    .take(10)
                    .map(|p| printable(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for note in &prepared.notes {
            eprintln!("cci: {at}: {note}");
        }
        let part_id = if n == 0 {
            id.clone()
        } else {
            format!("{id}-{}", n + 1)
        };
        parts.push(isolated::Part {
            dir,
            id: part_id,
            prepared,
        });
    }
    let identity = parts
        .first()
        .and_then(|p| isolated::host_identity(&p.prepared.repo));
    Ok(isolated::Start {
        parts,
        id,
        options: git.options(),
        store: store(cfg)?,
        max_bytes: cfg.session.max_bytes,
        identity,
    })
}

/// What to tell the user about a session's commits coming back.
pub fn report(g: &crate::sandbox::GitOutcome) -> String {
    let rec = &g.record;
    let told = received(g);
    match &g.merged {
        Some(Ok(done)) => format!("{told}\ncci: session {}: {done}", rec.id),
        Some(Err(why)) => format!(
            "{told}\ncci: session {}: not merged into {} ({}); nothing changed there",
            rec.id,
            printable(&rec.auto_merge),
            printable_lines(why)
        ),
        None => told,
    }
}

fn received(g: &crate::sandbox::GitOutcome) -> String {
    let rec = &g.record;
    match &g.received {
        Ok(Some(r)) => format!(
            "cci: session {}: {} new commit(s) on {}; review with `cci diff {}`, merge with `cci merge {}`",
            rec.id,
            r.new_commits,
            printable(&rec.branch),
            rec.id,
            rec.id
        ),
        Ok(None) => format!(
            "cci: session {}: no new commits on {}",
            rec.id,
            printable(&rec.branch)
        ),
        Err(e) => format!(
            "cci: session {}: its commits could not be brought to the host ({}); they are in container {}, kept stopped: `cci container start {}`, then `cci log {}` fetches them",
            rec.id,
            printable_lines(e),
            rec.container,
            rec.container,
            rec.container
        ),
    }
}

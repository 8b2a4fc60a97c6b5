//! `cci merge` and `cci discard`: the end of an isolated session's review.
//! A merge is computed by `crate::git` without a checkout and changes
//! nothing when it conflicts; discarding drops the session's host refs and
//! records after confirmation.

use std::io::{BufRead, IsTerminal};

use clap::Args;

use super::UsageError;
use super::review::{Which, resolve_fresh, short};
use crate::config::printable;
use crate::git::{MergeKind, MergeMode, Repo, SessionRecord};
use crate::host::Host;
use crate::sandbox::isolated;
use crate::terminal::printable_lines;

/// Options of `cci merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub which: Which,
    /// Merge into this branch (made from the session's base when missing)
    /// instead of the checked-out one.
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
    /// One commit with all of the session's changes.
    #[arg(long, conflicts_with = "select")]
    pub squash: bool,
    /// On a conflict, leave it in the checked-out branch in git's usual
    /// state (resolve, `git add`, `git commit`; `git merge --abort` undoes
    /// it) instead of changing nothing.
    #[arg(long, conflicts_with_all = ["into", "squash", "select"])]
    pub leave_conflicts: bool,
    /// Pick commits: these ids (comma-separated), or chosen on the terminal
    /// when none are given.
    #[arg(long, value_name = "IDS", num_args = 0..=1, default_missing_value = "", value_delimiter = ',')]
    pub select: Option<Vec<String>>,
}

/// Options of `cci discard`.
#[derive(Debug, Args)]
pub struct DiscardArgs {
    #[command(flatten)]
    pub which: Which,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f', visible_alias = "yes")]
    pub force: bool,
}

/// The commits to pick, asked on the terminal.
fn choose(repo: &Repo, rec: &SessionRecord) -> anyhow::Result<Vec<String>> {
    let commits = repo.log(&rec.session_ref()?, &rec.base)?;
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "--select without commit ids needs a terminal; give them: --select ID,ID".into(),
        )
        .into());
    }
    // Oldest first, numbered.
    for (i, c) in commits.iter().rev().enumerate() {
        eprintln!("{:>3}  {}  {}", i + 1, short(&c.id), printable(&c.subject));
    }
    eprint!("commits to pick (numbers, e.g. 1 3 4; empty: none): ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let oldest_first: Vec<&crate::git::Commit> = commits.iter().rev().collect();
    let mut picked = Vec::new();
    for word in line.split(|c: char| c.is_whitespace() || c == ',') {
        if word.is_empty() {
            continue;
        }
        let n: usize = word
            .parse()
            .ok()
            .filter(|n| (1..=oldest_first.len()).contains(n))
            .ok_or_else(|| {
                UsageError(format!("{:?} is not one of the numbers", printable(word)))
            })?;
        picked.push(oldest_first[n - 1].id.clone());
    }
    Ok(picked)
}

pub async fn merge(host: &Host, args: MergeArgs) -> anyhow::Result<i32> {
    let found = resolve_fresh(host, &args.which).await?;
    let many = found.len() > 1;
    if many && args.select.is_some() {
        let ids: Vec<String> = found
            .iter()
            .map(|(_, r)| format!("{} ({})", r.id, isolated::folder(&r.dir)))
            .collect();
        return Err(UsageError(format!(
            "--select picks commits of one repository: name its session, one of {}",
            ids.join(", ")
        ))
        .into());
    }
    // Each repository is merged on its own (each all or nothing); the first
    // failure decides the exit status, and the others are still tried.
    let mut failed: Option<anyhow::Error> = None;
    for (repo, rec) in &found {
        match merge_one(repo, rec, &args) {
            Ok(line) if many => println!("{}: {line}", isolated::folder(&rec.dir)),
            Ok(line) => println!("{line}"),
            Err(e) if many => {
                eprintln!(
                    "cci: {}: {}",
                    isolated::folder(&rec.dir),
                    printable_lines(&e.to_string())
                );
                failed.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

/// Merge one repository's session as `args` say; what was done, in words.
fn merge_one(repo: &Repo, rec: &SessionRecord, args: &MergeArgs) -> anyhow::Result<String> {
    let mode = match (&args.select, args.squash) {
        (Some(ids), _) => {
            let ids: Vec<String> = ids.iter().filter(|s| !s.is_empty()).cloned().collect();
            let ids = if ids.is_empty() {
                choose(repo, rec)?
            } else {
                ids
            };
            if ids.is_empty() {
                return Ok("nothing picked; nothing changed".into());
            }
            MergeMode::Select(ids)
        }
        (None, true) => MergeMode::Squash,
        (None, false) => MergeMode::Merge,
    };
    let out = match repo.merge(&rec.session_ref()?, &rec.base, args.into.as_deref(), mode) {
        Err(crate::git::GitError::Conflict { .. }) if args.leave_conflicts => {
            let paths = repo.merge_leaving_conflicts(&rec.session_ref()?)?;
            if paths.is_empty() {
                return Ok(format!("session {} merged by git", rec.id));
            }
            return Err(LeftConflicts(
                paths
                    .iter()
                    .map(|p| printable(p))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .into());
        }
        r => r?,
    };
    let what = match out.kind {
        MergeKind::UpToDate => "already up to date".to_string(),
        MergeKind::FastForward => "fast-forwarded".into(),
        MergeKind::MergeCommit => "merged (a merge commit)".into(),
        MergeKind::Squash => "squashed into one commit".into(),
        MergeKind::Picked(n) => format!("{n} commit(s) picked"),
    };
    let made = if out.previous.is_none() {
        " (new branch)"
    } else {
        ""
    };
    Ok(format!(
        "session {} into {}{made}: {what}; now at {}{}",
        rec.id,
        printable(&out.branch),
        short(&out.tip),
        if out.worktree_updated {
            "; working tree updated"
        } else {
            ""
        }
    ))
}

pub async fn discard(host: &Host, args: DiscardArgs) -> anyhow::Result<i32> {
    let found = resolve_fresh(host, &args.which).await?;
    let mut count = 0;
    for (repo, rec) in &found {
        count += repo
            .log(&rec.session_ref()?, &rec.base)
            .map(|c| c.len())
            .unwrap_or_default();
    }
    let first = &found[0].1;
    if !args.force {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(
                "discarding a session needs confirmation: run on a terminal, or add --force".into(),
            )
            .into());
        }
        eprint!(
            "discard session {} ({} repositor(ies), {count} commit(s) on {})? [y/N] ",
            first.group(),
            found.len(),
            printable(&first.branch)
        );
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("kept");
            return Ok(1);
        }
    }
    let store = super::isolate::store(host.config)?;
    for (repo, rec) in &found {
        repo.discard(&rec.id)?;
        store.remove(&rec.id)?;
    }
    println!("discarded session {} ({count} commit(s))", first.group());
    Ok(0)
}

/// `--leave-conflicts`: the merge stopped with conflicts left to resolve.
#[derive(Debug, thiserror::Error)]
#[error(
    "the merge conflicts in: {0}; left in git's conflict state as asked: resolve them, `git add` and `git commit` (or `git merge --abort` undoes it)"
)]
pub struct LeftConflicts(pub String);

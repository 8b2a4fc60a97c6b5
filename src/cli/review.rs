//! The review loop of isolated git sessions: `cci diff`, `cci log`,
//! `cci files`, `cci merge`, `cci discard`. Each names a session by id or by
//! its container's name, or takes the newest session of the repository the
//! current folder (or `-w`) is in. Everything here runs the host's git
//! through `crate::git`, which never runs what the session wrote; text from
//! the session is escaped before it reaches the terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::Format;
use crate::config::printable;
use crate::git::{MergeKind, MergeMode, Repo, SessionRecord, SessionStore};
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::isolated;
use crate::terminal::printable_lines;

/// Which session.
#[derive(Debug, Args)]
pub struct Which {
    /// A session id or its container's name [default: the newest session of
    /// this repository].
    #[arg(value_name = "SESSION")]
    pub session: Option<String>,
    /// The repository [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
}

/// Options of `cci diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub which: Which,
    /// Files changed and lines added/removed only.
    #[arg(long)]
    pub stat: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Options of `cci log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub which: Which,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Options of `cci files`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// A session id or its container's name [default: the newest session].
    #[arg(value_name = "SESSION")]
    pub session: Option<String>,
    /// A folder of the session's tree [default: its top].
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Everything below it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The repository [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

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

/// The records of isolated sessions: `git-sessions` in the saved-session
/// folder (`[paths] sessions_dir`, else `~/.cci`), private.
pub fn store(cfg: &crate::config::Effective) -> anyhow::Result<SessionStore> {
    Ok(isolated::store(&crate::session::store_root(
        cfg.sessions_dir.as_deref(),
    )?)?)
}

/// An isolated session about to start for `workspace` (`None`: mounted).
pub fn start(
    cfg: &crate::config::Effective,
    workspace: &crate::sandbox::Workspace,
    git: &super::sandbox_args::GitArgs,
) -> anyhow::Result<Option<std::sync::Arc<crate::sandbox::isolated::Start>>> {
    if !git.isolated(cfg) {
        return Ok(None);
    }
    let prepared = isolated::prepare(std::path::Path::new(workspace.path_str()), &git.options())?;
    if !prepared.carried.is_empty() {
        eprintln!(
            "cci: carried {} uncommitted path(s) in as the session's first commit (--clean-only refuses them): {}",
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
        eprintln!("cci: {note}");
    }
    let identity = isolated::host_identity(&prepared.repo);
    Ok(Some(std::sync::Arc::new(isolated::Start {
        prepared,
        id: crate::sandbox::new_session_id(),
        store: store(cfg)?,
        max_bytes: cfg.session.max_bytes,
        identity,
    })))
}

/// What to tell the user about a session's commits coming back.
pub fn report(g: &crate::sandbox::GitOutcome) -> String {
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

/// The repository and the session record `which` names, with the commits
/// its container has made so far brought over first while it runs.
async fn resolve_fresh(host: &Host, which: &Which) -> anyhow::Result<(Repo, SessionRecord)> {
    let (repo, rec) = resolve(host, which)?;
    if let Ok(info) = crate::sandbox::info(host, &rec.container).await
        && info.git_session == rec.id
        && info.state == InstanceStatus::Running
    {
        let max = host.config.session.max_bytes;
        if let Err(e) = isolated::sync(&host.client, &rec.container, &info.account, &rec, max).await
        {
            eprintln!(
                "cci: could not fetch the newest commits of {}: {}",
                rec.container,
                printable_lines(&e.to_string())
            );
        }
    }
    Ok((repo, rec))
}

/// The repository and the session record `which` names.
fn resolve(host: &Host, which: &Which) -> anyhow::Result<(Repo, SessionRecord)> {
    let here = match &which.workspace {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    let all = store(host.config)?.list()?;
    let rec = match &which.session {
        Some(s) => all
            .iter()
            .find(|r| &r.id == s)
            .or_else(|| {
                all.iter()
                    .filter(|r| &r.container == s)
                    .max_by_key(|r| r.started)
            })
            .cloned()
            .ok_or_else(|| {
                super::UsageError(format!(
                    "no isolated session {:?}; `cci log` lists the newest, `cci session list` saved agent state",
                    printable(s)
                ))
            })?,
        None => {
            let repo = Repo::discover(&here)?;
            all.iter()
                .filter(|r| r.repo_path == repo.top)
                .max_by_key(|r| r.started)
                .cloned()
                .ok_or_else(|| {
                    super::UsageError(format!(
                        "no isolated session of {}; start one with `cci shell --isolated` or `cci run --isolated`",
                        printable(&repo.top.display().to_string())
                    ))
                })?
        }
    };
    let repo = Repo::discover(&rec.repo_path)?;
    Ok((repo, rec))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Text through a pager on a terminal, else straight out.
fn page(text: &str) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less".into());
        let mut parts = pager.split_whitespace();
        if let Some(program) = parts.next() {
            let child = std::process::Command::new(program)
                .args(parts)
                .env("LESS", "FRX")
                .stdin(std::process::Stdio::piped())
                .spawn();
            if let Ok(mut child) = child {
                if let Some(mut input) = child.stdin.take() {
                    let _ = input.write_all(text.as_bytes());
                }
                let _ = child.wait();
                return Ok(());
            }
        }
    }
    print!("{text}");
    Ok(())
}

pub async fn diff(host: &Host, args: DiffArgs) -> anyhow::Result<i32> {
    let (repo, rec) = resolve_fresh(host, &args.which).await?;
    let r = rec.session_ref()?;
    let report = repo.diff(&r, &rec.base, args.stat)?;
    match args.format {
        Format::Json => {
            let commits = repo.log(&r, &rec.base)?;
            let v = json!({
                "session": rec.id,
                "container": rec.container,
                "branch": rec.branch,
                "base": rec.base,
                "commits": commits.iter().map(commit_json).collect::<Vec<_>>(),
                "files": report.files,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let commits = repo.log(&r, &rec.base)?;
            let mut out = format!(
                "session {} ({}, {} commit(s) on {} since {})\n",
                rec.id,
                rec.container,
                commits.len(),
                printable(&rec.branch),
                short(&rec.base)
            );
            for c in &commits {
                out.push_str(&format!("  {} {}\n", short(&c.id), printable(&c.subject)));
            }
            out.push('\n');
            out.push_str(&printable_lines(&report.text));
            page(&out)?;
        }
    }
    Ok(0)
}

fn commit_json(c: &crate::git::Commit) -> serde_json::Value {
    json!({
        "id": c.id,
        "author": c.author_name,
        "email": c.author_email,
        "date": c.date_utc(),
        "subject": c.subject,
    })
}

pub async fn log(host: &Host, args: LogArgs) -> anyhow::Result<i32> {
    let (repo, rec) = resolve_fresh(host, &args.which).await?;
    let commits = repo.log(&rec.session_ref()?, &rec.base)?;
    match args.format {
        Format::Json => {
            let v: Vec<_> = commits.iter().map(commit_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            for c in &commits {
                println!(
                    "{}  {}  {}  {}",
                    short(&c.id),
                    c.date_utc(),
                    printable(&c.author_name),
                    printable(&c.subject)
                );
            }
        }
    }
    Ok(0)
}

pub async fn files(host: &Host, args: FilesArgs) -> anyhow::Result<i32> {
    let which = Which {
        session: args.session,
        workspace: args.workspace,
    };
    let (repo, rec) = resolve_fresh(host, &which).await?;
    let entries = repo.files(
        &rec.session_ref()?,
        args.path.as_deref().unwrap_or(""),
        args.recursive,
    )?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => {
            for e in &entries {
                let size = e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                let name = if e.kind == "tree" {
                    format!("{}/", e.path)
                } else {
                    e.path.clone()
                };
                println!("{} {:>10}  {}", e.mode, size, printable(&name));
            }
        }
    }
    Ok(0)
}

/// The commits to pick, asked on the terminal.
fn choose(repo: &Repo, rec: &SessionRecord) -> anyhow::Result<Vec<String>> {
    let commits = repo.log(&rec.session_ref()?, &rec.base)?;
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    if !std::io::stdin().is_terminal() {
        return Err(super::UsageError(
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
                super::UsageError(format!("{:?} is not one of the numbers", printable(word)))
            })?;
        picked.push(oldest_first[n - 1].id.clone());
    }
    Ok(picked)
}

pub async fn merge(host: &Host, args: MergeArgs) -> anyhow::Result<i32> {
    let (repo, rec) = resolve_fresh(host, &args.which).await?;
    let mode = match (&args.select, args.squash) {
        (Some(ids), _) => {
            let ids: Vec<String> = ids.iter().filter(|s| !s.is_empty()).cloned().collect();
            let ids = if ids.is_empty() {
                choose(&repo, &rec)?
            } else {
                ids
            };
            if ids.is_empty() {
                eprintln!("nothing picked; nothing changed");
                return Ok(0);
            }
            MergeMode::Select(ids)
        }
        (None, true) => MergeMode::Squash,
        (None, false) => MergeMode::Merge,
    };
    let out = repo.merge(&rec.session_ref()?, &rec.base, args.into.as_deref(), mode)?;
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
    println!(
        "session {} into {}{made}: {what}; now at {}{}",
        rec.id,
        printable(&out.branch),
        short(&out.tip),
        if out.worktree_updated {
            "; working tree updated"
        } else {
            ""
        }
    );
    Ok(0)
}

pub async fn discard(host: &Host, args: DiscardArgs) -> anyhow::Result<i32> {
    let (repo, rec) = resolve_fresh(host, &args.which).await?;
    let commits = repo.log(&rec.session_ref()?, &rec.base).unwrap_or_default();
    if !args.force {
        if !std::io::stdin().is_terminal() {
            return Err(super::UsageError(
                "discarding a session needs confirmation: run on a terminal, or add --force".into(),
            )
            .into());
        }
        eprint!(
            "discard session {} ({} commit(s) on {})? [y/N] ",
            rec.id,
            commits.len(),
            printable(&rec.branch)
        );
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("kept");
            return Ok(1);
        }
    }
    repo.discard(&rec.id)?;
    store(host.config)?.remove(&rec.id)?;
    println!("discarded session {} ({} commit(s))", rec.id, commits.len());
    Ok(0)
}

//! The review loop of isolated git sessions: `cci diff`, `cci log`,
//! `cci files` (and, in `merge.rs`, `cci merge` and `cci discard`). Each names a session by id or by
//! its container's name, or takes the newest session of the repository the
//! current folder (or `-w`) is in. Everything here runs the host's git
//! through `crate::git`, which never runs what the session wrote; text from
//! the session is escaped before it reaches the terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::Format;
use super::UsageError;
use crate::config::printable;
use crate::git::{Repo, SessionRecord};
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

/// The repositories and session records `which` names, with the commits
/// the container has made so far brought over first while it runs.
pub(super) async fn resolve_fresh(
    host: &Host,
    which: &Which,
) -> anyhow::Result<Vec<(Repo, SessionRecord)>> {
    let found = resolve(host, which)?;
    // The repositories of one session share its container: look it up once.
    let mut looked: Option<(String, Option<crate::sandbox::SandboxInfo>)> = None;
    for (_, rec) in &found {
        if looked.as_ref().map(|(n, _)| n) != Some(&rec.container) {
            let info = crate::sandbox::info(host, &rec.container).await.ok();
            looked = Some((rec.container.clone(), info));
        }
        if let Some((_, Some(info))) = &looked
            && info.git_session == rec.group()
            && info.state == InstanceStatus::Running
        {
            let max = host.config.session.max_bytes;
            if let Err(e) =
                isolated::sync(&host.client, &rec.container, &info.account, rec, max).await
            {
                eprintln!(
                    "cci: could not fetch the newest commits of {}: {}",
                    rec.container,
                    printable_lines(&e.to_string())
                );
            }
        }
    }
    Ok(found)
}

/// The repositories and session records `which` names: a session id (its
/// repositories), a container's name (its newest session), or nothing (the
/// newest session of the repository here).
fn resolve(host: &Host, which: &Which) -> anyhow::Result<Vec<(Repo, SessionRecord)>> {
    let here = match &which.workspace {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    let all = super::isolate::store(host.config)?.list()?;
    let recs: Vec<SessionRecord> = match &which.session {
        // One repository's own id (`ID-2`) names that one; a session id
        // (or a container's name: its newest session) names all of them.
        Some(s) => match all.iter().find(|r| &r.id == s && r.group() != r.id) {
            Some(one) => vec![one.clone()],
            None => {
                let group = all
                    .iter()
                    .find(|r| r.group() == s)
                    .or_else(|| {
                        all.iter()
                            .filter(|r| &r.container == s)
                            .max_by_key(|r| r.started)
                    })
                    .map(|r| r.group().to_string());
                all.iter()
                    .filter(|r| Some(r.group()) == group.as_deref())
                    .cloned()
                    .collect()
            }
        },
        None => {
            let repo = Repo::discover(&here)?;
            all.iter()
                .filter(|r| r.repo_path == repo.top)
                .max_by_key(|r| r.started)
                .cloned()
                .into_iter()
                .collect()
        }
    };
    if recs.is_empty() {
        return Err(UsageError(match &which.session {
            Some(s) => format!(
                "no isolated session {:?}; `cci log` shows the newest of this repository",
                printable(s)
            ),
            None => "no isolated session of this repository; start one with `cci shell --isolated` or `cci run --isolated`".into(),
        })
        .into());
    }
    recs.into_iter()
        .map(|r| Ok((Repo::discover(&r.repo_path)?, r)))
        .collect()
}

/// A heading for one repository of a session with several.
pub(super) fn heading(many: bool, rec: &SessionRecord) -> String {
    if many {
        format!(
            "== {} ({})\n",
            isolated::folder(&rec.dir),
            printable(&rec.repo_path.display().to_string())
        )
    } else {
        String::new()
    }
}

pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Text through a pager on a terminal, else straight out.
pub(super) fn page(text: &str) -> anyhow::Result<()> {
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
    let found = resolve_fresh(host, &args.which).await?;
    let many = found.len() > 1;
    let mut json_out = Vec::new();
    let mut text = String::new();
    for (repo, rec) in &found {
        let r = rec.session_ref()?;
        let report = repo.diff(&r, &rec.base, args.stat)?;
        let commits = repo.log(&r, &rec.base)?;
        match args.format {
            Format::Json => json_out.push(json!({
                "session": rec.id,
                "container": rec.container,
                "repository": rec.repo_path,
                "folder": isolated::folder(&rec.dir),
                "branch": rec.branch,
                "base": rec.base,
                "commits": commits.iter().map(commit_json).collect::<Vec<_>>(),
                "files": report.files,
            })),
            Format::Table => {
                text.push_str(&heading(many, rec));
                text.push_str(&format!(
                    "session {} ({}, {} commit(s) on {} since {})\n",
                    rec.id,
                    rec.container,
                    commits.len(),
                    printable(&rec.branch),
                    short(&rec.base)
                ));
                for c in &commits {
                    text.push_str(&format!("  {} {}\n", short(&c.id), printable(&c.subject)));
                }
                text.push('\n');
                text.push_str(&printable_lines(&report.text));
                text.push('\n');
            }
        }
    }
    match args.format {
        // One repository: its object; several: a list of them.
        Format::Json if !many => println!("{}", serde_json::to_string_pretty(&json_out[0])?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&json_out)?),
        Format::Table => page(&text)?,
    }
    Ok(0)
}

pub(super) fn commit_json(c: &crate::git::Commit) -> serde_json::Value {
    json!({
        "id": c.id,
        "author": c.author_name,
        "email": c.author_email,
        "date": c.date_utc(),
        "subject": c.subject,
    })
}

pub async fn log(host: &Host, args: LogArgs) -> anyhow::Result<i32> {
    let found = resolve_fresh(host, &args.which).await?;
    let many = found.len() > 1;
    let mut json_out = Vec::new();
    for (repo, rec) in &found {
        let commits = repo.log(&rec.session_ref()?, &rec.base)?;
        match args.format {
            Format::Json => json_out.push(commits.iter().map(commit_json).collect::<Vec<_>>()),
            Format::Table => {
                print!("{}", heading(many, rec));
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
    }
    match args.format {
        Format::Json if !many => println!("{}", serde_json::to_string_pretty(&json_out[0])?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&json_out)?),
        Format::Table => {}
    }
    Ok(0)
}

pub async fn files(host: &Host, args: FilesArgs) -> anyhow::Result<i32> {
    let which = Which {
        session: args.session,
        workspace: args.workspace,
    };
    let found = resolve_fresh(host, &which).await?;
    let many = found.len() > 1;
    let mut json_out = Vec::new();
    for (repo, rec) in &found {
        let entries = repo.files(
            &rec.session_ref()?,
            args.path.as_deref().unwrap_or(""),
            args.recursive,
        )?;
        match args.format {
            Format::Json => json_out.push(entries),
            Format::Table => {
                print!("{}", heading(many, rec));
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
    }
    match args.format {
        Format::Json if !many => println!("{}", serde_json::to_string_pretty(&json_out[0])?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&json_out)?),
        Format::Table => {}
    }
    Ok(0)
}

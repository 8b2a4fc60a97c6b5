//! `cci sync`: what the agent made of a copied folder (a remote server and
//! a folder that is not a git repository), reviewed, and brought into the
//! folder only when asked.

use clap::Args;

use super::Format;
use super::output::{print_json, print_rows};
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::{self, copied};

/// Options of `cci sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The session container [default: the one of this folder].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The folder [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<std::path::PathBuf>,
    /// Bring the added and changed files into the folder.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: delete the files the agent deleted too.
    #[arg(long, requires = "apply")]
    pub delete: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn sync(host: &Host, args: SyncArgs) -> anyhow::Result<i32> {
    let ws = super::sandbox_args::workspace_on(host, args.workspace.as_deref())?;
    let prefix = sandbox::workspace_prefix(&ws.id);
    let running = sandbox::list_prefix(host, &prefix, false).await?;
    let name = match &args.name {
        // (A name is a file name below cci's folder too.)
        Some(n) if !n.starts_with(&prefix) || n.contains('/') => {
            return Err(super::UsageError(format!(
                "{n} is not a session of {} on this machine",
                ws.path.display()
            ))
            .into());
        }
        Some(n) => n.clone(),
        None => {
            let mut names: Vec<String> = running
                .iter()
                .filter(|s| s.copy)
                .map(|s| s.name.clone())
                .collect();
            if let Ok(dir) = copied::stored_dir() {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with(&prefix) && !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            match names.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(super::UsageError(format!(
                        "no copied session of {}: only a folder that is not a git repository, run on a remote server, is copied",
                        ws.path.display()
                    ))
                    .into());
                }
                many => {
                    return Err(super::UsageError(format!(
                        "several sessions of this folder: name one ({})",
                        many.join(", ")
                    ))
                    .into());
                }
            }
        }
    };
    // A session still running: its folder as it is now (a run's copy was
    // taken when its command ended).
    if let Some(s) = running
        .iter()
        .find(|s| s.name == name && s.copy && s.kind != "run" && s.state == InstanceStatus::Running)
        && let Err(e) = copied::copy_out(&host.client, &s.name, &s.account).await
    {
        eprintln!("cci: {name}'s folder could not be read now ({e}); showing the copy taken last");
    }
    let copy = copied::stored(&name)?;
    if !copy.is_dir() {
        return Err(super::UsageError(format!("no copy of {name} on this machine")).into());
    }
    let changes = copied::compare(&copy, &ws.path, &host.config.protected_paths)?;
    let applied = if args.apply {
        Some(copied::apply(&copy, &ws.path, &changes, args.delete)?)
    } else {
        None
    };
    if args.format == Format::Json {
        print_json(&serde_json::json!({
            "container": name,
            "workspace": ws.path,
            "changes": changes,
            "applied": applied,
        }))?;
        return Ok(0);
    }
    if changes.is_empty() {
        println!("no changes in {name}'s copy of {}", ws.path.display());
        return Ok(0);
    }
    let rows: Vec<[String; 3]> = changes
        .iter()
        .map(|c| {
            [
                c.kind.to_string(),
                crate::terminal::printable_lines(&c.path),
                c.held.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_rows(&["CHANGE", "PATH", "HELD BACK"], &rows);
    match applied {
        Some(done) => println!(
            "applied {} of {} change(s) to {}",
            done.len(),
            changes.len(),
            ws.path.display()
        ),
        None => println!(
            "`cci sync {name} --apply` brings the changes not held back into the folder (`--delete` deletes too)"
        ),
    }
    Ok(0)
}

//! `cci snapshot` (create, list, restore, delete) and `cci fork`:
//! checkpoints of a container and new slots from a copy of one.

use clap::{Args, Subcommand};

use super::output::{print_json, print_rows};
use super::sandbox_args::slot_limit;
use super::{Format, UsageError};
use crate::host::Host;
use crate::sandbox::{self, Slot, StateSave, snapshots};

/// Which container: by name, or this workspace's (in a slot).
#[derive(Debug, Args)]
pub struct Target {
    /// The container [default: this workspace's session container, the one
    /// in --slot when there are several].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The workspace [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH", conflicts_with = "name")]
    pub workspace: Option<std::path::PathBuf>,
    /// The workspace's container in this slot.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "name",
        allow_hyphen_values = true
    )]
    pub slot: Option<Slot>,
}

/// `cci snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot (instant on a copy-on-write pool).
    Create(CreateArgs),
    /// List a container's snapshots.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Put a container's files back as they were at a snapshot; a running
    /// one's session is ended (state saved) and the container restarted.
    Restore(SnapArgs),
    /// Delete a snapshot.
    #[command(visible_alias = "rm")]
    Delete(SnapArgs),
}

/// Options of `cci snapshot create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub target: Target,
    /// The snapshot's name [default: snap-YYYYMMDD-HHMMSS].
    #[arg(long = "name", value_name = "SNAP")]
    pub snap: Option<String>,
    /// Keep the running processes' memory too (needs CRIU on the host).
    #[arg(long)]
    pub stateful: bool,
}

/// Options of `cci snapshot list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci snapshot restore` and `delete`.
#[derive(Debug, Args)]
pub struct SnapArgs {
    /// The snapshot.
    #[arg(value_name = "SNAP")]
    pub snap: String,
    #[command(flatten)]
    pub target: Target,
}

/// Options of `cci fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The container to copy [default: this workspace's one session container].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The workspace [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH", conflicts_with = "name")]
    pub workspace: Option<std::path::PathBuf>,
    /// The new container's slot [default: the lowest free one].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub slot: Option<Slot>,
}

/// The container `t` names.
async fn resolve(host: &Host, t: &Target) -> anyhow::Result<String> {
    if let Some(name) = &t.name {
        return Ok(name.clone());
    }
    let ws = super::sandbox_args::workspace_on(host, t.workspace.as_deref())?;
    let prefix = sandbox::workspace_prefix(&ws.id);
    let mut all: Vec<_> = sandbox::list_prefix(host, &prefix, false)
        .await?
        .into_iter()
        .filter(|s| s.kind == "shell")
        .collect();
    if let Some(slot) = t.slot {
        all.retain(|s| s.slot == slot.get());
    }
    match all.len() {
        1 => Ok(all.remove(0).name),
        0 => Err(crate::incus::Error::NotFound(format!(
            "no session container{} for workspace {}",
            t.slot.map(|s| format!(" in slot {s}")).unwrap_or_default(),
            ws.path_str()
        ))
        .into()),
        n => {
            for s in &all {
                eprintln!("  {}  slot {}  {}", s.name, s.slot, s.state.as_str());
            }
            Err(UsageError(format!(
                "{n} containers for this workspace; pick one by NAME or --slot N"
            ))
            .into())
        }
    }
}

pub async fn snapshot(host: &Host, cmd: SnapshotCommand) -> anyhow::Result<i32> {
    match cmd {
        SnapshotCommand::Create(a) => {
            let name = resolve(host, &a.target).await?;
            let snap = snapshots::create(host, &name, a.snap.as_deref(), a.stateful).await?;
            println!("{name}: snapshot {snap} taken");
        }
        SnapshotCommand::List(a) => {
            let name = resolve(host, &a.target).await?;
            let all = snapshots::list(host, &name).await?;
            match a.format {
                Format::Json => print_json(&serde_json::json!({
                    "container": name,
                    "snapshots": all.iter().map(|s| serde_json::json!({
                        "name": s.name,
                        "created": s.created_at,
                        "stateful": s.stateful,
                        "size": s.size.filter(|n| *n >= 0),
                    })).collect::<Vec<_>>(),
                }))?,
                Format::Table if all.is_empty() => println!("{name} has no snapshots"),
                Format::Table => {
                    let rows: Vec<[String; 3]> = all
                        .iter()
                        .map(|s| {
                            [
                                s.name.clone(),
                                s.created_at.clone(),
                                if s.stateful { "yes" } else { "no" }.into(),
                            ]
                        })
                        .collect();
                    print_rows(&["NAME", "TAKEN", "STATEFUL"], &rows);
                }
            }
        }
        SnapshotCommand::Restore(a) => {
            let name = resolve(host, &a.target).await?;
            let r = snapshots::restore(host, &name, &a.snap).await?;
            if r.restarted {
                let saved = match &r.state {
                    StateSave::Nothing => String::new(),
                    s => super::session::describe(s)
                        .map(|d| format!("; {d}"))
                        .unwrap_or_default(),
                };
                println!(
                    "{name} restored to {}: it was running, so its session was ended{saved}, and the container restarted; `cci shell` in its slot starts a new session",
                    a.snap
                );
                if let Some(w) = &r.warning {
                    eprintln!("{w}");
                }
            } else {
                println!("{name} restored to {}", a.snap);
            }
        }
        SnapshotCommand::Delete(a) => {
            let name = resolve(host, &a.target).await?;
            snapshots::delete(host, &name, &a.snap).await?;
            println!("{name}: snapshot {} deleted", a.snap);
        }
    }
    Ok(0)
}

pub async fn fork(host: &Host, args: ForkArgs) -> anyhow::Result<i32> {
    let source = Target {
        name: args.name,
        workspace: args.workspace,
        slot: None,
    };
    let name = resolve(host, &source).await?;
    let f = snapshots::fork(host, &name, args.slot, slot_limit()?).await?;
    println!(
        "{} is a copy of {name} in slot {}; `cci shell --slot {}` starts a session in it",
        f.name, f.slot, f.slot
    );
    Ok(0)
}

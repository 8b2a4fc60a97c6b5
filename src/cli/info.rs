//! `cci info`: one cci container, or one saved session.

use clap::Args;

use super::Format;
use super::list::slot_of;
use super::output::{dash, fields, print_json};
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox;

/// Options of `cci info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Container name, or the id of a saved session [default: the newest
    /// container of the workspace, else its newest saved session].
    pub name: Option<String>,
    /// The workspace whose newest container or session is shown without NAME
    /// [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH", conflicts_with = "name")]
    pub workspace: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// What `cci info` without a name shows: the newest container of the
/// workspace, else (`Err(id)`) its newest saved session.
async fn newest_of(host: &Host, args: &InfoArgs) -> anyhow::Result<Result<String, String>> {
    let ws = super::sandbox_args::workspace_at(args.workspace.as_deref())?;
    let ws = ws.path_str();
    let newest = sandbox::list(host)
        .await?
        .into_iter()
        .filter(|s| s.workspace == ws)
        .max_by(|a, b| a.created.cmp(&b.created));
    if let Some(s) = newest {
        return Ok(Ok(s.name));
    }
    let saved = super::session::all_saved()?;
    match saved.iter().find(|(_, s)| s.meta.workspace == ws) {
        Some((_, s)) => Ok(Err(s.id().to_string())),
        None => Err(crate::incus::Error::NotFound(format!(
            "no cci container and no saved session of workspace {ws} (`cci list --all` shows them all)"
        ))
        .into()),
    }
}

pub async fn info(host: &Host, args: InfoArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => match newest_of(host, &args).await? {
            Ok(container) => container,
            Err(session) => {
                let shown = super::session::info(&session, args.format)?;
                return Ok(shown.unwrap_or(0));
            }
        },
    };
    if let Err(e) = sandbox::info(host, &name).await {
        if e.is_not_found()
            && let Some(code) = super::session::info(&name, args.format)?
        {
            return Ok(code);
        }
        return Err(e.into());
    }
    let all = sandbox::list_prefix(host, &name, true).await?;
    let Some(s) = all.into_iter().find(|s| s.name == name) else {
        return Err(crate::incus::Error::NotFound(format!("container {name}")).into());
    };
    let session_running = s.state == InstanceStatus::Running
        && sandbox::session_alive(client, &s.name, &s.account).await?;
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&s)?;
            v["session_running"] = session_running.into();
            print_json(&v)?;
        }
        Format::Table => {
            let rows = [
                ("Name", s.name.clone()),
                ("State", s.state.to_string()),
                ("Slot", slot_of(&s)),
                ("Mode", s.mode().to_string()),
                ("Kind", s.kind.clone()),
                ("Workspace", dash(&s.workspace)),
                ("Image", dash(&s.image)),
                ("IPv4", s.ipv4.clone().unwrap_or_else(|| "-".into())),
                ("Created", s.created.clone()),
                ("Last started", dash(&s.last_started)),
                ("Agent", dash(&s.agent)),
                ("Network", dash(&s.network)),
                ("Session", dash(&s.session)),
                (
                    "Session running",
                    if session_running { "yes" } else { "no" }.into(),
                ),
            ];
            print!("{}", fields(&rows));
        }
    }
    Ok(0)
}

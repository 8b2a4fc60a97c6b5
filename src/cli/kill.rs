//! `cci kill`: stop and delete cci containers at once.

use clap::Args;

use super::targets::{for_each, targets};
use crate::host::Host;
use crate::sandbox::{self, StateSave};

/// Options of `cci kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Containers to kill.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every cci container.
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub async fn kill(host: &Host, args: KillArgs) -> anyhow::Result<i32> {
    let Some(names) = targets(host, args.names, args.all, "kill", args.force).await? else {
        return Ok(0);
    };
    let op = |name: String| async move { sandbox::kill(host, &name).await };
    let ok = |name: &str, state: StateSave| match super::session::describe(&state) {
        Some(s) => format!("killed {name}; {s}"),
        None => format!("killed {name}"),
    };
    Ok(for_each(&names, op, ok).await)
}

//! `cci shutdown`: stop cci containers cleanly (then by force), deleting
//! the ephemeral ones.

use std::time::Duration;

use clap::Args;

use super::targets::{for_each, targets};
use crate::host::Host;
use crate::sandbox::{self, StateSave};

/// Options of `cci shutdown`.
#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// Containers to shut down.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every cci container.
    #[arg(long)]
    pub all: bool,
    /// Seconds to wait for a clean stop before forcing it.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// The dashboard's wait for a clean stop (the command's default).
pub const GRACE: Duration = Duration::from_secs(60);

pub async fn shutdown(host: &Host, args: ShutdownArgs) -> anyhow::Result<i32> {
    let Some(names) = targets(host, args.names, args.all, "shut down", args.force).await? else {
        return Ok(0);
    };
    let grace = Duration::from_secs(args.timeout);
    let op = |name: String| async move { sandbox::shutdown(host, &name, grace).await };
    let ok = |name: &str, e: sandbox::Ended| {
        let what = match (&e.state, e.deleted) {
            (_, true) => format!("shut down {name} (deleted)"),
            (StateSave::Failed(_), false) => format!(
                "shut down {name} (kept, stopped, so its agent state is not lost; `cci kill {name}` drops it)"
            ),
            (_, false) => format!("shut down {name} (persistent: stopped and kept)"),
        };
        if let Some(w) = &e.warning {
            eprintln!("{w}");
        }
        match super::session::describe(&e.state) {
            Some(s) => format!("{what}; {s}"),
            None => what,
        }
    };
    Ok(for_each(&names, op, ok).await)
}

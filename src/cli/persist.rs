//! `cci persist`: keep session containers when their sessions end.

use clap::Args;

use super::targets::report;
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox;

/// Options of `cci persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Session (or launched) containers to keep when their sessions end.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every running session or launched container that is not kept yet.
    #[arg(long)]
    pub all: bool,
}

pub async fn persist(host: &Host, args: PersistArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    let names = if args.all {
        let names: Vec<String> = sandbox::list(host)
            .await?
            .into_iter()
            .filter(|s| {
                matches!(s.kind.as_str(), "shell" | "container")
                    && !s.persistent
                    && s.state == InstanceStatus::Running
            })
            .map(|s| s.name)
            .collect();
        if names.is_empty() {
            println!("no running session or launched container to keep");
        }
        names
    } else {
        args.names
    };
    for name in &names {
        let r = sandbox::persist(host, name).await;
        let ok = |changed| match changed {
            true => format!("{name} is now persistent: kept when its session ends"),
            false => format!("{name} was already persistent"),
        };
        report(name, r, ok, &mut code);
    }
    Ok(code)
}

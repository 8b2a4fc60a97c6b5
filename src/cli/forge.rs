//! `cci forge log|serve`: git through cci's credential-holding forwarder
//! (the forwarder is `crate::forge`).

use clap::Subcommand;

use super::Format;
use super::output::{dash, print_rows};
use crate::forge::server::{Record, read_log};
use crate::host::Host;

/// `cci forge` subcommands.
#[derive(Debug, Subcommand)]
pub enum ForgeCommand {
    /// Every fetch and push that went through cci's git forwarder, allowed
    /// or refused, and why.
    Log {
        /// Only this container's operations.
        name: Option<String>,
        /// Output format (`json`: one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the forwarder (started by cci when a session needs it).
    #[command(hide = true)]
    Serve,
}

fn row(r: &Record) -> [String; 6] {
    let (y, m, d, h, min, s) = crate::state::utc(r.time_ms / 1000);
    [
        format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}"),
        dash(&r.container),
        r.op.clone(),
        r.repo.clone(),
        if r.allowed { "allowed" } else { "refused" }.into(),
        dash(&[r.refs.join(", "), r.reason.clone()].join(
            if r.reason.is_empty() || r.refs.is_empty() {
                ""
            } else {
                ": "
            },
        )),
    ]
}

/// Run one `cci forge` command.
pub async fn run(host: &Host, cmd: ForgeCommand) -> anyhow::Result<i32> {
    match cmd {
        ForgeCommand::Serve => {
            crate::forge::server::serve(host.client.clone()).await?;
            Ok(0)
        }
        ForgeCommand::Log { name, format } => {
            let path = crate::forge::log_path()?;
            let records: Vec<Record> = read_log(&path.with_extension("jsonl.1"))?
                .into_iter()
                .chain(read_log(&path)?)
                .filter(|r| name.as_ref().is_none_or(|n| *n == r.container))
                .collect();
            match format {
                Format::Json => {
                    for r in &records {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                Format::Table => {
                    let rows: Vec<[String; 6]> = records.iter().map(row).collect();
                    print_rows(
                        &[
                            "TIME (UTC)",
                            "CONTAINER",
                            "OP",
                            "REPOSITORY",
                            "DECISION",
                            "REFS / WHY",
                        ],
                        &rows,
                    );
                }
            }
            Ok(0)
        }
    }
}

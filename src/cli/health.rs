//! `cci health` / `cci doctor`.

use clap::Args;

use super::Format;
use crate::health::{self, Status};
use crate::host::Host;

/// Options of `cci health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The image sessions start from.
    #[arg(long, default_value = "cci", value_name = "ALIAS")]
    pub image: String,
}

pub async fn run(host: &Host, args: HealthArgs) -> anyhow::Result<i32> {
    let report = health::run(host, &args.image).await;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            let width = report
                .checks
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(0);
            for c in &report.checks {
                let mark = match c.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "WARN",
                    Status::Fail => "FAIL",
                    Status::Skip => "--  ",
                };
                println!("{mark}  {:width$}  {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    println!("      {:width$}  fix: {fix}", "");
                }
            }
            println!("\n{}", report.status);
        }
    }
    Ok(report.exit_code())
}

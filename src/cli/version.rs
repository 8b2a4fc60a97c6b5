//! `cci version`: cci's version, and the daemon's when it answers.

use super::Format;
use crate::incus::Client;

/// Options of `cci version`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `cci version`: needs no daemon; the JSON form says the daemon's version
/// when it answers (null when not).
pub async fn version(client: Option<&Client>, args: &VersionArgs) -> i32 {
    let cci = env!("CARGO_PKG_VERSION");
    match args.format {
        Format::Table => println!("cci {cci}"),
        Format::Json => {
            let server = match client {
                Some(c) => tokio::time::timeout(std::time::Duration::from_secs(3), c.server())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|s| s.environment.server_version),
                None => None,
            };
            println!("{}", serde_json::json!({ "version": cci, "incus": server }));
        }
    }
    0
}

//! `cci image ...` (and `cci images`): listing and managing images.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Format;
use super::output::{Col, Fixed, print_json};
use crate::host::Host;
use crate::image;
use crate::image::manage::{self, Cleaned, versions_prefix};

/// `cci image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images (those with an alias starting with `cci`, unless --all or --prefix).
    List(ImageListArgs),
    /// Publish a stopped container as an image.
    Publish(PublishArgs),
    /// Delete the image an alias (or fingerprint) names.
    Delete(NameArg),
    /// Exit 0 when the alias exists, 1 when not.
    Exists(NameArg),
    /// Delete old `PREFIX-YYYYMMDD-HHMMSS` versions, keeping the newest N.
    Cleanup(CleanupArgs),
}

/// Options of `cci image list`.
#[derive(Debug, Args)]
pub struct ImageListArgs {
    /// Every image.
    #[arg(long, conflicts_with = "prefix")]
    pub all: bool,
    /// Images with an alias starting with this.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci image publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The (stopped) container.
    pub container: String,
    /// Alias for the new image.
    pub alias: String,
    /// Description property.
    #[arg(long)]
    pub description: Option<String>,
}

/// An image alias or fingerprint.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Alias (or fingerprint).
    pub name: String,
}

/// Options of `cci image cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The versions' prefix (`cci` or `cci-` for `cci-YYYYMMDD-HHMMSS`).
    pub prefix: String,
    /// How many of the newest versions to keep (at least 1).
    #[arg(long, value_name = "N", value_parser = parse_keep)]
    pub keep: usize,
}

/// `--keep N`: 0 would delete every version, so it is refused.
fn parse_keep(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err(
            "0 would delete every version; keep at least 1 (`cci image delete ALIAS` deletes one by name)"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{arg:?} is not a whole number")),
    }
}

pub async fn run(host: &Host, cmd: ImageCommand) -> anyhow::Result<i32> {
    let client = &host.client;
    match cmd {
        ImageCommand::List(args) => list(host, args).await,
        ImageCommand::Publish(args) => {
            let fingerprint =
                manage::publish(client, &args.container, &args.alias, args.description).await?;
            println!(
                "published {} as {} ({fingerprint})",
                args.container, args.alias
            );
            Ok(0)
        }
        ImageCommand::Delete(arg) => {
            let fingerprint = manage::delete(client, &arg.name).await?;
            println!("deleted image {} ({fingerprint})", arg.name);
            Ok(0)
        }
        ImageCommand::Exists(arg) => Ok(if image::ensure::exists(client, &arg.name).await? {
            0
        } else {
            1
        }),
        ImageCommand::Cleanup(args) => cleanup(host, args).await,
    }
}

async fn list(host: &Host, args: ImageListArgs) -> anyhow::Result<i32> {
    let images = manage::list(&host.client, args.prefix.as_deref(), args.all).await?;
    match args.format {
        Format::Json => {
            let v: Vec<_> = images
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "fingerprint": i.fingerprint,
                        "aliases": i.aliases.iter().map(|a| &a.name).collect::<Vec<_>>(),
                        "description": i.description(),
                        "size": i.size,
                        "created": i.created_at,
                    })
                })
                .collect();
            print_json(&v)?;
        }
        Format::Table => {
            // The size right-aligned; two spaces before the date and the
            // description.
            let table = Fixed([
                Col::left(28),
                Col::left(12),
                Col::right(8),
                Col::left(19).after("  "),
                Col::rest().after("  "),
            ]);
            let mut out = std::io::stdout().lock();
            let head = ["ALIASES", "FINGERPRINT", "SIZE", "CREATED", "DESCRIPTION"];
            writeln!(out, "{}", table.line(head))?;
            for i in &images {
                let aliases: Vec<&str> = i.aliases.iter().map(|a| a.name.as_str()).collect();
                let aliases = if aliases.is_empty() {
                    "-".to_string()
                } else {
                    aliases.join(",")
                };
                let size = format!("{}MB", i.size / 1_000_000);
                let created = i
                    .created_at
                    .get(..19)
                    .unwrap_or(&i.created_at)
                    .replace('T', " ");
                let fingerprint = &i.fingerprint[..12.min(i.fingerprint.len())];
                let cells = [
                    aliases.as_str(),
                    fingerprint,
                    &size,
                    &created,
                    i.description(),
                ];
                writeln!(out, "{}", table.line(cells))?;
            }
        }
    }
    Ok(0)
}

async fn cleanup(host: &Host, args: CleanupArgs) -> anyhow::Result<i32> {
    let prefix = versions_prefix(&args.prefix);
    if prefix.is_empty() {
        return Err(super::UsageError(format!(
            "image cleanup: prefix {:?} names no versions",
            args.prefix
        ))
        .into());
    }
    let mut code = 0;
    for step in manage::cleanup(&host.client, prefix, args.keep).await? {
        match step {
            Cleaned::Current(alias) => println!("kept {alias}: `{prefix}` points to it"),
            Cleaned::Deleted(alias) => println!("deleted {alias}"),
            Cleaned::Failed(alias, e) => {
                eprintln!("cci: {alias}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_takes_the_prefix_with_or_without_its_dash_and_keeps_one() {
        assert_eq!(versions_prefix("claudeyard-node-42-"), "claudeyard-node-42");
        assert_eq!(versions_prefix("cci"), "cci");
        let stamped = "claudeyard-node-42-20260101-120000";
        for given in ["claudeyard-node-42-", "claudeyard-node-42"] {
            let p = versions_prefix(given);
            assert_eq!(image::version_stamp(p, stamped), Some("20260101-120000"));
        }
        assert!(parse_keep("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_keep("3"), Ok(3));
        assert!(parse_keep("-1").is_err());
    }
}

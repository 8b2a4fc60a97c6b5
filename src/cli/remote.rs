//! `cci remote`: the Incus servers on other machines cci can use
//! (`--remote NAME`, `CCI_REMOTE`, `[incus] remote`).

use clap::{Args, Subcommand};

use super::Format;
use super::output::{dash, print_json, print_rows};
use crate::remote::{self, Accept, Places};

/// `cci remote` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: `cci remote add NAME TOKEN` with a trust token from
    /// `incus config trust add NAME` on the server, or `cci remote add NAME
    /// URL` (its certificate's fingerprint is shown for you to accept; the
    /// server must trust cci's client certificate already).
    Add(AddArgs),
    /// List the remotes: cci's own and the incus CLI's.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Forget one of cci's remotes (its pinned certificate too).
    #[command(visible_alias = "rm")]
    Remove(RemoveArgs),
}

/// Options of `cci remote add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The name to give it.
    pub name: String,
    /// A trust token, `-` to read the token from standard input (it then
    /// stays out of the process list and the shell history), or the
    /// server's address (`HOST`, `HOST:PORT`, `https://HOST:PORT`; port 8443
    /// by default).
    #[arg(value_name = "TOKEN|-|URL")]
    pub target: String,
    /// Accept the server's certificate without asking (check its
    /// fingerprint another way first).
    #[arg(long, conflicts_with = "fingerprint")]
    pub accept_certificate: bool,
    /// Accept the server's certificate only if its SHA-256 fingerprint is
    /// this (`incus info | grep fingerprint` on the server).
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// The Incus project to use on it (`--project` still wins).
    #[arg(long = "remote-project", value_name = "NAME")]
    pub remote_project: Option<String>,
}

/// Options of `cci remote list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci remote remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The remote.
    pub name: String,
}

/// Run a `cci remote` command; `current` is the remote in force.
pub async fn run(cmd: &RemoteCommand, current: Option<&str>) -> anyhow::Result<i32> {
    let places = Places::standard()?;
    match cmd {
        RemoteCommand::Add(a) => {
            let accept = match (&a.fingerprint, a.accept_certificate) {
                (Some(f), _) => Accept::Fingerprint(f.trim().to_ascii_lowercase()),
                (None, true) => Accept::Any,
                (None, false) => Accept::Ask,
            };
            let target = if a.target == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim().to_string()
            } else {
                a.target.clone()
            };
            let added = remote::add(
                &places,
                &a.name,
                &target,
                a.remote_project.clone(),
                accept,
                &ask,
            )
            .await?;
            println!(
                "added remote {} at {} (certificate {} pinned{}); use it with `cci --remote {} ...` or `export CCI_REMOTE={}`",
                added.name,
                added.url,
                added.fingerprint,
                if added.token_used {
                    ", trusted with the token"
                } else {
                    ""
                },
                added.name,
                added.name
            );
            Ok(0)
        }
        RemoteCommand::List(a) => {
            let all = places.list()?;
            let current = current.unwrap_or(remote::LOCAL);
            match a.format {
                Format::Json => print_json(&serde_json::json!({
                    "current": current,
                    "remotes": all,
                }))?,
                Format::Table => {
                    let mut rows = vec![[
                        mark(current == remote::LOCAL, remote::LOCAL),
                        "unix socket".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                    ]];
                    rows.extend(all.iter().map(|r| {
                        [
                            mark(current == r.name, &r.name),
                            r.url.clone(),
                            dash(r.project.as_deref().unwrap_or("")),
                            match r.source {
                                remote::Source::Cci => "cci".to_string(),
                                remote::Source::Incus => "incus".to_string(),
                            },
                        ]
                    }));
                    print_rows(&["NAME", "URL", "PROJECT", "FROM"], &rows);
                }
            }
            Ok(0)
        }
        RemoteCommand::Remove(a) => {
            places.remove(&a.name)?;
            println!("removed remote {}", a.name);
            Ok(0)
        }
    }
}

fn mark(current: bool, name: &str) -> String {
    if current {
        format!("{name} (current)")
    } else {
        name.to_string()
    }
}

/// Ask on the terminal; None when there is none.
fn ask(question: &str) -> Option<String> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    Some(line)
}

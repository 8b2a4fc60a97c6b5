//! `cci tmux list|send|capture`: drive sessions from scripts. Everything runs
//! as the session's owner (`code`), so it reaches sessions `cci shell` started.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Format;
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::{self, Keys};
use crate::{config, terminal};

/// `cci tmux` subcommands.
#[derive(Debug, Subcommand)]
pub enum TmuxCommand {
    /// List running cci sessions.
    List(TmuxListArgs),
    /// Type text (and Enter) into a session.
    Send(SendArgs),
    /// Print a session's current screen.
    Capture(CaptureArgs),
}

/// Options of `cci tmux list`.
#[derive(Debug, Args)]
pub struct TmuxListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci tmux send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Container name.
    pub name: String,
    /// The text to type (with --keys: tmux key names such as C-c, Escape, Up).
    #[arg(required = true)]
    pub text: Vec<String>,
    /// Do not press Enter after the text.
    #[arg(long)]
    pub no_enter: bool,
    /// The arguments are key names, not text.
    #[arg(long, conflicts_with = "no_enter")]
    pub keys: bool,
}

/// Options of `cci tmux capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Container name.
    pub name: String,
    /// Also this many lines that scrolled off the top.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub lines: u32,
    /// Keep colours and other escape sequences (those that reach beyond
    /// the screen, such as clipboard and hyperlinks, are still dropped).
    #[arg(long)]
    pub escape: bool,
}

pub async fn run(host: &Host, cmd: TmuxCommand) -> anyhow::Result<i32> {
    let client = &host.client;
    match cmd {
        TmuxCommand::List(a) => list(host, a).await,
        TmuxCommand::Send(a) => {
            let target = sandbox::info(host, &a.name).await?;
            let keys = if a.keys {
                Keys::Named(a.text)
            } else {
                Keys::Text {
                    text: a.text.join(" "),
                    enter: !a.no_enter,
                }
            };
            sandbox::send_keys(client, &a.name, &keys, &target.account).await?;
            Ok(0)
        }
        TmuxCommand::Capture(a) => {
            let target = sandbox::info(host, &a.name).await?;
            let screen =
                sandbox::capture_session(client, &a.name, a.lines, a.escape, &target.account)
                    .await?;
            // The container's tmux is the agent's: its answer is trusted no
            // more than the agent's own output.
            let mut out = std::io::stdout().lock();
            if a.escape {
                out.write_all(&terminal::filter_all(screen.as_bytes()))?;
            } else {
                out.write_all(terminal::strip_controls(&screen).as_bytes())?;
            }
            out.flush()?;
            Ok(0)
        }
    }
}

async fn list(host: &Host, a: TmuxListArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let mut running = Vec::new();
    for s in sandbox::list(host).await? {
        if s.kind == "shell"
            && s.state == InstanceStatus::Running
            && sandbox::session_alive(client, &s.name, &s.account).await?
        {
            running.push(s);
        }
    }
    match a.format {
        Format::Json => {
            let v: Vec<_> = running
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "container": s.name, "session": sandbox::TMUX_SESSION,
                        "workspace": s.workspace, "slot": s.slot, "agent": s.agent,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            for s in &running {
                println!(
                    "{}  slot {}  {}",
                    s.name,
                    s.slot,
                    config::printable(&s.workspace)
                );
            }
        }
    }
    Ok(0)
}

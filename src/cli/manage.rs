//! `cci list`, `cci kill`: see and remove cci's containers.

use std::io::IsTerminal;

use clap::Args;

use super::{Format, UsageError};
use crate::incus::Client;
use crate::sandbox::{self, SandboxInfo};

/// Options of `cci list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

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

pub async fn list(client: &Client, args: ListArgs) -> anyhow::Result<i32> {
    let all = sandbox::list(client).await?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Table => print_table(&all),
    }
    Ok(0)
}

fn print_table(all: &[SandboxInfo]) {
    if all.is_empty() {
        println!("no cci containers");
        return;
    }
    let rows: Vec<[String; 7]> = all
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.state.clone(),
                s.mode.to_string(),
                s.kind.clone(),
                s.ipv4.clone().unwrap_or_else(|| "-".into()),
                s.created.get(..19).unwrap_or(&s.created).replace('T', " "),
                s.workspace.clone(),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "STATE",
        "MODE",
        "KIND",
        "IPV4",
        "CREATED",
        "WORKSPACE",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Ask on the terminal; without one, only `--force` may destroy.
pub fn confirm(question: &str, force: bool) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question}: refusing without --force when not on a terminal"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn kill(client: &Client, args: KillArgs) -> anyhow::Result<i32> {
    let names: Vec<String> = if args.all {
        let all = sandbox::list(client).await?;
        if all.is_empty() {
            println!("no cci containers");
            return Ok(0);
        }
        if !confirm(
            &format!("kill all {} cci containers", all.len()),
            args.force,
        )? {
            return Ok(1);
        }
        all.into_iter().map(|s| s.name).collect()
    } else {
        args.names
    };
    let mut code = 0;
    for name in &names {
        match sandbox::kill(client, name).await {
            Ok(()) => println!("killed {name}"),
            Err(e) => {
                eprintln!("cci: {name}: {e}");
                code = super::exit_code(&e.into());
            }
        }
    }
    Ok(code)
}

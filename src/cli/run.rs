//! `cci run`: a command in a fresh, always-deleted sandbox.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::sandbox_args::{SandboxArgs, slot_limit};
use super::signals::interrupted;
use crate::host::Host;
use crate::sandbox::{self, Ending, Kind, RunRequest, SandboxSpec};

/// How `cci run` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    /// Stream the command's output as it comes.
    Text,
    /// Print `{stdout, stderr, exit_code, duration_ms, container}` at the end.
    Json,
}

/// Options of `cci run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where and from what.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Stop the command and delete its container after this many seconds (exit 124).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Keep the container afterwards (stopped, with everything the command
    /// installed) instead of deleting it; `cci kill NAME` removes it.
    #[arg(long)]
    pub persistent: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    pub format: RunFormat,
    /// The command and its arguments.
    /// (`--` before it is optional; everything from CMD on is the command's.)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

pub async fn run(host: &Host, args: RunArgs) -> anyhow::Result<i32> {
    let workspace = args.sandbox.workspace()?;
    if let Some(code) = args.sandbox.ensure_image(host).await? {
        return Ok(code);
    }
    let git = super::isolate::start(host.config, &workspace, &args.sandbox.git)?;
    let mut extras = args.sandbox.extras(host, &workspace, false).await?;
    // An isolated session's repositories come from their seed mirrors.
    extras.mounts.extend(git.iter().flat_map(|g| g.mounts()));
    let marks = match &git {
        Some(g) => vec![(sandbox::keys::GIT_SESSION, g.id.clone())],
        None => Vec::new(),
    };
    let req = RunRequest {
        spec: SandboxSpec {
            workspace,
            image: args.sandbox.image(),
            kind: Kind::Run,
            persistent: args.persistent,
            nesting: true,
            marks,
            network: args.sandbox.net.policy()?,
            extras,
            account: host.config.account.clone(),
        },
        slot: args.sandbox.slot,
        slot_limit: slot_limit()?,
        command: args.command,
        env: args.sandbox.environment()?,
        timeout: args.timeout.map(Duration::from_secs),
        git,
    };
    let interrupt = interrupted();
    let stdin = (!std::io::stdin().is_terminal()).then(tokio::io::stdin);
    let (outcome, out, err) = match args.format {
        RunFormat::Text => {
            let o = sandbox::run(
                host,
                &req,
                stdin,
                tokio::io::stdout(),
                tokio::io::stderr(),
                interrupt,
            )
            .await?;
            (o, Vec::new(), Vec::new())
        }
        RunFormat::Json => {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let o = sandbox::run(host, &req, stdin, &mut out, &mut err, interrupt).await?;
            (o, out, err)
        }
    };
    let fate = if args.persistent {
        "kept, stopped"
    } else {
        "deleted"
    };
    let code = match outcome.ending {
        Ending::Exited(code) => code,
        Ending::TimedOut => {
            eprintln!(
                "cci: {} timed out after {} s; its container {} was {fate}",
                req.command[0],
                args.timeout.unwrap_or_default(),
                outcome.container
            );
            124
        }
        Ending::Interrupted(signal) => 128 + signal,
    };
    if args.persistent && !outcome.container.is_empty() {
        let name = &outcome.container;
        eprintln!("cci: kept {name} (persistent, stopped); `cci kill {name}` removes it");
    }
    if !outcome.changed.is_empty() {
        let ws = std::path::Path::new(req.spec.workspace.path_str());
        eprintln!("{}", sandbox::tripwire::warning(ws, &outcome.changed));
    }
    for g in &outcome.git {
        eprintln!("{}", super::isolate::report(g));
    }
    if args.format == RunFormat::Json {
        let v = serde_json::json!({
            "stdout": String::from_utf8_lossy(&out),
            "stderr": String::from_utf8_lossy(&err),
            "exit_code": code,
            "duration_ms": outcome.duration.as_millis() as u64,
            "container": outcome.container,
            "watched_changes": outcome.changed,
            "git_sessions": outcome.git.iter().map(|g| serde_json::json!({
                "id": g.record.id,
                "repository": g.record.repo_path,
                "folder": crate::sandbox::isolated::folder(&g.record.dir),
                "branch": g.record.branch,
                "new_commits": g.received.as_ref().ok().map(|r| r.as_ref().map_or(0, |r| r.new_commits)),
                "error": g.received.as_ref().err(),
                "merged": g.merged.as_ref().map(|m| match m {
                    Ok(done) => serde_json::json!({"done": done}),
                    Err(why) => serde_json::json!({"error": why}),
                }),
            })).collect::<Vec<_>>(),
        });
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{v}")?;
    }
    Ok(code)
}

//! `cci run`: a command in a fresh, always-deleted sandbox.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::sandbox_args::{SandboxArgs, slot_limit};
use super::signals::interrupted;
use crate::host::Host;
use crate::incus::CappedBuf;
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
    /// Instead of a command: the agent works on this prompt on its own
    /// (Claude Code's print mode, and the like of the other agents), its
    /// output streamed; its conversation is saved as a session (`cci shell
    /// --resume=ID` continues it). With `--format json` the result says the
    /// session and the workspace files changed.
    #[arg(long, value_name = "TEXT", conflicts_with = "command")]
    pub prompt: Option<String>,
    /// With --prompt: the agent: claude, opencode, codex, aider [default:
    /// CCI_TOOL, else `[tool] name`, else claude].
    #[arg(long, value_name = "NAME", requires = "prompt")]
    pub tool: Option<String>,
    /// With --prompt: run the agent from this program [default:
    /// CCI_TOOL_BINARY, else `[tool] binary`].
    #[arg(long, value_name = "PROGRAM", requires = "prompt")]
    pub tool_binary: Option<String>,
    /// The command and its arguments.
    /// (`--` before it is optional; everything from CMD on is the command's.)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "prompt",
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// The agent and command line of `cci run --prompt`, with its session id.
fn prompt_run(
    args: &RunArgs,
    prompt: &str,
) -> anyhow::Result<(sandbox::Agent, String, Vec<String>)> {
    let cfg = crate::config::current();
    let agent = super::shell::agent_of(args.tool.as_deref(), args.tool_binary.as_deref())?;
    let id = sandbox::new_session_id();
    let argv = agent.prompt_command(&id, prompt, &cfg.tool_args);
    Ok((agent, id, argv))
}

pub async fn run(host: &Host, args: RunArgs) -> anyhow::Result<i32> {
    let workspace = args.sandbox.workspace(host)?;
    if let Some(code) = args.sandbox.ensure_image(host).await? {
        return Ok(code);
    }
    let git = super::isolate::start(host.config, &workspace, &args.sandbox.git)?;
    let mut extras = args.sandbox.extras(host, &workspace, false).await?;
    // An isolated session's repositories come from their seed mirrors.
    // (A remote daemon gets them streamed in instead: it cannot mount them.)
    if host.remote().is_none() {
        extras.mounts.extend(git.iter().flat_map(|g| g.mounts()));
    }
    let mut marks = match &git {
        Some(g) => vec![(sandbox::keys::GIT_SESSION, g.id.clone())],
        None => Vec::new(),
    };
    let (agent, session, command) = match &args.prompt {
        Some(p) => {
            let (agent, id, argv) = prompt_run(&args, p)?;
            marks.push((sandbox::keys::SESSION, id.clone()));
            marks.push((sandbox::keys::AGENT, agent.def.name.to_string()));
            (Some(agent), id, argv)
        }
        None => (None, String::new(), args.command.clone()),
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
        command,
        env: args.sandbox.environment()?,
        timeout: args.timeout.map(Duration::from_secs),
        git,
        list_changes: agent.is_some() && args.format == RunFormat::Json,
        agent,
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
            // Held in memory for the JSON: bounded (what is cut is said).
            let cap = crate::incus::MAX_CAPTURED_STDOUT;
            let (mut out, mut err) = (CappedBuf::new(cap), CappedBuf::new(cap));
            let o = sandbox::run(host, &req, stdin, &mut out, &mut err, interrupt).await?;
            (o, out.into_noted(), err.into_noted())
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
    match &outcome.state {
        Some(sandbox::StateSave::Saved { id, .. }) => eprintln!(
            "cci: the agent's conversation is saved as session {id} (`cci shell --resume={id}` continues it)"
        ),
        Some(sandbox::StateSave::Failed(why)) => {
            eprintln!("cci: the agent's state was not saved: {why}")
        }
        _ => {}
    }
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
    match &outcome.copied {
        Some(Ok(())) => eprintln!(
            "cci: the folder as the command left it is kept for review: `cci sync {0}` shows what changed, `cci sync {0} --apply` brings it into {1}",
            outcome.container,
            req.spec.workspace.path.display()
        ),
        Some(Err(e)) => eprintln!("cci: the folder's copy did NOT come back: {e}"),
        None => {}
    }
    if args.format == RunFormat::Json {
        let v = serde_json::json!({
            "stdout": String::from_utf8_lossy(&out),
            "stderr": String::from_utf8_lossy(&err),
            "exit_code": code,
            "duration_ms": outcome.duration.as_millis() as u64,
            "container": outcome.container,
            "session": (!session.is_empty()).then_some(&session),
            "files_changed": outcome.files_changed,
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

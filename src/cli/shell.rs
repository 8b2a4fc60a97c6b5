//! `cci shell` (also plain `cci`) and `cci attach`: interactive sessions.

use clap::Args;

use super::UsageError;
use super::sandbox_args::{SandboxArgs, slot_limit, workspace_on};
use super::signals::interrupted;
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::{
    self, Agent, Attempt, Kind, Left, SandboxInfo, SandboxSpec, SessionCommand, ShellRequest, Slot,
};
use crate::terminal;

/// Options of `cci shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Where and from what.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Keep the container (and all installed in it) when the session ends;
    /// the next `cci shell` on its slot reuses it [default: `[defaults] persistent`].
    #[arg(long)]
    pub persistent: bool,
    /// Start the session detached (no terminal needed) and print the
    /// container name; `cci status`, `cci tmux send|capture` and `cci
    /// attach` drive it.
    #[arg(long, visible_alias = "headless")]
    pub background: bool,
    /// Start bash instead of the agent.
    #[arg(long)]
    pub debug: bool,
    /// The agent to start: claude, opencode, codex, aider [default: CCI_TOOL,
    /// else `[tool] name`, else claude].
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// Run the agent from this program instead of the usual one (a name on
    /// the container's PATH or a full path inside it) [default: CCI_TOOL_BINARY,
    /// else `[tool] binary`].
    #[arg(long, value_name = "PROGRAM")]
    pub tool_binary: Option<String>,
    /// Continue the newest saved session of this workspace (`--resume`), or
    /// the saved session ID (`--resume=ID`); its agent state is pushed into
    /// the container and the agent resumes the conversation.
    #[arg(
        long,
        visible_alias = "continue",
        value_name = "ID",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        conflicts_with = "debug"
    )]
    pub resume: Option<String>,
    /// With --resume=ID: resume a session saved from another workspace.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Keep the session's terminal output with its record (`cci session
    /// replay ID`) [default: `[session] record`].
    #[arg(long)]
    pub record: bool,
}

/// Options of `cci attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Container to attach to [default: the one session of this workspace].
    #[arg(value_name = "NAME", conflicts_with = "slot")]
    pub name: Option<String>,
    /// Workspace whose session to attach to [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<std::path::PathBuf>,
    /// The session in this slot of the workspace.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub slot: Option<Slot>,
    /// Open a bash shell in the container instead of the session.
    #[arg(long)]
    pub bash: bool,
}

/// The agent `--tool` and `--tool-binary` name, else the configured one
/// (a configured program belongs to the configured agent only).
pub(super) fn agent_of(tool: Option<&str>, binary: Option<&str>) -> anyhow::Result<Agent> {
    let cfg = crate::config::current();
    let name = tool.unwrap_or(&cfg.tool);
    let binary = binary.or(tool
        .is_none()
        .then_some(cfg.tool_binary.as_deref())
        .flatten());
    Ok(Agent::named(name, binary).map_err(|e| UsageError(e.to_string()))?)
}

pub async fn shell(host: &Host, args: ShellArgs) -> anyhow::Result<i32> {
    let workspace = args.sandbox.workspace(host)?;
    let mut id = sandbox::new_session_id();
    let mut resume = None;
    let (agent, argv, shell_after) = if args.debug {
        (None, vec!["bash".to_string()], false)
    } else {
        let cfg = crate::config::current();
        let agent = agent_of(args.tool.as_deref(), args.tool_binary.as_deref())?;
        if let Some(want) = &args.resume {
            let saved = super::session::to_resume(&agent, want, workspace.path_str(), args.force)?;
            id = saved.id().to_string();
            resume = Some(saved);
        }
        let mut argv = agent.command(&id, resume.is_some());
        argv.extend(cfg.tool_args.iter().cloned());
        (Some(agent), argv, true)
    };
    let git = super::isolate::start(host.config, &workspace, &args.sandbox.git)?;
    let mut extras = args.sandbox.extras(host, &workspace, true).await?;
    // An isolated session's repositories come from their seed mirrors.
    // (A remote daemon gets them streamed in instead: it cannot mount them.)
    if host.remote().is_none() {
        extras.mounts.extend(git.iter().flat_map(|g| g.mounts()));
    }
    let mut marks = match &git {
        Some(g) => vec![(sandbox::keys::GIT_SESSION, g.id.clone())],
        None => Vec::new(),
    };
    let record =
        (args.record || host.config.session.record).then_some(host.config.session.record_max_bytes);
    if let Some(cap) = record {
        marks.push((sandbox::keys::RECORD, cap.to_string()));
    }
    let req = ShellRequest {
        spec: SandboxSpec {
            workspace,
            image: args.sandbox.image(),
            kind: Kind::Shell,
            persistent: args.persistent || crate::config::current().persistent,
            nesting: true,
            marks,
            network: args.sandbox.net.policy()?,
            extras,
            account: host.config.account.clone(),
        },
        slot: args.sandbox.slot,
        slot_limit: slot_limit()?,
        agent,
        command: SessionCommand {
            argv,
            shell_after,
            env: sandbox::sandbox_env(&host.config.account, &args.sandbox.environment()?),
            size: terminal::size(),
            max_duration: crate::config::current().max_duration,
            // Before an agent only, not before a plain shell.
            pre_launch: if shell_after {
                crate::config::current().pre_launch.clone()
            } else {
                Vec::new()
            },
            pre_launch_required: crate::config::current().pre_launch_required,
            record,
        },
        resume,
        network_explicit: args.sandbox.net.network.is_some() || !args.sandbox.net.allow.is_empty(),
        git,
        auto_snapshots: crate::config::current().auto_snapshots,
    };
    if let Some(code) = args.sandbox.ensure_image(host).await? {
        return Ok(code);
    }
    let attempt = Attempt::default();
    let session = tokio::select! {
        r = sandbox::open(host, &req, &id, &attempt) => r?,
        signal = interrupted() => {
            attempt.abandon(host).await;
            return Ok(128 + signal);
        }
    };
    if let Some(g) = req.git.as_ref().filter(|_| !session.reused) {
        let branch = g
            .options
            .session_branch
            .clone()
            .unwrap_or_else(|| format!("cci/{}", session.slot));
        eprintln!(
            "cci: isolated git session {}: a clone on branch {} (no host folder mounted); its commits come back when the session ends: `cci diff {}`, `cci merge {}`",
            g.id,
            crate::config::printable(&branch),
            session.name,
            session.name
        );
    }
    // Told when this slot (or any) wants the user, if so configured.
    if let Err(e) = crate::attention::notify::spawn(&host.config.notify) {
        tracing::warn!("could not start the notifier: {e}");
    }
    if args.background {
        if session.reused {
            eprintln!("cci: {} network: {}", session.name, session.network);
        }
        println!("{}", session.name);
        return Ok(0);
    }
    let mode = if session.persistent {
        "persistent"
    } else {
        "ephemeral"
    };
    let how = if session.reused { "reusing" } else { "in" };
    if req.resume.is_some() {
        eprintln!("cci: resuming session {}", session.id);
    }
    eprintln!(
        "cci: session {how} {} (slot {}, {mode}, network {}); Ctrl-b d detaches",
        session.name, session.slot, session.network
    );
    attach_session(host, &session.name, session.slot, &session.account).await
}

pub async fn attach(host: &Host, args: AttachArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let target = match (&args.name, args.slot) {
        (Some(name), _) => sandbox::info(host, name).await?,
        (None, slot) => pick(host, &args, slot).await?,
    };
    if target.state != InstanceStatus::Running {
        return Err(UsageError(format!(
            "{} is {}; `cci shell --slot {}` starts its session again",
            target.name,
            target.state.as_str().to_lowercase(),
            target.slot
        ))
        .into());
    }
    if args.bash {
        let spec = crate::container::ExecSpec {
            command: vec!["bash".into(), "-l".into()],
            user: target.account.uid,
            group: target.account.gid,
            cwd: sandbox::WORKSPACE_MOUNT.into(),
            env: sandbox::sandbox_env(&target.account, &[]),
        };
        return Ok(crate::container::exec_interactive(client, &target.name, &spec).await?);
    }
    if !sandbox::session_alive(client, &target.name, &target.account).await? {
        return Err(UsageError(format!(
            "{} has no session running; `cci attach --bash {}` opens a shell in it",
            target.name, target.name
        ))
        .into());
    }
    let slot = Slot::new(target.slot).unwrap_or(Slot::MIN);
    attach_session(host, &target.name, slot, &target.account).await
}

/// The running session container `attach` means when not told by name.
async fn pick(host: &Host, args: &AttachArgs, slot: Option<Slot>) -> anyhow::Result<SandboxInfo> {
    let ws = workspace_on(host, args.workspace.as_deref())?;
    let prefix = sandbox::workspace_prefix(&ws.id);
    sandbox::reap(host, &prefix).await;
    let mut all: Vec<SandboxInfo> = sandbox::list_prefix(host, &prefix, false)
        .await?
        .into_iter()
        .filter(|s| s.kind == "shell")
        .collect();
    if let Some(slot) = slot {
        all.retain(|s| s.slot == slot.get());
        return all.pop().ok_or_else(|| {
            crate::incus::Error::NotFound(format!(
                "no session in slot {slot} of workspace {}",
                ws.path_str()
            ))
            .into()
        });
    }
    all.retain(|s| s.state == InstanceStatus::Running);
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(crate::incus::Error::NotFound(format!(
            "no running session for workspace {}; start one with `cci shell`",
            ws.path_str()
        ))
        .into()),
        n => {
            for s in &all {
                eprintln!("  {}  slot {}  {}", s.name, s.slot, s.mode());
            }
            Err(UsageError(format!(
                "{n} sessions run for this workspace; pick one: `cci attach NAME` or `cci attach --slot N`"
            ))
            .into())
        }
    }
}

/// Attach the terminal to `name`'s session; when the terminal leaves, end the
/// container if the session is over.
pub(super) async fn attach_session(
    host: &Host,
    name: &str,
    slot: Slot,
    account: &crate::config::Account,
) -> anyhow::Result<i32> {
    let client = &host.client;
    let req = sandbox::attach_request(account, &sandbox::sandbox_env(account, &[]));
    // The attach also ends with an error when the container powers off.
    let attached = terminal::run_interactive(client, name, req).await;
    if let Err(crate::incus::Error::ShuttingDown) = attached {
        eprintln!(
            "\r\ncci: the Incus daemon is shutting down or restarting; the session in {name} keeps running"
        );
        eprintln!("cci: once the daemon is back, `cci attach {name}` returns to it");
        return Ok(super::EXIT_UNREACHABLE);
    }
    let left = match sandbox::after_detach(host, name).await {
        Ok(left) => left,
        Err(e) => {
            if let Err(a) = attached {
                eprintln!("cci: lost the connection to {name}: {a}");
            }
            eprintln!("cci: cannot tell whether the session in {name} still runs: {e}");
            eprintln!("cci: if it does, `cci attach {name}` returns to it");
            return Ok(1);
        }
    };
    let ended = match left {
        Left::Detached => {
            eprintln!("cci: detached; {name} keeps running (`cci attach {name}`)");
            return Ok(0);
        }
        Left::Ended(e) if e.elsewhere => {
            eprintln!(
                "cci: the session in {name} was ended from outside (a snapshot restore?); the container runs on (`cci shell --slot {slot}` starts a new session)"
            );
            return Ok(0);
        }
        Left::Ended(e) => e,
    };
    if let Some(s) = super::session::describe(&ended.state) {
        eprintln!("cci: {s}");
    }
    if let Some(w) = &ended.warning {
        eprintln!("{w}");
    }
    match (&ended.state, ended.deleted) {
        (_, true) => eprintln!("cci: session ended; container {name} deleted"),
        (sandbox::StateSave::Failed(_), false) => {
            eprintln!(
                "cci: session ended; container {name} kept, stopped, so its agent state is not lost (`cci session save {name}` tries again, `cci kill {name}` drops it)"
            );
            return Ok(1);
        }
        (_, false) => eprintln!(
            "cci: session ended; persistent container {name} stopped and kept (`cci shell --slot {slot}` reuses it)"
        ),
    }
    Ok(0)
}

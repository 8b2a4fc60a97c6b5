//! Command-line interface: clap definitions, dispatch, output and exit codes.
//! Calls the domain modules; makes no Incus calls of its own.

mod build;
mod clean;
mod completion;
mod config;
mod container;
mod dashboard;
mod egress;
mod exit;
pub use exit::{
    EXIT_CONFLICT, EXIT_NETWORK, EXIT_NOT_FOUND, EXIT_PERMISSION, EXIT_UNREACHABLE, EXIT_UNSAFE,
    EXIT_USAGE, exit_code,
};
mod file;
mod forge;
mod health;
mod image;
mod info;
mod isolate;
mod kill;
mod list;
mod merge;
mod network;
mod output;
mod persist;
mod remote;
mod review;
mod run;
mod sandbox_args;
mod session;
mod shell;
mod shutdown;
mod signals;
mod snapshot;
mod status;
mod sync;
pub use signals::latch_signals;
mod targets;
mod tmux;
mod version;

use clap::{Parser, Subcommand, ValueEnum};

use crate::host::Host;
use crate::incus::Client;

/// Run AI coding agents in unprivileged Incus system containers.
///
/// Without a command, `cci` is `cci shell`: it starts the agent in a fresh
/// container for the current folder and attaches your terminal.
#[derive(Debug, Parser)]
#[command(
    name = "cci",
    version,
    about,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The Incus server to use: a remote from `cci remote list` [default:
    /// CCI_REMOTE, else `[incus] remote`, else the local daemon].
    #[arg(long, global = true, value_name = "NAME")]
    pub remote: Option<String>,
    /// Incus project to use [default: CCI_INCUS_PROJECT, else `[incus] project`].
    #[arg(long, global = true, value_name = "NAME")]
    pub project: Option<String>,
    /// Configuration profile to apply (`[profiles.NAME]`; or CCI_PROFILE,
    /// `[defaults] profile`).
    #[arg(long = "profile", global = true, value_name = "NAME")]
    pub config_profile: Option<String>,
    /// `cci shell`'s options, for plain `cci`.
    #[command(flatten)]
    pub shell: shell::ShellArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Output format for machine-readable commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that Incus, storage, network, nft and the image are ready
    /// (exit 0 healthy, 1 degraded, 2 unhealthy).
    #[command(visible_alias = "doctor")]
    Health(health::HealthArgs),
    /// Start the agent in a container for the workspace, inside tmux, and
    /// attach your terminal (the default command).
    Shell(shell::ShellArgs),
    /// Attach your terminal to a running session again.
    Attach(shell::AttachArgs),
    /// Run a command in a fresh container with the workspace mounted, as the
    /// `code` user in /workspace; the container is deleted after (kept,
    /// stopped, with --persistent).
    Run(run::RunArgs),
    /// List cci's containers.
    #[command(visible_alias = "ls")]
    List(list::ListArgs),
    /// Show one cci container.
    Info(info::InfoArgs),
    /// Every slot at a glance: what each agent does (working, waiting for
    /// you, idle, exited), for how long, CPU, memory, blocked network
    /// requests, its last line; live on a terminal, `--watch` for plain
    /// lines, `--format json` for scripts.
    Status(status::StatusArgs),
    /// One line per change of any slot (state changes, containers gone,
    /// refused network requests) until interrupted; `--format json` for tools.
    Events(status::EventsArgs),
    /// Stop cci containers cleanly (then by force), deleting the ephemeral ones.
    Shutdown(shutdown::ShutdownArgs),
    /// Stop and delete cci containers at once (no grace period).
    Kill(kill::KillArgs),
    /// Keep session containers when their sessions end.
    Persist(persist::PersistArgs),
    /// Remove stopped session containers, interrupted launches and
    /// containers whose workspace is gone (never running or persistent ones;
    /// --all: stopped persistent ones and the saved sessions too).
    Clean(clean::CleanArgs),
    /// Build the default image (`cci`), or a custom one with `cci build custom`.
    Build(build::BuildArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List images (the same as `cci image list`).
    Images(image::ImageListArgs),
    /// Print cci's version (and, with --format json, the daemon's when reachable).
    Version(version::VersionArgs),
    /// Copy files and folders in and out of containers.
    #[command(subcommand)]
    File(file::FileCommand),
    /// Drive sessions from scripts: list them, type into them, read their screens.
    #[command(subcommand)]
    Tmux(tmux::TmuxCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::CompletionArgs),
    /// Low-level container operations.
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// The containers' firewall: status, allowlist refresh, repair.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Git through cci's forwarder (no token inside): the log of every
    /// fetch and push.
    #[command(subcommand)]
    Forge(forge::ForgeCommand),
    /// Sessions: their records and recordings, and their saved agent states
    /// (list, show, replay, save, restore, import, export).
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// The configuration: what is in force and where from, checking a file,
    /// an example.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show an isolated git session's commits and changes against where it
    /// started (`--stat`, `--format json`).
    Diff(review::DiffArgs),
    /// List an isolated git session's commits.
    Log(review::LogArgs),
    /// List the files of an isolated git session's tree.
    Files(review::FilesArgs),
    /// Apply an isolated git session's commits to the host repository (the
    /// checked-out branch, or --into BRANCH); a conflict changes nothing.
    Merge(merge::MergeArgs),
    /// Drop an isolated git session: its commits on the host and its record.
    Discard(merge::DiscardArgs),
    /// Checkpoints of a container: take, list, restore and delete snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// A new slot of the workspace from a copy of a container (its
    /// packages, home and agent state), to try another approach beside it.
    Fork(snapshot::ForkArgs),
    /// A copied folder (a remote server, a folder that is not a git
    /// repository): what the agent changed, and `--apply` to bring it in.
    Sync(sync::SyncArgs),
    /// Incus servers on other machines: add (with a trust token or an
    /// accepted certificate), list, remove; use one with `--remote NAME`.
    #[command(subcommand)]
    Remote(remote::RemoteCommand),
    /// Approve the workspace's .cci.toml as it is now, so its settings that
    /// loosen cci apply (pinned by its SHA-256; a change needs approval again).
    Trust(config::TrustArgs),
}

/// The command line with the options written before the subcommand moved
/// after it (`cci --profile rust run ...` is `cci run --profile rust ...`,
/// `cci --slot 2 shell` is `cci shell --slot 2`), as the original tool took
/// them. An option the subcommand does not have is then clap's clear error.
/// Nothing moves when there is no subcommand, or after `--`.
pub fn hoist_options(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let is_sub = |a: &str| {
        cmd.get_subcommands()
            .any(|s| s.get_name() == a || s.get_all_aliases().any(|x| x == a))
    };
    let takes_value = |opt: &str| {
        cmd.get_arguments()
            .find(|arg| match opt.strip_prefix("--") {
                Some(long) => arg.get_long() == Some(long),
                None => {
                    let mut c = opt.chars().skip(1);
                    arg.get_short().is_some() && arg.get_short() == c.next() && c.next().is_none()
                }
            })
            .map(|arg| arg.get_action().takes_values())
    };
    let mut i = 1;
    while let Some(a) = args.get(i).and_then(|a| a.to_str()) {
        if is_sub(a) {
            break;
        }
        if a == "--" || !a.starts_with('-') || a == "-" {
            return args;
        }
        let (opt, inline) = match a.split_once('=') {
            Some((o, _)) => (o, true),
            None => (a, false),
        };
        match takes_value(opt) {
            Some(true) if !inline => i += 2,
            Some(_) => i += 1,
            None => return args,
        }
    }
    if i <= 1 || i >= args.len() {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    out.push(args[0].clone());
    out.push(args[i].clone());
    out.extend(args[1..i].iter().cloned());
    out.extend(args[i + 1..].iter().cloned());
    out
}

/// Bad input found after parsing (a workspace, an environment setting).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// Whether the command handles SIGINT/SIGTERM itself (cleaning up what
    /// it started), so signals are latched from the start.
    pub fn latches_signals(&self) -> bool {
        matches!(
            self.command,
            None | Some(Command::Run(_) | Command::Shell(_))
        )
    }

    /// Whether the command runs under the loaded configuration (`config`
    /// and `trust` load it themselves, to report on it).
    pub fn needs_config(&self) -> bool {
        !matches!(
            self.command,
            Some(Command::Completion(_) | Command::Config(_) | Command::Trust(_))
        )
    }
}

/// Connect to the daemon as the flags, environment and configuration say.
fn client(cli: &Cli) -> anyhow::Result<Client> {
    let cfg = crate::config::current();
    let client = crate::remote::connect(current_remote(cli).as_deref(), cfg.socket.as_deref())?;
    // `--project`, else the configured one, else the remote's own.
    let project = cli.project.clone().or_else(|| cfg.project.clone());
    Ok(match project {
        Some(p) => client.with_project(Some(p)),
        None => client,
    })
}

/// The remote in force: `--remote`, else CCI_REMOTE or `[incus] remote`
/// (the configuration's environment layer reads CCI_REMOTE).
fn current_remote(cli: &Cli) -> Option<String> {
    cli.remote
        .clone()
        .or_else(|| crate::config::current().remote.clone())
}

/// The workspace folder whose `.cci.toml` applies: `--workspace` of the
/// command, else the current directory.
fn workspace_hint(cli: &Cli) -> Option<std::path::PathBuf> {
    let given = match &cli.command {
        None => cli.shell.sandbox.workspace.clone(),
        Some(Command::Shell(a)) => a.sandbox.workspace.clone(),
        Some(Command::Run(a)) => a.sandbox.workspace.clone(),
        Some(Command::Attach(a)) => a.workspace.clone(),
        Some(Command::Config(c)) => c.workspace(),
        Some(Command::Trust(a)) => a.workspace.clone(),
        _ => None,
    };
    given.or_else(|| std::env::current_dir().ok())
}

/// Load the configuration layers (once, before anything else happens).
pub fn load_config(cli: &Cli) -> Result<crate::config::Config, crate::config::ConfigError> {
    let ws = workspace_hint(cli).map(|w| std::fs::canonicalize(&w).unwrap_or(w));
    let sources = crate::config::Sources::standard(ws.as_deref(), cli.config_profile.clone());
    crate::config::load(&sources)
}

/// Run the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    // Needs no daemon.
    if let Some(Command::Completion(args)) = &cli.command {
        return completion::completion(args);
    }
    if let Some(Command::Config(cmd)) = &cli.command {
        return config::run(&cli, cmd);
    }
    if let Some(Command::Trust(args)) = &cli.command {
        return config::trust(args);
    }
    if let Some(Command::Remote(cmd)) = &cli.command {
        return remote::run(cmd, current_remote(&cli).as_deref()).await;
    }
    if let Some(Command::Version(args)) = &cli.command {
        return Ok(version::version(client(&cli).ok().as_ref(), args).await);
    }
    // The one context every command runs against.
    let host = Host::new(
        client(&cli)?,
        crate::network::Nft::from_env(),
        crate::config::current(),
    );
    // Not before the commands that do this themselves and report it.
    let own_check = match &cli.command {
        Some(Command::Health(_)) => true,
        Some(Command::Network(c)) => !matches!(c, network::NetworkCommand::Status(_)),
        Some(Command::Clean(a)) => a.orphans,
        Some(Command::Forge(_)) => true,
        _ => false,
    };
    if let Some(remote) = host.remote() {
        // cci's firewall is this machine's; the server's containers are
        // never reconciled with it (that could stop what another machine's
        // cci guards there).
        let firewall_command = match &cli.command {
            Some(Command::Network(_)) => true,
            // (Which mirrors are in use is the local daemon's to say.)
            Some(Command::Clean(a)) => a.orphans || a.git_mirrors,
            _ => false,
        };
        if let Some(Command::Clean(a)) = &cli.command
            && a.caches
        {
            return Err(UsageError(format!(
                "shared caches are this machine's and remote {remote}'s sandboxes use none (run this without --remote)"
            ))
            .into());
        }
        if firewall_command {
            return Err(UsageError(format!(
                "cci's firewall guards the local daemon's containers only; remote {remote} has no rules of cci's to show or repair (run this without --remote)"
            ))
            .into());
        }
    } else if !own_check {
        keep_firewall(&host).await;
    }
    let Some(command) = cli.command else {
        return shell::shell(&host, cli.shell).await;
    };
    match command {
        Command::Health(args) => health::run(&host, args).await,
        Command::Shell(args) => shell::shell(&host, args).await,
        Command::Attach(args) => shell::attach(&host, args).await,
        Command::Run(args) => run::run(&host, args).await,
        Command::List(args) => list::list(&host, args).await,
        Command::Info(args) => info::info(&host, args).await,
        Command::Status(args) => status::status(&host, args).await,
        Command::Events(args) => status::events(&host, args).await,
        Command::Shutdown(args) => shutdown::shutdown(&host, args).await,
        Command::Kill(args) => kill::kill(&host, args).await,
        Command::Diff(args) => review::diff(&host, args).await,
        Command::Log(args) => review::log(&host, args).await,
        Command::Files(args) => review::files(&host, args).await,
        Command::Merge(args) => merge::merge(&host, args).await,
        Command::Discard(args) => merge::discard(&host, args).await,
        Command::Persist(args) => persist::persist(&host, args).await,
        Command::Clean(args) => clean::clean(&host, args).await,
        Command::Build(args) => build::build(&host, args).await,
        Command::Image(cmd) => image::run(&host, cmd).await,
        Command::Images(args) => image::run(&host, image::ImageCommand::List(args)).await,
        Command::Version(args) => Ok(version::version(Some(&host.client), &args).await),
        Command::Tmux(cmd) => tmux::run(&host, cmd).await,
        Command::File(cmd) => file::run(&host.client, cmd).await,
        Command::Completion(args) => completion::completion(&args),
        Command::Container(cmd) => container::run(&host, cmd).await,
        Command::Network(cmd) => network::run(&host, cmd).await,
        Command::Session(cmd) => session::run(&host, cmd).await,
        Command::Forge(cmd) => forge::run(&host, cmd).await,
        Command::Snapshot(cmd) => snapshot::snapshot(&host, cmd).await,
        Command::Fork(args) => snapshot::fork(&host, args).await,
        Command::Sync(args) => sync::sync(&host, args).await,
        // Handled above, before the configuration is installed.
        Command::Config(_) | Command::Trust(_) | Command::Remote(_) => Ok(0),
    }
}

/// Before any command, unless the background watcher runs: bring the
/// firewall in line with the daemon (rules of gone containers removed,
/// missing ones restored) and start the watcher while anything is guarded.
async fn keep_firewall(host: &Host) {
    // A running watcher does this already, at once on every change.
    if crate::network::watcher_running() {
        return;
    }
    match crate::network::reconcile(&host.client, host.policy()).await {
        Ok(r) => {
            // Routine upkeep stays quiet (scripts read stderr); a container
            // stopped for want of rules is worth a word.
            for p in &r.removed {
                tracing::info!("removed the firewall rules of gone port {p}");
            }
            for n in &r.restored {
                tracing::info!("restored the firewall rules of {n}");
            }
            for n in &r.stopped {
                eprintln!(
                    "cci: stopped {n}: its firewall rules were missing and could not be restored"
                );
            }
            if r.guarded > 0 {
                crate::network::start_watcher();
            }
        }
        // The command itself will say what is wrong with the daemon.
        Err(crate::network::Error::Incus(_)) => {}
        Err(e) => tracing::warn!("firewall upkeep: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_before_the_subcommand_move_after_it() {
        use std::ffi::OsString;
        let h = |a: &[&str]| -> Vec<String> {
            super::hoist_options(a.iter().map(OsString::from).collect())
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            h(&["cci", "--image", "x", "run", "--", "ls"]),
            ["cci", "run", "--image", "x", "--", "ls"]
        );
        assert_eq!(
            h(&["cci", "--slot", "2", "shell"]),
            ["cci", "shell", "--slot", "2"]
        );
        assert_eq!(
            h(&["cci", "--profile=rust", "--persistent", "ls"]),
            ["cci", "ls", "--profile=rust", "--persistent"]
        );
        // A value that looks like a subcommand stays a value.
        assert_eq!(
            h(&["cci", "--workspace", "list", "run", "true"]),
            ["cci", "run", "--workspace", "list", "true"]
        );
        for same in [
            &["cci", "--slot", "2"][..],
            &["cci", "run", "--image", "x", "ls"],
            &["cci", "--", "list"],
            &["cci", "--no-such", "list"],
            &["cci", "--help"],
        ] {
            assert_eq!(h(same), same);
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

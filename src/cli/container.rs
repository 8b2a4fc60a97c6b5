//! `cci container ...`: low-level operations on named containers.

use clap::{Args, Subcommand, ValueEnum};

use super::output::{Col, Fixed, print_json};
use crate::container::{self, ExecSpec};
use crate::host::Host;
use crate::incus::{self, ImageRef, InstanceCreate};
use crate::network;

/// Container subcommands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container from an image.
    Launch(LaunchArgs),
    /// Start a stopped container.
    Start(NameArgs),
    /// Stop a container (cleanly, or at once with --force).
    Stop(ForceArgs),
    /// Delete a container (a running one only with --force).
    Delete(ForceArgs),
    /// Exit 0 when the container exists, 1 when not.
    Exists(NameArgs),
    /// Exit 0 when the container is running, 1 when not.
    Running(NameArgs),
    /// List containers (all of them, not only cci's).
    List(ListArgs),
    /// Add a folder of this machine to a container as a disk device.
    Mount(MountArgs),
    /// Run a command in a container; exits with the command's exit code.
    Exec(ExecArgs),
}

/// A container name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Container name.
    pub name: String,
}

/// A container name and `--force`.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// Container name.
    pub name: String,
    /// Kill instead of a clean stop (stop), or stop first if running (delete).
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// Options of `cci container launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Image alias or fingerprint.
    pub image: String,
    /// Name of the new container.
    pub name: String,
    /// Delete the container when it stops.
    #[arg(long)]
    pub ephemeral: bool,
    /// Return as soon as it runs, without waiting for its network address.
    #[arg(long)]
    pub no_wait: bool,
    /// Incus profile to apply (repeatable, in order) [default: default].
    /// (`--profile` is cci's configuration profile.)
    #[arg(long = "incus-profile", short = 'p', value_name = "NAME")]
    pub profiles: Vec<String>,
    /// Network isolation (as for sessions).
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
}

/// Options of `cci container list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = super::Format::Table)]
    pub format: super::Format,
}

/// Options of `cci container mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Container name.
    pub name: String,
    /// Device name.
    pub device: String,
    /// Folder on this machine.
    pub source: std::path::PathBuf,
    /// Where it appears in the container.
    pub path: String,
    /// Map the folder's owner to the account inside (`code`), as the
    /// workspace's owner is (`--shift=false`: mount it as it is; its files
    /// then show as nobody). A root-owned folder is refused.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub shift: bool,
    /// Read-only.
    #[arg(long)]
    pub readonly: bool,
}

/// How `--capture` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureFormat {
    /// `{"stdout": ..., "stderr": ..., "exit_code": N}`.
    Json,
    /// Standard output only, as is.
    Raw,
}

/// Options of `cci container exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Container name.
    pub name: String,
    /// User id to run as.
    #[arg(long, default_value_t = 0)]
    pub user: u32,
    /// Group id to run as.
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    /// Environment for the command.
    #[command(flatten)]
    pub env: super::sandbox_args::EnvArgs,
    /// Working directory.
    #[arg(long, default_value = "")]
    pub cwd: String,
    /// Allocate a terminal and attach it to yours.
    #[arg(short = 't', long = "tty", conflicts_with = "capture")]
    pub tty: bool,
    /// Collect the output and print it when the command ends.
    #[arg(long)]
    pub capture: bool,
    /// Output format with --capture.
    #[arg(long, value_enum, default_value_t = CaptureFormat::Json, requires = "capture")]
    pub format: CaptureFormat,
    /// The command and its arguments (`--` before it is optional;
    /// everything from CMD on is the command's).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

pub async fn run(host: &Host, cmd: ContainerCommand) -> anyhow::Result<i32> {
    let client = &host.client;
    match cmd {
        ContainerCommand::Launch(a) => {
            let image = ImageRef::Alias(a.image.clone());
            let mut spec = InstanceCreate::container(&a.name, &image);
            spec.ephemeral = a.ephemeral;
            // cci's own (kind `container`), so list, info, kill, shutdown,
            // persist and clean manage it.
            let token = crate::sandbox::launch_token();
            crate::sandbox::launch_marks(&mut spec.config, &a.image, &token);
            if !a.profiles.is_empty() {
                spec.profiles = a.profiles;
            }
            let policy = a.net.policy()?;
            let net = network::prepare(client, &spec.profiles, &policy).await?;
            network::create_guarded(client, host.policy(), &net, spec).await?;
            if !a.no_wait {
                let want = net.readiness();
                network::ready::wait(client, &a.name, &want, network::ready::bound()).await??;
            }
            println!("launched {} from {}", a.name, a.image);
            Ok(0)
        }
        ContainerCommand::Start(a) => {
            let (i, _) = host.client.instance(&a.name).await?;
            crate::sandbox::sources_unmoved(&i).map_err(super::UsageError)?;
            // What a session asked to forward ended with it.
            crate::sandbox::forward::strip(client, &a.name).await?;
            network::start_guarded(client, host.policy(), &a.name).await?;
            // Handed back once usable, as a launch is.
            let want = network::ready::want_of(client, &a.name).await?;
            network::ready::wait(client, &a.name, &want, network::ready::bound()).await??;
            Ok(0)
        }
        ContainerCommand::Stop(a) => {
            let grace = (!a.force).then_some(std::time::Duration::from_secs(60));
            client.stop_instance(&a.name, grace, a.force).await?;
            Ok(0)
        }
        ContainerCommand::Delete(a) => {
            if a.force {
                crate::sandbox::remove(host, &a.name).await?;
            } else {
                client.delete_instance(&a.name).await?;
            }
            Ok(0)
        }
        ContainerCommand::Exists(a) => Ok(match client.instance(&a.name).await {
            Ok(_) => 0,
            Err(e) if e.is_not_found() => 1,
            Err(e) => return Err(e.into()),
        }),
        ContainerCommand::Running(a) => Ok(match client.instance(&a.name).await {
            Ok((i, _)) if i.is_running() => 0,
            Ok(_) => 1,
            Err(e) if e.is_not_found() => 1,
            Err(e) => return Err(e.into()),
        }),
        ContainerCommand::List(a) => list(host, a).await,
        ContainerCommand::Mount(a) => mount(host, a).await,
        ContainerCommand::Exec(args) => exec(host, args).await,
    }
}

async fn list(host: &Host, args: ListArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let all = client.instances("", true).await?;
    match args.format {
        super::Format::Json => {
            let v: Vec<_> = all
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "name": i.name,
                        "status": i.status,
                        "ephemeral": i.ephemeral,
                        "ipv4": i.state.as_ref().and_then(|s| s.ipv4("eth0")),
                        "created": i.created_at,
                        "type": i.kind,
                    })
                })
                .collect();
            print_json(&v)?;
        }
        super::Format::Table => {
            let table = Fixed([Col::left(32), Col::left(8), Col::left(10), Col::rest()]);
            println!("{}", table.line(["NAME", "STATE", "EPHEMERAL", "IPV4"]));
            for i in &all {
                let ip = i.state.as_ref().and_then(|s| s.ipv4("eth0"));
                let ephemeral = if i.ephemeral { "yes" } else { "no" };
                let ip = ip.as_deref().unwrap_or("-");
                println!(
                    "{}",
                    table.line([&i.name, i.status.as_str(), ephemeral, ip])
                );
            }
        }
    }
    Ok(0)
}

async fn mount(host: &Host, a: MountArgs) -> anyhow::Result<i32> {
    if let Some(remote) = host.remote() {
        return Err(super::UsageError(format!(
            "remote {remote} cannot mount a folder of this machine (a path there names the server's); copy it in with `cci file push -r` instead"
        ))
        .into());
    }
    let client = &host.client;
    let (instance, etag) = client.instance(&a.name).await?;
    let plan = crate::sandbox::plan_host_mount(
        &instance,
        &a.source,
        &a.path,
        a.readonly,
        a.shift,
        &host.config.account,
    )
    .map_err(super::UsageError)?;
    let mut patch = serde_json::json!({"devices": {a.device.clone(): plan.device}});
    if let Some(map) = &plan.idmap {
        patch["config"] = serde_json::json!({"raw.idmap": map});
    }
    client
        .update_instance(&a.name, &patch, etag.as_deref())
        .await?;
    let who = match plan.owner {
        Some((uid, gid)) => format!(" (files of {uid}:{gid} appear as {})", plan.account.name),
        None => String::new(),
    };
    println!("mounted {} at {}:{}{who}", plan.source, a.name, a.path);
    if plan.restart_needed {
        eprintln!(
            "cci: the owner's mapping takes effect when {0} starts again (`cci container stop {0}` and `cci container start {0}`); until then the folder's files show as nobody",
            a.name
        );
    }
    Ok(0)
}

/// The shell's exit status for a command the daemon could not start: 127
/// when it does not exist, 126 when it cannot be executed.
fn not_started(err: &incus::Error) -> Option<(i32, &'static str)> {
    let message = match err {
        incus::Error::NotFound(m) | incus::Error::BadRequest(m) => m,
        incus::Error::Daemon { message, .. } => message,
        _ => return None,
    };
    match message.trim() {
        "Command not found" => Some((127, "command not found")),
        "Command not executable" => Some((126, "permission denied (not executable)")),
        _ => None,
    }
}

/// `result`, or the shell's status (and its message on stderr) when the
/// command could not be started.
fn status_of(result: incus::Result<i32>, command: &str) -> anyhow::Result<i32> {
    match result {
        Err(e) => match not_started(&e) {
            Some((code, why)) => {
                eprintln!("cci: {}: {why}", crate::config::printable(command));
                Ok(code)
            }
            None => Err(e.into()),
        },
        Ok(code) => Ok(code),
    }
}

async fn exec(host: &Host, args: ExecArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let spec = ExecSpec {
        command: args.command,
        user: args.user,
        group: args.group,
        cwd: args.cwd,
        env: args.env.resolve()?,
    };
    let program = spec.command.first().cloned().unwrap_or_default();
    if args.tty {
        let r = container::exec_interactive(client, &args.name, &spec).await;
        return status_of(r, &program);
    }
    if !args.capture {
        let r = container::exec_streamed(client, &args.name, &spec).await;
        return status_of(r, &program);
    }
    let out = match container::exec_captured(client, &args.name, &spec).await {
        Err(e) => match not_started(&e) {
            // As a shell reports it: the status, and why on stderr.
            Some((code, why)) => {
                let line = format!("{}: {why}", crate::config::printable(&program));
                eprintln!("cci: {line}");
                incus::ExecOutput {
                    exit_code: code,
                    stderr: format!("{line}\n").into_bytes(),
                    ..Default::default()
                }
            }
            None => return Err(e.into()),
        },
        Ok(out) => out,
    };
    match args.format {
        CaptureFormat::Json => {
            let v = serde_json::json!({
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "exit_code": out.exit_code,
            });
            println!("{v}");
        }
        CaptureFormat::Raw => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out.stdout)?;
            stdout.flush()?;
        }
    }
    Ok(out.exit_code)
}

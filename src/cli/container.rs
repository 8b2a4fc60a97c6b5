//! `cci container ...`: low-level operations on named containers.

use clap::{Args, Subcommand, ValueEnum};

use crate::container::{self, ExecSpec};
use crate::incus::{Client, ImageRef, InstanceCreate};
use crate::network::{self, Nft};

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
    /// Shift ownership so host files keep their owners inside (idmapped mount).
    #[arg(long)]
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
    pub env: super::run::EnvArgs,
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
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(client: &Client, cmd: ContainerCommand) -> anyhow::Result<i32> {
    match cmd {
        ContainerCommand::Launch(a) => {
            let image = ImageRef::Alias(a.image.clone());
            let mut spec = InstanceCreate::container(&a.name, &image);
            spec.ephemeral = a.ephemeral;
            if !a.profiles.is_empty() {
                spec.profiles = a.profiles;
            }
            let policy = a.net.policy()?;
            let net = network::prepare(client, &spec.profiles, &policy).await?;
            network::create_guarded(client, &Nft::from_env(), &net, spec).await?;
            if !a.no_wait {
                let want = net.readiness();
                network::ready::wait(client, &a.name, &want, network::ready::bound()).await??;
            }
            println!("launched {} from {}", a.name, a.image);
            Ok(0)
        }
        ContainerCommand::Start(a) => {
            network::start_guarded(client, &Nft::from_env(), &a.name).await?;
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
                crate::sandbox::remove(client, &a.name).await?;
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
        ContainerCommand::List(a) => list(client, a).await,
        ContainerCommand::Mount(a) => mount(client, a).await,
        ContainerCommand::Exec(args) => exec(client, args).await,
    }
}

async fn list(client: &Client, args: ListArgs) -> anyhow::Result<i32> {
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
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        super::Format::Table => {
            println!("{:<32} {:<8} {:<10} IPV4", "NAME", "STATE", "EPHEMERAL");
            for i in &all {
                let ip = i.state.as_ref().and_then(|s| s.ipv4("eth0"));
                println!(
                    "{:<32} {:<8} {:<10} {}",
                    i.name,
                    i.status,
                    if i.ephemeral { "yes" } else { "no" },
                    ip.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(0)
}

async fn mount(client: &Client, a: MountArgs) -> anyhow::Result<i32> {
    let source = std::fs::canonicalize(&a.source)
        .map_err(|e| super::UsageError(format!("{}: {e}", a.source.display())))?;
    let Some(source) = source.to_str() else {
        return Err(super::UsageError(format!("{} is not UTF-8", source.display())).into());
    };
    let mut device = serde_json::json!({"type": "disk", "source": source, "path": a.path});
    if a.shift {
        device["shift"] = "true".into();
    }
    if a.readonly {
        device["readonly"] = "true".into();
    }
    let patch = serde_json::json!({"devices": {a.device.clone(): device}});
    client.update_instance(&a.name, &patch, None).await?;
    println!("mounted {source} at {}:{}", a.name, a.path);
    Ok(0)
}

async fn exec(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    let spec = ExecSpec {
        command: args.command,
        user: args.user,
        group: args.group,
        cwd: args.cwd,
        env: args.env.resolve()?,
    };
    if args.tty {
        return Ok(container::exec_interactive(client, &args.name, &spec).await?);
    }
    if !args.capture {
        return Ok(container::exec_streamed(client, &args.name, &spec).await?);
    }
    let out = container::exec_captured(client, &args.name, &spec).await?;
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

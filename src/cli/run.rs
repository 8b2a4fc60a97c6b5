//! `cci run`: a command in a fresh, always-deleted sandbox.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use crate::container::parse_env;
use crate::incus::Client;
use crate::sandbox::{self, Ending, Kind, RunRequest, SandboxSpec, Slot, Workspace};

/// Where and from what a sandbox is made (shared by the session commands).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Workspace folder mounted at /workspace [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// Slot for parallel sessions (1, 2, ...); the lowest free one when left out.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub slot: Option<Slot>,
    /// Image alias to start from [default: `[defaults] image`, CCI_IMAGE,
    /// else cci; built on first use when missing, unless given here].
    #[arg(long, value_name = "ALIAS")]
    pub image: Option<String>,
    /// Environment variable for the command (repeatable; the value may hold `=` and `,`).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Mount a host folder into the container: HOST:CONTAINER, `:ro` for
    /// read-only (repeatable; adds to `[[mounts]]`).
    #[arg(long = "mount", value_name = "HOST:CONTAINER[:ro]", value_parser = sandbox::parse_mount_arg)]
    pub mounts: Vec<(String, String, bool)>,
    /// A persistent host folder mounted at /storage (made when missing)
    /// [default: `[paths] storage_dir`].
    #[arg(long, value_name = "PATH")]
    pub storage: Option<PathBuf>,
    /// Network isolation.
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
}

/// Most slots a workspace may use (`[defaults] slot_limit`, CCI_SLOT_LIMIT; default 10).
pub fn slot_limit() -> anyhow::Result<u32> {
    Ok(crate::config::current().slot_limit)
}

impl SandboxArgs {
    /// The workspace these flags name.
    pub fn workspace(&self) -> anyhow::Result<Workspace> {
        workspace_at(self.workspace.as_deref())
    }

    /// The image alias: `--image`, else the configuration's (`[defaults]
    /// image`, CCI_IMAGE, a profile), else `cci`.
    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| crate::config::current().image.clone())
    }

    /// Limits and mounts from the configuration and these flags
    /// (`session`: the time limit applies).
    pub async fn extras(
        &self,
        client: &Client,
        workspace: &Workspace,
        session: bool,
    ) -> anyhow::Result<sandbox::Extras> {
        let cfg = crate::config::current();
        let mut mounts: Vec<(String, String, bool)> = cfg
            .mounts
            .iter()
            .map(|m| {
                (
                    m.host.display().to_string(),
                    m.container.clone(),
                    m.readonly,
                )
            })
            .collect();
        mounts.extend(self.mounts.iter().cloned());
        let storage = self.storage.clone().or_else(|| cfg.storage_dir.clone());
        let owner = std::fs::metadata(workspace.path_str()).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.uid(), m.gid())
        });
        let mounts = sandbox::plan_mounts(
            std::path::Path::new(workspace.path_str()),
            storage.as_deref(),
            &mounts,
            owner,
        )
        .map_err(super::UsageError)?;
        // The root disk is named only when it must be: a pool or a size.
        let pool = match (&cfg.storage_pool, &cfg.disk) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => {
                let (profile, _) = client.profile("default").await?;
                let pool = profile
                    .devices
                    .values()
                    .find(|d| {
                        d.get("type").is_some_and(|t| t == "disk")
                            && d.get("path").is_some_and(|p| p == "/")
                    })
                    .and_then(|d| d.get("pool").cloned());
                Some(pool.ok_or_else(|| {
                    super::UsageError(
                        "limits.disk needs a storage pool: the default profile has no root disk; set [incus] storage_pool".into(),
                    )
                })?)
            }
            (None, None) => None,
        };
        Ok(sandbox::Extras {
            cpu: cfg.cpu,
            memory: Some(cfg.memory.clone()),
            processes: Some(cfg.processes),
            pool,
            disk: cfg.disk.clone(),
            mounts,
            shift: !cfg.disable_shift,
            max_duration: if session { cfg.max_duration } else { None },
        })
    }

    /// First use: build the default image when it is missing (not for an
    /// image named with `--image`, which must exist). `Some(code)` when the
    /// build failed or was interrupted.
    pub async fn ensure_image(&self, client: &Client) -> anyhow::Result<Option<i32>> {
        let image = self.image();
        if self.image.is_some() || super::image::image_exists(client, &image).await? {
            return Ok(None);
        }
        eprintln!(
            "cci: the image `{image}` does not exist yet; building it first (once, about two minutes)"
        );
        let mut req = super::image::default_request(client, Default::default()).await;
        req.alias = image;
        let code =
            super::image::build_image(client, req, false, super::image::Says::Stderr).await?;
        Ok((code != 0).then_some(code))
    }
}

/// The workspace at `path`, or the current directory's.
pub fn workspace_at(path: Option<&std::path::Path>) -> anyhow::Result<Workspace> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()?,
    };
    Workspace::resolve(&path).map_err(|e| anyhow::Error::new(super::UsageError(e.to_string())))
}

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
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    pub format: RunFormat,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Resolves when SIGINT or SIGTERM arrives; yields the signal number.
pub async fn interrupted() -> i32 {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<i32> {
    let workspace = args.sandbox.workspace()?;
    if let Some(code) = args.sandbox.ensure_image(client).await? {
        return Ok(code);
    }
    let extras = args.sandbox.extras(client, &workspace, false).await?;
    let req = RunRequest {
        spec: SandboxSpec {
            workspace,
            image: args.sandbox.image(),
            kind: Kind::Run,
            persistent: false,
            nesting: true,
            marks: Vec::new(),
            network: args.sandbox.net.policy()?,
            extras,
        },
        slot: args.sandbox.slot,
        slot_limit: slot_limit()?,
        command: args.command,
        env: args.sandbox.env,
        timeout: args.timeout.map(Duration::from_secs),
    };
    let interrupt = interrupted();
    let stdin = (!std::io::stdin().is_terminal()).then(tokio::io::stdin);
    let (outcome, out, err) = match args.format {
        RunFormat::Text => {
            let o = sandbox::run(
                client,
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
            let o = sandbox::run(client, &req, stdin, &mut out, &mut err, interrupt).await?;
            (o, out, err)
        }
    };
    let code = match outcome.ending {
        Ending::Exited(code) => code,
        Ending::TimedOut => {
            eprintln!(
                "cci: {} timed out after {} s; its container {} was deleted",
                req.command[0],
                args.timeout.unwrap_or_default(),
                outcome.container
            );
            124
        }
        Ending::Interrupted(signal) => 128 + signal,
    };
    if args.format == RunFormat::Json {
        let v = serde_json::json!({
            "stdout": String::from_utf8_lossy(&out),
            "stderr": String::from_utf8_lossy(&err),
            "exit_code": code,
            "duration_ms": outcome.duration.as_millis() as u64,
            "container": outcome.container,
        });
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{v}")?;
    }
    Ok(code)
}

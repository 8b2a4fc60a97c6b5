//! `cci build` and `cci build custom`: building images, with the steps and
//! the elapsed time on stderr and the script's output in a log file.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::UsageError;
use super::signals::interrupted;
use crate::host::Host;
use crate::image::{self, BuildRequest, Built};

/// Options of `cci build`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BuildArgs {
    /// Build a custom image instead of the default one.
    #[command(subcommand)]
    pub custom: Option<BuildCommand>,
    /// Rebuild even when the image exists.
    #[arg(long)]
    pub force: bool,
    /// Base image: a local alias or fingerprint (a Debian or Ubuntu system), or
    /// `debootstrap:SUITE[@MIRROR]` to build one locally (needs root and
    /// debootstrap) [default: debootstrap:bookworm].
    #[arg(long, env = "CCI_BUILD_BASE", value_name = "IMAGE")]
    pub base: Option<String>,
    /// The alias to publish [default: CCI_IMAGE, else `[defaults] image`, else cci].
    #[arg(long, value_name = "ALIAS")]
    pub alias: Option<String>,
    /// Show the build script's output as it runs (otherwise it goes to a log file).
    #[arg(long, short)]
    pub verbose: bool,
    /// An agent to install (repeatable, or comma-separated): claude,
    /// opencode, codex, aider [default: the configured one, `[tool] name`,
    /// else claude].
    #[arg(long = "agent", value_name = "NAME", value_delimiter = ',',
          value_parser = clap::builder::PossibleValuesParser::new(crate::config::AGENT_NAMES))]
    pub agents: Vec<String>,
    /// The build container's network isolation (default restricted).
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
}

/// `cci build` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Run your script as root on top of a base image and publish the result as NAME.
    Custom(CustomArgs),
}

/// Options of `cci build custom`.
#[derive(Debug, Args)]
pub struct CustomArgs {
    /// Alias of the new image.
    pub name: String,
    /// The build script (run by bash as root inside the build container).
    #[arg(long, value_name = "FILE")]
    pub script: PathBuf,
    /// Base image (local alias or fingerprint, or `debootstrap:SUITE[@MIRROR]`).
    #[arg(long, default_value = "cci", value_name = "IMAGE")]
    pub base: String,
    /// Rebuild even when NAME exists.
    #[arg(long)]
    pub force: bool,
    /// Show the script's output as it runs.
    #[arg(long, short)]
    pub verbose: bool,
    /// The build container's network isolation (default restricted).
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
}

pub async fn build(host: &Host, args: BuildArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    let (req, verbose, says) = match args.custom {
        Some(BuildCommand::Custom(c)) => {
            let script = std::fs::read_to_string(&c.script).map_err(|e| {
                UsageError(format!(
                    "cannot read the build script {}: {e}",
                    c.script.display()
                ))
            })?;
            let req = BuildRequest {
                alias: c.name,
                base: c.base,
                script,
                force: c.force,
                versioned: false,
                network: c.net.policy()?,
                agents: Vec::new(),
            };
            (req, c.verbose, Says::Json)
        }
        None => {
            let base = match args.base {
                Some(b) => b,
                None => image::default_base(client).await,
            };
            let req = BuildRequest {
                alias: args
                    .alias
                    .clone()
                    .unwrap_or_else(|| crate::config::current().image.clone()),
                base,
                script: image::DEFAULT_SCRIPT.into(),
                force: args.force,
                versioned: true,
                network: args.net.policy()?,
                agents: {
                    let mut a = args.agents.clone();
                    if a.is_empty() {
                        // The agent sessions start by default.
                        a.push(crate::config::current().tool.clone());
                    }
                    a.dedup();
                    a
                },
            };
            (req, args.verbose, Says::Text)
        }
    };
    build_image(host, req, verbose, says).await
}

/// Build `req`, printing each step with the elapsed time; the script's
/// output goes to a log file (or the terminal when `verbose`). Prints the
/// result as `says`; returns the exit code.
pub async fn build_image(
    host: &Host,
    req: BuildRequest,
    verbose: bool,
    says: Says,
) -> anyhow::Result<i32> {
    let container = format!(
        "cci-build-{}-{}",
        std::process::id(),
        image::utc_stamp().replace('-', "")
    );
    let log_path = log_file(&req.alias)?;
    let started = Instant::now();
    let steps = Steps::new(started, !verbose && std::io::stderr().is_terminal());
    let step = |what: &str| steps.step(what);
    let built = if verbose {
        run_build(host, &req, &container, step, tokio::io::stdout()).await
    } else {
        let log = tokio::fs::File::create(&log_path).await.map_err(|e| {
            anyhow::anyhow!("cannot create the build log {}: {e}", log_path.display())
        })?;
        eprintln!(
            "cci build: the script's output goes to {}",
            log_path.display()
        );
        run_build(host, &req, &container, step, log).await
    };
    steps.finish();
    let built = match built {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(130),
        Err(e @ image::BuildError::ScriptFailed(_)) if !verbose => {
            return Err(anyhow::anyhow!(
                "{e}; its output is in {}",
                log_path.display()
            ));
        }
        Err(e) => return Err(build_error(e)),
    };
    let line = if says == Says::Json {
        serde_json::to_string(&built)?
    } else if built.skipped {
        format!("image {} exists; --force builds it again", built.alias)
    } else {
        let version = built.version.as_deref().unwrap_or("-");
        format!(
            "built {} ({}, also {version}) in {} s",
            built.alias,
            &built.fingerprint[..12.min(built.fingerprint.len())],
            started.elapsed().as_secs()
        )
    };
    match says {
        Says::Stderr => eprintln!("cci: {line}"),
        _ => println!("{line}"),
    }
    Ok(0)
}

/// Where and how a build reports its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Says {
    /// A line for people on stdout.
    Text,
    /// JSON on stdout.
    Json,
    /// A line on stderr: stdout belongs to the command the build came before.
    Stderr,
}

/// Build steps on stderr, each with the time since the start: on a terminal
/// also a live spinner with the current step and its elapsed time (not with
/// --verbose, whose output would tear it).
struct Steps {
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Steps {
    fn new(started: Instant, live: bool) -> Steps {
        let bar = live.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style =
                indicatif::ProgressStyle::with_template("{spinner} cci build: {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Steps { started, bar }
    }

    fn step(&self, what: &str) {
        let line = format!(
            "cci build [{:>4}s] {what}",
            self.started.elapsed().as_secs()
        );
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.reset_elapsed();
                bar.set_message(what.to_string());
            }
            // Never panic on a closed stderr (`cci build 2>&1 | head`): the
            // build goes on and still cleans up after itself.
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The build, or `None` when Ctrl-C/SIGTERM came first (the build container
/// is removed then too).
async fn run_build<W: tokio::io::AsyncWrite + Unpin>(
    host: &Host,
    req: &BuildRequest,
    container: &str,
    step: impl FnMut(&str),
    log: W,
) -> Result<Option<Built>, image::BuildError> {
    tokio::select! {
        r = image::build(host, req, container, step, log) => r.map(Some),
        _ = interrupted() => {
            let _ = crate::sandbox::remove(host, container).await;
            Ok(None)
        }
    }
}

fn build_error(e: image::BuildError) -> anyhow::Error {
    match e {
        image::BuildError::Incus(e) => e.into(),
        image::BuildError::BaseMissing(_) => UsageError(e.to_string()).into(),
        e => e.into(),
    }
}

/// `~/.cci/logs/build-ALIAS-STAMP.log`, its folder made private.
fn log_file(alias: &str) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home.join(".cci").join("logs");
    std::fs::create_dir_all(&dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir.join(format!("build-{alias}-{}.log", image::utc_stamp())))
}

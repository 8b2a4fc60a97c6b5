//! `cci build` and `cci image ...`: making and managing images.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::run::interrupted;
use super::{Format, UsageError};
use crate::image::{self, BuildRequest, Built};
use crate::incus::{self, Client, Image, Publish};

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

/// `cci image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images (those with an alias starting with `cci`, unless --all or --prefix).
    List(ImageListArgs),
    /// Publish a stopped container as an image.
    Publish(PublishArgs),
    /// Delete the image an alias (or fingerprint) names.
    Delete(NameArg),
    /// Exit 0 when the alias exists, 1 when not.
    Exists(NameArg),
    /// Delete old `PREFIX-YYYYMMDD-HHMMSS` versions, keeping the newest N.
    Cleanup(CleanupArgs),
}

/// Options of `cci image list`.
#[derive(Debug, Args)]
pub struct ImageListArgs {
    /// Every image.
    #[arg(long, conflicts_with = "prefix")]
    pub all: bool,
    /// Images with an alias starting with this.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci image publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The (stopped) container.
    pub container: String,
    /// Alias for the new image.
    pub alias: String,
    /// Description property.
    #[arg(long)]
    pub description: Option<String>,
}

/// An image alias or fingerprint.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Alias (or fingerprint).
    pub name: String,
}

/// Options of `cci image cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The versions' prefix (`cci` or `cci-` for `cci-YYYYMMDD-HHMMSS`).
    pub prefix: String,
    /// How many of the newest versions to keep (at least 1).
    #[arg(long, value_name = "N", value_parser = parse_keep)]
    pub keep: usize,
}

/// `--keep N`: 0 would delete every version, so it is refused.
fn parse_keep(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err(
            "0 would delete every version; keep at least 1 (`cci image delete ALIAS` deletes one by name)"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{arg:?} is not a whole number")),
    }
}

/// The prefix versions are named after: `claudeyard-node-42-` (as the
/// original's example wrote it) is `claudeyard-node-42`, whose versions are
/// `claudeyard-node-42-YYYYMMDD-HHMMSS`.
fn versions_prefix(given: &str) -> &str {
    given.strip_suffix('-').unwrap_or(given)
}

pub async fn build(client: &Client, args: BuildArgs) -> anyhow::Result<i32> {
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
            };
            (req, args.verbose, Says::Text)
        }
    };
    build_image(client, req, verbose, says).await
}

/// The default image's build request (`cci build` without options).
pub async fn default_request(client: &Client, network: crate::network::Policy) -> BuildRequest {
    let base = match std::env::var("CCI_BUILD_BASE") {
        Ok(b) if !b.is_empty() => b,
        _ => image::default_base(client).await,
    };
    BuildRequest {
        alias: image::DEFAULT_ALIAS.into(),
        base,
        script: image::DEFAULT_SCRIPT.into(),
        force: false,
        versioned: true,
        network,
    }
}

/// Whether the image alias exists.
pub async fn image_exists(client: &Client, alias: &str) -> anyhow::Result<bool> {
    match client.image_alias(alias).await {
        Ok(_) => Ok(true),
        // (A missing project is not a missing image: nothing to build there.)
        Err(e) if e.is_not_found() && !e.to_string().contains("Project not found") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Build `req`, printing each step with the elapsed time; the script's
/// output goes to a log file (or the terminal when `verbose`). Prints the
/// result as `says`; returns the exit code.
pub async fn build_image(
    client: &Client,
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
        run_build(client, &req, &container, step, tokio::io::stdout()).await
    } else {
        let log = tokio::fs::File::create(&log_path).await.map_err(|e| {
            anyhow::anyhow!("cannot create the build log {}: {e}", log_path.display())
        })?;
        eprintln!(
            "cci build: the script's output goes to {}",
            log_path.display()
        );
        run_build(client, &req, &container, step, log).await
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
    client: &Client,
    req: &BuildRequest,
    container: &str,
    step: impl FnMut(&str),
    log: W,
) -> Result<Option<Built>, image::BuildError> {
    tokio::select! {
        r = image::build(client, req, container, step, log) => r.map(Some),
        _ = interrupted() => {
            let _ = crate::sandbox::remove(client, container).await;
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

pub async fn run(client: &Client, cmd: ImageCommand) -> anyhow::Result<i32> {
    match cmd {
        ImageCommand::List(args) => list(client, args).await,
        ImageCommand::Publish(args) => {
            let mut p = Publish {
                aliases: vec![args.alias.clone()],
                ..Default::default()
            };
            let description = args
                .description
                .unwrap_or_else(|| format!("published from {} by cci", args.container));
            p.properties.insert("description".into(), description);
            let fingerprint = client.publish_instance(&args.container, &p).await?;
            println!(
                "published {} as {} ({fingerprint})",
                args.container, args.alias
            );
            Ok(0)
        }
        ImageCommand::Delete(arg) => {
            let fingerprint = resolve(client, &arg.name).await?;
            client.delete_image(&fingerprint).await?;
            println!("deleted image {} ({fingerprint})", arg.name);
            Ok(0)
        }
        ImageCommand::Exists(arg) => Ok(if image_exists(client, &arg.name).await? {
            0
        } else {
            1
        }),
        ImageCommand::Cleanup(args) => cleanup(client, args).await,
    }
}

/// The fingerprint an alias (or a unique fingerprint prefix) names.
async fn resolve(client: &Client, name: &str) -> anyhow::Result<String> {
    match client.image_alias(name).await {
        Ok(a) => return Ok(a.target),
        Err(e) if !e.is_not_found() => return Err(e.into()),
        Err(_) => {}
    }
    let all = client.images().await?;
    let found: Vec<&Image> = all
        .iter()
        .filter(|i| name.len() >= 12 && i.fingerprint.starts_with(name))
        .collect();
    match found[..] {
        [one] => Ok(one.fingerprint.clone()),
        _ => Err(incus::Error::NotFound(format!("image {name:?}")).into()),
    }
}

async fn list(client: &Client, args: ImageListArgs) -> anyhow::Result<i32> {
    let prefix = args.prefix.unwrap_or_else(|| "cci".into());
    let mut images: Vec<Image> = client
        .images()
        .await?
        .into_iter()
        .filter(|i| args.all || i.aliases.iter().any(|a| a.name.starts_with(&prefix)))
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    match args.format {
        Format::Json => {
            let v: Vec<_> = images
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "fingerprint": i.fingerprint,
                        "aliases": i.aliases.iter().map(|a| &a.name).collect::<Vec<_>>(),
                        "description": i.description(),
                        "size": i.size,
                        "created": i.created_at,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<28} {:<12} {:>8}  {:<19}  DESCRIPTION",
                "ALIASES", "FINGERPRINT", "SIZE", "CREATED"
            )?;
            for i in &images {
                let aliases: Vec<&str> = i.aliases.iter().map(|a| a.name.as_str()).collect();
                writeln!(
                    out,
                    "{:<28} {:<12} {:>6}MB  {:<19}  {}",
                    if aliases.is_empty() {
                        "-".to_string()
                    } else {
                        aliases.join(",")
                    },
                    &i.fingerprint[..12.min(i.fingerprint.len())],
                    i.size / 1_000_000,
                    i.created_at
                        .get(..19)
                        .unwrap_or(&i.created_at)
                        .replace('T', " "),
                    i.description()
                )?;
            }
        }
    }
    Ok(0)
}

async fn cleanup(client: &Client, args: CleanupArgs) -> anyhow::Result<i32> {
    let prefix = versions_prefix(&args.prefix);
    if prefix.is_empty() {
        return Err(super::UsageError(format!(
            "image cleanup: prefix {:?} names no versions",
            args.prefix
        ))
        .into());
    }
    let current = match client.image_alias(prefix).await {
        Ok(a) => Some(a.target),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let mut versions: Vec<(String, String, String)> = Vec::new();
    for i in client.images().await? {
        for a in &i.aliases {
            if let Some(stamp) = image::version_stamp(prefix, &a.name) {
                versions.push((stamp.to_string(), a.name.clone(), i.fingerprint.clone()));
            }
        }
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    let mut code = 0;
    for (_, alias, fingerprint) in versions.into_iter().skip(args.keep) {
        if current.as_deref() == Some(fingerprint.as_str()) {
            println!("kept {alias}: `{prefix}` points to it");
            continue;
        }
        match client.delete_image(&fingerprint).await {
            Ok(()) => println!("deleted {alias}"),
            Err(e) => {
                eprintln!("cci: {alias}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_takes_the_prefix_with_or_without_its_dash_and_keeps_one() {
        assert_eq!(versions_prefix("claudeyard-node-42-"), "claudeyard-node-42");
        assert_eq!(versions_prefix("cci"), "cci");
        let stamped = "claudeyard-node-42-20260101-120000";
        for given in ["claudeyard-node-42-", "claudeyard-node-42"] {
            let p = versions_prefix(given);
            assert_eq!(image::version_stamp(p, stamped), Some("20260101-120000"));
        }
        assert!(parse_keep("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_keep("3"), Ok(3));
        assert!(parse_keep("-1").is_err());
    }
}

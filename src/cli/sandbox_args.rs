//! The options `cci shell` and `cci run` share (`SandboxArgs`: workspace,
//! slot, image, environment, mounts, storage, network) and what they resolve
//! to; `-e`/`--env-file` (`EnvArgs`, also used by `cci container exec`).

use std::path::PathBuf;

use clap::Args;

use crate::host::Host;
use crate::image;
use crate::sandbox::{self, Slot, Workspace, plan_extras};

/// Where and from what a sandbox is made (shared by the session commands).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Workspace folder mounted at /workspace [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// Hand the container over as soon as it runs, without waiting for its
    /// network address (the first command may then find no network).
    #[arg(long)]
    pub no_wait: bool,
    /// Slot for parallel sessions (1, 2, ...); the lowest free one when left out.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub slot: Option<Slot>,
    /// Image alias to start from [default: `[defaults] image`, CCI_IMAGE,
    /// else cci; built on first use when missing, unless given here].
    #[arg(long, value_name = "ALIAS")]
    pub image: Option<String>,
    /// Environment for the command.
    #[command(flatten)]
    pub env: EnvArgs,
    /// Mount a host folder into the container: HOST:CONTAINER, `:ro` for
    /// read-only (repeatable; adds to `[[mounts]]`).
    #[arg(long = "mount", value_name = "HOST:CONTAINER[:ro]", value_parser = sandbox::parse_mount_arg)]
    pub mounts: Vec<(String, String, bool)>,
    /// A persistent host folder mounted at /storage (made when missing)
    /// [default: `[paths] storage_dir`].
    #[arg(long, value_name = "PATH")]
    pub storage: Option<PathBuf>,
    /// Leave the workspace's .git/hooks, .git/config and .git/info writable
    /// inside (they are mounted read-only so the agent cannot plant code
    /// your own git runs) [default: `[workspace] writable_git_hooks`].
    #[arg(long)]
    pub writable_git_hooks: bool,
    /// Forward your SSH agent ($SSH_AUTH_SOCK): ssh and git inside can use
    /// your keys, which never enter the container [default: `[defaults]
    /// ssh_agent`].
    #[arg(long)]
    pub ssh_agent: bool,
    /// Publish a port the agent serves: reachable on the host at ADDRESS
    /// (default 127.0.0.1) and HOST_PORT (repeatable; adds to `[[ports]]`).
    #[arg(long = "publish", short = 'p', value_name = "[ADDRESS:]HOST_PORT:CONTAINER_PORT", value_parser = sandbox::parse_publish)]
    pub publish: Vec<crate::config::PortSpec>,
    /// On a cluster: the member to run on [default: where the cluster's
    /// scheduler places it].
    #[arg(long, value_name = "MEMBER")]
    pub target: Option<String>,
    /// Isolated git sessions.
    #[command(flatten)]
    pub git: GitArgs,
    /// Network isolation.
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
}

/// `--isolated` and its options.
#[derive(Debug, Args, Clone, Default)]
pub struct GitArgs {
    /// Clone the workspace's git repository into the container instead of
    /// mounting the folder: the agent works on its own branch, and its
    /// commits come back for `cci diff` / `cci merge` [default: `[git] mode`].
    #[arg(long)]
    pub isolated: bool,
    /// With --isolated: start from this branch instead of HEAD.
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// With --isolated: the session branch's name [default: cci/SLOT]; an
    /// existing branch of that name is continued.
    #[arg(long, value_name = "NAME")]
    pub session_branch: Option<String>,
    /// With --isolated: refuse uncommitted changes instead of carrying them
    /// in as the session's first commit.
    #[arg(long)]
    pub clean_only: bool,
    /// With --isolated: when the session ends, merge its commits into this
    /// branch (made when missing; a conflict changes nothing and says so).
    #[arg(long, value_name = "BRANCH")]
    pub auto_merge: Option<String>,
    /// Clone this repository into /workspace/NAME (repeatable; implies
    /// --isolated; the workspace folder itself goes in only when named).
    #[arg(long = "repo", value_name = "PATH")]
    pub repos: Vec<std::path::PathBuf>,
    /// Clone every git repository found in this folder (up to two levels
    /// down) into /workspace/NAME (implies --isolated).
    #[arg(long, value_name = "DIR")]
    pub repos_in: Option<std::path::PathBuf>,
}

impl GitArgs {
    /// Whether the session is isolated (the flag, else `[git] mode`).
    pub fn isolated(&self, cfg: &crate::config::Effective) -> bool {
        self.isolated
            || !self.repos.is_empty()
            || self.repos_in.is_some()
            || cfg.git_isolated
            || !cfg.git_repos.is_empty()
    }

    /// The options for `sandbox::isolated::prepare`.
    pub fn options(&self) -> sandbox::isolated::Options {
        sandbox::isolated::Options {
            branch: self.branch.clone(),
            session_branch: self.session_branch.clone(),
            clean_only: self.clean_only,
            auto_merge: self.auto_merge.clone(),
        }
    }
}

/// `-e` and `--env-file`: the environment a command gets. Values travel to
/// the daemon in the exec request, never in argv; only `-e KEY=VALUE` puts one
/// into cci's own argv, which any host user can read (`ps`, /proc).
#[derive(Debug, Clone, Default, Args)]
pub struct EnvArgs {
    /// Environment variable for the command, repeatable: KEY=VALUE (the
    /// value may hold `=` and `,`), or KEY alone for cci's own value of KEY.
    /// A value given as KEY=VALUE is visible in the host's process list: for
    /// secrets prefer `-e KEY` or `--env-file`.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]", value_parser = parse_env_arg)]
    pub env: Vec<(String, Option<String>)>,
    /// Environment variables from FILE, repeatable: KEY=VALUE lines (the
    /// value as is, to the end of the line) or KEY alone for cci's own value;
    /// blank lines and lines starting with `#` are skipped. `-e` wins.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
}

impl EnvArgs {
    /// The variables, files first, then `-e` in order (a later one wins).
    pub fn resolve(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        for file in &self.env_files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| super::UsageError(format!("--env-file {}: {e}", file.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let var = parse_env_arg(line).map_err(|e| {
                    super::UsageError(format!("--env-file {} line {}: {e}", file.display(), n + 1))
                })?;
                all.push(var);
            }
        }
        all.extend(self.env.iter().cloned());
        let mut env: Vec<(String, String)> = Vec::new();
        for (key, value) in all {
            let value = match value {
                Some(v) => v,
                None => std::env::var(&key).map_err(|_| {
                    super::UsageError(format!("{key} is not set in cci's environment"))
                })?,
            };
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        Ok(env)
    }
}

/// Check an `-e` argument or env-file line: `KEY=VALUE` or `KEY`.
pub fn parse_env_arg(arg: &str) -> Result<(String, Option<String>), String> {
    let (key, value) = match arg.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (arg, None),
    };
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid variable name {:?}",
            crate::config::printable(key)
        ));
    }
    Ok((key.to_string(), value))
}

/// Most slots a workspace may use (`[defaults] slot_limit`, CCI_SLOT_LIMIT; default 10).
pub fn slot_limit() -> anyhow::Result<u32> {
    Ok(crate::config::current().slot_limit)
}

impl SandboxArgs {
    /// The workspace these flags name, as `host` knows it.
    pub fn workspace(&self, host: &Host) -> anyhow::Result<Workspace> {
        workspace_on(host, self.workspace.as_deref())
    }

    /// The image alias: `--image`, else the configuration's (`[defaults]
    /// image`, CCI_IMAGE, a profile), else `cci`.
    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| crate::config::current().image.clone())
    }

    /// The environment a session or run gets beyond the sandbox's own: the
    /// configured `defaults.environment`, then `--env-file` and `-e` (which win).
    pub fn environment(&self) -> anyhow::Result<Vec<(String, String)>> {
        let given = self.env.resolve()?;
        let mut env: Vec<(String, String)> = crate::config::current()
            .environment
            .iter()
            .filter(|(k, _)| !given.iter().any(|(g, _)| g == k))
            .cloned()
            .collect();
        env.extend(given);
        Ok(env)
    }

    /// Limits and mounts from the configuration and these flags
    /// (`session`: the time limit applies; decided by `sandbox::plan_extras`).
    pub async fn extras(
        &self,
        host: &Host,
        workspace: &Workspace,
        session: bool,
    ) -> anyhow::Result<sandbox::Extras> {
        let flags = plan_extras::Flags {
            mounts: self.mounts.clone(),
            storage: self.storage.clone(),
            no_wait: self.no_wait,
            writable_git_hooks: self.writable_git_hooks,
            isolated: self.git.isolated(crate::config::current()),
            ssh_agent: self.ssh_agent,
            ports: self.publish.clone(),
            target: self.target.clone(),
        };
        match plan_extras::extras(&host.client, host.config, workspace, &flags, session).await {
            Ok(extras) => Ok(extras),
            Err(plan_extras::ExtrasError::Usage(e)) => Err(super::UsageError(e).into()),
            Err(plan_extras::ExtrasError::Incus(e)) => Err(e.into()),
        }
    }

    /// First use: build the default image when it is missing (not for an
    /// image named with `--image`, which must exist). `Some(code)` when the
    /// build failed or was interrupted.
    pub async fn ensure_image(&self, host: &Host) -> anyhow::Result<Option<i32>> {
        let client = &host.client;
        let image = self.image();
        if !image::ensure::must_build(client, &image, self.image.is_some()).await? {
            return Ok(None);
        }
        eprintln!(
            "cci: the image `{image}` does not exist yet; building it first (once, about two minutes)"
        );
        let mut req = image::ensure::default_request(client, Default::default()).await;
        req.alias = image;
        let code = super::build::build_image(host, req, false, super::build::Says::Stderr).await?;
        Ok((code != 0).then_some(code))
    }
}

/// [`workspace_at`] as `host` knows it (a remote's ids name this machine).
pub fn workspace_on(host: &Host, path: Option<&std::path::Path>) -> anyhow::Result<Workspace> {
    let ws = workspace_at(path)?;
    Ok(match host.remote() {
        Some(_) => ws.on_remote(crate::sandbox::orphans::machine_tag()),
        None => ws,
    })
}

/// The workspace at `path`, or the current directory's.
pub fn workspace_at(path: Option<&std::path::Path>) -> anyhow::Result<Workspace> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()?,
    };
    Workspace::resolve(&path).map_err(|e| anyhow::Error::new(super::UsageError(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_from_files_arguments_and_cci_s_own_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "# secrets\n\nTOKEN=a=b, c \n  OTHER=1\nPATH\n").unwrap();
        let args = EnvArgs {
            env: vec![
                parse_env_arg("OTHER=2").unwrap(),
                parse_env_arg("EMPTY=").unwrap(),
            ],
            env_files: vec![file.clone()],
        };
        assert_eq!(
            args.resolve().unwrap(),
            [
                ("TOKEN".to_string(), "a=b, c ".to_string()),
                ("PATH".into(), std::env::var("PATH").unwrap()),
                ("OTHER".into(), "2".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
        assert!(parse_env_arg("1A=x").is_err());
        assert!(parse_env_arg("A B").is_err());
        assert!(parse_env_arg("=x").is_err());
        let missing = EnvArgs {
            env: vec![parse_env_arg("CCI_SURELY_UNSET_VARIABLE").unwrap()],
            env_files: Vec::new(),
        };
        assert!(missing.resolve().is_err());
        std::fs::write(&file, "BAD KEY=1\n").unwrap();
        let bad = EnvArgs {
            env: Vec::new(),
            env_files: vec![file],
        };
        let e = bad.resolve().unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}

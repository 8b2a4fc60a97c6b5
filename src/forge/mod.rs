//! Git without a token inside: `git fetch/pull/clone/push` of the
//! workspace's own repositories on a git host (GitHub by default) go to a
//! host process that holds the credential, adds it to each request, and
//! decides each push (allowed branch patterns, fast-forward only, no
//! deletion, no tags unless allowed). The container never holds a token.
//!
//! How a request gets there: git inside rewrites the repository's URLs
//! (`url.<endpoint>.insteadOf`, set through `GIT_CONFIG_*` in the
//! container's environment) to `http://127.0.0.1:PORT/HOST/PATH`, where an
//! Incus proxy device listens inside and connects to this session's own
//! Unix socket on the host. The socket is the caller's identity: it is
//! named by a random grant id, its grant file says which repositories and
//! rules apply, and only the device cci made for this session leads to it
//! — nothing the agent sends can name another session.
//!
//! Owns: naming and deciding ([`policy`]), the host daemon
//! (`cci forge serve`, [`server`]), the grants (`~/.cci/forge/grants`),
//! the log (`~/.cci/forge/log.jsonl`, `cci forge log`).

mod creds;
pub mod gh;
pub mod policy;
mod push;
pub mod server;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use policy::{PushRules, Repo};

/// Where the endpoint listens inside (loopback only).
pub const PORT: u16 = 47417;
/// The Incus device's name.
pub const DEVICE: &str = "cci-git";
/// The container config keys cci owns for it start so.
pub const ENV_PREFIX: &str = "environment.GIT_CONFIG_";

/// The device that gives `gh` its way out: the session's own folder on the
/// host (its socket and gh's config), mounted read-only inside. gh's
/// `http_unix_socket` names the socket: a bind mount costs nothing at
/// start, where each Incus proxy device costs a second.
pub const GH_DEVICE: &str = "cci-gh";
/// Where the session's folder is inside (`GH_CONFIG_DIR`).
pub const GH_CONFIG_DIR: &str = "/var/lib/cci-forge";
/// The socket in it.
pub const SOCKET_NAME: &str = "sock";

/// Whether the container config key `k` = `v` is one forwarding set (and
/// takes away again when the session ends).
pub fn owned_env(k: &str, v: &str) -> bool {
    k.starts_with(ENV_PREFIX)
        || ((k == "environment.GH_TOKEN" || k == "environment.GH_ENTERPRISE_TOKEN")
            && v == API_PLACEHOLDER)
        || (k == "environment.GH_CONFIG_DIR" && v == GH_CONFIG_DIR)
        || (k == "environment.GH_NO_UPDATE_NOTIFIER" && v == "1")
}

/// The agent's API by default (`[tool] api_url`).
pub const ANTHROPIC_API: &str = "https://api.anthropic.com";
/// Where the agent's API is reached inside (`ANTHROPIC_BASE_URL`).
pub const API_PREFIX: &str = "/anthropic";
/// What the agent inside holds instead of a key (`ANTHROPIC_AUTH_TOKEN`):
/// the endpoint drops it and adds the host's key.
pub const API_PLACEHOLDER: &str = "cci-host-credential";

/// The agent's API through the endpoint (`[tool] credentials = "host"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiGrant {
    /// Where requests go (`https://api.anthropic.com`).
    pub upstream: String,
    /// The command printing the key (else the host's `~/.claude.json`
    /// `primaryApiKey`, then `$ANTHROPIC_API_KEY`).
    pub key_command: Option<String>,
    /// The host folder holding `.claude.json`.
    pub credentials_home: Option<String>,
}

/// What one session may do through the endpoint (the grant file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The workspace (for the log).
    pub workspace: String,
    /// The repositories it may fetch from and push to.
    pub repos: Vec<Repo>,
    /// Each host's base URL (`https://github.com`).
    pub upstreams: BTreeMap<String, String>,
    /// What may be pushed.
    pub push: PushRules,
    /// The command that prints the token (else `gh auth token`, then git's
    /// credential helpers).
    pub token_command: Option<String>,
    /// When it was made (Unix ms): a grant no container's device uses is
    /// dropped a minute after.
    pub made_ms: u64,
    /// The agent's API, in host credentials mode.
    #[serde(default)]
    pub api: Option<ApiGrant>,
}

/// `NAME` or `NAME=URL` (`[git] forward_hosts`): the host and its base
/// URL (`https://NAME` by default; `http://` only to a loopback address).
pub fn parse_host_entry(entry: &str) -> Result<(String, String), String> {
    let (name, url) = match entry.split_once('=') {
        Some((n, u)) => (n.trim(), u.trim().trim_end_matches('/').to_string()),
        None => (entry.trim(), format!("https://{}", entry.trim())),
    };
    if Repo::new(name, "a/b").is_none() {
        return Err(format!("{name:?} is not a host name"));
    }
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split('/').next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if !loopback {
            return Err(format!(
                "{url:?}: a credential goes in clear over http://, allowed to a loopback address only"
            ));
        }
        r
    } else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a URL"));
    }
    Ok((name.to_ascii_lowercase(), url))
}

/// The configuration that shapes forwarding (`[git]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `forward` (default true).
    pub enabled: bool,
    /// `forward_hosts` entries.
    pub hosts: Vec<String>,
    /// `push_*`.
    pub push: PushRules,
    /// `token_command`.
    pub token_command: Option<String>,
    /// `[tool] credentials = "host"`: the agent's API through the endpoint.
    pub api: Option<ApiGrant>,
}

/// One session's forwarding, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The grant's id (names its socket).
    pub id: String,
    /// The grant.
    pub grant: Grant,
}

/// The remote URLs in a repository's config file (`.git/config`), read as
/// text (no git run on a file the agent may have written).
fn remote_urls(config: &str) -> Vec<String> {
    let mut in_remote = false;
    let mut urls = Vec::new();
    for line in config.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_remote = l.starts_with("[remote ");
            continue;
        }
        if !in_remote {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            if k == "url" || k == "pushurl" {
                urls.push(v.trim().trim_matches('"').to_string());
            }
        }
    }
    urls
}

impl Forward {
    /// Forwarding for a session of `workspace`: its repository's remotes on
    /// a forwarded host. `None` when off or when there are none.
    pub fn plan(workspace: &Path, s: &Settings) -> Result<Option<Forward>, String> {
        if !s.enabled && s.api.is_none() {
            return Ok(None);
        }
        let mut upstreams = BTreeMap::new();
        for h in &s.hosts {
            let (name, url) =
                parse_host_entry(h).map_err(|e| format!("[git] forward_hosts: {e}"))?;
            upstreams.insert(name, url);
        }
        let git = workspace.join(".git");
        let config = if s.enabled && git.is_dir() {
            std::fs::read_to_string(git.join("config")).unwrap_or_default()
        } else {
            String::new()
        };
        let mut repos: Vec<Repo> = remote_urls(&config)
            .iter()
            .filter_map(|u| Repo::from_url(u))
            .filter(|r| upstreams.contains_key(&r.host))
            .collect();
        repos.sort();
        repos.dedup_by(|a, b| a.same(b));
        if repos.is_empty() && s.api.is_none() {
            return Ok(None);
        }
        Ok(Some(Forward {
            id: uuid::Uuid::new_v4().simple().to_string()[..20].to_string(),
            grant: Grant {
                workspace: workspace.display().to_string(),
                repos,
                upstreams,
                push: s.push.clone(),
                token_command: s.token_command.clone(),
                made_ms: crate::proxy::now_ms(),
                api: s.api.clone(),
            },
        }))
    }

    /// This session's folder on the host (its socket, gh's config).
    pub fn folder(&self) -> std::io::Result<PathBuf> {
        Ok(sockets_dir()?.join(&self.id))
    }

    /// This session's socket on the host.
    pub fn socket(&self) -> std::io::Result<PathBuf> {
        Ok(self.folder()?.join(SOCKET_NAME))
    }

    /// The Incus devices: a loopback port inside (git, the agent's API)
    /// leading to this session's socket on the host (connected to as the
    /// user running cci), and the session's folder read-only (gh).
    pub fn devices(&self) -> std::io::Result<Vec<(String, HashMap<String, String>)>> {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let map = |pairs: &[(&str, String)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let connect = format!("unix:{}", self.socket()?.display());
        let mut out = vec![(
            DEVICE.to_string(),
            map(&[
                ("type", "proxy".into()),
                ("bind", "container".into()),
                ("listen", format!("tcp:127.0.0.1:{PORT}")),
                ("connect", connect),
                ("security.uid", uid.to_string()),
                ("security.gid", gid.to_string()),
            ]),
        )];
        if !self.grant.repos.is_empty() {
            out.push((
                GH_DEVICE.to_string(),
                map(&[
                    ("type", "disk".into()),
                    ("source", self.folder()?.display().to_string()),
                    ("path", GH_CONFIG_DIR.into()),
                    ("readonly", "true".into()),
                ]),
            ));
        }
        Ok(out)
    }

    /// The container config keys that route git there: one
    /// `url.<endpoint>.insteadOf` per way each repository is written.
    pub fn env(&self) -> HashMap<String, String> {
        let mut pairs = Vec::new();
        for r in &self.grant.repos {
            let base = format!("http://127.0.0.1:{PORT}/{}/{}", r.host, r.path);
            for form in policy::url_forms(r) {
                pairs.push((format!("url.{base}.insteadOf"), form));
            }
        }
        let mut env = HashMap::new();
        if pairs.is_empty() {
            return env;
        }
        // gh: a placeholder token (gh refuses to run without one; the
        // forwarder puts the real one in its place) and cci's config.
        env.insert("environment.GH_TOKEN".into(), API_PLACEHOLDER.into());
        if self.grant.repos.iter().any(|r| r.host != "github.com") {
            // (gh's token for any other host: GitHub Enterprise.)
            env.insert(
                "environment.GH_ENTERPRISE_TOKEN".into(),
                API_PLACEHOLDER.into(),
            );
        }
        env.insert("environment.GH_CONFIG_DIR".into(), GH_CONFIG_DIR.into());
        env.insert("environment.GH_NO_UPDATE_NOTIFIER".into(), "1".into());
        env.insert(format!("{ENV_PREFIX}COUNT"), pairs.len().to_string());
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            env.insert(format!("{ENV_PREFIX}KEY_{i}"), k);
            env.insert(format!("{ENV_PREFIX}VALUE_{i}"), v);
        }
        env
    }

    /// Write the grant and make sure the daemon serves its socket (started
    /// if it is not running), so git works from the session's first
    /// command.
    pub async fn activate(&self) -> Result<(), String> {
        self.make_folder()
            .map_err(|e| format!("~/.cci/forge/s: {e}"))?;
        let grants = grants_dir().map_err(|e| format!("~/.cci/forge: {e}"))?;
        let data = serde_json::to_vec_pretty(&self.grant).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&grants.join(format!("{}.json", self.id)), &data)
            .map_err(|e| format!("writing the git grant: {e}"))?;
        let socket = self.socket().map_err(|e| e.to_string())?;
        // (Started again when it is not running: one that was stopping as
        // the grant was written does not pick it up.)
        for i in 0..200 {
            if socket.exists() {
                return Ok(());
            }
            if i % 40 == 0 && !crate::state::lock_held("forge", LOCK) {
                spawn().map_err(|e| format!("cannot start the git forwarder: {e}"))?;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "the git forwarder does not serve {} (see ~/.cci/logs/forge.log)",
            socket.display()
        ))
    }
}

impl Forward {
    /// The session's folder with gh's config in it (readable by all: it is
    /// mounted read-only inside; `~/.cci/forge/s` keeps other host users
    /// out). The daemon adds the socket.
    fn make_folder(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.folder()?;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let file = dir.join("config.yml");
        let config = format!("http_unix_socket: {GH_CONFIG_DIR}/{SOCKET_NAME}\nprompt: disabled\n");
        crate::state::write_atomic(&file, config.as_bytes())?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
    }
}

/// The daemon's lock file (in `~/.cci/forge`).
pub const LOCK: &str = "daemon.lock";

/// `~/.cci/forge/grants`.
pub fn grants_dir() -> std::io::Result<PathBuf> {
    crate::state::dir("forge/grants")
}

/// `~/.cci/forge/s` (short: socket paths have a length limit).
pub fn sockets_dir() -> std::io::Result<PathBuf> {
    crate::state::dir("forge/s")
}

/// The log of every forwarded operation.
pub fn log_path() -> std::io::Result<PathBuf> {
    Ok(crate::state::dir("forge")?.join("log.jsonl"))
}

fn spawn() -> std::io::Result<()> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["forge", "serve"]).env(
        "CCI_LOG",
        std::env::var("CCI_LOG").unwrap_or_else(|_| "info".into()),
    );
    crate::state::spawn_daemon(cmd, "forge.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_entries_default_to_https_and_allow_http_to_loopback_only() {
        assert_eq!(
            parse_host_entry("github.com").unwrap(),
            ("github.com".into(), "https://github.com".into())
        );
        assert_eq!(
            parse_host_entry("git.example.com=https://git.example.com/base/")
                .unwrap()
                .1,
            "https://git.example.com/base"
        );
        assert!(parse_host_entry("fake.test=http://127.0.0.1:8080").is_ok());
        assert!(parse_host_entry("fake.test=http://[::1]:8080").is_ok());
        assert!(parse_host_entry("x.test=http://10.0.0.1").is_err());
        assert!(parse_host_entry("x.test=ftp://a").is_err());
        assert!(parse_host_entry("bad host").is_err());
    }

    #[test]
    fn a_workspace_forwards_its_remotes_on_forwarded_hosts_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(
            dir.path().join(".git/config"),
            "[core]\n\turl = https://github.com/not/this\n[remote \"origin\"]\n\turl = git@github.com:Me/Proj.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[remote \"up\"]\n\turl = https://gitlab.com/a/b\n",
        )
        .unwrap();
        let s = Settings {
            enabled: true,
            hosts: vec!["github.com".into()],
            push: PushRules::default(),
            token_command: None,
            api: None,
        };
        let f = Forward::plan(dir.path(), &s).unwrap().unwrap();
        assert_eq!(
            f.grant.repos,
            vec![Repo::new("github.com", "Me/Proj").unwrap()]
        );
        let env = f.env();
        assert_eq!(env["environment.GIT_CONFIG_COUNT"], "3");
        assert_eq!(env["environment.GH_TOKEN"], API_PLACEHOLDER);
        assert_eq!(
            env["environment.GIT_CONFIG_KEY_1"],
            format!("url.http://127.0.0.1:{PORT}/github.com/Me/Proj.insteadOf")
        );
        assert_eq!(
            env["environment.GIT_CONFIG_VALUE_1"],
            "git@github.com:Me/Proj"
        );
        let off = Settings {
            enabled: false,
            ..s.clone()
        };
        assert!(Forward::plan(dir.path(), &off).unwrap().is_none());
        let none = tempfile::tempdir().unwrap();
        assert!(Forward::plan(none.path(), &s).unwrap().is_none());
    }
}

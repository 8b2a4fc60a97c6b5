//! A sandbox's limits and mounts (`Extras`) from the configuration and the
//! command's flags: the workspace owner the account inside maps to (a stat of
//! the workspace), the mounts, and the root disk's pool (the `default` Incus
//! profile's, when a disk size is set without a pool). Prints nothing.

use std::path::PathBuf;

use super::{Extras, Workspace};
use crate::config::Effective;
use crate::incus::{self, Client};

/// What the command line adds (`--mount`, `--storage`, `--no-wait`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--mount HOST:CONTAINER[:ro]` (after the configured `[[mounts]]`).
    pub mounts: Vec<(String, String, bool)>,
    /// `--storage` (else `[paths] storage_dir`).
    pub storage: Option<PathBuf>,
    /// `--no-wait`.
    pub no_wait: bool,
    /// `--writable-git-hooks`.
    pub writable_git_hooks: bool,
    /// `--isolated`: no workspace mount (the repository is cloned inside).
    pub isolated: bool,
    /// `--ssh-agent` (else `[defaults] ssh_agent`).
    pub ssh_agent: bool,
    /// `--publish` (after the configured `[[ports]]`).
    pub ports: Vec<crate::config::PortSpec>,
    /// `--target MEMBER`: the cluster member to create on.
    pub target: Option<String>,
}

/// Why the extras cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ExtrasError {
    /// The workspace, a mount or the settings do not allow it (a usage error).
    #[error("{0}")]
    Usage(String),
    /// The daemon failed.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

/// The extras of a sandbox for `workspace` (`session`: the time limit applies).
pub async fn extras(
    client: &Client,
    cfg: &Effective,
    workspace: &Workspace,
    flags: &Flags,
    session: bool,
) -> Result<Extras, ExtrasError> {
    let target = match &flags.target {
        Some(member) => Some(cluster_member(client, member).await?),
        None => None,
    };
    let mut extras = match client.remote() {
        Some(remote) => remote_extras(client, remote, cfg, workspace, flags, session).await?,
        None => local_extras(client, cfg, workspace, flags, session).await?,
    };
    extras.target = target;
    Ok(extras)
}

/// `member` when the server is a cluster that has it; else why not.
async fn cluster_member(client: &Client, member: &str) -> Result<String, ExtrasError> {
    let info = client.server().await?;
    let server = client.remote().unwrap_or("the local daemon");
    if !info.environment.server_clustered {
        return Err(ExtrasError::Usage(format!(
            "--target {member}: {server} is not a cluster (a standalone server places every container itself)"
        )));
    }
    let members = client.cluster_members().await?;
    if !members.iter().any(|m| m == member) {
        return Err(ExtrasError::Usage(format!(
            "--target {member}: the cluster has no such member (members: {})",
            members.join(", ")
        )));
    }
    Ok(member.to_string())
}

/// The extras of a sandbox on the local daemon.
async fn local_extras(
    client: &Client,
    cfg: &Effective,
    workspace: &Workspace,
    flags: &Flags,
    session: bool,
) -> Result<Extras, ExtrasError> {
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
    mounts.extend(flags.mounts.iter().cloned());
    let storage = flags.storage.clone().or_else(|| cfg.storage_dir.clone());
    // The workspace owner is who `code` is on the host (see sandbox::idmap).
    let owner = if cfg.disable_shift {
        None
    } else {
        let path = std::path::Path::new(workspace.path_str());
        let owner = super::idmap::owner_of(path, &cfg.account)
            .and_then(|o| super::idmap::check_delegated(o).map(|()| o))
            .map_err(|e| ExtrasError::Usage(e.to_string()))?;
        Some(owner)
    };
    let storage_owner = owner.or_else(|| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(workspace.path_str()).ok()?;
        Some((m.uid(), m.gid()))
    });
    // An isolated session's agent must not reach what mounted sandboxes
    // use unreviewed: no shared caches (see docs/snapshots.md).
    let no_caches = crate::config::CacheSettings {
        enabled: Vec::new(),
        ..cfg.caches.clone()
    };
    let cache_settings = if flags.isolated {
        &no_caches
    } else {
        &cfg.caches
    };
    if !cache_settings.enabled.is_empty() {
        let writable: Vec<PathBuf> = mounts
            .iter()
            .filter(|(_, _, ro)| !ro)
            .map(|(h, _, _)| crate::config::expand_home(h))
            .chain(storage.clone())
            .collect();
        super::caches::check_place(
            &cfg.caches.dir,
            std::path::Path::new(workspace.path_str()),
            &writable,
        )
        .map_err(ExtrasError::Usage)?;
    }
    let mut caches = super::caches::plan(cache_settings, &workspace.id, storage_owner)
        .map_err(ExtrasError::Usage)?;
    if !caches.volumes.is_empty() && !idmapped_mounts(client).await? {
        // A shifted volume would stop every start on this host.
        eprintln!(
            "cci: warning: the apt cache is off: the Incus host's kernel or file system has no idmapped mounts, which a volume shared by containers of different id maps needs"
        );
        caches.volumes.clear();
        caches
            .mounts
            .retain(|(_, inside, _)| inside != super::caches::APT_SETTINGS);
    }
    mounts.extend(caches.mounts);
    let mounts = super::plan_mounts(
        std::path::Path::new(workspace.path_str()),
        storage.as_deref(),
        &mounts,
        storage_owner,
    )
    .map_err(ExtrasError::Usage)?;
    let protected = if flags.isolated {
        super::protect::Plan::default()
    } else {
        super::protect::plan(
            std::path::Path::new(workspace.path_str()),
            &cfg.protected_paths,
            flags.writable_git_hooks || cfg.writable_git_hooks,
        )
        .map_err(ExtrasError::Usage)?
    };
    // The workspace's remotes decide what git may reach through cci; with
    // writable git config inside, they are the agent's to choose.
    let writable_config = !flags.isolated && (flags.writable_git_hooks || cfg.writable_git_hooks);
    let mut forge_settings = cfg.git_forward.clone();
    forge_settings.enabled &= !writable_config;
    if let Some(api) = &mut forge_settings.api {
        let home = crate::session::credentials_home(cfg.credentials_dir.as_deref());
        api.credentials_home = home.as_ref().map(|h| h.display().to_string());
        if api.key_command.is_none() && !home.as_deref().is_some_and(has_api_key) {
            return Err(ExtrasError::Usage(
                "[tool] credentials = \"host\" needs an API key on the host: primaryApiKey in ~/.claude.json (Claude Code signed in with an API key) or [tool] api_key_command".into(),
            ));
        }
    }
    let forge =
        crate::forge::Forward::plan(std::path::Path::new(workspace.path_str()), &forge_settings)
            .map_err(ExtrasError::Usage)?;
    let forge = match forge {
        Some(f) => match f.activate().await {
            Ok(()) => Some(f),
            Err(e) => {
                eprintln!("cci: git through cci is off for this session: {e}");
                None
            }
        },
        None => None,
    };
    for rel in &protected.missing {
        tracing::info!("protected path {rel} does not exist in the workspace: not protected");
    }
    // The root disk is named only when it must be: a pool or a size.
    let pool = match (&cfg.storage_pool, &cfg.disk) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(_)) => Some(root_pool(client, cfg, "limits.disk").await?),
        (None, None) => None,
    };
    let mut volumes = Vec::new();
    for (volume, path) in caches.volumes {
        let pool = root_pool(client, cfg, "the apt cache").await?;
        cache_volume(client, &pool, &volume, cfg.caches.max_bytes).await?;
        volumes.push((pool, volume, path));
    }
    let sockets = sockets(cfg, workspace, &mounts).map_err(ExtrasError::Usage)?;
    Ok(Extras {
        cpu: cfg.cpu,
        memory: Some(cfg.memory.clone()),
        processes: Some(cfg.processes),
        pool,
        disk: cfg.disk.clone(),
        mounts,
        protected: protected.mounts,
        isolated: flags.isolated,
        copy: false,
        owner,
        kernel_allow: cfg.allow_syscalls.clone(),
        no_wait: flags.no_wait,
        max_duration: if session { cfg.max_duration } else { None },
        ports: cfg.ports.iter().chain(&flags.ports).copied().collect(),
        cache_env: caches.env,
        volumes,
        sockets,
        forge,
        ssh_agent: if flags.ssh_agent || cfg.ssh_agent {
            Some(super::forward::SshAgent::from_env().map_err(ExtrasError::Usage)?)
        } else {
            None
        },
        target: None,
    })
}

/// The extras of a sandbox on a remote daemon: nothing of this machine can
/// reach a server elsewhere (a host path there is the server's, a socket
/// there is the server's), so what needs this machine is refused, by name,
/// rather than made to mean something else on the server.
pub async fn remote_extras(
    client: &Client,
    remote: &str,
    cfg: &Effective,
    workspace: &Workspace,
    flags: &Flags,
    session: bool,
) -> Result<Extras, ExtrasError> {
    let refuse = |what: &str| {
        Err(ExtrasError::Usage(format!(
            "{what} cannot be used on remote {remote}: it would name a path or socket of the server, not of this machine"
        )))
    };
    // A repository goes in as an isolated session; any other folder is
    // copied in (and back only on request: `cci sync`).
    let copy = !flags.isolated;
    if copy && workspace.path.join(".git").exists() {
        return Err(ExtrasError::Usage(format!(
            "remote {remote} cannot mount this folder: use an isolated session (`--isolated`: the repository goes in, `cci diff`/`cci merge` bring the commits back), or run on the local daemon"
        )));
    }
    if !cfg.mounts.is_empty() || !flags.mounts.is_empty() {
        return refuse("--mount / [[mounts]]");
    }
    if flags.storage.is_some() || cfg.storage_dir.is_some() {
        return refuse("--storage / [paths] storage_dir");
    }
    if flags.ssh_agent || cfg.ssh_agent {
        return refuse("--ssh-agent / [defaults] ssh_agent");
    }
    if !cfg.sockets.is_empty() {
        return refuse("[[sockets]]");
    }
    if !cfg.ports.is_empty() || !flags.ports.is_empty() {
        return refuse("--publish / [[ports]]");
    }
    if cfg.git_forward.api.is_some() {
        return refuse("[tool] credentials = \"host\"");
    }
    if cfg.git_forward.enabled {
        tracing::info!(
            "git through cci is off on remote {remote}: its forwarder runs on this machine"
        );
    }
    Ok(Extras {
        cpu: cfg.cpu,
        memory: Some(cfg.memory.clone()),
        processes: Some(cfg.processes),
        pool: match (&cfg.storage_pool, &cfg.disk) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => Some(root_pool(client, cfg, "limits.disk").await?),
            (None, None) => None,
        },
        disk: cfg.disk.clone(),
        mounts: Vec::new(),
        protected: Vec::new(),
        isolated: true,
        copy,
        owner: None,
        kernel_allow: cfg.allow_syscalls.clone(),
        no_wait: flags.no_wait,
        max_duration: if session { cfg.max_duration } else { None },
        ports: Vec::new(),
        cache_env: Vec::new(),
        volumes: Vec::new(),
        sockets: Vec::new(),
        forge: None,
        ssh_agent: None,
        target: None,
    })
}

/// The pool of the sandboxes' root disks: `[incus] storage_pool`, else the
/// default profile's; `what` needs one.
async fn root_pool(
    client: &crate::incus::Client,
    cfg: &Effective,
    what: &str,
) -> Result<String, ExtrasError> {
    if let Some(p) = &cfg.storage_pool {
        return Ok(p.clone());
    }
    let (profile, _) = client.profile("default").await?;
    profile
        .devices
        .values()
        .find(|d| {
            d.get("type").is_some_and(|t| t == "disk") && d.get("path").is_some_and(|p| p == "/")
        })
        .and_then(|d| d.get("pool").cloned())
        .ok_or_else(|| {
            ExtrasError::Usage(format!(
                "{what} needs a storage pool: the default profile has no root disk; set [incus] storage_pool"
            ))
        })
}

/// Whether the daemon's host can give a container an idmapped mount.
async fn idmapped_mounts(client: &crate::incus::Client) -> Result<bool, ExtrasError> {
    let info = client.server().await?;
    Ok(info
        .environment
        .kernel_features
        .get("idmapped_mounts")
        .is_some_and(|v| v == "true"))
}

/// Make cache volume `name` in `pool` when missing, with id shifting: what
/// root writes in one sandbox is root's in the next. Its size is twice the
/// cap where the pool bounds volumes (the cap itself is kept from inside,
/// see `caches::inside`: pools do not all tell how full a volume is, and
/// one bounded at the cap would fill before it passed it).
async fn cache_volume(
    client: &crate::incus::Client,
    pool: &str,
    name: &str,
    cap: u64,
) -> Result<(), ExtrasError> {
    let check = |v: crate::incus::Volume| {
        if v.config
            .get("security.shifted")
            .is_some_and(|s| s == "true")
        {
            Ok(())
        } else {
            Err(ExtrasError::Usage(format!(
                "storage volume {name} (pool {pool}) is not shifted (security.shifted); cci's apt cache needs it: delete it (`incus storage volume delete {pool} {name}`) and cci makes it again"
            )))
        }
    };
    match client.volume(pool, name).await {
        Ok(v) => return check(v),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let mut config: crate::incus::transport::StringMap =
        [("security.shifted".to_string(), "true".to_string())].into();
    let description = super::caches::unused::VOLUME_DESCRIPTION;
    config.insert("size".into(), cap.saturating_mul(2).to_string());
    let mut made = client.create_volume(pool, name, description, &config).await;
    if made.is_err() && client.volume(pool, name).await.is_err() {
        // A pool that cannot bound a volume's size.
        config.remove("size");
        made = client.create_volume(pool, name, description, &config).await;
    }
    match made {
        // Another sandbox starting at the same time made it.
        Err(e) => match client.volume(pool, name).await {
            Ok(v) => {
                tracing::debug!("cache volume {name}: {e}");
                check(v)
            }
            Err(_) => Err(e.into()),
        },
        Ok(()) => Ok(()),
    }
}

/// The configured host sockets, checked: each a socket now, none reached
/// through a folder the agent can change (the workspace, a writable mount:
/// it could put a link there to another socket, which the daemon would
/// follow at the next connection), no two at one place inside.
fn sockets(
    cfg: &Effective,
    workspace: &Workspace,
    mounts: &[super::Mount],
) -> Result<Vec<super::forward::HostSocket>, String> {
    let ws = std::fs::canonicalize(workspace.path_str())
        .unwrap_or_else(|_| PathBuf::from(workspace.path_str()));
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for spec in &cfg.sockets {
        if spec.container == super::forward::SSH_AGENT_SOCKET || !seen.insert(&spec.container) {
            return Err(format!(
                "[[sockets]] container path {} is used twice (or by --ssh-agent)",
                spec.container
            ));
        }
        let s = super::forward::HostSocket::from_spec(spec)?;
        let writable = std::iter::once(ws.as_path()).chain(
            mounts
                .iter()
                .filter(|m| !m.readonly)
                .map(|m| m.host.as_path()),
        );
        for w in writable {
            if spec.host.starts_with(w) || s.socket.starts_with(w) {
                return Err(format!(
                    "[[sockets]] {} is inside {}, which the agent can change: it could swap the socket for a link to another; put it elsewhere",
                    spec.host.display(),
                    w.display()
                ));
            }
        }
        all.push(s);
    }
    Ok(all)
}

/// Whether the host's `.claude.json` in `home` holds an API key.
fn has_api_key(home: &std::path::Path) -> bool {
    std::fs::read(home.join(".claude.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .is_some_and(|v| v["primaryApiKey"].as_str().is_some_and(|k| !k.is_empty()))
}

//! The settings in force, typed, with cci's defaults where nothing was set.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::schema::{ModeName, Settings};
use super::values::parse_duration;

/// The user agents and commands run as inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its uid.
    pub uid: u32,
    /// Its gid (the same number).
    pub gid: u32,
    /// Its name.
    pub name: String,
    /// Its home folder.
    pub home: String,
}

impl Account {
    /// The account called `name` with uid `uid`.
    pub fn new(uid: u32, name: &str) -> Account {
        Account {
            uid,
            gid: uid,
            name: name.to_string(),
            home: if name == "root" {
                "/root".into()
            } else {
                format!("/home/{name}")
            },
        }
    }
}

/// Caps on what one saved session state may hold (`[session]`); the
/// session archive enforces them (`session::Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionLimits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    /// Files, folders and symlinks together.
    pub max_files: u64,
    /// Folder nesting below the state folder.
    pub max_depth: usize,
    /// Record sessions' terminal output.
    pub record: bool,
    /// The most bytes one recording keeps.
    pub record_max_bytes: u64,
}

/// The largest recording (and its default size cap).
pub const MAX_RECORDING: u64 = 16 << 20;

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            max_bytes: 2 << 30,
            max_files: 200_000,
            max_depth: 64,
            record: false,
            record_max_bytes: MAX_RECORDING,
        }
    }
}

/// A host folder to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Host path (absolute).
    pub host: PathBuf,
    /// Container path.
    pub container: String,
    /// Read-only.
    pub readonly: bool,
}

/// A host Unix socket forwarded into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    /// The host socket (`~` expanded).
    pub host: PathBuf,
    /// Where it appears inside (absolute).
    pub container: String,
}

/// `[caches]` in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Which caches are shared (none: the feature is off).
    pub enabled: Vec<super::schema::CacheKind>,
    /// The host folder they live in.
    pub dir: PathBuf,
    /// Who shares them.
    pub scope: super::schema::CacheScope,
    /// The most one cache folder keeps.
    pub max_bytes: u64,
}

/// The size cap of one cache when `[caches] max_size` is unset.
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// Automatic snapshots kept per container when `[snapshots] keep` is unset.
pub const DEFAULT_SNAPSHOT_KEEP: u32 = 5;

/// A container port published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// The host address listened on.
    pub address: std::net::IpAddr,
    /// The host port.
    pub host: u16,
    /// The container port (on its loopback).
    pub container: u16,
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = std::net::SocketAddr::new(self.address, self.host);
        write!(f, "{at} -> {}", self.container)
    }
}

/// The settings in force, with cci's defaults where nothing was set.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The profile applied.
    pub profile: Option<String>,
    /// Image alias.
    pub image: String,
    /// Keep session containers.
    pub persistent: bool,
    /// Most slots per workspace.
    pub slot_limit: u32,
    /// The agent.
    pub tool: String,
    /// Its program.
    pub tool_binary: Option<String>,
    /// Extra agent arguments.
    pub tool_args: Vec<String>,
    /// `[tool] pre_launch`.
    pub pre_launch: Vec<String>,
    /// `[tool] pre_launch_required`.
    pub pre_launch_required: bool,
    /// Where credentials are read from.
    pub credentials_dir: Option<PathBuf>,
    /// `[tool] credentials = "host"`: the API key stays on the host.
    pub host_credentials: bool,
    /// `[tool] api_url`.
    pub api_url: String,
    /// `[tool] api_key_command`.
    pub api_key_command: Option<String>,
    /// Where saved sessions live.
    pub sessions_dir: Option<PathBuf>,
    /// Mounted at /storage.
    pub storage_dir: Option<PathBuf>,
    /// Diagnostics go to `cci.log` here.
    pub logs_dir: Option<PathBuf>,
    /// The daemon's socket.
    pub socket: Option<PathBuf>,
    /// The remote to use (None: the local daemon).
    pub remote: Option<String>,
    /// The Incus project.
    pub project: Option<String>,
    /// The root disks' pool.
    pub storage_pool: Option<String>,
    /// Mount without UID shifting.
    pub disable_shift: bool,
    /// The user inside.
    pub account: Account,
    /// Kernel interfaces allowed back in (`incus.allow_syscalls`).
    pub allow_syscalls: Vec<String>,
    /// The daemon's admin group (`incus.group`).
    pub group: String,
    /// Copy the agent's credentials in (`defaults.mount_claude_config`).
    pub copy_credentials: bool,
    /// Forward the host's SSH agent (`defaults.ssh_agent`).
    pub ssh_agent: bool,
    /// Environment every session and run gets (`defaults.environment`).
    pub environment: Vec<(String, String)>,
    /// Network mode.
    pub network: ModeName,
    /// Allowlist entries (proxy mode: its rules).
    pub allowed: Vec<String>,
    /// Proxy mode: unknown names wait for the user (`on_unknown = "ask"`).
    pub ask_unknown: bool,
    /// Allowlist refresh minutes.
    pub refresh_minutes: f64,
    /// Allowlist DNS servers.
    pub dns_servers: Vec<IpAddr>,
    /// Restricted mode blocks private networks.
    pub block_private: bool,
    /// Restricted mode blocks the metadata endpoint.
    pub block_metadata: bool,
    /// CPUs.
    pub cpu: Option<u32>,
    /// Memory limit (`limits.memory`).
    pub memory: String,
    /// Process limit.
    pub processes: u32,
    /// Root disk size.
    pub disk: Option<String>,
    /// Session time limit.
    pub max_duration: Option<Duration>,
    /// Limits of one saved state.
    pub session: SessionLimits,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// Published ports (`[[ports]]`).
    pub ports: Vec<PortSpec>,
    /// Forwarded host sockets (`[[sockets]]`).
    pub sockets: Vec<SocketSpec>,
    /// `[caches]`.
    pub caches: CacheSettings,
    /// `[snapshots]`: how many automatic snapshots to keep, when on.
    pub auto_snapshots: Option<u32>,
    /// Workspace paths mounted read-only besides git's own.
    pub protected_paths: Vec<String>,
    /// `.git/hooks`, `.git/config` and `.git/info` stay writable.
    pub writable_git_hooks: bool,
    /// `[git] mode = "isolated"`.
    pub git_isolated: bool,
    /// `[git] repos`: repositories cloned into /workspace/NAME.
    pub git_repos: Vec<String>,
    /// `[git] forward*`, `push_*`, `token_command`.
    pub git_forward: crate::forge::Settings,
    /// `[notify]`.
    pub notify: Notify,
}

/// `[notify]` in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// The program and its arguments (empty: none).
    pub command: Vec<String>,
    /// The webhook URL.
    pub webhook: Option<String>,
    /// Ring the terminal bell.
    pub bell: bool,
    /// Which changes notify.
    pub on: Vec<super::schema::NotifyOn>,
}

impl Notify {
    /// Whether something outside a terminal is to be told (a command or a
    /// webhook: what the background notifier is for).
    pub fn has_notifier(&self) -> bool {
        !self.command.is_empty() || self.webhook.is_some()
    }
}

/// Memory limit when nothing is configured.
pub const DEFAULT_MEMORY: &str = "80%";
/// Process limit when nothing is configured.
pub const DEFAULT_PROCESSES: u32 = 4096;

impl Default for Effective {
    fn default() -> Effective {
        Effective::from_settings(Settings::default())
    }
}

impl Effective {
    /// Typed settings from merged (already checked) ones.
    pub fn from_settings(s: Settings) -> Effective {
        let d = s.defaults.unwrap_or_default();
        let t = s.tool.unwrap_or_default();
        let p = s.paths.unwrap_or_default();
        let i = s.incus.unwrap_or_default();
        let n = s.network.unwrap_or_default();
        let l = s.limits.unwrap_or_default();
        let x = s.session.unwrap_or_default();
        let w = s.workspace.unwrap_or_default();
        let g = s.git.unwrap_or_default();
        let nt = s.notify.unwrap_or_default();
        let base = SessionLimits::default();
        let path = |v: Option<String>| v.map(PathBuf::from);
        Effective {
            profile: None,
            image: d
                .image
                .unwrap_or_else(|| crate::config::DEFAULT_ALIAS.into()),
            persistent: d.persistent.unwrap_or(false),
            slot_limit: d.slot_limit.map_or(10, |n| n as u32),
            tool: t
                .name
                .unwrap_or_else(|| crate::config::AGENT_NAMES[0].into()),
            tool_binary: t.binary,
            tool_args: t.args.unwrap_or_default(),
            pre_launch: t.pre_launch.unwrap_or_default(),
            pre_launch_required: t.pre_launch_required.unwrap_or(false),
            credentials_dir: path(t.credentials_dir),
            host_credentials: t.credentials == Some(super::schema::CredentialsMode::Host),
            api_url: t
                .api_url
                .clone()
                .unwrap_or_else(|| crate::forge::ANTHROPIC_API.into()),
            api_key_command: t.api_key_command.clone(),
            sessions_dir: path(p.sessions_dir),
            storage_dir: path(p.storage_dir),
            logs_dir: path(p.logs_dir),
            socket: path(i.socket),
            remote: i.remote,
            project: i.project,
            storage_pool: i.storage_pool,
            disable_shift: i.disable_shift.unwrap_or(false),
            account: Account::new(
                i.code_uid.map_or(1000, |u| u as u32),
                i.code_user.as_deref().unwrap_or("code"),
            ),
            allow_syscalls: i.allow_syscalls.unwrap_or_default(),
            group: i.group.unwrap_or_else(|| "incus-admin".into()),
            copy_credentials: d.mount_claude_config.unwrap_or(true),
            ssh_agent: d.ssh_agent.unwrap_or(false),
            environment: d
                .environment
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            network: n.mode.or(d.network).unwrap_or(ModeName::Restricted),
            allowed: n.allowed_domains.unwrap_or_default(),
            ask_unknown: n.on_unknown == Some(super::schema::OnUnknownName::Ask),
            refresh_minutes: n
                .refresh_interval_minutes
                .unwrap_or(crate::config::DEFAULT_REFRESH_MINUTES),
            dns_servers: n
                .dns_servers
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            block_private: n.block_private_networks.unwrap_or(true),
            block_metadata: n.block_metadata_endpoint.unwrap_or(true),
            cpu: l.cpu.map(|c| c as u32),
            memory: l.memory.unwrap_or_else(|| DEFAULT_MEMORY.into()),
            processes: l.processes.map_or(DEFAULT_PROCESSES, |n| n as u32),
            disk: l.disk,
            max_duration: l.max_duration.as_deref().and_then(parse_duration),
            session: SessionLimits {
                max_bytes: x.max_bytes.map_or(base.max_bytes, |n| n as u64),
                max_files: x.max_files.map_or(base.max_files, |n| n as u64),
                max_depth: x.max_depth.map_or(base.max_depth, |n| n as usize),
                record: x.record.unwrap_or(false),
                record_max_bytes: x
                    .record_max_bytes
                    .map_or(base.record_max_bytes, |n| n as u64),
            },
            mounts: s
                .mounts
                .unwrap_or_default()
                .into_iter()
                .map(|m| MountSpec {
                    host: PathBuf::from(m.host),
                    container: m.container,
                    readonly: m.readonly,
                })
                .collect(),
            ports: s
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| PortSpec {
                    address: p.address.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                    host: p.host,
                    container: p.container,
                })
                .collect(),
            sockets: s
                .sockets
                .unwrap_or_default()
                .into_iter()
                .map(|k| SocketSpec {
                    host: super::values::expand_home(&k.host),
                    container: k.container,
                })
                .collect(),
            caches: {
                let c = s.caches.unwrap_or_default();
                let mut enabled = c.enabled.unwrap_or_default();
                enabled.sort();
                enabled.dedup();
                CacheSettings {
                    enabled,
                    dir: super::values::expand_home(c.dir.as_deref().unwrap_or("~/.cache/cci")),
                    scope: c.scope.unwrap_or_default(),
                    max_bytes: c
                        .max_size
                        .as_deref()
                        .and_then(super::values::parse_size)
                        .unwrap_or(DEFAULT_CACHE_BYTES),
                }
            },
            auto_snapshots: {
                let sn = s.snapshots.unwrap_or_default();
                sn.auto
                    .unwrap_or(false)
                    .then(|| sn.keep.map_or(DEFAULT_SNAPSHOT_KEEP, |n| n as u32))
            },
            protected_paths: w.protected_paths.unwrap_or_default(),
            writable_git_hooks: w.writable_git_hooks.unwrap_or(false),
            git_isolated: g.mode == Some(super::schema::GitMode::Isolated),
            git_forward: crate::forge::Settings {
                enabled: g.forward.unwrap_or(true),
                hosts: g
                    .forward_hosts
                    .clone()
                    .unwrap_or_else(|| vec!["github.com".into()]),
                push: crate::forge::PushRules {
                    branches: g
                        .push_branches
                        .clone()
                        .unwrap_or_else(|| crate::forge::PushRules::default().branches),
                    default_branch: g.push_default_branch.unwrap_or(false),
                    tags: g.push_tags.unwrap_or(false),
                    ci: g.push_ci.unwrap_or(false),
                },
                token_command: g.token_command.clone(),
                api: (t.credentials == Some(super::schema::CredentialsMode::Host)).then(|| {
                    crate::forge::ApiGrant {
                        upstream: t
                            .api_url
                            .clone()
                            .unwrap_or_else(|| crate::forge::ANTHROPIC_API.into())
                            .trim_end_matches('/')
                            .to_string(),
                        key_command: t.api_key_command.clone(),
                        credentials_home: None,
                    }
                }),
            },
            notify: Notify {
                command: nt.command.unwrap_or_default(),
                webhook: nt.webhook,
                bell: nt.bell.unwrap_or(false),
                on: nt
                    .on
                    .unwrap_or_else(|| super::schema::NotifyOn::ALL.to_vec()),
            },
            git_repos: g
                .repos
                .unwrap_or_default()
                .into_iter()
                .chain(s.repos.unwrap_or_default().into_iter().map(|r| r.path))
                .collect(),
        }
    }
}

impl Effective {
    /// Every key with the value in force (`null`: not set), in reference order.
    pub fn values(&self) -> Vec<(&'static str, Value)> {
        use serde_json::json;
        let path = |p: &Option<PathBuf>| json!(p.as_ref().map(|p| p.display().to_string()));
        let mode = match self.network {
            ModeName::Restricted => "restricted",
            ModeName::Allowlist => "allowlist",
            ModeName::Proxy => "proxy",
            ModeName::Open => "open",
        };
        vec![
            ("defaults.image", json!(self.image)),
            ("defaults.persistent", json!(self.persistent)),
            ("defaults.slot_limit", json!(self.slot_limit)),
            ("defaults.profile", json!(self.profile)),
            ("tool.name", json!(self.tool)),
            ("tool.binary", json!(self.tool_binary)),
            ("tool.args", json!(self.tool_args)),
            ("tool.pre_launch", json!(self.pre_launch)),
            ("tool.pre_launch_required", json!(self.pre_launch_required)),
            ("tool.credentials_dir", path(&self.credentials_dir)),
            (
                "tool.credentials",
                json!(if self.host_credentials { "host" } else { "copy" }),
            ),
            ("tool.api_url", json!(self.api_url)),
            ("tool.api_key_command", json!(self.api_key_command)),
            ("paths.sessions_dir", path(&self.sessions_dir)),
            ("paths.storage_dir", path(&self.storage_dir)),
            ("paths.logs_dir", path(&self.logs_dir)),
            ("incus.socket", path(&self.socket)),
            ("incus.remote", json!(self.remote)),
            ("incus.project", json!(self.project)),
            ("incus.storage_pool", json!(self.storage_pool)),
            ("incus.disable_shift", json!(self.disable_shift)),
            ("incus.code_uid", json!(self.account.uid)),
            ("incus.code_user", json!(self.account.name)),
            ("incus.allow_syscalls", json!(self.allow_syscalls)),
            ("incus.group", json!(self.group)),
            ("defaults.mount_claude_config", json!(self.copy_credentials)),
            ("defaults.ssh_agent", json!(self.ssh_agent)),
            (
                "defaults.environment",
                json!(self.environment.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()),
            ),
            ("workspace.protected_paths", json!(self.protected_paths)),
            ("workspace.writable_git_hooks", json!(self.writable_git_hooks)),
            (
                "git.mode",
                json!(if self.git_isolated { "isolated" } else { "mounted" }),
            ),
            ("git.repos", json!(self.git_repos)),
            ("git.forward", json!(self.git_forward.enabled)),
            ("git.forward_hosts", json!(self.git_forward.hosts)),
            ("git.push_branches", json!(self.git_forward.push.branches)),
            (
                "git.push_default_branch",
                json!(self.git_forward.push.default_branch),
            ),
            ("git.push_tags", json!(self.git_forward.push.tags)),
            ("git.push_ci", json!(self.git_forward.push.ci)),
            ("git.token_command", json!(self.git_forward.token_command)),
            ("network.mode", json!(mode)),
            ("network.allowed_domains", json!(self.allowed)),
            (
                "network.on_unknown",
                json!(if self.ask_unknown { "ask" } else { "deny" }),
            ),
            ("network.refresh_interval_minutes", json!(self.refresh_minutes)),
            (
                "network.dns_servers",
                json!(self.dns_servers.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
            ),
            ("network.block_private_networks", json!(self.block_private)),
            ("network.block_metadata_endpoint", json!(self.block_metadata)),
            ("limits.cpu", json!(self.cpu)),
            ("limits.memory", json!(self.memory)),
            ("limits.processes", json!(self.processes)),
            ("limits.disk", json!(self.disk)),
            (
                "limits.max_duration",
                json!(self.max_duration.map(|d| format!("{}s", d.as_secs()))),
            ),
            ("session.max_bytes", json!(self.session.max_bytes)),
            ("session.max_files", json!(self.session.max_files)),
            ("session.max_depth", json!(self.session.max_depth)),
            ("session.record", json!(self.session.record)),
            ("session.record_max_bytes", json!(self.session.record_max_bytes)),
            ("notify.command", json!(self.notify.command)),
            ("notify.webhook", json!(self.notify.webhook)),
            ("notify.bell", json!(self.notify.bell)),
            (
                "notify.on",
                json!(self.notify.on.iter().map(|o| o.word()).collect::<Vec<_>>()),
            ),
            (
                "mounts",
                json!(self
                    .mounts
                    .iter()
                    .map(|m| json!({"host": m.host.display().to_string(), "container": m.container, "readonly": m.readonly}))
                    .collect::<Vec<_>>()),
            ),
            (
                "sockets",
                json!(self
                    .sockets
                    .iter()
                    .map(|k| json!({"host": k.host.display().to_string(), "container": k.container}))
                    .collect::<Vec<_>>()),
            ),
            (
                "caches.enabled",
                json!(self.caches.enabled.iter().map(|k| k.word()).collect::<Vec<_>>()),
            ),
            ("caches.dir", json!(self.caches.dir.display().to_string())),
            (
                "caches.scope",
                json!(match self.caches.scope {
                    super::schema::CacheScope::Workspace => "workspace",
                    super::schema::CacheScope::User => "user",
                }),
            ),
            ("caches.max_size", json!(self.caches.max_bytes)),
            ("snapshots.auto", json!(self.auto_snapshots.is_some())),
            (
                "snapshots.keep",
                json!(self.auto_snapshots.unwrap_or(DEFAULT_SNAPSHOT_KEEP)),
            ),
            (
                "ports",
                json!(self
                    .ports
                    .iter()
                    .map(|p| json!({"host": p.host, "container": p.container, "address": p.address.to_string()}))
                    .collect::<Vec<_>>()),
            ),
        ]
    }
}

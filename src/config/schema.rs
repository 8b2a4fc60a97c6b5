//! What a configuration file may say. Every key is optional in every layer;
//! unknown sections, keys and values are errors (serde's
//! `deny_unknown_fields`, closed enums), so a typo never falls back silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Image alias sessions and runs start from.
    pub image: Option<String>,
    /// Keep session containers after their sessions.
    pub persistent: Option<bool>,
    /// The network mode (the same key as `[network] mode`).
    pub network: Option<ModeName>,
    /// Most slots per workspace.
    pub slot_limit: Option<i64>,
    /// The profile applied unless `--profile` names another.
    pub profile: Option<String>,
    /// Copy the agent's host credentials into sessions (the original's
    /// name: it mounted them; cci copies them in).
    pub mount_claude_config: Option<bool>,
    /// Forward the host's SSH agent into sessions and runs.
    pub ssh_agent: Option<bool>,
    /// Environment variables every session and run gets.
    pub environment: Option<BTreeMap<String, String>>,
}

/// `[tool]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// The agent (`claude`, `opencode`, `codex`, `aider`).
    pub name: Option<String>,
    /// Its program in the container.
    pub binary: Option<String>,
    /// Extra arguments after cci's own.
    pub args: Option<Vec<String>>,
    /// The host folder its credential files are read from (default: your home).
    pub credentials_dir: Option<String>,
    /// `copy` (default: credential files go in) or `host` (the API key
    /// stays on the host; the agent's API is reached through cci).
    pub credentials: Option<CredentialsMode>,
    /// The API `host` mode forwards to (default https://api.anthropic.com).
    pub api_url: Option<String>,
    /// A host command printing the API key for `host` mode.
    pub api_key_command: Option<String>,
    /// Commands run inside, in the workspace as the agent's user, before
    /// the agent starts.
    pub pre_launch: Option<Vec<String>>,
    /// A failing `pre_launch` keeps the agent from starting.
    pub pre_launch_required: Option<bool>,
}

/// `[paths]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Where saved sessions live (default `~/.cci`).
    pub sessions_dir: Option<String>,
    /// A host folder mounted at `/storage` in every session and run.
    pub storage_dir: Option<String>,
    /// Where cci writes its diagnostics (`cci.log`) instead of stderr.
    pub logs_dir: Option<String>,
}

/// `[incus]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incus {
    /// The daemon's Unix socket.
    pub socket: Option<String>,
    /// The Incus server to use, by remote name (`cci remote list`).
    pub remote: Option<String>,
    /// The Incus project.
    pub project: Option<String>,
    /// The storage pool of the containers' root disks.
    pub storage_pool: Option<String>,
    /// Mount host folders without UID shifting.
    pub disable_shift: Option<bool>,
    /// The uid agents and commands run as inside (the image's user).
    #[serde(alias = "claude_uid")]
    pub code_uid: Option<i64>,
    /// That user's name (its home is `/home/NAME`, `/root` for root).
    pub code_user: Option<String>,
    /// Kernel interfaces sandboxes go without that are allowed back in.
    pub allow_syscalls: Option<Vec<String>>,
    /// The group whose members may use the daemon (named in cci's advice).
    pub group: Option<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `restricted`, `allowlist`, `proxy` or `open`.
    pub mode: Option<ModeName>,
    /// Allowlist entries (domains, IPs, CIDRs).
    pub allowed_domains: Option<Vec<String>>,
    /// Minutes between allowlist refreshes.
    pub refresh_interval_minutes: Option<f64>,
    /// DNS servers allowlists are resolved with.
    pub dns_servers: Option<Vec<String>>,
    /// Restricted mode: block private networks (LAN).
    pub block_private_networks: Option<bool>,
    /// Restricted mode: block the cloud metadata endpoint.
    pub block_metadata_endpoint: Option<bool>,
    /// Proxy mode: what a request to a name no rule allows gets.
    pub on_unknown: Option<OnUnknownName>,
}

/// `[tool] credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsMode {
    /// The agent's credential files are copied in at every start.
    Copy,
    /// They stay on the host; cci's endpoint adds the API key.
    Host,
}

/// `[network] on_unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknownName {
    /// Refused (and logged).
    Deny,
    /// Held while the user decides (`cci network approve`).
    Ask,
}

/// `[workspace]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// Workspace paths mounted read-only over the mounted workspace, besides
    /// git's own.
    pub protected_paths: Option<Vec<String>>,
    /// Leave `.git/hooks`, `.git/config` and `.git/info` writable.
    pub writable_git_hooks: Option<bool>,
}

/// `[git]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Git {
    /// `mounted` (the workspace folder) or `isolated` (a clone inside).
    pub mode: Option<GitMode>,
    /// Repositories cloned into /workspace/NAME (paths relative to the
    /// workspace; `~` expands); implies isolated.
    pub repos: Option<Vec<String>>,
    /// git fetch/push of the workspace's repositories through cci's
    /// credential-holding forwarder (default true).
    pub forward: Option<bool>,
    /// Hosts forwarded: `NAME` or `NAME=URL` (default github.com).
    pub forward_hosts: Option<Vec<String>>,
    /// Branch patterns a push may update (default `cci/**`).
    pub push_branches: Option<Vec<String>>,
    /// The default branch (and main, master) may be pushed to.
    pub push_default_branch: Option<bool>,
    /// Tags may be pushed (created only).
    pub push_tags: Option<bool>,
    /// Pushed commits may change CI definitions.
    pub push_ci: Option<bool>,
    /// A host command printing the token (default: `gh auth token`, then
    /// git's credential helpers).
    pub token_command: Option<String>,
}

/// How the workspace's repository reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitMode {
    /// The workspace folder is mounted (default).
    Mounted,
    /// The repository is cloned in; commits come back for review.
    Isolated,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs (`limits.cpu`).
    pub cpu: Option<i64>,
    /// Memory: `4GiB`, `512MiB`, `50%` (`limits.memory`).
    pub memory: Option<String>,
    /// Processes (`limits.processes`).
    pub processes: Option<i64>,
    /// Root disk size: `20GiB` (the root device's `size`).
    pub disk: Option<String>,
    /// Stop a session after this long: `90m`, `2h`, `1h30m`, `45s`.
    pub max_duration: Option<String>,
}

/// `[notify]`: telling the user when a slot wants them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A host program and its arguments, run with the message added last.
    pub command: Option<Vec<String>>,
    /// A URL each notification is POSTed to as JSON.
    pub webhook: Option<String>,
    /// Ring the terminal bell in `cci status` and `--watch`.
    pub bell: Option<bool>,
    /// Which changes notify (default all).
    pub on: Option<Vec<NotifyOn>>,
}

/// A change worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// The agent asks the user something.
    Waiting,
    /// The agent finished its turn (working, then idle).
    Finished,
    /// The agent's program ended (or the time limit ended the session).
    Exited,
    /// The container stopped.
    Stopped,
}

impl NotifyOn {
    /// Every kind, in the order the docs list them.
    pub const ALL: [NotifyOn; 4] = [
        NotifyOn::Waiting,
        NotifyOn::Finished,
        NotifyOn::Exited,
        NotifyOn::Stopped,
    ];

    /// Its word.
    pub fn word(self) -> &'static str {
        match self {
            NotifyOn::Waiting => "waiting",
            NotifyOn::Finished => "finished",
            NotifyOn::Exited => "exited",
            NotifyOn::Stopped => "stopped",
        }
    }
}

/// `[session]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Bytes one saved state may hold.
    pub max_bytes: Option<i64>,
    /// Entries one saved state may hold.
    pub max_files: Option<i64>,
    /// Folder depth one saved state may have.
    pub max_depth: Option<i64>,
    /// Keep each session's terminal output with its record.
    pub record: Option<bool>,
    /// The most bytes one recording keeps.
    pub record_max_bytes: Option<i64>,
}

/// One `[[mounts]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Host folder (`~` expands).
    pub host: String,
    /// Where it appears in the container (absolute).
    pub container: String,
    /// Read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// One `[[repos]]` entry: a repository an isolated session clones in (the
/// table form of `[git] repos`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoEntry {
    /// Its folder (relative to the workspace; `~` expands).
    pub path: String,
}

/// One `[[ports]]` entry: a port of the container published on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntry {
    /// The host port.
    pub host: u16,
    /// The container port.
    pub container: u16,
    /// The host address it listens on (default 127.0.0.1).
    pub address: Option<std::net::IpAddr>,
}

/// `[snapshots]`: automatic checkpoints of kept containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshots {
    /// Take a snapshot before each session of a kept container.
    pub auto: Option<bool>,
    /// How many automatic snapshots each container keeps.
    pub keep: Option<i64>,
}

/// `[caches]`: package caches shared between a workspace's sandboxes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caches {
    /// Which caches are shared.
    pub enabled: Option<Vec<CacheKind>>,
    /// The host folder they live in (`~` expands).
    pub dir: Option<String>,
    /// Shared by one workspace's sandboxes, or by all of the user's.
    pub scope: Option<CacheScope>,
    /// The most one cache folder keeps (oldest files removed first).
    pub max_size: Option<String>,
}

/// A package cache cci can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// npm's (`npm_config_cache`).
    Npm,
    /// pip's (`PIP_CACHE_DIR`).
    Pip,
    /// Go's module cache (`GOMODCACHE`).
    Go,
    /// Cargo's registry and git caches (`~/.cargo/registry`, `~/.cargo/git`;
    /// never `CARGO_HOME` itself, which holds credentials and settings).
    Cargo,
    /// apt's downloaded packages (`Dir::Cache::Archives`).
    Apt,
}

impl CacheKind {
    /// Its name in the configuration.
    pub fn word(self) -> &'static str {
        match self {
            CacheKind::Npm => "npm",
            CacheKind::Pip => "pip",
            CacheKind::Go => "go",
            CacheKind::Cargo => "cargo",
            CacheKind::Apt => "apt",
        }
    }
}

/// Who shares a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The slots and sessions of one workspace.
    #[default]
    Workspace,
    /// Every workspace of the user.
    User,
}

/// One `[[sockets]]` entry: a host Unix socket forwarded into the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketEntry {
    /// The host socket (`~` expands).
    pub host: String,
    /// Where it appears in the container (absolute).
    pub container: String,
}

/// A network mode name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// Internet only.
    Restricted,
    /// Only the allowed destinations.
    Allowlist,
    /// Only the allowed names, through cci's filtering proxy.
    Proxy,
    /// No restriction.
    Open,
}

macro_rules! sections {
    ($($(#[$m:meta])* $name:ident : $ty:ty),* $(,)?) => {
        /// The settings of one layer (or one profile).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $($(#[$m])* pub $name: Option<$ty>,)*
        }

        /// A whole configuration file: settings and profiles.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Document {
            $($(#[$m])* pub $name: Option<$ty>,)*
            /// `[profiles.NAME]`: settings applied when the profile is selected.
            #[serde(default, deserialize_with = "profile_forms")]
            pub profiles: Option<BTreeMap<String, Settings>>,
        }

        /// A profile as written: sections, and (the original's flat form)
        /// `image`, `persistent` and `environment` at its top, which mean
        /// the `[defaults]` keys of the same names.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ProfileForm {
            $($name: Option<$ty>,)*
            image: Option<String>,
            persistent: Option<bool>,
            environment: Option<BTreeMap<String, String>>,
        }

        impl From<ProfileForm> for Settings {
            fn from(p: ProfileForm) -> Settings {
                let mut s = Settings { $($name: p.$name,)* };
                if p.image.is_some() || p.persistent.is_some() || p.environment.is_some() {
                    let d = s.defaults.get_or_insert_with(Defaults::default);
                    d.image = p.image.or(d.image.take());
                    d.persistent = p.persistent.or(d.persistent);
                    d.environment = p.environment.or(d.environment.take());
                }
                s
            }
        }

        impl Document {
            /// Its settings without the profiles.
            pub fn settings(&self) -> Settings {
                Settings { $($name: self.$name.clone(),)* }
            }
        }
    };
}

sections! {
    /// `[defaults]`
    defaults: Defaults,
    /// `[tool]`
    tool: Tool,
    /// `[paths]`
    paths: Paths,
    /// `[incus]`
    incus: Incus,
    /// `[network]`
    network: Network,
    /// `[workspace]`
    workspace: Workspace,
    /// `[git]`
    git: Git,
    /// `[limits]`
    limits: Limits,
    /// `[session]`
    session: Session,
    /// `[notify]`
    notify: Notify,
    /// `[snapshots]`
    snapshots: Snapshots,
    /// `[caches]`
    caches: Caches,
    /// `[[mounts]]`
    mounts: Vec<Mount>,
    /// `[[repos]]`
    repos: Vec<RepoEntry>,
    /// `[[ports]]`
    ports: Vec<PortEntry>,
    /// `[[sockets]]`
    sockets: Vec<SocketEntry>,
}

/// `[profiles.*]` in either form, as settings.
fn profile_forms<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, Settings>>, D::Error> {
    let forms: Option<BTreeMap<String, ProfileForm>> = Option::deserialize(d)?;
    Ok(forms.map(|f| f.into_iter().map(|(k, v)| (k, v.into())).collect()))
}

/// Every key a file may set, as `section.key` (`mounts` for `[[mounts]]`),
/// with what it means: the configuration reference (docs/configuration.md is checked
/// against it).
pub const KEYS: &[(&str, &str)] = &[
    (
        "defaults.image",
        "image alias sessions and runs start from (default `cci`)",
    ),
    (
        "defaults.persistent",
        "keep session containers when their sessions end (default false)",
    ),
    (
        "defaults.mount_claude_config",
        "copy the agent's credentials from your home into sessions (default true; the original tool's name for it)",
    ),
    (
        "defaults.ssh_agent",
        "forward your SSH agent ($SSH_AUTH_SOCK) into sessions and runs: keys stay on the host, the agent inside can ask it to sign (default false; `--ssh-agent`)",
    ),
    (
        "defaults.environment",
        "environment variables every session and run gets, e.g. { RUST_BACKTRACE = \"1\" } (`--env` wins)",
    ),
    (
        "defaults.network",
        "the network mode; the same key as `network.mode`",
    ),
    (
        "defaults.slot_limit",
        "most slots per workspace, 1-999 (default 10)",
    ),
    (
        "defaults.profile",
        "the profile applied unless `--profile` names another",
    ),
    (
        "tool.name",
        "the agent: claude, opencode, codex, aider (default claude)",
    ),
    (
        "tool.binary",
        "the agent's program in the container (default: its usual name)",
    ),
    (
        "tool.args",
        "extra arguments for the agent, after cci's own",
    ),
    (
        "tool.pre_launch",
        "commands run inside before the agent starts, e.g. [\"claude update\"] (in the workspace, as the agent's user, shown in its pane; the first failing one stops the list)",
    ),
    (
        "tool.pre_launch_required",
        "a failing pre_launch command keeps the agent from starting: the pane shows why and a shell (default false: the failure is shown and the agent starts)",
    ),
    (
        "tool.credentials_dir",
        "host folder the agent's credential files are read from (default: your home)",
    ),
    (
        "tool.credentials",
        "copy (default: the agent's credential files go in at every start) or host (Claude Code: the API key stays on the host and cci's endpoint adds it to each request; no credential file goes in)",
    ),
    (
        "tool.api_url",
        "the API host credentials mode forwards to (default https://api.anthropic.com; http:// to a loopback address only)",
    ),
    (
        "tool.api_key_command",
        "host credentials mode: a host command printing the API key (default: primaryApiKey of the host's ~/.claude.json, then $ANTHROPIC_API_KEY)",
    ),
    (
        "paths.sessions_dir",
        "where saved sessions live (default ~/.cci)",
    ),
    (
        "paths.storage_dir",
        "a host folder mounted at /storage in every session and run",
    ),
    (
        "paths.logs_dir",
        "write diagnostics to cci.log in this folder instead of stderr",
    ),
    ("incus.socket", "the Incus daemon's Unix socket"),
    (
        "incus.remote",
        "the Incus server to use, a remote name from `cci remote list` (default: the local daemon)",
    ),
    ("incus.project", "the Incus project"),
    (
        "incus.storage_pool",
        "storage pool of the containers' root disks (default: the default profile's)",
    ),
    (
        "incus.disable_shift",
        "mount host folders without UID shifting (default false)",
    ),
    (
        "incus.code_uid",
        "uid agents and commands run as inside; its gid is the same (default 1000)",
    ),
    (
        "incus.code_user",
        "that user's name; its home is /home/NAME, /root for root (default code)",
    ),
    (
        "incus.allow_syscalls",
        "kernel interfaces sandboxes may use again: io_uring, bpf, userfaultfd, keyctl, perf_event_open (default none)",
    ),
    (
        "incus.group",
        "the group whose members may use the daemon, named in cci's advice (default incus-admin)",
    ),
    (
        "workspace.protected_paths",
        "workspace paths mounted read-only in sessions and runs besides git's own, e.g. [\".envrc\", \".vscode\"] (default none)",
    ),
    (
        "workspace.writable_git_hooks",
        "leave .git/hooks, .git/config and .git/info writable inside (default false; the same as --writable-git-hooks)",
    ),
    (
        "git.repos",
        "repositories an isolated session clones into /workspace/NAME, e.g. [\"../api\", \"../web\"] (relative to the workspace; implies isolated; the same as --repo)",
    ),
    (
        "git.mode",
        "mounted (default: the workspace folder) or isolated (a clone inside; the same as --isolated)",
    ),
    (
        "git.forward",
        "git fetch/pull/push of the workspace's repositories on forwarded hosts go through cci's forwarder, which holds the credential on the host (default true)",
    ),
    (
        "git.forward_hosts",
        "hosts whose repositories are forwarded: NAME or NAME=URL, e.g. [\"github.com\", \"git.corp.example=https://git.corp.example\"] (default [\"github.com\"]; http:// to a loopback address only)",
    ),
    (
        "git.push_branches",
        "branch patterns a forwarded push may update; * within a path segment, ** across (default [\"cci/**\"])",
    ),
    (
        "git.push_default_branch",
        "a forwarded push may update the default branch, main and master (default false)",
    ),
    (
        "git.push_tags",
        "a forwarded push may create tags (never move or delete them; default false)",
    ),
    (
        "git.push_ci",
        "a forwarded push may carry commits that change CI definitions (.github/workflows/, .github/actions/, .gitlab-ci.yml, .gitlab/), which CI runs with the repository's secrets (default false)",
    ),
    (
        "git.token_command",
        "a host command that prints the token forwarded pushes and fetches use (default: `gh auth token`, then git's credential helpers); $CCI_GIT_HOST names the host",
    ),
    (
        "network.mode",
        "restricted (default), allowlist, proxy or open",
    ),
    (
        "network.allowed_domains",
        "allowlist and proxy modes: domains, IP addresses or CIDRs; proxy mode also takes wildcards (*.example.com) and NAME:PORT",
    ),
    (
        "network.on_unknown",
        "proxy mode: deny (default) or ask: a request to a name no rule allows waits for `cci network approve`",
    ),
    (
        "network.refresh_interval_minutes",
        "allowlist mode: minutes between re-resolving (default 30)",
    ),
    (
        "network.dns_servers",
        "allowlist mode: DNS servers to resolve with (default: the host's)",
    ),
    (
        "network.block_private_networks",
        "restricted mode: block private networks (default true)",
    ),
    (
        "network.block_metadata_endpoint",
        "restricted mode: block the cloud metadata endpoint (default true)",
    ),
    ("limits.cpu", "CPUs a container may use (default: no limit)"),
    ("limits.memory", "memory, e.g. 4GiB or 50% (default 80%)"),
    (
        "limits.processes",
        "most processes in a container (default 4096)",
    ),
    (
        "limits.disk",
        "root disk size, e.g. 20GiB (default: no limit)",
    ),
    (
        "limits.max_duration",
        "stop a session after this long, e.g. 90m or 2h (default: never)",
    ),
    (
        "session.max_bytes",
        "bytes one saved state may hold (default 2 GiB)",
    ),
    (
        "session.max_files",
        "entries one saved state may hold (default 200000)",
    ),
    (
        "session.max_depth",
        "folder depth of one saved state (default 64)",
    ),
    (
        "session.record",
        "keep each session's terminal output with its record, for `cci session replay` (default false; the same as --record)",
    ),
    (
        "session.record_max_bytes",
        "the most bytes one recording keeps (default and most 16 MiB)",
    ),
    (
        "notify.command",
        "a host program run when a slot wants you, e.g. [\"notify-send\", \"cci\"]; the message is added as its last argument, the event as JSON on its input (user configuration only)",
    ),
    (
        "notify.webhook",
        "a URL each notification is POSTed to as JSON, from the host (user configuration only)",
    ),
    (
        "notify.bell",
        "ring the terminal bell in cci status and cci status --watch (default false)",
    ),
    (
        "notify.on",
        "which changes notify: waiting, finished (a turn ended), exited, stopped (default all)",
    ),
    (
        "snapshots.auto",
        "take a snapshot of a kept container before each of its sessions, named auto-TIME (default false; user configuration or a trusted .cci.toml)",
    ),
    (
        "snapshots.keep",
        "how many automatic snapshots each container keeps, the oldest removed first (default 5)",
    ),
    (
        "caches.enabled",
        "package caches shared between the workspace's sandboxes: npm, pip, go, cargo, apt (default none)",
    ),
    (
        "caches.dir",
        "the host folder the shared caches live in (default ~/.cache/cci)",
    ),
    (
        "caches.scope",
        "workspace (its slots and sessions share them; the default) or user (every workspace shares them)",
    ),
    (
        "caches.max_size",
        "the most one cache keeps, the oldest files removed first at each start (default 10GiB)",
    ),
    (
        "mounts",
        "[[mounts]] host = PATH, container = PATH, readonly = BOOL",
    ),
    (
        "repos",
        "[[repos]] path = PATH: a repository an isolated session clones into /workspace/NAME (the same as an entry of git.repos, which it adds to)",
    ),
    (
        "ports",
        "[[ports]] host = PORT, container = PORT, address = IP (default 127.0.0.1): a port the agent serves, reachable on the host (the same as --publish, which adds to them)",
    ),
    (
        "sockets",
        "[[sockets]] host = PATH, container = PATH: a host Unix socket (a local model server, a Docker socket you choose) forwarded into the container, connected to as you (never from an untrusted .cci.toml)",
    ),
];

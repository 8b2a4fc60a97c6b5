//! What a cci container looks like: image, workspace mount, marks, nesting.

use std::collections::HashMap;

use super::mounts::{Extras, WORKSPACE_MOUNT};
use super::names::Slot;
use super::profile::SANDBOX_PROFILE;
use super::workspace::Workspace;
use crate::incus::{ImageRef, InstanceCreate};

/// The `user.cci.*` config keys that mark a container as cci's. cci only
/// ever manages containers that carry [`keys::WORKSPACE`] (sandboxes), or
/// [`keys::KIND`] `container` (made by `cci container launch`).
pub mod keys {
    /// Canonical host path of the workspace.
    pub const WORKSPACE: &str = "user.cci.workspace";
    /// Slot number.
    pub const SLOT: &str = "user.cci.slot";
    /// `shell`, `run` or `container`.
    pub const KIND: &str = "user.cci.kind";
    /// `true` when the container is kept after its session.
    pub const PERSISTENT: &str = "user.cci.persistent";
    /// The image alias it was created from.
    pub const IMAGE: &str = "user.cci.image";
    /// The cci version that created it.
    pub const VERSION: &str = "user.cci.version";
    /// A token unique to the launch that created it, so a launch can tell its
    /// own half-made container from one another launch made under the same name.
    pub const LAUNCH: &str = "user.cci.launch";
    /// The id of the session running in it (also the agent's conversation id).
    pub const SESSION: &str = "user.cci.session";
    /// The agent the session runs (`claude`...), empty for `--debug` shells.
    pub const AGENT: &str = "user.cci.agent";
    /// Seconds after which the session is stopped (`limits.max_duration`).
    pub const MAX_DURATION: &str = "user.cci.max_duration";
    /// The user agents and commands run as inside: `UID:NAME`.
    pub const ACCOUNT: &str = "user.cci.account";
    /// The session whose agent state was last saved to the host.
    pub const SAVED: &str = "user.cci.saved";
    /// Why saving the current session's state failed (`ID: reason`).
    pub const SAVE_ERROR: &str = "user.cci.save_error";
    /// The isolated git session whose repository is at /workspace (its id;
    /// no host folder is mounted there).
    pub const GIT_SESSION: &str = "user.cci.git_session";
    /// The session's output is recorded, at most this many bytes kept.
    pub const RECORD: &str = "user.cci.record_max_bytes";
    /// The machine whose cci made it (see `orphans::machine_tag`): on a
    /// server several machines share, each judges only its own.
    pub const MACHINE: &str = "user.cci.machine";
}

// Kernel interfaces a sandbox goes without unless the configuration opts
// back in (`[incus] allow_syscalls`): owned by the configuration, which
// validates the names.
pub use crate::config::KERNEL_DENY;

/// The instance keys that shrink what a sandbox can reach of the host: its
/// own uid range, no guest API (`/dev/incus`), and the kernel interfaces of
/// [`KERNEL_DENY`] not named in `allow`.
fn hardening(allow: &[String]) -> Vec<(&'static str, String)> {
    let deny: Vec<String> = KERNEL_DENY
        .iter()
        .filter(|(name, _)| !allow.iter().any(|a| a == name))
        .flat_map(|(_, calls)| calls.iter().map(|c| format!("{c} errno 38")))
        .collect();
    let mut keys = vec![
        ("security.idmap.isolated", "true".to_string()),
        ("security.guestapi", "false".to_string()),
    ];
    if !deny.is_empty() {
        keys.push(("security.syscalls.deny", deny.join("\n")));
    }
    keys
}

/// What the container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An interactive agent session.
    Shell,
    /// A one-off `cci run` command.
    Run,
    /// A container `cci container launch` made: no workspace, no slot.
    Container,
}

impl Kind {
    /// Its name in [`keys::KIND`].
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Run => "run",
            Kind::Container => "container",
        }
    }
}

/// Everything needed to create a sandbox container, except its slot.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The workspace to mount.
    pub workspace: Workspace,
    /// Image alias.
    pub image: String,
    /// Session or one-off command.
    pub kind: Kind,
    /// Keep the container after the session.
    pub persistent: bool,
    /// Let Docker run inside (nesting).
    pub nesting: bool,
    /// Extra `user.cci.*` marks (session id, agent).
    pub marks: Vec<(&'static str, String)>,
    /// What it may reach on the network.
    pub network: crate::network::Policy,
    /// Limits and extra mounts.
    pub extras: Extras,
    /// The unprivileged user agents and commands run as (`code`, uid 1000,
    /// unless `[incus] code_user`/`code_uid` say otherwise).
    pub account: crate::config::Account,
}

impl SandboxSpec {
    /// The create request for `name` in `slot`.
    pub fn create_request(&self, name: &str, slot: Slot, launch_token: &str) -> InstanceCreate {
        let mut req = InstanceCreate::container(name, &ImageRef::Alias(self.image.clone()));
        req.target = self.extras.target.clone();
        let config = &mut req.config;
        config.insert(keys::WORKSPACE.into(), self.workspace.path_str().into());
        config.insert(keys::SLOT.into(), slot.to_string());
        config.insert(keys::KIND.into(), self.kind.as_str().into());
        config.insert(keys::PERSISTENT.into(), self.persistent.to_string());
        config.insert(keys::IMAGE.into(), self.image.clone());
        config.insert(keys::VERSION.into(), env!("CARGO_PKG_VERSION").into());
        config.insert(keys::LAUNCH.into(), launch_token.into());
        config.insert(keys::MACHINE.into(), super::orphans::machine_tag().into());
        let a = &self.account;
        config.insert(keys::ACCOUNT.into(), format!("{}:{}", a.uid, a.name));
        for (k, v) in &self.marks {
            config.insert((*k).into(), v.clone());
        }
        // Nesting is all Docker inside needs on a kernel with unprivileged
        // overlayfs (5.11+: whiteouts and `userxattr`). No syscall intercepts:
        // with one set, every exec registers a seccomp listener with the
        // container's monitor, and under parallel load that registration
        // fails after the command has started: the daemon reports "Failed to
        // retrieve PID" and cuts the command's output (3 of 64 runs in 16-way
        // rounds here, none of 976 without). They also have the daemon act
        // on the container's behalf.
        if self.nesting {
            config.insert("security.nesting".into(), "true".into());
        }
        let x = &self.extras;
        if x.copy {
            config.insert(super::copied::COPY_KEY.into(), "true".into());
        }
        for (key, value) in [
            ("limits.cpu", x.cpu.map(|c| c.to_string())),
            ("limits.memory", x.memory.clone()),
            ("limits.processes", x.processes.map(|p| p.to_string())),
            (
                keys::MAX_DURATION,
                x.max_duration.map(|d| d.as_secs().to_string()),
            ),
        ] {
            if let Some(v) = value {
                config.insert(key.into(), v);
            }
        }
        let dev = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // No shifted mounts: the workspace owner alone is mapped to the
        // account inside (see `idmap`), so container root is nobody on the host.
        if let Some(owner) = x.owner {
            config.insert(
                "raw.idmap".into(),
                super::idmap::raw_idmap(owner, &self.account),
            );
        }
        for (key, value) in hardening(&x.kernel_allow) {
            config.insert(key.into(), value);
        }
        // An isolated git session clones the repository inside instead.
        if !x.isolated {
            req.devices.insert(
                "workspace".into(),
                dev(&[
                    ("type", "disk"),
                    ("source", self.workspace.path_str()),
                    ("path", WORKSPACE_MOUNT),
                ]),
            );
        }
        for (i, m) in x.mounts.iter().enumerate() {
            let host = m.host.display().to_string();
            let mut d = dev(&[("type", "disk"), ("source", &host), ("path", &m.container)]);
            if m.readonly {
                d.insert("readonly".into(), "true".into());
            }
            req.devices.insert(format!("mount{i}"), d);
        }
        for (i, m) in x.protected.iter().enumerate().filter(|_| !x.isolated) {
            let host = m.host.display().to_string();
            // Not required: a protected path gone by the next start (the
            // agent removed it) mounts nothing rather than stop the start.
            let mut d = dev(&[
                ("type", "disk"),
                ("source", &host),
                ("path", &m.container),
                ("required", "false"),
            ]);
            if m.readonly {
                d.insert("readonly".into(), "true".into());
            }
            req.devices
                .insert(format!("{}{i}", super::protect::DEVICE_PREFIX), d);
        }
        // The SSH agent in, published ports out (see `forward`).
        let (devices, env) = super::forward::devices(
            x.ssh_agent.as_ref(),
            &x.ports,
            &x.sockets,
            x.forge.as_ref(),
            a,
        );
        req.devices.extend(devices);
        config.extend(env);
        config.extend(
            x.cache_env
                .iter()
                .map(|(k, v)| (format!("environment.{k}"), v.clone())),
        );
        for (pool, volume, path) in &x.volumes {
            req.devices.insert(
                format!("{}{volume}", super::caches::VOLUME_DEVICE_PREFIX),
                dev(&[
                    ("type", "disk"),
                    ("pool", pool),
                    ("source", volume),
                    ("path", path),
                ]),
            );
        }
        if let Some(pool) = &x.pool {
            let mut root = dev(&[("type", "disk"), ("path", "/"), ("pool", pool)]);
            if let Some(size) = &x.disk {
                root.insert("size".into(), size.clone());
            }
            req.devices.insert("root".into(), root);
        }
        req.profiles = vec!["default".into(), SANDBOX_PROFILE.into()];
        // A one-off command's container goes away by itself once stopped, even
        // when cci is killed before it can delete it.
        // (`cci run --persistent` keeps it: it is stopped, not deleted.)
        req.ephemeral = self.kind == Kind::Run && !self.persistent;
        req.start = true;
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_interfaces_can_be_allowed_back_by_name() {
        let deny = |allow: &[&str]| {
            let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
            hardening(&allow)
                .into_iter()
                .find(|(k, _)| *k == "security.syscalls.deny")
                .map(|(_, v)| v)
        };
        let all = deny(&[]).unwrap_or_default();
        assert!(all.contains("keyctl errno 38") && all.contains("bpf errno 38"));
        let some = deny(&["keyctl", "io_uring"]).unwrap_or_default();
        assert!(!some.contains("keyctl") && !some.contains("io_uring"));
        assert!(some.contains("perf_event_open errno 38"));
        let names: Vec<&str> = KERNEL_DENY.iter().map(|(n, _)| *n).collect();
        assert_eq!(deny(&names), None);
    }

    fn spec(kind: Kind, nesting: bool) -> SandboxSpec {
        SandboxSpec {
            workspace: Workspace::from_canonical("/p/my project".into()).unwrap(),
            image: "cci".into(),
            kind,
            persistent: false,
            nesting,
            marks: vec![(keys::SESSION, "s-1".into())],
            network: Default::default(),
            extras: Extras {
                owner: Some((1234, 1234)),
                ..Default::default()
            },
            account: crate::config::Effective::default().account,
        }
    }

    #[test]
    fn marks_mounts_and_nesting() {
        let req = spec(Kind::Run, true).create_request("cci-x-2", Slot::new(2).unwrap(), "t1");
        assert_eq!(req.config[keys::WORKSPACE], "/p/my project");
        assert_eq!(req.config[keys::SLOT], "2");
        assert_eq!(req.config[keys::KIND], "run");
        assert_eq!(req.config[keys::LAUNCH], "t1");
        assert_eq!(req.config[keys::SESSION], "s-1");
        assert_eq!(req.config["security.nesting"], "true");
        assert_eq!(req.devices["workspace"]["source"], "/p/my project");
        assert!(!req.devices["workspace"].contains_key("shift"));
        assert_eq!(req.config["raw.idmap"], "uid 1234 1000\ngid 1234 1000");
        assert_eq!(req.config["security.idmap.isolated"], "true");
        assert_eq!(req.config["security.guestapi"], "false");
        assert!(req.config["security.syscalls.deny"].contains("io_uring_setup errno 38"));
        assert!(req.ephemeral && req.start);

        let req = spec(Kind::Shell, false).create_request("cci-x-1", Slot::new(1).unwrap(), "t2");
        assert!(!req.config.contains_key("security.nesting"));
        assert!(!req.ephemeral);
    }
}

//! `cci health`: is this machine ready to run cci? Each check says what it saw
//! and, when it failed, the command that fixes it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use crate::host::Host;
use crate::incus::{self, Client};
use crate::network::PolicyBackend;

/// API extensions cci relies on.
pub const REQUIRED_EXTENSIONS: &[&str] = &[
    "container_exec_recording",
    "container_exec_signal_handling",
    "file_delete",
    "file_symlinks",
    "instance_create_start",
];

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something is missing or slow.
    Warn,
    /// cci cannot work until this is fixed.
    Fail,
    /// Not checked because an earlier check failed.
    Skip,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name (`daemon`, `storage`...).
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// The command (or step) that fixes a failed check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// All checks and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: &'static str,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    fn from_checks(checks: Vec<Check>) -> Self {
        let status = if checks.iter().any(|c| c.status == Status::Fail) {
            "unhealthy"
        } else if checks.iter().any(|c| c.status == Status::Warn) {
            "degraded"
        } else {
            "healthy"
        };
        Report { status, checks }
    }

    /// 0 healthy, 1 degraded, 2 unhealthy.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            "healthy" => 0,
            "degraded" => 1,
            _ => 2,
        }
    }
}

const START_FIX: &str = "start Incus: `sudo systemctl start incus` (without systemd: `sudo incusd --group incus-admin &`)";
/// How to join the daemon's admin group (`incus.group`).
fn group_fix(group: &str) -> String {
    format!("sudo usermod -aG {group} $USER, then log in again")
}

fn check_socket(path: &Path, group: &str) -> Check {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            return Check::new(
                "socket",
                Status::Fail,
                format!("no socket at {}", path.display()),
            )
            .fix(START_FIX);
        }
    };
    if !meta.file_type().is_socket() {
        return Check::new(
            "socket",
            Status::Fail,
            format!("{} is not a socket", path.display()),
        )
        .fix("set INCUS_SOCKET to the daemon's socket");
    }
    let desc = format!(
        "{} (mode {:o}, owner {}:{})",
        path.display(),
        meta.permissions().mode() & 0o777,
        meta.uid(),
        meta.gid()
    );
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Check::new("socket", Status::Ok, desc),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::new(
            "socket",
            Status::Fail,
            format!("{desc}: permission denied, your user is not in the Incus admin group"),
        )
        .fix(group_fix(group)),
        Err(e) => Check::new("socket", Status::Fail, format!("{desc}: {e}")).fix(START_FIX),
    }
}

async fn check_daemon(client: &Client, group: &str, checks: &mut Vec<Check>) -> bool {
    let info = match client.server().await {
        Ok(i) => i,
        Err(e) => {
            let fix = match e {
                incus::Error::SocketPermission { .. } => group_fix(group),
                _ => START_FIX.to_string(),
            };
            checks.push(Check::new("daemon", Status::Fail, e.to_string()).fix(fix));
            return false;
        }
    };
    if info.auth != "trusted" {
        checks.push(
            Check::new(
                "daemon",
                Status::Fail,
                format!("connected but not trusted (auth: {})", info.auth),
            )
            .fix(group_fix(group)),
        );
        return false;
    }
    checks.push(Check::new(
        "daemon",
        Status::Ok,
        format!(
            "Incus {} (API {}, {} extensions), kernel {}",
            info.environment.server_version,
            info.api_version,
            info.api_extensions.len(),
            info.environment.kernel_version
        ),
    ));
    let missing = info.missing_extensions(REQUIRED_EXTENSIONS);
    checks.push(if missing.is_empty() {
        Check::new("api", Status::Ok, "all required API extensions present")
    } else {
        Check::new(
            "api",
            Status::Fail,
            format!("missing API extensions: {}", missing.join(", ")),
        )
        .fix("upgrade Incus to 6.0 or later")
    });
    let idmap = info
        .environment
        .kernel_features
        .get("idmapped_mounts")
        .map(String::as_str);
    checks.push(match idmap {
        Some("true") => Check::new(
            "idmap",
            Status::Ok,
            "kernel supports idmapped mounts (shifted workspace)",
        ),
        _ => Check::new(
            "idmap",
            Status::Warn,
            "no idmapped mounts: workspace files will not keep your ownership",
        )
        .fix("use a kernel >= 5.12 with idmapped mount support on the workspace's file system"),
    });
    true
}

async fn check_setup(client: &Client, image: &str, checks: &mut Vec<Check>) {
    checks.push(match client.storage_pools().await {
        Ok(pools) if pools.is_empty() => Check::new("storage", Status::Fail, "no storage pool")
            .fix("incus storage create default btrfs"),
        Ok(pools) => {
            let names: Vec<_> = pools.iter().map(|p| format!("{} ({})", p.name, p.driver)).collect();
            if pools.iter().any(|p| p.is_copy_on_write()) {
                Check::new("storage", Status::Ok, names.join(", "))
            } else {
                Check::new("storage", Status::Warn, format!("{}: no copy-on-write pool, every launch copies the image", names.join(", ")))
                    .fix("incus storage create fast btrfs && incus profile device set default root pool=fast")
            }
        }
        Err(e) => Check::new("storage", Status::Fail, e.to_string()),
    });
    checks.push(match client.networks().await {
        Ok(nets) => {
            let bridges: Vec<_> = nets
                .iter()
                .filter(|n| n.managed && n.kind == "bridge")
                .map(|n| {
                    let addr = n
                        .config
                        .get("ipv4.address")
                        .map(String::as_str)
                        .unwrap_or("-");
                    format!("{} ({addr})", n.name)
                })
                .collect();
            if bridges.is_empty() {
                Check::new("network", Status::Fail, "no managed bridge")
                    .fix("incus network create incusbr0")
            } else {
                Check::new("network", Status::Ok, bridges.join(", "))
            }
        }
        Err(e) => Check::new("network", Status::Fail, e.to_string()),
    });
    checks.push(match client.profile("default").await {
        Ok((p, _)) => {
            let has = |t: &str| {
                p.devices
                    .values()
                    .any(|d| d.get("type").map(String::as_str) == Some(t))
            };
            match (has("disk"), has("nic")) {
                (true, true) => Check::new(
                    "profile",
                    Status::Ok,
                    "default profile has a root disk and a NIC",
                ),
                (false, _) => {
                    Check::new("profile", Status::Fail, "default profile has no root disk")
                        .fix("incus profile device add default root disk path=/ pool=default")
                }
                (true, false) => Check::new(
                    "profile",
                    Status::Fail,
                    "default profile has no network device",
                )
                .fix("incus profile device add default eth0 nic network=incusbr0 name=eth0"),
            }
        }
        Err(e) => Check::new("profile", Status::Fail, e.to_string()),
    });
    checks.push(match client.image_alias(image).await {
        Ok(a) => Check::new(
            "image",
            Status::Ok,
            format!("{image} -> {}", &a.target[..a.target.len().min(12)]),
        ),
        Err(e) if e.is_not_found() => Check::new(
            "image",
            Status::Warn,
            format!("image {image} not found"),
        )
        .fix(format!(
            "build it: `cci build --base IMAGE`, or point the alias at an image you have: `incus image alias create {image} FINGERPRINT`"
        )),
        Err(e) => Check::new("image", Status::Fail, e.to_string()),
    });
}

/// nft is usable, and every guarded container has its rules (none left
/// behind by containers that are gone).
/// A remote's network policy is its own daemon's: restricted mode through
/// Incus network ACLs, which need its nftables driver.
async fn remote_firewall(client: &Client, remote: &str, reachable: bool) -> Check {
    if !reachable {
        return Check::new("firewall", Status::Skip, "daemon not reachable");
    }
    let driver = match client.server().await {
        Ok(info) => info.environment.firewall,
        Err(e) => return Check::new("firewall", Status::Warn, e.to_string()),
    };
    if driver == "nftables" {
        Check::new(
            "firewall",
            Status::Ok,
            format!(
                "remote {remote}: restricted mode through Incus network ACLs (nftables); allowlist and proxy modes are refused there"
            ),
        )
    } else {
        Check::new(
            "firewall",
            Status::Warn,
            format!("remote {remote} filters with {driver:?}: Incus applies network ACLs only with nftables, so only --network open works there"),
        )
        .fix("on the server, use Incus's nftables firewall driver")
    }
}

async fn check_firewall(fw: &dyn PolicyBackend, client: Option<&Client>) -> Check {
    use crate::network;
    let state = match fw.state() {
        Ok(s) => s,
        Err(e) => {
            return Check::new(
                "firewall",
                Status::Warn,
                format!("network isolation unavailable, only --network open works: {e}"),
            )
            .fix("install nftables and run cci as root (or allow `sudo -n nft`)");
        }
    };
    let Some(Ok(instances)) = (match client {
        Some(c) => Some(c.instances("", false).await),
        None => None,
    }) else {
        return Check::new("firewall", Status::Ok, "nft usable");
    };
    let guarded: Vec<_> = instances
        .iter()
        .filter(|i| i.config.contains_key(network::keys::MODE))
        .filter_map(|i| Some((i, network::port_of(i)?)))
        .collect();
    let missing: Vec<&str> = guarded
        .iter()
        .filter(|(i, p)| !state.ports.contains_key(p) || (i.is_running() && !state.tables))
        .map(|(i, _)| i.name.as_str())
        .collect();
    let orphans = state
        .ports
        .keys()
        .filter(|p| !guarded.iter().any(|(_, q)| q == *p))
        .count();
    if !missing.is_empty() {
        return Check::new(
            "firewall",
            Status::Fail,
            format!("rules missing for: {}", missing.join(", ")),
        )
        .fix("cci network repair (puts them back, or stops the container)");
    }
    if orphans > 0 {
        return Check::new(
            "firewall",
            Status::Warn,
            format!("{orphans} rule set(s) of containers that are gone"),
        )
        .fix("cci clean --orphans");
    }
    Check::new(
        "firewall",
        Status::Ok,
        format!(
            "nft usable; {} container(s) guarded, rules complete",
            guarded.len()
        ),
    )
}

/// Run every check against `host`, expecting image `image`.
pub async fn run(host: &Host, image: &str) -> Report {
    let client = &host.client;
    let group = &host.config.group;
    let mut checks = Vec::new();
    match client.endpoint() {
        incus::Endpoint::Unix(socket) => checks.push(check_socket(socket, group)),
        incus::Endpoint::Https(h) => checks.push(Check::new(
            "remote",
            Status::Ok,
            format!("remote {} at {}", h.remote, h.url()),
        )),
    }
    let reachable = check_daemon(client, group, &mut checks).await;
    if reachable {
        check_setup(client, image, &mut checks).await;
    } else {
        for name in ["storage", "network", "profile", "image"] {
            checks.push(Check::new(name, Status::Skip, "daemon not reachable"));
        }
    }
    match client.remote() {
        None => checks.push(check_firewall(host.policy(), reachable.then_some(client)).await),
        Some(remote) => checks.push(remote_firewall(client, remote, reachable).await),
    }
    Report::from_checks(checks)
}

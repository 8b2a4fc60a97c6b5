//! What cci forwards between the host and a sandbox through Incus proxy
//! devices: the host's SSH agent into it (`--ssh-agent`), and ports it
//! serves out to the host (`--publish`, `[[ports]]`). Both are set when the
//! container is made and brought in line with each later session's wish
//! on a kept container ([`reconcile`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{Account, PortSpec};
use crate::incus::{self, Client, Instance};

/// `[ADDRESS:]HOST_PORT:CONTAINER_PORT` (an IPv6 address in brackets);
/// the address defaults to 127.0.0.1.
pub fn parse_publish(arg: &str) -> Result<crate::config::PortSpec, String> {
    let bad = || format!("{arg:?} is not [ADDRESS:]HOST_PORT:CONTAINER_PORT");
    let (rest, container) = arg.rsplit_once(':').ok_or_else(bad)?;
    let (address, host) = match rest.rsplit_once(':') {
        Some((a, h)) => {
            let a = a
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(a);
            let ip = a
                .parse()
                .map_err(|_| format!("{arg:?}: {a:?} is not an IP address"))?;
            (ip, h)
        }
        None => (std::net::Ipv4Addr::LOCALHOST.into(), rest),
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{arg:?}: {p:?} is not a port (1-65535)")),
    };
    Ok(crate::config::PortSpec {
        address,
        host: port(host)?,
        container: port(container)?,
    })
}

/// Where the forwarded SSH agent appears inside: under /var/lib, which
/// exists before the container boots and which boot does not mount over
/// or empty (as it does /run and /tmp).
pub const SSH_AGENT_SOCKET: &str = "/var/lib/cci-ssh-agent.sock";

/// The host's SSH agent socket and its owner (the identity the daemon's
/// forwarder connects with: no more than the agent's own user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAgent {
    /// The socket (`$SSH_AUTH_SOCK`, symlinks resolved).
    pub socket: PathBuf,
    /// Its owner's uid and gid.
    pub owner: (u32, u32),
}

/// The device that forwards it, and the config key that tells processes.
pub const SSH_AGENT_DEVICE: &str = "ssh-agent";
/// (see [`SSH_AGENT_DEVICE`])
pub const SSH_AGENT_ENV: &str = "environment.SSH_AUTH_SOCK";

impl SshAgent {
    /// The Incus device: a socket only `a` (and root) may use inside; the
    /// daemon's forwarder connects as the agent's owner.
    pub fn device(&self, a: &Account) -> Device {
        [
            ("type", "proxy".to_string()),
            ("bind", "container".into()),
            ("connect", format!("unix:{}", self.socket.display())),
            ("listen", format!("unix:{SSH_AGENT_SOCKET}")),
            ("uid", a.uid.to_string()),
            ("gid", a.gid.to_string()),
            ("mode", "0600".into()),
            ("security.uid", self.owner.0.to_string()),
            ("security.gid", self.owner.1.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The agent `$SSH_AUTH_SOCK` names, checked: set, a socket, and
    /// owned by the user running cci (or root).
    pub fn from_env() -> Result<SshAgent, String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let hint = "start one (`eval $(ssh-agent)`) and add your key (`ssh-add`)";
        let raw = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!("--ssh-agent: SSH_AUTH_SOCK is not set: no SSH agent runs; {hint}")
            })?;
        let socket = std::fs::canonicalize(&raw).map_err(|e| {
            format!(
                "--ssh-agent: SSH_AUTH_SOCK={}: {e}; {hint}",
                Path::new(&raw).display()
            )
        })?;
        let meta = std::fs::metadata(&socket)
            .map_err(|e| format!("--ssh-agent: {}: {e}", socket.display()))?;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "--ssh-agent: SSH_AUTH_SOCK={} is not a socket",
                socket.display()
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && me != 0 {
            return Err(format!(
                "--ssh-agent: {} belongs to uid {}, not to you: not forwarded",
                socket.display(),
                meta.uid()
            ));
        }
        Ok(SshAgent {
            socket,
            owner: (meta.uid(), meta.gid()),
        })
    }
}

/// Device names of forwarded host sockets start so.
pub const SOCKET_PREFIX: &str = "sock-";

/// A host Unix socket forwarded in (`[[sockets]]`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSocket {
    /// The host socket, symlinks resolved.
    pub socket: PathBuf,
    /// Where it appears inside.
    pub container: String,
    /// Who the daemon's forwarder connects as: the user running cci, with
    /// the socket's group when the user is in it.
    pub connect_as: (u32, u32),
}

impl HostSocket {
    /// `spec` checked now: the host path is a socket. The forwarder will
    /// connect as the user running cci (never with more rights).
    pub fn from_spec(spec: &crate::config::SocketSpec) -> Result<HostSocket, String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let shown = spec.host.display();
        let socket =
            std::fs::canonicalize(&spec.host).map_err(|e| format!("[[sockets]] {shown}: {e}"))?;
        let meta = std::fs::metadata(&socket).map_err(|e| format!("[[sockets]] {shown}: {e}"))?;
        if !meta.file_type().is_socket() {
            return Err(format!("[[sockets]] {shown} is not a Unix socket"));
        }
        // SAFETY: these have no preconditions and cannot fail.
        let (uid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let gid = if in_group(meta.gid()) {
            meta.gid()
        } else {
            egid
        };
        Ok(HostSocket {
            socket,
            container: spec.container.clone(),
            connect_as: (uid, gid),
        })
    }

    /// The device's name: fixed by where the socket appears inside.
    pub fn device_name(&self) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.container.as_bytes());
        let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{SOCKET_PREFIX}{hex}")
    }

    /// The Incus device: a socket inside for the session user (and root),
    /// which the daemon's forwarder connects to the host socket as
    /// [`HostSocket::connect_as`].
    pub fn device(&self, a: &Account) -> Device {
        device(&[
            ("type", "proxy".into()),
            ("bind", "container".into()),
            ("connect", format!("unix:{}", self.socket.display())),
            ("listen", format!("unix:{}", self.container)),
            ("uid", a.uid.to_string()),
            ("gid", a.gid.to_string()),
            ("mode", "0660".into()),
            ("security.uid", self.connect_as.0.to_string()),
            ("security.gid", self.connect_as.1.to_string()),
        ])
    }
}

/// Whether the calling process is in group `gid` (its own or a supplementary one).
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 1024];
    // SAFETY: the buffer holds `groups.len()` entries.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// Device names of published ports start so.
pub const PORT_PREFIX: &str = "port-";

type Device = HashMap<String, String>;

fn device(pairs: &[(&str, String)]) -> Device {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The device publishing `p`: the daemon listens on the host address and
/// connects to the container's loopback.
pub fn port_device(p: &PortSpec) -> (String, Device) {
    let listen = std::net::SocketAddr::new(p.address, p.host);
    let name = format!("{PORT_PREFIX}{}-{}", p.host, p.address).replace([':', '.'], "_");
    let dev = device(&[
        ("type", "proxy".into()),
        ("bind", "host".into()),
        ("listen", format!("tcp:{listen}")),
        ("connect", format!("tcp:127.0.0.1:{}", p.container)),
    ]);
    (name, dev)
}

/// Every forwarding device and config key a sandbox with `ssh_agent` and
/// `ports` gets.
pub fn devices(
    ssh_agent: Option<&SshAgent>,
    ports: &[PortSpec],
    sockets: &[HostSocket],
    forge: Option<&crate::forge::Forward>,
    a: &Account,
) -> (HashMap<String, Device>, HashMap<String, String>) {
    let mut devices: HashMap<String, Device> = ports.iter().map(port_device).collect();
    devices.extend(sockets.iter().map(|s| (s.device_name(), s.device(a))));
    let mut config = HashMap::new();
    if let Some(f) = forge {
        match f.devices() {
            Ok(d) => {
                devices.extend(d);
                config.extend(f.env());
            }
            Err(e) => tracing::warn!("git forwarding: {e}"),
        }
    }
    if let Some(agent) = ssh_agent {
        devices.insert(SSH_AGENT_DEVICE.into(), agent.device(a));
        config.insert(SSH_AGENT_ENV.into(), SSH_AGENT_SOCKET.into());
    }
    (devices, config)
}

/// Whether the device `name` is one cci made here: by name *and* shape (a
/// proxy device as [`devices`] makes them), never a device of the user's or
/// a guarded NIC that happens to share the name.
fn ours(name: &str, d: &Device) -> bool {
    let is = |k: &str, v: &str| d.get(k).map(String::as_str) == Some(v);
    if name == crate::forge::GH_DEVICE {
        return is("type", "disk")
            && is("path", crate::forge::GH_CONFIG_DIR)
            && is("readonly", "true");
    }
    is("type", "proxy")
        && if name == crate::forge::DEVICE {
            is("bind", "container")
                && is("listen", &format!("tcp:127.0.0.1:{}", crate::forge::PORT))
        } else if name == SSH_AGENT_DEVICE {
            is("bind", "container") && is("listen", &format!("unix:{SSH_AGENT_SOCKET}"))
        } else if name.starts_with(SOCKET_PREFIX) {
            // As HostSocket::device makes them: the name is the hash of
            // where it listens, and it connects as someone named.
            is("bind", "container")
                && d.get("listen").is_some_and(|l| {
                    l.strip_prefix("unix:").is_some_and(|path| {
                        HostSocket {
                            socket: PathBuf::new(),
                            container: path.to_string(),
                            connect_as: (0, 0),
                        }
                        .device_name()
                            == name
                    })
                })
                && d.get("connect").is_some_and(|c| c.starts_with("unix:"))
                && d.contains_key("security.uid")
        } else {
            name.starts_with(PORT_PREFIX)
                && is("bind", "host")
                && d.get("connect")
                    .is_some_and(|c| c.starts_with("tcp:127.0.0.1:"))
        }
}

/// Remove every forwarding cci made from `name` (its session is over, or
/// it is started for something else than a session that asked for them):
/// nothing forwarded outlives the session that asked.
pub async fn strip(client: &Client, name: &str) -> incus::Result<()> {
    let (instance, etag) = client.instance(name).await?;
    apply(client, &instance, etag, HashMap::new(), HashMap::new()).await
}

/// A device that disables the one of the same name a profile may define:
/// what a device of ours becomes when it goes. Removing it instead would
/// let such a profile device (unvetted) take its place, at once on a
/// running container.
fn masked() -> Device {
    device(&[("type", "none".into())])
}

/// Make `instance`'s forwarding exactly `want` (devices) and `want_config`
/// (`etag`: as it was read).
async fn apply(
    client: &Client,
    instance: &Instance,
    etag: Option<String>,
    want: HashMap<String, Device>,
    want_config: HashMap<String, String>,
) -> incus::Result<()> {
    let name = &instance.name;
    let mut patch_devices: serde_json::Map<String, Value> = instance
        .devices
        .iter()
        .filter(|(k, d)| ours(k, d) && !want.contains_key(*k))
        .map(|(k, _)| (k.clone(), json!(masked())))
        .collect();
    patch_devices.extend(
        want.iter()
            .filter(|(k, d)| instance.devices.get(*k) != Some(d))
            .map(|(k, d)| (k.clone(), json!(d))),
    );
    let config_missing = want_config
        .iter()
        .any(|(k, v)| instance.config.get(k) != Some(v));
    if !patch_devices.is_empty() || config_missing {
        let patch = json!({"devices": patch_devices, "config": want_config});
        client
            .update_instance(name, &patch, etag.as_deref())
            .await?;
    }
    // (A PATCH cannot unset a key.)
    let unset: Vec<&str> = instance
        .config
        .iter()
        .filter(|(k, v)| *k == SSH_AGENT_ENV || crate::forge::owned_env(k, v))
        .filter(|(k, _)| !want_config.contains_key(*k))
        .map(|(k, _)| k.as_str())
        .collect();
    if !unset.is_empty() {
        client.unset_config(name, &unset).await?;
    }
    Ok(())
}

/// Check that each port can be listened on now (a clear error rather than
/// a container that does not start), except those `held` (the container
/// itself listens there already).
pub fn check_free(ports: &[PortSpec], held: &[String]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for p in ports {
        let at = std::net::SocketAddr::new(p.address, p.host);
        if !seen.insert(at) {
            return Err(format!("host port {at} is published twice"));
        }
        if held.contains(&port_device(p).0) {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind(at) {
            return Err(match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "cannot publish on {at}: the port is taken (another program or cci container listens there; `ss -ltnp` tells which)"
                ),
                _ => format!("cannot publish on {at}: {e}"),
            });
        }
    }
    Ok(())
}

/// Bring a kept container's forwarding in line with this session's
/// wish: missing or changed devices added (to a running container too),
/// ones not asked for disabled — a session that did not ask for the SSH
/// agent never gets it, a port not asked for is released.
pub async fn reconcile(
    client: &Client,
    name: &str,
    ssh_agent: Option<&SshAgent>,
    ports: &[PortSpec],
    sockets: &[HostSocket],
    forge: Option<&crate::forge::Forward>,
    a: &Account,
) -> Result<(), Error> {
    let (instance, etag) = client.instance(name).await?;
    // Ports the running container listens on already are not in the way.
    let held: Vec<String> = instance
        .devices
        .iter()
        .filter(|(k, d)| instance.is_running() && k.starts_with(PORT_PREFIX) && ours(k, d))
        .map(|(k, _)| k.clone())
        .collect();
    check_free(ports, &held).map_err(Error::Usage)?;
    let (want, want_config) = devices(ssh_agent, ports, sockets, forge, a);
    apply(client, &instance, etag, want, want_config).await?;
    Ok(())
}

/// Why forwarding could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port cannot be published (a usage error).
    #[error("{0}")]
    Usage(String),
    /// The daemon failed.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_socket_is_checked_and_connected_to_as_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let spec = |host: &Path| crate::config::SocketSpec {
            host: host.to_path_buf(),
            container: "/var/lib/s.sock".into(),
        };
        let s = HostSocket::from_spec(&spec(&path)).unwrap();
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(s.connect_as, (uid, gid));
        let a = Account::new(1000, "code");
        let d = s.device(&a);
        assert_eq!(d["security.uid"], uid.to_string());
        assert_eq!(d["listen"], "unix:/var/lib/s.sock");
        assert_eq!(d["uid"], "1000");
        assert!(ours(&s.device_name(), &d));
        // Not a socket, or missing: said before anything is made.
        let err = HostSocket::from_spec(&spec(dir.path())).unwrap_err();
        assert!(err.contains("not a Unix socket"), "{err}");
        assert!(HostSocket::from_spec(&spec(&dir.path().join("no"))).is_err());
        // A socket the user is not in the group of: connected to with the
        // user's own group, never the socket's.
        assert!(!in_group(u32::MAX - 7));
    }

    #[test]
    fn publish_takes_an_optional_address_and_two_ports() {
        let p = parse_publish("8080:3000").unwrap();
        assert_eq!(
            (p.address.to_string(), p.host, p.container),
            ("127.0.0.1".into(), 8080, 3000)
        );
        let p = parse_publish("0.0.0.0:80:8000").unwrap();
        assert_eq!((p.address.to_string(), p.host), ("0.0.0.0".into(), 80));
        let p = parse_publish("[::1]:8080:3000").unwrap();
        assert_eq!(p.address.to_string(), "::1");
        for bad in ["8080", "0:3000", "8080:70000", "x:1:2", "a:b", ":1", "1:"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_device_listens_on_the_host_and_connects_to_the_loopback() {
        let p = parse_publish("8080:3000").unwrap();
        let (name, dev) = port_device(&p);
        assert_eq!(name, "port-8080-127_0_0_1");
        assert_eq!(dev["listen"], "tcp:127.0.0.1:8080");
        assert_eq!(dev["connect"], "tcp:127.0.0.1:3000");
        assert_eq!(dev["bind"], "host");
    }

    #[test]
    fn a_taken_port_or_one_given_twice_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let p = parse_publish(&format!("{port}:80")).unwrap();
        let e = check_free(&[p], &[]).unwrap_err();
        assert!(e.contains("taken"), "{e}");
        // The container's own listener there is not in the way.
        assert_eq!(check_free(&[p], &[port_device(&p).0]), Ok(()));
        let e = check_free(&[p, p], &[port_device(&p).0]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}

//! Ready at hand-over: a container is given to the user's command only once
//! its guarded NIC has its addresses (IPv4, and global IPv6 where the bridge
//! has IPv6), so a first `curl`, `git clone` or `npm install` does not race
//! the boot. The daemon's view of the NIC is polled (cheap: no exec); the
//! address comes from the container's own DHCP client, which systemd starts
//! after the local file systems (`/tmp` included) are mounted.

use std::time::{Duration, Instant};

use super::Attachment;
use crate::incus::{self, Client, InstanceState, InstanceStatus};

/// How long a container may take to come up before cci gives up on it.
pub const BOUND: Duration = Duration::from_secs(45);

/// [`BOUND`], or `CCI_READY_TIMEOUT` (seconds, fractions allowed) for a
/// slow machine. `main` refuses a bad value with [`check_env`] before any
/// command runs, so here it cannot be one.
pub fn bound() -> Duration {
    parse_env().ok().flatten().unwrap_or(BOUND)
}

/// A clear error when `CCI_READY_TIMEOUT` is set to something that is not a
/// number of seconds from 0 to 3600.
pub fn check_env() -> Result<(), String> {
    parse_env().map(|_| ())
}

fn parse_env() -> Result<Option<Duration>, String> {
    let Ok(v) = std::env::var("CCI_READY_TIMEOUT") else {
        return Ok(None);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        _ => Err(format!(
            "CCI_READY_TIMEOUT={v:?} is not a number of seconds from 0 to 3600"
        )),
    }
}

/// The container did not come up in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "{container} was not ready after {} s: {what}{}\n(run with --no-wait to hand it over anyway)",
    after.as_secs(),
    console_tail(console)
)]
pub struct NotReady {
    /// The container.
    pub container: String,
    /// What did not come up.
    pub what: String,
    /// How long cci waited.
    pub after: Duration,
    /// The last lines of its console log (escaped), when there were any.
    pub console: Vec<String>,
}

/// How many console lines a [`NotReady`] quotes.
const CONSOLE_LINES: usize = 12;

fn console_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nthe end of its console log:");
    for l in lines {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

/// The last [`CONSOLE_LINES`] non-empty lines of a console log, each made
/// harmless to print (the container wrote them) and cut to 200 characters.
pub fn tail_of(log: &str) -> Vec<String> {
    let lines: Vec<String> = log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l: String = l.chars().take(200).collect();
            crate::terminal::printable(&l)
        })
        .collect();
    lines[lines.len().saturating_sub(CONSOLE_LINES)..].to_vec()
}

/// What a container needs before it is ready, from its attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The NIC's name inside (`eth0`); `None`: no NIC, nothing to wait for.
    pub interface: Option<String>,
    /// A global IPv6 address too.
    pub v6: bool,
}

impl Attachment {
    /// What a container with this attachment must have before it is ready.
    pub fn readiness(&self) -> Want {
        Want {
            interface: self
                .nic
                .as_ref()
                .map(|(key, dev)| dev.get("name").cloned().unwrap_or_else(|| key.clone())),
            v6: self.bridge.v6.is_some(),
        }
    }
}

/// What the existing guarded container `name` must have before it is ready:
/// its guarded NIC's address, and IPv6 when that NIC's bridge has it.
pub async fn want_of(client: &Client, name: &str) -> Result<Want, incus::Error> {
    let (instance, _) = client.instance(name).await?;
    let Some(port) = super::port_of(&instance) else {
        return Ok(Want {
            interface: None,
            v6: false,
        });
    };
    let Some((key, dev)) = instance
        .expanded_devices
        .iter()
        .find(|(_, d)| d.get("host_name").map(String::as_str) == Some(port.as_str()))
    else {
        return Ok(Want {
            interface: None,
            v6: false,
        });
    };
    let network = dev.get("network").or_else(|| dev.get("parent"));
    let v6 = match network {
        Some(n) => super::guard::bridge_of(&client.network(n).await?.config)
            .v6
            .is_some(),
        None => false,
    };
    Ok(Want {
        interface: Some(dev.get("name").cloned().unwrap_or_else(|| key.clone())),
        v6,
    })
}

/// What is still missing in `state` (`None`: ready).
pub fn missing(state: &InstanceState, want: &Want) -> Option<String> {
    let iface = want.interface.as_deref()?;
    if state.status != InstanceStatus::Running {
        return Some(format!("it is {}", state.status.as_str().to_lowercase()));
    }
    let nic = state.network.as_ref().and_then(|n| n.get(iface));
    let has = |family: &str| {
        nic.is_some_and(|n| {
            n.addresses
                .iter()
                .any(|a| a.family == family && a.scope == "global")
        })
    };
    if !has("inet") {
        return Some(format!("{iface} has no IPv4 address (no DHCP lease)"));
    }
    if want.v6 && !has("inet6") {
        return Some(format!("{iface} has no global IPv6 address"));
    }
    None
}

/// What is missing for name lookups in `name` once its NIC is up (`None`:
/// nothing): its `/etc/resolv.conf`, which a local resolver (systemd-resolved's
/// stub at 127.0.0.53) writes once it is up and answering — a first `git
/// clone` before that fails to resolve. A static file is there at once.
async fn resolver_missing(client: &Client, name: &str) -> Option<String> {
    const CONF: &str = "/etc/resolv.conf";
    let target = match client.read_file(name, CONF).await {
        Ok((info, body)) if info.kind == incus::FileKind::Symlink => {
            String::from_utf8_lossy(&body).trim().to_string()
        }
        Ok(_) => return None,
        Err(e) if e.is_not_found() => return Some(format!("{CONF} is not there yet")),
        // Not cci's to judge (an image without one is its own business).
        Err(_) => return None,
    };
    let target = if target.starts_with('/') {
        target
    } else {
        format!("/etc/{target}")
    };
    match client.stat_file(name, &target).await {
        Err(e) if e.is_not_found() => Some(format!(
            "{CONF} points at {target}, which is not there yet (the resolver has not started)"
        )),
        _ => None,
    }
}

/// Wait (at most `bound`) until `name` has what `want` says.
pub async fn wait(
    client: &Client,
    name: &str,
    want: &Want,
    bound: Duration,
) -> Result<Result<(), NotReady>, incus::Error> {
    if want.interface.is_none() {
        return Ok(Ok(()));
    }
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let state = client.instance_state(name).await?;
        let what = match missing(&state, want) {
            Some(what) => what,
            None => match resolver_missing(client, name).await {
                None => {
                    // A proxy-mode container's network is up once the
                    // proxy knows it.
                    if let Err(e) = super::egress::register(client, name).await {
                        return Ok(Err(NotReady {
                            container: name.into(),
                            what: e.to_string(),
                            after: start.elapsed(),
                            console: Vec::new(),
                        }));
                    }
                    return Ok(Ok(()));
                }
                Some(what) => what,
            },
        };
        if start.elapsed() >= bound || state.status == InstanceStatus::Stopped {
            let console = match client.console_log(name).await {
                Ok(log) => tail_of(&log),
                Err(e) => vec![format!("(could not read it: {e})")],
            };
            return Ok(Err(NotReady {
                container: name.into(),
                what,
                after: start.elapsed(),
                console,
            }));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incus::instances::{NetworkAddress, NetworkState};

    fn state(addrs: &[(&str, &str)]) -> InstanceState {
        let nic = NetworkState {
            addresses: addrs
                .iter()
                .map(|(f, s)| NetworkAddress {
                    family: f.to_string(),
                    address: "x".into(),
                    scope: s.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        InstanceState {
            status: "Running".into(),
            pid: 1,
            network: Some([("eth0".to_string(), nic)].into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_console_tail_is_short_and_harmless() {
        let log: String = (0..30).map(|i| format!("line {i}\r\n\n")).collect();
        let tail = tail_of(&format!("{log}\x1b]0;owned\x07 evil\n"));
        assert_eq!(tail.len(), CONSOLE_LINES);
        assert_eq!(tail[0], "line 19");
        assert!(
            !tail[11].contains('\x1b') && tail[11].contains("evil"),
            "{tail:?}"
        );
        let e = NotReady {
            container: "c".into(),
            what: "eth0 has no IPv4 address (no DHCP lease)".into(),
            after: Duration::from_secs(45),
            console: tail,
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("c was not ready after 45 s: eth0 has no IPv4"),
            "{msg}"
        );
        assert!(msg.contains("console log:\n  | line 19\n"), "{msg}");
        assert!(msg.ends_with("--no-wait to hand it over anyway)"), "{msg}");
    }

    #[test]
    fn ready_once_the_addresses_are_there() {
        let v4 = Want {
            interface: Some("eth0".into()),
            v6: false,
        };
        let both = Want {
            v6: true,
            ..v4.clone()
        };
        assert!(
            missing(&state(&[("inet6", "link")]), &v4)
                .unwrap()
                .contains("no IPv4")
        );
        assert_eq!(missing(&state(&[("inet", "global")]), &v4), None);
        assert!(
            missing(&state(&[("inet", "global"), ("inet6", "link")]), &both)
                .unwrap()
                .contains("IPv6")
        );
        assert_eq!(
            missing(&state(&[("inet", "global"), ("inet6", "global")]), &both),
            None
        );
        let none = Want {
            interface: None,
            v6: true,
        };
        assert_eq!(missing(&InstanceState::default(), &none), None);
        let mut stopped = state(&[]);
        stopped.status = "Stopped".into();
        assert_eq!(missing(&stopped, &v4).as_deref(), Some("it is stopped"));
    }
}

//! Proxy mode's host side: cci's filtering proxy ([`crate::proxy`]) as a
//! background process of its own, like the watcher — started when a
//! proxy-mode container needs it, started again by the watcher when it is
//! gone (meanwhile its containers reach nothing: the firewall lets them
//! reach only its port), and gone itself once no proxy-mode container is
//! left. It learns each container's addresses and rules from the daemon
//! (every few seconds, and at once when cci hands a container over), so
//! the daemon's record is the one truth, as for the firewall.
//!
//! Files (all private, below `~/.cci`): `network/proxy.sock` (control),
//! `network/proxy-state.json` (the live table), `network/proxy.lock`,
//! `logs/network-decisions.jsonl` (one line per connection) and
//! `logs/network-proxy.log` (its own diagnostics).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::Error;
use super::policy::{Mode, Policy};
use super::port::port_of;
use super::rules::Bridge;
use crate::incus::{Client, Instance};
use crate::proxy::{OnUnknown, Request, Response};

/// The port the proxy listens on, on each bridge address.
pub const PORT: u16 = 47128;

/// How often the proxy reads the daemon's record again.
const SYNC: Duration = Duration::from_secs(2);

/// The proxy stops after this long with no proxy-mode container.
const IDLE: Duration = Duration::from_secs(60);

fn network_dir() -> std::io::Result<PathBuf> {
    crate::state::dir("network")
}

/// The control socket.
pub fn control_socket() -> std::io::Result<PathBuf> {
    Ok(network_dir()?.join("proxy.sock"))
}

/// The decision log (`cci network log`).
pub fn decisions_log() -> std::io::Result<PathBuf> {
    Ok(crate::state::dir("logs")?.join("network-decisions.jsonl"))
}

fn lock_file() -> std::io::Result<std::fs::File> {
    crate::state::lock_file("network", "proxy.lock")
}

/// Whether this user's proxy runs (it holds the lock).
pub fn proxy_running() -> bool {
    crate::state::lock_held("network", "proxy.lock")
}

/// Where the proxy listens for containers on `bridge`.
pub fn listen_on(bridge: &Bridge) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if let Some(v4) = bridge.v4 {
        out.push(SocketAddr::new(IpAddr::V4(v4), PORT));
    }
    if let Some(v6) = bridge.v6 {
        out.push(SocketAddr::new(IpAddr::V6(v6), PORT));
    }
    out
}

/// The proxy's address as a container on `bridge` is told it.
pub fn proxy_url(bridge: &Bridge) -> Option<String> {
    match (bridge.v4, bridge.v6) {
        (Some(v4), _) => Some(format!("http://{v4}:{PORT}")),
        (None, Some(v6)) => Some(format!("http://[{v6}]:{PORT}")),
        (None, None) => None,
    }
}

/// The instance config (`environment.*`) that points a proxy-mode
/// container's tools at the proxy: the variables curl, git, pip, npm,
/// apt and most HTTP libraries read, both spellings.
pub fn environment(bridge: &Bridge) -> Vec<(String, String)> {
    let Some(url) = proxy_url(bridge) else {
        return Vec::new();
    };
    let no_proxy = "localhost,127.0.0.1,::1".to_string();
    [
        ("HTTP_PROXY", url.clone()),
        ("HTTPS_PROXY", url.clone()),
        ("http_proxy", url.clone()),
        ("https_proxy", url.clone()),
        ("NO_PROXY", no_proxy.clone()),
        ("no_proxy", no_proxy),
        ("npm_config_proxy", url.clone()),
        ("npm_config_https_proxy", url.clone()),
        ("PIP_PROXY", url),
    ]
    .into_iter()
    .map(|(k, v)| (format!("environment.{k}"), v))
    .collect()
}

/// apt ignores the environment under sudo: its own setting, written into
/// a proxy-mode container before it starts.
pub fn apt_conf(bridge: &Bridge) -> Option<String> {
    let url = proxy_url(bridge)?;
    Some(format!(
        "// Written by cci: this container reaches the network only through cci's proxy.\nAcquire::http::Proxy \"{url}\";\nAcquire::https::Proxy \"{url}\";\n"
    ))
}

/// Where [`apt_conf`] goes.
pub const APT_CONF: &str = "/etc/apt/apt.conf.d/90cci-proxy";

/// Start the proxy in the background for `listen` unless one runs; wait
/// (briefly) until it answers.
pub async fn ensure_proxy(listen: &[SocketAddr], dns: &[IpAddr]) -> Result<(), Error> {
    if !proxy_running() {
        spawn(listen, dns).map_err(|e| Error::Proxy(format!("cannot start it: {e}")))?;
    }
    let socket = control_socket().map_err(|e| Error::Proxy(e.to_string()))?;
    let start = std::time::Instant::now();
    loop {
        if let Ok(Response::Ok) = crate::proxy::request(&socket, &Request::Ping).await {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::Proxy(format!(
                "it does not answer on {} (see ~/.cci/logs/network-proxy.log)",
                socket.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(listen: &[SocketAddr], dns: &[IpAddr]) -> std::io::Result<()> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["network", "proxy"]);
    for a in listen {
        cmd.arg("--listen").arg(a.to_string());
    }
    for a in dns {
        cmd.arg("--dns").arg(a.to_string());
    }
    cmd.env(
        "CCI_LOG",
        std::env::var("CCI_LOG").unwrap_or_else(|_| "info".into()),
    );
    crate::state::spawn_daemon(cmd, "network-proxy.log")
}

/// Run the proxy (`cci network proxy`, started by [`ensure_proxy`]): one
/// per user (the lock), until no proxy-mode container has been left for a
/// minute. Returns at once when another one runs.
pub async fn serve(
    client: Client,
    listen: Vec<SocketAddr>,
    dns: Vec<IpAddr>,
) -> anyhow::Result<()> {
    let lock = lock_file()?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    raise_open_files();
    let mut opts = crate::proxy::RunOptions::new(
        listen,
        control_socket()?,
        network_dir()?.join("proxy-state.json"),
        decisions_log()?,
    );
    opts.dns = dns;
    let mut bound: std::collections::HashSet<SocketAddr> = opts.listen.iter().copied().collect();
    crate::proxy::run_with(opts, move |registry, ctx| async move {
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            match sync(&client, &registry).await {
                Ok((0, _)) => {
                    let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= IDLE {
                        tracing::info!("[proxy] no proxy-mode container left: stopping");
                        return;
                    }
                }
                Ok((_, wanted)) => {
                    idle_since = None;
                    // A proxy-mode container on another bridge: listen there too.
                    for addr in wanted {
                        if bound.contains(&addr) {
                            continue;
                        }
                        match tokio::net::TcpListener::bind(addr).await {
                            Ok(l) => {
                                tracing::info!("[proxy] listening on {addr}");
                                registry.listening_on(addr);
                                tokio::spawn(crate::proxy::serve(l, ctx.clone()));
                                bound.insert(addr);
                            }
                            Err(e) => tracing::warn!("[proxy] cannot listen on {addr}: {e}"),
                        }
                    }
                }
                Err(e) => tracing::warn!("[proxy] reading the daemon: {e}"),
            }
            tokio::time::sleep(SYNC).await;
        }
    })
    .await?;
    drop(lock);
    Ok(())
}

/// Let the proxy hold as many connections as the system allows it (the
/// soft limit up to the hard one): with the usual 1024, a few hundred
/// tunnels of one container would starve every other and the control
/// socket.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("[proxy] cannot raise the open-file limit");
            }
        }
    }
}

/// Bring the live table in line with the daemon: every running proxy-mode
/// container with its addresses and recorded rules; every other entry
/// forgotten. Returns how many there are and where they need the proxy.
async fn sync(
    client: &Client,
    registry: &crate::proxy::Registry,
) -> Result<(usize, Vec<SocketAddr>), Error> {
    let instances = client.instances("", false).await?;
    let table = registry.list();
    let mut live = Vec::new();
    let mut wanted = Vec::new();
    let mut leases = Leases::default();
    for i in &instances {
        let Some(policy) = proxy_policy_of(i) else {
            continue;
        };
        if i.status != crate::incus::InstanceStatus::Running {
            continue;
        }
        let bridge = super::guard::bridge_of_instance(client, i).await?;
        for a in listen_on(&bridge) {
            if !wanted.contains(&a) {
                wanted.push(a);
            }
        }
        let addresses = allocated(client, i, &bridge, &mut leases).await?;
        // Rules changed live (`cci network allow`/`deny`) are recorded on
        // the instance first, so the record is always the whole truth.
        let same_rules = table
            .iter()
            .any(|(n, rules)| *n == i.name && *rules == policy.rules);
        let same_rest = registry.held(&i.name).is_some_and(|(held, ask)| {
            let mut a = held.clone();
            let mut b = addresses.clone();
            a.sort();
            b.sort();
            a == b && ask == on_unknown(&policy)
        });
        let changed = !(same_rules && same_rest);
        if changed
            && !addresses.is_empty()
            && let Err(e) = registry.set(&i.name, &addresses, &policy.rules, on_unknown(&policy))
        {
            tracing::warn!("[proxy] {}: {e}", i.name);
        }
        live.push(i.name.clone());
    }
    for (name, _) in registry.list() {
        if !live.contains(&name) {
            let _ = registry.forget(&name);
        }
    }
    Ok((live.len(), wanted))
}

fn on_unknown(policy: &Policy) -> OnUnknown {
    if policy.ask_unknown {
        OnUnknown::Ask
    } else {
        OnUnknown::Deny
    }
}

/// A proxy-mode instance's policy (`None`: another mode, or not cci's).
fn proxy_policy_of(i: &Instance) -> Option<Policy> {
    let policy = Policy::of(i)?.ok()?;
    (policy.mode == Mode::Proxy && port_of(i).is_some()).then_some(policy)
}

/// Leases of each network, asked once per sync.
#[derive(Default)]
struct Leases(std::collections::HashMap<String, Vec<crate::incus::networks::NetworkLease>>);

/// The addresses the daemon gave instance `i`'s guarded NIC: a static
/// address in its config, its DHCP lease, and on an IPv6 bridge its
/// SLAAC address (derived from its MAC). Never what the container says
/// about itself: root inside may add any address to its interface (it
/// cannot send from one Incus' anti-spoofing does not allow, but it could
/// claim another container's identity with the proxy).
async fn allocated(
    client: &Client,
    i: &Instance,
    bridge: &Bridge,
    leases: &mut Leases,
) -> Result<Vec<IpAddr>, Error> {
    let Some(port) = port_of(i) else {
        return Ok(Vec::new());
    };
    let Some((key, dev)) = i
        .expanded_devices
        .iter()
        .find(|(_, d)| d.get("host_name").map(String::as_str) == Some(port.as_str()))
    else {
        return Ok(Vec::new());
    };
    let mut out: Vec<IpAddr> = ["ipv4.address", "ipv6.address"]
        .iter()
        .filter_map(|k| dev.get(*k)?.parse().ok())
        .collect();
    let hwaddr = i
        .config
        .get(&format!("volatile.{key}.hwaddr"))
        .or_else(|| i.expanded_config.get(&format!("volatile.{key}.hwaddr")))
        .map(|m| m.to_ascii_lowercase());
    let Some(hwaddr) = hwaddr else {
        return Ok(out);
    };
    if let Some(network) = dev.get("network").or_else(|| dev.get("parent")) {
        if !leases.0.contains_key(network) {
            let got = client.network_leases(network).await?;
            leases.0.insert(network.clone(), got);
        }
        for l in &leases.0[network] {
            if l.hwaddr.to_ascii_lowercase() == hwaddr
                && let Ok(a) = l.address.parse::<IpAddr>()
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
    }
    if let Some(v6) = bridge.v6.and_then(|gw| slaac(gw, &hwaddr))
        && !out.contains(&IpAddr::V6(v6))
    {
        out.push(IpAddr::V6(v6));
    }
    Ok(out)
}

/// The SLAAC (EUI-64) address of MAC `hwaddr` in the /64 of `gateway`.
fn slaac(gateway: std::net::Ipv6Addr, hwaddr: &str) -> Option<std::net::Ipv6Addr> {
    let mac: Vec<u8> = hwaddr
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, e, f] = mac[..] else {
        return None;
    };
    let mut o = gateway.octets();
    o[8..].copy_from_slice(&[a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
    Some(std::net::Ipv6Addr::from(o))
}

/// Tell the proxy about proxy-mode container `name` now (it would learn
/// within [`SYNC`] anyway), starting the proxy when it is not running.
/// Nothing for other modes.
pub async fn register(client: &Client, name: &str) -> Result<(), Error> {
    let (instance, _) = client.instance(name).await?;
    let Some(policy) = proxy_policy_of(&instance) else {
        return Ok(());
    };
    let bridge = super::guard::bridge_of_instance(client, &instance).await?;
    let addresses = allocated(client, &instance, &bridge, &mut Leases::default()).await?;
    if addresses.is_empty() {
        return Err(Error::Proxy(format!(
            "the daemon has no address for {name} (no DHCP lease yet)"
        )));
    }
    let listen = listen_on(&bridge);
    ensure_proxy(&listen, &policy.dns_servers).await?;
    let socket = control_socket().map_err(|e| Error::Proxy(e.to_string()))?;
    // A proxy started for another bridge listens here within a sync. Asked
    // of the proxy itself, not by connecting: a listener another program
    // bound there first must not pass for ours.
    let start = std::time::Instant::now();
    loop {
        let bound = match crate::proxy::request(&socket, &Request::Listening).await {
            Ok(Response::Listening { addresses }) => addresses,
            Ok(Response::Error { message }) => {
                return Err(Error::Proxy(format!(
                    "the running proxy is older than this cci ({message}); it stops a minute after the last proxy-mode container, or now with `pkill -f 'cci network proxy'`"
                )));
            }
            _ => Vec::new(),
        };
        let Some(missing) = listen.iter().find(|a| !bound.contains(a)) else {
            break;
        };
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::Proxy(format!(
                "it does not listen on {missing} (is another program listening there? `ss -ltnp` tells)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let req = Request::SetPolicy {
        container: name.to_string(),
        addresses,
        rules: policy.rules.clone(),
        on_unknown: on_unknown(&policy),
    };
    match crate::proxy::request(&socket, &req).await {
        Ok(Response::Ok) => Ok(()),
        Ok(Response::Error { message }) => Err(Error::Proxy(message)),
        Ok(other) => Err(Error::Proxy(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Error::Proxy(e.to_string())),
    }
}

/// The watcher's part: a proxy-mode container exists but no proxy runs
/// (killed): start it again.
pub async fn upkeep(client: &Client, instances: &[Instance]) {
    if proxy_running() {
        return;
    }
    for i in instances {
        let Some(policy) = proxy_policy_of(i) else {
            continue;
        };
        if i.status != crate::incus::InstanceStatus::Running {
            continue;
        }
        match super::guard::bridge_of_instance(client, i).await {
            Ok(bridge) => {
                tracing::info!("the egress proxy is gone: starting it again");
                if let Err(e) = ensure_proxy(&listen_on(&bridge), &policy.dns_servers).await {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::warn!("{}: {e}", i.name),
        }
        return;
    }
}

/// The proxy-mode policy of container `name` (else a clear error).
async fn proxy_policy(client: &Client, name: &str) -> Result<Policy, Error> {
    let (instance, _) = client.instance(name).await?;
    match Policy::of(&instance) {
        Some(Ok(p)) if p.mode == Mode::Proxy => Ok(p),
        Some(Ok(p)) => Err(Error::Proxy(format!(
            "{name} is in {} mode, not proxy mode: its rules are not the proxy's",
            p.mode
        ))),
        Some(Err(e)) => Err(e),
        None => Err(Error::Proxy(format!("{name} is not a cci container"))),
    }
}

/// Record `rules` as container `name`'s (the daemon's record is what the
/// proxy reads back; see [`sync`]).
async fn record_rules(client: &Client, name: &str, rules: &[String]) -> Result<(), Error> {
    let patch = serde_json::json!({"config": {super::keys::ALLOW: rules.join(",")}});
    client.update_instance(name, &patch, None).await?;
    Ok(())
}

/// Tell a running proxy; a container it does not know (stopped) gets the
/// rule from its record when it starts.
async fn tell(req: Request) -> Result<(), Error> {
    if !proxy_running() {
        return Ok(());
    }
    let socket = control_socket().map_err(|e| Error::Proxy(e.to_string()))?;
    match crate::proxy::request(&socket, &req).await {
        Ok(Response::Ok) => Ok(()),
        Ok(Response::Error { message }) if message.contains("not a running") => Ok(()),
        Ok(Response::Error { message }) => Err(Error::Proxy(message)),
        Ok(other) => Err(Error::Proxy(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Error::Proxy(e.to_string())),
    }
}

/// `cci network allow NAME RULE`: `rule` (the user's own: trusted) for
/// container `name` from its next connection on. Returns it canonical.
pub async fn allow_live(client: &Client, name: &str, rule: &str) -> Result<String, Error> {
    let canonical = crate::proxy::Rule::parse(rule.trim(), true)
        .map_err(|e| Error::BadRule(format!("{rule:?}: {e}")))?
        .to_string();
    let mut policy = proxy_policy(client, name).await?;
    if !policy.rules.contains(&canonical) {
        policy.rules.push(canonical.clone());
        record_rules(client, name, &policy.rules).await?;
    }
    tell(Request::Allow {
        container: name.to_string(),
        rule: canonical.clone(),
    })
    .await?;
    Ok(canonical)
}

/// `cci network deny NAME RULE`: take `rule` away from container `name`.
pub async fn deny_live(client: &Client, name: &str, rule: &str) -> Result<String, Error> {
    let canonical = crate::proxy::Rule::parse(rule.trim(), true)
        .map_err(|e| Error::BadRule(format!("{rule:?}: {e}")))?
        .to_string();
    let mut policy = proxy_policy(client, name).await?;
    let before = policy.rules.len();
    policy.rules.retain(|r| *r != canonical);
    if policy.rules.len() == before {
        return Err(Error::Proxy(format!(
            "{name} has no rule {canonical} (it has: {})",
            if policy.rules.is_empty() {
                "none".to_string()
            } else {
                policy.rules.join(", ")
            }
        )));
    }
    record_rules(client, name, &policy.rules).await?;
    match tell(Request::Deny {
        container: name.to_string(),
        rule: canonical.clone(),
    })
    .await
    {
        Err(Error::Proxy(m)) if m.contains("has no rule") => Ok(canonical),
        r => r.map(|()| canonical),
    }
}

/// A request to the running proxy (`cci network pending`, `approve`).
pub async fn ask(req: Request) -> Result<Response, Error> {
    if !proxy_running() {
        return Err(Error::Proxy(
            "it is not running (no proxy-mode container has started)".into(),
        ));
    }
    let socket = control_socket().map_err(|e| Error::Proxy(e.to_string()))?;
    crate::proxy::request(&socket, &req)
        .await
        .map_err(|e| Error::Proxy(e.to_string()))
}

/// What proxy-mode container `name` tried to reach around the proxy, as
/// the firewall remembers it (the last hour; nothing for other modes).
pub async fn blocked(
    client: &Client,
    fw: &dyn super::PolicyBackend,
    name: &str,
) -> Result<Vec<super::backend::Blocked>, Error> {
    let (instance, _) = client.instance(name).await?;
    let Some(port) = port_of(&instance) else {
        return Ok(Vec::new());
    };
    let mut state = fw.state()?;
    let mut list = state.blocked.remove(&port).unwrap_or_default();
    list.sort_by_key(|b| std::cmp::Reverse(b.packets));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaac_is_the_eui64_address_in_the_bridge_prefix() {
        let gw: std::net::Ipv6Addr = "fd42:cc1:99::1".parse().unwrap();
        assert_eq!(
            slaac(gw, "10:66:6a:5a:1d:fb"),
            Some("fd42:cc1:99::1266:6aff:fe5a:1dfb".parse().unwrap())
        );
        assert_eq!(slaac(gw, "not a mac"), None);
    }

    #[test]
    fn containers_are_told_the_proxy_in_every_usual_variable() {
        let b = Bridge {
            v4: Some("10.1.2.1".parse().unwrap()),
            v6: None,
        };
        let env = environment(&b);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("environment.HTTPS_PROXY"),
            Some("http://10.1.2.1:47128")
        );
        assert_eq!(get("environment.no_proxy"), Some("localhost,127.0.0.1,::1"));
        assert!(
            apt_conf(&b)
                .unwrap()
                .contains("Acquire::https::Proxy \"http://10.1.2.1:47128\"")
        );
        assert!(environment(&Bridge::default()).is_empty());
    }
}

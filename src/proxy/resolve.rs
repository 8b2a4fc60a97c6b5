//! Name resolution and dialing for the proxy, behind traits so tests can
//! answer with fixed addresses and keep every connection on this machine.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::ResolverOpts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::net::TcpStream;

/// A boxed future, as the traits here return (they are used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns a name into addresses.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (a normalized name, no final dot).
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// Opens the upstream connection. The proxy's only way out: integration
/// may bind a source address or mark the socket here.
pub trait Dial: Send + Sync {
    /// Connect to `addr`.
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;

    /// Whether `ip` is never to be dialled, whatever a rule says: this
    /// host itself ([`is_host_local`]).
    fn refuses(&self, ip: IpAddr) -> bool {
        is_host_local(ip)
    }
}

/// Plain TCP connect.
pub struct TcpDial;

impl Dial for TcpDial {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(addr))
    }
}

/// The host's resolvers (`/etc/resolv.conf`), through hickory, without a
/// cache of its own (every connection asks: answers change, and a stale
/// one would only be refused later by the private-address check anyway).
pub struct SystemResolver {
    resolver: Resolver<TokioRuntimeProvider>,
}

impl SystemResolver {
    /// Read the host's configuration.
    pub fn new() -> io::Result<SystemResolver> {
        SystemResolver::with_servers(&[])
    }

    /// Ask `servers` (`network.dns_servers`), or the host's configuration
    /// when empty.
    pub fn with_servers(servers: &[IpAddr]) -> io::Result<SystemResolver> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        opts.cache_size = 0;
        let mut builder = if servers.is_empty() {
            Resolver::builder_tokio().map_err(io::Error::other)?
        } else {
            let config = ResolverConfig::from_name_servers(
                servers
                    .iter()
                    .copied()
                    .map(NameServerConfig::udp_and_tcp)
                    .collect(),
            );
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        *builder.options_mut() = opts;
        let resolver = builder.build().map_err(io::Error::other)?;
        Ok(SystemResolver { resolver })
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            // Fully qualified: no search domain is ever appended.
            let answer = self
                .resolver
                .lookup_ip(format!("{host}."))
                .await
                .map_err(io::Error::other)?;
            Ok(answer.iter().collect())
        })
    }
}

/// Whether `ip` is this host: loopback, unspecified (`0.0.0.0/8`, `::`) or
/// an address of one of its interfaces (read at most every few seconds).
/// The proxy never dials those, whatever a rule says: a connection from the
/// host to itself would reach services that trust local callers.
pub fn is_host_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let special = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    };
    special || local_addresses().contains(&ip)
}

fn local_addresses() -> Vec<IpAddr> {
    use std::sync::Mutex;
    use std::time::Instant;
    static CACHE: Mutex<Option<(Instant, Vec<IpAddr>)>> = Mutex::new(None);
    let Ok(mut cache) = CACHE.lock() else {
        return interface_addresses();
    };
    match &*cache {
        Some((at, list)) if at.elapsed() < Duration::from_secs(5) => list.clone(),
        _ => {
            let list = interface_addresses();
            *cache = Some((Instant::now(), list.clone()));
            list
        }
    }
}

/// Every address of every interface of this host (`getifaddrs`).
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then
    // free with freeifaddrs, once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

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

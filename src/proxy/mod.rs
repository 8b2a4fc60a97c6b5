//! The egress proxy ("egress by name"): a host-side forward proxy for
//! containers in network mode `proxy`, which can reach nothing but it. It
//! decides each connection by the name asked for, not by addresses
//! resolved ahead of time: `CONNECT host:port` tunnels (TLS checked against
//! its server name) and plain `http://` requests.
//!
//! Threat model: the caller is a hostile root inside a container. All it
//! sends is untrusted: every read is bounded in size and time, nothing
//! reaches upstream before the destination is decided, names are validated
//! (ASCII, punycode for IDN) before they are resolved or logged, raw bytes
//! are never logged, and control characters in anything shown are escaped
//! ([`log::clean`]). A name is also checked against where it leads: an
//! answer in a private, loopback, link-local (metadata), CGNAT, multicast
//! or otherwise special range is refused unless an address rule allows that
//! address (DNS rebinding). A tunnel's TLS ClientHello must name the
//! CONNECT host (no fronting through an allowed name); non-TLS bytes need a
//! rule naming the port. Callers are identified by source address only:
//! the firewall (outside this module) must make spoofing impossible and
//! keep containers from reaching anything but this proxy.
//!
//! Owns: rules and policies ([`rules`]), reading TLS server names
//! ([`sni`]), the proxy ([`server`]), asking the user
//! ([`approvals`]), the decision log ([`log`]), resolution and dialing
//! ([`resolve`]) and the control channel with the live policy table
//! ([`control`]). [`run`] puts them together. Prints nothing; logs through
//! `tracing`.
//!
//! Deviations from the first sketch: [`Policy`] also carries `on_unknown`
//! (it is per container); [`server::Context`] also holds a [`Dial`] (the
//! one way out, so tests stay on loopback and integration can mark or bind
//! the upstream sockets); `Deny` on the control channel removes a rule
//! (rules only allow; see [`control`]).

pub mod approvals;
pub mod control;
pub mod log;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod sni;
mod zerocopy;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use approvals::{Approvals, Pending};
pub use control::{Registry, Request, Response, request};
pub use log::{Decision, DecisionLog, Follow, Sink, suggest, to_toml};
pub use resolve::{Dial, Resolve, SystemResolver, TcpDial};
pub use rules::{OnUnknown, Policy, Rule, RuleError};
pub use server::{Context, Limits, Policies, serve};

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where and how the proxy runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The addresses to listen on (the bridges' gateway addresses, with
    /// the proxy port).
    pub listen: Vec<SocketAddr>,
    /// The control socket.
    pub control: PathBuf,
    /// The state file (the live policies).
    pub state: PathBuf,
    /// The decision log.
    pub log: PathBuf,
    /// Its rotation size.
    pub log_max_bytes: u64,
    /// How long an unknown destination waits for the user.
    pub ask_timeout: Duration,
    /// Bounds per connection.
    pub limits: Limits,
    /// DNS servers names are resolved with (empty: the host's).
    pub dns: Vec<std::net::IpAddr>,
}

impl RunOptions {
    /// Defaults for everything but where.
    pub fn new(listen: Vec<SocketAddr>, control: PathBuf, state: PathBuf, log: PathBuf) -> Self {
        RunOptions {
            listen,
            control,
            state,
            log,
            log_max_bytes: log::DEFAULT_MAX_BYTES,
            ask_timeout: approvals::DEFAULT_ASK_TIMEOUT,
            limits: Limits::default(),
            dns: Vec::new(),
        }
    }
}

/// Run the proxy: load the state, bind the listeners and the control
/// socket, and serve until a listener fails or SIGTERM/SIGINT comes (the
/// control socket is removed then).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    run_with(opts, |_, _| std::future::pending::<()>()).await
}

/// [`run`], with `beside` running alongside on the live policy table and
/// the proxy's context (cci's upkeep of them from the daemon: policies,
/// more listeners); the proxy stops when `beside` ends.
pub async fn run_with<F, Fut>(opts: RunOptions, beside: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Registry>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use anyhow::Context as _;
    let registry = Arc::new(
        Registry::load(&opts.state).with_context(|| format!("loading {}", opts.state.display()))?,
    );
    let decisions = Arc::new(
        DecisionLog::open(&opts.log, opts.log_max_bytes)
            .with_context(|| format!("opening {}", opts.log.display()))?,
    );
    let for_rules = registry.clone();
    let approvals = Arc::new(Approvals::new(
        opts.ask_timeout,
        Box::new(move |container, rule| {
            if let Err(e) = for_rules.allow(container, &rule.to_string()) {
                tracing::error!("[proxy] adding {rule} for {container}: {e}");
            }
        }),
    ));
    let resolver = Arc::new(
        SystemResolver::with_servers(&opts.dns).context("reading the host's DNS configuration")?,
    );
    let ctx = Arc::new(
        Context::new(registry.clone(), resolver, decisions.clone())
            .with_approvals(approvals.clone())
            .with_limits(opts.limits.clone()),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for addr in &opts.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!("[proxy] listening on {addr}");
        registry.listening_on(*addr);
        tasks.spawn(serve(listener, ctx.clone()));
    }
    let control = control::bind(&opts.control)
        .with_context(|| format!("control socket {}", opts.control.display()))?;
    tasks.spawn(control::serve_control(control, registry.clone(), approvals));
    let folds = decisions.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(log::FOLD_WINDOW / 2);
        loop {
            tick.tick().await;
            folds.flush_folds(false);
        }
    });
    let beside = beside(registry, ctx.clone());
    tasks.spawn(async move {
        beside.await;
        Ok(())
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        done = tasks.join_next() => match done {
            Some(Ok(Err(e))) => Err(anyhow::Error::from(e).context("proxy listener failed")),
            Some(Err(e)) => Err(anyhow::anyhow!("proxy task failed: {e}")),
            _ => Ok(()),
        },
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    tasks.abort_all();
    decisions.flush_folds(true);
    let _ = std::fs::remove_file(&opts.control);
    result
}

//! `--network`/`--allow` flags and `cci network ...`: the containers' firewall.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};

use super::output::{Col, Fixed, print_json};
use super::{Format, UsageError};
use crate::host::Host;
use crate::network::{self, Mode, Policy};
use crate::sandbox::plan_policy;

/// Network flags of every command that starts a container.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Network mode: `restricted` (internet only: no LAN, cloud metadata, host
    /// or other containers), `allowlist` (only --allow destinations, by
    /// address), `proxy` (only --allow names, through cci's filtering proxy:
    /// wildcards, NAME:PORT, a log of every connection) or `open`.
    /// [default: CCI_NETWORK, else `[network] mode`, else restricted]
    #[arg(
        long,
        value_name = "MODE",
        value_parser = PossibleValuesParser::new(["restricted", "allowlist", "proxy", "open"])
            .try_map(|m| m.parse::<Mode>())
    )]
    pub network: Option<Mode>,
    /// Allowlist and proxy modes: a domain, IP address or CIDR the container
    /// may reach; proxy mode also takes `*.example.com` and NAME:PORT
    /// (repeatable; replaces CCI_NETWORK_ALLOW and `[network] allowed_domains`).
    #[arg(long = "allow", value_delimiter = ',', value_name = "DOMAIN|IP|CIDR")]
    pub allow: Vec<String>,
    /// Allowlist mode: resolve the domains again every this many minutes
    /// (fractions allowed), also while no cci command runs [default 30].
    #[arg(long, value_parser = refresh_minutes, value_name = "MINUTES")]
    pub refresh_minutes: Option<f64>,
    /// Allowlist mode: resolve the domains with this DNS server (repeatable)
    /// instead of the host's.
    #[arg(long = "dns-server", value_delimiter = ',', value_name = "IP")]
    pub dns_servers: Vec<std::net::IpAddr>,
}

fn refresh_minutes(text: &str) -> Result<f64, String> {
    network::parse_minutes(text)
        .ok_or_else(|| format!("{text:?} is not a number of minutes between 0 and 10080"))
}

impl NetworkArgs {
    /// The policy these flags ask for (decided by `sandbox::plan_policy`).
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let flags = plan_policy::Flags {
            mode: self.network,
            allow: &self.allow,
            refresh_minutes: self.refresh_minutes,
            dns_servers: &self.dns_servers,
        };
        let planned = plan_policy::plan(&flags, crate::config::current()).map_err(UsageError)?;
        if planned.allows_nothing {
            eprintln!(
                "cci: {} mode with no --allow entries: the container gets no network access",
                planned.policy.mode
            );
        }
        Ok(planned.policy)
    }
}

/// `cci network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Show each guarded container's mode, rules and dropped packets.
    Status(StatusArgs),
    /// Resolve allowlisted domains again now and update the rules.
    Refresh,
    /// Remove rules of containers that are gone and restore missing ones.
    Repair,
    /// Keep the firewall in line in the background (started by cci itself).
    #[command(hide = true)]
    Watch,
    /// The egress proxy of proxy-mode containers (started by cci itself).
    #[command(hide = true)]
    Proxy {
        /// An address to listen on (repeatable).
        #[arg(long)]
        listen: Vec<std::net::SocketAddr>,
        /// A DNS server to resolve with (repeatable; default: the host's).
        #[arg(long)]
        dns: Vec<std::net::IpAddr>,
    },
    /// Proxy mode: every connection a container asked for, allowed or not.
    Log(LogArgs),
    /// Proxy mode: let a running container reach RULE from its next
    /// connection on (recorded on the container; `--save` also adds it to
    /// your configuration's `[network] allowed_domains`).
    Allow {
        /// The container.
        name: String,
        /// A name, `*.example.com`, NAME:PORT, an address or a CIDR.
        rule: String,
        /// Also write it into ~/.config/cci/config.toml.
        #[arg(long)]
        save: bool,
    },
    /// Proxy mode: take RULE away from a running container (from its next
    /// connection on).
    Deny {
        /// The container.
        name: String,
        /// A rule it has (as `cci network status` or `log` shows it).
        rule: String,
    },
    /// Proxy mode with `on_unknown = "ask"`: the requests waiting for you.
    Pending {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Proxy mode: let a waiting request through (`--always`: and every later
    /// one to the same destination; the rule is recorded on the container).
    Approve {
        /// Its id (`cci network pending`).
        id: String,
        /// Add a rule for its destination.
        #[arg(long)]
        always: bool,
    },
    /// Proxy mode: a minimal allowlist from what a container asked for, as
    /// TOML to paste into a configuration.
    Suggest {
        /// The container (or its session's container name).
        name: String,
    },
}

/// Options of `cci network log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this container's connections.
    pub name: Option<String>,
    /// Keep printing new ones as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Output format (`json`: one object per line).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci network status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn run(host: &Host, cmd: NetworkCommand) -> anyhow::Result<i32> {
    let client = &host.client;
    let fw = &host.firewall;
    match cmd {
        NetworkCommand::Status(a) => status(host, a).await,
        NetworkCommand::Refresh => {
            for name in network::refresh(client, fw, false).await? {
                println!("refreshed the allowlist of {name}");
            }
            Ok(0)
        }
        NetworkCommand::Repair => {
            let r = network::reconcile(client, fw).await?;
            report(&r);
            Ok(0)
        }
        NetworkCommand::Proxy { listen, dns } => {
            let dns = if dns.is_empty() {
                host.config.dns_servers.clone()
            } else {
                dns
            };
            crate::network::egress::serve(client.clone(), listen, dns).await?;
            Ok(0)
        }
        NetworkCommand::Log(a) => super::egress::log(host, a).await,
        NetworkCommand::Allow { name, rule, save } => {
            super::egress::allow(host, &name, &rule, save).await
        }
        NetworkCommand::Deny { name, rule } => super::egress::deny(host, &name, &rule).await,
        NetworkCommand::Pending { format } => super::egress::pending(format).await,
        NetworkCommand::Approve { id, always } => super::egress::approve(host, &id, always).await,
        NetworkCommand::Suggest { name } => super::egress::suggest(&name),
        NetworkCommand::Watch => {
            let seen = std::sync::Mutex::default();
            network::watch(client, fw, || {
                crate::sandbox::reap_runs_after_grace(host, &seen)
            })
            .await?;
            Ok(0)
        }
    }
}

/// Say what a reconciliation changed.
pub fn report(r: &network::Reconciled) {
    for p in &r.removed {
        eprintln!("cci: removed the firewall rules of a container that is gone (port {p})");
    }
    for n in &r.restored {
        eprintln!("cci: restored the missing firewall rules of {n}");
    }
    for n in &r.stopped {
        eprintln!("cci: stopped {n}: its firewall rules could not be restored");
    }
}

async fn status(host: &Host, a: StatusArgs) -> anyhow::Result<i32> {
    let (rows, state) = network::status(&host.client, host.policy()).await?;
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "containers": rows,
            "to_host_dropped": state.to_host,
            "between_containers_dropped": state.between_slots,
        }))?,
        Format::Table => {
            let table = Fixed([
                Col::left(28),
                Col::left(8),
                Col::left(10),
                Col::left(15),
                Col::left(6),
                Col::rest(),
            ]);
            let head = ["CONTAINER", "STATE", "MODE", "PORT", "RULES", "DROPPED"];
            println!("{}", table.line(head));
            for r in &rows {
                let rules = if r.rules { "yes" } else { "NO" };
                let dropped = r.dropped.to_string();
                let cells = [
                    &*r.container,
                    r.state.as_str(),
                    &r.mode,
                    &r.port,
                    rules,
                    &dropped,
                ];
                println!("{}", table.line(cells));
            }
            println!(
                "\ndropped on the way to the host: {}; between containers: {}",
                state.to_host, state.between_slots
            );
        }
    }
    Ok(0)
}

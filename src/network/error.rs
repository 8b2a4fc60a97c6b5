//! Why a container's network could not be set up: one error type for the
//! whole network layer (the CLI maps it to exit codes). Owns no logic.

use crate::incus;

/// Why a container's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// nft is not installed (or could not be run).
    #[error(
        "cannot run `{command}` ({reason}): cci needs nftables to isolate containers; install it (`apt install nftables`) or use --network open"
    )]
    NftMissing {
        /// What was run.
        command: String,
        /// Why it failed.
        reason: String,
    },
    /// nft refused us.
    #[error(
        "`{command}` is not permitted: network isolation needs root; run cci as root, or let this user run nft through sudo without a password (sudoers: `USER ALL=(root) NOPASSWD: /usr/sbin/nft`)"
    )]
    NftPermission {
        /// What was run.
        command: String,
    },
    /// nft failed otherwise.
    #[error("applying the firewall rules failed: {0}")]
    Nft(String),
    /// An allowlist entry is neither a domain, an address nor a CIDR.
    #[error("allowlist entry {0:?} is not a domain name, an IP address or a CIDR")]
    BadAllowEntry(String),
    /// An unknown mode.
    #[error("unknown network mode {0:?} (expected restricted, allowlist, proxy or open)")]
    BadMode(String),
    /// A proxy rule that does not parse.
    #[error("bad proxy rule {0}")]
    BadRule(String),
    /// The egress proxy could not be started or asked.
    #[error("egress proxy: {0}")]
    Proxy(String),
    /// The resolver could not be set up.
    #[error("DNS resolver: {0}")]
    Resolver(String),
    /// Allowlisted domains resolved to nothing usable.
    #[error(
        "allowlist domains gave no usable (public) address: {0}; the container is not started (check the names, or the DNS servers: --dns-server)"
    )]
    Unresolved(String),
    /// The container's NIC is not on a bridge cci can guard.
    #[error(
        "network {network:?} is a {kind}, not an Incus bridge: cci can only isolate containers on a managed bridge (use --network open to run without isolation)"
    )]
    Unsupported {
        /// The network.
        network: String,
        /// Its type.
        kind: String,
    },
    /// The profiles give a container more than one NIC.
    #[error(
        "the container would get more than one network device: {0}; cci guards exactly one, so it refuses to launch (remove the extra NIC from the profile, or override it in a profile of its own)"
    )]
    ManyNics(String),
    /// A container's /etc/hosts could not be updated.
    #[error("updating /etc/hosts of {container}: {reason}")]
    HostsFile {
        /// The container.
        container: String,
        /// What went wrong.
        reason: String,
    },
    /// The last-known-good cache could not be written.
    #[error("saving the allowlist cache: {0}")]
    Cache(String),
    /// The daemon said no.
    /// A mode cci cannot enforce where the container runs.
    #[error(
        "network mode {mode} cannot be enforced on remote {remote}: {why}. Use `--network open` there (only the server's own network rules apply), or run the session on the local daemon"
    )]
    RemoteUnenforced {
        /// The mode asked for.
        mode: String,
        /// The remote.
        remote: String,
        /// Why not.
        why: String,
    },
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

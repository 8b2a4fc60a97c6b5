//! Exit codes: one per class of error, so scripts can tell them apart, and
//! the one place errors are mapped to them.

use super::UsageError;
use crate::incus;

/// Exit code for a usage error (clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the Incus daemon cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 3;
/// Exit code when the daemon (or its socket) refuses us.
pub const EXIT_PERMISSION: i32 = 4;
/// Exit code when a named object does not exist.
pub const EXIT_NOT_FOUND: i32 = 5;
/// Exit code when a name is taken or an object changed under us.
pub const EXIT_CONFLICT: i32 = 6;
/// Exit code when network isolation cannot be set up (nothing was started).
pub const EXIT_NETWORK: i32 = 7;
/// Exit code when the Incus profiles or the container would give the agent
/// the host (privileged, raw.*, host devices): nothing was started.
pub const EXIT_UNSAFE: i32 = 8;

/// The exit code for an error: one per class, so scripts can tell them apart.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use crate::sandbox::Error;
    if err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<crate::config::ConfigError>().is_some()
    {
        return EXIT_USAGE;
    }
    match err.downcast_ref::<Error>() {
        Some(
            Error::SlotAboveLimit { .. }
            | Error::MountMoved(_)
            | Error::Forward(_)
            | Error::Usage(_),
        ) => {
            return EXIT_USAGE;
        }
        Some(Error::ImageMissing { .. }) => return EXIT_NOT_FOUND,
        Some(Error::SlotInUse { .. } | Error::SlotsExhausted { .. }) => {
            return EXIT_CONFLICT;
        }
        Some(Error::Incus(e)) => return incus_exit_code(e),
        Some(
            Error::SessionStart { .. }
            | Error::Prepare { .. }
            | Error::NotReady(_)
            | Error::Isolated(_)
            | Error::CopyIn(_)
            // As when it was reported as a daemon's invalid request.
            | Error::SaveStart(_),
        ) => return 1,
        Some(Error::ResumeRunning { .. } | Error::LooserPolicy { .. }) => {
            return EXIT_CONFLICT;
        }
        Some(Error::Network(e)) => return network_exit_code(e),
        Some(Error::Unsafe(_)) => return EXIT_UNSAFE,
        None => {}
    }
    if let Some(e) = err.downcast_ref::<crate::network::Error>() {
        return network_exit_code(e);
    }
    if let Some(e) = err.downcast_ref::<crate::git::GitError>() {
        return git_exit_code(e);
    }
    if err.downcast_ref::<super::merge::LeftConflicts>().is_some() {
        return EXIT_CONFLICT;
    }
    if let Some(crate::image::BuildError::Network(e)) = err.downcast_ref() {
        return network_exit_code(e);
    }
    if let Some(e) = err.downcast_ref::<crate::remote::Error>() {
        return match e {
            crate::remote::Error::Incus(e) => incus_exit_code(e),
            crate::remote::Error::NotFound(_) => EXIT_NOT_FOUND,
            crate::remote::Error::Usage(_) | crate::remote::Error::Unusable { .. } => EXIT_USAGE,
            crate::remote::Error::Io(..) => 1,
        };
    }
    match err.downcast_ref::<incus::Error>() {
        Some(e) => incus_exit_code(e),
        None => 1,
    }
}

fn network_exit_code(err: &crate::network::Error) -> i32 {
    match err {
        crate::network::Error::Incus(e) => incus_exit_code(e),
        crate::network::Error::BadAllowEntry(_) | crate::network::Error::BadMode(_) => EXIT_USAGE,
        _ => EXIT_NETWORK,
    }
}

fn incus_exit_code(err: &incus::Error) -> i32 {
    match err {
        incus::Error::Unreachable { .. }
        | incus::Error::RemoteUnreachable { .. }
        | incus::Error::ShuttingDown => EXIT_UNREACHABLE,
        incus::Error::SocketPermission { .. }
        | incus::Error::Forbidden(_)
        | incus::Error::Untrusted { .. }
        | incus::Error::RemoteCertificate { .. } => EXIT_PERMISSION,
        incus::Error::NotFound(_) => EXIT_NOT_FOUND,
        incus::Error::Conflict(_) => EXIT_CONFLICT,
        _ => 1,
    }
}

/// The exit code for a host-side git error: what the user asked cannot be
/// (2), or the repository is in the way (6: a conflict, uncommitted changes
/// a merge would overwrite, the branch checked out elsewhere).
pub fn git_exit_code(e: &crate::git::GitError) -> i32 {
    use crate::git::GitError as G;
    match e {
        G::NotARepository { .. }
        | G::Bare { .. }
        | G::NoCommits
        | G::Dirty { .. }
        | G::InvalidBranch { .. }
        | G::InvalidSessionId { .. }
        | G::InvalidCommitId { .. }
        | G::DetachedHead
        | G::NotInSession { .. }
        | G::MergeCommitSelected { .. }
        | G::GitTooOld { .. } => EXIT_USAGE,
        G::Conflict { .. } | G::WouldOverwrite { .. } | G::CheckedOutElsewhere { .. } => {
            EXIT_CONFLICT
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{network, sandbox};

    #[test]
    fn a_network_error_keeps_its_class_and_its_exit_code() {
        let nft = || network::Error::Nft("refused".into());
        let code = |e: sandbox::Error| exit_code(&e.into());
        assert_eq!(code(sandbox::Error::Network(nft())), EXIT_NETWORK);
        // Starting a stopped container to save its state: 1, as always.
        assert_eq!(code(sandbox::Error::SaveStart(nft())), 1);
        let gone = || incus::Error::NotFound("x".into());
        assert_eq!(code(sandbox::Error::Incus(gone())), EXIT_NOT_FOUND);
        assert_eq!(exit_code(&gone().into()), EXIT_NOT_FOUND);
    }
}

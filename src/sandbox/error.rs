//! The one error of the sandbox layer: why a sandbox could not be launched,
//! reused, saved or ended, by class (the CLI maps each class to an exit code
//! in one place, `cli/exit.rs`). A network error keeps its class here; it is
//! never relabelled as a daemon error. Owns no logic.

use super::names::Slot;
use crate::{incus, network};

/// Why a sandbox could not be launched, used, saved or ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every slot up to the limit is taken.
    #[error(
        "all {limit} slots of workspace {workspace} are in use; stop one (`cci list`, then `cci kill NAME`) or raise the slot limit (CCI_SLOT_LIMIT)"
    )]
    SlotsExhausted {
        /// The limit.
        limit: u32,
        /// The workspace path.
        workspace: String,
    },
    /// `--slot` above the limit.
    #[error("slot {slot} is above the slot limit of {limit} (CCI_SLOT_LIMIT)")]
    SlotAboveLimit {
        /// Asked for.
        slot: Slot,
        /// The limit.
        limit: u32,
    },
    /// `--slot N` names a slot that already has a container.
    #[error("slot {slot} is in use by container {name}; pick another slot or leave --slot out")]
    SlotInUse {
        /// Asked for.
        slot: Slot,
        /// The container in it.
        name: String,
    },
    /// The image alias does not exist.
    #[error(
        "image {image:?} not found; build it with `cci build --base IMAGE` (or `cci build custom`), or choose an existing one with --image ALIAS"
    )]
    ImageMissing {
        /// The alias.
        image: String,
    },
    /// The isolated git session could not be set up inside.
    #[error("could not set up the isolated git session: {0}")]
    Isolated(String),
    /// The folder could not be copied in (a remote server).
    #[error("could not copy the folder in: {0}")]
    CopyIn(String),
    /// The container runs but the session in it could not start.
    #[error("could not start the session in {container}: {message}")]
    SessionStart {
        /// The container (removed again).
        container: String,
        /// What the start script said.
        message: String,
    },
    /// The container's network isolation could not be set up (it was not started).
    #[error(transparent)]
    Network(#[from] network::Error),
    /// The saved state or the credentials could not be put into the container.
    #[error("could not prepare the session in {container}: {source}")]
    Prepare {
        /// The container (removed again when new).
        container: String,
        /// Why.
        source: crate::session::Error,
    },
    /// The session to resume runs already.
    #[error("session {id} is running in {container}; `cci attach {container}` returns to it")]
    ResumeRunning {
        /// The session id.
        id: String,
        /// Its container.
        container: String,
    },
    /// A kept container was asked to run under a looser network policy.
    #[error(
        "{container} runs under a stricter network policy ({recorded}) than the one asked for ({asked}); a kept container is never loosened: `cci kill {container}` and start afresh, or leave --network/--allow out"
    )]
    LooserPolicy {
        /// The container.
        container: String,
        /// Its mode.
        recorded: String,
        /// The mode asked for.
        asked: String,
    },
    /// A mount source changed since it was checked (nothing was created).
    #[error("{0}")]
    MountMoved(String),
    /// What was asked cannot be done to this container (a usage error).
    #[error("{0}")]
    Usage(String),
    /// A port cannot be published (taken, given twice).
    #[error("{0}")]
    Forward(String),
    /// The container did not come up in time (it was removed again).
    #[error(transparent)]
    NotReady(#[from] network::ready::NotReady),
    /// The Incus profiles (or the container) would give the agent the host.
    #[error("{0}")]
    Unsafe(super::vet::Findings),
    /// A stopped container could not be started to save its session's
    /// state: its network policy could not be put in force (it stays
    /// stopped). Kept apart from [`Error::Network`], a launch's, because its
    /// exit code has always been 1 (it was reported as an Incus error).
    #[error(transparent)]
    SaveStart(network::Error),
    /// Anything the daemon said.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

//! Sandboxes: the containers cci runs agents and commands in. Owns workspace
//! identity, slot allocation, the container spec and the container lifecycle.
//! Talks to Incus only through [`crate::incus::Client`]; prints nothing.

mod inventory;
mod launch;
mod names;
mod run;
mod spec;
mod workspace;

pub use inventory::{SandboxInfo, get as info, kill, list};
pub use launch::{Attempt, LaunchError, Launched, launch, remove};
pub use names::{
    MAX_SLOT, PREFIX, Slot, SlotError, container_name, parse_container_name, workspace_prefix,
};
pub use run::{Ending, RunOutcome, RunRequest, run, sandbox_env};
pub use spec::{CODE_GID, CODE_HOME, CODE_UID, Kind, SandboxSpec, WORKSPACE_MOUNT, keys};
pub use workspace::{Workspace, WorkspaceError};

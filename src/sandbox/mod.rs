//! Sandboxes: the containers cci runs agents and commands in. Owns workspace
//! identity, slot allocation, the container spec, the tmux session inside,
//! the agent registry and the container lifecycle.
//! Talks to Incus only through [`crate::incus::Client`]; prints nothing.

mod agent;
pub mod caches;
pub mod changes;
mod error;
pub mod forward;
pub use forward::parse_publish;
pub mod copied;
mod hostmount;
pub mod idmap;
mod inventory;
pub mod isolated;
mod launch;
mod lifecycle;
mod mounts;
mod names;
pub mod orphans;
pub mod plan_extras;
pub mod plan_policy;
mod profile;
pub mod protect;
pub mod records;
mod run;
mod saving;
mod shell;
pub mod snapshots;
mod spec;
mod teardown;
mod tmux;
pub mod tripwire;
pub mod vet;
mod workspace;

pub use agent::{AGENTS, Agent, AgentDef, PROMPT, UnknownAgent};
pub use error::Error;
pub use hostmount::{MountPlan, plan as plan_host_mount};
pub use inventory::{
    SandboxInfo, get as info, launch_marks, launch_token, list, list_prefix, list_quick,
};
pub use launch::{Attempt, Launched, launch};
pub use lifecycle::{CleanItem, CleanReason, clean_plan, clean_reason, kill, persist, shutdown};
pub use mounts::{
    Extras, Mount, STORAGE_MOUNT, WORKSPACE_MOUNT, parse_mount_arg, plan as plan_mounts,
    recheck as recheck_mounts,
};
pub use names::{
    MAX_SLOT, PREFIX, Slot, SlotError, container_name, parse_container_name, workspace_prefix,
};
pub use orphans::{reap_runs, reap_runs_after_grace};
pub use profile::{SANDBOX_PROFILE, ensure as ensure_profile};
pub use protect::{path_ok as protected_path_ok, sources_unmoved};
pub use run::{Ending, GitOutcome, RunOutcome, RunRequest, run, sandbox_env};
pub use saving::{StateSave, save_now, store_of};
pub use shell::{
    Ended, Left, Session, ShellRequest, after_detach, end, new_session_id, open, reap,
};
pub use spec::{KERNEL_DENY, Kind, SandboxSpec, keys};
pub use teardown::{remove, stop};
pub use tmux::{
    Keys, SESSION as TMUX_SESSION, SessionCommand, TmuxError, alive as session_alive,
    attach_request, capture as capture_session, send as send_keys, socket as tmux_socket,
};
pub use workspace::{Workspace, WorkspaceError};

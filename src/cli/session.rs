//! `cci session ...` and the saved-session parts of `list --all`, `info`
//! and `clean --sessions`: the agent states kept on the host.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{fields, print_json, print_rows};
use super::sandbox_args::workspace_at;
use super::{Format, UsageError};
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::{self, Agent, StateSave};
use crate::session::{self, Saved, SessionId, Store};

/// `cci session` commands.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List the saved sessions (every workspace, newest first).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// One session's record: where and how it ran, how it ended, the time
    /// its agent waited for you, its saved state, its network requests (a
    /// running session's so far).
    Show(ShowArgs),
    /// Play a recorded session's terminal output (`cci shell --record`)
    /// again, at its pace or faster.
    Replay(ReplayArgs),
    /// Save the agent state of a running session container now.
    Save(SaveArgs),
    /// Push a saved session's state into a running container.
    Restore(RestoreArgs),
    /// Import a host folder (a `~/.claude` or a backup of one) as a saved
    /// session of a workspace. From a `~/.claude` only that workspace's
    /// conversations (`projects/<its path>/`) and `CLAUDE.md` are taken: no
    /// other project, shell snapshot, IDE lock, settings or credentials.
    Import(ImportArgs),
    /// Write a saved session's state to a new folder.
    Export(ExportArgs),
}

/// Options of `cci session list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci session show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The session id.
    #[arg(value_name = "ID")]
    pub id: SessionId,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci session replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The session id.
    #[arg(value_name = "ID")]
    pub id: SessionId,
    /// Play this many times faster.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,
    /// Never wait longer than this between two outputs (seconds).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub max_wait: f64,
}

/// Options of `cci session save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The session container.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Options of `cci session restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The saved session.
    #[arg(value_name = "ID")]
    pub id: SessionId,
    /// The running container to push it into.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Options of `cci session import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The folder to import.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Its session id [default: its newest conversation's id, else a new one].
    #[arg(long, value_name = "ID")]
    pub name: Option<SessionId>,
    /// The workspace it belongs to [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// The agent whose state it is [default: CCI_TOOL, else `[tool] name`, else claude].
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
}

/// Options of `cci session export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The saved session.
    #[arg(value_name = "ID")]
    pub id: SessionId,
    /// The folder to write (must not exist).
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// A saved session as `list` and `info` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SavedInfo {
    /// Session id.
    pub id: String,
    /// Agent.
    pub tool: String,
    /// Workspace host path.
    pub workspace: String,
    /// When saved (RFC 3339).
    pub saved_at: String,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Files, folders and symlinks.
    pub entries: u64,
    /// Entries left out when saved.
    pub skipped: u64,
    /// The container it came from (empty for imports).
    pub container: String,
    /// Its slot.
    pub slot: u32,
    /// `container` or `import`.
    pub origin: String,
    /// Its folder on the host.
    pub path: String,
    /// The session's record, when one was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<session::record::Record>,
}

impl SavedInfo {
    fn of(s: &Saved) -> SavedInfo {
        let m = &s.meta;
        SavedInfo {
            id: m.id.clone(),
            tool: m.tool.clone(),
            workspace: m.workspace.clone(),
            saved_at: m.saved_at.clone(),
            bytes: m.bytes,
            entries: m.entries,
            skipped: m.skipped,
            container: m.container.clone(),
            slot: m.slot,
            origin: m.origin.clone(),
            path: s.path.display().to_string(),
            record: records_root()
                .and_then(|root| session::record::read(&root, &m.id.parse().ok()?)),
        }
    }
}

/// Where saved sessions live (`[paths] sessions_dir`; `None`: the default).
fn sessions_dir() -> Option<&'static std::path::Path> {
    crate::config::current().sessions_dir.as_deref()
}

/// The folder the session records are under.
fn records_root() -> Option<PathBuf> {
    session::store_root(sessions_dir()).ok()
}

/// Every saved session of every agent, newest first.
pub fn all_saved() -> anyhow::Result<Vec<(Store, Saved)>> {
    let mut all = Vec::new();
    for store in Store::all(sessions_dir())? {
        for s in store.list()? {
            all.push((store.clone(), s));
        }
    }
    all.sort_by_key(|(_, s)| std::cmp::Reverse(s.meta.saved_unix));
    Ok(all)
}

/// The saved session `id` of any agent.
pub fn find(id: &SessionId) -> anyhow::Result<Option<(Store, Saved)>> {
    for store in Store::all(sessions_dir())? {
        if let Some(s) = store.get(id)? {
            return Ok(Some((store, s)));
        }
    }
    Ok(None)
}

fn not_found(id: &SessionId) -> anyhow::Error {
    crate::incus::Error::NotFound(format!(
        "saved session {id} (`cci list --all` shows the saved sessions)"
    ))
    .into()
}

/// Bytes for people.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Print saved sessions as a table.
pub fn print_saved(all: &[SavedInfo]) {
    if all.is_empty() {
        println!("no saved sessions");
        return;
    }
    let rows: Vec<[String; 5]> = all
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                s.tool.clone(),
                s.saved_at
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string(),
                human(s.bytes),
                s.workspace.clone(),
            ]
        })
        .collect();
    print_rows(
        &["SESSION", "TOOL", "SAVED (UTC)", "SIZE", "WORKSPACE"],
        &rows,
    );
}

/// The saved sessions, for `list --all` and `session list`.
pub fn saved_infos() -> anyhow::Result<Vec<SavedInfo>> {
    Ok(all_saved()?.iter().map(|(_, s)| SavedInfo::of(s)).collect())
}

/// `cci info ID` for a saved session; `None` when there is none.
pub fn info(id: &str, format: Format) -> anyhow::Result<Option<i32>> {
    let Ok(id) = id.parse::<SessionId>() else {
        return Ok(None);
    };
    let Some((_, saved)) = find(&id)? else {
        return Ok(None);
    };
    let i = SavedInfo::of(&saved);
    match format {
        Format::Json => print_json(&i)?,
        Format::Table => {
            let rows = [
                ("Session", i.id.clone()),
                ("Tool", i.tool.clone()),
                ("Workspace", i.workspace.clone()),
                ("Saved", i.saved_at.clone()),
                (
                    "Size",
                    format!("{} in {} entries", human(i.bytes), i.entries),
                ),
                ("Left out", i.skipped.to_string()),
                (
                    "From",
                    if i.container.is_empty() {
                        i.origin.clone()
                    } else {
                        format!("{} (slot {})", i.container, i.slot)
                    },
                ),
                ("Folder", i.path.clone()),
            ];
            print!("{}", fields(&rows));
        }
    }
    Ok(Some(0))
}

/// The saved session `cci shell --resume[=ID]` continues: `id`, or the
/// newest of `workspace`.
pub fn to_resume(agent: &Agent, id: &str, workspace: &str, force: bool) -> anyhow::Result<Saved> {
    let store = sandbox::store_of(sessions_dir(), agent.def.name).map_err(anyhow::Error::msg)?;
    if id.is_empty() {
        return store.newest_for(workspace)?.ok_or_else(|| {
            crate::incus::Error::NotFound(format!(
                "no saved {} session for workspace {workspace} (`cci list --all` shows the saved sessions)",
                agent.def.name
            ))
            .into()
        });
    }
    let id: SessionId = id
        .parse()
        .map_err(|e| UsageError(format!("--resume: {e}")))?;
    let saved = store.get(&id)?.ok_or_else(|| not_found(&id))?;
    if saved.meta.workspace != workspace && !force {
        return Err(UsageError(format!(
            "session {id} belongs to workspace {}, not {workspace}; add --force to resume it here",
            saved.meta.workspace
        ))
        .into());
    }
    Ok(saved)
}

/// How a session's state ended up, in words (`None`: nothing worth saying).
pub fn describe(state: &StateSave) -> Option<String> {
    match state {
        StateSave::Saved { id, skipped: 0 } => Some(format!(
            "agent state saved as session {id} (`cci shell --resume` continues it)"
        )),
        StateSave::Saved { id, skipped } => Some(format!(
            "agent state saved as session {id}, {skipped} special file(s) or outside link(s) left out (`cci shell --resume` continues it)"
        )),
        StateSave::Nothing => None,
        StateSave::Failed(why) => Some(format!("agent state NOT saved: {why}")),
    }
}

pub async fn run(host: &Host, cmd: SessionCommand) -> anyhow::Result<i32> {
    let client = &host.client;
    match cmd {
        SessionCommand::List(a) => {
            let all = saved_infos()?;
            match a.format {
                Format::Json => print_json(&all)?,
                Format::Table => print_saved(&all),
            }
            Ok(0)
        }
        SessionCommand::Show(a) => show(host, &a).await,
        SessionCommand::Replay(a) => replay(&a).await,
        SessionCommand::Save(a) => {
            let state = sandbox::save_now(host, &a.name).await?;
            match &state {
                StateSave::Failed(why) => {
                    eprintln!("cci: {}: agent state NOT saved: {why}", a.name);
                    Ok(1)
                }
                StateSave::Nothing => {
                    println!(
                        "{}: nothing to save (no agent state, or saved already)",
                        a.name
                    );
                    Ok(0)
                }
                s => {
                    println!("{}: {}", a.name, describe(s).unwrap_or_default());
                    Ok(0)
                }
            }
        }
        SessionCommand::Restore(a) => {
            let (store, saved) = find(&a.id)?.ok_or_else(|| not_found(&a.id))?;
            let info = sandbox::info(host, &a.name).await?;
            if info.state != InstanceStatus::Running {
                return Err(UsageError(format!("{} is not running", a.name)).into());
            }
            let agent = Agent::named(store.tool(), None).map_err(|e| UsageError(e.to_string()))?;
            let limits = host.config.session;
            let t = session::restore(
                client,
                &a.name,
                &agent.def.files,
                &saved,
                &limits,
                &info.account,
            )
            .await?;
            println!(
                "pushed session {} into {} ({} in {} entries)",
                saved.id(),
                a.name,
                human(t.bytes),
                t.entries
            );
            Ok(0)
        }
        SessionCommand::Import(a) => {
            let ws = workspace_at(a.workspace.as_deref())?;
            let tool = a
                .tool
                .clone()
                .unwrap_or_else(|| crate::config::current().tool.clone());
            let agent = Agent::named(&tool, None).map_err(|e| UsageError(e.to_string()))?;
            let store =
                sandbox::store_of(sessions_dir(), agent.def.name).map_err(anyhow::Error::msg)?;
            let limits = host.config.session;
            let (saved, t) = session::import(
                &store,
                &agent.def.files,
                &a.path,
                a.name,
                ws.path_str(),
                &limits,
            )?;
            for note in &t.skipped {
                eprintln!("cci: left out {note}");
            }
            println!(
                "imported {} as session {} of {} ({} in {} entries); `cci shell --resume={}` continues it",
                a.path.display(),
                saved.id(),
                ws.path_str(),
                human(t.bytes),
                t.entries,
                saved.id()
            );
            Ok(0)
        }
        SessionCommand::Export(a) => {
            let (_, saved) = find(&a.id)?.ok_or_else(|| not_found(&a.id))?;
            if std::fs::symlink_metadata(&a.dest).is_ok() {
                return Err(UsageError(format!(
                    "{} exists; export writes a new folder",
                    a.dest.display()
                ))
                .into());
            }
            let limits = host.config.session;
            let t = session::export(&saved, &a.dest, &limits)?;
            println!(
                "exported session {} to {} ({} in {} entries)",
                saved.id(),
                a.dest.display(),
                human(t.bytes),
                t.entries
            );
            Ok(0)
        }
    }
}

/// `cci session show ID`: the record (a running session's so far), and
/// its saved state.
async fn show(host: &Host, a: &ShowArgs) -> anyhow::Result<i32> {
    let running = sandbox::list(host)
        .await?
        .into_iter()
        .find(|c| c.session == a.id.to_string() && c.state == InstanceStatus::Running);
    let record = match (&running, records_root()) {
        (Some(c), _) => Some(sandbox::records::make(host, c, None, None, None).await),
        (None, Some(root)) => session::record::read(&root, &a.id),
        (None, None) => None,
    };
    let saved = find(&a.id)?.map(|(_, s)| SavedInfo::of(&s));
    let Some(record) = record.or_else(|| saved.as_ref().and_then(|s| s.record.clone())) else {
        if saved.is_some() {
            // Saved before records were kept (or imported): the saved state only.
            return info(&a.id.to_string(), a.format).map(|c| c.unwrap_or(0));
        }
        return Err(not_found(&a.id));
    };
    match a.format {
        Format::Json => {
            let mut v = serde_json::to_value(&record)?;
            v["running"] = serde_json::Value::Bool(running.is_some());
            v["saved"] = serde_json::to_value(saved.as_ref().map(|s| {
                let mut s = s.clone();
                s.record = None;
                s
            }))?;
            print_json(&v)?;
        }
        Format::Table => {
            let secs = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |s| format!("{s} s"));
            let rows = [
                ("Session", record.id.clone()),
                ("Workspace", record.workspace.clone()),
                (
                    "Container",
                    format!(
                        "{} (slot {}, {})",
                        record.container, record.slot, record.kind
                    ),
                ),
                ("Image", record.image.clone()),
                ("Agent", super::output::dash(&record.agent)),
                ("Network", super::output::dash(&record.network)),
                ("Started", record.started.clone()),
                (
                    "Ended",
                    match (&record.ended, &record.ended_by) {
                        (Some(t), Some(how)) => format!("{t} ({how})"),
                        (Some(t), None) => t.clone(),
                        (None, _) => "still running".into(),
                    },
                ),
                (
                    "Exit status",
                    record
                        .exit_status
                        .map_or_else(|| "-".into(), |s| s.to_string()),
                ),
                ("Waiting for you", secs(record.waiting_seconds)),
                ("Idle at its prompt", secs(record.idle_seconds)),
                (
                    "Saved state",
                    record.saved_bytes.map_or_else(|| "-".into(), human),
                ),
                (
                    "Requests",
                    format!(
                        "{} allowed, {} blocked (egress proxy)",
                        record.network_allowed, record.network_blocked
                    ),
                ),
            ];
            print!("{}", fields(&rows));
        }
    }
    Ok(0)
}

/// `cci session replay ID`: the recording, through the same filter as
/// what reaches the terminal from a live session.
async fn replay(a: &ReplayArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    if !(a.speed.is_finite() && a.speed > 0.0 && a.max_wait.is_finite() && a.max_wait >= 0.0) {
        return Err(UsageError("--speed must be above 0 and --max-wait at least 0".into()).into());
    }
    let path = records_root().map(|r| session::record::recording_path(&r, &a.id));
    let cast = match path.as_ref().map(std::fs::read) {
        Some(Ok(c)) => c,
        _ => {
            return Err(crate::incus::Error::NotFound(format!(
                "a recording of session {} (sessions are recorded with `cci shell --record` or `[session] record = true`)",
                a.id
            ))
            .into());
        }
    };
    let cast = String::from_utf8_lossy(&cast);
    let mut filter = crate::terminal::EscapeFilter::new();
    let mut out = std::io::stdout();
    let mut last = 0.0f64;
    for (at, text) in session::record::cast_events(&cast) {
        let wait = ((at - last) / a.speed).clamp(0.0, a.max_wait);
        last = at;
        if wait > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
        let mut shown = Vec::new();
        filter.push(text.as_bytes(), &mut shown);
        out.write_all(&shown)?;
        out.flush()?;
    }
    // What the recording switched on goes off again: a soft reset, the
    // normal screen, mouse and paste reporting off, the cursor shown.
    if std::io::IsTerminal::is_terminal(&out) {
        out.write_all(
            b"\x1b[0m\x1b[!p\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[?25h\r\n",
        )?;
        out.flush()?;
    }
    Ok(0)
}

/// `cci clean --sessions [--older-than DAYS]`.
pub fn clean(older_than: Option<u64>, dry_run: bool, force: bool) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cutoff = older_than.map(|d| now.saturating_sub(d.saturating_mul(86_400)));
    let plan: Vec<(Store, Saved)> = all_saved()?
        .into_iter()
        .filter(|(_, s)| cutoff.is_none_or(|c| s.meta.saved_unix < c))
        .collect();
    if plan.is_empty() {
        println!("no saved sessions to remove");
        return Ok(0);
    }
    for (_, s) in &plan {
        println!(
            "{}  {}  {}  {}",
            s.id(),
            s.meta.saved_at,
            human(s.meta.bytes),
            s.meta.workspace
        );
    }
    if dry_run {
        return Ok(0);
    }
    if !super::targets::confirm(
        &format!("remove these {} saved sessions", plan.len()),
        force,
    )? {
        return Ok(1);
    }
    for (store, s) in &plan {
        let id: SessionId = s.id().parse()?;
        store.remove(&id)?;
        if let Some(root) = records_root() {
            session::record::remove(&root, &id);
        }
        println!("removed session {id}");
    }
    Ok(0)
}

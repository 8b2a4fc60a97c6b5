//! `cci list`, `info`, `kill`, `shutdown`, `clean`, `persist`: see, keep and
//! remove cci's containers.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::{Format, UsageError};
use crate::incus::Client;
use crate::sandbox::{self, SandboxInfo, StateSave};

/// Options of `cci list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also list the saved sessions (agent states kept on the host).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Containers to kill.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every cci container.
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// Options of `cci info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Container name, or the id of a saved session [default: the newest
    /// container of the workspace, else its newest saved session].
    pub name: Option<String>,
    /// The workspace whose newest container or session is shown without NAME
    /// [default: the current directory].
    #[arg(short = 'w', long, value_name = "PATH", conflicts_with = "name")]
    pub workspace: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `cci shutdown`.
#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// Containers to shut down.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every cci container.
    #[arg(long)]
    pub all: bool,
    /// Seconds to wait for a clean stop before forcing it.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// Options of `cci clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Only remove firewall rules left by containers that are gone (and put
    /// back missing rules of existing ones); no container is touched.
    #[arg(long, conflicts_with_all = ["dry_run", "sessions", "all"])]
    pub orphans: bool,
    /// Everything: also stopped persistent containers, and every saved session.
    #[arg(long, conflicts_with_all = ["sessions", "older_than"])]
    pub all: bool,
    /// Remove saved sessions (agent states on the host) instead of containers.
    #[arg(long)]
    pub sessions: bool,
    /// With --sessions: only those saved more than DAYS days ago.
    #[arg(long, value_name = "DAYS", requires = "sessions")]
    pub older_than: Option<u64>,
}

/// Options of `cci persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Session (or launched) containers to keep when their sessions end.
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every running session or launched container that is not kept yet.
    #[arg(long)]
    pub all: bool,
}

pub async fn list(client: &Client, args: ListArgs) -> anyhow::Result<i32> {
    sandbox::reap(client, sandbox::PREFIX).await;
    let all = sandbox::list(client).await?;
    let saved = if args.all {
        Some(super::session::saved_infos()?)
    } else {
        None
    };
    match (args.format, saved) {
        (Format::Json, None) => println!("{}", serde_json::to_string_pretty(&all)?),
        (Format::Json, Some(saved)) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "containers": all,
                "sessions": saved,
            }))?
        ),
        (Format::Table, saved) => {
            print_table(&all);
            if let Some(saved) = saved {
                println!();
                super::session::print_saved(&saved);
            }
        }
    }
    Ok(0)
}

fn print_table(all: &[SandboxInfo]) {
    if all.is_empty() {
        println!("no cci containers");
        return;
    }
    // `NAME (ephemeral)` / `NAME (persistent)`, as the original showed them.
    let rows: Vec<[String; 8]> = all
        .iter()
        .map(|s| {
            [
                format!("{} ({})", s.name, s.mode),
                s.state.clone(),
                slot_of(s),
                s.kind.clone(),
                s.ipv4.clone().unwrap_or_else(|| "-".into()),
                s.created.get(..19).unwrap_or(&s.created).replace('T', " "),
                dash(&s.image),
                dash(&s.workspace),
            ]
        })
        .collect();
    print_rows(
        &[
            "NAME",
            "STATE",
            "SLOT",
            "KIND",
            "IPV4",
            "CREATED",
            "IMAGE",
            "WORKSPACE",
        ],
        &rows,
    );
}

/// `-` for an empty value.
fn dash(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.to_string()
    }
}

/// The slot, `-` for a launched container (it has none).
fn slot_of(s: &SandboxInfo) -> String {
    if s.slot == 0 {
        "-".into()
    } else {
        s.slot.to_string()
    }
}

/// Print aligned columns under a header; control characters in cells (a
/// newline or an escape in a workspace path) are shown escaped.
pub fn print_rows<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.clone().map(|c| crate::config::printable(&c)))
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Ask on the terminal; without one, only `--force` may destroy.
pub fn confirm(question: &str, force: bool) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question}: refusing without --force when not on a terminal"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The containers a command acts on: the names given, or (with `--all`,
/// after confirmation) every cci container. `None`: nothing to do.
async fn targets(
    client: &Client,
    names: Vec<String>,
    all: bool,
    verb: &str,
    force: bool,
) -> anyhow::Result<Option<Vec<String>>> {
    if !all {
        return Ok(Some(names));
    }
    let all = sandbox::list(client).await?;
    if all.is_empty() {
        println!("no cci containers");
        return Ok(None);
    }
    if !confirm(&format!("{verb} all {} cci containers", all.len()), force)? {
        return Ok(None);
    }
    Ok(Some(all.into_iter().map(|s| s.name).collect()))
}

/// Print one line per name, or the error; the exit code of the last error.
fn report<T>(
    name: &str,
    result: crate::incus::Result<T>,
    ok: impl Fn(T) -> String,
    code: &mut i32,
) {
    match result {
        Ok(v) => println!("{}", ok(v)),
        Err(e) => {
            eprintln!("cci: {name}: {e}");
            *code = super::exit_code(&e.into());
        }
    }
}

/// Run `op` on every name, a few at a time, and report in the given order.
async fn for_each<T, F, Fut>(names: &[String], op: F, ok: impl Fn(&str, T) -> String) -> i32
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = crate::incus::Result<T>>,
{
    use futures_util::StreamExt;
    let results: Vec<_> = futures_util::stream::iter(names.iter().cloned())
        .map(|name| {
            let fut = op(name.clone());
            async move { (name, fut.await) }
        })
        .buffered(8)
        .collect()
        .await;
    let mut code = 0;
    for (name, r) in results {
        report(&name, r, |v| ok(&name, v), &mut code);
    }
    code
}

pub async fn kill(client: &Client, args: KillArgs) -> anyhow::Result<i32> {
    let Some(names) = targets(client, args.names, args.all, "kill", args.force).await? else {
        return Ok(0);
    };
    let op = |name: String| async move { sandbox::kill(client, &name).await };
    let ok = |name: &str, state: StateSave| match super::session::describe(&state) {
        Some(s) => format!("killed {name}; {s}"),
        None => format!("killed {name}"),
    };
    Ok(for_each(&names, op, ok).await)
}

pub async fn shutdown(client: &Client, args: ShutdownArgs) -> anyhow::Result<i32> {
    let Some(names) = targets(client, args.names, args.all, "shut down", args.force).await? else {
        return Ok(0);
    };
    let grace = Duration::from_secs(args.timeout);
    let op = |name: String| async move { sandbox::shutdown(client, &name, grace).await };
    let ok = |name: &str, e: sandbox::Ended| {
        let what = match (&e.state, e.deleted) {
            (_, true) => format!("shut down {name} (deleted)"),
            (StateSave::Failed(_), false) => format!(
                "shut down {name} (kept, stopped, so its agent state is not lost; `cci kill {name}` drops it)"
            ),
            (_, false) => format!("shut down {name} (persistent: stopped and kept)"),
        };
        if let Some(w) = &e.warning {
            eprintln!("{w}");
        }
        match super::session::describe(&e.state) {
            Some(s) => format!("{what}; {s}"),
            None => what,
        }
    };
    Ok(for_each(&names, op, ok).await)
}

pub async fn persist(client: &Client, args: PersistArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    let names = if args.all {
        let names: Vec<String> = sandbox::list(client)
            .await?
            .into_iter()
            .filter(|s| {
                matches!(s.kind.as_str(), "shell" | "container")
                    && !s.persistent()
                    && s.state == "Running"
            })
            .map(|s| s.name)
            .collect();
        if names.is_empty() {
            println!("no running session or launched container to keep");
        }
        names
    } else {
        args.names
    };
    for name in &names {
        let r = sandbox::persist(client, name).await;
        let ok = |changed| match changed {
            true => format!("{name} is now persistent: kept when its session ends"),
            false => format!("{name} was already persistent"),
        };
        report(name, r, ok, &mut code);
    }
    Ok(code)
}

pub async fn clean(client: &Client, args: CleanArgs) -> anyhow::Result<i32> {
    if args.sessions {
        return super::session::clean(args.older_than, args.dry_run, args.force);
    }
    if args.orphans {
        let fw = crate::network::Nft::from_env();
        let r = crate::network::reconcile(client, &fw).await?;
        super::network::report(&r);
        println!(
            "{} orphaned firewall rule set(s) removed; {} guarded container(s) checked",
            r.removed.len(),
            r.guarded
        );
        return Ok(0);
    }
    let code = clean_containers(client, &args).await?;
    if !args.all || code != 0 {
        return Ok(code);
    }
    // --all: the saved sessions too, as the original's `clean --all` did.
    println!();
    super::session::clean(None, args.dry_run, args.force)
}

/// The container part of `cci clean` (`--all`: stopped persistent ones too).
async fn clean_containers(client: &Client, args: &CleanArgs) -> anyhow::Result<i32> {
    let plan = sandbox::clean_plan(client, args.all).await?;
    if plan.is_empty() {
        println!("nothing to clean");
        return Ok(0);
    }
    for item in &plan {
        println!(
            "{}  {}  ({})",
            item.name,
            item.state,
            item.reason.describe()
        );
    }
    if args.dry_run {
        return Ok(0);
    }
    if !confirm(
        &format!("remove these {} containers", plan.len()),
        args.force,
    )? {
        return Ok(1);
    }
    // The plan holds only containers cci made (marked), build containers included.
    // An ended session's agent state is saved first (kept, stopped, when it
    // cannot be).
    let ended: Vec<String> = plan
        .iter()
        .filter(|i| i.reason == sandbox::CleanReason::SessionEnded)
        .map(|i| i.name.clone())
        .collect();
    let names: Vec<String> = plan.into_iter().map(|item| item.name).collect();
    let op = |name: String| {
        let settle = ended.contains(&name);
        async move {
            if settle {
                return sandbox::end(client, &name, Duration::from_secs(5)).await;
            }
            sandbox::remove(client, &name).await?;
            Ok(sandbox::Ended {
                deleted: true,
                state: StateSave::Nothing,
                warning: None,
            })
        }
    };
    let ok = |name: &str, e: sandbox::Ended| {
        let what = if e.deleted {
            format!("removed {name}")
        } else {
            format!("kept {name}, stopped")
        };
        if let Some(w) = &e.warning {
            eprintln!("{w}");
        }
        match super::session::describe(&e.state) {
            Some(s) => format!("{what}; {s}"),
            None => what,
        }
    };
    Ok(for_each(&names, op, ok).await)
}

/// What `cci info` without a name shows: the newest container of the
/// workspace, else (`Err(id)`) its newest saved session.
async fn newest_of(client: &Client, args: &InfoArgs) -> anyhow::Result<Result<String, String>> {
    let ws = super::run::workspace_at(args.workspace.as_deref())?;
    let ws = ws.path_str();
    let newest = sandbox::list(client)
        .await?
        .into_iter()
        .filter(|s| s.workspace == ws)
        .max_by(|a, b| a.created.cmp(&b.created));
    if let Some(s) = newest {
        return Ok(Ok(s.name));
    }
    let saved = super::session::all_saved()?;
    match saved.iter().find(|(_, s)| s.meta.workspace == ws) {
        Some((_, s)) => Ok(Err(s.id().to_string())),
        None => Err(crate::incus::Error::NotFound(format!(
            "no cci container and no saved session of workspace {ws} (`cci list --all` shows them all)"
        ))
        .into()),
    }
}

pub async fn info(client: &Client, args: InfoArgs) -> anyhow::Result<i32> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => match newest_of(client, &args).await? {
            Ok(container) => container,
            Err(session) => {
                let shown = super::session::info(&session, args.format)?;
                return Ok(shown.unwrap_or(0));
            }
        },
    };
    if let Err(e) = sandbox::info(client, &name).await {
        if e.is_not_found()
            && let Some(code) = super::session::info(&name, args.format)?
        {
            return Ok(code);
        }
        return Err(e.into());
    }
    let all = sandbox::list_prefix(client, &name, true).await?;
    let Some(s) = all.into_iter().find(|s| s.name == name) else {
        return Err(crate::incus::Error::NotFound(format!("container {name}")).into());
    };
    let session_running =
        s.state == "Running" && sandbox::session_alive(client, &s.name, &s.account).await?;
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&s)?;
            v["session_running"] = session_running.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows = [
                ("Name", s.name.clone()),
                ("State", s.state.clone()),
                ("Slot", slot_of(&s)),
                ("Mode", s.mode.to_string()),
                ("Kind", s.kind.clone()),
                ("Workspace", dash(&s.workspace)),
                ("Image", dash(&s.image)),
                ("IPv4", s.ipv4.clone().unwrap_or_else(|| "-".into())),
                ("Created", s.created.clone()),
                ("Last started", dash(&s.last_started)),
                ("Agent", dash(&s.agent)),
                ("Network", dash(&s.network)),
                ("Session", dash(&s.session)),
                (
                    "Session running",
                    if session_running { "yes" } else { "no" }.into(),
                ),
            ];
            for (k, v) in rows {
                println!("{:<16} {}", format!("{k}:"), crate::config::printable(&v));
            }
        }
    }
    Ok(0)
}

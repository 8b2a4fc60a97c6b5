//! `cci clean`: remove stopped session containers, interrupted launches,
//! containers whose workspace is gone, orphaned firewall rules and (with
//! `--sessions` or `--all`) saved sessions; `--git-mirrors` and `--caches`
//! remove what sandboxes share and no container uses.

use std::time::Duration;

use clap::Args;

use super::targets::{confirm, for_each};
use crate::host::Host;
use crate::sandbox::{self, StateSave};

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
    /// Remove the seed mirrors of isolated git sessions that no container
    /// uses (they are made again, whole, by the next session).
    #[arg(long, conflicts_with_all = ["orphans", "sessions", "all"])]
    pub git_mirrors: bool,
    /// Remove the shared package caches (`[caches]`) that no container
    /// uses: their host folders and apt's storage volumes.
    #[arg(long, conflicts_with_all = ["orphans", "sessions", "all", "git_mirrors"])]
    pub caches: bool,
    /// With --sessions: only those saved more than DAYS days ago.
    #[arg(long, value_name = "DAYS", requires = "sessions")]
    pub older_than: Option<u64>,
}

pub async fn clean(host: &Host, args: CleanArgs) -> anyhow::Result<i32> {
    let client = &host.client;
    if args.sessions {
        return super::session::clean(args.older_than, args.dry_run, args.force);
    }
    if args.git_mirrors {
        return git_mirrors(host, &args).await;
    }
    if args.caches {
        return caches(host, &args).await;
    }
    if args.orphans {
        let r = crate::network::reconcile(client, host.policy()).await?;
        super::network::report(&r);
        println!(
            "{} orphaned firewall rule set(s) removed; {} guarded container(s) checked",
            r.removed.len(),
            r.guarded
        );
        return Ok(0);
    }
    let code = clean_containers(host, &args).await?;
    if !args.all || code != 0 {
        return Ok(code);
    }
    // --all: the saved sessions too, as the original's `clean --all` did.
    println!();
    super::session::clean(None, args.dry_run, args.force)
}

/// `cci clean --git-mirrors`.
async fn git_mirrors(host: &Host, args: &CleanArgs) -> anyhow::Result<i32> {
    use crate::sandbox::isolated::mirror;
    let unused = mirror::unused(&host.client).await?;
    if unused.is_empty() {
        println!("no unused git mirror");
        return Ok(0);
    }
    for m in &unused {
        println!(
            "{}  ({:.1} MB)",
            crate::config::printable(&m.dir.display().to_string()),
            m.bytes as f64 / 1e6
        );
    }
    if args.dry_run {
        return Ok(0);
    }
    if !confirm(
        &format!("remove these {} git mirrors", unused.len()),
        args.force,
    )? {
        return Ok(1);
    }
    let mut code = 0;
    for m in &unused {
        if let Err(e) = mirror::remove(&m.dir) {
            eprintln!("cci: cannot remove {}: {e}", m.dir.display());
            code = 1;
        }
    }
    Ok(code)
}

/// `cci clean --caches`.
async fn caches(host: &Host, args: &CleanArgs) -> anyhow::Result<i32> {
    use crate::sandbox::caches;
    let settings = &crate::config::current().caches;
    let unused = caches::unused(&host.client, settings).await?;
    if unused.is_empty() {
        println!(
            "no unused cache (in {}, and apt's storage volumes; one used in the last {} minutes counts as used)",
            crate::config::printable(&settings.dir.display().to_string()),
            caches::unused::RECENT.as_secs() / 60
        );
        return Ok(0);
    }
    for c in &unused {
        println!("{}", c.describe());
    }
    if args.dry_run {
        return Ok(0);
    }
    if !confirm(
        &format!(
            "remove these {} caches (the next sandboxes download again)",
            unused.len()
        ),
        args.force,
    )? {
        return Ok(1);
    }
    // Judged again now (a sandbox may have started while we asked):
    // only what is still unused goes, each volume before its folder, and a
    // folder whose volume could not go stays with it.
    let now = caches::unused(&host.client, settings).await?;
    let mut code = 0;
    let mut kept: Vec<std::path::PathBuf> = Vec::new();
    for c in unused.iter().filter(|c| now.iter().any(|n| n.same(c))) {
        if let caches::Unused::Folder { dir, .. } = c
            && kept.contains(dir)
        {
            continue;
        }
        if let Err(e) = caches::remove(&host.client, c).await {
            eprintln!("cci: {}", crate::config::printable(&e));
            if let caches::Unused::Volume { scope, .. } = c {
                kept.push(scope.clone());
            }
            code = 1;
        }
    }
    Ok(code)
}

/// The container part of `cci clean` (`--all`: stopped persistent ones too).
async fn clean_containers(host: &Host, args: &CleanArgs) -> anyhow::Result<i32> {
    let plan = sandbox::clean_plan(host, args.all).await?;
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
                return sandbox::end(host, &name, Duration::from_secs(5), "exit").await;
            }
            sandbox::remove(host, &name).await?;
            Ok(sandbox::Ended {
                deleted: true,
                elsewhere: false,
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

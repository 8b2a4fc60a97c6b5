//! `cci status`: every slot at a glance. On a terminal, the live dashboard
//! ([`super::dashboard`]); `--watch`: the table, then a line per change;
//! `--format json`: the rows once; otherwise the table once.
//! `cci events`: one line per change of any slot, for tools.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::Format;
use super::output::{print_json, print_rows};
use crate::attention::{self, Event, Row, Watch};
use crate::host::Host;

/// Options of `cci status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format (json: the rows once, or with --watch a JSON array per change).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Plain lines instead of the full-screen view: the table, then one
    /// line per change until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Only the slots whose workspace path contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// Options of `cci events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Be the background notifier (`[notify]`) instead of printing; `cci
    /// shell` starts it.
    #[arg(long, hide = true)]
    pub notify: bool,
}

/// How often the watchers look.
pub const TICK: Duration = Duration::from_secs(1);

pub async fn status(host: &Host, args: StatusArgs) -> anyhow::Result<i32> {
    let keep = |rows: Vec<Row>| -> Vec<Row> {
        match &args.filter {
            Some(f) => rows
                .into_iter()
                .filter(|r| r.workspace.contains(f.as_str()))
                .collect(),
            None => rows,
        }
    };
    let on_terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.watch && args.format == Format::Table && on_terminal {
        return super::dashboard::run(host, args.filter.clone()).await;
    }
    if !args.watch {
        let rows = keep(attention::snapshot(host).await?);
        match args.format {
            Format::Json => print_json(&rows)?,
            Format::Table => print_table(&rows, attention::now()),
        }
        return Ok(0);
    }
    let mut watch = Watch::new(host);
    let mut steady = Steady::default();
    let (rows, _) = watch.tick().await?;
    let rows = keep(rows);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&rows)?),
        Format::Table => print_table(&rows, attention::now()),
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        // (Ctrl-C also while a look waits for a slow daemon.)
        let look = tokio::select! {
            r = steady.tick(&mut watch) => r?,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let Some((rows, events)) = look else {
            continue;
        };
        let rows = keep(rows);
        let events: Vec<&Event> = events
            .iter()
            .filter(|e| rows.iter().any(|r| r.name == e.container) || e.event == "removed")
            .filter(|e| {
                args.filter
                    .as_ref()
                    .is_none_or(|f| e.workspace.contains(f.as_str()))
            })
            .collect();
        if events.is_empty() {
            continue;
        }
        match args.format {
            Format::Json => println!("{}", serde_json::to_string(&rows)?),
            Format::Table => {
                for e in &events {
                    println!("{}", event_line(e));
                }
            }
        }
        if ring(&host.config.notify, events.into_iter()) {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = err.write_all(b"\x07").and_then(|()| err.flush());
        }
    }
}

/// Whether these changes ring the bell (`[notify] bell`, and one of the
/// kinds `[notify] on` names).
pub fn ring<'a>(n: &crate::config::Notify, mut events: impl Iterator<Item = &'a Event>) -> bool {
    n.bell && events.any(|e| attention::notify::kind(e).is_some_and(|k| n.on.contains(&k)))
}

pub async fn events(host: &Host, args: EventsArgs) -> anyhow::Result<i32> {
    if args.notify {
        attention::notify::serve(host).await?;
        return Ok(0);
    }
    let mut watch = Watch::new(host);
    let mut steady = Steady::default();
    watch.tick().await?;
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        let look = tokio::select! {
            r = steady.tick(&mut watch) => r?,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let Some((_, events)) = look else {
            continue;
        };
        for e in events {
            match args.format {
                Format::Json => println!("{}", serde_json::to_string(&e)?),
                Format::Table => println!("{}", event_line(&e)),
            }
        }
    }
}

/// A watcher's looks that ride out a daemon that stops answering for a
/// while (a restart, an upgrade): the first failure and the return are said
/// on standard error, and what changed meanwhile comes as events after. A
/// refusal (rights, trust, a bad answer) ends the watch with its error.
#[derive(Default)]
struct Steady {
    failing: bool,
}

impl Steady {
    /// One look; `Ok(None)` while the daemon is away.
    async fn tick(
        &mut self,
        watch: &mut Watch,
    ) -> crate::incus::Result<Option<(Vec<Row>, Vec<Event>)>> {
        match watch.tick().await {
            Ok(r) => {
                if std::mem::take(&mut self.failing) {
                    eprintln!("cci: the Incus daemon answers again");
                }
                Ok(Some(r))
            }
            Err(e) if e.is_daemon_away() => {
                if !std::mem::replace(&mut self.failing, true) {
                    eprintln!(
                        "cci: the Incus daemon does not answer ({}); still watching",
                        crate::config::printable(&format!("{e:#}"))
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// `HH:MM:SS NAME EVENT (from STATE) DETAIL`, printable.
pub fn event_line(e: &Event) -> String {
    let (_, _, _, h, m, s) = crate::state::utc(e.time / 1000);
    let from = e
        .from
        .map(|f| format!(" (was {})", f.word()))
        .unwrap_or_default();
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", e.detail)
    };
    crate::config::printable(&format!(
        "{h:02}:{m:02}:{s:02} {} {}{from}{detail}",
        e.container, e.event
    ))
}

/// A duration in its largest unit: `42s`, `5m`, `3h`, `2d`.
pub fn ago(since: Option<u64>, now: u64) -> String {
    let Some(t) = since else { return "-".into() };
    let s = now.saturating_sub(t);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Bytes as `512K`, `87M`, `1.2G`.
pub fn size(bytes: u64) -> String {
    const K: u64 = 1024;
    match bytes {
        0 => "-".into(),
        b if b < K * K => format!("{}K", b.div_ceil(K)),
        b if b < K * K * K => format!("{}M", b / (K * K)),
        b => format!("{:.1}G", b as f64 / (K * K * K) as f64),
    }
}

/// The row's cells, as the table and the dashboard show them.
pub fn cells(r: &Row, now: u64) -> [String; 10] {
    let state = if r.detail.is_empty() {
        r.state.word().to_string()
    } else {
        format!("{} ({})", r.state.word(), r.detail)
    };
    [
        r.name.clone(),
        super::output::dash(r.workspace_short()),
        if r.slot == 0 {
            "-".into()
        } else {
            r.slot.to_string()
        },
        super::output::dash(&r.agent),
        state,
        ago(r.since, now),
        r.cpu_percent
            .map_or_else(|| format!("{:.0}s", r.cpu_seconds), |p| format!("{p:.0}%")),
        size(r.memory_bytes),
        r.blocked.to_string(),
        r.last_line.clone(),
    ]
}

/// The columns' names.
pub const HEAD: [&str; 10] = [
    "NAME",
    "WORKSPACE",
    "SLOT",
    "AGENT",
    "STATE",
    "FOR",
    "CPU",
    "MEM",
    "BLOCKED",
    "LAST LINE",
];

fn print_table(rows: &[Row], now: u64) {
    if rows.is_empty() {
        println!("no cci containers");
        return;
    }
    let cells: Vec<[String; 10]> = rows.iter().map(|r| cells(r, now)).collect();
    print_rows(&HEAD, &cells);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_short() {
        assert_eq!(ago(None, 5), "-");
        assert_eq!(ago(Some(100), 142), "42s");
        assert_eq!(ago(Some(0), 300), "5m");
        assert_eq!(ago(Some(0), 3 * 3600 + 5), "3h");
        assert_eq!(ago(Some(0), 2 * 86_400), "2d");
        assert_eq!(ago(Some(500), 100), "0s");
        assert_eq!(size(0), "-");
        assert_eq!(size(1000), "1K");
        assert_eq!(size(87 << 20), "87M");
        assert_eq!(size(3 << 29), "1.5G");
    }

    #[test]
    fn an_event_line_is_printable() {
        let e = Event {
            time: 3_723_000,
            container: "cci-x-1".into(),
            workspace: "/w".into(),
            slot: 1,
            agent: "claude".into(),
            event: "waiting".into(),
            from: Some(attention::AgentState::Working),
            detail: "needs\u{1b}[2J you".into(),
        };
        let l = event_line(&e);
        assert!(
            l.starts_with("01:02:03 cci-x-1 waiting (was working): needs"),
            "{l}"
        );
        assert!(!l.contains('\u{1b}'));
    }
}

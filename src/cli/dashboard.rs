//! `cci status` on a terminal: the live dashboard. A background task
//! watches every slot ([`Watch`]) and hands the rows over; this loop draws
//! them and takes keys: attach (back here on detach), send a line, shut
//! down, kill, the network log, a workspace filter.

use std::io::Write;
use std::time::Duration;

use crossterm::event::{self, Event as Input, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row as TableRow, Table, TableState};

use super::status::{HEAD, TICK, cells};
use crate::attention::{self, Row, Watch};
use crate::host::Host;
use crate::incus::InstanceStatus;
use crate::sandbox::{self, Keys};

/// What the keys are doing.
enum Mode {
    /// Moving about.
    Browse,
    /// Typing a line to send to this container's session (named when the
    /// key was pressed: rows move as containers come and go).
    Send(String, String),
    /// Typing the workspace filter.
    Filter(String),
    /// Asking before shutting down (`false`) or killing (`true`) this
    /// container.
    Confirm(bool, String),
    /// Showing the selected container's network log.
    Log(Vec<String>),
}

/// What the dashboard asks its caller to do with the terminal.
enum Leave {
    Quit,
    Attach(Box<Row>),
}

struct Ui {
    rows: Vec<Row>,
    error: Option<String>,
    filter: String,
    selected: TableState,
    mode: Mode,
    message: String,
}

impl Ui {
    fn shown(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.workspace.contains(self.filter.as_str()))
            .collect()
    }

    fn current(&self) -> Option<Row> {
        let shown = self.shown();
        let i = self.selected.selected()?;
        shown.get(i).map(|r| (*r).clone())
    }
}

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

fn enter() -> anyhow::Result<Term> {
    crossterm::terminal::enable_raw_mode()?;
    let mut out = std::io::stdout();
    // (Cleared here: ratatui's own clear asks the terminal where its cursor
    // is, and a terminal that does not answer would hold the start up.)
    crossterm::execute!(
        out,
        crossterm::terminal::EnterAlternateScreen,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    Ok(Terminal::new(CrosstermBackend::new(out))?)
}

fn leave(term: &mut Term) {
    let _ = crossterm::execute!(
        term.backend_mut(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    crate::terminal::restore();
    let _ = std::io::stdout().flush();
}

pub async fn run(host: &Host, filter: Option<String>) -> anyhow::Result<i32> {
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<Result<Vec<Row>, String>>>(None);
    let mut watch = Watch::new(host);
    let notify = host.config.notify.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let r = watch.tick().await.map_err(|e| e.to_string());
            if let Ok((_, events)) = &r
                && super::status::ring(&notify, events.iter())
            {
                // (Between frames: the bell moves nothing on the screen.)
                let mut out = std::io::stdout();
                let _ = out.write_all(b"\x07").and_then(|()| out.flush());
            }
            if tx.send(Some(r.map(|(rows, _)| rows))).is_err() {
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    });
    let mut ui = Ui {
        rows: Vec::new(),
        error: None,
        filter: filter.unwrap_or_default(),
        selected: TableState::default().with_selected(Some(0)),
        mode: Mode::Browse,
        message: "looking...".into(),
    };
    let result = loop {
        let mut term = enter()?;
        let left = session(host, &mut term, &mut ui, &mut rx).await;
        leave(&mut term);
        match left {
            Ok(Leave::Quit) => break Ok(0),
            Err(e) => break Err(e),
            Ok(Leave::Attach(row)) => {
                let slot = sandbox::Slot::new(row.slot).unwrap_or(sandbox::Slot::MIN);
                let target = sandbox::info(host, &row.name).await;
                ui.message = match target {
                    Ok(t) => match super::shell::attach_session(host, &row.name, slot, &t.account)
                        .await
                    {
                        Ok(_) => format!("back from {}", row.name),
                        Err(e) => format!("{}: {e}", row.name),
                    },
                    Err(e) => format!("{}: {e}", row.name),
                };
            }
        }
    };
    ticker.abort();
    result
}

/// Draw and take keys until the user quits or wants the terminal.
async fn session(
    host: &Host,
    term: &mut Term,
    ui: &mut Ui,
    rx: &mut tokio::sync::watch::Receiver<Option<Result<Vec<Row>, String>>>,
) -> anyhow::Result<Leave> {
    loop {
        if rx.has_changed().unwrap_or(false) {
            match rx.borrow_and_update().clone() {
                Some(Ok(rows)) => {
                    ui.rows = rows;
                    ui.error = None;
                    if ui.message == "looking..." {
                        ui.message.clear();
                    }
                }
                Some(Err(e)) => ui.error = Some(e),
                None => {}
            }
        }
        let n = ui.shown().len();
        match ui.selected.selected() {
            Some(i) if i >= n && n > 0 => ui.selected.select(Some(n - 1)),
            None if n > 0 => ui.selected.select(Some(0)),
            _ => {}
        }
        term.draw(|f| draw(f, ui))?;
        // Keys, else a short wait (the rows come from the ticker).
        let mut handled = false;
        while event::poll(Duration::ZERO)? {
            handled = true;
            if let Input::Key(k) = event::read()?
                && k.kind != KeyEventKind::Release
                && let Some(leave) = key(host, ui, k).await
            {
                return Ok(leave);
            }
        }
        if !handled {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
}

/// Take one key; `Some` when the dashboard should give up the terminal.
async fn key(host: &Host, ui: &mut Ui, k: KeyEvent) -> Option<Leave> {
    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
    match std::mem::replace(&mut ui.mode, Mode::Browse) {
        Mode::Send(name, mut text) => match k.code {
            KeyCode::Enter => ui.message = send(host, &name, text).await,
            KeyCode::Esc => {}
            _ if ctrl_c => {}
            KeyCode::Backspace => {
                text.pop();
                ui.mode = Mode::Send(name, text);
            }
            KeyCode::Char(c) => {
                text.push(c);
                ui.mode = Mode::Send(name, text);
            }
            _ => ui.mode = Mode::Send(name, text),
        },
        Mode::Filter(mut text) => match k.code {
            KeyCode::Enter => ui.filter = text,
            KeyCode::Esc => {}
            _ if ctrl_c => {}
            KeyCode::Backspace => {
                text.pop();
                ui.mode = Mode::Filter(text);
            }
            KeyCode::Char(c) => {
                text.push(c);
                ui.mode = Mode::Filter(text);
            }
            _ => ui.mode = Mode::Filter(text),
        },
        Mode::Confirm(kill, name) => {
            if let KeyCode::Char('y' | 'Y') = k.code {
                ui.message = end(host, &name, kill).await;
            } else {
                ui.message = "nothing done".into();
            }
        }
        Mode::Log(_) => {}
        Mode::Browse => return browse(ui, k, ctrl_c),
    }
    None
}

fn browse(ui: &mut Ui, k: KeyEvent, ctrl_c: bool) -> Option<Leave> {
    let n = ui.shown().len();
    let at = ui.selected.selected().unwrap_or(0);
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return Some(Leave::Quit),
        _ if ctrl_c => return Some(Leave::Quit),
        KeyCode::Up => ui.selected.select(Some(at.saturating_sub(1))),
        KeyCode::Down if n > 0 => ui.selected.select(Some((at + 1).min(n - 1))),
        KeyCode::Enter | KeyCode::Char('a') => match ui.current() {
            Some(r) if r.status == InstanceStatus::Running && r.kind == "shell" => {
                return Some(Leave::Attach(Box::new(r)));
            }
            Some(r) => ui.message = format!("{} has no session to attach to", r.name),
            None => {}
        },
        KeyCode::Char(c @ ('s' | 'd' | 'k')) => {
            if let Some(r) = ui.current() {
                ui.mode = match c {
                    's' => Mode::Send(r.name, String::new()),
                    'd' => Mode::Confirm(false, r.name),
                    _ => Mode::Confirm(true, r.name),
                };
            }
        }
        KeyCode::Char('/') => ui.mode = Mode::Filter(ui.filter.clone()),
        KeyCode::Char('n') => {
            if let Some(r) = ui.current() {
                ui.mode = Mode::Log(network_log(&r.name));
            }
        }
        _ => {}
    }
    None
}

/// How long typing into a session may take (its tmux may never answer).
const SEND_TIME: Duration = Duration::from_secs(10);
/// How long a shutdown or kill may take here (each is bounded inside too).
const END_TIME: Duration = Duration::from_secs(180);

/// Type `text` and Enter into `name`'s session.
async fn send(host: &Host, name: &str, text: String) -> String {
    let typed = async {
        let account = sandbox::info(host, name).await?.account;
        let keys = Keys::Text { text, enter: true };
        sandbox::send_keys(&host.client, name, &keys, &account)
            .await
            .map_err(anyhow::Error::from)
    };
    match tokio::time::timeout(SEND_TIME, typed).await {
        Ok(Ok(())) => format!("sent to {name}"),
        Ok(Err(e)) => format!("{name}: {e}"),
        Err(_) => format!("{name}: its session did not answer"),
    }
}

/// Shut down (or kill) `name`, as `cci shutdown` / `cci kill` do.
async fn end(host: &Host, name: &str, kill: bool) -> String {
    tokio::time::timeout(END_TIME, end_now(host, name, kill))
        .await
        .unwrap_or_else(|_| format!("{name}: gave up after {} s", END_TIME.as_secs()))
}

async fn end_now(host: &Host, name: &str, kill: bool) -> String {
    if kill {
        match sandbox::kill(host, name).await {
            Ok(state) => match super::session::describe(&state) {
                Some(s) => format!("killed {name}; {s}"),
                None => format!("killed {name}"),
            },
            Err(e) => format!("{name}: {e}"),
        }
    } else {
        match sandbox::shutdown(host, name, super::shutdown::GRACE).await {
            Ok(_) => format!("shut down {name}"),
            Err(e) => format!("{name}: {e}"),
        }
    }
}

/// The container's last network decisions, newest last.
fn network_log(name: &str) -> Vec<String> {
    let Ok(path) = crate::network::egress::decisions_log() else {
        return vec!["no network log".into()];
    };
    let all = crate::proxy::log::read(&path, Some(name)).unwrap_or_default();
    if all.is_empty() {
        return vec![format!(
            "no decisions of {name} (the log has those of --network proxy)"
        )];
    }
    all.iter()
        .rev()
        .take(200)
        .rev()
        .map(|d| {
            let (_, _, _, h, m, s) = crate::state::utc(d.time / 1000);
            let what = if d.allowed { "allowed" } else { "BLOCKED" };
            crate::config::printable(&format!(
                "{h:02}:{m:02}:{s:02} {what} {}:{} ({})",
                d.host, d.port, d.reason
            ))
        })
        .collect()
}

fn draw(f: &mut ratatui::Frame, ui: &mut Ui) {
    let area = f.area();
    let [top, table_area, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);
    let now = attention::now();
    let shown: Vec<Row> = ui.shown().into_iter().cloned().collect();
    let waiting = shown.iter().filter(|r| r.state.wants_user()).count();
    let title = format!(
        "cci status: {} containers, {waiting} want you{}",
        shown.len(),
        if ui.filter.is_empty() {
            String::new()
        } else {
            format!(" (workspace ~ {:?})", ui.filter)
        }
    );
    f.render_widget(Paragraph::new(crate::config::printable(&title)), top);
    let body: Vec<TableRow> = shown
        .iter()
        .map(|r| {
            let c = cells(r, now).map(|c| crate::config::printable(&c));
            let style = if r.state.wants_user() {
                Style::new().add_modifier(Modifier::BOLD)
            } else if r.status != InstanceStatus::Running {
                Style::new().add_modifier(Modifier::DIM)
            } else {
                Style::new()
            };
            TableRow::new(c).style(style)
        })
        .collect();
    let widths = [
        Constraint::Max(28),
        Constraint::Max(16),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Max(40),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let table = Table::new(body, widths)
        .header(TableRow::new(HEAD).style(Style::new().add_modifier(Modifier::UNDERLINED)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, table_area, &mut ui.selected);
    let help = match &ui.mode {
        Mode::Browse => {
            "Enter attach  s send a line  d shut down  k kill  n network log  / filter  q quit"
                .to_string()
        }
        Mode::Send(name, t) => format!("send to {name}> {t}_   (Enter sends, Esc cancels)"),
        Mode::Filter(t) => format!("workspace filter> {t}_   (Enter applies, Esc cancels)"),
        Mode::Confirm(kill, name) => {
            format!("{} {name}? y/n", if *kill { "kill" } else { "shut down" })
        }
        Mode::Log(_) => "any key closes the log".into(),
    };
    let status = match &ui.error {
        Some(e) => format!("error: {e}"),
        None => ui.message.clone(),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(crate::config::printable(&status)),
            Line::from(crate::config::printable(&help)),
        ]),
        foot,
    );
    if let Mode::Log(lines) = &ui.mode {
        let inner = table_area;
        let take = inner.height.saturating_sub(2) as usize;
        let text: Vec<Line> = lines
            .iter()
            .skip(lines.len().saturating_sub(take))
            .map(|l| Line::from(l.as_str()))
            .collect();
        f.render_widget(Clear, inner);
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(format!(
                " network log: {} ",
                ui.current().map(|r| r.name).unwrap_or_default()
            ))),
            inner,
        );
    }
}

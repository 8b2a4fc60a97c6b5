//! What a session's agent is doing, decided from one look ([`Probe`]): by
//! the agent's own hook events where it has them (Claude Code), else by the
//! screen (a heuristic, documented as such: a question on the last line is
//! waiting, recent output is working, quiet is idle). Pure.

use serde::Serialize;

use super::probe::Probe;

/// A slot's state, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// The agent is at work.
    Working,
    /// The agent asks the user something (a permission, a question).
    Waiting,
    /// The agent finished its turn and sits at its prompt.
    Idle,
    /// The agent's program ended (the session's shell may still run).
    Exited,
    /// The session is being set up.
    Starting,
    /// A running container with no session to look at (`cci run`, a
    /// launched container).
    Running,
    /// The container is stopped.
    Stopped,
}

impl AgentState {
    /// The word the dashboard and `--watch` show.
    pub fn word(self) -> &'static str {
        match self {
            AgentState::Working => "working",
            AgentState::Waiting => "waiting",
            AgentState::Idle => "idle",
            AgentState::Exited => "exited",
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Stopped => "stopped",
        }
    }

    /// Whether the user is wanted (the dashboard's highlight).
    pub fn wants_user(self) -> bool {
        matches!(
            self,
            AgentState::Waiting | AgentState::Idle | AgentState::Exited
        )
    }
}

/// How the state was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// The agent's hook events.
    Hooks,
    /// The screen (heuristic).
    Screen,
    /// The container's status alone.
    Container,
}

/// The decision for one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The state.
    pub state: AgentState,
    /// Since when (Unix seconds), when the look tells.
    pub since: Option<u64>,
    /// More words: the agent's notification, the exit status.
    pub detail: String,
    /// How it was decided.
    pub basis: Basis,
}

/// Output within this many seconds is work going on.
pub const ACTIVE_SECS: u64 = 3;
/// An agent its hooks call working that has printed nothing for this long
/// stopped without saying so (an interrupted turn): idle.
pub const SILENT_SECS: u64 = 30;

/// The state line `WORD EPOCH [REST]`, when it is one.
fn state_line(line: &str) -> Option<(&str, u64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let word = parts.next()?;
    let time = parts.next()?.parse().ok()?;
    Some((word, time, parts.next().unwrap_or("").trim()))
}

/// A notification's own words (Claude Code's event JSON: `message`) and
/// whether it is the "waiting for your input" reminder of an idle prompt.
fn notification(json: &str) -> (String, bool) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let message = v
        .get("message")
        .and_then(|m| m.as_str())
        .map(|m| {
            crate::terminal::strip_controls(m)
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default();
    let idle = v.get("notification_type").and_then(|t| t.as_str()) == Some("idle_prompt");
    (message, idle)
}

/// Whether a screen line asks the user something.
pub fn asks(line: &str) -> bool {
    let l = line.trim().to_ascii_lowercase();
    const MARKS: &[&str] = &[
        "(y/n)",
        "[y/n]",
        "(yes/no)",
        "[yes/no]",
        "press enter",
        "(y)es",
        "continue?",
    ];
    !l.is_empty() && (l.ends_with('?') || MARKS.iter().any(|m| l.contains(m)))
}

/// Decide from `probe` at time `now`; `hooks`: the agent writes hook
/// events (Claude Code).
pub fn derive(probe: &Probe, hooks: bool, now: u64) -> Derived {
    let event = state_line(&probe.state_line);
    let d = |state, since, detail: &str, basis| Derived {
        state,
        since,
        detail: detail.to_string(),
        basis,
    };
    if let Some(("exited", t, rest)) = event {
        let status = rest.split_whitespace().next().unwrap_or("");
        let detail = if status == "limit" {
            "the session's time limit ended it".to_string()
        } else if status.chars().all(|c| c.is_ascii_digit()) && !status.is_empty() {
            format!("status {status}")
        } else {
            String::new()
        };
        return d(AgentState::Exited, Some(t), &detail, Basis::Hooks);
    }
    if !probe.session || probe.dead {
        return d(AgentState::Starting, None, "", Basis::Screen);
    }
    let quiet = now.saturating_sub(probe.activity);
    if hooks && let Some((word, t, rest)) = event {
        match word {
            "prompt" | "tool" if quiet >= SILENT_SECS && probe.activity > 0 => {
                return d(AgentState::Idle, Some(probe.activity), "", Basis::Screen);
            }
            "prompt" | "tool" => return d(AgentState::Working, Some(t), "", Basis::Hooks),
            "stop" | "started" => return d(AgentState::Idle, Some(t), "", Basis::Hooks),
            "notify" => {
                let (message, idle) = notification(rest);
                let state = if idle {
                    AgentState::Idle
                } else {
                    AgentState::Waiting
                };
                return d(state, Some(t), &message, Basis::Hooks);
            }
            _ => {}
        }
    }
    if asks(&probe.last_line) {
        d(AgentState::Waiting, None, "", Basis::Screen)
    } else if quiet < ACTIVE_SECS {
        d(AgentState::Working, None, "", Basis::Screen)
    } else {
        d(AgentState::Idle, Some(probe.activity), "", Basis::Screen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(activity: u64, state: &str, last: &str) -> Probe {
        Probe {
            session: true,
            activity,
            dead: false,
            state_line: state.into(),
            last_line: last.into(),
        }
    }

    #[test]
    fn hook_events_decide_for_claude() {
        let now = 1000;
        let s = |line: &str| derive(&look(999, line, "> "), true, now);
        assert_eq!(s("started 900").state, AgentState::Idle);
        assert_eq!(s("prompt 950").state, AgentState::Working);
        assert_eq!(s("prompt 950").since, Some(950));
        assert_eq!(s("tool 960").state, AgentState::Working);
        assert_eq!(s("stop 970").state, AgentState::Idle);
        let w = s(
            r#"notify 980 {"message":"Claude needs your permission to use Bash","notification_type":"permission_prompt"}"#,
        );
        assert_eq!(w.state, AgentState::Waiting);
        assert_eq!(w.detail, "Claude needs your permission to use Bash");
        assert_eq!(w.basis, Basis::Hooks);
        let i = s(
            r#"notify 990 {"message":"Claude is waiting for your input","notification_type":"idle_prompt"}"#,
        );
        assert_eq!(i.state, AgentState::Idle);
        // Cut JSON still says waiting.
        assert_eq!(
            s(r#"notify 980 {"message":"Claude ne"#).state,
            AgentState::Waiting
        );
        assert_eq!(
            s("exited 995 limit").detail,
            "the session's time limit ended it"
        );
        let e = s("exited 995 3");
        assert_eq!(
            (e.state, e.detail.as_str()),
            (AgentState::Exited, "status 3")
        );
    }

    #[test]
    fn a_silent_working_agent_is_idle_and_garbage_falls_back_to_the_screen() {
        let quiet = derive(&look(900, "prompt 890", "> "), true, 1000);
        assert_eq!(
            (quiet.state, quiet.basis),
            (AgentState::Idle, Basis::Screen)
        );
        for junk in ["", "prompt", "prompt soon", "dance 5", "\u{1b}[2J 5"] {
            let d = derive(&look(999, junk, "$ "), true, 1000);
            assert_eq!(
                (d.state, d.basis),
                (AgentState::Working, Basis::Screen),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn the_screen_decides_for_agents_without_hooks() {
        let now = 1000;
        // Hook-like lines are the pane's own for other agents: only
        // `started` and `exited` (which the pane writes) count.
        assert_eq!(
            derive(&look(999, "stop 5", "> "), false, now).state,
            AgentState::Working
        );
        assert_eq!(
            derive(&look(900, "started 5", "> "), false, now).state,
            AgentState::Idle
        );
        assert_eq!(
            derive(&look(900, "started 5", "> "), false, now).since,
            Some(900)
        );
        for q in [
            "Apply these edits? ",
            "Run it (y/n)",
            "Overwrite [Y/n]",
            "Press Enter to continue",
        ] {
            assert_eq!(
                derive(&look(999, "", q), false, now).state,
                AgentState::Waiting,
                "{q}"
            );
        }
        assert_eq!(
            derive(&look(0, "exited 7 0", ""), false, now).state,
            AgentState::Exited
        );
        let mut gone = look(0, "", "");
        gone.session = false;
        assert_eq!(derive(&gone, false, now).state, AgentState::Starting);
    }

    #[test]
    fn every_state_has_a_word() {
        for s in [
            AgentState::Working,
            AgentState::Waiting,
            AgentState::Idle,
            AgentState::Exited,
            AgentState::Starting,
            AgentState::Running,
            AgentState::Stopped,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.word());
        }
    }
}

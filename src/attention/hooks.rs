//! How a session tells what its agent is doing: one line in the agent
//! user's home, [`STATE_FILE`], `EVENT EPOCH [DETAIL]`. The session's pane
//! writes `started` before the agent and `exited EPOCH STATUS` after it (for
//! every agent); Claude Code writes the rest through its own hooks, which
//! cci merges into its settings at every start ([`install`]): `prompt` when
//! a prompt is submitted, `tool` before a tool runs, `notify` (with the
//! notification's JSON) when it needs the user, `stop` when its turn ends.
//!
//! The file is the agent's to write: cci reads at most one bounded line of
//! it, inside the container, and only ever shows what it says (see
//! [`super::probe`]). Nothing in it reaches a shell or a path on the host.

use serde_json::{Map, Value};

/// The state line's file name in the agent user's home.
pub const STATE_FILE: &str = ".cci-agent-state";
/// The state changes of the session, `WORD EPOCH` a line, in the home.
pub const EVENTS_FILE: &str = ".cci-agent-events";

/// Claude Code hook events and the word each writes.
pub const EVENTS: &[(&str, &str)] = &[
    ("UserPromptSubmit", "prompt"),
    ("PreToolUse", "tool"),
    ("Notification", "notify"),
    ("Stop", "stop"),
];

/// The hook command for `word`: a shell snippet (Claude Code runs hook
/// commands with a shell) that replaces the state line atomically, appends
/// the word to [`EVENTS_FILE`] when it differs from the last one there (the
/// session record's time waiting and idle; Claude Code's idle reminder is
/// logged as `stop`), and never fails the agent's action. `notify` keeps
/// the event's JSON (its message), on one line and cut at 2000 bytes. No `"`
/// or `\` in it, so it reads the same in the JSON of the settings file.
pub fn command(word: &str) -> String {
    let (detail, logged) = if word == "notify" {
        (
            "head -c 2000 | tr -d '[:cntrl:]'",
            "w=notify; grep -q idle_prompt $f && w=stop",
        )
    } else {
        ("cat >/dev/null", "w=WORD")
    };
    let logged = logged.replace("WORD", word);
    format!(
        "f=$HOME/{STATE_FILE}; e=$HOME/{EVENTS_FILE}; {{ printf '{word} %s ' $(date +%s); {detail}; echo; }} >$f.tmp 2>/dev/null && mv -f $f.tmp $f; {logged}; [ $(tail -n 1 $e 2>/dev/null | cut -d ' ' -f 1)x = ${{w}}x ] || echo $w $(date +%s) >>$e 2>/dev/null; exit 0"
    )
}

/// Whether a hook command is one of cci's (any version of it).
fn is_ours(command: &str) -> bool {
    command.contains(STATE_FILE)
}

/// Merge cci's hooks into Claude Code's settings `value` (an object): for
/// each event, the user's own hook groups stay, an earlier cci hook is
/// replaced, and cci's comes last. A `hooks` value that is not an object is
/// replaced (the settings merge keeps an invalid file aside already).
pub fn install(value: &mut Value) {
    let Value::Object(settings) = value else {
        return;
    };
    let hooks = settings
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if !hooks.is_object() {
        *hooks = Value::Object(Map::new());
    }
    let Value::Object(hooks) = hooks else { return };
    for (event, word) in EVENTS {
        let groups = hooks
            .entry(event.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !groups.is_array() {
            *groups = Value::Array(Vec::new());
        }
        let Value::Array(groups) = groups else {
            continue;
        };
        groups.retain(|g| {
            !g.get("hooks").and_then(Value::as_array).is_some_and(|hs| {
                hs.iter().any(|h| {
                    h.get("command")
                        .and_then(Value::as_str)
                        .is_some_and(is_ours)
                })
            })
        });
        groups.push(serde_json::json!({
            "hooks": [{"type": "command", "command": command(word)}]
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_need_no_json_escaping_and_write_the_state_file() {
        for (_, word) in EVENTS {
            let c = command(word);
            assert!(!c.contains('"') && !c.contains('\\'), "{c}");
            assert!(c.contains(STATE_FILE) && c.contains(&format!("'{word} %s '")));
            assert!(c.ends_with("exit 0"));
        }
        assert!(command("notify").contains("head -c 2000"));
        assert!(command("stop").contains("cat >/dev/null"));
    }

    #[test]
    fn the_users_hooks_stay_and_ours_are_replaced_not_repeated() {
        let mut v = serde_json::json!({
            "permissions": {"defaultMode": "bypassPermissions"},
            "hooks": {
                "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}],
                "Notification": [{"hooks": [{"type": "command", "command": "old f=$HOME/.cci-agent-state"}]}],
                "SessionEnd": [{"hooks": [{"type": "command", "command": "mine"}]}],
            }
        });
        install(&mut v);
        install(&mut v);
        let stop = v["hooks"]["Stop"].as_array().unwrap();
        assert_eq!(stop.len(), 2);
        assert_eq!(stop[0]["hooks"][0]["command"], "say done");
        assert_eq!(stop[1]["hooks"][0]["command"], command("stop"));
        let notify = v["hooks"]["Notification"].as_array().unwrap();
        assert_eq!(notify.len(), 1);
        assert_eq!(notify[0]["hooks"][0]["command"], command("notify"));
        assert_eq!(v["hooks"]["SessionEnd"][0]["hooks"][0]["command"], "mine");
        assert_eq!(v["permissions"]["defaultMode"], "bypassPermissions");
        for (event, _) in EVENTS {
            assert_eq!(
                v["hooks"][event].as_array().unwrap().len(),
                if *event == "Stop" { 2 } else { 1 }
            );
        }
    }

    #[test]
    fn the_commands_keep_the_state_line_and_log_each_change_once() {
        let home = tempfile::tempdir().unwrap();
        let run = |word: &str, input: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new("sh")
                .args(["-c", &command(word)])
                .env("HOME", home.path())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        };
        run("prompt", "{}");
        run("tool", "{}");
        run("tool", "{}");
        run(
            "notify",
            "{\"message\":\"Claude needs\nyou\",\"notification_type\":\"permission_prompt\"}",
        );
        let state = std::fs::read_to_string(home.path().join(STATE_FILE)).unwrap();
        assert!(
            state.starts_with("notify ")
                && state.ends_with(
                    "\"Claude needsyou\",\"notification_type\":\"permission_prompt\"}\n"
                ),
            "{state:?}"
        );
        run("notify", "{\"notification_type\":\"idle_prompt\"}");
        run("stop", "{}");
        let events = std::fs::read_to_string(home.path().join(EVENTS_FILE)).unwrap();
        let words: Vec<&str> = events
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(words, ["prompt", "tool", "notify", "stop"]);
        assert!(
            events
                .lines()
                .all(|l| l.split(' ').nth(1).unwrap().parse::<u64>().is_ok())
        );
        assert!(
            std::fs::read_to_string(home.path().join(STATE_FILE))
                .unwrap()
                .starts_with("stop ")
        );
    }

    #[test]
    fn a_broken_hooks_value_is_replaced() {
        let mut v = serde_json::json!({"hooks": "nonsense"});
        install(&mut v);
        assert!(v["hooks"]["Stop"].is_array());
        let mut v = serde_json::json!({"hooks": {"Stop": 3}});
        install(&mut v);
        assert_eq!(v["hooks"]["Stop"].as_array().unwrap().len(), 1);
    }
}

//! Looking into a session from outside: a small script run as the session's
//! user prints, as one record, the pane's last activity and whether it is
//! dead, the state line ([`super::hooks::STATE_FILE`]) and the last
//! non-blank line of the screen. Once (`cci status --format json`), or in a
//! loop that prints a record whenever it changes (the dashboard and `cci
//! events` hold one such exec per session: one daemon request per tick for
//! all of them, not one per container).
//!
//! Everything in a record is the agent's to forge: it is parsed into
//! bounded, printable fields and only ever shown.

use tokio::io::AsyncReadExt;

use super::hooks::STATE_FILE;
use crate::config::Account;
use crate::container::ExecSpec;
use crate::incus::{self, Client};

/// The monitor: `$1` the tmux socket, `$2` seconds between looks (0: once).
/// A record is `A ACTIVITY DEAD`, `E STATE-LINE`, `L LAST-LINE`, then `.`.
const MONITOR: &str = r#"sock=$1 every=$2 prev=
while :; do
    if tmux -S "$sock" has-session -t cci 2>/dev/null; then
        a=$(tmux -S "$sock" display -p -t cci '#{window_activity} #{pane_dead}' 2>/dev/null)
        l=$(tmux -S "$sock" capture-pane -p -t cci 2>/dev/null | awk 'NF { l = $0 } END { print substr(l, 1, 400) }')
    else
        a=none l=
    fi
    e=
    [ -f "$HOME/STATE" ] && e=$(head -c 2200 "$HOME/STATE" 2>/dev/null | head -n 1)
    cur="A $a
E $e
L $l"
    if [ "$cur" != "$prev" ]; then
        printf '%s\n.\n' "$cur" || exit 0
        prev=$cur
    fi
    [ "$every" = 0 ] && exit 0
    sleep "$every"
done
"#;

/// The longest record line taken; a longer one ends the stream.
const MAX_LINE: usize = 4096;

/// One look at a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Whether the tmux session exists.
    pub session: bool,
    /// When the pane last printed (Unix seconds; 0 unknown).
    pub activity: u64,
    /// The pane's program has ended (tmux keeps dead panes only when told).
    pub dead: bool,
    /// The state line, raw (parsed by [`super::derive`]).
    pub state_line: String,
    /// The screen's last non-blank line, printable.
    pub last_line: String,
}

/// Parse one record's lines (without the closing `.`).
pub fn parse(lines: &[String]) -> Probe {
    let mut p = Probe::default();
    for line in lines {
        if let Some(a) = line.strip_prefix("A ") {
            let mut w = a.split_whitespace();
            match w.next() {
                Some("none") | None => p.session = false,
                Some(t) => {
                    p.session = true;
                    p.activity = t.parse().unwrap_or(0);
                    p.dead = w.next() == Some("1");
                }
            }
        } else if let Some(e) = line.strip_prefix("E ") {
            p.state_line = e.chars().take(2200).collect();
        } else if let Some(l) = line.strip_prefix("L ") {
            p.last_line = crate::terminal::strip_controls(l)
                .trim_end()
                .chars()
                .take(400)
                .collect();
        }
    }
    p
}

/// The exec that runs the monitor for `a`'s session.
fn request(a: &Account, every: u32) -> incus::ExecRequest {
    let sock = crate::sandbox::tmux_socket(a);
    ExecSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            MONITOR.replace("STATE", STATE_FILE),
            "cci-monitor".into(),
            sock,
            every.to_string(),
        ],
        user: a.uid,
        group: a.gid,
        cwd: a.home.clone(),
        env: vec![("HOME".into(), a.home.clone())],
    }
    .request()
    .repeatable()
}

/// Look once at `container`'s session.
pub async fn once(client: &Client, container: &str, a: &Account) -> incus::Result<Probe> {
    let out = client.exec_capture(container, &request(a, 0), None).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .take_while(|l| *l != ".")
        .map(|l| l.chars().take(MAX_LINE).collect())
        .collect();
    Ok(parse(&lines))
}

/// Watch `container`'s session, calling `each` with every changed look,
/// until the exec ends (the container stopped, or the agent killed the
/// monitor) or `each` returns false.
pub async fn stream(
    client: &Client,
    container: &str,
    a: &Account,
    every: u32,
    mut each: impl FnMut(Probe) -> bool + Send,
) -> incus::Result<()> {
    let (writer, mut reader) = tokio::io::duplex(16 * 1024);
    let req = request(a, every);
    let exec = client.exec(
        container,
        &req,
        None::<tokio::io::Empty>,
        writer,
        tokio::io::sink(),
    );
    let read = async move {
        let mut buf = Vec::new();
        let mut record = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line[..i]).into_owned();
                if line == "." {
                    if !each(parse(&record)) {
                        return;
                    }
                    record.clear();
                } else if record.len() < 8 {
                    record.push(line);
                }
            }
            if buf.len() > MAX_LINE {
                return;
            }
        }
    };
    tokio::select! {
        r = exec => r.map(|_| ()),
        () = read => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_record_parses_into_bounded_printable_fields() {
        let p = parse(&lines(&[
            "A 1764770000 0",
            "E notify 1764770001 {\"message\":\"hi\"}",
            "L agent> \u{1b}]52;c;ZXZpbA==\u{7}ask me   ",
        ]));
        assert!(p.session && !p.dead);
        assert_eq!(p.activity, 1764770000);
        assert_eq!(p.state_line, "notify 1764770001 {\"message\":\"hi\"}");
        assert!(!p.last_line.contains('\u{1b}') && !p.last_line.contains('\u{7}'));
        assert!(p.last_line.starts_with("agent> ") && p.last_line.ends_with("ask me"));
        let gone = parse(&lines(&["A none", "E ", "L "]));
        assert!(!gone.session);
        let dead = parse(&lines(&["A 5 1"]));
        assert!(dead.session && dead.dead);
        let long = parse(&lines(&[&format!("L {}", "x".repeat(5000))]));
        assert_eq!(long.last_line.len(), 400);
        assert_eq!(parse(&lines(&["A junk"])).activity, 0);
    }

    #[test]
    fn the_monitor_reads_the_state_file_of_the_home() {
        let script = MONITOR.replace("STATE", STATE_FILE);
        assert!(script.contains("\"$HOME/.cci-agent-state\""));
        assert!(script.contains("-t cci "));
    }
}

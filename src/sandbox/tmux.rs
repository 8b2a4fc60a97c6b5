//! The tmux session inside a sandbox: one session named [`SESSION`], owned by
//! the `code` user, running the agent and then a shell. A small supervisor in
//! the container powers it off when the session ends, whether anyone is
//! attached or not, so an ended session never keeps a container running.
//!
//! Everything is passed to the container as argv: no user-supplied value
//! (agent path, arguments, environment) is ever put into a shell string.

use super::error::Error;
use super::mounts::WORKSPACE_MOUNT;
use crate::config::Account;
use crate::container::ExecSpec;
use crate::incus::{self, Client, ExecRequest};

/// The tmux session's name inside every sandbox.
pub const SESSION: &str = "cci";

/// The tmux server's socket, in the user's home. Not under /tmp: the
/// container's boot empties /tmp, and a session started while it boots would
/// lose its socket.
pub fn socket(a: &Account) -> String {
    format!("{}/.cci-tmux", a.home)
}

/// A script for user `a`: the scripts below are written for `code` in
/// `/home/code`. (User names are checked to be plain words, so putting one
/// into a script is safe.)
fn for_user(script: &str, a: &Account) -> String {
    script
        .replace("/home/code", &a.home)
        .replace("runuser -u code", &format!("runuser -u {}", a.name))
}

/// Creates the session as `code` (with its groups, via runuser) and starts the
/// supervisor. Arguments: pane script, supervisor script, width, height, what
/// follows the agent (`shell` or `end`), the time limit in seconds (0: none),
/// whether the commands to run first must succeed (`stop`) or not (`go`),
/// the agent's program, the recorder's command (empty: none), then how many
/// commands to run first, those
/// commands, and the agent's argv. Returns once
/// the session exists, so readiness needs no waiting.
const START: &str = r#"pane=$1 supervisor=$2 w=$3 h=$4 after=$5 limit=$6 must=$7 program=$8 record=$9; shift 9
as_code() { runuser -u code -- "$@"; }
tmux() { as_code tmux -S /home/code/.cci-tmux "$@"; }
if tmux has-session -t cci 2>/dev/null; then exit 0; fi
rm -f /home/code/.cci-attached
if ! as_code sh -c 'command -v "$1"' sh "$program" >/dev/null; then
    echo "the program $program is not in the image (PATH=$PATH); an image with it, if it is one of cci's agents: cci build --agent NAME" >&2
    exit 3
fi
if ! tmux new-session -d -s cci -x "$w" -y "$h" -c /workspace \
    sh -c "$pane" cci-session "$after" "$must" "$@"; then
    # Another run of this script (a repeated exec) made it first.
    tmux has-session -t cci 2>/dev/null && exit 0
    exit 1
fi
# The session's output, kept for its record (`--record`).
if [ -n "$record" ]; then tmux pipe-pane -t cci "$record"; fi
setsid -f sh -c "$supervisor" cci-supervisor </dev/null >/dev/null 2>&1
# The session's time limit: its end powers the container off, as any end does.
if [ "$limit" -gt 0 ]; then
    setsid -f sh -c 'sleep "$1"; printf "exited %s limit\n" "$(date +%s)" >/home/code/.cci-agent-state
        printf "exited %s\n" "$(date +%s)" >>/home/code/.cci-agent-events
        tmux -S /home/code/.cci-tmux kill-server' cci-time-limit "$limit" \
        </dev/null >/dev/null 2>&1
fi
"#;

/// The session's only pane, as `code`: the agent, then (unless `end`) an
/// interactive shell; then tell the supervisor the session is over.
const PANE: &str = r#"after=$1 must=$2 n=$3; shift 3
run=yes
pre_status=0
if [ "$n" -gt 0 ]; then
    printf '[cci] pre_launch: running the configured commands first\n'
    # Ctrl-C stops a command, not this pane (children get the default).
    trap : INT
    while [ "$n" -gt 0 ]; do
        if [ "$pre_status" -eq 0 ]; then
            sh -c "$1"
            pre_status=$?
        fi
        shift
        n=$((n - 1))
    done
    trap - INT
    if [ "$pre_status" -ne 0 ]; then
        printf '\n[cci] pre_launch failed (status %s)\n' "$pre_status"
        if [ "$must" = stop ]; then
            run=no
            status=$pre_status
            printf '[cci] %s was not started (tool.pre_launch_required)\n' "$1"
        fi
    fi
fi
# The state line, and the session's log of changes (attention::hooks).
mark() { printf '%s %s %s\n' "$1" "$(date +%s)" "$2" >/home/code/.cci-agent-state.tmp &&
    mv -f /home/code/.cci-agent-state.tmp /home/code/.cci-agent-state
    printf '%s %s\n' "$1" "$(date +%s)" >>/home/code/.cci-agent-events; } 2>/dev/null
: 2>/dev/null >/home/code/.cci-agent-events
if [ "$run" = yes ]; then
    mark started
    "$@"
    status=$?
    what="$1 exited (status $status)"
else
    what="$1 did not start"
fi
mark exited "$status"
if [ "$after" = shell ]; then
    printf '\n[cci] %s. This shell is still in the sandbox;\n[cci] `exit` ends the session, Ctrl-b d detaches and leaves it running.\n\n' "$what"
    bash
fi
# Someone is attached: their cci saves the agent's state and stops the
# container, so the supervisor gives it time before powering off.
if tmux -S /home/code/.cci-tmux list-clients -t cci 2>/dev/null | grep -q .; then
    : >/home/code/.cci-attached
fi
tmux -S /home/code/.cci-tmux wait-for -S cci-ended
"#;

/// Runs detached as root: waits until the session is gone (the pane signals,
/// or the tmux server exits, which also wakes `wait-for`), then powers off.
/// (tmux lets root talk to any user's server; runuser here would linger
/// through the shutdown and hold it up.)
const SUPERVISOR: &str = r#"tmux() { command tmux -S /home/code/.cci-tmux "$@"; }
while tmux has-session -t cci 2>/dev/null; do
    tmux wait-for cci-ended 2>/dev/null
done
# An attached cci saves the state and stops the container itself; should it
# be gone, power off after a while all the same.
if [ -e /home/code/.cci-attached ]; then sleep 60; fi
# Power off, again every few seconds: an init that is still booting may not act
# on the first request. systemd powers off on SIGRTMIN+4 (38), bus or no bus.
while :; do
    case $(readlink /proc/1/exe) in
        */systemd) kill -38 1 ;;
        *) poweroff 2>/dev/null || halt 2>/dev/null ;;
    esac
    sleep 5
done
"#;

/// What the session runs.
#[derive(Debug, Clone)]
pub struct SessionCommand {
    /// The program and its arguments (the agent, or a shell).
    pub argv: Vec<String>,
    /// Drop into a shell when the program exits (agents) or end (shells).
    pub shell_after: bool,
    /// Environment for the tmux server and everything in it.
    pub env: Vec<(String, String)>,
    /// Initial window size (columns, rows).
    pub size: (u16, u16),
    /// End the session after this long.
    pub max_duration: Option<std::time::Duration>,
    /// Commands run first (`[tool] pre_launch`), and whether they must
    /// succeed for the program to start.
    pub pre_launch: Vec<String>,
    /// (see `pre_launch`)
    pub pre_launch_required: bool,
    /// Record the pane's output, at most this many bytes (`--record`).
    pub record: Option<u64>,
}

/// The session's recording in the user's home: `size W H`, then
/// `SECONDS.NANOS BASE64` a line, one per chunk of output.
pub const RECORDING: &str = ".cci-recording";

/// The recorder `tmux pipe-pane` runs (as the session's user, the pane's
/// output on its input): each chunk of output, timed, base64 on one line;
/// past `cap` bytes the output is read and dropped, so the pane never waits.
fn recorder(a: &Account, cap: u64, (w, h): (u16, u16)) -> String {
    // A line may pass the cap by a chunk (the host cuts at the cap); the
    // file stays within what the host reads.
    let cap = cap.min(crate::config::MAX_RECORDING - (128 << 10));
    // (tmux expands `%` in the command as strftime does: `%%` is one.)
    format!(
        "f={}/{RECORDING}; echo size {w} {h} >$f; while c=$(dd bs=65536 count=1 status=none | base64 -w0) && [ -n \"$c\" ]; do [ $(stat -c %%s $f) -lt {cap} ] && echo $(date +%%s.%%N) $c >>$f; done",
        a.home
    )
}

/// Start the session in `container` (nothing happens when it already runs).
pub async fn start(
    client: &Client,
    container: &str,
    cmd: &SessionCommand,
    a: &Account,
) -> Result<(), Error> {
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        for_user(START, a),
        "cci-start".into(),
        for_user(PANE, a),
        for_user(SUPERVISOR, a),
    ];
    argv.push(cmd.size.0.to_string());
    argv.push(cmd.size.1.to_string());
    argv.push(if cmd.shell_after { "shell" } else { "end" }.into());
    argv.push(cmd.max_duration.map_or(0, |d| d.as_secs()).to_string());
    argv.push(
        if cmd.pre_launch_required {
            "stop"
        } else {
            "go"
        }
        .into(),
    );
    argv.push(cmd.argv.first().cloned().unwrap_or_default());
    argv.push(
        cmd.record
            .map(|cap| recorder(a, cap, cmd.size))
            .unwrap_or_default(),
    );
    argv.push(cmd.pre_launch.len().to_string());
    argv.extend(cmd.pre_launch.iter().cloned());
    argv.extend(cmd.argv.iter().cloned());
    let spec = ExecSpec {
        command: argv,
        user: 0,
        group: 0,
        cwd: WORKSPACE_MOUNT.into(),
        env: cmd.env.clone(),
    };
    // The script does nothing when the session exists, so it may run twice:
    // also when the daemon's exec helper killed it (SIGKILL, exit 137), which
    // it does on a busy host when it loses track of the command it started.
    let mut tries = 0;
    let (code, err) = loop {
        let mut err = Vec::new();
        let code = client
            .exec(
                container,
                &spec.request().repeatable(),
                None::<tokio::io::Empty>,
                tokio::io::sink(),
                &mut err,
            )
            .await?;
        if code != 128 + 9 || tries == 5 {
            break (code, err);
        }
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
    };
    if code != 0 {
        // The container's words, quoted printably.
        let message = crate::config::printable(String::from_utf8_lossy(&err).trim());
        return Err(Error::SessionStart {
            container: container.into(),
            message: if message.is_empty() {
                format!("exit status {code}")
            } else {
                message
            },
        });
    }
    Ok(())
}

/// Whether the session exists (false when the container is not running).
pub async fn alive(client: &Client, container: &str, a: &Account) -> incus::Result<bool> {
    let sock = socket(a);
    let req = as_code(a, ["tmux", "-S", &sock, "has-session", "-t", SESSION], &[]).repeatable();
    let r = client
        .exec(
            container,
            &req,
            None::<tokio::io::Empty>,
            tokio::io::sink(),
            tokio::io::sink(),
        )
        .await;
    match r {
        Ok(code) => Ok(code == 0),
        Err(incus::Error::InstanceNotRunning(_)) => Ok(false),
        Err(e) if e.is_not_found() => Ok(false),
        // A container shutting down fails execs in other ways too.
        Err(e) => match client.instance(container).await {
            Ok((i, _)) if !i.is_running() => Ok(false),
            Err(e) if e.is_not_found() => Ok(false),
            _ => Err(e),
        },
    }
}

/// The request that attaches a terminal to the session (of user `a`).
pub fn attach_request(a: &Account, env: &[(String, String)]) -> ExecRequest {
    // A second tmux client is harmless: it may be started again.
    let sock = socket(a);
    as_code(
        a,
        ["tmux", "-S", &sock, "attach-session", "-t", SESSION],
        env,
    )
    .repeatable()
}

/// A request that runs `argv` as user `a` in the workspace.
fn as_code<const N: usize>(a: &Account, argv: [&str; N], env: &[(String, String)]) -> ExecRequest {
    ExecSpec {
        command: argv.iter().map(|s| s.to_string()).collect(),
        user: a.uid,
        group: a.gid,
        cwd: WORKSPACE_MOUNT.into(),
        env: env.to_vec(),
    }
    .request()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_use_the_one_socket_and_session() {
        let a = Account::new(1001, "dev");
        for script in [START, PANE, SUPERVISOR] {
            let mine = for_user(script, &a);
            assert!(mine.contains(&socket(&a)), "{script}");
            assert!(mine.contains("/home/dev/.cci-tmux") && !mine.contains("/home/code"));
        }
        assert!(for_user(START, &a).contains("runuser -u dev "));
        // The dashboard reads the state line the pane writes.
        let state = format!("/home/code/{}", crate::attention::hooks::STATE_FILE);
        assert!(PANE.contains(&format!("{state}.tmp")) && PANE.contains(&format!("{state}\n")));
        let events = format!("/home/code/{}", crate::attention::hooks::EVENTS_FILE);
        assert!(PANE.contains(&format!(">>{events};")) && START.contains(&format!(">>{events}\n")));
        assert!(START.contains(&format!("-s {SESSION} ")));
        assert!(SUPERVISOR.contains(&format!("has-session -t {SESSION}")));
    }
}

/// A tmux command in a session failed.
#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    /// tmux said no (e.g. no session runs).
    #[error("{container}: {message}")]
    Tmux {
        /// The container.
        container: String,
        /// What tmux said.
        message: String,
    },
    /// The daemon failed.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

/// What to type into a session.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Text typed as is (then Enter unless `enter` is false).
    Text {
        /// The text.
        text: String,
        /// Press Enter after it.
        enter: bool,
    },
    /// tmux key names: `C-c`, `Escape`, `Up`, `Enter`...
    Named(Vec<String>),
}

/// Type `keys` into `container`'s session, as its owner `a`.
pub async fn send(
    client: &Client,
    container: &str,
    keys: &Keys,
    a: &Account,
) -> Result<(), TmuxError> {
    let sock = socket(a);
    let mut argv: Vec<String> = ["tmux", "-S", &sock, "send-keys", "-t", SESSION]
        .into_iter()
        .map(String::from)
        .collect();
    let mut enter = false;
    match keys {
        Keys::Text { text, enter: e } => {
            argv.extend(["-l".into(), "--".into(), text.clone()]);
            enter = *e;
        }
        Keys::Named(names) => {
            argv.push("--".into());
            argv.extend(names.iter().cloned());
        }
    }
    run_as_code(client, container, argv, false, a).await?;
    if enter {
        let argv = ["tmux", "-S", &sock, "send-keys", "-t", SESSION, "Enter"];
        run_as_code(client, container, argv.map(String::from).to_vec(), false, a).await?;
    }
    Ok(())
}

/// The session's screen as text (with its colours and other escape
/// sequences when `escapes`), plus `history` lines scrolled off above it.
pub async fn capture(
    client: &Client,
    container: &str,
    history: u32,
    escapes: bool,
    a: &Account,
) -> Result<String, TmuxError> {
    let sock = socket(a);
    let mut argv: Vec<String> = ["tmux", "-S", &sock, "capture-pane", "-p", "-t", SESSION]
        .into_iter()
        .map(String::from)
        .collect();
    if escapes {
        argv.push("-e".into());
    }
    if history > 0 {
        argv.extend(["-S".into(), format!("-{history}")]);
    }
    run_as_code(client, container, argv, true, a).await
}

/// Run a tmux command as `code`; its stdout, or its stderr as the error.
async fn run_as_code(
    client: &Client,
    container: &str,
    argv: Vec<String>,
    repeatable: bool,
    a: &Account,
) -> Result<String, TmuxError> {
    let mut req = ExecSpec {
        command: argv,
        user: a.uid,
        group: a.gid,
        cwd: WORKSPACE_MOUNT.into(),
        env: Vec::new(),
    }
    .request();
    req.repeatable = repeatable;
    let out = client.exec_capture(container, &req, None).await?;
    if out.exit_code != 0 {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let message = match err.as_str() {
            e if e.contains("no server running") || e.contains("can't find") => {
                "no cci session runs there".to_string()
            }
            e => format!("tmux: {}", crate::config::printable(e)),
        };
        return Err(TmuxError::Tmux {
            container: container.into(),
            message,
        });
    }
    Ok(out.stdout_text())
}

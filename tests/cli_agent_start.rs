//! The real Claude Code, started in a background session, goes straight to
//! its input prompt: none of its first-run questions (onboarding and theme,
//! folder trust, the bypass-permissions warning, "Make auto mode your
//! default permission mode?") stops it, so `cci tmux send` can drive it.
//!
//! Claude Code is the native build the npm registry ships
//! (`@anthropic-ai/claude-code-linux-<arch>`, the package `npm install -g
//! @anthropic-ai/claude-code` installs in the image): fetched on the host
//! with `npm pack` once per version into the test target folder (or taken
//! from `CCI_TEST_CLAUDE`, a path to that `claude` program), and started from
//! the workspace, in a container of the test image. It runs without
//! credentials and without any network (an allowlist with no entries), so
//! no packet leaves the machine; without credentials its prompt says "Not
//! logged in", which is what it shows a signed-in user too, minus that note.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Sessions, ok, text};
use common::{cci, test_image};

/// Questions Claude Code asks at a first start; none may appear.
const QUESTIONS: &[&str] = &[
    "Make auto mode your default",
    "Choose the text style",
    "Select login method",
    "Quick safety check",
    "Do you trust the files",
    "running in Bypass Permissions mode",
    "Unable to connect to Anthropic services",
    "Press Enter to continue",
];

/// Run `cmd` (an npm or tar step) and panic with what it said on failure.
fn must(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (set CCI_TEST_CLAUDE to a claude program)"));
    assert!(
        out.status.success(),
        "{what}: {}{} (set CCI_TEST_CLAUDE to a claude program)",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The native Claude Code program for this machine.
fn claude_program() -> PathBuf {
    if let Some(p) = std::env::var_os("CCI_TEST_CLAUDE") {
        return PathBuf::from(p);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => panic!("no Claude Code build for {other}; set CCI_TEST_CLAUDE"),
    };
    let package = format!("@anthropic-ai/claude-code-linux-{arch}");
    let version = match std::env::var("CCI_TEST_CLAUDE_VERSION") {
        Ok(v) => v,
        Err(_) => {
            let mut view = Command::new("npm");
            view.args(["view", "@anthropic-ai/claude-code", "version"]);
            must(view, "npm view @anthropic-ai/claude-code version")
                .trim()
                .to_string()
        }
    };
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("claude-code");
    let dir = cache.join(&version);
    let program = dir.join("package/claude");
    if program.is_file() {
        return program;
    }
    // One version kept: older ones go.
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&dir).unwrap();
    let mut pack = Command::new("npm");
    pack.args(["pack", "--silent", &format!("{package}@{version}")])
        .current_dir(&dir);
    let tarball = must(pack, "npm pack").trim().to_string();
    let mut untar = Command::new("tar");
    untar.args(["xzf", &tarball]).current_dir(&dir);
    must(untar, "unpacking Claude Code");
    let _ = std::fs::remove_file(dir.join(&tarball));
    assert!(program.is_file(), "no {} in {package}", program.display());
    program
}

/// `cci tmux capture NAME`.
fn screen(name: &str) -> String {
    let out = cci()
        .args(["tmux", "capture", name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    text(&out.stdout)
}

/// Whether the screen shows Claude Code's input prompt: its mode line and
/// an input line starting with the prompt sign.
fn at_prompt(screen: &str) -> bool {
    screen.contains("bypass permissions on") && screen.lines().any(|l| l.starts_with('❯'))
}

fn asked(screen: &str) -> Option<&'static str> {
    QUESTIONS.iter().copied().find(|q| screen.contains(q))
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_starts_straight_to_its_prompt_in_a_background_session() {
    let program = claude_program();
    let ws = common::workspace();
    let inside = ws.path().join(".claude-code");
    if std::fs::hard_link(&program, &inside).is_err() {
        std::fs::copy(&program, &inside).unwrap();
    }
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _sessions = Sessions(ws.path().to_path_buf());
    let no_credentials = tempfile::tempdir().unwrap();

    let out = cci()
        .env("CCI_IMAGE", test_image())
        .env("CCI_TOOL_BINARY", "/workspace/.claude-code")
        .env("CCI_CREDENTIALS_DIR", no_credentials.path())
        .args([
            "shell",
            "--background",
            "--network",
            "allowlist",
            "--workspace",
        ])
        .arg(ws.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();

    // Its prompt, within a minute (it starts in a few seconds).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = screen(&name);
    while !at_prompt(&shown) {
        if let Some(q) = asked(&shown) {
            panic!("Claude Code asked {q:?} at start:\n{shown}");
        }
        assert!(
            Instant::now() < deadline,
            "no Claude Code prompt within 60 s:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(500));
        shown = screen(&name);
    }
    // Questions that come once the prompt is up (the auto-mode one does)
    // would replace it: watch a while longer.
    let settle = Instant::now() + Duration::from_secs(8);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        shown = screen(&name);
        assert_eq!(asked(&shown), None, "a question after the prompt:\n{shown}");
        assert!(at_prompt(&shown), "the prompt went away:\n{shown}");
    }
    // The input line has the keyboard: typed text lands in it.
    let typed = "cci-typed-this";
    ok(&cci()
        .args(["tmux", "send", &name, typed, "--no-enter"])
        .stdin(Stdio::null())
        .output()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !screen(&name)
        .lines()
        .any(|l| l.starts_with('❯') && l.contains(typed))
    {
        assert!(
            Instant::now() < deadline,
            "typed text not in the prompt:\n{}",
            screen(&name)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

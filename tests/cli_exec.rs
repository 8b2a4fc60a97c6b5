//! `cci container exec` as a user runs it: captured, streamed, and interactive
//! through a real pseudo-terminal.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pty::{Screen, on_terminal, openpty, set_size, termios};
use common::{TestInstance, cci};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_json_raw_exit_codes_and_stdin() {
    let inst = TestInstance::running("cliexec").await;
    let name = inst.name.as_str();

    let out = cci()
        .args(["container", "exec", name, "--capture", "--"])
        .args(["sh", "-c", "echo out; echo err >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stdout"], "out\n", "{v} {}", text(&out.stderr));
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 7);

    let out = cci()
        .args([
            "container",
            "exec",
            name,
            "--capture",
            "--format",
            "raw",
            "--",
        ])
        .args(["printf", "a\\nb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"a\nb");

    // Streamed: stdin goes in, stdout and stderr come out separately.
    let mut child = cci()
        .args([
            "container",
            "exec",
            name,
            "--user",
            "1000",
            "--group",
            "1000",
        ])
        .args(["-e", "GREETING=hi,there=x", "--cwd", "/tmp", "--"])
        .args([
            "sh",
            "-c",
            "tr a-z A-Z; echo \"$GREETING $(id -u) $(pwd)\" >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"shout this\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "SHOUT THIS\n");
    assert_eq!(text(&out.stderr), "hi,there=x 1000 /tmp\n");

    let out = cci()
        .args([
            "container",
            "exec",
            "cci-test-no-such-instance",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_exec_on_a_real_terminal() {
    let inst = TestInstance::running("tty").await;
    let (master, slave) = openpty(91, 37);
    let before = termios(&slave);

    let mut cmd = cci();
    cmd.args(["container", "exec", "-t", &inst.name, "-e", "PS1=ready> "])
        .args(["--", "bash", "--norc", "-i"])
        .env("TERM", "xterm");
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());

    // The child sees a TTY of the size we have. (Keys are sent only at the
    // prompt: a Ctrl-D typed while bash is between commands would be eaten.)
    screen.expect("ready> ");
    keys.write_all(b"test -t 0 && echo IS-A-TTY; stty size\n")
        .unwrap();
    screen.expect("IS-A-TTY");
    screen.expect("37 91");
    screen.expect("ready> ");

    // While cci runs, the user's terminal is raw (no echo, no line editing).
    let during = termios(&slave);
    assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0);

    // A resize of the user's terminal reaches the command.
    set_size(&slave, 120, 40);
    std::thread::sleep(Duration::from_millis(300));
    keys.write_all(b"stty size\n").unwrap();
    screen.expect("40 120");
    screen.expect("ready> ");

    // Ctrl-D at the prompt ends the shell, and cci with it.
    keys.write_all(b"\x04").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            panic!(
                "cci did not exit after Ctrl-D; terminal: {:?}",
                screen.drain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));

    // The terminal is back to how it was.
    let after = termios(&slave);
    assert_eq!(after.c_lflag, before.c_lflag);
    assert_eq!(after.c_iflag, before.c_iflag);
    assert_eq!(after.c_oflag, before.c_oflag);
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_exec_passes_the_exit_code_through() {
    let inst = TestInstance::running("ttyrc").await;
    let (_master, slave) = openpty(80, 24);
    let mut cmd = cci();
    cmd.args([
        "container",
        "exec",
        "-t",
        &inst.name,
        "--",
        "sh",
        "-c",
        "exit 9",
    ]);
    on_terminal(&mut cmd, &slave);
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(9));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_command_exits_127_as_in_a_shell_and_dashes_are_optional() {
    let inst = TestInstance::running("exec127").await;
    let name = inst.name.as_str();
    // Without `--`: everything from the command's name on is the command's.
    let out = cci()
        .args(["container", "exec", name, "--capture", "--format", "raw"])
        .args(["sh", "-c", "echo $0 $1; exit 4", "-x", "--y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "-x --y\n");
    // `--` is still taken.
    let out = cci()
        .args(["container", "exec", name, "--", "ls", "-d", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/tmp\n");

    for capture in [false, true] {
        let mut cmd = cci();
        cmd.args(["container", "exec", name]);
        if capture {
            cmd.arg("--capture");
        }
        let out = cmd.args(["no-such-command", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("no-such-command: command not found"),
            "{}",
            text(&out.stderr)
        );
        if capture {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["exit_code"], 127);
        }
    }
    let out = cci()
        .args(["container", "exec", name, "/etc/passwd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
}

//! Running commands in an instance: with separate streams and an exit code, over
//! a PTY driven by the caller's terminal, or recorded to log files by the daemon.
//!
//! Protocol notes (Incus 6.0): output arrives in binary frames; an empty text frame
//! ends a stream; the operation only completes once we close our websockets; the
//! exit code is `metadata.return` of the finished operation.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Client;
use super::error::{Error, Result};
use super::operations::Operation;
use super::transport::{StringMap, WebSocket, encode};

mod streams;

pub use streams::CappedBuf;
use streams::{CountingReader, close, pump_in, pump_out};

/// How often a command the daemon failed to attach is started again.
const ATTACH_RETRIES: u64 = 10;

/// How long to wait for the operation to finish once the streams have ended.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// The most standard output [`Client::exec_capture`] keeps.
pub const MAX_CAPTURED_STDOUT: usize = 16 << 20;

/// The most standard error [`Client::exec_capture`] (and a save's `tar`) keeps.
pub const MAX_CAPTURED_STDERR: usize = 64 << 10;

/// A command to run and how.
#[derive(Debug, Clone, Serialize)]
pub struct ExecRequest {
    /// Program and arguments (no shell is involved).
    pub command: Vec<String>,
    /// Environment variables.
    pub environment: StringMap,
    /// Run on a PTY.
    pub interactive: bool,
    #[serde(rename = "wait-for-websocket")]
    wait_for_websocket: bool,
    #[serde(rename = "record-output")]
    record_output: bool,
    /// PTY width in columns.
    pub width: u16,
    /// PTY height in rows.
    pub height: u16,
    /// User id to run as.
    pub user: u32,
    /// Group id to run as.
    pub group: u32,
    /// Working directory (empty: the user's default).
    pub cwd: String,
    /// Running the command twice is harmless, so it may be started again
    /// when the daemon loses track of it (see [`Client::exec`]).
    #[serde(skip)]
    pub repeatable: bool,
}

impl ExecRequest {
    /// Run `command` as root with no environment set.
    pub fn new<S: AsRef<str>>(command: &[S]) -> Self {
        ExecRequest {
            command: command.iter().map(|s| s.as_ref().to_string()).collect(),
            environment: StringMap::new(),
            interactive: false,
            wait_for_websocket: true,
            record_output: false,
            width: 80,
            height: 24,
            user: 0,
            group: 0,
            cwd: String::new(),
            repeatable: false,
        }
    }

    /// Mark the command as safe to run twice (a query, or an idempotent script).
    pub fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }

    /// Run as this uid and gid.
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        self.user = uid;
        self.group = gid;
        self
    }

    /// Start in this directory.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.cwd = dir.to_string();
        self
    }

    /// Set one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.insert(key.to_string(), value.to_string());
        self
    }
}

/// What a captured command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// Output past the caps was left out (and said so at the end of it).
    pub truncated: bool,
}

impl ExecOutput {
    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A message for a running interactive command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalControl {
    /// The terminal changed size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Deliver this signal number to the command.
    Signal(i32),
}

impl TerminalControl {
    fn to_message(self) -> Message {
        let v = match self {
            TerminalControl::Resize { width, height } => serde_json::json!({
                "command": "window-resize",
                "args": {"width": width.to_string(), "height": height.to_string()},
            }),
            TerminalControl::Signal(n) => serde_json::json!({"command": "signal", "signal": n}),
        };
        Message::text(v.to_string())
    }
}

impl Client {
    async fn start_exec(&self, instance: &str, req: &ExecRequest) -> Result<Operation> {
        let path = format!("/1.0/instances/{}/exec", encode(instance));
        self.transport
            .operation(self.transport.request(Method::POST, &path).json(req))
            .await
    }

    async fn exec_socket(&self, op: &Operation, fd: &str) -> Result<WebSocket> {
        let fds = op.fds();
        let secret = fds
            .get(fd)
            .ok_or_else(|| Error::Protocol(format!("exec operation has no websocket {fd:?}")))?;
        let path = format!(
            "/1.0/operations/{}/websocket?secret={}",
            encode(&op.id),
            encode(secret)
        );
        match fd {
            // Output only: read to the end even once the daemon hung up.
            "1" | "2" => self.transport.websocket_receiving(&path).await,
            _ => self.transport.websocket(&path).await,
        }
    }

    async fn exit_code(&self, op: &Operation) -> Result<i32> {
        let done = self.wait_operation(&op.id, Some(FINISH_TIMEOUT)).await?;
        tracing::debug!("exec operation {}: {:?}", op.id, done.metadata);
        done.metadata
            .as_ref()
            .and_then(|m| m.get("return"))
            .and_then(|r| r.as_i64())
            .map(|r| r as i32)
            .ok_or_else(|| Error::Protocol("exec operation finished without an exit code".into()))
    }

    /// Run a command with separate stdin/stdout/stderr streams; returns its exit code.
    /// `stdin: None` gives the command an empty input.
    ///
    /// On a busy host the daemon sometimes loses track of a command it started
    /// ("Failed to retrieve PID of executing child process") although the
    /// command ran. A [`ExecRequest::repeatable`] command is then started
    /// again (when none of its input was consumed); any other fails with that
    /// error, since running it a second time could do harm.
    pub async fn exec<I, O, E>(
        &self,
        instance: &str,
        req: &ExecRequest,
        stdin: Option<I>,
        mut stdout: O,
        mut stderr: E,
    ) -> Result<i32>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let mut stdin = stdin.map(CountingReader::new);
        let mut tries = 0u64;
        loop {
            let r = self
                .exec_once(instance, req, stdin.as_mut(), &mut stdout, &mut stderr)
                .await;
            match r {
                Err(e)
                    if req.repeatable
                        && e.is_attach_failure()
                        && tries < ATTACH_RETRIES
                        && stdin.as_ref().is_none_or(|s| s.read == 0) =>
                {
                    tries += 1;
                    tracing::debug!("exec in {instance}: {e}; starting it again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                r => return r,
            }
        }
    }

    async fn exec_once<I, O, E>(
        &self,
        instance: &str,
        req: &ExecRequest,
        mut stdin: Option<I>,
        mut stdout: O,
        mut stderr: E,
    ) -> Result<i32>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let mut req = req.clone();
        req.interactive = false;
        req.wait_for_websocket = true;
        req.record_output = false;
        let op = self.start_exec(instance, &req).await?;
        tracing::debug!("exec in {instance}: operation {}", op.id);
        let mut control = self.exec_socket(&op, "control").await?;
        let mut ws_in = self.exec_socket(&op, "0").await?;
        let mut ws_out = self.exec_socket(&op, "1").await?;
        let mut ws_err = self.exec_socket(&op, "2").await?;
        let streamed: Result<()> = {
            let outputs = async {
                tokio::try_join!(
                    pump_out(&mut ws_out, &mut stdout),
                    pump_out(&mut ws_err, &mut stderr)
                )
            };
            let input = pump_in(&mut ws_in, stdin.as_mut());
            tokio::pin!(outputs, input);
            let mut input_done = false;
            loop {
                tokio::select! {
                    r = &mut outputs => break r.map(|_| ()),
                    r = &mut input, if !input_done => {
                        input_done = true;
                        if let Err(e) = r {
                            break Err(e);
                        }
                    }
                }
            }
        };
        // cci's own side gave up (its output refused, a limit reached, its
        // input unreadable): stop here; dropping the streams ends the command.
        let cut = match streamed {
            Err(e) if !streams::broke_off(&e) => return Err(e),
            Err(e) => Some(e),
            Ok(()) => None,
        };
        for ws in [&mut ws_in, &mut ws_out, &mut ws_err, &mut control] {
            close(ws).await;
        }
        let code = self.exit_code(&op).await;
        tracing::debug!("exec in {instance}: operation {} ended: {code:?}", op.id);
        match (cut, code) {
            // The command ran, but the daemon cut its output short.
            (Some(e), Ok(_)) => Err(e),
            // The daemon's own account (e.g. it lost track of the command) first.
            (_, code) => code,
        }
    }

    /// Run a command and collect its output; `stdin` is fed to it.
    pub async fn exec_capture(
        &self,
        instance: &str,
        req: &ExecRequest,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput> {
        let mut stdout = CappedBuf::new(MAX_CAPTURED_STDOUT);
        let mut stderr = CappedBuf::new(MAX_CAPTURED_STDERR);
        let exit_code = self
            .exec(instance, req, stdin, &mut stdout, &mut stderr)
            .await?;
        let truncated = stdout.cut > 0 || stderr.cut > 0;
        Ok(ExecOutput {
            stdout: stdout.into_noted(),
            stderr: stderr.into_noted(),
            exit_code,
            truncated,
        })
    }

    /// Run a command on a PTY: `input` is the terminal's keystrokes, `output` gets the
    /// screen, `control` carries resizes and signals. Returns the exit code.
    /// A [`ExecRequest::repeatable`] command the daemon lost track of is
    /// started again, as in [`Client::exec`], if no keystroke was consumed.
    pub async fn exec_interactive<I, O>(
        &self,
        instance: &str,
        req: &ExecRequest,
        input: I,
        mut output: O,
        mut control: mpsc::UnboundedReceiver<TerminalControl>,
    ) -> Result<i32>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
    {
        let mut input = CountingReader::new(input);
        let mut tries = 0u64;
        loop {
            let r = self
                .exec_interactive_once(instance, req, &mut input, &mut output, &mut control)
                .await;
            match r {
                Err(e)
                    if req.repeatable
                        && e.is_attach_failure()
                        && tries < ATTACH_RETRIES
                        && input.read == 0 =>
                {
                    tries += 1;
                    tracing::debug!("exec in {instance}: {e}; starting it again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                r => return r,
            }
        }
    }

    async fn exec_interactive_once<I, O>(
        &self,
        instance: &str,
        req: &ExecRequest,
        mut input: I,
        mut output: O,
        control: &mut mpsc::UnboundedReceiver<TerminalControl>,
    ) -> Result<i32>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
    {
        let mut req = req.clone();
        req.interactive = true;
        req.wait_for_websocket = true;
        req.record_output = false;
        let op = self.start_exec(instance, &req).await?;
        let mut ctl = self.exec_socket(&op, "control").await?;
        let mut pty = self.exec_socket(&op, "0").await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut input_open = true;
        let mut control_open = true;
        loop {
            tokio::select! {
                msg = pty.next() => match msg {
                    Some(Ok(Message::Binary(data))) => {
                        output.write_all(&data).await.map_err(|e| Error::io("writing to the terminal", e))?;
                        output.flush().await.map_err(|e| Error::io("writing to the terminal", e))?;
                    }
                    Some(Ok(Message::Text(t))) if t.is_empty() => break,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                n = input.read(&mut buf), if input_open => {
                    let n = n.map_err(|e| Error::io("reading the terminal", e))?;
                    // End of our input: send Ctrl-D (an empty frame would cut stdin for good).
                    let data = if n == 0 { input_open = false; vec![4u8] } else { buf[..n].to_vec() };
                    let _ = pty.send(Message::binary(data)).await;
                }
                c = control.recv(), if control_open => match c {
                    Some(c) => { let _ = ctl.send(c.to_message()).await; }
                    None => control_open = false,
                },
            }
        }
        close(&mut pty).await;
        close(&mut ctl).await;
        self.exit_code(&op).await
    }

    /// Start a command whose output the daemon records to log files, without
    /// waiting ("fire and forget"). Follow up with [`Client::exec_recorded_output`].
    pub async fn exec_recorded(&self, instance: &str, req: &ExecRequest) -> Result<Operation> {
        let mut req = req.clone();
        req.interactive = false;
        req.wait_for_websocket = false;
        req.record_output = true;
        self.start_exec(instance, &req).await
    }

    /// Wait for a recorded command and fetch its exit code and recorded output.
    pub async fn exec_recorded_output(
        &self,
        op: &Operation,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let done = self.wait_operation(&op.id, timeout).await?;
        let meta = done.metadata.clone().unwrap_or_default();
        let exit_code = meta.get("return").and_then(|r| r.as_i64()).unwrap_or(-1) as i32;
        let log = |fd: &str| {
            meta.get("output")
                .and_then(|o| o.get(fd))
                .and_then(|p| p.as_str())
                .map(str::to_string)
        };
        let mut out = ExecOutput {
            exit_code,
            ..Default::default()
        };
        if let Some(p) = log("1") {
            out.stdout = self.raw_get(&p).await?.1;
        }
        if let Some(p) = log("2") {
            out.stderr = self.raw_get(&p).await?.1;
        }
        Ok(out)
    }
}

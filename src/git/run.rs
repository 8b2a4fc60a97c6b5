//! The one way cci runs the host's `git`.
//!
//! Every host git invocation goes through [`Git::cmd`]. The command gets:
//!
//! - an environment with every inherited `GIT_*` variable removed (no
//!   `GIT_DIR`, `GIT_CONFIG_PARAMETERS`, `GIT_EXTERNAL_DIFF`, `GIT_SSH_COMMAND`
//!   ... from whoever started cci), then `GIT_CONFIG_NOSYSTEM=1`,
//!   `GIT_ATTR_NOSYSTEM=1`, `GIT_TERMINAL_PROMPT=0`, `GIT_OPTIONAL_LOCKS=0`,
//!   `GIT_NO_REPLACE_OBJECTS=1` (objects are shown as they are, not as a
//!   `refs/replace` says) and `LC_ALL=C` (parsable messages). `HOME` is kept
//!   (or set by [`Git::with_home`]) so the user's `~/.gitconfig` identity
//!   applies;
//! - `-c` settings in front of every subcommand that switch off everything a
//!   repository could make git execute or contact: hooks
//!   (`core.hooksPath=/dev/null`), `core.fsmonitor`, the untracked cache,
//!   every transport (`protocol.allow=never`: cci never fetches, bundles are
//!   read with `index-pack`), external diff, pager, colour, signature
//!   display, submodule recursion, automatic gc/maintenance and
//!   renormalisation, and with `transfer.fsckObjects=true` should a transfer
//!   ever happen;
//! - stdin from /dev/null unless the caller gives bytes, stdout and stderr
//!   captured (never a terminal, so nothing prompts and nothing pages).
//!
//! Callers put `--end-of-options` (or `--`) before anything that was not
//! written by cci itself and pass agent-controlled names only after the
//! strict checks of [`super::names`].

use super::GitError;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `-c` settings given to every host git command.
const SAFE_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.pager=cat",
    "protocol.allow=never",
    // Empty: a diff run without --no-ext-diff fails ("cannot run") instead
    // of running whatever ~/.gitconfig names.
    "diff.external=",
    "color.ui=false",
    "log.showSignature=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "transfer.fsckObjects=true",
    "fetch.fsckObjects=true",
    "gc.auto=0",
    "maintenance.auto=false",
    "merge.renormalize=false",
    "advice.detachedHead=false",
];

/// Which git program to run and with which home folder.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    home: Option<PathBuf>,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            program: PathBuf::from("git"),
            home: None,
        }
    }
}

/// What a git command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as text (lossy), without the final newline.
    pub fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.stdout);
        s.strip_suffix('\n').unwrap_or(&s).to_string()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Git {
    /// The `git` on `PATH`, with the caller's `HOME`.
    pub fn new() -> Self {
        Git::default()
    }

    /// Run this git program instead (for example `/usr/bin/git`).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Run git with this `HOME` (its `.gitconfig` is the user's global
    /// configuration); `XDG_CONFIG_HOME` is then dropped too.
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// A command in `dir` (none: the current folder).
    pub fn cmd(&self, dir: Option<&Path>) -> Cmd<'_> {
        Cmd {
            git: self,
            dir: dir.map(Path::to_path_buf),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            stdin_file: None,
        }
    }

    /// `git version` as (major, minor, patch).
    pub fn version(&self) -> Result<(u32, u32, u32), GitError> {
        let out = self.cmd(None).arg("version").ok_text()?;
        parse_version(&out).ok_or_else(|| GitError::Command {
            args: "version".into(),
            status: "unparsable".into(),
            stderr: out,
        })
    }
}

/// `git version 2.47.3` (or `2.39.5.windows.1` ...) as numbers.
pub(crate) fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s.trim().strip_prefix("git version ")?;
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// One git command being built.
pub struct Cmd<'a> {
    git: &'a Git,
    dir: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    stdin_file: Option<std::fs::File>,
}

impl Cmd<'_> {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// A variable for this command only; only `GIT_*` names cci chooses
    /// (index file, identities, dates).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    /// Read stdin from this file, from its current position.
    pub fn stdin_file(mut self, f: std::fs::File) -> Self {
        self.stdin_file = Some(f);
        self
    }

    fn describe(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run and return the output whatever the exit status.
    pub fn run(mut self) -> Result<Output, GitError> {
        let mut c = Command::new(&self.git.program);
        for (k, _) in std::env::vars_os() {
            if k.as_encoded_bytes().starts_with(b"GIT_") {
                c.env_remove(&k);
            }
        }
        if let Some(home) = &self.git.home {
            c.env("HOME", home).env_remove("XDG_CONFIG_HOME");
        }
        c.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        for kv in SAFE_CONFIG {
            c.arg("-c").arg(kv);
        }
        c.args(&self.args)
            .stdin(match (&self.stdin, self.stdin_file.take()) {
                (Some(_), _) => Stdio::piped(),
                (None, Some(f)) => Stdio::from(f),
                (None, None) => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = self.describe();
        let mut child = c
            .spawn()
            .map_err(|e| GitError::io(format!("cannot run {}", self.git.program.display()), e))?;
        // Write stdin from a thread so a large output cannot dead-lock us.
        let writer = match (self.stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let out = child
            .wait_with_output()
            .map_err(|e| GitError::io(format!("git {what}"), e))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Output {
            stdout: out.stdout,
            stderr: out.stderr,
            code: out.status.code(),
        })
    }

    /// Run; an error unless git exits 0.
    pub fn ok(self) -> Result<Output, GitError> {
        let what = self.describe();
        let out = self.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(failed(&what, &out))
        }
    }

    /// Run; stdout as text when git exits 0.
    pub fn ok_text(self) -> Result<String, GitError> {
        Ok(self.ok()?.text())
    }
}

/// The error for a git command that exited non-zero.
pub(crate) fn failed(what: &str, out: &Output) -> GitError {
    GitError::Command {
        args: what.to_string(),
        status: match out.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        },
        stderr: out.stderr_text(),
    }
}

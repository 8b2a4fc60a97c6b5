//! Running commands in a named container on the user's behalf: streamed,
//! captured, or interactive on the user's terminal.

use std::io::IsTerminal;

use crate::incus::{self, Client, ExecOutput, ExecRequest};
use crate::terminal;

/// Check an `--env` argument: `KEY=VALUE`, the value may hold `=` and `,`.
pub fn parse_env(arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("invalid variable name {k:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// How to run a command.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// uid and gid.
    pub user: u32,
    /// gid.
    pub group: u32,
    /// Working directory (empty: the user's home).
    pub cwd: String,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl ExecSpec {
    /// The daemon request for this spec.
    pub fn request(&self) -> ExecRequest {
        let mut req = ExecRequest::new(&self.command)
            .as_user(self.user, self.group)
            .cwd(&self.cwd);
        for (k, v) in &self.env {
            req = req.env(k, v);
        }
        req
    }
}

/// Run with output streamed to ours; stdin is forwarded unless it is a terminal.
pub async fn exec_streamed(client: &Client, name: &str, spec: &ExecSpec) -> incus::Result<i32> {
    let stdin = (!std::io::stdin().is_terminal()).then(tokio::io::stdin);
    client
        .exec(
            name,
            &spec.request(),
            stdin,
            tokio::io::stdout(),
            tokio::io::stderr(),
        )
        .await
}

/// Run and collect the output; stdin is forwarded unless it is a terminal.
pub async fn exec_captured(
    client: &Client,
    name: &str,
    spec: &ExecSpec,
) -> incus::Result<ExecOutput> {
    let mut out = ExecOutput::default();
    let stdin = (!std::io::stdin().is_terminal()).then(tokio::io::stdin);
    out.exit_code = client
        .exec(
            name,
            &spec.request(),
            stdin,
            &mut out.stdout,
            &mut out.stderr,
        )
        .await?;
    Ok(out)
}

/// Run on a PTY attached to the user's terminal.
pub async fn exec_interactive(client: &Client, name: &str, spec: &ExecSpec) -> incus::Result<i32> {
    terminal::run_interactive(client, name, spec.request()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_keep_commas_and_equals() {
        assert_eq!(
            parse_env("A=b,c=d").unwrap(),
            ("A".to_string(), "b,c=d".to_string())
        );
        assert_eq!(parse_env("EMPTY=").unwrap(), ("EMPTY".into(), "".into()));
        assert!(parse_env("NOEQ").is_err());
        assert!(parse_env("=x").is_err());
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("A B=x").is_err());
    }
}

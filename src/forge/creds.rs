//! The host's credentials, looked up as the user when a request needs
//! them (never earlier, never written anywhere): the git host's token
//! (`[git] token_command`, `gh auth token`, git's credential helpers) and
//! the agent's API key; each kept in memory for a minute.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Grant;
use super::server::{Credential, Shared};

/// The host's credential for `host`, cached for a minute (a failure for
/// ten seconds).
pub(super) async fn credential(shared: &Shared, grant: &Grant, host: &str) -> Option<Credential> {
    let key = (grant.token_command.clone(), host.to_string());
    if let Some((at, c)) = shared.tokens.lock().await.get(&key) {
        let ttl = if c.is_some() { 60 } else { 10 };
        if at.elapsed() < Duration::from_secs(ttl) {
            return c.clone();
        }
    }
    // (Looked up without the lock: a slow helper holds up no one else.)
    let c = match lookup(grant.token_command.as_deref(), host).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("[forge] no credential for {host}: {e}");
            None
        }
    };
    shared
        .tokens
        .lock()
        .await
        .insert(key, (Instant::now(), c.clone()));
    c
}

pub(super) async fn run(cmd: &mut tokio::process::Command, input: &[u8]) -> Result<String, String> {
    run_for(cmd, input, Duration::from_secs(20)).await
}

/// Run `cmd` with `input`, for at most `limit`: its output, or its first
/// line of complaint and exit status.
pub(super) async fn run_for(
    cmd: &mut tokio::process::Command,
    input: &[u8],
    limit: Duration,
) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GH_PROMPT_DISABLED", "1")
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input).await;
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("took over {} s", limit.as_secs()))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} ({})",
            crate::proxy::log::clean(err.lines().next().unwrap_or("").trim()),
            out.status
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| "it printed no text".into())
}

/// `[git] token_command`, else `gh auth token`, else git's credential
/// helpers — all run on the host as the user, never inside.
pub(super) async fn lookup(command: Option<&str>, host: &str) -> Result<Credential, String> {
    let token = |s: String| {
        let t = s.lines().next().unwrap_or("").trim().to_string();
        (!t.is_empty()).then_some(Credential {
            user: "x-access-token".into(),
            secret: t,
        })
    };
    if let Some(c) = command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(c).env("CCI_GIT_HOST", host);
        // (Its complaint is not repeated: it could hold a secret.)
        return run(&mut cmd, b"")
            .await
            .map_err(|e| {
                let status = e.rsplit_once(" (").map_or("", |(_, s)| s);
                format!("failed ({status}")
            })
            .and_then(|s| token(s).ok_or_else(|| "printed nothing".into()))
            .map_err(|e| format!("[git] token_command {e}"));
    }
    let mut gh = tokio::process::Command::new("gh");
    gh.args(["auth", "token", "--hostname", host]);
    let gh_said = match run(&mut gh, b"").await {
        Ok(s) => match token(s) {
            Some(c) => return Ok(c),
            None => "gh printed nothing".to_string(),
        },
        Err(e) => format!("gh: {e}"),
    };
    let mut git = tokio::process::Command::new("git");
    git.args(["credential", "fill"]);
    let said = run(
        &mut git,
        format!("protocol=https\nhost={host}\n\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("{gh_said}; git credential: {e}"))?;
    let field = |k: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    match (field("username"), field("password")) {
        (Some(user), Some(secret)) if !secret.is_empty() => Ok(Credential { user, secret }),
        _ => Err(format!("{gh_said}; git credential gave none")),
    }
}

/// The host's API key: `api_key_command`, else `primaryApiKey` of the
/// host's `.claude.json`; cached as the git credential is.
pub(super) async fn api_key(shared: &Shared, api: &super::ApiGrant) -> Option<String> {
    let key = (
        api.key_command.clone(),
        format!("api:{}", api.credentials_home.as_deref().unwrap_or("")),
    );
    if let Some((at, c)) = shared.tokens.lock().await.get(&key) {
        let ttl = if c.is_some() { 60 } else { 10 };
        if at.elapsed() < Duration::from_secs(ttl) {
            return c.as_ref().map(|c| c.secret.clone());
        }
    }
    let found = match &api.key_command {
        Some(c) => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c").arg(c);
            run(&mut cmd, b"")
                .await
                .map_err(|e| tracing::warn!("[forge] [tool] api_key_command: {e}"))
                .ok()
                .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        }
        None => api.credentials_home.as_ref().and_then(|h| {
            let data = std::fs::read(Path::new(h).join(".claude.json")).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
            v["primaryApiKey"].as_str().map(str::to_string)
        }),
    }
    .filter(|k| !k.is_empty())
    .map(|secret| Credential {
        user: String::new(),
        secret,
    });
    shared
        .tokens
        .lock()
        .await
        .insert(key, (Instant::now(), found.clone()));
    found.map(|c| c.secret)
}

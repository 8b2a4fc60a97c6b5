//! Deciding a push in full, before a byte of it goes upstream: the rules
//! ([`policy::check`]), then, in a cci-owned bare cache of the repository
//! fetched with the credential, where each branch is, whether it moves
//! forward only, and whether a commit new to the remote touches a CI
//! definition. The agent's repository is never used, so no hook or config
//! of the agent's runs on the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::creds::{run, run_for};
use super::policy::{self, Push};
use super::server::{Credential, Shared};
use super::{Grant, Repo};

/// Host git on cci's cache (`~/.cci/forge/cache/KEY.git`), with no system
/// or user config and the credential in its environment (never argv).
pub(super) async fn cache_git(
    cache: &Path,
    cred: Option<&Credential>,
    args: &[&str],
    input: &[u8],
) -> Result<String, String> {
    cache_git_in(cache, None, cred, args, input).await
}

/// [`cache_git`], with the push's objects in `scratch` (new objects go
/// there, the cache's are borrowed): a checked pack never stays in the
/// cache.
pub(super) async fn cache_git_in(
    cache: &Path,
    scratch: Option<&Path>,
    cred: Option<&Credential>,
    args: &[&str],
    input: &[u8],
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(s) = scratch {
        cmd.env("GIT_OBJECT_DIRECTORY", s)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", cache.join("objects"));
    } else {
        cmd.env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
    }
    cmd.arg("--git-dir")
        .arg(cache)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    match cred {
        Some(c) => cmd
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: {}", c.basic()),
            ),
        None => cmd.env_remove("GIT_CONFIG_COUNT"),
    };
    // A first fetch of a large repository takes a while.
    run_for(&mut cmd, input, Duration::from_secs(600)).await
}

pub(super) fn cache_path(repo: &Repo) -> std::io::Result<PathBuf> {
    use sha2::Digest;
    let key = sha2::Sha256::digest(repo.id().to_ascii_lowercase().as_bytes());
    let hex: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Ok(crate::state::dir("forge/cache")?.join(format!("{hex}.git")))
}

/// Every reason to refuse `push` (empty: it may go upstream).
pub(super) async fn decide(
    shared: &Shared,
    grant: &Grant,
    repo: &Repo,
    upstream: &str,
    cred: Option<&Credential>,
    push: &Push,
    body: &[u8],
) -> Vec<(String, String)> {
    if let Err(why) = policy::check_push(push) {
        return push
            .updates
            .iter()
            .map(|u| (u.name.clone(), why.clone()))
            .collect();
    }
    let mut reasons: Vec<(String, String)> = push
        .updates
        .iter()
        .filter_map(|u| {
            policy::check(u, &grant.push, None)
                .err()
                .map(|w| (u.name.clone(), w))
        })
        .collect();
    if !reasons.is_empty() {
        return reasons;
    }
    let all = |w: String| -> Vec<(String, String)> {
        push.updates
            .iter()
            .map(|u| (u.name.clone(), w.clone()))
            .collect()
    };
    let cache = match cache_path(repo) {
        Ok(c) => c,
        Err(e) => return all(format!("cci's cache: {e}")),
    };
    let lock = {
        let mut caches = shared.caches.lock().await;
        caches
            .entry(repo.id().to_ascii_lowercase())
            .or_default()
            .clone()
    };
    let _held = lock.lock().await;
    if !cache.join("HEAD").exists() {
        let mut init = tokio::process::Command::new("git");
        init.args(["init", "--bare", "-q"]).arg(&cache);
        if let Err(e) = run(&mut init, b"").await {
            return all(format!("cannot make cci's cache: {e}"));
        }
    }
    let host = &repo.host;
    // Where the remote's branches are now, and its default branch.
    if let Err(e) = cache_git(
        &cache,
        cred,
        &[
            "fetch",
            "--no-tags",
            "--prune",
            "-q",
            upstream,
            "+refs/heads/*:refs/up/*",
        ],
        b"",
    )
    .await
    {
        return all(format!("cannot read the branches on {host}: {e}"));
    }
    // (An empty repository has no HEAD to name; a failed ask refuses.)
    let default = match cache_git(
        &cache,
        cred,
        &["ls-remote", "--symref", upstream, "HEAD"],
        b"",
    )
    .await
    {
        Ok(s) => s.lines().find_map(|l| {
            l.strip_prefix("ref: refs/heads/")
                .and_then(|r| r.strip_suffix("\tHEAD"))
                .map(str::to_string)
        }),
        Err(e) => return all(format!("cannot learn {host}'s default branch: {e}")),
    };
    reasons = push
        .updates
        .iter()
        .filter_map(|u| {
            policy::check(u, &grant.push, default.as_deref())
                .err()
                .map(|w| (u.name.clone(), w))
        })
        .collect();
    if !reasons.is_empty() {
        return reasons;
    }
    // The pack goes into a scratch object folder that borrows the cache's
    // objects, removed when the check is done.
    let scratch = match crate::state::dir("forge/tmp") {
        Ok(d) => d.join(uuid::Uuid::new_v4().simple().to_string()),
        Err(e) => return all(format!("cci's scratch folder: {e}")),
    };
    if let Err(e) = std::fs::create_dir_all(scratch.join("pack")) {
        return all(format!("cci's scratch folder: {e}"));
    }
    let reasons = check_objects(&cache, &scratch, grant, host, push, body).await;
    let _ = std::fs::remove_dir_all(&scratch);
    reasons
}

/// Paths whose change makes the host run code with the repository's
/// secrets (CI definitions): refused unless `[git] push_ci` allows.
pub(super) const CI_PATHS: &[&str] = &[
    ".github/workflows/",
    ".github/actions/",
    ".gitlab-ci.yml",
    ".gitlab/",
];

/// The checks that need the push's objects: each branch is where the
/// client thinks, moves forward only, and no commit new to the remote
/// touches CI definitions (unless allowed).
pub(super) async fn check_objects(
    cache: &Path,
    scratch: &Path,
    grant: &Grant,
    host: &str,
    push: &Push,
    body: &[u8],
) -> Vec<(String, String)> {
    let git = |args: Vec<String>, input: &[u8]| {
        let input = input.to_vec();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cache_git_in(cache, Some(scratch), None, &args, &input).await
        }
    };
    let mut reasons = Vec::new();
    let pack = &body[push.pack_at..];
    if !pack.is_empty()
        && let Err(e) = git(
            vec!["index-pack".into(), "--stdin".into(), "--fix-thin".into()],
            pack,
        )
        .await
    {
        return push
            .updates
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    format!("cannot check the push against {host}'s history: {e}"),
                )
            })
            .collect();
    }
    for u in push.updates.iter().filter(|u| !u.deletes()) {
        let Some(branch) = u.name.strip_prefix("refs/heads/") else {
            // A new tag (the only other kind allowed): what it points at
            // is checked below.
            if let Some(why) = ci_change(&git, grant, &u.new).await {
                reasons.push((u.name.clone(), why));
            }
            continue;
        };
        let up = format!("refs/up/{branch}");
        let now = git(
            vec!["rev-parse".into(), "-q".into(), "--verify".into(), up],
            b"",
        )
        .await
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
        if u.creates() && !now.is_empty() {
            reasons.push((
                u.name.clone(),
                format!("{branch} exists on {host} already: fetch it first"),
            ));
            continue;
        }
        if !u.creates() && now != u.old {
            reasons.push((
                u.name.clone(),
                format!("{branch} moved on {host} since you fetched: fetch and try again"),
            ));
            continue;
        }
        if !u.creates() {
            match git(
                vec![
                    "merge-base".into(),
                    "--is-ancestor".into(),
                    u.old.clone(),
                    u.new.clone(),
                ],
                b"",
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.contains("exit status: 1") => {
                    reasons.push((
                        u.name.clone(),
                        "not a fast-forward: force pushes are not allowed".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    reasons.push((u.name.clone(), format!("cannot check the history: {e}")));
                    continue;
                }
            }
        }
        if let Some(why) = ci_change(&git, grant, &u.new).await {
            reasons.push((u.name.clone(), why));
        }
    }
    reasons
}

/// Why `new` may not go up because a commit not yet on the remote changes
/// a CI definition (`None`: it may).
pub(super) async fn ci_change<F, Fut>(git: &F, grant: &Grant, new: &str) -> Option<String>
where
    F: Fn(Vec<String>, &[u8]) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    if grant.push.ci {
        return None;
    }
    // Every path a commit new to the remote changes (merges against each
    // parent, so nothing hides in a merge).
    let args = vec![
        "log".into(),
        "-m".into(),
        "--no-renames".into(),
        "--name-only".into(),
        "--format=".into(),
        new.to_string(),
        "--not".into(),
        "--glob=refs/up/*".into(),
    ];
    match git(args, b"").await {
        Ok(out) => out
            .lines()
            .find(|p| CI_PATHS.iter().any(|c| p.starts_with(c)))
            .map(|p| {
                format!(
                    "it changes {} (CI runs it with the repository's secrets; [git] push_ci = true allows)",
                    crate::proxy::log::clean(p)
                )
            }),
        Err(e) => Some(format!("cannot list what it changes: {e}")),
    }
}

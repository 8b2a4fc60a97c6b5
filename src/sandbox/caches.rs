//! Package caches shared between sandboxes (`[caches]`): host folders, one
//! per scope (a workspace, or all of the user's), mounted into each new
//! sandbox, with the tools' cache variables pointed at them, so a second
//! slot's `npm install` finds what the first downloaded.
//!
//! What is shared is the download caches only, never the tools' settings
//! or credentials (`~/.npmrc`, pip's config, cargo's `CARGO_HOME` with its
//! `credentials.toml` are not caches and stay out). The agent can write into
//! a cache, so cci treats its contents as hostile: it never follows a link
//! in one, changes the owner only of folders it has just made, and empties
//! a cache that grew past its cap with the kernel's no-follow removal.

use std::path::{Path, PathBuf};

use crate::config::{CacheKind, CacheScope, CacheSettings};

/// Where npm's, pip's and Go's caches appear inside (a folder each).
///
/// Only caches the session user writes are offered: each container has an
/// id map of its own, so what root (apt) writes in one is nobody's in the
/// next, and sharing it would mean mapping container root, which cci never
/// does.
pub const TOOLS_MOUNT: &str = "/var/cache/cci";

/// The mounts and variables of a sandbox's caches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// `(host, container, readonly)`, for `mounts::plan`.
    pub mounts: Vec<(String, String, bool)>,
    /// Environment variables pointing the tools at them.
    pub env: Vec<(String, String)>,
}

/// The variable telling `kind` where its cache is.
fn variable(kind: CacheKind) -> &'static str {
    match kind {
        CacheKind::Npm => "npm_config_cache",
        CacheKind::Pip => "PIP_CACHE_DIR",
        CacheKind::Go => "GOMODCACHE",
    }
}

/// The host folder of this scope's caches.
pub fn scope_dir(c: &CacheSettings, workspace_id: &str) -> PathBuf {
    match c.scope {
        CacheScope::Workspace => c.dir.join(format!("workspace-{workspace_id}")),
        CacheScope::User => c.dir.join("user"),
    }
}

/// Make the cache folders of `c` for workspace `workspace_id` (new ones
/// owned by `owner`, who is `code` inside), empty those past the cap, and
/// say what to mount and set.
pub fn plan(
    c: &CacheSettings,
    workspace_id: &str,
    owner: Option<(u32, u32)>,
) -> Result<Planned, String> {
    let mut p = Planned::default();
    if c.enabled.is_empty() {
        return Ok(p);
    }
    let err = |path: &Path, e: std::io::Error| format!("cache folder {}: {e}", path.display());
    std::fs::create_dir_all(&c.dir).map_err(|e| err(&c.dir, e))?;
    let scope = scope_dir(c, workspace_id);
    made(&scope, None, 0o700).map_err(|e| err(&scope, e))?;
    // What an earlier emptying could not remove, tried again.
    for e in std::fs::read_dir(&scope).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("trash-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let tools = scope.join("tools");
    made(&tools, owner, 0o755).map_err(|e| err(&tools, e))?;
    p.mounts
        .push((tools.display().to_string(), TOOLS_MOUNT.into(), false));
    for &kind in &c.enabled {
        p.env.push((
            variable(kind).into(),
            format!("{TOOLS_MOUNT}/{}", kind.word()),
        ));
        let dir = tools.join(kind.word());
        made(&dir, owner, 0o755).map_err(|e| err(&dir, e))?;
        if size_over(&dir, c.max_bytes) {
            // A cache that cannot be emptied (read-only module folders, a
            // folder of another id) costs disk, never a session.
            match empty(&scope, &dir, owner) {
                Ok(()) => tracing::info!("cache {} passed its cap: emptied", dir.display()),
                Err(e) => eprintln!(
                    "cci: warning: cache {} passed its cap and could not be emptied: {e}",
                    dir.display()
                ),
            }
        }
    }
    Ok(p)
}

/// Refuse a cache folder the agent could reach other than through the cache
/// mount: inside the workspace or a writable mount, or holding one (cci
/// works in it on the host before anything starts).
pub fn check_place(dir: &Path, workspace: &Path, writable: &[PathBuf]) -> Result<(), String> {
    let real = |p: &Path| -> PathBuf {
        // The nearest existing folder, resolved, and the rest as written.
        let mut head = p.to_path_buf();
        let mut tail = Vec::new();
        while !head.exists() {
            match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
                (Some(n), Some(parent)) => {
                    tail.push(n);
                    head = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = std::fs::canonicalize(&head).unwrap_or(head);
        out.extend(tail.iter().rev());
        out
    };
    let d = real(dir);
    for other in std::iter::once(workspace).chain(writable.iter().map(PathBuf::as_path)) {
        let o = real(other);
        if d.starts_with(&o) || o.starts_with(&d) {
            return Err(format!(
                "caches.dir {} and {} overlap: the agent could change the caches' folders from there; set [caches] dir elsewhere",
                d.display(),
                o.display()
            ));
        }
    }
    Ok(())
}

/// Make `dir` when missing (then owned by `owner`, with `mode`); anything
/// else found there — a link, a file — is removed and the folder made.
///
/// Nothing here follows a link: the mode is given at creation (never a
/// chmod, which would follow a link swapped in meanwhile), the owner set
/// with `lchown` (a link swapped in gets the owner, not its target).
fn made(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new().mode(mode).create(dir)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Empty the cache `dir`: moved aside into `scope` (which no sandbox
/// mounts; a rename moves a link, not its target), made again (0755), and
/// what was moved removed without following any link in it.
fn empty(scope: &Path, dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let trash = scope.join(format!("trash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::rename(dir, &trash)?;
    made(dir, owner, 0o755)?;
    // std's remove_dir_all removes links, never what they point to.
    std::fs::remove_dir_all(&trash)
}

/// The most entries a size walk looks at; a cache with more is over any cap.
const MAX_ENTRIES: usize = 2_000_000;

/// Whether the files under `dir` (links not followed, other file systems
/// not entered) take more than `max` bytes.
fn size_over(dir: &Path, max: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return true;
            }
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(e.path());
            } else if m.is_file() {
                total = total.saturating_add(m.len());
                if total > max {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, enabled: &[CacheKind], max: u64) -> CacheSettings {
        CacheSettings {
            enabled: enabled.to_vec(),
            dir: dir.to_path_buf(),
            scope: CacheScope::Workspace,
            max_bytes: max,
        }
    }

    #[test]
    fn a_cache_folder_in_or_around_an_agents_folder_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let mount = d.path().join("data");
        assert!(check_place(&ws.join(".cache/cci"), &ws, &[]).is_err());
        assert!(check_place(&mount.join("c"), &ws, std::slice::from_ref(&mount)).is_err());
        assert!(check_place(d.path(), &ws, &[]).is_err());
        assert!(check_place(&d.path().join("caches"), &ws, &[mount]).is_ok());
    }

    #[test]
    fn nothing_enabled_mounts_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = plan(&settings(d.path(), &[], 1 << 20), "abcd1234", None).unwrap();
        assert_eq!(p, Planned::default());
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    }

    #[test]
    fn each_cache_gets_its_folder_and_variable() {
        let d = tempfile::tempdir().unwrap();
        let c = settings(d.path(), &[CacheKind::Npm, CacheKind::Go], 1 << 20);
        let p = plan(&c, "abcd1234", None).unwrap();
        let scope = d.path().join("workspace-abcd1234");
        assert_eq!(
            p.mounts,
            vec![(
                scope.join("tools").display().to_string(),
                TOOLS_MOUNT.into(),
                false
            )]
        );
        assert_eq!(
            p.env,
            vec![
                ("npm_config_cache".into(), "/var/cache/cci/npm".into()),
                ("GOMODCACHE".into(), "/var/cache/cci/go".into()),
            ]
        );
        assert!(scope.join("tools/npm").is_dir() && scope.join("tools/go").is_dir());
        let user = CacheSettings {
            scope: CacheScope::User,
            ..c
        };
        assert_eq!(scope_dir(&user, "x"), d.path().join("user"));
    }

    #[test]
    fn a_cache_past_its_cap_is_emptied_and_links_in_it_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), vec![0u8; 4096]).unwrap();
        let c = settings(d.path(), &[CacheKind::Pip], 10_000);
        plan(&c, "abcd1234", None).unwrap();
        let pip = d.path().join("workspace-abcd1234/tools/pip");
        std::fs::create_dir(pip.join("http")).unwrap();
        std::fs::write(pip.join("http/a"), vec![0u8; 6000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), pip.join("link")).unwrap();
        // Under the cap (the link's target is not counted): kept.
        plan(&c, "abcd1234", None).unwrap();
        assert!(pip.join("http/a").exists());
        std::fs::write(pip.join("http/b"), vec![0u8; 6000]).unwrap();
        plan(&c, "abcd1234", None).unwrap();
        assert!(pip.is_dir());
        assert!(std::fs::read_dir(&pip).unwrap().next().is_none());
        assert!(outside.path().join("keep").exists());
        // The cache folder itself swapped for a link: the link goes, the
        // folder is made again, the target is untouched.
        std::fs::remove_dir(&pip).unwrap();
        std::os::unix::fs::symlink(outside.path(), &pip).unwrap();
        plan(&c, "abcd1234", None).unwrap();
        assert!(std::fs::symlink_metadata(&pip).unwrap().is_dir());
        assert!(outside.path().join("keep").exists());
    }
}

//! Protected paths of a mounted workspace: what the host's `git` runs or
//! obeys (`.git/hooks`, `.git/config`, `.git/info`; a worktree's `.git`
//! file) and the paths `[workspace] protected_paths` names are mounted
//! read-only over the read-write workspace, and `.git` itself is a mount
//! point so it cannot be renamed away and replaced.
//!
//! What this holds and what it does not: writes, renames, unlinks, chmod and
//! replacing a protected folder fail for every process inside, root
//! included, and tools that install hooks (husky, pre-commit) or set
//! `core.hooksPath` fail loudly instead of planting code. Root inside an
//! unprivileged container can still unmount its own mounts (Incus makes
//! them in the container's user namespace, so the kernel does not lock
//! them); that is why the session-end check ([`super::tripwire`]) compares
//! these paths too, and why `--isolated` (no host `.git` inside at all) is
//! the mode for work you do not trust.
//!
//! Every source is a path without symbolic links, checked when planned, right
//! before create, and before a kept container starts again
//! ([`sources_unmoved`]): Incus follows a link in a source, so an agent that
//! swapped `.git/hooks` for a link to `~/.ssh` between two sessions would
//! otherwise have it mounted.

use std::path::{Path, PathBuf};

use super::mounts::WORKSPACE_MOUNT;
use super::mounts::{Mount, resolve};
use crate::incus::Instance;

/// Device names of protected paths start with this.
pub const DEVICE_PREFIX: &str = "protect";

/// What the protection of one workspace is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The mounts, outer before inner.
    pub mounts: Vec<Mount>,
    /// Configured paths that do not exist (not protected; the session-end
    /// check still reports them when they appear).
    pub missing: Vec<String>,
}

// A configured protected path is plain and relative: owned by the
// configuration, which checks it for every layer.
pub use crate::config::protected_path_ok as path_ok;

fn mount(ws: &Path, rel: &str, readonly: bool) -> Mount {
    Mount {
        host: ws.join(rel),
        container: format!("{WORKSPACE_MOUNT}/{rel}"),
        readonly,
    }
}

/// The protected paths of workspace `ws` (canonical): git's unless
/// `writable_git`, then the configured `extra` ones that exist. Missing
/// `.git/hooks` and `.git/info` folders are made (owned like `.git`), so
/// nothing can appear there unprotected. A link among them is refused: cci
/// would mount what it points to.
pub fn plan(ws: &Path, extra: &[String], writable_git: bool) -> Result<Plan, String> {
    let mut out = Plan::default();
    let why = |rel: &str, e: String| format!("protected path {rel}: {e}");
    if !writable_git {
        let git = ws.join(".git");
        match std::fs::symlink_metadata(&git) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link: cci cannot protect the repository it points to; use --isolated, or --writable-git-hooks to mount it unprotected",
                    git.display()
                ));
            }
            Ok(m) if m.is_dir() => {
                out.mounts.push(mount(ws, ".git", false));
                for sub in ["hooks", "info"] {
                    let dir = git.join(sub);
                    if std::fs::symlink_metadata(&dir).is_err() {
                        make_like(&dir, &m).map_err(|e| why(&format!(".git/{sub}"), e))?;
                    }
                    out.mounts.push(mount(ws, &format!(".git/{sub}"), true));
                }
                if git.join("config").exists() {
                    out.mounts.push(mount(ws, ".git/config", true));
                }
            }
            // A worktree or submodule: the file says where its repository is.
            Ok(_) => out.mounts.push(mount(ws, ".git", true)),
            Err(_) => {}
        }
    }
    for rel in extra {
        path_ok(rel)?;
        let rel = rel.trim_end_matches('/');
        if out.mounts.iter().any(|m| m.host == ws.join(rel)) {
            continue;
        }
        match std::fs::symlink_metadata(ws.join(rel)) {
            Err(_) => out.missing.push(rel.to_string()),
            Ok(_) => out.mounts.push(mount(ws, rel, true)),
        }
    }
    for m in &mut out.mounts {
        let rel = m.host.strip_prefix(ws).unwrap_or(&m.host).to_path_buf();
        m.host = resolve(&m.host, false).map_err(|e| why(&rel.display().to_string(), e))?;
    }
    // Incus mounts outer paths first; keep the list in that order too.
    out.mounts.sort_by_key(|m| m.container.matches('/').count());
    Ok(out)
}

/// A missing `.git/hooks` or `.git/info`, made owned like `.git` (`git`).
fn make_like(dir: &Path, git: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir(dir).map_err(|e| e.to_string())?;
    if crate::state::is_root() {
        std::os::unix::fs::chown(dir, Some(git.uid()), Some(git.gid()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every host folder or file an existing container mounts, checked again
/// before cci starts it: a source that now has a symbolic link in it (the
/// agent can swap a protected path inside the workspace for one) is refused.
/// A missing source is fine: cci marks protected paths not required.
pub fn sources_unmoved(i: &Instance) -> Result<(), String> {
    for (name, d) in &i.devices {
        if d.get("type").map(String::as_str) != Some("disk") || d.contains_key("pool") {
            continue;
        }
        let Some(src) = d.get("source").filter(|s| s.starts_with('/')) else {
            continue;
        };
        let src = PathBuf::from(src);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let now = resolve(&src, false).map_err(|e| format!("{}: device {name}: {e}", i.name))?;
        if now != src {
            return Err(format!(
                "{}: device {name}: {} now resolves to {}: {}",
                i.name,
                src.display(),
                now.display(),
                super::mounts::WHY
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".git/objects")).unwrap();
        std::fs::write(d.path().join(".git/config"), "[core]\n").unwrap();
        d
    }

    fn containers(p: &Plan) -> Vec<(&str, bool)> {
        p.mounts
            .iter()
            .map(|m| (m.container.as_str(), m.readonly))
            .collect()
    }

    #[test]
    fn a_repository_gets_its_git_folder_pinned_and_hooks_config_info_read_only() {
        let d = repo();
        let p = plan(d.path(), &[], false).unwrap();
        assert_eq!(
            containers(&p),
            [
                ("/workspace/.git", false),
                ("/workspace/.git/hooks", true),
                ("/workspace/.git/info", true),
                ("/workspace/.git/config", true),
            ]
        );
        assert!(d.path().join(".git/hooks").is_dir(), "missing hooks made");
        assert!(d.path().join(".git/info").is_dir(), "missing info made");
        // Opted out: nothing.
        assert_eq!(plan(d.path(), &[], true).unwrap(), Plan::default());
    }

    #[test]
    fn a_worktree_git_file_is_read_only_and_no_repository_is_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(plan(d.path(), &[], false).unwrap(), Plan::default());
        std::fs::write(d.path().join(".git"), "gitdir: /elsewhere\n").unwrap();
        let p = plan(d.path(), &[], false).unwrap();
        assert_eq!(containers(&p), [("/workspace/.git", true)]);
    }

    #[test]
    fn links_are_refused_and_configured_paths_checked() {
        let d = repo();
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(home.path(), d.path().join(".git/hooks")).unwrap();
        let e = plan(d.path(), &[], false).unwrap_err();
        assert!(
            e.contains("symbolic link") && e.contains(".git/hooks"),
            "{e}"
        );

        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(home.path(), d.path().join(".git")).unwrap();
        let e = plan(d.path(), &[], false).unwrap_err();
        assert!(e.contains("--isolated"), "{e}");
        std::fs::remove_file(d.path().join(".git")).unwrap();

        std::fs::write(d.path().join(".envrc"), "").unwrap();
        std::os::unix::fs::symlink(home.path(), d.path().join(".vscode")).unwrap();
        let extra = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = plan(d.path(), &extra(&[".envrc", "missing/x"]), false).unwrap();
        assert_eq!(containers(&p), [("/workspace/.envrc", true)]);
        assert_eq!(p.missing, ["missing/x"]);
        assert!(plan(d.path(), &extra(&[".vscode"]), false).is_err());
        for bad in ["/etc", "../x", "a/../b", "./a", ""] {
            assert!(path_ok(bad).is_err(), "{bad}");
            assert!(plan(d.path(), &extra(&[bad]), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_source_swapped_for_a_link_stops_a_kept_container() {
        let d = repo();
        let p = plan(d.path(), &[], false).unwrap();
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": "cci-x-1", "status": "Stopped", "config": {}, "devices": {}
        }))
        .unwrap();
        for (n, m) in p.mounts.iter().enumerate() {
            let mut dev = std::collections::HashMap::new();
            dev.insert("type".to_string(), "disk".to_string());
            dev.insert("source".to_string(), m.host.display().to_string());
            i.devices.insert(format!("{DEVICE_PREFIX}{n}"), dev);
        }
        assert_eq!(sources_unmoved(&i), Ok(()));
        let home = tempfile::tempdir().unwrap();
        std::fs::remove_dir(d.path().join(".git/hooks")).unwrap();
        assert_eq!(sources_unmoved(&i), Ok(()), "a missing source is skipped");
        std::os::unix::fs::symlink(home.path(), d.path().join(".git/hooks")).unwrap();
        let e = sources_unmoved(&i).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }
}

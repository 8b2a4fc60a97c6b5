//! What a sandbox gets besides its workspace: host folders mounted
//! (`--mount`, `--storage`, `[[mounts]]`), resource limits and a time limit,
//! all from the configuration and flags; and where the workspace and those
//! folders appear inside.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the workspace appears inside.
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// Where `--storage` appears inside.
pub const STORAGE_MOUNT: &str = "/storage";

/// A host folder (or file) to mount, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Canonical host path.
    pub host: PathBuf,
    /// Absolute container path.
    pub container: String,
    /// Read-only.
    pub readonly: bool,
}

/// Limits and extras of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// `limits.cpu`.
    pub cpu: Option<u32>,
    /// `limits.memory`.
    pub memory: Option<String>,
    /// `limits.processes`.
    pub processes: Option<u32>,
    /// The root disk's pool (when it must be named).
    pub pool: Option<String>,
    /// The root disk's size.
    pub disk: Option<String>,
    /// Host folders to mount.
    pub mounts: Vec<Mount>,
    /// Workspace paths mounted over the workspace (see `protect`).
    pub protected: Vec<Mount>,
    /// No workspace mount: an isolated git session clones it inside.
    pub isolated: bool,
    /// The workspace is copied in instead of mounted (a remote server and a
    /// folder that is not a git repository; see `sandbox::copied`).
    pub copy: bool,
    /// The host uid/gid mapped to the account inside (the workspace owner);
    /// `None` (`incus.disable_shift`): no host id is mapped.
    pub owner: Option<(u32, u32)>,
    /// Kernel interfaces of `spec::KERNEL_DENY` allowed back in.
    pub kernel_allow: Vec<String>,
    /// Hand the container over as soon as it runs, without waiting for its
    /// network (`--no-wait`).
    pub no_wait: bool,
    /// Stop the session after this long.
    pub max_duration: Option<Duration>,
    /// The host's SSH agent, forwarded (`--ssh-agent`).
    pub ssh_agent: Option<super::forward::SshAgent>,
    /// The cluster member to create on (`--target`).
    pub target: Option<String>,
    /// git through cci's forwarder (see `crate::forge`).
    pub forge: Option<crate::forge::Forward>,
    /// Container ports published on the host (`--publish`, `[[ports]]`).
    pub ports: Vec<crate::config::PortSpec>,
    /// Host sockets forwarded in (`[[sockets]]`).
    pub sockets: Vec<super::forward::HostSocket>,
    /// Variables pointing the tools at the shared caches (`[caches]`).
    pub cache_env: Vec<(String, String)>,
    /// `(pool, volume, container path)`: shared cache volumes (`[caches]`).
    pub volumes: Vec<(String, String, String)>,
}

/// `HOST:CONTAINER[:ro|:rw]` -> (host, container, readonly).
pub fn parse_mount_arg(arg: &str) -> Result<(String, String, bool), String> {
    let (rest, readonly) = match arg.rsplit_once(':') {
        Some((r, "ro")) => (r, true),
        Some((r, "rw")) => (r, false),
        _ => (arg, false),
    };
    let (host, container) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{arg:?} is not HOST:CONTAINER[:ro]"))?;
    if host.is_empty() || container.is_empty() {
        return Err(format!("{arg:?} is not HOST:CONTAINER[:ro]"));
    }
    Ok((host.to_string(), container.to_string(), readonly))
}

pub(super) fn plain(container: &str) -> bool {
    let p = Path::new(container);
    p.is_absolute()
        && p != Path::new("/")
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Why links and workspace folders are refused as mount sources.
pub(super) const WHY: &str =
    "the agent could redirect it to another host folder (such as your home)";

/// `path` (`~` expanded, relative to the current folder) resolved without
/// following symbolic links: `.` dropped and `..` taken lexically, which is
/// sound because no component before it is a link. Every component that
/// exists is checked with `symlink_metadata`; with `missing_ok`, the walk
/// stops at the first missing one (the caller makes the rest), otherwise a
/// missing component is an error.
pub(super) fn resolve(path: &Path, missing_ok: bool) -> Result<PathBuf, String> {
    let p = crate::config::expand_home(&path.to_string_lossy());
    let p = if p.is_absolute() {
        p
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current folder: {e}"))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    let mut checking = true;
    for c in p.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
                continue;
            }
            _ => continue,
        }
        if !checking {
            continue;
        }
        match std::fs::symlink_metadata(&out) {
            Ok(m) if m.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&p)
                    .map(|r| format!("; name the folder itself ({})", r.display()))
                    .unwrap_or_default();
                return Err(format!(
                    "mount source {}: {} is a symbolic link, and a link in a mount source is refused: {WHY}{real}",
                    p.display(),
                    out.display()
                ));
            }
            Ok(_) => {}
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => checking = false,
            Err(e) => return Err(format!("mount source {}: {e}", p.display())),
        }
    }
    Ok(out)
}

/// Refuse a source inside (or equal to) the workspace `ws` (canonical).
fn outside(host: &Path, ws: &Path) -> Result<(), String> {
    if host.starts_with(ws) {
        return Err(format!(
            "mount source {} is inside the workspace {}: {WHY} (the workspace is at {WORKSPACE_MOUNT} already)",
            host.display(),
            ws.display()
        ));
    }
    Ok(())
}

/// Check and resolve the mounts: host paths (`~` expands) must exist, lie
/// outside `workspace` (canonical) and have no symbolic link in any
/// component, and none may lie inside another writable mount's source (in
/// each case the agent could replace the folder with a link to another host
/// folder); container paths must be absolute and plain, and no two of them
/// (nor /workspace, nor /storage when `storage` is given) may be the same or
/// nested. A `storage` folder is made when missing, owned by `owner` (the
/// workspace's owner, so the agent can write there as it can in the
/// workspace). Call [`recheck`] on the result right before the container
/// starts.
pub fn plan(
    workspace: &Path,
    storage: Option<&Path>,
    mounts: &[(String, String, bool)],
    owner: Option<(u32, u32)>,
) -> Result<Vec<Mount>, String> {
    let ws = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let mut all: Vec<Mount> = Vec::new();
    if let Some(s) = storage {
        let s = resolve(s, true)?;
        outside(&s, &ws)?;
        if !s.exists() {
            std::fs::create_dir_all(&s)
                .map_err(|e| format!("storage folder {}: {e}", s.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&s, Some(uid), Some(gid))
                    .map_err(|e| format!("storage folder {}: {e}", s.display()))?;
            }
        }
        all.push(Mount {
            host: resolve(&s, false)?,
            container: STORAGE_MOUNT.into(),
            readonly: false,
        });
    }
    for (host, container, readonly) in mounts {
        if !plain(container) {
            return Err(format!(
                "container path {container:?} must be absolute, without `..`, and not /"
            ));
        }
        let host = resolve(Path::new(host), false)?;
        outside(&host, &ws)?;
        all.push(Mount {
            host,
            container: container.trim_end_matches('/').to_string(),
            readonly: *readonly,
        });
    }
    for a in all.iter().filter(|m| !m.readonly) {
        if let Some(b) = all
            .iter()
            .find(|b| b.host != a.host && b.host.starts_with(&a.host))
        {
            return Err(format!(
                "mount source {} is inside {}, which is mounted writable: {WHY}; mount the outer folder only, or read-only",
                b.host.display(),
                a.host.display()
            ));
        }
    }
    let mut paths: Vec<&str> = vec![WORKSPACE_MOUNT];
    paths.extend(all.iter().map(|m| m.container.as_str()));
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let (pa, pb) = (Path::new(a), Path::new(b));
            if pa == pb {
                return Err(format!("two mounts at {a}"));
            }
            if pa.starts_with(pb) || pb.starts_with(pa) {
                return Err(format!("mounts at {a} and {b} are nested"));
            }
        }
    }
    Ok(all)
}

/// Check the planned mounts again, right before the container starts (call
/// it as late as possible: Incus opens the sources at start): each source
/// must still exist with no symbolic link in any component. A path without
/// links names the same folder it named when [`plan`] checked it (outside
/// the workspace), so a folder swapped for a link in between (by an agent
/// still running in another slot, say) is refused here.
pub fn recheck(mounts: &[Mount]) -> Result<(), String> {
    for m in mounts {
        let now = resolve(&m.host, false)?;
        if now != m.host {
            return Err(format!(
                "mount source {} now resolves to {}: {WHY}",
                m.host.display(),
                now.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_arguments_and_paths_are_checked() {
        assert_eq!(
            parse_mount_arg("/a:/b:ro").unwrap(),
            ("/a".into(), "/b".into(), true)
        );
        assert_eq!(
            parse_mount_arg("/a:/b").unwrap(),
            ("/a".into(), "/b".into(), false)
        );
        assert!(parse_mount_arg("/a").is_err());
        let d = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let h = d.path().to_str().unwrap().to_string();
        let m = |c: &str| (h.clone(), c.to_string(), false);
        assert!(plan(ws, None, &[m("/data")], None).is_ok());
        assert!(
            plan(ws, None, &[m("/data"), m("/data")], None)
                .unwrap_err()
                .contains("two")
        );
        assert!(
            plan(ws, None, &[m("/data"), m("/data/x")], None)
                .unwrap_err()
                .contains("nested")
        );
        assert!(
            plan(ws, None, &[m("/workspace/x")], None)
                .unwrap_err()
                .contains("nested")
        );
        assert!(plan(ws, None, &[m("relative")], None).is_err());
        assert!(plan(ws, None, &[m("/a/../etc")], None).is_err());
        assert!(
            plan(
                ws,
                None,
                &[("/no/such/dir".into(), "/x".into(), false)],
                None
            )
            .is_err()
        );
        let other = tempfile::tempdir().unwrap();
        let st = other.path().join("store");
        assert!(
            plan(ws, Some(&st), &[m("/storage")], None)
                .unwrap_err()
                .contains("two")
        );
        assert!(st.is_dir(), "the storage folder is made");
    }

    #[test]
    fn sources_inside_the_workspace_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        let inner = ws.path().join("cache");
        std::fs::create_dir(&inner).unwrap();
        let m = |h: &Path| (h.display().to_string(), "/cache".to_string(), true);
        for src in [ws.path().to_path_buf(), inner.clone(), inner.join("..")] {
            let e = plan(ws.path(), None, &[m(&src)], None).unwrap_err();
            assert!(e.contains("inside the workspace"), "{e}");
            assert!(e.contains("redirect"), "{e}");
        }
        // --storage too, and nothing is made there.
        let e = plan(ws.path(), Some(&ws.path().join("st")), &[], None).unwrap_err();
        assert!(e.contains("inside the workspace"), "{e}");
        assert!(!ws.path().join("st").exists());
        // A workspace named through a link is the same workspace.
        let d = tempfile::tempdir().unwrap();
        let alias = d.path().join("alias");
        std::os::unix::fs::symlink(ws.path(), &alias).unwrap();
        let e = plan(&alias, None, &[m(&inner)], None).unwrap_err();
        assert!(e.contains("inside the workspace"), "{e}");
        // A folder beside it is fine (positive control).
        let beside = tempfile::tempdir().unwrap();
        assert!(plan(ws.path(), None, &[m(beside.path())], None).is_ok());
    }

    #[test]
    fn a_link_in_any_component_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let m = |h: PathBuf| (h.display().to_string(), "/x".to_string(), false);
        for src in [d.path().join("link"), d.path().join("link/sub")] {
            let e = plan(ws.path(), None, &[m(src)], None).unwrap_err();
            assert!(e.contains("symbolic link") && e.contains("redirect"), "{e}");
            assert!(
                e.contains(&real.display().to_string()),
                "names the real folder: {e}"
            );
        }
        // A link to a folder inside the workspace is refused as a link.
        std::os::unix::fs::symlink(ws.path(), d.path().join("ws-link")).unwrap();
        assert!(plan(ws.path(), None, &[m(d.path().join("ws-link"))], None).is_err());
        // A storage folder behind a link is refused before anything is made.
        let st = d.path().join("link/new-store");
        let e = plan(ws.path(), Some(&st), &[], None).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!real.join("new-store").exists());
        // The real path works (positive control), `..` taken without links.
        let planned = plan(ws.path(), None, &[m(real.join("sub/.."))], None).unwrap();
        assert_eq!(planned[0].host, real);
    }

    #[test]
    fn a_source_inside_a_writable_mount_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("inner")).unwrap();
        let m = |h: PathBuf, c: &str, ro: bool| (h.display().to_string(), c.to_string(), ro);
        let outer = m(d.path().to_path_buf(), "/outer", false);
        let inner = m(d.path().join("inner"), "/inner", true);
        let e = plan(ws.path(), None, &[outer, inner.clone()], None).unwrap_err();
        assert!(e.contains("mounted writable"), "{e}");
        // Under --storage too.
        let e = plan(
            ws.path(),
            Some(d.path()),
            std::slice::from_ref(&inner),
            None,
        )
        .unwrap_err();
        assert!(e.contains("mounted writable"), "{e}");
        // A read-only outer folder cannot be changed from inside.
        let outer_ro = m(d.path().to_path_buf(), "/outer", true);
        assert!(plan(ws.path(), None, &[outer_ro, inner], None).is_ok());
    }

    #[test]
    fn recheck_refuses_a_source_swapped_for_a_link() {
        let ws = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("cache");
        std::fs::create_dir(&src).unwrap();
        let arg = (src.display().to_string(), "/cache".to_string(), false);
        let planned = plan(ws.path(), None, &[arg], None).unwrap();
        assert_eq!(recheck(&planned), Ok(()));
        std::fs::remove_dir(&src).unwrap();
        let e = recheck(&planned).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(home.path(), &src).unwrap();
        let e = recheck(&planned).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }
}

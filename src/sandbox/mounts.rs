//! What a sandbox gets besides its workspace: host folders mounted
//! (`--mount`, `--storage`, `[[mounts]]`), resource limits and a time limit,
//! all from the configuration and flags.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::spec::WORKSPACE_MOUNT;

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

fn plain(container: &str) -> bool {
    let p = Path::new(container);
    p.is_absolute()
        && p != Path::new("/")
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Check and resolve the mounts: host paths (`~` expands) must exist;
/// container paths must be absolute and plain, and no two of them (nor
/// /workspace, nor /storage when `storage` is given) may be the same or
/// nested. A `storage` folder is made when missing, owned by `owner` (the
/// workspace's owner, so the agent can write there as it can in the workspace).
pub fn plan(
    storage: Option<&Path>,
    mounts: &[(String, String, bool)],
    owner: Option<(u32, u32)>,
) -> Result<Vec<Mount>, String> {
    let mut all: Vec<Mount> = Vec::new();
    if let Some(s) = storage {
        let s = crate::config::expand_home(&s.to_string_lossy());
        if !s.exists() {
            std::fs::create_dir_all(&s)
                .map_err(|e| format!("storage folder {}: {e}", s.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&s, Some(uid), Some(gid))
                    .map_err(|e| format!("storage folder {}: {e}", s.display()))?;
            }
        }
        all.push(Mount {
            host: std::fs::canonicalize(&s).map_err(|e| format!("{}: {e}", s.display()))?,
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
        let h = crate::config::expand_home(host);
        let host =
            std::fs::canonicalize(&h).map_err(|e| format!("mount source {}: {e}", h.display()))?;
        all.push(Mount {
            host,
            container: container.trim_end_matches('/').to_string(),
            readonly: *readonly,
        });
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
        let h = d.path().to_str().unwrap().to_string();
        let m = |c: &str| (h.clone(), c.to_string(), false);
        assert!(plan(None, &[m("/data")], None).is_ok());
        assert!(
            plan(None, &[m("/data"), m("/data")], None)
                .unwrap_err()
                .contains("two")
        );
        assert!(
            plan(None, &[m("/data"), m("/data/x")], None)
                .unwrap_err()
                .contains("nested")
        );
        assert!(
            plan(None, &[m("/workspace/x")], None)
                .unwrap_err()
                .contains("nested")
        );
        assert!(plan(None, &[m("relative")], None).is_err());
        assert!(plan(None, &[m("/a/../etc")], None).is_err());
        assert!(plan(None, &[("/no/such/dir".into(), "/x".into(), false)], None).is_err());
        let st = d.path().join("store");
        assert!(
            plan(Some(&st), &[m("/storage")], None)
                .unwrap_err()
                .contains("two")
        );
        assert!(st.is_dir(), "the storage folder is made");
    }
}

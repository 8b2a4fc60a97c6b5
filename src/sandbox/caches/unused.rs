//! `cci clean --caches`: the shared caches no container uses, and their
//! removal. A cache is a scope's host folder (`dir/workspace-ID`,
//! `dir/user`) or an apt volume (`cci-cache-*`); one a container (running
//! or stopped) mounts is in use, and so is one whose scope was used in the
//! last [`RECENT`] (a sandbox may be starting with it: every launch marks
//! its scope's folder before it makes a volume or a container).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{VOLUME_PREFIX, scope_name};
use crate::config::{CacheKind, CacheScope, CacheSettings};

/// How long after its last use a cache may be on its way into a sandbox
/// that is still starting (its folders made, its image perhaps still
/// building, its container not made yet).
pub const RECENT: Duration = Duration::from_secs(3600);

/// The description cci gives the cache volumes it makes: a volume without
/// it is not cci's to remove, whatever its name.
pub const VOLUME_DESCRIPTION: &str = "cci: apt's package cache, shared by sandboxes";

/// A shared cache no container uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unused {
    /// A scope's host folder, and what its files take.
    Folder { dir: PathBuf, bytes: u64 },
    /// An apt cache volume, and its scope's folder.
    Volume {
        pool: String,
        name: String,
        scope: PathBuf,
    },
}

impl Unused {
    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Unused::Folder { dir, bytes } => {
                let dir = crate::config::printable(&dir.display().to_string());
                if *bytes == u64::MAX {
                    format!("{dir}  (too many files to measure)")
                } else {
                    format!("{dir}  ({:.1} MB)", *bytes as f64 / 1e6)
                }
            }
            Unused::Volume { pool, name, .. } => crate::config::printable(&format!(
                "storage volume {name} (pool {pool}; apt's packages)"
            )),
        }
    }

    /// Whether `other` is the same cache (sizes change).
    pub fn same(&self, other: &Unused) -> bool {
        match (self, other) {
            (Unused::Folder { dir: a, .. }, Unused::Folder { dir: b, .. }) => a == b,
            (
                Unused::Volume {
                    pool: a, name: m, ..
                },
                Unused::Volume {
                    pool: b, name: n, ..
                },
            ) => a == b && m == n,
            _ => false,
        }
    }
}

/// Mark `scope` used now (see [`RECENT`]); a failure only makes `clean
/// --caches` judge by the folder's own changes.
pub(super) fn touch(scope: &Path) {
    if let Ok(f) = std::fs::File::open(scope) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether `when` lies within [`RECENT`] of now (or in the future).
fn recent(when: SystemTime) -> bool {
    when.elapsed().map_or(true, |age| age < RECENT)
}

/// The caches under `c.dir` and their volumes in the daemon's pools that
/// no container uses and nobody used lately: volumes first (a folder goes
/// after its volume, so that a volume that cannot go keeps its folder).
/// A volume is cci's apt cache by name and description, and this user's
/// by its scope's folder under `c.dir` (and, for the user scope, its uid):
/// another user's on a shared daemon is never listed.
pub async fn unused(
    client: &crate::incus::Client,
    c: &CacheSettings,
) -> Result<Vec<Unused>, crate::incus::Error> {
    let instances = client.instances_all_projects().await?;
    let sources: Vec<PathBuf> = instances
        .iter()
        .flat_map(|i| i.devices.values())
        .filter(|d| d.get("type").is_some_and(|t| t == "disk"))
        .filter_map(|d| d.get("source"))
        .map(PathBuf::from)
        .collect();
    let mut out = Vec::new();
    for pool in client.storage_pools().await? {
        let volumes = match client.volumes(&pool.name).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "cci: warning: the volumes of storage pool {} could not be listed: {e}",
                    crate::config::printable(&pool.name)
                );
                continue;
            }
        };
        for v in volumes {
            if v.description != VOLUME_DESCRIPTION || !v.used_by.is_empty() {
                continue;
            }
            let Some((folder, uid)) = scope_of(&v.name) else {
                continue;
            };
            let scope = c.dir.join(folder);
            // This user's scope, not used lately.
            let Ok(meta) = std::fs::symlink_metadata(&scope) else {
                continue;
            };
            if !meta.is_dir() || meta.modified().map_or(true, recent) {
                continue;
            }
            if let Some(uid) = uid
                && !owners(&scope).contains(&uid)
            {
                continue;
            }
            out.push(Unused::Volume {
                pool: pool.name.clone(),
                name: v.name,
                scope,
            });
        }
    }
    out.extend(folders(&c.dir, &sources));
    Ok(out)
}

/// The uids a user scope's volume may carry: this process's, and the
/// owner of the scope's `tools` folder (the workspace owner cci ran for).
fn owners(scope: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let mut uids = vec![unsafe { libc::geteuid() }];
    if let Ok(m) = std::fs::symlink_metadata(scope.join("tools")) {
        uids.push(m.uid());
    }
    uids
}

/// The scope folder's name of apt cache volume `name` (the inverse of
/// [`super::volume_name`]), with the uid of a user scope.
fn scope_of(name: &str) -> Option<(String, Option<u32>)> {
    let rest = name.strip_prefix(VOLUME_PREFIX)?;
    let scope = rest.strip_suffix(&format!("-{}", CacheKind::Apt.word()))?;
    if scope.is_empty() || scope.contains('/') {
        return None;
    }
    Some(match scope.strip_prefix("user").map(str::parse::<u32>) {
        Some(Ok(uid)) => (scope_name(CacheScope::User, ""), Some(uid)),
        _ => (scope_name(CacheScope::Workspace, scope), None),
    })
}

/// The scope folders under `dir` that none of `sources` lies in, not
/// changed lately; sorted.
fn folders(dir: &Path, sources: &[PathBuf]) -> Vec<Unused> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name == scope_name(CacheScope::User, "")
            || name.starts_with(&scope_name(CacheScope::Workspace, "")))
        {
            continue;
        }
        let path = e.path();
        // A link is nobody's cache folder: never followed, never listed.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir()
            || sources.iter().any(|s| s.starts_with(&path))
            || meta.modified().map_or(true, recent)
        {
            continue;
        }
        let bytes = super::measure(&path, u64::MAX);
        out.push(Unused::Folder { dir: path, bytes });
    }
    out.sort_by_key(Unused::describe);
    out
}

/// Remove `cache`: a folder without following any link in it, a volume
/// through the daemon.
pub async fn remove(client: &crate::incus::Client, cache: &Unused) -> Result<(), String> {
    match cache {
        Unused::Folder { dir, .. } => std::fs::remove_dir_all(dir).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (a read-only folder inside: Go makes its module folders so, and a \
                 container's root may have made one its own; remove it as root)"
            } else {
                ""
            };
            format!("cannot remove {}: {e}{hint}", dir.display())
        }),
        Unused::Volume { pool, name, .. } => client
            .delete_volume(pool, name)
            .await
            .map_err(|e| format!("cannot delete storage volume {name} (pool {pool}): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, secs: u64) {
        let f = std::fs::File::open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_volume_belongs_to_its_scopes_folder() {
        let s = |n: &str| scope_of(n);
        assert_eq!(
            s("cci-cache-0123abcd-apt"),
            Some(("workspace-0123abcd".into(), None))
        );
        assert_eq!(
            s("cci-cache-user1000-apt"),
            Some(("user".into(), Some(1000)))
        );
        assert_eq!(
            s("cci-cache-userx-apt"),
            Some(("workspace-userx".into(), None))
        );
        assert_eq!(s("cci-cache--apt"), None);
        assert_eq!(s("cci-cache-apt"), None);
        assert_eq!(s("cci-cache-old-backup"), None, "only apt's");
        assert_eq!(s("other-volume"), None);
    }

    #[test]
    fn lists_old_scope_folders_no_container_mounts() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        for name in [
            "workspace-aaa",
            "workspace-bbb",
            "workspace-new",
            "user",
            "other",
        ] {
            std::fs::create_dir_all(dir.join(name).join("tools/npm")).unwrap();
            std::fs::write(dir.join(name).join("tools/npm/x"), vec![0u8; 1000]).unwrap();
        }
        // A link named like a scope is never listed (nor followed).
        std::os::unix::fs::symlink(dir.join("workspace-aaa"), dir.join("workspace-link")).unwrap();
        for name in ["workspace-aaa", "workspace-bbb", "user", "other"] {
            aged(&dir.join(name), 7200);
        }
        let sources = vec![dir.join("workspace-bbb/tools")];
        let got = folders(dir, &sources);
        assert_eq!(
            got,
            vec![
                Unused::Folder {
                    dir: dir.join("user"),
                    bytes: 1000
                },
                Unused::Folder {
                    dir: dir.join("workspace-aaa"),
                    bytes: 1000
                },
            ],
            "bbb is mounted, new was just used, other is not a cache"
        );
        touch(&dir.join("user"));
        assert_eq!(
            folders(dir, &sources).len(),
            1,
            "a touched folder is in use"
        );
    }

    #[tokio::test]
    async fn removing_a_folder_leaves_what_its_links_point_to() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let scope = t.path().join("workspace-aaa");
        std::fs::create_dir_all(scope.join("tools")).unwrap();
        std::os::unix::fs::symlink(&outside, scope.join("tools/npm")).unwrap();
        let client = crate::incus::Client::unix(t.path().join("no-daemon")).unwrap();
        let cache = Unused::Folder {
            dir: scope.clone(),
            bytes: 0,
        };
        remove(&client, &cache).await.unwrap();
        assert!(!scope.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
    }
}

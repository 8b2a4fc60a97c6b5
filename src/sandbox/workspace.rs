//! A workspace: the host folder mounted at `/workspace`, and its identity.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a path cannot be a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// Nothing at that path.
    #[error("workspace {0} does not exist")]
    Missing(PathBuf),
    /// A file, not a folder.
    #[error("workspace {0} is not a directory")]
    NotADirectory(PathBuf),
    /// It exists but cannot be read.
    #[error("workspace {path} cannot be read: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Incus takes paths as UTF-8 strings.
    #[error("workspace path {0:?} is not valid UTF-8, which Incus cannot mount")]
    NotUtf8(PathBuf),
}

/// A resolved workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Canonical absolute path (symlinks resolved).
    pub path: PathBuf,
    /// First 8 hex digits of the SHA-256 of the canonical path.
    pub id: String,
}

impl Workspace {
    /// Resolve `path` (relative to the current directory) to a workspace.
    pub fn resolve(path: &Path) -> Result<Self, WorkspaceError> {
        let canonical = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkspaceError::Missing(path.to_path_buf()),
            _ => WorkspaceError::Unreadable {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        if !canonical.is_dir() {
            return Err(WorkspaceError::NotADirectory(canonical));
        }
        std::fs::read_dir(&canonical).map_err(|source| WorkspaceError::Unreadable {
            path: canonical.clone(),
            source,
        })?;
        Self::from_canonical(canonical)
    }

    /// A workspace for an already canonical path (no file system access).
    pub fn from_canonical(path: PathBuf) -> Result<Self, WorkspaceError> {
        let text = path
            .to_str()
            .ok_or_else(|| WorkspaceError::NotUtf8(path.clone()))?;
        let digest = Sha256::digest(text.as_bytes());
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Workspace { path, id })
    }

    /// The workspace as seen on a remote server: its id (container names)
    /// also names this machine, so two machines with the same path never
    /// share slots on one server, and a remote's containers never share a
    /// name (and cci's local records) with the local daemon's.
    pub fn on_remote(self, machine: &str) -> Workspace {
        let digest = Sha256::digest(format!("{machine}\0{}", self.path_str()).as_bytes());
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Workspace { id, ..self }
    }

    /// The path as Incus takes it.
    pub fn path_str(&self) -> &str {
        // from_canonical checked it is UTF-8.
        self.path.to_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_workspace_has_an_id_of_its_own_per_machine() {
        let ws = Workspace::from_canonical("/home/user/project".into()).unwrap();
        let a = ws.clone().on_remote("0123456789ab");
        let b = ws.clone().on_remote("ba9876543210");
        assert_ne!(a.id, ws.id);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 8);
        assert_eq!(a.path, ws.path);
        assert_eq!(a, ws.on_remote("0123456789ab"));
    }

    #[test]
    fn id_is_the_first_8_hex_of_sha256_of_the_path() {
        // sha256("/home/user/project") starts 9dad1e4e.
        let ws = Workspace::from_canonical("/home/user/project".into()).unwrap();
        assert_eq!(ws.id, "9dad1e4e");
        let other = Workspace::from_canonical("/home/user/project2".into()).unwrap();
        assert_ne!(ws.id, other.id);
    }

    #[test]
    fn symlinks_hash_like_their_target_and_bad_paths_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real dir; $(x) ü");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            Workspace::resolve(&link).unwrap(),
            Workspace::resolve(&real).unwrap()
        );

        let missing = tmp.path().join("nope");
        assert!(matches!(
            Workspace::resolve(&missing),
            Err(WorkspaceError::Missing(_))
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            Workspace::resolve(&file),
            Err(WorkspaceError::NotADirectory(_))
        ));
    }
}

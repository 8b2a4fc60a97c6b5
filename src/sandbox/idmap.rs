//! Who owns the workspace's files, inside and out.
//!
//! The workspace (and every host folder cci mounts) is mounted *without*
//! UID shifting. Instead the container gets `raw.idmap` mapping exactly one
//! host uid/gid — the workspace owner's — to the `code` account inside, and
//! `security.idmap.isolated`, so every other id of the container, root
//! included, is an unprivileged host id of its own (1000000 and up) that no
//! other sandbox shares. So a file `code` writes is the user's on the host
//! (and the other way round), while whatever container root writes, chowns,
//! marks set-uid or gives file capabilities is owned by (or scoped to) an id
//! that means nothing on the host.
//!
//! Incus can only map a host id that root may delegate: `/etc/subuid` and
//! `/etc/subgid` must list it (`root:1000:1`). [`check_delegated`] says so
//! before anything is created. A workspace owned by root is refused: mapping
//! host root to `code` would let the agent make set-uid-root files.

use std::path::Path;

use crate::config::Account;

/// Why the workspace's owner cannot be mapped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdmapError {
    /// The workspace is owned by root.
    #[error(
        "workspace {path} is owned by root (its user or its group); cci maps the workspace owner to `{account}` inside, and mapping host root would let the agent create set-uid- or set-gid-root files on the host. Use a folder owned by your own user and group (`sudo chown -R USER:GROUP {path}`)"
    )]
    RootOwned {
        /// The workspace.
        path: String,
        /// The account inside.
        account: String,
    },
    /// The owner's id is not delegated to root in /etc/subuid or /etc/subgid.
    #[error(
        "Incus may not map host {kind} {id} (the workspace owner's) into containers: add `root:{id}:1` to {file} (e.g. `echo root:{id}:1 | sudo tee -a /etc/subuid /etc/subgid`; misc/setup-host.sh does this), then try again (restart the Incus daemon if it still refuses)"
    )]
    NotDelegated {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id.
        id: u32,
        /// The file to add it to.
        file: &'static str,
    },
    /// The workspace cannot be read.
    #[error("workspace {path}: {message}")]
    Unreadable {
        /// The workspace.
        path: String,
        /// Why.
        message: String,
    },
}

/// The owner (uid, gid) of the workspace folder at `path`, refusing root.
pub fn owner_of(path: &Path, account: &Account) -> Result<(u32, u32), IdmapError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| IdmapError::Unreadable {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if meta.uid() == 0 || meta.gid() == 0 {
        return Err(IdmapError::RootOwned {
            path: path.display().to_string(),
            account: account.name.clone(),
        });
    }
    Ok((meta.uid(), meta.gid()))
}

/// The `raw.idmap` value that maps the host `owner` to `account` inside.
pub fn raw_idmap(owner: (u32, u32), account: &Account) -> String {
    format!(
        "uid {} {}\ngid {} {}",
        owner.0, account.uid, owner.1, account.gid
    )
}

/// Whether `/etc/subuid` and `/etc/subgid` let root delegate `owner`.
pub fn check_delegated(owner: (u32, u32)) -> Result<(), IdmapError> {
    for (kind, id, file) in [
        ("uid", owner.0, "/etc/subuid"),
        ("gid", owner.1, "/etc/subgid"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !delegates(&text, id) {
            return Err(IdmapError::NotDelegated { kind, id, file });
        }
    }
    Ok(())
}

/// Whether a subordinate-id file's text gives root the id `id`.
fn delegates(text: &str, id: u32) -> bool {
    text.lines().any(|line| {
        let mut f = line.trim().split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            return false;
        };
        (who == "root" || who == "0") && start <= u64::from(id) && u64::from(id) < start + count
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegation_is_read_from_subordinate_id_lines() {
        let text = "root:1000000:1000000000\n# c\nbob:1000:1\nroot:1000:1\n";
        assert!(delegates(text, 1000));
        assert!(delegates(text, 1_000_005));
        assert!(!delegates(text, 1001));
        assert!(!delegates("bob:1001:1\n", 1001));
        assert!(delegates("0:1001:2", 1002));
        assert!(!delegates("root:x:1\nroot:5", 5));
    }

    #[test]
    fn the_owner_maps_to_the_account_only() {
        let a = Account::new(1000, "code");
        assert_eq!(raw_idmap((1234, 999), &a), "uid 1234 1000\ngid 999 1000");
    }

    #[test]
    fn a_root_owned_workspace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Account::new(1000, "code");
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
            assert!(matches!(
                owner_of(dir.path(), &a),
                Err(IdmapError::RootOwned { .. })
            ));
            // Group root alone is refused too (set-gid root).
            std::os::unix::fs::chown(dir.path(), Some(1000), Some(0)).unwrap();
            assert!(matches!(
                owner_of(dir.path(), &a),
                Err(IdmapError::RootOwned { .. })
            ));
            std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
            assert_eq!(owner_of(dir.path(), &a), Ok((1000, 1000)));
        }
    }
}

//! Whole trees between the host and an instance: `push_tree` (a local folder
//! in) and `pull_tree` (an instance's folder out).
//!
//! Pulling is hostile-input safe: entry names are checked before any path join,
//! symlinks are recreated (never followed), special files are skipped, setuid and
//! setgid bits are dropped, and files are created with `O_EXCL` so nothing already
//! on the host is written through. Owns those checks; the single-file calls they
//! build on are `files`'. Must not know about cci, nor loosen any check here.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::{FileInfo, FileKind, info_from_headers, join, write_for};
use crate::incus::Client;
use crate::incus::error::{Error, Result};
use crate::incus::pull::{PULL_LIMITS, PullBudget, dir_mode, umask};

/// An entry name from a directory listing is safe to join onto a local path.
pub fn is_safe_entry_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

impl Client {
    /// Copy a local directory tree into the instance at `remote` (created if
    /// missing). Owners and modes are kept unless `owner` gives a uid/gid for all.
    /// Symlinks are copied as symlinks; sockets, FIFOs and devices are skipped.
    pub async fn push_tree(
        &self,
        instance: &str,
        local: &Path,
        remote: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let mut stack = vec![(local.to_path_buf(), remote.to_string())];
        while let Some((dir, rdir)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&dir)
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            self.mkdir(instance, &rdir, write_for(&meta, owner)).await?;
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue; // Incus paths are UTF-8; a non-UTF-8 name cannot be sent
                };
                let lpath = entry.path();
                let rpath = join(&rdir, &name);
                let meta = std::fs::symlink_metadata(&lpath)
                    .map_err(|e| Error::io(format!("reading {}", lpath.display()), e))?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    stack.push((lpath, rpath));
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&lpath)
                        .map_err(|e| Error::io(format!("reading {}", lpath.display()), e))?;
                    self.symlink(
                        instance,
                        &rpath,
                        &target.to_string_lossy(),
                        write_for(&meta, owner),
                    )
                    .await?;
                } else if ft.is_file() {
                    let file = tokio::fs::File::open(&lpath)
                        .await
                        .map_err(|e| Error::io(format!("opening {}", lpath.display()), e))?;
                    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                    self.write_file(instance, &rpath, body, write_for(&meta, owner))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Copy the tree at `remote` in the instance to `local`, which must not exist.
    /// Safe against hostile trees (see the module comment); stops at
    /// [`PULL_LIMITS`]. Folders get the container's mode less the umask,
    /// never less than 0700.
    pub async fn pull_tree(&self, instance: &str, remote: &str, local: &Path) -> Result<()> {
        let mut budget = PullBudget::new(PULL_LIMITS);
        let info = self.stat_file(instance, remote).await?;
        if info.kind == FileKind::Symlink {
            return Err(Error::BadRequest(format!(
                "{remote} is a symlink; pull what it points to instead"
            )));
        }
        budget.entry(0)?;
        if info.kind != FileKind::Directory {
            return self
                .pull_entry(instance, remote, remote, local, &info, &mut budget)
                .await;
        }
        let root = remote.trim_end_matches('/');
        std::fs::create_dir(local)
            .map_err(|e| Error::io(format!("creating {}", local.display()), e))?;
        // Directories get their final modes after their contents are written.
        let mut modes = vec![(local.to_path_buf(), info.mode)];
        let mut stack = vec![(remote.to_string(), local.to_path_buf(), 0usize)];
        while let Some((rdir, ldir, depth)) = stack.pop() {
            for name in self.list_dir(instance, &rdir).await? {
                if !is_safe_entry_name(&name) {
                    continue;
                }
                budget.entry(depth + 1)?;
                let rpath = join(&rdir, &name);
                let lpath = ldir.join(&name);
                let info = match self.stat_file(instance, &rpath).await {
                    Ok(i) => i,
                    Err(e) if e.is_not_found() => continue, // removed while we walked
                    Err(e) => return Err(e),
                };
                if info.kind == FileKind::Directory {
                    std::fs::create_dir(&lpath)
                        .map_err(|e| Error::io(format!("creating {}", lpath.display()), e))?;
                    modes.push((lpath.clone(), info.mode));
                    stack.push((rpath, lpath, depth + 1));
                } else {
                    self.pull_entry(instance, root, &rpath, &lpath, &info, &mut budget)
                        .await?;
                }
            }
        }
        let umask = umask();
        for (dir, mode) in modes.into_iter().rev() {
            let perms = std::fs::Permissions::from_mode(dir_mode(mode, umask));
            std::fs::set_permissions(&dir, perms)
                .map_err(|e| Error::io(format!("setting mode of {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Pull one non-directory entry to `local` (which must not exist). `root` is
    /// the top of the tree being pulled: symlinks are only recreated when they
    /// point inside it (as relative links), otherwise they are left out.
    ///
    /// The daemon reports FIFOs, sockets and devices as empty files, and opening
    /// one (a FIFO above all) blocks: an empty "file" is created empty without
    /// being opened, and a GET that does not answer in time (the entry was
    /// swapped for a FIFO after we looked) is abandoned.
    async fn pull_entry(
        &self,
        instance: &str,
        root: &str,
        remote: &str,
        local: &Path,
        info: &FileInfo,
        budget: &mut PullBudget,
    ) -> Result<()> {
        budget.bytes(info.size)?;
        if info.kind == FileKind::File && info.size == 0 {
            return create_local_file(local, info.mode).map(|_| ());
        }
        let req = self
            .transport
            .request(Method::GET, &Self::files_path(instance, remote));
        let resp = tokio::time::timeout(PULL_STALL, self.transport.raw(req))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{remote} in {instance} (a FIFO or device?)"),
                seconds: PULL_STALL.as_secs(),
            })??;
        let kind = info_from_headers(resp.headers())?.kind;
        if kind == FileKind::Symlink {
            // The daemon answers with the link's resolved absolute target.
            let target = self.transport.body_capped(resp, 64 << 10).await?;
            let target = String::from_utf8_lossy(&target).into_owned();
            let Some(rel) = relative_link(root, remote, &target) else {
                return Ok(()); // points outside the tree: left out
            };
            return std::os::unix::fs::symlink(rel, local)
                .map_err(|e| Error::io(format!("creating symlink {}", local.display()), e));
        }
        if kind != FileKind::File {
            return Ok(());
        }
        let mut file = tokio::fs::File::from_std(create_local_file(local, info.mode)?);
        let mut body = resp.bytes_stream();
        let mut sent = 0u64;
        loop {
            let chunk = tokio::time::timeout(PULL_STALL, body.next())
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("the contents of {remote} in {instance}"),
                    seconds: PULL_STALL.as_secs(),
                })?;
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|e| self.transport.transport_error(e))?;
            // The size was counted up front; a file that grows counts again.
            sent += chunk.len() as u64;
            if sent > info.size {
                budget.bytes(chunk.len() as u64)?;
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("writing {}", local.display()), e))?;
        }
        file.flush()
            .await
            .map_err(|e| Error::io(format!("writing {}", local.display()), e))?;
        Ok(())
    }
}

/// A link at `link` (inside `root`) to the absolute `target`, as a relative link,
/// when `target` is inside `root` and is a plain path (no `.`/`..`/empty parts).
pub fn relative_link(root: &str, link: &str, target: &str) -> Option<String> {
    let parts = |p: &str| -> Option<Vec<String>> {
        let p = p.strip_prefix('/')?;
        let v: Vec<String> = p.split('/').map(str::to_string).collect();
        v.iter()
            .all(|c| !c.is_empty() && c != "." && c != "..")
            .then_some(v)
    };
    let root = parts(root.trim_end_matches('/'))?;
    let link = parts(link)?;
    let target = parts(target)?;
    if !target.starts_with(&root) || !link.starts_with(&root) || target.len() == root.len() {
        return None;
    }
    let dir = &link[..link.len() - 1];
    let common = dir.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut rel: Vec<&str> = vec![".."; dir.len() - common];
    rel.extend(target[common..].iter().map(String::as_str));
    Some(rel.join("/"))
}

/// How long a pull waits for the daemon to start (or go on) sending a file.
const PULL_STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// Create a new local file that did not exist (`O_EXCL`: nothing already there is
/// written through, symlinks included); setuid, setgid and sticky bits are dropped.
fn create_local_file(local: &Path, mode: u32) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .open(local)
        .map_err(|e| Error::io(format!("creating {}", local.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_kept_only_inside_the_tree() {
        let r = |l, t| relative_link("/srv/tree", l, t);
        assert_eq!(
            r("/srv/tree/link", "/srv/tree/deep/er/run.sh").as_deref(),
            Some("deep/er/run.sh")
        );
        assert_eq!(
            r("/srv/tree/a/b/l", "/srv/tree/x").as_deref(),
            Some("../../x")
        );
        assert_eq!(r("/srv/tree/a/l", "/srv/tree/a/y").as_deref(), Some("y"));
        assert_eq!(r("/srv/tree/l", "/etc/shadow"), None);
        assert_eq!(r("/srv/tree/l", "/srv/treehouse/x"), None);
        assert_eq!(r("/srv/tree/l", "/srv/tree"), None);
        assert_eq!(r("/srv/tree/l", "/srv/tree/../etc"), None);
        assert_eq!(r("/srv/tree/l", "relative"), None);
    }

    #[test]
    fn entry_names_that_could_escape_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(!is_safe_entry_name(bad), "{bad:?}");
        }
        for ok in ["a", ".hidden", "..a", "new\nline", "-rf"] {
            assert!(is_safe_entry_name(ok), "{ok:?}");
        }
    }
}

//! A folder that is not a git repository, on a remote server (where no
//! folder of this machine can be mounted): copied in as one stream when its
//! container starts; what the agent made of it is copied back (into cci's
//! own folder, never into yours) before the container goes, and brought into
//! your folder only on request, after review (`cci sync`).
//!
//! Both directions go through the saved-session archive code: only regular
//! files, folders and symlinks that stay inside the tree, never following
//! one, bounded in bytes, files and depth. Coming back, the copy is the
//! agent's and hostile: it lands in a private folder, and applying it never
//! writes through a symlink of yours, never touches `.git` or the protected
//! paths, and deletes nothing unless asked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Account;
use crate::incus::{CappedBuf, Client, ExecRequest, MAX_CAPTURED_STDERR};
use crate::session::archive::{self, Limits, Tally};

/// What one copy may hold, either way.
pub const LIMITS: Limits = Limits {
    max_bytes: 8 << 30,
    max_files: 500_000,
    max_depth: 64,
    record: false,
    record_max_bytes: 0,
};

/// The instance key marking a copied workspace.
pub const COPY_KEY: &str = "user.cci.copy";

/// Paths never applied back (the host runs what they hold).
const NEVER: &[&str] = &[".git"];

/// Files below `root` with an executable bit, by path below it (no link followed).
fn executables(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                todo.push((e.path(), rel));
            } else if m.is_file() && m.mode() & 0o111 != 0 {
                out.insert(rel);
            }
            if out.len() as u64 > LIMITS.max_files {
                return out;
            }
        }
    }
    out
}

/// Copy the folder `ws` into `/workspace` of `name`, owned by `account`.
pub async fn copy_in(
    client: &Client,
    name: &str,
    account: &Account,
    ws: &Path,
) -> Result<Tally, String> {
    super::isolated::make_workspace(client, name, account)
        .await
        .map_err(|e| e.to_string())?;
    let req = ExecRequest::new(&[
        "tar",
        "-C",
        "/",
        "--no-same-owner",
        "--no-overwrite-dir",
        "-xf",
        "-",
    ])
    .as_user(account.uid, account.gid);
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let (src, owner) = (
        ws.to_path_buf(),
        (u64::from(account.uid), u64::from(account.gid)),
    );
    let packer = tokio::task::spawn_blocking(move || {
        let exec = executables(&src);
        archive::pack(
            &src,
            "workspace",
            tokio_util::io::SyncIoBridge::new(writer),
            owner,
            &LIMITS,
            &exec,
            &[],
        )
    });
    let mut stdout = CappedBuf::new(MAX_CAPTURED_STDERR);
    let mut stderr = CappedBuf::new(MAX_CAPTURED_STDERR);
    let ran = client
        .exec(name, &req, Some(reader), &mut stdout, &mut stderr)
        .await;
    let packed = packer
        .await
        .map_err(|e| format!("packing {}: {e}", ws.display()))?
        .map_err(|e| format!("packing {}: {e}", ws.display()))?;
    let status = ran.map_err(|e| e.to_string())?;
    if status != 0 {
        return Err(format!(
            "unpacking inside: {}",
            crate::terminal::printable_lines(&String::from_utf8_lossy(&stderr.into_noted()))
        ));
    }
    Ok(packed)
}

/// cci's copy of what container `name`'s workspace holds (kept on the host
/// for review): `~/.cci/copies/NAME`.
pub fn stored(name: &str) -> io::Result<PathBuf> {
    Ok(stored_dir()?.join(name))
}

/// Where [`stored`] copies are.
pub fn stored_dir() -> io::Result<PathBuf> {
    crate::state::dir("copies")
}

/// Copy `/workspace` of `name` back into cci's folder ([`stored`]),
/// replacing what was there once the whole copy is in.
pub async fn copy_out(client: &Client, name: &str, account: &Account) -> Result<Tally, String> {
    let dest = stored(name).map_err(|e| e.to_string())?;
    let staging = dest.with_file_name(format!(".{name}.new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let req = ExecRequest::new(&[
        "tar",
        "-C",
        "/",
        "--ignore-failed-read",
        "--warning=no-file-changed",
        "-cf",
        "-",
        "workspace",
    ])
    .as_user(account.uid, account.gid);
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let into = staging.clone();
    let unpack = tokio::task::spawn_blocking(move || {
        archive::extract(
            tokio_util::io::SyncIoBridge::new(reader),
            "workspace",
            &into,
            &LIMITS,
            &[],
        )
    });
    let mut stderr = CappedBuf::new(MAX_CAPTURED_STDERR);
    let ran = client
        .exec(name, &req, None::<&[u8]>, writer, &mut stderr)
        .await;
    let unpacked = unpack.await.map_err(|e| e.to_string());
    let result = match (ran, unpacked) {
        (_, Ok(Err(e))) => Err(format!("the copy of {name}: {e}")),
        (Err(e), _) => Err(e.to_string()),
        (Ok(status), Ok(Ok(_))) if status > 1 => Err(format!(
            "tar in {name} failed ({status}): {}",
            crate::terminal::printable_lines(&String::from_utf8_lossy(&stderr.into_noted()))
        )),
        (Ok(_), Ok(Ok(tally))) => Ok(tally),
        (_, Err(e)) => Err(e),
    };
    let tally = match result {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The executable bits, for applying (the copy itself is all 0600).
    let marks = staging.join(".cci-executables");
    let list: Vec<&str> = tally.executables.iter().map(String::as_str).collect();
    archive::write_private(&marks, list.join("\n").as_bytes()).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&staging, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(tally)
}

/// One difference between the copy and the folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path below the folder.
    pub path: String,
    /// `added`, `changed`, `removed`.
    pub kind: &'static str,
    /// Why it is not applied (a link, `.git`, a protected path), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link(PathBuf),
    Other,
}

/// Every entry below `root`, by path, without following a link.
fn tree(root: &Path, skip_top: &[&str]) -> io::Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && skip_top.contains(&name.as_str()) {
                continue;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(e.path())?;
            let node = if m.is_dir() {
                todo.push((e.path(), rel.clone()));
                Node::Dir
            } else if m.is_file() {
                Node::File
            } else if m.file_type().is_symlink() {
                Node::Link(fs::read_link(e.path())?)
            } else {
                Node::Other
            };
            out.insert(rel, node);
            if out.len() as u64 > LIMITS.max_files {
                return Err(io::Error::other("more files than a copy may hold"));
            }
        }
    }
    Ok(out)
}

/// Whether two regular files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let open = |p: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// What differs between the copy `copy` and the folder `ws`; `protected`
/// paths (and `.git`) are reported but held back.
pub fn compare(copy: &Path, ws: &Path, protected: &[String]) -> io::Result<Vec<Change>> {
    let theirs = tree(copy, &[".cci-executables"])?;
    let ours = tree(ws, &[])?;
    let held = |path: &str, node: Option<&Node>| -> Option<String> {
        let first = path.split('/').next().unwrap_or_default();
        if NEVER.contains(&first) {
            return Some(".git is never copied back".into());
        }
        if protected.iter().any(|p| {
            path == p.as_str() || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
        }) {
            return Some("a protected path: copy it by hand once you have read it".into());
        }
        match node {
            Some(Node::Link(_)) => return Some("a link: make it by hand if you want it".into()),
            Some(Node::Other) => return Some("not a regular file".into()),
            _ => {}
        }
        // Never through a link (or a file) of yours on the way.
        let parts: Vec<&str> = path.split('/').collect();
        let mut at = ws.to_path_buf();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(m) if !m.is_dir() => {
                    return Some(format!("{} of yours is not a folder", at.display()));
                }
                _ => {}
            }
        }
        None
    };
    let mut out = Vec::new();
    for (path, node) in &theirs {
        if *node == Node::Dir {
            continue;
        }
        let kind = match ours.get(path) {
            None => "added",
            Some(Node::File) if *node == Node::File => {
                if same_bytes(&copy.join(path), &ws.join(path))? {
                    continue;
                }
                "changed"
            }
            Some(mine) if mine == node => continue,
            Some(_) => "changed",
        };
        out.push(Change {
            path: path.clone(),
            kind,
            held: held(path, Some(node)),
        });
    }
    for (path, node) in &ours {
        if *node != Node::Dir && !theirs.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                kind: "removed",
                held: held(path, None),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Make the folders of `rel` below `ws` (real folders only: a link on the
/// way is refused).
fn parents(ws: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut at = ws.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a folder (a link is never followed)",
                    at.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(at.join(parts.last().copied().unwrap_or_default()))
}

/// Apply `changes` from the copy `copy` to the folder `ws`: added and
/// changed files (a changed file keeps its mode; a new one is 0644, 0755
/// when it was executable inside), removals only with `delete`. Held
/// changes are skipped. Returns what was applied.
pub fn apply(copy: &Path, ws: &Path, changes: &[Change], delete: bool) -> io::Result<Vec<Change>> {
    let exec: BTreeSet<String> = fs::read_to_string(copy.join(".cci-executables"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut done = Vec::new();
    for c in changes.iter().filter(|c| c.held.is_none()) {
        let target = parents(ws, &c.path)?;
        let now = fs::symlink_metadata(&target).ok();
        if now.as_ref().is_some_and(|m| !m.is_file()) {
            continue; // (a link or a folder of yours stays as it is)
        }
        match c.kind {
            "removed" if delete => {
                fs::remove_file(&target)?;
            }
            "removed" => continue,
            _ => {
                let mode = now
                    .map(|m| m.mode() & 0o7777 & !0o6000)
                    .unwrap_or(if exec.contains(&c.path) { 0o755 } else { 0o644 });
                let data_from = copy.join(&c.path);
                let mut src = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&data_from)?;
                let tmp = target.with_file_name(format!(
                    ".{}.cci-sync-{}",
                    target.file_name().unwrap_or_default().to_string_lossy(),
                    std::process::id()
                ));
                let mut dst = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&tmp)?;
                let copied = io::copy(&mut src, &mut dst)
                    .and_then(|_| dst.set_permissions(fs::Permissions::from_mode(mode)))
                    .and_then(|()| dst.sync_all())
                    .and_then(|()| fs::rename(&tmp, &target));
                if let Err(e) = copied {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        done.push(c.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, rel: &str, data: &str) {
        let f = p.join(rel);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, data).unwrap();
    }

    #[test]
    fn the_agents_copy_is_compared_and_applied_without_trusting_it() {
        let copy = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let (c, w) = (copy.path(), ws.path());
        write(w, "same.txt", "x");
        write(w, "edit.txt", "old");
        write(w, "gone.txt", "bye");
        fs::set_permissions(w.join("edit.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        write(c, "same.txt", "x");
        write(c, "edit.txt", "new");
        write(c, "new/deep.sh", "#!/bin/sh");
        write(c, ".git/hooks/post-checkout", "evil");
        write(c, ".envrc", "evil");
        std::os::unix::fs::symlink("/etc/passwd", c.join("link")).unwrap();
        // A link of yours is never written through.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), w.join("out")).unwrap();
        write(c, "out/planted.txt", "evil");
        fs::write(c.join(".cci-executables"), "new/deep.sh").unwrap();
        let changes = compare(c, w, &[".envrc".to_string()]).unwrap();
        let kinds: Vec<(&str, &str, bool)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.kind, c.held.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                (".envrc", "added", true),
                (".git/hooks/post-checkout", "added", true),
                ("edit.txt", "changed", false),
                ("gone.txt", "removed", false),
                ("link", "added", true),
                ("new/deep.sh", "added", false),
                ("out/planted.txt", "added", true),
            ]
        );
        let done = apply(c, w, &changes, false).unwrap();
        // The planted file behind your link: held, nothing written there.
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
        assert_eq!(done.len(), 2);
        assert_eq!(fs::read_to_string(w.join("edit.txt")).unwrap(), "new");
        assert_eq!(
            fs::metadata(w.join("edit.txt")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::metadata(w.join("new/deep.sh")).unwrap().mode() & 0o777,
            0o755
        );
        assert!(w.join("gone.txt").exists(), "nothing deleted unless asked");
        assert!(!w.join(".git").exists() && !w.join(".envrc").exists() && !w.join("link").exists());
        apply(c, w, &changes, true).unwrap();
        assert!(!w.join("gone.txt").exists());
    }
}

//! Files in the workspace that programs on the HOST run or obey — git's
//! config and hooks, direnv's `.envrc`, editor tasks, agents' permission
//! settings — fingerprinted when a session starts and compared when it ends,
//! so the user is told what the agent changed there before their own `git`,
//! shell or editor acts on it. (Root inside can lift any read-only mount, so
//! telling is what holds; the git review loop will keep these out entirely.)
//!
//! Never follows a symlink; bounded in entries and bytes read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Workspace paths the host runs code from or takes permissions from.
pub const WATCHED: &[&str] = &[
    ".git/config",
    ".git/config.worktree",
    ".git/commondir",
    ".git/hooks",
    ".git/info",
    ".git/modules",
    ".envrc",
    ".vscode",
    ".idea",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".mcp.json",
];

/// Entries looked at, at most (beyond: the rest counts as one change).
const MAX_ENTRIES: usize = 5000;
/// Bytes of one file hashed, at most (beyond: its size and time stand in).
const MAX_HASHED: u64 = 4 << 20;

/// Path (relative to the workspace) -> what it was.
pub type Fingerprint = BTreeMap<String, String>;

/// The fingerprint of the watched paths of workspace `ws`.
pub fn fingerprint(ws: &Path) -> Fingerprint {
    let mut out = Fingerprint::new();
    for rel in WATCHED {
        // A watched path under a symlinked parent (`.git` -> elsewhere) is
        // recorded as what the link says, never followed.
        if let Some(link) = linked_parent(ws, rel) {
            out.insert(link.0, link.1);
            continue;
        }
        walk(ws, Path::new(rel), &mut out);
    }
    out
}

/// The first symlink among `rel`'s parents, as (path, "link -> target").
fn linked_parent(ws: &Path, rel: &str) -> Option<(String, String)> {
    let mut p = PathBuf::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        p.push(part);
        let meta = std::fs::symlink_metadata(ws.join(&p)).ok()?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(ws.join(&p)).unwrap_or_default();
            return Some((
                p.display().to_string(),
                format!("symlink -> {}", target.display()),
            ));
        }
    }
    None
}

fn walk(ws: &Path, rel: &Path, out: &mut Fingerprint) {
    if out.len() >= MAX_ENTRIES {
        out.insert("…".into(), "too many entries".into());
        return;
    }
    let full = ws.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    let key = rel.display().to_string();
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(&full).unwrap_or_default();
        out.insert(key, format!("symlink -> {}", target.display()));
    } else if ft.is_dir() {
        out.insert(key, "folder".into());
        let Ok(rd) = std::fs::read_dir(&full) else {
            return;
        };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for n in names {
            walk(ws, &rel.join(n), out);
        }
    } else if ft.is_file() {
        out.insert(key, file_digest(&full, &meta));
    } else {
        out.insert(key, "special file".into());
    }
}

fn file_digest(path: &Path, meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mode = meta.mode() & 0o7777;
    if meta.len() > MAX_HASHED {
        return format!("{mode:o} {} bytes @{}", meta.len(), meta.mtime());
    }
    let mut h = Sha256::new();
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| {
            let mut buf = Vec::new();
            f.take(MAX_HASHED).read_to_end(&mut buf)?;
            Ok(buf)
        });
    match read {
        Ok(bytes) => {
            h.update(&bytes);
            let d = h.finalize();
            let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
            format!("{mode:o} {hex}")
        }
        Err(e) => format!("{mode:o} unreadable: {e}"),
    }
}

/// What changed between two fingerprints, for the user: `added X`,
/// `changed X`, `removed X`.
pub fn changes(before: &Fingerprint, after: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    for (path, now) in after {
        match before.get(path) {
            None => out.push(format!("added {path}")),
            Some(was) if was != now => out.push(format!("changed {path}")),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            out.push(format!("removed {path}"));
        }
    }
    out
}

fn record_path(container: &str) -> std::io::Result<PathBuf> {
    Ok(crate::state::dir("tripwire")?.join(format!("{container}.json")))
}

/// Remember `fp` (taken before the container started) as what `container`'s
/// session started with. With `keep`, an earlier record (of a session not
/// checked yet) stays: the older one misses nothing.
pub fn arm(container: &str, fp: &Fingerprint, keep: bool) {
    if keep && record_path(container).is_ok_and(|p| p.exists()) {
        return;
    }
    let saved = serde_json::to_vec(fp)
        .map_err(std::io::Error::other)
        .and_then(|data| crate::state::write_atomic(&record_path(container)?, &data));
    if let Err(e) = saved {
        tracing::warn!("could not record the watched workspace files of {container}: {e}");
    }
}

/// Compare `ws` with what `container`'s session started with, and forget
/// the record. Empty when nothing changed or nothing was recorded.
pub fn check(container: &str, ws: &Path) -> Vec<String> {
    let Ok(path) = record_path(container) else {
        return Vec::new();
    };
    let Ok(data) = std::fs::read(&path) else {
        return Vec::new();
    };
    let _ = std::fs::remove_file(&path);
    let Ok(before) = serde_json::from_slice::<Fingerprint>(&data) else {
        return Vec::new();
    };
    changes(&before, &fingerprint(ws))
}

/// The warning for changed watched files, printable.
pub fn warning(ws: &Path, changes: &[String]) -> String {
    let list: Vec<String> = changes
        .iter()
        .map(|c| crate::config::printable(c))
        .collect();
    format!(
        "cci: WARNING: the session changed files in {} that programs on this host run or obey (git hooks and config, .envrc, editor tasks, agent settings): {}. Review them (e.g. `git -C WORKSPACE config --list --show-origin`, `ls -la .git/hooks`) before running git or your editor there",
        crate::config::printable(&ws.display().to_string()),
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_config_and_settings_changes_are_seen() {
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        std::fs::create_dir_all(w.join(".git/hooks")).unwrap();
        std::fs::write(w.join(".git/config"), "[core]\n").unwrap();
        std::fs::write(w.join("README"), "x").unwrap();
        let before = fingerprint(w);
        assert!(changes(&before, &fingerprint(w)).is_empty());

        std::fs::write(w.join("README"), "not watched").unwrap();
        std::fs::write(w.join(".git/config"), "[core]\nfsmonitor = sh -c x\n").unwrap();
        std::fs::write(w.join(".git/hooks/pre-commit"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(w.join(".claude")).unwrap();
        std::fs::write(w.join(".claude/settings.local.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", w.join(".envrc")).unwrap();
        let c = changes(&before, &fingerprint(w));
        assert_eq!(
            c,
            [
                "added .claude/settings.local.json",
                "added .envrc",
                "changed .git/config",
                "added .git/hooks/pre-commit"
            ]
        );
    }

    #[test]
    fn a_symlinked_git_folder_is_not_followed() {
        let ws = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("config"), "x").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), ws.path().join(".git")).unwrap();
        let fp = fingerprint(ws.path());
        assert!(fp[".git"].starts_with("symlink -> "));
        assert!(!fp.contains_key(".git/config"));
    }

    #[test]
    fn mode_changes_count() {
        use std::os::unix::fs::PermissionsExt;
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
        let hook = ws.path().join(".git/hooks/post-checkout");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        let before = fingerprint(ws.path());
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            changes(&before, &fingerprint(ws.path())),
            ["changed .git/hooks/post-checkout"]
        );
    }
}

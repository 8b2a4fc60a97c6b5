//! Which workspace files a run changed: a walk of the workspace before and
//! after (size, modification time, mode of each file and link; `.git`
//! left out, links never followed), bounded so a huge tree costs a known
//! amount and says it was too big instead.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The most entries walked; past it the change list is not made.
pub const MAX_ENTRIES: usize = 200_000;
/// The most bytes of path names kept (the agent chooses their lengths).
pub const MAX_PATH_BYTES: usize = 32 << 20;

/// What each file looked like: relative path -> (size, mtime ns, mode).
pub type Snapshot = BTreeMap<String, (u64, i128, u32)>;

/// The workspace's files now, or `None` past [`MAX_ENTRIES`] or
/// [`MAX_PATH_BYTES`] (or when the workspace itself cannot be read). A
/// folder that cannot be read is one entry (`path/`, so that it shows when
/// it becomes unreadable); a folder is entered only while it is still a
/// folder on the workspace's device (never through a link).
pub fn snapshot(ws: &Path) -> Option<Snapshot> {
    let dev = std::fs::symlink_metadata(ws).ok()?.dev();
    let mut out = Snapshot::new();
    let mut stack = vec![(ws.to_path_buf(), String::new())];
    let (mut seen, mut bytes) = (0usize, 0usize);
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() && m.dev() == dev => std::fs::read_dir(&dir).ok(),
            _ => None,
        };
        let Some(entries) = entries else {
            if rel.is_empty() {
                return None;
            }
            out.insert(format!("{rel}/"), (0, 0, 0));
            continue;
        };
        for e in entries {
            let Ok(e) = e else { continue };
            seen += 1;
            let name = e.file_name().to_string_lossy().into_owned();
            bytes += rel.len() + name.len() + 1;
            if seen > MAX_ENTRIES || bytes > MAX_PATH_BYTES {
                return None;
            }
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push((e.path(), path));
            } else {
                let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                out.insert(path, (m.size(), mtime, m.mode()));
            }
        }
    }
    Some(out)
}

/// The paths added, removed or changed between two snapshots, sorted.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_and_removed_files_are_listed_and_git_is_not() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path();
        std::fs::create_dir_all(w.join("src")).unwrap();
        std::fs::create_dir_all(w.join(".git")).unwrap();
        std::fs::write(w.join("src/a.rs"), "a").unwrap();
        std::fs::write(w.join("gone"), "g").unwrap();
        std::fs::write(w.join("same"), "s").unwrap();
        let before = snapshot(w).unwrap();
        std::fs::write(w.join("src/a.rs"), "a changed").unwrap();
        std::fs::write(w.join("src/new.rs"), "n").unwrap();
        std::fs::remove_file(w.join("gone")).unwrap();
        std::fs::write(w.join(".git/index"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", w.join("link")).unwrap();
        let after = snapshot(w).unwrap();
        assert_eq!(
            diff(&before, &after),
            ["gone", "link", "src/a.rs", "src/new.rs"]
        );
        assert!(diff(&after, &after).is_empty());
    }
}

//! Which workspace files a run changed: a walk of the workspace before and
//! after (size, modification time, mode of each file and link; `.git`
//! left out, links never followed), bounded so a huge tree costs a known
//! amount and says it was too big instead.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The most entries walked; past it the change list is not made.
pub const MAX_ENTRIES: usize = 200_000;

/// What each file looked like: relative path -> (size, mtime ns, mode).
pub type Snapshot = BTreeMap<String, (u64, i128, u32)>;

/// The workspace's files now, or `None` past [`MAX_ENTRIES`] (or when the
/// workspace cannot be read).
pub fn snapshot(ws: &Path) -> Option<Snapshot> {
    let mut out = Snapshot::new();
    let mut stack = vec![(ws.to_path_buf(), String::new())];
    let mut seen = 0usize;
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).ok()?;
        for e in entries {
            let e = e.ok()?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return None;
            }
            let name = e.file_name().to_string_lossy().into_owned();
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

//! `cci session import`: a host state folder (a `~/.claude`, or a copy of
//! one) taken in as a saved session of one workspace, through the same
//! checks as a save; only that workspace's part of it (see
//! [`import_selection`]).

use std::collections::BTreeSet;
use std::path::Path;

use super::archive::{self, Limits, Tally, shown};
use super::{AgentFiles, Error, Origin, Saved, SessionId, Store, io_err, meta_for};
use crate::config::Account;

/// What an import takes from a host state folder of the agent whose state
/// folder is `state_dir`, for `workspace`: (path in the host folder, path in
/// the saved state), the first found of those with the same destination
/// winning. `None`: all of it but the credentials (an agent whose layout cci
/// does not know). For Claude Code: this workspace's conversations only
/// (`projects/<its host path, encoded as Claude does>/`, else the
/// `projects/-workspace/` of a container's folder exported by cci), saved as
/// `projects/-workspace/` where the agent looks for them in a container; and
/// `CLAUDE.md`. Never other projects' transcripts, shell snapshots, IDE lock
/// files, settings or todos.
pub fn import_selection(state_dir: &str, workspace: &str) -> Option<Vec<(String, String)>> {
    let inside = "projects/-workspace".to_string();
    (state_dir == ".claude").then(|| {
        vec![
            (
                format!("projects/{}", claude_project(workspace)),
                inside.clone(),
            ),
            (inside.clone(), inside),
            ("CLAUDE.md".into(), "CLAUDE.md".into()),
        ]
    })
}

/// The folder name Claude Code gives the project at `path` (every character
/// but ASCII letters and digits becomes `-`).
pub fn claude_project(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Import the host folder `src` (a `~/.claude` or a copy of one) as a saved
/// session of `workspace` with id `id` (default: the newest conversation
/// found in what is taken, else a new id). Only [`import_selection`] is
/// taken; credentials are always left out.
pub fn import(
    store: &Store,
    files: &AgentFiles,
    src: &Path,
    id: Option<SessionId>,
    workspace: &str,
    limits: &Limits,
) -> Result<(Saved, Tally), Error> {
    let meta = std::fs::metadata(src).map_err(io_err(format!("reading {}", src.display())))?;
    if !meta.is_dir() {
        return Err(Error::Io {
            what: format!("importing {}", src.display()),
            cause: std::io::Error::other("not a folder"),
        });
    }
    let selection = import_selection(files.state_dir, workspace);
    let projects: Vec<std::path::PathBuf> = match &selection {
        Some(paths) => paths
            .iter()
            .filter(|(from, _)| from.starts_with("projects/"))
            .map(|(from, _)| src.join(from))
            .collect(),
        None => std::fs::read_dir(src.join("projects"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default(),
    };
    let id =
        id.unwrap_or_else(|| newest_conversation(&projects).unwrap_or_else(SessionId::new_random));
    let staging = store.staging(&id).map_err(io_err(format!(
        "making a staging folder in {}",
        store.dir().display()
    )))?;
    let dest = staging.state_dir();
    let tally = match selection {
        None => {
            std::fs::remove_dir(&dest).map_err(io_err("preparing the import"))?;
            let skip = files.never_saved();
            archive::copy_tree(src, &dest, limits, &executables_in(src), &skip)?
        }
        Some(paths) => import_parts(src, &dest, &paths, limits)?,
    };
    let origin = Origin {
        id,
        tool: store.tool().into(),
        workspace: workspace.into(),
        container: String::new(),
        slot: 0,
        persistent: false,
        account: Account::new(0, "root"),
    };
    let meta = meta_for(&origin, &tally, "import");
    let saved = store
        .commit(staging, meta)
        .map_err(io_err(format!("saving into {}", store.dir().display())))?;
    Ok((saved, tally))
}

/// Copy the folders and files `paths` (relative, plain: from `src`, to
/// `dest`, an empty private folder) within `limits` in all; a path that is
/// missing, or whose destination is taken, is passed over; one that is
/// neither a folder nor a file is left out.
fn import_parts(
    src: &Path,
    dest: &Path,
    paths: &[(String, String)],
    limits: &Limits,
) -> Result<Tally, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let mut tally = Tally::default();
    for (rel_from, rel) in paths {
        let from = src.join(rel_from);
        let to = dest.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        if std::fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(format!("making {}", parent.display())))?;
        }
        let left = Limits {
            max_bytes: limits.max_bytes.saturating_sub(tally.bytes),
            max_files: limits.max_files.saturating_sub(tally.entries),
            max_depth: limits
                .max_depth
                .saturating_sub(rel.matches('/').count() + 1),
            ..*limits
        };
        if m.is_dir() {
            let t = archive::copy_tree(&from, &to, &left, &executables_in(&from), &[])?;
            tally.entries += t.entries + 1;
            tally.bytes += t.bytes;
            tally.skipped_count += t.skipped_count;
            tally.skipped.extend(t.skipped);
            tally
                .executables
                .extend(t.executables.iter().map(|e| format!("{rel}/{e}")));
        } else if m.is_file() {
            let data = archive::read_small(&from, left.max_bytes)
                .map_err(io_err(format!("reading {}", from.display())))?;
            archive::write_private(&to, &data)
                .map_err(io_err(format!("writing {}", to.display())))?;
            tally.entries += 1;
            tally.bytes += data.len() as u64;
        } else {
            tally.skipped_count += 1;
            tally.skipped.push(format!(
                "{} (not a file or folder)",
                shown(rel_from.as_bytes())
            ));
        }
    }
    Ok(tally)
}

/// Executable regular files under `src` (not following symlinks), relative.
fn executables_in(src: &Path) -> BTreeSet<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = BTreeSet::new();
    let mut todo = vec![(src.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() && child.matches('/').count() < 64 => {
                    todo.push((e.path(), child))
                }
                Ok(t)
                    if t.is_file()
                        && e.metadata()
                            .is_ok_and(|m| m.permissions().mode() & 0o100 != 0) =>
                {
                    found.insert(child);
                }
                _ => {}
            }
        }
    }
    found
}

/// The id of the most recently written conversation (`<project>/<id>.jsonl`).
fn newest_conversation(projects: &[std::path::PathBuf]) -> Option<SessionId> {
    let mut best: Option<(std::time::SystemTime, SessionId)> = None;
    for project in projects {
        let Ok(files) = std::fs::read_dir(project) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<SessionId>().ok())
            else {
                continue;
            };
            let Ok(when) = f.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if best.as_ref().is_none_or(|(t, _)| when > *t) {
                best = Some((when, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::super::export;
    use super::*;

    fn claude() -> AgentFiles {
        AgentFiles {
            state_dir: ".claude",
            credentials: &[".claude/.credentials.json", ".claude.json"],
            settings: &[],
        }
    }

    #[test]
    fn import_takes_this_workspace_only_and_the_newest_conversation() {
        let home = tempfile::tempdir().unwrap();
        let src = home.path().join(".claude");
        let ws = "/home/me/my.project";
        let mine = src.join("projects/-home-me-my-project");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(src.join(".credentials.json"), "secret").unwrap();
        std::fs::write(mine.join("old-1.jsonl"), "{}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(mine.join("new-2.jsonl"), "{}").unwrap();
        std::fs::write(mine.join("hook.sh"), "#!/bin/sh").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(mine.join("hook.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(src.join("CLAUDE.md"), "be nice").unwrap();
        // Everything else a real ~/.claude holds stays out, even newer.
        std::thread::sleep(std::time::Duration::from_millis(20));
        for (path, data) in [
            ("projects/-home-me-other/newer-3.jsonl", "other project"),
            ("shell-snapshots/snapshot-zsh-1.sh", "export TOKEN=x"),
            ("ide/1234.lock", "{\"authToken\": \"x\"}"),
            ("settings.json", "{\"env\": {\"API_KEY\": \"x\"}}"),
            ("todos/t.json", "[]"),
        ] {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let store = Store::open_in(root.path(), "claude").unwrap();
        let files = claude();
        assert_eq!(files.never_saved(), [".credentials.json"]);
        let (saved, t) = import(&store, &files, &src, None, ws, &Limits::default()).unwrap();
        assert_eq!(saved.id(), "new-2");
        assert_eq!(saved.meta.origin, "import");
        let st = saved.state_dir();
        let mut found: Vec<String> = Vec::new();
        let mut todo = vec![st.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let rel = e
                    .path()
                    .strip_prefix(&st)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                } else {
                    found.push(rel);
                }
            }
        }
        found.sort();
        assert_eq!(
            found,
            [
                "CLAUDE.md",
                "projects/-workspace/hook.sh",
                "projects/-workspace/new-2.jsonl",
                "projects/-workspace/old-1.jsonl",
            ]
        );
        assert!(
            t.executables.contains("projects/-workspace/hook.sh"),
            "{t:?}"
        );
        let out = root.path().join("export");
        export(&saved, &out, &Limits::default()).unwrap();
        assert!(out.join("projects/-workspace/new-2.jsonl").exists());
        assert!(
            export(&saved, &out, &Limits::default()).is_err(),
            "dest exists"
        );
        // An explicit id, and a folder with nothing of this workspace.
        let id: SessionId = "given".parse().unwrap();
        let (saved, t) = import(
            &store,
            &files,
            &src,
            Some(id),
            "/elsewhere",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(saved.id(), "given");
        assert_eq!(t.entries, 1, "only CLAUDE.md: {t:?}");
    }

    #[test]
    fn claude_names_projects_by_their_path() {
        assert_eq!(claude_project("/home/me/a.b_c d"), "-home-me-a-b-c-d");
        assert_eq!(
            import_selection(".claude", "/w").unwrap()[0],
            ("projects/-w".to_string(), "projects/-workspace".to_string())
        );
        assert!(import_selection(".local/share/opencode", "/w").is_none());
    }
}

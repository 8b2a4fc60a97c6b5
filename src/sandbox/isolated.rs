//! The container side of an isolated git session (`--isolated`): the
//! repository's start commit goes into its seed mirror (only what the
//! mirror lacks, see [`mirror`]), which the container mounts read-only and
//! clones at /workspace on the session branch, with no remote; at the end the session's new commits come
//! out as one bundle, which the host side ([`crate::git`]) verifies and
//! fetches with nothing of the session's config, hooks or filters.
//!
//! Everything read back from the container is hostile: the bundle is written
//! to a private host file, bounded in size and time, and only handed to
//! `crate::git`, which checks it.

use std::path::Path;

mod inside;
pub mod mirror;

pub use inside::{Collected, IsolatedError, SeedFrom, collect, make_workspace, seed};
pub use mirror::Mirror;

use crate::config::Account;
use crate::incus::Client;
use crate::sandbox::mounts::WORKSPACE_MOUNT;

/// Where the seed mirror of a session's `n`th repository appears inside
/// (read-only).
pub fn mirror_at(n: usize) -> String {
    format!("/var/lib/cci-git/{n}")
}

/// How an isolated session starts (`--branch`, `--session-branch`,
/// `--clean-only`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start from this host branch instead of HEAD.
    pub branch: Option<String>,
    /// The session branch's name [default `cci/<slot>`].
    pub session_branch: Option<String>,
    /// Refuse uncommitted changes instead of carrying them in.
    pub clean_only: bool,
    /// Merge the session into this branch when it ends.
    pub auto_merge: Option<String>,
}

/// The host side of a session about to start.
#[derive(Debug)]
pub struct Prepared {
    /// The user's repository.
    pub repo: crate::git::Repo,
    /// The host commit the session starts from.
    pub base: String,
    /// The session's first commit (`base`, or the commit carrying
    /// uncommitted changes on top of it).
    pub start: String,
    /// Paths of uncommitted changes carried in as the first commit.
    pub carried: Vec<String>,
    /// The repository's seed mirror.
    pub mirror: Mirror,
    /// The start going into the mirror meanwhile (it is there by the time
    /// the container is, usually): the bytes that went in.
    pub seeding: std::sync::Mutex<Option<Seeding>>,
    /// What is not carried (submodules, LFS content), said to the user.
    pub notes: Vec<String>,
    /// The options.
    pub options: Options,
}

/// The thread adding a session's start to the mirror.
pub type Seeding = std::thread::JoinHandle<Result<u64, crate::git::GitError>>;

/// A host file removed when dropped.
#[derive(Debug)]
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A private scratch path under `~/.cci/tmp`. Bundles an earlier cci left
/// there (killed before it could remove them) go after a day.
fn scratch(tag: &str) -> Result<std::path::PathBuf, crate::git::GitError> {
    let dir = crate::state::dir("tmp")
        .map_err(|e| crate::git::GitError::io("cannot create ~/.cci/tmp", e))?;
    let day = std::time::Duration::from_secs(86_400);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old && e.file_name().to_string_lossy().ends_with(".bundle") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(dir.join(format!("{tag}-{}.bundle", uuid::Uuid::new_v4())))
}

/// Take the snapshot of the repository at `ws` and bundle it for the
/// container: HEAD (or `--branch`, or an existing host branch named like
/// the session branch: it is continued) with uncommitted changes carried
/// in as a first commit (HEAD only; `--clean-only` refuses them).
pub fn prepare(ws: &Path, options: &Options) -> Result<Prepared, crate::git::GitError> {
    use crate::git::{GitError, Repo, names};
    let repo = Repo::discover(ws)?;
    for b in [&options.session_branch, &options.auto_merge]
        .into_iter()
        .flatten()
    {
        names::check_branch(b)?;
    }
    let named = options.branch.clone().or_else(|| {
        options
            .session_branch
            .clone()
            .filter(|b| matches!(repo.resolve_commit(&format!("refs/heads/{b}")), Ok(Some(_))))
    });
    let (base, start, carried) = match named.filter(|b| Some(b) != repo.branch.as_ref()) {
        Some(b) => {
            names::check_branch(&b)?;
            let id = repo.resolve_commit(&format!("refs/heads/{b}"))?.ok_or(
                GitError::InvalidBranch {
                    name: b.clone(),
                    reason: "no such branch in the repository",
                },
            )?;
            (id.clone(), id, Vec::new())
        }
        None => {
            let s = repo.snapshot(!options.clean_only)?;
            (s.base, s.start, s.paths)
        }
    };
    let mut notes = Vec::new();
    if !repo.submodules.is_empty() {
        notes.push(format!(
            "submodules are not carried in (the session sees their commit ids only): {}",
            repo.submodules
                .iter()
                .map(|s| crate::config::printable(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if repo.uses_lfs {
        notes.push("Git LFS files go in as their pointer files, not their content".into());
    }
    // Packing what the mirror lacks takes a while for a new large
    // repository: it runs while the container is made; `begin` waits.
    let path = scratch("seed")?;
    let mirror = Mirror::of(&repo)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (packer, into, first) = (repo.clone(), mirror.clone(), start.clone());
    let seeding = std::thread::spawn(move || into.add(&packer, &first, &id, &path));
    Ok(Prepared {
        repo,
        base,
        start,
        carried,
        mirror,
        seeding: std::sync::Mutex::new(Some(seeding)),
        notes,
        options: options.clone(),
    })
}

/// Why a session's commits did not come back.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Getting them out of the container.
    #[error(transparent)]
    Out(#[from] IsolatedError),
    /// Taking them in on the host.
    #[error(transparent)]
    In(#[from] crate::git::GitError),
}

/// Bring the session's new commits from container `name` into the host
/// repository (`refs/cci/<id>/<branch>`). `None`: nothing new.
pub async fn sync(
    client: &Client,
    name: &str,
    account: &Account,
    rec: &crate::git::SessionRecord,
    max_bytes: u64,
) -> Result<Option<crate::git::Received>, SyncError> {
    let repo = crate::git::Repo::discover(&rec.repo_path)?;
    // What the host has of the session already need not come again.
    let have = repo
        .resolve_commit(&rec.session_ref()?)?
        .unwrap_or_else(|| rec.base.clone());
    let path = scratch("session")?;
    let file = TempFile(path.clone());
    let inside = folder(&rec.dir);
    match collect(
        client,
        name,
        account,
        &inside,
        &rec.branch,
        &have,
        &path,
        max_bytes,
    )
    .await?
    {
        Collected::Nothing => Ok(None),
        Collected::Bundle => {
            let got = repo.receive(&rec.id, &file.0, &rec.branch)?;
            Ok(Some(got))
        }
    }
}

/// `--auto-merge BRANCH`, once the session has ended and its commits are
/// on the host: merge them into BRANCH (as `cci merge --into BRANCH`; a
/// conflict changes nothing). `None`: not asked for; else what was done.
pub fn auto_merge(rec: &crate::git::SessionRecord) -> Option<Result<String, String>> {
    if rec.auto_merge.is_empty() {
        return None;
    }
    let merged = (|| -> Result<crate::git::MergeOutcome, crate::git::GitError> {
        let repo = crate::git::Repo::discover(&rec.repo_path)?;
        repo.merge(
            &rec.session_ref()?,
            &rec.base,
            Some(&rec.auto_merge),
            crate::git::MergeMode::Merge,
        )
    })();
    Some(
        merged
            .map(|m| {
                format!(
                    "merged into {} (now at {})",
                    crate::config::printable(&m.branch),
                    &m.tip[..m.tip.len().min(12)]
                )
            })
            .map_err(|e| e.to_string()),
    )
}

/// The records of isolated sessions: `git-sessions` in the saved-session
/// folder (`[paths] sessions_dir`, else `~/.cci`), private.
pub fn store(
    sessions_dir: Option<&Path>,
) -> Result<crate::git::SessionStore, crate::git::GitError> {
    let root = crate::session::store_root(sessions_dir)
        .map_err(|e| crate::git::GitError::io("cannot open the saved-session folder", e))?;
    let dir = root.join("git-sessions");
    let store = crate::git::SessionStore::at(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| crate::git::GitError::io(format!("cannot protect {}", dir.display()), e))?;
    Ok(store)
}

/// One repository of a session about to start.
#[derive(Debug)]
pub struct Part {
    /// Its folder below /workspace ("": /workspace itself).
    pub dir: String,
    /// Its record's id.
    pub id: String,
    /// The host side, being bundled.
    pub prepared: Prepared,
}

/// An isolated session about to start in a new container.
#[derive(Debug)]
pub struct Start {
    /// The repositories (one at /workspace, or several below it).
    pub parts: Vec<Part>,
    /// The session id the container is marked with (the first part's id).
    pub id: String,
    /// Session options (branch names).
    pub options: Options,
    /// Where the records go.
    pub store: crate::git::SessionStore,
    /// The most a bundle coming back may hold.
    pub max_bytes: u64,
    /// The committer inside (the host's `user.name`, `user.email`).
    pub identity: Option<(String, String)>,
}

impl Start {
    /// The seed mirrors to mount, read-only, one per repository.
    pub fn mounts(&self) -> Vec<crate::sandbox::Mount> {
        self.parts
            .iter()
            .enumerate()
            .map(|(n, p)| crate::sandbox::Mount {
                host: p.prepared.mirror.dir.clone(),
                container: mirror_at(n),
                readonly: true,
            })
            .collect()
    }
}

/// The folder of `dir` inside.
pub fn folder(dir: &str) -> String {
    if dir.is_empty() {
        WORKSPACE_MOUNT.to_string()
    } else {
        format!("{WORKSPACE_MOUNT}/{dir}")
    }
}

/// Seed container `name` (in `slot`) with every repository of `start` and
/// record them; returns the records. Each record is written before its
/// clone, so a session whose cci dies halfway is still known (and its
/// commits fetchable while the container lives); a failed clone removes
/// the records again (its container goes).
pub async fn begin(
    client: &Client,
    name: &str,
    slot: u32,
    account: &Account,
    start: &Start,
) -> Result<Vec<crate::git::SessionRecord>, String> {
    let branch = start
        .options
        .session_branch
        .clone()
        .unwrap_or_else(|| format!("cci/{slot}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out: Vec<crate::git::SessionRecord> = Vec::new();
    for (n, part) in start.parts.iter().enumerate() {
        let p = &part.prepared;
        let rec = crate::git::SessionRecord {
            id: part.id.clone(),
            workspace: name
                .rsplit_once('-')
                .map(|(w, _)| w.to_string())
                .unwrap_or_default(),
            slot,
            branch: branch.clone(),
            base: p.base.clone(),
            started: now,
            container: name.to_string(),
            repo_path: p.repo.top.clone(),
            dir: part.dir.clone(),
            group: start.id.clone(),
            auto_merge: start.options.auto_merge.clone().unwrap_or_default(),
        };
        if let Err(e) = seed_part(client, name, account, start, n, &rec, &branch).await {
            // The container goes: its records must not outlive it empty.
            for r in out.iter().chain(std::iter::once(&rec)) {
                let _ = start.store.remove(&r.id);
            }
            return Err(e);
        }
        out.push(rec);
    }
    Ok(out)
}

/// Wait for one repository's start to be in its mirror, record it, and
/// clone it inside.
async fn seed_part(
    client: &Client,
    name: &str,
    account: &Account,
    start: &Start,
    n: usize,
    rec: &crate::git::SessionRecord,
    branch: &str,
) -> Result<(), String> {
    let part = &start.parts[n];
    let seeding = part
        .prepared
        .seeding
        .lock()
        .ok()
        .and_then(|mut b| b.take())
        .ok_or("the repository's start was taken already")?;
    let bytes = tokio::task::spawn_blocking(move || seeding.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "packing the repository failed".to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "{}: {bytes} bytes went into the seed mirror {}",
        folder(&part.dir),
        part.prepared.mirror.dir.display()
    );
    start.store.save(rec).map_err(|e| e.to_string())?;
    let mounted = mirror_at(n);
    // A remote daemon cannot mount the mirror: the start's history goes in
    // as one pack instead.
    let pack = match client.remote() {
        None => None,
        Some(_) => Some(pack_of(&part.prepared.mirror.dir, &part.prepared.start)?),
    };
    let from = match &pack {
        None => SeedFrom::Mounted(&mounted),
        Some((_, file)) => SeedFrom::Pack(file),
    };
    seed(
        client,
        name,
        account,
        from,
        &part.prepared.start,
        &folder(&part.dir),
        branch,
        start.identity.clone(),
    )
    .await
    .map_err(|e| e.to_string())
}

/// A pack of everything `start` needs, made from the seed mirror `mirror`
/// in a private temporary folder (removed with the returned guard).
fn pack_of(
    mirror: &std::path::Path,
    start: &str,
) -> Result<(tempdir::Dir, std::path::PathBuf), String> {
    crate::git::names::check_oid(start).map_err(|e| e.to_string())?;
    let dir = tempdir::Dir::new().map_err(|e| format!("a folder for the seed pack: {e}"))?;
    let base = dir.path().join("seed");
    let out = crate::git::run::Git::new()
        .cmd(Some(mirror))
        .args(["pack-objects", "--revs", "-q"])
        .arg(&base)
        .stdin(format!("{start}\n").into_bytes())
        .ok()
        .map_err(|e| format!("packing the repository: {e}"))?;
    let hash = out.text().trim().to_string();
    let pack = dir.path().join(format!("seed-{hash}.pack"));
    if hash.is_empty() || !pack.is_file() {
        return Err("packing the repository gave no pack".into());
    }
    Ok((dir, pack))
}

/// A private temporary folder, removed when dropped.
mod tempdir {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Dir> {
            let root = crate::state::dir("tmp")?;
            let path = root.join(format!("seed-{}", uuid::Uuid::new_v4().simple()));
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            Ok(Dir(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The records of the session container `name` is marked with (`group`).
pub fn records_of(
    store: &crate::git::SessionStore,
    group: &str,
) -> Result<Vec<crate::git::SessionRecord>, crate::git::GitError> {
    Ok(store
        .list()?
        .into_iter()
        .filter(|r| r.group() == group)
        .collect())
}

/// Folder names for `repos` inside /workspace: their own names, made
/// unique, anything outside `[A-Za-z0-9._-]` replaced.
pub fn dir_names(repos: &[std::path::PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in repos {
        let base: String = r
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(56)
            .collect();
        let base = base.trim_start_matches(['.', '-']).to_string();
        let base = if base.is_empty() {
            "repo".to_string()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while out.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        out.push(name);
    }
    out
}

/// The host's git identity (`user.name`, `user.email` of the user's own
/// configuration), for commits made inside.
pub fn host_identity(repo: &crate::git::Repo) -> Option<(String, String)> {
    let get = |key: &str| -> Option<String> {
        let out = repo
            .git()
            .cmd(Some(&repo.top))
            .args(["config", "--get", key])
            .run()
            .ok()?;
        let v = out.text().trim().to_string();
        (out.success() && !v.is_empty() && !v.chars().any(char::is_control)).then_some(v)
    };
    Some((get("user.name")?, get("user.email")?))
}

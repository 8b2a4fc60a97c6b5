//! Package caches shared between sandboxes (`[caches]`): host folders, one
//! per scope (a workspace, or all of the user's), mounted into each new
//! sandbox, with the tools' cache variables pointed at them, so a second
//! slot's `npm install` finds what the first downloaded.
//!
//! What is shared is the download caches only, never the tools' settings
//! or credentials (`~/.npmrc`, pip's config, cargo's `CARGO_HOME` with its
//! `credentials.toml` and `config.toml` are not caches and stay out: only
//! cargo's `registry` and `git` folders are linked to the cache). The agent
//! can write into a cache, so cci treats its contents as hostile: it never
//! follows a link in one, changes the owner only of what it has just made,
//! and empties a cache that grew past its cap with the kernel's no-follow
//! removal.
//!
//! npm's, pip's, Go's and cargo's caches are host folders, written by
//! `code` (the workspace owner on the host). apt's cannot be: apt works as
//! root, and each container's root is an id of its own (see
//! `sandbox::idmap`), so what one wrote would be nobody's in the next. Its
//! packages go to an Incus custom volume instead, mounted with id shifting
//! (root's files are the volume's root's in every sandbox), kept in the
//! daemon's storage, which no host user can reach. apt installs a cached
//! package of the right size without checking it again, so whoever shares
//! the cache can plant packages for the others: one workspace's sandboxes
//! (the same agent) by default, every workspace with `scope = "user"`.

use std::path::{Path, PathBuf};

use crate::config::{CacheKind, CacheScope, CacheSettings};

pub mod unused;
pub use unused::{Unused, remove, unused};

/// Where the caches appear inside (a folder each).
pub const TOOLS_MOUNT: &str = "/var/cache/cci";

/// Where apt's settings for its cache are mounted (read-only) inside.
pub const APT_SETTINGS: &str = "/etc/apt/apt.conf.d/50cci-cache";

/// Where apt keeps the packages it downloads (the cache volume's place).
pub const APT_ARCHIVES: &str = "/var/cache/apt/archives";

/// The device name of a cache volume starts so.
pub const VOLUME_DEVICE_PREFIX: &str = "cache-";

/// Cargo's cache folders, linked from `~/.cargo/NAME` to
/// `TOOLS_MOUNT/cargo/NAME`.
pub const CARGO_FOLDERS: [&str; 2] = ["registry", "git"];

/// The mounts and variables of a sandbox's caches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// `(host, container, readonly)`, for `mounts::plan`.
    pub mounts: Vec<(String, String, bool)>,
    /// Environment variables pointing the tools at them.
    pub env: Vec<(String, String)>,
    /// `(volume, container path)`: cache volumes to make (when missing)
    /// and mount.
    pub volumes: Vec<(String, String)>,
}

/// The variable telling `kind` where its cache is (cargo's folders are
/// linked and apt is told in its settings instead).
fn variable(kind: CacheKind) -> Option<&'static str> {
    match kind {
        CacheKind::Npm => Some("npm_config_cache"),
        CacheKind::Pip => Some("PIP_CACHE_DIR"),
        CacheKind::Go => Some("GOMODCACHE"),
        CacheKind::Cargo | CacheKind::Apt => None,
    }
}

/// apt's settings: downloaded packages kept after installing (`apt`
/// removes them by default), so the next sandbox finds them.
const APT_KEEP: &str = "// Made by cci ([caches] enabled has \"apt\"): packages apt downloads stay in\n\
// the cache volume shared by the sandboxes (mounted at /var/cache/apt/archives).\n\
APT::Keep-Downloaded-Packages \"true\";\n\
Binary::apt::APT::Keep-Downloaded-Packages \"true\";\n";

/// The name of the cache volume of `kind` (apt's) for this scope: of the
/// workspace, or of host user `uid`.
pub fn volume_name(c: &CacheSettings, workspace_id: &str, uid: u32, kind: CacheKind) -> String {
    match c.scope {
        CacheScope::Workspace => format!("{VOLUME_PREFIX}{workspace_id}-{}", kind.word()),
        CacheScope::User => format!("{VOLUME_PREFIX}user{uid}-{}", kind.word()),
    }
}

/// The prefix of cache volumes' names.
const VOLUME_PREFIX: &str = "cci-cache-";

/// The host folder of this scope's caches.
pub fn scope_dir(c: &CacheSettings, workspace_id: &str) -> PathBuf {
    c.dir.join(scope_name(c.scope, workspace_id))
}

/// The name of a scope's folder under the caches' `dir`.
fn scope_name(scope: CacheScope, workspace_id: &str) -> String {
    match scope {
        CacheScope::Workspace => format!("workspace-{workspace_id}"),
        CacheScope::User => "user".into(),
    }
}

/// Make the cache folders of `c` for workspace `workspace_id` (new ones
/// owned by `owner`, who is `code` inside), empty those past the cap, and
/// say what to mount and set. Volumes are the caller's to make.
pub fn plan(
    c: &CacheSettings,
    workspace_id: &str,
    owner: Option<(u32, u32)>,
) -> Result<Planned, String> {
    let mut p = Planned::default();
    if c.enabled.is_empty() {
        return Ok(p);
    }
    let err = |path: &Path, e: std::io::Error| format!("cache folder {}: {e}", path.display());
    std::fs::create_dir_all(&c.dir).map_err(|e| err(&c.dir, e))?;
    let scope = scope_dir(c, workspace_id);
    made(&scope, None, 0o700).map_err(|e| err(&scope, e))?;
    unused::touch(&scope);
    // What an earlier emptying could not remove, tried again.
    for e in std::fs::read_dir(&scope).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("trash-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let tools = scope.join("tools");
    made(&tools, owner, 0o755).map_err(|e| err(&tools, e))?;
    p.mounts
        .push((tools.display().to_string(), TOOLS_MOUNT.into(), false));
    for &kind in &c.enabled {
        if let Some(var) = variable(kind) {
            p.env
                .push((var.into(), format!("{TOOLS_MOUNT}/{}", kind.word())));
        }
        if kind == CacheKind::Apt {
            // No workspace owner mapped: this user's.
            let uid = owner.map_or_else(|| unsafe { libc::geteuid() }, |(u, _)| u);
            p.volumes
                .push((volume_name(c, workspace_id, uid, kind), APT_ARCHIVES.into()));
            let file = scope.join("apt.conf");
            write_settings(&file, APT_KEEP.as_bytes(), owner).map_err(|e| err(&file, e))?;
            p.mounts
                .push((file.display().to_string(), APT_SETTINGS.into(), true));
            continue;
        }
        let dir = tools.join(kind.word());
        made(&dir, owner, 0o755).map_err(|e| err(&dir, e))?;
        if size_over(&dir, c.max_bytes) {
            // A cache that cannot be emptied (read-only module folders, a
            // folder of another id) costs disk, never a session.
            match empty(&scope, &dir, owner) {
                Ok(()) => tracing::info!("cache {} passed its cap: emptied", dir.display()),
                Err(e) => eprintln!(
                    "cci: warning: cache {} passed its cap and could not be emptied: {e}",
                    dir.display()
                ),
            }
        }
    }
    Ok(p)
}

/// What the caches need inside a started sandbox, before its command:
/// cargo's links, and apt's volume emptied when past the cap. Failures are
/// warnings: a tool then downloads again, nothing breaks.
pub async fn inside(
    client: &crate::incus::Client,
    container: &str,
    c: &CacheSettings,
    a: &crate::config::Account,
) {
    if c.enabled.contains(&CacheKind::Cargo)
        && let Err(e) = link_cargo(client, container, a).await
    {
        tracing::warn!("linking cargo's caches in {container}: {e}");
    }
    if c.enabled.contains(&CacheKind::Apt) {
        match trim_apt(client, container, c.max_bytes).await {
            Ok(true) => tracing::info!("apt's cache in {container} passed its cap: emptied"),
            Ok(false) => {}
            Err(e) => tracing::warn!("checking apt's cache in {container}: {e}"),
        }
    }
}

/// The longest the cap check of apt's cache may take.
const TRIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Empty apt's cache volume, mounted in `container`, when it holds more
/// than `cap` bytes: measured from inside, as container root (pools do not
/// all tell how full a volume is), and emptied by `apt-get clean`, which
/// waits for no other sandbox's apt: one holding the cache's lock keeps it
/// as it is until the next start. Images without apt are left alone.
async fn trim_apt(
    client: &crate::incus::Client,
    container: &str,
    cap: u64,
) -> Result<bool, String> {
    let script = format!(
        r#"d={APT_ARCHIVES}
mountpoint -q "$d" && command -v apt-get >/dev/null || exit 0
[ "$(du -sbx "$d" | cut -f1)" -gt {cap} ] || exit 0
apt-get clean && echo emptied"#
    );
    let mut req = crate::incus::ExecRequest::new(&["sh", "-c", &script]);
    req.repeatable = true;
    let out = tokio::time::timeout(TRIM_TIMEOUT, client.exec_capture(container, &req, None))
        .await
        .map_err(|_| "no answer in 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("emptied"))
}

/// cargo's lock files, in `CARGO_HOME`'s top folder; linked to the shared
/// folder too, so two sandboxes never change the shared registry at once.
const CARGO_LOCKS: [&str; 2] = [".package-cache", ".package-cache-mutate"];

/// Link `~/.cargo/registry`, `~/.cargo/git` and cargo's lock files of `a`
/// in `container` to the shared cargo cache, when the container has it
/// mounted and the home has none of them yet (a registry cargo filled
/// before is left as it is). Everything is made from inside, through the
/// files API as `code` would: the shared folder is the agents' to change,
/// so cci on the host makes nothing below its top.
async fn link_cargo(
    client: &crate::incus::Client,
    container: &str,
    a: &crate::config::Account,
) -> crate::incus::Result<()> {
    use crate::incus::{FileKind, FileWrite};
    let shared = format!("{TOOLS_MOUNT}/cargo");
    match client.stat_file(container, &shared).await {
        Ok(i) if i.kind == FileKind::Directory => {}
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    }
    let how = FileWrite {
        uid: a.uid,
        gid: a.gid,
        mode: 0o755,
    };
    let home = format!("{}/.cargo", a.home);
    // Linked by an earlier session, or cargo's own: left as they are (the
    // first one found says so; a session start usually stops here).
    for name in CARGO_FOLDERS.iter().chain(&CARGO_LOCKS) {
        match client.stat_file(container, &format!("{home}/{name}")).await {
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
    client.mkdir_all(container, &home, how).await?;
    for name in CARGO_FOLDERS {
        client
            .mkdir(container, &format!("{shared}/{name}"), how)
            .await?;
    }
    for name in CARGO_LOCKS {
        let lock = format!("{shared}/{name}");
        if let Err(e) = client.stat_file(container, &lock).await {
            if !e.is_not_found() {
                return Err(e);
            }
            client
                .write_file(
                    container,
                    &lock,
                    Vec::new(),
                    FileWrite { mode: 0o644, ..how },
                )
                .await?;
        }
    }
    for name in CARGO_FOLDERS.iter().chain(&CARGO_LOCKS) {
        client
            .symlink(
                container,
                &format!("{home}/{name}"),
                &format!("{shared}/{name}"),
                how,
            )
            .await?;
    }
    Ok(())
}

/// Write `data` to `path` (in a folder no sandbox mounts) atomically: a new
/// file beside it, owned by `owner`, renamed over it.
fn write_settings(path: &Path, data: &[u8], owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read(path).is_ok_and(|d| d == data) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let done = (|| {
        f.write_all(data)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Refuse a cache folder the agent could reach other than through the cache
/// mount: inside the workspace or a writable mount, or holding one (cci
/// works in it on the host before anything starts).
pub fn check_place(dir: &Path, workspace: &Path, writable: &[PathBuf]) -> Result<(), String> {
    let real = |p: &Path| -> PathBuf {
        // The nearest existing folder, resolved, and the rest as written.
        let mut head = p.to_path_buf();
        let mut tail = Vec::new();
        while !head.exists() {
            match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
                (Some(n), Some(parent)) => {
                    tail.push(n);
                    head = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = std::fs::canonicalize(&head).unwrap_or(head);
        out.extend(tail.iter().rev());
        out
    };
    let d = real(dir);
    for other in std::iter::once(workspace).chain(writable.iter().map(PathBuf::as_path)) {
        let o = real(other);
        if d.starts_with(&o) || o.starts_with(&d) {
            return Err(format!(
                "caches.dir {} and {} overlap: the agent could change the caches' folders from there; set [caches] dir elsewhere",
                d.display(),
                o.display()
            ));
        }
    }
    Ok(())
}

/// Make `dir` when missing (then owned by `owner`, with `mode`); anything
/// else found there — a link, a file — is removed and the folder made.
///
/// Nothing here follows a link: the mode is given at creation (never a
/// chmod, which would follow a link swapped in meanwhile), the owner set
/// with `lchown` (a link swapped in gets the owner, not its target).
fn made(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new().mode(mode).create(dir)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Empty the cache `dir`: moved aside into `scope` (which no sandbox
/// mounts; a rename moves a link, not its target), made again (0755), and
/// what was moved removed without following any link in it.
fn empty(scope: &Path, dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let trash = scope.join(format!("trash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::rename(dir, &trash)?;
    made(dir, owner, 0o755)?;
    // std's remove_dir_all removes links, never what they point to.
    std::fs::remove_dir_all(&trash)
}

/// The most bytes of folder names a size walk holds to visit later.
const MAX_PENDING: usize = 64 << 20;

/// The most entries a size walk looks at; a cache with more is over any cap.
const MAX_ENTRIES: usize = 2_000_000;

/// Whether the files under `dir` (links not followed, other file systems
/// not entered) take more than `max` bytes.
fn size_over(dir: &Path, max: u64) -> bool {
    measure(dir, max) > max
}

/// What the files under `dir` take (links not followed, other file
/// systems not entered), counted until it passes `stop_past`; a walk past
/// [`MAX_ENTRIES`] entries, or holding more than [`MAX_PENDING`] bytes of
/// folder names still to visit (an agent's deep tree of long names), gives
/// `u64::MAX`.
fn measure(dir: &Path, stop_past: u64) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        pending = pending.saturating_sub(d.as_os_str().as_bytes().len());
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return u64::MAX;
            }
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() && m.dev() == top.dev() {
                let path = e.path();
                pending += path.as_os_str().as_bytes().len();
                if pending > MAX_PENDING {
                    return u64::MAX;
                }
                stack.push(path);
            } else if m.is_file() {
                total = total.saturating_add(m.len());
                if total > stop_past {
                    return total;
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, enabled: &[CacheKind], max: u64) -> CacheSettings {
        CacheSettings {
            enabled: enabled.to_vec(),
            dir: dir.to_path_buf(),
            scope: CacheScope::Workspace,
            max_bytes: max,
        }
    }

    #[test]
    fn a_cache_folder_in_or_around_an_agents_folder_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let mount = d.path().join("data");
        assert!(check_place(&ws.join(".cache/cci"), &ws, &[]).is_err());
        assert!(check_place(&mount.join("c"), &ws, std::slice::from_ref(&mount)).is_err());
        assert!(check_place(d.path(), &ws, &[]).is_err());
        assert!(check_place(&d.path().join("caches"), &ws, &[mount]).is_ok());
    }

    #[test]
    fn nothing_enabled_mounts_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = plan(&settings(d.path(), &[], 1 << 20), "abcd1234", None).unwrap();
        assert_eq!(p, Planned::default());
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    }

    #[test]
    fn each_cache_gets_its_folder_and_variable() {
        let d = tempfile::tempdir().unwrap();
        let c = settings(d.path(), &[CacheKind::Npm, CacheKind::Go], 1 << 20);
        let p = plan(&c, "abcd1234", None).unwrap();
        let scope = d.path().join("workspace-abcd1234");
        assert_eq!(
            p.mounts,
            vec![(
                scope.join("tools").display().to_string(),
                TOOLS_MOUNT.into(),
                false
            )]
        );
        assert_eq!(
            p.env,
            vec![
                ("npm_config_cache".into(), "/var/cache/cci/npm".into()),
                ("GOMODCACHE".into(), "/var/cache/cci/go".into()),
            ]
        );
        assert!(scope.join("tools/npm").is_dir() && scope.join("tools/go").is_dir());
        let user = CacheSettings {
            scope: CacheScope::User,
            ..c
        };
        assert_eq!(scope_dir(&user, "x"), d.path().join("user"));
    }

    #[test]
    fn cargo_gets_its_folder_and_apt_a_volume_and_its_settings() {
        let d = tempfile::tempdir().unwrap();
        let c = settings(d.path(), &[CacheKind::Cargo, CacheKind::Apt], 1 << 20);
        let p = plan(&c, "abcd1234", None).unwrap();
        let scope = d.path().join("workspace-abcd1234");
        assert!(p.env.is_empty());
        // (Its registry and git folders are made inside, see `link_cargo`.)
        assert!(scope.join("tools/cargo").is_dir());
        assert!(!scope.join("tools/cargo/registry").exists());
        assert!(!scope.join("tools/apt").exists());
        assert_eq!(
            p.volumes,
            vec![("cci-cache-abcd1234-apt".into(), APT_ARCHIVES.into())]
        );
        let conf = scope.join("apt.conf");
        assert!(
            p.mounts
                .contains(&(conf.display().to_string(), APT_SETTINGS.into(), true))
        );
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("Binary::apt::APT::Keep-Downloaded-Packages \"true\";"));
        let user = CacheSettings {
            scope: CacheScope::User,
            ..c
        };
        assert_eq!(
            volume_name(&user, "x", 1000, CacheKind::Apt),
            "cci-cache-user1000-apt"
        );
    }

    #[test]
    fn a_cache_past_its_cap_is_emptied_and_links_in_it_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), vec![0u8; 4096]).unwrap();
        let c = settings(d.path(), &[CacheKind::Pip], 10_000);
        plan(&c, "abcd1234", None).unwrap();
        let pip = d.path().join("workspace-abcd1234/tools/pip");
        std::fs::create_dir(pip.join("http")).unwrap();
        std::fs::write(pip.join("http/a"), vec![0u8; 6000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), pip.join("link")).unwrap();
        // Under the cap (the link's target is not counted): kept.
        plan(&c, "abcd1234", None).unwrap();
        assert!(pip.join("http/a").exists());
        std::fs::write(pip.join("http/b"), vec![0u8; 6000]).unwrap();
        plan(&c, "abcd1234", None).unwrap();
        assert!(pip.is_dir());
        assert!(std::fs::read_dir(&pip).unwrap().next().is_none());
        assert!(outside.path().join("keep").exists());
        // The cache folder itself swapped for a link: the link goes, the
        // folder is made again, the target is untouched.
        std::fs::remove_dir(&pip).unwrap();
        std::os::unix::fs::symlink(outside.path(), &pip).unwrap();
        plan(&c, "abcd1234", None).unwrap();
        assert!(std::fs::symlink_metadata(&pip).unwrap().is_dir());
        assert!(outside.path().join("keep").exists());
    }
}

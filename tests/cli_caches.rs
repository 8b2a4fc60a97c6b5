//! Shared package caches (`[caches]`) against the real daemon: what one
//! slot downloads the next finds, other workspaces do not see it, the cap
//! empties a cache, and what an agent plants in a cache stays harmless.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::agent::{Sessions, cci_in, ok, sh_in, text};
use common::agent_workspace;

fn start(ws: &Path, config: &Path, slot: u32) -> String {
    let out = cci_in(ws, "shell")
        .env("CCI_CONFIG", config)
        .args(["--background", "--slot", &slot.to_string()])
        .output()
        .unwrap();
    ok(&out).trim().to_string()
}

fn sh(name: &str, root: bool, script: &str) -> String {
    let out = sh_in(name, root, script);
    ok(&out)
}

/// A configuration in `dir` with the caches `enabled` (16 MiB each) in
/// `dir/caches`: (that folder, the configuration file).
fn config_with(dir: &Path, enabled: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let caches = dir.join("caches");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[caches]\nenabled = {enabled:?}\ndir = {:?}\nmax_size = \"16MiB\"\n",
            caches.display().to_string()
        ),
    )
    .unwrap();
    (caches, config)
}

/// The workspace id in a container name `cci-<id>-<slot>`.
fn id_of(name: &str) -> &str {
    &name[4..12]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_is_shared_by_a_workspaces_slots_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let (caches, config) = config_with(dir.path(), &["npm", "pip"]);
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let one = start(ws.path(), &config, 1);
    assert_eq!(
        sh(&one, false, "echo $npm_config_cache").trim(),
        "/var/cache/cci/npm"
    );
    sh(
        &one,
        false,
        "echo tarball > $npm_config_cache/pkg.tgz; echo '//registry.npmjs.org/:_authToken=s3cret' > ~/.npmrc",
    );
    sh(&one, false, "echo wheel > $PIP_CACHE_DIR/tool.whl");

    // The second slot finds both.
    let two = start(ws.path(), &config, 2);
    assert_eq!(
        sh(&two, false, "cat /var/cache/cci/npm/pkg.tgz").trim(),
        "tarball"
    );
    assert_eq!(
        sh(&two, false, "cat /var/cache/cci/pip/tool.whl").trim(),
        "wheel"
    );
    // On the host: the workspace owner's (code inside), and no credential.
    let scope = caches.join(format!("workspace-{}", id_of(&one)));
    let pkg = scope.join("tools/npm/pkg.tgz");
    assert_eq!(std::fs::metadata(&pkg).unwrap().uid(), 1000);
    let grep = std::process::Command::new("grep")
        .args(["-r", "s3cret"])
        .arg(&caches)
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "{}", text(&grep.stdout));

    // Another workspace has caches of its own.
    let other = agent_workspace();
    let _o = Sessions(other.path().to_path_buf());
    let three = start(other.path(), &config, 1);
    assert!(sh(&three, false, "ls /var/cache/cci/npm").trim().is_empty());

    // An agent plants a link where a cache folder was, and fills the other
    // past its cap: the next start removes the link (its target untouched,
    // its owner unchanged) and empties the full cache.
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("precious"), "x").unwrap();
    let before = std::fs::metadata(target.path()).unwrap().uid();
    sh(
        &one,
        true,
        &format!(
            "rm -rf /var/cache/cci/npm && ln -s {:?} /var/cache/cci/npm",
            target.path().display().to_string()
        ),
    );
    sh(
        &two,
        false,
        "head -c 20000000 /dev/zero > /var/cache/cci/pip/big.whl",
    );
    let four = start(ws.path(), &config, 3);
    let npm = scope.join("tools/npm");
    assert!(std::fs::symlink_metadata(&npm).unwrap().is_dir());
    assert!(target.path().join("precious").exists());
    assert_eq!(std::fs::metadata(target.path()).unwrap().uid(), before);
    assert!(sh(&four, false, "ls /var/cache/cci/pip").trim().is_empty());
    assert!(sh(&four, false, "touch /var/cache/cci/npm/ok && echo yes").contains("yes"));

    // A workspace's own .cci.toml cannot turn caches on or move them.
    let untrusted = agent_workspace();
    let _u = Sessions(untrusted.path().to_path_buf());
    std::fs::write(
        untrusted.path().join(".cci.toml"),
        "[caches]\nenabled = [\"npm\"]\ndir = \"/etc\"\n",
    )
    .unwrap();
    let out = cci_in(untrusted.path(), "shell")
        .arg("--background")
        .output()
        .unwrap();
    let five = ok(&out).trim().to_string();
    assert!(
        text(&out.stderr).contains("caches"),
        "{}",
        text(&out.stderr)
    );
    assert!(sh(&five, false, "echo \"[$npm_config_cache]\"").contains("[]"));

    // Caches in the workspace would be the agent's to rearrange while cci
    // works in them on the host: refused before anything is made.
    let inside = agent_workspace();
    let _i = Sessions(inside.path().to_path_buf());
    let bad = dir.path().join("inside.toml");
    std::fs::write(
        &bad,
        format!(
            "[caches]\nenabled = [\"npm\"]\ndir = {:?}\n",
            inside.path().join(".cache").display().to_string()
        ),
    )
    .unwrap();
    let out = cci_in(inside.path(), "shell")
        .env("CCI_CONFIG", &bad)
        .arg("--background")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("overlap"),
        "{}",
        text(&out.stderr)
    );
    assert!(!inside.path().join(".cache").exists());
}

/// A tiny package `cci-hello` saying `$1`, made at `$2` inside a container
/// with Debian's own tools.
const MAKE_PACKAGE: &str = r#"set -e
d=$(mktemp -d) && mkdir -p $d/DEBIAN $d/usr/share/cci-hello
printf 'Package: cci-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: a test package\n' > $d/DEBIAN/control
echo "$1" > $d/usr/share/cci-hello/said
rm -f "$2" && dpkg-deb -Zgzip --build $d "$2" >/dev/null
"#;

/// The flat repository in `/workspace/.repo` indexed.
const INDEX_REPO: &str = r#"set -e
cd /workspace/.repo
{ dpkg-deb -f cci-hello_1.0_all.deb; echo "Filename: ./cci-hello_1.0_all.deb"; echo "Size: $(stat -c %s cci-hello_1.0_all.deb)"; echo "SHA256: $(sha256sum cci-hello_1.0_all.deb | cut -d' ' -f1)"; } > Packages
chown -R 1000:1000 /workspace/.repo
"#;

/// apt pointed at the repository, served over HTTP on the container's own
/// loopback (apt's http method downloads as the sandbox user, as from any
/// mirror), then `apt-get install cci-hello`; what the package says.
const INSTALL: &str = r#"(setsid perl /workspace/.repo-server.pl </dev/null >/dev/null 2>&1 &)
sleep 0.5
echo 'deb [trusted=yes] http://127.0.0.1:8999/ ./' > /etc/apt/sources.list.d/cci-test.list
apt-get update -o Dir::Etc::sourcelist=/dev/null >/dev/null 2>&1
apt-get install -y cci-hello >/dev/null 2>&1
cat /usr/share/cci-hello/said 2>/dev/null
true"#;

/// Deletes a cache volume when dropped (after the sandboxes using it).
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("incus")
            .args(["storage", "volume", "delete", "default", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apt_and_cargo_caches_are_shared_between_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (caches, config) = config_with(dir.path(), &["apt", "cargo"]);
    let ws = agent_workspace();
    // Dropped after the sandboxes: the volume's name is known once one runs.
    let mut volume = Volume(String::new());
    let _s = Sessions(ws.path().to_path_buf());
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apt-repo-server.pl"),
        ws.path().join(".repo-server.pl"),
    )
    .unwrap();
    let one = start(ws.path(), &config, 1);
    let id = id_of(&one).to_string();
    volume.0 = format!("cci-cache-{id}-apt");
    let scope = caches.join(format!("workspace-{id}"));

    // apt: what the first slot installs is kept in the shared cache volume.
    let said = sh(
        &one,
        true,
        &format!(
            "set -- good /workspace/.repo/cci-hello_1.0_all.deb\nmkdir -p /workspace/.repo\n{MAKE_PACKAGE}\n{INDEX_REPO}\n{INSTALL}"
        ),
    );
    assert_eq!(said.trim(), "good");
    assert!(sh(&one, true, "ls /var/cache/apt/archives").contains("cci-hello_1.0_all.deb"));

    // The second slot (another id map) installs it with the package gone
    // from the repository: from the cache.
    std::fs::remove_file(ws.path().join(".repo/cci-hello_1.0_all.deb")).unwrap();
    let two = start(ws.path(), &config, 2);
    assert_eq!(sh(&two, true, INSTALL).trim(), "good");

    // Root's files in it are root's on disk, so the volume must be out of
    // every host user's reach: the daemon's storage is root's alone.
    let custom = std::fs::metadata("/var/lib/incus/storage-pools/default/custom").unwrap();
    assert_eq!(custom.mode() & 0o077, 0, "{:o}", custom.mode());

    // Another workspace has a cache volume of its own.
    let other = agent_workspace();
    let mut other_volume = Volume(String::new());
    let _o = Sessions(other.path().to_path_buf());
    let three = start(other.path(), &config, 1);
    other_volume.0 = format!("cci-cache-{}-apt", id_of(&three));
    assert_ne!(other_volume.0, volume.0);
    assert!(
        sh(&three, true, "ls /var/cache/apt/archives")
            .trim()
            .is_empty()
    );

    // Cargo: the home's registry and git folders are the shared ones; the
    // rest of ~/.cargo (credentials, settings) stays in the container.
    sh(
        &one,
        false,
        "echo crate > ~/.cargo/registry/index.txt && echo 'token = \"s3cret\"' > ~/.cargo/credentials.toml",
    );
    assert_eq!(
        sh(
            &two,
            false,
            "readlink ~/.cargo/git ~/.cargo/.package-cache; cat ~/.cargo/registry/index.txt"
        ),
        "/var/cache/cci/cargo/git\n/var/cache/cci/cargo/.package-cache\ncrate\n"
    );
    // A one-off command gets them too.
    let out = cci_in(ws.path(), "run")
        .env("CCI_CONFIG", &config)
        .args(["--", "sh", "-c", "cat ~/.cargo/registry/index.txt"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "crate\n");
    let index = scope.join("tools/cargo/registry/index.txt");
    assert_eq!(std::fs::metadata(index).unwrap().uid(), 1000);
    let grep = std::process::Command::new("grep")
        .args(["-r", "s3cret"])
        .arg(&caches)
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "{}", text(&grep.stdout));

    // Past its cap, the cache is emptied when the next sandbox starts (its
    // lock file and download folder stay).
    sh(
        &one,
        true,
        "head -c 20000000 /dev/zero > /var/cache/apt/archives/big.deb",
    );
    let four = start(ws.path(), &config, 4);
    assert_eq!(
        sh(&four, true, "ls /var/cache/apt/archives"),
        "lock\npartial\n"
    );

    // An isolated session's agent gets no shared cache: what it planted
    // there would reach the mounted sandboxes unreviewed.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(ws.path())
            .args(args)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    std::fs::write(
        dir.path().join(".gitconfig"),
        "[safe]\n\tdirectory = *\n[user]\n\tname = t\n\temail = t@t\n",
    )
    .unwrap();
    git(&["init", "-q", "-b", "main"]);
    git(&["add", ".fake-agent"]);
    git(&["commit", "-qm", "first"]);
    let out = cci_in(ws.path(), "run")
        .env("CCI_CONFIG", &config)
        .env("HOME", dir.path())
        .args(["--isolated", "--", "sh", "-c"])
        .arg("ls -a ~/.cargo /var/cache/cci /var/cache/apt/archives 2>&1; grep -c /var/cache/cci /proc/mounts || true")
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        !said.contains("package-cache") && !said.contains("registry"),
        "{said}{}",
        text(&out.stderr)
    );
    assert!(said.trim_end().ends_with('0'), "{said}");
}

/// Sets `dir`'s modification time two hours back: last used long ago.
fn age(dir: &Path) {
    std::fs::File::open(dir)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_caches_removes_the_caches_no_container_uses() {
    let dir = tempfile::tempdir().unwrap();
    let (caches, config) = config_with(dir.path(), &["npm", "apt"]);
    let ws = agent_workspace();
    let mut volume = Volume(String::new());
    let sessions = Sessions(ws.path().to_path_buf());
    let one = start(ws.path(), &config, 1);
    let id = id_of(&one).to_string();
    volume.0 = format!("cci-cache-{id}-apt");
    let scope = caches.join(format!("workspace-{id}"));
    sh(&one, false, "echo x > /var/cache/cci/npm/kept");
    let clean = |args: &[&str]| {
        common::cci()
            .env("CCI_CONFIG", &config)
            .arg("clean")
            .arg("--caches")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Just used (a sandbox may be starting with it), and in use.
    let said = ok(&clean(&["--dry-run"]));
    assert!(!said.contains(&id), "{said}");
    // In use: mounted by a container (its folder aged, so only the mount
    // keeps it), and the volume attached.
    age(&scope);
    let said = ok(&clean(&["--dry-run"]));
    assert!(!said.contains(&id), "{said}");

    // A volume named like a cache that cci did not make (no description of
    // cci's), with an old scope folder: never listed.
    let decoy = Volume(format!("cci-cache-{id}x-apt"));
    let made = std::process::Command::new("incus")
        .args(["storage", "volume", "create", "default", &decoy.0])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    std::fs::create_dir(caches.join(format!("workspace-{id}x"))).unwrap();
    age(&caches.join(format!("workspace-{id}x")));

    // The container gone: unused and old, listed, then removed, folder and
    // volume.
    drop(sessions);
    let said = ok(&clean(&["--dry-run"]));
    assert!(said.contains(&format!("workspace-{id}")), "{said}");
    assert!(said.contains(&volume.0), "{said}");
    assert!(!said.contains(&decoy.0), "{said}");
    assert!(
        scope.join("tools/npm/kept").exists(),
        "a dry run removes nothing"
    );
    // Removing asks first; with no terminal to ask at, nothing goes.
    let out = clean(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(scope.exists());
    ok(&clean(&["--force"]));
    assert!(!scope.exists());
    let show = std::process::Command::new("incus")
        .args(["storage", "volume", "show", "default", &volume.0])
        .output()
        .unwrap();
    assert!(!show.status.success(), "the volume is gone");
    let said = ok(&clean(&["--dry-run"]));
    assert!(!said.contains(&id), "{said}");
    let show = std::process::Command::new("incus")
        .args(["storage", "volume", "show", "default", &decoy.0])
        .output()
        .unwrap();
    assert!(show.status.success(), "not cci's volume: kept");
}

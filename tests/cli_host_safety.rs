//! What root inside a sandbox can do to the host, tried against the real
//! daemon: files it leaves in the workspace, Incus profiles that would hand
//! it the host, kernel interfaces it goes without, a kept container asked
//! to loosen its network, and workspace files the host runs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::agent::{Sessions, background, cci_in, ok, sh_in, text};
use common::{agent_workspace, cci, client, containers_of, test_image, workspace};

/// `cci run` in `ws` from the test image.
fn run_in(ws: &Path) -> Command {
    let mut cmd = cci();
    cmd.env("CCI_IMAGE", test_image())
        .arg("run")
        .arg("--workspace")
        .arg(ws);
    cmd
}

/// The static probe (tests/fixtures/kernel-probe.c), built into `ws` as
/// `/workspace/.probe`.
fn probe_in(ws: &Path) -> PathBuf {
    let out = ws.join(".probe");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel-probe.c");
    let built = Command::new("cc")
        .args(["-static", "-O0", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running cc (gcc and the static libc, Debian's libc6-dev)");
    assert!(built.status.success(), "{}", text(&built.stderr));
    std::os::unix::fs::chown(&out, Some(1000), Some(1000)).unwrap();
    out
}

/// The raw `security.capability` xattr of `path`, if any.
fn file_caps(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = c"security.capability";
    let mut buf = [0u8; 64];
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn root_inside_makes_nothing_privileged_on_the_host() {
    let ws = workspace();
    probe_in(ws.path());
    let script = "sudo sh -c 'touch rootfile; cp /bin/dash suid; chmod 4755 suid; \
                  cp /bin/dash sgid; chgrp 0 sgid; chmod 2755 sgid; mkdir rootdir; chown 0:0 rootdir; \
                  cp /bin/true capped; /workspace/.probe setcap capped' && touch mine";
    let out = run_in(ws.path())
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    ok(&out);
    // Positive control: what `code` writes is the host user's.
    let mine = std::fs::metadata(ws.path().join("mine")).unwrap();
    assert_eq!((mine.uid(), mine.gid()), (1000, 1000));
    for f in ["rootfile", "suid", "sgid", "rootdir", "capped"] {
        let m = std::fs::symlink_metadata(ws.path().join(f)).unwrap();
        assert!(
            m.uid() >= 1_000_000 && m.gid() >= 1_000_000,
            "{f} is owned by {}:{} on the host, not by an unprivileged id",
            m.uid(),
            m.gid()
        );
    }
    let suid = std::fs::metadata(ws.path().join("suid")).unwrap();
    assert_eq!(suid.mode() & 0o4000, 0o4000, "the set-uid bit was made");
    // The capability is recorded for the container's own root, which is
    // nobody on the host: a v3 record whose root id is not 0.
    let caps = file_caps(&ws.path().join("capped")).expect("the capability was set");
    assert_eq!(caps.len(), 24, "a namespaced (v3) capability: {caps:?}");
    assert_eq!(caps[3], 3, "revision 3: {caps:?}");
    let rootid = u32::from_le_bytes([caps[20], caps[21], caps[22], caps[23]]);
    assert!(rootid >= 1_000_000, "capability root id {rootid}");
}

/// An Incus project with its own profiles (and the default project's
/// images), deleted with everything in it when dropped.
struct Project(String);

fn incus(args: &[&str]) -> Output {
    Command::new("incus").args(args).output().unwrap()
}

impl Project {
    fn new(tag: &str) -> Project {
        let name = format!("cci-test-{tag}-{}", std::process::id());
        let p = Project(name.clone());
        ok(&incus(&[
            "project",
            "create",
            &name,
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=true",
            "-c",
            "features.storage.volumes=false",
            "-c",
            "features.networks=false",
        ]));
        let pool = ["--project", &name];
        ok(&incus(
            &[
                &["profile", "device", "add", "default", "root", "disk"][..],
                &["path=/", "pool=default"],
                &pool,
            ]
            .concat(),
        ));
        ok(&incus(
            &[
                &["profile", "device", "add", "default", "eth0", "nic"][..],
                &["network=incusbr0", "name=eth0"],
                &pool,
            ]
            .concat(),
        ));
        p
    }

    /// Change its default profile once the daemon has deleted the
    /// containers of earlier runs (a profile change waits for nobody).
    fn profile(&self, args: &[&str]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !self.empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        ok(&incus(
            &[&["profile"][..], args, &["--project", &self.0]].concat(),
        ));
    }

    fn empty(&self) -> bool {
        let list = incus(&[
            "list",
            "--project",
            &self.0,
            "--format",
            "csv",
            "--columns",
            "n",
        ]);
        text(&list.stdout).trim().is_empty()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let p = self.0.as_str();
        let list = incus(&["list", "--project", p, "--format", "csv", "--columns", "n"]);
        for name in text(&list.stdout).lines() {
            incus(&["delete", "--force", "--project", p, name]);
        }
        incus(&["profile", "delete", "cci-sandbox", "--project", p]);
        incus(&["project", "delete", p]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incus_profiles_that_would_hand_over_the_host_are_refused() {
    let ws = workspace();
    let project = Project::new("vet");
    let run = || {
        run_in(ws.path())
            .args(["--project", &project.0, "--", "true"])
            .output()
            .unwrap()
    };
    // Positive control: a plain default profile runs.
    ok(&run());
    let cases: [(&[&str], &[&str], &str); 4] = [
        (
            &["set", "default", "security.privileged=true"],
            &["unset", "default", "security.privileged"],
            "security.privileged",
        ),
        (
            &["set", "default", "raw.lxc=lxc.apparmor.profile=unconfined"],
            &["unset", "default", "raw.lxc"],
            "raw.lxc",
        ),
        (
            &[
                "device",
                "add",
                "default",
                "home",
                "disk",
                "source=/root",
                "path=/mnt/h",
            ],
            &["device", "remove", "default", "home"],
            "devices.home",
        ),
        (
            &[
                "device",
                "add",
                "default",
                "sock",
                "proxy",
                "listen=tcp:127.0.0.1:1",
                "connect=tcp:127.0.0.1:2",
            ],
            &["device", "remove", "default", "sock"],
            "devices.sock",
        ),
    ];
    for (set, unset, key) in cases {
        project.profile(set);
        let out = run();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains("incus profile edit"),
            "{err}"
        );
        assert!(project.empty(), "nothing was made for {key}");
        project.profile(unset);
    }
    ok(&run());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_go_without_risky_kernel_interfaces_and_share_no_ids() {
    let ws = workspace();
    let probe = probe_in(ws.path());
    // Positive control: on the host the probe reaches every interface.
    let host = text(&Command::new(&probe).output().unwrap().stdout);
    assert!(!host.contains("ENOSYS"), "{host}");
    let script = "/workspace/.probe; sudo /workspace/.probe | sed 's/^/root /'; \
                  test -e /dev/incus && echo guest-api; grep -w 0 /proc/self/uid_map | head -1";
    let (a, b) = std::thread::scope(|s| {
        let probe = || {
            {
                let mut c = run_in(ws.path());
                c.args(["--", "sh", "-c", script]);
                c
            }
            .output()
            .unwrap()
        };
        let one = s.spawn(probe);
        let two = s.spawn(probe);
        (one.join().unwrap(), two.join().unwrap())
    });
    let (a, b) = (ok(&a), ok(&b));
    for name in [
        "io_uring",
        "bpf",
        "userfaultfd",
        "keyctl",
        "perf_event_open",
    ] {
        assert!(
            a.contains(&format!("\n{name} ENOSYS")) || a.starts_with(&format!("{name} ENOSYS")),
            "{a}"
        );
        assert!(a.contains(&format!("root {name} ENOSYS")), "{a}");
    }
    assert!(a.contains("getpid other"), "{a}");
    // Allowed back in by configuration, the same call reaches the kernel.
    let cfg = ws.path().join(".allow.toml");
    std::fs::write(&cfg, "[incus]\nallow_syscalls = [\"keyctl\"]\n").unwrap();
    let allowed = {
        let mut c = run_in(ws.path());
        c.env("CCI_CONFIG", &cfg).args(["--", "/workspace/.probe"]);
        c
    }
    .output()
    .unwrap();
    let allowed = ok(&allowed);
    assert!(
        allowed.contains("keyctl other") && allowed.contains("bpf ENOSYS"),
        "{allowed}"
    );
    assert!(!a.contains("guest-api"), "{a}");
    let root_map = |out: &str| {
        out.lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
    };
    assert_ne!(
        root_map(&a),
        root_map(&b),
        "two sandboxes share host ids:\n{a}\n{b}"
    );
    assert_ne!(root_map(&a).as_deref(), Some("0"));
}

/// The network mode recorded on container `name`.
async fn mode(name: &str) -> Option<String> {
    let (i, _) = client().await.instance(name).await.unwrap();
    i.config.get("user.cci.network").cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_container_is_tightened_on_request_and_never_loosened() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().into());
    let name = background(ws.path(), &["--persistent", "--network", "open"]);
    assert_eq!(mode(&name).await.as_deref(), Some("open"));
    ok(&cci().args(["shutdown", &name]).output().unwrap());

    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--slot", "1", "--network", "restricted"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), name, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("restricted (was open; tightened)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(mode(&name).await.as_deref(), Some("restricted"));
    // The restricted rules are in force: LAN ranges are dropped for its port.
    let (i, _) = client().await.instance(&name).await.unwrap();
    let port = cci::network::port_of(&i).unwrap();
    let rules = Command::new("nft")
        .args(["list", "chain", "bridge", "cci", &format!("out_{port}")])
        .output()
        .unwrap();
    assert!(
        text(&rules.stdout).contains("drop"),
        "{}",
        text(&rules.stdout)
    );
    ok(&cci().args(["shutdown", &name]).output().unwrap());

    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--slot", "1", "--network", "open"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("never loosened"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(mode(&name).await.as_deref(), Some("restricted"));
    assert_eq!(containers_of(ws.path()).await, [name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_to_files_the_host_runs_are_reported_when_the_session_ends() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().into());
    let git = ws.path().join(".git");
    std::fs::create_dir_all(git.join("hooks")).unwrap();
    std::fs::write(git.join("config"), "[core]\n\tbare = false\n").unwrap();
    for p in [git.clone(), git.join("hooks"), git.join("config")] {
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
    }
    // Positive control: ordinary work says nothing.
    let out = run_in(ws.path())
        .args(["--", "sh", "-c", "echo notes > notes.txt"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );

    // Git's paths are read-only inside; root can unmount them (its own
    // mounts), and this check is what still tells.
    let out = run_in(ws.path())
        .args(["--", "sudo", "sh", "-c"])
        .arg("umount /workspace/.git/config /workspace/.git/hooks && printf '\\tfsmonitor = sh -c id\\n' >> .git/config && printf '#!/bin/sh\\n' > .git/hooks/post-checkout")
        .output()
        .unwrap();
    ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains("WARNING"), "{err}");
    assert!(
        err.contains("changed .git/config") && err.contains("added .git/hooks/post-checkout"),
        "{err}"
    );

    let name = background(ws.path(), &[]);
    let made = sh_in(&name, false, "echo 'export X=1' > .envrc");
    ok(&made);
    let out = cci().args(["shutdown", &name]).output().unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains("added .envrc"),
        "{}",
        text(&out.stderr)
    );
}

/// A git repository owned by uid 1000 in an agent workspace, with a hook.
fn repo_workspace() -> tempfile::TempDir {
    let ws = agent_workspace();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(ws.path())
            .args(["-c", "safe.directory=*", "-c", "user.email=t@t"])
            .args(["-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    git(&["init", "-q"]);
    std::fs::write(ws.path().join("README"), "hello\n").unwrap();
    std::fs::write(ws.path().join(".envrc"), "export A=1\n").unwrap();
    std::fs::write(
        ws.path().join(".cci.toml"),
        "[workspace]\nprotected_paths = [\".envrc\"]\n",
    )
    .unwrap();
    git(&["add", "README"]);
    git(&["commit", "-qm", "first"]);
    std::fs::write(
        ws.path().join(".git/hooks/pre-commit"),
        "#!/bin/sh\nexit 0\n",
    )
    .unwrap();
    let out = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    ws
}

/// Every file under the protected paths with its content and mode, and the
/// names in `.git`.
fn protected_state(ws: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![
        ws.join(".git/hooks"),
        ws.join(".git/info"),
        ws.join(".git/config"),
        ws.join(".envrc"),
    ];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let data = if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.push(format!(
            "{} {:o} {}",
            p.display(),
            m.mode(),
            String::from_utf8_lossy(&data)
        ));
    }
    let mut names: Vec<String> = std::fs::read_dir(ws.join(".git"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != "index"
                && n != "COMMIT_EDITMSG"
                && n != "ORIG_HEAD"
                && n != "logs"
                && n != "objects"
                && n != "refs"
        })
        .collect();
    names.sort();
    out.push(names.join(" "));
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_git_paths_cannot_be_changed_from_inside() {
    let ws = repo_workspace();
    let before = protected_state(ws.path());
    // Each attempt runs as root inside; "WROTE" means it got through.
    let attempts = [
        (
            "create a hook",
            "echo 'touch /tmp/pwned' > .git/hooks/post-checkout",
        ),
        (
            "append to a hook",
            "echo 'touch /tmp/pwned' >> .git/hooks/pre-commit",
        ),
        (
            "unlink a hook",
            "rm -f .git/hooks/pre-commit && ! test -e .git/hooks/pre-commit",
        ),
        (
            "chmod a hook",
            "chmod 0777 .git/hooks/pre-commit && test \"$(stat -c %a .git/hooks/pre-commit)\" = 777",
        ),
        ("symlink a hook", "ln -s /bin/true .git/hooks/post-merge"),
        ("rename the hooks folder", "mv .git/hooks .git/hooks-old"),
        (
            "remove the hooks folder",
            "rm -rf .git/hooks && ! test -d .git/hooks",
        ),
        (
            "replace hooks with a link",
            "ln -sfn /tmp .git/hooks && test -L .git/hooks",
        ),
        ("replace the git folder", "mv .git .git-old"),
        (
            "append to config",
            "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' >> .git/config",
        ),
        (
            "git config fsmonitor",
            "git config core.fsmonitor 'touch /tmp/pwned'",
        ),
        ("git config hooksPath", "git config core.hooksPath /tmp"),
        ("rename config", "mv .git/config .git/config.old"),
        (
            "info attributes",
            "echo '* filter=x' > .git/info/attributes",
        ),
        ("configured path", "echo 'touch /tmp/pwned' >> .envrc"),
        ("rename configured path", "mv .envrc .envrc.old"),
    ];
    let mut script = String::from("cd /workspace; ");
    for (what, cmd) in attempts {
        script.push_str(&format!(
            "if ( {cmd} ) 2>/dev/null; then echo 'WROTE {what}'; fi; "
        ));
    }
    // Positive control: the agent (as code) still commits: objects, refs,
    // index.
    let commit = "sudo sh -c \"$0\"; git -c user.email=a@b -c user.name=agent commit -q --allow-empty -m inside && echo COMMITTED";
    let out = run_in(ws.path())
        .args(["--", "sh", "-c", commit, &script])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(said.contains("COMMITTED"), "{said}{}", text(&out.stderr));
    assert!(!said.contains("WROTE"), "{said}");
    assert_eq!(
        protected_state(ws.path()),
        before,
        "the host tree is unchanged"
    );
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );
    let log = Command::new("git")
        .arg("-C")
        .arg(ws.path())
        .args(["-c", "safe.directory=*", "log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(text(&log.stdout), "inside\nfirst\n");

    // Opted out: the same write lands, and the session-end check tells.
    let out = run_in(ws.path())
        .args([
            "--writable-git-hooks",
            "--",
            "sh",
            "-c",
            "echo '#!/bin/sh' > .git/hooks/post-checkout",
        ])
        .output()
        .unwrap();
    ok(&out);
    assert!(ws.path().join(".git/hooks/post-checkout").exists());
    assert!(
        text(&out.stderr).contains("added .git/hooks/post-checkout"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_container_whose_protected_path_became_a_link_does_not_start() {
    let ws = repo_workspace();
    let _s = Sessions(ws.path().into());
    let name = background(ws.path(), &["--persistent"]);
    ok(&cci().args(["shutdown", &name]).output().unwrap());
    // Between sessions the hooks folder is swapped for a link to a host
    // folder (as root inside can do after unmounting it).
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("id_ed25519"), "secret").unwrap();
    let hooks = ws.path().join(".git/hooks");
    std::fs::remove_dir_all(&hooks).unwrap();
    std::os::unix::fs::symlink(secret.path(), &hooks).unwrap();
    // Refused when planned, and (opted out of git's protection, so the plan
    // looks no further) when the kept container's own devices are checked.
    for extra in [&[][..], &["--writable-git-hooks"][..]] {
        let out = cci_in(ws.path(), "shell")
            .args(["--background", "--persistent"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("symbolic link"),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        client()
            .await
            .instance(&name)
            .await
            .unwrap()
            .0
            .status
            .as_str(),
        "Stopped"
    );
    // Positive control: with the folder back, it starts again.
    std::fs::remove_file(&hooks).unwrap();
    std::fs::create_dir(&hooks).unwrap();
    std::os::unix::fs::chown(&hooks, Some(1000), Some(1000)).unwrap();
    let again = background(ws.path(), &["--persistent"]);
    assert_eq!(again, name);
}

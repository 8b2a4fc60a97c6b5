//! Isolated git sessions against the real daemon: the repository goes in as
//! a clone (no host `.git` inside, no remotes, the host's uncommitted work
//! carried in, ignored files not), the session's commits come back into
//! `refs/cci/...`, and review and merge run on the host without running
//! anything the session wrote (canaries prove it).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::agent::{Sessions, cci_in, json, ok, sh_in, text};
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{agent_workspace, cci, containers_left, containers_of};

/// Host `git` in `ws` (the tests run as root in a folder owned by 1000).
fn git(ws: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(ws)
        .args(["-c", "safe.directory=*", "-c", "user.email=host@t"])
        // The canary hooks are for cci's git, not the test's own.
        .args(["-c", "core.hooksPath=/dev/null"])
        .args(["-c", "user.name=host"])
        .args(args)
        .output()
        .unwrap()
}

fn git_ok(ws: &Path, args: &[&str]) -> String {
    let out = git(ws, args);
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// An agent workspace that is a repository: README committed, a remote with
/// a credential in its URL, a host hook that would leave a canary, and the
/// canary path.
fn repo(tag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let ws = agent_workspace();
    let p = ws.path();
    git_ok(p, &["init", "-q", "-b", "main"]);
    std::fs::write(p.join("README"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(p.join(".gitignore"), "secret.env\n").unwrap();
    // The stand-in agent goes in with the repository.
    git_ok(p, &["add", "README", ".gitignore", ".fake-agent"]);
    git_ok(p, &["commit", "-qm", "first"]);
    git_ok(
        p,
        &[
            "remote",
            "add",
            "origin",
            "https://user:hunter2@git.example/x.git",
        ],
    );
    let canary = std::env::temp_dir().join(format!("cci-canary-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&canary);
    for hook in [
        "post-checkout",
        "post-merge",
        "reference-transaction",
        "pre-commit",
    ] {
        let h = p.join(".git/hooks").join(hook);
        std::fs::write(
            &h,
            format!("#!/bin/sh\necho {hook} >> '{}'\n", canary.display()),
        )
        .unwrap();
        std::fs::set_permissions(&h, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    (ws, canary)
}

/// A home for cci whose git configuration trusts the tests' folders (they
/// belong to uid 1000; the tests run as root) and names the user.
fn home() -> std::path::PathBuf {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let home = std::env::temp_dir().join(format!("cci-isolated-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            "[safe]\n\tdirectory = *\n[user]\n\tname = host\n\temail = host@t\n",
        )
        .unwrap();
        home
    })
    .clone()
}

fn run_isolated(ws: &Path, extra: &[&str], script: &str) -> Output {
    cci_in(ws, "run")
        .env("HOME", home())
        .arg("--isolated")
        .args(extra)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

/// `cci SUB -w WS ARGS`.
fn review(ws: &Path, sub: &str, args: &[&str]) -> Output {
    cci()
        .env("HOME", home())
        .arg(sub)
        .arg("-w")
        .arg(ws)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_run_works_on_a_clone_and_its_commits_come_back_for_review_and_merge() {
    let (ws, canary) = repo("run");
    let p = ws.path();
    let _s = Sessions(p.into());
    // Uncommitted host work: carried in. An ignored file: not.
    std::fs::write(
        p.join("README"),
        "one\ntwo\nthree\nfour (host, uncommitted)\n",
    )
    .unwrap();
    std::fs::write(p.join("notes.txt"), "untracked\n").unwrap();
    std::fs::write(p.join("secret.env"), "TOKEN=abc\n").unwrap();
    let head = git_ok(p, &["rev-parse", "HEAD"]);
    let host_config = std::fs::read(p.join(".git/config")).unwrap();

    // The agent looks around, then plants everything a host git might run
    // and commits a change (and leaves one uncommitted).
    let script = r#"set -e
echo "branch=$(git branch --show-current)"
echo "remotes=$(git remote | wc -l)"
echo "origin=$(git config --get remote.origin.url || echo none)"
test -e secret.env && echo "SECRET CARRIED" || echo "no secret"
cat notes.txt
grep -q 'four (host' README && echo "carried README"
git log --format='log: %s'
ls .git/hooks | grep -v sample | sed 's/^/hook: /' || true
git config core.fsmonitor "touch /tmp/fsmonitor-ran"
git config core.hooksPath /workspace/evil-hooks
mkdir -p evil-hooks
for h in post-checkout post-merge reference-transaction pre-commit post-rewrite; do
  printf '#!/bin/sh\ntouch /tmp/hook-ran\n' > evil-hooks/$h; chmod +x evil-hooks/$h
  cp evil-hooks/$h .git/hooks/$h
done
printf '* filter=evil diff=evil merge=evil\n' > .gitattributes
sed -i 's/two/TWO (agent)/' README
git add -A
git -c core.hooksPath=/dev/null commit -q -m 'agent: shout two'
echo "left uncommitted" > wip.txt
"#;
    let out = run_isolated(p, &[], script);
    let said = ok(&out);
    let err = text(&out.stderr);
    assert!(said.contains("branch=cci/"), "{said}");
    assert!(
        said.contains("remotes=0") && said.contains("origin=none"),
        "{said}"
    );
    assert!(
        said.contains("no secret") && !said.contains("SECRET"),
        "{said}"
    );
    assert!(
        said.contains("untracked") && said.contains("carried README"),
        "{said}"
    );
    assert!(
        said.contains("log: cci: uncommitted changes carried in from the host"),
        "{said}"
    );
    assert!(!said.contains("hook: "), "host hooks went in: {said}");
    assert!(!said.contains("hunter2"), "{said}");
    assert!(err.contains("carried"), "says what was carried: {err}");
    assert!(err.contains("cci diff"), "says how to review: {err}");
    assert_eq!(
        containers_left(p).await,
        Vec::<String>::new(),
        "the run's container goes"
    );

    // Nothing of the session's config came to the host, and the host's own
    // work is as it was.
    assert_eq!(std::fs::read(p.join(".git/config")).unwrap(), host_config);
    assert_eq!(git_ok(p, &["rev-parse", "HEAD"]), head);
    assert!(
        std::fs::read_to_string(p.join("README"))
            .unwrap()
            .contains("host, uncommitted")
    );

    // Review: three commits (the carry, the agent's, the uncommitted rest).
    let log = review(p, "log", &["--format", "json"]);
    let log = json(&log);
    let subjects: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "cci: uncommitted changes at the end of the session",
            "agent: shout two",
            "cci: uncommitted changes carried in from the host"
        ]
    );
    let diff = json(&review(p, "diff", &["--format", "json"]));
    let files: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in ["README", "notes.txt", "wip.txt", ".gitattributes"] {
        assert!(files.contains(&f), "{f} in {files:?}");
    }
    let patch = ok(&review(p, "diff", &[]));
    assert!(
        patch.contains("+one\n") || patch.contains("TWO (agent)"),
        "{patch}"
    );
    let listed = ok(&review(p, "files", &[]));
    assert!(
        listed.contains("wip.txt") && listed.contains("evil-hooks/"),
        "{listed}"
    );

    // Merge into a new branch: no checkout, the current branch untouched.
    let merged = ok(&review(p, "merge", &["--into", "review/agent"]));
    assert!(merged.contains("review/agent"), "{merged}");
    assert_eq!(git_ok(p, &["rev-parse", "HEAD"]), head);
    let readme = git_ok(p, &["show", "review/agent:README"]);
    assert!(readme.contains("TWO (agent)"), "{readme}");

    // Pick one commit only, into another new branch.
    let shout = log
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subject"] == "agent: shout two")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let picked = ok(&review(
        p,
        "merge",
        &["--select", &shout, "--into", "picked"],
    ));
    assert!(picked.contains("1 commit(s) picked"), "{picked}");
    assert!(git_ok(p, &["show", "picked:README"]).contains("TWO (agent)"));
    assert!(
        !git(p, &["show", "picked:wip.txt"]).status.success(),
        "only the picked commit"
    );

    // On a terminal, --select asks which (oldest first): the second.
    let (master, slave) = openpty(100, 30);
    let mut cmd = cci();
    cmd.env("HOME", home())
        .args(["merge", "--select", "--into", "asked", "-w"])
        .arg(p);
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let mut screen = Screen::new(&master);
    screen.expect("2  ");
    screen.expect("agent: shout two");
    screen.expect("commits to pick");
    let mut tty = std::fs::File::from(master.try_clone().unwrap());
    std::io::Write::write_all(&mut tty, b"2\n").unwrap();
    screen.expect("1 commit(s) picked");
    assert_eq!(wait_exit(&mut child, &mut screen).code(), Some(0));
    assert_eq!(
        git_ok(p, &["show", "asked:README"]),
        git_ok(p, &["show", "picked:README"])
    );

    // Merge into the checked-out branch once the host's own work is put
    // away: a fast-forward that updates the working tree.
    git_ok(p, &["checkout", "-q", "--", "README"]);
    std::fs::remove_file(p.join("notes.txt")).unwrap();
    let merged = ok(&review(p, "merge", &[]));
    assert!(merged.contains("working tree updated"), "{merged}");
    assert!(
        std::fs::read_to_string(p.join("README"))
            .unwrap()
            .contains("TWO (agent)")
    );
    assert!(p.join("wip.txt").exists());

    // Nothing the session wrote ran, nor did the host's own hooks.
    assert!(
        !canary.exists(),
        "{}",
        std::fs::read_to_string(&canary).unwrap_or_default()
    );
    assert!(!Path::new("/tmp/hook-ran").exists());
    assert!(!Path::new("/tmp/fsmonitor-ran").exists());
    assert_eq!(std::fs::read(p.join(".git/config")).unwrap(), host_config);

    // Discard: the session's refs go.
    let id = diff["session"].as_str().unwrap().to_string();
    ok(&review(p, "discard", &["--force", &id]));
    assert_eq!(git_ok(p, &["for-each-ref", "refs/cci/"]), "");
    let out = review(p, "log", &[&id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_merge_changes_nothing_and_loses_nothing() {
    let (ws, canary) = repo("conflict");
    let p = ws.path();
    let _s = Sessions(p.into());
    let out = run_isolated(
        p,
        &["--clean-only"],
        "sed -i 's/one/ONE (agent)/' README && git commit -qam 'agent: one'",
    );
    ok(&out);
    // Meanwhile the host changes the same line.
    std::fs::write(p.join("README"), "uno (host)\ntwo\nthree\n").unwrap();
    git_ok(p, &["commit", "-qam", "host: uno"]);
    let head = git_ok(p, &["rev-parse", "HEAD"]);
    let refs = git_ok(p, &["for-each-ref"]);
    let index = std::fs::read(p.join(".git/index")).unwrap();
    let out = review(p, "merge", &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("README"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(git_ok(p, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git_ok(p, &["for-each-ref"]),
        refs,
        "no ref changed, the session's kept"
    );
    assert_eq!(std::fs::read(p.join(".git/index")).unwrap(), index);
    assert_eq!(git_ok(p, &["status", "--porcelain"]), "");
    // Asked for: the conflict is left in git's usual state, and undone.
    let out = review(p, "merge", &["--leave-conflicts"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("git merge --abort"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(git_ok(p, &["status", "--porcelain"]), "UU README\n");
    assert!(
        std::fs::read_to_string(p.join("README"))
            .unwrap()
            .contains("<<<<<<<")
    );
    git_ok(p, &["merge", "--abort"]);
    assert_eq!(git_ok(p, &["rev-parse", "HEAD"]), head);
    assert_eq!(git_ok(p, &["status", "--porcelain"]), "");
    // Squashed into a new branch instead: fine.
    ok(&review(p, "merge", &["--squash", "--into", "agent-one"]));
    assert!(git_ok(p, &["show", "agent-one:README"]).contains("ONE (agent)"));
    // --auto-merge: merged into its branch as the run ends.
    let out = run_isolated(
        p,
        &["--auto-merge", "auto"],
        "echo z > z.txt && git add z.txt && git commit -qm z",
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("merged into auto"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(git_ok(p, &["show", "auto:z.txt"]), "z\n");
    assert_eq!(
        git_ok(p, &["rev-parse", "HEAD"]),
        head,
        "the checked-out branch stays"
    );
    assert!(!canary.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_start_isolated_says_why_and_starts_nothing() {
    // Not a repository.
    let ws = agent_workspace();
    let out = run_isolated(ws.path(), &[], "true");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without --isolated"),
        "{}",
        text(&out.stderr)
    );
    // Uncommitted work and --clean-only.
    let (ws, _) = repo("dirty");
    std::fs::write(ws.path().join("README"), "changed\n").unwrap();
    let out = run_isolated(ws.path(), &["--clean-only"], "true");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("README"),
        "{}",
        text(&out.stderr)
    );
    // A bad session branch name; a --repo that is no repository; a branch
    // option without isolation.
    let out = run_isolated(ws.path(), &["--session-branch", "-x"], "true");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run_isolated(ws.path(), &["--repo", "/tmp"], "true");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = cci_in(ws.path(), "run")
        .args(["--clean-only", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--isolated"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(containers_of(ws.path()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_shell_is_reviewed_while_it_runs_and_fetched_when_it_ends() {
    let (ws, _canary) = repo("shell");
    let p = ws.path();
    let _s = Sessions(p.into());
    let out = cci_in(p, "shell")
        .env("HOME", home())
        .args([
            "--background",
            "--isolated",
            "--session-branch",
            "agent/try",
        ])
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    // No host .git inside: the workspace is the container's own clone.
    let inside = sh_in(
        &name,
        false,
        "cd /workspace && git branch --show-current && findmnt -n /workspace || echo unmounted",
    );
    let said = ok(&inside);
    assert!(
        said.contains("agent/try") && said.contains("unmounted"),
        "{said}"
    );
    ok(&sh_in(
        &name,
        false,
        "cd /workspace && echo x > x.txt && git add x.txt && git commit -qm 'agent: x'",
    ));
    // Reviewed while the session runs: fetched first.
    let log = ok(&review(p, "log", &[&name]));
    assert!(log.contains("agent: x"), "{log}");
    ok(&sh_in(
        &name,
        false,
        "cd /workspace && echo y > y.txt && git add y.txt && git commit -qm 'agent: y'",
    ));
    // Ended: fetched before the container goes.
    ok(&cci()
        .env("HOME", home())
        .args(["kill", "--force", &name])
        .output()
        .unwrap());
    let log = ok(&review(p, "log", &[]));
    assert!(
        log.contains("agent: y") && log.contains("agent: x"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_repositories_go_in_side_by_side_and_come_back_each_to_its_own() {
    // The workspace is a plain folder holding two repositories.
    let ws = agent_workspace();
    let p = ws.path();
    let _s = Sessions(p.into());
    for name in ["api", "web"] {
        let r = p.join(name);
        std::fs::create_dir(&r).unwrap();
        git_ok(&r, &["init", "-q", "-b", "main"]);
        std::fs::write(r.join("README"), format!("{name}\n")).unwrap();
        git_ok(&r, &["add", "README"]);
        git_ok(&r, &["commit", "-qm", &format!("{name}: first")]);
    }
    let out = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = "set -e; for r in api web; do cd /workspace/$r; \
        test \"$(git branch --show-current)\" = cci/1; echo \"$r changed\" >> README; \
        git commit -qam \"agent: $r\"; done; test ! -e /workspace/.fake-agent && echo only-repos";
    let out = cci_in(p, "run")
        .env("HOME", home())
        .args(["--slot", "1", "--repos-in"])
        .arg(p)
        .args(["--format", "json", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(v["stdout"].as_str().unwrap().contains("only-repos"), "{v}");
    let sessions = v["git_sessions"].as_array().unwrap();
    let folders: Vec<&str> = sessions
        .iter()
        .map(|s| s["folder"].as_str().unwrap())
        .collect();
    assert_eq!(folders, ["/workspace/api", "/workspace/web"]);
    assert!(sessions.iter().all(|s| s["new_commits"] == 1), "{v}");
    let group = sessions[0]["id"].as_str().unwrap().to_string();

    // One command reviews and merges both, each into its own repository.
    let log = json(&review(p, "log", &[&group, "--format", "json"]));
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
    ok(&review(p, "merge", &[&group, "--into", "agent"]));
    for name in ["api", "web"] {
        let readme = git_ok(&p.join(name), &["show", "agent:README"]);
        assert_eq!(readme, format!("{name}\n{name} changed\n"));
        assert_eq!(
            git_ok(&p.join(name), &["branch", "--show-current"]),
            "main\n"
        );
    }
    // `[git] repos` and `[[repos]]` in the workspace's .cci.toml: ignored
    // until trusted, then the same session.
    std::fs::write(
        p.join(".cci.toml"),
        "[git]\nrepos = [\"web\"]\n[[repos]]\npath = \"api\"\n",
    )
    .unwrap();
    let ls = "ls -A /workspace";
    let out = cci_in(p, "run")
        .env("HOME", home())
        .args(["--", "sh", "-c", ls])
        .output()
        .unwrap();
    assert!(
        ok(&out).contains(".fake-agent"),
        "the folder is mounted: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("git.repos"),
        "{}",
        text(&out.stderr)
    );
    ok(&cci()
        .env("HOME", home())
        .arg("trust")
        .arg("-w")
        .arg(p)
        .output()
        .unwrap());
    let out = cci_in(p, "run")
        .env("HOME", home())
        .args(["--", "sh", "-c", ls])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "api\nweb\n", "{}", text(&out.stderr));
    // One repository's own id names only that one.
    let second = sessions[1]["id"].as_str().unwrap();
    let log = json(&review(p, "log", &[second, "--format", "json"]));
    assert_eq!(log[0]["subject"], "agent: web", "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_that_cannot_come_back_stay_in_a_kept_container_and_come_later() {
    let (ws, _canary) = repo("kept");
    let p = ws.path();
    let _s = Sessions(p.into());
    // A bound the session's bundle exceeds (as a full disk would stop it).
    let out = cci_in(p, "run")
        .env("HOME", home())
        .env("CCI_SESSION_MAX_BYTES", "1024")
        .args(["--isolated", "--clean-only", "--", "sh", "-c"])
        .arg("head -c 20000 /dev/urandom > big && git add big && git commit -qm big")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("could not be brought to the host") && err.contains("kept stopped"),
        "{err}"
    );
    let kept = containers_of(p).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        git_ok(p, &["for-each-ref", "refs/cci/"]),
        "",
        "nothing half-received"
    );
    // Started again, reviewing fetches them.
    ok(&cci()
        .env("HOME", home())
        .args(["container", "start", &kept[0]])
        .output()
        .unwrap());
    let log = ok(&review(p, "log", &[&kept[0]]));
    assert!(log.contains("big"), "{log}");
}

/// The seed mirror of `ws`'s repository in the tests' home (the one that
/// holds `commit`).
fn mirror_of(commit: &str) -> std::path::PathBuf {
    let root = home().join(".cci/git-mirrors");
    std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|m| {
            m.extension().is_some_and(|x| x == "git")
                && Command::new("git")
                    .arg(format!("--git-dir={}", m.display()))
                    .args(["-c", "safe.directory=*", "cat-file", "-e"])
                    .arg(format!("{commit}^{{commit}}"))
                    .status()
                    .unwrap()
                    .success()
        })
        .unwrap_or_else(|| panic!("no mirror in {} holds {commit}", root.display()))
}

/// Each pack of a mirror and its size.
fn packs(mirror: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(mirror.join("objects/pack"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_session_brings_only_what_changed_and_cannot_change_what_the_next_gets() {
    let (ws, _canary) = repo("mirror");
    let p = ws.path();
    let _s = Sessions(p.into());
    // 1.7 MB of random hex (about 1 MB packed).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let big: String = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}\n")
        })
        .collect();
    std::fs::write(p.join("big.txt"), big).unwrap();
    git_ok(p, &["add", "big.txt"]);
    git_ok(p, &["commit", "-qm", "big"]);
    let first = git_ok(p, &["rev-parse", "HEAD"]).trim().to_string();
    // The first session: the agent, root inside, tries to change what the
    // next session is given. Positive control: it still reads the
    // repository and commits to its own clone.
    let attack = r#"m=/var/lib/cci-git/0
test -f "$m/HEAD" || echo NO-MIRROR
grep -q "$m/objects" /workspace/.git/objects/info/alternates && echo BORROWS
wc -l < /workspace/big.txt
for f in HEAD objects/evil refs/heads/main config; do
  if ( echo x > "$m/$f" ) 2>/dev/null; then echo "WROTE $f"; fi
done
for p in "$m"/objects/pack/*.pack; do
  if ( printf x | dd of="$p" bs=1 seek=100 conv=notrunc ) 2>/dev/null; then echo "WROTE pack"; fi
done
if mount -o remount,rw "$m" 2>/dev/null; then echo REMOUNTED; fi
if mount -o remount,rw,bind "$m" 2>/dev/null && ( echo x > "$m/evil" ) 2>/dev/null; then echo REMOUNTED-BIND; fi"#;
    let out = run_isolated(
        p,
        &["--clean-only"],
        &format!(
            "sudo sh -c '{}'; git commit -q --allow-empty -m inside && echo COMMITTED",
            attack.replace('\'', "'\\''")
        ),
    );
    let said = ok(&out);
    assert!(!said.contains("NO-MIRROR"), "{said}");
    assert!(
        said.contains("BORROWS"),
        "the clone borrows the mirror: {said}"
    );
    assert!(said.contains("100000"), "{said}");
    assert!(said.contains("COMMITTED"), "positive control: {said}");
    for bad in ["WROTE", "REMOUNTED"] {
        assert!(!said.contains(bad), "{said}");
    }
    let mirror = mirror_of(&first);
    let after_first = packs(&mirror);
    let whole: u64 = after_first.values().sum();
    assert!(
        whole > 500_000,
        "the first session brought it all: {after_first:?}"
    );
    // A small change on the host: the second session brings only it.
    std::fs::write(p.join("small.txt"), "a small change\n").unwrap();
    git_ok(p, &["add", "small.txt"]);
    git_ok(p, &["commit", "-qm", "small"]);
    let out = run_isolated(
        p,
        &["--clean-only"],
        "cat /workspace/small.txt; wc -l < /workspace/big.txt; git log --format=%s | head -3",
    );
    let said = ok(&out);
    assert!(
        said.contains("a small change") && said.contains("100000"),
        "{said}"
    );
    let after_second = packs(&mirror);
    for (name, size) in &after_first {
        assert_eq!(
            after_second.get(name),
            Some(size),
            "packs are never rewritten"
        );
    }
    let new: Vec<u64> = after_second
        .iter()
        .filter(|(n, _)| !after_first.contains_key(*n))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(new.len(), 1, "{after_second:?}");
    assert!(new[0] < 4_096, "only what changed: {new:?} bytes");
    eprintln!("seed bytes: first {whole}, second {}", new[0]);
    // The mirror is cci's: the host user owns it and nothing of the agent's
    // is in it.
    let refs = Command::new("git")
        .arg(format!("--git-dir={}", mirror.display()))
        .args([
            "-c",
            "safe.directory=*",
            "for-each-ref",
            "--format=%(refname)",
        ])
        .output()
        .unwrap();
    let refs = text(&refs.stdout);
    assert!(
        refs.lines().all(|r| r.starts_with("refs/heads/cci-seed-")),
        "{refs}"
    );
    // Not used by any container and not recently: removable; used
    // recently: kept.
    let dry = ok(&cci()
        .env("HOME", home())
        .args(["clean", "--git-mirrors", "--dry-run"])
        .output()
        .unwrap());
    assert!(
        !dry.contains(&*mirror.to_string_lossy()),
        "in use this hour: {dry}"
    );
}

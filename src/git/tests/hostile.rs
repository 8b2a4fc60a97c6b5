//! The hostile session: every way the agent could try to make host git run
//! its code, with canary files that any such run would create.
//!
//! The session clone plants `core.fsmonitor`, `core.hooksPath`, hooks
//! (post-checkout, post-merge, pre-commit, reference-transaction,
//! post-rewrite ...), and filter/diff/merge drivers in its own config; its
//! tree carries `.gitattributes` with `* filter=evil diff=evil merge=evil`, a
//! `.gitmodules` with an `ext::` URL and a gitlink. The host repository gets
//! hooks and a `core.fsmonitor` too (as an agent could plant in mounted
//! mode): cci's runner must not run those either.

use super::{World, programs, session_git};
use crate::git::{GitError, MergeKind, MergeMode};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const HOOKS: &[&str] = &[
    "post-checkout",
    "post-merge",
    "pre-commit",
    "commit-msg",
    "reference-transaction",
    "post-rewrite",
    "pre-auto-gc",
    "post-index-change",
    "fsmonitor-watchman",
];

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Hooks in `dir` that leave `<canary>/<prefix>-<hook>`.
fn plant_hooks(w: &World, dir: &Path, prefix: &str) {
    for h in HOOKS {
        let c = w.canary.join(format!("{prefix}-{h}"));
        script(&dir.join(h), &format!("touch '{}'", c.display()));
    }
}

/// `git config` in `repo` (no hooks, no fsmonitor for the test's own calls).
fn config(w: &World, program: &Path, repo: &Path, kv: &[(&str, String)]) {
    for (k, v) in kv {
        w.git_with(program, repo, &["config", k, v]);
    }
}

/// Drivers named `evil` whose every use leaves a canary.
fn evil_drivers(evil: &Path, who: &str) -> Vec<(&'static str, String)> {
    let e = evil.display();
    vec![
        ("filter.evil.clean", format!("{e} {who}-filter-clean")),
        ("filter.evil.smudge", format!("{e} {who}-filter-smudge")),
        ("diff.evil.command", format!("{e} {who}-diff-command")),
        ("diff.evil.textconv", format!("{e} {who}-textconv")),
        ("merge.evil.driver", format!("{e} {who}-merge-driver %A")),
    ]
}

/// Host git of the test itself, with hooks and fsmonitor off.
fn hgit(w: &World, args: &[&str]) -> String {
    let mut a = vec![
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
    ];
    a.extend_from_slice(args);
    w.git(&w.host, &a)
}

fn hostile_round(program: &Path, host_defines_drivers: bool) {
    let w = World::with_program(program);
    let sg = session_git();
    let evil = w.tmp.path().join("evil.sh");
    // Leaves a canary named after its first argument; passes data through.
    script(
        &evil,
        &format!("touch '{}'/\"$1\"\ncat", w.canary.display()),
    );
    let repo = w.repo();
    let base = w.head();
    let s = w.clone_session(&repo, &base, "session");

    // The session's tree.
    w.write(&s, ".gitattributes", "* filter=evil diff=evil merge=evil\n");
    let ext = format!("ext::sh -c touch% {}/ext-url", w.canary.display());
    w.write(
        &s,
        ".gitmodules",
        &format!("[submodule \"sub\"]\n\tpath = sub\n\turl = {ext}\n"),
    );
    w.write(&s, "a.txt", "EVIL\ntwo\nthree\n");
    w.write(&s, "hooks/post-checkout", "#!/bin/sh\ntouch /tmp/never\n");
    w.git_with(&sg, &s, &["add", "-A"]);
    w.git_with(
        &sg,
        &s,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{base},sub"),
        ],
    );
    w.git_with(
        &sg,
        &s,
        &[
            "-c",
            "user.name=Agent\x1b[31m",
            "commit",
            "-q",
            "-m",
            "evil one",
        ],
    );
    w.write(&s, "dir/b.txt", "evil bee\n");
    w.git_with(&sg, &s, &["add", "-A"]);
    w.git_with(&sg, &s, &["commit", "-q", "-m", "evil two"]);
    let tip = w.git_with(&sg, &s, &["rev-parse", "HEAD"]);

    // The session's own configuration and hooks (never sent, never used).
    plant_hooks(&w, &s.join(".git/hooks"), "session-hook");
    plant_hooks(&w, &w.tmp.path().join("session-hooks"), "session-hookspath");
    let mut kv = evil_drivers(&evil, "session");
    kv.push((
        "core.fsmonitor",
        format!("{} session-fsmonitor", evil.display()),
    ));
    kv.push((
        "core.hooksPath",
        w.tmp.path().join("session-hooks").display().to_string(),
    ));
    config(&w, &sg, &s, &kv);
    let bundle = w.session_bundle(&s, &base, "evil.bundle");

    // The host repository's own hooks and fsmonitor (as planted in mounted
    // mode), and in the user's ~/.gitconfig the drivers when asked.
    plant_hooks(&w, &w.host.join(".git/hooks"), "host-hook");
    config(
        &w,
        &w.program,
        &w.host,
        &[(
            "core.fsmonitor",
            format!("{} host-fsmonitor", evil.display()),
        )],
    );
    if host_defines_drivers {
        for (k, v) in evil_drivers(&evil, "user") {
            w.git(&w.home, &["config", "--global", k, &v]);
        }
    }
    for e in std::fs::read_dir(&w.canary).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let clean = |step: &str| assert_eq!(w.canaries(), Vec::<String>::new(), "after {step}");

    // Starting a session from the host: snapshot with carried changes and
    // the bundle (host hooks such as post-index-change stay off).
    w.write(&w.host, "carried.txt", "carried\n");
    let snap = repo.snapshot(true).unwrap();
    assert!(snap.carried);
    repo.bundle_to(
        &snap.start,
        "cci/2",
        &[],
        &w.tmp.path().join("start.bundle"),
    )
    .unwrap();
    std::fs::remove_file(w.host.join("carried.txt")).unwrap();
    clean("snapshot and bundle");

    let got = repo.receive("s1", &bundle, "cci/1").unwrap();
    assert_eq!(got.tip, tip);
    clean("receive");
    let log = repo.log(&got.session_ref, &base).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].author_name, "Agent\x1b[31m");
    clean("log");
    let d = repo.diff(&got.session_ref, &base, false).unwrap();
    assert!(d.text.contains("+EVIL"), "{}", d.text);
    repo.diff(&got.session_ref, &base, true).unwrap();
    clean("diff");
    repo.files(&got.session_ref, "", true).unwrap();
    clean("files");
    let out = repo
        .merge(&got.session_ref, &base, Some("sq"), MergeMode::Squash)
        .unwrap();
    assert_eq!(out.kind, MergeKind::Squash);
    clean("squash --into");
    let out = repo
        .merge(
            &got.session_ref,
            &base,
            Some("picked"),
            MergeMode::Select(vec![log[0].id.clone(), log[1].id.clone()]),
        )
        .unwrap();
    assert_eq!(out.kind, MergeKind::Picked(2));
    // The agent's name keeps its text but loses control characters.
    assert_eq!(
        hgit(&w, &["log", "-1", "--format=%an", "picked~1"]),
        "Agent[31m"
    );
    clean("select --into");
    // Conflicts, into another branch and into the checked-out one.
    hgit(&w, &["branch", "conf", &base]);
    w.write(&w.host, "a.txt", "host\ntwo\nthree\n");
    hgit(&w, &["commit", "-q", "-am", "host change"]);
    hgit(&w, &["branch", "conf2"]);
    for into in [None, Some("conf2")] {
        let e = repo
            .merge(&got.session_ref, &base, into, MergeMode::Merge)
            .unwrap_err();
        assert!(matches!(e, GitError::Conflict { .. }), "{e}");
    }
    clean("conflict");
    hgit(&w, &["reset", "-q", "--hard", &base]);
    let out = repo
        .merge(&got.session_ref, &base, Some("conf"), MergeMode::Merge)
        .unwrap();
    assert_eq!(out.kind, MergeKind::FastForward);
    clean("merge --into");
    // Into the checked-out branch: the working tree is written.
    let out = repo
        .merge(&got.session_ref, &base, None, MergeMode::Merge)
        .unwrap();
    assert!(out.worktree_updated);
    assert_eq!(
        std::fs::read_to_string(w.host.join("a.txt")).unwrap(),
        "EVIL\ntwo\nthree\n"
    );
    let ran = w.canaries();
    if host_defines_drivers {
        // The session's .gitattributes routes the written files through the
        // USER's own `filter.evil` driver: the user's program, run as any
        // `git pull` would (smudge to write the files, clean when git
        // re-reads racily clean files). Nothing else: no hook, no
        // fsmonitor, no diff or merge driver.
        assert!(ran.contains(&"user-filter-smudge".to_string()), "{ran:?}");
        assert!(ran.iter().all(|c| c.starts_with("user-filter-")), "{ran:?}");
    } else {
        assert_eq!(
            ran,
            Vec::<String>::new(),
            "merge into the checked-out branch"
        );
    }
    for e in std::fs::read_dir(&w.canary).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    repo.discard("s1").unwrap();
    clean("discard");
    assert!(!Path::new("/tmp/never").exists());

    // Positive controls: plain git, without cci's runner, does run them.
    w.git(&w.host, &["status", "--porcelain"]);
    w.git(&w.host, &["checkout", "-q", "-b", "control"]);
    w.git(&w.host, &["diff", &base, "HEAD"]);
    let ran = w.canaries();
    for c in [
        "host-fsmonitor",
        "host-hook-post-checkout",
        "host-hook-reference-transaction",
    ] {
        assert!(ran.contains(&c.to_string()), "{c} not in {ran:?}");
    }
    assert_eq!(
        ran.contains(&"user-diff-command".to_string()),
        host_defines_drivers,
        "{ran:?}"
    );
}

#[test]
fn nothing_the_session_wrote_runs_on_the_host() {
    for p in programs() {
        hostile_round(&p, false);
    }
}

#[test]
fn only_the_users_own_filter_runs_and_only_when_writing_the_worktree() {
    for p in programs() {
        hostile_round(&p, true);
    }
}

#[test]
fn a_tree_entry_named_dot_git_is_refused_at_receive() {
    for p in programs() {
        dot_git_round(&p);
    }
}

fn dot_git_round(program: &Path) {
    let w = World::with_program(program);
    let sg = session_git();
    let repo = w.repo();
    let base = w.head();
    let s = w.clone_session(&repo, &base, "session");
    // A tree holding `.git/hooks/post-checkout`, made by plumbing.
    w.write(&s, "x", "#!/bin/sh\ntouch /tmp/never\n");
    let blob = w.git_with(&sg, &s, &["hash-object", "-w", "x"]);
    let run = |input: String| {
        let out = std::process::Command::new(&sg)
            .current_dir(&s)
            .args(["mktree"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(input.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let h = run(format!("100755 blob {blob}\tpost-checkout\n"));
    let g = run(format!("040000 tree {h}\thooks\n"));
    let top = run(format!("040000 tree {g}\t.git\n"));
    let c = w.git_with(&sg, &s, &["commit-tree", &top, "-p", &base, "-m", "dotgit"]);
    w.git_with(&sg, &s, &["update-ref", "refs/heads/cci/1", &c]);
    let b = w.session_bundle(&s, &base, "dotgit.bundle");
    let e = repo.receive("s1", &b, "cci/1").unwrap_err();
    assert!(
        e.to_string().contains("dotgit") || e.to_string().contains(".git"),
        "{e}"
    );
    assert!(repo.resolve_commit("refs/cci/s1/cci/1").unwrap().is_none());
}

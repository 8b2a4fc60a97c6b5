//! Snapshot, bundle, receive, review and discard, on every git version
//! available.

use super::{World, programs, session_git};
use crate::git::{GitError, names};

#[test]
fn carry_takes_tracked_staged_and_untracked_changes_but_not_ignored_ones() {
    for p in programs() {
        let w = World::with_program(&p);
        w.write(&w.host, "a.txt", "one\nTWO\nthree\n"); // tracked change
        w.write(&w.host, "staged.txt", "staged\n");
        w.git(&w.host, &["add", "staged.txt"]); // staged new file
        w.write(&w.host, "new/untracked.txt", "new\n"); // untracked
        w.write(&w.host, "debug.log", "ignored\n"); // ignored
        std::fs::remove_file(w.host.join("c.txt")).unwrap(); // deleted
        let before = w.host_state();
        let repo = w.repo();
        let snap = repo.snapshot(true).unwrap();
        assert_eq!(w.host_state(), before, "index or worktree touched");
        assert!(snap.carried);
        assert_eq!(snap.base, w.head());
        let mut paths = snap.paths.clone();
        paths.sort();
        assert_eq!(paths, ["a.txt", "c.txt", "new/untracked.txt", "staged.txt"]);
        let msg = w.git(&w.host, &["log", "-1", "--format=%s%n%P", &snap.start]);
        assert_eq!(
            msg,
            format!(
                "cci: uncommitted changes carried in from the host\n{}",
                snap.base
            )
        );
        let files = w.git(&w.host, &["ls-tree", "-r", "--name-only", &snap.start]);
        assert!(
            !files.contains("debug.log") && !files.contains("c.txt"),
            "{files}"
        );
        assert_eq!(
            w.git(&w.host, &["show", &format!("{}:a.txt", snap.start)]),
            "one\nTWO\nthree"
        );
        // No ref, no leftover file in .git.
        assert!(!w.git(&w.host, &["for-each-ref"]).contains("cci"));
        let leftovers: Vec<_> = std::fs::read_dir(w.host.join(".git"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("cci")
            })
            .collect();
        assert!(leftovers.is_empty());
        // The session starts from it: the container's git clones the bundle.
        let s = w.clone_session(&repo, &snap.start, "session");
        assert_eq!(
            std::fs::read_to_string(s.join("a.txt")).unwrap(),
            "one\nTWO\nthree\n"
        );
        assert!(s.join("new/untracked.txt").exists() && !s.join("debug.log").exists());
    }
}

#[test]
fn clean_only_refuses_changes_and_a_clean_tree_is_not_carried() {
    let w = World::new();
    let repo = w.repo();
    let snap = repo.snapshot(false).unwrap();
    assert!(!snap.carried && snap.start == snap.base && snap.paths.is_empty());
    // Ignored files alone are no change.
    w.write(&w.host, "x.log", "ignored\n");
    assert!(!repo.snapshot(true).unwrap().carried);
    w.write(&w.host, "untracked.txt", "u\n");
    w.write(&w.host, "dir/b.txt", "changed\n");
    match repo.snapshot(false).unwrap_err() {
        GitError::Dirty { paths } => {
            assert_eq!(paths, ["dir/b.txt", "untracked.txt"]);
        }
        e => panic!("{e}"),
    }
    // An empty repository has nothing to start from.
    let empty = w.tmp.path().join("empty");
    w.git(w.tmp.path(), &["init", "-q", empty.to_str().unwrap()]);
    let e = crate::git::Repo::discover_with(w.runner(), &empty)
        .unwrap()
        .snapshot(true);
    assert!(matches!(e, Err(GitError::NoCommits)));
}

#[test]
fn receive_review_and_discard() {
    for p in programs() {
        let w = World::with_program(&p);
        let repo = w.repo();
        let base = w.head();
        let s = w.clone_session(&repo, &base, "session");
        let sg = session_git();
        w.write(&s, "a.txt", "one\ntwo\nthree\nfour\n");
        w.write(&s, "new dir/esc\x1b[31m.txt", "x\n");
        std::fs::remove_file(s.join("c.txt")).unwrap();
        w.git_with(&sg, &s, &["add", "-A"]);
        w.git_with(
            &sg,
            &s,
            &["commit", "-q", "-m", "first line\nsame paragraph\n\nbody"],
        );
        w.write(&s, "bin.dat", "\0\x01\x02");
        w.git_with(&sg, &s, &["add", "-A"]);
        w.git_with(&sg, &s, &["commit", "-q", "-m", "subject \x1b]0;title\x07"]);
        let b = w.session_bundle(&s, &base, "out.bundle");
        let got = repo.receive("s1", &b, "cci/1").unwrap();
        assert_eq!(got.session_ref, "refs/cci/s1/cci/1");
        assert_eq!(got.tip, w.git_with(&sg, &s, &["rev-parse", "HEAD"]));
        assert_eq!(
            (got.new_commits, got.previous.clone(), got.rewritten),
            (2, None, false)
        );
        // No FETCH_HEAD, no tags, nothing else.
        assert!(!w.host.join(".git/FETCH_HEAD").exists());
        let refs = w.git(&w.host, &["for-each-ref", "--format=%(refname)"]);
        assert_eq!(refs, "refs/cci/s1/cci/1\nrefs/heads/main");

        let log = repo.log(&got.session_ref, &base).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].subject, "subject \x1b]0;title\x07");
        assert_eq!(log[1].subject, "first line same paragraph");
        assert_eq!(log[1].parents, std::slice::from_ref(&base));
        assert_eq!(log[1].author_name, "Host User");
        assert!(log[0].date_utc().starts_with("20"));
        assert_eq!(
            crate::git::printable(&log[0].subject),
            "subject \\u{1b}]0;title\\u{7}"
        );

        let d = repo.diff(&got.session_ref, &base, false).unwrap();
        let summary: Vec<_> = d
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.status, f.added, f.deleted))
            .collect();
        assert_eq!(
            summary,
            [
                ("a.txt", 'M', Some(1), Some(0)),
                ("bin.dat", 'A', None, None),
                ("c.txt", 'D', Some(0), Some(1)),
                ("new dir/esc\x1b[31m.txt", 'A', Some(1), Some(0)),
            ]
        );
        assert!(d.text.contains("+four"), "{}", d.text);
        let st = repo.diff(&got.session_ref, &base, true).unwrap();
        assert!(st.text.contains("files changed"), "{}", st.text);

        let top = repo.files(&got.session_ref, "", false).unwrap();
        let names: Vec<_> = top.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, [".gitignore", "a.txt", "bin.dat", "dir", "new dir"]);
        assert_eq!(top[1].size, Some(19));
        assert_eq!(top[3].kind, "tree");
        let sub = repo.files(&got.session_ref, "dir/", false).unwrap();
        assert_eq!(sub[0].path, "b.txt");
        assert_eq!(repo.files(&got.session_ref, "", true).unwrap().len(), 5);

        // Receiving the same bundle again: nothing new.
        let again = repo.receive("s1", &b, "cci/1").unwrap();
        assert_eq!(
            (again.new_commits, again.previous),
            (0, Some(got.tip.clone()))
        );

        assert_eq!(repo.discard("s1").unwrap(), ["refs/cci/s1/cci/1"]);
        assert_eq!(
            w.git(&w.host, &["for-each-ref", "--format=%(refname)"]),
            "refs/heads/main"
        );
        assert!(repo.discard("s1").unwrap().is_empty());
    }
}

#[test]
fn receive_rejects_wrong_refs_missing_prerequisites_and_bad_names() {
    let w = World::new();
    let repo = w.repo();
    let base = w.head();
    let s = w.clone_session(&repo, &base, "session");
    let sg = session_git();
    w.write(&s, "x.txt", "x\n");
    w.git_with(&sg, &s, &["add", "-A"]);
    w.git_with(&sg, &s, &["commit", "-q", "-m", "x"]);
    let tmp = w.tmp.path();
    let mk = |name: &str, revs: &[&str]| {
        let out = tmp.join(name);
        let mut a = vec!["bundle", "create", "-q", out.to_str().unwrap()];
        a.extend_from_slice(revs);
        w.git_with(&sg, &s, &a);
        out
    };
    let refs_before = w.git(&w.host, &["for-each-ref"]);
    // Another ref besides the branch, or only another ref.
    w.git_with(&sg, &s, &["branch", "other"]);
    w.git_with(&sg, &s, &["tag", "t1"]);
    let two = mk(
        "two.bundle",
        &["refs/heads/cci/1", "refs/heads/other", &format!("^{base}")],
    );
    let e = repo.receive("s1", &two, "cci/1").unwrap_err();
    assert!(
        e.to_string().contains("expected only refs/heads/cci/1"),
        "{e}"
    );
    let tag = mk("tag.bundle", &["refs/tags/t1", &format!("^{base}")]);
    assert!(matches!(
        repo.receive("s1", &tag, "cci/1"),
        Err(GitError::BadBundle { .. })
    ));
    let wrong = mk("wrong.bundle", &["refs/heads/other", &format!("^{base}")]);
    assert!(repo.receive("s1", &wrong, "cci/1").is_err());
    // Not a bundle at all.
    let junk = tmp.join("junk.bundle");
    std::fs::write(&junk, "#!/bin/sh\ntouch canary\n").unwrap();
    assert!(matches!(
        repo.receive("s1", &junk, "cci/1"),
        Err(GitError::BadBundle { .. })
    ));
    // Prerequisites the host lacks: a commit that only the session has.
    w.write(&s, "y.txt", "y\n");
    w.git_with(&sg, &s, &["add", "-A"]);
    w.git_with(&sg, &s, &["commit", "-q", "-m", "y"]);
    let thin = mk("thin.bundle", &["refs/heads/cci/1", "^HEAD~1"]);
    match repo.receive("s1", &thin, "cci/1").unwrap_err() {
        GitError::MissingPrerequisites { commits } => {
            let parent = w.git_with(&sg, &s, &["rev-parse", "HEAD~1"]);
            assert_eq!(commits, [parent]);
        }
        e => panic!("{e}"),
    }
    // Bad branch names and session ids never reach git.
    let good = mk("good.bundle", &["refs/heads/cci/1", &format!("^{base}")]);
    for bad in [
        "-evil",
        "a..b",
        "refs/heads/x",
        "x\x1b[2J",
        "x\ny",
        "--upload-pack=touch /tmp/x",
    ] {
        assert!(
            matches!(
                repo.receive("s1", &good, bad),
                Err(GitError::InvalidBranch { .. })
            ),
            "{bad:?}"
        );
    }
    for bad in ["-x", "../x", "a/b", ""] {
        assert!(matches!(
            repo.receive(bad, &good, "cci/1"),
            Err(GitError::InvalidSessionId { .. })
        ));
    }
    assert_eq!(w.git(&w.host, &["for-each-ref"]), refs_before);
    assert!(repo.receive("s1", &good, "cci/1").is_ok());
    assert!(names::check_branch("cci/1").is_ok());
}

#[test]
fn a_second_session_bundle_carries_only_what_is_new() {
    let w = World::new();
    // Some weight in the first session's history.
    for i in 0..20 {
        let body: String = (0..400)
            .map(|j| format!("line {i} {j} {}\n", i * j))
            .collect();
        w.write(&w.host, &format!("big/f{i}.txt"), &body);
    }
    let first = w.commit(&w.host, "big");
    let repo = w.repo();
    let full = repo
        .bundle_to(&first, "cci/1", &[], &w.tmp.path().join("full.bundle"))
        .unwrap();
    w.write(&w.host, "small.txt", "small\n");
    let second = w.commit(&w.host, "small");
    let inc = repo
        .bundle_to(
            &second,
            "cci/2",
            &[first.clone(), "f".repeat(40)],
            &w.tmp.path().join("inc.bundle"),
        )
        .unwrap();
    assert_eq!(inc.excluded, std::slice::from_ref(&first));
    assert_eq!(inc.skipped, ["f".repeat(40)]);
    assert!(
        inc.bytes * 10 < full.bytes,
        "{} vs {}",
        inc.bytes,
        full.bytes
    );
    assert_eq!(inc.bytes, std::fs::metadata(&inc.path).unwrap().len());
    // The receiver that has `first` can use it.
    let s = w.clone_session(&repo, &first, "session");
    w.git_with(
        &session_git(),
        &s,
        &["fetch", "-q", inc.path.to_str().unwrap(), "cci/2:cci/2"],
    );
    // Nothing new: a clear error, no empty bundle.
    let e = repo.bundle_to(&first, "cci/1", &[second], &w.tmp.path().join("e.bundle"));
    assert!(matches!(e, Err(GitError::EmptyBundle { .. })));
    // No ref left behind in the user's repository.
    assert_eq!(
        w.git(&w.host, &["for-each-ref", "--format=%(refname)"]),
        "refs/heads/main"
    );
    assert!(
        repo.bundle_to(&first, "-x", &[], &w.tmp.path().join("x.bundle"))
            .is_err()
    );
    assert!(
        repo.bundle_to("HEAD", "cci/1", &[], &w.tmp.path().join("x.bundle"))
            .is_err()
    );
}

#[test]
fn a_rewritten_session_is_taken_and_its_old_tip_kept_in_the_reflog() {
    let w = World::new();
    let repo = w.repo();
    let base = w.head();
    let s = w.clone_session(&repo, &base, "session");
    let sg = session_git();
    w.write(&s, "x.txt", "x\n");
    w.git_with(&sg, &s, &["add", "-A"]);
    w.git_with(&sg, &s, &["commit", "-q", "-m", "x"]);
    let first = repo
        .receive("s1", &w.session_bundle(&s, &base, "1.bundle"), "cci/1")
        .unwrap();
    w.git_with(&sg, &s, &["commit", "-q", "--amend", "-m", "x amended"]);
    let second = repo
        .receive("s1", &w.session_bundle(&s, &base, "2.bundle"), "cci/1")
        .unwrap();
    assert!(second.rewritten);
    assert_eq!(second.previous.as_deref(), Some(first.tip.as_str()));
    assert_eq!(second.new_commits, 1);
    let old = w.git(&w.host, &["rev-parse", "refs/cci/s1/cci/1@{1}"]);
    assert_eq!(old, first.tip);
    // Discard removes the ref and its reflog.
    repo.discard("s1").unwrap();
    assert!(!w.host.join(".git/logs/refs/cci/s1").join("cci/1").exists());
    // A bundle whose ref points at a tree, not a commit.
    let tree = w.git_with(&sg, &s, &["rev-parse", "HEAD^{tree}"]);
    w.git_with(&sg, &s, &["update-ref", "refs/tags/treetag", &tree]);
    let out = w.tmp.path().join("tree.bundle");
    let o = out.to_str().unwrap();
    w.git_with(&sg, &s, &["bundle", "create", "-q", o, "refs/tags/treetag"]);
    // The agent edits the header to name the expected branch.
    let data = std::fs::read(&out).unwrap();
    let at = data.windows(2).position(|p| p == b"\n\n").unwrap();
    let head = String::from_utf8(data[..at].to_vec()).unwrap();
    let mut forged = head
        .replace("refs/tags/treetag", "refs/heads/cci/1")
        .into_bytes();
    forged.extend_from_slice(&data[at..]);
    std::fs::write(&out, forged).unwrap();
    let e = repo.receive("s2", &out, "cci/1").unwrap_err();
    assert!(e.to_string().contains("not a commit"), "{e}");
    assert!(repo.session_refs("s2").unwrap().is_empty());
}

#[test]
fn linked_worktrees_and_users_without_an_identity() {
    let w = World::new();
    let wt = w.tmp.path().join("linked");
    w.git(
        &w.host,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            wt.to_str().unwrap(),
        ],
    );
    w.write(&wt, "wt.txt", "from the worktree\n");
    let before = std::fs::read(w.host.join(".git/index")).unwrap();
    let r = crate::git::Repo::discover_with(w.runner(), &wt).unwrap();
    assert_eq!(r.branch.as_deref(), Some("feature"));
    assert_eq!(
        r.common_dir.canonicalize().unwrap(),
        w.host.join(".git").canonicalize().unwrap()
    );
    assert_ne!(r.git_dir, r.common_dir);
    let snap = r.snapshot(true).unwrap();
    assert_eq!(snap.paths, ["wt.txt"]);
    assert_eq!(std::fs::read(w.host.join(".git/index")).unwrap(), before);
    let b = r
        .bundle_to(&snap.start, "cci/1", &[], &w.tmp.path().join("wt.bundle"))
        .unwrap();
    assert!(b.bytes > 0);
    assert!(w.git(&wt, &["status", "--porcelain"]).contains("?? wt.txt"));

    // No user.name / user.email anywhere: cci's commits still get made.
    std::fs::write(
        w.home.join(".gitconfig"),
        "[user]\n\tuseConfigOnly = true\n",
    )
    .unwrap();
    let snap = r.snapshot(true).unwrap();
    assert!(snap.carried);
    let who = w.git(&w.host, &["log", "-1", "--format=%an <%ae>", &snap.start]);
    assert_eq!(who, "cci <cci@localhost>");
}

//! Merges: fast-forward, merge commit, squash, select, into the checked-out
//! branch or another one, conflicts that change nothing.

use super::{World, programs, session_git};
use crate::git::{GitError, MergeKind, MergeMode, Received, Repo};

/// A world with a received session of three commits on `base`:
/// s1 changes a.txt line one, s2 adds s2.txt, s3 changes dir/b.txt.
struct Setup {
    w: World,
    repo: Repo,
    base: String,
    got: Received,
}

fn setup(program: &std::path::Path) -> Setup {
    let w = World::with_program(program);
    let repo = w.repo();
    let base = w.head();
    let session = w.clone_session(&repo, &base, "session");
    let sg = session_git();
    let steps = [
        ("a.txt", "ONE\ntwo\nthree\n", "s1"),
        ("s2.txt", "s2\n", "s2"),
        ("dir/b.txt", "BEE\n", "s3"),
    ];
    for (file, content, msg) in steps {
        w.write(&session, file, content);
        w.git_with(&sg, &session, &["add", "-A"]);
        w.git_with(&sg, &session, &["commit", "-q", "-m", msg]);
    }
    let b = w.session_bundle(&session, &base, "s.bundle");
    let got = repo.receive("s1", &b, "cci/1").unwrap();
    Setup { w, repo, base, got }
}

fn show(w: &World, rev_path: &str) -> String {
    w.git(&w.host, &["show", rev_path])
}

#[test]
fn fast_forward_into_the_checked_out_branch_keeps_unrelated_local_changes() {
    for p in programs() {
        let Setup {
            w, repo, base, got, ..
        } = setup(&p);
        w.write(&w.host, "c.txt", "local edit\n"); // not touched by the session
        w.write(&w.host, "local.txt", "untracked\n");
        let out = repo
            .merge(&got.session_ref, &base, None, MergeMode::Merge)
            .unwrap();
        assert_eq!(out.kind, MergeKind::FastForward);
        assert_eq!(
            (out.branch.as_str(), out.previous.as_deref()),
            ("main", Some(base.as_str()))
        );
        assert!(out.worktree_updated);
        assert_eq!(w.head(), got.tip);
        assert_eq!(
            std::fs::read_to_string(w.host.join("a.txt")).unwrap(),
            "ONE\ntwo\nthree\n"
        );
        assert_eq!(
            std::fs::read_to_string(w.host.join("s2.txt")).unwrap(),
            "s2\n"
        );
        assert_eq!(
            std::fs::read_to_string(w.host.join("c.txt")).unwrap(),
            "local edit\n"
        );
        let status = w.git(&w.host, &["status", "--porcelain"]);
        assert_eq!(status, " M c.txt\n?? local.txt");
        // The session ref stays; merging again changes nothing.
        assert_eq!(
            repo.resolve_commit(&got.session_ref).unwrap(),
            Some(got.tip.clone())
        );
        let again = repo
            .merge(&got.session_ref, &base, None, MergeMode::Merge)
            .unwrap();
        assert_eq!(again.kind, MergeKind::UpToDate);
    }
}

#[test]
fn merge_commit_when_the_branch_moved_on_and_into_other_branches() {
    let Setup {
        w, repo, base, got, ..
    } = setup(std::path::Path::new("git"));
    w.write(&w.host, "c.txt", "host moved\n");
    let moved = w.commit(&w.host, "host work");
    let out = repo
        .merge(&got.session_ref, &base, None, MergeMode::Merge)
        .unwrap();
    assert_eq!(out.kind, MergeKind::MergeCommit);
    let parents = w.git(&w.host, &["log", "-1", "--format=%P%n%s"]);
    assert_eq!(
        parents,
        format!("{moved} {}\nMerge cci session s1/cci/1", got.tip)
    );
    assert_eq!(w.git(&w.host, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(w.host.join("dir/b.txt")).unwrap(),
        "BEE\n"
    );

    // Into a new branch: created at base, no checkout, worktree untouched.
    let before = w.host_state();
    let out = repo
        .merge(&got.session_ref, &base, Some("review/x"), MergeMode::Squash)
        .unwrap();
    assert_eq!(
        (out.kind.clone(), out.previous.clone(), out.worktree_updated),
        (MergeKind::Squash, None, false)
    );
    let after = w.host_state();
    assert_eq!(
        before
            .lines()
            .filter(|l| !l.contains("refs/heads/review/x"))
            .collect::<Vec<_>>(),
        after
            .lines()
            .filter(|l| !l.contains("refs/heads/review/x"))
            .collect::<Vec<_>>()
    );
    let log = w.git(&w.host, &["log", "--format=%s%n%b", "-1", "review/x"]);
    assert_eq!(
        log,
        "cci: squash of session s1/cci/1 (3 commits)\n* s1\n* s2\n* s3"
    );
    assert_eq!(w.git(&w.host, &["rev-parse", "review/x~1"]), base);
    assert_eq!(show(&w, "review/x:dir/b.txt"), "BEE");
    // Into an existing branch that is not checked out: a merge commit there.
    w.git(&w.host, &["branch", "side", &base]);
    w.git(&w.host, &["commit", "-q", "--allow-empty", "-m", "x"]);
    let out = repo
        .merge(&got.session_ref, &base, Some("side"), MergeMode::Merge)
        .unwrap();
    assert_eq!(out.kind, MergeKind::FastForward);
    assert_eq!(w.git(&w.host, &["rev-parse", "side"]), got.tip);
    // A branch checked out in another worktree is refused.
    let wt = w.tmp.path().join("wt");
    w.git(
        &w.host,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "busy",
            wt.to_str().unwrap(),
            &base,
        ],
    );
    let e = repo
        .merge(&got.session_ref, &base, Some("busy"), MergeMode::Merge)
        .unwrap_err();
    assert!(matches!(e, GitError::CheckedOutElsewhere { .. }), "{e}");
    assert!(
        repo.merge(&got.session_ref, &base, Some("-evil"), MergeMode::Merge)
            .is_err()
    );
    // Detached HEAD and no --into.
    w.git(&w.host, &["checkout", "-q", "--detach"]);
    let e = repo
        .merge(&got.session_ref, &base, None, MergeMode::Merge)
        .unwrap_err();
    assert!(matches!(e, GitError::DetachedHead));
}

#[test]
fn select_picks_chosen_commits_in_session_order() {
    for p in programs() {
        let Setup {
            w, repo, base, got, ..
        } = setup(&p);
        let log = repo.log(&got.session_ref, &base).unwrap(); // s3, s2, s1
        w.write(&w.host, "c.txt", "host moved\n");
        let moved = w.commit(&w.host, "host work");
        // Given newest first and abbreviated: applied oldest first.
        let pick = vec![log[0].id[..10].to_string(), log[2].id.clone()];
        let out = repo
            .merge(&got.session_ref, &base, None, MergeMode::Select(pick))
            .unwrap();
        assert_eq!(out.kind, MergeKind::Picked(2));
        let subjects = w.git(
            &w.host,
            &["log", "--format=%s|%an", &format!("{moved}..HEAD")],
        );
        assert_eq!(subjects, "s3|Host User\ns1|Host User");
        let body = w.git(&w.host, &["log", "-1", "--format=%b"]);
        assert_eq!(body, format!("(cherry picked from commit {})", log[0].id));
        assert!(!w.host.join("s2.txt").exists());
        assert_eq!(
            std::fs::read_to_string(w.host.join("a.txt")).unwrap(),
            "ONE\ntwo\nthree\n"
        );
        assert_eq!(
            std::fs::read_to_string(w.host.join("c.txt")).unwrap(),
            "host moved\n"
        );
        assert_eq!(w.git(&w.host, &["status", "--porcelain"]), "");
        // Not a session commit.
        let e = repo
            .merge(
                &got.session_ref,
                &base,
                None,
                MergeMode::Select(vec![base.clone()]),
            )
            .unwrap_err();
        assert!(matches!(e, GitError::NotInSession { .. }), "{e}");
        let e = repo.merge(
            &got.session_ref,
            &base,
            None,
            MergeMode::Select(vec!["HEAD".into()]),
        );
        assert!(matches!(e, Err(GitError::NotInSession { .. })));
    }
}

#[test]
fn a_conflict_changes_nothing_on_the_host() {
    for p in programs() {
        let Setup {
            w, repo, base, got, ..
        } = setup(&p);
        w.write(&w.host, "a.txt", "uno\ntwo\nthree\n"); // same line as s1
        w.commit(&w.host, "host edits line one");
        w.git(&w.host, &["branch", "other"]);
        w.write(&w.host, "local.txt", "untracked\n");
        w.write(&w.host, "c.txt", "dirty\n");
        let before = w.host_state();
        for into in [None, Some("other")] {
            for mode in [
                MergeMode::Merge,
                MergeMode::Squash,
                MergeMode::Select(vec![
                    got.tip.clone(),
                    repo.log(&got.session_ref, &base).unwrap()[2].id.clone(),
                ]),
            ] {
                match repo.merge(&got.session_ref, &base, into, mode.clone()) {
                    Err(GitError::Conflict { paths }) => assert_eq!(paths, ["a.txt"]),
                    other => panic!("{mode:?} {into:?}: {other:?}"),
                }
                assert_eq!(w.host_state(), before, "{mode:?} {into:?}");
            }
        }
        assert_eq!(
            repo.resolve_commit(&got.session_ref).unwrap(),
            Some(got.tip.clone())
        );
    }
}

#[test]
fn uncommitted_changes_in_merged_files_are_never_overwritten() {
    let Setup {
        w, repo, base, got, ..
    } = setup(std::path::Path::new("git"));
    w.write(&w.host, "a.txt", "my unsaved work\n"); // s1 changes a.txt
    let before = w.host_state();
    let e = repo
        .merge(&got.session_ref, &base, None, MergeMode::Merge)
        .unwrap_err();
    assert!(matches!(e, GitError::WouldOverwrite { .. }), "{e}");
    assert!(e.to_string().contains("a.txt"), "{e}");
    assert_eq!(w.head(), base);
    assert_eq!(
        std::fs::read_to_string(w.host.join("a.txt")).unwrap(),
        "my unsaved work\n"
    );
    // The refusal leaves everything byte for byte as it was, index included.
    assert_eq!(w.host_state(), before);
    // Staged changes to a merged file too.
    w.git(&w.host, &["add", "a.txt"]);
    let before = w.host_state();
    let e = repo.merge(&got.session_ref, &base, None, MergeMode::Squash);
    assert!(matches!(e, Err(GitError::WouldOverwrite { .. })), "{e:?}");
    assert_eq!(w.host_state(), before);
    // Into another branch is fine meanwhile.
    let out = repo
        .merge(&got.session_ref, &base, Some("elsewhere"), MergeMode::Merge)
        .unwrap();
    assert_eq!(out.kind, MergeKind::FastForward);
    // A merged file that was only touched (same content, new mtime) does
    // not block the merge.
    w.git(&w.host, &["reset", "-q", "--hard"]);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    let f = std::fs::File::options()
        .append(true)
        .open(w.host.join("a.txt"))
        .unwrap();
    f.set_modified(later).unwrap();
    drop(f);
    let out = repo
        .merge(&got.session_ref, &base, None, MergeMode::Merge)
        .unwrap();
    assert_eq!(out.kind, MergeKind::FastForward);
    assert_eq!(w.git(&w.host, &["status", "--porcelain"]), "");
}

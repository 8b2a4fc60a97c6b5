//! Tests of the host-side git layer with temporary repositories: a "host"
//! repository (the user's), a "session" clone made from cci's bundle (the
//! container's side, with Debian's git 2.39 when /usr/bin/git is it), and
//! bundles back. No Incus anywhere.

mod flow;
mod hostile;
mod merging;

use super::{Git, Repo};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary world: a home folder with a `.gitconfig`, a host repository
/// with two commits, and a canary folder.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub host: PathBuf,
    pub canary: PathBuf,
    /// The git cci runs (the host's).
    pub program: PathBuf,
}

/// The git programs to test with: the one on PATH and, when it is another
/// version, Debian's /usr/bin/git.
pub fn programs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("git")];
    let ver = |p: &Path| {
        Command::new(p)
            .arg("version")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    let deb = Path::new("/usr/bin/git");
    if deb.exists() && ver(deb) != ver(Path::new("git")) {
        v.push(deb.to_path_buf());
    }
    v
}

/// The container's git: /usr/bin/git when it exists (Debian 2.39).
pub fn session_git() -> PathBuf {
    let deb = Path::new("/usr/bin/git");
    if deb.exists() {
        deb.to_path_buf()
    } else {
        PathBuf::from("git")
    }
}

impl World {
    pub fn new() -> World {
        World::with_program(Path::new("git"))
    }

    pub fn with_program(program: &Path) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let host = tmp.path().join("host");
        let canary = tmp.path().join("canary");
        for d in [&home, &host, &canary] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Host User\n\temail = user@host.example\n[init]\n\tdefaultBranch = main\n",
        )
        .unwrap();
        let w = World {
            tmp,
            home,
            host,
            canary,
            program: program.to_path_buf(),
        };
        w.git(&w.host, &["init", "-q"]);
        w.write(&w.host, "a.txt", "one\ntwo\nthree\n");
        w.write(&w.host, "dir/b.txt", "bee\n");
        w.write(&w.host, ".gitignore", "*.log\n");
        w.commit(&w.host, "initial");
        w.write(&w.host, "c.txt", "sea\n");
        w.commit(&w.host, "second");
        w
    }

    /// The runner cci uses, with this world's home.
    pub fn runner(&self) -> Git {
        Git::new().with_program(&self.program).with_home(&self.home)
    }

    pub fn repo(&self) -> Repo {
        Repo::discover_with(self.runner(), &self.host).unwrap()
    }

    /// Plain git as the user (or the agent) would run it; panics on failure.
    pub fn git_with(&self, program: &Path, dir: &Path, args: &[&str]) -> String {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GIT_") {
                c.env_remove(k);
            }
        }
        let out = c
            .current_dir(dir)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("CANARY", &self.canary)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.git_with(&self.program, dir, args)
    }

    pub fn write(&self, dir: &Path, path: &str, content: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn commit(&self, dir: &Path, msg: &str) -> String {
        self.git(dir, &["add", "-A"]);
        self.git(dir, &["commit", "-q", "--no-verify", "-m", msg]);
        self.git(dir, &["rev-parse", "HEAD"])
    }

    pub fn head(&self) -> String {
        self.git(&self.host, &["rev-parse", "HEAD"])
    }

    /// The session's clone, made from cci's bundle of `start` on branch
    /// `cci/1` with the container's git.
    pub fn clone_session(&self, repo: &Repo, start: &str, name: &str) -> PathBuf {
        let bundle = self.tmp.path().join(format!("{name}-in.bundle"));
        repo.bundle_to(start, "cci/1", &[], &bundle).unwrap();
        let dir = self.tmp.path().join(name);
        let sg = session_git();
        self.git_with(
            &sg,
            self.tmp.path(),
            &["clone", "-q", "-b", "cci/1", bundle.to_str().unwrap(), name],
        );
        self.git_with(&sg, &dir, &["remote", "remove", "origin"]);
        dir
    }

    /// A bundle of the session's `cci/1` without what `base` has.
    pub fn session_bundle(&self, session: &Path, base: &str, name: &str) -> PathBuf {
        let out = self.tmp.path().join(name);
        self.git_with(
            &session_git(),
            session,
            &[
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "core.fsmonitor=false",
                "bundle",
                "create",
                "-q",
                out.to_str().unwrap(),
                "refs/heads/cci/1",
                &format!("^{base}"),
            ],
        );
        out
    }

    /// Everything observable about the host repository: status, HEAD, refs,
    /// the index's bytes and every working-tree file.
    pub fn host_state(&self) -> String {
        use sha2::Digest;
        let index = std::fs::read(self.host.join(".git/index")).unwrap();
        let mut s = format!("index {:x}\n", sha2::Sha256::digest(&index));
        s += &self.git(&self.host, &["symbolic-ref", "HEAD"]);
        s += &self.git(&self.host, &["rev-parse", "HEAD"]);
        s += &self.git(&self.host, &["for-each-ref"]);
        s += &self.git(
            &self.host,
            &["status", "--porcelain", "--untracked-files=all"],
        );
        let mut files = Vec::new();
        walk(&self.host, &mut files);
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap_or_default();
            s += &format!("\n{} {:x}", f.display(), sha2::Sha256::digest(&data));
        }
        s
    }

    /// Names in the canary folder (each one a thing that ran).
    pub fn canaries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Files below `dir`, without `.git`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_name() == ".git" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn discover_reports_the_repository_and_refuses_what_is_not_one() {
    let w = World::new();
    let r = w.repo();
    assert_eq!(r.top, w.host.canonicalize().unwrap());
    assert_eq!(r.branch.as_deref(), Some("main"));
    assert_eq!(r.head.as_deref(), Some(w.head().as_str()));
    assert!(r.submodules.is_empty() && !r.has_gitmodules && !r.uses_lfs);
    // From a subfolder too.
    let sub = Repo::discover_with(w.runner(), &w.host.join("dir")).unwrap();
    assert_eq!(sub.top, r.top);
    // Not a repository: the message points at mounted mode.
    let plain = w.tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let e = Repo::discover_with(w.runner(), &plain).unwrap_err();
    assert!(e.to_string().contains("run without --isolated"), "{e}");
    // Bare.
    let bare = w.tmp.path().join("bare.git");
    w.git(
        w.tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let e = Repo::discover_with(w.runner(), &bare).unwrap_err();
    assert!(matches!(e, super::GitError::Bare { .. }), "{e}");
    // Detached HEAD.
    w.git(&w.host, &["checkout", "-q", "--detach"]);
    assert_eq!(w.repo().branch, None);
}

#[test]
fn discover_reports_submodules_and_lfs() {
    let w = World::new();
    w.write(
        &w.host,
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    w.write(
        &w.host,
        ".gitmodules",
        "[submodule \"s\"]\n\tpath = s\n\turl = ../s\n",
    );
    let head = w.head();
    w.git(
        &w.host,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},s"),
        ],
    );
    w.git(&w.host, &["add", ".gitattributes", ".gitmodules"]);
    w.git(&w.host, &["commit", "-q", "-m", "submodule and lfs"]);
    let r = w.repo();
    assert_eq!(r.submodules, ["s"]);
    assert!(r.has_gitmodules && r.uses_lfs);
}

#[test]
fn version_parsing_and_minimum() {
    use super::run::parse_version;
    assert_eq!(parse_version("git version 2.47.3\n"), Some((2, 47, 3)));
    assert_eq!(
        parse_version("git version 2.39.5.windows.1"),
        Some((2, 39, 5))
    );
    assert_eq!(parse_version("git version 2.40"), Some((2, 40, 0)));
    assert_eq!(parse_version("nope"), None);
    for p in programs() {
        let (ma, mi, _) = Git::new().with_program(&p).version().unwrap();
        assert!((ma, mi) >= super::MIN_GIT);
    }
}

#[test]
fn error_messages_escape_what_the_session_wrote() {
    use super::GitError;
    let e = GitError::Conflict {
        paths: vec!["evil\x1b]0;pwned\x07.txt".into(), "line\nbreak".into()],
    };
    let m = e.to_string();
    assert!(
        !m.contains('\x1b') && !m.contains('\n') && !m.contains('\x07'),
        "{m}"
    );
    assert!(m.contains("evil\\u{1b}]0;pwned\\u{7}.txt"), "{m}");
    let e = GitError::Command {
        args: "diff \x1b[2J".into(),
        status: "exit 1".into(),
        stderr: "fatal: bad \x1b[31m path\nsecond line\n".into(),
    };
    let m = e.to_string();
    assert!(!m.contains('\x1b'), "{m}");
    assert_eq!(super::printable_lines("a\x1b\tb\nc"), "a\\u{1b}\tb\nc");
}

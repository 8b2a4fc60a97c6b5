//! Reading a session without running anything it wrote: its commits
//! ([`Repo::log`]), its changes against the base ([`Repo::diff`]) and its
//! tree ([`Repo::files`]). Commits are parsed by cci from
//! `cat-file --batch` (sizes, not separators, delimit them, so no byte of a
//! message can break the parsing); diffs are two-tree diffs with
//! `--no-ext-diff --no-textconv`. All text is returned raw: escape it with
//! [`super::printable`] / [`super::printable_lines`] before printing.

use super::{GitError, Repo, names};
use serde::Serialize;

/// One commit of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub id: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    /// Seconds since 1970 (UTC).
    pub author_time: i64,
    /// The author's UTC offset as written (`+0200`).
    pub author_tz: String,
    /// The first paragraph of the message on one line.
    pub subject: String,
    /// The whole message.
    pub message: String,
}

impl Commit {
    /// `YYYY-MM-DD HH:MM:SS` UTC of the author date.
    pub fn date_utc(&self) -> String {
        let (y, mo, d, h, mi, s) = crate::state::utc(self.author_time.max(0) as u64);
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}

/// One file changed by a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffFile {
    pub path: String,
    /// `A`dded, `D`eleted, `M`odified, `T`ype changed.
    pub status: char,
    /// Lines added and deleted; `None` for binary files.
    pub added: Option<u64>,
    pub deleted: Option<u64>,
}

/// A session's changes against its base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    pub files: Vec<DiffFile>,
    /// `git diff --stat` text, or the whole patch (raw: escape each line).
    pub text: String,
}

/// One entry of a session's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeEntry {
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub id: String,
    /// Size of a blob in bytes.
    pub size: Option<u64>,
    /// Path below the listed folder.
    pub path: String,
}

/// Parse a raw commit object.
fn parse_commit(id: &str, raw: &[u8]) -> Commit {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &raw[raw.len()..]),
    };
    let mut c = Commit {
        id: id.to_string(),
        parents: Vec::new(),
        author_name: String::new(),
        author_email: String::new(),
        author_time: 0,
        author_tz: String::new(),
        subject: String::new(),
        message: String::from_utf8_lossy(body).into_owned(),
    };
    for line in head.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if let Some(p) = line.strip_prefix("parent ") {
            c.parents.push(p.trim().to_string());
        } else if let Some(a) = line.strip_prefix("author ") {
            // Name <email> time tz; the name may hold anything but '<'.
            if let (Some(lt), Some(gt)) = (a.find('<'), a.rfind('>'))
                && lt < gt
            {
                c.author_name = a[..lt].trim().to_string();
                c.author_email = a[lt + 1..gt].to_string();
                let mut rest = a[gt + 1..].split_whitespace();
                c.author_time = rest.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                c.author_tz = rest.next().unwrap_or("").to_string();
            }
        }
    }
    c.subject = c
        .message
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    c
}

impl Repo {
    /// Checks a session ref and a base commit id.
    fn check_pair(session_ref: &str, base: &str) -> Result<(), GitError> {
        names::parse_session_ref(session_ref)?;
        names::check_oid(base)
    }

    /// Full ids of `base..session_ref`, newest first (topological).
    pub fn session_commit_ids(
        &self,
        session_ref: &str,
        base: &str,
    ) -> Result<Vec<String>, GitError> {
        Self::check_pair(session_ref, base)?;
        let out = self
            .cmd()
            .args(["rev-list", "--topo-order", session_ref, &format!("^{base}")])
            .ok_text()?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Parsed commits, in the order of `ids`.
    pub fn read_commits(&self, ids: &[String]) -> Result<Vec<Commit>, GitError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::new();
        for id in ids {
            names::check_oid(id)?;
            input.extend_from_slice(id.as_bytes());
            input.push(b'\n');
        }
        let out = self.cmd().args(["cat-file", "--batch"]).stdin(input).ok()?;
        let bad = || GitError::Command {
            args: "cat-file --batch".into(),
            status: "unexpected output".into(),
            stderr: String::new(),
        };
        let mut rest = out.stdout.as_slice();
        let mut commits = Vec::new();
        for id in ids {
            let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let mut h = header.split(' ');
            let (oid, kind, size) = (h.next(), h.next(), h.next());
            if oid != Some(id.as_str()) || kind != Some("commit") {
                return Err(bad());
            }
            let size: usize = size.and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let body = rest.get(nl + 1..nl + 1 + size).ok_or_else(bad)?;
            commits.push(parse_commit(id, body));
            rest = rest.get(nl + 2 + size..).unwrap_or(&[]);
        }
        Ok(commits)
    }

    /// The session's commits since `base`, newest first.
    pub fn log(&self, session_ref: &str, base: &str) -> Result<Vec<Commit>, GitError> {
        let ids = self.session_commit_ids(session_ref, base)?;
        self.read_commits(&ids)
    }

    /// The session's changes against `base`: files with line counts, and the
    /// `--stat` text (`stat`) or the whole patch.
    pub fn diff(&self, session_ref: &str, base: &str, stat: bool) -> Result<DiffReport, GitError> {
        Self::check_pair(session_ref, base)?;
        let safe = ["--no-ext-diff", "--no-textconv", "--no-color"];
        let diff = |extra: &[&str]| {
            self.cmd()
                .arg("diff")
                .args(safe)
                .args(extra)
                .args(["--end-of-options", base, session_ref, "--"])
                .ok()
        };
        let names_out = diff(&["-z", "--no-renames", "--name-status"])?;
        let nums = diff(&["-z", "--no-renames", "--numstat"])?;
        let mut files = Vec::new();
        let mut it = names_out.stdout.split(|&b| b == 0);
        while let (Some(st), Some(path)) = (it.next(), it.next()) {
            let Some(&s) = st.first() else { break };
            files.push(DiffFile {
                path: String::from_utf8_lossy(path).into_owned(),
                status: char::from(s),
                added: None,
                deleted: None,
            });
        }
        // numstat -z: "added\tdeleted\tpath\0" (no renames).
        for rec in nums.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let mut f = rec.splitn(3, '\t');
            let (a, d, p) = (f.next(), f.next(), f.next());
            if let Some(file) = files.iter_mut().find(|x| Some(x.path.as_str()) == p) {
                file.added = a.and_then(|n| n.parse().ok());
                file.deleted = d.and_then(|n| n.parse().ok());
            }
        }
        let text = diff(if stat { &["--stat"] } else { &["-p"] })?;
        Ok(DiffReport {
            files,
            text: String::from_utf8_lossy(&text.stdout).into_owned(),
        })
    }

    /// The entries of the session's tree under `path` ("" for the top),
    /// all of them below it when `recursive`.
    pub fn files(
        &self,
        session_ref: &str,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<TreeEntry>, GitError> {
        names::parse_session_ref(session_ref)?;
        let path = path.trim_matches('/');
        let rev = if path.is_empty() {
            session_ref.to_string()
        } else {
            format!("{session_ref}:{path}")
        };
        let mut c = self.cmd().args(["ls-tree", "-z", "-l"]);
        if recursive {
            c = c.arg("-r");
        }
        let out = c.args(["--end-of-options", &rev]).ok()?;
        let mut entries = Vec::new();
        for rec in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let Some((meta, p)) = rec.split_once('\t') else {
                continue;
            };
            let m: Vec<&str> = meta.split_whitespace().collect();
            if let [mode, kind, id, size] = m.as_slice() {
                entries.push(TreeEntry {
                    mode: mode.to_string(),
                    kind: kind.to_string(),
                    id: id.to_string(),
                    size: size.parse().ok(),
                    path: p.to_string(),
                });
            }
        }
        Ok(entries)
    }
}

//! The pure half of git forwarding: naming repositories, reading what a
//! push asks for (git's pkt-line receive-pack request), deciding each ref
//! update, and answering a refused push in git's own report format so the
//! agent sees `! [remote rejected] main -> main (cci: ...)`.
//!
//! Everything here reads bytes a hostile agent wrote: lengths are checked
//! before they are used and nothing is trusted past what it parses.

use serde::{Deserialize, Serialize};

/// A repository on a git host: `github.com` + `owner/name` (no `.git`;
/// [`Repo::same`] compares paths without case, as GitHub does).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    /// The host name, lower case.
    pub host: String,
    /// `owner/name` (GitLab-style groups: more segments).
    pub path: String,
}

impl Repo {
    /// `host` and `path` checked and normalised: a path of two or more
    /// segments of `[A-Za-z0-9._-]`, none `.` or `..`; a trailing `.git`
    /// or `/` dropped.
    pub fn new(host: &str, path: &str) -> Option<Repo> {
        let host = host.to_ascii_lowercase();
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return None;
        }
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        let good = |s: &&str| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if segments.len() < 2 || !segments.iter().all(good) {
            return None;
        }
        Some(Repo {
            host,
            path: path.to_string(),
        })
    }

    /// Whether `o` is the same repository (paths compared without case).
    pub fn same(&self, o: &Repo) -> bool {
        self.host == o.host && self.path.eq_ignore_ascii_case(&o.path)
    }

    /// A remote URL of the forms git takes for HTTPS and SSH hosts:
    /// `https://[user@]host/path`, `ssh://[user@]host[:port]/path`,
    /// `[user@]host:path`.
    pub fn from_url(url: &str) -> Option<Repo> {
        let url = url.trim();
        let rest = if let Some(r) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("ssh://"))
            .or_else(|| url.strip_prefix("git+ssh://"))
        {
            let (authority, path) = r.split_once('/')?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = host.split_once(':').map_or(host, |(h, _)| h);
            return Repo::new(host, path);
        } else {
            url
        };
        if rest.contains("://") {
            return None;
        }
        let (authority, path) = rest.split_once(':')?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        Repo::new(host, path)
    }

    /// `host/path`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

/// The ways one repository is written in remotes, each a prefix git's
/// `url.<base>.insteadOf` rewrites to cci's endpoint.
pub fn url_forms(r: &Repo) -> Vec<String> {
    vec![
        format!("https://{}/{}", r.host, r.path),
        format!("git@{}:{}", r.host, r.path),
        format!("ssh://git@{}/{}", r.host, r.path),
    ]
}

/// What a request to the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /HOST/PATH/info/refs?service=SERVICE`.
    Refs { service: Service },
    /// `POST /HOST/PATH/SERVICE`.
    Rpc { service: Service },
}

/// git's two smart-HTTP services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// fetch, clone, pull.
    UploadPack,
    /// push.
    ReceivePack,
}

impl Service {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// Split `/HOST/PATH(.git)/info/refs` or `/HOST/PATH(.git)/git-*-pack`
/// (`query`: the query string) into the repository, the path as asked
/// (for upstream) and the route.
pub fn route(path: &str, query: Option<&str>) -> Option<(Repo, String, Route)> {
    let path = path.strip_prefix('/')?;
    let (host, rest) = path.split_once('/')?;
    let (repo_path, route) = if let Some(p) = rest.strip_suffix("/info/refs") {
        let service = match query? {
            "service=git-upload-pack" => Service::UploadPack,
            "service=git-receive-pack" => Service::ReceivePack,
            _ => return None,
        };
        (p, Route::Refs { service })
    } else if let Some(p) = rest.strip_suffix("/git-upload-pack") {
        (
            p,
            Route::Rpc {
                service: Service::UploadPack,
            },
        )
    } else if let Some(p) = rest.strip_suffix("/git-receive-pack") {
        (
            p,
            Route::Rpc {
                service: Service::ReceivePack,
            },
        )
    } else {
        return None;
    };
    let repo = Repo::new(host, repo_path)?;
    // Upstream gets the path as asked (with or without .git), checked.
    let asked = if repo_path.to_ascii_lowercase().ends_with(".git") {
        format!("{}.git", &repo_path[..repo_path.len() - 4])
    } else {
        repo_path.to_string()
    };
    Some((repo, asked, route))
}

/// The all-zero object id (a ref created or deleted).
fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The remote's value the client saw (zeros: creating).
    pub old: String,
    /// The value asked for (zeros: deleting).
    pub new: String,
    /// The full ref name.
    pub name: String,
}

impl Update {
    /// Whether this deletes the ref.
    pub fn deletes(&self) -> bool {
        is_zero(&self.new)
    }
    /// Whether this creates the ref.
    pub fn creates(&self) -> bool {
        is_zero(&self.old)
    }
}

/// A receive-pack request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The ref updates.
    pub updates: Vec<Update>,
    /// The capabilities the client asked for.
    pub caps: Vec<String>,
    /// Where the pack starts in the body.
    pub pack_at: usize,
}

impl Push {
    /// Whether the client asked for capability `c`.
    pub fn has(&self, c: &str) -> bool {
        self.caps.iter().any(|x| x == c)
    }
}

/// Read one pkt-line at `at`: `Ok(None)` for a flush packet.
fn pkt(body: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, String> {
    let head = body
        .get(*at..*at + 4)
        .ok_or("the push request ends early")?;
    let head = std::str::from_utf8(head).map_err(|_| "a bad pkt-line length")?;
    let len = usize::from_str_radix(head, 16).map_err(|_| "a bad pkt-line length")?;
    if len == 0 {
        *at += 4;
        return Ok(None);
    }
    if len < 4 {
        return Err("a pkt-line of an unsupported kind".into());
    }
    let data = body
        .get(*at + 4..*at + len)
        .ok_or("the push request ends early")?;
    *at += len;
    Ok(Some(data.to_vec()))
}

/// Most ref updates one push may carry.
pub const MAX_UPDATES: usize = 256;

/// Whether `name` is a ref name git itself would take (`git
/// check-ref-format`'s rules, and no more than 255 bytes): never revision
/// syntax or a path trick when it reaches host git or upstream.
pub fn ref_name_ok(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && name != "@"
        && name
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !b"~^:?*[\\".contains(&b))
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

/// Read the commands of a receive-pack request body (the pack follows).
pub fn parse_push(body: &[u8]) -> Result<Push, String> {
    let mut at = 0;
    let mut updates = Vec::new();
    let mut caps = Vec::new();
    while let Some(line) = pkt(body, &mut at)? {
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        if line.starts_with(b"shallow ") {
            continue;
        }
        if line.starts_with(b"push-cert") {
            return Err("signed pushes cannot go through cci".into());
        }
        let (cmd, cap) = match line.iter().position(|&b| b == 0) {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        if let Some(cap) = cap {
            let cap = std::str::from_utf8(cap).map_err(|_| "capabilities are not text")?;
            caps = cap
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
        }
        let cmd = std::str::from_utf8(cmd).map_err(|_| "a ref update is not text")?;
        let mut parts = cmd.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "a bad ref update {:?}",
                crate::proxy::log::clean(cmd)
            ));
        };
        let oid =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !oid(old) || !oid(new) || !ref_name_ok(name) {
            return Err(format!(
                "a bad ref update {:?}",
                crate::proxy::log::clean(cmd)
            ));
        }
        if updates.len() == MAX_UPDATES {
            return Err(format!("a push may update at most {MAX_UPDATES} refs"));
        }
        updates.push(Update {
            old: old.to_ascii_lowercase(),
            new: new.to_ascii_lowercase(),
            name: name.to_string(),
        });
    }
    if updates.is_empty() {
        return Err("the push asks for nothing".into());
    }
    Ok(Push {
        updates,
        caps,
        pack_at: at,
    })
}

/// What may be pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRules {
    /// Branch patterns (`*` matches within a segment, `**` across).
    pub branches: Vec<String>,
    /// The default branch (and main, master) may be pushed to.
    pub default_branch: bool,
    /// Tags may be pushed (created; never moved or deleted).
    pub tags: bool,
    /// Commits may change CI definitions (`.github/workflows/`, ...).
    #[serde(default)]
    pub ci: bool,
}

impl Default for PushRules {
    fn default() -> Self {
        PushRules {
            branches: vec!["cci/**".into()],
            default_branch: false,
            tags: false,
            ci: false,
        }
    }
}

/// Whether `name` matches `pattern` (`*`: any run of characters but `/`;
/// `**`: any run).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| go(rest, &n[i..])),
            [b'*', rest @ ..] => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| go(rest, &n[i..])),
            [c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Decide the push as a whole: `Err(why)` refuses every update. Push
/// options reach the host's server-side features (GitLab: create and
/// auto-merge a merge request, set CI variables): none go through.
pub fn check_push(p: &Push) -> Result<(), String> {
    if p.has("push-options") {
        return Err("push options (git push -o) cannot go through cci".into());
    }
    Ok(())
}

/// Decide one update before anything is fetched: `Err(why)` refuses.
/// `default_branch`: the remote's (when known). Fast-forward is checked
/// later, with the objects.
pub fn check(u: &Update, rules: &PushRules, default_branch: Option<&str>) -> Result<(), String> {
    if let Some(tag) = u.name.strip_prefix("refs/tags/") {
        if !rules.tags {
            return Err(format!(
                "pushing tags ({tag}) is not allowed ([git] push_tags)"
            ));
        }
        if u.deletes() {
            return Err("deleting a tag is not allowed".into());
        }
        if !u.creates() {
            return Err("moving a tag is not allowed".into());
        }
        return Ok(());
    }
    let Some(branch) = u.name.strip_prefix("refs/heads/") else {
        return Err(format!("only branches may be pushed, not {}", u.name));
    };
    if u.deletes() {
        return Err("deleting a branch is not allowed".into());
    }
    let protected = ["main", "master"].contains(&branch) || default_branch == Some(branch);
    if protected && !rules.default_branch {
        return Err(format!(
            "pushing to {branch} (the default branch) is not allowed; push a cci/ branch and open a pull request"
        ));
    }
    if !protected && !rules.branches.iter().any(|p| glob(p, branch)) {
        return Err(format!(
            "{branch} matches no allowed branch pattern ({}; [git] push_branches)",
            rules.branches.join(", ")
        ));
    }
    Ok(())
}

/// A pkt-line holding `data`.
pub fn pkt_line(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// The answer to a refused push: every update `ng` with its reason (the
/// whole push is refused when one update is), in the report format and
/// side band the client asked for; `message` goes to its screen as
/// `remote: ...` when it has a side band.
pub fn refusal_report(push: &Push, reasons: &[(String, String)], message: &str) -> Vec<u8> {
    let mut report = pkt_line(b"unpack ok\n");
    for u in &push.updates {
        let why = reasons
            .iter()
            .find(|(n, _)| *n == u.name)
            .map(|(_, w)| w.as_str())
            .unwrap_or("not pushed: another ref of this push was refused");
        let why: String = why
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        report.extend(pkt_line(format!("ng {} cci: {why}\n", u.name).as_bytes()));
    }
    report.extend_from_slice(b"0000");
    let band = if push.has("side-band-64k") {
        Some(65515)
    } else if push.has("side-band") {
        Some(995)
    } else {
        None
    };
    let Some(max) = band else {
        return report;
    };
    let mut out = Vec::new();
    for chunk in message.as_bytes().chunks(max) {
        let mut p = vec![2u8];
        p.extend_from_slice(chunk);
        out.extend(pkt_line(&p));
    }
    for chunk in report.chunks(max) {
        let mut p = vec![1u8];
        p.extend_from_slice(chunk);
        out.extend(pkt_line(&p));
    }
    out.extend_from_slice(b"0000");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn upd(old: &str, new: &str, name: &str) -> Update {
        Update {
            old: old.into(),
            new: new.into(),
            name: name.into(),
        }
    }

    #[test]
    fn remote_urls_of_every_form_name_one_repository() {
        let want = Repo::new("github.com", "Owner/Repo").unwrap();
        for url in [
            "https://github.com/owner/repo.git",
            "https://user@GitHub.com/Owner/Repo",
            "git@github.com:owner/repo.git",
            "ssh://git@github.com/owner/repo",
            "ssh://git@github.com:22/owner/repo.git/",
        ] {
            assert!(Repo::from_url(url).is_some_and(|r| r.same(&want)), "{url}");
        }
        for bad in [
            "/srv/git/repo",
            "file:///srv/repo",
            "https://github.com/onlyone",
            "https://github.com/a/../b",
            "git@github.com:a/b c",
            "http://github.com/a/b",
        ] {
            assert_eq!(Repo::from_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn routes_are_the_smart_http_endpoints_only() {
        let (r, asked, got) = route(
            "/github.com/o/r.git/info/refs",
            Some("service=git-receive-pack"),
        )
        .unwrap();
        assert_eq!(r.id(), "github.com/o/r");
        assert_eq!(asked, "o/r.git");
        assert_eq!(
            got,
            Route::Refs {
                service: Service::ReceivePack
            }
        );
        let (_, asked, got) = route("/github.com/o/r/git-upload-pack", None).unwrap();
        assert_eq!(asked, "o/r");
        assert_eq!(
            got,
            Route::Rpc {
                service: Service::UploadPack
            }
        );
        assert!(route("/github.com/o/r/info/refs", Some("service=evil")).is_none());
        assert!(route("/github.com/o/../r/git-upload-pack", None).is_none());
        assert!(route("/github.com/o/r/objects/info/packs", None).is_none());
    }

    fn body(lines: &[&str], pack: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for l in lines {
            b.extend(pkt_line(l.as_bytes()));
        }
        b.extend_from_slice(b"0000");
        b.extend_from_slice(pack);
        b
    }

    #[test]
    fn a_push_request_is_read_with_its_capabilities_and_pack() {
        let first = format!("{A} {B} refs/heads/cci/x\0report-status side-band-64k");
        let second = format!("{Z} {B} refs/heads/cci/y\n");
        let b = body(&[&first, &second], b"PACKdata");
        let p = parse_push(&b).unwrap();
        assert_eq!(p.updates.len(), 2);
        assert!(p.has("side-band-64k"));
        assert_eq!(&b[p.pack_at..], b"PACKdata");
        assert!(p.updates[1].creates());
        // Broken or hostile bodies are errors, never panics.
        for bad in [&b"00"[..], b"ffff", b"0003", b"zzzz", b"0000", b"0010short"] {
            assert!(parse_push(bad).is_err(), "{bad:?}");
        }
        let bad = body(&[&format!("{A} nothex refs/heads/x")], b"");
        assert!(parse_push(&bad).is_err());
        let cert = body(&["push-cert\0report-status"], b"");
        assert!(parse_push(&cert).unwrap_err().contains("signed"));
        let opts = body(
            &[&format!(
                "{A} {B} refs/heads/cci/x\0report-status push-options"
            )],
            b"",
        );
        assert!(
            check_push(&parse_push(&opts).unwrap())
                .unwrap_err()
                .contains("push options")
        );
        for name in [
            "refs/heads/cci/../main",
            "refs/heads/cci/x@{-1}",
            "refs/heads/cci/x~1",
            "refs/heads/cci/.hidden",
            "refs/heads/cci/x.lock",
            "refs/heads/cci//x",
            "refs/heads/cci/x/",
            "main",
        ] {
            let b = body(&[&format!("{A} {B} {name}\0report-status")], b"");
            assert!(parse_push(&b).is_err(), "{name}");
        }
        let many: Vec<String> = (0..=MAX_UPDATES)
            .map(|i| format!("{Z} {B} refs/heads/cci/b{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(
            parse_push(&body(&many, b""))
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn only_allowed_branches_move_forward_and_nothing_is_deleted() {
        let r = PushRules::default();
        assert!(check(&upd(A, B, "refs/heads/cci/fix"), &r, Some("main")).is_ok());
        assert!(check(&upd(Z, B, "refs/heads/cci/a/b"), &r, None).is_ok());
        let refused = |u: Update, d: Option<&str>| check(&u, &r, d).unwrap_err();
        assert!(refused(upd(A, B, "refs/heads/main"), None).contains("default branch"));
        assert!(refused(upd(A, B, "refs/heads/trunk"), Some("trunk")).contains("default"));
        assert!(refused(upd(A, B, "refs/heads/feature"), None).contains("no allowed"));
        assert!(refused(upd(A, Z, "refs/heads/cci/x"), None).contains("deleting"));
        assert!(refused(upd(Z, B, "refs/tags/v1"), None).contains("tags"));
        assert!(refused(upd(Z, B, "refs/notes/x"), None).contains("only branches"));
        let tags = PushRules {
            tags: true,
            ..PushRules::default()
        };
        assert!(check(&upd(Z, B, "refs/tags/v1"), &tags, None).is_ok());
        assert!(check(&upd(A, B, "refs/tags/v1"), &tags, None).is_err());
        let main = PushRules {
            default_branch: true,
            ..PushRules::default()
        };
        assert!(check(&upd(A, B, "refs/heads/main"), &main, Some("main")).is_ok());
    }

    #[test]
    fn globs_keep_single_stars_within_a_segment() {
        assert!(glob("cci/*", "cci/x"));
        assert!(!glob("cci/*", "cci/x/y"));
        assert!(glob("cci/**", "cci/x/y"));
        assert!(glob("feature-*", "feature-1"));
        assert!(!glob("cci/*", "main"));
    }

    #[test]
    fn a_refusal_is_a_report_in_the_side_band_asked_for() {
        let first = format!("{A} {B} refs/heads/main\0report-status side-band-64k");
        let p = parse_push(&body(&[&first], b"")).unwrap();
        let out = refusal_report(&p, &[("refs/heads/main".into(), "no".into())], "cci: hi\n");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("ng refs/heads/main cci: no"), "{text}");
        assert!(text.contains("\u{2}cci: hi"), "{text}");
        assert!(out.ends_with(b"0000"));
        let plain = parse_push(&body(
            &[&format!("{A} {B} refs/heads/main\0report-status")],
            b"",
        ))
        .unwrap();
        let out = refusal_report(&plain, &[], "");
        assert!(
            out.starts_with(b"000eunpack ok\n"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

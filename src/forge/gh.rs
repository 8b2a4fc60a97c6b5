//! The pure half of forwarding `gh`: which API a request is for, and what
//! may be done through it — REST reads of the workspace's repositories,
//! creating a pull request and commenting there; GraphQL queries, and the
//! mutations `createPullRequest` and `addComment` on those repositories
//! only (their target is checked upstream by the server). A GraphQL
//! document is read here only as far as deciding needs: the operations,
//! and each mutation's top-level fields with the variable their `input`
//! comes from.

use super::Repo;

/// The API a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// REST: the path under the API root.
    Rest(String),
    /// GraphQL.
    Graphql,
}

/// A request gh sent (its `Host` header and path) as the forge host it is
/// for and the call: `api.github.com` + `/graphql` or `/repos/...` for
/// GitHub, `HOST` + `/api/graphql` or `/api/v3/...` for another host.
pub fn route(host_header: &str, path: &str) -> Option<(String, Call)> {
    let host = host_header
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host_header, |(h, _)| h)
        .to_ascii_lowercase();
    let (forge, rest) = if host == "api.github.com" {
        ("github.com".to_string(), path.to_string())
    } else {
        (host, path.strip_prefix("/api")?.to_string())
    };
    let call = if rest == "/graphql" {
        Call::Graphql
    } else if forge == "github.com" {
        Call::Rest(rest)
    } else {
        Call::Rest(rest.strip_prefix("/v3")?.to_string())
    };
    Some((forge, call))
}

/// The upstream URL of `call` on a host whose git base URL is `base`.
pub fn upstream(forge: &str, base: &str, call: &Call) -> String {
    let api = if forge == "github.com" && base == "https://github.com" {
        "https://api.github.com".to_string()
    } else {
        format!("{base}/api/v3")
    };
    match call {
        Call::Graphql if api.ends_with("/api/v3") => format!("{base}/api/graphql"),
        Call::Graphql => format!("{api}/graphql"),
        Call::Rest(p) => format!("{api}{p}"),
    }
}

/// The repository a REST path is about (`/repos/OWNER/NAME/...`), and the
/// rest of the path.
fn repo_of<'a>(forge: &str, path: &'a str) -> Option<(Repo, &'a str)> {
    let rest = path.strip_prefix("/repos/")?;
    let mut parts = rest.splitn(3, '/');
    let (owner, name) = (parts.next()?, parts.next()?);
    let tail = parts.next().unwrap_or("");
    Some((Repo::new(forge, &format!("{owner}/{name}"))?, tail))
}

/// Decide a REST call: reads of the granted repositories, a new pull
/// request there, a comment on one of their issues or pull requests.
pub fn rest_allowed(forge: &str, method: &str, path: &str, repos: &[Repo]) -> Result<(), String> {
    if path.split('/').any(|s| s == ".." || s == ".") || path.contains('%') {
        return Err("a path with dot segments or escapes".into());
    }
    let Some((repo, tail)) = repo_of(forge, path) else {
        return Err(format!(
            "{method} {path}: only the workspace's repositories ({}) are reachable through cci",
            list(repos)
        ));
    };
    if !repos.iter().any(|r| r.same(&repo)) {
        return Err(format!(
            "{} is not this workspace's repository ({})",
            repo.id(),
            list(repos)
        ));
    }
    let segs: Vec<&str> = tail.split('/').collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match method {
        "GET" | "HEAD" => true,
        "POST" => {
            segs == ["pulls"]
                || (segs.len() == 3
                    && segs[0] == "issues"
                    && number(segs[1])
                    && segs[2] == "comments")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{method} {path}: gh may read, open a pull request and comment; nothing else"
        ))
    }
}

fn list(repos: &[Repo]) -> String {
    repos.iter().map(Repo::id).collect::<Vec<_>>().join(", ")
}

/// The mutations that may go through, and the input field naming what
/// they act on.
pub const MUTATIONS: &[(&str, &str)] = &[
    ("createPullRequest", "repositoryId"),
    ("addComment", "subjectId"),
];

/// One top-level field of a mutation: its name and the variable its
/// `input` argument is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field (not its alias).
    pub name: String,
    /// `input: $VAR`.
    pub input_var: Option<String>,
}

/// What a GraphQL document asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Whether it has a subscription.
    pub subscription: bool,
    /// Every mutation's top-level fields.
    pub mutations: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Name(String),
    Punct(char),
    Spread,
    Str,
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            0xEF if b[i..].starts_with("\u{feff}".as_bytes()) => i += 3,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                loop {
                    if i + 3 > b.len() {
                        return Err("an unterminated block string".into());
                    }
                    if b[i] == b'\\' && b[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else if b[i..].starts_with(b"\"\"\"") {
                        i += 3;
                        break;
                    } else {
                        i += 1;
                    }
                }
                out.push(Tok::Str);
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => return Err("an unterminated string".into()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(Tok::Str);
            }
            b'.' if b[i..].starts_with(b"...") => {
                i += 3;
                out.push(Tok::Spread);
            }
            b'{' | b'}' | b'(' | b')' | b'[' | b']' | b':' | b'$' | b'!' | b'=' | b'@' | b'|'
            | b'&' => {
                out.push(Tok::Punct(char::from(c)));
                i += 1;
            }
            c if c == b'_' || c.is_ascii_alphanumeric() || c == b'-' || c == b'+' || c == b'.' => {
                let start = i;
                while i < b.len()
                    && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b"-+.".contains(&b[i]))
                {
                    i += 1;
                }
                out.push(Tok::Name(src[start..i].to_string()));
            }
            _ => return Err(format!("an unexpected character {:?}", char::from(c))),
        }
    }
    Ok(out)
}

/// Skip a balanced group opening at `toks[*i]` (`open`).
fn skip_group(toks: &[Tok], i: &mut usize, open: char, close: char) -> Result<(), String> {
    let mut depth = 0usize;
    while let Some(t) = toks.get(*i) {
        *i += 1;
        match t {
            Tok::Punct(c) if *c == open => depth += 1,
            Tok::Punct(c) if *c == close => {
                depth = depth.checked_sub(1).ok_or("unbalanced brackets")?;
                if depth == 0 {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err("unbalanced brackets".into())
}

/// Skip directives (`@name(args)`).
fn skip_directives(toks: &[Tok], i: &mut usize) -> Result<(), String> {
    while toks.get(*i) == Some(&Tok::Punct('@')) {
        *i += 2;
        if toks.get(*i) == Some(&Tok::Punct('(')) {
            skip_group(toks, i, '(', ')')?;
        }
    }
    Ok(())
}

/// Read the top-level fields of the selection set at `toks[*i]` (`{`).
fn top_fields(toks: &[Tok], i: &mut usize) -> Result<Vec<Field>, String> {
    if toks.get(*i) != Some(&Tok::Punct('{')) {
        return Err("a selection set was expected".into());
    }
    *i += 1;
    let mut fields = Vec::new();
    loop {
        match toks.get(*i) {
            Some(Tok::Punct('}')) => {
                *i += 1;
                return Ok(fields);
            }
            Some(Tok::Spread) => {
                return Err("fragments at a mutation's top level cannot go through cci".into());
            }
            Some(Tok::Name(n)) => {
                *i += 1;
                let mut name = n.clone();
                if toks.get(*i) == Some(&Tok::Punct(':')) {
                    match toks.get(*i + 1) {
                        Some(Tok::Name(real)) => name = real.clone(),
                        _ => return Err("an alias without a field".into()),
                    }
                    *i += 2;
                }
                let mut input_var = None;
                if toks.get(*i) == Some(&Tok::Punct('(')) {
                    let start = *i;
                    skip_group(toks, i, '(', ')')?;
                    // `input : $ VAR` directly inside the parentheses.
                    let args = &toks[start + 1..*i - 1];
                    let mut depth = 0i32;
                    for (k, t) in args.iter().enumerate() {
                        match t {
                            Tok::Punct('(' | '[' | '{') => depth += 1,
                            Tok::Punct(')' | ']' | '}') => depth -= 1,
                            Tok::Name(a) if depth == 0 && a == "input" => {
                                if let (
                                    Some(Tok::Punct(':')),
                                    Some(Tok::Punct('$')),
                                    Some(Tok::Name(v)),
                                ) = (args.get(k + 1), args.get(k + 2), args.get(k + 3))
                                {
                                    input_var = Some(v.clone());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                skip_directives(toks, i)?;
                if toks.get(*i) == Some(&Tok::Punct('{')) {
                    skip_group(toks, i, '{', '}')?;
                }
                fields.push(Field { name, input_var });
            }
            _ => return Err("a field was expected".into()),
        }
    }
}

/// Read a GraphQL document as far as deciding needs.
pub fn parse(src: &str) -> Result<Document, String> {
    let toks = tokens(src)?;
    let mut doc = Document::default();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => skip_group(&toks, &mut i, '{', '}')?,
            Tok::Name(kw) if kw == "fragment" => {
                while i < toks.len() && toks[i] != Tok::Punct('{') {
                    i += 1;
                }
                skip_group(&toks, &mut i, '{', '}')?;
            }
            Tok::Name(kw) if kw == "query" || kw == "mutation" || kw == "subscription" => {
                let kind = kw.clone();
                i += 1;
                if let Some(Tok::Name(_)) = toks.get(i) {
                    i += 1;
                }
                if toks.get(i) == Some(&Tok::Punct('(')) {
                    skip_group(&toks, &mut i, '(', ')')?;
                }
                skip_directives(&toks, &mut i)?;
                match kind.as_str() {
                    "mutation" => doc.mutations.extend(top_fields(&toks, &mut i)?),
                    "subscription" => {
                        doc.subscription = true;
                        skip_group(&toks, &mut i, '{', '}')?;
                    }
                    _ => skip_group(&toks, &mut i, '{', '}')?,
                }
            }
            _ => return Err("not a GraphQL document cci can read".into()),
        }
    }
    Ok(doc)
}

/// Decide a GraphQL document before its targets are checked: the
/// (mutation field, id) pairs to check upstream, or why it is refused.
pub fn graphql_targets(
    query: &str,
    variables: &serde_json::Value,
) -> Result<Vec<(String, String)>, String> {
    let doc = parse(query)?;
    if doc.subscription {
        return Err("subscriptions cannot go through cci".into());
    }
    let mut targets = Vec::new();
    for f in &doc.mutations {
        let Some((_, key)) = MUTATIONS.iter().find(|(m, _)| *m == f.name) else {
            return Err(format!(
                "the mutation {} is not allowed: gh may open a pull request and comment ({})",
                crate::proxy::log::clean(&f.name),
                MUTATIONS
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let id = f
            .input_var
            .as_ref()
            .and_then(|v| variables.get(v))
            .and_then(|input| input.get(*key))
            .and_then(|id| id.as_str())
            .ok_or_else(|| format!("{}: its input must be a variable naming {key}", f.name))?;
        targets.push((f.name.clone(), id.to_string()));
    }
    Ok(targets)
}

/// The query that names the repository behind a node id.
pub const NODE_QUERY: &str = "query($id: ID!) { node(id: $id) { ... on Repository { nameWithOwner } ... on Issue { repository { nameWithOwner } } ... on PullRequest { repository { nameWithOwner } } } }";

/// The `owner/name` a [`NODE_QUERY`] answer names.
pub fn node_repo(answer: &serde_json::Value) -> Option<String> {
    let node = answer.get("data")?.get("node")?;
    node.get("nameWithOwner")
        .or_else(|| node.get("repository")?.get("nameWithOwner"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn github_and_other_hosts_route_to_their_apis() {
        assert_eq!(
            route("api.github.com", "/graphql"),
            Some(("github.com".into(), Call::Graphql))
        );
        assert_eq!(
            route("api.github.com:443", "/repos/o/r"),
            Some(("github.com".into(), Call::Rest("/repos/o/r".into())))
        );
        assert_eq!(
            route("git.corp.example", "/api/v3/repos/o/r"),
            Some(("git.corp.example".into(), Call::Rest("/repos/o/r".into())))
        );
        assert_eq!(route("git.corp.example", "/o/r/info/refs"), None);
        assert_eq!(
            upstream("github.com", "https://github.com", &Call::Graphql),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            upstream(
                "x.test",
                "http://127.0.0.1:9",
                &Call::Rest("/repos/o/r".into())
            ),
            "http://127.0.0.1:9/api/v3/repos/o/r"
        );
        assert_eq!(
            upstream("x.test", "http://127.0.0.1:9", &Call::Graphql),
            "http://127.0.0.1:9/api/graphql"
        );
    }

    #[test]
    fn rest_reads_the_repository_opens_pull_requests_and_comments_only() {
        let repos = vec![Repo::new("github.com", "Me/Proj").unwrap()];
        let ok = |m: &str, p: &str| rest_allowed("github.com", m, p, &repos).is_ok();
        assert!(ok("GET", "/repos/me/proj/issues"));
        assert!(ok("POST", "/repos/me/proj/pulls"));
        assert!(ok("POST", "/repos/me/proj/issues/12/comments"));
        assert!(!ok("GET", "/repos/other/repo/issues"));
        assert!(!ok("GET", "/user"));
        assert!(!ok("DELETE", "/repos/me/proj/git/refs/heads/main"));
        assert!(!ok("PATCH", "/repos/me/proj/pulls/1"));
        assert!(!ok("PUT", "/repos/me/proj/pulls/1/merge"));
        assert!(!ok("POST", "/repos/me/proj/hooks"));
        assert!(!ok("GET", "/repos/me/proj/../../other/repo"));
        assert!(!ok("GET", "/repos/me/proj%2F..%2F..%2Fx"));
    }

    #[test]
    fn graphql_mutations_are_found_whatever_their_form() {
        let q = r#"
            # a comment with mutation { deleteRef }
            query Q { viewer { login } }
            mutation PullRequestCreate($input: CreatePullRequestInput!) {
              made: createPullRequest(input: $input) @include(if: true) { pullRequest { url } }
            }
            fragment F on Repository { name description(text: "mutation { x }") }
        "#;
        let doc = parse(q).unwrap();
        assert_eq!(
            doc.mutations,
            vec![Field {
                name: "createPullRequest".into(),
                input_var: Some("input".into())
            }]
        );
        let vars = json!({"input": {"repositoryId": "R_1", "title": "t"}});
        assert_eq!(
            graphql_targets(q, &vars).unwrap(),
            vec![("createPullRequest".to_string(), "R_1".to_string())]
        );
        // Queries alone go; other mutations, inline inputs, top-level
        // fragments and subscriptions do not.
        assert_eq!(
            graphql_targets("{ viewer { login } }", &json!({})).unwrap(),
            vec![]
        );
        for bad in [
            "mutation { deleteRef(input: {refId: \"x\"}) { clientMutationId } }",
            "mutation { addComment(input: {subjectId: \"I_1\", body: \"b\"}) { clientMutationId } }",
            "mutation { ...F } fragment F on Mutation { deleteRef(input: $i) { clientMutationId } }",
            "subscription { x }",
            "mutation { createPullRequest(input: $input) { x } mergePullRequest(input: $m) { x } }",
            "mutation { createPullRequest(input: $input) { x }",
            "mutation \u{1} { }",
        ] {
            assert!(graphql_targets(bad, &vars).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_answer_names_its_repository() {
        let r = json!({"data": {"node": {"nameWithOwner": "me/proj"}}});
        assert_eq!(node_repo(&r).as_deref(), Some("me/proj"));
        let i = json!({"data": {"node": {"repository": {"nameWithOwner": "me/proj"}}}});
        assert_eq!(node_repo(&i).as_deref(), Some("me/proj"));
        assert_eq!(node_repo(&json!({"data": {"node": null}})), None);
    }
}

//! Strict checks for every name that reaches a git command line or a file
//! name: session branches, session ids, commit ids. They are stricter than
//! `git check-ref-format` on purpose (ASCII letters, digits and `._/-` only),
//! so an agent-chosen string can never be read as an option, a revision
//! expression (`..`, `^`, `~`, `@{`, `:`), a glob or a path outside
//! `refs/cci/`.

use super::GitError;

/// The longest branch name accepted.
pub const MAX_BRANCH: usize = 200;

/// Check a session branch name (`cci/1`, `feature/x`), as given by the user
/// or the container. Full ref names (`refs/heads/x`) are refused: give the
/// short name.
pub fn check_branch(name: &str) -> Result<(), GitError> {
    let bad = |reason| {
        Err(GitError::InvalidBranch {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_BRANCH {
        return bad("longer than 200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
    {
        return bad("only ASCII letters, digits, '.', '_', '/' and '-' are allowed");
    }
    if name.starts_with('-') {
        return bad("starts with '-'");
    }
    if name.starts_with("refs/") || name == "HEAD" {
        return bad("give the short branch name, not a ref name");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    for part in name.split('/') {
        if part.is_empty() {
            return bad("empty path component ('//' or a leading or trailing '/')");
        }
        if part.starts_with('.') || part.starts_with('-') {
            return bad("a component starts with '.' or '-'");
        }
        if part.ends_with(".lock") || part.ends_with('.') {
            return bad("a component ends with '.lock' or '.'");
        }
    }
    Ok(())
}

/// Check a session id: a file name and a single ref component.
pub fn check_session_id(id: &str) -> Result<(), GitError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(GitError::InvalidSessionId { id: id.to_string() })
    }
}

/// Whether `s` is a full object id (40 or 64 lowercase hex digits).
pub fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `s` when it is a full object id, else an error.
pub fn check_oid(s: &str) -> Result<(), GitError> {
    if is_oid(s) {
        Ok(())
    } else {
        Err(GitError::InvalidCommitId {
            given: s.to_string(),
        })
    }
}

/// The host ref a session branch is fetched into: `refs/cci/<id>/<branch>`.
pub fn session_ref(id: &str, branch: &str) -> Result<String, GitError> {
    check_session_id(id)?;
    check_branch(branch)?;
    Ok(format!("refs/cci/{id}/{branch}"))
}

/// Check a session ref made by [`session_ref`]; returns (id, branch).
pub fn parse_session_ref(r: &str) -> Result<(&str, &str), GitError> {
    let bad = || GitError::InvalidBranch {
        name: r.to_string(),
        reason: "not a session ref (refs/cci/<id>/<branch>)",
    };
    let rest = r.strip_prefix("refs/cci/").ok_or_else(bad)?;
    let (id, branch) = rest.split_once('/').ok_or_else(bad)?;
    check_session_id(id)?;
    check_branch(branch)?;
    Ok((id, branch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_checked_strictly() {
        for good in ["cci/1", "main", "feature/x-y_z.2", "a"] {
            assert!(check_branch(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-evil",
            "--upload-pack=x",
            "a..b",
            "refs/heads/x",
            "HEAD",
            "a/",
            "/a",
            "a//b",
            ".hidden",
            "a/.b",
            "x.lock",
            "x.",
            "a\nb",
            "a\x1bb",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a@{1}",
            "a*",
            "a?",
            "a[b",
            "a\\b",
            "é",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
        assert!(check_branch(&"a".repeat(201)).is_err());
    }

    #[test]
    fn session_ids_and_refs() {
        assert!(check_session_id("abc-12_Z").is_ok());
        for bad in ["", "-x", "a/b", "..", "a.b", "a b", &"x".repeat(65)] {
            assert!(check_session_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(session_ref("s1", "cci/2").unwrap(), "refs/cci/s1/cci/2");
        assert_eq!(
            parse_session_ref("refs/cci/s1/cci/2").unwrap(),
            ("s1", "cci/2")
        );
        assert!(parse_session_ref("refs/heads/x").is_err());
        assert!(parse_session_ref("refs/cci/s1/-x").is_err());
        assert!(is_oid(&"a".repeat(40)) && !is_oid("HEAD") && !is_oid(&"A".repeat(40)));
    }
}

//! Session ids: the name of a saved session's folder, so checked before they
//! ever touch a path.

use std::fmt;
use std::str::FromStr;

/// A session id: 1 to 128 letters, digits, `-`, `_` or `.`, not starting
/// with `.` (so never `.`, `..`, a hidden name, a path, NUL or a newline).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

/// A string that is not a valid [`SessionId`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid session id {0}: use 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"
)]
pub struct BadSessionId(String);

impl SessionId {
    /// A new random id (a UUID, as the agents use).
    pub fn new_random() -> SessionId {
        SessionId(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<SessionId, BadSessionId> {
        let ok = (1..=128).contains(&s.len())
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(SessionId(s.to_string()))
        } else {
            // Shown quoted and escaped: the input may hold control characters.
            Err(BadSessionId(format!(
                "{:?}",
                s.chars().take(140).collect::<String>()
            )))
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_be_paths_are_rejected() {
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "/abs",
            "a/b",
            "a\0b",
            "a\nb",
            ".hidden",
            "a b",
            "ü",
            "\x1b[31m",
        ] {
            let e = bad.parse::<SessionId>().unwrap_err().to_string();
            assert!(!e.contains('\n') && !e.contains('\x1b'), "{e}");
        }
        assert!("x".repeat(129).parse::<SessionId>().is_err());
        for good in ["0b7c3c1e-8a8f-4a43-9f3e-2f1d0b8f6c11", "my_session.2", "A"] {
            assert_eq!(good.parse::<SessionId>().unwrap().as_str(), good);
        }
        let r = SessionId::new_random();
        assert_eq!(r.as_str().parse::<SessionId>().unwrap(), r);
    }
}

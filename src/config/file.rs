//! Reading one configuration file: what may be read (no symlinked
//! workspace file, no folders, UTF-8, a size cap), parsing and checking it,
//! and finding the line a key is on for messages and origins.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::schema::Document;
use super::{ConfigError, values};

/// Which layer a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `/etc/cci/config.toml`.
    System,
    /// `~/.config/cci/config.toml`.
    User,
    /// The workspace's `.cci.toml` (comes with the repository: gated).
    Workspace,
    /// `$CCI_CONFIG`.
    Explicit,
}

/// A file layer, parsed and checked.
#[derive(Debug, Clone)]
pub struct FileLayer {
    /// Which layer.
    pub layer: Layer,
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// Its content.
    pub doc: Document,
}

/// Largest configuration file read.
const MAX_FILE: u64 = 1 << 20;

/// Read and check the file at `path`. `Ok(None)`: it does not exist.
pub fn read_file(path: &Path, layer: Layer) -> Result<Option<FileLayer>, ConfigError> {
    let shown = path.display().to_string();
    let err = |m: String| ConfigError::new(&shown, None, None, m);
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // (A workspace that is not a folder has no .cci.toml; its own check
        // reports it.)
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        // Another user's home (HOME kept across a change of user): there is
        // no way to tell whether a file is there, and it is not ours anyway.
        Err(e) if e.kind() == ErrorKind::PermissionDenied && layer == Layer::User => {
            tracing::debug!("skipping {shown}: {e}");
            return Ok(None);
        }
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    };
    if meta.file_type().is_symlink() && layer == Layer::Workspace {
        // It came with the repository: a link could point anywhere on the host.
        return Err(err(
            "is a symlink; a workspace's .cci.toml is only read as a regular file".into(),
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if meta.is_dir() {
        return Err(err("is a directory, not a configuration file".into()));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(err(format!("is larger than {MAX_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        ConfigError::new(&shown, Some(line), None, "is not valid UTF-8")
    })?;
    let doc = parse(&text, &shown)?;
    Ok(Some(FileLayer {
        layer,
        path: path.to_path_buf(),
        text,
        doc,
    }))
}

/// Parse and check a configuration text (`source` names it in errors).
pub fn parse(text: &str, source: &str) -> Result<Document, ConfigError> {
    let doc: Document = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim().to_string();
        let key = line.and_then(|l| key_at(text, l));
        ConfigError::new(source, line, key.as_deref(), message)
    })?;
    values::validate(&doc.settings(), text, source, "")?;
    for (name, p) in doc.profiles.iter().flatten() {
        let good = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !good {
            return Err(ConfigError::new(
                source,
                line_of(text, &format!("profiles.{name}"), None),
                Some(&format!("profiles.{name}")),
                "profile names are letters, digits, '-' and '_'",
            ));
        }
        values::validate(p, text, source, &format!("profiles.{name}."))?;
    }
    Ok(doc)
}

/// The key named on line `line` (1-based), if any: `section.key`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = header(t) {
            section = h;
            if i + 1 == line {
                return Some(section);
            }
        } else if i + 1 == line {
            // Only what looks like a key: the line itself is not repeated.
            let (lhs, _) = t.split_once('=')?;
            let k = lhs.trim().trim_matches('"');
            let plain = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !plain {
                return None;
            }
            return Some(if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            });
        }
    }
    None
}

fn header(t: &str) -> Option<String> {
    let inner = t
        .strip_prefix("[[")
        .and_then(|r| r.split("]]").next())
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The line (1-based) where `section` sets `key` (or where `section` starts).
pub fn line_of(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = header(t) {
            current = h;
            if key.is_none() && current == section {
                return Some(i + 1);
            }
            continue;
        }
        let Some(k) = key else { continue };
        let Some((lhs, _)) = t.split_once('=') else {
            continue;
        };
        let lhs: String = lhs
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".");
        let full = if current.is_empty() {
            lhs
        } else {
            format!("{current}.{lhs}")
        };
        if full == format!("{section}.{k}") {
            return Some(i + 1);
        }
    }
    None
}

/// The line of flat key `k` in `text`.
pub(super) fn key_line(text: &str, k: &str) -> Option<usize> {
    // `[[mounts]]`, `[[repos]]`, and the same in a profile.
    let table_list = |name: &str| {
        k == name
            || k.strip_prefix("profiles.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(_, rest)| rest == name)
    };
    if table_list("mounts") || table_list("repos") || table_list("ports") || table_list("sockets") {
        let section = k.to_string();
        return text
            .lines()
            .position(|l| {
                header(l.trim()).is_some_and(|h| h == section) && l.trim().starts_with("[[")
            })
            .map(|i| i + 1);
    }
    let (section, key) = k.rsplit_once('.')?;
    line_of(text, section, Some(key))
        // `section = { key = ... }`: the line of the section's own key.
        .or_else(|| {
            let (outer, inner) = section.rsplit_once('.')?;
            line_of(text, outer, Some(inner))
        })
        .or_else(|| {
            // `[defaults] network` is kept as `network.mode`.
            (k.ends_with("network.mode"))
                .then(|| {
                    let prefix = k.strip_suffix("network.mode").unwrap_or("");
                    line_of(text, &format!("{prefix}defaults"), Some("network"))
                })
                .flatten()
        })
}

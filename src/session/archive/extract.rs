//! Unpacking a saved state: the hostile tar stream a container wrote, read
//! on the host. This is a security boundary.
//!
//! Owns every check on the way in: names (no absolute paths, no `..`),
//! symlinks (made last, relative, resolving inside the tree through each
//! other), special files and hard links (skipped), modes (folders 0700,
//! files 0600), and the byte, file, depth and stream limits. Must never
//! follow or write through a symlink, write outside the destination, or
//! read an entry before its size is checked; and must not know how a
//! stream reaches it (that is `session`'s).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::{ArchiveError, Limits, Tally, join, link_stays_inside};
use crate::session::tarstream;

/// The components of a tar path; `None` when absolute or holding `..`.
fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.first() == Some(&b'/') {
        return None;
    }
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    (!parts.iter().any(|c| *c == b"..")).then_some(parts)
}

/// Make the private folder `path` (or check the one there); whether it was made.
fn private_dir(path: &Path) -> io::Result<bool> {
    let made = match fs::create_dir(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Only a real folder (we never make symlinks before the end).
            if !fs::symlink_metadata(path)?.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a folder",
                    path.display()
                )));
            }
            false
        }
        Err(e) => return Err(e),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(made)
}

/// Unpack the tar stream `input` into `dest` (an existing private folder):
/// the entries under `root` (the state folder's path in the archive, e.g.
/// `.claude`) land in `dest`; names in `exclude` at its top are left out.
/// Every entry read (kept, skipped or left out) and every parent folder made
/// for one counts against the file limit, and the whole stream against
/// [`Limits::max_stream`], so no stream makes it work without end.
pub fn extract(
    input: impl Read,
    root: &str,
    dest: &Path,
    limits: &Limits,
    exclude: &[&str],
) -> Result<Tally, ArchiveError> {
    let cap = limits.max_stream();
    let mut input = tarstream::Capped::new(input, cap);
    extract_capped(&mut input, root, dest, limits, exclude)
        .and_then(|tally| {
            // What follows the end of the archive (tar pads it to a whole
            // record) is read to the end too, within the same cap: a reader
            // gone before the writer is done would break its pipe, and the
            // stream would seem cut off.
            std::io::copy(&mut input, &mut std::io::sink())?;
            Ok(tally)
        })
        .map_err(|e| match e {
            ArchiveError::Io(io) => match tarstream::too_long(&io) {
                Some(limit) => ArchiveError::StreamTooLong { limit },
                None => ArchiveError::Io(io),
            },
            other => other,
        })
}

fn extract_capped(
    input: impl Read,
    root: &str,
    dest: &Path,
    limits: &Limits,
    exclude: &[&str],
) -> Result<Tally, ArchiveError> {
    let root = components(root.as_bytes()).unwrap_or_default();
    let mut tally = Tally::default();
    // Entries read and folders made, against the file limit.
    let mut seen: u64 = 0;
    let too_many = || ArchiveError::TooManyFiles {
        limit: limits.max_files,
    };
    let mut links: Vec<(Vec<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut pending = tarstream::Pending::default();
    let mut archive = tar::Archive::new(input);
    // Raw: long names and PAX headers come here, to be size-checked first.
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if tarstream::is_extension(kind) {
            let size = entry.size();
            tarstream::extension(kind, size, &mut entry, &mut pending)?;
            continue;
        }
        if seen >= limits.max_files {
            return Err(too_many());
        }
        seen += 1;
        let path = match pending.path.take() {
            Some(p) => p,
            None => entry.path_bytes().into_owned(),
        };
        let link = pending.link.take();
        let Some(parts) = components(&path) else {
            tally.skip(&[&path], "leaves the state folder");
            continue;
        };
        if parts.len() < root.len() || parts[..root.len()] != root[..] {
            tally.skip(&parts, "outside the state folder");
            continue;
        }
        let rel = &parts[root.len()..];
        if rel.is_empty() {
            continue;
        }
        if rel.len() == 1 && exclude.iter().any(|x| x.as_bytes() == rel[0]) {
            continue;
        }
        if rel.len() > limits.max_depth {
            return Err(ArchiveError::TooDeep {
                limit: limits.max_depth,
            });
        }
        let keep = kind.is_dir() || kind.is_file() || kind.is_symlink();
        if !keep {
            let why = if kind.is_hard_link() {
                "hard link"
            } else {
                "not a file, folder or symlink"
            };
            tally.skip(rel, why);
            continue;
        }
        let to = match link {
            Some(l) => l,
            None => entry
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        };
        if kind.is_symlink() && !link_stays_inside(rel, &to) {
            tally.skip(rel, "symlink out of the state folder");
            continue;
        }
        let target = join(dest, rel);
        for i in 1..rel.len() {
            if private_dir(&join(dest, &rel[..i]))? {
                seen += 1;
                tally.entries += 1;
                if seen > limits.max_files {
                    return Err(too_many());
                }
            }
        }
        if kind.is_dir() {
            private_dir(&target)?;
        } else if kind.is_symlink() {
            links.push((rel.iter().map(|c| c.to_vec()).collect(), to));
        } else {
            let size = entry.header().size()?;
            if tally.bytes.saturating_add(size) > limits.max_bytes {
                return Err(ArchiveError::TooBig {
                    limit: limits.max_bytes,
                });
            }
            let mode = entry.header().mode().unwrap_or(0o600);
            let mtime = entry.header().mtime().unwrap_or(0);
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_file() => fs::remove_file(&target)?,
                Ok(_) => {
                    tally.skip(rel, "a folder of that name came first");
                    continue;
                }
                Err(_) => {}
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            let copied = io::copy(&mut (&mut entry).take(size), &mut file)?;
            tally.bytes += copied;
            let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            if mode & 0o100 != 0
                && let Ok(name) = std::str::from_utf8(&rel.join(&b'/'))
            {
                tally.executables.insert(name.to_string());
            }
        }
        tally.entries += 1;
    }
    make_links(dest, links, &mut tally);
    Ok(tally)
}

/// Make the symlinks of a stream, last: only those that resolve inside the
/// state folder through each other (not only read as text).
fn make_links(dest: &Path, links: Vec<(Vec<Vec<u8>>, Vec<u8>)>, tally: &mut Tally) {
    let all: HashMap<Vec<Vec<u8>>, Vec<u8>> = links.iter().cloned().collect();
    for (rel, to) in links {
        let parts: Vec<&[u8]> = rel.iter().map(Vec::as_slice).collect();
        if !tarstream::resolves_inside(&all, &rel, &to) {
            tally.skip(&parts, "symlink resolving out of the state folder");
            tally.entries -= 1;
            continue;
        }
        let at = join(dest, &parts);
        if std::os::unix::fs::symlink(OsStr::from_bytes(&to), &at).is_err() {
            tally.skip(&parts, "could not be made");
            tally.entries -= 1;
        }
    }
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;

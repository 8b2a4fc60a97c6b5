//! The agent's state folder as one tar stream, read and written on the host
//! without trusting a byte of it: the container that made it is the agent's.
//!
//! Unpacking never follows or writes through a symlink (symlinks are made
//! last, and only relative ones that resolve inside the tree, through each
//! other), never writes outside the destination, skips device nodes, FIFOs
//! and sockets, makes every folder 0700 and every file 0600 (no setuid,
//! whatever the umask), and stops at the byte, file and depth limits: every
//! entry read (kept or not) and every parent folder made counts as a file,
//! the whole stream is capped, and long-name/PAX payloads are capped before
//! they are read (see `session::tarstream`). Packing reads only regular files
//! and folders it reached without following a symlink.
//!
//! Unpacking is in `extract`, packing in `pack`; this module holds what both
//! share (limits, tally, errors, the lexical symlink check) and the host-side
//! copy and small-file helpers built on them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Caps on what one saved state may hold: a setting (`[session]`), so the
/// type lives with the configuration.
pub use crate::config::SessionLimits as Limits;

impl Limits {
    /// The most bytes one stream may carry in all, read or skipped: the
    /// byte limit plus room for the headers, padding and long names of the
    /// file limit's entries.
    pub fn max_stream(&self) -> u64 {
        self.max_bytes
            .saturating_add(self.max_files.saturating_mul(8 << 10))
            .saturating_add(1 << 20)
    }
}

/// What went through, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Entries kept (files, folders, symlinks).
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Entries left out, with why (names escaped); at most [`MAX_NOTES`].
    pub skipped: Vec<String>,
    /// How many were left out in all.
    pub skipped_count: u64,
    /// Files that were executable, relative to the state folder (UTF-8 names only).
    pub executables: BTreeSet<String>,
}

/// Skipped entries named one by one; the rest are only counted.
pub const MAX_NOTES: usize = 20;

impl Tally {
    fn skip(&mut self, rel: &[&[u8]], why: &str) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_NOTES {
            self.skipped
                .push(format!("{} ({why})", shown(&rel.join(&b'/'))));
        }
    }
}

/// Why a state could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// More bytes than allowed.
    #[error("the state holds more than {limit} bytes (the session byte limit)")]
    TooBig {
        /// The limit.
        limit: u64,
    },
    /// More entries than allowed.
    #[error("the state holds more than {limit} files (the session file limit)")]
    TooManyFiles {
        /// The limit.
        limit: u64,
    },
    /// Nested too deep.
    #[error("the state nests folders deeper than {limit} (the session depth limit)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The stream went on past every limit (skipped entries, padding).
    #[error("the state stream is longer than {limit} bytes (the session limits allow no more)")]
    StreamTooLong {
        /// The limit.
        limit: u64,
    },
    /// Reading the stream or writing the files failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A name as it may be shown on a terminal: quoted, control characters and
/// invalid UTF-8 escaped.
pub fn shown(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Whether a symlink at `rel` (components below the state folder) pointing
/// at `target` stays inside the tree, read lexically.
fn link_stays_inside(rel: &[&[u8]], target: &[u8]) -> bool {
    if target.is_empty() || target.first() == Some(&b'/') || target.contains(&0) {
        return false;
    }
    let mut depth = rel.len() as i64 - 1;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn join(root: &Path, rel: &[&[u8]]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in rel {
        p.push(OsStr::from_bytes(c));
    }
    p
}

mod extract;
mod pack;

pub use extract::extract;
pub use pack::pack;

/// Copy the folder `src` to `dest` (which must not exist) through the same
/// checks, streamed through a pipe; never follows a symlink.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    limits: &Limits,
    executables: &BTreeSet<String>,
    exclude: &[&str],
) -> Result<Tally, ArchiveError> {
    fs::create_dir(dest)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o700))?;
    let (uid, gid) = own_ids();
    let (reader, writer) = io::pipe()?;
    let (src, limits_w, exec, excl): (PathBuf, Limits, BTreeSet<String>, Vec<String>) = (
        src.to_path_buf(),
        *limits,
        executables.clone(),
        exclude.iter().map(|s| s.to_string()).collect(),
    );
    let packer = std::thread::spawn(move || {
        let excl: Vec<&str> = excl.iter().map(String::as_str).collect();
        pack(&src, "t", writer, (uid, gid), &limits_w, &exec, &excl)
    });
    let unpacked = extract(reader, "t", dest, limits, exclude);
    let packed = packer
        .join()
        .map_err(|_| io::Error::other("the copy stopped unexpectedly"))?;
    // The packer's error explains a broken stream better than the reader's.
    packed?;
    let mut tally = unpacked?;
    tally.executables = executables.clone();
    Ok(tally)
}

/// This process's uid and gid (file owners in a host-side copy).
fn own_ids() -> (u64, u64) {
    fs::metadata("/proc/self")
        .map(|m| (m.uid() as u64, m.gid() as u64))
        .unwrap_or((0, 0))
}

/// Write `data` to a new private file `path` (0600), synced.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Read at most `max` bytes of the regular file `path` (no symlink).
pub fn read_small(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::other(format!("{} is too large", path.display())));
    }
    Ok(data)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;

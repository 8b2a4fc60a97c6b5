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

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::tarstream;

/// Caps on what one saved state may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    /// Files, folders and symlinks together.
    pub max_files: u64,
    /// Folder nesting below the state folder.
    pub max_depth: usize,
}

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

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 2 << 30,
            max_files: 200_000,
            max_depth: 64,
        }
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
    extract_capped(
        tarstream::Capped::new(input, cap),
        root,
        dest,
        limits,
        exclude,
    )
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

/// Pack the folder `src` as the tar stream `out`, its entries under `root`
/// (e.g. `.claude`), owned by `uid`:`gid`; folders 0700, files 0600 (0700
/// for `executables`). Names in `exclude` at the top are left out.
pub fn pack(
    src: &Path,
    root: &str,
    out: impl Write,
    owner: (u64, u64),
    limits: &Limits,
    executables: &BTreeSet<String>,
    exclude: &[&str],
) -> Result<Tally, ArchiveError> {
    let mut tally = Tally::default();
    let mut builder = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, meta: &fs::Metadata| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        h
    };
    let root_meta = fs::symlink_metadata(src)?;
    if !root_meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a folder", src.display())).into());
    }
    let mut h = header(tar::EntryType::Directory, 0o700, &root_meta);
    builder.append_data(&mut h, root, io::empty())?;
    // (folder on the host, its path below `src`)
    let mut todo: Vec<(PathBuf, Vec<Vec<u8>>)> = vec![(src.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = todo.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().as_bytes().to_vec();
            if rel.is_empty() && exclude.iter().any(|x| x.as_bytes() == name) {
                continue;
            }
            let mut child = rel.clone();
            child.push(name);
            let parts: Vec<&[u8]> = child.iter().map(Vec::as_slice).collect();
            if parts.len() > limits.max_depth {
                return Err(ArchiveError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            let path = e.path();
            let meta = fs::symlink_metadata(&path)?;
            let in_archive = Path::new(root).join(join(Path::new(""), &parts));
            let kind = meta.file_type();
            if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
                tally.skip(&parts, "not a file, folder or symlink");
                continue;
            }
            if tally.entries >= limits.max_files {
                return Err(ArchiveError::TooManyFiles {
                    limit: limits.max_files,
                });
            }
            if kind.is_dir() {
                let mut h = header(tar::EntryType::Directory, 0o700, &meta);
                builder.append_data(&mut h, &in_archive, io::empty())?;
                todo.push((path, child.clone()));
            } else if kind.is_symlink() {
                let to = fs::read_link(&path)?;
                if !link_stays_inside(&parts, to.as_os_str().as_bytes()) {
                    tally.skip(&parts, "symlink out of the state folder");
                    continue;
                }
                let mut h = header(tar::EntryType::Symlink, 0o777, &meta);
                builder.append_link(&mut h, &in_archive, &to)?;
            } else {
                // Opened without following a symlink swapped in meanwhile,
                // and checked to be the regular file listed.
                let file = match OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(_) => {
                        tally.skip(&parts, "changed while being read");
                        continue;
                    }
                };
                let now = file.metadata()?;
                if !now.is_file() || now.ino() != meta.ino() {
                    tally.skip(&parts, "changed while being read");
                    continue;
                }
                let size = now.len();
                if tally.bytes.saturating_add(size) > limits.max_bytes {
                    return Err(ArchiveError::TooBig {
                        limit: limits.max_bytes,
                    });
                }
                let rel_name = std::str::from_utf8(&parts.join(&b'/'))
                    .unwrap_or("")
                    .to_string();
                let exec = executables.contains(&rel_name);
                let mut h = header(
                    tar::EntryType::Regular,
                    if exec { 0o700 } else { 0o600 },
                    &now,
                );
                h.set_size(size);
                // Exactly `size` bytes, even if the file shrinks meanwhile.
                let body = file.take(size).chain(io::repeat(0)).take(size);
                builder.append_data(&mut h, &in_archive, body)?;
                tally.bytes += size;
                if exec {
                    tally.executables.insert(rel_name);
                }
            }
            tally.entries += 1;
        }
    }
    builder.into_inner()?.flush()?;
    Ok(tally)
}

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

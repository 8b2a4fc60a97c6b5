//! Packing a folder on the host as a saved state's tar stream (to restore
//! into a container, or to copy a state on the host).
//!
//! Owns what goes into the stream: only regular files, folders and
//! symlinks that stay inside the tree, reached without following a
//! symlink; fixed owner and modes (folders 0700, files 0600 or 0700);
//! the byte, file and depth limits. Must never follow a symlink or read a
//! file swapped in while it was listed.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ArchiveError, Limits, Tally, join, link_stays_inside};

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

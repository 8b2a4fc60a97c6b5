//! The bounds below the tar crate on a stream from a container: a cap on
//! every byte read (kept or not), a cap on the GNU long-name and PAX payloads
//! (which the crate would read whole into memory, so they are read here, in
//! the crate's raw mode, after their size is checked), and the resolution of
//! the symlinks a stream carries through each other, to refuse any that ends
//! outside the state folder.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};

/// The largest GNU long-name/long-link or PAX payload accepted.
pub const MAX_EXTENSION: u64 = 64 << 10;

/// How many symlinks one resolution may pass through (as Linux' 40).
const MAX_HOPS: usize = 40;

/// The marker inside the [`io::Error`] of a stream longer than its cap.
#[derive(Debug)]
pub struct StreamTooLong(pub u64);

impl std::fmt::Display for StreamTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the stream is longer than {} bytes", self.0)
    }
}

impl std::error::Error for StreamTooLong {}

/// The cap a stream broke, when `e` says so.
pub fn too_long(e: &io::Error) -> Option<u64> {
    e.get_ref()?.downcast_ref::<StreamTooLong>().map(|s| s.0)
}

/// A reader that fails (with [`StreamTooLong`]) once more than its cap
/// went through.
pub struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R> Capped<R> {
    /// At most `cap` bytes of `inner`.
    pub fn new(inner: R, cap: u64) -> Self {
        Capped {
            inner,
            left: cap,
            cap,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.left = 0;
            return Err(io::Error::other(StreamTooLong(self.cap)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What extension headers say about the next entry.
#[derive(Debug, Default)]
pub struct Pending {
    /// Its path (GNU `L`, PAX `path`).
    pub path: Option<Vec<u8>>,
    /// Its link target (GNU `K`, PAX `linkpath`).
    pub link: Option<Vec<u8>>,
}

/// Whether `kind` is an extension header (it describes the next entry).
pub fn is_extension(kind: tar::EntryType) -> bool {
    kind.is_gnu_longname()
        || kind.is_gnu_longlink()
        || kind.is_pax_local_extensions()
        || kind.is_pax_global_extensions()
}

/// Read the extension entry `entry` (of kind `kind`, `size` bytes) into
/// `pending`; a payload over [`MAX_EXTENSION`] is refused before any of it
/// is read.
pub fn extension(
    kind: tar::EntryType,
    size: u64,
    entry: impl Read,
    pending: &mut Pending,
) -> io::Result<()> {
    if size > MAX_EXTENSION {
        return Err(io::Error::other(format!(
            "a long-name or PAX header of {size} bytes (at most {MAX_EXTENSION} are accepted)"
        )));
    }
    let mut data = Vec::new();
    entry.take(size).read_to_end(&mut data)?;
    let trimmed = |d: &[u8]| {
        let end = d.iter().position(|b| *b == 0).unwrap_or(d.len());
        d[..end].to_vec()
    };
    if kind.is_gnu_longname() {
        pending.path = Some(trimmed(&data));
    } else if kind.is_gnu_longlink() {
        pending.link = Some(trimmed(&data));
    } else if kind.is_pax_local_extensions() {
        for ext in tar::PaxExtensions::new(&data) {
            let ext = ext?;
            match ext.key_bytes() {
                b"path" => pending.path = Some(ext.value_bytes().to_vec()),
                b"linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Components of a link target; `None` when absolute, empty or holding NUL.
fn target_parts(target: &[u8]) -> Option<VecDeque<Vec<u8>>> {
    if target.is_empty() || target.first() == Some(&b'/') || target.contains(&0) {
        return None;
    }
    Some(target.split(|b| *b == b'/').map(<[u8]>::to_vec).collect())
}

/// Whether the symlink at `at` (components below the state folder) pointing
/// at `target` resolves inside the folder, following the other symlinks of
/// `links` (path components → target) on the way, as the kernel would. Any
/// component that is not one of `links` is taken for a folder (or missing:
/// a dangling link stays inside). Too many hops count as leaving.
pub fn resolves_inside(
    links: &HashMap<Vec<Vec<u8>>, Vec<u8>>,
    at: &[Vec<u8>],
    target: &[u8],
) -> bool {
    let Some(mut todo) = target_parts(target) else {
        return false;
    };
    let mut cur: Vec<Vec<u8>> = at[..at.len().saturating_sub(1)].to_vec();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => {}
            b".." => {
                if cur.pop().is_none() {
                    return false;
                }
            }
            _ => {
                cur.push(c);
                if let Some(next) = links.get(&cur) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return false;
                    }
                    let Some(parts) = target_parts(next) else {
                        return false;
                    };
                    cur.pop();
                    for p in parts.into_iter().rev() {
                        todo.push_front(p);
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<Vec<u8>> {
        s.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    #[test]
    fn chained_links_are_resolved_not_read() {
        let mut links = HashMap::new();
        links.insert(parts("d/l"), b"..".to_vec());
        links.insert(parts("x"), b"d/l/d/l/../../..".to_vec());
        links.insert(parts("ok"), b"d/l/d/file".to_vec());
        links.insert(parts("loop"), b"loop".to_vec());
        // `d/l` itself points at the top of the tree: inside.
        assert!(resolves_inside(&links, &parts("d/l"), b".."));
        // Lexically inside (three down, three up), resolved above the tree.
        assert!(!resolves_inside(&links, &parts("x"), b"d/l/d/l/../../.."));
        assert!(resolves_inside(&links, &parts("ok"), b"d/l/d/file"));
        assert!(!resolves_inside(&links, &parts("loop"), b"loop"));
        assert!(!resolves_inside(&links, &parts("a"), b"/etc"));
        assert!(!resolves_inside(&links, &parts("a/b"), b"../.."));
        assert!(resolves_inside(&links, &parts("a/b"), b"../c/../nothere"));
        // Through a link to an absolute path: out.
        links.insert(parts("abs"), b"/etc".to_vec());
        assert!(!resolves_inside(&links, &parts("y"), b"abs/passwd"));
    }

    #[test]
    fn the_cap_counts_every_byte() {
        let data = vec![1u8; 10_000];
        let mut out = Vec::new();
        assert!(Capped::new(&data[..], 10_000).read_to_end(&mut out).is_ok());
        let e = Capped::new(&data[..], 9_999)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(too_long(&e), Some(9_999));
    }
}

//! Files inside an instance: read, write (mode, owner), mkdir, symlink, delete,
//! stat/list, and recursive push and pull of a directory tree (in `tree`).
//!
//! Pulling is hostile-input safe: entry names are checked before any path join,
//! symlinks are recreated (never followed), special files are skipped, setuid and
//! setgid bits are dropped, and files are created with `O_EXCL` so nothing already
//! on the host is written through (see `tree`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use reqwest::Method;
use reqwest::header::HeaderMap;

use super::Client;
use super::error::{Error, Result};
use super::transport::{REQUEST_TIMEOUT, encode};

mod tree;

pub use tree::{is_safe_entry_name, relative_link};

/// What kind of file a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

impl FileKind {
    fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
        }
    }
}

/// Owner, mode and kind of a path in an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// What it is.
    pub kind: FileKind,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (e.g. `0o644`).
    pub mode: u32,
    /// Size in bytes as the daemon reports it (0 for FIFOs, sockets and devices,
    /// which the files API reports as files).
    pub size: u64,
}

/// How to write a file or create a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileWrite {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl FileWrite {
    /// Root-owned with the given mode.
    pub fn mode(mode: u32) -> Self {
        FileWrite {
            uid: 0,
            gid: 0,
            mode,
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(format!("x-incus-{name}"))
        .and_then(|v| v.to_str().ok())
}

fn info_from_headers(h: &HeaderMap) -> Result<FileInfo> {
    let kind = match header(h, "type") {
        Some("directory") => FileKind::Directory,
        Some("symlink") => FileKind::Symlink,
        Some("file") => FileKind::File,
        other => return Err(Error::Protocol(format!("unknown file type {other:?}"))),
    };
    let num = |name: &str, radix: u32| {
        header(h, name)
            .and_then(|v| u32::from_str_radix(v, radix).ok())
            .unwrap_or(0)
    };
    Ok(FileInfo {
        kind,
        uid: num("uid", 10),
        gid: num("gid", 10),
        mode: num("mode", 8),
        size: h
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

impl Client {
    fn files_path(instance: &str, path: &str) -> String {
        format!(
            "/1.0/instances/{}/files?path={}",
            encode(instance),
            encode(path)
        )
    }

    /// GET a daemon path whose answer is raw bytes (file contents, logs),
    /// read into memory: at most [`MAX_READ`] bytes, within
    /// [`REQUEST_TIMEOUT`].
    pub async fn raw_get(&self, path: &str) -> Result<(HeaderMap, Vec<u8>)> {
        let t = &self.transport;
        t.bounded(REQUEST_TIMEOUT, async {
            let resp = t.raw(t.request(Method::GET, path)).await?;
            let headers = resp.headers().clone();
            let body = t.body_capped(resp, MAX_READ).await?;
            Ok((headers, body))
        })
        .await
    }

    /// Kind, owner and mode of `path`.
    pub async fn stat_file(&self, instance: &str, path: &str) -> Result<FileInfo> {
        let resp = self
            .transport
            .raw(
                self.transport
                    .request(Method::HEAD, &Self::files_path(instance, path)),
            )
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("{path} in instance {instance}")),
                other => other,
            })?;
        info_from_headers(resp.headers())
    }

    /// Contents of a file (or a symlink's target) and its info.
    pub async fn read_file(&self, instance: &str, path: &str) -> Result<(FileInfo, Vec<u8>)> {
        let (headers, body) = self.raw_get(&Self::files_path(instance, path)).await?;
        let info = info_from_headers(&headers)?;
        if info.kind == FileKind::Directory {
            return Err(Error::BadRequest(format!("{path} is a directory")));
        }
        Ok((info, body))
    }

    /// Names in a directory.
    pub async fn list_dir(&self, instance: &str, path: &str) -> Result<Vec<String>> {
        self.transport.get(&Self::files_path(instance, path)).await
    }

    async fn post_file(
        &self,
        instance: &str,
        path: &str,
        kind: FileKind,
        how: FileWrite,
        body: reqwest::Body,
    ) -> Result<()> {
        let req = self
            .transport
            .request(Method::POST, &Self::files_path(instance, path))
            .header("X-Incus-type", kind.as_str())
            .header("X-Incus-uid", how.uid.to_string())
            .header("X-Incus-gid", how.gid.to_string())
            // A leading zero: the daemon reads the mode as octal only then.
            .header("X-Incus-mode", format!("0{:o}", how.mode & 0o7777))
            .header("X-Incus-write", "overwrite")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.transport.sync_unit(req).await
    }

    /// Write (create or replace) a file. The parent directory must exist.
    pub async fn write_file(
        &self,
        instance: &str,
        path: &str,
        contents: impl Into<reqwest::Body>,
        how: FileWrite,
    ) -> Result<()> {
        self.post_file(instance, path, FileKind::File, how, contents.into())
            .await
    }

    /// Create a directory (the parent must exist; an existing one is fine).
    pub async fn mkdir(&self, instance: &str, path: &str, how: FileWrite) -> Result<()> {
        match self
            .post_file(
                instance,
                path,
                FileKind::Directory,
                how,
                reqwest::Body::from(""),
            )
            .await
        {
            Err(e) if matches!(self.stat_file(instance, path).await, Ok(i) if i.kind == FileKind::Directory) =>
            {
                let _ = e;
                Ok(())
            }
            r => r,
        }
    }

    /// Create a directory and its missing parents, each with `how`.
    pub async fn mkdir_all(&self, instance: &str, path: &str, how: FileWrite) -> Result<()> {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = format!("{cur}/{part}");
            match self.stat_file(instance, &cur).await {
                Ok(i) if i.kind == FileKind::Directory => continue,
                Ok(_) => {
                    return Err(Error::Conflict(format!(
                        "{cur} exists and is not a directory"
                    )));
                }
                Err(e) if e.is_not_found() => self.mkdir(instance, &cur, how).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Create a symlink at `path` pointing to `target`.
    pub async fn symlink(
        &self,
        instance: &str,
        path: &str,
        target: &str,
        how: FileWrite,
    ) -> Result<()> {
        self.post_file(
            instance,
            path,
            FileKind::Symlink,
            how,
            reqwest::Body::from(target.to_string()),
        )
        .await
    }

    /// Delete a file, symlink or empty directory.
    pub async fn delete_file(&self, instance: &str, path: &str) -> Result<()> {
        self.transport
            .sync_unit(
                self.transport
                    .request(Method::DELETE, &Self::files_path(instance, path)),
            )
            .await
    }

    /// Copy one local file into the instance at `remote`, keeping its owner
    /// and mode.
    pub async fn push_file(&self, instance: &str, local: &Path, remote: &str) -> Result<()> {
        let meta = std::fs::metadata(local)
            .map_err(|e| Error::io(format!("reading {}", local.display()), e))?;
        if !meta.is_file() {
            return Err(Error::BadRequest(format!(
                "{} is not a regular file (push a folder with -r)",
                local.display()
            )));
        }
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(format!("opening {}", local.display()), e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.write_file(instance, remote, body, write_for(&meta, None))
            .await
    }
}

/// The most a file read into memory (`read_file`, recorded output) may hold.
pub const MAX_READ: usize = 16 << 20;

fn write_for(meta: &std::fs::Metadata, owner: Option<(u32, u32)>) -> FileWrite {
    let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
    FileWrite {
        uid,
        gid,
        mode: meta.mode() & 0o7777,
    }
}

//! `cci file push|pull`: copy files and folders in and out of containers.
//! A pull treats the container's content as hostile (see `incus::files`) and
//! lands atomically: into a temporary sibling first, renamed when complete.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::UsageError;
use crate::incus::{self, Client, FileKind};

/// `cci file` subcommands.
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Copy LOCAL into the container as NAME:PATH.
    Push(PushArgs),
    /// Copy NAME:PATH out of the container to LOCAL.
    Pull(PullArgs),
}

/// Options of `cci file push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Copy a folder and everything in it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// File or folder on this machine.
    pub local: PathBuf,
    /// Destination, NAME:PATH.
    pub inside: String,
}

/// Options of `cci file pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Copy a folder and everything in it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Source, NAME:PATH.
    pub inside: String,
    /// Destination on this machine (into it, when it is an existing folder).
    pub local: PathBuf,
}

/// `NAME:PATH` with an absolute PATH.
fn split_remote(spec: &str) -> anyhow::Result<(&str, &str)> {
    match spec.split_once(':') {
        Some((name, path)) if !name.is_empty() && path.starts_with('/') => Ok((name, path)),
        _ => Err(UsageError(format!("{spec:?} is not NAME:/ABSOLUTE/PATH")).into()),
    }
}

/// The last component of a container path.
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

pub async fn run(client: &Client, cmd: FileCommand) -> anyhow::Result<i32> {
    match cmd {
        FileCommand::Push(a) => push(client, a).await,
        FileCommand::Pull(a) => pull(client, a).await,
    }
}

async fn push(client: &Client, a: PushArgs) -> anyhow::Result<i32> {
    let (name, path) = split_remote(&a.inside)?;
    let meta = std::fs::metadata(&a.local)
        .map_err(|e| UsageError(format!("{}: {e}", a.local.display())))?;
    if meta.is_dir() {
        if !a.recursive {
            return Err(UsageError(format!("{} is a folder: use -r", a.local.display())).into());
        }
        client.push_tree(name, &a.local, path, None).await?;
    } else {
        client.push_file(name, &a.local, path).await?;
    }
    Ok(0)
}

async fn pull(client: &Client, a: PullArgs) -> anyhow::Result<i32> {
    let (name, path) = split_remote(&a.inside)?;
    let info = client.stat_file(name, path).await?;
    if info.kind == FileKind::Directory && !a.recursive {
        return Err(UsageError(format!("{path} is a folder: use -r")).into());
    }
    let target = if a.local.is_dir() {
        a.local.join(base_name(path))
    } else {
        a.local.clone()
    };
    if info.kind == FileKind::Directory && target.exists() {
        return Err(UsageError(format!("{} exists already", target.display())).into());
    }
    let tmp = temp_sibling(&target)?;
    let pulled = client.pull_tree(name, path, &tmp).await;
    let landed = pulled.and_then(|()| {
        std::fs::rename(&tmp, &target)
            .map_err(|e| incus::Error::io(format!("moving it to {}", target.display()), e))
    });
    if let Err(e) = landed {
        let _ = std::fs::remove_dir_all(&tmp).or_else(|_| std::fs::remove_file(&tmp));
        return Err(e.into());
    }
    Ok(0)
}

/// A name next to `target` that does not exist yet.
fn temp_sibling(target: &Path) -> anyhow::Result<PathBuf> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stem = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parent.join(format!(".{stem}.cci-pull-{}", uuid::Uuid::new_v4())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_name_and_absolute_path() {
        assert_eq!(split_remote("c1:/a/b").unwrap(), ("c1", "/a/b"));
        for bad in ["c1", ":/a", "c1:a/b", "/a/b"] {
            assert!(split_remote(bad).is_err(), "{bad}");
        }
        assert_eq!(base_name("/a/b/"), "b");
    }
}

//! Allowlist name service: an allowlist container gets no DNS at all (no
//! channel to leak data through), so the names it may reach are written into
//! its `/etc/hosts`, with the addresses the host resolved — the same ones its
//! firewall admits.
//!
//! The container owns that file and is hostile: an entry the daemon reports
//! as empty (a FIFO reports 0 bytes, and reading one never ends) is never
//! read but replaced, a large one is not read, and the whole update is bounded
//! in time, so one container cannot stall the upkeep of the others.

use std::time::Duration;

use super::Error;
use super::allow::Resolved;
use crate::incus::{Client, FileKind, FileWrite};

const BEGIN: &str = "# BEGIN cci allowlist (written by cci; resolved on the host)";
const END: &str = "# END cci allowlist";
/// A hosts file larger than this (the container made it so) is not merged.
const MAX_HOSTS: u64 = 1 << 20;
/// How long updating one container's hosts file may take, all requests included.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// `existing` with cci's block replaced by one for `resolved`.
pub fn merge(existing: &str, resolved: &Resolved) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        match line {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if !out.contains("localhost") {
        out.insert_str(
            0,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
    }
    out.push_str(BEGIN);
    out.push('\n');
    for (domain, ips) in &resolved.domains {
        for ip in ips {
            out.push_str(&format!("{ip}\t{domain}\n"));
        }
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Write `resolved` into the container's `/etc/hosts` (running or not),
/// giving up after [`TIME_LIMIT`].
pub async fn write(client: &Client, name: &str, resolved: &Resolved) -> Result<(), Error> {
    tokio::time::timeout(TIME_LIMIT, write_now(client, name, resolved))
        .await
        .map_err(|_| Error::HostsFile {
            container: name.to_string(),
            reason: format!("no answer within {} s", TIME_LIMIT.as_secs()),
        })?
}

/// What to do with the existing entry, by what the daemon reports of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// A regular file of a sane size: merge into it.
    Read,
    /// Reported empty (an empty file, or a FIFO or device, which report 0):
    /// remove it, then write a fresh one (writing into a FIFO blocks).
    Replace,
    /// Missing, too large or not a file: write a fresh one over it.
    Ignore,
}

fn existing(info: Option<(FileKind, u64)>) -> Existing {
    match info {
        Some((FileKind::File, 0)) => Existing::Replace,
        Some((FileKind::File, size)) if size <= MAX_HOSTS => Existing::Read,
        _ => Existing::Ignore,
    }
}

async fn write_now(client: &Client, name: &str, resolved: &Resolved) -> Result<(), Error> {
    let info = client.stat_file(name, "/etc/hosts").await.ok();
    let mut text = String::new();
    match existing(info.map(|i| (i.kind, i.size))) {
        Existing::Read => {
            let (_, bytes) = client.read_file(name, "/etc/hosts").await?;
            // It may have grown between the two requests.
            if bytes.len() as u64 <= MAX_HOSTS {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        Existing::Replace => client.delete_file(name, "/etc/hosts").await?,
        Existing::Ignore => {}
    }
    let text = merge(&text, resolved);
    client
        .write_file(
            name,
            "/etc/hosts",
            text.into_bytes(),
            FileWrite::mode(0o644),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(ip: &str) -> Resolved {
        let mut r = Resolved::default();
        r.domains
            .insert("api.example.com".into(), vec![ip.parse().unwrap()]);
        r
    }

    #[test]
    fn the_block_is_replaced_and_the_rest_kept() {
        let base = "127.0.0.1\tlocalhost\n10.0.0.5\tmine\n";
        let once = merge(base, &resolved("198.51.100.7"));
        assert!(once.starts_with(base));
        assert!(once.contains("198.51.100.7\tapi.example.com\n"));
        let twice = merge(&once, &resolved("198.51.100.8"));
        assert!(!twice.contains("198.51.100.7"));
        assert_eq!(twice.matches(BEGIN).count(), 1);
        assert!(twice.starts_with(base));
    }

    #[test]
    fn an_entry_reported_empty_or_large_is_never_read() {
        assert_eq!(existing(Some((FileKind::File, 0))), Existing::Replace);
        assert_eq!(existing(Some((FileKind::File, 200))), Existing::Read);
        assert_eq!(
            existing(Some((FileKind::File, MAX_HOSTS + 1))),
            Existing::Ignore
        );
        assert_eq!(
            existing(Some((FileKind::Directory, 4096))),
            Existing::Ignore
        );
        assert_eq!(existing(None), Existing::Ignore);
    }

    #[test]
    fn an_empty_file_still_resolves_localhost() {
        let out = merge("", &Resolved::default());
        assert!(out.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(out.ends_with(&format!("{BEGIN}\n{END}\n")));
    }
}

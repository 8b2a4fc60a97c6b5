//! Allowlist name service: an allowlist container gets no DNS at all (no
//! channel to leak data through), so the names it may reach are written into
//! its `/etc/hosts`, with the addresses the host resolved — the same ones its
//! firewall admits.

use super::Error;
use super::allow::Resolved;
use crate::incus::{Client, FileWrite};

const BEGIN: &str = "# BEGIN cci allowlist (written by cci; resolved on the host)";
const END: &str = "# END cci allowlist";
/// A hosts file larger than this (the container made it so) is not merged.
const MAX_HOSTS: u64 = 1 << 20;

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

/// Write `resolved` into the container's `/etc/hosts` (running or not).
pub async fn write(client: &Client, name: &str, resolved: &Resolved) -> Result<(), Error> {
    let existing = match client.stat_file(name, "/etc/hosts").await {
        Ok(info) if info.size <= MAX_HOSTS => {
            let (_, bytes) = client.read_file(name, "/etc/hosts").await?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    let text = merge(&existing, resolved);
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
    fn an_empty_file_still_resolves_localhost() {
        let out = merge("", &Resolved::default());
        assert!(out.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(out.ends_with(&format!("{BEGIN}\n{END}\n")));
    }
}

//! cci's private folder on the host (`~/.cci`) and atomic writes into it.
//! Folders are 0700 and files 0600 whatever the umask.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Seconds since 1970 as UTC (year, month, day, hour, minute, second).
pub fn utc(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since 1970 of an RFC 3339 time (`2026-12-03T14:39:07.5Z`,
/// `...+01:00`), fractions dropped; `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let (oh, om) = (
                o.get(1..3)?.parse::<i64>().ok()?,
                o.get(4..6)?.parse::<i64>().ok()?,
            );
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec - offset).ok()
}

/// `~/.cci/SUB` (or `~/.cci` for an empty `sub`), created private if missing.
pub fn dir(sub: &str) -> std::io::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| std::io::Error::other("HOME is not set"))?;
    let root = home.join(".cci");
    let dir = if sub.is_empty() {
        root.clone()
    } else {
        root.join(sub)
    };
    std::fs::create_dir_all(&dir)?;
    for d in [&root, &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// Replace `path` with `data` atomically: a private temporary sibling,
/// synced, then renamed over it. A crash leaves the old or the new file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Start `cmd` (one of cci's own background processes) detached: its own
/// process group, no input, its output appended to `~/.cci/logs/LOG`, in
/// `/` (it outlives the command that starts it, and the folder that
/// command ran in may go: git, which the forwarder runs, fails in a
/// working directory that is gone).
pub fn spawn_daemon(mut cmd: std::process::Command, log: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir("logs")?.join(log))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir("/")
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// The lock file `name` in cci's folder `sub` (created 0600): held by the
/// one process of a kind (the network watcher, the egress proxy) while it
/// runs.
pub fn lock_file(sub: &str, name: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir(sub)?.join(name))
}

/// Whether some process holds the lock file `name` of folder `sub`.
pub fn lock_held(sub: &str, name: &str) -> bool {
    match lock_file(sub, name) {
        Ok(lock) => match lock.try_lock() {
            Ok(()) => {
                let _ = lock.unlock();
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_is_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn rfc3339_times_read_back() {
        for secs in [0u64, 86_399, 951_782_400, 1_764_770_347, 4_102_444_800] {
            let (y, m, d, h, mi, se) = utc(secs);
            let t = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z");
            assert_eq!(parse_rfc3339(&t), Some(secs), "{t}");
        }
        assert_eq!(
            parse_rfc3339("2026-12-03T14:39:07.123456789Z"),
            Some(1_796_308_747)
        );
        assert_eq!(
            parse_rfc3339("2026-12-03T15:39:07+01:00"),
            Some(1_796_308_747)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-03 14:39",
            "2026-12-03T14:39:07Q",
            "0001-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}

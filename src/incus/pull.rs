//! What one `pull_tree` may cost the host: caps on bytes, entries and
//! depth of a (hostile) tree, and the modes its folders get.

use super::error::{Error, Result};

/// Caps on one [`Client::pull_tree`](super::Client::pull_tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// Bytes of file contents.
    pub max_bytes: u64,
    /// Entries of any kind (the top one included).
    pub max_entries: u64,
    /// Folder nesting below the top.
    pub max_depth: usize,
}

/// The caps of `cci file pull`.
pub const PULL_LIMITS: PullLimits = PullLimits {
    max_bytes: 16 << 30,
    max_entries: 200_000,
    max_depth: 64,
};

/// What is left of [`PullLimits`] during one pull.
#[derive(Debug)]
pub(super) struct PullBudget {
    limits: PullLimits,
    bytes: u64,
    entries: u64,
}

impl PullBudget {
    pub(super) fn new(limits: PullLimits) -> Self {
        PullBudget {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// One more entry, `depth` folders below the top.
    pub(super) fn entry(&mut self, depth: usize) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::BadRequest(format!(
                "the tree holds more than {} entries (the pull limit)",
                self.limits.max_entries
            )));
        }
        if depth > self.limits.max_depth {
            return Err(Error::BadRequest(format!(
                "the tree nests deeper than {} (the pull limit)",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    /// `n` more bytes of contents.
    pub(super) fn bytes(&mut self, n: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_bytes {
            return Err(Error::BadRequest(format!(
                "the tree holds more than {} bytes (the pull limit)",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }
}

/// This process's umask (from `/proc/self/status`; 022 when unknown).
pub(super) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// A pulled folder's mode: the container's, no special bits, less the
/// umask, and always 0700 for its owner.
pub(super) fn dir_mode(mode: u32, umask: u32) -> u32 {
    (mode & 0o777 & !umask) | 0o700
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_stop_at_their_caps() {
        let limits = PullLimits {
            max_bytes: 100,
            max_entries: 3,
            max_depth: 2,
        };
        let mut b = PullBudget::new(limits);
        for _ in 0..3 {
            b.entry(1).unwrap();
        }
        assert!(
            b.entry(1)
                .unwrap_err()
                .to_string()
                .contains("more than 3 entries")
        );
        let mut b = PullBudget::new(limits);
        b.entry(2).unwrap();
        assert!(
            b.entry(3)
                .unwrap_err()
                .to_string()
                .contains("deeper than 2")
        );
        b.bytes(60).unwrap();
        b.bytes(40).unwrap();
        assert!(
            b.bytes(1)
                .unwrap_err()
                .to_string()
                .contains("more than 100 bytes")
        );
        assert!(PullBudget::new(PULL_LIMITS).bytes(u64::MAX).is_err());
    }

    #[test]
    fn pulled_folders_honour_the_umask() {
        assert_eq!(dir_mode(0o777, 0o022), 0o755);
        assert_eq!(dir_mode(0o777, 0o077), 0o700);
        assert_eq!(dir_mode(0o7777, 0o002), 0o775);
        assert_eq!(dir_mode(0o000, 0o022), 0o700);
        // This process's umask, as the kernel has it.
        let mask = unsafe { libc::umask(0o022) };
        unsafe { libc::umask(mask) };
        assert_eq!(umask(), mask as u32);
    }
}

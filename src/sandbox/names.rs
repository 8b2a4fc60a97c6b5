//! Container names and slots: `cci-<workspace id>-<slot>`.

use std::fmt;
use std::str::FromStr;

/// Every container cci creates for a workspace starts with this.
pub const PREFIX: &str = "cci-";

/// Slot numbers start at 1 and never exceed this, whatever the configured limit.
pub const MAX_SLOT: u32 = 999;

/// One of a workspace's parallel sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u32);

/// A slot argument that is not a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot {given:?}: slots are whole numbers from 1 to {MAX_SLOT}")]
pub struct SlotError {
    given: String,
}

impl Slot {
    /// Slot 1.
    pub const MIN: Slot = Slot(1);

    /// Slot `n` (1..=[`MAX_SLOT`]).
    pub fn new(n: u32) -> Option<Slot> {
        (1..=MAX_SLOT).contains(&n).then_some(Slot(n))
    }

    /// Its number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Slot {
    type Err = SlotError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SlotError {
            given: s.to_string(),
        };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<u32>().ok().and_then(Slot::new).ok_or_else(err)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `cci-<id>-`: what every container of this workspace's name starts with.
pub fn workspace_prefix(workspace_id: &str) -> String {
    format!("{PREFIX}{workspace_id}-")
}

/// The container for this workspace and slot.
pub fn container_name(workspace_id: &str, slot: Slot) -> String {
    format!("{}{slot}", workspace_prefix(workspace_id))
}

/// The workspace id and slot in a cci container name, if it is one.
pub fn parse_container_name(name: &str) -> Option<(&str, Slot)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (id, slot) = rest.split_once('-')?;
    let valid_id = id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid_id.then_some(())?;
    Some((id, slot.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_whole_numbers_from_one() {
        assert_eq!("3".parse::<Slot>().unwrap().get(), 3);
        for bad in [
            "0",
            "-1",
            "abc",
            "",
            "1.5",
            "+2",
            " 2",
            "1000",
            "99999999999",
        ] {
            assert!(bad.parse::<Slot>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip_and_stay_valid_for_incus() {
        let name = container_name("0123abcd", Slot::new(12).unwrap());
        assert_eq!(name, "cci-0123abcd-12");
        assert_eq!(
            parse_container_name(&name),
            Some(("0123abcd", Slot::new(12).unwrap()))
        );
        assert!(name.len() <= 63);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(parse_container_name("cci-xyz-1"), None);
        assert_eq!(parse_container_name("other-0123abcd-1"), None);
        assert_eq!(parse_container_name("cci-0123abcd-0"), None);
    }
}

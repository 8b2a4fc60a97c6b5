//! An instance's status as the daemon reports it (`Running`, `Stopped`,
//! `Frozen`, ...), typed. Read from and written as the daemon's own word, so
//! what cci prints and serializes is the daemon's text unchanged.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instance's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InstanceStatus {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Frozen (paused).
    Frozen,
    /// Any other word the daemon uses (`Starting`, `Error`...).
    Other(String),
    /// Not reported.
    #[default]
    Unknown,
}

impl InstanceStatus {
    /// The status the daemon's word `s` names.
    pub fn parse(s: &str) -> InstanceStatus {
        match s {
            "Running" => InstanceStatus::Running,
            "Stopped" => InstanceStatus::Stopped,
            "Frozen" => InstanceStatus::Frozen,
            "" => InstanceStatus::Unknown,
            other => InstanceStatus::Other(other.to_string()),
        }
    }

    /// The daemon's word for it (empty when not reported).
    pub fn as_str(&self) -> &str {
        match self {
            InstanceStatus::Running => "Running",
            InstanceStatus::Stopped => "Stopped",
            InstanceStatus::Frozen => "Frozen",
            InstanceStatus::Other(s) => s,
            InstanceStatus::Unknown => "",
        }
    }
}

impl From<&str> for InstanceStatus {
    fn from(s: &str) -> InstanceStatus {
        InstanceStatus::parse(s)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for InstanceStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InstanceStatus, D::Error> {
        Ok(InstanceStatus::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceStatus;

    #[test]
    fn the_daemons_word_goes_through_unchanged() {
        for word in ["Running", "Stopped", "Frozen", "Starting", "Error", ""] {
            let s: InstanceStatus = serde_json::from_value(word.into()).unwrap();
            assert_eq!(s.as_str(), word);
            assert_eq!(serde_json::to_value(&s).unwrap(), word);
            assert_eq!(s.to_string(), word);
        }
        assert_eq!(InstanceStatus::parse("Running"), InstanceStatus::Running);
        assert_eq!(
            InstanceStatus::parse("Thawing"),
            InstanceStatus::Other("Thawing".into())
        );
        assert_eq!(InstanceStatus::default().as_str(), "");
    }
}

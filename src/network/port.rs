//! Port names: a container NIC's host-side interface name as cci makes it.
//!
//! [`PortName`] is the only thing that may reach an nft script (or any other
//! policy backend) as an interface: it can only be made by [`PortName::random`]
//! or by [`PortName::parse`], which admits cci's own shape and nothing else,
//! so no name read from the daemon or a container can inject into a rule.
//! Keep that guarantee: no other constructor, no `From<String>`. Pure.

use super::Error;
use crate::incus::Instance;

/// What every port name starts with; the firewall drops frames from any
/// interface with this prefix that has no rules.
pub const PORT_PREFIX: &str = "cci";

/// A container NIC's host-side interface name as cci makes them: `cci` and
/// 12 hex digits (15 characters, the kernel's limit). Nothing else ever gets
/// into an nft script as a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortName(String);

impl PortName {
    /// A fresh random name.
    pub fn random() -> PortName {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        PortName(format!("{PORT_PREFIX}{}", &hex[..12]))
    }

    /// Accept only names of cci's shape.
    pub fn parse(s: &str) -> Result<PortName, Error> {
        let ok = s.len() == 15
            && s.starts_with(PORT_PREFIX)
            && s[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(PortName(s.to_string()))
        } else {
            Err(Error::Nft(format!("{s:?} is not a cci port name")))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The guarded NIC of an instance: its host-side interface, if cci named it.
pub fn port_of(instance: &Instance) -> Option<PortName> {
    instance
        .expanded_devices
        .values()
        .filter(|d| d.get("type").is_some_and(|t| t == "nic"))
        .find_map(|d| PortName::parse(d.get("host_name")?).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_cci_plus_12_hex() {
        let p = PortName::random();
        assert_eq!(p.as_str().len(), 15);
        assert!(PortName::parse(p.as_str()).is_ok());
        for bad in [
            "cci0123456789a",
            "eth0",
            "cci0123456789aB",
            "cci01234567\"; x",
            "",
        ] {
            assert!(PortName::parse(bad).is_err(), "{bad:?}");
        }
    }
}

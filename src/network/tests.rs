//! Unit tests of guarding: the NIC the profiles give, the bridge.

use super::guard::{bridge_of, the_nic};
use super::*;
use crate::incus::transport::StringMap;

fn nic(network: &str) -> StringMap {
    let mut d = StringMap::new();
    d.insert("type".into(), "nic".into());
    d.insert("network".into(), network.into());
    d
}

#[test]
fn more_than_one_nic_is_refused_naming_the_devices() {
    let mut disk = StringMap::new();
    disk.insert("type".into(), "disk".into());
    let default = std::collections::HashMap::from([
        ("eth0".to_string(), nic("incusbr0")),
        ("root".to_string(), disk),
    ]);
    let (key, dev) = the_nic(vec![("default".into(), default.clone())])
        .unwrap()
        .unwrap();
    assert_eq!(
        (key.as_str(), dev["network"].as_str()),
        ("eth0", "incusbr0")
    );
    // Same name in a later profile: replaced, still one.
    let same = std::collections::HashMap::from([("eth0".to_string(), nic("other"))]);
    let one = the_nic(vec![
        ("default".into(), default.clone()),
        ("p".into(), same),
    ]);
    assert_eq!(one.unwrap().unwrap().1["network"], "other");
    // A second NIC under another name: refused, both named.
    let extra = std::collections::HashMap::from([("eth1".to_string(), nic("lan"))]);
    let err = the_nic(vec![("default".into(), default), ("two".into(), extra)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"eth0\" (profile \"default\")"), "{err}");
    assert!(err.contains("\"eth1\" (profile \"two\")"), "{err}");
    assert_eq!(the_nic(vec![]).unwrap(), None);
}

#[test]
fn bridge_addresses_come_from_the_network_config() {
    let mut c = StringMap::new();
    c.insert("ipv4.address".into(), "10.1.2.1/24".into());
    c.insert("ipv6.address".into(), "none".into());
    assert_eq!(
        bridge_of(&c),
        Bridge {
            v4: Some("10.1.2.1".parse().unwrap()),
            v6: None
        }
    );
}

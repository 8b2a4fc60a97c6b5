//! Unit tests of guarding: the NIC the profiles give, the bridge, and the
//! fail-closed order of guard / start / release against the fake backend
//! and a fake daemon.

use super::fake::{Call, FakeBackend, Log, Op};
use super::guard::{Daemon, bridge_of, guarded_create, the_nic};
use super::*;
use crate::incus::InstanceCreate;
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

fn attachment(mode: Mode, with_nic: bool) -> Attachment {
    Attachment {
        policy: Policy {
            mode,
            ..Policy::default()
        },
        nic: with_nic.then(|| ("eth0".to_string(), nic("incusbr0"))),
        bridge: Bridge::default(),
        resolved: allow::Resolved::default(),
        remote: None,
        acl: None,
    }
}

#[test]
fn guard_puts_the_ports_policy_in_force() {
    let fw = FakeBackend::new();
    let port = PortName::random();
    attachment(Mode::Restricted, true)
        .guard(&fw, &port)
        .unwrap();
    assert_eq!(fw.calls(), [Call::Guard(port.clone(), Mode::Restricted)]);
    assert_eq!(fw.ports(), [port]);
}

#[test]
fn without_a_nic_there_is_nothing_to_guard() {
    let fw = FakeBackend::new();
    fw.fail(Op::Guard);
    attachment(Mode::Restricted, false)
        .guard(&fw, &PortName::random())
        .unwrap();
    assert!(fw.calls().is_empty());
}

#[test]
fn a_failing_backend_refuses_the_guard_except_in_open_mode() {
    let port = PortName::random();
    for mode in [Mode::Restricted, Mode::Open] {
        let fw = FakeBackend::new();
        fw.fail(Op::Guard);
        let r = attachment(mode, true).guard(&fw, &port);
        assert_eq!(r.is_ok(), mode == Mode::Open, "{mode}");
        assert!(fw.ports().is_empty());
    }
}

#[test]
fn release_removes_that_port_only_and_nothing_is_fine() {
    let (a, b) = (PortName::random(), PortName::random());
    let fw = FakeBackend::with_ports(&[&a, &b]);
    release(&fw, &a).unwrap();
    assert_eq!(fw.ports(), std::slice::from_ref(&b));
    release(&fw, &a).unwrap();
    assert_eq!(fw.calls(), [Call::Release(a.clone()), Call::Release(a)]);
    fw.fail(Op::Release);
    assert!(release(&fw, &b).is_err());
}

/// A daemon that records its steps in the backend's log (so the order of
/// both sides shows) and fails where told.
struct FakeDaemon {
    log: Log,
    fail_create: bool,
    fail_start: bool,
    acl_on_nic: Option<String>,
}

impl FakeDaemon {
    fn on(fw: &FakeBackend) -> FakeDaemon {
        FakeDaemon {
            log: fw.log.clone(),
            fail_create: false,
            fail_start: false,
            acl_on_nic: None,
        }
    }

    fn step(&self, what: String, fail: bool) -> Result<(), Error> {
        self.log.lock().unwrap().push(Call::Daemon(what.clone()));
        if fail {
            return Err(Error::Nft(format!("{what} failed")));
        }
        Ok(())
    }
}

impl Daemon for FakeDaemon {
    async fn create(&self, req: &InstanceCreate) -> Result<(), Error> {
        let port = req.devices["eth0"]
            .get("host_name")
            .cloned()
            .unwrap_or_default();
        let what = format!("create {} start={} port={port}", req.name, req.start);
        self.step(what, self.fail_create)
    }

    async fn write_hosts(&self, name: &str, _: &allow::Resolved) -> Result<(), Error> {
        self.step(format!("hosts {name}"), false)
    }

    async fn write_apt_conf(&self, name: &str, _: &Bridge) -> Result<(), Error> {
        self.step(format!("apt {name}"), false)
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        self.step(format!("start {name}"), self.fail_start)
    }

    async fn discard(&self, name: &str) {
        let _ = self.step(format!("discard {name}"), false);
    }

    async fn put_acl(&self, acl: &crate::incus::acls::NetworkAcl) -> Result<(), Error> {
        self.step(format!("acl {}", acl.name), false)
    }

    async fn acl_of(&self, name: &str) -> Result<Option<String>, Error> {
        self.step(format!("acl of {name}"), false)?;
        Ok(self.acl_on_nic.clone())
    }

    async fn drop_acl(&self, name: &str) {
        let _ = self.step(format!("drop acl {name}"), false);
    }
}

fn request() -> InstanceCreate {
    InstanceCreate {
        name: "cci-ws-1".into(),
        start: true,
        ..InstanceCreate::default()
    }
}

fn daemon(what: &str) -> Call {
    Call::Daemon(what.to_string())
}

#[tokio::test]
async fn created_stopped_then_guarded_then_started() {
    let fw = FakeBackend::new();
    let port = PortName::random();
    let att = attachment(Mode::Restricted, true);
    guarded_create(&FakeDaemon::on(&fw), &fw, &att, request(), port.clone())
        .await
        .unwrap();
    assert_eq!(
        fw.calls(),
        [
            daemon(&format!("create cci-ws-1 start=false port={port}")),
            Call::Guard(port.clone(), Mode::Restricted),
            daemon("start cci-ws-1"),
        ]
    );
    assert_eq!(fw.ports(), [port]);
}

#[tokio::test]
async fn a_failed_rule_install_leaves_the_container_not_started() {
    let fw = FakeBackend::new();
    fw.fail(Op::Guard);
    let port = PortName::random();
    let att = attachment(Mode::Restricted, true);
    let r = guarded_create(&FakeDaemon::on(&fw), &fw, &att, request(), port.clone()).await;
    assert!(r.is_err());
    assert_eq!(
        fw.calls(),
        [
            daemon(&format!("create cci-ws-1 start=false port={port}")),
            Call::Guard(port.clone(), Mode::Restricted),
            daemon("discard cci-ws-1"),
            Call::Release(port),
        ]
    );
}

#[tokio::test]
async fn a_failed_start_discards_the_container_then_its_rules() {
    let fw = FakeBackend::new();
    let port = PortName::random();
    let att = attachment(Mode::Restricted, true);
    let mut d = FakeDaemon::on(&fw);
    d.fail_start = true;
    assert!(
        guarded_create(&d, &fw, &att, request(), port.clone())
            .await
            .is_err()
    );
    let calls = fw.calls();
    assert_eq!(
        calls[2..],
        [
            daemon("start cci-ws-1"),
            daemon("discard cci-ws-1"),
            Call::Release(port),
        ]
    );
    assert!(fw.ports().is_empty());
}

#[tokio::test]
async fn a_failed_create_is_left_to_the_caller() {
    // The create request claims the name: a conflict there is another
    // launch's container, which must not be discarded nor released.
    let fw = FakeBackend::new();
    let port = PortName::random();
    let att = attachment(Mode::Restricted, true);
    let mut d = FakeDaemon::on(&fw);
    d.fail_create = true;
    assert!(
        guarded_create(&d, &fw, &att, request(), port)
            .await
            .is_err()
    );
    assert_eq!(fw.calls().len(), 1, "{:?}", fw.calls());
}

#[tokio::test]
async fn open_mode_starts_even_when_the_backend_fails() {
    let fw = FakeBackend::new();
    fw.fail(Op::Guard);
    let port = PortName::random();
    let att = attachment(Mode::Open, true);
    guarded_create(&FakeDaemon::on(&fw), &fw, &att, request(), port)
        .await
        .unwrap();
    assert_eq!(fw.calls().last(), Some(&daemon("start cci-ws-1")));
}

fn remote_attachment() -> Attachment {
    let mut att = attachment(Mode::Restricted, true);
    att.remote = Some("far".into());
    att.acl = crate::network::acl::plan(
        "cci-0123456789ab",
        &att.policy,
        &crate::network::acl::BridgeNets {
            v4: Some("10.50.0.1/24".parse().unwrap()),
            v6: None,
        },
        &[],
        1,
    );
    att
}

#[tokio::test]
async fn on_a_remote_the_acl_comes_first_and_must_be_on_the_nic_before_the_start() {
    let fw = crate::network::backend::Remote {
        remote: "far".into(),
    };
    let log_of = FakeBackend::new();
    let mut d = FakeDaemon::on(&log_of);
    d.acl_on_nic = Some("cci-0123456789ab".into());
    let att = remote_attachment();
    guarded_create(&d, &fw, &att, request(), PortName::random())
        .await
        .unwrap();
    assert_eq!(
        log_of.calls(),
        [
            daemon("acl cci-0123456789ab"),
            daemon("create cci-ws-1 start=false port="),
            daemon("acl of cci-ws-1"),
            daemon("start cci-ws-1"),
        ]
    );
    // Its NIC carries the ACL, drops the rest both ways, has no cci port.
    let mut req = request();
    att.attach(&mut req, &PortName::random());
    let nic = &req.devices["eth0"];
    assert_eq!(nic["security.acls"], "cci-0123456789ab");
    assert_eq!(nic["security.acls.default.egress.action"], "drop");
    assert_eq!(nic["security.acls.default.ingress.action"], "drop");
    assert!(!nic.contains_key("host_name"));

    // The NIC does not carry it as the daemon has it: never started, and
    // the container and the ACL go.
    let log_of = FakeBackend::new();
    let d = FakeDaemon::on(&log_of);
    let err = guarded_create(&d, &fw, &att, request(), PortName::random())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not carry network ACL"),
        "{err}"
    );
    let calls = log_of.calls();
    assert!(!calls.contains(&daemon("start cci-ws-1")), "{calls:?}");
    assert!(calls.contains(&daemon("discard cci-ws-1")), "{calls:?}");
    assert!(
        calls.contains(&daemon("drop acl cci-0123456789ab")),
        "{calls:?}"
    );
}

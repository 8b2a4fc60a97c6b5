//! The firewall's fail-open paths, closed (issue 23): upkeep across Incus
//! projects, a port missing from the rule map, DHCP/DHCPv6 exceptions bound
//! to the bridge, more than one NIC, and a hostile /etc/hosts. Against the
//! real daemon and nftables, in the fake world of `tests/fixtures/fakenet.sh`;
//! every "blocked" probe has a positive control.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::*;
use common::{TestInstance, client, test_image, unique_name};
use serde_json::Value;

const DHCP_HITS: &str = "/run/cci-fakenet/dhcp-hits.log";
const ALLOWED: &str = "198.51.100.20";

fn incus(args: &[&str]) {
    let out = Command::new("incus").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "incus {args:?}: {}",
        text(&out.stderr)
    );
}

/// An Incus project (sharing the default project's images and profiles),
/// deleted on drop — after the containers in it, which must be declared later.
struct Project(String);

impl Project {
    fn new() -> Project {
        let name = format!("cci-test-p{}", std::process::id());
        incus(&[
            "project",
            "create",
            &name,
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=false",
        ]);
        Project(name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new("incus")
            .args(["project", "delete", &self.0])
            .output();
    }
}

/// An Incus profile deleted on drop.
struct Profile(String);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = Command::new("incus")
            .args(["profile", "delete", &self.0])
            .output();
    }
}

/// The host-side port of `name` in `project`, as the daemon records it.
fn port_in(project: &str, name: &str) -> String {
    let out = Command::new("incus")
        .args(["query", &format!("/1.0/instances/{name}?project={project}")])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["expanded_devices"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|d| d["host_name"].as_str().map(str::to_string))
        .unwrap()
}

fn inet_table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", "cci"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn unguarded_drops() -> u64 {
    let out = Command::new("nft")
        .args(["-j", "list", "counter", "bridge", "cci", "unguarded"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

/// Restricted-mode isolation, as seen from `name`.
fn isolated(via: Via, name: &str) {
    expect_via(
        via,
        name,
        &[
            (p("tcp", INTERNET, 8080), true),
            (p("tcp", LAN[0], 8080), false),
            (p("tcp", METADATA, 8080), false),
            (p("tcp", HOST_LOCAL, 18080), false),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upkeep_from_the_default_project_keeps_another_projects_rules() {
    let _turn = world().await;
    stop_watcher();
    let project = Project::new();
    let pr = launch_in(Some(&project.0), "net-proj", &[]).await;
    let port = port_in(&project.0, &pr.name);
    assert!(guarded_ports().contains(&port));

    // Every kind of upkeep, from the default project: an explicit repair,
    // `clean --orphans`, any command's own check, and the watcher (it
    // started with the launch, in the default project: two passes of its
    // own, seen by it putting back a deleted table).
    ok(&["network", "repair"]);
    ok(&["clean", "--orphans"]);
    ok(&["network", "status"]);
    eventually("the watcher runs", 10, watcher_running);
    for _ in 0..2 {
        delete_table("inet");
        eventually("the watcher restores the table", 15, inet_table_exists);
    }
    assert!(
        guarded_ports().contains(&port),
        "upkeep from the default project released {port}"
    );
    isolated(Via::Incus(Some(&project.0)), &pr.name);

    // The watcher also puts back a lost entry of that project's container.
    let gone = format!("delete element bridge cci out_ports {{ \"{port}\" }}");
    let ok_ = Command::new("nft").arg(&gone).status().unwrap();
    assert!(ok_.success());
    eventually("the watcher restores the entry", 15, || {
        guarded_ports().contains(&port)
    });
    isolated(Via::Incus(Some(&project.0)), &pr.name);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_missing_from_the_map_is_blocked_not_opened() {
    let _turn = world().await;
    let r = launch("net-nomap", &[]).await;
    let port = port_of(&r.name);
    // Nothing may repair the rules while the entry is gone: no watcher,
    // and the probes go through `incus exec`, not cci.
    stop_watcher();
    let via = Via::Incus(None);
    isolated(via, &r.name);

    let hits0 = lines(HITS).len();
    let drops0 = unguarded_drops();
    let gone = format!("delete element bridge cci out_ports {{ \"{port}\" }}");
    assert!(Command::new("nft").arg(&gone).status().unwrap().success());
    assert!(!guarded_ports().contains(&port));
    expect_via(
        via,
        &r.name,
        &[
            (p("tcp", INTERNET, 8080), false),
            (p("udp", INTERNET, 9999), false),
            (p("tcp", LAN[0], 8080), false),
            (p("tcp", METADATA, 8080), false),
            (p("tcp", HOST_LOCAL, 18080), false),
        ],
    );
    let seen = hits_since(HITS, hits0);
    assert!(seen.is_empty(), "reached without rules: {seen:?}");
    assert!(unguarded_drops() > drops0, "not dropped as unguarded");

    // Upkeep puts the entry back, and with it the container's own policy.
    ok(&["network", "repair"]);
    assert!(guarded_ports().contains(&port));
    isolated(via, &r.name);
}

#[tokio::test(flavor = "multi_thread")]
async fn dhcp_server_ports_of_other_hosts_are_unreachable() {
    let _turn = world().await;
    fakenet(&["listen-dhcp"]);
    let r = launch("net-dhcp-r", &[]).await;
    let a = launch(
        "net-dhcp-a",
        &["--network", "allowlist", "--allow", ALLOWED],
    )
    .await;
    // Both got their address from the bridge's DHCP server (launch waits for it).

    let hits0 = lines(DHCP_HITS).len();
    expect(
        &r.name,
        &[
            (p("udp", INTERNET, 67), true), // restricted: the internet, any port
            (p("udp", LAN[0], 67), false),
            (p("udp", LAN[1], 67), false),
            (p("udp", LAN[2], 547), false),
            (p("udp", LAN[0], 9999), false),
        ],
    );
    let seen = hits_since(DHCP_HITS, hits0);
    for lan in LAN {
        assert!(!seen.iter().any(|l| l.contains(lan)), "{lan}: {seen:?}");
    }

    let hits0 = lines(DHCP_HITS).len();
    expect(
        &a.name,
        &[
            (p("udp", ALLOWED, 67), true), // allowed host: any port
            (p("udp", ALLOWED, 9999), true),
            (p("udp", INTERNET, 67), false),
            (p("udp", INTERNET, 547), false),
            (p("udp", LAN[0], 67), false),
        ],
    );
    let seen = hits_since(DHCP_HITS, hits0);
    for blocked in [INTERNET, LAN[0]] {
        assert!(
            !seen.iter().any(|l| l.contains(blocked)),
            "{blocked}: {seen:?}"
        );
    }
    assert!(seen.iter().any(|l| l.contains(&format!("{ALLOWED}:67"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn dhcpv6_server_ports_of_other_hosts_are_unreachable() {
    const INTERNET6: &str = "2001:db8:99::10";
    const ULA: &str = "fd99::10";
    let _turn = world().await;
    fakenet(&["listen-dhcp"]);
    // launch_v6 waits for a global IPv6 address: SLAAC/DHCPv6 from the bridge work.
    let r = launch_v6("net-dhcp6-r", &[]).await;
    let a = launch_v6(
        "net-dhcp6-a",
        &["--network", "allowlist", "--allow", ALLOWED],
    )
    .await;

    let hits0 = lines(DHCP_HITS).len();
    expect(
        &r.name,
        &[
            (p("udp", INTERNET6, 547), true),
            (p("udp", ULA, 547), false),
            (p("udp", ULA, 67), false),
        ],
    );
    let seen = hits_since(DHCP_HITS, hits0);
    assert!(!seen.iter().any(|l| l.contains(ULA)), "{seen:?}");

    let hits0 = lines(DHCP_HITS).len();
    expect(
        &a.name,
        &[
            (p("udp", ALLOWED, 67), true),
            (p("udp", INTERNET6, 547), false),
            (p("udp", ULA, 547), false),
        ],
    );
    let seen = hits_since(DHCP_HITS, hits0);
    for blocked in [INTERNET6, ULA] {
        assert!(
            !seen.iter().any(|l| l.contains(blocked)),
            "{blocked}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_nic_is_refused_naming_both() {
    let _turn = world().await;
    let profile = Profile(format!("cci-test-2nic-{}", std::process::id()));
    incus(&["profile", "create", &profile.0]);
    incus(&[
        "profile",
        "device",
        "add",
        &profile.0,
        "eth1",
        "nic",
        "network=incusbr0",
        "name=eth1",
    ]);
    let name = unique_name("net-2nic");
    let _guard = TestInstance {
        name: name.clone(),
        client: client().await,
    };
    let out = cci_out(&[
        "container",
        "launch",
        &test_image(),
        &name,
        "--incus-profile",
        "default",
        "--incus-profile",
        &profile.0,
    ]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "launched: {err}");
    assert!(
        err.contains("more than one network device")
            && err.contains("\"eth0\"")
            && err.contains("\"eth1\""),
        "{err}"
    );
    assert_eq!(
        cci_out(&["container", "exists", &name]).status.code(),
        Some(1)
    );
    // Positive control: the default profile alone launches.
    let _one = launch("net-1nic", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_for_etc_hosts_does_not_stall_the_others_refresh() {
    let _turn = world().await;
    stop_watcher();
    fakenet(&[
        "dns",
        "fifo.allowed.test=198.51.100.20",
        "fine.allowed.test=198.51.100.20",
    ]);
    let dns = format!("--dns-server={DNS}");
    let net = |domain| ["--network", "allowlist", "--allow", domain, &dns];
    // The hostile one first: refresh meets it before the other.
    let hostile = launch("net-fifo-a", &net("fifo.allowed.test")).await;
    let fine = launch("net-fifo-b", &net("fine.allowed.test")).await;
    let resolve = |name: &str, domain: &str| {
        sh_via(
            Via::Incus(None),
            name,
            &format!("getent hosts {domain} | awk '{{print $1}}'"),
        )
        .1
        .trim()
        .to_string()
    };
    assert_eq!(resolve(&fine.name, "fine.allowed.test"), ALLOWED);
    assert_eq!(sh(&hostile.name, "rm /etc/hosts && mkfifo /etc/hosts").0, 0);

    fakenet(&[
        "dns",
        "fifo.allowed.test=198.51.100.30",
        "fine.allowed.test=198.51.100.30",
    ]);
    let started = Instant::now();
    let mut child = common::cci()
        .args(["network", "refresh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bound = Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.is_some(), "refresh did not return within {bound:?}");
    assert_eq!(resolve(&fine.name, "fine.allowed.test"), "198.51.100.30");
}

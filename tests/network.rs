//! Network isolation against the real daemon and nftables, with a fake
//! world of network namespaces (`tests/fixtures/fakenet.sh`): no packet ever
//! leaves this machine. Every "blocked" probe has a positive control (the
//! same probe from an open container, or to an allowed host, succeeds) and
//! attribution (the fake host saw nothing and cci's drop counter rose).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::*;
use common::{TestInstance, cci, client, test_image, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn restricted_reaches_the_internet_only_and_open_reaches_everything() {
    let _turn = world().await;
    let r1 = launch("net-r1", &[]).await;
    let r2 = launch("net-r2", &["--network", "restricted"]).await;
    let o1 = launch("net-o1", &["--network", "open"]).await;
    let bridge = ip_of(&r1.name)
        .rsplit_once('.')
        .map(|(n, _)| format!("{n}.1"))
        .unwrap();
    let r2_ip = ip_of(&r2.name);

    let blocked_world: Vec<Probe> = LAN
        .iter()
        .chain([&METADATA])
        .flat_map(|a| [p("tcp", a, 8080), p("udp", a, 9999), p("icmp", a, 0)])
        .collect();
    let host = [
        p("tcp", &bridge, 18080),
        p("udp", &bridge, 19999),
        p("tcp", HOST_LOCAL, 18080),
        p("udp", HOST_LOCAL, 19999),
        p("icmp", HOST_LOCAL, 0),
    ];
    let internet = [
        p("tcp", INTERNET, 8080),
        p("udp", INTERNET, 9999),
        p("icmp", INTERNET, 0),
        // Name service on the bridge stays reachable.
        p("conn", &bridge, 53),
    ];

    // Restricted: the internet yes; LAN, metadata, the host, another slot no.
    let (hits0, host_hits0, icmp0) = (lines(HITS).len(), lines(HOST_HITS).len(), icmp_count());
    let before = status();
    let mut matrix: Vec<(Probe, bool)> = internet.iter().map(|p| (p.clone(), true)).collect();
    matrix.extend(blocked_world.iter().map(|p| (p.clone(), false)));
    matrix.extend(host.iter().map(|p| (p.clone(), false)));
    matrix.push((p("icmp", &r2_ip, 0), false));
    expect(&r1.name, &matrix);
    // Attribution: the fake LAN, metadata and the host saw nothing of r1...
    let seen = hits_since(HITS, hits0);
    for a in LAN.iter().chain([&METADATA]) {
        assert!(
            !seen.iter().any(|l| l.contains(&format!(" {a}:"))),
            "{a} was reached: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains(INTERNET)),
        "control: {seen:?}"
    );
    assert_eq!(hits_since(HOST_HITS, host_hits0), Vec::<String>::new());
    assert!(icmp_count() - icmp0 <= 1, "only the internet ping arrives");
    // ...and cci's counters say it dropped them.
    let after = status();
    let rose = |key: &str| after[key].as_u64().unwrap() > before[key].as_u64().unwrap();
    assert!(rose("to_host_dropped"), "{after}");
    assert!(rose("between_containers_dropped"), "{after}");
    assert!(
        row(&after, &r1.name)["dropped"].as_u64().unwrap()
            > row(&before, &r1.name)["dropped"].as_u64().unwrap() + 10
    );
    assert_eq!(row(&after, &r1.name)["mode"], "restricted");

    // Positive control: the same probes from an open container all answer;
    // only the restricted slot stays out of reach (isolated both ways).
    let host_hits1 = lines(HOST_HITS).len();
    let mut control: Vec<(Probe, bool)> = internet.iter().map(|p| (p.clone(), true)).collect();
    control.extend(blocked_world.iter().map(|p| (p.clone(), true)));
    control.extend(host.iter().map(|p| (p.clone(), true)));
    control.push((p("icmp", &r2_ip, 0), false));
    expect(&o1.name, &control);
    assert!(hits_since(HOST_HITS, host_hits1).len() >= 4);
    assert_eq!(row(&status(), &o1.name)["dropped"], 0);

    // Spoofing: a second address, or another container's, gets nowhere;
    // the real one still works.
    let (code, out) = sh(
        &r1.name,
        &format!(
            "ip addr add {n}.250/24 dev eth0 && ip addr add {r2_ip}/32 dev eth0 || exit 9
             for src in {n}.250 {r2_ip}; do curl -s --http0.9 -m 3 --interface $src http://{INTERNET}:8080/ && echo \"leak $src\"; done
             # Spoofed ARP may have cost the container its gateway; its own address still works.
             ip addr del {n}.250/24 dev eth0; ip addr del {r2_ip}/32 dev eth0; ip neigh flush dev eth0
             for i in $(seq 10); do curl -s --http0.9 -m 3 http://{INTERNET}:8080/ >/dev/null && {{ echo real-ok; break; }}; sleep 1; done",
            n = bridge.rsplit_once('.').unwrap().0
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("leak") && out.contains("real-ok"), "{out}");
    let (_, out) = sh(
        &r1.name,
        &format!(
            "ip link set eth0 down; ip link set eth0 address 02:cc:00:00:00:01; ip link set eth0 up; sleep 1; curl -s --http0.9 -m 3 http://{INTERNET}:8080/ || echo mac-blocked"
        ),
    );
    assert!(
        out.contains("mac-blocked"),
        "a changed MAC must not get through: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlist_admits_only_public_answers_refreshes_and_never_widens() {
    let _turn = world().await;
    fakenet(&[
        "dns",
        "api.allowed.test=198.51.100.20",
        "mixed.allowed.test=198.51.100.10",
        "mixed.allowed.test=169.254.169.254",
        "private.allowed.test=10.99.0.10",
    ]);
    let dns = format!("--dns-server={DNS}");

    // Fail closed: a domain that only resolves to a private address.
    let name = unique_name("net-bad");
    let _bad = TestInstance {
        name: name.clone(),
        client: client().await,
    };
    let out = cci_out(&[
        "container",
        "launch",
        &test_image(),
        &name,
        "--network",
        "allowlist",
        "--allow",
        "private.allowed.test",
        &dns,
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("private.allowed.test"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        cci_out(&["container", "exists", &name]).status.code(),
        Some(1)
    );

    let a = launch(
        "net-a1",
        &[
            "--network",
            "allowlist",
            "--allow",
            "api.allowed.test,mixed.allowed.test",
            "--allow",
            DNS,
            &dns,
            "--refresh-minutes",
            "0.05",
        ],
    )
    .await;
    let bridge = ip_of(&a.name)
        .rsplit_once('.')
        .map(|(n, _)| format!("{n}.1"))
        .unwrap();
    let hits0 = lines(HITS).len();
    let before = dropped(&a.name);
    expect(
        &a.name,
        &[
            (p("tcp", "198.51.100.20", 8080), true),
            (p("udp", "198.51.100.20", 9999), true),
            (p("tcp", INTERNET, 8080), true), // mixed: its public answer
            (p("tcp", DNS, 8080), true),      // a literal address
            (p("conn", &bridge, 53), false),  // no DNS at all, not even the bridge's
            (p("icmp", "198.51.100.20", 0), false), // other protocols: no
            (p("tcp", METADATA, 8080), false), // mixed: its metadata answer refused
            (p("tcp", "10.99.0.10", 8080), false),
            (p("tcp", "198.51.100.30", 8080), false), // not listed
            (p("udp", DNS, 53), false),               // DNS to any other server: no
            (p("tcp", HOST_LOCAL, 18080), false),
        ],
    );
    let seen = hits_since(HITS, hits0);
    for a in [
        METADATA,
        "10.99.0.10",
        "198.51.100.30",
        &format!("{DNS}:53"),
    ] {
        assert!(
            !seen.iter().any(|l| l.contains(&format!(" {a}"))),
            "{a} reached: {seen:?}"
        );
    }
    assert!(dropped(&a.name) > before);
    // Names resolve from /etc/hosts, to what the host resolved.
    let hosts = |name: &str| sh(name, "getent hosts api.allowed.test | awk '{print $1}'").1;
    assert_eq!(hosts(&a.name).trim(), "198.51.100.20");

    // The record changes: the watcher (no cci command running) follows it.
    fakenet(&[
        "dns",
        "api.allowed.test=198.51.100.30",
        "mixed.allowed.test=198.51.100.10",
    ]);
    eventually("the allowlist follows the new record", 30, || {
        probe(
            &a.name,
            &[
                p("tcp", "198.51.100.30", 8080),
                p("tcp", "198.51.100.20", 8080),
            ],
        ) == [true, false]
    });
    assert_eq!(hosts(&a.name).trim(), "198.51.100.30");

    // DNS down: the last-known-good addresses stay, nothing widens.
    fakenet(&["dns-stop"]);
    ok(&["network", "refresh"]);
    expect(
        &a.name,
        &[
            (p("tcp", "198.51.100.30", 8080), true),
            (p("tcp", "198.51.100.20", 8080), false),
        ],
    );
    // A private answer is never admitted; the old public one is kept.
    fakenet(&[
        "dns",
        "api.allowed.test=10.99.0.10",
        "mixed.allowed.test=198.51.100.10",
    ]);
    ok(&["network", "refresh"]);
    expect(
        &a.name,
        &[
            (p("tcp", "198.51.100.30", 8080), true),
            (p("tcp", "10.99.0.10", 8080), false),
        ],
    );

    // An empty allowlist: no egress at all.
    let e = launch("net-a2", &["--network", "allowlist"]).await;
    expect(
        &e.name,
        &[
            (p("conn", &bridge, 53), false),
            (p("tcp", INTERNET, 8080), false),
            (p("udp", INTERNET, 9999), false),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_exist_before_start_and_go_with_the_container() {
    let _turn = world().await;
    let c = client().await;

    // `cci container launch`, then deleted behind cci's back: the watcher
    // (or `cci clean --orphans`) removes its rules.
    let x = launch("net-x", &[]).await;
    let port = port_of(&x.name);
    let x_ip = ip_of(&x.name);
    assert!(guarded_ports().contains(&port));
    assert_eq!(
        c.instance(&x.name).await.unwrap().0.config["boot.autostart"],
        "false"
    );
    assert!(
        Command::new("incus")
            .args(["delete", "--force", &x.name])
            .status()
            .unwrap()
            .success()
    );
    ok(&["clean", "--orphans"]);
    assert!(!guarded_ports().contains(&port));
    // Its address is free again: a container in another mode that gets it
    // is held to its own mode (rules follow interfaces, never addresses).
    let reuse = launch("net-reuse", &["--network", "open"]).await;
    if ip_of(&reuse.name) == x_ip {
        expect(&reuse.name, &[(p("tcp", LAN[0], 8080), true)]);
    }
    drop(reuse);

    // A stopped container keeps its rules; `cci container start` puts back
    // rules that vanished, before the container runs.
    let y = launch("net-y", &[]).await;
    let port = port_of(&y.name);
    ok(&["container", "stop", "--force", &y.name]);
    assert!(guarded_ports().contains(&port));
    delete_table("bridge");
    ok(&["container", "start", &y.name]);
    assert!(guarded_ports().contains(&port));

    // cci's tables deleted under a running container: with no watcher
    // running, the next cci command (here `cci list`) restores them...
    stop_watcher();
    delete_table("bridge");
    ok(&["list"]);
    assert!(guarded_ports().contains(&port));
    // ...and starts the watcher again, which restores them on its own.
    eventually("a watcher runs", 10, watcher_running);
    let gone = Instant::now();
    delete_table("inet");
    delete_table("bridge");
    eventually("the watcher restores the rules", 15, || {
        guarded_ports().contains(&port)
    });
    // How long the container went unguarded (the README quotes it).
    println!(
        "rules restored {} ms after cci's tables were deleted",
        gone.elapsed().as_millis()
    );
    expect(
        &y.name,
        &[
            (p("tcp", INTERNET, 8080), true),
            (p("tcp", LAN[0], 8080), false),
        ],
    );

    // Health notices rules missing for a running container.
    delete_table("bridge");
    let out = cci_out(&["health", "--image", &test_image()]);
    let report = text(&out.stdout);
    // The watcher may win the race and put the rules back first.
    if !guarded_ports().contains(&port) || report.contains("rules missing") {
        assert!(
            report.contains("FAIL") && report.contains(&y.name),
            "{report}"
        );
        assert_ne!(out.status.code(), Some(0));
    }

    // `cci kill`: rules gone with the container.
    eventually("rules back", 15, || guarded_ports().contains(&port));
    let ws = common::workspace();
    let ws_path = ws.path().to_str().unwrap();
    let out = ok(&[
        "shell",
        "--background",
        "--debug",
        "-w",
        ws_path,
        "--image",
        &test_image(),
    ]);
    let session = out.trim().to_string();
    let sport = port_of(&session);
    assert!(guarded_ports().contains(&sport), "sessions are guarded");
    ok(&["kill", &session]);
    assert!(!guarded_ports().contains(&sport));

    // `cci run`: its container's rules go once the daemon has deleted it.
    let before = guarded_ports();
    ok(&["run", "-w", ws_path, "--image", &test_image(), "--", "true"]);
    eventually("the run's rules are gone", 15, || guarded_ports() == before);
    drop(y);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nft_nothing_starts_unguarded() {
    let _turn = world().await;
    let name = unique_name("net-nonft");
    let _g = TestInstance {
        name: name.clone(),
        client: client().await,
    };
    let out = cci()
        .env("CCI_NFT", "/nonexistent/nft")
        .args(["container", "launch", &test_image(), &name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nftables"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        cci_out(&["container", "exists", &name]).status.code(),
        Some(1)
    );

    let ws = common::workspace();
    let out = cci()
        .env("CCI_NFT", "/nonexistent/nft")
        .args([
            "run",
            "-w",
            ws.path().to_str().unwrap(),
            "--image",
            &test_image(),
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(common::containers_left(ws.path()).await.is_empty());

    // Open mode has nothing to enforce and still runs.
    let out = cci()
        .env("CCI_NFT", "/nonexistent/nft")
        .args([
            "container",
            "launch",
            &test_image(),
            &name,
            "--network",
            "open",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Bad flags are usage errors.
    for bad in [
        vec!["--network", "opne"],
        vec!["--allow", "example.com"],
        vec!["--network", "allowlist", "--allow", "not a domain"],
        vec!["--network", "allowlist", "--refresh-minutes", "-1"],
    ] {
        let mut args = vec!["container", "launch", "img", "cci-test-never"];
        args.extend(bad.iter());
        assert_eq!(cci_out(&args).status.code(), Some(2), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_cci_mid_launch_never_leaves_a_running_container_without_rules() {
    let _turn = world().await;
    let c = client().await;
    for delay_ms in [30, 80, 150, 250, 400, 600, 900] {
        let name = unique_name("net-kill9");
        let _g = TestInstance {
            name: name.clone(),
            client: c.clone(),
        };
        let mut child = cci()
            .args(["container", "launch", &test_image(), &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Right after the kill, before any cci command could repair anything.
        let Ok((inst, _)) = c.instance(&name).await else {
            continue; // killed before the create
        };
        if inst.status.as_str() == "Running" {
            let port = cci::network::port_of(&inst).expect("a guarded NIC");
            assert!(
                guarded_ports().contains(port.as_str()),
                "{name} runs without its rules (killed after {delay_ms} ms)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_is_held_to_the_same_rules() {
    let _turn = world().await;
    const INTERNET6: &str = "2001:db8:99::10";
    const ULA: &str = "fd99::10";
    const HOST_LOCAL6: &str = "2001:db8:99::99";
    const BRIDGE6: &str = "fd42:cc1:99::1";
    let r = launch_v6("net-v6r", &[]).await;
    let o = launch_v6("net-v6o", &["--network", "open"]).await;
    let o_ip = sh(
        &o.name,
        "ip -6 -o addr show eth0 scope global | awk '{print $4}' | cut -d/ -f1",
    )
    .1
    .trim()
    .to_string();

    let reachable = [
        p("tcp", INTERNET6, 8080),
        p("udp", INTERNET6, 9999),
        p("icmp", INTERNET6, 0),
        p("conn", BRIDGE6, 53),
    ];
    let guarded = [
        p("tcp", ULA, 8080),
        p("udp", ULA, 9999),
        p("icmp", ULA, 0),
        p("tcp", BRIDGE6, 18080),
        p("udp", BRIDGE6, 19999),
        p("tcp", HOST_LOCAL6, 18080),
        p("udp", HOST_LOCAL6, 19999),
        p("icmp", HOST_LOCAL6, 0),
    ];
    let (hits0, host_hits0) = (lines(HITS).len(), lines(HOST_HITS).len());
    let mut matrix: Vec<(Probe, bool)> = reachable.iter().map(|p| (p.clone(), true)).collect();
    matrix.extend(guarded.iter().map(|p| (p.clone(), false)));
    matrix.push((p("icmp", &o_ip, 0), false));
    expect(&r.name, &matrix);
    let seen = hits_since(HITS, hits0);
    assert!(!seen.iter().any(|l| l.contains(ULA)), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains(INTERNET6)),
        "control: {seen:?}"
    );
    assert_eq!(hits_since(HOST_HITS, host_hits0), Vec::<String>::new());

    // Control: all of it answers an open container (other than the restricted slot).
    let mut control: Vec<(Probe, bool)> = reachable.iter().map(|p| (p.clone(), true)).collect();
    control.extend(guarded.iter().map(|p| (p.clone(), true)));
    expect(&o.name, &control);

    // Root in the container adds an IPv6 address of its choice: it gets nowhere.
    let (_, out) = sh(
        &r.name,
        &format!(
            "real=$(ip -6 -o addr show eth0 scope global | awk '{{print $4}}' | cut -d/ -f1)
             ip -6 addr add fd42:cc1:99::bad/64 dev eth0 nodad; sleep 1
             curl -s --http0.9 -m 3 --interface fd42:cc1:99::bad http://[{INTERNET6}]:8080/ && echo leak
             ip -6 addr del fd42:cc1:99::bad/64 dev eth0; ip -6 neigh flush dev eth0
             for i in $(seq 10); do curl -s --http0.9 -m 3 --interface $real http://[{INTERNET6}]:8080/ >/dev/null && {{ echo real-ok; break; }}; sleep 1; done"
        ),
    );
    assert!(!out.contains("leak") && out.contains("real-ok"), "{out}");
}

//! Proxy mode against the real daemon and nftables, with the fake world of
//! network namespaces (`tests/fixtures/fakenet.sh`, names from its DNS
//! server): a container reaches only cci's proxy, which decides each
//! connection by name, logs it, and takes live changes. Every refusal has
//! a positive control through the same proxy.

mod common;

use std::process::Command;

use common::net::*;
use serde_json::Value;

/// Ask the proxy for a tunnel to HOST:PORT from `name` (the proxy address
/// from the container's own `HTTPS_PROXY`) and say what came back: the
/// status line and the first bytes through.
fn connect(name: &str, target: &str) -> String {
    let script = format!(
        r#"p=${{HTTPS_PROXY#http://}}; h=${{p%:*}}; port=${{p##*:}}
printf 'CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n' | timeout 8 nc -q 3 "$h" "$port" | tr -d '\r' | head -c 300"#
    );
    sh(name, &script).1
}

fn through(out: &str) -> bool {
    out.contains(" 200 ") && out.contains("hello-cci")
}

fn log_of(name: &str) -> Vec<Value> {
    ok(&["network", "log", name, "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn proxy_running() -> bool {
    Command::new("pgrep")
        .args(["-f", "cci network proxy"])
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_mode_reaches_allowed_names_only_logs_them_and_takes_live_changes() {
    let _turn = world().await;
    fakenet(&[
        "dns",
        "api.proxy.test=198.51.100.20",
        "a.cdn.proxy.test=198.51.100.30",
        "cdn.proxy.test=198.51.100.30",
        "other.proxy.test=198.51.100.10",
        "private.proxy.test=10.99.0.10",
    ]);
    let dns = format!("--dns-server={DNS}");
    let c = launch(
        "net-px1",
        &[
            "--network",
            "proxy",
            "--allow",
            "api.proxy.test:8080,*.cdn.proxy.test:8080,private.proxy.test:8080",
            &dns,
        ],
    )
    .await;
    let name = c.name.as_str();
    // Its tools are pointed at the proxy.
    let env = sh(
        name,
        "echo $HTTPS_PROXY $http_proxy; cat /etc/apt/apt.conf.d/90cci-proxy",
    )
    .1;
    assert!(env.contains(":47128"), "{env}");
    assert!(env.contains("Acquire::https::Proxy"), "{env}");

    // Allowed names, through the proxy (positive controls).
    let since = lines(HITS).len();
    let out = connect(name, "api.proxy.test:8080");
    assert!(through(&out), "{out}");
    assert!(through(&connect(name, "a.cdn.proxy.test:8080")));
    let hits = hits_since(HITS, since);
    assert!(
        hits.iter().any(|h| h.starts_with("tcp 198.51.100.20:8080")),
        "{hits:?}"
    );
    // Refused: another name, the wildcard's bare parent, a name that
    // leads to a private address, an address literal.
    let since = lines(HITS).len();
    for target in [
        "other.proxy.test:8080",
        "cdn.proxy.test:8080",
        "private.proxy.test:8080",
        "198.51.100.20:8080",
        "api.proxy.test:9999",
    ] {
        let out = connect(name, target);
        assert!(out.contains(" 403 "), "{target}: {out}");
    }
    assert_eq!(hits_since(HITS, since), Vec::<String>::new());
    // Nothing around the proxy: direct TCP, UDP, ICMP and DNS.
    expect(
        name,
        &[
            (p("tcp", INTERNET, 8080), false),
            (p("udp", INTERNET, 9999), false),
            (p("icmp", INTERNET, 0), false),
        ],
    );
    let out = cci_out(&[
        "container",
        "exec",
        name,
        "--",
        "timeout",
        "5",
        "getent",
        "hosts",
        "api.proxy.test",
    ]);
    assert_ne!(out.status.code(), Some(0), "names do not resolve inside");

    // What went around the proxy is logged from the firewall.
    let around: Vec<Value> = log_of(name)
        .into_iter()
        .filter(|d| d["reason"] == "firewall")
        .collect();
    for (port, proto) in [(8080, "tcp"), (9999, "udp")] {
        assert!(
            around
                .iter()
                .any(|d| d["host"] == INTERNET && d["port"] == port && d["proto"] == proto),
            "{port}/{proto}: {around:?}"
        );
    }

    // Every decision is logged with its reason and rule.
    let log = log_of(name);
    let find = |host: &str| {
        log.iter()
            .find(|d| d["host"] == host)
            .unwrap_or_else(|| panic!("{host} not logged: {log:?}"))
            .clone()
    };
    let api = find("api.proxy.test");
    assert_eq!(api["allowed"], true, "{api}");
    assert_eq!(api["rule"], "api.proxy.test:8080", "{api}");
    assert!(api["bytes_down"].as_u64().unwrap() >= 9, "{api}");
    assert_eq!(find("other.proxy.test")["reason"], "no-rule");
    assert_eq!(find("cdn.proxy.test")["allowed"], false);
    assert_eq!(find("private.proxy.test")["reason"], "private-address");
    let table = ok(&["network", "log", name]);
    assert!(
        table.contains("other.proxy.test:8080") && table.contains("refused"),
        "{table}"
    );
    let suggested = ok(&["network", "suggest", name]);
    assert!(
        suggested.contains("allowed_domains") && suggested.contains("proxy.test:8080"),
        "{suggested}"
    );

    // Live: allowed from the next connection on, then taken away again.
    ok(&["network", "allow", name, "other.proxy.test:8080"]);
    assert!(through(&connect(name, "other.proxy.test:8080")));
    ok(&["network", "deny", name, "other.proxy.test:8080"]);
    assert!(connect(name, "other.proxy.test:8080").contains(" 403 "));
    let bad = cci_out(&["network", "allow", name, "*"]);
    assert!(
        bad.status.success(),
        "the user may allow anything: {}",
        text(&bad.stderr)
    );
    ok(&["network", "deny", name, "*"]);
    let bad = cci_out(&["network", "deny", name, "never.allowed.test"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("has no rule"),
        "{}",
        text(&bad.stderr)
    );

    // The proxy killed: no egress at all; the watcher brings it back.
    assert!(proxy_running());
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", "cci network proxy"])
        .status();
    eventually("the proxy is gone", 10, || !proxy_running());
    let since = lines(HITS).len();
    assert!(!through(&connect(name, "api.proxy.test:8080")));
    expect(name, &[(p("tcp", INTERNET, 8080), false)]);
    assert_eq!(hits_since(HITS, since), Vec::<String>::new());
    eventually("the proxy is back", 30, proxy_running);
    eventually("the container goes through it again", 30, || {
        through(&connect(name, "api.proxy.test:8080"))
    });

    // A refusal hammered: written once, then counted, not written again;
    // one record with the count follows (the log's history stays).
    let hammer = r#"p=${HTTPS_PROXY#http://}; h=${p%:*}; port=${p##*:}
for i in $(seq 30); do
  printf 'CONNECT hammer.proxy.test:8080 HTTP/1.1\r\nHost: hammer.proxy.test:8080\r\n\r\n' | timeout 4 nc -q 1 "$h" "$port" >/dev/null &
done
wait"#;
    sh(name, hammer);
    let hammered = || -> Vec<Value> {
        log_of(name)
            .into_iter()
            .filter(|d| d["host"] == "hammer.proxy.test")
            .collect()
    };
    let first = hammered();
    assert_eq!(first.len(), 1, "{first:?}");
    eventually("the folded refusals are recorded", 30, || {
        hammered().len() == 2
    });
    let all = hammered();
    assert_eq!(all[1]["repeats"], 28, "{all:?}");
    assert_eq!(all[1]["reason"], "no-rule", "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_must_name_the_host_it_tunnels_to_and_other_modes_cannot_use_the_proxy() {
    let _turn = world().await;
    fakenet(&["dns", "api.proxy.test=198.51.100.20"]);
    let dns = format!("--dns-server={DNS}");
    // A name without a port: HTTPS (443) and HTTP (80) only, TLS checked.
    let c = launch(
        "net-px2",
        &["--network", "proxy", "--allow", "api.proxy.test", &dns],
    )
    .await;
    let name = c.name.as_str();
    // A TLS ClientHello naming another server through an allowed tunnel:
    // refused; naming the tunnel's host: let through (the fake host is
    // no TLS server, so the handshake fails there, after the proxy).
    let hello = |sni: &str| {
        sh(
            name,
            &format!(
                "p=${{HTTPS_PROXY#http://}}; timeout 8 openssl s_client -proxy \"$p\" -connect api.proxy.test:443 -servername {sni} </dev/null >/dev/null 2>&1; true"
            ),
        )
    };
    hello("evil.example");
    hello("api.proxy.test");
    let log = log_of(name);
    assert!(
        log.iter()
            .any(|d| d["reason"] == "sni-mismatch" && d["allowed"] == false),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|d| d["allowed"] == true && d["host"] == "api.proxy.test"),
        "{log:?}"
    );
    // A restricted container on the same bridge cannot reach the proxy.
    let r = launch("net-px3", &[]).await;
    let proxy = sh(name, "echo ${HTTPS_PROXY#http://}").1.trim().to_string();
    let (host, port) = proxy.rsplit_once(':').unwrap();
    let reach = |from: &str| {
        sh(
            from,
            &format!("timeout 4 bash -c 'exec 3<>/dev/tcp/{host}/{port}' && echo REACHED; true"),
        )
        .1
        .contains("REACHED")
    };
    assert!(!reach(&r.name), "a restricted container reached the proxy");
    // Positive control: the proxy-mode container does.
    assert!(reach(name));
    // Another proxy-mode container, with no rules, taking the first one's
    // address as its source gets nothing (Incus' anti-spoofing); from its
    // own address it is refused.
    let b = launch("net-px5", &["--network", "proxy", &dns]).await;
    let a_ip = ip_of(name);
    let spoof = format!(
        "ip addr add {a_ip}/32 dev eth0 2>&1; printf 'CONNECT api.proxy.test:443 HTTP/1.1\r\nHost: api.proxy.test:443\r\n\r\n' | timeout 6 nc -q 2 -s {a_ip} {host} {port} | head -c 100; true"
    );
    let (_, out) = sh(&b.name, &spoof);
    assert!(!out.contains(" 200 "), "a spoofed source was served: {out}");
    let own = connect(&b.name, "api.proxy.test:443");
    assert!(own.contains(" 403 "), "{own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_on_unknown_ask_an_unknown_name_waits_for_approval() {
    let _turn = world().await;
    fakenet(&[
        "dns",
        "api.proxy.test=198.51.100.20",
        "asked.proxy.test=198.51.100.10",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[network]\non_unknown = \"ask\"\n").unwrap();
    let name = common::unique_name("net-px4");
    let _guard = common::TestInstance {
        name: name.clone(),
        client: common::client().await,
    };
    let out = common::cci()
        .env("CCI_CONFIG", &config)
        .args(["container", "launch", &common::test_image(), &name])
        .args(["--network", "proxy", "--allow", "api.proxy.test:8080"])
        .arg(format!("--dns-server={DNS}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The request waits while the user is asked.
    let waiting = {
        let name = name.clone();
        std::thread::spawn(move || connect(&name, "asked.proxy.test:8080"))
    };
    let mut id = String::new();
    eventually("the request is pending", 20, || {
        let v: Value =
            serde_json::from_str(&ok(&["network", "pending", "--format", "json"])).unwrap();
        match v
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["container"] == name.as_str() && p["host"] == "asked.proxy.test")
        {
            Some(p) => {
                id = p["id"].as_str().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    let table = ok(&["network", "pending"]);
    assert!(table.contains("asked.proxy.test:8080"), "{table}");
    ok(&["network", "approve", &id, "--always"]);
    let out = waiting.join().unwrap();
    assert!(through(&out), "approved: {out}");
    // `--always`: the next one goes through without asking, and the rule
    // is the container's.
    assert!(through(&connect(&name, "asked.proxy.test:8080")));
    let approved = log_of(&name);
    assert!(
        approved.iter().any(|d| d["reason"] == "approved"),
        "{approved:?}"
    );
    let bad = cci_out(&["network", "approve", "no-such-id"]);
    assert_ne!(bad.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_an_ipv6_bridge_the_proxy_listens_there_too_and_nothing_goes_around_it() {
    let _turn = world().await;
    fakenet(&["dns", "v6.proxy.test=2001:db8:99::10"]);
    let dns = format!("--dns-server={DNS}");
    let c = launch_v6(
        "net-px6",
        &["--network", "proxy", "--allow", "v6.proxy.test:8080", &dns],
    )
    .await;
    let name = c.name.as_str();
    let since = lines(HITS).len();
    let out = connect(name, "v6.proxy.test:8080");
    assert!(through(&out), "{out}");
    let hits = hits_since(HITS, since);
    assert!(
        hits.iter().any(|h| h.contains("2001:db8:99::10")),
        "{hits:?}"
    );
    // Around it: nothing, IPv6 or IPv4.
    expect(
        name,
        &[
            (p("tcp", "2001:db8:99::10", 8080), false),
            (p("udp", "2001:db8:99::10", 9999), false),
            (p("icmp", "2001:db8:99::10", 0), false),
            (p("tcp", INTERNET, 8080), false),
        ],
    );
}

//! The fake world network tests probe (`tests/fixtures/fakenet.sh`): its
//! addresses, launching guarded containers, probes with their verdicts, and
//! reading cci's firewall state. Shared by `tests/network*.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{TestInstance, cci, client, test_image, unique_name};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

pub const INTERNET: &str = "198.51.100.10";
pub const LAN: [&str; 3] = ["10.99.0.10", "172.16.99.10", "192.168.99.10"];
pub const METADATA: &str = "169.254.169.254";
/// An address of the host itself, outside every blocked range.
pub const HOST_LOCAL: &str = "198.51.100.99";
pub const DNS: &str = "198.51.100.53";
pub const HITS: &str = "/run/cci-fakenet/hits.log";
pub const HOST_HITS: &str = "/run/cci-fakenet/host-hits.log";

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn fakenet(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fakenet.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fakenet {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The fake world, up once per test binary; tests take turns (probes and
/// counters must not mix).
pub async fn world() -> MutexGuard<'static, ()> {
    static UP: OnceLock<()> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::const_new(());
    UP.get_or_init(|| {
        fakenet(&["up"]);
    });
    TURN.lock().await
}

pub fn cci_out(args: &[&str]) -> Output {
    cci().args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn ok(args: &[&str]) -> String {
    let out = cci_out(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cci {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Launch `tag` with these network flags; force-deleted on drop.
pub async fn launch(tag: &str, net: &[&str]) -> TestInstance {
    launch_in(None, tag, net).await
}

/// Launch `tag` in Incus project `project` (None: the default one).
pub async fn launch_in(project: Option<&str>, tag: &str, net: &[&str]) -> TestInstance {
    let name = unique_name(tag);
    let guard = TestInstance {
        name: name.clone(),
        client: client().await.with_project(project.map(str::to_string)),
    };
    let image = test_image();
    let mut args = vec!["container", "launch", &image, &name];
    if let Some(p) = project {
        args.extend(["--project", p]);
    }
    args.extend_from_slice(net);
    ok(&args);
    // Until DHCP gave it its address.
    let script = "for i in $(seq 100); do ip -4 -o addr show eth0 | grep -q inet && exit 0; sleep 0.1; done; exit 1";
    let via = project.map_or(Via::Cci, Via::Project);
    assert_eq!(sh_via(via, &name, script).0, 0, "{name} got no address");
    guard
}

/// How a test runs a script inside a container.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// `cci container exec` (which also runs cci's firewall upkeep).
    Cci,
    /// The same, in this Incus project.
    Project(&'a str),
    /// The `incus` client (in this project, if any): no cci command runs,
    /// so nothing repairs the rules.
    Incus(Option<&'a str>),
}

/// Run a shell script in `name` through `cci container exec --capture`.
pub fn sh(name: &str, script: &str) -> (i64, String) {
    sh_via(Via::Cci, name, script)
}

/// Run a shell script in `name` as `via` says; its exit code and output.
pub fn sh_via(via: Via, name: &str, script: &str) -> (i64, String) {
    if let Via::Incus(project) = via {
        let out = Command::new("incus")
            .args(project.map(|p| format!("--project={p}")))
            .args(["exec", name, "--", "bash", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        return (out.status.code().unwrap_or(-1).into(), text(&out.stdout));
    }
    let mut args = vec!["container", "exec", name, "--capture"];
    if let Via::Project(p) = via {
        args.extend(["--project", p]);
    }
    args.extend(["--", "bash", "-c", script]);
    let out = ok(&args);
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["exit_code"].as_i64().unwrap(),
        v["stdout"].as_str().unwrap().to_string(),
    )
}

pub fn ip_of(name: &str) -> String {
    sh(
        name,
        "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1",
    )
    .1
    .trim()
    .to_string()
}

/// One probe: `tcp|udp|icmp`, address, port (ignored for icmp); `conn` is
/// a TCP connect alone (for services that do not greet).
pub type Probe = (&'static str, String, u16);

pub fn p(proto: &'static str, addr: &str, port: u16) -> Probe {
    (proto, addr.to_string(), port)
}

/// Run `probes` from `name` at once; true where the target answered.
pub fn probe(name: &str, probes: &[Probe]) -> Vec<bool> {
    probe_via(Via::Cci, name, probes)
}

/// [`probe`], run as `via` says.
pub fn probe_via(via: Via, name: &str, probes: &[Probe]) -> Vec<bool> {
    let mut script = String::from(
        r#"tcp() { out=$(timeout 4 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c 9 <&3" 2>/dev/null); [ "$out" = hello-cci ] && echo "$3 ok" || echo "$3 no"; }
udp() { out=$(echo probe | timeout 4 nc -u -w 3 "$1" "$2" 2>/dev/null | head -c 9); [ "$out" = hello-cci ] && echo "$3 ok" || echo "$3 no"; }
icmp() { ping -c 1 -W 3 "$1" >/dev/null 2>&1 && echo "$3 ok" || echo "$3 no"; }
conn() { timeout 4 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && echo "$3 ok" || echo "$3 no"; }
"#,
    );
    for (i, (proto, addr, port)) in probes.iter().enumerate() {
        script.push_str(&format!("{proto} {addr} {port} {i} &\n"));
    }
    script.push_str("wait\n");
    let (_, out) = sh_via(via, name, &script);
    let mut answers = vec![false; probes.len()];
    for line in out.lines() {
        if let Some((i, verdict)) = line.split_once(' ') {
            answers[i.parse::<usize>().unwrap()] = verdict == "ok";
        }
    }
    answers
}

/// Probes that must pass are retried (a first ARP or DHCP moment may lose
/// one); those that must fail are tried once.
pub fn expect(name: &str, probes: &[(Probe, bool)]) {
    expect_via(Via::Cci, name, probes)
}

/// [`expect`], run as `via` says.
pub fn expect_via(via: Via, name: &str, probes: &[(Probe, bool)]) {
    let all: Vec<Probe> = probes.iter().map(|(p, _)| p.clone()).collect();
    let mut got = probe_via(via, name, &all);
    for _ in 0..2 {
        let retry: Vec<usize> = (0..probes.len())
            .filter(|&i| probes[i].1 && !got[i])
            .collect();
        if retry.is_empty() {
            break;
        }
        let again = probe_via(
            via,
            name,
            &retry.iter().map(|&i| all[i].clone()).collect::<Vec<_>>(),
        );
        for (k, &i) in retry.iter().enumerate() {
            got[i] = again[k];
        }
    }
    let wrong: Vec<String> = probes
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != *got)
        .map(|(((proto, addr, port), want), _)| {
            format!(
                "{proto} {addr}:{port} expected {}",
                if *want { "reachable" } else { "blocked" }
            )
        })
        .collect();
    assert!(wrong.is_empty(), "from {name}:\n{}", wrong.join("\n"));
}

pub fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Contacts logged by the fake hosts (or the host) since `since` lines.
pub fn hits_since(path: &str, since: usize) -> Vec<String> {
    lines(path).into_iter().skip(since).collect()
}

pub fn icmp_count() -> u64 {
    fakenet(&["icmp-count"]).trim().parse().unwrap()
}

pub fn status() -> Value {
    serde_json::from_str(&ok(&["network", "status", "--format", "json"])).unwrap()
}

pub fn row(status: &Value, name: &str) -> Value {
    status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["container"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

pub fn dropped(name: &str) -> u64 {
    row(&status(), name)["dropped"].as_u64().unwrap()
}

/// The ports cci's table guards right now.
pub fn guarded_ports() -> BTreeSet<String> {
    let out = Command::new("nft")
        .args(["-j", "list", "map", "bridge", "cci", "out_ports"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("map"))
        .flat_map(|m| m["elem"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e[0].as_str().map(str::to_string))
        .collect()
}

pub fn watcher_running() -> bool {
    Command::new("pgrep")
        .args(["-f", "cci network watch"])
        .output()
        .unwrap()
        .status
        .success()
}

pub fn stop_watcher() {
    let _ = Command::new("pkill")
        .args(["-f", "cci network watch"])
        .status();
    eventually("the watcher is gone", 10, || !watcher_running());
}

pub fn delete_table(family: &str) {
    let ok = Command::new("nft")
        .args(["delete", "table", family, "cci"])
        .status()
        .unwrap();
    assert!(ok.success());
}

pub fn port_of(name: &str) -> String {
    row(&status(), name)["port"].as_str().unwrap().to_string()
}

pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// On a bridge with IPv6 (`cci-test-v6`, made by `tests/setup-incus.sh`).
pub async fn launch_v6(tag: &str, net: &[&str]) -> TestInstance {
    let mut args = vec!["--incus-profile", "cci-test-v6"];
    args.extend_from_slice(net);
    let guard = launch(tag, &args).await;
    let script = "for i in $(seq 100); do ip -6 -o addr show eth0 scope global | grep -q inet6 && exit 0; sleep 0.1; done; exit 1";
    assert_eq!(
        sh(&guard.name, script).0,
        0,
        "{} got no IPv6 address",
        guard.name
    );
    guard
}

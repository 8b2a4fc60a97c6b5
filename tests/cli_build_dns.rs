//! Builds whose base cannot resolve names: `cci build custom` decides within
//! seconds, repairing the resolver where that is safe and clearly right and
//! failing with what to fix where it is not. No packet leaves the machine:
//! the resolvers that do not answer live on the container's own loopback,
//! and the names that do resolve (`_gateway.incus`) are answered by the
//! Incus bridge's own DNS, never forwarded.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestImage, TestInstance, cci, client, test_image, unique_name};

/// A name the Incus bridge's DNS answers itself.
const LOCAL_NAME: &str = "_gateway.incus";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn script(body: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    f
}

/// `cci build custom NAME --script SCRIPT --base BASE` with `env`; its
/// output and how long it took.
fn build(name: &str, body: &str, base: &str, env: &[(&str, &str)]) -> (Output, Duration) {
    let s = script(body);
    let mut cmd = cci();
    cmd.envs(env.iter().copied())
        .args(["build", "custom", name, "--script"])
        .arg(s.path())
        .args(["--base", base]);
    let started = Instant::now();
    let out = run(cmd);
    (out, started.elapsed())
}

/// When (seconds into the build) the step that starts with `step` began:
/// the step lines read `cci build [  12s] STEP`.
fn step_secs(err: &str, step: &str) -> u64 {
    err.lines()
        .find_map(|l| {
            let (time, rest) = l.strip_prefix("cci build [")?.split_once("s] ")?;
            rest.starts_with(step).then(|| time.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no step {step:?}: {err}"))
}

/// Run `sh -c SCRIPT` as root in `name`; its stdout (it must succeed).
fn root_sh(name: &str, script: &str) -> String {
    let mut cmd = cci();
    cmd.args(["container", "exec", name, "--capture", "--format", "raw"])
        .args(["--", "sh", "-c", script]);
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{script}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A base made from the test image by `setup` (run as root once systemd
/// is up), published under a test alias; the guard deletes it.
async fn base_from(tag: &str, setup: &str) -> (String, TestImage, String) {
    let maker = TestInstance::running(tag).await;
    let wait = "for i in $(seq 100); do systemctl is-system-running >/dev/null 2>&1; \
                case $(systemctl is-system-running 2>/dev/null) in running|degraded) break;; esac; \
                sleep 0.1; done";
    root_sh(&maker.name, wait);
    let said = root_sh(&maker.name, setup);
    let mut stop = cci();
    stop.args(["container", "stop", "--force", &maker.name]);
    assert_eq!(run(stop).status.code(), Some(0));
    let alias = unique_name(tag);
    let mut publish = cci();
    publish.args(["image", "publish", &maker.name, &alias]);
    let out = run(publish);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c = client().await;
    let guard = TestImage {
        fingerprint: c.image_alias(&alias).await.unwrap().target,
        client: c,
    };
    (alias, guard, said)
}

/// Makes the base's resolver one that receives queries and never answers:
/// `nc` listening on 192.0.2.53:53 on the container's loopback (an address
/// added to `lo` before networking starts), systemd-resolved masked. Checks
/// (the control) that a lookup through it times out rather than being
/// refused; prints the bridge's address.
const SILENT_RESOLVER: &str = r#"set -e
cat >/etc/systemd/system/cci-test-silent-dns.service <<'UNIT'
[Unit]
Description=A DNS server that never answers (cci test)
DefaultDependencies=no
Before=network-pre.target
Wants=network-pre.target
[Service]
ExecStartPre=/bin/sh -c 'ip addr add 192.0.2.53/32 dev lo || true'
ExecStart=/usr/bin/nc -k -u -l 192.0.2.53 53
StandardOutput=null
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable --now cci-test-silent-dns.service >/dev/null 2>&1
systemctl mask --now systemd-resolved >/dev/null 2>&1
rm -f /etc/resolv.conf
echo 'nameserver 192.0.2.53' >/etc/resolv.conf
sleep 0.5
t0=$(date +%s%N)
! RES_OPTIONS='timeout:1 attempts:1' getent ahosts deb.debian.org >/dev/null
test $(( ($(date +%s%N) - t0) / 1000000 )) -ge 900
ip route | awk '/^default/ { print $3; exit }'
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_base_whose_resolver_does_not_answer_fails_in_seconds_or_uses_the_named_resolver() {
    let (base, _base, gateway) = base_from("silentdns", SILENT_RESOLVER).await;
    let gateway = gateway.trim().to_string();
    assert!(gateway.parse::<std::net::IpAddr>().is_ok(), "{gateway:?}");

    // No answer, and not a local stub cci may replace: the build stops in
    // seconds, naming the resolver and the ways out, and leaves nothing.
    let name = unique_name("silentdns-img");
    let (out, took) = build(&name, "echo script ran\n", &base, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        "192.0.2.53",
        "gave no answer",
        "deb.debian.org",
        "CCI_BUILD_DNS=",
        "CCI_BUILD_DNS_PROBE=",
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
    assert!(!err.contains("running the build script"), "{err}");
    assert!(took < Duration::from_secs(40), "took {took:?}: {err}");
    let check = step_secs(&err, "checking that names resolve");
    let removing = step_secs(&err, "removing the build container");
    assert!(removing - check <= 10, "the check took too long: {err}");
    let c = client().await;
    assert!(c.image_alias(&name).await.is_err());
    let left: Vec<_> = c.instances("cci-build-", false).await.unwrap();
    assert!(
        !left
            .iter()
            .any(|i| i.config.get("user.cci.build") == Some(&name)),
        "a build container was left"
    );

    // Naming a resolver (here the bridge's) repairs it: the image keeps it.
    let probe = [
        ("CCI_BUILD_DNS", gateway.as_str()),
        ("CCI_BUILD_DNS_PROBE", LOCAL_NAME),
    ];
    let check = format!(
        "set -e\ngetent hosts {LOCAL_NAME}\ngrep -q 'nameserver {gateway}' /etc/resolv.conf\n"
    );
    let (out, took) = build(&name, &check, &base, &probe);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let _image = TestImage {
        fingerprint: c.image_alias(&name).await.unwrap().target,
        client: c.clone(),
    };
    assert!(
        err.contains("names did not resolve through 192.0.2.53")
            && err.contains(&format!("now uses {gateway}")),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_whose_resolver_is_a_dead_stub_gets_working_dns_in_the_build() {
    // A base whose /etc/resolv.conf points at a local stub that never runs.
    let break_dns = "set -e; systemctl mask --now systemd-resolved >/dev/null 2>&1; \
                     test \"$(systemctl is-enabled systemd-resolved)\" = masked; \
                     rm -f /etc/resolv.conf; echo 'nameserver 127.0.0.53' > /etc/resolv.conf";
    let (base, _base, _) = base_from("deadstub", break_dns).await;
    // Control: names do not resolve in a container of that base.
    let probe = TestInstance::from_image("deadstub-probe", &base).await;
    let resolve = format!(
        "for i in 1 2 3 4 5 6; do getent hosts {LOCAL_NAME} && exit 0; sleep 1; done; exit 1"
    );
    let mut cmd = cci();
    cmd.args(["container", "exec", &probe.name, "--", "sh", "-c", &resolve]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "control: {}", text(&out.stdout));
    drop(probe);

    let name = unique_name("repaired");
    let check = format!("set -e\ngetent hosts {LOCAL_NAME}\n");
    let (out, took) = build(&name, &check, &base, &[("CCI_BUILD_DNS_PROBE", LOCAL_NAME)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let c = client().await;
    let _image = TestImage {
        fingerprint: c.image_alias(&name).await.unwrap().target,
        client: c,
    };
    assert!(err.contains("/etc/resolv.conf now uses"), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_whose_resolver_answers_builds_without_a_word_about_dns() {
    // The positive control: the test image resolves through the bridge.
    let name = unique_name("dnsok");
    let check = format!("set -e\ngetent hosts {LOCAL_NAME}\n");
    let env = [("CCI_BUILD_DNS_PROBE", LOCAL_NAME)];
    let (out, took) = build(&name, &check, &test_image(), &env);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let c = client().await;
    let _image = TestImage {
        fingerprint: c.image_alias(&name).await.unwrap().target,
        client: c,
    };
    assert!(err.contains("checking that names resolve"), "{err}");
    for word in ["now uses", "warning", "gave no answer"] {
        assert!(!err.contains(word), "{word:?}: {err}");
    }
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
}

//! Remote Incus servers (`cci remote`, `--remote`, `CCI_REMOTE`) against the
//! real daemon's own HTTPS listener on 127.0.0.1, standing in for a server
//! on another machine: added with a trust token, used for runs, a
//! background session, exec, files, attach on a pseudo-terminal, list and
//! kill; the incus CLI's remotes read as they are; what cannot work on a
//! server elsewhere refused by name; and a wrong certificate, an untrusted
//! client and an address where nothing listens each a clear, fast error.
//!
//! One test: the listener is a machine-wide setting of the daemon (set for
//! the test when it is off, and put back after).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Sessions, ok, text};
use common::pty::{Screen, on_terminal, openpty, wait_exit};
use common::{agent_workspace, cci, test_image};

/// The daemon listening on 127.0.0.1 for the test; its old address put back.
struct Listener {
    before: String,
    pub addr: String,
}

impl Listener {
    fn open() -> Listener {
        let before = incus(&["config", "get", "core.https_address"]);
        let before = before.trim().to_string();
        if before.starts_with("127.0.0.1:") {
            return Listener {
                addr: before.clone(),
                before,
            };
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        incus(&["config", "set", "core.https_address", &addr]);
        Listener { before, addr }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.before != self.addr {
            let _ = Command::new("incus")
                .args(["config", "set", "core.https_address", &self.before])
                .output();
        }
    }
}

/// Trusted client certificates named `prefix...` removed when dropped.
struct Trusted(String);

impl Drop for Trusted {
    fn drop(&mut self) {
        for fp in trusted_named(&self.0) {
            let _ = Command::new("incus")
                .args(["config", "trust", "remove", &fp])
                .output();
        }
    }
}

/// Fingerprints of the trusted certificates whose names start with `prefix`.
fn trusted_named(prefix: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&incus(&["config", "trust", "list", "--format", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .filter_map(|c| c["fingerprint"].as_str().map(str::to_string))
        .collect()
}

fn incus(args: &[&str]) -> String {
    let out = Command::new("incus").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "incus {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A home of cci's own (its remotes, client certificate, git settings).
fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".gitconfig"),
        "[safe]\n\tdirectory = *\n[user]\n\tname = host\n\temail = host@t\n",
    )
    .unwrap();
    home
}

/// `cci ARGS` as the user with `home`, on remote `far` (through CCI_REMOTE).
fn far(home: &Path) -> Command {
    let mut cmd = cci();
    cmd.env("HOME", home)
        .env("CCI_REMOTE", "far")
        .env("CCI_IMAGE", test_image())
        .env("CCI_TOOL_BINARY", "/workspace/.fake-agent")
        .env_remove("INCUS_CONF")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// A git repository holding the stand-in agent.
fn repo() -> tempfile::TempDir {
    let ws = agent_workspace();
    let p = ws.path();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(p)
            .args([
                "-c",
                "safe.directory=*",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(p.join("README"), "one\n").unwrap();
    git(&["add", "README", ".fake-agent"]);
    git(&["commit", "-qm", "first"]);
    ws
}

/// `cmd` fails with `code`, within `limit`, saying `want`.
fn fails(cmd: &mut Command, code: i32, want: &str, limit: Duration) -> String {
    let t = Instant::now();
    let out = run(cmd);
    let took = t.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(want), "{err}");
    assert!(took < limit, "took {took:?}: {err}");
    err
}

#[test]
fn a_remote_over_https_runs_sessions_like_the_local_daemon() {
    let listener = Listener::open();
    let tag = format!("cci-test-remote-{}", std::process::id());
    let _trusted = Trusted(tag.clone());
    let home = home();
    let h = home.path();

    // Added with a trust token: the fingerprint in it is checked, the
    // certificate pinned, cci's client certificate trusted.
    let token = incus(&["config", "trust", "add", &tag, "-q"]);
    let token = token.trim().lines().last().unwrap().to_string();
    // (Read from standard input: a token stays out of argv.)
    let mut add = far(h)
        .args(["remote", "add", "far", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let added = ok(&add.wait_with_output().unwrap());
    assert!(
        added.contains(&format!("https://{}", listener.addr)),
        "{added}"
    );
    assert_eq!(trusted_named(&tag).len(), 1);
    let key = h.join(".cci/remotes/client.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let list: serde_json::Value = serde_json::from_str(&ok(&run(
        far(h).args(["remote", "list", "--format", "json"])
    )))
    .unwrap();
    assert_eq!(list["current"], "far");
    assert_eq!(list["remotes"][0]["name"], "far");
    let health = ok(&run(far(h).args(["health", "--image", &test_image()])));
    assert!(health.contains("remote far at https://"), "{health}");
    assert!(health.contains("through Incus network ACLs"), "{health}");

    // A run: the repository goes in over the API (no mount can reach a
    // server elsewhere), its commit comes back for review and merge.
    let ws = repo();
    let p = ws.path();
    // Whatever the test leaves (it failed) goes: the remote is this daemon.
    let _sessions = Sessions(p.into());
    let out = run(far(h)
        .args(["run", "--isolated", "--network", "open", "-w"])
        .arg(p)
        .args(["--", "sh", "-c"])
        .arg("cat README; findmnt -n /workspace || echo unmounted; echo two >> README; git commit -qam 'agent: two'"));
    let said = ok(&out);
    assert!(said.contains("one") && said.contains("unmounted"), "{said}");
    let log = ok(&run(far(h).args(["log", "-w"]).arg(p)));
    assert!(log.contains("agent: two"), "{log}");
    ok(&run(far(h).args(["merge", "-w"]).arg(p)));
    assert_eq!(
        std::fs::read_to_string(p.join("README")).unwrap(),
        "one\ntwo\n"
    );

    // A folder that is not a repository is copied in; what the command
    // made of it comes back for review, into the folder only when asked,
    // never through a link and never into .git.
    let plain = tempfile::tempdir().unwrap();
    let f = plain.path();
    std::fs::write(f.join("a.txt"), "one\n").unwrap();
    std::fs::write(f.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(f.join("run.sh"))
        .status()
        .unwrap();
    let _plain_sessions = Sessions(f.into());
    let said = ok(&run(far(h)
        .args(["run", "--network", "open", "-w"])
        .arg(f)
        .args(["--", "sh", "-c"])
        .arg("./run.sh; cat a.txt; findmnt -n /workspace || echo unmounted; echo two > a.txt; echo new > b.txt; mkdir -p .git/hooks; echo evil > .git/hooks/post-checkout")));
    assert!(
        said.contains("ran") && said.contains("one") && said.contains("unmounted"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(f.join("a.txt")).unwrap(),
        "one\n",
        "nothing applied unasked"
    );
    let review = ok(&run(far(h).args(["sync", "-w"]).arg(f)));
    assert!(
        review.contains("a.txt") && review.contains("b.txt"),
        "{review}"
    );
    assert!(review.contains(".git is never copied back"), "{review}");
    ok(&run(far(h).args(["sync", "--apply", "-w"]).arg(f)));
    assert_eq!(std::fs::read_to_string(f.join("a.txt")).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(f.join("b.txt")).unwrap(), "new\n");
    assert!(!f.join(".git").exists());

    // A background session: list, exec, files, attach, kill.
    let name = ok(&run(far(h)
        .args([
            "shell",
            "--background",
            "--isolated",
            "--network",
            "open",
            "-w",
        ])
        .arg(p)))
    .trim()
    .to_string();
    // Its name is its own: not the local daemon's for the same folder
    // (cci's records of the two never mix), and another machine's would
    // differ again.
    let local = cci::sandbox::Workspace::resolve(p).unwrap().id;
    assert!(!name.starts_with(&format!("cci-{local}-")), "{name}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&run(far(h).args(["list", "--format", "json"])))).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name.as_str()),
        "{listed}"
    );
    let status = ok(&run(far(h).args(["status", "--format", "json"])));
    assert!(status.contains(&name), "{status}");
    let exec = ok(&run(far(h).args([
        "container",
        "exec",
        &name,
        "--capture",
        "--format",
        "raw",
        "--",
        "cat",
        "/workspace/README",
    ])));
    assert_eq!(exec, "one\ntwo\n");
    let pushed = h.join("pushed.txt");
    std::fs::write(&pushed, "from the host\n").unwrap();
    ok(&run(far(h)
        .args(["file", "push"])
        .arg(&pushed)
        .arg(format!("{name}:/tmp/pushed.txt"))));
    let pulled = h.join("pulled.txt");
    ok(&run(far(h)
        .args(["file", "pull"])
        .arg(format!("{name}:/tmp/pushed.txt"))
        .arg(&pulled)));
    assert_eq!(std::fs::read_to_string(&pulled).unwrap(), "from the host\n");
    ok(&run(far(h).args(["kill", "--force", &name])));
    let listed = ok(&run(far(h).args(["list"])));
    assert!(!listed.contains(&name), "{listed}");

    // Attached through a pseudo-terminal, over the server's websockets.
    let name = ok(&run(far(h)
        .args([
            "shell",
            "--background",
            "--isolated",
            "--network",
            "open",
            "-w",
        ])
        .arg(p)))
    .trim()
    .to_string();
    let (master, slave) = openpty(90, 25);
    let mut cmd = far(h);
    cmd.args(["attach", &name]);
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());
    screen.expect("agent> ");
    screen.expect("[cci] 0:");
    keys.write_all(b"ping\r").unwrap();
    screen.expect("HEARD[ping]");
    keys.write_all(b"exit\r").unwrap();
    screen.expect("/workspace$");
    keys.write_all(b"exit\r").unwrap();
    let status = wait_exit(&mut child, &mut screen);
    assert_eq!(status.code(), Some(0), "{}", screen.drain());
    let _ = run(far(h).args(["kill", "--force", &name]));

    // What would name something of the server's instead of this machine's
    // is refused, by name, before anything is made.
    fails(
        far(h)
            .args(["run", "--network", "open", "-w"])
            .arg(p)
            .args(["--", "true"]),
        2,
        "cannot mount this folder",
        Duration::from_secs(5),
    );
    fails(
        far(h)
            .args([
                "run",
                "--isolated",
                "--network",
                "open",
                "--ssh-agent",
                "-w",
            ])
            .arg(p)
            .args(["--", "true"]),
        2,
        "--ssh-agent",
        Duration::from_secs(5),
    );
    let dir = h.display().to_string();
    fails(
        far(h).args(["container", "mount", "x", "d", &dir, "/mnt"]),
        2,
        "cannot mount a folder of this machine",
        Duration::from_secs(5),
    );
    // --target names a cluster member: this server is not a cluster.
    fails(
        far(h)
            .args([
                "run",
                "--isolated",
                "--network",
                "open",
                "--target",
                "node2",
                "-w",
            ])
            .arg(p)
            .args(["--", "true"]),
        2,
        "--target node2: far is not a cluster",
        Duration::from_secs(5),
    );
    // Restricted mode (the default) is the server's to enforce, with a
    // network ACL on the container's NIC; a kernel without connection
    // tracking for bridges cannot, and the container never runs then.
    restricted_on_the_server(h, p);
    let acls = incus(&["network", "acl", "list", "--format", "csv"]);
    assert!(!acls.contains("cci-"), "an ACL was left: {acls}");
    // Proxy and allowlist modes cannot be enforced there: refused, never
    // weakened.
    for mode in ["proxy", "allowlist"] {
        fails(
            far(h)
                .args(["run", "--isolated", "--network", mode, "-w"])
                .arg(p)
                .args(["--", "true"]),
            7,
            &format!("network mode {mode} cannot be enforced on remote far"),
            Duration::from_secs(5),
        );
    }
    fails(
        far(h).args(["network", "status"]),
        2,
        "guards the local daemon's containers only",
        Duration::from_secs(5),
    );

    // The incus CLI's remotes work as they are: its config.yml, its client
    // certificate, its pinned server certificate.
    let conf = h.join("incus-conf");
    std::fs::create_dir_all(conf.join("servercerts")).unwrap();
    std::fs::write(
        conf.join("config.yml"),
        format!(
            "default-remote: local\nremotes:\n  theirs:\n    addr: https://{}\n    auth_type: tls\n    protocol: incus\n    public: false\naliases: {{}}\n",
            listener.addr
        ),
    )
    .unwrap();
    for f in ["client.crt", "client.key"] {
        std::fs::copy(h.join(".cci/remotes").join(f), conf.join(f)).unwrap();
    }
    std::fs::copy(
        h.join(".cci/remotes/servercerts/far.crt"),
        conf.join("servercerts/theirs.crt"),
    )
    .unwrap();
    ok(&run(far(h)
        .env("INCUS_CONF", &conf)
        .args(["--remote", "theirs", "list"])));

    // A certificate that is not the pinned one: refused before anything is
    // sent, and said so.
    let pinned = h.join(".cci/remotes/servercerts/far.crt");
    let good = std::fs::read(&pinned).unwrap();
    std::fs::copy(h.join(".cci/remotes/client.crt"), &pinned).unwrap();
    fails(
        far(h).arg("list"),
        4,
        "is not the one pinned",
        Duration::from_secs(5),
    );
    std::fs::write(&pinned, good).unwrap();
    ok(&run(far(h).arg("list")));

    // A client the server no longer trusts.
    for fp in trusted_named(&tag) {
        incus(&["config", "trust", "remove", &fp]);
    }
    fails(
        far(h).arg("list"),
        4,
        "does not trust this client",
        Duration::from_secs(5),
    );
    // Adding by address without a token says how to be trusted.
    fails(
        far(h)
            .args(["remote", "add", "again"])
            .arg(&listener.addr)
            .arg("--accept-certificate"),
        2,
        "does not trust cci's client certificate",
        Duration::from_secs(5),
    );
    // Without a terminal, an address's fingerprint must be given.
    fails(
        far(h).args(["remote", "add", "again"]).arg(&listener.addr),
        2,
        "--fingerprint",
        Duration::from_secs(5),
    );
    // At a terminal: the fingerprint shown and accepted, then a trust token
    // typed in (for this server: its fingerprint is checked first).
    let (master, slave) = openpty(200, 25);
    let mut cmd = far(h);
    cmd.args(["remote", "add", "typed", &listener.addr]);
    on_terminal(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    let mut screen = Screen::new(&master);
    let mut keys = std::fs::File::from(master.try_clone().unwrap());
    screen.expect("ok (y/n/[fingerprint])?");
    keys.write_all(b"y\r").unwrap();
    screen.expect("Trust token for typed");
    let token = incus(&["config", "trust", "add", &format!("{tag}-typed"), "-q"]);
    let token = token.trim().lines().last().unwrap().to_string();
    keys.write_all(format!("{token}\r").as_bytes()).unwrap();
    let status = wait_exit(&mut child, &mut screen);
    assert_eq!(status.code(), Some(0), "{}", screen.drain());
    ok(&run(far(h).args(["--remote", "typed", "list"])));

    // Nothing listening: fast and clear, for a saved remote and a new one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = h.join(".cci/remotes/remotes.json");
    let saved = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        saved.replace(&listener.addr, &format!("127.0.0.1:{dead}")),
    )
    .unwrap();
    fails(
        far(h).arg("list"),
        3,
        "cannot reach remote far",
        Duration::from_secs(5),
    );
    fails(
        far(h).args([
            "remote",
            "add",
            "gone",
            &format!("127.0.0.1:{dead}"),
            "--accept-certificate",
        ]),
        3,
        "nothing listens there",
        Duration::from_secs(5),
    );
    ok(&run(far(h).args(["remote", "remove", "far"])));
    fails(
        far(h).arg("list"),
        5,
        "no remote named \"far\"",
        Duration::from_secs(5),
    );
}

/// Whether this kernel tracks connections on bridges (what Incus needs to
/// apply a network ACL to a NIC): a scratch nft table tries it.
fn bridge_conntrack() -> bool {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"table bridge cci_test_ct { chain c { type filter hook input priority 0; ct state established accept; } }\n")
        .unwrap();
    let ok = child.wait().unwrap().success();
    let _ = Command::new("nft")
        .args(["delete", "table", "bridge", "cci_test_ct"])
        .output();
    ok
}

/// A restricted run on the remote: the fake world's internet answers, its
/// LAN, the metadata endpoint and the server's own address do not (or, on
/// a kernel that cannot apply ACLs, a clear refusal and no container).
fn restricted_on_the_server(h: &Path, ws: &Path) {
    let mut cmd = far(h);
    cmd.args(["run", "--isolated", "-w"]).arg(ws).args([
        "--",
        "sh",
        "-c",
        "for a in 198.51.100.10 10.99.0.10 169.254.169.254 198.51.100.99; do timeout 4 bash -c \"exec 3<>/dev/tcp/$a/8080 && head -c 9 <&3\" 2>/dev/null | grep -q hello-cci && echo \"$a ok\" || echo \"$a no\"; done",
    ]);
    if !bridge_conntrack() {
        fails(
            &mut cmd,
            7,
            "network mode restricted cannot be enforced on remote far: its kernel has no connection tracking for bridges",
            Duration::from_secs(20),
        );
        return;
    }
    common::net::fakenet(&["up"]);
    let said = ok(&run(&mut cmd));
    for (addr, want) in [
        ("198.51.100.10", "ok"),
        ("10.99.0.10", "no"),
        ("169.254.169.254", "no"),
        ("198.51.100.99", "no"),
    ] {
        assert!(said.contains(&format!("{addr} {want}")), "{addr}: {said}");
    }
}

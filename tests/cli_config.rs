//! Configuration against the real daemon: every key's effect is observed on
//! the instance (config, devices, profiles), inside the container, or in
//! cci's behaviour; the untrusted workspace file is gated; bad files fail
//! with file, line and key and start nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::{Sessions, cci_in, ok, sh_in, text};
use common::{agent_workspace, cci, client, containers_left, containers_of, test_image};

/// A config file in its own folder, for `CCI_CONFIG`.
fn config_file(body: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.toml"), body).unwrap();
    d
}

/// `cci shell --background` in `ws` under the config in `cfg`.
fn session(ws: &Path, cfg: &Path, extra: &[&str]) -> Output {
    let mut cmd = cci_in(ws, "shell");
    cmd.env("CCI_CONFIG", cfg.join("config.toml"))
        .arg("--background")
        .args(extra);
    cmd.output().unwrap()
}

async fn instance(name: &str) -> cci::incus::Instance {
    client().await.instance(name).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_mounts_storage_and_defaults_reach_the_instance() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "from the host\n").unwrap();
    let more = common::workspace();
    let storage = tempfile::tempdir().unwrap();
    let store_at = storage.path().join("made-by-cci");
    let cfg = config_file(&format!(
        r#"[defaults]
persistent = true
slot_limit = 1
[tool]
args = ["--from-config"]
[limits]
cpu = 1
memory = "512MiB"
processes = 200
disk = "3GiB"
[incus]
storage_pool = "default"
[network]
block_metadata_endpoint = false
block_private_networks = false
[[mounts]]
host = "{}"
container = "/data"
readonly = true
"#,
        data.path().display()
    ));
    let mount = format!("{}:/more", more.path().display());
    let out = session(
        ws.path(),
        cfg.path(),
        &["--mount", &mount, "--storage", store_at.to_str().unwrap()],
    );
    let name = ok(&out).trim().to_string();
    let i = instance(&name).await;
    for (k, v) in [
        ("limits.cpu", "1"),
        ("limits.memory", "512MiB"),
        ("limits.processes", "200"),
        ("user.cci.persistent", "true"),
        ("user.cci.network.metadata", "open"),
        ("user.cci.network.lan", "open"),
    ] {
        assert_eq!(i.config.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(i.profiles, ["default", "cci-sandbox"]);
    let root = &i.devices["root"];
    assert_eq!(
        (root["pool"].as_str(), root["size"].as_str()),
        ("default", "3GiB")
    );
    assert_eq!(i.devices["mount0"]["path"], "/storage");
    assert_eq!(i.devices["mount1"]["path"], "/data");
    assert_eq!(i.devices["mount1"]["readonly"], "true");
    // The agent got the configured extra argument.
    let mut args = String::new();
    for _ in 0..100 {
        args = text(&sh_in(&name, false, "cat ~/.claude/fake-agent.args 2>/dev/null").stdout);
        if !args.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(args, "--from-config \n");
    // Inside: the mounts, read-only where asked; /storage is shared with the host.
    let inside = sh_in(
        &name,
        false,
        "cat /data/f; touch /data/x 2>/dev/null || echo ro; echo hi > /more/m; echo kept > /storage/s; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    );
    // (pids.max: the kernel holds a fork bomb to the process limit.)
    assert_eq!(text(&inside.stdout), "from the host\nro\n200\n");
    assert_eq!(
        std::fs::read_to_string(more.path().join("m")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(store_at.join("s")).unwrap(),
        "kept\n"
    );
    // The metadata exemption is in the firewall.
    let rules = Command::new("nft")
        .args(["list", "table", "bridge", "cci"])
        .output()
        .unwrap();
    assert!(
        text(&rules.stdout)
            .lines()
            .any(|l| l.contains("169.254.169.254") && l.ends_with("accept")),
        "{}",
        text(&rules.stdout)
    );
    assert!(
        text(&rules.stdout)
            .lines()
            .any(|l| l.contains("192.168.0.0/16") && l.ends_with("accept")),
        "{}",
        text(&rules.stdout)
    );

    // slot_limit = 1: a second session has no slot.
    let out = session(ws.path(), cfg.path(), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("all 1 slots"));
    let out = session(ws.path(), cfg.path(), &["--slot", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("limit of 1"));

    // Nested or duplicate mount points, and missing sources, start nothing.
    for bad in [
        vec!["--mount", &mount, "--mount", &mount],
        vec!["--mount", "/tmp:/data/inner"],
        vec!["--mount", "/tmp:/workspace/x"],
        vec!["--mount", "/no/such/folder:/x"],
        vec!["--mount", "/tmp:relative"],
    ] {
        let w = agent_workspace();
        let out = session(w.path(), cfg.path(), &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(containers_of(w.path()).await.is_empty());
    }
    ok(&cci().args(["kill", &name]).output().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_switches_the_image_and_the_network() {
    let c = client().await;
    let alias = format!("cci-test-alt-{}", std::process::id());
    let target = c.image_alias(&test_image()).await.unwrap().target;
    c.create_image_alias(&alias, &target, "cci test: a second name")
        .await
        .unwrap();
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let cfg = config_file(&format!(
        r#"[profiles.alt]
defaults = {{ image = "{alias}" }}
network = {{ mode = "allowlist", allowed_domains = ["198.51.100.7"], dns_servers = ["192.0.2.53"], refresh_interval_minutes = 5 }}
[profiles.other]
"#
    ));
    // CCI_IMAGE would win over the profile; this test wants the config's.
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = cci_in(ws.path(), "shell");
        cmd.env_remove("CCI_IMAGE")
            .env("CCI_CONFIG", cfg.path().join("config.toml"))
            .arg("--background")
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let name = ok(&run(&["--profile", "alt"], &[])).trim().to_string();
    let i = instance(&name).await;
    assert_eq!(i.config["user.cci.image"], alias);
    assert_eq!(i.config["user.cci.network"], "allowlist");
    assert_eq!(i.config["user.cci.network.allow"], "198.51.100.7/32");
    assert_eq!(i.config["user.cci.network.dns"], "192.0.2.53");
    assert_eq!(i.config["user.cci.network.refresh_minutes"], "5");
    ok(&cci().args(["kill", &name]).output().unwrap());
    // CCI_PROFILE selects it too; an unknown profile starts nothing.
    let name = ok(&run(&[], &[("CCI_PROFILE", "alt")])).trim().to_string();
    assert_eq!(instance(&name).await.config["user.cci.image"], alias);
    ok(&cci().args(["kill", &name]).output().unwrap());
    let out = run(&["--profile", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"nope\" is not defined") && err.contains("alt, other"),
        "{err}"
    );
    // `config show` says where each value came from.
    let out = cci()
        .args(["config", "show", "--format", "json", "--profile", "alt"])
        .env("CCI_CONFIG", cfg.path().join("config.toml"))
        .env_remove("CCI_IMAGE")
        .env("CCI_LIMIT_CPU", "2")
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let v = &shown["values"];
    assert_eq!(v["defaults.image"]["value"], alias.as_str());
    let from = v["defaults.image"]["from"].as_str().unwrap();
    assert!(
        from.starts_with("profile alt (") && from.ends_with("config.toml:2)"),
        "{from}"
    );
    assert_eq!(v["limits.cpu"]["from"], "env CCI_LIMIT_CPU");
    assert_eq!(v["limits.processes"]["from"], "default");
    assert_eq!(shown["profile"], "alt");
    let files = shown["files"].as_array().unwrap();
    let explicit = cfg.path().join("config.toml");
    assert!(
        files
            .iter()
            .any(|f| f["path"] == explicit.to_str().unwrap() && f["found"] == true),
        "{files:?}"
    );
    let _ = c.delete_image_alias(&alias).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_workspace_file_is_gated_until_cci_trust() {
    let home = tempfile::tempdir().unwrap();
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let wsf = ws.path().join(".cci.toml");
    let body = "[network]\nmode = \"open\"\n[limits]\ncpu = 1\n[[mounts]]\nhost = \"/etc\"\ncontainer = \"/hostetc\"\n";
    std::fs::write(&wsf, body).unwrap();
    let start = || {
        cci_in(ws.path(), "shell")
            .arg("--background")
            .env("HOME", home.path())
            .output()
            .unwrap()
    };
    let out = start();
    let name = ok(&out).trim().to_string();
    let err = text(&out.stderr);
    assert!(err.contains("is not trusted"), "{err}");
    assert!(
        err.contains("network.mode = \"open\"") && err.contains("/etc"),
        "{err}"
    );
    let i = instance(&name).await;
    assert_eq!(i.config["user.cci.network"], "restricted");
    assert_eq!(i.config["limits.cpu"], "1", "tightening applies untrusted");
    let sources: Vec<&str> = i
        .devices
        .values()
        .filter_map(|d| d.get("source").map(String::as_str))
        .collect();
    assert!(!sources.contains(&"/etc"), "{sources:?}");
    ok(&cci().args(["kill", &name]).output().unwrap());

    // Approved: all of it applies.
    let out = cci()
        .args(["trust", "--workspace"])
        .arg(ws.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(ok(&out).contains("now applies"), "{}", text(&out.stdout));
    let out = start();
    let name = ok(&out).trim().to_string();
    assert!(!text(&out.stderr).contains("not trusted"));
    let i = instance(&name).await;
    assert_eq!(i.config["user.cci.network"], "open");
    assert!(
        i.devices
            .values()
            .any(|d| d.get("source").map(String::as_str) == Some("/etc"))
    );
    ok(&cci().args(["kill", &name]).output().unwrap());

    // Changed after approval: gated again.
    std::fs::write(&wsf, format!("{body}# edited\n")).unwrap();
    let out = start();
    let name = ok(&out).trim().to_string();
    assert!(text(&out.stderr).contains("changed since you approved it"));
    assert_eq!(
        instance(&name).await.config["user.cci.network"],
        "restricted"
    );
    ok(&cci().args(["kill", &name]).output().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_fails_clearly_and_starts_nothing() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("config.toml");
    for (body, says) in [
        (
            &b"[defaults]\nimage = \"x\"\n[netwrok]\nmode = \"open\"\n"[..],
            ":3: netwrok: unknown field `netwrok`",
        ),
        (
            b"[network]\nmode = \"opne\"\n",
            ":2: network.mode: unknown variant `opne`",
        ),
        (b"[limits]\nprocesses = -1\n", ":2: limits.processes:"),
        (b"[limits]\nmemory = 4\n", ":2: limits.memory:"),
        (
            b"[defaults]\nimage = \"\"\n",
            ":2: defaults.image: must not be empty",
        ),
        (
            b"[defaults]\nslot_limit = 100000\n",
            ":2: defaults.slot_limit:",
        ),
        (b"[defaults]\nimage = \"\xff\"\n", ":2: is not valid UTF-8"),
        (b"[defaults\n", ":1:"),
    ] {
        std::fs::write(&file, body).unwrap();
        let out = cci_in(ws.path(), "shell")
            .arg("--background")
            .env("CCI_CONFIG", &file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{says}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{}{says}", file.display())),
            "{says}: {err}"
        );
        // `config validate FILE` says the same.
        let out = cci()
            .args(["config", "validate"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
    // A directory, a missing file, a bad environment value.
    for (env, value, says) in [
        ("CCI_CONFIG", d.path().to_str().unwrap(), "is a directory"),
        ("CCI_CONFIG", "/no/such/config.toml", "does not exist"),
        ("CCI_NETWORK", "opne", "CCI_NETWORK: unknown variant `opne`"),
        ("CCI_SLOT_LIMIT", "0", "CCI_SLOT_LIMIT"),
        ("CCI_LIMIT_MEMORY", "lots", "CCI_LIMIT_MEMORY"),
    ] {
        let out = cci_in(ws.path(), "shell")
            .arg("--background")
            .env(env, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{env}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(says),
            "{env}: {}",
            text(&out.stderr)
        );
    }
    // A workspace .cci.toml that is a symlink is refused, not followed.
    std::os::unix::fs::symlink("/etc/hostname", ws.path().join(".cci.toml")).unwrap();
    let out = cci_in(ws.path(), "shell")
        .arg("--background")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("symlink"));
    assert!(containers_left(ws.path()).await.is_empty());

    // The example is a valid file.
    let example = ok(&cci().args(["config", "example"]).output().unwrap());
    std::fs::write(&file, example).unwrap();
    assert!(
        ok(&cci()
            .args(["config", "validate"])
            .arg(&file)
            .output()
            .unwrap())
        .contains(": ok")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incus_paths_logs_and_time_limit_keys_take_effect() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let logs = tempfile::tempdir().unwrap();
    // The daemon's socket named in the file works; a wrong one is unreachable.
    let socket = cci::incus::discover_socket();
    let cfg = config_file(&format!(
        "[incus]\nsocket = \"{}\"\ndisable_shift = true\n[paths]\nlogs_dir = \"{}\"\n[limits]\nmax_duration = \"4s\"\n",
        socket.display(),
        logs.path().display()
    ));
    let out = cci_in(ws.path(), "shell")
        .arg("--background")
        .env("CCI_CONFIG", cfg.path().join("config.toml"))
        .env("CCI_LOG", "debug")
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    assert!(!text(&out.stderr).contains("DEBUG"), "logs go to the file");
    let log = std::fs::read_to_string(logs.path().join("cci.log")).unwrap();
    assert!(log.contains("DEBUG"), "{log}");
    let i = instance(&name).await;
    assert!(!i.devices["workspace"].contains_key("shift"));
    assert!(!i.config.contains_key("raw.idmap"), "no host id mapped");
    assert_eq!(i.config["user.cci.max_duration"], "4");
    // The time limit ends the session; the next command saves its state.
    let deadline = Instant::now() + Duration::from_secs(40);
    while instance(&name).await.status.as_str() != "Stopped" {
        assert!(
            Instant::now() < deadline,
            "{name} still runs after its time limit"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let session = i.config["user.cci.session"].clone();
    let meta = common::sessions_dir().join(format!("sessions-claude/{session}/meta.json"));
    // (A command that finds the container busy leaves it to the next one.)
    for _ in 0..5 {
        ok(&cci().args(["list"]).output().unwrap());
        if meta.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(meta.exists());
    let bad = config_file("[incus]\nsocket = \"/no/such/incus.socket\"\n");
    let out = cci()
        .arg("list")
        .env("CCI_CONFIG", bad.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/no/such/incus.socket"));
    let bad = config_file("[incus]\nproject = \"cci-no-such-project\"\n");
    let out = cci()
        .args(["run", "--workspace"])
        .arg(ws.path())
        .args(["--", "true"])
        .env("CCI_CONFIG", bad.path().join("config.toml"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("roject"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_profile_is_put_back_when_changed() {
    let c = client().await;
    let ws = common::workspace();
    // Make sure it exists, then damage it.
    let run = || {
        cci()
            .args(["run", "--workspace"])
            .arg(ws.path())
            .env("CCI_IMAGE", test_image())
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    ok(&run());
    let (mut p, etag) = c.profile("cci-sandbox").await.unwrap();
    p.config
        .insert("user.cci.profile-hash".into(), "old".into());
    p.config.insert("limits.processes".into(), "99999".into());
    // (Instances still stopping may refuse the change; the profile is saved.)
    let _ = c.update_profile(&p, etag.as_deref()).await;
    assert_eq!(
        c.profile("cci-sandbox").await.unwrap().0.config["user.cci.profile-hash"],
        "old"
    );
    ok(&run());
    let (p, _) = c.profile("cci-sandbox").await.unwrap();
    assert_eq!(p.config["limits.processes"], "4096");
    assert_ne!(p.config["user.cci.profile-hash"], "old");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_user_and_uid_choose_who_runs_inside() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let storage = tempfile::tempdir().unwrap();
    let cfg = config_file(&format!(
        "[incus]\ncode_uid = 0\ncode_user = \"root\"\n[paths]\nstorage_dir = \"{}\"\n[defaults]\nnetwork = \"open\"\n",
        storage.path().display()
    ));
    let out = cci()
        .args(["run", "--workspace"])
        .arg(ws.path())
        .env("CCI_IMAGE", test_image())
        .env("CCI_CONFIG", cfg.path().join("config.toml"))
        .args(["--", "sh", "-c", "id -un; echo $HOME"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "root\n/root\n");
    // A session runs its agent (and tmux) as that user, and its state is saved from there.
    let name = ok(&session(ws.path(), cfg.path(), &[])).trim().to_string();
    let mut ran = String::new();
    for _ in 0..100 {
        ran = text(&sh_in(&name, true, "cat /root/.claude/fake-agent.run 2>/dev/null").stdout);
        if !ran.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ran.ends_with(" new root /workspace\n"), "{ran:?}");
    let i = instance(&name).await;
    let storage_dev = i
        .devices
        .values()
        .find(|d| d.get("path").map(String::as_str) == Some("/storage"));
    assert_eq!(
        storage_dev
            .and_then(|d| d.get("source"))
            .map(String::as_str),
        storage.path().to_str()
    );
    assert_eq!(i.config["user.cci.network"], "open", "[defaults] network");
    // A cci without that configuration still finds the session: the
    // container records whom it runs as.
    let screen = ok(&cci().args(["tmux", "capture", &name]).output().unwrap());
    assert!(screen.contains("fake-agent ready"), "{screen}");
    let out = cci()
        .args(["shutdown", &name])
        .env("CCI_CONFIG", cfg.path().join("config.toml"))
        .output()
        .unwrap();
    assert!(
        ok(&out).contains("agent state saved"),
        "{}",
        text(&out.stdout)
    );
    let bad = config_file("[incus]\ncode_user = \"Bad User\"\n");
    let out = cci()
        .arg("list")
        .env("CCI_CONFIG", bad.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(":2: incus.code_user"),
        "{}",
        text(&out.stderr)
    );
}

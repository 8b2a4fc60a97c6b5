//! What of the host goes into a sandbox with the agent's credentials and a
//! command's environment: only what the agent needs, and no secret in the
//! host's process list.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::agent::{Sessions, cci_in, sh_in, text};
use common::{agent_workspace, cci, containers_left, test_image, workspace};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_config_goes_in_without_mcp_tokens_or_other_projects() {
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let token = format!("CANARY-{}-mcp-token", std::process::id());
    let other = format!("/home/someone/CANARY-{}-other-project", std::process::id());
    let host = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "oauthAccount": {"emailAddress": "user@example.invalid"},
        "userID": "user-id-1",
        "hasCompletedOnboarding": true,
        "lastOnboardingVersion": "9.9.9",
        "theme": "solarized",
        "mcpServers": {"github": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": token}}},
        "projects": {other.clone(): {"mcpServers": {"db": {"headers": {"Authorization": token}}}}},
        "env": {"SECRET": token},
    });
    std::fs::write(host.path().join(".claude.json"), config.to_string()).unwrap();
    let out = cci_in(ws.path(), "shell")
        .arg("--background")
        .env("CCI_CREDENTIALS_DIR", host.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();

    let got = sh_in(&name, false, "cat ~/.claude.json");
    let raw = text(&got.stdout);
    assert!(!raw.contains(&token), "the MCP token went in: {raw}");
    assert!(
        !raw.contains(&other),
        "another project's path went in: {raw}"
    );
    let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(cfg.get("mcpServers"), None);
    assert_eq!(cfg.get("env"), None);
    // Positive control: the allowed keys arrive, the sandbox's are merged.
    assert_eq!(
        cfg["oauthAccount"]["emailAddress"], "user@example.invalid",
        "{raw}"
    );
    assert_eq!(cfg["userID"], "user-id-1");
    assert_eq!(cfg["lastOnboardingVersion"], "9.9.9");
    assert_eq!(cfg["theme"], "solarized");
    assert_eq!(cfg["hasCompletedOnboarding"], true);
    assert_eq!(
        cfg["projects"]["/workspace"]["hasTrustDialogAccepted"],
        true
    );
    assert_eq!(cfg["projects"].as_object().unwrap().len(), 1, "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn env_values_from_the_environment_and_files_stay_out_of_host_argv() {
    let ws = workspace();
    let from_env = format!("CANARY-{}-from-env", std::process::id());
    let from_file = format!("CANARY-{}-from-file", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.env");
    std::fs::write(&file, format!("# secrets\nFROM_FILE={from_file}\n")).unwrap();
    let mut child = cci()
        .env("CCI_IMAGE", test_image())
        .env("CCI_TEST_SECRET", &from_env)
        .arg("run")
        .arg("--workspace")
        .arg(ws.path())
        .args(["-e", "CCI_TEST_SECRET", "--env-file"])
        .arg(&file)
        .args(["-e", "PLAIN=visible", "--", "sh", "-c"])
        .arg("echo \"got $CCI_TEST_SECRET $FROM_FILE $PLAIN\"; sleep 4")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // The command runs (it printed), so cci is running: read its argv now.
    let line = rx.recv_timeout(Duration::from_secs(90));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let line = line.unwrap_or_else(|_| panic!("cci run printed nothing: {err}"));
    assert_eq!(line, format!("got {from_env} {from_file} visible"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    // Positive control: the process list shows the arguments, and a value
    // given as KEY=VALUE (hence the warning in --help).
    assert!(cmdline.contains("CCI_TEST_SECRET"), "{cmdline}");
    assert!(cmdline.contains("PLAIN=visible"), "{cmdline}");
    assert!(!cmdline.contains(&from_env), "{cmdline}");
    assert!(!cmdline.contains(&from_file), "{cmdline}");
    assert_eq!(containers_left(ws.path()).await, Vec::<String>::new());
}

#[test]
fn help_warns_about_values_on_the_command_line() {
    for sub in [&["run"][..], &["shell"], &["container", "exec"]] {
        let out = cci().args(sub).arg("--help").output().unwrap();
        let help = text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(help.contains("--env-file"), "{sub:?}: {help}");
        assert!(
            help.contains("visible in the host's process list"),
            "{sub:?}: {help}"
        );
    }
}

/// `--ssh-agent`: ssh inside signs with a key that stays on the host, the
/// socket is `code`'s alone, and an untrusted `.cci.toml` cannot turn it on.
#[tokio::test(flavor = "multi_thread")]
async fn the_ssh_agent_signs_inside_while_its_key_stays_on_the_host() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_cci_test");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "cci-test-key", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let sock = dir.path().join("agent.sock");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent_guard = Kill(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added.stderr));
    let private = std::fs::read_to_string(&key).unwrap();
    // A line from the middle of the private key: it must be nowhere inside.
    let secret_line = private.lines().nth(2).unwrap().to_string();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    // Asked without an agent: a clear error, nothing made.
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--ssh-agent"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("SSH_AUTH_SOCK is not set"),
        "{}",
        text(&out.stderr)
    );
    assert!(common::containers_of(ws.path()).await.is_empty());

    let shell = |flags: &[&str]| {
        let out = cci_in(ws.path(), "shell")
            .args(["--background", "--persistent"])
            .args(flags)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let name = shell(&["--ssh-agent"]);
    let script = format!(
        "set -e; ssh-add -l; stat -c '%U %a' \"$SSH_AUTH_SOCK\"
printf '%s' '{public}' > /tmp/k.pub; echo signed-inside > /tmp/d
ssh-keygen -q -Y sign -f /tmp/k.pub -n cci-test /tmp/d; cat /tmp/d.sig"
    );
    let got = sh_in(&name, false, &script);
    let said = text(&got.stdout);
    assert_eq!(got.status.code(), Some(0), "{said}{}", text(&got.stderr));
    assert!(said.contains("cci-test-key"), "{said}");
    assert!(said.contains("code 600"), "{said}");
    // The signature made inside checks out with the host's public key.
    let sig = said
        .find("-----BEGIN SSH SIGNATURE-----")
        .map(|i| said[i..].to_string())
        .unwrap_or_else(|| panic!("no signature: {said}"));
    std::fs::write(dir.path().join("d.sig"), &sig).unwrap();
    let mut check = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", "cci-test", "-s"])
        .arg(dir.path().join("d.sig"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(b"signed-inside\n")
            .unwrap();
    }
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    // Another user inside cannot use it; no key file went in.
    let other = sh_in(
        &name,
        true,
        "su nobody -s /bin/sh -c 'SSH_AUTH_SOCK=/var/lib/cci-ssh-agent.sock ssh-add -l' 2>&1; echo rc=$?",
    );
    assert!(
        !text(&other.stdout).contains("cci-test-key"),
        "{}",
        text(&other.stdout)
    );
    assert!(
        text(&other.stdout).contains("rc=2"),
        "{}",
        text(&other.stdout)
    );
    let find = format!(
        "grep -rlsF -e '{secret_line}' /home /root /etc /tmp /var /workspace 2>/dev/null; echo searched"
    );
    let found = sh_in(&name, true, &find);
    assert_eq!(
        text(&found.stdout).trim(),
        "searched",
        "{}",
        text(&found.stdout)
    );

    // The kept container's next session without the flag has no agent;
    // one with it has it again (added to the running container).
    // The forwarding ended with the session: a start for anything else
    // (`cci container start`, a save) has no agent.
    let kept = shut_down_with_forwarding_gone(&name, &["ssh-agent"]).await;
    assert!(!kept.config.contains_key("environment.SSH_AUTH_SOCK"));
    assert_eq!(shell(&[]), name);
    let probe = "echo \"[$SSH_AUTH_SOCK]\"; SSH_AUTH_SOCK=/var/lib/cci-ssh-agent.sock ssh-add -l; echo rc=$?";
    let said = text(&sh_in(&name, false, probe).stdout);
    assert!(said.contains("[]") && said.contains("rc=2"), "{said}");
    assert_eq!(shell(&["--ssh-agent", "--slot", "1"]), name);
    let said = text(&sh_in(&name, false, probe).stdout);
    assert!(
        said.contains("cci-test-key") && said.contains("rc=0"),
        "{said}"
    );

    // An untrusted .cci.toml cannot turn it on.
    let ws2 = agent_workspace();
    let _s2 = Sessions(ws2.path().to_path_buf());
    std::fs::write(
        ws2.path().join(".cci.toml"),
        "[defaults]\nssh_agent = true\n",
    )
    .unwrap();
    let out = cci_in(ws2.path(), "shell")
        .arg("--background")
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name2 = text(&out.stdout).trim().to_string();
    let got = sh_in(
        &name2,
        false,
        "echo \"[$SSH_AUTH_SOCK]\"; ls /var/lib/cci-ssh-agent.sock 2>&1",
    );
    let said = text(&got.stdout);
    assert!(
        said.contains("[]") && said.contains("No such file"),
        "{said}"
    );
    drop(agent_guard);
}

/// `cci shutdown NAME` (a kept container), then check that each of
/// `devices` became a `none` device: forwarding ends with its session.
async fn shut_down_with_forwarding_gone(name: &str, devices: &[&str]) -> cci::incus::Instance {
    let out = cci()
        .args(["shutdown", "--timeout", "10", name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (kept, _) = common::client().await.instance(name).await.unwrap();
    for d in devices {
        assert_eq!(
            kept.devices
                .get(*d)
                .and_then(|d| d.get("type"))
                .map(String::as_str),
            Some("none"),
            "{d}: {:?}",
            kept.devices
        );
    }
    kept
}

/// Host-side git for the tests' repositories (owned by another uid).
fn host_git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// git inside pushes and fetches the workspace's repository on a git host
/// while the token stays on the host: an allowed branch goes up; main, a
/// force push, a deletion, a tag and another repository are refused with
/// cci's reason; the token is nowhere in the container, its config or
/// cci's files; every operation is in `cci forge log`.
#[tokio::test(flavor = "multi_thread")]
async fn git_pushes_through_the_host_with_the_token_never_inside() {
    use std::process::Command;
    let host = tempfile::tempdir().unwrap();
    let canary = format!("CANARY{}gittoken{}", std::process::id(), uuid_like());
    let token_file = host.path().join("token");
    std::fs::write(&token_file, &canary).unwrap();
    // The git host: me/proj (main with one commit) and other/repo.
    let root = host.path().join("git");
    let seed = host.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    host_git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    host_git(&seed, &["add", "README"]);
    host_git(&seed, &["commit", "-q", "-m", "first"]);
    for repo in ["me/proj.git", "other/repo.git"] {
        let to = root.join(repo);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        host_git(
            host.path(),
            &[
                "clone",
                "-q",
                "--bare",
                seed.to_str().unwrap(),
                to.to_str().unwrap(),
            ],
        );
    }
    let main_before = host_git(&root.join("me/proj.git"), &["rev-parse", "main"]);
    // (So that git sends push options at all: GitLab-style hosts take them.)
    host_git(
        &root.join("me/proj.git"),
        &["config", "receive.advertisePushOptions", "true"],
    );
    let (_server, port) = fixture("fake-git-host.py", &[&root, &token_file], host.path());
    let config = host.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[git]\nforward_hosts = [\"git.fake.test=http://127.0.0.1:{port}\"]\ntoken_command = \"cat '{}'\"\n",
            token_file.display()
        ),
    )
    .unwrap();

    // The workspace: a clone of me/proj whose origin is on the git host.
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    host_git(ws.path(), &["init", "-q", "-b", "main"]);
    host_git(
        ws.path(),
        &[
            "remote",
            "add",
            "origin",
            "https://git.fake.test/me/proj.git",
        ],
    );
    // As a user's own repository is: theirs.
    let chown = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(ws.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let out = cci_in(ws.path(), "shell")
        .args(["--background", "--persistent"])
        .env("CCI_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();

    let git = |script: &str| {
        let full = format!(
            "{{ cd /workspace && git config --global user.name a && git config --global user.email a@a.invalid && {script}; }} 2>&1; echo rc=$?"
        );
        text(&sh_in(&name, false, &full).stdout)
    };
    // Fetch, then push an allowed branch: it arrives upstream.
    let said = git(
        "git fetch -q origin && git checkout -q -b cci/work origin/main && echo change > f && git add f && git commit -qm change && git push origin cci/work",
    );
    assert!(said.ends_with("rc=0\n"), "{said}");
    let pushed = text(&sh_in(&name, false, "cd /workspace && git rev-parse HEAD").stdout)
        .trim()
        .to_string();
    assert_eq!(
        host_git(&root.join("me/proj.git"), &["rev-parse", "cci/work"]),
        pushed
    );
    // Refused, each with cci's reason, and nothing changes upstream.
    for (script, why) in [
        ("git push origin HEAD:main", "default branch"),
        (
            "git commit -q --amend -m other && git push -f origin cci/work",
            "force pushes are not allowed",
        ),
        ("git push origin :cci/work", "deleting a branch"),
        ("git tag v1 && git push origin v1", "pushing tags"),
        ("git push origin HEAD:feature", "matches no allowed branch"),
        (
            "git push -o merge_request.create origin HEAD:cci/opt",
            "push options",
        ),
        (
            "git checkout -q -b cci/ci && mkdir -p .github/workflows && echo 'on: push' > .github/workflows/x.yml && git add .github && git commit -qm ci && git push origin cci/ci",
            "CI runs it with the repository's secrets",
        ),
        (
            "git ls-remote http://127.0.0.1:47417/git.fake.test/other/repo",
            "not this workspace's repository",
        ),
    ] {
        let said = git(script);
        assert!(
            !said.ends_with("rc=0\n") && said.contains(why),
            "{script}: {said}"
        );
    }
    assert_eq!(
        host_git(&root.join("me/proj.git"), &["rev-parse", "cci/work"]),
        pushed
    );
    assert_eq!(
        host_git(&root.join("me/proj.git"), &["rev-parse", "main"]),
        main_before
    );
    assert!(!host_git(&root.join("me/proj.git"), &["tag"]).contains("v1"));

    // gh itself (its http_unix_socket, set by cci): reads of the
    // repository, a pull request and a comment there; nothing else.
    let gh = |args: &str, body: &str| {
        let script = format!(
            "cat > /tmp/body.json <<'EOF'\n{body}\nEOF\nGH_HOST=git.fake.test gh api {args} 2>&1; echo rc=$?"
        );
        text(&sh_in(&name, false, &script).stdout)
    };
    let pr = |id: &str| {
        serde_json::json!({
            "query": "mutation PullRequestCreate($input: CreatePullRequestInput!) { createPullRequest(input: $input) { pullRequest { url } } }",
            "variables": {"input": {"repositoryId": id, "title": "t", "baseRefName": "main", "headRefName": "cci/work"}}
        })
        .to_string()
    };
    let delete_ref = r#"{"query": "mutation($i: DeleteRefInput!) { deleteRef(input: $i) { clientMutationId } }", "variables": {"i": {"refId": "x"}}}"#;
    for (args, body, want) in [
        ("repos/me/proj/issues", String::new(), "\"ok\":true"),
        (
            "-X POST repos/me/proj/pulls -f title=t",
            String::new(),
            "\"ok\":true",
        ),
        (
            "-X POST repos/me/proj/issues/1/comments -f body=b",
            String::new(),
            "\"ok\":true",
        ),
        (
            "repos/other/repo/issues",
            String::new(),
            "not this workspace's repository",
        ),
        (
            "-X DELETE repos/me/proj/git/refs/heads/main",
            String::new(),
            "nothing else",
        ),
        (
            "-X PATCH repos/me/proj/pulls/1 -f state=closed",
            String::new(),
            "nothing else",
        ),
        (
            "graphql -f query='query { viewer { login } }'",
            String::new(),
            "\"ok\":true",
        ),
        (
            "graphql --input /tmp/body.json",
            pr("R_mine"),
            "\"ok\":true",
        ),
        (
            "graphql --input /tmp/body.json",
            pr("R_other"),
            "acts on other/repo",
        ),
        (
            "graphql --input /tmp/body.json",
            delete_ref.to_string(),
            "not allowed",
        ),
    ] {
        let said = gh(args, &body).replace(": ", ":");
        let refused = !want.contains("ok");
        assert!(
            said.contains(&want.replace(": ", ":")) && said.ends_with("rc=0\n") != refused,
            "gh api {args} {body}: {said}"
        );
    }
    let env = text(
        &sh_in(
            &name,
            false,
            "echo \"$GH_TOKEN\"; ls -l /var/lib/cci-forge/sock; touch /var/lib/cci-forge/x 2>&1",
        )
        .stdout,
    );
    assert!(
        env.starts_with("cci-host-credential\nsrw") && env.contains("Read-only file system"),
        "{env}"
    );

    // Identity is the session's socket, never what a request says: another
    // workspace's session (origin other/repo) reaches other/repo, and this
    // one still cannot, whatever it claims.
    let ws2 = agent_workspace();
    let _s2 = Sessions(ws2.path().to_path_buf());
    host_git(ws2.path(), &["init", "-q", "-b", "main"]);
    host_git(
        ws2.path(),
        &[
            "remote",
            "add",
            "origin",
            "git@git.fake.test:other/repo.git",
        ],
    );
    assert!(
        Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(ws2.path())
            .status()
            .unwrap()
            .success()
    );
    let out = cci_in(ws2.path(), "shell")
        .arg("--background")
        .env("CCI_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let other = text(&out.stdout).trim().to_string();
    let ls = "git ls-remote git@git.fake.test:other/repo.git main 2>&1; echo rc=$?";
    let said = text(&sh_in(&other, false, ls).stdout);
    assert!(
        said.contains("refs/heads/main") && said.ends_with("rc=0\n"),
        "{said}"
    );
    let claim = format!(
        "git -c http.extraHeader='X-Cci-Container: {other}' -c http.extraHeader='X-Forwarded-For: 127.0.0.1' ls-remote http://127.0.0.1:47417/git.fake.test/other/repo 2>&1; echo rc=$?"
    );
    let said = text(&sh_in(&name, false, &claim).stdout);
    assert!(
        said.contains("not this workspace's repository") && !said.ends_with("rc=0\n"),
        "{said}"
    );

    // The token is nowhere inside: files, every process's environment and
    // command line; nor in the container's config and devices.
    assert_search_finds_a_planted_string(&name);
    let found = search_inside(&name, &canary);
    assert_eq!(found.trim(), "0\nsearched", "{found}");
    let (instance, _) = common::client().await.instance(&name).await.unwrap();
    let json = serde_json::to_string(&(&instance.config, &instance.devices)).unwrap();
    assert!(!json.contains(&canary), "{json}");
    assert!(instance.devices.contains_key("cci-git"), "{json}");
    // Nor in cci's own files (logs, grants, the forwarder's log).
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cci");
    let grep = Command::new("grep")
        .args(["-rlsF", &canary])
        .arg(&home)
        .arg(common::sessions_dir())
        .output()
        .unwrap();
    assert_eq!(text(&grep.stdout), "", "the token is in cci's files");

    // Every operation is logged, refused ones with why.
    let log = common::cci_ok(&["forge", "log", &name, "--format", "json"]);
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["op"] == "push" && r["allowed"] == true),
        "{log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["allowed"] == false && r["reason"].as_str().unwrap_or("").contains("force")),
        "{log}"
    );
    assert!(log.contains("git.fake.test/other/repo"), "{log}");
    assert!(
        records.iter().any(|r| r["op"] == "gh"
            && r["allowed"] == false
            && r["reason"].as_str().unwrap_or("").contains("other/repo")),
        "{log}"
    );

    // The session's end takes the way out with it.
    let kept = shut_down_with_forwarding_gone(&name, &["cci-git", "cci-gh"]).await;
    assert!(
        !kept
            .config
            .keys()
            .any(|k| k.starts_with("environment.GIT_CONFIG_"))
    );
}

/// Look for `what` in a container's files under the usual folders and in
/// every process's environment and command line; prints the files, then
/// the count of process records, then "searched". (`what` goes in as two
/// halves, so no command line holds it.)
fn search_inside(name: &str, what: &str) -> String {
    let (a, b) = what.split_at(what.len() / 2);
    let look = format!(
        "pat() {{ printf '%s%s\\n' '{a}' '{b}'; }}
cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline > /dev/shm/all 2>/dev/null
pat | grep -rlsFf - /home /root /etc /tmp /var /workspace /run 2>/dev/null
pat | grep -caFf - /dev/shm/all; rm -f /dev/shm/all; echo searched"
    );
    text(&sh_in(name, true, &look).stdout)
}

/// Positive control of [`search_inside`]: a string planted in a file and
/// a process's environment is found.
fn assert_search_finds_a_planted_string(name: &str) {
    let control = format!("CONTROL{}planted", std::process::id());
    let (a, b) = control.split_at(4);
    let plant = format!(
        "c=$(printf '%s%s' '{a}' '{b}'); echo \"$c\" > /tmp/planted; (export PLANTED=\"$c\"; exec setsid sleep 120 </dev/null >/dev/null 2>&1 &)"
    );
    sh_in(name, true, &plant);
    let found = search_inside(name, &control);
    assert!(
        found.contains("/tmp/planted\n") && !found.contains("\n0\nsearched"),
        "the search does not find a planted string: {found}"
    );
}

/// A loopback stand-in server (a fixture script): killed when dropped.
struct Fixture(std::process::Child);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `tests/fixtures/SCRIPT ARGS... PORT_FILE`; the fixture and its port.
fn fixture(script: &str, args: &[&std::path::Path], dir: &std::path::Path) -> (Fixture, String) {
    let port_file = dir.join(format!("{script}.port"));
    let child = std::process::Command::new("python3")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(script),
        )
        .args(args)
        .arg(&port_file)
        .spawn()
        .unwrap();
    let guard = Fixture(child);
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            return (guard, p);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{script} did not start");
}

/// `[tool] credentials = "host"`: the agent reaches its API through cci's
/// endpoint, which adds the host's key; no key and no credential file goes
/// in, whatever the agent sends in their place is dropped, and only the
/// API's /v1/ paths are forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn host_credentials_mode_reaches_the_api_with_no_key_inside() {
    let host = tempfile::tempdir().unwrap();
    let canary = format!("CANARY{}apikey{}", std::process::id(), uuid_like());
    let oauth = format!("CANARY{}oauth{}", std::process::id(), uuid_like());
    let key_file = host.path().join("key");
    std::fs::write(&key_file, &canary).unwrap();
    let creds = host.path().join("home");
    std::fs::create_dir_all(creds.join(".claude")).unwrap();
    std::fs::write(
        creds.join(".claude.json"),
        serde_json::json!({"primaryApiKey": canary, "theme": "solarized", "hasCompletedOnboarding": true})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        creds.join(".claude/.credentials.json"),
        serde_json::json!({"claudeAiOauth": {"accessToken": oauth}}).to_string(),
    )
    .unwrap();
    let (_api, port) = fixture("fake-api.py", &[&key_file], host.path());
    let config = host.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[tool]\ncredentials = \"host\"\napi_url = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    let out = cci_in(ws.path(), "shell")
        .args(["--background"])
        .env("CCI_CONFIG", &config)
        .env("CCI_CREDENTIALS_DIR", &creds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_string();

    // The agent's settings point at the endpoint with a placeholder; a
    // request with it (and a bogus key besides) reaches the API with the
    // host's key.
    let call = r#"base=$(sed -n 's/.*"ANTHROPIC_BASE_URL": *"\([^"]*\)".*/\1/p' ~/.claude/settings.json)
tok=$(sed -n 's/.*"ANTHROPIC_AUTH_TOKEN": *"\([^"]*\)".*/\1/p' ~/.claude/settings.json)
echo "base=$base tok=$tok"
curl -s -H "Authorization: Bearer $tok" -H 'x-api-key: bogus' -H 'anthropic-version: 2023-06-01' -d '{"model":"m"}' "$base/v1/messages"; echo
curl -s "$base/v1/models?limit=1"; echo
curl -s -X DELETE "$base/v1/files/x"; echo
curl -s "$base/admin/keys"; echo"#;
    let said = text(&sh_in(&name, false, call).stdout);
    assert!(
        said.contains("base=http://127.0.0.1:47417/anthropic tok=cci-host-credential"),
        "{said}"
    );
    let answers: Vec<&str> = said.lines().skip(1).filter(|l| !l.is_empty()).collect();
    let first: serde_json::Value =
        serde_json::from_str(answers[0]).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(first["ok"], true, "{said}");
    assert_eq!(first["path"], "/v1/messages");
    assert_eq!(first["version"], "2023-06-01");
    assert_eq!(first["body"], r#"{"model":"m"}"#);
    let second: serde_json::Value =
        serde_json::from_str(answers[1]).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(second["path"], "/v1/models?limit=1", "{said}");
    assert!(
        answers[2].contains("only GET and POST under /v1/"),
        "{said}"
    );
    assert!(
        answers[3].contains("only GET and POST under /v1/"),
        "{said}"
    );

    // No key and no credential file inside; the rest of the agent's
    // config went in.
    let config_inside = text(&sh_in(&name, false, "cat ~/.claude.json; ls -a ~/.claude").stdout);
    assert!(config_inside.contains("solarized"), "{config_inside}");
    assert!(!config_inside.contains("primaryApiKey"), "{config_inside}");
    assert!(
        !config_inside.contains(".credentials.json"),
        "{config_inside}"
    );
    assert_search_finds_a_planted_string(&name);
    for secret in [&canary, &oauth] {
        let found = search_inside(&name, secret);
        assert_eq!(found.trim(), "0\nsearched", "{found}");
    }
    let (instance, _) = common::client().await.instance(&name).await.unwrap();
    let json = serde_json::to_string(&(&instance.config, &instance.devices)).unwrap();
    assert!(!json.contains(&canary) && !json.contains(&oauth), "{json}");
    // The session's end saves the agent's state: no key in it, nor in
    // cci's own files.
    let out = cci()
        .args(["shutdown", "--timeout", "10", &name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cci");
    for secret in [&canary, &oauth] {
        let grep = std::process::Command::new("grep")
            .args(["-rlsF", secret.as_str()])
            .arg(&home)
            .arg(common::sessions_dir())
            .output()
            .unwrap();
        assert_eq!(
            text(&grep.stdout),
            "",
            "a key is in cci's files or a saved session"
        );
    }
}

/// The forwarder speaks TLS to a git host and checks its certificate: a
/// host whose certificate the system trusts (here, as `SSL_CERT_FILE`
/// says) is reached with the token; one it does not trust is not.
/// (The daemon alone, in a home of its own; no container.)
#[tokio::test(flavor = "multi_thread")]
async fn the_forwarder_reaches_only_https_hosts_it_trusts() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    // A certificate authority, and the host's certificate it signed.
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        dir.path().join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=cci-test-ca -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out cert.pem";
    let made = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let (_tls, port) = fixture("fake-tls-api.py", &[&cert, &key], dir.path());
    let ask = |trusted: bool| {
        let home = tempfile::tempdir().unwrap();
        let id = "tlstest0123456789abc";
        let grants = home.path().join(".cci/forge/grants");
        std::fs::create_dir_all(&grants).unwrap();
        let grant = serde_json::json!({
            "workspace": "/nowhere",
            "repos": [{"host": "localhost", "path": "me/proj"}],
            "upstreams": {"localhost": format!("https://localhost:{port}")},
            "push": {"branches": ["cci/**"], "default_branch": false, "tags": false},
            "token_command": "echo tls-test-token",
            "made_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        });
        std::fs::write(grants.join(format!("{id}.json")), grant.to_string()).unwrap();
        let mut daemon = cci();
        daemon.args(["forge", "serve"]).env("HOME", home.path());
        if trusted {
            daemon.env("SSL_CERT_FILE", &ca);
        }
        let _daemon = Fixture(daemon.spawn().unwrap());
        let sock = home.path().join(format!(".cci/forge/s/{id}/sock"));
        for _ in 0..400 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let out = Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&sock)
            .args([
                "-H",
                "Host: localhost",
                "http://x/api/v3/repos/me/proj/issues",
            ])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let said = ask(true);
    assert!(
        said.contains("\"ok\": true") && said.contains("token tls-test-token"),
        "{said}"
    );
    let said = ask(false);
    assert!(
        said.contains("cannot reach localhost's API") && !said.contains("ok"),
        "{said}"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

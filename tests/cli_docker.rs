//! Docker inside a session: the image with Docker (`cci build` installs it;
//! here the test image with Debian's docker.io, made at set-up) runs a tiny
//! image made on the spot from the container's own programs (no registry),
//! and what runs in Docker is held to the session's network mode like the
//! session itself, against the fake world of the network tests.

mod common;

use common::agent::{Sessions, cci_in, ok, sh_in, text};
use common::agent_workspace;
use common::net::{HOST_LOCAL, INTERNET, LAN, world};

fn docker_image() -> String {
    std::env::var("CCI_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "cci-test-docker".into())
}

/// `bash` in the tiny Docker image, run inside `name` as root; its output.
fn in_docker(name: &str, script: &str) -> String {
    let cmd = format!(
        "docker run --rm cci-tiny:1 /bin/bash -c {}",
        shell_quote(script)
    );
    text(&sh_in(name, true, &cmd).stdout)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_runs_a_local_image_inside_and_stays_in_the_network_mode() {
    let _w = world().await;
    let ws = agent_workspace();
    let _s = Sessions(ws.path().to_path_buf());
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-tiny.sh"),
        ws.path().join(".docker-tiny.sh"),
    )
    .unwrap();
    let out = cci_in(ws.path(), "shell")
        .env("CCI_IMAGE", docker_image())
        .arg("--background")
        .output()
        .unwrap();
    let name = ok(&out).trim().to_string();
    let made = sh_in(&name, true, "sh /workspace/.docker-tiny.sh");
    assert!(
        text(&made.stdout).contains("ready"),
        "{}{}",
        text(&made.stdout),
        text(&made.stderr)
    );
    assert_eq!(
        in_docker(&name, "echo hello-from-docker").trim(),
        "hello-from-docker"
    );

    // From inside Docker: the fake internet answers (the positive control),
    // a LAN host and the host itself do not (restricted mode).
    let probe = |addr: &str, port: u16| {
        format!(
            "out=$(timeout 4 bash -c \"exec 3<>/dev/tcp/{addr}/{port} && head -c 9 <&3\" 2>/dev/null); \
             [ \"$out\" = hello-cci ] && echo {addr}:ok || echo {addr}:no"
        )
    };
    let mut reached = String::new();
    for _ in 0..3 {
        reached = in_docker(&name, &probe(INTERNET, 8080));
        if reached.contains(":ok") {
            break;
        }
    }
    assert!(reached.contains(&format!("{INTERNET}:ok")), "{reached}");
    for addr in LAN {
        let got = in_docker(&name, &probe(addr, 8080));
        assert!(got.contains(&format!("{addr}:no")), "{got}");
    }
    let got = in_docker(&name, &probe(HOST_LOCAL, 18080));
    assert!(got.contains(&format!("{HOST_LOCAL}:no")), "{got}");
}

//! `install.sh` as a new user runs it: twice (the second run changes
//! nothing), then the installed cci says the setup is healthy.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::test_image;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn install(prefix: &Path) -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .arg("--yes")
        .env("PREFIX", prefix)
        .output()
        .unwrap();
    let log = text(&out.stderr);
    assert!(out.status.success(), "install.sh failed:\n{log}");
    log
}

/// What install.sh may change: installed files (with their times) and the
/// daemon's storage, networks and default profile.
fn snapshot(prefix: &Path) -> BTreeMap<String, String> {
    let mut snap = BTreeMap::new();
    let mut stack = vec![prefix.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                snap.insert(
                    entry.path().display().to_string(),
                    format!("{:?} {}", meta.modified().unwrap(), meta.len()),
                );
            }
        }
    }
    for args in [
        &["storage", "list", "--format", "csv"][..],
        &["network", "list", "--format", "csv"],
        &["profile", "show", "default"],
    ] {
        let out = Command::new("incus").args(args).output().unwrap();
        snap.insert(args.join(" "), text(&out.stdout));
    }
    snap
}

#[test]
fn install_twice_changes_nothing_and_the_installed_cci_is_healthy() {
    let prefix = tempfile::tempdir().unwrap();
    let first = install(prefix.path());
    assert!(first.contains("installed"), "{first}");
    let cci = prefix.path().join("bin/cci");
    for f in [
        "share/bash-completion/completions/cci",
        "share/zsh/site-functions/_cci",
        "share/fish/vendor_completions.d/cci.fish",
    ] {
        assert!(prefix.path().join(f).is_file(), "{f} not installed");
    }
    let before = snapshot(prefix.path());
    install(prefix.path());
    assert_eq!(
        before,
        snapshot(prefix.path()),
        "the second run changed something"
    );

    let out = Command::new(&cci)
        .args(["health", "--image", &test_image()])
        .output()
        .unwrap();
    common::agent::ok(&out);

    // Not Linux: refused with a clear message (uname faked on PATH).
    let fake = tempfile::tempdir().unwrap();
    let uname = fake.path().join("uname");
    std::fs::write(&uname, "#!/bin/sh\necho Darwin\n").unwrap();
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("macOS"), "{}", text(&out.stderr));
}

/// A user who has `CARGO_TARGET_DIR` set: install.sh installs the binary
/// cargo built there, not a `target/release/cci` of the checkout. (A
/// stand-in `cargo build` puts this test's cci into that folder, so the
/// installed file tells which one was taken; `cargo metadata` is the real one.)
#[test]
fn install_takes_the_binary_from_cargo_target_dir() {
    let target = tempfile::tempdir().unwrap();
    let prefix = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let real = Command::new("sh")
        .args(["-c", "command -v cargo"])
        .output()
        .unwrap();
    let real = text(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "cargo is not on PATH");
    let cargo = fake.path().join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\ncase \"$1\" in\nbuild) mkdir -p \"$CARGO_TARGET_DIR/release\" && cp \"$CCI_BUILT\" \"$CARGO_TARGET_DIR/release/cci\" ;;\n*) exec '{real}' \"$@\" ;;\nesac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target.path())
        .env("CCI_BUILT", common::cci_bin())
        .env("CCI_SKIP_INCUS_SETUP", "1")
        .env("PREFIX", prefix.path())
        .output()
        .unwrap();
    let log = text(&out.stderr);
    assert!(out.status.success(), "install.sh failed:\n{log}");
    let installed = std::fs::read(prefix.path().join("bin/cci")).unwrap();
    assert!(
        installed == std::fs::read(common::cci_bin()).unwrap(),
        "install.sh did not install the cci built in CARGO_TARGET_DIR:\n{log}"
    );
    assert!(
        prefix
            .path()
            .join("share/zsh/site-functions/_cci")
            .is_file()
    );
}

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn err(text: &str) -> ConfigError {
    parse(text, "f.toml").unwrap_err()
}

/// The original tool's README example, as written there (shared with
/// `tests/cli_seed.rs`).
const SEED_EXAMPLE: &str = include_str!("../../tests/fixtures/seed-config.toml");

#[test]
fn the_original_tools_example_is_accepted_as_written() {
    let doc = parse(SEED_EXAMPLE, "config.toml").unwrap();
    let s = doc.settings();
    let d = s.defaults.unwrap();
    assert_eq!(d.mount_claude_config, Some(true));
    let i = s.incus.unwrap();
    assert_eq!(
        (i.code_uid, i.group.as_deref()),
        (Some(1000), Some("incus-admin"))
    );
    let rust = &doc.profiles.unwrap()["rust"];
    let rd = rust.defaults.clone().unwrap();
    assert_eq!(rd.image.as_deref(), Some("cci-rust"));
    assert_eq!(rd.persistent, Some(true));
    assert_eq!(rd.environment.unwrap()["RUST_BACKTRACE"], "1");
    // The flat form and sections mix; an unknown flat key is still an error.
    let mixed = "[profiles.x]\nimage = \"a\"\n[profiles.x.limits]\ncpu = 2\n";
    let p = &parse(mixed, "f").unwrap().profiles.unwrap()["x"];
    assert_eq!(p.limits.clone().unwrap().cpu, Some(2));
    let e = err("[profiles.x]\nimagee = \"a\"\n");
    assert!(e.to_string().contains("imagee"), "{e}");
    let e = err("[defaults]\nenvironment = { \"A B\" = \"1\" }\n");
    assert_eq!(e.key.as_deref(), Some("defaults.environment"), "{e}");
}

#[test]
fn bad_files_name_the_line_and_key() {
    let e = err("[defaults]\nimage = \"x\"\n\n[netwrok]\nmode = \"open\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().contains("netwrok"), "{e}");
    let e = err("[network]\nmode = \"opne\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("network.mode")),
        "{e}"
    );
    assert!(
        e.to_string().contains("opne") && e.to_string().contains("restricted"),
        "{e}"
    );
    let e = err("[defaults]\npersistent = \"yes\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    let e = err("[limits]\ncpu = -2\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("limits.cpu")),
        "{e}"
    );
    let e = err("[defaults]\nimage = \"\"\n");
    assert_eq!(e.key.as_deref(), Some("defaults.image"), "{e}");
    let e = err("[limits]\nprocesses = 99999999999\n");
    assert_eq!(e.key.as_deref(), Some("limits.processes"), "{e}");
    let e = err("[limits]\nmemory = \"lots\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    let e = err("[network]\nallowed_domains = [\"ok.example\", \"bad domain\"]\n");
    assert_eq!(e.key.as_deref(), Some("network.allowed_domains"), "{e}");
    let e = err("[[mounts]]\nhost = \"/x\"\ncontainer = \"relative\"\n");
    assert_eq!(e.key.as_deref(), Some("mounts"), "{e}");
    let e = err("[profiles.big.limits]\ncpu = 0\n");
    assert_eq!(e.key.as_deref(), Some("profiles.big.limits.cpu"), "{e}");
    let e = err("this is not toml");
    assert_eq!(e.line, Some(1), "{e}");
    let e = err("[tool]\nname = \"claud\"\n");
    assert!(e.to_string().contains("known agents"), "{e}");
    assert!(parse(example(), "example").is_ok());
    assert!(
        parse(&uncomment(example()), "example").is_ok(),
        "{:?}",
        parse(&uncomment(example()), "example")
    );
}

/// The example with every setting switched on.
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(r) if r.contains(" = ") || r.starts_with('[') => {
                r.split("  #").next().unwrap_or(r).to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_key_is_in_the_example_and_the_reference() {
    let all = uncomment(example());
    let doc = parse(&all, "example").unwrap();
    let flat = flatten(&doc.settings(), Path::new("/"));
    for (key, _) in KEYS {
        let k = if *key == "defaults.network" {
            "network.mode"
        } else {
            key
        };
        assert!(flat.contains_key(k), "{key} missing from the example");
    }
    let reference = include_str!("../../docs/configuration.md");
    for (key, _) in KEYS {
        assert!(
            reference.contains(&format!("`{key}`")),
            "{key} missing from docs/configuration.md"
        );
    }
}

fn files(dir: &Path, user: &str, ws: &str, explicit: Option<&str>) -> Sources {
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    std::fs::write(dir.join("user.toml"), user).unwrap();
    std::fs::write(dir.join("ws/.cci.toml"), ws).unwrap();
    if let Some(e) = explicit {
        std::fs::write(dir.join("explicit.toml"), e).unwrap();
    }
    Sources {
        system: Some(dir.join("none.toml")),
        user: Some(dir.join("user.toml")),
        workspace: Some(dir.join("ws")),
        explicit: explicit.map(|_| dir.join("explicit.toml")),
        env: BTreeMap::new(),
        profile: None,
        trust_file: Some(dir.join("trusted.json")),
    }
}

#[test]
fn layers_override_key_by_key_and_say_where_from() {
    let d = tempfile::tempdir().unwrap();
    let mut s = files(
        d.path(),
        "[defaults]\nimage = \"u\"\npersistent = true\n[limits]\ncpu = 2\n",
        "[defaults]\nimage = \"w\"\n",
        Some("[limits]\nmemory = \"1GiB\"\n"),
    );
    s.env.insert("CCI_LIMIT_CPU".into(), "3".into());
    // (Approved: an untrusted file could not set the image.)
    let wsf = d.path().join("ws/.cci.toml");
    let text = std::fs::read_to_string(&wsf).unwrap();
    trust::set(s.trust_file.as_deref().unwrap(), &wsf, Some(&text)).unwrap();
    let c = load(&s).unwrap();
    assert_eq!(c.effective.image, "w");
    assert!(
        c.effective.persistent,
        "a layer that omits a boolean keeps it"
    );
    assert_eq!(c.effective.cpu, Some(3));
    assert_eq!(c.effective.memory, "1GiB");
    assert_eq!(c.effective.processes, DEFAULT_PROCESSES);
    let from = |k: &str| c.merged.values[k].1.to_string();
    assert!(
        from("defaults.image").ends_with("ws/.cci.toml:2"),
        "{}",
        from("defaults.image")
    );
    assert!(from("defaults.persistent").ends_with("user.toml:3"));
    assert_eq!(from("limits.cpu"), "env CCI_LIMIT_CPU");
    s.env.insert("CCI_NETWORK".into(), "opne".into());
    let e = load(&s).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("CCI_NETWORK"), "{e}");
}

#[test]
fn profiles_apply_below_the_environment() {
    let d = tempfile::tempdir().unwrap();
    let mut s = files(
        d.path(),
        "[defaults]\nprofile = \"big\"\n[profiles.big]\ndefaults = { image = \"big-img\" }\nlimits = { cpu = 8 }\n[profiles.empty]\n",
        "",
        None,
    );
    let c = load(&s).unwrap();
    assert_eq!(c.profile.as_deref(), Some("big"));
    assert_eq!(c.effective.image, "big-img");
    assert!(
        c.merged.values["defaults.image"]
            .1
            .to_string()
            .starts_with("profile big (")
    );
    s.env.insert("CCI_IMAGE".into(), "env-img".into());
    assert_eq!(load(&s).unwrap().effective.image, "env-img");
    s.profile = Some("empty".into());
    assert_eq!(load(&s).unwrap().effective.cpu, None);
    s.profile = Some("nope".into());
    let e = load(&s).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("big, empty"), "{e}");
}

#[test]
fn an_untrusted_workspace_file_cannot_loosen_anything_until_trusted() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("secret-dir");
    std::fs::create_dir(&outside).unwrap();
    let ws_text = format!(
        "[network]\nmode = \"open\"\nallowed_domains = [\"0.0.0.0/0\", \"ok.example\"]\nblock_metadata_endpoint = false\n\
         [tool]\ncredentials_dir = \"/tmp\"\n[paths]\nsessions_dir = \"here\"\n[limits]\ncpu = 1\n\
         [[mounts]]\nhost = \"{}\"\ncontainer = \"/x\"\n[[mounts]]\nhost = \"sub\"\ncontainer = \"/y\"\n\
         [profiles.evil]\nnetwork = {{ mode = \"open\" }}\n",
        outside.display()
    );
    let s = files(
        d.path(),
        "[network]\nmode = \"allowlist\"\n",
        &ws_text,
        None,
    );
    std::fs::create_dir(d.path().join("ws/sub")).unwrap();
    let c = load(&s).unwrap();
    assert_eq!(c.effective.network, ModeName::Allowlist);
    assert!(c.effective.allowed.is_empty(), "nothing below to narrow");
    assert!(c.effective.block_metadata && c.effective.credentials_dir.is_none());
    assert!(c.effective.sessions_dir.is_none());
    assert_eq!(c.effective.cpu, Some(1), "tightening is fine");
    assert!(c.effective.mounts.is_empty(), "no mounts untrusted");
    assert!(!c.merged.values.contains_key("profiles.evil.network.mode"));
    assert_eq!(c.ignored.len(), 8, "{:?}", c.ignored);
    assert_eq!(c.applied, ["limits.cpu = 1"]);
    // Approved as it is: all of it applies; changed: gated again.
    let wsf = d.path().join("ws/.cci.toml");
    trust::set(s.trust_file.as_deref().unwrap(), &wsf, Some(&ws_text)).unwrap();
    let c = load(&s).unwrap();
    assert_eq!(c.effective.network, ModeName::Open);
    assert!(c.ignored.is_empty());
    std::fs::write(&wsf, format!("{ws_text}\n# changed\n")).unwrap();
    let c = load(&s).unwrap();
    assert_eq!(c.effective.network, ModeName::Allowlist);
    assert!(c.changed_since_trust);
}

#[test]
fn files_that_are_not_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let s = files(d.path(), "", "", None);
    let wsf = d.path().join("ws/.cci.toml");
    std::fs::remove_file(&wsf).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &wsf).unwrap();
    let e = load(&s).unwrap_err().to_string();
    assert!(e.contains("symlink"), "{e}");
    std::fs::remove_file(&wsf).unwrap();
    std::fs::create_dir(&wsf).unwrap();
    assert!(load(&s).unwrap_err().to_string().contains("directory"));
    std::fs::remove_dir(&wsf).unwrap();
    std::fs::write(&wsf, b"[defaults]\nimage = \"\xff\"\n").unwrap();
    let e = load(&s).unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().contains("UTF-8"));
    let mut s = s;
    s.explicit = Some(d.path().join("missing.toml"));
    std::fs::write(&wsf, "").unwrap();
    assert!(load(&s).unwrap_err().to_string().contains("does not exist"));
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("4GiB"), Some(4 << 30));
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("1.5G"), Some(1610612736));
    assert_eq!(parse_size("12"), None);
    assert_eq!(parse_size("-1GiB"), None);
    assert_eq!(
        parse_duration("1h30m"),
        Some(std::time::Duration::from_secs(5400))
    );
    assert_eq!(
        parse_duration("45s"),
        Some(std::time::Duration::from_secs(45))
    );
    assert_eq!(parse_duration("0s"), None);
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("1y"), None);
}

/// A random layer: some of a few keys set.
fn layer() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let key = prop::sample::select(vec![
        "defaults.image",
        "defaults.persistent",
        "limits.cpu",
        "network.mode",
        "mounts",
    ]);
    prop::collection::btree_map(key, 0u8..4, 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(k, n)| {
                let v = match k {
                    "defaults.image" => Value::String(format!("img{n}")),
                    "defaults.persistent" => Value::Bool(n % 2 == 0),
                    "limits.cpu" => Value::from(n + 1),
                    "network.mode" => Value::String(["restricted", "allowlist", "open", "open"][n as usize].into()),
                    _ => serde_json::json!([{"host": format!("/h{n}"), "container": format!("/c{n}"), "readonly": false}]),
                };
                (k.to_string(), v)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn merging_layers_is_last_writer_wins_and_mounts_add_up(layers in prop::collection::vec(layer(), 0..6)) {
        let mut merged = Merged::default();
        for (i, l) in layers.iter().enumerate() {
            merged.apply(l, |_| Origin::Env(format!("L{i}")));
        }
        for key in ["defaults.image", "defaults.persistent", "limits.cpu", "network.mode"] {
            let last = layers.iter().enumerate().rev().find_map(|(i, l)| l.get(key).map(|v| (i, v)));
            match last {
                Some((i, v)) => {
                    prop_assert_eq!(&merged.values[key].0, v);
                    prop_assert_eq!(&merged.values[key].1, &Origin::Env(format!("L{i}")));
                }
                None => prop_assert!(!merged.values.contains_key(key)),
            }
        }
        let mounts: usize = layers.iter().filter(|l| l.contains_key("mounts")).count();
        let got = merged.values.get("mounts").and_then(|(v, _)| v.as_array().map(Vec::len)).unwrap_or(0);
        prop_assert_eq!(got, mounts);
        // The typed view agrees with the flat one.
        let eff = Effective::from_settings(unflatten(&merged.flat()));
        if let Some((v, _)) = merged.values.get("defaults.image") {
            prop_assert_eq!(Some(eff.image.as_str()), v.as_str());
        }
    }
}

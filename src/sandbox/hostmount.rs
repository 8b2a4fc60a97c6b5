//! `cci container mount`: a host folder added to a container as a disk
//! device, its owner mapped to the account inside (`code`) the way the
//! workspace owner is (see `idmap`): one host uid/gid in `raw.idmap`, never
//! a shifted device, never host root. With `shift` off the folder is
//! mounted as it is (its files show as `nobody` inside).

use std::collections::HashMap;
use std::path::Path;

use super::idmap;
use super::inventory::SandboxInfo;
use super::mounts::{WHY, plain, resolve};
use crate::config::Account;
use crate::incus::{Instance, InstanceStatus};

/// What to change on the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// The host path, resolved (no link in it).
    pub source: String,
    /// The disk device to add.
    pub device: HashMap<String, String>,
    /// The `raw.idmap` to set (`None`: it maps the owner already, or no shift).
    pub idmap: Option<String>,
    /// The host owner that appears as `account` inside (with shift).
    pub owner: Option<(u32, u32)>,
    /// The account the owner appears as.
    pub account: Account,
    /// The container runs: a new mapping takes effect when it starts again.
    pub restart_needed: bool,
}

/// Plan adding host `source` at `path` in `instance`. Refused: a source with
/// a symbolic link in its path, inside another writable disk device's source
/// (the container could swap it for a link), a container path that is not
/// plain; with `shift`, a source owned by root (uid or gid 0), an owner not
/// delegated to root in /etc/subuid and /etc/subgid, and an owner other than
/// the one the container maps already (one host id per account). A
/// container without a recorded user runs as `account` (the configured one).
pub fn plan(
    instance: &Instance,
    source: &Path,
    path: &str,
    readonly: bool,
    shift: bool,
    account: &Account,
) -> Result<MountPlan, String> {
    if !plain(path) {
        return Err(format!(
            "container path {path:?} must be absolute, without `..`, and not /"
        ));
    }
    let host = resolve(source, false)?;
    for (name, d) in &instance.devices {
        let writable = d.get("readonly").is_none_or(|r| r != "true");
        let Some(outer) = d
            .get("source")
            .filter(|_| d.get("type").is_some_and(|t| t == "disk"))
        else {
            continue;
        };
        if writable && host.starts_with(outer) {
            return Err(format!(
                "mount source {} is inside {outer}, which {} mounts writable (device {name}): {WHY}",
                host.display(),
                instance.name
            ));
        }
    }
    let Some(source) = host.to_str().map(str::to_string) else {
        return Err(format!("mount source {} is not UTF-8", host.display()));
    };
    let account = SandboxInfo::from_instance(instance, account)
        .map(|s| s.account)
        .unwrap_or_else(|| account.clone());
    let mut device: HashMap<String, String> =
        [("type", "disk"), ("source", &source), ("path", path)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    if readonly {
        device.insert("readonly".into(), "true".into());
    }
    let mut plan = MountPlan {
        source,
        device,
        idmap: None,
        owner: None,
        account,
        restart_needed: false,
    };
    if !shift {
        return Ok(plan);
    }
    let owner = mapped_owner(&host, &plan.account)?;
    let want = idmap::raw_idmap(owner, &plan.account);
    let have = instance
        .expanded_config
        .get("raw.idmap")
        .map(|v| v.trim())
        .unwrap_or_default();
    if have.is_empty() {
        plan.idmap = Some(want);
        plan.restart_needed = instance.status != InstanceStatus::Stopped;
    } else if have != want {
        return Err(format!(
            "{} already maps other host ids (raw.idmap {have:?}); the owner of {} ({}:{}) cannot appear as `{}` too: mount a folder owned by the same user, or pass --shift=false (its files then show as nobody)",
            instance.name,
            host.display(),
            owner.0,
            owner.1,
            plan.account.name
        ));
    }
    plan.owner = Some(owner);
    Ok(plan)
}

/// The owner of `host`, if it may be mapped: not root (uid or gid), and
/// delegated to root by /etc/subuid and /etc/subgid.
fn mapped_owner(host: &Path, account: &Account) -> Result<(u32, u32), String> {
    use std::os::unix::fs::MetadataExt;
    // Group root is refused by `owner_of` too, in a workspace's words; say
    // it in a mount's.
    if std::fs::metadata(host).is_ok_and(|m| m.uid() != 0 && m.gid() == 0) {
        return Err(format!(
            "mount source {} belongs to group root; cci maps the owner's group to `{}` inside, and mapping host group root would let the container create set-gid-root files on the host. Use a folder of your own group, or --shift=false",
            host.display(),
            account.name
        ));
    }
    let owner = idmap::owner_of(host, account).map_err(|e| e.to_string())?;
    idmap::check_delegated(owner).map_err(|e| e.to_string())?;
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> Account {
        Account::new(1000, "code")
    }

    fn instance(status: &str, idmap: Option<&str>, devices: &[(&str, &str, bool)]) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": "c1", "status": status, "config": {}, "devices": {},
            "expanded_config": {}, "expanded_devices": {}, "profiles": [],
            "ephemeral": false, "created_at": "", "last_used_at": "",
            "description": "", "type": "container"
        }))
        .unwrap();
        if let Some(m) = idmap {
            i.expanded_config.insert("raw.idmap".into(), m.into());
        }
        for (name, src, ro) in devices {
            let mut d: HashMap<String, String> = HashMap::new();
            d.insert("type".into(), "disk".into());
            d.insert("source".into(), src.to_string());
            if *ro {
                d.insert("readonly".into(), "true".into());
            }
            i.devices.insert(name.to_string(), d);
        }
        i
    }

    #[test]
    fn no_shift_adds_a_plain_device_and_never_a_shifted_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(
            &instance("Running", None, &[]),
            dir.path(),
            "/mnt/x",
            true,
            false,
            &code(),
        )
        .unwrap();
        assert_eq!(p.device["type"], "disk");
        assert_eq!(p.device["readonly"], "true");
        assert!(!p.device.contains_key("shift"));
        assert_eq!((p.idmap, p.restart_needed), (None, false));
        assert!(
            plan(
                &instance("Running", None, &[]),
                dir.path(),
                "rel",
                false,
                false,
                &code(),
            )
            .is_err()
        );
        assert!(
            plan(
                &instance("Running", None, &[]),
                dir.path(),
                "/a/../b",
                false,
                false,
                &code(),
            )
            .is_err()
        );
    }

    #[test]
    fn a_source_inside_a_writable_mount_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("in");
        std::fs::create_dir(&inner).unwrap();
        let outer = dir.path().to_str().unwrap();
        let i = instance("Running", None, &[("workspace", outer, false)]);
        let e = plan(&i, &inner, "/mnt/x", false, false, &code()).unwrap_err();
        assert!(e.contains("device workspace"), "{e}");
        let ro = instance("Running", None, &[("ref", outer, true)]);
        assert!(plan(&ro, &inner, "/mnt/x", false, false, &code()).is_ok());
    }

    #[test]
    fn the_owner_is_mapped_once_and_root_never() {
        if unsafe { libc::geteuid() } != 0 {
            return; // needs chown
        }
        let dir = tempfile::tempdir().unwrap();
        let account = Account::new(1000, "code");
        std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
        assert!(
            mapped_owner(dir.path(), &account)
                .unwrap_err()
                .contains("root")
        );
        std::os::unix::fs::chown(dir.path(), Some(1000), Some(0)).unwrap();
        assert!(
            mapped_owner(dir.path(), &account)
                .unwrap_err()
                .contains("group root")
        );
        std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
        let fresh = instance("Running", None, &[]);
        // Where root may delegate uid/gid 1000 (tests/run.sh sets that up).
        if idmap::check_delegated((1000, 1000)).is_ok() {
            let p = plan(&fresh, dir.path(), "/mnt/x", false, true, &code()).unwrap();
            assert_eq!(p.idmap.as_deref(), Some("uid 1000 1000\ngid 1000 1000"));
            assert!(p.restart_needed);
            let same = instance("Stopped", Some("uid 1000 1000\ngid 1000 1000"), &[]);
            let p = plan(&same, dir.path(), "/mnt/x", false, true, &code()).unwrap();
            assert_eq!((p.idmap, p.restart_needed), (None, false));
            let other = instance("Stopped", Some("uid 1234 1000\ngid 1234 1000"), &[]);
            let e = plan(&other, dir.path(), "/mnt/x", false, true, &code()).unwrap_err();
            assert!(e.contains("already maps"), "{e}");
        }
    }
}

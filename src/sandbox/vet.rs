//! What a sandbox inherits from the Incus profiles it is made with (the
//! user's `default` profile above all), vetted before it is created or
//! started: nothing there may hand the agent the host — a privileged
//! container, raw LXC/AppArmor/seccomp/idmap settings, host folders, proxies
//! to host sockets or host devices cci did not add. Pure: the caller fetches.

use std::collections::{BTreeMap, HashMap};

use crate::incus::{Instance, Profile};

/// A setting inherited from a profile that would make a sandbox unsafe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The profile it comes from (`None`: the container's expanded config).
    pub profile: Option<String>,
    /// The config key, or `devices.NAME`.
    pub key: String,
    /// Why it is refused.
    pub why: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.profile {
            Some(p) => write!(f, "{} in Incus profile {p:?} ({})", self.key, self.why),
            None => write!(f, "{} ({})", self.key, self.why),
        }
    }
}

/// Every finding, for the launch error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings(pub Vec<Finding>);

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(Finding::to_string).collect();
        let profiles: Vec<&str> = self.0.iter().filter_map(|x| x.profile.as_deref()).collect();
        let fix = match profiles.first() {
            Some(p) => format!(
                "remove it from the profile (`incus profile edit {p}`), or give cci an Incus project whose default profile is plain (--project)"
            ),
            None => "remove it from the container (`incus config edit NAME`), or let cci make a new one (`cci kill NAME`)".into(),
        };
        write!(
            f,
            "refusing to start a sandbox that would reach the host: {}; {fix}",
            list.join("; ")
        )
    }
}

/// Config keys no sandbox may inherit, with why.
fn refused_key(key: &str, value: &str) -> Option<&'static str> {
    let on = matches!(value.trim(), "true" | "1" | "yes" | "on");
    match key {
        "security.privileged" if on => Some("a privileged container's root is host root"),
        "raw.lxc" | "raw.apparmor" | "raw.seccomp" if !value.trim().is_empty() => {
            Some("raw settings bypass Incus' confinement")
        }
        "raw.idmap" if !value.trim().is_empty() => {
            Some("maps host ids into the container; cci sets its own")
        }
        "security.idmap.isolated" if !on => Some("shares host ids with other containers"),
        "security.guestapi" if on => Some("cci turns the guest API off"),
        k if k.starts_with("security.syscalls.intercept.")
            && k != "security.syscalls.intercept.mknod"
            && k != "security.syscalls.intercept.setxattr"
            && on =>
        {
            Some("lets the container ask the host to act for it")
        }
        _ => None,
    }
}

/// Device types that reach host objects.
fn refused_device(dev: &HashMap<String, String>) -> Option<&'static str> {
    match dev.get("type").map(String::as_str) {
        Some("disk") if dev.get("path").is_some_and(|p| p == "/") => None,
        Some("disk") => Some("mounts a host folder or volume"),
        Some("proxy") => Some("forwards to a host socket or port"),
        Some("unix-char" | "unix-block" | "unix-hotplug" | "gpu" | "usb" | "pci" | "tpm") => {
            Some("passes a host device through")
        }
        _ => None,
    }
}

/// Vet what `profiles` (in order, later ones win) give a container whose own
/// request sets `own_config` and `own_devices` (those override and are cci's).
pub fn profiles(
    profiles: &[Profile],
    own_config: &HashMap<String, String>,
    own_devices: &HashMap<String, HashMap<String, String>>,
) -> Result<(), Findings> {
    let mut config: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut devices: BTreeMap<&str, (&str, &HashMap<String, String>)> = BTreeMap::new();
    for p in profiles {
        for (k, v) in &p.config {
            config.insert(k, (&p.name, v));
        }
        for (k, d) in &p.devices {
            devices.insert(k, (&p.name, d));
        }
    }
    let mut found = Vec::new();
    for (key, (profile, value)) in config {
        if own_config.contains_key(key) {
            continue;
        }
        if let Some(why) = refused_key(key, value) {
            found.push(Finding {
                profile: Some(profile.into()),
                key: key.into(),
                why,
            });
        }
    }
    for (name, (profile, dev)) in devices {
        if own_devices.contains_key(name) {
            continue;
        }
        if let Some(why) = refused_device(dev) {
            found.push(Finding {
                profile: Some(profile.into()),
                key: format!("devices.{name}"),
                why,
            });
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Findings(found))
    }
}

/// Vet an existing container before cci starts it again: what its expanded
/// config holds beyond its own (cci-made) config and devices.
pub fn instance(i: &Instance) -> Result<(), Findings> {
    let inherited = Profile {
        name: String::new(),
        description: String::new(),
        config: i.expanded_config.clone(),
        devices: i.expanded_devices.clone(),
        used_by: Vec::new(),
    };
    profiles(&[inherited], &i.config, &i.devices).map_err(|Findings(f)| {
        Findings(
            f.into_iter()
                .map(|x| Finding { profile: None, ..x })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile(
        name: &str,
        config: &[(&str, &str)],
        devices: &[(&str, &[(&str, &str)])],
    ) -> Profile {
        Profile {
            name: name.into(),
            description: String::new(),
            config: map(config),
            devices: devices
                .iter()
                .map(|(n, d)| (n.to_string(), map(d)))
                .collect(),
            used_by: Vec::new(),
        }
    }

    #[test]
    fn a_plain_default_profile_passes() {
        let p = profile(
            "default",
            &[("limits.memory", "2GiB"), ("security.privileged", "false")],
            &[
                (
                    "root",
                    &[("type", "disk"), ("path", "/"), ("pool", "default")],
                ),
                ("eth0", &[("type", "nic"), ("network", "incusbr0")]),
            ],
        );
        assert_eq!(profiles(&[p], &HashMap::new(), &HashMap::new()), Ok(()));
    }

    #[test]
    fn dangerous_inheritance_is_named() {
        let p = profile(
            "default",
            &[
                ("security.privileged", "true"),
                ("raw.lxc", "lxc.apparmor.profile=unconfined"),
                ("raw.idmap", "both 0 0"),
                ("security.syscalls.intercept.mount", "true"),
            ],
            &[
                (
                    "home",
                    &[("type", "disk"), ("path", "/mnt"), ("source", "/home")],
                ),
                (
                    "sock",
                    &[
                        ("type", "proxy"),
                        ("listen", "unix:/x"),
                        ("connect", "unix:/y"),
                    ],
                ),
                ("kvm", &[("type", "unix-char"), ("path", "/dev/kvm")]),
            ],
        );
        let Err(Findings(f)) = profiles(&[p], &HashMap::new(), &HashMap::new()) else {
            panic!("passed");
        };
        let keys: Vec<&str> = f.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "raw.idmap",
                "raw.lxc",
                "security.privileged",
                "security.syscalls.intercept.mount",
                "devices.home",
                "devices.kvm",
                "devices.sock"
            ]
        );
        let text = Findings(f).to_string();
        assert!(text.contains("security.privileged in Incus profile \"default\""));
        assert!(text.contains("incus profile edit default"));
    }

    #[test]
    fn what_cci_sets_itself_overrides_the_profile() {
        let a = profile("default", &[("raw.idmap", "both 0 0")], &[]);
        let b = profile(
            "cci-sandbox",
            &[("security.privileged", "true")],
            &[("workspace", &[("type", "disk"), ("path", "/workspace")])],
        );
        let own_config = map(&[
            ("raw.idmap", "uid 1000 1000"),
            ("security.privileged", "false"),
        ]);
        let own_devices: HashMap<_, _> =
            [("workspace".to_string(), map(&[("type", "disk")]))].into();
        assert_eq!(profiles(&[a, b], &own_config, &own_devices), Ok(()));
    }

    #[test]
    fn a_later_profile_wins_over_an_earlier_one() {
        let a = profile("default", &[("security.privileged", "true")], &[]);
        let b = profile("other", &[("security.privileged", "false")], &[]);
        assert_eq!(profiles(&[a, b], &HashMap::new(), &HashMap::new()), Ok(()));
    }
}

//! Checking values, with the file, line and key of a bad one (each key
//! checked as the table in `rules` says); sizes, durations and paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::Settings;
use super::{ConfigError, line_of};

mod rules;

/// Keys whose values are host paths (made absolute against their file's folder).
pub const PATH_KEYS: &[&str] = &[
    "tool.credentials_dir",
    "paths.sessions_dir",
    "paths.storage_dir",
    "paths.logs_dir",
    "incus.socket",
];

/// `~` and `~/...` expanded to the home folder.
pub fn expand_home(p: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h,
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(p),
    }
}

/// `~` expanded and a relative path joined to `base`.
pub fn absolute(p: &str, base: &Path) -> PathBuf {
    let expanded = expand_home(p);
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// `4GiB`, `512MiB`, `1.5G`, `100000` (bytes) -> bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = if split == 0 {
        return None;
    } else {
        s.split_at(split)
    };
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024f64.powi(2),
        "GiB" | "G" => 1024f64.powi(3),
        "TiB" | "T" => 1024f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && (1.0..1e18).contains(&v)).then_some(v as u64)
}

/// `90m`, `2h`, `1h30m`, `45s`, `1d` -> a duration (at least a second).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        })?)?;
    }
    if !num.is_empty() {
        return None;
    }
    (1..=365 * 86_400)
        .contains(&total)
        .then(|| Duration::from_secs(total))
}

/// Check the values of `s` (in section names, `prefix` is the profile's `profiles.NAME.`).
pub fn validate(s: &Settings, text: &str, source: &str, prefix: &str) -> Result<(), ConfigError> {
    for rule in rules::RULES {
        if let Err(message) = rule.check.run(s) {
            let section = format!("{prefix}{}", rule.section);
            return Err(ConfigError {
                file: source.into(),
                line: line_of(text, &section, Some(rule.key)),
                key: Some(format!("{section}.{}", rule.key)),
                message,
            });
        }
    }
    for k in s.sockets.iter().flatten() {
        if let Err(why) = check_socket(&k.host, &k.container) {
            return Err(ConfigError {
                file: source.into(),
                line: text
                    .lines()
                    .position(|l| l.contains(&k.container) || l.contains(&k.host))
                    .map(|i| i + 1),
                key: Some(format!("{prefix}sockets")),
                message: why,
            });
        }
    }
    for m in s.mounts.iter().flatten() {
        let at = || ConfigError {
            file: source.into(),
            line: text
                .lines()
                .position(|l| l.contains(&m.container) || l.contains(&m.host))
                .map(|i| i + 1),
            key: Some(format!("{prefix}mounts")),
            message: String::new(),
        };
        if let Err(why) = check_mount(&m.host, &m.container) {
            return Err(ConfigError {
                message: why,
                ..at()
            });
        }
    }
    Ok(())
}

fn memory_ok(m: &str) -> bool {
    match m.trim().strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| (1..=100).contains(&p)),
        None => parse_size(m).is_some_and(|b| b >= 64 << 20),
    }
}

/// The folders a forwarded socket may appear in.
pub const SOCKET_FOLDERS: &[&str] = &["/var/lib", "/opt", "/srv", "/mnt", "/var/tmp"];

/// A forwarded socket's paths are usable: a host path, and a plain
/// absolute container path where the socket stays visible (not under a
/// folder boot mounts over or the kernel's, not in the workspace, which is
/// the host's folder).
pub fn check_socket(host: &str, container: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err("a socket needs a host path".into());
    }
    if !(host.starts_with('/') || host == "~" || host.starts_with("~/")) {
        return Err(format!(
            "host path {host:?} must be absolute (or start with ~/)"
        ));
    }
    check_mount(host, container).map_err(|_| {
        format!("container path {container:?} must be absolute, without `..`, and not /")
    })?;
    // The daemon makes the socket but not its folder, and boot mounts over
    // /run and /tmp after it is made: only folders every system has and
    // keeps.
    let c = Path::new(container);
    let parent = c.parent().and_then(Path::to_str).unwrap_or("/");
    if !SOCKET_FOLDERS.contains(&parent) {
        return Err(format!(
            "container path {container:?}: a socket goes directly in one of {} (e.g. /var/lib/{})",
            SOCKET_FOLDERS.join(", "),
            c.file_name().and_then(|n| n.to_str()).unwrap_or("app.sock")
        ));
    }
    Ok(())
}

/// A mount's paths are usable: a host path and an absolute, plain container path.
pub fn check_mount(host: &str, container: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err("a mount needs a host path".into());
    }
    let c = Path::new(container);
    let plain = c.is_absolute()
        && c.components().all(|p| {
            matches!(
                p,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
        && !container.contains('\0');
    if !plain || c == Path::new("/") {
        return Err(format!(
            "container path {container:?} must be absolute, without `..`, and not /"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[test]
    fn a_socket_appears_directly_in_a_folder_every_system_keeps() {
        for good in ["/var/lib/ollama.sock", "/opt/x.sock", "/var/tmp/a"] {
            assert!(check_socket("/run/x.sock", good).is_ok(), "{good}");
        }
        for bad in [
            "/run/x.sock",
            "/var/run/docker.sock",
            "/tmp/x.sock",
            "/workspace/x.sock",
            "/var/lib/deeper/x.sock",
            "/dev/x",
            "var/lib/x.sock",
            "/var/lib/../run/x.sock",
            "/",
        ] {
            assert!(check_socket("/run/x.sock", bad).is_err(), "{bad}");
        }
        assert!(check_socket(" ", "/var/lib/x.sock").is_err());
        assert!(check_socket("run/x.sock", "/var/lib/x.sock").is_err());
        assert!(check_socket("~/x.sock", "/var/lib/x.sock").is_ok());
    }
}

//! Base images made locally with debootstrap (`debootstrap:SUITE[@MIRROR]`),
//! for machines that cannot reach an image server. Runs the embedded
//! `image-scripts/debootstrap-base.sh` on this host (it needs root and
//! debootstrap), imports the result and names it `cci-base-SUITE`.

use std::path::{Path, PathBuf};

use super::BuildError;
use crate::incus::Client;

const SCRIPTS: [(&str, &str); 3] = [
    (
        "debootstrap-base.sh",
        include_str!("../../image-scripts/debootstrap-base.sh"),
    ),
    (
        "rootfs-setup.sh",
        include_str!("../../image-scripts/rootfs-setup.sh"),
    ),
    ("code-user.sh", super::CODE_USER_SCRIPT),
];

/// What a local base contains besides minbase.
const PACKAGES: &str = "systemd-sysv,udev,dbus,systemd-resolved,iproute2,ca-certificates,curl,sudo";

/// The mirror when none is given.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// `SUITE[@MIRROR]`, checked: a suite is a plain name, a mirror an http(s) URL.
pub fn parse(spec: &str) -> Option<(String, String)> {
    let (suite, mirror) = spec.split_once('@').unwrap_or((spec, DEFAULT_MIRROR));
    let suite_ok = !suite.is_empty()
        && suite
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let mirror_ok = (mirror.starts_with("http://") || mirror.starts_with("https://"))
        && !mirror.chars().any(|c| c.is_whitespace() || c.is_control());
    (suite_ok && mirror_ok).then(|| (suite.to_string(), mirror.to_string()))
}

/// The alias of the local base for `suite`, building and importing it first
/// when it does not exist yet.
pub async fn ensure(
    client: &Client,
    spec: &str,
    step: &mut impl FnMut(&str),
) -> Result<String, BuildError> {
    let (suite, mirror) = parse(spec).ok_or_else(|| {
        BuildError::BaseMissing(format!(
            "debootstrap:{spec} (expected debootstrap:SUITE or debootstrap:SUITE@http://MIRROR)"
        ))
    })?;
    let alias = format!("cci-base-{suite}");
    if client.image_alias(&alias).await.is_ok() {
        step(&format!(
            "using the local base {alias} (made earlier with debootstrap)"
        ));
        return Ok(alias);
    }
    step(&format!(
        "building base {alias} with debootstrap ({suite} from {mirror}; a few minutes)"
    ));
    let dir = std::env::temp_dir().join(format!("cci-base-{}", std::process::id()));
    let result = debootstrap(client, &dir, &suite, &mirror, &alias).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| alias)
}

async fn debootstrap(
    client: &Client,
    dir: &Path,
    suite: &str,
    mirror: &str,
    alias: &str,
) -> Result<(), BuildError> {
    let io = |what: String| move |e: std::io::Error| BuildError::Base(format!("{what}: {e}"));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io(format!("creating {}", dir.display())))?;
    }
    for (name, text) in SCRIPTS {
        std::fs::write(dir.join(name), text).map_err(io(format!("writing {name}")))?;
    }
    let out: PathBuf = dir.join("out");
    let run = tokio::process::Command::new("bash")
        .arg(dir.join("debootstrap-base.sh"))
        .arg(&out)
        .args([suite, mirror, PACKAGES])
        .arg(format!("cci base (Debian {suite} minbase, debootstrap)"))
        .env("CCI_HOSTNAME", "cci")
        .output()
        .await
        .map_err(io("running bash".into()))?;
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        let last = err.lines().last().unwrap_or("failed").to_string();
        return Err(BuildError::Base(last));
    }
    let fingerprint = client
        .import_split_image(&out.join("meta.tar.gz"), &out.join("rootfs.tar.gz"))
        .await?;
    client
        .set_image_alias(alias, &fingerprint, "cci base made with debootstrap")
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_suite_and_maybe_a_mirror() {
        assert_eq!(
            parse("bookworm"),
            Some(("bookworm".into(), DEFAULT_MIRROR.into()))
        );
        assert_eq!(
            parse("trixie@http://mirror.example/debian"),
            Some(("trixie".into(), "http://mirror.example/debian".into()))
        );
        for bad in ["", "Book worm", "bookworm@ftp://x", "a;b", "x@http://a b"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

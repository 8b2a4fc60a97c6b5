//! Building images: start a build container from a base image, run a build
//! script in it as root, publish the result and point an alias at it. The
//! build container is removed however the build ends, and a failed build
//! leaves every alias as it was. Prints nothing; reports steps through a
//! callback and the script's output through a writer.

mod base;
pub mod dns;
pub mod ensure;
pub mod manage;

use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::host::Host;
use crate::incus::{self, Client, ExecRequest, FileWrite, ImageRef, InstanceCreate, Publish};
use crate::sandbox::remove;

/// The base `cci build` uses when none is given: built locally, so it works
/// without an image server.
pub const DEFAULT_BASE: &str = "debootstrap:bookworm";
/// The base when the local one can neither be found nor made here.
pub const REMOTE_BASE: &str = "images:debian/12";

/// The base when none is named: the local Debian base when it exists or can
/// be made here (as root, with debootstrap), else Debian 12 from the image
/// server. The build says which one it used.
pub async fn default_base(client: &Client) -> String {
    let local = client.image_alias("cci-base-bookworm").await.is_ok();
    let debootstrap = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join("debootstrap").is_file())
    });
    if local || (crate::state::is_root() && debootstrap) {
        DEFAULT_BASE.into()
    } else {
        REMOTE_BASE.into()
    }
}
// The alias of the default image sessions start from: owned by the
// configuration, whose default it is.
pub use crate::config::DEFAULT_ALIAS;

/// The build script of the default `cci` image.
pub const DEFAULT_SCRIPT: &str = include_str!("../../image-scripts/build-cci.sh");
/// Adds the `code` user; the default script calls it.
pub const CODE_USER_SCRIPT: &str = include_str!("../../image-scripts/code-user.sh");

/// Images stay on this machine: fast compression beats small files. (zstd
/// when the host has it; the daemon's default, gzip, takes ~10x longer.)
const COMPRESSION: &str = "zstd";

/// Where build scripts are put in the build container.
const SCRIPT_DIR: &str = "/root/cci-build";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The alias to publish (`cci` for the default image).
    pub alias: String,
    /// Base image: a local alias or fingerprint, or `debootstrap:SUITE[@MIRROR]`.
    pub base: String,
    /// The build script (run by bash as root).
    pub script: String,
    /// Build even when the alias exists.
    pub force: bool,
    /// Also keep the image under `ALIAS-YYYYMMDD-HHMMSS` (for `image cleanup`).
    pub versioned: bool,
    /// The build container's network policy.
    pub network: crate::network::Policy,
    /// The agents the default script installs (`cci build --agent`; the
    /// script reads them from `CCI_AGENTS`), recorded on the image as
    /// `cci.agents`. Empty for a custom script.
    pub agents: Vec<String>,
}

/// What a build produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    /// The alias.
    pub alias: String,
    /// The image's fingerprint.
    pub fingerprint: String,
    /// The alias existed and `force` was not given: nothing was built.
    pub skipped: bool,
    /// The timestamped alias, when one was made.
    pub version: Option<String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The base image is not on the daemon.
    #[error(
        "base image {0:?} not found on the Incus daemon; give a local alias or fingerprint with --base (`cci image list --all` shows them)"
    )]
    BaseMissing(String),
    /// A debootstrap base could not be made.
    #[error("could not build the base image: {0}")]
    Base(String),
    /// A remote base could not be fetched.
    #[error(
        "could not start from {base} ({server}): {reason}; without a way to that image server, build a base here with --base debootstrap:bookworm"
    )]
    RemoteBase {
        /// As given.
        base: String,
        /// The server.
        server: String,
        /// What the daemon said.
        reason: String,
    },
    /// Names do not resolve in the build container and no resolver answers.
    #[error("{0}")]
    Dns(String),
    /// The build script failed.
    #[error("the build script failed with exit status {0}; nothing was published")]
    ScriptFailed(i32),
    /// Anything the daemon said.
    #[error(transparent)]
    Incus(#[from] incus::Error),
    /// The build container's network isolation could not be set up.
    #[error(transparent)]
    Network(#[from] crate::network::Error),
}

/// Build `req`; `step` hears each stage, `log` gets the script's output.
/// `container` receives the build container's name before it is created, so
/// an interrupted caller can remove it.
pub async fn build<W: AsyncWrite + Unpin>(
    host: &Host,
    req: &BuildRequest,
    container: &str,
    mut step: impl FnMut(&str),
    log: W,
) -> Result<Built, BuildError> {
    let client = &host.client;
    if !req.force
        && let Ok(alias) = client.image_alias(&req.alias).await
    {
        return Ok(Built {
            alias: req.alias.clone(),
            fingerprint: alias.target,
            skipped: true,
            version: None,
        });
    }
    let base = match req.base.strip_prefix("debootstrap:") {
        Some(spec) => ImageRef::Alias(base::ensure(client, spec, &mut step).await?),
        None => match remote_base(&req.base) {
            Some(remote) => remote,
            None => resolve_base(client, &req.base).await?,
        },
    };
    if let ImageRef::Remote { server, alias, .. } = &base {
        step(&format!(
            "fetching {alias} from {server} (the daemon caches it)"
        ));
    }
    step(&format!(
        "starting build container {container} from {}",
        req.base
    ));
    let result = build_in(host, req, &base, container, &mut step, log).await;
    step("removing the build container");
    let _ = remove(host, container).await;
    result
}

async fn build_in<W: AsyncWrite + Unpin>(
    host: &Host,
    req: &BuildRequest,
    base: &ImageRef,
    container: &str,
    step: &mut impl FnMut(&str),
    mut log: W,
) -> Result<Built, BuildError> {
    let client = &host.client;
    let mut create = InstanceCreate::container(container, base);
    create
        .config
        .insert(crate::sandbox::keys::KIND.into(), "build".into());
    create.config.insert(
        crate::sandbox::keys::MACHINE.into(),
        crate::sandbox::orphans::machine_tag().into(),
    );
    create
        .config
        .insert("user.cci.build".into(), req.alias.clone());
    let net = crate::network::prepare(client, &create.profiles, &req.network).await?;
    let created = crate::network::create_guarded(client, host.policy(), &net, create).await;
    if let (Err(crate::network::Error::Incus(e)), ImageRef::Remote { server, .. }) =
        (&created, base)
    {
        return Err(BuildError::RemoteBase {
            base: req.base.clone(),
            server: server.clone(),
            reason: e.to_string(),
        });
    }
    created?;
    step("waiting for the network");
    let (probe, extra) = dns::settings();
    // In allowlist mode DNS is closed by design (allowed names are in
    // /etc/hosts); a probe there would only fail.
    let dns_open = req.network.mode != crate::network::Mode::Allowlist;
    if wait_for_route(client, container).await
        && dns_open
        && let Some(probe) = probe
    {
        step(&format!("checking that names resolve ({probe})"));
        let verdict = dns::check(client, container, &probe, &extra).await;
        if let dns::Verdict::Silent { was, now } = &verdict {
            return Err(BuildError::Dns(dns::silent_message(
                &probe, &req.base, was, now,
            )));
        }
        if let Some(said) = dns::step(&probe, &verdict) {
            step(&said);
        }
    }
    let cas = host_cas();
    if !cas.is_empty() {
        step(&format!(
            "adding {} certificate authorities the host trusts locally",
            cas.len()
        ));
        let dir = "/usr/local/share/ca-certificates";
        client
            .mkdir_all(container, dir, FileWrite::mode(0o755))
            .await?;
        for (name, pem) in cas {
            let path = format!("{dir}/cci-host-{name}");
            client
                .write_file(container, &path, pem, FileWrite::mode(0o644))
                .await?;
        }
    }
    step("running the build script");
    let root = FileWrite::mode(0o700);
    client.mkdir(container, SCRIPT_DIR, root).await?;
    for (name, text) in [
        ("build.sh", req.script.as_str()),
        ("code-user.sh", CODE_USER_SCRIPT),
    ] {
        let path = format!("{SCRIPT_DIR}/{name}");
        client
            .write_file(container, &path, text.to_string(), root)
            .await?;
    }
    let run = ExecRequest::new(&["bash", &format!("{SCRIPT_DIR}/build.sh")])
        .cwd("/root")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CCI_AGENTS", &req.agents.join(" "));
    let mut err = Vec::new();
    let code = client
        .exec(
            container,
            &run,
            None::<tokio::io::Empty>,
            &mut log,
            &mut err,
        )
        .await?;
    {
        use tokio::io::AsyncWriteExt;
        let _ = log.write_all(&err).await;
        let _ = log.flush().await;
    }
    if code != 0 {
        return Err(BuildError::ScriptFailed(code));
    }
    let cleanup = ExecRequest::new(&["rm", "-rf", SCRIPT_DIR]).repeatable();
    client.exec_capture(container, &cleanup, None).await?;
    step("stopping the build container");
    crate::sandbox::stop(client, container, Duration::from_secs(60)).await?;
    step("publishing the image");
    let stamp = utc_stamp();
    let mut publish = Publish {
        compression: Some(COMPRESSION.into()),
        ..Default::default()
    };
    publish.properties.insert(
        "description".into(),
        format!("{} built {stamp} from {} by cci", req.alias, req.base),
    );
    publish
        .properties
        .insert("cci.version".into(), env!("CARGO_PKG_VERSION").into());
    if !req.agents.is_empty() {
        publish
            .properties
            .insert("cci.agents".into(), req.agents.join(","));
    }
    let version = req.versioned.then(|| format!("{}-{stamp}", req.alias));
    publish.aliases.extend(version.clone());
    let fingerprint = match client.publish_instance(container, &publish).await {
        Err(e) if e.to_string().contains(COMPRESSION) => {
            publish.compression = None;
            client.publish_instance(container, &publish).await?
        }
        r => r?,
    };
    client
        .set_image_alias(&req.alias, &fingerprint, "built by cci")
        .await?;
    Ok(Built {
        alias: req.alias.clone(),
        fingerprint,
        skipped: false,
        version,
    })
}

/// Certificate authorities added to this host's trust store by hand
/// (`/usr/local/share/ca-certificates/*.crt`, public certificates): a
/// TLS-intercepting proxy's CA, say. Without them the build (and the agent)
/// could not reach package registries through that proxy.
fn host_cas() -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir("/usr/local/share/ca-certificates") else {
        return Vec::new();
    };
    let mut cas: Vec<(String, Vec<u8>)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            let ok = name.ends_with(".crt") && meta.is_file() && meta.len() < 1 << 16;
            let pem = std::fs::read(e.path()).ok()?;
            (ok && pem.starts_with(b"-----BEGIN CERTIFICATE-----")).then_some((name, pem))
        })
        .collect();
    cas.sort();
    cas
}

/// The base as the daemon knows it: an alias, else a fingerprint (prefix).
/// Image servers a base may name as `REMOTE:ALIAS`.
const REMOTES: &[(&str, &str, &str)] = &[(
    "images",
    "https://images.linuxcontainers.org",
    "simplestreams",
)];

/// `images:debian/12` and the like: an alias on a known image server.
fn remote_base(base: &str) -> Option<ImageRef> {
    let (remote, alias) = base.split_once(':')?;
    let (_, server, protocol) = REMOTES.iter().find(|(name, ..)| *name == remote)?;
    (!alias.is_empty()).then(|| ImageRef::Remote {
        server: server.to_string(),
        protocol: protocol.to_string(),
        alias: alias.to_string(),
    })
}

async fn resolve_base(client: &Client, base: &str) -> Result<ImageRef, BuildError> {
    if client.image_alias(base).await.is_ok() {
        return Ok(ImageRef::Alias(base.to_string()));
    }
    let all = client.images().await?;
    let mut matching = all.iter().filter(|i| i.fingerprint.starts_with(base));
    match (matching.next(), matching.next()) {
        (Some(i), None) if base.len() >= 12 => Ok(ImageRef::Fingerprint(i.fingerprint.clone())),
        _ => Err(BuildError::BaseMissing(base.to_string())),
    }
}

/// Wait (up to 30 s) until the container has a default route (a build
/// whose script needs no network goes on without one); whether it came.
async fn wait_for_route(client: &Client, container: &str) -> bool {
    let probe =
        ExecRequest::new(&["sh", "-c", "ip route 2>/dev/null | grep -q ^default"]).repeatable();
    for _ in 0..60 {
        if let Ok(out) = client.exec_capture(container, &probe, None).await
            && out.exit_code == 0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// `YYYYMMDD-HHMMSS` in UTC, now.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    stamp_of(secs)
}

/// `YYYYMMDD-HHMMSS` for seconds since the epoch (UTC).
fn stamp_of(secs: u64) -> String {
    let (y, m, d, h, min, sec) = crate::state::utc(secs);
    format!("{y:04}{m:02}{d:02}-{h:02}{min:02}{sec:02}")
}

/// Whether `alias` is `PREFIX-YYYYMMDD-HHMMSS`; returns the stamp.
pub fn version_stamp<'a>(prefix: &str, alias: &'a str) -> Option<&'a str> {
    let stamp = alias.strip_prefix(prefix)?.strip_prefix('-')?;
    let ok = stamp.len() == 15
        && stamp
            .char_indices()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() });
    ok.then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_time() {
        assert_eq!(stamp_of(0), "19700101-000000");
        assert_eq!(stamp_of(951_782_400), "20000229-000000");
        assert_eq!(stamp_of(1_795_375_512), "20261122-192512");
    }

    #[test]
    fn versions_are_recognised_by_prefix_and_shape() {
        assert_eq!(
            version_stamp("cci", "cci-20261122-163832"),
            Some("20261122-163832")
        );
        assert_eq!(version_stamp("cci", "cci"), None);
        assert_eq!(version_stamp("cci", "cci-test-base"), None);
        assert_eq!(version_stamp("cci", "cci-x-20261122-163832"), None);
        assert_eq!(version_stamp("my", "my-2026112-1638321"), None);
    }
}

//! Incus servers on other machines ("remotes"): the ones cci added itself
//! (`~/.cci/remotes/`), and the ones the `incus` CLI already knows
//! (`$INCUS_CONF` or `~/.config/incus/config.yml`, read only), so an
//! existing setup works at once. Adding one: read the server's certificate,
//! have its fingerprint accepted (or match a trust token's), pin it, and
//! have the server trust cci's client certificate (a trust token).
//!
//! Files: `~/.cci/remotes/remotes.json` (name, address, project),
//! `servercerts/NAME.crt` (the pinned certificate), `client.crt` and
//! `client.key` (cci's own client certificate, made on first use); all
//! private to the user and written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::incus::tls::{self, Identity, ServerTrust};
use crate::incus::{self, Client, Https};

/// The name of the local daemon.
pub const LOCAL: &str = "local";

/// How long reading a server's certificate may take.
const HANDSHAKE_TIME: Duration = Duration::from_secs(5);

/// The port Incus listens on by default.
const DEFAULT_PORT: u16 = 8443;

/// A failure with remotes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input (a name, an address, a token).
    #[error("{0}")]
    Usage(String),
    /// No such remote.
    #[error(
        "no remote named {0:?}; `cci remote list` shows them, `cci remote add NAME URL` adds one"
    )]
    NotFound(String),
    /// A remote of the `incus` CLI's that cci cannot drive.
    #[error("remote {name:?} ({source_file}): {why}")]
    Unusable {
        /// The remote.
        name: String,
        /// Where it is defined.
        source_file: String,
        /// Why not.
        why: String,
    },
    /// A file.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The server.
    #[error(transparent)]
    Incus(#[from] incus::Error),
}

/// Where a remote is defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Added with `cci remote add`.
    Cci,
    /// In the `incus` CLI's configuration.
    Incus,
}

/// One remote.
#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    /// Its name.
    pub name: String,
    /// `https://HOST:PORT`, or `unix://PATH` for a socket (`unix://`: the
    /// default one).
    pub url: String,
    /// The Incus project to use there (None: `default`, or `--project`).
    pub project: Option<String>,
    /// Where it is defined.
    pub source: Source,
    /// The folder holding its certificates (`servercerts/`, `client.*`).
    #[serde(skip)]
    dir: PathBuf,
}

/// One entry of cci's own file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project: Option<String>,
}

/// cci's own file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredFile {
    #[serde(default)]
    remotes: BTreeMap<String, Stored>,
}

/// The `incus` CLI's `config.yml`, the parts cci reads.
#[derive(Debug, Default, Deserialize)]
struct IncusConfig {
    #[serde(default)]
    remotes: BTreeMap<String, IncusRemote>,
}

#[derive(Debug, Deserialize)]
struct IncusRemote {
    #[serde(default)]
    addr: String,
    #[serde(default)]
    auth_type: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    public: bool,
}

/// Where remotes are found (the environment passed in, for tests).
pub struct Places {
    /// cci's own folder (`~/.cci/remotes`).
    pub own: PathBuf,
    /// The `incus` CLI's configuration folder.
    pub incus: Option<PathBuf>,
}

impl Places {
    /// The usual places: `~/.cci/remotes`, and `$INCUS_CONF` or
    /// `~/.config/incus`.
    pub fn standard() -> Result<Places, Error> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| Error::Usage("HOME is not set".into()))?;
        let incus = std::env::var_os("INCUS_CONF")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config/incus"));
        Ok(Places {
            own: home.join(".cci/remotes"),
            incus: Some(incus),
        })
    }

    fn own_file(&self) -> PathBuf {
        self.own.join("remotes.json")
    }

    fn read_own(&self) -> Result<StoredFile, Error> {
        let path = self.own_file();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Usage(format!(
                    "{} is damaged ({e}); fix or remove it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredFile::default()),
            Err(e) => Err(Error::Io(format!("reading {}", path.display()), e)),
        }
    }

    fn write_own(&self, file: &StoredFile) -> Result<(), Error> {
        self.make_own_dir()?;
        let path = self.own_file();
        let data = serde_json::to_vec_pretty(file)
            .map_err(|e| Error::Usage(format!("encoding remotes: {e}")))?;
        crate::state::write_atomic(&path, &data)
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))
    }

    fn make_own_dir(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let d = self.own.join("servercerts");
        std::fs::create_dir_all(&d)
            .map_err(|e| Error::Io(format!("creating {}", d.display()), e))?;
        for d in [&self.own, &d] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::Io(format!("securing {}", d.display()), e))?;
        }
        Ok(())
    }

    /// The `incus` CLI's remotes (none when it has no configuration).
    fn read_incus(&self) -> Result<Vec<(String, IncusRemote)>, Error> {
        let Some(dir) = &self.incus else {
            return Ok(Vec::new());
        };
        let path = dir.join("config.yml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io(format!("reading {}", path.display()), e)),
        };
        let cfg: IncusConfig = serde_saphyr::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{}: not a configuration the incus CLI writes: {e}",
                path.display()
            ))
        })?;
        Ok(cfg.remotes.into_iter().collect())
    }

    /// Every remote cci can drive: its own, then the `incus` CLI's it does
    /// not shadow (image servers and the local socket left out).
    pub fn list(&self) -> Result<Vec<Remote>, Error> {
        let mut out: Vec<Remote> = self
            .read_own()?
            .remotes
            .into_iter()
            .map(|(name, s)| Remote {
                name,
                url: s.url,
                project: s.project,
                source: Source::Cci,
                dir: self.own.clone(),
            })
            .collect();
        if let Some(dir) = &self.incus {
            for (name, r) in self.read_incus()? {
                let instance_server = !r.public
                    && (r.protocol.is_empty() || r.protocol == "incus")
                    && r.auth_type != "oidc"
                    && r.addr.starts_with("https://");
                // Names become file names: one cci would not accept is left out.
                if check_name(&name).is_err()
                    || !instance_server
                    || out.iter().any(|o| o.name == name)
                {
                    continue;
                }
                out.push(Remote {
                    name,
                    url: r.addr,
                    project: Some(r.project).filter(|p| !p.is_empty()),
                    source: Source::Incus,
                    dir: dir.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The remote `name`.
    pub fn find(&self, name: &str) -> Result<Remote, Error> {
        if let Some(r) = self.list()?.into_iter().find(|r| r.name == name) {
            return Ok(r);
        }
        // Explain the incus CLI's remotes cci cannot use.
        for (n, r) in self.read_incus()? {
            if n != name {
                continue;
            }
            let why = if r.public || (!r.protocol.is_empty() && r.protocol != "incus") {
                "an image server, not an Incus server cci can run containers on".to_string()
            } else if r.auth_type == "oidc" {
                "OpenID Connect login is not supported; add it with a trust token: `cci remote add NAME TOKEN`".to_string()
            } else {
                format!("its address {:?} is not https://", r.addr)
            };
            return Err(Error::Unusable {
                name: name.into(),
                source_file: self
                    .incus
                    .as_ref()
                    .map(|d| d.join("config.yml").display().to_string())
                    .unwrap_or_default(),
                why,
            });
        }
        Err(Error::NotFound(name.into()))
    }

    /// Connect to `remote`: its pinned certificate (or the system's
    /// authorities when none is pinned) and the client certificate.
    pub fn client(&self, remote: &Remote) -> Result<Client, Error> {
        let (host, port) = host_port(&remote.url)?;
        let pinned = remote
            .dir
            .join("servercerts")
            .join(format!("{}.crt", remote.name));
        let trust = match std::fs::read(&pinned) {
            Ok(pem) => ServerTrust::Pinned(pem_der(&pem).ok_or_else(|| {
                Error::Usage(format!("{} holds no certificate", pinned.display()))
            })?),
            // cci pins every remote it adds: a pin gone is not a reason to
            // trust whatever the system's authorities vouch for.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && remote.source == Source::Cci => {
                return Err(Error::Usage(format!(
                    "the pinned certificate of remote {} ({}) is missing; add the remote again (`cci remote remove {0}`, `cci remote add {0} ...`)",
                    remote.name,
                    pinned.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ServerTrust::SystemRoots,
            Err(e) => return Err(Error::Io(format!("reading {}", pinned.display()), e)),
        };
        let identity = self.identity_of(remote)?;
        let config = tls::client_config(Some(&identity), trust)?;
        let client = Client::https(Https {
            remote: remote.name.clone(),
            host,
            port,
            tls: std::sync::Arc::new(config),
        })?;
        Ok(client.with_project(remote.project.clone()))
    }

    /// The client certificate for `remote`: the `incus` CLI's per-remote
    /// one when it has one, else the shared one of its source.
    fn identity_of(&self, remote: &Remote) -> Result<Identity, Error> {
        let own = remote
            .dir
            .join("clientcerts")
            .join(format!("{}.crt", remote.name));
        let (crt, key) = if remote.source == Source::Incus && own.is_file() {
            (own.clone(), own.with_extension("key"))
        } else {
            (remote.dir.join("client.crt"), remote.dir.join("client.key"))
        };
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::Io(format!("reading {}", p.display()), e))
        };
        Ok(Identity::from_pem(&read(&crt)?, &read(&key)?)?)
    }

    /// cci's client certificate, made (private) when there is none yet.
    pub fn own_identity(&self) -> Result<(Identity, PathBuf), Error> {
        let crt = self.own.join("client.crt");
        let key = self.own.join("client.key");
        if !crt.is_file() || !key.is_file() {
            self.make_own_dir()?;
            let user = std::env::var("USER").unwrap_or_else(|_| "cci".into());
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let (cert_pem, key_pem) =
                tls::new_client_certificate(&format!("{user}@{}", host.trim()))?;
            crate::state::write_atomic(&key, key_pem.as_bytes())
                .map_err(|e| Error::Io(format!("writing {}", key.display()), e))?;
            crate::state::write_atomic(&crt, cert_pem.as_bytes())
                .map_err(|e| Error::Io(format!("writing {}", crt.display()), e))?;
        }
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::Io(format!("reading {}", p.display()), e))
        };
        Ok((Identity::from_pem(&read(&crt)?, &read(&key)?)?, crt))
    }

    /// Forget cci's remote `name` (its pinned certificate too).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let mut file = self.read_own()?;
        if file.remotes.remove(name).is_none() {
            return match self.find(name) {
                Ok(r) if r.source == Source::Incus => Err(Error::Usage(format!(
                    "remote {name:?} is the incus CLI's (in {}); remove it with `incus remote remove {name}`",
                    r.dir.join("config.yml").display()
                ))),
                _ => Err(Error::NotFound(name.into())),
            };
        }
        self.write_own(&file)?;
        let cert = self.own.join("servercerts").join(format!("{name}.crt"));
        match std::fs::remove_file(&cert) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io(format!("removing {}", cert.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Record remote `name` at `url` with `cert` (DER) pinned.
    fn save(
        &self,
        name: &str,
        url: &str,
        project: Option<String>,
        cert: &[u8],
    ) -> Result<(), Error> {
        self.make_own_dir()?;
        let pem = der_pem(cert);
        let path = self.own.join("servercerts").join(format!("{name}.crt"));
        crate::state::write_atomic(&path, pem.as_bytes())
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))?;
        let mut file = self.read_own()?;
        file.remotes.insert(
            name.to_string(),
            Stored {
                url: url.to_string(),
                project,
            },
        );
        self.write_own(&file)
    }
}

/// A trust token, as `incus config trust add NAME` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    /// The name the server gave the client.
    pub client_name: String,
    /// The server certificate's fingerprint.
    pub fingerprint: String,
    /// `HOST:PORT` addresses the server listens on.
    pub addresses: Vec<String>,
    /// The secret.
    pub secret: String,
}

impl Token {
    /// `text` as a token, if it is one (base64 of JSON with all the fields).
    pub fn parse(text: &str) -> Option<Token> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        let t: Token = serde_json::from_slice(&raw).ok()?;
        (!t.client_name.is_empty()
            && !t.addresses.is_empty()
            && !t.secret.is_empty()
            && t.fingerprint.len() == 64)
            .then_some(t)
    }
}

/// How the server's certificate is accepted when no token vouches for it.
pub enum Accept {
    /// Only if its fingerprint is this one.
    Fingerprint(String),
    /// Whatever it is (the user checked it another way).
    Any,
    /// Ask on the terminal.
    Ask,
}

/// What adding a remote did.
#[derive(Debug, Serialize)]
pub struct Added {
    /// The remote.
    pub name: String,
    /// Its address.
    pub url: String,
    /// The server certificate's fingerprint, pinned.
    pub fingerprint: String,
    /// Whether a token was used to be trusted.
    pub token_used: bool,
}

/// Names cci accepts for remotes (they become file names).
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(Error::Usage(format!(
            "{name:?} is not a remote name: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )));
    }
    if name == LOCAL {
        return Err(Error::Usage(
            "\"local\" is the local daemon; pick another name".into(),
        ));
    }
    Ok(())
}

/// `https://HOST:PORT` for what the user typed (`HOST`, `HOST:PORT`,
/// `https://HOST[:PORT]`, `[V6]:PORT`).
pub fn normalize_url(input: &str) -> Result<String, Error> {
    let rest = match input.split_once("://") {
        Some(("https", r)) => r,
        Some((scheme, _)) => {
            return Err(Error::Usage(format!(
                "{input:?}: only https:// addresses can be remotes (not {scheme}://)"
            )));
        }
        None => input,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = host_port(&format!("https://{rest}"))?;
    if host.contains(':') {
        Ok(format!("https://[{host}]:{port}"))
    } else {
        Ok(format!("https://{host}:{port}"))
    }
}

/// The host and port of an `https://` address.
pub fn host_port(url: &str) -> Result<(String, u16), Error> {
    let bad = || Error::Usage(format!("{url:?} is not an https://HOST[:PORT] address"));
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b));
    if !host_ok {
        return Err(bad());
    }
    Ok((host, port))
}

/// The first certificate of a PEM file, as DER.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// DER as a PEM certificate.
fn der_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Add remote `name` at `target` (an address, or a trust token), its
/// certificate accepted as `accept` says when no token vouches for it.
/// `ask` asks the user a question and returns the answer (None: no terminal).
pub async fn add(
    places: &Places,
    name: &str,
    target: &str,
    project: Option<String>,
    accept: Accept,
    ask: &dyn Fn(&str) -> Option<String>,
) -> Result<Added, Error> {
    check_name(name)?;
    if places.read_own()?.remotes.contains_key(name) {
        return Err(Error::Usage(format!(
            "remote {name:?} exists already; `cci remote remove {name}` first"
        )));
    }
    let token = Token::parse(target);
    let (identity, crt_path) = places.own_identity()?;
    // The address and the certificate it shows.
    let (url, der) = match &token {
        Some(t) => {
            let mut last = None;
            let mut found = None;
            for addr in &t.addresses {
                let url = match normalize_url(addr) {
                    Ok(u) => u,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                };
                let (host, port) = host_port(&url)?;
                match tls::server_certificate(&host, port, HANDSHAKE_TIME).await {
                    Ok(der) => {
                        found = Some((url, der));
                        break;
                    }
                    Err(e) => last = Some(Error::Usage(format!("{url}: {e}"))),
                }
            }
            let (url, der) = found.ok_or_else(|| {
                last.unwrap_or_else(|| Error::Usage("the token names no address".into()))
            })?;
            let got = tls::fingerprint(&der);
            if !got.eq_ignore_ascii_case(&t.fingerprint) {
                return Err(Error::Incus(incus::Error::RemoteCertificate {
                    remote: name.into(),
                    reason: format!(
                        "{url} shows a certificate (fingerprint {got}) that is not the one in the token ({})",
                        t.fingerprint
                    ),
                }));
            }
            (url, der)
        }
        None => {
            let url = normalize_url(target)?;
            let (host, port) = host_port(&url)?;
            let der = tls::server_certificate(&host, port, HANDSHAKE_TIME)
                .await
                .map_err(|e| unreachable(name, &url, e))?;
            let got = tls::fingerprint(&der);
            let accepted = match &accept {
                Accept::Any => true,
                Accept::Fingerprint(f) => f.eq_ignore_ascii_case(&got),
                Accept::Ask => {
                    let q = format!(
                        "Certificate fingerprint of {url}: {got}\nCompare it with `incus info | grep fingerprint` on the server.\nok (y/n/[fingerprint])? "
                    );
                    match ask(&q) {
                        Some(a) => {
                            let a = a.trim();
                            a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case(&got)
                        }
                        None => {
                            return Err(Error::Usage(format!(
                                "the certificate of {url} has fingerprint {got}; check it on the server (`incus info | grep fingerprint`), then add --fingerprint {got} (or --accept-certificate)"
                            )));
                        }
                    }
                }
            };
            if !accepted {
                return Err(Error::Incus(incus::Error::RemoteCertificate {
                    remote: name.into(),
                    reason: format!(
                        "the certificate of {url} (fingerprint {got}) was not accepted"
                    ),
                }));
            }
            (url, der)
        }
    };
    // Talk to it as it will be talked to from now on.
    let (host, port) = host_port(&url)?;
    let config = tls::client_config(Some(&identity), ServerTrust::Pinned(der.clone()))?;
    let client = Client::https(Https {
        remote: name.into(),
        host,
        port,
        tls: std::sync::Arc::new(config),
    })?;
    let mut info = client.server().await?;
    let redeemed = info.auth != "trusted";
    if redeemed {
        // The token of the command line, else one typed at the terminal.
        let typed = match &token {
            Some(_) => None,
            None => ask(&format!(
                "{url} does not trust cci yet. Trust token for {name} (`incus config trust add NAME` on the server; empty to stop): "
            ))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
        };
        if let Some(t) = &typed {
            let parsed =
                Token::parse(t).ok_or_else(|| Error::Usage("that is not a trust token".into()))?;
            // Its secret goes only to the server it was made by.
            if !parsed
                .fingerprint
                .eq_ignore_ascii_case(&tls::fingerprint(&der))
            {
                return Err(Error::Incus(incus::Error::RemoteCertificate {
                    remote: name.into(),
                    reason: format!(
                        "the token is for a server with certificate {}, not {url}",
                        parsed.fingerprint
                    ),
                }));
            }
        }
        if token.is_none() && typed.is_none() {
            return Err(Error::Usage(format!(
                "{url} does not trust cci's client certificate yet. Either make a trust token on the server (`incus config trust add {}`) and run `cci remote add {name} TOKEN`, or trust the certificate there: copy {} to it and run `incus config trust add-certificate FILE` (fingerprint {}), then run this again",
                hostname_hint(),
                crt_path.display(),
                identity.fingerprint()
            )));
        }
        let secret = typed.as_deref().unwrap_or(target.trim());
        client.redeem_trust_token(secret).await?;
        info = client.server().await?;
        if info.auth != "trusted" {
            return Err(Error::Incus(incus::Error::Untrusted {
                remote: name.into(),
            }));
        }
    }
    places.save(name, &url, project, &der)?;
    Ok(Added {
        name: name.into(),
        url,
        fingerprint: tls::fingerprint(&der),
        token_used: redeemed,
    })
}

fn hostname_hint() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "NAME".into())
}

/// A failed handshake, said as "cannot reach".
fn unreachable(name: &str, url: &str, e: incus::Error) -> Error {
    let reason = match &e {
        incus::Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused: nothing listens there".to_string()
            }
            _ => source.to_string(),
        },
        incus::Error::Timeout { .. } => "no answer in time".into(),
        other => other.to_string(),
    };
    Error::Incus(incus::Error::RemoteUnreachable {
        remote: name.into(),
        url: url.into(),
        reason,
    })
}

/// The client for the daemon the user chose: `remote` (None or `local`:
/// the local daemon, at `socket` when given).
pub fn connect(remote: Option<&str>, socket: Option<&Path>) -> Result<Client, Error> {
    match remote.filter(|r| !r.is_empty() && *r != LOCAL) {
        None => Ok(match socket {
            Some(s) => Client::unix(s.to_path_buf())?,
            None => Client::local()?,
        }),
        Some(name) => {
            let places = Places::standard()?;
            let r = places.find(name)?;
            places.client(&r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_or_refused() {
        assert_eq!(normalize_url("10.0.0.5").unwrap(), "https://10.0.0.5:8443");
        assert_eq!(
            normalize_url("h.example:9443").unwrap(),
            "https://h.example:9443"
        );
        assert_eq!(normalize_url("https://h/").unwrap(), "https://h:8443");
        assert_eq!(normalize_url("[::1]:8443").unwrap(), "https://[::1]:8443");
        assert_eq!(host_port("https://[::1]:9").unwrap(), ("::1".into(), 9));
        for bad in [
            "http://h",
            "unix:///x",
            "h:0",
            "h:99999",
            "",
            "h/x",
            "u@h",
            "h;rm",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_become_file_names_safely() {
        assert!(check_name("build-1").is_ok());
        for bad in ["", "local", "../x", "a/b", ".x", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_recognized() {
        let json = r#"{"client_name":"me","fingerprint":"ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01","addresses":["10.0.0.5:8443"],"secret":"s3","expires_at":"0001-01-01T00:00:00Z"}"#;
        let tok = base64::engine::general_purpose::STANDARD.encode(json);
        let t = Token::parse(&tok).unwrap();
        assert_eq!(t.addresses, ["10.0.0.5:8443"]);
        assert!(Token::parse("https://10.0.0.5").is_none());
        assert!(Token::parse(&base64::engine::general_purpose::STANDARD.encode("{}")).is_none());
    }

    #[test]
    fn the_incus_cli_remotes_are_read_and_cci_ones_come_first() {
        let tmp = tempfile::tempdir().unwrap();
        let incus_dir = tmp.path().join("incus");
        std::fs::create_dir_all(&incus_dir).unwrap();
        std::fs::write(
            incus_dir.join("config.yml"),
            "default-remote: local\nremotes:\n  foo:\n    addr: https://192.0.2.4:8443\n    auth_type: tls\n    project: dev\n    protocol: incus\n    public: false\n  images:\n    addr: https://images.linuxcontainers.org\n    protocol: simplestreams\n    public: true\n  local:\n    addr: unix://\n    public: false\n  sso:\n    addr: https://192.0.2.9:8443\n    auth_type: oidc\n    public: false\n  ../x:\n    addr: https://192.0.2.7:8443\n    public: false\naliases: {}\n",
        )
        .unwrap();
        let places = Places {
            own: tmp.path().join("own"),
            incus: Some(incus_dir),
        };
        let names: Vec<_> = places.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["foo"]);
        let err = places.find("sso").unwrap_err().to_string();
        assert!(err.contains("OpenID Connect"), "{err}");
        let foo = places.find("foo").unwrap();
        assert_eq!(foo.project.as_deref(), Some("dev"));
        assert_eq!(foo.source, Source::Incus);
        let err = places.find("images").unwrap_err().to_string();
        assert!(err.contains("image server"), "{err}");
        assert!(matches!(places.find("nope"), Err(Error::NotFound(_))));
        // No client certificate: a clear error naming the file.
        let err = places
            .client(&foo)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("client.crt"), "{err}");
        // cci's own entry shadows the incus one of the same name.
        places
            .save("foo", "https://198.51.100.1:8443", None, b"\x30\x00")
            .unwrap();
        let foo = places.find("foo").unwrap();
        assert_eq!(
            (foo.source, foo.url.as_str()),
            (Source::Cci, "https://198.51.100.1:8443")
        );
        places.remove("foo").unwrap();
        assert_eq!(places.find("foo").unwrap().source, Source::Incus);
        let err = places.remove("foo").unwrap_err().to_string();
        assert!(err.contains("incus remote remove"), "{err}");
    }

    #[test]
    fn own_identity_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let places = Places {
            own: tmp.path().join("own"),
            incus: None,
        };
        let (a, crt) = places.own_identity().unwrap();
        let (b, _) = places.own_identity().unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let key = crt.with_extension("key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&places.own).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

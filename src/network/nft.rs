//! The firewall as a side effect: apply an nft script, read cci's tables.
//! The only code that runs `nft`; behind [`Firewall`], which makes it the
//! host-nftables [`super::PolicyBackend`] (see [`super::backend`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::backend::PolicyBackend;
pub use super::backend::State;
use super::rules::{self, PortRules};
use super::{Error, PortName};

/// Applies and reads cci's nftables rules. Every `Firewall` is a
/// [`super::PolicyBackend`]; code that enforces a policy takes that instead.
pub trait Firewall: Send + Sync {
    /// Apply a script atomically (all or nothing).
    fn apply(&self, script: &str) -> Result<(), Error>;
    /// cci's current rules (empty when its tables do not exist).
    fn state(&self) -> Result<State, Error>;
}

/// The real firewall: the `nft` program, as root directly, otherwise through
/// `sudo -n` (a sudoers rule for `nft` is what a non-root user needs).
/// `CCI_NFT` names another program (tests use it to take nft away).
#[derive(Debug, Clone)]
pub struct Nft {
    argv: Vec<String>,
}

impl Nft {
    /// The command cci will run.
    pub fn from_env() -> Nft {
        let program = std::env::var("CCI_NFT").unwrap_or_else(|_| "nft".into());
        let argv = if crate::state::is_root() {
            vec![program]
        } else {
            vec!["sudo".into(), "-n".into(), program]
        };
        Nft { argv }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        let shown = self.argv.join(" ");
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::NftMissing {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| Error::Nft(format!("writing to {shown}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Nft(format!("running {shown}: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if err.contains("Operation not permitted") || err.contains("password is required") {
                return Err(Error::NftPermission { command: shown });
            }
            return Err(Error::Nft(format!("{shown} failed: {err}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Firewall for Nft {
    fn apply(&self, script: &str) -> Result<(), Error> {
        tracing::debug!("nft script:\n{script}");
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    fn state(&self) -> Result<State, Error> {
        let bridge = match self.run(&["-j", "list", "table", "bridge", "cci"], None) {
            Ok(out) => out,
            Err(Error::Nft(msg)) if msg.contains("No such file or directory") => {
                return Ok(State::default());
            }
            Err(e) => return Err(e),
        };
        let mut state = parse_state(&bridge)?;
        match self.run(&["-j", "list", "table", "inet", "cci"], None) {
            Ok(inet) => {
                let chains = objects(&inet)?
                    .iter()
                    .filter_map(|o| o.get("chain")?.get("name")?.as_str().map(str::to_string))
                    .collect::<Vec<_>>();
                state.to_host = counters(&inet)?.get("to_host").copied().unwrap_or(0);
                state.tables = ["tagged_pre", "tagged_in", "tagged_fwd"]
                    .iter()
                    .all(|c| chains.iter().any(|n| n == c));
            }
            Err(Error::Nft(msg)) if msg.contains("No such file or directory") => {}
            Err(e) => return Err(e),
        }
        Ok(state)
    }
}

/// A running `nft monitor`: one line per ruleset change.
pub struct Monitor {
    /// Its output.
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Nft {
    /// Start `nft monitor` (killed when the [`Monitor`] drops).
    pub fn monitor(&self) -> std::io::Result<Monitor> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .arg("monitor")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("nft monitor has no output"))?;
        Ok(Monitor {
            lines: tokio::io::BufReader::new(out).lines(),
            _child: child,
        })
    }
}

fn objects(json: &str) -> Result<Vec<Value>, Error> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| Error::Nft(format!("reading nft's JSON output: {e}")))?;
    Ok(v.get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

fn counters(json: &str) -> Result<BTreeMap<String, u64>, Error> {
    Ok(objects(json)?
        .iter()
        .filter_map(|o| o.get("counter"))
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            Some((name, c.get("packets")?.as_u64()?))
        })
        .collect())
}

/// A proxy-mode port's dropped-traffic set (`seen4_PORT`, `seen6_PORT`)
/// into `state.blocked`.
fn seen(set: &Value, state: &mut State) {
    let Some(name) = set.get("name").and_then(Value::as_str) else {
        return;
    };
    let Some(port) = rules::SEEN_PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(|p| PortName::parse(p).ok())
    else {
        return;
    };
    let list = state.blocked.entry(port).or_default();
    for e in set
        .get("elem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let e = e.get("elem").unwrap_or(e);
        let Some(parts) = e
            .get("val")
            .and_then(|v| v.get("concat"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        let (Some(address), Some(proto), Some(port)) = (
            parts.first().and_then(Value::as_str),
            parts.get(1).and_then(Value::as_str),
            parts.get(2).and_then(Value::as_u64),
        ) else {
            continue;
        };
        list.push(super::backend::Blocked {
            address: address.to_string(),
            proto: proto.to_string(),
            port: port as u16,
            packets: e
                .get("counter")
                .and_then(|c| c.get("packets"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        });
    }
}

/// Read the guarded ports and counters out of `nft -j list table bridge cci`.
pub fn parse_state(json: &str) -> Result<State, Error> {
    let counters = counters(json)?;
    let mut state = State {
        between_slots: counters.get("between_slots").copied().unwrap_or(0),
        ..State::default()
    };
    for o in objects(json)? {
        if let Some(set) = o.get("set") {
            seen(set, &mut state);
            continue;
        }
        let Some(map) = o.get("map") else { continue };
        if map.get("name").and_then(Value::as_str) != Some("out_ports") {
            continue;
        }
        for elem in map
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = elem.get(0).and_then(Value::as_str);
            if let Some(port) = key.and_then(|k| PortName::parse(k).ok()) {
                let dropped = counters.get(&format!("drop_{port}")).copied().unwrap_or(0);
                state.ports.insert(port, dropped);
            }
        }
    }
    Ok(state)
}

/// Host nftables: each call is one atomic `nft -f -` script.
impl<F: Firewall + ?Sized> PolicyBackend for F {
    fn guard(&self, r: &PortRules) -> Result<(), Error> {
        self.apply(&rules::install(r))
    }

    fn refill(&self, r: &PortRules) -> Result<(), Error> {
        self.apply(&rules::fill_allow(r))
    }

    fn release(&self, port: &PortName) -> Result<(), Error> {
        self.apply(&rules::remove(port))
    }

    fn restore_shared(&self) -> Result<(), Error> {
        self.apply(&rules::skeleton())
    }

    fn state(&self) -> Result<State, Error> {
        Firewall::state(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_and_their_drop_counters() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
          {"table":{"family":"bridge","name":"cci","handle":1}},
          {"map":{"family":"bridge","name":"out_ports","table":"cci","type":"ifname","handle":2,"map":"verdict",
            "elem":[["cci0123456789ab",{"jump":{"target":"out_cci0123456789ab"}}],["notours",{"accept":null}]]}},
          {"counter":{"family":"bridge","name":"drop_cci0123456789ab","table":"cci","handle":3,"packets":7,"bytes":420}},
          {"counter":{"family":"bridge","name":"between_slots","table":"cci","handle":4,"packets":2,"bytes":84}}]}"#;
        let s = parse_state(json).unwrap();
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[&PortName::parse("cci0123456789ab").unwrap()], 7);
        assert_eq!(s.between_slots, 2);
    }

    #[test]
    fn reads_what_a_proxy_mode_port_tried_around_the_proxy() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
          {"set":{"family":"bridge","name":"seen4_cci0123456789ab","table":"cci","type":["ipv4_addr","inet_proto","inet_service"],
            "elem":[{"elem":{"val":{"concat":["198.51.100.10","tcp",8080]},"expires":3599,"counter":{"packets":3,"bytes":180}}}]}},
          {"set":{"family":"bridge","name":"allow4_cci0123456789ab","table":"cci","type":"ipv4_addr"}}]}"#;
        let s = parse_state(json).unwrap();
        let port = PortName::parse("cci0123456789ab").unwrap();
        assert_eq!(
            s.blocked[&port],
            [crate::network::backend::Blocked {
                address: "198.51.100.10".into(),
                proto: "tcp".into(),
                port: 8080,
                packets: 3
            }]
        );
    }

    #[test]
    fn an_empty_map_means_nothing_guarded() {
        let json = r#"{"nftables":[{"map":{"name":"out_ports","type":"ifname","map":"verdict"}}]}"#;
        assert!(parse_state(json).unwrap().ports.is_empty());
    }
}

#[cfg(test)]
mod backend_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::network::rules::{self, PortRules};
    use crate::network::{Mode, PolicyBackend};

    /// A `Firewall` that keeps the scripts it is given.
    #[derive(Default)]
    struct Scripts(Mutex<Vec<String>>);

    impl Firewall for Scripts {
        fn apply(&self, script: &str) -> Result<(), Error> {
            self.0.lock().unwrap().push(script.to_string());
            Ok(())
        }
        fn state(&self) -> Result<State, Error> {
            Ok(State::default())
        }
    }

    #[test]
    fn host_nft_turns_each_call_into_one_script() {
        let fw = Scripts::default();
        let r = PortRules {
            port: PortName::random(),
            mode: Mode::Restricted,
            bridge: Default::default(),
            allow4: vec![],
            allow6: vec![],
        };
        let backend: &dyn PolicyBackend = &fw;
        backend.guard(&r).unwrap();
        backend.refill(&r).unwrap();
        backend.release(&r.port).unwrap();
        backend.restore_shared().unwrap();
        assert_eq!(
            *fw.0.lock().unwrap(),
            [
                rules::install(&r),
                rules::fill_allow(&r),
                rules::remove(&r.port),
                rules::skeleton(),
            ]
        );
    }
}

//! `cci network log|allow|deny|pending|approve|suggest`: seeing and deciding
//! what proxy-mode containers reach (the proxy is `network::egress`).

use super::Format;
use super::network::LogArgs;
use super::output::{dash, print_json, print_rows};
use crate::host::Host;
use crate::network::egress;
use crate::proxy::{Decision, Request, Response};

fn time(ms: u64) -> String {
    let (y, m, d, h, min, s) = crate::state::utc(ms / 1000);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}")
}

fn row(d: &Decision) -> [String; 7] {
    [
        time(d.time),
        dash(&d.container),
        format!("{}:{}", d.host, d.port),
        if d.allowed { "allowed" } else { "refused" }.to_string(),
        match d.repeats {
            0 => d.reason.to_string(),
            n => format!("{} ({} times)", d.reason, n + 1),
        },
        dash(d.rule.as_deref().unwrap_or("")),
        format!("{}/{}", d.bytes_up, d.bytes_down),
    ]
}

const HEAD: [&str; 7] = [
    "TIME (UTC)",
    "CONTAINER",
    "DESTINATION",
    "DECISION",
    "WHY",
    "RULE",
    "BYTES UP/DOWN",
];

fn print(records: &[Decision], format: Format, head: bool) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for d in records {
                println!("{}", serde_json::to_string(d)?);
            }
        }
        Format::Table => {
            let rows: Vec<[String; 7]> = records.iter().map(row).collect();
            if head {
                print_rows(&HEAD, &rows);
            } else {
                for r in rows {
                    println!("{}", r.join("  "));
                }
            }
        }
    }
    Ok(())
}

/// `cci network log [NAME] [--follow] [--format json]`: the proxy's
/// decisions, and for one container also what the firewall dropped on its
/// way around the proxy.
pub async fn log(host: &Host, a: LogArgs) -> anyhow::Result<i32> {
    let path = egress::decisions_log()?;
    let records = crate::proxy::log::read(&path, a.name.as_deref())?;
    if !a.follow {
        let around = match &a.name {
            Some(name) => egress::blocked(&host.client, host.policy(), name).await?,
            None => Vec::new(),
        };
        if a.format == Format::Json {
            print(&records, a.format, true)?;
            for b in &around {
                let v = serde_json::json!({
                    "container": a.name,
                    "host": b.address,
                    "port": b.port,
                    "proto": b.proto,
                    "allowed": false,
                    "reason": "firewall",
                    "packets": b.packets,
                });
                println!("{v}");
            }
            return Ok(0);
        }
        if records.is_empty() && around.is_empty() {
            eprintln!("cci: no connection logged yet (only proxy-mode containers are logged)");
            return Ok(0);
        }
        if !records.is_empty() {
            print(&records, a.format, true)?;
        }
        if !around.is_empty() {
            println!("\naround the proxy, dropped by the firewall (the last hour):");
            let rows: Vec<[String; 3]> = around
                .iter()
                .map(|b| {
                    let dest = if b.address.contains(':') {
                        format!("[{}]:{}", b.address, b.port)
                    } else {
                        format!("{}:{}", b.address, b.port)
                    };
                    [dest, b.proto.clone(), b.packets.to_string()]
                })
                .collect();
            print_rows(&["DESTINATION", "PROTO", "PACKETS"], &rows);
        }
        return Ok(0);
    }
    let mut follow = crate::proxy::Follow::new(&path, a.name.as_deref(), true);
    let mut first = true;
    loop {
        let got = follow.next(std::time::Duration::from_millis(250)).await?;
        if !got.is_empty() {
            print(&got, a.format, first)?;
            first = false;
        }
    }
}

/// `cci network allow NAME RULE [--save]`.
pub async fn allow(host: &Host, name: &str, rule: &str, save: bool) -> anyhow::Result<i32> {
    let rule = egress::allow_live(&host.client, name, rule).await?;
    println!("{name} may reach {rule} from its next connection on");
    if save {
        let file = crate::config::Sources::standard(None, None)
            .user
            .ok_or_else(|| anyhow::anyhow!("no home folder for the user configuration"))?;
        crate::config::edit::add_to_list(&file, "network", "allowed_domains", &rule)?;
        println!("added to [network] allowed_domains in {}", file.display());
    }
    Ok(0)
}

/// `cci network deny NAME RULE`.
pub async fn deny(host: &Host, name: &str, rule: &str) -> anyhow::Result<i32> {
    let rule = egress::deny_live(&host.client, name, rule).await?;
    println!("{name} may no longer reach {rule} (from its next connection on)");
    Ok(0)
}

/// `cci network pending`.
pub async fn pending(format: Format) -> anyhow::Result<i32> {
    let requests = match egress::ask(Request::Pending).await? {
        Response::Pending { requests } => requests,
        Response::Error { message } => anyhow::bail!("{message}"),
        other => anyhow::bail!("unexpected answer from the proxy: {other:?}"),
    };
    match format {
        Format::Json => print_json(&requests)?,
        Format::Table => {
            if requests.is_empty() {
                println!("nothing waits for approval");
                return Ok(0);
            }
            let rows: Vec<[String; 4]> = requests
                .iter()
                .map(|p| {
                    [
                        p.id.clone(),
                        p.container.clone(),
                        format!("{}:{}", p.host, p.port),
                        time(p.since),
                    ]
                })
                .collect();
            print_rows(
                &["ID", "CONTAINER", "DESTINATION", "WAITING SINCE (UTC)"],
                &rows,
            );
        }
    }
    Ok(0)
}

/// `cci network approve ID [--always]`. With `--always` the rule for its
/// destination is recorded on the container first (as `cci network
/// allow`), so it lasts as long as the container.
pub async fn approve(host: &Host, id: &str, always: bool) -> anyhow::Result<i32> {
    if always {
        let waiting = match egress::ask(Request::Pending).await? {
            Response::Pending { requests } => requests,
            _ => Vec::new(),
        };
        if let Some(p) = waiting.iter().find(|p| p.id == id)
            && let Some(rule) = crate::proxy::approvals::rule_for(&p.host, p.port)
        {
            let rule = egress::allow_live(&host.client, &p.container, &rule.to_string()).await?;
            println!("{} may reach {rule} from now on", p.container);
        }
    }
    match egress::ask(Request::Approve {
        id: id.to_string(),
        always: false,
    })
    .await?
    {
        Response::Ok => {
            println!("let {id} through");
            Ok(0)
        }
        Response::Error { message } => {
            eprintln!("cci: {message}");
            Ok(1)
        }
        other => anyhow::bail!("unexpected answer from the proxy: {other:?}"),
    }
}

/// `cci network suggest NAME`.
pub fn suggest(name: &str) -> anyhow::Result<i32> {
    let records = crate::proxy::log::read(&egress::decisions_log()?, Some(name))?;
    if records.is_empty() {
        eprintln!("cci: nothing logged for {name}: run it in proxy mode first (--network proxy)");
        return Ok(1);
    }
    print!(
        "{}",
        crate::proxy::to_toml(&crate::proxy::suggest(&records))
    );
    Ok(0)
}

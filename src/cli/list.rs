//! `cci list` (alias `ls`): cci's containers, and with `--all` the saved
//! sessions too.

use clap::Args;

use super::Format;
use super::output::{dash, print_json, print_rows};
use crate::host::Host;
use crate::sandbox::{self, SandboxInfo};

/// Options of `cci list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also list the saved sessions (agent states kept on the host).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn list(host: &Host, args: ListArgs) -> anyhow::Result<i32> {
    sandbox::reap(host, sandbox::PREFIX).await;
    let all = sandbox::list_quick(host).await?;
    let saved = if args.all {
        Some(super::session::saved_infos()?)
    } else {
        None
    };
    match (args.format, saved) {
        (Format::Json, None) => print_json(&all)?,
        (Format::Json, Some(saved)) => print_json(&serde_json::json!({
            "containers": all,
            "sessions": saved,
        }))?,
        (Format::Table, saved) => {
            print_table(&all);
            if let Some(saved) = saved {
                println!();
                super::session::print_saved(&saved);
            }
        }
    }
    Ok(0)
}

fn print_table(all: &[SandboxInfo]) {
    if all.is_empty() {
        println!("no cci containers");
        return;
    }
    // `NAME (ephemeral)` / `NAME (persistent)`, as the original showed them;
    // MEMBER (third) only on a cluster.
    let rows: Vec<[String; 9]> = all
        .iter()
        .map(|s| {
            [
                format!("{} ({})", s.name, s.mode()),
                s.state.to_string(),
                dash(&s.location),
                slot_of(s),
                s.kind.clone(),
                s.ipv4.clone().unwrap_or_else(|| "-".into()),
                s.created.get(..19).unwrap_or(&s.created).replace('T', " "),
                dash(&s.image),
                dash(&s.workspace),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "STATE",
        "MEMBER",
        "SLOT",
        "KIND",
        "IPV4",
        "CREATED",
        "IMAGE",
        "WORKSPACE",
    ];
    if all.iter().any(|s| !s.location.is_empty()) {
        print_rows(&head, &rows);
        return;
    }
    let without = |r: &[String; 9]| -> [String; 8] {
        std::array::from_fn(|i| r[if i < 2 { i } else { i + 1 }].clone())
    };
    let head: [&str; 8] = std::array::from_fn(|i| head[if i < 2 { i } else { i + 1 }]);
    print_rows(&head, &rows.iter().map(without).collect::<Vec<_>>());
}

/// The slot, `-` for a launched container (it has none).
pub fn slot_of(s: &SandboxInfo) -> String {
    if s.slot == 0 {
        "-".into()
    } else {
        s.slot.to_string()
    }
}

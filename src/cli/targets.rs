//! What the commands that act on several containers share (`kill`,
//! `shutdown`, `persist`, `clean`): confirmation, `--all` targets, and one
//! report line per container.

use std::io::IsTerminal;

use super::UsageError;
use crate::host::Host;
use crate::sandbox;

/// Ask on the terminal; without one, only `--force` may destroy.
pub fn confirm(question: &str, force: bool) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question}: refusing without --force when not on a terminal"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The containers a command acts on: the names given, or (with `--all`,
/// after confirmation) every cci container. `None`: nothing to do.
pub async fn targets(
    host: &Host,
    names: Vec<String>,
    all: bool,
    verb: &str,
    force: bool,
) -> anyhow::Result<Option<Vec<String>>> {
    if !all {
        return Ok(Some(names));
    }
    let all = sandbox::list(host).await?;
    if all.is_empty() {
        println!("no cci containers");
        return Ok(None);
    }
    if !confirm(&format!("{verb} all {} cci containers", all.len()), force)? {
        return Ok(None);
    }
    Ok(Some(all.into_iter().map(|s| s.name).collect()))
}

/// Print one line per name, or the error; the exit code of the last error.
pub fn report<T, E: Into<anyhow::Error> + std::fmt::Display>(
    name: &str,
    result: Result<T, E>,
    ok: impl Fn(T) -> String,
    code: &mut i32,
) {
    match result {
        Ok(v) => println!("{}", ok(v)),
        Err(e) => {
            eprintln!("cci: {name}: {e}");
            *code = super::exit_code(&e.into());
        }
    }
}

/// Run `op` on every name, a few at a time, and report in the given order.
pub async fn for_each<T, E, F, Fut>(names: &[String], op: F, ok: impl Fn(&str, T) -> String) -> i32
where
    E: Into<anyhow::Error> + std::fmt::Display,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use futures_util::StreamExt;
    let results: Vec<_> = futures_util::stream::iter(names.iter().cloned())
        .map(|name| {
            let fut = op(name.clone());
            async move { (name, fut.await) }
        })
        .buffered(8)
        .collect()
        .await;
    let mut code = 0;
    for (name, r) in results {
        report(&name, r, |v| ok(&name, v), &mut code);
    }
    code
}

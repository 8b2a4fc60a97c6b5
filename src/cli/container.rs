//! `cci container ...`: low-level operations on named containers.

use clap::{Args, Subcommand, ValueEnum};

use crate::container::{self, ExecSpec, parse_env};
use crate::incus::Client;

/// Container subcommands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a container; exits with the command's exit code.
    Exec(ExecArgs),
}

/// How `--capture` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureFormat {
    /// `{"stdout": ..., "stderr": ..., "exit_code": N}`.
    Json,
    /// Standard output only, as is.
    Raw,
}

/// Options of `cci container exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Container name.
    pub name: String,
    /// User id to run as.
    #[arg(long, default_value_t = 0)]
    pub user: u32,
    /// Group id to run as.
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    /// Environment variable (repeatable); the value may contain `=` and `,`.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[arg(long, default_value = "")]
    pub cwd: String,
    /// Allocate a terminal and attach it to yours.
    #[arg(short = 't', long = "tty", conflicts_with = "capture")]
    pub tty: bool,
    /// Collect the output and print it when the command ends.
    #[arg(long)]
    pub capture: bool,
    /// Output format with --capture.
    #[arg(long, value_enum, default_value_t = CaptureFormat::Json, requires = "capture")]
    pub format: CaptureFormat,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(client: &Client, cmd: ContainerCommand) -> anyhow::Result<i32> {
    match cmd {
        ContainerCommand::Exec(args) => exec(client, args).await,
    }
}

async fn exec(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    let spec = ExecSpec {
        command: args.command,
        user: args.user,
        group: args.group,
        cwd: args.cwd,
        env: args.env,
    };
    if args.tty {
        return Ok(container::exec_interactive(client, &args.name, &spec).await?);
    }
    if !args.capture {
        return Ok(container::exec_streamed(client, &args.name, &spec).await?);
    }
    let out = container::exec_captured(client, &args.name, &spec).await?;
    match args.format {
        CaptureFormat::Json => {
            let v = serde_json::json!({
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "exit_code": out.exit_code,
            });
            println!("{v}");
        }
        CaptureFormat::Raw => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out.stdout)?;
            stdout.flush()?;
        }
    }
    Ok(out.exit_code)
}

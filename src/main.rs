//! The `cci` binary: parse, run, print the error, exit.

use std::time::Duration;

use clap::Parser;

fn main() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cci::terminal::restore();
        default_hook(info);
    }));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CCI_LOG"))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into logs and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let cli = cci::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cci: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(cci::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            cci::terminal::restore();
            eprintln!("cci: {e:#}");
            cci::cli::exit_code(&e)
        }
    };
    // A blocking read of stdin may still be pending; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

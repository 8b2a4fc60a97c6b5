//! The `cci` binary: parse, run, print the error, exit.

use std::time::Duration;

use clap::Parser;

/// Diagnostics (`CCI_LOG`) go to stderr, or to `cci.log` in the configured
/// logs folder (private, appended).
fn init_logging(logs_dir: Option<&std::path::Path>) {
    let filter = tracing_subscriber::EnvFilter::from_env("CCI_LOG");
    if let Some(dir) = logs_dir {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::create_dir_all(dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(dir.join("cci.log"))
        });
        match file {
            Ok(f) => {
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .init();
                return;
            }
            Err(e) => eprintln!("cci: cannot write logs into {}: {e}", dir.display()),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into logs and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cci::terminal::restore();
        // Output into a closed pipe (`cci list | head`): stop quietly, as a
        // program killed by SIGPIPE would.
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = cci::cli::Cli::parse_from(cci::cli::hoist_options(std::env::args_os().collect()));
    if cli.latches_signals() {
        cci::cli::latch_signals();
    }
    // The configuration comes first: everything below reads it.
    if cli.needs_config() {
        match cci::cli::load_config(&cli) {
            Ok(config) => {
                for line in config.untrusted_notice() {
                    eprintln!("cci: {line}");
                }
                cci::config::install(config);
            }
            Err(e) => {
                eprintln!("cci: configuration: {e}");
                std::process::exit(cci::cli::EXIT_USAGE);
            }
        }
    }
    if let Err(e) = cci::network::ready::check_env() {
        eprintln!("cci: {}", cci::config::printable(&e));
        std::process::exit(cci::cli::EXIT_USAGE);
    }
    init_logging(cci::config::current().logs_dir.as_deref());
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
            // Errors may quote a container's bytes: never raw to the terminal.
            eprintln!("cci: {}", cci::terminal::printable_lines(&format!("{e:#}")));
            cci::cli::exit_code(&e)
        }
    };
    // A blocking read of stdin may still be pending; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

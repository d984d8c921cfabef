//! The `stockflow` binary: parses the command line and wires sources,
//! dataflow and sinks together. No business logic lives here.

mod cli;
mod commands;
mod kafka;
mod metrics;
mod operator;
mod run;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// Options whose values may hold a password: never echoed in an error.
const SECRET_OPTIONS: [&str; 2] = ["--database-url", "--kafka-option"];

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message repeats a rejected value, and the value of
            // these options may hold a password: name the option only.
            if e.kind() == ErrorKind::ValueValidation
                && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
                && SECRET_OPTIONS.iter().any(|o| arg.starts_with(o))
            {
                let cause = std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default();
                eprintln!("stockflow: error: invalid value for '{arg}': {cause} (see 'stockflow --help')");
                return ExitCode::from(2);
            }
            // One line, not clap's multi-line usage block.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("stockflow: error: {first} (see 'stockflow --help')");
            return ExitCode::from(2);
        }
    };
    let mut cli = cli;
    if let Err(e) = cli.global.read_secret_files() {
        eprintln!("stockflow: error: {e}");
        return ExitCode::from(2);
    }
    cli::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stockflow: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("stockflow: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

//! The `sigil` command: `serve`, `ca ...`, `version`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sigil::cli::ca::CaCommand;
use sigil::config::ServeArgs;

/// Sigil: a SPIFFE certificate authority for Kubernetes, wire-compatible with Dapr Sentry.
#[derive(Parser, Debug)]
#[command(name = "sigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// `sigil` with no command runs `sigil serve` with its defaults.
#[derive(Parser, Debug)]
struct DefaultServe {
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the CA server (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Create, import, inspect CA material; issue offline.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Obtain a workload certificate from Sigil/Sentry and write it to files.
    Request(Box<sigil::cli::request::RequestArgs>),
    /// Print the version.
    Version,
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> Result<(), sigil::Error> {
    init_logging(&args.log_level, args.log_as_json);
    let config = sigil::cluster::config_from_args(args).await?;
    let clock: Arc<dyn sigil_pki::Clock> = Arc::new(sigil_pki::SystemClock);
    let server = sigil::server::start(config, clock).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| sigil::Error::io("SIGTERM handler", e))?;
    let mut server = server;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = sigterm.recv() => tracing::info!("SIGTERM received"),
        r = server.wait() => return r,
    }
    server.shutdown().await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Ca(cmd)) => sigil::cli::ca::run(cmd),
        Some(Command::Request(args)) => {
            init_logging(&args.log_level, false);
            Ok(sigil::cli::request::run(*args))
        }
        Some(Command::Version) => {
            println!("sigil {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let args = match command {
                Some(Command::Serve(a)) => *a,
                _ => DefaultServe::parse_from(["sigil"]).args,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| sigil::Error::io("tokio runtime", e))
                .and_then(|rt| rt.block_on(serve(args)))
                .map(|_| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

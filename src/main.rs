//! The `sigil` command: `serve`, `ca ...`, `version`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sigil::cli::ca::CaCommand;
use sigil::config::ServeArgs;

/// jemalloc, because memory freed after a burst must go back to the system: after the
/// connection flood of BENCHMARKS.md glibc's malloc kept its 46 MiB peak resident for good
/// (`malloc_trim` would return 30 MiB of it, but is reachable only through `unsafe`);
/// jemalloc's background thread purges unused pages within about 10 s (its decay time).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    use tokio::signal::unix::{signal, SignalKind};
    init_logging(&args.log_level, args.log_as_json);
    // Handlers first: a signal that arrives while the server starts (health is up before
    // start returns) must mean "shut down cleanly", not the default "die".
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| sigil::Error::io("SIGINT handler", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| sigil::Error::io("SIGTERM handler", e))?;
    let config = sigil::cluster::config_from_args(args).await?;
    let clock: Arc<dyn sigil_pki::Clock> = Arc::new(sigil_pki::SystemClock);
    let mut server = tokio::select! {
        s = sigil::server::start(config, clock) => s?,
        _ = sigint.recv() => { tracing::info!("SIGINT received while starting"); return Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM received while starting"); return Ok(()) }
    };
    tokio::select! {
        _ = sigint.recv() => tracing::info!("SIGINT received"),
        _ = sigterm.recv() => tracing::info!("SIGTERM received"),
        r = server.wait() => return r,
    }
    server.shutdown().await
}

fn main() -> ExitCode {
    // Without the background thread jemalloc purges only when the program allocates again,
    // so an idle server after a flood would keep the pages.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc's background purge thread did not start ({e}); memory freed after a burst returns to the system only as the server allocates again");
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Called the way Dapr calls Sentry (`/sentry --mode kubernetes ...`, `-port=50001`):
    // the arguments are serve's flags.
    let command = match sigil::cli::dapr::sentry_invocation(&argv) {
        Some(serve_argv) => Some(Command::Serve(Box::new(
            DefaultServe::parse_from(serve_argv).args,
        ))),
        None => Cli::parse_from(argv).command,
    };
    let serving = matches!(command, None | Some(Command::Serve(_)));
    let result = match command {
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
            // A server that cannot start exits 1, as Dapr's sentry does (log.Fatal); the
            // other commands keep 2 for a failed operation.
            ExitCode::from(if serving { 1 } else { 2 })
        }
    }
}

//! `warming` command line: `warming serve` runs the service.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use warming::api::Server;
use warming::config::{ProcessEnv, Settings};

/// mimalloc instead of the system allocator: the warm path allocates and
/// frees small buffers on every key from several threads, where glibc's
/// malloc spent about a fifth of the service's CPU (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "warming", version, about = "Proactive cache-warming service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// Address to listen on (overrides WARMING_LISTEN; default 0.0.0.0:4000).
        #[arg(long)]
        listen: Option<String>,
        /// TOML configuration file (also WARMING_CONFIG); environment variables win over it.
        #[arg(long, env = "WARMING_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds the whole shutdown may take: running requests and in-flight
        /// keys get this long (less a short reserve for saving unfinished work
        /// and flushing events), then the process exits.
        #[arg(long, default_value_t = 10)]
        grace: u64,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "WARMING_LOG_JSON")]
        log_json: bool,
    },
    /// Print the effective configuration (after file and environment) and exit.
    CheckConfig {
        #[arg(long, env = "WARMING_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Replay an access trace in virtual time and compare warming modes.
    Replay(Box<warming::replay::cli::ReplayArgs>),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            config,
            grace,
            log_json,
        } => {
            let filter =
                EnvFilter::try_from_env("WARMING_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            if log_json {
                tracing_subscriber::fmt()
                    .json()
                    .with_env_filter(filter)
                    .init();
            } else {
                tracing_subscriber::fmt().with_env_filter(filter).init();
            }
            match serve(listen, config, Duration::from_secs(grace)).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("warming: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Replay(args) => warming::replay::cli::main(*args),
        Command::CheckConfig { config } => match Settings::load(config.as_deref(), &ProcessEnv) {
            Ok(s) => {
                println!("{:#?}", s);
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

async fn serve(
    listen: Option<String>,
    config: Option<PathBuf>,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut settings = Settings::load(config.as_deref(), &ProcessEnv)?;
    if let Some(l) = listen {
        settings.service.listen = l;
    }
    match &settings.service.origin_url {
        Some(url) => tracing::info!(origin = %url, "origin"),
        None => tracing::warn!(
            "WARMING_ORIGIN_URL is not set: using the built-in demo origin (synthetic values)"
        ),
    }
    let listener = tokio::net::TcpListener::bind(&settings.service.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.service.listen))?;
    let server = Server::start(settings, listener).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

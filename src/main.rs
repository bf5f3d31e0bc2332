//! The `tessera` command: parses the command line and hands over to `tessera-api`.

use clap::{Parser, Subcommand};
use tessera_api::config::{DatabaseArgs, LimitArgs, ServeConfig};
use tessera_api::{Application, startup};
use tracing_subscriber::EnvFilter;

/// Single-use tokens and sliding-window rate limits shared by every worker of a web
/// deployment.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeConfig),
    /// Apply pending database migrations (idempotent).
    Migrate(DatabaseArgs),
    /// Delete expired tokens now, in bounded batches.
    Purge {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Rows one statement deletes at most.
        #[arg(long, env = "TESSERA_PURGE_BATCH", default_value_t = tessera_store::DEFAULT_PURGE_BATCH)]
        purge_batch: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(config) => {
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate(database) => {
            let db = startup::open_database(&database).await?;
            let n = startup::migrate(&db).await?;
            println!("{n} migration(s) applied; the schema is up to date");
        }
        Command::Purge {
            database,
            limits,
            purge_batch,
        } => {
            let db = startup::open_database(&database).await?;
            let (tokens, limiter) =
                startup::open_stores(db, &database, limits.policies()?, purge_batch).await?;
            let (tokens, events) = startup::purge(&tokens, &limiter).await?;
            println!("{{\"tokens\":{tokens},\"events\":{events}}}");
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
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
    tracing::info!("shutting down: finishing requests in flight");
}

//! The `kafscale` command: parses configuration, sets up logging and runs one of the modes.
//! All behaviour lives in the tier libraries; this binary only wires them together.

mod admin;
mod admin_api;
mod admin_cli;
mod args;
mod authz;
mod cost;
mod gateway;
mod http;
mod indexer;
mod listeners;
mod sasl;
mod standalone;
mod stores;
mod telemetry;
mod tiers;
mod tls;

use clap::{Parser, Subcommand};
use gateway::GatewayRole;

/// jemalloc instead of glibc's malloc: the request path allocates and frees many buffers of
/// 128 KiB to a few MiB (request frames, fetch ranges, object-store blocks). glibc raises its
/// mmap threshold after the first such buffer is freed, so later ones come from per-thread
/// heaps that are seldom trimmed: in tests/e2e/test_flood.py the resident memory of a server
/// whose live buffers were bounded near 250 MiB reached 450-560 MiB and stayed there after the
/// flood. jemalloc returns freed pages to the kernel within `dirty_decay_ms` (1 s, from a
/// background thread; `.cargo/config.toml`), so resident memory follows what is in use.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kafscale",
    version,
    about = "Kafka-compatible streaming on object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every tier in one process on local disk (embedded object and metadata stores).
    Standalone(standalone::StandaloneArgs),
    /// Run an ingest gateway (the produce tier's Service) on S3 and DynamoDB.
    Ingest(gateway::GatewayArgs),
    /// Run a fetch gateway (the consume tier's Service) on S3 and DynamoDB.
    Fetch(gateway::GatewayArgs),
    /// Run an indexer replica (sequencer for its shards) on DynamoDB.
    Indexer(indexer::IndexerProcessArgs),
    /// Cluster administration: storage setup (init) and the admin API's commands.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// What the cluster's traffic costs per GiB produced, from its request counters.
    Cost(cost::CostArgs),
}

impl Command {
    /// The `role` label of the process's metrics (`None`: a one-shot command, no `/metrics`).
    fn metrics_role(&self) -> Option<&'static str> {
        match self {
            Command::Standalone(_) => Some("standalone"),
            Command::Ingest(_) => Some("ingest"),
            Command::Fetch(_) => Some("fetch"),
            Command::Indexer(_) => Some("indexer"),
            Command::Admin(_) | Command::Cost(_) => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let role = cli.command.metrics_role();
    let telemetry = telemetry::init(
        &cli.telemetry,
        role.unwrap_or("admin"),
        runtime.handle().clone(),
    )?;
    // Before any component is built: components take their metric handles when built.
    if let Some(role) = role {
        kafscale_shared::metrics::install(role)?;
    }
    let outcome = runtime.block_on(async {
        let shutdown = shutdown_signal();
        match cli.command {
            Command::Standalone(args) => standalone::run(args, shutdown).await,
            Command::Ingest(args) => gateway::run(GatewayRole::Ingest, args, shutdown).await,
            Command::Fetch(args) => gateway::run(GatewayRole::Fetch, args, shutdown).await,
            Command::Indexer(args) => indexer::run(args, shutdown).await,
            Command::Admin(command) => admin::run(command, shutdown).await,
            Command::Cost(args) => cost::run(args).await,
        }
    });
    // The runtime still runs here: the last exports are spawned onto it.
    telemetry.shutdown();
    outcome
}

/// How long a process may take to stop after SIGTERM (flush, drain connections, release
/// leases) before it exits anyway.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for the tasks of a stopping process, at most [`SHUTDOWN_DEADLINE`].
async fn drain_within(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let drain = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            deadline = ?SHUTDOWN_DEADLINE,
            "shutdown did not finish in time; exiting anyway"
        );
    }
}

/// A token cancelled on SIGTERM or SIGINT.
fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

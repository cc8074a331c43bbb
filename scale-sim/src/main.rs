//! `kafscale-scale-sim`: runs the scale simulation (see the library's docs) once per
//! combination of `--gateways`, `--indexers` and `--shards`, and prints one table row per
//! run (or one JSON object per line with `--json`). Every run is bounded by `--seconds` and
//! checked for lost acknowledged batches; the exit status is 1 if any run lost one.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use kafscale_scale_sim::{Report, SimConfig, run};
use kafscale_shared::simulated_latency::{KeyThroughput, MetaStoreLatency, ObjectStoreLatency};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ObjectStorePreset {
    S3Standard,
    S3Express,
}

#[derive(Debug, Parser)]
#[command(about = "Many gateways and indexers in one process against simulated S3 and DynamoDB")]
struct Args {
    /// Ingest gateways, one run per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    gateways: Vec<usize>,
    /// Indexers, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    indexers: Vec<usize>,
    /// Indexer shards, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    shards: Vec<u32>,
    #[arg(long, default_value_t = 8)]
    topics: usize,
    #[arg(long, default_value_t = 8)]
    partitions_per_topic: i32,
    #[arg(long, default_value_t = 8)]
    producers_per_gateway: usize,
    /// MiB a second offered to each gateway.
    #[arg(long, default_value_t = 1.0)]
    mib_per_gateway: f64,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    #[arg(long, default_value_t = 16)]
    records_per_batch: usize,
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// How long producers send in each run.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    #[arg(long, default_value_t = 150)]
    flush_interval_ms: u64,
    /// 0: no upload hedging.
    #[arg(long, default_value_t = 100)]
    upload_hedge_ms: u64,
    #[arg(long, value_enum, default_value = "s3-standard")]
    object_store: ObjectStorePreset,
    /// Write units a second one DynamoDB partition key may take (DynamoDB: 1000).
    #[arg(long, default_value_t = 1000.0)]
    key_write_units: f64,
    /// Partition keys never throttled (what-if runs), e.g. `lease,seg`.
    #[arg(long, value_delimiter = ',')]
    unlimited_keys: Vec<String>,
    /// Indexers commit to the shard log (`kafscale --shard-log`) instead of a transaction.
    #[arg(long)]
    shard_log: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn config(&self, gateways: usize, indexers: usize, shards: u32) -> SimConfig {
        SimConfig {
            gateways,
            indexers,
            shards,
            topics: self.topics,
            partitions_per_topic: self.partitions_per_topic,
            producers_per_gateway: self.producers_per_gateway,
            rate_per_gateway: self.mib_per_gateway * 1024.0 * 1024.0,
            record_bytes: self.record_bytes,
            records_per_batch: self.records_per_batch,
            max_in_flight: self.max_in_flight,
            duration: Duration::from_secs_f64(self.seconds.max(0.0)),
            flush_interval: Duration::from_millis(self.flush_interval_ms.max(1)),
            upload_hedge_after: (self.upload_hedge_ms > 0)
                .then(|| Duration::from_millis(self.upload_hedge_ms)),
            object_store: match self.object_store {
                ObjectStorePreset::S3Standard => ObjectStoreLatency::S3_STANDARD,
                ObjectStorePreset::S3Express => ObjectStoreLatency::S3_EXPRESS,
            },
            meta_store: MetaStoreLatency {
                per_key: Some(KeyThroughput {
                    write_units_per_sec: self.key_write_units,
                    ..KeyThroughput::DYNAMODB
                }),
                ..MetaStoreLatency::DYNAMODB
            },
            unlimited_keys: self.unlimited_keys.clone(),
            shard_log: self.shard_log,
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kafscale-scale-sim: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    runtime.block_on(run_all(&args))
}

async fn run_all(args: &Args) -> std::process::ExitCode {
    if !args.json {
        println!("{}", Report::header());
    }
    let mut lost = false;
    for &shards in &args.shards {
        for &indexers in &args.indexers {
            for &gateways in &args.gateways {
                match run(&args.config(gateways, indexers, shards)).await {
                    Ok(report) => {
                        lost |= report.lost > 0 || report.overlapping > 0;
                        print(args, &report);
                    }
                    Err(e) => {
                        eprintln!("kafscale-scale-sim: {e}");
                        return std::process::ExitCode::from(2);
                    }
                }
            }
        }
    }
    if lost {
        eprintln!("kafscale-scale-sim: an acknowledged batch was lost or duplicated");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

fn print(args: &Args, report: &Report) {
    if args.json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("kafscale-scale-sim: {e}"),
        }
    } else {
        println!("{}", report.row());
    }
}

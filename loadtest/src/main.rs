//! `kafscale-loadtest`: a Kafka load generator that speaks the protocol itself.
//!
//! It is its own client (on the `kafka-protocol` crate) rather than librdkafka through
//! `rdkafka`: no C library to build in CI, and full control over what is measured — latency
//! counted from when each record was due (not when a busy client got round to it), requests
//! pipelined up to a known bound, and the exact offset of every acknowledged record, which the
//! exactly-once check needs. Real clients are exercised by the e2e tests; this tool measures.
//!
//! A run: create the topic if needed, note where each partition ends, start the consumers
//! there (with `--consume`), produce `--records` records (or for `--duration-s`) from
//! `--producers` producers, wait until every acknowledged record arrived (bounded), check that
//! each was consumed exactly once at its acknowledged offset, and report. It always stops by
//! itself. The exit status is 1 if the check found a loss, duplicate or misplaced record.
//! With `--plot FILE.png` it also draws the latency percentile spectrum (`plot.rs`), after the
//! JSON and the summary; a plot that cannot be drawn makes the exit status 3 (see `EXIT_HELP`).

mod cluster;
mod connection;
mod consume;
mod error;
mod payload;
mod plot;
mod produce;
mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kafka_protocol::records::Compression;
use tokio::time::Instant;

use crate::consume::{ConsumeProgress, run_consumer};
use crate::error::LoadtestError;
use crate::produce::{ProducerConfig, new_histogram, run_producer};
use crate::report::{Percentiles, Report, check_delivery};

#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Acks {
    All,
    #[value(name = "1")]
    #[serde(rename = "1")]
    One,
    #[value(name = "0")]
    #[serde(rename = "0")]
    Zero,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The exit status when the run passed but its `--plot` could not be written.
const EXIT_PLOT_FAILED: i32 = 3;

const EXIT_HELP: &str = "\
Exit status:
  0  the run passed (and the --plot PNG, if asked for, was written)
  1  the run could not be done (an argument out of range included), or acknowledged records
     were lost, duplicated or misplaced
  2  the command line could not be parsed
  3  the run passed and its JSON and summary were written, but the --plot PNG could not be
     (no font found, say: the error names what to do)";

/// Produce (and optionally consume) a bounded load against a Kafka bootstrap address and
/// report throughput, latency percentiles and lost or duplicated records.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "kafscale-loadtest", version, after_help = EXIT_HELP)]
struct Args {
    /// Kafka bootstrap address (host:port).
    #[arg(long)]
    bootstrap: String,
    /// Topic to produce to (created with --partitions if missing).
    #[arg(long)]
    topic: String,
    /// Records to produce in total (across producers).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Bytes per record value (at least 28: the record's own stamp).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Producer tasks, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer tasks (with --consume); partition p goes to consumer p % consumers.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    #[arg(long, value_enum, default_value = "none")]
    compression: Codec,
    /// How long a producer waits to fill a batch (milliseconds).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Largest record batch per partition; a full batch is sent at once (librdkafka's
    /// `batch.size`).
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: usize,
    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Target records per second over all producers; flat out if not given.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop producing after this many seconds even if --records are not all sent.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Keys from this many distinct values (partition by key hash); no keys if not given.
    #[arg(long)]
    keys: Option<u64>,
    /// Consume concurrently and check exactly-once delivery at the acknowledged offsets.
    #[arg(long)]
    consume: bool,
    /// With --consume: start the consumers only once producing has ended, so they read
    /// everything produced as a catch-up read (consume MiB/s is then the catch-up rate).
    #[arg(long, requires = "consume")]
    catch_up: bool,
    /// How long setting the run up (topic, end offsets) retries a lost connection or a
    /// retriable refusal before giving up (seconds).
    #[arg(long, default_value_t = 10)]
    setup_timeout_s: u64,
    /// How long to wait for the last records after producing ends (seconds).
    #[arg(long, default_value_t = 60)]
    consume_timeout_s: u64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the latency percentile spectrum (produce and end-to-end latency against
    /// p0 .. p90 .. p99 .. p99.9 ..) as a 1200x800 PNG to this file, after the JSON and the
    /// summary. Its text needs a TrueType font (--plot-font); without one the run still
    /// reports, then exits with status 3.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// TrueType font for the --plot text. Default: the first that exists of DejaVuSans.ttf
    /// under /usr/share/fonts/truetype/dejavu, /usr/share/fonts/dejavu or
    /// /usr/share/fonts/TTF, or LiberationSans-Regular.ttf under
    /// /usr/share/fonts/truetype/liberation (Debian: apt-get install fonts-dejavu-core).
    #[arg(long, value_name = "FILE.ttf", requires = "plot")]
    plot_font: Option<PathBuf>,
}

fn compression(c: Codec) -> Compression {
    match c {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    }
}

/// The plot's title: the run's key configuration.
fn plot_title(args: &Args) -> String {
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map(|v| v.get_name().to_string()).unwrap_or_default()
    };
    let pace = match args.rate {
        Some(r) => format!("rate {r}/s"),
        None => "flat out".to_string(),
    };
    let mut title = format!(
        "kafscale-loadtest: {} records of {} B, {} partition{}, acks={}, {pace}, {} producer{}, compression {}",
        args.records,
        args.record_size,
        args.partitions,
        if args.partitions == 1 { "" } else { "s" },
        name(args.acks.to_possible_value()),
        args.producers,
        if args.producers == 1 { "" } else { "s" },
        name(args.compression.to_possible_value()),
    );
    if let Some(d) = args.duration_s {
        title.push_str(&format!(", at most {d}s"));
    }
    title
}

/// Draws `--plot` (if given) from the run's histograms; false if it could not be.
fn write_plot(
    args: &Args,
    font: Option<Result<plot::Font, LoadtestError>>,
    latencies: &Latencies,
) -> bool {
    let (Some(path), Some(font)) = (&args.plot, font) else {
        return true;
    };
    let mut series = vec![plot::Series {
        name: "produce (due to acknowledged)",
        latency_us: &latencies.produce_us,
    }];
    if args.consume {
        series.push(plot::Series {
            name: "end-to-end (due to consumed)",
            latency_us: &latencies.e2e_us,
        });
    }
    match font.and_then(|f| plot::write_png(path, &f, &plot_title(args), &series)) {
        Ok(()) => {
            println!("latency plot: {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("error: --plot {}: {e}", path.display());
            false
        }
    }
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / (1024.0 * 1024.0) / seconds
    } else {
        0.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAFSCALE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.records > 0, "--records must be at least 1");
    anyhow::ensure!(
        args.producers > 0 && args.consumers > 0,
        "--producers and --consumers must be at least 1"
    );
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    if let Some(path) = &args.plot {
        anyhow::ensure!(
            path.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png")),
            "--plot {}: the file name must end in .png",
            path.display()
        );
    }
    // The font is read up front so that a missing one is said before a long run, not only
    // after it; the run goes on either way (the plot is the least of its results).
    let font = args
        .plot
        .as_ref()
        .map(|_| plot::load_font(args.plot_font.as_deref(), plot::DEFAULT_FONTS));
    if let Some(Err(e)) = &font {
        eprintln!(
            "warning: --plot: {e}. The run goes on; it will exit with status {EXIT_PLOT_FAILED} after writing its results."
        );
    }
    let (report, latencies) = run(&args).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    print_summary(&report);
    let plotted = write_plot(&args, font, &latencies);
    let failed = report.consumed
        && (report.lost > 0 || report.duplicates > 0 || report.offset_mismatches > 0);
    if failed {
        eprintln!("FAILED: acknowledged records were lost, duplicated or misplaced");
        std::process::exit(1);
    }
    if !plotted {
        std::process::exit(EXIT_PLOT_FAILED);
    }
    Ok(())
}

/// The run's latency histograms (microseconds), kept for `--plot`.
struct Latencies {
    produce_us: hdrhistogram::Histogram<u64>,
    e2e_us: hdrhistogram::Histogram<u64>,
}

async fn run(args: &Args) -> anyhow::Result<(Report, Latencies)> {
    let (layout, start_offsets) = cluster::prepare_run(
        &args.bootstrap,
        &args.topic,
        args.partitions,
        Duration::from_secs(args.setup_timeout_s),
    )
    .await
    .context("preparing the topic")?;
    let layout = Arc::new(layout);
    let run_id: u32 = uuid::Uuid::new_v4().as_u128() as u32;

    let consumed = Arc::new(AtomicU64::new(0));
    let reached: Arc<Vec<AtomicI64>> =
        Arc::new(start_offsets.iter().map(|o| AtomicI64::new(*o)).collect());
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let start_consumers = || -> Vec<_> {
        (0..args.consumers)
            .map(|i| {
                tokio::spawn(run_consumer(
                    i,
                    args.consumers,
                    layout.clone(),
                    run_id,
                    start_offsets.clone(),
                    ConsumeProgress {
                        consumed: consumed.clone(),
                        reached: reached.clone(),
                    },
                    stop_consumers.clone(),
                ))
            })
            .collect()
    };
    let mut consumers: Vec<_> = if args.consume && !args.catch_up {
        start_consumers()
    } else {
        Vec::new()
    };

    let produced = Arc::new(AtomicU64::new(0));
    let per_producer = args.records.div_ceil(args.producers as u64);
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|i| {
            let records = per_producer.min(args.records.saturating_sub(per_producer * i as u64));
            let cfg = ProducerConfig {
                run: run_id,
                records,
                record_size: args.record_size,
                acks: match args.acks {
                    Acks::All => -1,
                    Acks::One => 1,
                    Acks::Zero => 0,
                },
                compression: compression(args.compression),
                linger: Duration::from_millis(args.linger_ms),
                batch_bytes: args.batch_bytes.max(1),
                rate: args.rate.map(|r| r / args.producers as f64),
                duration: args.duration_s.map(Duration::from_secs_f64),
                max_in_flight: args.max_in_flight,
                key_space: args.keys,
            };
            tokio::spawn(run_producer(
                i as u32,
                layout.clone(),
                cfg,
                produced.clone(),
            ))
        })
        .collect();
    let progress = tokio::spawn(show_progress(
        args.records,
        produced.clone(),
        consumed.clone(),
        args.consume,
    ));

    let mut acked_offsets = Vec::with_capacity(producers.len());
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    let mut produce_latency = new_histogram();
    let mut first_error = None;
    for p in producers {
        let r = p.await.context("producer task")?;
        sent += r.sent;
        acked += r.acked;
        errors += r.errors;
        produce_latency.add(&r.latency_us).ok();
        first_error = first_error.or(r.first_error);
        acked_offsets.push(r.offsets);
    }
    let produce_seconds = started.elapsed().as_secs_f64();
    if args.consume && args.catch_up {
        consumers = start_consumers();
    }

    // Wait (bounded) until every acknowledged record, or with acks=0 every sent one, arrived.
    let expected = if matches!(args.acks, Acks::Zero) {
        sent
    } else {
        acked
    };
    if args.consume {
        let deadline = Instant::now() + Duration::from_secs(args.consume_timeout_s);
        // Everything acknowledged lies below the partitions' end offsets now (if they can be
        // read; else the count of records alone decides).
        let ends = cluster::end_offsets(&layout).await.ok();
        let all_read = || {
            consumed.load(Ordering::Relaxed) >= expected
                && ends.as_ref().is_none_or(|ends| {
                    ends.iter()
                        .zip(reached.iter())
                        .all(|(end, at)| at.load(Ordering::Relaxed) >= *end)
                })
        };
        while !all_read() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_consumers.store(true, Ordering::Relaxed);
    }
    progress.abort();
    let mut seen = Vec::new();
    let mut consume_bytes = 0u64;
    let mut e2e = new_histogram();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut consume_error = None;
    for c in consumers {
        let r = c.await.context("consumer task")?;
        seen.extend(r.seen);
        consume_bytes += r.bytes;
        e2e.add(&r.e2e_us).ok();
        first = match (first, r.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = match (last, r.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        consume_error = consume_error.or(r.error);
    }
    let delivery = check_delivery(&acked_offsets, &seen);
    let consume_seconds = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    // Throughput counts acknowledged records (with acks=0: sent ones).
    let produced_bytes = expected * args.record_size as u64;
    let report = Report {
        config: serde_json::to_value(args)?,
        records_sent: sent,
        records_acked: acked,
        produce_errors: errors,
        first_produce_error: first_error,
        produce_seconds,
        produce_records_per_s: expected as f64 / produce_seconds.max(1e-9),
        produce_mib_per_s: mib_per_s(produced_bytes, produce_seconds),
        produce_latency_ms: Percentiles::of(&produce_latency),
        consumed: args.consume,
        records_consumed: delivery.consumed,
        consume_seconds,
        consume_records_per_s: delivery.consumed as f64 / consume_seconds.max(1e-9),
        consume_mib_per_s: mib_per_s(consume_bytes, consume_seconds),
        e2e_latency_ms: Percentiles::of(&e2e),
        lost: delivery.lost,
        duplicates: delivery.duplicates,
        offset_mismatches: delivery.offset_mismatches,
        unacked_consumed: delivery.unacked_consumed,
        consume_error,
    };
    let latencies = Latencies {
        produce_us: produce_latency,
        e2e_us: e2e,
    };
    Ok((report, latencies))
}

/// A one-line progress display on a terminal (nothing when stderr is not one).
async fn show_progress(
    total: u64,
    produced: Arc<AtomicU64>,
    consumed: Arc<AtomicU64>,
    consume: bool,
) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = produced.load(Ordering::Relaxed);
        let width = 30usize;
        let filled = ((p as f64 / total.max(1) as f64) * width as f64) as usize;
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        let rate = p as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let c = if consume {
            format!(" consumed {}", consumed.load(Ordering::Relaxed))
        } else {
            String::new()
        };
        eprint!("\r[{bar}] produced {p}/{total} ({rate:.0}/s){c}   ");
    }
}

fn print_summary(r: &Report) {
    eprintln!();
    println!(
        "produced {} of {} records acknowledged ({} errors) in {:.2}s: {:.0} records/s, {:.1} MiB/s",
        r.records_acked,
        r.records_sent,
        r.produce_errors,
        r.produce_seconds,
        r.produce_records_per_s,
        r.produce_mib_per_s
    );
    println!("produce latency ms: {}", r.produce_latency_ms);
    if r.consumed {
        println!(
            "consumed {} records in {:.2}s: {:.1} MiB/s; lost {}, duplicates {}, offset mismatches {}, unacknowledged consumed {}",
            r.records_consumed,
            r.consume_seconds,
            r.consume_mib_per_s,
            r.lost,
            r.duplicates,
            r.offset_mismatches,
            r.unacked_consumed
        );
        println!("end-to-end latency ms: {}", r.e2e_latency_ms);
    }
    if let Some(e) = &r.first_produce_error {
        println!("first produce error: {e}");
    }
}

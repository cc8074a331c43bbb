//! Prometheus metrics of every kafscale process: the one registry, the name of every metric,
//! and the `/metrics` rendering.
//!
//! Why `metrics` + `metrics-exporter-prometheus` rather than `prometheus-client`: the exporter
//! writes the Prometheus text format (0.0.4), which every Prometheus and `promtool check
//! metrics` read; `prometheus-client` writes only OpenMetrics, whose counter families
//! (`# TYPE x counter` over samples named `x_total`) Debian 12's promtool 2.42 misreads and
//! rejects. The facade's handles ([`metrics::Counter`], [`metrics::Gauge`],
//! [`metrics::Histogram`]) are `Arc`s over atomics, resolved once when a component is built,
//! so a hot-path update is one relaxed atomic add: no lock, no lookup, no allocation.
//!
//! Ownership: every metric name and its help text is declared here ([`CATALOG`]), and only
//! here; the tier crates update them through handles taken with the `metrics` macros under
//! these names. Values that already live in a component as atomics (the store request
//! counters, consumer lag, buffer occupancy) are not copied into a second registry: they are
//! [`ScrapeSource`]s, read at scrape time and written into the same page by [`TextWriter`].
//!
//! Before [`install`] runs, the `metrics` macros hand out no-op handles: unit tests and
//! benchmarks pay nothing, and the binary installs the recorder before it builds any
//! component. Label cardinality is bounded: API keys, Kafka error codes, store operations,
//! cache names and topics (as many as the cluster has); consumer lag is per group and
//! partition, only for the groups this process coordinates.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of Prometheus metric a [`MetricDef`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: name, kind, label names and meaning (the source of the docs table).
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

// --- names -------------------------------------------------------------------------------
pub const BUILD_INFO: &str = "kafscale_build_info";
pub const CONNECTIONS_ACCEPTED: &str = "kafscale_connections_accepted_total";
pub const CONNECTIONS_CLOSED: &str = "kafscale_connections_closed_total";
pub const CONNECTIONS_OPEN: &str = "kafscale_connections_open";
pub const TLS_HANDSHAKE_FAILURES: &str = "kafscale_tls_handshake_failures_total";
pub const TLS_CERTIFICATE_RELOADS: &str = "kafscale_tls_certificate_reloads_total";
pub const TLS_CERTIFICATE_RELOAD_FAILURES: &str = "kafscale_tls_certificate_reload_failures_total";
pub const SASL_AUTHENTICATIONS: &str = "kafscale_sasl_authentications_total";
pub const REQUESTS: &str = "kafscale_requests_total";
pub const AUTHORIZATION_DENIALS: &str = "kafscale_authorization_denials_total";
pub const REQUEST_DURATION: &str = "kafscale_request_duration_seconds";
pub const RESPONSE_ERRORS: &str = "kafscale_response_errors_total";
pub const PRODUCE_RECORDS: &str = "kafscale_produce_records_total";
pub const PRODUCE_BYTES: &str = "kafscale_produce_bytes_total";
pub const PRODUCE_DURATION: &str = "kafscale_produce_duration_seconds";
pub const PRODUCE_BUFFER_BYTES: &str = "kafscale_produce_buffer_bytes";
pub const SEGMENT_FLUSHES: &str = "kafscale_segment_flushes_total";
pub const SEGMENT_SIZE: &str = "kafscale_segment_size_bytes";
pub const SEGMENT_UPLOAD_DURATION: &str = "kafscale_segment_upload_duration_seconds";
pub const SEGMENT_UPLOADS_HEDGED: &str = "kafscale_segment_uploads_hedged_total";
pub const SEGMENT_COMMIT_DURATION: &str = "kafscale_segment_commit_duration_seconds";
pub const INDEXER_COMMIT_DURATION: &str = "kafscale_indexer_commit_duration_seconds";
pub const INDEXER_QUEUE_DEPTH: &str = "kafscale_indexer_commit_queue_depth";
pub const INDEXER_COMMITS: &str = "kafscale_indexer_commits_total";
pub const INDEXER_BATCHES: &str = "kafscale_indexer_batches_total";
pub const INDEXER_RECORDS: &str = "kafscale_indexer_records_total";
pub const INDEXER_LOG_WRITES: &str = "kafscale_indexer_log_writes_total";
pub const INDEXER_LOG_ITEMS_WRITTEN: &str = "kafscale_indexer_log_items_written_total";
pub const INDEXER_SHARDS_OWNED: &str = "kafscale_indexer_shards_owned";
pub const INDEXER_FOLD_BACKLOG: &str = "kafscale_indexer_fold_backlog_items";
pub const INDEXER_FOLD_FAILURES: &str = "kafscale_indexer_fold_failures_total";
pub const INDEXER_LEASES_ACQUIRED: &str = "kafscale_indexer_lease_acquisitions_total";
pub const INDEXER_LEASES_LOST: &str = "kafscale_indexer_lease_losses_total";
pub const INDEXER_FENCED: &str = "kafscale_indexer_fenced_writes_total";
pub const INDEXER_INTERNAL_REFUSED: &str = "kafscale_indexer_internal_requests_refused_total";
pub const INDEXER_RETENTION_ENTRIES: &str = "kafscale_indexer_retention_entries_removed_total";
pub const INDEXER_RETENTION_BYTES: &str = "kafscale_indexer_retention_bytes_removed_total";
pub const INDEXER_RETENTION_LAST_PASS: &str =
    "kafscale_indexer_retention_last_pass_timestamp_seconds";
pub const INDEXER_PRODUCERS_EXPIRED: &str = "kafscale_indexer_producer_states_expired_total";
pub const FAULTS_INJECTED: &str = "kafscale_faults_injected_total";
pub const TOPIC_RETAINED_BYTES: &str = "kafscale_topic_retained_bytes";
pub const TOPIC_RETAINED_RECORDS: &str = "kafscale_topic_retained_records";
pub const GC_SEGMENTS_DELETED: &str = "kafscale_gc_segments_deleted_total";
pub const GC_ORPHANS_DELETED: &str = "kafscale_gc_orphans_deleted_total";
pub const GC_BYTES_DELETED: &str = "kafscale_gc_bytes_deleted_total";
pub const GC_RECORDS_DELETED: &str = "kafscale_gc_commit_records_deleted_total";
pub const GC_TOPICS_PURGED: &str = "kafscale_gc_deleted_topics_purged_total";
pub const GC_LAST_PASS: &str = "kafscale_gc_last_pass_timestamp_seconds";
pub const FETCH_REQUESTS: &str = "kafscale_fetch_requests_total";
pub const FETCH_BYTES: &str = "kafscale_fetch_bytes_total";
pub const FETCH_DURATION: &str = "kafscale_fetch_duration_seconds";
pub const FETCH_LONG_POLLS: &str = "kafscale_fetch_long_polls_waiting";
pub const FETCH_THROTTLED: &str = "kafscale_fetch_throttled_total";
pub const CACHE_HITS: &str = "kafscale_cache_hits_total";
pub const CACHE_MISSES: &str = "kafscale_cache_misses_total";
pub const CACHE_BYTES: &str = "kafscale_cache_bytes";
pub const GROUPS: &str = "kafscale_consumer_groups";
pub const GROUP_MEMBERS: &str = "kafscale_consumer_group_members";
pub const GROUP_REBALANCES: &str = "kafscale_consumer_group_rebalances_total";
pub const GROUP_LAG: &str = "kafscale_consumer_group_lag";
pub const OBJECT_STORE_REQUESTS: &str = "kafscale_object_store_requests_total";
pub const OBJECT_STORE_ERRORS: &str = "kafscale_object_store_errors_total";
pub const OBJECT_STORE_BYTES: &str = "kafscale_object_store_bytes_total";
pub const OBJECT_STORE_DURATION: &str = "kafscale_object_store_request_duration_seconds";
pub const META_STORE_REQUESTS: &str = "kafscale_meta_store_requests_total";
pub const META_STORE_ERRORS: &str = "kafscale_meta_store_errors_total";
pub const META_STORE_CONDITION_FAILURES: &str = "kafscale_meta_store_condition_failures_total";
pub const META_STORE_READ_UNITS: &str = "kafscale_meta_store_read_units_total";
pub const META_STORE_WRITE_UNITS: &str = "kafscale_meta_store_write_units_total";
pub const META_STORE_FAMILY_WRITE_UNITS: &str = "kafscale_meta_store_item_write_units_total";
pub const META_STORE_DURATION: &str = "kafscale_meta_store_request_duration_seconds";

use Kind::{Counter, Gauge, Histogram};

/// Every metric a kafscale process can export.
pub const CATALOG: &[MetricDef] = &[
    def(
        BUILD_INFO,
        Gauge,
        &["version", "role"],
        "Always 1: the version and role of this process.",
    ),
    def(
        CONNECTIONS_ACCEPTED,
        Counter,
        &["listener"],
        "Kafka connections accepted.",
    ),
    def(
        CONNECTIONS_CLOSED,
        Counter,
        &["listener"],
        "Kafka connections closed.",
    ),
    def(
        CONNECTIONS_OPEN,
        Gauge,
        &["listener"],
        "Kafka connections open now.",
    ),
    def(
        TLS_HANDSHAKE_FAILURES,
        Counter,
        &["listener", "protocol"],
        "TLS handshakes that failed or timed out (the connection was closed).",
    ),
    def(
        TLS_CERTIFICATE_RELOADS,
        Counter,
        &["listener", "protocol"],
        "Server certificates loaded anew after their files changed.",
    ),
    def(
        TLS_CERTIFICATE_RELOAD_FAILURES,
        Counter,
        &["listener", "protocol"],
        "Changed certificate files that could not be loaded (the previous certificate stays).",
    ),
    def(
        SASL_AUTHENTICATIONS,
        Counter,
        &["listener", "mechanism", "outcome"],
        "SASL authentications and re-authentications on the Kafka listener, by mechanism (unsupported: a handshake naming a mechanism that is not enabled; none: a connection that did not authenticate in time) and outcome (success, failure, timeout).",
    ),
    def(
        REQUESTS,
        Counter,
        &["listener", "api"],
        "Kafka requests received, by API.",
    ),
    def(
        AUTHORIZATION_DENIALS,
        Counter,
        &["listener", "api"],
        "Authorization checks that refused a resource of a request (ACLs on), by API.",
    ),
    def(
        REQUEST_DURATION,
        Histogram,
        &["listener", "api"],
        "Time from a Kafka request read to its response ready, by API.",
    ),
    def(
        RESPONSE_ERRORS,
        Counter,
        &["listener", "api", "error"],
        "Kafka error codes other than NONE in responses: top-level, and per partition for Produce, Fetch, ListOffsets, OffsetCommit and OffsetFetch.",
    ),
    def(
        PRODUCE_RECORDS,
        Counter,
        &["topic"],
        "Records accepted into the produce buffer.",
    ),
    def(
        PRODUCE_BYTES,
        Counter,
        &["topic"],
        "Record-batch bytes accepted into the produce buffer; its rate per pod is the ingest tier's scaling signal.",
    ),
    def(
        PRODUCE_DURATION,
        Histogram,
        &[],
        "Time from a Produce request in to its answer out (upload and commit included).",
    ),
    def(
        PRODUCE_BUFFER_BYTES,
        Gauge,
        &[],
        "Bytes of produce requests held in the buffer, uploading or committing.",
    ),
    def(
        SEGMENT_FLUSHES,
        Counter,
        &[],
        "Segments sealed from the produce buffer.",
    ),
    def(
        SEGMENT_SIZE,
        Histogram,
        &[],
        "Size of sealed segment objects.",
    ),
    def(
        SEGMENT_UPLOAD_DURATION,
        Histogram,
        &[],
        "Time to upload one segment object (hedging included).",
    ),
    def(
        SEGMENT_UPLOADS_HEDGED,
        Counter,
        &[],
        "Segment uploads raced by a second upload because the first was slow.",
    ),
    def(
        SEGMENT_COMMIT_DURATION,
        Histogram,
        &[],
        "Time for one shard's commit of a segment as the gateway sees it (retries included).",
    ),
    def(
        INDEXER_COMMIT_DURATION,
        Histogram,
        &[],
        "Time of one commit in the indexer, waiting for its shard included.",
    ),
    def(
        INDEXER_QUEUE_DEPTH,
        Gauge,
        &[],
        "Commits waiting for or inside a shard's lock; the indexer tier's scaling signal.",
    ),
    def(INDEXER_COMMITS, Counter, &[], "Commits sequenced."),
    def(
        INDEXER_FOLD_BACKLOG,
        Gauge,
        &[],
        "Shard-log items above the fold checkpoints of the shards this replica owns, as the last fold pass found them: about the commits of one fold interval; growing means the fold falls behind.",
    ),
    def(
        INDEXER_FOLD_FAILURES,
        Counter,
        &[],
        "Folds of a shard log that failed (retried at the next pass).",
    ),
    def(
        INDEXER_BATCHES,
        Counter,
        &[],
        "Record batches in commits sequenced.",
    ),
    def(
        INDEXER_RECORDS,
        Counter,
        &[],
        "Records in commits sequenced.",
    ),
    def(
        INDEXER_LOG_WRITES,
        Counter,
        &[],
        "Store requests that appended to a shard log and landed.",
    ),
    def(
        INDEXER_LOG_ITEMS_WRITTEN,
        Counter,
        &[],
        "Shard-log items those requests carried (one per commit, or per chunk of a very large one); divided by the requests, the commits grouped per store request.",
    ),
    def(
        INDEXER_SHARDS_OWNED,
        Gauge,
        &[],
        "Shard leases this indexer holds.",
    ),
    def(INDEXER_LEASES_ACQUIRED, Counter, &[], "Shard leases taken."),
    def(
        INDEXER_LEASES_LOST,
        Counter,
        &[],
        "Shard leases lost to another replica (not released).",
    ),
    def(
        INDEXER_FENCED,
        Counter,
        &[],
        "Commit writes refused because the shard lease had moved on.",
    ),
    def(
        INDEXER_INTERNAL_REFUSED,
        Counter,
        &[],
        "Internal calls (commit, DeleteRecords, watermark feed) refused for a missing or wrong internal token.",
    ),
    def(
        INDEXER_RETENTION_ENTRIES,
        Counter,
        &[],
        "Index entries removed by retention (their records are below the log start now).",
    ),
    def(
        INDEXER_RETENTION_BYTES,
        Counter,
        &[],
        "Record-batch bytes of the index entries removed by retention.",
    ),
    def(
        INDEXER_RETENTION_LAST_PASS,
        Gauge,
        &[],
        "Unix time of the last retention pass that ran to its end.",
    ),
    def(
        INDEXER_PRODUCERS_EXPIRED,
        Counter,
        &[],
        "Idempotent-producer states forgotten after producer.id.expiration.ms without a batch.",
    ),
    def(
        FAULTS_INJECTED,
        Counter,
        &["store", "fault"],
        "Faults injected into store requests by --inject-faults (tests only): store object or \
         meta; fault error, timeout, spike or lost_response.",
    ),
    def(
        TOPIC_RETAINED_BYTES,
        Gauge,
        &["topic"],
        "Record-batch bytes the topic's partitions owned by this indexer hold (log start to high \
         watermark), as of the last retention pass; sum over indexers for the topic.",
    ),
    def(
        TOPIC_RETAINED_RECORDS,
        Gauge,
        &["topic"],
        "Records the topic's partitions owned by this indexer hold, as of the last retention pass.",
    ),
    def(
        GC_SEGMENTS_DELETED,
        Counter,
        &[],
        "Committed segment objects deleted because no partition references them any more.",
    ),
    def(
        GC_ORPHANS_DELETED,
        Counter,
        &[],
        "Segment objects deleted that were uploaded but never committed.",
    ),
    def(
        GC_BYTES_DELETED,
        Counter,
        &[],
        "Bytes of the segment objects deleted (committed and orphans).",
    ),
    def(
        GC_RECORDS_DELETED,
        Counter,
        &[],
        "Segment commit records deleted with their segments.",
    ),
    def(
        GC_TOPICS_PURGED,
        Counter,
        &[],
        "Deleted topics whose partition rows, index entries and producer states were removed.",
    ),
    def(
        GC_LAST_PASS,
        Gauge,
        &[],
        "Unix time of the last garbage-collection pass that ran to its end.",
    ),
    def(FETCH_REQUESTS, Counter, &[], "Fetch requests served."),
    def(
        FETCH_BYTES,
        Counter,
        &[],
        "Record-batch bytes returned by Fetch; its rate per pod is the fetch tier's scaling signal.",
    ),
    def(
        FETCH_DURATION,
        Histogram,
        &[],
        "Time to answer a Fetch request, long-poll wait included.",
    ),
    def(
        FETCH_LONG_POLLS,
        Gauge,
        &[],
        "Fetch requests waiting for data (long polls).",
    ),
    def(
        FETCH_THROTTLED,
        Counter,
        &[],
        "Fetch requests answered short with a throttle time: the process's fetch memory was in use.",
    ),
    def(
        CACHE_HITS,
        Counter,
        &["cache"],
        "Cache lookups answered from memory, by cache (range, block, index).",
    ),
    def(
        CACHE_MISSES,
        Counter,
        &["cache"],
        "Cache lookups that went to a store, by cache.",
    ),
    def(CACHE_BYTES, Gauge, &["cache"], "Bytes held by a cache."),
    def(
        GROUPS,
        Gauge,
        &[],
        "Consumer groups this process coordinates.",
    ),
    def(
        GROUP_MEMBERS,
        Gauge,
        &[],
        "Members of the consumer groups this process coordinates.",
    ),
    def(
        GROUP_REBALANCES,
        Counter,
        &[],
        "Rebalances (new generations) of the groups this process coordinates.",
    ),
    def(
        GROUP_LAG,
        Gauge,
        &["group", "topic", "partition"],
        "High watermark minus committed offset, per partition of the groups this process coordinates (read at scrape time).",
    ),
    def(
        OBJECT_STORE_REQUESTS,
        Counter,
        &["op"],
        "Object-store requests sent (each attempt), by operation.",
    ),
    def(
        OBJECT_STORE_ERRORS,
        Counter,
        &["op"],
        "Object-store requests that failed (transport or server error), by operation.",
    ),
    def(
        OBJECT_STORE_BYTES,
        Counter,
        &["op", "direction"],
        "Object-store payload bytes, by operation and direction (in, out).",
    ),
    def(
        OBJECT_STORE_DURATION,
        Histogram,
        &["op"],
        "Object-store request latency, by operation.",
    ),
    def(
        META_STORE_REQUESTS,
        Counter,
        &["op"],
        "Metadata-store requests sent, by operation.",
    ),
    def(
        META_STORE_ERRORS,
        Counter,
        &["op"],
        "Metadata-store requests that failed (not a condition), by operation.",
    ),
    def(
        META_STORE_CONDITION_FAILURES,
        Counter,
        &["op"],
        "Metadata-store writes refused by their condition (contention, fencing), by operation.",
    ),
    def(
        META_STORE_READ_UNITS,
        Counter,
        &["op"],
        "DynamoDB read units the metadata-store reads would consume (strongly consistent: 4 KB each; counted the same way on every backend), by operation.",
    ),
    def(
        META_STORE_WRITE_UNITS,
        Counter,
        &["op"],
        "DynamoDB write units the metadata-store writes would consume (1 KB each, twice per item in a transaction; counted the same way on every backend), by operation.",
    ),
    def(
        META_STORE_FAMILY_WRITE_UNITS,
        Counter,
        &["family"],
        "DynamoDB write units the metadata-store writes would consume, by the kind of item written (shard_log, index, partition, group_lease, ...): where the metadata cost goes.",
    ),
    def(
        META_STORE_DURATION,
        Histogram,
        &["op"],
        "Metadata-store request latency, by operation.",
    ),
];

/// Upper bounds of latency histograms, in seconds: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// Upper bounds of the segment size histogram: 4 KiB to 64 MiB.
const SIZE_BUCKETS: [f64; 8] = [
    4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// Something read at scrape time and written into the page (values a component keeps itself).
#[async_trait::async_trait]
pub trait ScrapeSource: Send + Sync {
    async fn collect(&self, out: &mut TextWriter);
}

/// The installed recorder and the scrape-time sources: what `/metrics` renders.
pub struct Exporter {
    handle: PrometheusHandle,
    sources: Mutex<Vec<Arc<dyn ScrapeSource>>>,
    role: &'static str,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the first) and sets
/// `kafscale_build_info`. Components built afterwards update real metrics.
pub fn install(role: &'static str) -> Result<&'static Exporter, BuildError> {
    if let Some(e) = EXPORTER.get() {
        return Ok(e);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SEGMENT_SIZE.into()), &SIZE_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    spawn_upkeep(handle.clone());
    // Fails only if another recorder is installed: then ours renders an empty registry.
    if ::metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed");
    }
    let exporter = EXPORTER.get_or_init(|| Exporter {
        handle,
        sources: Mutex::new(Vec::new()),
        role,
    });
    describe_all();
    ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role).set(1.0);
    Ok(exporter)
}

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every [`UPKEEP_INTERVAL`]: the exporter
/// queues samples lock-free until then, so without it memory would grow until the next scrape.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no metrics upkeep thread; histograms fold at scrape time");
    }
}

/// The installed exporter, if any.
pub fn exporter() -> Option<&'static Exporter> {
    EXPORTER.get()
}

/// The role this process exports under (`standalone`, `ingest`, `fetch`, `indexer`); the
/// Kafka listener's label, since a process has one.
pub fn role() -> &'static str {
    EXPORTER.get().map_or("none", |e| e.role)
}

/// Adds a scrape-time source (no-op without an installed exporter).
pub fn add_source(source: Arc<dyn ScrapeSource>) {
    if let Some(e) = EXPORTER.get() {
        e.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }
}

fn describe_all() {
    for m in CATALOG {
        let (name, help) = (m.name, m.help);
        match m.kind {
            Kind::Counter => ::metrics::describe_counter!(name, help),
            Kind::Gauge => ::metrics::describe_gauge!(name, help),
            Kind::Histogram => ::metrics::describe_histogram!(name, help),
        }
    }
}

/// Longest a scrape-time source may take (a slow store must not hang the scrape).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(3);

impl Exporter {
    /// The `/metrics` page: the registry, then every scrape-time source.
    pub async fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut page = self.handle.render();
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = TextWriter::default();
        for source in sources {
            if tokio::time::timeout(SOURCE_TIMEOUT, source.collect(&mut out))
                .await
                .is_err()
            {
                tracing::warn!("a metrics source timed out");
            }
        }
        page.push_str(&out.finish());
        page
    }
}

/// Writes metric families in the Prometheus text format, for values read at scrape time.
/// Samples of one family are gathered first, so a family is written once with its header
/// even when several sources add to it.
#[derive(Default)]
pub struct TextWriter {
    families: Vec<(&'static str, String)>,
}

impl TextWriter {
    fn family(&mut self, name: &'static str) -> &mut String {
        if let Some(i) = self.families.iter().position(|(n, _)| *n == name) {
            return &mut self.families[i].1;
        }
        self.families.push((name, String::new()));
        let last = self.families.len() - 1;
        &mut self.families[last].1
    }

    /// One sample of family `name` (a name from [`CATALOG`]) with `labels`.
    pub fn sample(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        Self::line(self.family(name), name, "", labels, None, value);
    }

    /// A histogram's samples: cumulative `counts` per bound of `buckets`, then `+Inf`.
    pub fn histogram(
        &mut self,
        name: &'static str,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
    ) {
        let body = self.family(name);
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(snapshot.counts.iter()) {
            cumulative += count;
            let le = format_value(*bound);
            Self::line(body, name, "_bucket", labels, Some(&le), cumulative as f64);
        }
        Self::line(
            body,
            name,
            "_bucket",
            labels,
            Some("+Inf"),
            snapshot.count as f64,
        );
        Self::line(body, name, "_sum", labels, None, snapshot.sum_seconds);
        Self::line(body, name, "_count", labels, None, snapshot.count as f64);
    }

    fn line(
        body: &mut String,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: f64,
    ) {
        body.push_str(name);
        body.push_str(suffix);
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        let mut first = true;
        for (k, v) in all {
            body.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(body, "{k}=\"{}\"", escape_label(v));
        }
        if !first {
            body.push('}');
        }
        let _ = writeln!(body, " {}", format_value(value));
    }

    fn finish(self) -> String {
        let mut page = String::new();
        for (name, body) in self.families {
            let Some(def) = CATALOG.iter().find(|d| d.name == name) else {
                continue;
            };
            let kind = match def.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(page, "# HELP {name} {}", def.help);
            let _ = writeln!(page, "# TYPE {name} {kind}");
            page.push_str(&body);
            page.push('\n');
        }
        page
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A latency histogram kept in atomics with the [`LATENCY_BUCKETS`] bounds, for components
/// that keep their own counters (the store backends) and are read by a [`ScrapeSource`].
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// An [`AtomicHistogram`] at one moment (bucket counts not cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl AtomicHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in CATALOG {
            assert!(seen.insert(m.name), "{} declared twice", m.name);
            assert!(m.name.starts_with("kafscale_"), "{}", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => assert!(
                    m.name.ends_with("_seconds") || m.name.ends_with("_bytes"),
                    "{}",
                    m.name
                ),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            assert!(!m.help.is_empty());
        }
    }

    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../docs/operations.md");
        for m in CATALOG {
            let row = format!("| `{}` |", m.name);
            assert!(
                docs.contains(&row),
                "docs/operations.md lacks a row for {}",
                m.name
            );
        }
    }

    #[test]
    fn text_writer_writes_one_family_per_name() {
        let mut w = TextWriter::default();
        w.sample(
            GROUP_LAG,
            &[("group", "g\"1"), ("topic", "t"), ("partition", "0")],
            5.0,
        );
        w.sample(
            GROUP_LAG,
            &[("group", "g2"), ("topic", "t"), ("partition", "1")],
            0.0,
        );
        let h = AtomicHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        w.histogram(META_STORE_DURATION, &[("op", "Query")], &h.snapshot());
        let page = w.finish();
        assert_eq!(
            page.matches("# TYPE kafscale_consumer_group_lag gauge")
                .count(),
            1
        );
        assert!(page.contains(
            "kafscale_consumer_group_lag{group=\"g\\\"1\",topic=\"t\",partition=\"0\"} 5\n"
        ));
        assert!(page.contains(
            "kafscale_meta_store_request_duration_seconds_bucket{op=\"Query\",le=\"0.005\"} 1\n"
        ));
        assert!(page.contains(
            "kafscale_meta_store_request_duration_seconds_bucket{op=\"Query\",le=\"+Inf\"} 2\n"
        ));
        assert!(
            page.contains("kafscale_meta_store_request_duration_seconds_count{op=\"Query\"} 2\n")
        );
    }
}

//! Flag groups shared by the process modes, so a setting has one name, one environment
//! variable and one default wherever it appears (`--kafka-addr` ↔ `KAFSCALE_KAFKA_ADDR`, ...).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_fetch::{FetchConfig, GroupConfig, GroupLeaseConfig, GroupServiceConfig};
use kafscale_indexer::gc::{GarbageCollector, GcConfig};
use kafscale_ingest::IngestConfig;
use kafscale_shared::bearer::InternalToken;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::fault_injection::{
    FaultPlan, FaultSource, FaultyMetaStore, FaultyObjectStore,
};
use kafscale_shared::listener_addresses::ListenerMap;
use kafscale_shared::meta_store::{MetaStore, MetaStoreMetrics};
use kafscale_shared::object_store::block_cache::DEFAULT_BLOCK_BYTES;
use kafscale_shared::object_store::{BlockCache, ObjectStore, ObjectStoreMetrics};
use kafscale_shared::simulated_latency::{
    KeyThroughput, MetaStoreLatency, ObjectStoreLatency, SimulatedMetaStore, SimulatedObjectStore,
};
use kafscale_shared::topic_api::{TopicApi, TopicSettings, node_id_for_addr};
use kafscale_shared::topic_config::ClusterDefaults;
use kafscale_shared::wire::{KafkaServer, WireConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::listeners::{ListenerSpec, SecurityProtocol, check_security, parse_listeners};
use crate::sasl::KafkaSaslArgs;
use crate::tls::{HttpTlsArgs, KafkaTlsArgs};

/// The Kafka listener of a gateway and how it describes itself to clients.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KafkaListenerArgs {
    /// Address of the Kafka listener.
    #[arg(long, env = "KAFSCALE_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub(crate) kafka_addr: SocketAddr,
    /// Named Kafka listeners instead of --kafka-addr, `NAME://IP:PORT` comma-separated
    /// (Kafka's `listeners`), e.g. `INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094`; the
    /// first is the primary one. See docs/security.md, "Listeners".
    #[arg(
        long,
        env = "KAFSCALE_LISTENERS",
        value_delimiter = ',',
        conflicts_with_all = ["kafka_addr", "advertised_addr"]
    )]
    pub(crate) listeners: Vec<String>,
    /// `NAME://HOST:PORT` per listener clients reach under another address than the bound
    /// one (Kafka's `advertised.listeners`).
    #[arg(
        long,
        env = "KAFSCALE_ADVERTISED_LISTENERS",
        value_delimiter = ',',
        requires = "listeners"
    )]
    pub(crate) advertised_listeners: Vec<String>,
    /// `NAME:PROTOCOL` for listeners not named after their protocol (PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL; Kafka's `listener.security.protocol.map`).
    #[arg(
        long,
        env = "KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP",
        value_delimiter = ',',
        requires = "listeners"
    )]
    pub(crate) listener_security_protocol_map: Vec<String>,
    /// Address of the HTTP listener (/healthz, /readyz).
    #[arg(long, env = "KAFSCALE_HTTP_ADDR", default_value = "127.0.0.1:9093")]
    pub(crate) http_addr: SocketAddr,
    /// host:port put in Metadata answers (e.g. the Kubernetes Service name); defaults to the
    /// Kafka listener's address.
    #[arg(long, env = "KAFSCALE_ADVERTISED_ADDR")]
    pub(crate) advertised_addr: Option<String>,
    /// Create unknown topics on first use (Metadata or Produce).
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics asking for the default.
    #[arg(long, env = "KAFSCALE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub(crate) default_partitions: i32,
    /// Largest request frame accepted; longer frames close the connection.
    #[arg(long, env = "KAFSCALE_MAX_FRAME_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub(crate) max_frame_bytes: usize,
    /// Concurrent client connections; further ones wait in the accept backlog.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// A connection with nothing in flight that sends nothing for this long is closed
    /// (milliseconds; Kafka's `connections.max.idle.ms`).
    #[arg(
        long,
        env = "KAFSCALE_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    pub(crate) connections_max_idle_ms: u64,
    /// A response the client has not read within this time closes its connection
    /// (milliseconds).
    #[arg(
        long,
        env = "KAFSCALE_CLIENT_WRITE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub(crate) client_write_timeout_ms: u64,
    #[command(flatten)]
    pub(crate) tls: KafkaTlsArgs,
    #[command(flatten)]
    pub(crate) sasl: KafkaSaslArgs,
    #[command(flatten)]
    pub(crate) http_tls: HttpTlsArgs,
}

/// The bound Kafka listeners (the primary one first) and the topic API that answers with the
/// primary one's advertised address (the others rewrite it, see
/// `kafscale_shared::listener_addresses`).
pub(crate) struct BoundListener {
    pub(crate) servers: Vec<KafkaServer>,
    /// The primary listener's bound and advertised addresses.
    pub(crate) kafka_addr: SocketAddr,
    pub(crate) advertised: String,
    pub(crate) topics: TopicApi,
}

impl KafkaListenerArgs {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.default_partitions < 1 {
            anyhow::bail!("--default-partitions must be at least 1");
        }
        if let Some(a) = &self.advertised_addr {
            split_host_port(a)?;
        }
        let specs = self.specs()?;
        self.sasl.validate(sasl_listeners_have_tls(&specs))?;
        self.http_tls.reload_interval()?;
        Ok(())
    }

    /// The listeners to bind: the named ones, or the one of --kafka-addr whose protocol
    /// follows from the TLS and SASL flags.
    fn specs(&self) -> anyhow::Result<Vec<ListenerSpec>> {
        let tls = self.tls.files()?.is_some();
        let sasl = !self.sasl.mechanisms()?.is_empty();
        if self.listeners.is_empty() {
            let protocol = SecurityProtocol::of(tls, sasl);
            return Ok(vec![ListenerSpec {
                name: protocol.name().to_string(),
                bind: self.kafka_addr,
                advertised: self.advertised_addr.clone(),
                protocol,
            }]);
        }
        let specs = parse_listeners(
            &self.listeners,
            &self.advertised_listeners,
            &self.listener_security_protocol_map,
        )?;
        check_security(&specs, tls, sasl)?;
        Ok(specs)
    }

    fn wire_config(&self) -> WireConfig {
        WireConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_connections.max(1),
            idle_timeout: Duration::from_millis(self.connections_max_idle_ms.max(1)),
            write_timeout: Duration::from_millis(self.client_write_timeout_ms.max(1)),
            tls_handshake_timeout: self.tls.handshake_timeout(),
            ..WireConfig::default()
        }
    }

    /// Binds the listeners first, so advertised addresses can default to the bound ones (port
    /// 0 allowed), then builds the topic API around the primary one. With TLS, the certificate
    /// is loaded first (a bad one fails the start) and checked for changes until `shutdown`.
    /// With SASL, the cluster's decoy secret is read (or created) in the catalog's store.
    pub(crate) async fn bind(
        &self,
        catalog: Arc<Catalog>,
        cluster_id: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<BoundListener> {
        let specs = self.specs()?;
        let tls = match self.tls.files()? {
            Some(files) => {
                let tls = crate::tls::load("kafka", &files, Vec::new())?;
                crate::tls::spawn_reload(&tls, "kafka", self.http_tls.reload_interval()?, shutdown);
                Some(tls)
            }
            None => None,
        };
        let sasl = self
            .sasl
            .settings(catalog.store().clone(), sasl_listeners_have_tls(&specs))
            .await?;
        let mut servers = Vec::with_capacity(specs.len());
        let mut listeners = ListenerMap::new();
        for spec in &specs {
            let mut server = KafkaServer::bind(spec.bind, self.wire_config())
                .await
                .with_context(|| format!("binding kafka listener {} {}", spec.name, spec.bind))?;
            if let (true, Some(tls)) = (spec.protocol.tls(), &tls) {
                server = server.with_tls(tls.clone());
            }
            if let (true, Some(sasl)) = (spec.protocol.sasl(), &sasl) {
                server = server.with_sasl(sasl.clone());
            }
            let bound = server.local_addr()?;
            let advertised = advertised_or_bound(spec.advertised.as_deref(), bound);
            info!(listener = %spec.name, protocol = spec.protocol.name(), %bound, %advertised, mutual_tls = tls.as_ref().is_some_and(|t| t.is_mutual()) && spec.protocol.tls(), "kafka listener bound");
            listeners.insert(spec.name.clone(), advertised);
            servers.push((server, bound));
        }
        if let Some(sasl) = &sasl {
            info!(
                mechanisms = ?sasl.authenticator.mechanism_names(),
                session_lifetime_ms = self.sasl.sasl_session_lifetime_ms,
                "sasl listeners require authentication"
            );
        }
        let kafka_addr = servers[0].1;
        let advertised = listeners[&specs[0].name].clone();
        let (advertised_host, advertised_port) = split_host_port(&advertised)?;
        let mut topics = TopicApi::new(
            catalog,
            TopicSettings {
                advertised_host,
                advertised_port,
                auto_create_topics: self.auto_create_topics,
                default_partitions: self.default_partitions,
                cluster_id: cluster_id.to_string(),
                node_id: node_id_for_addr(&advertised),
            },
        );
        if !self.listeners.is_empty() {
            topics = topics.with_listeners(listeners);
        }
        let servers = servers
            .into_iter()
            .zip(&specs)
            .enumerate()
            .map(|(i, ((server, _), spec))| match i {
                0 => server,
                _ => {
                    server.with_listener_addresses(&spec.name, topics.listener_addresses().clone())
                }
            })
            .collect();
        Ok(BoundListener {
            servers,
            kafka_addr,
            advertised,
            topics,
        })
    }
}

/// Whether every SASL listener speaks TLS (PLAIN is refused on one that does not, unless
/// allowed).
fn sasl_listeners_have_tls(specs: &[ListenerSpec]) -> bool {
    specs
        .iter()
        .filter(|s| s.protocol.sasl())
        .all(|s| s.protocol.tls())
}

/// How the produce tier buffers and flushes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IngestArgs {
    /// The longest data waits to be sealed into a segment (milliseconds), even while
    /// uploads are in flight. Default: 20 on local disk, 150 on S3 (or a simulated one).
    #[arg(long, env = "KAFSCALE_FLUSH_INTERVAL_MS")]
    pub(crate) flush_interval_ms: Option<u64>,
    /// The least time between two seals while nothing is uploading (milliseconds). 0 is
    /// adaptive flushing: a request on an idle gateway is flushed at once, and what arrives
    /// during an upload is grouped into the next segment. Default: 0 on local disk; on S3 (or
    /// a simulated one) the flush interval, since every flush is a PUT and a metadata write
    /// and a trickle of traffic then costs one flush per interval (docs/cost.md). Capped at
    /// the flush interval.
    #[arg(long, env = "KAFSCALE_FLUSH_MIN_INTERVAL_MS")]
    pub(crate) flush_min_interval_ms: Option<u64>,
    /// Flush the produce buffer when it holds this many bytes.
    #[arg(long, env = "KAFSCALE_FLUSH_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub(crate) flush_bytes: usize,
    /// Largest record batch accepted (Kafka's max.message.bytes).
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024 + 12)]
    pub(crate) max_message_bytes: usize,
    /// Produce bytes held in memory at once (accepted, not yet committed); a producer that
    /// outruns the store waits for room (the ingest tier's memory bound).
    #[arg(long, env = "KAFSCALE_MAX_BUFFERED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub(crate) max_buffered_bytes: usize,
    /// Race a segment upload slower than this (milliseconds) with a second one under a new
    /// key, keeping the first to finish; 0 never does. Default: 100 against S3 (or a simulated
    /// one), off on local disk.
    #[arg(long, env = "KAFSCALE_UPLOAD_HEDGE_MS")]
    pub(crate) upload_hedge_ms: Option<u64>,
}

/// Default `--upload-hedge-ms` against an object store with S3's latency tail.
const DEFAULT_UPLOAD_HEDGE_MS: u64 = 100;
/// Default `--flush-interval-ms` on local disk, where a flush costs an fsync.
const DEFAULT_FLUSH_INTERVAL_MS: u64 = 20;
/// Default `--flush-interval-ms` on S3, where a flush costs a PUT and a metadata write: at
/// most 7 flushes a second from the timer (docs/cost.md has the measured trade-off).
const DEFAULT_OBJECT_STORE_FLUSH_INTERVAL_MS: u64 = 150;

impl IngestArgs {
    /// The cluster-level topic config defaults: `topic_defaults` and `--max-message-bytes`
    /// (DescribeConfigs reports them).
    pub(crate) fn cluster_defaults(
        &self,
        topic_defaults: &TopicDefaultsArgs,
    ) -> anyhow::Result<ClusterDefaults> {
        Ok(topic_defaults
            .cluster_defaults()?
            .with_max_message_bytes(self.max_message_bytes))
    }

    /// `remote_store`: the segments go to S3 (or a simulated S3), where hedging pays and
    /// flushes cost requests.
    pub(crate) fn config(
        &self,
        shard_count: u32,
        remote_store: bool,
    ) -> anyhow::Result<IngestConfig> {
        if self.flush_bytes == 0 || self.max_message_bytes == 0 {
            anyhow::bail!("--flush-bytes and --max-message-bytes must be positive");
        }
        if self.max_buffered_bytes < self.max_message_bytes {
            anyhow::bail!(
                "--max-buffered-bytes must hold at least one batch (--max-message-bytes)"
            );
        }
        let hedge_ms = self.upload_hedge_ms.unwrap_or(if remote_store {
            DEFAULT_UPLOAD_HEDGE_MS
        } else {
            0
        });
        let flush_interval_ms = self.flush_interval_ms.unwrap_or(if remote_store {
            DEFAULT_OBJECT_STORE_FLUSH_INTERVAL_MS
        } else {
            DEFAULT_FLUSH_INTERVAL_MS
        });
        let flush_interval = Duration::from_millis(flush_interval_ms.max(1));
        let flush_min_interval = match self.flush_min_interval_ms {
            Some(ms) => Duration::from_millis(ms),
            None if remote_store => flush_interval,
            None => Duration::ZERO,
        };
        Ok(IngestConfig {
            flush_bytes: self.flush_bytes,
            flush_interval,
            flush_min_interval: flush_min_interval.min(flush_interval),
            max_message_bytes: self.max_message_bytes,
            shard_count,
            upload_hedge_after: (hedge_ms > 0).then(|| Duration::from_millis(hedge_ms)),
            max_buffered_bytes: self.max_buffered_bytes,
            ..IngestConfig::default()
        })
    }
}

/// Simulated cloud latency for the stores (benchmarks on one machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ObjectStoreLatencyPreset {
    None,
    S3Standard,
    S3Express,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MetaStoreLatencyPreset {
    None,
    Dynamodb,
}

/// Adds the latency of a cloud service to the stores (docs/benchmarks.md): every request
/// waits a delay drawn from the preset's distribution, and requests are counted by type (the
/// counts are logged at shutdown, for requests-per-GiB cost figures).
/// Cluster-level defaults of topic configs, for topics that do not set their own. Every
/// process takes them (gateways describe them, shard owners enforce them), so a deployment
/// gives all its processes the same values (the Helm chart does). Unset, Kafka's default
/// applies and is described as such (DEFAULT_CONFIG, not a broker setting).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TopicDefaultsArgs {
    /// `retention.ms` of topics that do not set it (Kafka's `log.retention.ms`; -1: forever)
    /// [default: 604800000]
    #[arg(
        long,
        env = "KAFSCALE_DEFAULT_RETENTION_MS",
        allow_hyphen_values = true
    )]
    pub(crate) default_retention_ms: Option<i64>,
    /// `retention.bytes` of topics that do not set it, per partition (Kafka's
    /// `log.retention.bytes`; -1: no limit) [default: -1]
    #[arg(
        long,
        env = "KAFSCALE_DEFAULT_RETENTION_BYTES",
        allow_hyphen_values = true
    )]
    pub(crate) default_retention_bytes: Option<i64>,
}

impl TopicDefaultsArgs {
    /// These flags as cluster defaults, validated as topic configs are.
    pub(crate) fn cluster_defaults(&self) -> anyhow::Result<ClusterDefaults> {
        let flags = [
            (
                "retention.ms",
                "default-retention-ms",
                self.default_retention_ms,
            ),
            (
                "retention.bytes",
                "default-retention-bytes",
                self.default_retention_bytes,
            ),
        ];
        let mut defaults = ClusterDefaults::default();
        for (config, flag, value) in flags {
            if let Some(value) = value {
                defaults = defaults
                    .with_default(config, &value.to_string())
                    .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
            }
        }
        Ok(defaults)
    }
}

/// Data lifecycle of the processes that own shards (indexer, standalone).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LifecycleArgs {
    /// How often the shard owner applies `retention.ms` / `retention.bytes` to its partitions
    /// (milliseconds; Kafka's `log.retention.check.interval.ms`).
    #[arg(
        long,
        env = "KAFSCALE_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub(crate) retention_check_interval_ms: u64,
    /// How often garbage collection looks for segment objects no partition references and
    /// for orphans (milliseconds). One replica collects at a time (the `gc` lease).
    #[arg(long, env = "KAFSCALE_GC_INTERVAL_MS", default_value_t = 300_000)]
    pub(crate) gc_interval_ms: u64,
    /// How long an unreferenced segment object stays after garbage collection first found it
    /// unreferenced, so fetches that read its index entry just before still find it
    /// (milliseconds). Orphans get the same grace beyond the commit horizon.
    #[arg(long, env = "KAFSCALE_GC_GRACE_MS", default_value_t = 600_000)]
    pub(crate) gc_grace_ms: u64,
    /// Segments created longer ago than this are no longer committed (a gateway's commit
    /// that arrives later fails and the producer retries); garbage collection treats older
    /// uncommitted objects as orphans (milliseconds).
    #[arg(
        long,
        env = "KAFSCALE_SEGMENT_COMMIT_MAX_AGE_MS",
        default_value_t = 600_000
    )]
    pub(crate) segment_commit_max_age_ms: u64,
    /// An idempotent producer's state in a partition is forgotten this long after its last
    /// batch there (milliseconds; Kafka's `producer.id.expiration.ms`), at the retention pass.
    #[arg(
        long,
        env = "KAFSCALE_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    pub(crate) producer_id_expiration_ms: u64,
    /// How often a shard owner folds its log into index pages and partition rows
    /// (milliseconds; on the shard log layout).
    #[arg(long, env = "KAFSCALE_FOLD_INTERVAL_MS", default_value_t = 2_000)]
    pub(crate) fold_interval_ms: u64,
}

impl LifecycleArgs {
    /// Starts the shard-log fold loop of `indexer` (see `--fold-interval-ms`).
    pub(crate) fn spawn_fold(
        &self,
        indexer: Arc<kafscale_indexer::Indexer>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        if self.fold_interval_ms < 10 {
            anyhow::bail!("--fold-interval-ms must be at least 10");
        }
        Ok(tokio::spawn(indexer.run_fold_loop(
            Duration::from_millis(self.fold_interval_ms),
            shutdown.clone(),
        )))
    }

    /// Starts the retention loop of `indexer` (topic configs over `defaults`).
    pub(crate) fn spawn_retention(
        &self,
        indexer: Arc<kafscale_indexer::Indexer>,
        defaults: ClusterDefaults,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        if self.retention_check_interval_ms < 100 {
            anyhow::bail!("--retention-check-interval-ms must be at least 100");
        }
        Ok(tokio::spawn(indexer.run_retention_loop(
            defaults,
            Duration::from_millis(self.retention_check_interval_ms),
            shutdown.clone(),
        )))
    }

    /// The indexer's settings from these flags over `base`.
    pub(crate) fn indexer_config(
        &self,
        base: kafscale_indexer::IndexerConfig,
    ) -> anyhow::Result<kafscale_indexer::IndexerConfig> {
        Ok(kafscale_indexer::IndexerConfig {
            segment_commit_max_age: self.segment_commit_max_age()?,
            producer_id_expiration: Duration::from_millis(self.producer_id_expiration_ms),
            ..base
        })
    }

    /// The indexer's commit horizon (see `--segment-commit-max-age-ms`).
    pub(crate) fn segment_commit_max_age(&self) -> anyhow::Result<Duration> {
        if self.segment_commit_max_age_ms < 1000 {
            anyhow::bail!("--segment-commit-max-age-ms must be at least 1000");
        }
        Ok(Duration::from_millis(self.segment_commit_max_age_ms))
    }

    /// Starts garbage collection of `objects` as `owner_id` (it runs while this process
    /// holds the `gc` lease).
    pub(crate) fn spawn_gc(
        &self,
        catalog: Arc<kafscale_shared::catalog::Catalog>,
        objects: Arc<dyn ObjectStore>,
        owner_id: String,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        if self.gc_interval_ms < 100 {
            anyhow::bail!("--gc-interval-ms must be at least 100");
        }
        let collector = Arc::new(GarbageCollector::new(
            catalog,
            objects,
            GcConfig {
                grace: Duration::from_millis(self.gc_grace_ms),
                segment_commit_max_age: self.segment_commit_max_age()?,
            },
        ));
        Ok(tokio::spawn(collector.run_loop(
            owner_id,
            Duration::from_millis(self.gc_interval_ms),
            shutdown.clone(),
        )))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimulationArgs {
    /// Simulated object-store latency: none, s3-standard or s3-express.
    #[arg(
        long,
        env = "KAFSCALE_SIMULATE_OBJECT_STORE",
        value_enum,
        default_value = "none"
    )]
    simulate_object_store: ObjectStoreLatencyPreset,
    /// Simulated metadata-store latency: none or dynamodb.
    #[arg(
        long,
        env = "KAFSCALE_SIMULATE_META_STORE",
        value_enum,
        default_value = "none"
    )]
    simulate_meta_store: MetaStoreLatencyPreset,
    /// Write units a second one partition key may take in the simulated DynamoDB
    /// (--simulate-meta-store dynamodb; one partition's limit is 1,000; a lower figure stands for the other gateways writing the
    /// same keys, docs/cost.md). Reads get three times as much.
    #[arg(
        long,
        env = "KAFSCALE_SIMULATE_KEY_WRITE_UNITS",
        default_value_t = 1000
    )]
    simulate_key_write_units: u32,
    /// Inject faults into store requests: for tests and chaos runs, never production. E.g.
    /// `error=0.05,lost=0.05,timeout=0.01,spike=0.1,spike-ms=500,timeout-ms=2000,seed=7,ops=put+meta-write`
    /// (docs/operations.md, "Fault injection").
    #[arg(
        long,
        env = "KAFSCALE_INJECT_FAULTS",
        conflicts_with = "inject_faults_file"
    )]
    inject_faults: Option<FaultPlan>,
    /// Like --inject-faults, with the plan read from this file and re-read every 500 ms, so a
    /// test can start and stop an outage (missing or empty file: no faults).
    #[arg(long, env = "KAFSCALE_INJECT_FAULTS_FILE")]
    inject_faults_file: Option<std::path::PathBuf>,
}

/// Request counters of the simulated stores, logged at shutdown.
#[derive(Debug, Default)]
pub(crate) struct SimulatedRequests {
    objects: Option<Arc<ObjectStoreMetrics>>,
    meta: Option<Arc<MetaStoreMetrics>>,
}

impl SimulatedRequests {
    pub(crate) fn log_summary(&self) {
        if let Some(m) = &self.objects {
            for (op, c) in m.snapshot() {
                if c.requests > 0 {
                    info!(
                        op = op.name(),
                        requests = c.requests,
                        errors = c.errors,
                        bytes_in = c.bytes_in,
                        bytes_out = c.bytes_out,
                        "simulated object-store requests"
                    );
                }
            }
        }
        if let Some(m) = &self.meta {
            for (op, c) in m.snapshot() {
                if c.requests > 0 {
                    info!(
                        op = op.name(),
                        requests = c.requests,
                        errors = c.errors,
                        condition_failures = c.condition_failures,
                        items_read = c.items_read,
                        items_written = c.items_written,
                        "simulated metadata-store requests"
                    );
                }
            }
        }
    }
}

impl SimulationArgs {
    /// Whether object-store requests get a simulated cloud latency.
    pub(crate) fn simulates_object_store(&self) -> bool {
        self.simulate_object_store != ObjectStoreLatencyPreset::None
    }

    /// The stores with the chosen simulated latency wrapped around them.
    pub(crate) fn apply(
        &self,
        objects: Arc<dyn ObjectStore>,
        meta: Arc<dyn MetaStore>,
    ) -> (Arc<dyn ObjectStore>, Arc<dyn MetaStore>, SimulatedRequests) {
        let mut counts = SimulatedRequests::default();
        let objects: Arc<dyn ObjectStore> = match self.simulate_object_store {
            ObjectStoreLatencyPreset::None => objects,
            preset => {
                let latency = if preset == ObjectStoreLatencyPreset::S3Standard {
                    ObjectStoreLatency::S3_STANDARD
                } else {
                    ObjectStoreLatency::S3_EXPRESS
                };
                info!(?preset, "simulating object-store latency");
                let s = SimulatedObjectStore::new(objects, latency);
                counts.objects = Some(s.metrics());
                Arc::new(s)
            }
        };
        let meta: Arc<dyn MetaStore> = match self.simulate_meta_store {
            MetaStoreLatencyPreset::None => meta,
            MetaStoreLatencyPreset::Dynamodb => {
                info!("simulating DynamoDB latency on the metadata store");
                let write_units = f64::from(self.simulate_key_write_units.max(1));
                let latency = MetaStoreLatency {
                    per_key: Some(KeyThroughput {
                        write_units_per_sec: write_units,
                        read_units_per_sec: 3.0 * write_units,
                    }),
                    ..MetaStoreLatency::DYNAMODB
                };
                let s = SimulatedMetaStore::new(meta, latency);
                counts.meta = Some(s.metrics());
                Arc::new(s)
            }
        };
        match self.fault_source() {
            Some(faults) => (
                Arc::new(FaultyObjectStore::new(objects, faults.clone())),
                Arc::new(FaultyMetaStore::new(meta, faults)),
                counts,
            ),
            None => (objects, meta, counts),
        }
    }

    /// The faults to inject, if a flag asks for any (warned about: tests only).
    fn fault_source(&self) -> Option<Arc<FaultSource>> {
        let source = match (&self.inject_faults, &self.inject_faults_file) {
            (Some(plan), _) => FaultSource::fixed(plan.clone()),
            (None, Some(path)) => FaultSource::watched(
                path.clone(),
                Duration::from_millis(500),
                tokio_util::sync::CancellationToken::new(),
            ),
            (None, None) => return None,
        };
        warn!("store fault injection is on: for tests and chaos runs only");
        Some(source)
    }
}

/// How the consume tier caches.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FetchArgs {
    /// Bytes of index-entry ranges cached by the fetch tier with their batches' real base
    /// offsets (with the block cache on, only the offsets: the data is in the blocks).
    #[arg(long, env = "KAFSCALE_FETCH_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub(crate) fetch_cache_bytes: usize,
    /// Bytes of whole segment blocks cached by the fetch tier (one object-store read serves
    /// every partition of a segment; 0 reads exactly the ranges asked instead). In standalone
    /// mode segments enter it as they are written.
    #[arg(
        long,
        env = "KAFSCALE_FETCH_BLOCK_CACHE_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub(crate) fetch_block_cache_bytes: usize,
    /// Size of one object-store read of the block cache: segments up to this size are read
    /// with one GET (the ingest tier flushes at 4 MiB by default).
    #[arg(
        long,
        env = "KAFSCALE_FETCH_BLOCK_BYTES",
        default_value_t = DEFAULT_BLOCK_BYTES
    )]
    pub(crate) fetch_block_bytes: u64,
    /// Largest Fetch response, whatever the client asks (Kafka's broker `fetch.max.bytes`).
    #[arg(long, env = "KAFSCALE_FETCH_MAX_BYTES", default_value_t = 55 * 1024 * 1024)]
    pub(crate) fetch_max_bytes: usize,
    /// Bytes all Fetch requests of the process may hold at once while reading; past it a
    /// Fetch answers with what it has and a throttle time (memory bound of the fetch tier).
    #[arg(long, env = "KAFSCALE_FETCH_MEMORY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub(crate) fetch_memory_bytes: usize,
    /// How long a consumer group's coordinator lease lasts (milliseconds): when a fetch
    /// replica dies, its groups move to another replica within this time.
    #[arg(long, env = "KAFSCALE_GROUP_LEASE_MS", default_value_t = 10_000)]
    pub(crate) group_lease_ms: u64,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (milliseconds; Kafka's `group.initial.rebalance.delay.ms`).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    pub(crate) group_initial_rebalance_delay_ms: u64,
    /// How long a consumer group without members stays in its coordinator's memory and in
    /// ListGroups (milliseconds); its committed offsets stay in the store.
    #[arg(
        long,
        env = "KAFSCALE_GROUP_EMPTY_EXPIRY_MS",
        default_value_t = 600_000
    )]
    pub(crate) group_empty_expiry_ms: u64,
    /// Shortest and longest session timeout a consumer may ask for (milliseconds; Kafka's
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub(crate) group_min_session_timeout_ms: u64,
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub(crate) group_max_session_timeout_ms: u64,
    /// `host:port` at which clients reach this replica itself, named by FindCoordinator for
    /// the groups it coordinates (default: --advertised-addr). With several fetch replicas
    /// behind one advertised Service name, set each to its own address (the pod IP).
    #[arg(long, env = "KAFSCALE_COORDINATOR_ADDR")]
    pub(crate) coordinator_addr: Option<String>,
}

impl FetchArgs {
    /// `objects` behind the fetch tier's block cache (unless it is sized 0); `write_through`
    /// where this process also writes the segments (standalone).
    pub(crate) fn block_cache(
        &self,
        objects: Arc<dyn ObjectStore>,
        write_through: bool,
    ) -> Arc<dyn ObjectStore> {
        if self.fetch_block_cache_bytes == 0 {
            return objects;
        }
        Arc::new(BlockCache::new(
            objects,
            self.fetch_block_bytes,
            self.fetch_block_cache_bytes,
            write_through,
        ))
    }

    pub(crate) fn config(&self, store_poll_interval: Option<Duration>) -> FetchConfig {
        FetchConfig {
            range_cache_bytes: self.fetch_cache_bytes,
            store_caches_blocks: self.fetch_block_cache_bytes > 0,
            store_poll_interval,
            max_response_bytes: self.fetch_max_bytes.max(1),
            memory_bytes: self.fetch_memory_bytes.max(1),
            ..FetchConfig::default()
        }
    }

    /// Group coordination: `coordinates` for the processes that own groups (fetch gateways,
    /// standalone); `owner_id` fixes the lease owner (standalone), else the address names it.
    pub(crate) fn group_config(
        &self,
        coordinates: bool,
        owner_id: Option<String>,
    ) -> anyhow::Result<GroupServiceConfig> {
        if let Some(addr) = &self.coordinator_addr {
            split_host_port(addr).with_context(|| format!("--coordinator-addr {addr:?}"))?;
        }
        Ok(GroupServiceConfig {
            groups: GroupConfig {
                min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
                max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
                initial_rebalance_delay: Duration::from_millis(
                    self.group_initial_rebalance_delay_ms,
                ),
                empty_group_expiry: Duration::from_millis(self.group_empty_expiry_ms),
            },
            leases: GroupLeaseConfig {
                coordinates,
                ttl: Duration::from_millis(self.group_lease_ms.max(100)),
                owner_id,
                coordinator_addr: self.coordinator_addr.clone(),
            },
        })
    }
}

/// `addr` if given, else the bound address (with an unspecified IP replaced by loopback, which
/// is the only address of its own a wildcard listener can be sure clients reach).
pub(crate) fn advertised_or_bound(addr: Option<&str>, bound: SocketAddr) -> String {
    match addr {
        Some(a) => a.to_string(),
        None if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
        None => bound.to_string(),
    }
}

pub(crate) fn split_host_port(s: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        anyhow::bail!("{s:?} has no host");
    }
    Ok((host.to_string(), port as i32))
}

/// The cluster-internal token (indexers and both gateways): gateways send it on every call to
/// an indexer, indexers require it on commits, DeleteRecords and the watermark feed.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InternalTokenArgs {
    /// File holding the cluster-internal shared secret (wins over KAFSCALE_INTERNAL_TOKEN;
    /// surrounding whitespace ignored; an empty token is an error). Without a token the
    /// indexers' commit, DeleteRecords and watermark-feed endpoints are open to anyone who
    /// can reach their HTTP port.
    #[arg(long, env = "KAFSCALE_INTERNAL_TOKEN_FILE")]
    internal_token_file: Option<std::path::PathBuf>,
    /// The cluster-internal token itself (prefer the file or the environment variable: a flag
    /// is visible in the process list).
    #[arg(long, env = "KAFSCALE_INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
}

impl InternalTokenArgs {
    pub(crate) fn token(&self) -> anyhow::Result<Option<InternalToken>> {
        InternalToken::configured(
            self.internal_token_file.as_deref(),
            self.internal_token.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("kafscale-ingest:9092").expect("ok"),
            ("kafscale-ingest".to_string(), 9092)
        );
        assert_eq!(
            split_host_port("[::1]:19092").expect("ok"),
            ("::1".to_string(), 19092)
        );
        assert!(split_host_port("no-port").is_err());
        assert!(split_host_port(":9092").is_err());
        assert!(split_host_port("host:99999").is_err());
        let bound: SocketAddr = "0.0.0.0:4000".parse().expect("addr");
        assert_eq!(advertised_or_bound(None, bound), "127.0.0.1:4000");
        assert_eq!(advertised_or_bound(Some("svc:9092"), bound), "svc:9092");
    }
}

/// The metadata layout a new cluster starts with (`--initial-layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LayoutArg {
    /// One transaction per commit: the lease check, a commit record, a row and an index entry
    /// per partition.
    Transactions,
    /// One small item appended to the shard's log per commit, folded into index pages and
    /// rows every two seconds (docs/architecture.md, "The shard log"); the newest layout, 3
    /// (short log items and pages).
    ShardLog,
}

impl LayoutArg {
    pub(crate) fn layout(self) -> u32 {
        match self {
            LayoutArg::Transactions => kafscale_shared::shards::LAYOUT_TRANSACTIONS,
            LayoutArg::ShardLog => kafscale_shared::shards::LAYOUT_NEWEST,
        }
    }
}

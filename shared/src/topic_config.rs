//! Topic configs: the one table of every config a topic may carry, with its Kafka name, type,
//! default, validator and documentation. CreateTopics, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs and the admin HTTP API all validate and describe through this
//! module, so they cannot disagree about what is accepted.
//!
//! A topic item stores only the configs set on it (name → value as given, after validation);
//! everything else takes the cluster default ([`ClusterDefaults`]: the table's Kafka defaults,
//! overridden by flags where the process has one, e.g. `--max-message-bytes`).
//!
//! Some configs are *inert*: accepted and stored because tools and clients set them routinely
//! (segment sizes, replication settings), but meaningless here — there are no local segments
//! and no replicas. They are marked so in the table and in docs/operations.md. Configs that
//! would change behaviour we do not implement (`message.timestamp.type=LogAppendTime`) are
//! refused with INVALID_CONFIG, never silently stored.
//!
//! `cleanup.policy=compact` is served without a compactor: a compacted topic refuses records
//! without a key (as Kafka does), and retention by time and size applies only when the policy
//! also holds `delete`. Nothing is ever compacted away, which Kafka's contract allows: a
//! compacted log keeps at least the last value of every key, and compaction may lag without
//! bound (`max.compaction.lag.ms` defaults to forever). Readers see every version of a key;
//! the bucket keeps them all.

use std::collections::BTreeMap;

/// A config's type, as DescribeConfigs v3+ reports it (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config.
#[derive(Debug)]
pub struct ConfigDef {
    /// The topic-level Kafka name.
    pub name: &'static str,
    /// The broker-level Kafka name of the cluster default (its DescribeConfigs synonym).
    pub broker_name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default (the cluster default unless a flag overrides it).
    pub default: &'static str,
    /// Checks a value beyond its type (ranges, allowed values); the message says why not.
    check: fn(&str) -> Result<(), String>,
    /// Accepted and stored, but without effect here.
    pub inert: bool,
    pub doc: &'static str,
}

impl ConfigDef {
    /// Checks `value` for this config: its type, then its own rule.
    pub fn validate(&self, value: &str) -> Result<(), ConfigError> {
        let typed = match self.kind {
            ConfigType::Long | ConfigType::Int => value
                .trim()
                .parse::<i64>()
                .map(drop)
                .map_err(|_| "must be an integer".to_string()),
            ConfigType::Double => value
                .trim()
                .parse::<f64>()
                .map(drop)
                .map_err(|_| "must be a number".to_string()),
            ConfigType::Boolean => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err("must be true or false".to_string()),
            },
            ConfigType::String | ConfigType::List => Ok(()),
        };
        typed
            .and_then(|()| (self.check)(value.trim()))
            .map_err(|reason| ConfigError::new(self.name, value, reason))
    }
}

/// A refused config (Kafka's INVALID_CONFIG); the message names the config, value and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    fn new(name: &str, value: &str, reason: String) -> Self {
        ConfigError(format!("invalid value {value:?} for {name}: {reason}"))
    }
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn int(v: &str) -> i64 {
    v.parse().unwrap_or(i64::MIN)
}

/// -1 (unlimited) or a non-negative value.
fn minus_one_or_more(v: &str) -> Result<(), String> {
    if int(v) >= -1 {
        Ok(())
    } else {
        Err("must be -1 (unlimited) or at least 0".into())
    }
}

fn non_negative(v: &str) -> Result<(), String> {
    if int(v) >= 0 {
        Ok(())
    } else {
        Err("must not be negative".into())
    }
}

fn positive(v: &str) -> Result<(), String> {
    if int(v) >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".into())
    }
}

fn in_i32(v: &str) -> Result<(), String> {
    if (0..=i64::from(i32::MAX)).contains(&int(v)) {
        Ok(())
    } else {
        Err(format!("must be between 0 and {}", i32::MAX))
    }
}

fn cleanup_policy(v: &str) -> Result<(), String> {
    let policies: Vec<&str> = list_items(v);
    if policies.is_empty() {
        return Err("must be delete, compact or both".into());
    }
    match policies
        .iter()
        .find(|p| !matches!(**p, "delete" | "compact"))
    {
        Some(other) => Err(format!(
            "unknown cleanup policy {other:?}; delete, compact or both"
        )),
        None => Ok(()),
    }
}

fn timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" => Ok(()),
        "LogAppendTime" => Err(
            "LogAppendTime is not supported: it needs every stored batch's \
             timestamp rewritten and its CRC recomputed, and kafscale stores producers' batches \
             byte for byte; only CreateTime is served"
                .into(),
        ),
        _ => Err("must be CreateTime".into()),
    }
}

/// Kafka's values are all accepted: a topic codec only makes a Kafka broker recompress, and
/// every client reads every codec, so storing batches as produced is correct whatever is set.
fn compression_type(v: &str) -> Result<(), String> {
    match v {
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
        _ => Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd".into()),
    }
}

fn boolean(_: &str) -> Result<(), String> {
    Ok(())
}

/// The items of a list config (comma-separated, blanks ignored).
pub fn list_items(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

const fn def(
    name: &'static str,
    broker_name: &'static str,
    kind: ConfigType,
    default: &'static str,
    check: fn(&str) -> Result<(), String>,
    inert: bool,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        broker_name,
        kind,
        default,
        check,
        inert,
        doc,
    }
}

use ConfigType::{Boolean, Double, Int, List, Long, String as Str};

/// Every topic config, in the order DescribeConfigs lists them.
#[rustfmt::skip]
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def("retention.ms", "log.retention.ms", Long, "604800000", minus_one_or_more, false,
        "How long records are kept, in milliseconds; -1 keeps them forever."),
    def("retention.bytes", "log.retention.bytes", Long, "-1", minus_one_or_more, false,
        "The most bytes a partition keeps before its oldest records are removed; -1 is no limit."),
    def("max.message.bytes", "message.max.bytes", Int, "1048588", in_i32, false,
        "The largest record batch a producer may send to this topic, in bytes (stored; the \
         ingest gateway enforces its --max-message-bytes flag for every topic)."),
    def("cleanup.policy", "log.cleanup.policy", List, "delete", cleanup_policy, false,
        "delete: records are removed by retention.ms / retention.bytes. compact: records must \
         have a key; nothing is compacted away (kafscale never rewrites stored data), so every \
         version of a key is kept, and retention applies only if delete is listed too."),
    def("message.timestamp.type", "log.message.timestamp.type", Str, "CreateTime",
        timestamp_type, false,
        "CreateTime only: records keep the producer's timestamps. LogAppendTime is refused."),
    def("compression.type", "compression.type", Str, "producer", compression_type, true,
        "Inert: batches are stored exactly as the producer compressed them, whatever is set \
         (every client reads every codec)."),
    def("segment.bytes", "log.segment.bytes", Int, "1073741824", positive, true,
        "Inert: there are no local log segments; segment objects are sized by the ingest \
         gateway's flush settings."),
    def("segment.ms", "log.roll.ms", Long, "604800000", positive, true,
        "Inert: there are no local log segments to roll."),
    def("segment.index.bytes", "log.index.size.max.bytes", Int, "10485760", positive, true,
        "Inert: offsets are indexed in the metadata store."),
    def("segment.jitter.ms", "log.roll.jitter.ms", Long, "0", non_negative, true,
        "Inert: there are no local log segments to roll."),
    def("min.insync.replicas", "min.insync.replicas", Int, "1", positive, true,
        "Inert: the object store holds every replica; acks=all is durable once stored."),
    def("unclean.leader.election.enable", "unclean.leader.election.enable", Boolean, "false",
        boolean, true, "Inert: partitions have no leader to elect."),
    def("flush.messages", "log.flush.interval.messages", Long, "9223372036854775807", positive,
        true, "Inert: data is durable in the object store before a produce is acknowledged."),
    def("flush.ms", "log.flush.interval.ms", Long, "9223372036854775807", non_negative, true,
        "Inert: data is durable in the object store before a produce is acknowledged."),
    def("index.interval.bytes", "log.index.interval.bytes", Int, "4096", non_negative, true,
        "Inert: offsets are indexed per stored batch in the metadata store."),
    def("preallocate", "log.preallocate", Boolean, "false", boolean, true,
        "Inert: there are no local files."),
    def("file.delete.delay.ms", "log.segment.delete.delay.ms", Long, "60000", non_negative,
        true, "Inert: there are no local files."),
    def("delete.retention.ms", "log.cleaner.delete.retention.ms", Long, "86400000",
        non_negative, true, "Inert: applies to log compaction, which kafscale never runs (compacted topics keep every record)."),
    def("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", Long, "0", non_negative,
        true, "Inert: applies to log compaction, which kafscale never runs (compacted topics keep every record)."),
    def("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", Long,
        "9223372036854775807", positive, true,
        "Inert: applies to log compaction, which kafscale never runs (compacted topics keep every record)."),
    def("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", Double, "0.5", any,
        true, "Inert: applies to log compaction, which kafscale never runs (compacted topics keep every record)."),
    def("message.downconversion.enable", "log.message.downconversion.enable", Boolean, "true",
        boolean, true, "Inert: records are served in the format they were produced in."),
];

/// The config named `name`.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one config: a known name and a valid value.
pub fn validate_config(name: &str, value: &str) -> Result<(), ConfigError> {
    match config_def(name) {
        Some(d) => d.validate(value),
        None => Err(ConfigError(format!("unknown topic config {name:?}"))),
    }
}

/// Checks a whole set of topic configs (the first refusal wins).
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate_config(name, value))
}

/// Where a config's value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// The cluster-level default of every topic config: the table's Kafka defaults, overridden by
/// the process's flags where it has one.
#[derive(Debug, Clone, Default)]
pub struct ClusterDefaults {
    overrides: BTreeMap<&'static str, String>,
}

impl ClusterDefaults {
    /// Sets `max.message.bytes` (from `--max-message-bytes`).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.overrides
            .insert("max.message.bytes", bytes.to_string());
        self
    }

    /// Sets the cluster default of the topic config `name` (from a flag), validated as a
    /// topic's own value would be.
    pub fn with_default(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        let def = config_def(name)
            .ok_or_else(|| ConfigError(format!("unknown topic config {name:?}")))?;
        def.validate(value)?;
        self.overrides.insert(def.name, value.trim().to_string());
        Ok(self)
    }

    /// The cluster's value of `def` and where it comes from.
    pub fn value(&self, def: &ConfigDef) -> (String, ConfigSource) {
        match self.overrides.get(def.name) {
            Some(v) => (v.clone(), ConfigSource::StaticBrokerConfig),
            None => (def.default.to_string(), ConfigSource::DefaultConfig),
        }
    }
}

/// What retention keeps of each partition of a topic (`retention.ms`, `retention.bytes`;
/// `None` = no limit, Kafka's -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

impl ClusterDefaults {
    /// The retention of a topic with the configs `stored` on it (a value that does not parse,
    /// which validation keeps out of the store, counts as the cluster value).
    pub fn retention(&self, stored: &BTreeMap<String, String>) -> Retention {
        if !self.policy_has(stored, "delete") {
            return Retention::default();
        }
        let limit = |name: &str| -> Option<i64> {
            let def = config_def(name)?;
            let value = |v: &str| v.trim().parse::<i64>().ok();
            let parsed = stored.get(name).and_then(|v| value(v));
            let n = parsed.or_else(|| value(&self.value(def).0))?;
            (n >= 0).then_some(n)
        };
        Retention {
            max_age_ms: limit("retention.ms"),
            max_bytes: limit("retention.bytes").map(|b| b as u64),
        }
    }
}

impl ClusterDefaults {
    /// Whether a topic with the configs `stored` is compacted (`cleanup.policy` lists
    /// `compact`): its records must carry keys.
    pub fn is_compacted(&self, stored: &BTreeMap<String, String>) -> bool {
        self.policy_has(stored, "compact")
    }

    fn policy_has(&self, stored: &BTreeMap<String, String>, policy: &str) -> bool {
        let name = "cleanup.policy";
        let value = match (stored.get(name), config_def(name)) {
            (Some(v), _) => v.clone(),
            (None, Some(def)) => self.value(def).0,
            (None, None) => return policy == "delete",
        };
        list_items(&value).contains(&policy)
    }
}

/// One config of a topic as described: its value and source, and the cluster value below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveConfig {
    pub def: &'static ConfigDef,
    pub value: String,
    pub source: ConfigSource,
    /// The cluster default (broker-level synonym) and its source.
    pub cluster: (String, ConfigSource),
}

impl PartialEq for ConfigDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ConfigDef {}

/// Every config of a topic with the configs `stored` on it, in table order.
pub fn effective_configs(
    stored: &BTreeMap<String, String>,
    cluster: &ClusterDefaults,
) -> Vec<EffectiveConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let cluster_value = cluster.value(def);
            let (value, source) = match stored.get(def.name) {
                Some(v) => (v.clone(), ConfigSource::TopicConfig),
                None => cluster_value.clone(),
            };
            EffectiveConfig {
                def,
                value,
                source,
                cluster: cluster_value,
            }
        })
        .collect()
}

/// An IncrementalAlterConfigs operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl AlterOp {
    /// The protocol's operation code (0-3), or `None` for anything else.
    pub fn from_code(code: i8) -> Option<AlterOp> {
        match code {
            0 => Some(AlterOp::Set),
            1 => Some(AlterOp::Delete),
            2 => Some(AlterOp::Append),
            3 => Some(AlterOp::Subtract),
            _ => None,
        }
    }
}

/// Applies one incremental change to `configs` (Kafka's semantics: APPEND/SUBTRACT only on
/// list configs, on the current value or the default). The result is validated by the caller.
pub fn apply_incremental(
    configs: &mut BTreeMap<String, String>,
    cluster: &ClusterDefaults,
    name: &str,
    op: AlterOp,
    value: Option<&str>,
) -> Result<(), ConfigError> {
    let def =
        config_def(name).ok_or_else(|| ConfigError(format!("unknown topic config {name:?}")))?;
    let value = value.unwrap_or("");
    match op {
        AlterOp::Set => {
            configs.insert(name.to_string(), value.to_string());
        }
        AlterOp::Delete => {
            configs.remove(name);
        }
        AlterOp::Append | AlterOp::Subtract => {
            if def.kind != ConfigType::List {
                return Err(ConfigError(format!(
                    "{op:?} is only allowed on list configs; {name} is not a list"
                )));
            }
            let current = configs
                .get(name)
                .cloned()
                .unwrap_or_else(|| cluster.value(def).0);
            let mut items: Vec<String> =
                list_items(&current).into_iter().map(String::from).collect();
            for item in list_items(value) {
                match op {
                    AlterOp::Append if !items.iter().any(|i| i == item) => items.push(item.into()),
                    AlterOp::Subtract => items.retain(|i| i != item),
                    _ => {}
                }
            }
            configs.insert(name.to_string(), items.join(","));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_default_is_valid_and_names_are_unique() {
        for d in TOPIC_CONFIGS {
            d.validate(d.default)
                .unwrap_or_else(|e| panic!("default of {}: {e}", d.name));
            assert_eq!(
                TOPIC_CONFIGS.iter().filter(|o| o.name == d.name).count(),
                1,
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn kafka_defaults_match() {
        let defaults = effective_configs(&BTreeMap::new(), &ClusterDefaults::default());
        let value = |n: &str| {
            defaults
                .iter()
                .find(|c| c.def.name == n)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(value("retention.ms"), "604800000");
        assert_eq!(value("retention.bytes"), "-1");
        assert_eq!(value("max.message.bytes"), "1048588");
        assert_eq!(value("cleanup.policy"), "delete");
        assert_eq!(value("message.timestamp.type"), "CreateTime");
    }

    #[test]
    fn valid_values_are_accepted() {
        let ok = set(&[
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("max.message.bytes", "2000000"),
            ("cleanup.policy", "delete"),
            ("message.timestamp.type", "CreateTime"),
            ("segment.bytes", "1048576"),
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "TRUE"),
            ("compression.type", "lz4"),
        ]);
        validate_configs(&ok).unwrap();
    }

    #[test]
    fn unsupported_and_bad_values_are_refused_with_a_reason() {
        let refused = |name: &str, value: &str| validate_config(name, value).unwrap_err().0;
        assert!(refused("cleanup.policy", "shrink").contains("delete, compact or both"));
        assert!(refused("cleanup.policy", "").contains("delete, compact or both"));
        assert!(refused("message.timestamp.type", "LogAppendTime").contains("CRC"));
        assert!(refused("retention.ms", "soon").contains("must be an integer"));
        let cluster = ClusterDefaults::default();
        assert_eq!(
            cluster.retention(&set(&[])),
            Retention {
                max_age_ms: Some(604_800_000),
                max_bytes: None
            }
        );
        assert_eq!(
            cluster.retention(&set(&[("retention.ms", "-1"), ("retention.bytes", "4096")])),
            Retention {
                max_age_ms: None,
                max_bytes: Some(4096)
            }
        );
        assert!(refused("retention.ms", "-2").contains("-1"));
        assert!(refused("retention.bytes", "-5").contains("-1"));
        assert!(refused("max.message.bytes", "-1").contains("between 0"));
        assert!(refused("segment.bytes", "0").contains("at least 1"));
        assert!(refused("preallocate", "yes").contains("true or false"));
        assert!(refused("compression.type", "brotli").contains("lz4"));
        assert!(refused("no.such.config", "1").contains("unknown topic config"));
    }

    #[test]
    fn compaction_needs_keys_and_retention_needs_delete() {
        let cluster = ClusterDefaults::default();
        let policy = |p: &str| set(&[("cleanup.policy", p), ("retention.ms", "1000")]);
        assert!(!cluster.is_compacted(&set(&[])));
        assert!(cluster.is_compacted(&policy("compact")));
        assert!(cluster.is_compacted(&policy("delete,compact")));
        assert_eq!(cluster.retention(&policy("compact")), Retention::default());
        assert_eq!(
            cluster.retention(&policy("compact,delete")).max_age_ms,
            Some(1000)
        );
        let compacting = ClusterDefaults::default()
            .with_default("cleanup.policy", "compact")
            .unwrap();
        assert!(compacting.is_compacted(&set(&[])));
        assert!(!compacting.is_compacted(&policy("delete")));
    }

    #[test]
    fn flag_defaults_are_validated_like_topic_configs() {
        let cluster = ClusterDefaults::default()
            .with_default("retention.ms", "3600000")
            .unwrap()
            .with_default("retention.bytes", " 1024 ")
            .unwrap();
        assert_eq!(
            cluster.retention(&set(&[])),
            Retention {
                max_age_ms: Some(3_600_000),
                max_bytes: Some(1024)
            }
        );
        let retention = config_def("retention.ms").unwrap();
        assert_eq!(
            cluster.value(retention),
            ("3600000".to_string(), ConfigSource::StaticBrokerConfig)
        );
        let bad = ClusterDefaults::default().with_default("retention.ms", "-7");
        assert!(bad.unwrap_err().0.contains("retention.ms"));
        let unknown = ClusterDefaults::default().with_default("log.retention.ms", "1");
        assert!(unknown.unwrap_err().0.contains("unknown"));
    }

    #[test]
    fn stored_configs_override_cluster_defaults_which_override_the_table() {
        let cluster = ClusterDefaults::default().with_max_message_bytes(5_000_000);
        let described = effective_configs(&set(&[("retention.ms", "1000")]), &cluster);
        let get = |n: &str| described.iter().find(|c| c.def.name == n).unwrap().clone();
        let retention = get("retention.ms");
        assert_eq!(retention.value, "1000");
        assert_eq!(retention.source, ConfigSource::TopicConfig);
        assert_eq!(
            retention.cluster,
            ("604800000".to_string(), ConfigSource::DefaultConfig)
        );
        let max = get("max.message.bytes");
        assert_eq!(max.value, "5000000");
        assert_eq!(max.source, ConfigSource::StaticBrokerConfig);
        assert_eq!(described.len(), TOPIC_CONFIGS.len());
    }

    #[test]
    fn incremental_ops_follow_kafka() {
        let cluster = ClusterDefaults::default();
        let mut c = BTreeMap::new();
        apply_incremental(&mut c, &cluster, "retention.ms", AlterOp::Set, Some("5")).unwrap();
        assert_eq!(c, set(&[("retention.ms", "5")]));
        apply_incremental(&mut c, &cluster, "retention.ms", AlterOp::Delete, None).unwrap();
        assert!(c.is_empty());
        let e = apply_incremental(&mut c, &cluster, "retention.ms", AlterOp::Append, Some("1"));
        assert!(e.unwrap_err().0.contains("not a list"));
        // APPEND starts from the default and never duplicates; SUBTRACT removes.
        apply_incremental(
            &mut c,
            &cluster,
            "cleanup.policy",
            AlterOp::Append,
            Some("delete"),
        )
        .unwrap();
        assert_eq!(c, set(&[("cleanup.policy", "delete")]));
        apply_incremental(
            &mut c,
            &cluster,
            "cleanup.policy",
            AlterOp::Append,
            Some("compact"),
        )
        .unwrap();
        assert_eq!(c, set(&[("cleanup.policy", "delete,compact")]));
        validate_configs(&c).unwrap();
        apply_incremental(
            &mut c,
            &cluster,
            "cleanup.policy",
            AlterOp::Subtract,
            Some("compact"),
        )
        .unwrap();
        assert_eq!(c, set(&[("cleanup.policy", "delete")]));
        let unknown = apply_incremental(&mut c, &cluster, "nope", AlterOp::Set, Some("1"));
        assert!(unknown.unwrap_err().0.contains("unknown"));
    }
}

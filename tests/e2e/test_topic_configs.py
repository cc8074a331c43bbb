"""Topic configs through real admin clients: CreateTopics with configs and
validate_only, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and
DescribeCluster, with confluent-kafka (librdkafka) and kafka-python.

Every supported config is set, read back and deleted; refused configs
(LogAppendTime, unknown names, bad values) come back as INVALID_CONFIG with
the reason, and nothing is stored for them. A compacted topic refuses
key-less records as Kafka does (INVALID_RECORD, naming each record).
"""

from __future__ import annotations

import uuid

import pytest

# A valid non-default value for every supported topic config (shared/src/topic_config.rs).
VALUES = {
    "retention.ms": "3600000",
    "retention.bytes": "1048576",
    "max.message.bytes": "2097152",
    "cleanup.policy": "compact,delete",
    "message.timestamp.type": "CreateTime",
    "compression.type": "zstd",
    "segment.bytes": "16777216",
    "segment.ms": "3600000",
    "segment.index.bytes": "1048576",
    "segment.jitter.ms": "10",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "true",
    "flush.messages": "1000",
    "flush.ms": "1000",
    "index.interval.bytes": "8192",
    "preallocate": "true",
    "file.delete.delay.ms": "1000",
    "delete.retention.ms": "1000",
    "min.compaction.lag.ms": "10",
    "max.compaction.lag.ms": "100000",
    "min.cleanable.dirty.ratio": "0.25",
    "message.downconversion.enable": "false",
}
DEFAULTS = {
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
}


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(kafscale_module):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafscale_module.bootstrap})


def create(admin, name, config=None, validate_only=False):
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1, config=config or {})],
        validate_only=validate_only, operation_timeout=10, request_timeout=15)
    return futures[name].result(timeout=30)


def error_of(future):
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException) as info:
        future.result(timeout=30)
    return info.value.args[0]


def describe(admin, name):
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource], request_timeout=15)[resource].result(timeout=30)
    return {n: e.value for n, e in entries.items()}


def incremental(admin, name, ops):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    entries = [ConfigEntry(n, v, incremental_operation=getattr(AlterConfigOpType, op))
               for n, op, v in ops]
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
    return admin.incremental_alter_configs([resource], request_timeout=15)[resource]


def listed_topics(admin) -> set[str]:
    return set(admin.list_topics(timeout=10).topics)


def test_create_with_configs_and_validate_only(admin):
    from confluent_kafka import KafkaError

    name = topic_name("cfg-create")
    create(admin, name, {"retention.ms": "3600000", "segment.bytes": "16777216"}, validate_only=True)
    assert name not in listed_topics(admin), "validate_only created the topic"

    create(admin, name, {"retention.ms": "3600000", "segment.bytes": "16777216"})
    configs = describe(admin, name)
    assert configs["retention.ms"] == "3600000"
    assert configs["segment.bytes"] == "16777216"
    assert configs["retention.bytes"] == "-1"

    # Refused at validate_only too, with the reason.
    bad = topic_name("cfg-bad")
    from confluent_kafka.admin import NewTopic

    for config, reason in [({"cleanup.policy": "shrink"}, "delete, compact or both"),
                           ({"message.timestamp.type": "LogAppendTime"}, "LogAppendTime is not supported"),
                           ({"no.such.config": "1"}, "unknown topic config"),
                           ({"retention.ms": "soon"}, "must be an integer"),
                           ({"retention.bytes": "-2"}, "-1")]:
        for validate_only in (True, False):
            futures = admin.create_topics(
                [NewTopic(bad, num_partitions=1, replication_factor=1, config=config)],
                validate_only=validate_only, request_timeout=15)
            error = error_of(futures[bad])
            assert error.code() == KafkaError.INVALID_CONFIG, (config, error)
            assert reason in error.str(), (config, error.str())
    assert bad not in listed_topics(admin)


def test_describe_reports_defaults_sources_and_synonyms(admin, kafscale_module):
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    name = topic_name("cfg-describe")
    create(admin, name, {"retention.ms": "1000"})
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource], request_timeout=15)[resource].result(timeout=30)
    assert set(entries) == set(VALUES), sorted(set(entries) ^ set(VALUES))
    for key, value in DEFAULTS.items():
        if key != "retention.ms":
            assert entries[key].value == value, key
            assert entries[key].source == ConfigSource.DEFAULT_CONFIG.value, key
    retention = entries["retention.ms"]
    assert retention.value == "1000"
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    synonyms = {s.name: s.value for s in retention.synonyms.values()}
    assert synonyms.get("log.retention.ms") == "604800000", synonyms
    # The standalone server's --max-message-bytes default is the cluster value.
    assert entries["max.message.bytes"].value == "1048588"

    missing = ConfigResource(ResourceType.TOPIC, topic_name("cfg-missing"))
    from confluent_kafka import KafkaError

    error = error_of(admin.describe_configs([missing], request_timeout=15)[missing])
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # The broker resource: the cluster defaults under their broker-level names, read-only.
    node = admin.describe_cluster(request_timeout=15).result(timeout=30).nodes[0]
    broker = ConfigResource(ResourceType.BROKER, str(node.id))
    broker_entries = admin.describe_configs([broker], request_timeout=15)[broker].result(timeout=30)
    assert broker_entries["log.retention.ms"].value == "604800000"
    assert broker_entries["message.max.bytes"].value == "1048588"
    assert all(e.is_read_only for e in broker_entries.values())


def test_incremental_alter_round_trips_every_supported_config(admin):
    from confluent_kafka import KafkaError

    name = topic_name("cfg-incr")
    create(admin, name)
    for key, value in VALUES.items():
        incremental(admin, name, [(key, "SET", value)]).result(timeout=30)
        assert describe(admin, name)[key] == value, key
    assert describe(admin, name) == VALUES

    # DELETE returns each to its default.
    incremental(admin, name, [(key, "DELETE", None) for key in VALUES]).result(timeout=30)
    configs = describe(admin, name)
    for key, value in DEFAULTS.items():
        assert configs[key] == value, key

    # Refusals are per resource and leave the topic as it was.
    incremental(admin, name, [("retention.ms", "SET", "5000")]).result(timeout=30)
    for ops, code, reason in [
        ([("cleanup.policy", "SET", "none")], KafkaError.INVALID_CONFIG, "delete, compact or both"),
        ([("cleanup.policy", "APPEND", "shrink")], KafkaError.INVALID_CONFIG, "unknown cleanup policy"),
        ([("retention.ms", "APPEND", "1")], KafkaError.INVALID_CONFIG, "not a list"),
        ([("message.timestamp.type", "SET", "LogAppendTime")], KafkaError.INVALID_CONFIG, "CRC"),
        ([("no.such.config", "SET", "1")], KafkaError.INVALID_CONFIG, "unknown topic config"),
        ([("retention.ms", "SET", "-5")], KafkaError.INVALID_CONFIG, "-1"),
    ]:
        error = error_of(incremental(admin, name, ops))
        assert error.code() == code, (ops, error)
        assert reason in error.str(), (ops, error.str())
    assert describe(admin, name)["retention.ms"] == "5000"

    missing = topic_name("cfg-missing")
    error = error_of(incremental(admin, missing, [("retention.ms", "SET", "1")]))
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_alter_configs_replaces_the_whole_set(admin):
    from confluent_kafka.admin import ConfigResource, ResourceType

    name = topic_name("cfg-alter")
    create(admin, name, {"retention.ms": "1000", "segment.ms": "5000"})
    resource = ConfigResource(ResourceType.TOPIC, name, set_config={"retention.bytes": "4096"})
    admin.alter_configs([resource], request_timeout=15)[resource].result(timeout=30)
    configs = describe(admin, name)
    assert configs["retention.bytes"] == "4096"
    assert configs["retention.ms"] == "604800000", "AlterConfigs must reset omitted configs"
    assert configs["segment.ms"] == "604800000"

    from confluent_kafka import KafkaError

    bad = ConfigResource(ResourceType.TOPIC, name, set_config={"cleanup.policy": "none"})
    error = error_of(admin.alter_configs([bad], request_timeout=15)[bad])
    assert error.code() == KafkaError.INVALID_CONFIG
    assert describe(admin, name)["retention.bytes"] == "4096"


def test_describe_cluster(admin, kafscale_module):
    from kafka.admin import KafkaAdminClient

    # librdkafka answers describe_cluster() from Metadata; kafka-python sends DescribeCluster.
    cluster = admin.describe_cluster(request_timeout=15).result(timeout=30)
    assert cluster.cluster_id
    assert len(cluster.nodes) == 1
    host, port = kafscale_module.bootstrap.rsplit(":", 1)
    assert (cluster.nodes[0].host, cluster.nodes[0].port) == (host, int(port))
    assert cluster.controller.id == cluster.nodes[0].id

    client = KafkaAdminClient(bootstrap_servers=kafscale_module.bootstrap,
                              client_id="kafscale-e2e-cluster", request_timeout_ms=15000)
    try:
        described = client.describe_cluster()
    finally:
        client.close()
    assert described["cluster_id"] == cluster.cluster_id
    assert described["controller_id"] == cluster.controller.id
    brokers = [(b["broker_id"], b["host"], b["port"]) for b in described["brokers"]]
    assert brokers == [(cluster.nodes[0].id, host, int(port))]


def test_kafka_python_describe_and_alter(admin, kafscale_module):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    name = topic_name("cfg-kp")
    create(admin, name, {"retention.ms": "1000"})
    client = KafkaAdminClient(bootstrap_servers=kafscale_module.bootstrap,
                              client_id="kafscale-e2e-configs", request_timeout_ms=15000)
    try:
        def kp_describe():
            result = client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all")
            return {k: v["value"] for k, v in result["topic"][name].items()}

        assert kp_describe()["retention.ms"] == "1000"
        modified = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        assert set(modified["topic"][name]) == {"retention.ms"}, modified

        for key, value in VALUES.items():
            result = client.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs={key: value})])
            assert result["topic"][name] == "OK", (key, result)
        assert {k: v for k, v in kp_describe().items() if k in VALUES} == VALUES

        # Forced through the non-incremental AlterConfigs too.
        result = client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": "7000"})],
            incremental=False)
        assert result["topic"][name] == "OK", result
        assert kp_describe()["retention.ms"] == "7000"

        before = kp_describe()["cleanup.policy"]
        result = client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"cleanup.policy": "none"})])
        assert "InvalidConfig" in result["topic"][name] or "INVALID_CONFIG" in result["topic"][name].upper(), result
        assert kp_describe()["cleanup.policy"] == before
    finally:
        client.close()


def test_concurrent_alters_lose_no_update(admin, kafscale_module):
    """Alters from many clients at once, each of a different config: every one is kept
    (each alter is a conditional write on the topic item, re-applied when it lost a race)."""
    from concurrent.futures import ThreadPoolExecutor

    from confluent_kafka.admin import AdminClient

    name = topic_name("cfg-race")
    create(admin, name)
    keys = [k for k in VALUES if k not in DEFAULTS or VALUES[k] != DEFAULTS[k]]

    def alter(key):
        client = AdminClient({"bootstrap.servers": kafscale_module.bootstrap})
        incremental(client, name, [(key, "SET", VALUES[key])]).result(timeout=30)

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        list(pool.map(alter, keys))
    configs = describe(admin, name)
    assert {k: configs[k] for k in keys} == {k: VALUES[k] for k in keys}


def test_a_compacted_topic_refuses_key_less_records_naming_each(admin, kafscale_module):
    """Kafka's rule for cleanup.policy=compact: a batch holding a record without
    a key is refused with INVALID_RECORD, and the answer names each such record
    (Produce v8+ record_errors), so librdkafka fails exactly those with
    INVALID_RECORD and the rest of their batch with _INVALID_DIFFERENT_RECORD.
    Nothing of a refused batch is stored; keyed records (an empty key is a key)
    are accepted."""
    import kafka_helpers as kh

    bootstrap = kafscale_module.bootstrap
    name = topic_name("cfg-compact")
    create(admin, name, {"cleanup.policy": "compact"})
    items = [{"key": None if i % 4 == 0 else f"k{i}".encode(), "value": f"v{i}".encode()}
             for i in range(20)]
    deliveries = kh.confluent_produce(bootstrap, name, items, conf={"linger.ms": 200})
    errors = {d.index: d.error for d in deliveries if d.error is not None}
    keyless = [i for i, item in enumerate(items) if item["key"] is None]
    assert all("code=INVALID_RECORD" in errors.get(i, "") for i in keyless), errors
    others = {i: e for i, e in errors.items() if i not in keyless}
    assert all("_INVALID_DIFFERENT_RECORD" in e for e in others.values()), others
    stored = [d for d in deliveries if d.error is None]
    assert kh.confluent_watermarks(bootstrap, name, [0])[0] == (0, len(stored))

    keyed = [{"key": b"" if i == 0 else f"k{i}".encode(), "value": b"x"} for i in range(5)]
    accepted = kh.confluent_produce(bootstrap, name, keyed)
    assert [d.error for d in accepted] == [None] * 5
    assert [d.offset for d in accepted] == list(range(len(stored), len(stored) + 5))

"""Retention through real clients: retention.ms and retention.bytes set with
confluent-kafka's AdminClient move a partition's log start offset forward.

The indexer checks retention every 200 ms here (--retention-check-interval-ms).
Records are produced with explicit CreateTime timestamps (an hour old, then
current), so which of them expire does not depend on how long the test takes;
each produce call is flushed before the next, so each lands in its own
segment and index entry, and retention drops whole entries as Kafka drops
whole segments.

After the log start moves: ListOffsets earliest answers it; a consumer from
the beginning (auto.offset.reset=earliest) starts there; a fetch below it is
answered OFFSET_OUT_OF_RANGE and the consumer moves on. Garbage collection
(every 200 ms, 300 ms grace, 5 s commit horizon here) then deletes the segment
files nothing references and orphans from the data directory.
"""

from __future__ import annotations

import time
import uuid

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(180)

HOUR_MS = 3_600_000


GC_FLAGS = ["--gc-interval-ms", "200", "--gc-grace-ms", "300",
            "--segment-commit-max-age-ms", "5000"]


@pytest.fixture
def server(kafscale_factory):
    return kafscale_factory(["--retention-check-interval-ms", "200", *GC_FLAGS])


def segment_files(server) -> set[str]:
    root = server.data_dir / "objects"
    return {str(p.relative_to(root)) for p in (root / "segments").rglob("*") if p.is_file()}


def create_topic(bootstrap: str, name: str, config: dict[str, str], partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
        operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=30)


def alter(bootstrap: str, name: str, key: str, value: str) -> None:
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, ResourceType)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def produce(bootstrap: str, topic: str, tag: str, count: int, timestamp_ms: int) -> list[int]:
    items = [{"key": f"{tag}-{i}".encode(), "value": f"{tag}-{i}".encode(),
              "timestamp": timestamp_ms} for i in range(count)]
    deliveries = kh.confluent_produce(bootstrap, topic, items)
    assert all(d.error is None for d in deliveries), deliveries
    return [d.offset for d in deliveries]


def low_watermark(bootstrap: str, topic: str) -> int:
    return kh.confluent_watermarks(bootstrap, topic, [0])[0][0]


def wait_for_log_start(bootstrap: str, topic: str, offset: int) -> None:
    kh.wait_for(lambda: low_watermark(bootstrap, topic) == offset, timeout=60,
                interval=0.2, what=f"log start offset {offset} of {topic}")


def retained_records(server, topic: str) -> float | None:
    """The kafscale_topic_retained_records gauge of `topic`, if exported."""
    series = f'kafscale_topic_retained_records{{topic="{topic}"}}'
    for line in server.http_get("/metrics")[1].decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_retention_ms_drops_expired_records_and_consumers_start_at_the_log_start(server):
    topic = f"retention-ms-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {"retention.ms": str(10 * 60 * 1000)})
    now = int(time.time() * 1000)
    old = produce(server.bootstrap, topic, "old", 10, now - HOUR_MS)
    fresh = produce(server.bootstrap, topic, "fresh", 10, now)
    assert (old, fresh) == (list(range(10)), list(range(10, 20)))

    wait_for_log_start(server.bootstrap, topic, 10)
    assert kh.confluent_watermarks(server.bootstrap, topic, [0])[0] == (10, 20)
    # The retained-size gauges follow (set at the end of a pass).
    kh.wait_for(lambda: retained_records(server, topic) == 10, timeout=30, interval=0.2,
                what="kafscale_topic_retained_records of the topic at 10")
    # Nothing fresh goes: the log start stays at 10 over several more passes.
    records = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=10)
    assert [r.value for r in records] == [f"fresh-{i}".encode() for i in range(10)]
    assert [r.offset for r in records] == list(range(10, 20))
    assert low_watermark(server.bootstrap, topic) == 10

    # A consumer whose position is below the log start (offset 0) is answered
    # OFFSET_OUT_OF_RANGE and, with auto.offset.reset=earliest, moves to 10.
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = kh.Deadline(60)
        while len(got) < 10 and not deadline.expired():
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                if msg.error() is None:
                    got.append(msg.offset())
        assert got == list(range(10, 20))
    finally:
        consumer.close()


def test_retention_bytes_keeps_the_newest_entries(server):
    topic = f"retention-bytes-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {})
    now = int(time.time() * 1000)
    for tag in ("a", "b", "c"):
        produce(server.bootstrap, topic, tag, 10, now)
    assert low_watermark(server.bootstrap, topic) == 0
    # One byte: every entry but the newest goes (Kafka keeps the active segment).
    alter(server.bootstrap, topic, "retention.bytes", "1")
    wait_for_log_start(server.bootstrap, topic, 20)
    records = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=10)
    assert [r.value for r in records] == [f"c-{i}".encode() for i in range(10)]
    metrics = server.http_get("/metrics")[1].decode()
    removed = [line for line in metrics.splitlines()
               if line.startswith("kafscale_indexer_retention_entries_removed_total")]
    assert removed and float(removed[0].split()[-1]) >= 2, removed


def delete_records(bootstrap: str, topic: str, offsets: dict[int, int]) -> dict[int, object]:
    """confluent-kafka's AdminClient.delete_records: {partition: DeletedRecords or the
    KafkaException raised}."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()],
                                   request_timeout=15, operation_timeout=15)
    out: dict[int, object] = {}
    for tp, future in futures.items():
        try:
            out[tp.partition] = future.result(timeout=30)
        except KafkaException as exc:
            out[tp.partition] = exc
    return out


def test_delete_records_moves_the_log_start(server):
    topic = f"delete-records-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {})
    produce(server.bootstrap, topic, "r", 10, int(time.time() * 1000))
    result = delete_records(server.bootstrap, topic, {0: 4})
    assert result[0].low_watermark == 4, result
    assert kh.confluent_watermarks(server.bootstrap, topic, [0])[0] == (4, 10)
    records = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=6)
    assert [r.offset for r in records] == list(range(4, 10))
    # Past the high watermark: OFFSET_OUT_OF_RANGE, and the log start stays.
    from confluent_kafka import KafkaError

    refused = delete_records(server.bootstrap, topic, {0: 11})[0]
    assert refused.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, refused
    assert low_watermark(server.bootstrap, topic) == 4


def test_list_offsets_never_answers_below_a_log_start_inside_an_entry(server):
    """DeleteRecords to the middle of an index entry (one produced batch): a
    lookup by time, or of the largest timestamp, considers only the records
    from the log start on, as Kafka does."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    topic = f"list-offsets-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {})
    base = int(time.time() * 1000) - 60_000
    # Timestamps fall with the offset: the largest is at offset 0.
    items = [{"key": b"k", "value": f"v{i}".encode(), "timestamp": base + 10 - i}
             for i in range(10)]
    deliveries = kh.confluent_produce(server.bootstrap, topic, items, conf={"linger.ms": 100})
    assert [d.offset for d in deliveries] == list(range(10))
    assert delete_records(server.bootstrap, topic, {0: 5})[0].low_watermark == 5

    consumer = Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"g-{topic}"})
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, 0, base)], timeout=15)
        assert found[0].offset == 5, found
    finally:
        consumer.close()
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    tp = TopicPartition(topic, 0)
    newest = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=30)
    assert (newest.offset, newest.timestamp) == (5, base + 5), newest


def test_gc_deletes_the_segments_retention_dropped_and_orphans_and_keeps_the_rest(server):
    topic = f"gc-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {"retention.ms": str(10 * 60 * 1000)})
    before = segment_files(server)
    now = int(time.time() * 1000)
    produce(server.bootstrap, topic, "old", 10, now - HOUR_MS)
    old_segments = segment_files(server) - before
    produce(server.bootstrap, topic, "fresh", 10, now)
    fresh_segments = segment_files(server) - before - old_segments
    assert old_segments and fresh_segments
    # An orphan (an upload an hour old that was never committed) and a file that is not a
    # segment key: the first goes, the second is never touched.
    orphan = server.data_dir / "objects" / "segments" / "7f" / \
        f"{now - HOUR_MS:013d}-{uuid.uuid4().hex}.kseg"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"uploaded, never committed")
    foreign = server.data_dir / "objects" / "segments" / "zz" / "not-a-segment.txt"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"x")

    wait_for_log_start(server.bootstrap, topic, 10)
    kh.wait_for(lambda: not (segment_files(server) & old_segments) and not orphan.exists(),
                timeout=60, interval=0.2, what="the old segments and the orphan deleted")
    left = segment_files(server)
    assert fresh_segments <= left, "a referenced segment was deleted"
    assert foreign.exists()
    assert kh.metric_value(server, "kafscale_gc_segments_deleted_total") >= len(old_segments)
    assert kh.metric_value(server, "kafscale_gc_orphans_deleted_total") >= 1
    # Everything at or above the log start is still read, from the kept segments.
    records = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=10)
    assert [r.value for r in records] == [f"fresh-{i}".encode() for i in range(10)]


def test_an_idle_idempotent_producer_resumes_after_its_state_expired(kafscale_factory):
    server = kafscale_factory(["--retention-check-interval-ms", "200",
                               "--producer-id-expiration-ms", "500"])
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    create_topic(server.bootstrap, topic, {})
    from confluent_kafka import Producer

    acked: list[tuple[int, bytes]] = []
    errors: list = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.offset(), msg.value()))

    producer = Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    for i in range(20):
        producer.produce(topic, value=f"before-{i}".encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    # The indexer forgets the producer's state after 500 ms without a batch.
    kh.wait_for(lambda: kh.metric_value(server, "kafscale_indexer_producer_states_expired_total") >= 1,
                timeout=60, interval=0.2, what="the idle producer's state expired")
    for i in range(20):
        producer.produce(topic, value=f"after-{i}".encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors, errors
    expected = [f"before-{i}".encode() for i in range(20)] + \
        [f"after-{i}".encode() for i in range(20)]
    assert sorted(acked) == list(enumerate(expected))
    records = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=40)
    assert [(r.offset, r.value) for r in records] == list(enumerate(expected))


def test_cluster_default_retention_applies_only_where_the_policy_deletes(kafscale_factory):
    """--default-retention-ms is the retention.ms of topics that set none
    (described as a static broker config); a compact-only topic keeps every
    record, a compact,delete topic is trimmed like any other."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType

    server = kafscale_factory(["--retention-check-interval-ms", "200",
                               "--default-retention-ms", str(10 * 60 * 1000)])
    suffix = uuid.uuid4().hex[:8]
    plain, compacted, both = (f"{p}-{suffix}" for p in ("default", "compact", "compact-delete"))
    create_topic(server.bootstrap, plain, {})
    create_topic(server.bootstrap, compacted, {"cleanup.policy": "compact"})
    create_topic(server.bootstrap, both, {"cleanup.policy": "compact,delete"})
    now = int(time.time() * 1000)
    for topic in (plain, compacted, both):
        produce(server.bootstrap, topic, "old", 10, now - HOUR_MS)
        produce(server.bootstrap, topic, "fresh", 10, now)

    wait_for_log_start(server.bootstrap, plain, 10)
    wait_for_log_start(server.bootstrap, both, 10)
    # A pass that started after this has looked at the compact-only topic too.
    seen = time.time()
    kh.wait_for(lambda: kh.metric_value(
        server, "kafscale_indexer_retention_last_pass_timestamp_seconds") > seen,
        timeout=30, interval=0.2, what="a retention pass after the others were trimmed")
    assert kh.confluent_watermarks(server.bootstrap, compacted, [0])[0] == (0, 20)

    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, plain)
    entry = admin.describe_configs([resource])[resource].result(timeout=30)["retention.ms"]
    assert (entry.value, entry.source) == ("600000", ConfigSource.STATIC_BROKER_CONFIG.value)

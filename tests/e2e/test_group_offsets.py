"""Committed offsets of consumer groups (FindCoordinator, OffsetCommit,
OffsetFetch) with real clients and manually assigned partitions: a consumer
commits, closes, and a new consumer of the same group resumes exactly there,
also after a server restart (SIGKILL). Groups with membership (subscribe())
are tested in test_consumer_groups.py."""

from __future__ import annotations

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(180)


def _produce(bootstrap: str, topic: str, partitions: int, n: int) -> None:
    items = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % partitions}
             for i in range(n)]
    deliveries = kh.confluent_produce(bootstrap, topic, items)
    assert all(d.error is None for d in deliveries)


def _consume_n(consumer, n: int, timeout: float = 60.0) -> list:
    got = []
    deadline = kh.Deadline(timeout)
    while len(got) < n and not deadline.expired():
        for m in consumer.consume(num_messages=n - len(got), timeout=0.5):
            if m.error() is None:
                got.append(m)
    assert len(got) == n, f"consumed {len(got)} of {n}"
    return got


def _confluent_commit_then_resume(first: str, second: str, topic: str, restart=None) -> None:
    from confluent_kafka import Consumer, TopicPartition

    conf = {"group.id": "offsets-g1", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    tps = [TopicPartition(topic, p) for p in range(2)]
    c1 = Consumer({"bootstrap.servers": first, **conf})
    seen = []
    try:
        # 20 records of partition 0, then 13 of partition 1, each committed as consumed.
        for tp, n in ((tps[0], 20), (tps[1], 13)):
            c1.assign([tp])
            seen += _consume_n(c1, n)
            c1.commit(asynchronous=False)
    finally:
        c1.close()
    positions = {0: 20, 1: 13}
    if restart is not None:
        restart()
    c2 = Consumer({"bootstrap.servers": second, **conf})
    try:
        committed = {tp.partition: tp.offset for tp in c2.committed(tps, timeout=30)}
        assert committed == positions, (committed, positions)
        c2.assign(tps)
        rest = _consume_n(c2, 100 - 33)
    finally:
        c2.close()
    first_offsets = {}
    for m in rest:
        first_offsets.setdefault(m.partition(), m.offset())
    assert first_offsets == positions, "the second consumer must resume at the committed offsets"
    values = sorted(m.value() for m in seen + rest)
    assert values == sorted(f"v{i}".encode() for i in range(100)), "nothing skipped or repeated"


def test_confluent_commit_and_resume(kafscale):
    topic = "offsets-confluent"
    kh.confluent_create_topic(kafscale.bootstrap, topic, 2)
    _produce(kafscale.bootstrap, topic, 2, 100)
    _confluent_commit_then_resume(kafscale.bootstrap, kafscale.bootstrap, topic)


def test_committed_offsets_survive_sigkill(kafscale):
    topic = "offsets-restart"
    kh.confluent_create_topic(kafscale.bootstrap, topic, 2)
    _produce(kafscale.bootstrap, topic, 2, 100)
    _confluent_commit_then_resume(kafscale.bootstrap, kafscale.bootstrap, topic,
                                  restart=lambda: kafscale.kill9(restart=True))


def test_kafka_python_commit_with_metadata(kafscale):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic = "offsets-kafka-python"
    kh.confluent_create_topic(kafscale.bootstrap, topic, 1)
    _produce(kafscale.bootstrap, topic, 1, 10)
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=kafscale.bootstrap, group_id="offsets-kp",
                      enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        c.assign([tp])
        assert c.committed(tp) is None
        c.commit({tp: OffsetAndMetadata(7, "checkpoint-7", -1)})
        assert c.committed(tp) == 7
        meta = c.committed(tp, metadata=True)
        assert (meta.offset, meta.metadata) == (7, "checkpoint-7")
    finally:
        c.close()
    # Another client library reads the same commit.
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as CTP

    cc = Consumer({"bootstrap.servers": kafscale.bootstrap, "group.id": "offsets-kp"})
    try:
        (got,) = cc.committed([CTP(topic, 0)], timeout=30)
        assert (got.offset, got.metadata) == (7, "checkpoint-7")
    finally:
        cc.close()


def test_commits_to_unknown_topics_and_generations_are_refused(kafscale):
    """Raw OffsetCommit v2: an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION, and
    a commit that names a generation (group membership is not served yet) gets
    ILLEGAL_GENERATION instead of being stored."""
    from kafka_helpers import Reader, i16, i32, i64, kstring  # noqa: F401

    def commit_v2(generation: int, member: str, topic: str) -> int:
        body = (kstring("raw-group") + i32(generation) + kstring(member) + i64(-1)
                + i32(1) + kstring(topic) + i32(1) + i32(0) + i64(5) + kstring(""))
        with kh.RawConnection(kafscale.bootstrap) as conn:
            r = conn.request(8, 2, body)
            assert r.i32() == 1  # topics
            r.string()
            assert r.i32() == 1  # partitions
            r.i32()
            return r.i16()

    kh.confluent_create_topic(kafscale.bootstrap, "offsets-raw", 1)
    assert commit_v2(-1, "", "no-such-topic") == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert commit_v2(4, "member-1", "offsets-raw") == 22  # ILLEGAL_GENERATION
    assert commit_v2(-1, "", "offsets-raw") == 0

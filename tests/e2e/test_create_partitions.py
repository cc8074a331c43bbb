"""CreatePartitions through real clients: growing a topic that a consumer group
is subscribed to must be visible to every client, not only to the catalog.

confluent-kafka's AdminClient raises a topic from 2 to 6 partitions while a
group member holds the 2 old ones. Then Metadata lists 6 partitions, a producer
with librdkafka's default partitioner spreads keyed records over the new ones
too, and the group is rebalanced onto all 6 (librdkafka notices the new count on
its next metadata refresh, 500 ms here) and consumes every record exactly once.
Kafka's refusals hold: a count not above the current one is INVALID_PARTITIONS,
an unknown topic UNKNOWN_TOPIC_OR_PART, and validate_only changes nothing.

In distributed mode (two shards, two indexers) the new partitions are sequenced
by their shards' owners: records go through an ingest gateway and come back,
with contiguous offsets, through a fetch gateway's group coordinator.
"""

from __future__ import annotations

import collections
import uuid

import pytest

import kafka_helpers as kh
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

pytestmark = pytest.mark.deadline(180)

BEFORE, AFTER = 2, 6
RECORDS = 300
# A short initial rebalance delay keeps the tests quick (as in test_consumer_groups.py).
SERVER_ARGS = ["--group-initial-rebalance-delay-ms", "1000"]


@pytest.fixture
def server(kafscale_factory):
    return kafscale_factory(SERVER_ARGS, name="kafscale")


def create_partitions(bootstrap: str, topic: str, count: int, validate_only: bool = False):
    """AdminClient.create_partitions; returns None or the KafkaError it failed with."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_partitions([NewPartitions(topic, count)], validate_only=validate_only,
                                     operation_timeout=15, request_timeout=20)[topic]
    try:
        future.result(timeout=30)
        return None
    except KafkaException as exc:
        return exc.args[0]


def partition_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return len(t.partitions)


class Subscriber:
    """One confluent-kafka group member (subscribe(), eager range assignor), polled
    by the test thread; keeps every record delivered to it."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": True,
            "topic.metadata.refresh.interval.ms": 500, "session.timeout.ms": 10_000})
        self.consumer.subscribe([topic])
        self.records: list[kh.Consumed] = []
        self.errors: list[str] = []

    def poll(self, timeout: float = 0.2) -> None:
        for msg in self.consumer.consume(num_messages=500, timeout=timeout):
            err = msg.error()
            if err is not None:
                assert not err.fatal(), f"fatal consumer error: {err}"
                self.errors.append(str(err))
                continue
            self.records.append(kh.Consumed(msg.partition(), msg.offset(), msg.key(), msg.value()))

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def wait_assigned(self, partitions: set[int], timeout: float = 60.0) -> None:
        def done():
            self.poll()
            return self.assigned() == partitions
        kh.wait_for(done, timeout, interval=0,
                    what=f"the group to assign partitions {sorted(partitions)} (errors {self.errors[-3:]})")

    def close(self) -> None:
        self.consumer.close()


def grow_a_subscribed_topic(admin: str, consume: str) -> str:
    """The main scenario; `admin` takes the admin requests and the produce, `consume`
    serves the group and its fetches (the same broker in standalone mode). Returns the topic."""
    topic = f"grow-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(admin, topic, BEFORE)
    kh.wait_confluent_metadata(consume, topic, BEFORE)
    member = Subscriber(consume, topic, group=f"g-{topic}")
    try:
        member.wait_assigned(set(range(BEFORE)))

        assert create_partitions(admin, topic, AFTER) is None
        # (a) The broker that made the change answers with the new count at once; the
        # others (distributed mode) once their topic cache expired.
        assert partition_count(admin, topic) == AFTER
        kh.wait_confluent_metadata(consume, topic, AFTER)

        # (b) The default partitioner (no partition given) spreads keys over all 6.
        items = [{"key": f"key-{i}".encode(), "value": f"v-{i}".encode()} for i in range(RECORDS)]
        deliveries = kh.confluent_produce(admin, topic, items)
        assert [d for d in deliveries if d.error is not None] == []
        used = collections.Counter(d.partition for d in deliveries)
        assert set(used) & set(range(BEFORE, AFTER)), used
        assert set(used) == set(range(AFTER)), used  # deterministic: the keys hash to all 6
        acked = {(d.partition, d.offset): items[d.index]["value"] for d in deliveries}

        # (c) The group is rebalanced onto all 6 partitions and reads everything once.
        def consumed_all():
            member.poll()
            got = {(r.partition, r.offset) for r in member.records}
            return member.assigned() == set(range(AFTER)) and got >= set(acked)
        kh.wait_for(consumed_all, 90, interval=0,
                    what=f"the group to consume all {RECORDS} records from {AFTER} partitions "
                         f"(assigned {sorted(member.assigned())}, {len(member.records)} records, "
                         f"errors {member.errors[-3:]})")
        member.poll(timeout=1.0)  # a late duplicate would arrive now
    finally:
        member.close()
    dupes = [k for k, n in collections.Counter((r.partition, r.offset) for r in member.records).items()
             if n > 1]
    assert dupes == [], f"{len(dupes)} records delivered twice, first {dupes[:5]}"
    assert {(r.partition, r.offset): r.value for r in member.records} == acked
    assert kh.assert_contiguous_offsets(sorted(member.records, key=lambda r: (r.partition, r.offset))) \
        == dict(sorted(used.items()))
    assert kh.confluent_watermarks(consume, topic, range(AFTER)) == {p: (0, used[p]) for p in range(AFTER)}
    return topic


def test_a_subscribed_topic_grows_and_the_group_and_producers_use_the_new_partitions(server):
    grow_a_subscribed_topic(server.bootstrap, server.bootstrap)


def test_create_partitions_refusals_and_validate_only(server):
    from confluent_kafka import KafkaError

    topic = f"refuse-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(server.bootstrap, topic, 3)
    for count in (2, 3):  # fewer, equal
        err = create_partitions(server.bootstrap, topic, count)
        assert err is not None and err.code() == KafkaError.INVALID_PARTITIONS, (count, err)
        err = create_partitions(server.bootstrap, topic, count, validate_only=True)
        assert err is not None and err.code() == KafkaError.INVALID_PARTITIONS, (count, err)
    err = create_partitions(server.bootstrap, f"missing-{topic}", 4)
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    assert f"missing-{topic}" not in kh.confluent_list_topics(server.bootstrap)

    assert create_partitions(server.bootstrap, topic, 5, validate_only=True) is None
    assert partition_count(server.bootstrap, topic) == 3

    # The real change after all the refusals still works.
    assert create_partitions(server.bootstrap, topic, 5) is None
    assert partition_count(server.bootstrap, topic) == 5


@pytest.mark.deadline(300)
def test_create_partitions_distributed(cluster):  # noqa: F811
    """Two shards, two indexers: the new partitions' records are sequenced by their
    shards' owners; produce through the ingest gateway, consume through the fetch gateway."""
    import crc32c

    import distributed as dist

    c = cluster(shards=2).start(indexers=2, ingests=1, fetches=1)
    topic = grow_a_subscribed_topic(c.ingests[0].bootstrap, c.fetches[0].bootstrap)
    # Which shard sequenced each partition (shared/src/shards.rs shard_of), for the record.
    topic_id = uuid.UUID(dist.StoreReader(c, topic).topic_id).bytes
    shards = {p: crc32c.crc32c(p.to_bytes(4, "big"), crc32c.crc32c(topic_id)) % 2 for p in range(AFTER)}
    print(f"partition -> shard: {shards}; shards acquired per indexer: "
          f"{[dist.shards_acquired(i) for i in c.indexers]}")

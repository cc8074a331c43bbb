"""Garbage collection in a distributed cluster (DynamoDB Local and moto's S3, see
distributed.py), checked against the stores themselves through boto3.

Old records (CreateTime an hour ago, each flush its own segment) expire under a
10-minute retention.ms; garbage collection (every 200 ms, 300 ms grace, 5 s
commit horizon) must then leave exactly the segments an index entry still
references: none referenced is ever missing (checked throughout), every other
one is deleted with its commit records, and everything above the log start is
still consumed. The second test SIGKILLs the indexers over and over while they
trim and collect, restarting each, with the same checks after every restart.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest

import distributed as dist
import kafka_helpers as kh
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401
from test_retention import HOUR_MS, create_topic

pytestmark = pytest.mark.deadline(300)

PARTITIONS = 4
GC_ENV = {
    "KAFSCALE_RETENTION_CHECK_INTERVAL_MS": "200",
    "KAFSCALE_GC_INTERVAL_MS": "200",
    "KAFSCALE_GC_GRACE_MS": "300",
    "KAFSCALE_SEGMENT_COMMIT_MAX_AGE_MS": "5000",
}


class Stores(dist.StoreReader):
    """The cluster's bucket and table as boto3 sees them."""

    def objects(self) -> set[str]:
        keys, token = set(), None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": "segments/"}
            if token:
                kw["ContinuationToken"] = token
            resp = self.s3.list_objects_v2(**kw)
            keys |= {o["Key"] for o in resp.get("Contents", [])}
            if not resp.get("IsTruncated"):
                return keys
            token = resp["NextContinuationToken"]

    def referenced(self) -> set[str]:
        """Segments an index entry of the topic points at."""
        return {e["segment_key"] for p in range(PARTITIONS) for e in self.index_entries(p)}

    def rows(self) -> list[str]:
        """The topic's partition rows, index entries and producer states, and its marker."""
        pks = [f"part/{self.topic_id}"] + [f"{kind}/{self.topic_id}/{p}" for kind in ("idx", "prod")
                                           for p in range(PARTITIONS)]
        found = [f"{pk}:{sk}" for pk in pks for sk, _ in self._query(pk)]
        return found + [sk for sk, _ in self._query("deleted-topic") if sk == self.topic_id]

    def recorded(self) -> set[str]:
        """Segments that have a commit record: a `seg` item (the sort key without chunk and
        shard) on the transaction layout, a shard-log item on the shard log."""
        records = {sk.rsplit("#", 1)[0].split("~", 1)[0] for sk, _ in self._query("seg")}
        return records | {item["segment_key"] for _, item in self.shard_log_items()}

    def check_nothing_referenced_is_missing(self) -> set[str]:
        # Referenced first: an object listed after it cannot have been deleted before.
        referenced = self.referenced()
        objects = self.objects()
        missing = referenced - objects
        assert not missing, f"index entries point at deleted segments: {sorted(missing)[:5]}"
        return objects

    def collected(self) -> bool:
        objects = self.check_nothing_referenced_is_missing()
        return objects == self.referenced() and self.recorded() == objects


def produce_segments(bootstrap: str, topic: str, tag: str, count: int, timestamp_ms: int) -> None:
    """`count` records, flushed one by one: each is its own segment."""
    from confluent_kafka import Producer

    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    for i in range(count):
        producer.produce(topic, key=f"{tag}-{i}".encode(), value=f"{tag}-{i}".encode(),
                         partition=i % PARTITIONS, timestamp=timestamp_ms,
                         on_delivery=lambda err, _msg: err and errors.append(err))
        assert producer.flush(30) == 0
    assert not errors, errors[:3]


def setup(cluster_factory, monkeypatch, old: int):  # noqa: ANN001
    for k, v in GC_ENV.items():
        monkeypatch.setenv(k, v)
    c = cluster_factory(shards=2).start(indexers=2, ingests=1, fetches=1)
    ingest = c.ingests[0].bootstrap
    topic = f"gc-dist-{uuid.uuid4().hex[:8]}"
    create_topic(ingest, topic, {"retention.ms": str(10 * 60 * 1000)}, PARTITIONS)
    stores = Stores(c, topic)
    now = int(time.time() * 1000)
    produce_segments(ingest, topic, "old", old, now - HOUR_MS)
    produce_segments(ingest, topic, "fresh", 2 * PARTITIONS, now)
    return c, topic, stores


def consume_fresh(c: dist.Cluster, topic: str) -> None:
    records = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, list(range(PARTITIONS)),
                                       expected=2 * PARTITIONS)
    assert sorted(r.value for r in records) == \
        sorted(f"fresh-{i}".encode() for i in range(2 * PARTITIONS))


def test_gc_leaves_exactly_the_referenced_segments(cluster, monkeypatch):  # noqa: F811
    c, topic, stores = setup(cluster, monkeypatch, old=40)
    before = stores.objects()
    assert len(before) >= 40 + 2 * PARTITIONS
    kh.wait_for(stores.collected, timeout=90, interval=0.3,
                what="only referenced segments and their commit records left")
    left = stores.objects()
    assert len(left) == 2 * PARTITIONS, sorted(left)
    consume_fresh(c, topic)
    deleted = sum(kh.metric_value(i, "kafscale_gc_segments_deleted_total") for i in c.indexers)
    assert deleted >= 40

    # Deleting the topic: its rows and then its segments go too.
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": c.ingests[0].bootstrap})
    admin.delete_topics([topic], operation_timeout=15)[topic].result(timeout=30)
    kh.wait_for(lambda: not stores.objects() and not stores.recorded() and not stores.rows(),
                timeout=90, interval=0.3, what="the deleted topic's segments and rows removed")


def test_gc_survives_sigkills_of_the_indexers_while_it_collects(cluster, monkeypatch):  # noqa: F811
    c, topic, stores = setup(cluster, monkeypatch, old=120)
    rng = random.Random(13)
    kills = 0
    deadline = kh.Deadline(150)
    while not deadline.expired():
        if kills >= 6 and stores.collected():
            break
        victim = rng.choice(c.indexers)
        time.sleep(rng.uniform(0.1, 1.5))  # a random moment of trimming and collecting
        victim.kill9(restart=True)
        kills += 1
        stores.check_nothing_referenced_is_missing()
    assert kills >= 6
    kh.wait_for(stores.collected, timeout=90, interval=0.3,
                what="only referenced segments and their commit records left after the kills")
    assert len(stores.objects()) == 2 * PARTITIONS
    consume_fresh(c, topic)

"""Retention and DeleteRecords in a distributed cluster (DynamoDB Local and
moto's S3, see distributed.py): two indexers each own a shard and trim their
own partitions; the fetch gateway learns the new log starts; DeleteRecords
sent to an ingest gateway reaches the partition's shard owner over HTTP."""

from __future__ import annotations

import time
import uuid

import pytest

import kafka_helpers as kh
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401
from test_retention import HOUR_MS, create_topic, delete_records

pytestmark = pytest.mark.deadline(300)

PARTITIONS = 4


def produce_all(bootstrap: str, topic: str, tag: str, timestamp_ms: int) -> None:
    items = [{"key": f"{tag}-{p}-{i}".encode(), "value": f"{tag}-{p}-{i}".encode(),
              "timestamp": timestamp_ms, "partition": p}
             for p in range(PARTITIONS) for i in range(10)]
    deliveries = kh.confluent_produce(bootstrap, topic, items)
    failed = [d for d in deliveries if d.error is not None]
    assert not failed, failed[:3]


def test_retention_and_delete_records_across_indexers(cluster, monkeypatch):  # noqa: F811
    monkeypatch.setenv("KAFSCALE_RETENTION_CHECK_INTERVAL_MS", "200")
    c = cluster(shards=2).start(indexers=2, ingests=1, fetches=1)
    ingest, fetch = c.ingests[0].bootstrap, c.fetches[0].bootstrap
    topic = f"retention-dist-{uuid.uuid4().hex[:8]}"
    create_topic(ingest, topic, {"retention.ms": str(10 * 60 * 1000)}, PARTITIONS)
    now = int(time.time() * 1000)
    produce_all(ingest, topic, "old", now - HOUR_MS)
    produce_all(ingest, topic, "fresh", now)

    partitions = list(range(PARTITIONS))
    want = {p: (10, 20) for p in partitions}
    kh.wait_for(lambda: kh.confluent_watermarks(fetch, topic, partitions) == want, timeout=60,
                interval=0.2, what="every partition's log start at 10 (fetch gateway)")

    result = delete_records(ingest, topic, {0: 15, 3: 20})
    assert (result[0].low_watermark, result[3].low_watermark) == (15, 20), result
    want.update({0: (15, 20), 3: (20, 20)})
    kh.wait_for(lambda: kh.confluent_watermarks(fetch, topic, partitions) == want, timeout=30,
                interval=0.2, what="the deleted records' log starts at the fetch gateway")
    records = kh.confluent_consume_all(fetch, topic, partitions, expected=5 + 10 + 10)
    starts = {p: min(r.offset for r in records if r.partition == p) for p in (0, 1, 2)}
    assert starts == {0: 15, 1: 10, 2: 10}
    assert all(r.value.startswith(b"fresh-") for r in records)
    assert not [r for r in records if r.partition == 3]

"""What retention and garbage collection free, and what a GC pass costs in store requests
(a measurement, not a test: CI does not run it).

    bash scripts/with-dynamodb-local.sh python3 tests/e2e/bench_gc.py [--segments 1000]

Starts moto's S3 server, `kafscale admin init`, ONE indexer (so it holds the gc lease),
one ingest and one fetch gateway on 127.0.0.1 (as tests/e2e/test_distributed.py does).
Produces `--segments` records flushed one by one (each is its own segment) over 8
partitions, then DeleteRecords moves every partition's log start to its high watermark.
Prints the bucket (objects, bytes, listed with boto3) and the table (items, bytes of keys
and values, scanned with boto3) before and after, and the indexer's own counts of S3 and
DynamoDB requests (kafscale_object_store_requests_total / kafscale_meta_store_requests_total
by operation) over the collection, minus the same counts over as many idle GC rounds
afterwards (lease renewals and passes that find nothing), per 1,000 segments collected.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest  # noqa: E402
import distributed as dist  # noqa: E402
import kafka_helpers as kh  # noqa: E402
from test_gc_distributed import Stores  # noqa: E402
from test_retention import create_topic, delete_records  # noqa: E402

PARTITIONS = 8
GC_INTERVAL_MS = 1000


def request_counts(server) -> Counter:
    text = server.http_get("/metrics")[1].decode()
    out: Counter = Counter()
    for line in text.splitlines():
        m = re.match(r'kafscale_(object|meta)_store_requests_total\{([^}]*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            store = "s3" if m.group(1) == "object" else "dynamodb"
            out[f"{store} {labels.get('op', '?')}"] += float(m.group(3))
    return out


def table_size(stores: Stores) -> tuple[int, int]:
    items = size = 0
    start = None
    while True:
        kw = {"TableName": stores.table}
        if start:
            kw["ExclusiveStartKey"] = start
        resp = stores.ddb.scan(**kw)
        for item in resp["Items"]:
            items += 1
            size += len(item["pk"]["S"]) + len(item["sk"]["S"]) + len(bytes(item["v"]["B"]))
        start = resp.get("LastEvaluatedKey")
        if not start:
            return items, size


def bucket_size(stores: Stores) -> tuple[int, int]:
    count = size = 0
    token = None
    while True:
        kw = {"Bucket": stores.bucket}
        if token:
            kw["ContinuationToken"] = token
        resp = stores.s3.list_objects_v2(**kw)
        for o in resp.get("Contents", []):
            count += 1
            size += o["Size"]
        if not resp.get("IsTruncated"):
            return count, size
        token = resp["NextContinuationToken"]


def produce(bootstrap: str, topic: str, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=os.urandom(512), key=f"k{i}".encode(),
                         partition=i % PARTITIONS)
        assert producer.flush(30) == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1000)
    args = ap.parse_args()
    endpoint = os.environ.get(dist.DDB_ENDPOINT_ENV)
    if not endpoint:
        print("run under scripts/with-dynamodb-local.sh", file=sys.stderr)
        return 2
    os.environ.update({"KAFSCALE_RETENTION_CHECK_INTERVAL_MS": "3600000",
                       "KAFSCALE_GC_INTERVAL_MS": str(GC_INTERVAL_MS),
                       "KAFSCALE_GC_GRACE_MS": "0",
                       "KAFSCALE_SEGMENT_COMMIT_MAX_AGE_MS": "5000"})
    root = Path(tempfile.mkdtemp(prefix="kafscale-bench-gc-"))
    factory = conftest.ServerFactory(root)
    moto = dist.MotoServer(root).start()
    cluster = dist.Cluster(factory, moto, endpoint, shards=2)
    try:
        cluster.start(indexers=1, ingests=1, fetches=1)
        ingest, indexer = cluster.ingests[0].bootstrap, cluster.indexers[0]
        topic = "bench-gc"
        create_topic(ingest, topic, {"retention.ms": "-1"}, PARTITIONS)
        started = time.monotonic()
        produce(ingest, topic, args.segments)
        print(f"produced {args.segments} segments in {time.monotonic() - started:.1f} s")
        stores = Stores(cluster, topic)
        before = bucket_size(stores), table_size(stores)
        # Past the commit horizon, every segment is collectable at once (one pass condemns,
        # the next deletes), so the figures are those of whole passes.
        time.sleep(6)
        fetch = cluster.fetches[0].bootstrap
        watermarks = kh.confluent_watermarks(fetch, topic, list(range(PARTITIONS)))
        result = delete_records(ingest, topic, {p: hw for p, (_, hw) in watermarks.items()})
        assert all(getattr(r, "low_watermark", None) is not None for r in result.values()), result
        trimmed = bucket_size(stores), table_size(stores)

        m0, t0 = request_counts(indexer), time.monotonic()
        kh.wait_for(lambda: kh.metric_value(indexer, "kafscale_gc_segments_deleted_total")
                    >= args.segments, timeout=300, interval=0.2, what="every segment collected")
        m1, t1 = request_counts(indexer), time.monotonic()
        after = bucket_size(stores), table_size(stores)
        # The same length of time with nothing to collect: the background to subtract.
        kh.wait_for(lambda: time.monotonic() - t1 >= t1 - t0, timeout=600, interval=0.2,
                    what="an idle window as long as the collection")
        m2 = request_counts(indexer)

        def show(name, sizes):
            (objects, obytes), (items, ibytes) = sizes
            print(f"{name:>28}: bucket {objects} objects, {obytes / 1024:.0f} KiB; "
                  f"table {items} items, {ibytes / 1024:.0f} KiB")

        show("after producing", before)
        show("after DeleteRecords", trimmed)
        show("after garbage collection", after)
        print(f"collection took {t1 - t0:.1f} s (GC every {GC_INTERVAL_MS} ms, grace 0, "
              f"commit horizon 5 s)")
        print("requests during the collection minus an idle window of the same length, "
              f"per 1,000 segments:")
        per = 1000 / args.segments
        for op in sorted(set(m1) | set(m2)):
            gc = (m1[op] - m0[op]) - (m2[op] - m1[op])
            if m1[op] - m0[op]:
                print(f"  {op:>32}: {gc * per:8.1f}   (raw {m1[op] - m0[op]:.0f}, "
                      f"idle {m2[op] - m1[op]:.0f})")
    finally:
        for s in cluster.indexers + cluster.ingests + cluster.fetches:
            s.close()
        cluster.close()
        moto.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

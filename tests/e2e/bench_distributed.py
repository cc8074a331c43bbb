"""Produce latency through two ingest gateways of a distributed cluster (a
benchmark, not a test: it asserts nothing about speed and CI does not run it).

    bash scripts/with-dynamodb-local.sh python3 tests/e2e/bench_distributed.py \
        [--seconds 20] [--rate 2000] [--partitions 8] [--size 200] [--shards 8] [--idempotence false]

Starts moto's S3 server, `kafscale admin init`, 2 indexers, 2 ingest gateways
and 1 fetch gateway on 127.0.0.1 (as tests/e2e/test_distributed.py does), then
one confluent-kafka producer per ingest gateway (acks=all, linger.ms=5,
idempotent unless --idempotence false) sending `--rate` records/s each for `--seconds`. A record's latency
is from produce() to its delivery report. Prints p50/p90/p99/p99.9/max and the
achieved rate, then checks every record was acknowledged; and from the indexers' metrics the
commits, their mean latency, and the shard-log store writes with the commits each carried.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest  # noqa: E402
import distributed as dist  # noqa: E402
import kafka_helpers as kh  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def commit_counters(cluster) -> dict:
    """The indexers' commit counters, summed: commits, seconds spent committing, and the
    shard-log store writes with the items they carried (group commit: items per write)."""
    names = {"commits": "kafscale_indexer_commits_total",
             "commit_seconds": "kafscale_indexer_commit_duration_seconds_sum",
             "writes": "kafscale_indexer_log_writes_total",
             "items": "kafscale_indexer_log_items_written_total"}
    return {k: sum(kh.metric_value(i, name) for i in cluster.indexers) for k, name in names.items()}


def histogram_buckets(servers, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts (upper bound -> count), summed over `servers`."""
    buckets: dict[float, float] = {}
    for server in servers:
        text = server.http_get("/metrics")[1].decode()
        for line in text.splitlines():
            if line.startswith(name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.split()[-1])
    return buckets


def bucket_quantile(before: dict, after: dict, q: float) -> str:
    """The upper bound of the bucket holding quantile `q` of what was observed in between."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not counts or counts[-1][1] <= 0:
        return "n/a"
    for bound, count in counts:
        if count >= q * counts[-1][1]:
            return "> last bucket" if bound == float("inf") else f"<= {bound * 1000:g} ms"
    return "n/a"


# Where a produce request's time goes on the ingest gateways: the whole request as the gateway
# saw it, and per segment its upload, then its commit.
GATEWAY_STAGES = {"produce request": "kafscale_produce_duration_seconds",
                  "segment upload": "kafscale_segment_upload_duration_seconds",
                  "segment commit": "kafscale_segment_commit_duration_seconds"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="records/s per producer")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--size", type=int, default=200, help="value bytes")
    ap.add_argument("--shards", type=int, default=8, help="indexer shards of the cluster")
    ap.add_argument("--idempotence", choices=("true", "false"), default="true",
                    help="enable.idempotence (true caps librdkafka at 5 requests in flight)")
    args = ap.parse_args()
    endpoint = os.environ.get(dist.DDB_ENDPOINT_ENV)
    if not endpoint:
        print("run under scripts/with-dynamodb-local.sh", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="kafscale-bench-"))
    factory = conftest.ServerFactory(root)
    moto = dist.MotoServer(root).start()
    cluster = dist.Cluster(factory, moto, endpoint, shards=args.shards)
    try:
        cluster.start(indexers=2, ingests=2, fetches=1)
        topic = "bench"
        kh.confluent_create_topic(cluster.ingests[0].bootstrap, topic, args.partitions)
        count = int(args.seconds * args.rate)
        pad = "x" * max(0, args.size - 16)
        producers = []
        for i, gw in enumerate(cluster.ingests):
            conf = {"enable.idempotence": args.idempotence == "true"}
            if args.idempotence == "false":
                conf["max.in.flight.requests.per.connection"] = 1000
            p = dist.PacedProducer(gw.bootstrap, topic, args.partitions, count, args.rate,
                                   tag=f"b{i}", timeout=args.seconds + 120, conf=conf)
            p.value = lambda n, tag=p.tag: f"{tag}-{n}-{pad}".encode()  # type: ignore[method-assign]
            producers.append(p)
        before = commit_counters(cluster)
        stages_before = {k: histogram_buckets(cluster.ingests, n) for k, n in GATEWAY_STAGES.items()}
        start = time.monotonic()
        for p in producers:
            p.start()
        for p in producers:
            p.join()
        elapsed = time.monotonic() - start
        after = commit_counters(cluster)
        stages_after = {k: histogram_buckets(cluster.ingests, n) for k, n in GATEWAY_STAGES.items()}
        lat = sorted((p.acked_at[i] - p.sent_at[i]) * 1000 for p in producers for i in range(count))
        total = len(lat)
        print(f"records: {total} ({len(producers)} producers x {count}), {args.size} B values, "
              f"{args.partitions} partitions, {args.shards} shards, "
              f"idempotence={args.idempotence}, {elapsed:.1f}s, "
              f"{total / elapsed:.0f} records/s")
        print("produce latency ms: " + ", ".join(
            f"p{q * 100:g}={percentile(lat, q):.1f}" for q in (0.5, 0.9, 0.99, 0.999))
              + f", max={lat[-1]:.1f}")
        d = {k: after[k] - before[k] for k in after}
        print(f"indexers: {d['commits']:.0f} commits ({d['commits'] / elapsed:.0f}/s), mean commit "
              f"{1000 * d['commit_seconds'] / max(d['commits'], 1):.1f} ms; shard-log store writes "
              f"{d['writes']:.0f} ({d['writes'] / elapsed:.0f}/s) carrying {d['items']:.0f} items "
              f"({d['items'] / max(d['writes'], 1):.2f} commits per write)")
        print("ingest gateways: " + "; ".join(
            f"{stage} p50 {bucket_quantile(stages_before[stage], stages_after[stage], 0.5)}, "
            f"p99 {bucket_quantile(stages_before[stage], stages_after[stage], 0.99)}"
            for stage in GATEWAY_STAGES))
        return 0
    finally:
        factory.close()
        cluster.close()
        moto.close()


if __name__ == "__main__":
    sys.exit(main())

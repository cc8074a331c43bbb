"""Prometheus metrics end to end: a real Prometheus server (Debian's package, see
prometheus.py) scrapes `kafscale standalone`, and then a distributed cluster
(2 indexers, 2 ingest and 2 fetch gateways on moto's S3 server and DynamoDB
Local), every second while kafscale-loadtest produces a paced load. PromQL
through Prometheus's HTTP API must show:

* produce bytes/s (the ingest tier's scaling signal) within 20 % of the rate the
  loadtest reports;
* a consumer group's lag equal to the records produced once it committed offset
  0, and 0 after it consumed and committed everything;
* the indexer's queue depth and commit latency series for every indexer;
* fetch bytes/s (the fetch tier's scaling signal) while consumers read.

`promtool check metrics` must report no problem for any process's /metrics, and
every metric the Grafana dashboard (infra/dashboards/kafscale.json) queries must
be exported by a live process. The signals' values are printed (pytest -s).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import distributed as dist
import kafka_helpers as kh
import prometheus as prom_mod

pytestmark = pytest.mark.deadline(300)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "infra" / "dashboards" / "kafscale.json"
MIB = 1 << 20
RECORD_SIZE = 1024


def loadtest_binary() -> Path:
    from conftest import kafscale_binary

    path = kafscale_binary().with_name("kafscale-loadtest")
    assert path.exists(), f"{path} missing: cargo build --release --workspace"
    return path


def paced_loadtest(bootstrap: str, topic: str, out: Path, *, rate: int, seconds: int,
                   partitions: int, consume: bool) -> dict:
    """A paced, bounded loadtest run (rate records/s for about `seconds`)."""
    cmd = [str(loadtest_binary()), "--bootstrap", bootstrap, "--topic", topic,
           "--records", str(rate * seconds), "--rate", str(rate),
           "--record-size", str(RECORD_SIZE), "--partitions", str(partitions),
           "--producers", "2", "--json", str(out)]
    if consume:
        cmd.append("--consume")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kh.register_child(proc)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 120)
    finally:
        kh.unregister_child(proc)
    assert proc.returncode == 0, f"loadtest exited {proc.returncode}:\n{stdout.decode()}\n{stderr.decode()[-3000:]}"
    return json.loads(out.read_text())


class GroupReader:
    """A confluent-kafka consumer in group `group` (subscribe: the group is coordinated
    by the process FindCoordinator names), committing only when told to."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "session.timeout.ms": 10000})
        self.consumer.subscribe([topic])
        self.read = 0

    def read_until(self, n: int, timeout: float = 120.0) -> None:
        deadline = kh.Deadline(timeout)
        while self.read < n:
            assert not deadline.expired(), f"group consumer read {self.read} of {n} records"
            for msg in self.consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    self.read += 1

    def commit_offset_zero(self, partitions: int) -> None:
        from confluent_kafka import TopicPartition

        assigned = {tp.partition for tp in self.consumer.assignment()}
        assert assigned == set(range(partitions)), assigned
        self.consumer.commit(offsets=[TopicPartition(self.topic, p, 0) for p in range(partitions)],
                             asynchronous=False)

    def commit(self) -> None:
        self.consumer.commit(asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


def check_lag(prom, bootstrap: str, topic: str, group: str, partitions: int, records: int) -> None:
    """Lag = records after committing offset 0 everywhere, 0 after reading and committing all."""
    lag = f'sum(kafscale_consumer_group_lag{{group="{group}",topic="{topic}"}})'
    reader = GroupReader(bootstrap, topic, group)
    try:
        reader.read_until(1)
        reader.commit_offset_zero(partitions)
        prom_mod.wait_value(prom, lag, lambda v: v == records, 60,
                            f"lag of {group} = {records} after committing offset 0")
        reader.read_until(records)
        reader.commit()
        prom_mod.wait_value(prom, lag, lambda v: v == 0, 60, f"lag of {group} = 0 after consuming")
        count = f'count(kafscale_consumer_group_lag{{group="{group}",topic="{topic}"}})'
        assert prom.scalar(count) == partitions
    finally:
        reader.close()


def check_produce_rate(prom, result: dict, promql: str, start: float, end: float) -> float:
    """Prometheus's steady produce bytes/s vs the loadtest's own figure (within 20 %)."""
    reported = result["produce_mib_per_s"] * MIB
    measured = prom_mod.steady_rate(prom, promql, start, end)
    assert abs(measured - reported) <= 0.2 * reported, \
        f"{promql}: Prometheus {measured / MIB:.2f} MiB/s, loadtest {reported / MIB:.2f} MiB/s"
    return measured


def check_promtool(servers) -> dict[str, str]:
    """`promtool check metrics` is silent for every server's page; returns the pages."""
    pages = {}
    for srv in servers:
        status, page = srv.http_get("/metrics")
        assert status == 200, (srv.name, status, page[:200])
        problems = prom_mod.promtool_check(page)
        assert problems == "", f"promtool check metrics on {srv.name}:\n{problems}"
        pages[srv.name] = page.decode()
    return pages


def exported_names(pages) -> set[str]:
    names = set()
    for page in pages:
        for line in page.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_metric_names() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {n for e in exprs for n in re.findall(r"\bkafscale_[a-z0-9_]+", e)}


def report(signal: str, value: float, unit: str) -> None:
    print(f"\nSIGNAL {signal}: {value:.3f} {unit}")


def test_standalone_metrics_through_prometheus(kafscale, tmp_path):
    prom = prom_mod.Prometheus(tmp_path / "prom", {"standalone": [kafscale.http]}).start()
    try:
        prom.wait_targets_up()
        topic, partitions = "metrics-standalone", 8
        start = prom_mod.now()
        result = paced_loadtest(kafscale.bootstrap, topic, tmp_path / "lt.json", rate=20000,
                                seconds=12, partitions=partitions, consume=True)
        end = prom_mod.now()
        prom.wait_scraped_after(end + prom_mod.SCRAPE_INTERVAL_S)
        produce = check_produce_rate(prom, result, "sum(rate(kafscale_produce_bytes_total[3s]))",
                                     start, end + 3)
        report("standalone produce bytes/s", produce / MIB, "MiB/s")
        fetch = prom_mod.steady_rate(prom, "sum(rate(kafscale_fetch_bytes_total[3s]))", start, end + 3)
        report("standalone fetch bytes/s", fetch / MIB, "MiB/s")
        depth = prom.scalar("max_over_time(kafscale_indexer_commit_queue_depth[2m])")
        report("standalone indexer queue depth (max)", depth, "commits")

        check_lag(prom, kafscale.bootstrap, topic, "metrics-group", partitions,
                  result["records_acked"])
        pages = check_promtool([kafscale])
        missing = dashboard_metric_names() - exported_names(pages.values())
        assert not missing, f"the dashboard queries metrics no process exports: {sorted(missing)}"
    except BaseException:
        print(prom.log_tail())
        raise
    finally:
        prom.close()


@pytest.fixture(scope="module")
def ddb_endpoint():
    return dist.require_dynamodb()


@pytest.fixture(scope="module")
def moto(ddb_endpoint, tmp_path_factory):
    server = dist.MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.close()


@pytest.mark.deadline(400)
def test_distributed_metrics_through_prometheus(kafscale_factory, moto, ddb_endpoint, tmp_path):
    c = dist.Cluster(kafscale_factory, moto, ddb_endpoint, shards=8)
    prom = None
    try:
        c.start(indexers=2, ingests=2, fetches=2)
        targets = {"indexer": [s.http for s in c.indexers], "ingest": [s.http for s in c.ingests],
                   "fetch": [s.http for s in c.fetches]}
        prom = prom_mod.Prometheus(tmp_path / "prom", targets).start()
        prom.wait_targets_up()
        topic, partitions = "metrics-distributed", 8
        kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
        kh.wait_confluent_metadata(c.fetches[0].bootstrap, topic, partitions)
        dist.wait_coordinators_settled(c.fetches)

        start = prom_mod.now()
        result = paced_loadtest(c.ingests[0].bootstrap, topic, tmp_path / "lt.json", rate=4000,
                                seconds=12, partitions=partitions, consume=False)
        end = prom_mod.now()
        prom.wait_scraped_after(end + prom_mod.SCRAPE_INTERVAL_S)
        produce = check_produce_rate(
            prom, result, 'sum(rate(kafscale_produce_bytes_total{job="ingest"}[3s]))', start, end + 3)
        report("distributed produce bytes/s (ingest tier)", produce / MIB, "MiB/s")

        # Every indexer exports its queue depth and commit latency; the owners committed.
        for series in ("kafscale_indexer_commit_queue_depth",
                       "kafscale_indexer_commit_duration_seconds_count"):
            instances = {r["metric"]["instance"] for r in prom.query(f'{series}{{job="indexer"}}')}
            assert instances == set(targets["indexer"]), (series, instances)
        commits = prom.scalar('sum(kafscale_indexer_commit_duration_seconds_count{job="indexer"})')
        assert commits and commits > 0, commits
        depth = prom.scalar('max(max_over_time(kafscale_indexer_commit_queue_depth{job="indexer"}[2m]))')
        report("distributed indexer queue depth (max over the run)", depth, "commits")
        p99 = prom.scalar('histogram_quantile(0.99, sum by (le) (rate('
                          'kafscale_indexer_commit_duration_seconds_bucket{job="indexer"}[1m])))')
        report("distributed indexer commit latency p99", p99 * 1000, "ms")

        fetch_start = prom_mod.now()
        check_lag(prom, c.fetches[0].bootstrap, topic, "metrics-dist-group", partitions,
                  result["records_acked"])
        fetch_end = prom_mod.now()
        prom.wait_scraped_after(fetch_end + prom_mod.SCRAPE_INTERVAL_S)
        fetched = max(prom.range_values('sum(rate(kafscale_fetch_bytes_total{job="fetch"}[3s]))',
                                        fetch_start, fetch_end + 3))
        assert fetched > 0
        report("distributed fetch bytes/s (fetch tier, peak)", fetched / MIB, "MiB/s")

        check_promtool([*c.indexers, *c.ingests, *c.fetches])
    except BaseException:
        if prom is not None:
            print(prom.log_tail())
        raise
    finally:
        if prom is not None:
            prom.close()
        kafscale_factory.close()
        c.close()

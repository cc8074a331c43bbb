"""The scaling proof: each tier's autoscaler, exactly as the Helm chart renders it, asks for
more replicas on its own signal and only on it.

A distributed cluster (2 indexers, 2 ingest and 2 fetch gateways on moto's S3 server and
DynamoDB Local) is scraped by a real Prometheus whose targets carry the labels the chart's
ServiceMonitor would give them (job = tier, namespace, pod). The chart is rendered with
`helm template` (tests/e2e/scaling-values.yaml) in both autoscaler forms, and the test takes
from the rendered objects, not from its own copy:
  * HPA form: each HorizontalPodAutoscaler's metric and AverageValue target, and the
    prometheus-adapter rule serving that metric (metricsQuery with <<.Series>>,
    <<.LabelMatchers>> and <<.GroupBy>> filled in the way the adapter does for the HPA's
    pods: namespace and pod matchers, grouped by pod);
  * KEDA form: each ScaledObject's Prometheus trigger (query and threshold, AverageValue).
It evaluates them through Prometheus's HTTP API and applies the HPA rule
desired = ceil(current × value / target) (with the HPA's 10 % tolerance, clamped to
[minReplicas, maxReplicas]; for KEDA's AverageValue, value = query / current).

Phases: produce-only (a paced kafscale-loadtest against the ingest tier, no consumers):
ingest's desired replicas rise above its minimum while fetch stays at its minimum; then,
after the produce signal has drained back to the minimum, consume-only (a consumer group
reading everything through the fetch tier): fetch rises while ingest stays at its minimum.
The indexer follows its commit queue: its desired count is what the queue depth gives, and
back at its minimum once nothing is committed. The figures are printed (pytest -s) and
recorded in docs/deploy.md.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import distributed as dist
import kafka_helpers as kh
import prometheus as prom_mod
from test_metrics import GroupReader, ddb_endpoint, moto, paced_loadtest  # noqa: F401 (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))
import tools as infra  # noqa: E402  (tests/infra/tools.py: helm template of the chart)

pytestmark = pytest.mark.deadline(420)

VALUES = Path(__file__).with_name("scaling-values.yaml")
TIERS = ("ingest", "fetch", "indexer")
NAMESPACE = infra.NAMESPACE
TOLERANCE = 0.1  # the HPA controller's default --horizontal-pod-autoscaler-tolerance


def hpa_rule(current: int, value: float, target: float, lo: int, hi: int) -> int:
    ratio = value / target
    desired = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(current * ratio)
    return max(lo, min(hi, desired))


class RenderedAutoscalers:
    """The autoscalers of the rendered chart, evaluated against a Prometheus."""

    def __init__(self, prom, pods: dict[str, list[str]]):
        self.prom = prom
        self.pods = pods
        hpa_objs = infra.render(VALUES, "autoscaling.mode=hpa")
        keda_objs = infra.render(VALUES, "autoscaling.mode=keda")
        rules = yaml.safe_load(infra.one(hpa_objs, "ConfigMap", "kafscale-adapter-rules")
                               ["data"]["config.yaml"])["rules"]
        by_metric = {r["name"]["as"]: r for r in rules}
        self.hpa, self.keda = {}, {}
        for tier in TIERS:
            h = infra.one(hpa_objs, "HorizontalPodAutoscaler", f"kafscale-{tier}")["spec"]
            # Only the tier's own signal (no CPU fallback in scaling-values.yaml).
            [m] = h["metrics"]
            assert m["type"] == "Pods", m
            rule = by_metric[m["pods"]["metric"]["name"]]
            self.hpa[tier] = {"min": h["minReplicas"], "max": h["maxReplicas"],
                              "target": parse_quantity(m["pods"]["target"]["averageValue"]),
                              "rule": rule}
            so = infra.one(keda_objs, "ScaledObject", f"kafscale-{tier}")["spec"]
            [trig] = so["triggers"]
            assert trig["type"] == "prometheus", trig
            assert trig["metricType"] == "AverageValue"
            self.keda[tier] = {"min": so["minReplicaCount"], "max": so["maxReplicaCount"],
                               "target": float(trig["metadata"]["threshold"]),
                               "query": trig["metadata"]["query"]}

    def adapter_query(self, tier: str) -> str:
        rule = self.hpa[tier]["rule"]
        series = rule["seriesQuery"].split("{", 1)[0]
        pods = "|".join(self.pods[tier])
        matchers = f'namespace="{NAMESPACE}",pod=~"{pods}"'
        return (rule["metricsQuery"].replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"))

    def evaluate(self) -> dict[str, dict]:
        out = {}
        for tier in TIERS:
            current = len(self.pods[tier])
            h = self.hpa[tier]
            per_pod = {r["metric"]["pod"]: float(r["value"][1])
                       for r in self.prom.query(self.adapter_query(tier))}
            # The HPA averages the pods' values (a pod without a sample counts as 0 here).
            avg = sum(per_pod.values()) / current
            k = self.keda[tier]
            total = self.prom.scalar(k["query"]) or 0.0
            out[tier] = {
                "hpa_value": avg,
                "hpa_desired": hpa_rule(current, avg, h["target"], h["min"], h["max"]),
                "keda_value": total / current,
                "keda_desired": hpa_rule(current, total / current, k["target"], k["min"], k["max"]),
                "min": h["min"],
            }
        return out


def parse_quantity(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def show(phase: str, figures: dict) -> str:
    parts = []
    for tier in TIERS:
        f = figures[tier]
        parts.append(f"{tier}: value {f['hpa_value']:.4g} -> HPA {f['hpa_desired']} / KEDA {f['keda_desired']}"
                     f" (min {f['min']})")
    line = f"SCALING {phase}: " + "; ".join(parts)
    print("\n" + line)
    return line


def at_min(f: dict) -> bool:
    return f["hpa_desired"] == f["min"] and f["keda_desired"] == f["min"]


def above_min(f: dict) -> bool:
    return f["hpa_desired"] > f["min"] and f["keda_desired"] > f["min"]


def sample_while(scalers: RenderedAutoscalers, alive, deadline: float) -> list[dict]:
    """Evaluates the autoscalers every second while alive() holds (bounded by `deadline`),
    and once more after, so a phase's end is included."""
    samples = []
    limit = kh.Deadline(deadline)
    while alive():
        assert not limit.expired(), "phase overran its deadline"
        samples.append(scalers.evaluate())
        time.sleep(1)  # the sampling period, not a wait for a result
    samples.append(scalers.evaluate())
    return samples


def test_each_tier_scales_on_its_own_signal(kafscale_factory, moto, ddb_endpoint, tmp_path):  # noqa: F811
    c = dist.Cluster(kafscale_factory, moto, ddb_endpoint, shards=8)
    prom = None
    try:
        c.start(indexers=2, ingests=2, fetches=2)
        servers = {"indexer": c.indexers, "ingest": c.ingests, "fetch": c.fetches}
        targets = {tier: [s.http for s in srvs] for tier, srvs in servers.items()}
        labels = {s.http: {"namespace": NAMESPACE, "pod": s.name}
                  for srvs in servers.values() for s in srvs}
        pods = {tier: [s.name for s in srvs] for tier, srvs in servers.items()}
        prom = prom_mod.Prometheus(tmp_path / "prom", targets, labels).start()
        prom.wait_targets_up()
        scalers = RenderedAutoscalers(prom, pods)

        topic, partitions = "scaling", 8
        kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
        kh.wait_confluent_metadata(c.fetches[0].bootstrap, topic, partitions)
        dist.wait_coordinators_settled(c.fetches)
        # Idle: every tier at its minimum.
        idle = kh.wait_for(lambda: (f := scalers.evaluate()) and all(at_min(f[t]) for t in TIERS) and f,
                           60, interval=1, what="every tier at its minimum while idle")
        report = [show("idle", idle)]

        # --- produce-only --------------------------------------------------------------
        result: dict = {}
        producer = threading.Thread(target=lambda: result.update(paced_loadtest(
            c.ingests[0].bootstrap, topic, tmp_path / "lt.json", rate=3000, seconds=30,
            partitions=partitions, consume=False)), daemon=True)
        producer.start()
        samples = sample_while(scalers, producer.is_alive, deadline=120)
        assert result.get("records_acked"), result
        first = next((f for f in samples if above_min(f["ingest"])), None)
        assert first is not None, f"ingest never above its minimum while producing: {samples[-3:]}"
        report.append(show("produce-only, first rise", first))
        peak = max(samples, key=lambda f: f["ingest"]["hpa_value"])
        report.append(show("produce-only, peak", peak))
        for f in samples:
            assert at_min(f["fetch"]), f"fetch left its minimum while only producing: {f['fetch']}"
            # The indexer's desired count is the HPA rule applied to its own queue depth.
            q = f["indexer"]
            assert q["hpa_desired"] == hpa_rule(2, q["hpa_value"], scalers.hpa["indexer"]["target"],
                                                q["min"], scalers.hpa["indexer"]["max"])
        queue_peak = max(samples, key=lambda f: f["indexer"]["hpa_value"])
        report.append(show("produce-only, indexer queue peak", queue_peak))

        # Nothing moves any more: every signal drains to 0 (rate windows) before consuming.
        drained = kh.wait_for(
            lambda: (f := scalers.evaluate()) and all(f[t]["hpa_value"] == 0 for t in TIERS) and f,
            90, interval=1, what="every signal back to 0 after producing")
        assert all(at_min(drained[t]) for t in TIERS), drained
        report.append(show("drained", drained))

        # --- consume-only --------------------------------------------------------------
        reader = GroupReader(c.fetches[0].bootstrap, topic, "scaling-readers")
        error: list = []

        def consume():
            try:
                reader.read_until(result["records_acked"], timeout=150)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                error.append(e)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        try:
            samples = sample_while(scalers, consumer.is_alive, deadline=180)
        finally:
            consumer.join(timeout=30)
            reader.close()
        assert not error, error
        assert reader.read == result["records_acked"]
        first = next((f for f in samples if above_min(f["fetch"])), None)
        assert first is not None, f"fetch never above its minimum while consuming: {samples[-3:]}"
        report.append(show("consume-only, first rise", first))
        report.append(show("consume-only, peak", max(samples, key=lambda f: f["fetch"]["hpa_value"])))
        for f in samples:
            assert at_min(f["ingest"]) and f["ingest"]["hpa_value"] == 0, f["ingest"]
            assert at_min(f["indexer"]) and f["indexer"]["hpa_value"] == 0, f["indexer"]

        print(f"\nSCALING loadtest: {result['records_acked']} records acked, "
              f"{result['produce_mib_per_s']:.2f} MiB/s produced")
    except BaseException:
        if prom is not None:
            print(prom.log_tail())
        raise
    finally:
        if prom is not None:
            prom.close()
        kafscale_factory.close()
        c.close()

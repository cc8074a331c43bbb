"""Chaos across every tier (issue 14, item 3): a distributed cluster on moto's S3 and
DynamoDB Local (2 indexers, 2 ingest gateways, 2 fetch gateways, 4 shards) carries an
idempotent and a non-idempotent confluent-kafka producer and a consumer group of 3 member
processes, while a seeded chaos loop SIGKILLs and restarts an ingest gateway (half the time
right after it logs a segment upload, i.e. mid-flush with its commit in flight), the indexer
owning most shards and the fetch gateway coordinating the group; SIGSTOPs an indexer and a
fetch gateway until another process has taken their leases, then SIGCONTs them; and turns
store faults on for a few seconds (--inject-faults-file, every process). Each action waits
for production to move on before the next.

At the end the whole log is read back and checked as a history: every acknowledged record is
at its acknowledged offset, no offset holds two records, no partition has a gap, the
idempotent producer has no duplicate, the group's committed offsets (sampled through
OffsetFetch during the run) never moved backwards, and the group settles with every
partition owned once and every record delivered. The run prints kills per tier, faults
injected, records acknowledged, lost (must be 0) and duplicated.

Short form by default (CI, under 4 minutes). Long form:

    KAFSCALE_CHAOS_SECONDS=1800 KAFSCALE_CHAOS_SEED=7 \\
      bash scripts/with-dynamodb-local.sh python3 -m pytest -q tests/e2e/test_chaos.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter, defaultdict

import pytest

import distributed as dist
import groups as g
import kafka_helpers as kh
from test_distributed import _owned_after, cluster, ddb_endpoint, moto  # noqa: F401 - fixtures

CHAOS_S = float(os.environ.get("KAFSCALE_CHAOS_SECONDS", "75"))
SEED = int(os.environ.get("KAFSCALE_CHAOS_SEED", "1"))
RATE = float(os.environ.get("KAFSCALE_CHAOS_RATE", "150"))  # records/s per producer
PARTITIONS = 6
LEASE_MS = 3000
GROUP = "chaos-group"
FAULTS = ("error=0.1,lost=0.1,timeout=0.03,timeout-ms=300,spike=0.1,spike-ms=50,"
          "seed={seed},ops=put+get+meta-write+meta-get")
UPLOADED = b"segment uploaded"
ACTIONS = ["kill-ingest-mid-flush", "kill-indexer", "kill-coordinator", "stop-indexer",
           "faults", "kill-ingest", "stop-fetch"]

pytestmark = pytest.mark.deadline(int(CHAOS_S * 3 + 240))


def _wait_next_upload(server, timeout: float = 10.0) -> bool:
    """Waits until `server` logs a segment upload (its commit starts at once)."""
    path = server.log_path
    deadline = kh.Deadline(timeout)
    with open(path, "rb") as f:
        f.seek(path.stat().st_size)
        pending = b""
        while not deadline.expired():
            chunk = f.read()
            if not chunk:
                time.sleep(0.001)
                continue
            pending = (pending + chunk)[-4096:]
            if UPLOADED in pending:
                return True
    return False


class Chaos:
    """The chaos loop's actions and what they did."""

    def __init__(self, c: dist.Cluster, fault_file, rng: random.Random):
        self.c = c
        self.fault_file = fault_file
        self.rng = rng
        self.kills: Counter = Counter()
        self.pauses: Counter = Counter()
        self.fault_windows = 0
        self.faults: Counter = Counter()  # by fault kind, summed over process lifetimes

    def count_faults(self, server) -> None:
        """Adds `server`'s injected faults so far (before it dies and its counters with it)."""
        try:
            text = server.http_get("/metrics")[1].decode()
        except Exception:  # noqa: BLE001 - a paused or dying process: its count is lost
            return
        for line in text.splitlines():
            if line.startswith("kafscale_faults_injected_total{"):
                labels, value = line.rsplit(" ", 1)
                kind = labels.split('fault="', 1)[1].split('"', 1)[0]
                self.faults[kind] += float(value)

    def kill(self, server, tier: str, aim_at_upload: bool = False) -> None:
        if aim_at_upload:
            _wait_next_upload(server)
        self.count_faults(server)
        server.kill9(restart=True)
        self.kills[tier] += 1

    def coordinator(self):
        slot = kh._crc32c.crc32c(GROUP.encode()) % 16
        owners = [f for f in self.c.fetches if slot in dist.coordinator_slots(f)]
        return owners[-1] if owners else self.rng.choice(self.c.fetches)

    def pause_past_lease(self, server, others, taken, tier: str) -> None:
        """SIGSTOP until another process logs taking over a lease, then SIGCONT."""
        marks = {o.name: len(o.log_path.read_text(errors="replace")) for o in others}
        server.proc.send_signal(signal.SIGSTOP)
        try:
            kh.wait_for(lambda: any(taken(o, marks[o.name]) for o in others), 60,
                        what=f"another process to take the paused {tier}'s leases")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        self.pauses[tier] += 1

    def run(self, action: str) -> None:
        c = self.c
        if action.startswith("kill-ingest"):
            self.kill(self.rng.choice(c.ingests), "ingest", action.endswith("mid-flush"))
        elif action == "kill-indexer":
            self.kill(max(c.indexers, key=lambda i: len(dist.shards_acquired(i))), "indexer")
        elif action == "kill-coordinator":
            self.kill(self.coordinator(), "fetch")
        elif action == "stop-indexer":
            victim = self.rng.choice(c.indexers)
            self.pause_past_lease(victim, [i for i in c.indexers if i is not victim],
                                  lambda o, mark: _owned_after(o, mark), "indexer")
        elif action == "stop-fetch":
            victim = self.coordinator()

            def took_slots(o, mark):
                text = o.log_path.read_text(errors="replace")[mark:]
                return "acquired group coordinator lease" in text

            self.pause_past_lease(victim, [f for f in c.fetches if f is not victim],
                                  took_slots, "fetch")
        elif action == "faults":
            self.fault_file.write_text(FAULTS.format(seed=self.rng.randrange(1 << 30)))
            self.fault_windows += 1
            # On for about three plan re-reads (every 500 ms), waited on the producers.
            return
        else:
            raise AssertionError(action)


class CommittedOffsets:
    """The group's committed offsets sampled through OffsetFetch (kafka-python's admin
    client, a second client implementation): they must never go back."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap = bootstrap
        self.topic = topic
        self.admin = None
        self.history: dict[int, list[int]] = defaultdict(list)
        self.samples = 0

    def sample(self) -> None:
        from kafka import KafkaAdminClient

        try:
            if self.admin is None:
                self.admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                              request_timeout_ms=5000)
            offsets = self.admin.list_group_offsets(GROUP)[GROUP]
        except Exception:  # noqa: BLE001 - a coordinator moving or down: no sample this time
            self.close()
            return
        self.samples += 1
        for tp, meta in offsets.items():
            if tp.topic == self.topic and meta.offset >= 0:
                self.history[tp.partition].append(meta.offset)

    def close(self) -> None:
        if self.admin is not None:
            try:
                self.admin.close()
            except Exception:  # noqa: BLE001
                pass
            self.admin = None

    def backwards(self) -> dict[int, list[tuple[int, int]]]:
        out = {}
        for p, seq in self.history.items():
            back = [(a, b) for a, b in zip(seq, seq[1:]) if b < a]
            if back:
                out[p] = back
        return out


def check_history(deliveries_by_tag: dict, consumed: list, idempotent: set) -> dict:
    """The consumed log against what producers were told."""
    at: dict[tuple[int, int], bytes] = {}
    offsets_twice = []
    for r in consumed:
        key = (r.partition, r.offset)
        if key in at:
            offsets_twice.append(key)
        at[key] = r.value
    gaps = {}
    for p in range(PARTITIONS):
        offsets = sorted(o for (q, o) in at if q == p)
        if offsets and offsets != list(range(offsets[-1] + 1)):
            gaps[p] = len(set(range(offsets[-1] + 1)) - set(offsets))
    copies = Counter(at.values())
    figures = {"acknowledged": 0, "lost": [], "unacknowledged": 0, "duplicated": Counter(),
               "offsets_twice": offsets_twice, "gaps": gaps, "consumed": len(consumed)}
    for tag, deliveries in deliveries_by_tag.items():
        for i, d in enumerate(deliveries):
            value = f"{tag}-{i}".encode()
            if copies[value] > 1:
                figures["duplicated"][tag] += copies[value] - 1
            if not isinstance(d, tuple):
                figures["unacknowledged"] += 1
                continue
            figures["acknowledged"] += 1
            if at.get(d) != value:
                figures["lost"].append((tag, i, d, at.get(d)))
    figures["idempotent_duplicates"] = sum(figures["duplicated"][t] for t in idempotent)
    return figures


def test_no_acknowledged_record_is_lost_under_chaos(cluster, tmp_path):
    rng = random.Random(SEED)
    c = cluster(shards=4, lease_ttl_ms=LEASE_MS)
    fault_file = tmp_path / "faults"
    fault_file.write_text("")
    c.extra_env = {"KAFSCALE_INJECT_FAULTS_FILE": str(fault_file)}
    c.start(indexers=2, ingests=2, fetches=2)
    kh.wait_for(lambda: all(dist.shards_acquired(i) for i in c.indexers), 30,
                what="both indexers to own shards")
    dist.wait_coordinators_settled(c.fetches)
    topic = "chaos"
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, PARTITIONS)
    kh.wait_confluent_metadata(c.ingests[1].bootstrap, topic, PARTITIONS)

    count = int(RATE * (CHAOS_S + 10))
    timeout = CHAOS_S + 150
    producers = [
        dist.PacedProducer(c.ingests[0].bootstrap, topic, PARTITIONS, count=count, rate=RATE,
                           tag="idem", timeout=timeout),
        dist.PacedProducer(c.ingests[1].bootstrap, topic, PARTITIONS, count=count, rate=RATE,
                           tag="plain", timeout=timeout,
                           conf={"enable.idempotence": False, "retries": 1000000,
                                 "max.in.flight.requests.per.connection": 1}),
    ]
    members = [g.GroupMember("confluent", c.fetches[i % 2].bootstrap, GROUP, topic,
                             f"member{i}", tmp_path, session_ms=10000, heartbeat_ms=1000,
                             max_seconds=timeout + 120)
               for i in range(3)]
    committed = CommittedOffsets(c.fetches[0].bootstrap, topic)
    chaos = Chaos(c, fault_file, rng)
    try:
        for p in producers:
            p.start()
        plan = list(ACTIONS)
        rng.shuffle(plan)
        started = time.monotonic()
        step = 0
        while time.monotonic() - started < CHAOS_S:
            action = plan[step % len(plan)]
            step += 1
            chaos.run(action)
            # Let production move on before the next blow (and end a fault window).
            acked = sum(p.produced for p in producers)
            kh.wait_for(lambda: sum(p.produced for p in producers) >= acked + int(RATE * 3)
                        or all(p.produced == p.count for p in producers), 60,
                        what="production to move on after " + action)
            if action == "faults":
                for s in c.ingests + c.indexers + c.fetches:
                    chaos.count_faults(s)
                fault_file.write_text("")
            committed.sample()
        fault_file.write_text("")
        for p in producers:
            p.thread.join(p.timeout + 30)
            assert not p.thread.is_alive(), f"{p.tag}: producer thread did not finish"
        for s in c.ingests + c.indexers + c.fetches:
            chaos.count_faults(s)
        deliveries = {p.tag: p.deliveries for p in producers}
        acked_total = sum(isinstance(d, tuple) for ds in deliveries.values() for d in ds)
        consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(PARTITIONS),
                                            expected=acked_total, timeout=180)
        figures = check_history(deliveries, consumed, idempotent={"idem"})
        end = {p: 1 + max((r.offset for r in consumed if r.partition == p), default=-1)
               for p in range(PARTITIONS)}
        # The group settles: every partition owned once, every record delivered and committed.
        g.wait_exclusive(members, PARTITIONS, timeout=120)
        g.wait_consumed(members, end, timeout=120)
        g.wait_committed(members, end, timeout=60)
        committed.sample()
        summary = {
            "seed": SEED, "chaos_s": CHAOS_S, "actions": step,
            "kills": dict(chaos.kills), "pauses": dict(chaos.pauses),
            "fault_windows": chaos.fault_windows, "faults_injected": dict(chaos.faults),
            "acknowledged": figures["acknowledged"],
            "unacknowledged": figures["unacknowledged"],
            "lost": len(figures["lost"]), "duplicated": dict(figures["duplicated"]),
            "offsets_twice": len(figures["offsets_twice"]), "gaps": figures["gaps"],
            "committed_samples": committed.samples,
            "committed_backwards": committed.backwards(),
            "producer_errors": {p.tag: p.error for p in producers if p.error},
        }
        print("chaos:", json.dumps(summary))
        (tmp_path / "chaos-summary.json").write_text(json.dumps(
            {**summary, "lost_records": figures["lost"][:50]}, indent=1, default=str))
        assert not figures["lost"], f"acknowledged records lost: {figures['lost'][:10]}"
        assert not figures["offsets_twice"], figures["offsets_twice"][:10]
        assert not figures["gaps"], figures["gaps"]
        assert figures["idempotent_duplicates"] == 0, figures["duplicated"]
        assert not committed.backwards(), committed.backwards()
        assert committed.samples > 0, "no committed offsets could be sampled"
        assert set(chaos.kills) == {"ingest", "indexer", "fetch"} or step < len(ACTIONS), summary
        assert figures["acknowledged"] > 0.9 * 2 * count, summary
    finally:
        fault_file.write_text("")
        committed.close()
        for m in members:
            m.close()

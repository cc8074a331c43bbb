"""A flood against standalone (issue 14, item 6): 200 connections, each pipelining large
Produce (256 KiB batches) and Fetch (4 MiB) requests for a bounded time, while a well-behaved
client produces one record at a time and pings the server. The server must not crash, its
resident memory must stay under the bound docs/operations.md ("Memory bounds") gives for its
settings, and the well-behaved client must be answered throughout (every record acknowledged,
every ping answered; its latencies are printed, not asserted: performance belongs to the
benchmarks).
"""

from __future__ import annotations

import json
import struct
import threading
import time

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(300)

CONNECTIONS = 200
FLOOD_S = 20.0
BATCH_BYTES = 256 * 1024
FETCH_MAX = 4 * 1024 * 1024
PIPELINE_PRODUCE = 2
PIPELINE_FETCH = 2
MIB = 1024 * 1024

# The server's memory settings for the flood, and the bound they give (docs/operations.md,
# "Memory bounds"): base + caches + produce buffer + fetch memory (which also holds the Fetch
# answers not yet written) + per connection a request frame being read.
SETTINGS = {"--fetch-cache-bytes": 32 * MIB, "--fetch-block-cache-bytes": 32 * MIB,
            "--fetch-memory-bytes": 64 * MIB, "--fetch-max-bytes": FETCH_MAX,
            "--max-buffered-bytes": 64 * MIB}
BASE = 128 * MIB
BOUND = (BASE + SETTINGS["--fetch-cache-bytes"] + SETTINGS["--fetch-block-cache-bytes"]
         + SETTINGS["--max-buffered-bytes"] + SETTINGS["--fetch-memory-bytes"]
         + CONNECTIONS * BATCH_BYTES)


def fetch_request_body_v4(topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
    t = topic.encode()
    return (struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)
            + struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
            + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes))


class Flooder(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, index: int, until: float, batch: bytes):
        super().__init__(daemon=True, name=f"flood-{index}")
        self.bootstrap, self.topic, self.index, self.until, self.batch = (
            bootstrap, topic, index, until, batch)
        self.answered = 0
        self.error = None

    def run(self) -> None:
        try:
            with kh.RawConnection(self.bootstrap, timeout=120) as conn:
                partition = self.index % 4
                produce = kh.produce_request_body_v3(self.topic, partition, self.batch, acks=1,
                                                     timeout_ms=30000)
                fetch = fetch_request_body_v4(self.topic, partition, 0, FETCH_MAX)
                while time.monotonic() < self.until:
                    for _ in range(PIPELINE_PRODUCE):
                        conn.send_request(0, 3, produce)
                    for _ in range(PIPELINE_FETCH):
                        conn.send_request(1, 4, fetch)
                    for _ in range(PIPELINE_PRODUCE + PIPELINE_FETCH):
                        conn.recv_frame(timeout=120)
                        self.answered += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = repr(exc)


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True, name="rss")
        self.pid = pid
        self.max_rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.max_rss = max(self.max_rss, int(line.split()[1]) * 1024)
            except OSError:
                return
            self.stop.wait(0.05)


class CalmClient(threading.Thread):
    """One record at a time, each waited for, and an ApiVersions ping between records."""

    def __init__(self, bootstrap: str, until: float):
        super().__init__(daemon=True, name="calm")
        self.bootstrap, self.until = bootstrap, until
        self.produce_ms: list[float] = []
        self.ping_ms: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                             "linger.ms": 0, "enable.idempotence": True})
        try:
            # At least three records under the flood, whatever the scheduling.
            while time.monotonic() < self.until or len(self.produce_ms) < 3:
                if time.monotonic() > self.until + 60:
                    self.failures.append("fewer than 3 records answered in the flood + 60 s")
                    break
                done: list = []
                started = time.monotonic()
                producer.produce("calm", value=b"calm", on_delivery=lambda e, m: done.append(e))
                while not done and time.monotonic() - started < 60:
                    producer.poll(0.01)
                if not done or done[0] is not None:
                    self.failures.append(f"produce: {done[0] if done else 'no answer in 60 s'}")
                else:
                    self.produce_ms.append((time.monotonic() - started) * 1000)
                started = time.monotonic()
                with kh.RawConnection(self.bootstrap, timeout=60) as conn:
                    conn.request(18, 0, b"")
                self.ping_ms.append((time.monotonic() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failures.append(repr(exc))
        finally:
            producer.flush(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def test_a_flood_of_pipelined_produce_and_fetch_stays_within_the_memory_bound(kafscale_factory):
    args = [a for k, v in SETTINGS.items() for a in (k, str(v))]
    server = kafscale_factory(args, name="flooded")
    kh.confluent_create_topic(server.bootstrap, "flood", 4)
    kh.confluent_create_topic(server.bootstrap, "calm", 1)
    batch = kh.build_record_batch([kh.BatchRecord(None, b"x" * (BATCH_BYTES - 200), [])])
    sampler = RssSampler(server.pid)
    sampler.start()
    until = time.monotonic() + FLOOD_S
    flooders = [Flooder(server.bootstrap, "flood", i, until, batch) for i in range(CONNECTIONS)]
    calm = CalmClient(server.bootstrap, until)
    calm.start()
    for f in flooders:
        f.start()
    for f in flooders:
        f.join(FLOOD_S + 180)
    calm.join(FLOOD_S + 120)
    sampler.stop.set()
    sampler.join(5)
    figures = {
        "connections": CONNECTIONS, "seconds": FLOOD_S,
        "flood_answers": sum(f.answered for f in flooders),
        "flood_errors": sorted({f.error for f in flooders if f.error})[:5],
        "max_rss_mib": round(sampler.max_rss / MIB, 1), "bound_mib": round(BOUND / MIB, 1),
        "calm_records": len(calm.produce_ms),
        "calm_produce_ms": {"p50": round(percentile(calm.produce_ms, 0.5), 1),
                            "p99": round(percentile(calm.produce_ms, 0.99), 1),
                            "max": round(max(calm.produce_ms, default=float("nan")), 1)},
        "calm_ping_ms": {"p50": round(percentile(calm.ping_ms, 0.5), 1),
                         "max": round(max(calm.ping_ms, default=float("nan")), 1)},
        "calm_failures": calm.failures[:5],
    }
    print("flood:", json.dumps(figures))
    assert server.running, "the server died under the flood"
    assert not any(f.is_alive() for f in flooders), "a flooding connection hung"
    assert not calm.is_alive(), "the well-behaved client hung"
    assert not [f for f in flooders if f.error], figures
    assert not calm.failures, figures
    assert calm.produce_ms and calm.ping_ms, figures
    assert sampler.max_rss < BOUND, figures
    # Still serving normally after the flood.
    with kh.RawConnection(server.bootstrap, timeout=30) as conn:
        conn.request(18, 0, b"")

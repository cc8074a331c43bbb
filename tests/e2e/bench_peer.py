"""kafscale against a peer broker in the same run, with the same client (a measurement, not a
test: CI does not run it; issue 17).

    bash scripts/bench-peer.sh [--brokers kafscale,tansu-memory,tansu-sqlite] [--records N] ...

Starts each broker in turn on 127.0.0.1 (a fresh data directory each), creates one topic of
`--partitions` partitions with confluent-kafka's AdminClient, and runs the same four
workloads against it with confluent-kafka (librdkafka; acks=all, linger.ms=5, no
idempotence), one at a time:

- `flat-out`: one producer sends `--records` records of `--record-size` bytes as fast as the
  broker takes them;
- `consume`: one consumer reads them back from the earliest offset;
- `burst`: one producer sends `--burst-records` records of `--record-size` bytes at once on
  a fresh topic (a producer's first second), each record's latency from produce() to its
  acknowledgement;
- `paced`: one producer sends `--paced-rate` records a second of `--paced-size` bytes for
  `--paced-seconds`, each record's latency from when it was due to its acknowledgement.

For each broker and workload it prints MB/s (10^6 bytes of record values), latency
percentiles where measured, and the broker's CPU seconds per GB (user + system of the broker
process, from /proc). Every workload is bounded by its record count or its seconds and a
timeout; the brokers are killed at the end. Loopback only.

Brokers: `kafscale` (standalone, local disk, durable: an acknowledged record is fsynced),
`tansu-memory` (tansu's memory engine: not durable), `tansu-sqlite` (tansu's SQLite engine,
durable). The tansu binary is found with `--tansu` or $TANSU_BIN (scripts/bench-peer.sh
installs it when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Broker:
    name: str
    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.name}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                admin = AdminClient({"bootstrap.servers": self.bootstrap})
                admin.list_topics(timeout=2)
                return
            except KafkaException:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer Metadata in {timeout}s")

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def brokers(names: list[str], args, workdir: Path) -> list[Broker]:
    out = []
    for name in names:
        port = free_port()
        directory = workdir / name
        directory.mkdir()
        if name == "kafscale":
            argv = [args.kafscale, "standalone", "--data-dir", str(directory / "data"),
                    "--kafka-addr", f"127.0.0.1:{port}", "--http-addr", f"127.0.0.1:{free_port()}",
                    *args.kafscale_args.split()]
        elif name.startswith("tansu-"):
            engine = {"tansu-memory": "memory://tansu/",
                      "tansu-sqlite": "sqlite://tansu.db"}[name]
            argv = [args.tansu, "broker", "--storage-engine", engine,
                    "--listener-url", f"tcp://127.0.0.1:{port}",
                    "--advertised-listener-url", f"tcp://127.0.0.1:{port}"]
        else:
            raise SystemExit(f"unknown broker {name}")
        out.append(Broker(name, argv, port, directory))
    return out


def create_topic(bootstrap: str, partitions: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    # Metadata for the new topic may lag its creation on some brokers.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t and t.error is None and len(t.partitions) == partitions:
            return topic
        time.sleep(0.2)
    raise RuntimeError(f"topic {topic} never showed {partitions} partitions")


def producer(bootstrap: str, **extra) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                     "enable.idempotence": False, **extra})


class Acks:
    """Counts acknowledgements and errors; keeps latencies when asked."""

    def __init__(self, keep_latency: bool):
        self.ok = 0
        self.errors = 0
        self.first_error = None
        self.latencies: list[float] = []
        self.keep_latency = keep_latency

    def __call__(self, err, msg) -> None:
        if err is not None:
            self.errors += 1
            self.first_error = self.first_error or str(err)
            return
        self.ok += 1
        if self.keep_latency:
            self.latencies.append(msg.latency())

    def since(self, due: float):
        """A delivery callback that records the latency from `due` (a monotonic time)."""

        def acked(err, msg) -> None:
            self(err, msg)
            if err is None:
                self.latencies.append(time.monotonic() - due)

        return acked


def produce_all(p: Producer, topic: str, records: int, value: bytes, acks: Acks,
                partitions: int, timeout: float) -> float:
    """Sends `records` records round-robin over the partitions; the seconds until the last
    acknowledgement."""
    started = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value, partition=i % partitions, on_delivery=acks)
                break
            except BufferError:
                p.poll(0.005)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(timeout)
    if remaining:
        raise RuntimeError(f"{remaining} records unacknowledged after {timeout}s")
    return time.monotonic() - started


def flat_out(b: Broker, args) -> tuple[dict, str]:
    topic = create_topic(b.bootstrap, args.partitions)
    p = producer(b.bootstrap)
    acks = Acks(keep_latency=False)
    cpu = b.cpu()
    seconds = produce_all(p, topic, args.records, b"x" * args.record_size, acks,
                          args.partitions, args.timeout)
    cpu = b.cpu() - cpu
    gb = acks.ok * args.record_size / 1e9
    return ({"MB/s": gb * 1000 / seconds, "CPU-s/GB": cpu / gb, "acked": acks.ok,
             "errors": acks.errors, "seconds": seconds}, topic)


def consume(b: Broker, args, topic: str, expected: int) -> dict:
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = 0
    nbytes = 0
    cpu = b.cpu()
    started = None
    deadline = time.monotonic() + args.timeout
    while got < expected and time.monotonic() < deadline:
        for m in c.consume(num_messages=10_000, timeout=1.0):
            if m.error():
                continue
            if started is None:
                started = time.monotonic()
            got += 1
            nbytes += len(m.value())
    seconds = time.monotonic() - (started or time.monotonic())
    cpu = b.cpu() - cpu
    c.close()
    if got < expected:
        raise RuntimeError(f"consumed {got} of {expected}")
    return {"MB/s": nbytes / 1e6 / seconds, "CPU-s/GB": cpu / (nbytes / 1e9),
            "records": got, "seconds": seconds}


def burst(b: Broker, args) -> dict:
    topic = create_topic(b.bootstrap, args.partitions)
    p = producer(b.bootstrap)
    # Connect and learn the leaders first: the burst measures the broker, not the bootstrap.
    p.list_topics(topic, timeout=10)
    acks = Acks(keep_latency=True)
    seconds = produce_all(p, topic, args.burst_records, b"x" * args.record_size, acks,
                          args.partitions, args.timeout)
    lat = [x * 1000 for x in acks.latencies]
    return {"MB/s": acks.ok * args.record_size / 1e6 / seconds, "p50 ms": percentile(lat, 50),
            "p99 ms": percentile(lat, 99), "errors": acks.errors, "seconds": seconds}


def paced(b: Broker, args) -> dict:
    topic = create_topic(b.bootstrap, args.partitions)
    acks = Acks(keep_latency=False)
    p = producer(b.bootstrap)
    p.list_topics(topic, timeout=10)
    value = b"x" * args.paced_size
    total = int(args.paced_rate * args.paced_seconds)
    started = time.monotonic()
    sent = 0
    cpu = b.cpu()
    while sent < total:
        now = time.monotonic()
        should = min(total, int((now - started) * args.paced_rate) + 1)
        while sent < should:
            due = started + sent / args.paced_rate
            p.produce(topic, value, partition=sent % args.partitions, on_delivery=acks.since(due))
            sent += 1
        p.poll(0.0005)
    if p.flush(args.timeout):
        raise RuntimeError("paced records unacknowledged")
    cpu = b.cpu() - cpu
    lat = [x * 1000 for x in acks.latencies]
    return {"rate/s": acks.ok / (time.monotonic() - started), "p50 ms": percentile(lat, 50),
            "p99 ms": percentile(lat, 99), "p99.9 ms": percentile(lat, 99.9),
            "errors": acks.errors, "CPU-s": cpu}


def run_broker(b: Broker, args) -> dict:
    b.start()
    try:
        results = {}
        results["flat-out"], topic = flat_out(b, args)
        results["consume"] = consume(b, args, topic, results["flat-out"]["acked"])
        results["burst"] = burst(b, args)
        results["paced"] = paced(b, args)
        return results
    finally:
        b.stop()


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="kafscale,tansu-memory,tansu-sqlite")
    ap.add_argument("--rounds", type=int, default=1, help="every broker this many times, in turn")
    ap.add_argument("--kafscale", default=os.environ.get("KAFSCALE_BIN", "target/release/kafscale"))
    ap.add_argument("--kafscale-args", default="", help="extra flags for kafscale standalone")
    ap.add_argument("--tansu", default=os.environ.get("TANSU_BIN", shutil.which("tansu") or "tansu"))
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--burst-records", type=int, default=300_000)
    ap.add_argument("--paced-rate", type=float, default=20_000)
    ap.add_argument("--paced-size", type=int, default=100)
    ap.add_argument("--paced-seconds", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=300, help="seconds any one workload may take")
    ap.add_argument("--json", help="write every result here")
    args = ap.parse_args()
    args.kafscale = str(Path(args.kafscale).resolve())
    names = [n.strip() for n in args.brokers.split(",") if n.strip()]
    all_results = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        for round_no in range(args.rounds):
            workdir = Path(tmp) / f"round-{round_no}"
            workdir.mkdir()
            for b in brokers(names, args, workdir):
                print(f"# round {round_no + 1}: {b.name}", flush=True)
                try:
                    r = run_broker(b, args)
                except Exception as e:  # a broker that fails a workload is reported, not fatal
                    print(f"  failed: {e}; log tail:\n{b.log.read_text(errors='replace')[-1500:]}")
                    r = {"failed": str(e)}
                for workload, figures in r.items():
                    if isinstance(figures, dict):
                        print(f"  {workload:9} " + "  ".join(f"{k} {fmt(v)}" for k, v in figures.items()),
                              flush=True)
                all_results.append({"round": round_no + 1, "broker": b.name, **r})
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))


if __name__ == "__main__":
    sys.exit(main())

"""Distributed mode under test: separate `kafscale ingest`, `fetch` and `indexer`
processes on a real S3-compatible server (moto's server mode, started here on a
free 127.0.0.1 port) and a real DynamoDB-compatible server (AWS's DynamoDB Local,
started by scripts/with-dynamodb-local.sh, which runs this suite in a private
network namespace with only loopback and exports its endpoint and PID).

Both stores are reached through an `OutageProxy`, a TCP relay on 127.0.0.1 that a
test can cut (resetting live connections and refusing new ones) to simulate a
store outage without losing the store's in-memory contents.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

import pytest

import kafka_helpers as kh

DDB_ENDPOINT_ENV = "KAFSCALE_TEST_DYNAMODB_ENDPOINT"


def require_dynamodb() -> str:
    """The DynamoDB Local endpoint, or skip (fail when KAFSCALE_REQUIRE_DYNAMODB=1)."""
    endpoint = os.environ.get(DDB_ENDPOINT_ENV)
    if endpoint:
        return endpoint
    msg = (f"{DDB_ENDPOINT_ENV} is not set: run the suite under scripts/with-dynamodb-local.sh "
           "(scripts/test.sh does)")
    if os.environ.get("KAFSCALE_REQUIRE_DYNAMODB") == "1":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


class MotoServer:
    """`moto_server` (S3 API) on a free 127.0.0.1 port, in memory."""

    def __init__(self, workdir: Path):
        self.port = kh.free_port()
        self.log_path = Path(workdir) / "moto.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "MotoServer":
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        kh.register_child(self.proc)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return True
            except OSError:
                return False

        kh.wait_for(answers, timeout, what="moto_server to answer")
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no moto log)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            kh.unregister_child(self.proc)


class OutageProxy:
    """A TCP relay 127.0.0.1:port -> target. `cut()` resets every relayed
    connection and refuses new ones (accepts and resets at once) until
    `restore()`; the target itself keeps running with its data."""

    def __init__(self, target_host: str, target_port: int, name: str = "proxy"):
        self.target = (target_host, target_port)
        self.name = name
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.accepted = 0
        self.refused = 0
        self.thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _reset(s: socket.socket) -> None:
        try:
            # SO_LINGER 0: close sends RST, as a crashed server's kernel would.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            self.accepted += 1
            with self.lock:
                self.conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(src)
                self.conns.discard(dst)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            conns = list(self.conns)
            self.conns.clear()
        for s in conns:
            self._reset(s)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        try:
            self.listener.close()
        except OSError:
            pass


class Cluster:
    """One distributed kafscale cluster: its own bucket and table, N indexers,
    N ingest and N fetch gateways, all on 127.0.0.1 with ports chosen by the OS."""

    def __init__(self, factory, moto: MotoServer, ddb_endpoint: str, *, shards: int = 8,
                 lease_ttl_ms: int = 3000, name: str = "cluster"):
        self.factory = factory
        self.moto = moto
        self.name = name
        self.bucket = f"kafscale-{uuid.uuid4().hex[:12]}"
        self.table_prefix = f"t{uuid.uuid4().hex[:10]}_"
        ddb_host, ddb_port = kh.split_addr(ddb_endpoint.split("://", 1)[1])
        moto_host, moto_port = kh.split_addr(moto.endpoint.split("://", 1)[1])
        self.s3_proxy = OutageProxy(moto_host, moto_port, f"{name}-s3")
        self.ddb_proxy = OutageProxy(ddb_host, ddb_port, f"{name}-ddb")
        self.shards = shards
        self.lease_ttl_ms = lease_ttl_ms
        self.indexers: list = []
        self.ingests: list = []
        self.fetches: list = []
        # Environment every process of the cluster gets on top (e.g. a fault plan file).
        self.extra_env: dict[str, str] = {}

    def env(self, log: Optional[str] = None) -> dict[str, str]:
        """The environment of the cluster's processes; `log` sets KAFSCALE_LOG."""
        env = dict(os.environ)
        env.update({
            "KAFSCALE_S3_BUCKET": self.bucket,
            "KAFSCALE_S3_ENDPOINT": self.s3_proxy.endpoint,
            "KAFSCALE_S3_PATH_STYLE": "true",
            "KAFSCALE_DYNAMODB_ENDPOINT": self.ddb_proxy.endpoint,
            "KAFSCALE_TABLE_PREFIX": self.table_prefix,
            "KAFSCALE_SHARDS": str(self.shards),
            "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "kafscaletest"),
            "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "kafscaletest"),
            "AWS_REGION": env.get("AWS_REGION", "us-east-1"),
            "AWS_EC2_METADATA_DISABLED": "true",
            # The latency setting rather than the S3 default (150 ms, a cost bound), so that
            # the suite's many produce round trips stay short; test_cost.py covers the default.
            "KAFSCALE_FLUSH_INTERVAL_MS": "20",
        })
        env.update(self.extra_env)
        if log:
            env["KAFSCALE_LOG"] = log
        return env

    def admin_init(self) -> str:
        cmd = [str(kafscale_bin()), "admin", "init", "--create-bucket", "true"]
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"admin init failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def start_indexer(self, name: Optional[str] = None, log: Optional[str] = None,
                      extra: tuple = ()):
        env = self.env(log)
        srv = self.factory(["--lease-ttl-ms", str(self.lease_ttl_ms), *extra], env=env,
                           name=name or f"indexer{len(self.indexers)}", mode="indexer")
        self.indexers.append(srv)
        return srv

    def start_ingest(self, name: Optional[str] = None, extra: tuple = (), log: Optional[str] = None):
        env = self.env(log)
        srv = self.factory(["--commit-failover-ms", "60000", *extra], env=env,
                           name=name or f"ingest{len(self.ingests)}", mode="ingest")
        self.ingests.append(srv)
        return srv

    def start_fetch(self, name: Optional[str] = None, extra: tuple = (), log: Optional[str] = None):
        # Group coordinator leases as short as the indexers' (a dead coordinator's groups
        # move within that time) and a short initial rebalance delay, to keep tests quick.
        args = ["--watermark-poll-ms", "50", "--group-lease-ms", str(self.lease_ttl_ms),
                "--group-initial-rebalance-delay-ms", "1000", *extra]
        env = self.env(log)
        srv = self.factory(args, env=env,
                           name=name or f"fetch{len(self.fetches)}", mode="fetch")
        self.fetches.append(srv)
        return srv

    def start(self, indexers: int = 2, ingests: int = 2, fetches: int = 2) -> "Cluster":
        self.admin_init()
        for _ in range(indexers):
            self.start_indexer()
        for _ in range(ingests):
            self.start_ingest()
        for _ in range(fetches):
            self.start_fetch()
        return self

    def close(self) -> None:
        self.s3_proxy.close()
        self.ddb_proxy.close()


class StoreReader:
    """A cluster's bucket and table read directly through boto3 (moto and DynamoDB Local),
    and the id of `topic`: what tests check the stores themselves with."""

    def __init__(self, c: "Cluster", topic: str):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id="kafscaletest",
                                        aws_secret_access_key="kafscaletest",
                                        region_name="us-east-1")
        config = Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                        retries={"max_attempts": 2})
        ddb_host, ddb_port = c.ddb_proxy.target
        self.ddb = session.client("dynamodb", endpoint_url=f"http://{ddb_host}:{ddb_port}",
                                  config=config)
        self.s3 = session.client("s3", endpoint_url=c.moto.endpoint, config=config)
        self.table = f"{c.table_prefix}kafscale"
        self.bucket = c.bucket
        self.cluster = c
        item = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                 Key={"pk": {"S": "topic"}, "sk": {"S": topic}})["Item"]
        self.topic_id = json.loads(bytes(item["v"]["B"]))["topic_id"]

    def _query(self, pk: str) -> list[tuple[str, dict]]:
        """Every item of partition key `pk`: (sort key, decoded value)."""
        out, start = [], None
        while True:
            kw = {"TableName": self.table, "ConsistentRead": True,
                  "KeyConditionExpression": "pk = :pk",
                  "ExpressionAttributeValues": {":pk": {"S": pk}}}
            if start:
                kw["ExclusiveStartKey"] = start
            resp = self.ddb.query(**kw)
            out += [(i["sk"]["S"], json.loads(bytes(i["v"]["B"]))) for i in resp["Items"]]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out


    def shard_count(self) -> int:
        item = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                 Key={"pk": {"S": "meta"}, "sk": {"S": "cluster"}})["Item"]
        return json.loads(bytes(item["v"]["B"]))["shard_count"]

    def log_start(self, partition: int) -> int:
        item = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                 Key={"pk": {"S": f"part/{self.topic_id}"},
                                      "sk": {"S": f"{partition:010d}"}})
        return json.loads(bytes(item["Item"]["v"]["B"]))["log_start_offset"] if "Item" in item else 0

    def index_entries(self, partition: int) -> list[dict]:
        """The partition's index entries as readers see them, whatever the layout: single
        entries (format 1), folded pages (format 2: whole entries; 3: arrays), and above the
        fold the shard log's entries. Overlapping pages (a fold redone) count once; entries
        wholly below the log start are left out (a page keeps them until its last one is
        below it too, but no reader reaches them)."""
        log_start = self.log_start(partition)
        found = []
        for _, value in self._query(f"idx/{self.topic_id}/{partition}"):
            if value.get("f") == 4:
                found += short_page_entries(value)
            elif value.get("format") == 3:
                found += [page_entry(value["segments"], e) for e in value["entries"]]
            elif "entries" in value:
                found += value["entries"]
            else:
                found.append(value)
        for _, item in self.shard_log_items(folded=False):
            found += [e for e in log_entries(item)
                      if (e["topic_id"], e["partition"]) == (self.topic_id, partition)]
        entries = []
        for e in sorted(found, key=lambda e: (e["last_offset"], e["base_offset"])):
            if e["last_offset"] < log_start:
                continue
            if not entries or e["last_offset"] > entries[-1]["last_offset"]:
                entries.append(e)
        return entries

    def shard_log_items(self, folded: bool = True) -> list[tuple[int, dict]]:
        """Every shard's log items as (shard, item); only those above the fold checkpoint
        unless `folded`."""
        out = []
        for shard in range(self.shard_count()):
            through = 0
            if not folded:
                cp = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                       Key={"pk": {"S": f"fold/{shard:05}"}, "sk": {"S": "checkpoint"}})
                through = json.loads(bytes(cp["Item"]["v"]["B"]))["folded_through"] if "Item" in cp else 0
            out += [(shard, whole_log_item(item)) for sk, item in self._query(f"slog/{shard:05}")
                    if int(sk) > through]
        return out


def wrap(n: int) -> int:
    """`n` as Rust's wrapping i64 arithmetic leaves it."""
    return (n + 2**63) % 2**64 - 2**63


def segment_key(stored, base_ms: int = 0) -> str:
    """A segment key as items store it (shared/src/keys.rs, `StoredSegmentKey`): whole, or
    `[ms relative to base_ms, id in base64url]`."""
    if isinstance(stored, str):
        return stored
    delta, b64 = stored
    raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    return f"segments/{raw[15]:02x}/{wrap(base_ms + delta):013d}-{raw.hex()}.kseg"


def short_page_entries(page: dict) -> list[dict]:
    """The entries of a format-4 index page (shared/src/catalog.rs, `StoredPage::Short`)."""
    keys, ms = [], 0
    for stored in page["s"]:
        keys.append(segment_key(stored, ms))
        if not isinstance(stored, str):
            ms = wrap(ms + stored[0])
    out, next_base, prev_first = [], 0, 0
    for pos, base, span, start, length, batches, records, first, dmax, drun in page["e"]:
        base, first = wrap(next_base + base), wrap(prev_first + first)
        entry = page_entry(keys, [pos, base, span, start, length, batches, records, first, dmax, drun])
        next_base, prev_first = wrap(entry["last_offset"] + 1), first
        out.append(entry)
    return out


def whole_log_item(item: dict) -> dict:
    """A shard-log item in format 2's shape, whichever format it is stored in (format 3:
    shared/src/shard_log.rs, `ShortLogItem`). Outcomes are left out of a format-3 item."""
    if item.get("f") != 3:
        return item
    at = item["t"]
    entries = []
    for topic, partition, base, span, start, length, batches, records, first, dmax, drun in item["e"]:
        first = wrap(at + first)
        mx = wrap(first + dmax)
        entries.append([topic, partition, base, wrap(base + span), start, length, batches,
                        records, first, mx, wrap(mx + drun)])
    return {"format": 3, "segment_key": segment_key(item["k"]), "segment_size": item["z"],
            "committed_at_ms": at, "topics": [str(uuid.UUID(t)) for t in item["i"]],
            "entries": entries, "producers": item.get("p", [])}


def page_entry(segments: list[str], e: list) -> dict:
    """One entry of a format-3 index page (shared/src/catalog.rs, `StoredPage`)."""
    pos, base, span, start, length, batches, records, first, dmax, drun = e
    return {"base_offset": base, "last_offset": base + span, "segment_key": segments[pos],
            "byte_start": start, "byte_len": length, "batch_count": batches,
            "record_count": records, "first_timestamp": first, "max_timestamp": first + dmax,
            "running_max_timestamp": None if drun is None else first + dmax + drun}


def log_entries(item: dict) -> list[dict]:
    """A shard-log item's index entries (shared/src/shard_log.rs, `LogEntry`), with their
    topic ids."""
    out = []
    for topic, partition, base, last, start, length, batches, records, first, mx, run in item["entries"]:
        out.append({"topic_id": item["topics"][topic], "partition": partition,
                    "base_offset": base, "last_offset": last, "segment_key": item["segment_key"],
                    "byte_start": start, "byte_len": length, "batch_count": batches,
                    "record_count": records, "first_timestamp": first, "max_timestamp": mx,
                    "running_max_timestamp": run})
    return out


def kafscale_bin() -> Path:
    from conftest import kafscale_binary  # the one place that knows where the binary is

    return kafscale_binary()


def shards_acquired(server) -> list[int]:
    """Shards the indexer logged as acquired (from its log, in order)."""
    import re

    text = server.log_path.read_text(errors="replace")
    return [int(m.group(1)) for m in re.finditer(r"acquired shard lease.*?shard=(\d+)", text)]


def shards_owned(server) -> set[int]:
    """Shards the indexer owns now as its log tells it: acquired, and not released or lost
    since."""
    import re

    owned: set[int] = set()
    text = server.log_path.read_text(errors="replace")
    for m in re.finditer(r"(acquired shard lease|released shard lease|shard lease lost)[^\n]*?shard=(\d+)", text):
        if m.group(1) == "acquired shard lease":
            owned.add(int(m.group(2)))
        else:
            owned.discard(int(m.group(2)))
    return owned


def coordinator_slots(server) -> set[int]:
    """Group coordinator slots the fetch gateway last logged as owned."""
    import re

    text = server.log_path.read_text(errors="replace")
    owned = re.findall(r"group coordinator slots changed owned=\[([0-9, ]*)\]", text)
    return {int(s) for s in owned[-1].split(",") if s.strip()} if owned else set()


def wait_coordinators_settled(fetches, slots: int = 16, timeout: float = 30.0) -> None:
    """Waits until every group coordinator slot has exactly one owner and every
    fetch gateway owns its share. A gateway that joins takes slots over from the
    others; during that hand-over a client may be told NOT_COORDINATOR, which is
    Kafka's normal answer to a moving coordinator, not what these tests are about."""
    import kafka_helpers as kh

    share = slots // len(fetches)

    def settled() -> bool:
        owned = [coordinator_slots(f) for f in fetches]
        union = set().union(*owned)
        return (len(union) == slots and sum(len(o) for o in owned) == slots
                and all(len(o) >= share for o in owned))

    kh.wait_for(settled, timeout, what="group coordinator slots spread over the fetch gateways")


class PacedProducer:
    """An idempotent confluent-kafka producer in a background thread that sends
    `count` records (value b"<tag>-<i>", round-robin over `partitions`) at about
    `rate` records/s, so that production spans a failure the test injects.
    `deliveries[i]` is (partition, offset) or the error string of record i."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, count: int, rate: float,
                 tag: str = "r", conf: Optional[dict] = None, timeout: float = 180.0):
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.count = count
        self.rate = rate
        self.tag = tag
        self.conf = conf or {}
        self.timeout = timeout
        self.deliveries: list = [None] * count
        self.sent_at: list[float] = [0.0] * count
        self.acked_at: list[float] = [0.0] * count
        self.produced = 0
        self.error: Optional[str] = None
        self.thread = threading.Thread(target=self._run, name=f"paced-{tag}", daemon=True)

    def value(self, i: int) -> bytes:
        return f"{self.tag}-{i}".encode()

    def start(self) -> "PacedProducer":
        self.thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import Producer

        conf = {"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
                "enable.idempotence": True, "message.timeout.ms": int(self.timeout * 1000)}
        conf.update(self.conf)
        producer = Producer(conf)
        deadline = kh.Deadline(self.timeout)

        def make_cb(i):
            def cb(err, msg):
                self.acked_at[i] = time.monotonic()
                if err is not None:
                    self.deliveries[i] = str(err)
                else:
                    self.deliveries[i] = (msg.partition(), msg.offset())
            return cb

        try:
            start = time.monotonic()
            for i in range(self.count):
                while time.monotonic() < start + i / self.rate:
                    producer.poll(0.002)
                while True:
                    try:
                        self.sent_at[i] = time.monotonic()
                        producer.produce(self.topic, key=f"{self.tag}-{i % 97}".encode(),
                                         value=self.value(i), partition=i % self.partitions,
                                         on_delivery=make_cb(i))
                        break
                    except BufferError:
                        producer.poll(0.05)
                        if deadline.expired():
                            raise AssertionError("producer queue stayed full until the deadline")
                self.produced = i + 1
                producer.poll(0)
            remaining = producer.flush(max(1.0, deadline.remaining()))
            if remaining:
                self.error = f"{remaining} records undelivered at the deadline"
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = repr(exc)
        finally:
            try:
                producer.purge()
                producer.poll(0)
            finally:
                producer.close()

    def wait_produced(self, n: int, timeout: float = 60.0) -> None:
        kh.wait_for(lambda: self.produced >= n, timeout, what=f"{self.tag}: {n} records produced")

    def join(self) -> list:
        self.thread.join(self.timeout + 30)
        assert not self.thread.is_alive(), f"{self.tag}: producer thread did not finish"
        assert self.error is None, f"{self.tag}: {self.error}"
        failed = [(i, d) for i, d in enumerate(self.deliveries) if not isinstance(d, tuple)]
        assert not failed, f"{self.tag}: {len(failed)} records not acknowledged, first {failed[:5]}"
        return self.deliveries


def assert_acks_consumed(deliveries_by_tag: dict, consumed: list, partitions: int) -> None:
    """The core promise: the consumed log of every partition is 0..n-1 with no
    gap and no duplicate, every acknowledged record is in it at exactly its
    acknowledged offset, and nothing else is (idempotent producers: no
    duplicates from retries)."""
    by_pos = {}
    for rec in consumed:
        assert (rec.partition, rec.offset) not in by_pos, f"offset consumed twice: {rec.partition}/{rec.offset}"
        by_pos[(rec.partition, rec.offset)] = rec.value
    ends = kh.assert_contiguous_offsets(consumed)
    acked = 0
    # librdkafka acks an idempotent batch whose answer was lost without an offset once a later
    # batch of the partition succeeds (see tests/e2e/history.py): it must be in its partition.
    in_partition = {(p, value) for (p, _), value in by_pos.items()}
    for tag, deliveries in deliveries_by_tag.items():
        for i, d in enumerate(deliveries):
            value = f"{tag}-{i}".encode()
            if d[1] is None:
                assert (d[0], value) in in_partition, (
                    f"{tag} record {i} acknowledged without an offset is not in partition {d[0]}")
            else:
                got = by_pos.get(d)
                assert got == value, (f"{tag} record {i} acknowledged at {d} but that offset "
                                      f"holds {got!r}")
            acked += 1
    assert len(consumed) == acked, (
        f"{len(consumed)} records consumed but {acked} acknowledged (duplicates or strays); "
        f"ends {ends}")
    assert all(p < partitions for p, _ in by_pos)

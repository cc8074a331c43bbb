"""Idempotent producer: a forced retry of an already-committed batch must not
create duplicates.

A small TCP proxy sits between the client and kafscale (the server advertises
the proxy's address via --advertised-addr, so every client connection goes
through it).  The proxy parses Kafka frames; for the first few Produce
requests it forwards the request, waits for the server's response (so the
server has committed the batch), and then drops the client connection instead
of passing the response on.  The client cannot know the batch was written and
retries it with the same producer id / epoch / sequence numbers, which the
server must recognise as a duplicate.
"""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from typing import Optional

import pytest

import kafka_helpers as kh

N_RECORDS = 5_000
PARTITIONS = 3
# Which Produce responses (0-based, in the order the server sends them) the
# proxy swallows: the very first batches (sequence 0) and two mid-stream ones,
# while other requests are in flight on the same connection.
DROP_PRODUCE_RESPONSES = frozenset({0, 7, 19})


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket) -> Optional[bytes]:
    """One length-prefixed Kafka frame's payload, or None at EOF."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > 512 * 1024 * 1024:
        raise OSError(f"bad frame size {size}")
    return _recv_exact(sock, size)


class DroppingProxy:
    """TCP proxy that swallows the Produce responses whose index (in response
    order) is in `drop` and kills the client connection each time."""

    def __init__(self, drop: frozenset):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.upstream: Optional[tuple[str, int]] = None
        self.drop = frozenset(drop)
        self.produce_responses = 0
        self.lock = threading.Lock()
        self.connections = 0
        self.produce_requests: list[dict] = []  # in arrival order
        self.dropped: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self) -> "DroppingProxy":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            self._kill(s)
        self._thread.join(timeout=5)

    @staticmethod
    def _kill(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                conn_id = self.connections
            threading.Thread(target=self._serve, args=(client, conn_id), name=f"proxy-{conn_id}",
                             daemon=True).start()

    def _to_client(self, client: socket.socket, payload: bytes) -> None:
        client.sendall(kh.frame(payload))

    def _serve(self, client: socket.socket, conn_id: int) -> None:
        client.settimeout(None)
        assert self.upstream is not None, "proxy upstream not set"
        try:
            up = socket.create_connection(self.upstream, timeout=10)
            up.settimeout(None)
        except OSError as exc:
            self.errors.append(f"conn {conn_id}: upstream connect failed: {exc}")
            self._kill(client)
            return
        with self.lock:
            self._socks.update((client, up))
        pending: dict[int, dict] = {}

        def close_both():
            self._kill(client)
            self._kill(up)
            with self.lock:
                self._socks.discard(client)
                self._socks.discard(up)

        def client_to_server():
            try:
                while True:
                    payload = _read_frame(client)
                    if payload is None:
                        break
                    hdr = kh.parse_request_header(payload)
                    info = {"conn": conn_id, "api_key": hdr.api_key, "version": hdr.api_version,
                            "corr": hdr.correlation_id, "batches": None}
                    if hdr.api_key == kh.API_PRODUCE:
                        try:
                            info["batches"] = kh.parse_produce_request(payload)[1]
                        except Exception as exc:  # noqa: BLE001 - recorded, asserted on later
                            self.errors.append(f"conn {conn_id}: cannot parse Produce v{hdr.api_version}: {exc!r}")
                        with self.lock:
                            info["seq_no"] = len(self.produce_requests)
                            self.produce_requests.append(info)
                    with self.lock:
                        pending[hdr.correlation_id] = info
                    up.sendall(kh.frame(payload))
            except OSError:
                pass
            finally:
                close_both()

        def server_to_client():
            try:
                while True:
                    payload = _read_frame(up)
                    if payload is None:
                        break
                    (corr,) = struct.unpack_from(">i", payload)
                    with self.lock:
                        info = pending.pop(corr, None)
                        drop = False
                        if info and info["api_key"] == kh.API_PRODUCE:
                            drop = self.produce_responses in self.drop
                            self.produce_responses += 1
                    if drop:
                        results = None
                        try:
                            r = kh.Reader(payload, 4)
                            if info["version"] >= 9:
                                r.skip_tagged_fields()  # response header v1
                            results = kh.decode_produce_response(r, info["version"])
                        except Exception as exc:  # noqa: BLE001
                            self.errors.append(f"conn {conn_id}: cannot parse Produce response: {exc!r}")
                        with self.lock:
                            self.dropped.append(dict(info, results=results))
                        return  # finally: drop both connections, response never delivered
                    self._to_client(client, payload)
            except OSError:
                pass
            finally:
                close_both()

        threading.Thread(target=client_to_server, name=f"proxy-{conn_id}-c2s", daemon=True).start()
        server_to_client()


@pytest.fixture
def proxy():
    p = DroppingProxy(DROP_PRODUCE_RESPONSES).start()
    yield p
    p.close()


@pytest.mark.deadline(300)
def test_idempotent_retry_after_lost_response_has_no_duplicates(kafscale_factory, proxy):
    srv = kafscale_factory(["--advertised-addr", proxy.addr], name="behind-proxy")
    proxy.upstream = kh.split_addr(srv.bootstrap)
    boot = proxy.addr  # every client byte goes through the proxy
    topic = f"idem-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(boot, topic, PARTITIONS)

    items = [{"key": f"k{i % 30:02d}".encode(), "value": f"id-{i:05d}".encode()} for i in range(N_RECORDS)]
    deliveries = kh.confluent_produce(boot, topic, items, {
        "enable.idempotence": True,
        "acks": "all",
        "batch.num.messages": 100,   # many small Produce requests
        "linger.ms": 2,
        "retry.backoff.ms": 50,
        "reconnect.backoff.ms": 50,
    }, timeout=120)

    # --- the proxy really forced retries ---------------------------------
    assert not proxy.errors, f"proxy errors: {proxy.errors}"
    assert len(proxy.dropped) == len(DROP_PRODUCE_RESPONSES), (
        f"proxy dropped {len(proxy.dropped)} Produce responses, wanted {len(DROP_PRODUCE_RESPONSES)} "
        f"({len(proxy.produce_requests)} Produce requests seen)")
    committed = [d for d in proxy.dropped
                 if d["results"] and all(r.error_code == kh.ERR_NONE for r in d["results"])]
    assert committed, f"no dropped response was a success: {[d['results'] for d in proxy.dropped]}"
    retried = []
    for d in committed:
        for b in d["batches"] or []:
            ident = (b.topic, b.partition, b.producer_id, b.producer_epoch, b.base_sequence)
            for later in proxy.produce_requests[d["seq_no"] + 1:]:
                if any((x.topic, x.partition, x.producer_id, x.producer_epoch, x.base_sequence) == ident
                       for x in later["batches"] or []):
                    retried.append(ident)
                    break
    assert retried, ("no committed-but-unacknowledged batch was sent again with the same "
                     "producer id/epoch/sequence: the test did not exercise deduplication")
    assert all(b.producer_id >= 0 for d in committed for b in d["batches"] or []), \
        "Produce batches carry no producer id: idempotence not in effect"

    # --- every record acknowledged, none duplicated ----------------------
    errors = [d for d in deliveries if d.error]
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"

    records = kh.confluent_consume_all(boot, topic, range(PARTITIONS), expected=N_RECORDS, timeout=120)
    ids = [int(r.value.decode().split("-")[1]) for r in records]
    dupes = len(ids) - len(set(ids))
    assert dupes == 0, f"{dupes} duplicate records (retried batches {retried})"
    assert len(records) == N_RECORDS, f"consumed {len(records)} records, expected {N_RECORDS}"
    assert set(ids) == set(range(N_RECORDS))
    kh.assert_contiguous_offsets(records)
    at = {(r.partition, r.offset): r for r in records}
    for p, recs in kh.by_partition(records).items():
        pids = [int(r.value.decode().split("-")[1]) for r in recs]
        assert pids == sorted(pids), f"partition {p}: records out of produce order"
    for i, d in enumerate(deliveries):
        if d.offset >= 0:  # a duplicate's report may carry no offset
            r = at.get((d.partition, d.offset))
            assert r is not None and r.value == items[i]["value"], (
                f"record {i}: acknowledged at p{d.partition}@{d.offset} but found {r}")
    print(f"proxy: {proxy.connections} connections, {len(proxy.produce_requests)} Produce requests, "
          f"dropped {len(proxy.dropped)} responses, retried batches {retried}")

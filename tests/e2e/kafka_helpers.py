"""Shared helpers for the kafscale end-to-end suite.

Everything here is deliberately small and dependency-light:

* raw Kafka protocol encoding/decoding (request frames, a magic-2 record batch
  builder, minimal response decoders, a Produce request parser used by the
  idempotence proxy) written against https://kafka.apache.org/protocol;
* client drivers for kcat, confluent-kafka and kafka-python, every one of
  them bounded by a deadline so no test can hang forever;
* a registry of child processes so the per-test watchdog in conftest.py can
  kill them when a test overruns.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import crc32c as _crc32c

# ---------------------------------------------------------------------------
# Child-process registry (used by the watchdog in conftest.py)
# ---------------------------------------------------------------------------

_CHILDREN_LOCK = threading.Lock()
_CHILDREN: set = set()


def register_child(proc: subprocess.Popen) -> None:
    with _CHILDREN_LOCK:
        _CHILDREN.add(proc)


def unregister_child(proc: subprocess.Popen) -> None:
    with _CHILDREN_LOCK:
        _CHILDREN.discard(proc)


def kill_all_children() -> None:
    """SIGKILL every registered child that is still running (watchdog use)."""
    with _CHILDREN_LOCK:
        procs = list(_CHILDREN)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------


# Passwords and tokens the tests of this run gave to servers and clients: no server log may
# carry one (checked at the end of the run by test_zz_secrets_never_logged.py).
SECRETS: set[str] = set()


def secret(value: str) -> str:
    """Registers `value` as a secret of this run and returns it (at least 8 characters, so
    that finding it in a log means a leak, not a common word)."""
    assert len(value) >= 8, "a test secret must be distinctive"
    SECRETS.add(value)
    return value


def metric_value(server, name: str) -> float:
    """The sum of a metric's series (every label set) on `server`'s /metrics."""
    text = server.http_get("/metrics")[1].decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class Deadline:
    """A monotonic deadline: `Deadline(30)` expires 30 s from now."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1,
             what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = Deadline(timeout)
    last_exc: Optional[str] = None  # a string: keeping the exception would pin frames (and clients)
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = repr(exc)
        if deadline.expired():
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Primitive encoders (big-endian, Kafka protocol types)
# ---------------------------------------------------------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def kstring(s: Optional[str]) -> bytes:
    """STRING / NULLABLE_STRING: int16 length + UTF-8 bytes (-1 = null)."""
    if s is None:
        return i16(-1)
    b = s.encode("utf-8")
    return i16(len(b)) + b


def kbytes(b: Optional[bytes]) -> bytes:
    """BYTES / NULLABLE_BYTES: int32 length + bytes (-1 = null)."""
    if b is None:
        return i32(-1)
    return i32(len(b)) + bytes(b)


def uvarint(n: int) -> bytes:
    """UNSIGNED_VARINT (protobuf-style base-128)."""
    if n < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(n: int) -> bytes:
    """VARINT / VARLONG: zig-zag encoded signed integer (64-bit range)."""
    return uvarint(((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF)


def compact_string(s: Optional[str]) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode("utf-8")
    return uvarint(len(b) + 1) + b


TAGGED_FIELDS_EMPTY = b"\x00"


class Reader:
    """Cursor over a response buffer with the Kafka primitive decoders."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf = bytes(buf)
        self.pos = pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"short buffer: need {n} bytes at {self.pos}, have {len(self.buf) - self.pos}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def string(self) -> Optional[str]:
        n = self.i16()
        return None if n < 0 else self._take(n).decode("utf-8")

    def bytes_(self) -> Optional[bytes]:
        n = self.i32()
        return None if n < 0 else self._take(n)

    def compact_string(self) -> Optional[str]:
        n = self.uvarint()
        return None if n == 0 else self._take(n - 1).decode("utf-8")

    def compact_bytes(self) -> Optional[bytes]:
        n = self.uvarint()
        return None if n == 0 else self._take(n - 1)

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())

    def remaining(self) -> int:
        return len(self.buf) - self.pos


# ---------------------------------------------------------------------------
# API keys, error codes
# ---------------------------------------------------------------------------

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20
API_INIT_PRODUCER_ID = 22

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_UNSUPPORTED_VERSION = 35

# Highest version of each request that does NOT yet use the flexible
# (compact / tagged-field) encoding.  Request header v1 below it, v2 from it.
_FIRST_FLEXIBLE_VERSION = {
    API_PRODUCE: 9,
    API_FETCH: 12,
    API_LIST_OFFSETS: 6,
    API_METADATA: 9,
    API_OFFSET_COMMIT: 8,
    API_OFFSET_FETCH: 6,
    API_API_VERSIONS: 3,
    API_CREATE_TOPICS: 5,
}


def is_flexible(api_key: int, api_version: int) -> bool:
    first = _FIRST_FLEXIBLE_VERSION.get(api_key)
    return first is not None and api_version >= first


# ---------------------------------------------------------------------------
# Request framing
# ---------------------------------------------------------------------------


def request_header(api_key: int, api_version: int, correlation_id: int,
                   client_id: Optional[str] = "kafscale-e2e", header_version: int = 1) -> bytes:
    """Request header v1 (api_key, api_version, correlation_id, client_id) or
    v2 (v1 + empty tagged-field section).  client_id is a classic
    NULLABLE_STRING in both."""
    h = i16(api_key) + i16(api_version) + i32(correlation_id) + kstring(client_id)
    if header_version >= 2:
        h += TAGGED_FIELDS_EMPTY
    return h


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def encode_request(api_key: int, api_version: int, correlation_id: int, body: bytes,
                   client_id: Optional[str] = "kafscale-e2e",
                   header_version: Optional[int] = None) -> bytes:
    if header_version is None:
        header_version = 2 if is_flexible(api_key, api_version) else 1
    return frame(request_header(api_key, api_version, correlation_id, client_id, header_version) + body)


def api_versions_request_body(version: int) -> bytes:
    """ApiVersions body: empty for v0-v2; v3+ carries client software name/version."""
    if version < 3:
        return b""
    return compact_string("kafscale-e2e") + compact_string("1.0") + TAGGED_FIELDS_EMPTY


def produce_request_body_v3(topic: str, partition: int, records: bytes, acks: int = -1,
                            timeout_ms: int = 10_000, transactional_id: Optional[str] = None) -> bytes:
    """Produce v3 (non-flexible): one topic, one partition."""
    return (kstring(transactional_id) + i16(acks) + i32(timeout_ms)
            + i32(1) + kstring(topic)
            + i32(1) + i32(partition) + kbytes(records))


# ---------------------------------------------------------------------------
# Response decoding
# ---------------------------------------------------------------------------


@dataclass
class ApiVersionsResult:
    error_code: int
    api_keys: dict  # api_key -> (min_version, max_version)


def decode_api_versions_v0(body: Reader) -> ApiVersionsResult:
    """ApiVersions response v0 body (after the correlation id).  Trailing bytes
    (v1+ throttle_time_ms) are ignored."""
    error = body.i16()
    n = body.i32()
    if n < 0 or n > 10_000:
        raise ValueError(f"implausible api_keys count {n}")
    keys = {}
    for _ in range(n):
        k, lo, hi = body.i16(), body.i16(), body.i16()
        keys[k] = (lo, hi)
    return ApiVersionsResult(error, keys)


def decode_api_versions_v3(body: Reader) -> ApiVersionsResult:
    """ApiVersions response v3+ body (flexible; the response header is still v0)."""
    error = body.i16()
    keys = {}
    for _ in range(body.uvarint() - 1):
        k, lo, hi = body.i16(), body.i16(), body.i16()
        body.skip_tagged_fields()
        keys[k] = (lo, hi)
    body.i32()  # throttle_time_ms
    body.skip_tagged_fields()
    return ApiVersionsResult(error, keys)


@dataclass
class ProducePartitionResult:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time: int = -1


def decode_produce_response_v3(body: Reader) -> list[ProducePartitionResult]:
    """Produce response v2-v4 body (after the correlation id)."""
    out = []
    for _ in range(body.i32()):
        topic = body.string()
        for _ in range(body.i32()):
            partition = body.i32()
            error = body.i16()
            base_offset = body.i64()
            log_append_time = body.i64()
            out.append(ProducePartitionResult(topic, partition, error, base_offset, log_append_time))
    body.i32()  # throttle_time_ms
    return out


def decode_produce_response(body: Reader, version: int) -> list[ProducePartitionResult]:
    """Produce response body (after the response header) for v3..v13,
    decoding only topic / partition / error_code / base_offset."""
    flexible = version >= 9
    out = []
    n_topics = body.uvarint() - 1 if flexible else body.i32()
    for _ in range(n_topics):
        if version >= 13:
            topic = body.raw(16).hex()  # topic id (uuid)
        else:
            topic = body.compact_string() if flexible else body.string()
        n_parts = body.uvarint() - 1 if flexible else body.i32()
        for _ in range(n_parts):
            partition = body.i32()
            error = body.i16()
            base_offset = body.i64()
            log_append_time = body.i64()
            if version >= 5:
                body.i64()  # log_start_offset
            if version >= 8:
                n_rec_errors = body.uvarint() - 1 if flexible else body.i32()
                for _ in range(max(0, n_rec_errors)):
                    body.i32()
                    body.compact_string() if flexible else body.string()
                    if flexible:
                        body.skip_tagged_fields()
                body.compact_string() if flexible else body.string()  # error_message
            if flexible:
                body.skip_tagged_fields()
            out.append(ProducePartitionResult(topic, partition, error, base_offset, log_append_time))
        if flexible:
            body.skip_tagged_fields()
    return out


# ---------------------------------------------------------------------------
# Produce request parsing (what a client sent; used by the idempotence proxy)
# ---------------------------------------------------------------------------


@dataclass
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: Optional[str]
    body_offset: int


def parse_request_header(payload: bytes) -> RequestHeader:
    """Parse a request header from a frame payload (without the length prefix)."""
    r = Reader(payload)
    api_key, api_version, corr = r.i16(), r.i16(), r.i32()
    client_id = r.string()
    if is_flexible(api_key, api_version):
        r.skip_tagged_fields()
    return RequestHeader(api_key, api_version, corr, client_id, r.pos)


@dataclass
class BatchInfo:
    topic: str
    partition: int
    base_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    attributes: int


RECORD_BATCH_HEADER_SIZE = 61


def parse_batch_headers(records: bytes) -> list[tuple]:
    """Walk a concatenation of magic-2 record batches; return one tuple
    (base_offset, producer_id, producer_epoch, base_sequence, record_count,
    attributes) per batch."""
    out = []
    pos = 0
    while pos + RECORD_BATCH_HEADER_SIZE <= len(records):
        (base_offset, batch_len, _ple, magic, _crc, attributes, _lod, _fts, _mts,
         pid, epoch, seq, count) = struct.unpack_from(">qiibIhiqqqhii", records, pos)
        if magic != 2:
            raise ValueError(f"unexpected magic {magic}")
        out.append((base_offset, pid, epoch, seq, count, attributes))
        pos += 12 + batch_len
    return out


def parse_produce_request(payload: bytes) -> tuple[RequestHeader, list[BatchInfo]]:
    """Parse a Produce request (v3..v13) frame payload into its batches."""
    hdr = parse_request_header(payload)
    if hdr.api_key != API_PRODUCE:
        raise ValueError("not a Produce request")
    v = hdr.api_version
    flexible = v >= 9
    r = Reader(payload, hdr.body_offset)
    if v >= 3:
        r.compact_string() if flexible else r.string()  # transactional_id
    r.i16()  # acks
    r.i32()  # timeout_ms
    batches = []
    n_topics = r.uvarint() - 1 if flexible else r.i32()
    for _ in range(n_topics):
        if v >= 13:
            topic = r.raw(16).hex()
        else:
            topic = r.compact_string() if flexible else r.string()
        n_parts = r.uvarint() - 1 if flexible else r.i32()
        for _ in range(n_parts):
            partition = r.i32()
            records = r.compact_bytes() if flexible else r.bytes_()
            if flexible:
                r.skip_tagged_fields()
            for (bo, pid, epoch, seq, count, attrs) in parse_batch_headers(records or b""):
                batches.append(BatchInfo(topic, partition, bo, pid, epoch, seq, count, attrs))
        if flexible:
            r.skip_tagged_fields()
    return hdr, batches


# ---------------------------------------------------------------------------
# Record batch builder (magic 2)
# ---------------------------------------------------------------------------


@dataclass
class BatchRecord:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Sequence[tuple[str, Optional[bytes]]] = ()
    timestamp: Optional[int] = None  # ms since epoch; None = now


def _encode_record(offset_delta: int, timestamp_delta: int, rec: BatchRecord) -> bytes:
    body = bytearray()
    body += i8(0)  # record attributes (unused)
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    if rec.key is None:
        body += varint(-1)
    else:
        body += varint(len(rec.key)) + rec.key
    if rec.value is None:
        body += varint(-1)
    else:
        body += varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for hk, hv in rec.headers:
        kb = hk.encode("utf-8")
        body += varint(len(kb)) + kb
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def build_record_batch(records: Sequence[BatchRecord], *, base_offset: int = 0,
                       partition_leader_epoch: int = -1, attributes: int = 0,
                       producer_id: int = -1, producer_epoch: int = -1,
                       base_sequence: int = -1) -> bytes:
    """Build an uncompressed magic-2 RecordBatch.

    Layout: baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 |
    magic i8 | crc u32 | attributes i16 | lastOffsetDelta i32 |
    baseTimestamp i64 | maxTimestamp i64 | producerId i64 | producerEpoch i16 |
    baseSequence i32 | records [count i32, record...]; the CRC-32C covers
    everything from attributes to the end; batchLength counts everything
    after the batchLength field.
    """
    if not records:
        raise ValueError("a record batch needs at least one record")
    now = int(time.time() * 1000)
    stamps = [now if r.timestamp is None else r.timestamp for r in records]
    base_ts = stamps[0]
    max_ts = max(stamps)
    encoded = b"".join(_encode_record(i, ts - base_ts, r) for i, (r, ts) in enumerate(zip(records, stamps)))
    after_crc = (i16(attributes) + i32(len(records) - 1) + i64(base_ts) + i64(max_ts)
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(records)) + encoded)
    crc = _crc32c.crc32c(after_crc)
    after_len = i32(partition_leader_epoch) + i8(2) + u32(crc) + after_crc
    return i64(base_offset) + i32(len(after_len)) + after_len


def corrupt_batch(batch: bytes, needle: bytes) -> bytes:
    """Flip one bit inside the first occurrence of `needle` (e.g. a record
    value) in a batch: the structure stays parseable, the CRC no longer matches."""
    idx = batch.find(needle)
    if idx < 0 or idx < RECORD_BATCH_HEADER_SIZE:
        raise ValueError("needle not found in the record section of the batch")
    b = bytearray(batch)
    b[idx + len(needle) // 2] ^= 0x01
    return bytes(b)


# ---------------------------------------------------------------------------
# Raw socket connection
# ---------------------------------------------------------------------------


class ConnectionClosed(Exception):
    def __init__(self, how: str, partial: bytes = b""):
        super().__init__(how)
        self.how = how
        self.partial = partial


class RawConnection:
    """A blocking TCP connection speaking length-prefixed Kafka frames."""

    def __init__(self, addr: str, timeout: float = 10.0, client_id: Optional[str] = "kafscale-e2e"):
        host, port = split_addr(addr)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.client_id = client_id
        self._corr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def next_correlation_id(self) -> int:
        self._corr += 1
        return self._corr

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_request(self, api_key: int, api_version: int, body: bytes,
                     header_version: Optional[int] = None) -> int:
        corr = self.next_correlation_id()
        self.sock.sendall(encode_request(api_key, api_version, corr, body, self.client_id, header_version))
        return corr

    def _recv_exact(self, n: int, deadline: Deadline) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise TimeoutError(f"timed out reading {n} bytes (got {len(buf)})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout as exc:
                raise TimeoutError(f"timed out reading {n} bytes (got {len(buf)})") from exc
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise ConnectionClosed("reset", bytes(buf)) from exc
            if not chunk:
                raise ConnectionClosed("eof", bytes(buf))
            buf += chunk
        return bytes(buf)

    def recv_frame(self, timeout: Optional[float] = None) -> bytes:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        (size,) = struct.unpack(">i", self._recv_exact(4, deadline))
        if size < 4 or size > 256 * 1024 * 1024:
            raise ValueError(f"implausible response frame size {size}")
        return self._recv_exact(size, deadline)

    def request(self, api_key: int, api_version: int, body: bytes,
                header_version: Optional[int] = None, timeout: Optional[float] = None) -> Reader:
        """Send a request; return a Reader positioned after the response's
        correlation id (response header v0; callers of flexible versions must
        skip the header tagged fields themselves)."""
        corr = self.send_request(api_key, api_version, body, header_version)
        resp = self.recv_frame(timeout)
        r = Reader(resp)
        got = r.i32()
        if got != corr:
            raise AssertionError(f"correlation id mismatch: sent {corr}, got {got}")
        return r

    def wait_closed(self, timeout: float = 10.0) -> tuple[str, bytes]:
        """Wait for the peer to close.  Returns (how, data_received_before_close);
        raises AssertionError if the connection is still open after `timeout`."""
        deadline = Deadline(timeout)
        got = bytearray()
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise AssertionError(
                    f"server did not close the connection within {timeout}s "
                    f"(received {len(got)} bytes: {bytes(got[:64])!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "reset", bytes(got)
            if not chunk:
                return "eof", bytes(got)
            got += chunk


def api_versions_v0(addr: str, timeout: float = 10.0) -> ApiVersionsResult:
    """Open a fresh connection and run ApiVersions v0."""
    with RawConnection(addr, timeout=timeout) as conn:
        return decode_api_versions_v0(conn.request(API_API_VERSIONS, 0, b""))


def assert_server_serves(addr: str, timeout: float = 10.0) -> ApiVersionsResult:
    """A fresh connection's ApiVersions v0 gets a valid, error-free answer."""
    res = api_versions_v0(addr, timeout)
    assert res.error_code == ERR_NONE, f"ApiVersions v0 error_code={res.error_code}"
    for key in (API_PRODUCE, API_FETCH, API_LIST_OFFSETS, API_METADATA, API_API_VERSIONS):
        assert key in res.api_keys, f"api key {key} missing from ApiVersions: {res.api_keys}"
        lo, hi = res.api_keys[key]
        assert 0 <= lo <= hi, f"bad version range for api key {key}: {lo}..{hi}"
    return res


# ---------------------------------------------------------------------------
# Consumed-record model shared by all client drivers
# ---------------------------------------------------------------------------


@dataclass
class Consumed:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list = field(default_factory=list)  # [(str, bytes|None)]
    timestamp: int = -1


def by_partition(records: Iterable[Consumed]) -> dict[int, list[Consumed]]:
    out: dict[int, list[Consumed]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


def assert_contiguous_offsets(records: Iterable[Consumed]) -> dict[int, int]:
    """Per partition, offsets in consumption order are exactly 0..n-1.
    Returns {partition: count}."""
    counts = {}
    for p, recs in sorted(by_partition(records).items()):
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(offsets))), (
            f"partition {p}: offsets not contiguous from 0 "
            f"(first bad index {next(i for i, o in enumerate(offsets) if o != i)}, "
            f"len {len(offsets)}, head {offsets[:5]}, tail {offsets[-5:]})")
        counts[p] = len(offsets)
    return counts


def first_offset_at_or_after(recs: Sequence[Consumed], ts: int) -> int:
    """Kafka ListOffsets-by-timestamp semantics: the earliest offset whose
    timestamp >= ts, or -1 when there is none."""
    for r in recs:
        if r.timestamp >= ts:
            return r.offset
    return -1


# ---------------------------------------------------------------------------
# kcat
# ---------------------------------------------------------------------------

KCAT = os.environ.get("KCAT", "kcat")


def kcat_path() -> str:
    path = shutil.which(KCAT)
    if not path:
        raise RuntimeError("kcat not found on PATH (run scripts/install-test-deps.sh)")
    return path


def run_kcat(args: Sequence[str], timeout: float = 120.0, stdin_path: Optional[str] = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run kcat with a hard timeout; raise with its stderr on failure."""
    cmd = [kcat_path(), *args]
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        register_child(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"kcat timed out after {timeout}s: {' '.join(cmd)}\nstderr tail:\n"
                + err.decode(errors="replace")[-4000:])
        finally:
            unregister_child(proc)
    finally:
        if stdin_path:
            stdin.close()
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kcat exited {proc.returncode}: {' '.join(cmd)}\nstderr tail:\n"
            + err.decode(errors="replace")[-4000:])
    return result


def kcat_produce(bootstrap: str, topic: str, input_path: str, codec: str,
                 headers: Sequence[tuple[str, str]], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Produce newline-delimited `key:value` lines from a file."""
    args = ["-P", "-b", bootstrap, "-t", topic, "-K:", "-l",
            "-X", "acks=all", "-X", f"compression.codec={codec}", "-m", "30"]
    if codec != "none":
        args += ["-z", codec]
    for hk, hv in headers:
        args += ["-H", f"{hk}={hv}"]
    args.append(input_path)
    res = run_kcat(args, timeout=timeout)
    err = res.stderr.decode(errors="replace")
    if "Delivery failed" in err or "ERROR" in err:
        raise AssertionError(f"kcat reported produce errors:\n{err[-4000:]}")
    return res


def kcat_consume(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Consumed]:
    """Consume every partition of `topic` from the beginning to the end (-e),
    with no consumer group, JSON envelope output."""
    res = run_kcat(["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q",
                    "-m", "30"], timeout=timeout)
    out = []
    for line in res.stdout.decode("utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        m = json.loads(line)
        hdrs = m.get("headers") or {}
        if isinstance(hdrs, dict):
            hdr_list = [(k, None if v is None else v.encode()) for k, v in hdrs.items()]
        else:  # some kcat builds emit a flat [k, v, k, v] list
            hdr_list = [(hdrs[i], None if hdrs[i + 1] is None else hdrs[i + 1].encode())
                        for i in range(0, len(hdrs), 2)]
        key = m.get("key")
        payload = m.get("payload")
        out.append(Consumed(
            partition=int(m["partition"]), offset=int(m["offset"]),
            key=None if key is None else key.encode(),
            value=None if payload is None else payload.encode(),
            headers=hdr_list, timestamp=int(m.get("ts", -1))))
    return out


def kcat_query_offsets(bootstrap: str, topic: str, queries: dict[int, int],
                       timeout: float = 60.0) -> dict[int, int]:
    """ListOffsets via `kcat -Q -t topic:partition:timestamp` (timestamps -1 /
    -2 mean latest / earliest).  Returns {partition: offset}."""
    args = ["-Q", "-b", bootstrap, "-m", "30"]
    for p, ts in sorted(queries.items()):
        args += ["-t", f"{topic}:{p}:{ts}"]
    res = run_kcat(args, timeout=timeout)
    out = {}
    # kcat prints one line per partition: "<topic> [<partition>] offset <offset>"
    for line in res.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1].startswith("[") and parts[2] == "offset":
            out[int(parts[1].strip("[]"))] = int(parts[3])
    missing = set(queries) - set(out)
    if missing:
        raise AssertionError(f"kcat -Q gave no answer for partitions {sorted(missing)}:\n"
                             f"stdout: {res.stdout.decode()}\nstderr: {res.stderr.decode()}")
    return out


# ---------------------------------------------------------------------------
# confluent-kafka
# ---------------------------------------------------------------------------


def confluent_create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    futures[topic].result(timeout=timeout)
    wait_confluent_metadata(bootstrap, topic, partitions, timeout)


def wait_confluent_metadata(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def ready():
        md = admin.list_topics(timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 and p.error is None for p in t.partitions.values())

    wait_for(ready, timeout, interval=0.2, what=f"metadata for {topic} with {partitions} partitions")


def confluent_list_topics(bootstrap: str, timeout: float = 10.0) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout).topics)


@dataclass
class Delivery:
    index: int
    partition: int
    offset: int
    error: Optional[str]


def confluent_produce(bootstrap: str, topic: str, items: Sequence[dict], conf: Optional[dict] = None,
                      timeout: float = 120.0) -> list[Delivery]:
    """Produce `items` (dicts with key/value/headers/timestamp[/partition]);
    returns one Delivery per item in item order, from the delivery reports."""
    from confluent_kafka import KafkaException, Producer

    base = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000)}
    base.update(conf or {})
    producer = Producer(base)
    deliveries: list[Optional[Delivery]] = [None] * len(items)
    deadline = Deadline(timeout)

    def make_cb(i):
        def cb(err, msg):
            if err is not None:
                deliveries[i] = Delivery(i, -1, -1, str(err))
            else:
                deliveries[i] = Delivery(i, msg.partition(), msg.offset(), None)
        return cb

    try:
        for i, it in enumerate(items):
            kwargs = {"key": it.get("key"), "value": it.get("value"), "on_delivery": make_cb(i)}
            if it.get("headers") is not None:
                kwargs["headers"] = list(it["headers"])
            if it.get("timestamp") is not None:
                kwargs["timestamp"] = it["timestamp"]
            if it.get("partition") is not None:
                kwargs["partition"] = it["partition"]
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
                    if deadline.expired():
                        raise AssertionError("producer queue stayed full until the deadline")
                except KafkaException as exc:
                    raise AssertionError(f"produce() failed for item {i}: {exc}") from exc
            producer.poll(0)
        remaining = producer.flush(max(1.0, deadline.remaining()))
        assert remaining == 0, f"{remaining} messages still undelivered after flush"
    finally:
        # Never leave a live client behind (it would keep retrying in the
        # background): drop whatever is undelivered, then close.
        try:
            producer.purge()
            producer.poll(0)
        finally:
            producer.close()
    missing = [i for i, d in enumerate(deliveries) if d is None]
    assert not missing, f"{len(missing)} messages got no delivery report (first {missing[:5]})"
    return deliveries  # type: ignore[return-value]


def confluent_consume_all(bootstrap: str, topic: str, partitions: Sequence[int],
                          expected: Optional[int] = None, timeout: float = 120.0,
                          conf: Optional[dict] = None) -> list[Consumed]:
    """Manually assign every partition from OFFSET_BEGINNING (no group
    management), read until every partition hit EOF (and `expected` records
    arrived, when given)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    base = {"bootstrap.servers": bootstrap, "group.id": "kafscale-e2e-dummy",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": True}
    base.update(conf or {})
    consumer = Consumer(base)
    out: list[Consumed] = []
    errors: list[str] = []
    eof: set[int] = set()
    deadline = Deadline(timeout)
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while True:
            if eof >= set(partitions) and (expected is None or len(out) >= expected):
                break
            if deadline.expired():
                raise AssertionError(
                    f"confluent consumer timed out after {timeout}s: {len(out)} records"
                    f"{'' if expected is None else f'/{expected}'}, eof partitions {sorted(eof)}, "
                    f"errors {errors[-5:]}")
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                        continue
                    if err.fatal():
                        raise AssertionError(f"fatal consumer error: {err}")
                    errors.append(str(err))
                    continue
                eof.discard(msg.partition())
                _, ts = msg.timestamp()
                out.append(Consumed(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                    list(msg.headers() or []), ts))
    finally:
        consumer.close()
    return out


def confluent_watermarks(bootstrap: str, topic: str, partitions: Sequence[int],
                         timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} via ListOffsets (earliest / latest)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafscale-e2e-dummy",
                  "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
                for p in partitions}
    finally:
        c.close()


def confluent_offsets_for_times(bootstrap: str, topic: str, queries: dict[int, int],
                                timeout: float = 30.0) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafscale-e2e-dummy",
                  "enable.auto.commit": False})
    try:
        res = c.offsets_for_times([TopicPartition(topic, p, ts) for p, ts in queries.items()],
                                  timeout=timeout)
        out = {}
        for tp in res:
            assert tp.error is None, f"offsets_for_times error for partition {tp.partition}: {tp.error}"
            out[tp.partition] = tp.offset
        return out
    finally:
        c.close()


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


def kafka_python_create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafscale-e2e-admin",
                             request_timeout_ms=int(timeout * 1000))
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                            timeout_ms=int(timeout * 1000))
        admin.wait_for_topics([topic], timeout_ms=int(timeout * 1000))
    finally:
        admin.close()


def kafka_python_produce(bootstrap: str, topic: str, items: Sequence[dict], compression: Optional[str],
                         timeout: float = 120.0, **conf) -> list[Delivery]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=compression,
                             linger_ms=5, request_timeout_ms=30_000,
                             max_block_ms=int(timeout * 1000), **conf)
    try:
        futures = []
        for it in items:
            futures.append(producer.send(topic, key=it.get("key"), value=it.get("value"),
                                         headers=list(it.get("headers") or []),
                                         timestamp_ms=it.get("timestamp"),
                                         partition=it.get("partition")))
        producer.flush(timeout=timeout)
        out = []
        for i, f in enumerate(futures):
            assert f.is_done, f"record {i} not completed after flush"
            if f.failed():
                out.append(Delivery(i, -1, -1, repr(f.exception)))
            else:
                md = f.value
                out.append(Delivery(i, md.partition, md.offset, None))
        return out
    finally:
        producer.close(timeout=10)


def _kp_consumer(bootstrap: str):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", client_id="kafscale-e2e-consumer",
                         request_timeout_ms=30_000)


def kafka_python_consume_all(bootstrap: str, topic: str, partitions: Sequence[int],
                             expected: Optional[int] = None, timeout: float = 120.0) -> list[Consumed]:
    """assign + seek_to_beginning, poll until every partition's position reached
    its end offset (and `expected` records arrived, when given)."""
    from kafka import TopicPartition

    consumer = _kp_consumer(bootstrap)
    out: list[Consumed] = []
    deadline = Deadline(timeout)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps, timeout_ms=30_000)

        def done():
            if expected is not None and len(out) < expected:
                return False
            return all(consumer.position(tp, timeout_ms=10_000) >= end[tp] for tp in tps)

        while not done():
            if deadline.expired():
                raise AssertionError(
                    f"kafka-python consumer timed out after {timeout}s: {len(out)} records"
                    f"{'' if expected is None else f'/{expected}'}, end offsets {end}")
            batches = consumer.poll(timeout_ms=500, max_records=5000)
            for tp, recs in batches.items():
                for r in recs:
                    out.append(Consumed(r.partition, r.offset, r.key, r.value,
                                        [(k, v) for k, v in (r.headers or [])], r.timestamp))
        # One more short poll: nothing may exist beyond the end offsets.
        for tp, recs in consumer.poll(timeout_ms=300).items():
            for r in recs:
                out.append(Consumed(r.partition, r.offset, r.key, r.value,
                                    [(k, v) for k, v in (r.headers or [])], r.timestamp))
    finally:
        consumer.close(autocommit=False)
    return out


def kafka_python_list_offsets(bootstrap: str, topic: str, partitions: Sequence[int]):
    """Returns (beginning {p: off}, end {p: off})."""
    from kafka import TopicPartition

    consumer = _kp_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        begin = consumer.beginning_offsets(tps, timeout_ms=30_000)
        end = consumer.end_offsets(tps, timeout_ms=30_000)
        return ({tp.partition: o for tp, o in begin.items()},
                {tp.partition: o for tp, o in end.items()})
    finally:
        consumer.close(autocommit=False)


def kafka_python_offsets_for_times(bootstrap: str, topic: str, queries: dict[int, int]):
    """Returns {p: (offset, timestamp)} or {p: None} when no record qualifies."""
    from kafka import TopicPartition

    consumer = _kp_consumer(bootstrap)
    try:
        res = consumer.offsets_for_times({TopicPartition(topic, p): ts for p, ts in queries.items()},
                                         timeout_ms=30_000)
        return {tp.partition: (None if v is None else (v.offset, v.timestamp)) for tp, v in res.items()}
    finally:
        consumer.close(autocommit=False)

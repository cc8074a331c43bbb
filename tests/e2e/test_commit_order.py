"""One connection's OffsetCommits take effect in the order they were sent.

librdkafka sends asynchronous commits back to back on its coordinator
connection and expects the last one to stick, as a Kafka broker applies one
connection's requests in arrival order. Here a raw socket pipelines hundreds
of OffsetCommit requests (offsets 1..N of one partition) in one write, reads
every answer, then asks OffsetFetch: the committed offset must be N in every
round, with the machine's cores kept busy by spinning processes so that the
server's tasks interleave as they do under load.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(240)

ROUNDS = int(os.environ.get("KAFSCALE_COMMIT_ORDER_ROUNDS", "15"))
COMMITS = 200


def _spin(stop_at: float) -> None:
    # Niced: the server's tasks must interleave with the spinner, not starve (a coordinator
    # whose lease renewals are starved answers NOT_COORDINATOR, which is not this test's point).
    os.nice(10)
    while time.monotonic() < stop_at:
        pass


def offset_commit_v2(group: str, topic: str, partition: int, offset: int) -> bytes:
    return (kh.kstring(group) + kh.i32(-1) + kh.kstring("") + kh.i64(-1)
            + kh.i32(1) + kh.kstring(topic)
            + kh.i32(1) + kh.i32(partition) + kh.i64(offset) + kh.kstring(None))


def offset_fetch_v1(group: str, topic: str, partition: int) -> bytes:
    return kh.kstring(group) + kh.i32(1) + kh.kstring(topic) + kh.i32(1) + kh.i32(partition)


def commit_error(r: kh.Reader) -> int:
    assert r.i32() == 1, "one topic"
    r.string()
    assert r.i32() == 1, "one partition"
    r.i32()
    return r.i16()


def fetched_offset(r: kh.Reader) -> tuple[int, int]:
    assert r.i32() == 1, "one topic"
    r.string()
    assert r.i32() == 1, "one partition"
    r.i32()
    offset = r.i64()
    r.string()
    return offset, r.i16()


def pipeline_commits(addr: str, group: str, topic: str) -> int:
    """Sends COMMITS commits in one write, reads the answers in order, returns
    the offset OffsetFetch reports afterwards."""
    with kh.RawConnection(addr, timeout=30) as conn:
        frames = b"".join(
            kh.encode_request(kh.API_OFFSET_COMMIT, 2, i,
                              offset_commit_v2(group, topic, 0, i), conn.client_id)
            for i in range(1, COMMITS + 1))
        conn.send_raw(frames)
        for i in range(1, COMMITS + 1):
            r = kh.Reader(conn.recv_frame())
            assert r.i32() == i, "answers come in request order"
            assert commit_error(r) == kh.ERR_NONE, f"commit {i} failed"
        r = conn.request(kh.API_OFFSET_FETCH, 1, offset_fetch_v1(group, topic, 0))
        offset, error = fetched_offset(r)
        assert error == kh.ERR_NONE
        return offset


def test_pipelined_commits_leave_the_last_offset_under_cpu_load(kafscale):
    topic = f"commit-order-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(kafscale.bootstrap, topic, 1)
    spinners = [multiprocessing.Process(target=_spin, args=(time.monotonic() + 120,), daemon=True)
                for _ in range(os.cpu_count() or 2)]
    for s in spinners:
        s.start()
    try:
        results = [pipeline_commits(kafscale.bootstrap, f"g-{round}", topic)
                   for round in range(ROUNDS)]
    finally:
        for s in spinners:
            s.terminate()
            s.join(5)
    print(f"last committed offset per round: {results}")
    assert results == [COMMITS] * ROUNDS

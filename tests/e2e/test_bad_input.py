"""Malformed, oversized and unsupported requests sent over a raw socket.

Each case checks the server's reaction on the offending connection and then
that the server keeps serving: a fresh connection's ApiVersions v0 request
still gets a valid answer and the process is still running.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

import kafka_helpers as kh

MIB = 1024 * 1024


def assert_still_serving(srv) -> None:
    assert srv.running, f"kafscale exited (code {srv.proc.returncode})\n{srv.log_tail()}"
    kh.assert_server_serves(srv.bootstrap)


def test_truncated_frame_is_closed_cleanly(kafscale):
    """(a) The length prefix announces 100 bytes, only 10 arrive, then the
    client closes its write side: the server must close the connection (EOF)
    without answering, and keep serving."""
    header = kh.request_header(kh.API_API_VERSIONS, 0, 1, client_id="x" * 90)
    assert len(header) == 100
    with kh.RawConnection(kafscale.bootstrap) as conn:
        conn.send_raw(kh.i32(100) + header[:10])
        conn.sock.shutdown(socket.SHUT_WR)
        how, data = conn.wait_closed(timeout=10)
        assert data == b"", f"server answered a truncated frame: {data[:64]!r}"
        assert how == "eof", f"expected an orderly close (EOF), got a {how}"
    assert_still_serving(kafscale)


@pytest.mark.parametrize("length", [200 * MIB, 2**31 - 1, -1],
                         ids=["200MiB", "2GiB-1", "negative"])
def test_oversized_frame_is_rejected_without_allocating(kafscale, length):
    """(b) A frame length over the maximum: the server closes the connection
    right after reading the 4-byte prefix (it must not wait for, or allocate,
    the announced size) while a second, concurrently open connection keeps
    working."""
    with kh.RawConnection(kafscale.bootstrap) as other:
        # the bystander connection is open and has been used before the attack
        assert kh.decode_api_versions_v0(other.request(kh.API_API_VERSIONS, 0, b"")).error_code == 0
        before = kafscale.rss_kib()
        with kh.RawConnection(kafscale.bootstrap) as conn:
            conn.send_raw(struct.pack(">i", length) + kh.request_header(kh.API_API_VERSIONS, 0, 1))
            t0 = time.monotonic()
            how, data = conn.wait_closed(timeout=10)
            elapsed = time.monotonic() - t0
        assert data == b"", f"server answered an oversized frame: {data[:64]!r}"
        after = kafscale.rss_kib()
        grew_kib = after["VmHWM"] - before["VmHWM"]
        assert grew_kib < 64 * 1024, (
            f"server peak RSS grew by {grew_kib} KiB after a {length}-byte frame header "
            f"(before {before}, after {after}); it seems to allocate the announced size")
        # the bystander connection still works
        res = kh.decode_api_versions_v0(other.request(kh.API_API_VERSIONS, 0, b""))
        assert res.error_code == 0 and kh.API_PRODUCE in res.api_keys
        print(f"oversized frame {length}: closed by {how} after {elapsed:.3f}s, peak RSS +{grew_kib} KiB")
    assert_still_serving(kafscale)


def test_produce_with_bad_crc_gets_corrupt_message(kafscale):
    """(c) Produce v3 whose record batch CRC-32C is wrong → partition
    error_code 2 (CORRUPT_MESSAGE), nothing appended; the same batch with the
    right CRC is accepted at offset 0 and reads back intact."""
    boot = kafscale.bootstrap
    topic = f"badcrc-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(boot, topic, 1)
    value = b"corrupt-me-please-" * 4
    ts = int(time.time() * 1000) - 60_000
    rec = kh.BatchRecord(b"crc-key", value, [("h1", b"v1"), ("h2", b"")], ts)
    good = kh.build_record_batch([rec])
    bad = kh.corrupt_batch(good, value)

    with kh.RawConnection(boot) as conn:
        (res,) = kh.decode_produce_response_v3(
            conn.request(kh.API_PRODUCE, 3, kh.produce_request_body_v3(topic, 0, bad)))
        assert (res.topic, res.partition) == (topic, 0)
        assert res.error_code == kh.ERR_CORRUPT_MESSAGE, f"bad CRC: error_code {res.error_code}, expected 2"
        # the connection stays usable and a correct batch goes in at offset 0
        (res,) = kh.decode_produce_response_v3(
            conn.request(kh.API_PRODUCE, 3, kh.produce_request_body_v3(topic, 0, good)))
        assert res.error_code == kh.ERR_NONE, f"valid batch: error_code {res.error_code}"
        assert res.base_offset == 0, f"valid batch landed at {res.base_offset}: the corrupt one was appended?"

    (got,) = kh.confluent_consume_all(boot, topic, [0], expected=1, timeout=60)
    assert (got.offset, got.key, got.value, got.timestamp) == (0, rec.key, rec.value, ts)
    assert got.headers == list(rec.headers)
    assert kh.confluent_watermarks(boot, topic, [0]) == {0: (0, 1)}
    assert_still_serving(kafscale)


def test_api_versions_unsupported_version(kafscale):
    """(d) ApiVersions v127 → error_code 35 (UNSUPPORTED_VERSION) in a v0
    response body that still lists the supported APIs."""
    with kh.RawConnection(kafscale.bootstrap) as conn:
        res = kh.decode_api_versions_v0(
            conn.request(kh.API_API_VERSIONS, 127, kh.api_versions_request_body(127), header_version=2))
    assert res.error_code == kh.ERR_UNSUPPORTED_VERSION, f"error_code {res.error_code}, expected 35"
    assert kh.API_API_VERSIONS in res.api_keys, f"api list lacks ApiVersions: {res.api_keys}"
    lo, hi = res.api_keys[kh.API_API_VERSIONS]
    assert lo == 0 and hi >= 3, f"ApiVersions range {lo}..{hi}"
    for key in (kh.API_PRODUCE, kh.API_FETCH, kh.API_LIST_OFFSETS, kh.API_METADATA):
        assert key in res.api_keys, f"api list lacks key {key}: {res.api_keys}"
    assert_still_serving(kafscale)


def test_metadata_unsupported_version_closes_connection(kafscale):
    """(e) Metadata v99: like Kafka, close the connection without a response."""
    with kh.RawConnection(kafscale.bootstrap) as conn:
        conn.send_request(kh.API_METADATA, 99, b"\x01" + kh.TAGGED_FIELDS_EMPTY)
        how, data = conn.wait_closed(timeout=10)
        assert data == b"", f"server answered Metadata v99 instead of closing: {data[:64]!r}"
    assert_still_serving(kafscale)


def test_unknown_api_key_closes_connection(kafscale):
    """(f) API key 9999: close the connection without a response."""
    with kh.RawConnection(kafscale.bootstrap) as conn:
        conn.send_request(9999, 0, b"", header_version=1)
        how, data = conn.wait_closed(timeout=10)
        assert data == b"", f"server answered api key 9999 instead of closing: {data[:64]!r}"
    assert_still_serving(kafscale)


def test_produce_unknown_topic_without_auto_create(kafscale_factory):
    """(g) With --auto-create-topics false, Produce to a topic that does not
    exist → error_code 3 (UNKNOWN_TOPIC_OR_PARTITION), and the topic is not
    created as a side effect."""
    srv = kafscale_factory(["--auto-create-topics", "false"], name="no-auto-create")
    topic = f"does-not-exist-{uuid.uuid4().hex[:8]}"
    batch = kh.build_record_batch([kh.BatchRecord(b"k", b"v", [], None)])
    with kh.RawConnection(srv.bootstrap) as conn:
        (res,) = kh.decode_produce_response_v3(
            conn.request(kh.API_PRODUCE, 3, kh.produce_request_body_v3(topic, 0, batch)))
    assert (res.topic, res.partition) == (topic, 0)
    assert res.error_code == kh.ERR_UNKNOWN_TOPIC_OR_PARTITION, f"error_code {res.error_code}, expected 3"
    assert topic not in kh.confluent_list_topics(srv.bootstrap), "topic was auto-created despite the flag"
    assert_still_serving(srv)

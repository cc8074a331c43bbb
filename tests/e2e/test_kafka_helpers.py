"""Self-tests of kafka_helpers (no server needed): the hand-written protocol
encoders are checked against kafka-python's independent implementation."""

from __future__ import annotations

import struct
import uuid

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import encode_varint

import kafka_helpers as kh

RECORDS = [
    kh.BatchRecord(b"key-0", b"value-0" * 5, [("h1", b"v1"), ("h2", b"")], 1_700_000_000_000),
    kh.BatchRecord(None, b"value-1", [], 1_700_000_000_007),
    kh.BatchRecord(b"key-2", None, [("nullhdr", None)], 1_700_000_000_003),
]


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, 300, -300, 2**31 - 1, -(2**31), 2**62, -(2**63)])
def test_varint_matches_kafka_python(n):
    ref = bytearray()
    encode_varint(n, ref.append)
    assert kh.varint(n) == bytes(ref)
    assert kh.Reader(kh.varint(n)).varint() == n


def test_batch_decodes_with_kafka_python():
    batch = kh.build_record_batch(RECORDS, base_offset=0)
    decoded = DefaultRecordBatch(batch)
    assert decoded.validate_crc()
    assert decoded.magic == 2
    assert decoded.base_offset == 0
    assert decoded.records_count == len(RECORDS)
    assert decoded.last_offset_delta == len(RECORDS) - 1
    assert decoded.first_timestamp == RECORDS[0].timestamp
    assert decoded.max_timestamp == max(r.timestamp for r in RECORDS)
    assert decoded.producer_id == -1 and decoded.producer_epoch == -1 and decoded.base_sequence == -1
    assert decoded.compression_type == 0
    assert struct.unpack_from(">i", batch, 8)[0] == len(batch) - 12  # batchLength
    got = list(decoded)
    assert [r.offset for r in got] == [0, 1, 2]
    for rec, exp in zip(got, RECORDS):
        assert rec.key == exp.key
        assert rec.value == exp.value
        assert rec.timestamp == exp.timestamp
        assert list(rec.headers) == list(exp.headers)


def test_batch_is_byte_identical_to_kafka_python_builder():
    ours = kh.build_record_batch(RECORDS, partition_leader_epoch=0)
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, r in enumerate(RECORDS):
        builder.append(i, timestamp=r.timestamp, key=r.key, value=r.value, headers=list(r.headers))
    assert ours == bytes(builder.build())


def test_batch_with_producer_state():
    batch = kh.build_record_batch(RECORDS[:1], producer_id=4242, producer_epoch=3, base_sequence=17)
    d = DefaultRecordBatch(batch)
    assert d.validate_crc()
    assert (d.producer_id, d.producer_epoch, d.base_sequence) == (4242, 3, 17)
    assert kh.parse_batch_headers(batch + batch) == [(0, 4242, 3, 17, 1, 0)] * 2


def test_corrupted_batch_fails_crc_but_still_parses():
    value = b"A" * 32
    batch = kh.build_record_batch([kh.BatchRecord(b"k", value, [], 1_700_000_000_000)])
    bad = kh.corrupt_batch(batch, value)
    assert len(bad) == len(batch) and bad != batch
    assert DefaultRecordBatch(batch).validate_crc()
    d = DefaultRecordBatch(bad)
    assert not d.validate_crc()
    (rec,) = list(d)  # structure intact: still decodes, value differs
    assert rec.key == b"k" and rec.value != value and len(rec.value) == len(value)


def test_produce_v3_request_matches_kafka_python():
    batch = kh.build_record_batch(RECORDS)
    ours = kh.encode_request(kh.API_PRODUCE, 3, 7,
                             kh.produce_request_body_v3("topic-a", 2, batch, acks=-1, timeout_ms=1234),
                             client_id="cid")
    req = ProduceRequest[3](transactional_id=None, acks=-1, timeout_ms=1234, topic_data=[
        ProduceRequest[3].TopicProduceData(name="topic-a", partition_data=[
            ProduceRequest[3].TopicProduceData.PartitionProduceData(index=2, records=batch)])])
    req.with_header(correlation_id=7, client_id="cid")
    assert ours == bytes(req.encode(header=True, framed=True))


@pytest.mark.parametrize("version", [0, 3, 4])
def test_api_versions_request_matches_kafka_python(version):
    ours = kh.encode_request(kh.API_API_VERSIONS, version, 9, kh.api_versions_request_body(version),
                             client_id="cid")
    kw = {"client_software_name": "kafscale-e2e", "client_software_version": "1.0"} if version >= 3 else {}
    req = ApiVersionsRequest[version](**kw)
    req.with_header(correlation_id=9, client_id="cid")
    assert ours == bytes(req.encode(header=True, framed=True))


def test_decode_api_versions_v0_response():
    resp = ApiVersionsResponse[0](error_code=35, api_keys=[
        ApiVersionsResponse[0].ApiVersion(api_key=0, min_version=3, max_version=9),
        ApiVersionsResponse[0].ApiVersion(api_key=18, min_version=0, max_version=4)])
    body = bytes(resp.encode())
    res = kh.decode_api_versions_v0(kh.Reader(body))
    assert res.error_code == 35
    assert res.api_keys == {0: (3, 9), 18: (0, 4)}


def test_decode_api_versions_v3_response():
    R = ApiVersionsResponse[3]
    resp = R(error_code=0, throttle_time_ms=0, api_keys=[
        R.ApiVersion(api_key=0, min_version=3, max_version=9),
        R.ApiVersion(api_key=18, min_version=0, max_version=4)])
    res = kh.decode_api_versions_v3(kh.Reader(bytes(resp.encode())))
    assert res.error_code == 0
    assert res.api_keys == {0: (3, 9), 18: (0, 4)}


def _produce_response(version):
    P = ProduceResponse[version]
    part_kw = dict(index=1, error_code=2, base_offset=42, log_append_time_ms=-1)
    if version >= 5:
        part_kw["log_start_offset"] = 0
    topic_kw = {"topic_id": uuid.UUID(bytes=bytes(range(16)))} if version >= 13 else {"name": "topic-a"}
    partition = P.TopicProduceResponse.PartitionProduceResponse(**part_kw)
    return P(responses=[P.TopicProduceResponse(partition_responses=[partition], **topic_kw)],
             throttle_time_ms=0)


@pytest.mark.parametrize("version", [3, 5, 8, 9, 12, 13])
def test_decode_produce_response(version):
    body = bytes(_produce_response(version).encode(version=version))
    got = kh.decode_produce_response(kh.Reader(body), version)
    assert [(g.partition, g.error_code, g.base_offset) for g in got] == [(1, 2, 42)]
    if version < 13:
        assert got[0].topic == "topic-a"
    if version == 3:
        (v3,) = kh.decode_produce_response_v3(kh.Reader(body))
        assert (v3.topic, v3.partition, v3.error_code, v3.base_offset) == ("topic-a", 1, 2, 42)


@pytest.mark.parametrize("version", [3, 7, 9, 12, 13])
def test_parse_produce_request(version):
    b1 = kh.build_record_batch(RECORDS[:2], producer_id=77, producer_epoch=1, base_sequence=10)
    b2 = kh.build_record_batch(RECORDS[2:], producer_id=77, producer_epoch=1, base_sequence=5)
    R = ProduceRequest[version]
    topic_kw = {"topic_id": uuid.UUID(bytes=bytes(range(16)))} if version >= 13 else {"name": "topic-a"}
    req = R(transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        R.TopicProduceData(partition_data=[
            R.TopicProduceData.PartitionProduceData(index=0, records=b1),
            R.TopicProduceData.PartitionProduceData(index=2, records=b2)], **topic_kw)])
    req.with_header(correlation_id=31, client_id="cid")
    payload = bytes(req.encode(header=True, framed=True))[4:]
    hdr, batches = kh.parse_produce_request(payload)
    assert (hdr.api_key, hdr.api_version, hdr.correlation_id, hdr.client_id) == (0, version, 31, "cid")
    assert [(b.partition, b.producer_id, b.producer_epoch, b.base_sequence, b.record_count) for b in batches] == [
        (0, 77, 1, 10, 2), (2, 77, 1, 5, 1)]
    if version < 13:
        assert {b.topic for b in batches} == {"topic-a"}


def test_first_offset_at_or_after():
    recs = [kh.Consumed(0, i, None, None, [], ts) for i, ts in enumerate([10, 20, 20, 30])]
    assert kh.first_offset_at_or_after(recs, 0) == 0
    assert kh.first_offset_at_or_after(recs, 10) == 0
    assert kh.first_offset_at_or_after(recs, 11) == 1
    assert kh.first_offset_at_or_after(recs, 20) == 1
    assert kh.first_offset_at_or_after(recs, 30) == 3
    assert kh.first_offset_at_or_after(recs, 31) == -1

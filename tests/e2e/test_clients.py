"""Real Kafka clients against kafscale: produce / consume / ListOffsets.

For each client (kcat, confluent-kafka, kafka-python) and each compression
codec: create a 3-partition topic, produce 10,000 keyed records with headers
and (where the client can set them) explicit timestamps, consume everything
from the beginning with the same client and check count, per-partition order,
contiguous offsets, keys, values, headers and timestamps; then check
ListOffsets earliest/latest and by timestamp.
"""

from __future__ import annotations

import time
import uuid

import pytest

import kafka_helpers as kh

N_RECORDS = 10_000
N_KEYS = 100
PARTITIONS = 3
TS_STEP_MS = 10
PAD = "abcdefghij" * 6  # compressible, no spaces / ':' / newlines
STATIC_HEADERS = [("k", "v"), ("app", "kafscale-e2e")]

CLIENTS = ["kcat", "confluent", "kafka_python"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def make_items(base_ts: int, per_record_headers: bool, explicit_ts: bool) -> list[dict]:
    """Record i has key key-(i % 100) and value "<i>|<key#>|<per-key seq>|PAD";
    the per-key sequence is i // 100."""
    items = []
    for i in range(N_RECORDS):
        k = i % N_KEYS
        seq = i // N_KEYS
        headers = [(hk, hv.encode()) for hk, hv in STATIC_HEADERS]
        if per_record_headers:
            headers.append(("idx", str(i).encode()))
        items.append({
            "key": f"key-{k:03d}".encode(),
            "value": f"{i:06d}|{k:03d}|{seq:05d}|{PAD}".encode(),
            "headers": headers,
            "timestamp": base_ts + i * TS_STEP_MS if explicit_ts else None,
        })
    return items


def parse_value(value: bytes) -> tuple[int, int, int]:
    i, k, seq, _pad = value.decode().split("|")
    return int(i), int(k), int(seq)


def verify_consumed(records: list[kh.Consumed], items: list[dict], *, check_ts: bool,
                    deliveries=None) -> dict[int, list[kh.Consumed]]:
    assert len(records) == len(items), f"consumed {len(records)} records, produced {len(items)}"
    parts = kh.by_partition(records)
    assert set(parts) <= set(range(PARTITIONS)), f"unexpected partitions {sorted(parts)}"
    assert len(parts) == PARTITIONS, f"only partitions {sorted(parts)} got data (100 keys → expected all 3)"
    counts = kh.assert_contiguous_offsets(records)
    assert sum(counts.values()) == len(items)

    seen = set()
    key_partition: dict[bytes, int] = {}
    next_seq: dict[int, int] = {}
    for p, recs in sorted(parts.items()):
        last_i = -1
        for r in recs:
            i, k, seq = parse_value(r.value)
            assert i not in seen, f"duplicate record {i} (partition {p} offset {r.offset})"
            seen.add(i)
            assert i > last_i, f"partition {p}: record {i} at offset {r.offset} after record {last_i} (produce order violated)"
            last_i = i
            exp = items[i]
            assert r.key == exp["key"], f"record {i}: key {r.key!r} != {exp['key']!r}"
            assert r.value == exp["value"], f"record {i}: value mismatch"
            assert r.headers == exp["headers"], f"record {i}: headers {r.headers!r} != {exp['headers']!r}"
            if check_ts:
                assert r.timestamp == exp["timestamp"], f"record {i}: timestamp {r.timestamp} != {exp['timestamp']}"
            assert key_partition.setdefault(r.key, p) == p, f"key {r.key!r} seen in two partitions"
            assert seq == next_seq.get(k, 0), f"key {k}: sequence {seq} where {next_seq.get(k, 0)} was expected"
            next_seq[k] = seq + 1
            if deliveries is not None:
                d = deliveries[i]
                assert (d.partition, d.offset) == (p, r.offset), (
                    f"record {i}: delivery report said p{d.partition}@{d.offset}, consumed at p{p}@{r.offset}")
    assert seen == set(range(len(items)))
    assert all(v == N_RECORDS // N_KEYS for v in next_seq.values()) and len(next_seq) == N_KEYS
    return parts


def timestamp_queries(parts: dict[int, list[kh.Consumed]]) -> list[dict[int, int]]:
    """Query rounds ({partition: timestamp}), each round one ListOffsets call:
    before everything, exactly at sampled records, just after them (between
    two records), at the last record, and past the end."""
    min_ts = min(r.timestamp for recs in parts.values() for r in recs)
    max_ts = max(r.timestamp for recs in parts.values() for r in recs)
    rounds = [{p: max(0, min_ts - 1000) for p in parts}]
    for frac in (0.0, 0.25, 0.5, 0.9):
        rounds.append({p: recs[int(frac * (len(recs) - 1))].timestamp for p, recs in parts.items()})
        rounds.append({p: recs[int(frac * (len(recs) - 1))].timestamp + 1 for p, recs in parts.items()})
    rounds.append({p: recs[-1].timestamp for p, recs in parts.items()})
    rounds.append({p: max_ts + 1 for p in parts})
    rounds.append({p: max_ts + 3_600_000 for p in parts})
    return rounds


@pytest.mark.deadline(240)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", CLIENTS)
def test_produce_consume_list_offsets(kafscale_module, tmp_path, client, codec):
    srv = kafscale_module
    boot = srv.bootstrap
    topic = f"clients-{client}-{codec}-{uuid.uuid4().hex[:8]}"
    # Explicit timestamps an hour in the past, 10 ms apart, rounded to a second.
    base_ts = (int(time.time() * 1000) - 3_600_000) // 1000 * 1000

    if client == "kafka_python":
        kh.kafka_python_create_topic(boot, topic, PARTITIONS)
    else:  # kcat cannot create topics
        kh.confluent_create_topic(boot, topic, PARTITIONS)

    deliveries = None
    if client == "kcat":
        # kcat: static headers only, timestamps set by librdkafka at produce time.
        items = make_items(base_ts, per_record_headers=False, explicit_ts=False)
        input_path = tmp_path / "input.txt"
        with open(input_path, "wb") as f:
            for it in items:
                f.write(it["key"] + b":" + it["value"] + b"\n")
        t0 = int(time.time() * 1000)
        kh.kcat_produce(boot, topic, str(input_path), codec, STATIC_HEADERS)
        t1 = int(time.time() * 1000)
        records = kh.kcat_consume(boot, topic)
        parts = verify_consumed(records, items, check_ts=False)
        # CreateTime stamped by the producer: within the produce window and
        # non-decreasing per partition (single producer thread).
        for p, recs in parts.items():
            stamps = [r.timestamp for r in recs]
            assert all(t0 - 1000 <= t <= t1 + 1000 for t in stamps), f"partition {p}: timestamps outside produce window"
            assert stamps == sorted(stamps), f"partition {p}: CreateTime went backwards"
    elif client == "confluent":
        items = make_items(base_ts, per_record_headers=True, explicit_ts=True)
        deliveries = kh.confluent_produce(boot, topic, items, {"compression.type": codec})
        errors = [d for d in deliveries if d.error]
        assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
        records = kh.confluent_consume_all(boot, topic, range(PARTITIONS), expected=N_RECORDS)
        parts = verify_consumed(records, items, check_ts=True, deliveries=deliveries)
    else:
        items = make_items(base_ts, per_record_headers=True, explicit_ts=True)
        deliveries = kh.kafka_python_produce(boot, topic, items, None if codec == "none" else codec)
        errors = [d for d in deliveries if d.error]
        assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
        records = kh.kafka_python_consume_all(boot, topic, range(PARTITIONS), expected=N_RECORDS)
        parts = verify_consumed(records, items, check_ts=True, deliveries=deliveries)

    counts = {p: len(recs) for p, recs in parts.items()}

    # --- ListOffsets: earliest / latest ---------------------------------
    if client == "kcat":
        earliest = kh.kcat_query_offsets(boot, topic, {p: -2 for p in range(PARTITIONS)})
        latest = kh.kcat_query_offsets(boot, topic, {p: -1 for p in range(PARTITIONS)})
    elif client == "confluent":
        wm = kh.confluent_watermarks(boot, topic, range(PARTITIONS))
        earliest = {p: lo for p, (lo, hi) in wm.items()}
        latest = {p: hi for p, (lo, hi) in wm.items()}
    else:
        earliest, latest = kh.kafka_python_list_offsets(boot, topic, range(PARTITIONS))
    assert earliest == {p: 0 for p in range(PARTITIONS)}, f"earliest offsets {earliest}"
    assert latest == counts, f"latest offsets {latest} != per-partition counts {counts}"

    # --- ListOffsets: by timestamp ----------------------------------------
    if client != "kcat":
        # sanity of the known ranges: timestamps strictly increase with offset
        for p, recs in parts.items():
            assert all(a.timestamp < b.timestamp for a, b in zip(recs, recs[1:]))
    for query in timestamp_queries(parts):
        expected = {p: kh.first_offset_at_or_after(parts[p], ts) for p, ts in query.items()}
        if client == "kcat":
            got = kh.kcat_query_offsets(boot, topic, query)
            assert got == expected, f"offsets for times {query}: got {got}, expected {expected}"
        elif client == "confluent":
            got = kh.confluent_offsets_for_times(boot, topic, query)
            assert got == expected, f"offsets_for_times {query}: got {got}, expected {expected}"
        else:
            got = kh.kafka_python_offsets_for_times(boot, topic, query)
            for p, ts in query.items():
                exp_off = expected[p]
                if exp_off == -1:
                    assert got[p] is None, f"partition {p} ts {ts}: expected None past the end, got {got[p]}"
                else:
                    assert got[p] is not None, f"partition {p} ts {ts}: got None, expected offset {exp_off}"
                    off, found_ts = got[p]
                    assert off == exp_off, f"partition {p} ts {ts}: offset {off} != {exp_off}"
                    assert found_ts == parts[p][exp_off].timestamp, (
                        f"partition {p} ts {ts}: returned timestamp {found_ts} != record's {parts[p][exp_off].timestamp}")

"""Durability across restarts: every acknowledged (acks=all) record survives a
graceful restart (SIGTERM) and a crash (SIGKILL right after the last ack, and
SIGKILL in the middle of an idempotent producer's stream) at the offset it was
acknowledged at, with no duplicates and no gaps."""

from __future__ import annotations

import time
import uuid

import pytest

import kafka_helpers as kh

PARTITIONS = 3
PHASE1 = 3_000
PHASE2 = 2_000


def produce_acked(boot: str, topic: str, phase: str, n: int) -> dict[bytes, tuple[int, int]]:
    """Produce n records with acks=all; return {value: (partition, offset)}
    from the delivery reports (all of which must be successes)."""
    items = [{"key": f"key-{i % 37}".encode(), "value": f"{phase}-{i:05d}".encode(),
              "headers": [("phase", phase.encode())]} for i in range(n)]
    deliveries = kh.confluent_produce(boot, topic, items, {"acks": "all"})
    errors = [d for d in deliveries if d.error]
    assert not errors, f"{len(errors)} delivery errors in phase {phase}, first: {errors[0]}"
    acked = {}
    for it, d in zip(items, deliveries):
        assert d.offset >= 0, f"{it['value']!r}: acknowledged without an offset"
        acked[it["value"]] = (d.partition, d.offset)
    assert len(set(acked.values())) == n, "two records acknowledged at the same partition/offset"
    return acked


def verify_log(boot: str, topic: str, acked: dict[bytes, tuple[int, int]], when: str) -> None:
    records = kh.confluent_consume_all(boot, topic, range(PARTITIONS), expected=len(acked), timeout=120)
    values = [r.value for r in records]
    dupes = len(values) - len(set(values))
    assert dupes == 0, f"{when}: {dupes} duplicate records"
    kh.assert_contiguous_offsets(records)
    at = {(r.partition, r.offset): r.value for r in records}
    missing = [(v, po) for v, po in acked.items() if at.get(po) != v]
    assert not missing, (
        f"{when}: {len(missing)} acknowledged records not at their acknowledged offset, first "
        f"{missing[:3]} (found there: {[at.get(po) for _, po in missing[:3]]})")
    assert len(records) == len(acked), f"{when}: {len(records)} records, {len(acked)} acknowledged"
    wm = kh.confluent_watermarks(boot, topic, range(PARTITIONS))
    counts = {p: sum(1 for (pp, _) in acked.values() if pp == p) for p in range(PARTITIONS)}
    assert wm == {p: (0, counts[p]) for p in range(PARTITIONS)}, f"{when}: watermarks {wm}, counts {counts}"


@pytest.mark.deadline(300)
def test_acked_records_survive_sigterm_and_sigkill(kafscale):
    srv = kafscale
    port = srv.kafka_port
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(srv.bootstrap, topic, PARTITIONS)

    acked = produce_acked(srv.bootstrap, topic, "one", PHASE1)

    # graceful restart: SIGTERM must flush and exit 0 (asserted by restart())
    srv.restart()
    assert srv.kafka_port == port
    verify_log(srv.bootstrap, topic, acked, "after SIGTERM restart")

    # more data on the restarted server, then SIGKILL right after the last ack
    acked2 = produce_acked(srv.bootstrap, topic, "two", PHASE2)
    assert not set(acked2.values()) & set(acked.values()), "phase-two records reused phase-one offsets"
    srv.kill9()  # SIGKILL, then start again on the same port and data dir
    assert srv.kafka_port == port
    kh.wait_confluent_metadata(srv.bootstrap, topic, PARTITIONS, timeout=30)
    acked.update(acked2)
    verify_log(srv.bootstrap, topic, acked, "after SIGKILL restart")

    # the recovered log accepts appends at the next offsets
    acked3 = produce_acked(srv.bootstrap, topic, "three", 300)
    acked.update(acked3)
    verify_log(srv.bootstrap, topic, acked, "appends after recovery")


@pytest.mark.deadline(300)
def test_an_idempotent_producer_loses_and_duplicates_nothing_when_the_server_dies_mid_produce(
        kafscale):
    """SIGKILL while an idempotent producer streams (requests in flight, segments being
    uploaded and committed), twice, each time restarting on the same port and data dir: the
    producer rides through, and afterwards the log holds exactly the acknowledged records, at
    their acknowledged offsets, once each, with no gaps."""
    import threading

    from confluent_kafka import Producer

    srv = kafscale
    topic = f"midflight-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(srv.bootstrap, topic, PARTITIONS)
    total = 6_000
    acked: dict[bytes, tuple[int, int]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                errors.append(str(err))
            else:
                acked[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({"bootstrap.servers": srv.bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "message.timeout.ms": 120_000,
                         "reconnect.backoff.max.ms": 500})

    def produce_all():
        for i in range(total):
            while True:
                try:
                    producer.produce(topic, key=f"key-{i % 37}".encode(),
                                     value=f"mid-{i:05d}".encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if i % 20 == 0:
                time.sleep(0.02)  # pace the stream (about 6 s) so the kills land mid-flight
        producer.flush(150)

    thread = threading.Thread(target=produce_all, daemon=True)
    thread.start()
    try:
        for kill_after in (1_000, 3_000):
            kh.wait_for(lambda: len(acked) >= kill_after or not thread.is_alive(), timeout=120,
                        interval=0.01, what=f"{kill_after} acknowledged records")
            assert thread.is_alive(), "the producer finished before the kill"
            srv.kill9()
        thread.join(timeout=200)
        assert not thread.is_alive(), "the producer did not finish"
    finally:
        producer.purge()
    assert errors == [], errors[:3]
    assert len(acked) == total
    verify_log(srv.bootstrap, topic, acked, "after two SIGKILLs mid-produce")


@pytest.mark.deadline(300)
def test_a_data_directory_of_the_transaction_layout_moves_to_the_shard_log_with_nothing_lost(
        kafscale_factory):
    """A data directory written on the transaction layout (as every release before the shard
    log wrote it) is switched at the next start with the default layout; what was acknowledged
    before and after reads back at its offsets, across a SIGKILL too."""
    srv = kafscale_factory(["--initial-layout", "transactions"])
    topic = f"layout-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(srv.bootstrap, topic, PARTITIONS)
    acked = produce_acked(srv.bootstrap, topic, "old", PHASE2)
    assert "switched to the shard log" not in srv.log_path.read_text(errors="replace")

    srv.extra_args = [a for a in srv.extra_args if a not in ("--initial-layout", "transactions")]
    srv.restart()
    assert "data directory switched to the shard log layout" in srv.log_path.read_text(errors="replace")
    verify_log(srv.bootstrap, topic, acked, "after the switch")
    acked_new = produce_acked(srv.bootstrap, topic, "new", PHASE2)
    assert not set(acked_new.values()) & set(acked.values()), "the log reused offsets of the rows"
    acked.update(acked_new)
    verify_log(srv.bootstrap, topic, acked, "appends on the shard log")

    srv.kill9()
    kh.wait_confluent_metadata(srv.bootstrap, topic, PARTITIONS, timeout=30)
    verify_log(srv.bootstrap, topic, acked, "after SIGKILL on the shard log")
    acked.update(produce_acked(srv.bootstrap, topic, "after-kill", 300))
    verify_log(srv.bootstrap, topic, acked, "appends after recovery")

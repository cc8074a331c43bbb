"""A throttled metadata store loses nothing.

The DynamoDB preset of the simulated metadata store limits each partition key to one
DynamoDB partition's throughput and refuses the rest as a throttled, retriable request. Every
commit rewrites the rows of the partitions it touches, and a topic's rows share one partition
key, so a busy topic is throttled there first (docs/cost.md). Here the key's limit is set to a
twentieth of a partition's (as if twenty gateways wrote the same topic), the flush interval to
5 ms, and several idempotent
confluent-kafka producers write until the server has been throttled; every record must then
be read back exactly once, at the offset it was acknowledged at.

This is the transaction layout's hot key (rows of a topic rewritten by every commit), so the
server runs on that layout. The shard log (the default) appends one item of about a unit per
commit to its shard's key and was not throttled at all by this load; its throttled appends are
covered by the scale simulation's short test (scale-sim/tests/short.rs), which lowers the
key's limit until they are.
"""

from __future__ import annotations

import threading

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(240)

PARTITIONS = 16
PRODUCERS = 4
PER_PRODUCER = 3000
MAX_ROUNDS = 6


def throttled(server) -> bool:
    return "throttled, partition key part/" in server.log_path.read_text(errors="replace")


def produce_round(server, topic: str, round_no: int) -> dict:
    acked, failures = {}, []

    def one_producer(n: int) -> None:
        try:
            items = [{"key": f"{round_no}-{n}-{i}".encode(), "value": b"v" * 100}
                     for i in range(PER_PRODUCER)]
            deliveries = kh.confluent_produce(server.bootstrap, topic, items,
                                              {"enable.idempotence": True, "linger.ms": 5})
            for item, d in zip(items, deliveries):
                if d.error is not None:
                    failures.append(d.error)
                acked[item["key"]] = (d.partition, d.offset)
        except AssertionError as exc:  # reported below, from the test's thread
            failures.append(str(exc))

    threads = [threading.Thread(target=one_producer, args=(n,)) for n in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    return acked


def test_a_throttled_topic_row_key_slows_commits_and_loses_nothing(kafscale_factory):
    server = kafscale_factory(["--simulate-meta-store", "dynamodb",
                               "--simulate-key-write-units", "50",
                               "--initial-layout", "transactions",
                               "--flush-interval-ms", "5"], name="throttled")
    topic = "hot-topic"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    acked = {}
    for round_no in range(MAX_ROUNDS):
        acked.update(produce_round(server, topic, round_no))
        if throttled(server):
            break
    assert throttled(server), f"{len(acked)} records never got the topic's row key throttled"

    records = kh.confluent_consume_all(server.bootstrap, topic, range(PARTITIONS),
                                       expected=len(acked))
    read = {}
    for r in records:
        assert r.key not in read, f"{r.key!r} read twice"
        read[r.key] = (r.partition, r.offset)
    assert read == acked
    kh.assert_contiguous_offsets(records)
    print(f"{len(acked)} records in {round_no + 1} rounds, throttled, none lost")

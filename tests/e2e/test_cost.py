"""`kafscale cost` end to end: a standalone counts its store requests, and the command
prices what a confluent-kafka producer's run added, per GiB produced.

The figures are checked against the server's own counters read independently here (the
object PUTs, the produced bytes) and against what every commit must at least write (a
transaction of the lease check, the commit record and one partition row and index entry per
partition, two write units per item), so a miscount in either the server or the command
shows. Bad input (a missing or foreign baseline, a restarted server, nothing produced, a
dead address) must end with a clear error, not a traceback or a made-up figure.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Producer

import kafka_helpers as kh
from conftest import kafscale_binary

pytestmark = pytest.mark.deadline(180)

GIB = float(1 << 30)
RECORDS = 3000
RECORD_SIZE = 1024
PARTITIONS = 4


def cost(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(kafscale_binary()), "cost", "--metrics", f"http://{server.http}/metrics", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def produce(server, topic: str) -> None:
    producer = Producer({"bootstrap.servers": server.bootstrap, "acks": "all", "linger.ms": 5})
    failures = []
    for i in range(RECORDS):
        producer.produce(topic, value=b"v" * RECORD_SIZE, key=str(i).encode(),
                         on_delivery=lambda err, _msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failures, failures[:3]


def test_cost_prices_what_a_run_added(kafscale, tmp_path):
    topic = "cost-run"
    kh.confluent_create_topic(kafscale.bootstrap, topic, PARTITIONS)
    baseline = tmp_path / "before.json"
    saved = cost(kafscale, "--save", str(baseline))
    assert saved.stdout == "" and "baseline saved" in saved.stderr
    puts_before = kh.metric_value(kafscale, 'kafscale_object_store_requests_total{op="put"}')
    flushes_before = kh.metric_value(kafscale, "kafscale_segment_flushes_total")
    bytes_before = kh.metric_value(kafscale, "kafscale_produce_bytes_total")

    produce(kafscale, topic)

    puts = kh.metric_value(kafscale, 'kafscale_object_store_requests_total{op="put"}') - puts_before
    flushes = kh.metric_value(kafscale, "kafscale_segment_flushes_total") - flushes_before
    produced = kh.metric_value(kafscale, "kafscale_produce_bytes_total") - bytes_before
    assert puts == flushes > 0
    assert produced >= RECORDS * RECORD_SIZE

    estimate = json.loads(cost(kafscale, "--since", str(baseline), "--json").stdout)
    lines = {line["what"]: line for line in estimate["lines"]}
    gib = produced / GIB
    assert estimate["produced_gib"] == pytest.approx(gib)
    put_line = lines["object PUT and LIST requests"]
    assert put_line["counted"] == puts
    assert put_line["dollars_per_gib"] == pytest.approx(puts * 0.005 / 1000 / gib)
    writes = lines["metadata write units"]
    # Each flush commits at least one item of at least one unit: on the shard log (the default
    # layout) one log item, folded later with more; on the transaction layout the lease check,
    # its record, a row and an index entry, two units each.
    assert writes["counted"] >= flushes
    assert writes["dollars_per_gib"] == pytest.approx(writes["counted"] * 0.625e-6 / gib)
    total = sum(line["dollars_per_gib"] for line in estimate["lines"])
    assert estimate["dollars_per_gib"] == pytest.approx(total)
    assert estimate["kafka_network_per_gib"] == pytest.approx((2 / 3 + 2) * 0.02)

    # The table says the same for a person, and the other price lists change the price only.
    table = cost(kafscale, "--since", str(baseline)).stdout
    assert "object PUT and LIST requests" in table and "three-replica Kafka" in table
    express = json.loads(cost(kafscale, "--since", str(baseline), "--json",
                              "--object-store", "s3-express", "--meta-store", "provisioned").stdout)
    express_lines = {line["what"]: line for line in express["lines"]}
    assert express_lines["object PUT and LIST requests"]["counted"] == puts
    assert express_lines["object PUT and LIST requests"]["dollars_per_gib"] == pytest.approx(
        puts * 0.00113 / 1000 / gib)
    assert express["meta_store"].startswith("DynamoDB provisioned")


def test_cost_refuses_what_it_cannot_price(kafscale, tmp_path):
    baseline = tmp_path / "before.json"
    cost(kafscale, "--save", str(baseline))
    cases = [
        (["--since", str(tmp_path / "missing.json")], "missing.json"),
        (["--since", str(kafscale.log_path)], "is not a baseline"),
        (["--since", str(baseline)], "no bytes were produced"),
    ]
    for args, message in cases:
        done = cost(kafscale, *args, check=False)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert "panicked" not in done.stderr

    kh.confluent_create_topic(kafscale.bootstrap, "cost-restart", 1)
    produce(kafscale, "cost-restart")
    cost(kafscale, "--save", str(baseline))
    kafscale.restart()
    done = cost(kafscale, "--since", str(baseline), check=False)
    assert done.returncode != 0 and "restarted" in done.stderr, done.stderr

    dead = subprocess.run([str(kafscale_binary()), "cost", "--metrics",
                           f"http://127.0.0.1:{kh.free_port()}/metrics"],
                          capture_output=True, text=True, timeout=30)
    assert dead.returncode != 0 and "scraping http://127.0.0.1:" in dead.stderr, dead.stderr


def test_a_trickle_on_an_object_store_costs_one_flush_per_interval(kafscale_factory):
    """On S3 (a simulated one here) the default flush interval is 150 ms: a producer sending
    one record every 20 ms for 2 s makes about fifteen flushes, not a hundred, and loses nothing."""
    server = kafscale_factory(["--simulate-object-store", "s3-standard",
                               "--simulate-meta-store", "dynamodb"], name="s3-preset")
    topic = "trickle"
    kh.confluent_create_topic(server.bootstrap, topic, 1)
    flushes_before = kh.metric_value(server, "kafscale_segment_flushes_total")
    producer = Producer({"bootstrap.servers": server.bootstrap, "acks": "all", "linger.ms": 0})
    delivered, failures = [], []
    sends = 100
    started = time.monotonic()
    for i in range(sends):
        producer.produce(topic, value=str(i).encode(),
                         on_delivery=lambda err, msg: failures.append(err) if err else delivered.append(msg))
        producer.poll(0)
        # The pace of the load, not a wait for a condition.
        time.sleep(0.02)
    assert producer.flush(30) == 0
    elapsed = time.monotonic() - started
    assert not failures and len(delivered) == sends
    flushes = kh.metric_value(server, "kafscale_segment_flushes_total") - flushes_before
    # One flush per 150 ms of the run, plus the first (sealed at once) and the last.
    assert flushes <= elapsed / 0.15 + 2, (flushes, elapsed)
    print(f"{sends} sends in {elapsed:.2f} s: {flushes:.0f} flushes")
    offsets = sorted(m.offset() for m in delivered)
    assert offsets == list(range(sends))

"""The admin API on the gateways of a distributed cluster (DynamoDB Local and
moto's S3, see distributed.py): any gateway answers for topics, shards and
committed offsets; the cluster view lists the live indexers, ingest and fetch gateways
and the owner of every shard and coordinator slot; a group is described by
its coordinator, and the other fetch gateway names that coordinator and
refuses to reset the group's offsets itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

import distributed as dist
import kafka_helpers as kh
from test_admin import consume_in_group, http, produce_with_kcat
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

pytestmark = pytest.mark.deadline(300)

TOKEN = kh.secret("dist-admin-token")


def admin_json(server, *args: str) -> dict:
    env = dict(os.environ, KAFSCALE_ADMIN_URL=f"http://{server.http}", KAFSCALE_ADMIN_TOKEN=TOKEN)
    res = subprocess.run([str(dist.kafscale_bin()), "admin", *args, "--output", "json"], env=env,
                         capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (args, res.stderr.decode())
    return json.loads(res.stdout)


def test_gateways_serve_the_admin_api(cluster, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("KAFSCALE_ADMIN_TOKEN", TOKEN)  # every process of the cluster gets it
    c = cluster(shards=4).start(indexers=1, ingests=1, fetches=2)
    dist.wait_coordinators_settled(c.fetches)
    ingest, (f0, f1) = c.ingests[0], c.fetches

    view = admin_json(f0, "cluster")
    assert view["mode"] == "fetch" and view["shard_count"] == 4
    roles = sorted(p["role"] for p in view["processes"])
    assert roles == ["fetch", "fetch", "indexer", "ingest"], view["processes"]
    [ingest_process] = [p for p in view["processes"] if p["role"] == "ingest"]
    assert ingest_process["addr"] == ingest.bootstrap, (ingest_process, ingest.bootstrap)
    assert all(s["live"] and s["owner"] for s in view["shards"]), view["shards"]
    slot_owners = {s["owner_addr"] for s in view["coordinator_slots"] if s["live"]}
    assert len(slot_owners) == 2 and len(view["coordinator_slots"]) == 16
    assert admin_json(ingest, "cluster")["mode"] == "ingest"
    epochs = admin_json(ingest, "shards")["shards"]
    assert [s["index"] for s in epochs] == [0, 1, 2, 3] and all(s["epoch"] >= 1 for s in epochs)

    topic, group = "dist-admin", "dist-admin-group"
    admin_json(ingest, "topics", "create", topic, "--partitions", "2")
    produce_with_kcat(ingest, topic, tmp_path, 20, "d")

    def hwm(server):
        d = admin_json(server, "topics", "describe", topic)
        return sum(p["high_watermark"] for p in d["partitions"]) == 20
    kh.wait_for(lambda: hwm(f1), 30, what="the high watermark through the other gateway")

    # Every shard's figures come from its live owner (the one indexer); the shards of the
    # topic's partitions have committed segments within the last minute.
    shards = admin_json(f0, "shards")["shards"]
    assert all(s["figures"] == "ok" and s["queue_depth"] >= 0 for s in shards), shards
    assert sum(s["commit_latency"]["commits"] for s in shards) >= 1, shards

    from confluent_kafka import Consumer

    cons = Consumer({"bootstrap.servers": f0.bootstrap, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    got = 0
    try:
        cons.subscribe([topic])
        deadline = kh.Deadline(60)
        while got < 20 and not deadline.expired():
            got += sum(1 for m in cons.consume(20, timeout=0.5) if m.error() is None)
        cons.commit(asynchronous=False)
    finally:
        cons.close()
    assert got == 20

    # Lag: from either gateway (offsets live in the store).
    for gw in (f0, f1, ingest):
        assert admin_json(gw, "groups", "lag", group)["total_lag"] == 0
    # Describe: one gateway coordinates the group, the other names it.
    d0, d1 = admin_json(f0, "groups", "describe", group), admin_json(f1, "groups", "describe", group)
    here, there = (d0, d1) if d0["coordinated_here"] else (d1, d0)
    coordinator_gw, other_gw = (f0, f1) if d0["coordinated_here"] else (f1, f0)
    assert here["coordinated_here"] and not there["coordinated_here"]
    assert here["state"] == "Empty" and there["state"] is None
    assert there["coordinator"] == coordinator_gw.bootstrap, (there, coordinator_gw.bootstrap)

    # List: every process lists the group (it has committed offsets); only its coordinator
    # knows its state.
    for gw, state, here in ((coordinator_gw, "Empty", True), (other_gw, "Unknown", False),
                            (ingest, "Unknown", False)):
        listed = {g["group_id"]: g for g in admin_json(gw, "groups", "list")["groups"]}
        assert (listed[group]["state"], listed[group]["coordinated_here"]) == (state, here), listed

    body = {"all_topics": True, "strategy": "earliest"}
    status, err = http(other_gw, "POST", f"/v1/groups/{group}/offsets/reset", body, token=TOKEN)
    assert (status, err["code"], err.get("coordinator")) == \
        (409, "not_coordinator", coordinator_gw.bootstrap), err
    status, reset = http(coordinator_gw, "POST", f"/v1/groups/{group}/offsets/reset", body,
                         token=TOKEN)
    assert status == 200 and all(p["new_offset"] == 0 for p in reset["partitions"]), reset
    assert admin_json(f1, "groups", "lag", group)["total_lag"] == 20
    again = consume_in_group(c.fetches[0], topic, group, 20)
    assert len(again) == 20

    # An indexer that stops answering leaves its shards' figures unknown, the lease columns
    # still filled (SIGSTOP: its leases stay live in the store until they expire).
    indexer = c.indexers[0]
    indexer.proc.send_signal(signal.SIGSTOP)
    try:
        shards = admin_json(ingest, "shards")["shards"]
        assert all(s["figures"] == "unknown" and s["owner"] for s in shards), shards
    finally:
        indexer.proc.send_signal(signal.SIGCONT)

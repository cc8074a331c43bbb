"""OpenTelemetry traces across tiers, on a distributed cluster (moto's S3 and
DynamoDB Local, see distributed.py) whose processes export OTLP/HTTP to a test
receiver (otlp_receiver.py) because OTEL_EXPORTER_OTLP_ENDPOINT is set.

One produce request is one trace: the ingest gateway's `produce` span, the
`segment` it opened, that segment's `segment_upload` and `segment_commit`, the
indexer's `http_request` (a child of the commit call, through the W3C
`traceparent` header), its `commit` and the `store_write` under it. A consumer's
fetch requests are traced by the fetch gateway. Without the variable nothing is
exported (the other distributed tests run that way)."""

from __future__ import annotations

import pytest

import kafka_helpers as kh
from otlp_receiver import OtlpReceiver
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

pytestmark = pytest.mark.deadline(240)


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def _produce(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    errors = []
    for i in range(n):
        p.produce(topic, value=f"traced-{i}".encode(),
                  on_delivery=lambda err, _msg: errors.append(err) if err else None)
        p.flush(30)
    assert not errors, errors


def _one_produce_trace(spans):
    """A produce span whose trace holds the whole path across both processes, with the
    parent links intact, or None while spans are still arriving."""
    by_id = {s.span_id: s for s in spans}

    def child(parent, name, service):
        return next((s for s in spans if s.parent_span_id == parent.span_id
                     and s.name == name and s.service == service
                     and s.trace_id == parent.trace_id), None)

    for produce in (s for s in spans if s.name == "produce" and s.service == "kafscale-ingest"):
        if produce.parent_span_id:
            continue
        segment = child(produce, "segment", "kafscale-ingest")
        if not segment:
            continue
        upload = child(segment, "segment_upload", "kafscale-ingest")
        commit_call = child(segment, "segment_commit", "kafscale-ingest")
        if not (upload and commit_call):
            continue
        request = child(commit_call, "http_request", "kafscale-indexer")
        commit = request and child(request, "commit", "kafscale-indexer")
        write = commit and child(commit, "store_write", "kafscale-indexer")
        if write:
            assert by_id.get(produce.span_id) is produce
            return [produce, segment, upload, commit_call, request, commit, write]
    return None


def test_a_produce_request_is_one_trace_across_ingest_and_indexer(cluster, receiver, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s, not 5 s
    c = cluster(shards=2).start(indexers=1, ingests=1, fetches=1)
    topic = "traced"
    _produce(c.ingests[0].bootstrap, topic, 5)

    path = kh.wait_for(lambda: _one_produce_trace(receiver.snapshot()), 30,
                       what="one produce trace from the ingest gateway to the indexer's store write")
    assert len({s.trace_id for s in path}) == 1
    assert {s.service for s in path} == {"kafscale-ingest", "kafscale-indexer"}
    produce, segment, upload, commit_call, request, commit, write = path
    attrs = [dict(span.attributes) for span in path]
    assert attrs[3]["shard"] == attrs[5]["shard"], "the indexer committed the shard it was sent"
    assert attrs[5]["segment"] and attrs[2]["key"], (attrs[2], attrs[5])
    # One item on the shard log (the default layout); on the transaction layout the commit
    # record and at least one partition row.
    assert int(attrs[6]["items"]) >= 1, "a commit writes at least one item"

    # The fetch tier traces fetch and group requests too.
    _consume(c.fetches[0].bootstrap, topic, "traced-group", 5)
    kh.wait_for(lambda: {"fetch_api", "group_api"} <= {
        s.name for s in receiver.snapshot() if s.service == "kafscale-fetch"}, 30,
        what="fetch and group request spans from the fetch gateway")
    assert receiver.bad_requests == 0


def _consume(bootstrap: str, topic: str, group: str, n: int) -> None:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = 0
    try:
        c.subscribe([topic])
        deadline = kh.Deadline(60)
        while got < n and not deadline.expired():
            got += sum(1 for m in c.consume(num_messages=n, timeout=0.5) if not m.error())
        c.commit(asynchronous=False)
    finally:
        c.close()
    assert got == n

"""Cluster-internal calls in distributed mode.

Authentication (`--internal-token-file` / KAFSCALE_INTERNAL_TOKEN): with one token on the
indexer and the gateways, produce and consume work; the indexer's commit, DeleteRecords and
watermark-feed endpoints refuse callers without the token (401, counted, nothing committed)
while /healthz and /metrics stay open; a gateway with a wrong token gets produce errors and
says why in its log; no process ever logs a token.

HTTPS (`--http-tls-cert` on the indexer, `--internal-tls-ca` and
`--internal-tls-server-name` on the gateways): commits, the watermark feed and the shard
figures go over TLS to a certificate that names the indexers' service rather than their
address; a gateway that trusts another CA, or speaks plain HTTP, commits nothing.
"""

from __future__ import annotations

import json
from http.client import HTTPException
import urllib.error
import urllib.request
import uuid

import pytest

import distributed as dist
import kafka_helpers as kh
from test_tls import Pki

pytestmark = pytest.mark.deadline(300)

REFUSED_METRIC = "kafscale_indexer_internal_requests_refused_total"


# The distributed suite's fixtures (DynamoDB Local, moto, `cluster`), shared rather than copied.
from test_distributed import cluster, ddb_endpoint, moto  # noqa: E402,F401  (pytest fixtures)


def http(server, method: str, path: str, body: bytes = b"", token: str | None = None):
    """(status, body) of one request to `server`'s HTTP listener."""
    request = urllib.request.Request(f"http://{server.http}{path}", data=body or None,
                                     method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def commit_body(topic_id: str) -> bytes:
    """A commit of one batch at partition 0 (shard 0: the cluster has one shard)."""
    return json.dumps({
        "segment_key": f"segments/forged-{uuid.uuid4().hex}",
        "shard": 0,
        "segment_size": 100,
        "batches": [{
            "topic_id": topic_id, "partition": 0, "byte_start": 0, "byte_len": 100,
            "offset_count": 5, "record_count": 5, "first_timestamp": 0, "max_timestamp": 0,
            "producer_id": -1, "producer_epoch": -1, "base_sequence": -1,
        }],
    }).encode()


def assert_no_token_logged(servers, *tokens: str) -> None:
    for s in servers:
        text = s.log_path.read_text(errors="replace")
        for t in tokens:
            assert t not in text, f"{s.name}'s log carries a token"


def test_internal_token_guards_the_indexer(cluster, tmp_path):
    token = kh.secret(f"internal-{uuid.uuid4().hex}")
    wrong = kh.secret(f"wrong-{uuid.uuid4().hex}")
    c = cluster(shards=1)
    c.extra_env["KAFSCALE_INTERNAL_TOKEN"] = token
    c.start(indexers=1, ingests=1, fetches=1)
    indexer, ingest, fetch = c.indexers[0], c.ingests[0], c.fetches[0]

    # With the same token everywhere, produce and consume work.
    topic, n = "internal-auth", 200
    kh.confluent_create_topic(ingest.bootstrap, topic, 1)
    items = [{"key": b"k", "value": f"v{i}".encode(), "partition": 0} for i in range(n)]
    deliveries = kh.confluent_produce(ingest.bootstrap, topic, items, timeout=60)
    assert all(d.error is None for d in deliveries), [d for d in deliveries if d.error][:3]
    consumed = kh.confluent_consume_all(fetch.bootstrap, topic, [0], expected=n)
    assert [r.value for r in consumed] == [it["value"] for it in items]

    # Raw calls without the token, or with a wrong one, are refused before any handler.
    topic_id = dist.StoreReader(c, topic).topic_id
    refused_before = kh.metric_value(indexer, REFUSED_METRIC)
    for auth in (None, wrong):
        status, body = http(indexer, "POST", "/v1/commit", commit_body(topic_id), auth)
        assert status == 401, (status, body)
        assert json.loads(body)["error"] == "unauthorized"
        status, _ = http(indexer, "POST", "/v1/delete-records", json.dumps(
            {"shard": 0, "topic_id": topic_id, "partition": 0, "offset": -1}).encode(), auth)
        assert status == 401
        status, _ = http(indexer, "GET", "/v1/watermarks", token=auth)
        assert status == 401
    # The right token gets past the guard (this body is then invalid: not a 401).
    status, _ = http(indexer, "POST", "/v1/commit", b"{}", token)
    assert status not in (200, 401), status
    # Health and metrics stay open.
    assert http(indexer, "GET", "/healthz")[0] == 200
    assert kh.metric_value(indexer, REFUSED_METRIC) == refused_before + 6
    # Nothing was committed or deleted.
    assert kh.confluent_watermarks(fetch.bootstrap, topic, [0]) == {0: (0, n)}

    # A gateway with a wrong token: produce fails with a retriable error, and it says why.
    wrong_file = tmp_path / "wrong-token"
    wrong_file.write_text(wrong + "\n")
    bad = c.start_ingest(name="ingest-wrong", extra=("--internal-token-file", str(wrong_file)))
    failed = kh.confluent_produce(bad.bootstrap, topic, items[:3], timeout=30,
                                  conf={"message.timeout.ms": 5000, "retry.backoff.ms": 200})
    assert all(d.error is not None for d in failed), failed
    kh.wait_for(lambda: "indexer refused the internal token" in bad.log_path.read_text(
        errors="replace"), timeout=30, what="the refusal in the gateway's log")
    assert kh.confluent_watermarks(fetch.bootstrap, topic, [0]) == {0: (0, n)}

    assert_no_token_logged([indexer, ingest, fetch, bad], token, wrong)


def shard_figures(gateway) -> list[str]:
    """The `figures` state of every shard in `gateway`'s admin API (asked of the owners)."""
    status, body = http(gateway, "GET", "/v1/shards")
    assert status == 200, (status, body)
    return [s["figures"] for s in json.loads(body)["shards"]]


def test_gateways_call_the_indexers_over_https(cluster, tmp_path):
    pki = Pki(tmp_path / "pki")
    # The certificate names the indexers' service, not 127.0.0.1 (as a pod IP would not be).
    cert, key = pki.issue("indexers", "/CN=indexers",
                          "subjectAltName=DNS:indexers.internal\nextendedKeyUsage=serverAuth")
    c = cluster(shards=1)
    c.admin_init()
    indexer = c.start_indexer(extra=("--http-tls-cert", str(cert), "--http-tls-key", str(key)))
    trusting = ("--internal-tls-ca", str(pki.ca), "--internal-tls-server-name",
                "indexers.internal")
    ingest = c.start_ingest(extra=trusting)
    topic, n = "internal-https", 100
    kh.confluent_create_topic(ingest.bootstrap, topic, 1)
    items = [{"key": b"k", "value": f"v{i}".encode(), "partition": 0} for i in range(n)]

    # A gateway trusting another CA, and one speaking plain HTTP, commit nothing. (Checked
    # before a fetch gateway starts: every gateway's Metadata names itself the leader and lists
    # the group coordinators, so a client's metadata refresh could move its produce requests
    # to a fetch gateway that trusts the indexer.)
    other = Pki(tmp_path / "other-pki")
    untrusting = c.start_ingest(name="ingest-other-ca", extra=(
        "--internal-tls-ca", str(other.ca), "--internal-tls-server-name", "indexers.internal"))
    plain = c.start_ingest(name="ingest-plain")
    for gateway in (untrusting, plain):
        failed = kh.confluent_produce(gateway.bootstrap, topic, items[:3], timeout=30,
                                      conf={"message.timeout.ms": 5000, "retry.backoff.ms": 200})
        assert all(d.error is not None for d in failed), (gateway.name, failed)
        assert kh.metric_value(gateway, "kafscale_produce_records_total") == 3
        assert shard_figures(gateway) == ["unknown"]

    # The indexer serves HTTPS only: plain HTTP gets no HTTP answer at all.
    with pytest.raises((HTTPException, urllib.error.URLError, ConnectionError)):
        http(indexer, "POST", "/v1/commit", commit_body(dist.StoreReader(c, topic).topic_id))

    # The trusting gateways: commits, the watermark feed and the shard figures over HTTPS.
    fetch = c.start_fetch(extra=trusting)
    deliveries = kh.confluent_produce(ingest.bootstrap, topic, items, timeout=60)
    assert all(d.error is None for d in deliveries), [d for d in deliveries if d.error][:3]
    consumed = kh.confluent_consume_all(fetch.bootstrap, topic, [0], expected=n)
    assert [r.value for r in consumed] == [it["value"] for it in items]
    assert kh.confluent_watermarks(fetch.bootstrap, topic, [0]) == {0: (0, n)}
    kh.wait_for(lambda: shard_figures(ingest) == ["ok"], timeout=30,
                what="shard figures asked of the indexer over https")

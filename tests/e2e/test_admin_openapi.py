"""schemathesis against the admin API's own OpenAPI document (/openapi.json) on
a live standalone server of its own: every operation, with generated valid and
invalid input and the bearer token (so mutations run too), must answer without
a 5xx, with a documented status code, content type and headers, and a body
that conforms to the documented schema.

The run is bounded (a fixed number of examples per operation, fixed seed) and
uses a server nobody else uses: schemathesis creates and deletes topics and
groups at will."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(600)

TOKEN = kh.secret("schemathesis-token")
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
MAX_EXAMPLES = int(os.environ.get("KAFSCALE_SCHEMATHESIS_EXAMPLES", "25"))


def test_the_admin_api_conforms_to_its_openapi_document(kafscale_factory, tmp_path):
    env = dict(os.environ, KAFSCALE_ADMIN_TOKEN=TOKEN)
    server = kafscale_factory(env=env, name="schemathesis")
    # Some data, so describes, lag and segments have something to report.
    with urllib.request.urlopen(f"http://{server.http}/openapi.json", timeout=10) as resp:
        doc = json.load(resp)
    assert doc["openapi"].startswith("3.") and len(doc["paths"]) >= 10
    # The document's examples name topic "demo" and group "demo-group": give them data.
    from confluent_kafka import Consumer, TopicPartition

    kh.confluent_create_topic(server.bootstrap, "demo", 2)
    deliveries = kh.confluent_produce(server.bootstrap, "demo",
                                      [{"value": f"v{i}".encode(), "partition": i % 2}
                                       for i in range(20)])
    assert all(d.error is None for d in deliveries)
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "demo-group"})
    try:
        c.commit(offsets=[TopicPartition("demo", 0, 4), TopicPartition("demo", 1, 10)],
                 asynchronous=False)
    finally:
        c.close()

    report = tmp_path / "schemathesis-junit.xml"
    cmd = [sys.executable, "-m", "schemathesis.cli", "run",
           f"http://{server.http}/openapi.json",
           "--checks", CHECKS,
           "--max-examples", str(MAX_EXAMPLES),
           "--seed", "11",
           "--workers", "1",
           "--request-timeout", "30",
           "--header", f"Authorization: Bearer {TOKEN}",
           "--suppress-health-check", "all",
           "--report", "junit", "--report-junit-path", str(report)]
    res = subprocess.run(cmd, capture_output=True, timeout=540, stdin=subprocess.DEVNULL,
                         cwd=str(tmp_path), env=dict(os.environ, NO_COLOR="1"))
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    assert res.returncode == 0, out[-12000:]
    # The server survived it and still answers.
    with urllib.request.urlopen(f"http://{server.http}/v1/cluster", timeout=10) as resp:
        assert json.load(resp)["mode"] == "standalone"

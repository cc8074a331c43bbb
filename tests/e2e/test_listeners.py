"""Named listeners (docs/security.md, "Listeners"): plaintext and SASL_SSL side by side on one
process, each with its own port and advertised address, with real clients (confluent-kafka).

A client is answered with the addresses of the listener it connected to: Metadata and
FindCoordinator through the SASL_SSL listener name its advertised host (`localhost`, not the
plaintext listener's 127.0.0.1), so a consumer group that bootstraps there keeps to SASL_SSL.
In a distributed cluster the fetch gateways publish their listener addresses in their
coordinator leases, and an ingest gateway's answers name the coordinator on the client's
listener too. Servers run on 127.0.0.1 only; certificates come from test_tls.Pki.
"""

from __future__ import annotations

import os
import subprocess

import pytest

import kafka_helpers as kh
from conftest import kafscale_binary
from test_sasl import ALICE, ALICE_PW, TOKEN, librdkafka_sasl, set_user
from test_tls import Pki
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

pytestmark = pytest.mark.deadline(240)

RECORDS = 20


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def listener_args(pki: Pki, internal_port: int, external_port: int) -> list[str]:
    """PLAINTEXT on 127.0.0.1 (advertised as bound) and EXTERNAL, SASL_SSL with SCRAM-SHA-512,
    advertised as localhost (a name the certificate carries)."""
    cert, key = pki.server("server")
    return ["--listeners",
            f"PLAINTEXT://127.0.0.1:{internal_port},EXTERNAL://127.0.0.1:{external_port}",
            "--listener-security-protocol-map", "EXTERNAL:SASL_SSL",
            "--advertised-listeners", f"EXTERNAL://localhost:{external_port}",
            "--kafka-tls-cert", str(cert), "--kafka-tls-key", str(key),
            "--sasl-mechanisms", "SCRAM-SHA-512"]


def brokers_seen(bootstrap: str, conf: dict) -> dict[int, tuple[str, int]]:
    """Metadata's brokers as a client of this listener sees them."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    metadata = admin.list_topics(timeout=30)
    return {b.id: (b.host, b.port) for b in metadata.brokers.values()}


def consume_in_group(bootstrap: str, topic: str, group: str, conf: dict) -> list[bytes]:
    """Reads RECORDS records of `topic` as a member of `group` (FindCoordinator, JoinGroup,
    SyncGroup, then fetches from the coordinator and leaders Metadata names)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, **conf})
    values: list[bytes] = []
    errors: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = kh.Deadline(90)
        while len(values) < RECORDS and not deadline.expired():
            for m in consumer.consume(num_messages=RECORDS, timeout=0.5):
                if m.error() is None:
                    values.append(m.value())
                else:
                    errors.append(str(m.error()))
        # Said here rather than by the commit ("no offset stored") when nothing was read.
        assert len(values) == RECORDS, (f"read {len(values)} of {RECORDS} records in 90 s; "
                                        f"consumer errors: {errors[:10]}; "
                                        f"assignment: {consumer.assignment()}")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def produce(bootstrap: str, topic: str, conf: dict) -> list[bytes]:
    items = [{"value": b"v%d" % i} for i in range(RECORDS)]
    deliveries = kh.confluent_produce(bootstrap, topic, items, conf=conf, timeout=60)
    assert [d.error for d in deliveries] == [None] * RECORDS
    return [it["value"] for it in items]


def test_plaintext_and_sasl_ssl_side_by_side_each_with_its_own_address(kafscale_factory, pki):
    internal, external = kh.free_port(), kh.free_port()
    env = dict(os.environ, KAFSCALE_ADMIN_TOKEN=TOKEN)
    server = kafscale_factory(listener_args(pki, internal, external), env=env)
    assert server.bootstrap == f"127.0.0.1:{internal}"  # the first listener is the primary
    set_user(server, ALICE, ALICE_PW)
    sasl_ssl = librdkafka_sasl("SCRAM-SHA-512", ALICE, ALICE_PW, pki)

    inside = brokers_seen(f"127.0.0.1:{internal}", {})
    outside = brokers_seen(f"localhost:{external}", sasl_ssl)
    assert list(inside.values()) == [("127.0.0.1", internal)]
    assert list(outside.values()) == [("localhost", external)]
    assert inside.keys() == outside.keys()  # one broker, one node id, two addresses

    # Written inside, read outside in a group (its coordinator answered on EXTERNAL), and the
    # other way round.
    written = produce(f"127.0.0.1:{internal}", "listeners-in-out", {})
    assert consume_in_group(f"localhost:{external}", "listeners-in-out", "outside-group",
                            sasl_ssl) == written
    written = produce(f"localhost:{external}", "listeners-out-in", sasl_ssl)
    assert consume_in_group(f"127.0.0.1:{internal}", "listeners-out-in", "inside-group",
                            {}) == written

    # Each port speaks only its own protocol: plaintext Kafka on the SASL_SSL port gets no Kafka
    # answer (a TLS alert record, which reads as an absurd frame size, or a closed connection),
    # and the plaintext port needs no authentication.
    with pytest.raises((kh.ConnectionClosed, OSError, ValueError)):
        kh.api_versions_v0(f"127.0.0.1:{external}", timeout=5)
    kh.assert_server_serves(f"127.0.0.1:{internal}")


def start_fails(tmp_path, args: list[str], env: dict | None = None) -> str:
    res = subprocess.run([str(kafscale_binary()), "standalone", "--data-dir",
                          str(tmp_path / "refused"), "--http-addr", "127.0.0.1:0", *args],
                         env=env or dict(os.environ), capture_output=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode != 0, res.stdout
    return res.stderr.decode()


def test_listener_mistakes_stop_the_start_with_a_clear_error(tmp_path, pki):
    port = kh.free_port()
    cert, key = pki.server("server")
    err = start_fails(tmp_path, ["--listeners", f"SSL://127.0.0.1:{port}"])
    assert "no certificate is configured" in err, err
    err = start_fails(tmp_path, ["--listeners", f"INTERNAL://127.0.0.1:{port}"])
    assert "--listener-security-protocol-map INTERNAL:PROTOCOL" in err, err
    err = start_fails(tmp_path, ["--listeners", f"PLAINTEXT://127.0.0.1:{port}",
                                 "--kafka-tls-cert", str(cert), "--kafka-tls-key", str(key)])
    assert "no listener speaks TLS" in err, err
    err = start_fails(tmp_path, ["--listeners", f"PLAINTEXT://127.0.0.1:{port}",
                                 "--kafka-addr", f"127.0.0.1:{port}"])
    assert "--kafka-addr" in err, err
    err = start_fails(tmp_path, ["--listeners", f"SASL_PLAINTEXT://127.0.0.1:{port}",
                                 "--sasl-mechanisms", "PLAIN"])
    assert "--sasl-allow-plain-without-tls" in err, err


def test_a_cluster_answers_each_client_on_its_listener(cluster, pki):  # noqa: F811
    """Ingest and fetch gateways with two listeners each: a SASL_SSL client bootstrapping at
    the ingest gateway's EXTERNAL port is sent to the fetch gateway's EXTERNAL address for its
    group (read from the fetch gateway's coordinator lease), and reads everything there."""
    c = cluster(shards=1)
    c.extra_env = {"KAFSCALE_ADMIN_TOKEN": TOKEN}
    c.admin_init()
    c.start_indexer()
    ports = {tier: (kh.free_port(), kh.free_port()) for tier in ("ingest", "fetch")}
    # Connection-level logs on the ingest gateway and librdkafka's own for the first produce:
    # this test once failed in a full suite run (2 of 12 runs, 2026-12-04) with the produce
    # never reaching the gateway, and passed in 20 runs alone; the next failure should say why.
    ingest = c.start_ingest(extra=tuple(listener_args(pki, *ports["ingest"])),
                            log="info,kafscale_shared::wire=debug,kafscale_ingest=debug")
    # The consumer side once read nothing in 90 s in a full suite run (2026-12-05, 1 of 3): the
    # fetch gateway's connection-level logs say what it was asked and answered.
    fetch = c.start_fetch(extra=tuple(listener_args(pki, *ports["fetch"])),
                          log="info,kafscale_shared::wire=debug,kafscale_fetch=debug")
    set_user(ingest, ALICE, ALICE_PW)
    sasl_ssl = librdkafka_sasl("SCRAM-SHA-512", ALICE, ALICE_PW, pki)
    ingest_external = f"localhost:{ports['ingest'][1]}"

    written = produce(ingest_external, "listeners-cluster",
                      {**sasl_ssl, "debug": "broker,protocol,security,metadata,msg"})
    fetch_external = ("localhost", ports["fetch"][1])

    def fetch_gateway_listed() -> bool:
        return fetch_external in brokers_seen(ingest_external, sasl_ssl).values()

    kh.wait_for(fetch_gateway_listed, timeout=60, interval=0.5)
    inside = brokers_seen(ingest.bootstrap, {})
    assert ("127.0.0.1", ports["fetch"][0]) in inside.values(), inside
    assert consume_in_group(ingest_external, "listeners-cluster", "cluster-outside",
                            sasl_ssl) == written
    assert fetch.running

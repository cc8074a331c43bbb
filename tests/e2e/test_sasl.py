"""SASL authentication on the Kafka listener (docs/security.md, "SASL authentication").

Standalone servers on 127.0.0.1 with `--sasl-mechanisms ...`; users are made through the
admin API (`PUT /v1/users/{user}/credentials/{mechanism}`, token-protected) or `kafscale admin
users set`. Clients: kcat, confluent-kafka (librdkafka) and kafka-python over SASL_SSL
(certificates made with openssl as tests/e2e/test_tls.py does) and SASL_PLAINTEXT, plus raw
Kafka frames for what clients hide (the exact error answered, a connection closed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time
import urllib.request

import pytest

import kafka_helpers as kh
from conftest import ServerStartError, kafscale_binary
from test_tls import Pki
# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory), for the last test.
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

pytestmark = pytest.mark.deadline(240)

TOKEN = kh.secret("e2e-sasl-admin-token")
ALICE, ALICE_PW = "alice", kh.secret("alice-secret")
WRONG_PW = kh.secret("not-what-alice-set")
RECORDS = 20
# Kafka error codes.
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def start_sasl(factory, mechanisms: str, pki: Pki | None = None, extra: tuple = ()):
    """A standalone server requiring SASL with `mechanisms` (TLS on the Kafka listener when
    `pki` is given; the HTTP listener stays plain so the admin API can make users)."""
    args = ["--sasl-mechanisms", mechanisms, *extra]
    if pki is not None:
        cert, key = pki.server("server")
        args += ["--kafka-tls-cert", cert, "--kafka-tls-key", key]
    env = dict(os.environ, KAFSCALE_ADMIN_TOKEN=TOKEN)
    return factory([str(a) for a in args], env=env)


def set_user(server, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
    body = json.dumps({"password": kh.secret(password)}).encode()
    request = urllib.request.Request(
        f"http://{server.http}/v1/users/{user}/credentials/{mechanism}", data=body, method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def set_user_everywhere(server, user: str, password: str) -> None:
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        set_user(server, user, password, mechanism)


def librdkafka_sasl(mechanism: str, user: str, password: str, pki: Pki | None) -> dict:
    conf = {"security.protocol": "SASL_SSL" if pki else "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism, "sasl.username": user,
            "sasl.password": kh.secret(password)}
    if pki is not None:
        conf["ssl.ca.location"] = str(pki.ca)
    return conf


def kafka_python_sasl(conf: dict) -> dict:
    out = {"security_protocol": conf["security.protocol"],
           "sasl_mechanism": conf["sasl.mechanisms"],
           "sasl_plain_username": conf["sasl.username"],
           "sasl_plain_password": conf["sasl.password"]}
    if "ssl.ca.location" in conf:
        out["ssl_cafile"] = conf["ssl.ca.location"]
    return out


def kcat_args(conf: dict) -> list[str]:
    return [arg for k, v in conf.items() for arg in ("-X", f"{k}={v}")]


def confluent_round_trip(server, topic: str, conf: dict) -> None:
    items = [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(RECORDS)]
    deliveries = kh.confluent_produce(server.bootstrap, topic, items, conf=conf, timeout=60)
    assert [d.error for d in deliveries] == [None] * RECORDS
    got = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=RECORDS, timeout=60,
                                   conf=conf)
    assert [c.value for c in got] == [it["value"] for it in items]


def kafka_python_round_trip(server, topic: str, conf: dict) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    sasl = kafka_python_sasl(conf)
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, acks="all", **sasl)
    try:
        futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i) for i in range(RECORDS)]
        producer.flush(timeout=60)
        offsets = [f.get(timeout=60).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(RECORDS))
    consumer = KafkaConsumer(topic, bootstrap_servers=server.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=30_000, **sasl)
    values = []
    try:
        for record in consumer:
            values.append(record.value)
            if len(values) == RECORDS:
                break
    finally:
        consumer.close()
    assert values == [b"v%d" % i for i in range(RECORDS)]


def kcat_round_trip(server, topic: str, conf: dict, tmp_path) -> None:
    lines = tmp_path / f"{topic}.txt"
    lines.write_text("".join(f"k{i}:v{i}\n" for i in range(RECORDS)))
    kh.run_kcat(["-P", "-b", server.bootstrap, "-t", topic, "-K:", "-l", "-X", "acks=all",
                 *kcat_args(conf), str(lines)], timeout=60)
    out = kh.run_kcat(["-C", "-b", server.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                       "-f", "%k=%s\\n", *kcat_args(conf)], timeout=60)
    assert out.stdout.decode().splitlines() == [f"k{i}=v{i}" for i in range(RECORDS)]


def every_client_round_trips(server, name: str, conf: dict, tmp_path) -> None:
    confluent_round_trip(server, f"{name}-confluent", conf)
    kafka_python_round_trip(server, f"{name}-kafka-python", conf)
    kcat_round_trip(server, f"{name}-kcat", conf, tmp_path)


def auth_metric(server, outcome: str) -> float:
    text = server.http_get("/metrics")[1].decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("kafscale_sasl_authentications_total{")
               and f'outcome="{outcome}"' in line)


# -- raw SASL frames ---------------------------------------------------------------------------


def handshake(conn: kh.RawConnection, mechanism: str) -> tuple[int, list[str]]:
    """SaslHandshake v1: (error code, enabled mechanisms)."""
    r = conn.request(17, 1, kh.kstring(mechanism))
    error = r.i16()
    return error, [r.string() for _ in range(r.i32())]


def authenticate(conn: kh.RawConnection, token: bytes) -> tuple[int, str | None, bytes, int]:
    """SaslAuthenticate v1: (error code, message, auth bytes, session lifetime ms)."""
    r = conn.request(36, 1, kh.kbytes(token))
    return r.i16(), r.string(), r.bytes_() or b"", r.i64()


def scram_sha256(conn: kh.RawConnection, user: str, password: str) -> tuple[int, str | None, int]:
    """A SCRAM-SHA-256 exchange (RFC 5802) on `conn`: (error code, message, lifetime ms)."""
    assert handshake(conn, "SCRAM-SHA-256")[0] == 0
    nonce = secrets.token_hex(12)
    bare = f"n={user},r={nonce}"
    error, message, server_first, lifetime = authenticate(conn, f"n,,{bare}".encode())
    if error:
        return error, message, lifetime
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    error, message, _, lifetime = authenticate(conn, f"{without_proof},p={proof}".encode())
    return error, message, lifetime


def metadata_v1(conn: kh.RawConnection) -> None:
    """Metadata v1 for no topics; the answer must come."""
    r = conn.request(3, 1, kh.i32(0))
    assert r.i32() >= 1  # brokers


# -- tests -------------------------------------------------------------------------------------


def test_sasl_ssl_scram_sha_512_with_every_client(kafscale_factory, pki, tmp_path):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-512,SCRAM-SHA-256", pki)
    set_user(server, ALICE, ALICE_PW, "SCRAM-SHA-512")
    conf = librdkafka_sasl("SCRAM-SHA-512", ALICE, ALICE_PW, pki)
    every_client_round_trips(server, "ssl-scram512", conf, tmp_path)
    assert auth_metric(server, "success") >= 3
    assert auth_metric(server, "failure") == 0


def test_sasl_ssl_plain_with_every_client(kafscale_factory, pki, tmp_path):
    server = start_sasl(kafscale_factory, "PLAIN", pki)
    set_user(server, ALICE, ALICE_PW, "SCRAM-SHA-256")
    every_client_round_trips(server, "ssl-plain", librdkafka_sasl("PLAIN", ALICE, ALICE_PW, pki),
                             tmp_path)


def test_sasl_plaintext_scram_sha_256_with_every_client(kafscale_factory, tmp_path):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-256")
    set_user(server, ALICE, ALICE_PW, "SCRAM-SHA-256")
    every_client_round_trips(server, "plain-scram256",
                             librdkafka_sasl("SCRAM-SHA-256", ALICE, ALICE_PW, None), tmp_path)


def confluent_auth_error(server, conf: dict, timeout: float = 10.0) -> str:
    """The first error a confluent-kafka producer with `conf` reports (waited for, bounded)."""
    from confluent_kafka import Producer

    errors: list = []
    producer = Producer({"bootstrap.servers": server.bootstrap, **conf,
                         "error_cb": errors.append})
    def auth_errors() -> list[str]:
        producer.poll(0.1)
        return [str(e) for e in errors if "uthenticat" in str(e)]

    try:
        producer.produce("sasl-refused", b"x")
        return kh.wait_for(auth_errors, timeout, what="an authentication error")[0]
    finally:
        producer.purge()
        producer.flush(1)


def test_a_wrong_password_and_an_unknown_user_fail_fast_and_alike(kafscale_factory):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
                        extra=("--sasl-allow-plain-without-tls",))
    set_user_everywhere(server, ALICE, ALICE_PW)
    for user, password in ((ALICE, WRONG_PW), ("mallory", ALICE_PW)):
        started = time.monotonic()
        error = confluent_auth_error(server, librdkafka_sasl("SCRAM-SHA-512", user, password, None))
        assert time.monotonic() - started < 5, "the refusal was not quick"
        assert "mallory" not in error, error

    # Raw frames: the same answer for both, after the failure delay, then the connection closes.
    answers = []
    for user, password in ((ALICE, WRONG_PW), ("mallory", ALICE_PW)):
        for exchange in ("scram", "plain"):
            with kh.RawConnection(server.bootstrap) as conn:
                started = time.monotonic()
                if exchange == "scram":
                    error, message, _ = scram_sha256(conn, user, password)
                else:
                    assert handshake(conn, "PLAIN")[0] == 0
                    error, message, _, _ = authenticate(conn, f"\0{user}\0{password}".encode())
                assert error == SASL_AUTHENTICATION_FAILED, message
                assert 0.09 <= time.monotonic() - started < 5
                conn.wait_closed(timeout=5)
                answers.append((exchange, message))
    assert answers[0] == answers[2] and answers[1] == answers[3], answers
    assert "mallory" not in str(answers)
    assert auth_metric(server, "failure") >= 6


def test_requests_before_authentication_close_the_connection(kafscale_factory):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-256")
    set_user(server, ALICE, ALICE_PW, "SCRAM-SHA-256")

    # ApiVersions is served, and lists the SASL APIs.
    apis = kh.api_versions_v0(server.bootstrap).api_keys
    assert apis[17] == (0, 1) and apis[36] == (0, 2), apis

    with kh.RawConnection(server.bootstrap) as conn:
        conn.send_request(3, 1, kh.i32(0))
        how, data = conn.wait_closed(timeout=5)
        assert data == b"", "a request before authentication was answered"

    # An unsupported mechanism: the enabled list, then the connection closes.
    with kh.RawConnection(server.bootstrap) as conn:
        assert handshake(conn, "PLAIN") == (UNSUPPORTED_SASL_MECHANISM, ["SCRAM-SHA-256"])
        conn.wait_closed(timeout=5)

    # SaslHandshake v0 (raw SASL tokens would follow) is refused: UNSUPPORTED_VERSION.
    with kh.RawConnection(server.bootstrap) as conn:
        r = conn.request(17, 0, kh.kstring("SCRAM-SHA-256"))
        assert r.i16() == 35
        conn.wait_closed(timeout=5)

    # SaslAuthenticate before SaslHandshake.
    with kh.RawConnection(server.bootstrap) as conn:
        assert authenticate(conn, b"n,,n=alice,r=x")[0] == ILLEGAL_SASL_STATE
        conn.wait_closed(timeout=5)

    # Authenticated, the same request is served.
    with kh.RawConnection(server.bootstrap) as conn:
        assert scram_sha256(conn, ALICE, ALICE_PW)[::2] == (0, 0)
        metadata_v1(conn)


def test_plain_without_tls_is_refused_at_startup_unless_allowed(kafscale_factory):
    refused = kafscale_factory(["--sasl-mechanisms", "SCRAM-SHA-512,PLAIN"], start=False)
    with pytest.raises(ServerStartError):
        refused.start(timeout=30)
    assert "--sasl-allow-plain-without-tls" in refused.log_path.read_text()

    server = start_sasl(kafscale_factory, "PLAIN", extra=("--sasl-allow-plain-without-tls",))
    set_user(server, ALICE, ALICE_PW)
    with kh.RawConnection(server.bootstrap) as conn:
        assert handshake(conn, "PLAIN") == (0, ["PLAIN"])
        assert authenticate(conn, f"\0{ALICE}\0{ALICE_PW}".encode())[0] == 0
        metadata_v1(conn)


@pytest.mark.deadline(180)
def test_re_authentication_keeps_a_producer_going_and_a_silent_session_expires(kafscale_factory):
    lifetime_ms = 2000
    server = start_sasl(kafscale_factory, "SCRAM-SHA-256",
                        extra=("--sasl-session-lifetime-ms", lifetime_ms))
    set_user(server, ALICE, ALICE_PW, "SCRAM-SHA-256")

    # A raw client that does not re-authenticate: served until the session ends, then closed
    # at its next request.
    with kh.RawConnection(server.bootstrap) as conn:
        assert scram_sha256(conn, ALICE, ALICE_PW)[::2] == (0, lifetime_ms)
        authenticated = time.monotonic()

        def closed() -> bool:
            try:
                metadata_v1(conn)
                return False
            except (kh.ConnectionClosed, ConnectionError):
                return True

        kh.wait_for(closed, 10, interval=0.2, what="the expired session closed")
        assert time.monotonic() - authenticated >= lifetime_ms / 1000 - 0.3

    # librdkafka re-authenticates (KIP-368) before its session ends: one producer keeps
    # delivering across several lifetimes, on connections that re-authenticated.
    from confluent_kafka import Producer

    errors: list = []
    producer = Producer({"bootstrap.servers": server.bootstrap, "acks": "all", "linger.ms": 0,
                         "error_cb": errors.append,
                         **librdkafka_sasl("SCRAM-SHA-256", ALICE, ALICE_PW, None)})
    delivered: list = []
    try:
        started = time.monotonic()
        first_logins = None
        while time.monotonic() - started < 3.5 * lifetime_ms / 1000:
            producer.produce("sasl-reauth", b"v%d" % len(delivered),
                             on_delivery=lambda err, msg: delivered.append(err))
            assert producer.flush(30) == 0
            if first_logins is None:
                first_logins = auth_metric(server, "success")
        assert delivered and all(err is None for err in delivered), delivered[-3:]
        # Every connection of the producer logged in again at least twice.
        assert auth_metric(server, "success") >= first_logins + 2
    finally:
        producer.purge()
        producer.flush(1)
    assert not [e for e in errors if "uthenticat" in str(e)], errors


def test_a_user_made_with_the_admin_cli_authenticates(kafscale_factory):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-512,SCRAM-SHA-256")
    password = kh.secret("carol-" + secrets.token_hex(8))
    env = dict(os.environ, KAFSCALE_ADMIN_URL=f"http://{server.http}",
               KAFSCALE_ADMIN_TOKEN=TOKEN, CAROL_PASSWORD=password)
    result = subprocess.run([str(kafscale_binary()), "admin", "users", "set", "carol",
                             "--password-env", "CAROL_PASSWORD"],
                            env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode()
    listed = subprocess.run([str(kafscale_binary()), "admin", "users", "list", "-o", "json"],
                            env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert json.loads(listed.stdout) == {"users": [{"name": "carol", "credentials": [
        {"mechanism": "SCRAM-SHA-256", "iterations": 4096},
        {"mechanism": "SCRAM-SHA-512", "iterations": 4096}]}]}

    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        deliveries = kh.confluent_produce(
            server.bootstrap, "cli-user", [{"value": b"hello"}], timeout=30,
            conf=librdkafka_sasl(mechanism, "carol", password, None))
        assert [d.error for d in deliveries] == [None]
    assert password not in server.log_path.read_text()


def server_first_salt(server, user: str) -> str:
    """The salt a SCRAM-SHA-256 server-first message answers for `user`."""
    with kh.RawConnection(server.bootstrap) as conn:
        assert handshake(conn, "SCRAM-SHA-256")[0] == 0
        error, _, server_first, _ = authenticate(conn, f"n,,n={user},r=abc".encode())
        assert error == 0
        return dict(a.split("=", 1) for a in server_first.decode().split(","))["s"]


def test_a_user_authenticates_on_every_gateway_of_a_cluster(cluster):  # noqa: F811
    """On DynamoDB: a user made once through an ingest gateway's admin API logs in on the
    ingest and the fetch gateway; both answer the same decoy salt for an unknown user."""
    c = cluster(shards=1)
    c.extra_env = {"KAFSCALE_SASL_MECHANISMS": "SCRAM-SHA-256,SCRAM-SHA-512",
                   "KAFSCALE_ADMIN_TOKEN": TOKEN}
    c.start(indexers=1, ingests=1, fetches=1)
    ingest, fetch = c.ingests[0], c.fetches[0]
    set_user_everywhere(ingest, ALICE, ALICE_PW)
    conf = librdkafka_sasl("SCRAM-SHA-512", ALICE, ALICE_PW, None)
    items = [{"value": b"v%d" % i} for i in range(RECORDS)]
    deliveries = kh.confluent_produce(ingest.bootstrap, "sasl-cluster", items, conf=conf,
                                      timeout=60)
    assert [d.error for d in deliveries] == [None] * RECORDS
    got = kh.confluent_consume_all(fetch.bootstrap, "sasl-cluster", [0], expected=RECORDS,
                                   timeout=60, conf=conf)
    assert [m.value for m in got] == [it["value"] for it in items]
    assert server_first_salt(ingest, "nobody") == server_first_salt(fetch, "nobody")
    assert server_first_salt(ingest, "nobody") != server_first_salt(ingest, "somebody-else")

"""TLS on the Kafka and HTTP listeners, with real clients (docs/security.md).

Every test makes its own PKI with the `openssl` CLI in its tmp dir: a CA, server
certificates for 127.0.0.1/localhost and client certificates.  Servers run standalone
on 127.0.0.1 with `--kafka-tls-*` and `--http-tls-*`; the clients are confluent-kafka
(librdkafka), kafka-python, kcat and Python's ssl module for raw Kafka frames.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import kafka_helpers as kh
from conftest import ServerStartError, kafscale_binary

# Short enough that a test waiting for it stays quick, long enough for a loaded machine.
HANDSHAKE_TIMEOUT_MS = 3000
RELOAD_INTERVAL_MS = 200


class Pki:
    """A CA in `root` and the certificates it signs (P-256 keys, openssl CLI)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca.pem"
        self.ca_key = root / "ca.key"
        self._serial = 1000
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                      "-subj", "/CN=kafscale e2e CA")

    def _openssl(self, *args) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    def issue(self, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
        """A certificate and key signed by the CA, written to `<name>.pem`/`.key`."""
        cert, key, csr, ext = (self.root / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
        ext.write_text(extensions + "\n")
        self._serial += 1
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", subject)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", self._serial, "-days", "2", "-out", cert, "-extfile", ext)
        return cert, key

    def server(self, cn: str) -> tuple[Path, Path]:
        return self.issue(cn, f"/CN={cn}",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")

    def client(self, cn: str) -> tuple[Path, Path]:
        return self.issue(cn, f"/O=kafscale/OU=e2e/CN={cn}", "extendedKeyUsage=clientAuth")


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def start_tls(factory, pki: Pki, mutual: bool = False, cert_name: str = "server-a",
              extra: tuple = ()):
    """A standalone server whose Kafka and HTTP listeners speak TLS only. The certificate
    files are `<pki>/live.pem`/`live.key` (so a test can rotate them in place)."""
    cert, key = pki.server(cert_name)
    live_cert, live_key = pki.root / "live.pem", pki.root / "live.key"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    args = ["--kafka-tls-cert", live_cert, "--kafka-tls-key", live_key,
            "--http-tls-cert", live_cert, "--http-tls-key", live_key,
            "--kafka-tls-handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS,
            "--tls-reload-interval-ms", RELOAD_INTERVAL_MS, *extra]
    if mutual:
        args += ["--kafka-tls-client-ca", pki.ca]
    return factory([str(a) for a in args])


def ssl_context(pki: Pki, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def tls_connection(server, ctx: ssl.SSLContext, timeout: float = 10.0) -> kh.RawConnection:
    """A raw Kafka connection over TLS (handshake done)."""
    conn = kh.RawConnection(server.bootstrap, timeout=timeout)
    conn.sock = ctx.wrap_socket(conn.sock, server_hostname="localhost")
    return conn


def peer_common_name(server, pki: Pki) -> str:
    """The CN of the certificate a new TLS connection to the Kafka listener is shown."""
    with tls_connection(server, ssl_context(pki)) as conn:
        subject = dict(item for rdn in conn.sock.getpeercert()["subject"] for item in rdn)
        return subject["commonName"]


def https_get(server, pki: Pki, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"https://{server.http}{path}", timeout=10,
                                context=ssl_context(pki)) as resp:
        return resp.status, resp.read().decode()


def https_metric(server, pki: Pki, name: str) -> float:
    _, text = https_get(server, pki, "/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def librdkafka_ssl(pki: Pki, client: tuple[Path, Path] | None = None) -> dict:
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)}
    if client is not None:
        conf.update({"ssl.certificate.location": str(client[0]),
                     "ssl.key.location": str(client[1])})
    return conf


def produce_and_consume_confluent(server, topic: str, conf: dict, count: int = 50) -> None:
    items = [{"key": f"k{i}".encode(), "value": f"v{i}".encode()} for i in range(count)]
    deliveries = kh.confluent_produce(server.bootstrap, topic, items, conf=conf, timeout=60)
    assert [d.error for d in deliveries] == [None] * count
    got = kh.confluent_consume_all(server.bootstrap, topic, [0], expected=count, timeout=60,
                                   conf=conf)
    assert [c.value for c in got] == [it["value"] for it in items]
    assert [c.offset for c in got] == list(range(count))


def test_confluent_kafka_produces_and_consumes_over_tls(kafscale_factory, pki):
    server = start_tls(kafscale_factory, pki)
    produce_and_consume_confluent(server, "tls-confluent", librdkafka_ssl(pki))


def test_kafka_python_produces_and_consumes_over_tls(kafscale_factory, pki):
    from kafka import KafkaConsumer, KafkaProducer

    server = start_tls(kafscale_factory, pki)
    ssl_conf = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca)}
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, acks="all", **ssl_conf)
    try:
        futures = [producer.send("tls-kafka-python", key=b"k%d" % i, value=b"v%d" % i)
                   for i in range(20)]
        producer.flush(timeout=60)
        offsets = [f.get(timeout=60).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(20))
    consumer = KafkaConsumer("tls-kafka-python", bootstrap_servers=server.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=30_000, **ssl_conf)
    values = []
    try:
        for record in consumer:
            values.append(record.value)
            if len(values) == 20:
                break
    finally:
        consumer.close()
    assert values == [b"v%d" % i for i in range(20)]


def test_kcat_produces_and_consumes_over_tls(kafscale_factory, pki, tmp_path):
    server = start_tls(kafscale_factory, pki)
    ssl_args = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={pki.ca}"]
    lines = tmp_path / "input.txt"
    lines.write_text("".join(f"k{i}:v{i}\n" for i in range(30)))
    kh.run_kcat(["-P", "-b", server.bootstrap, "-t", "tls-kcat", "-K:", "-l", "-X", "acks=all",
                 *ssl_args, str(lines)], timeout=60)
    out = kh.run_kcat(["-C", "-b", server.bootstrap, "-t", "tls-kcat", "-o", "beginning", "-e",
                       "-q", "-f", "%k=%s\\n", *ssl_args], timeout=60)
    assert out.stdout.decode().splitlines() == [f"k{i}=v{i}" for i in range(30)]


def test_mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with(
        kafscale_factory, pki):
    server = start_tls(kafscale_factory, pki, mutual=True)
    failures_before = https_metric(server, pki, "kafscale_tls_handshake_failures_total")

    # Without a certificate: with TLS 1.3 the client's side of the handshake completes before
    # the server checks it, so the refusal shows on the first read, at once (no hang).
    started = time.monotonic()
    with pytest.raises((ssl.SSLError, kh.ConnectionClosed, ConnectionError)):
        with tls_connection(server, ssl_context(pki)) as conn:
            conn.request(18, 0, b"", timeout=10)
    assert time.monotonic() - started < 5, "the refusal was not quick"
    kh.wait_for(lambda: https_metric(server, pki, "kafscale_tls_handshake_failures_total")
                > failures_before, 10, what="the refused handshake counted")

    # A certificate from another CA is refused too.
    stranger = Pki(pki.root.parent / "other-pki").client("stranger")
    with pytest.raises((ssl.SSLError, kh.ConnectionClosed, ConnectionError)):
        with tls_connection(server, ssl_context(pki, stranger)) as conn:
            conn.request(18, 0, b"", timeout=10)

    # librdkafka without a certificate gets no metadata.
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import KafkaException
    admin = AdminClient({"bootstrap.servers": server.bootstrap, **librdkafka_ssl(pki)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)

    # With a certificate the CA signed, every client works.
    client = pki.client("app")
    with tls_connection(server, ssl_context(pki, client)) as conn:
        versions = kh.decode_api_versions_v0(conn.request(18, 0, b""))
        assert versions.error_code == 0 and 0 in versions.api_keys
    produce_and_consume_confluent(server, "tls-mutual", librdkafka_ssl(pki, client))


def rotate(pki: Pki, cn: str) -> None:
    """Replaces live.pem/live.key with a new certificate, each file atomically (as a
    Kubernetes secret volume does), the key last: for a moment the pair does not match."""
    cert, key = pki.server(cn)
    for src, dst in ((cert, pki.root / "live.pem"), (key, pki.root / "live.key")):
        tmp = dst.with_suffix(".tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def test_rotated_certificates_are_used_for_new_connections(kafscale_factory, pki):
    server = start_tls(kafscale_factory, pki, cert_name="server-a")
    assert peer_common_name(server, pki) == "server-a"
    produce_and_consume_confluent(server, "tls-rotation", librdkafka_ssl(pki), count=10)
    old = tls_connection(server, ssl_context(pki))
    try:
        assert kh.decode_api_versions_v0(old.request(18, 0, b"")).error_code == 0
        reloads_before = https_metric(server, pki, "kafscale_tls_certificate_reloads_total")

        rotate(pki, "server-b")
        kh.wait_for(lambda: peer_common_name(server, pki) == "server-b", 30,
                    what="a new connection shown the rotated certificate")
        assert https_metric(server, pki, "kafscale_tls_certificate_reloads_total") > reloads_before

        # The connection opened before keeps its session and keeps being served.
        subject = dict(item for rdn in old.sock.getpeercert()["subject"] for item in rdn)
        assert subject["commonName"] == "server-a"
        assert kh.decode_api_versions_v0(old.request(18, 0, b"")).error_code == 0
    finally:
        old.close()
    # New clients work with the new certificate (same CA).
    produce_and_consume_confluent(server, "tls-rotation-after", librdkafka_ssl(pki), count=10)

    # A broken file keeps the certificate in use and is counted.
    failures_before = https_metric(server, pki, "kafscale_tls_certificate_reload_failures_total")
    (pki.root / "live.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    kh.wait_for(lambda: https_metric(server, pki, "kafscale_tls_certificate_reload_failures_total")
                > failures_before, 30, what="the broken certificate file reported")
    assert peer_common_name(server, pki) == "server-b"


def test_plaintext_and_silent_clients_are_closed_quickly(kafscale_factory, pki):
    server = start_tls(kafscale_factory, pki)
    failures_before = https_metric(server, pki, "kafscale_tls_handshake_failures_total")

    # A plaintext Kafka request is not a TLS record: the connection closes at once.
    started = time.monotonic()
    with kh.RawConnection(server.bootstrap) as conn:
        conn.send_request(18, 0, b"")
        conn.wait_closed(timeout=HANDSHAKE_TIMEOUT_MS / 1000 + 5)
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000

    # A client that connects and says nothing is closed at the handshake timeout.
    started = time.monotonic()
    with kh.RawConnection(server.bootstrap) as conn:
        conn.wait_closed(timeout=HANDSHAKE_TIMEOUT_MS / 1000 + 10)
    elapsed = time.monotonic() - started
    assert HANDSHAKE_TIMEOUT_MS / 1000 - 0.5 <= elapsed < HANDSHAKE_TIMEOUT_MS / 1000 + 10, elapsed

    kh.wait_for(lambda: https_metric(server, pki, "kafscale_tls_handshake_failures_total")
                >= failures_before + 2, 10, what="both failed handshakes counted")
    # The listener still serves TLS clients.
    with tls_connection(server, ssl_context(pki)) as conn:
        assert kh.decode_api_versions_v0(conn.request(18, 0, b"")).error_code == 0


def test_http_listener_serves_metrics_over_https_only(kafscale_factory, pki):
    server = start_tls(kafscale_factory, pki)
    status, text = https_get(server, pki, "/metrics")
    assert status == 200 and "kafscale_connections_accepted_total" in text
    assert https_get(server, pki, "/healthz") == (200, "ok\n")
    # Plain HTTP to the HTTPS listener gets no answer.
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://{server.http}/healthz", timeout=5).read()


def test_admin_cli_reaches_an_https_api_with_its_ca(kafscale_factory, pki, tmp_path):
    server = start_tls(kafscale_factory, pki)
    # The certificate names 127.0.0.1 and localhost.
    url = f"https://localhost:{server.http.rsplit(':', 1)[1]}"

    def admin(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFSCALE_ADMIN")}
        return subprocess.run([str(kafscale_binary()), "admin", "cluster", "--url", url, *args],
                              capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)

    ok = admin("--tls-ca", str(pki.ca), "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert '"mode": "standalone"' in ok.stdout
    no_ca = admin()
    assert no_ca.returncode != 0 and "--tls-ca" in no_ca.stderr, no_ca.stderr
    other = Pki(tmp_path / "other-pki")
    untrusted = admin("--tls-ca", str(other.ca))
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr


@pytest.mark.parametrize("flags, message", [
    (["--kafka-tls-cert", "{cert}"], "--kafka-tls-cert is set without --kafka-tls-key"),
    (["--http-tls-key", "{key}"], "--http-tls-key is set without --http-tls-cert"),
    (["--kafka-tls-cert", "{cert}", "--kafka-tls-key", "{other_key}"], "does not belong"),
])
def test_bad_tls_flags_fail_at_startup(kafscale_factory, pki, flags, message):
    cert, key = pki.server("server-a")
    _, other_key = pki.server("server-b")
    args = [f.format(cert=cert, key=key, other_key=other_key) for f in flags]
    server = kafscale_factory(args, start=False)
    with pytest.raises(ServerStartError):
        server.start(timeout=30)
    log = server.log_path.read_text()
    assert message in log, log[-2000:]
    assert "PRIVATE KEY" not in log

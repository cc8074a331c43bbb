#!/usr/bin/env python3
"""Records the requests real Kafka clients send, to seed the fuzz corpora (docs/fuzzing.md).

Starts `kafscale standalone` on 127.0.0.1 with a throwaway data directory, puts a recording
proxy in front of it (the server advertises the proxy's address, so every connection a client
opens goes through it), and runs confluent-kafka (librdkafka) and kafka-python through a
producer's, a consumer group's and an admin's life: every compression, an idempotent producer,
subscribe/commit/leave, topic creation, configs, partitions, deletion. Each request frame
(without its length prefix) is written to OUT as `<seq>-<client>-<api key>-v<version>-<n>`
(`seq` counts frames in the order they were sent), at most a few per client, API and version.

    python3 scripts/fuzz-capture.py OUT_DIR        # then: bash scripts/fuzz.sh --import-frames OUT_DIR

Everything listens on 127.0.0.1 only and stops by itself (each client step is bounded).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_KIND = 3  # frames kept per client, API key and version


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Keeps the first PER_KIND frames of each (client, key, version)."""

    def __init__(self, out):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.counts = {}
        self.sequence = 0
        self.client = "none"
        self.lock = threading.Lock()

    def record(self, frame):
        if len(frame) < 4:
            return
        key = int.from_bytes(frame[0:2], "big", signed=True)
        version = int.from_bytes(frame[2:4], "big", signed=True)
        with self.lock:
            kind = (self.client, key, version)
            n = self.counts.get(kind, 0)
            if n >= PER_KIND:
                return
            self.counts[kind] = n + 1
            self.sequence += 1
            name = f"{self.sequence:05}-{self.client}-{key}-v{version}-{n}"
            (self.out / name).write_bytes(frame)


def pipe(src, dst, recorder):
    """Copies src to dst; with a recorder, splits the stream into frames and records each."""
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if recorder is None:
                continue
            buf += data
            while len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + size:
                    break
                recorder.record(buf[4 : 4 + size])
                buf = buf[4 + size :]
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listen_port, server_port, recorder, stop):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.listen(64)
    lsock.settimeout(0.2)
    while not stop.is_set():
        try:
            client, _ = lsock.accept()
        except socket.timeout:
            continue
        server = socket.create_connection(("127.0.0.1", server_port))
        threading.Thread(target=pipe, args=(client, server, recorder), daemon=True).start()
        threading.Thread(target=pipe, args=(server, client, None), daemon=True).start()
    lsock.close()


def wait_ready(http_port, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("fuzz-capture: the server did not become ready")


def confluent_life(bootstrap):
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics(
        [NewTopic("cap-a", 3, 1, config={"retention.ms": "600000"}), NewTopic("cap-c", 2, 1, config={"cleanup.policy": "compact"})]
    ).values():
        f.result(30)
    for compression in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": compression, "enable.idempotence": compression != "none", "linger.ms": 5})
        for i in range(20):
            p.produce("cap-a", key=f"k{i}".encode(), value=(compression * (i + 1)).encode(), headers=[("h", b"v")])
            p.produce("cap-c", key=f"k{i % 4}".encode(), value=b"v")
        assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cap-g", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["cap-a", "cap-c"])
    got, end = 0, time.monotonic() + 30
    while got < 100 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
            if got % 10 == 0:
                c.commit(m, asynchronous=False)
    c.close()
    r = ConfigResource(ConfigResource.Type.TOPIC, "cap-a")
    for f in admin.describe_configs([r]).values():
        f.result(30)
    r.set_config("retention.bytes", "1048576")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        altered = admin.alter_configs([r])
    for f in altered.values():
        f.result(30)
    r = ConfigResource(ConfigResource.Type.TOPIC, "cap-c", incremental_configs=[ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([r]).values():
        f.result(30)
    for f in admin.create_partitions([NewPartitions("cap-a", 4)]).values():
        f.result(30)
    for f in admin.delete_records([TopicPartition("cap-a", 0, 2)]).values():
        f.result(30)
    admin.list_consumer_groups().result(30)
    for f in admin.describe_consumer_groups(["cap-g"]).values():
        f.result(30)
    for f in admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("cap-g")]).values():
        f.result(30)
    admin.list_topics(timeout=30)
    for f in admin.delete_topics(["cap-c"]).values():
        f.result(30)
    return got


def kafka_python_life(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("cap-k", 2, 1)])
    for compression in [None, "gzip"]:
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
        for i in range(10):
            p.send("cap-k", key=b"k", value=b"v" * i)
        p.flush(30)
        p.close()
    c = KafkaConsumer("cap-k", bootstrap_servers=bootstrap, group_id="cap-kg", auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=5000)
    got = 0
    for _ in c:
        got += 1
        if got >= 20:
            break
    c.commit()
    c.close()
    admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "cap-k")])
    admin.list_groups()
    admin.describe_groups(["cap-kg"])
    admin.list_group_offsets("cap-kg")
    admin.describe_cluster()
    admin.delete_records({TopicPartition("cap-k", 0): 2})
    admin.delete_groups(["cap-kg"])
    admin.delete_topics(["cap-k"])
    admin.close()
    return got


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    recorder = Recorder(sys.argv[1])
    binary = os.environ.get("KAFSCALE_BIN", str(ROOT / "target/release/kafscale"))
    server_port, proxy_port, http_port = free_port(), free_port(), free_port()
    data = tempfile.mkdtemp(prefix="kafscale-capture-")
    server = subprocess.Popen(
        [binary, "standalone", "--data-dir", data, "--kafka-addr", f"127.0.0.1:{server_port}", "--http-addr", f"127.0.0.1:{http_port}", "--advertised-addr", f"127.0.0.1:{proxy_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    threading.Thread(target=proxy, args=(proxy_port, server_port, recorder, stop), daemon=True).start()
    try:
        wait_ready(http_port)
        bootstrap = f"127.0.0.1:{proxy_port}"
        for client, life in [("confluent", confluent_life), ("kafkapython", kafka_python_life)]:
            recorder.client = client
            got = life(bootstrap)
            print(f"fuzz-capture: {client}: consumed {got}")
    finally:
        stop.set()
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    print(f"fuzz-capture: {sum(recorder.counts.values())} frames in {recorder.out}")


if __name__ == "__main__":
    main()

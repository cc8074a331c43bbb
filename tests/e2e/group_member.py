"""One consumer-group member as its own process, so tests can SIGKILL it.

Subscribes to a topic with a real client (confluent-kafka or kafka-python), and
prints one JSON object per line on stdout:
  {"ev": "assign"|"revoke"|"lost", "parts": [...], "owned": [...], "t": time}
  {"ev": "rec", "p": partition, "o": offset, "t": time}
  {"ev": "committed", "p": partition, "o": next offset, "t": time}
  {"ev": "commit_failed", "err": "...", "t": time}
  {"ev": "closed", "t": time}
Offsets are committed synchronously after every poll that returned records
(auto commit off), so "committed" lines are exactly what the group stored.
SIGTERM closes the consumer cleanly (it leaves the group) and exits 0. The
process stops by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

stop = False


def emit(**kw) -> None:
    kw["t"] = time.time()
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def on_term(_sig, _frame) -> None:
    global stop
    stop = True


def run_confluent(a) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {"bootstrap.servers": a.bootstrap, "group.id": a.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": a.session_ms, "heartbeat.interval.ms": a.heartbeat_ms,
            "partition.assignment.strategy": a.strategy}
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    if a.debug:
        conf["debug"] = a.debug
    if a.metadata_refresh_ms:
        conf["topic.metadata.refresh.interval.ms"] = a.metadata_refresh_ms
    c = Consumer(conf)
    owned: set[int] = set()

    def on_assign(_c, parts):
        owned.update(p.partition for p in parts)
        emit(ev="assign", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    def on_revoke(_c, parts):
        owned.difference_update(p.partition for p in parts)
        emit(ev="revoke", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    def on_lost(_c, parts):
        owned.difference_update(p.partition for p in parts)
        emit(ev="lost", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    deadline = time.time() + a.max_seconds
    try:
        while not stop and time.time() < deadline:
            msgs = c.consume(num_messages=100, timeout=0.2)
            nexts: dict[int, int] = {}
            for m in msgs:
                if m.error() is not None:
                    continue
                emit(ev="rec", p=m.partition(), o=m.offset())
                nexts[m.partition()] = m.offset() + 1
            if nexts:
                tps = [TopicPartition(a.topic, p, o) for p, o in nexts.items()]
                try:
                    c.commit(offsets=tps, asynchronous=False)
                    for p, o in nexts.items():
                        emit(ev="committed", p=p, o=o)
                except KafkaException as e:
                    emit(ev="commit_failed", err=str(e))
    finally:
        c.close()
    emit(ev="closed")


def run_kafka_python(a) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=a.session_ms, heartbeat_interval_ms=a.heartbeat_ms)
    owned: set[int] = set()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            owned.difference_update(p.partition for p in revoked)
            emit(ev="revoke", parts=sorted(p.partition for p in revoked), owned=sorted(owned))

        def on_partitions_assigned(self, assigned):
            owned.update(p.partition for p in assigned)
            emit(ev="assign", parts=sorted(p.partition for p in assigned), owned=sorted(owned))

    c.subscribe([a.topic], listener=Listener())
    deadline = time.time() + a.max_seconds
    try:
        while not stop and time.time() < deadline:
            batches = c.poll(timeout_ms=200, max_records=100)
            commits = {}
            for tp, msgs in batches.items():
                for m in msgs:
                    emit(ev="rec", p=tp.partition, o=m.offset)
                if msgs:
                    commits[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)
            if commits:
                try:
                    c.commit(commits)
                    for tp, om in commits.items():
                        emit(ev="committed", p=tp.partition, o=om.offset)
                except KafkaError as e:
                    emit(ev="commit_failed", err=repr(e))
    finally:
        c.close()
    emit(ev="closed")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--instance-id", default=None)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--debug", default=None, help="librdkafka debug contexts (confluent only)")
    ap.add_argument("--metadata-refresh-ms", type=int, default=None,
                    help="librdkafka topic.metadata.refresh.interval.ms (confluent only)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    if a.client == "confluent":
        run_confluent(a)
    else:
        run_kafka_python(a)


if __name__ == "__main__":
    main()

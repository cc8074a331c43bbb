"""Distributed mode end to end: `kafscale ingest`, `fetch` and `indexer` as
separate processes on moto's S3 server and DynamoDB Local (see distributed.py),
driven by confluent-kafka and kafka-python. Each test makes its own bucket and
table, so tests share the two servers but nothing else.

Covered: two producers through two ingest gateways read back through both fetch
gateways; SIGKILL of the indexer that owns shards while producing; a deposed
(SIGSTOPped past its lease) indexer whose writes are refused; store outages of
DynamoDB and S3 in turn while producing.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import pytest

import distributed as dist
import kafka_helpers as kh

pytestmark = pytest.mark.deadline(420)


@pytest.fixture(scope="module")
def ddb_endpoint():
    return dist.require_dynamodb()


@pytest.fixture(scope="module")
def moto(ddb_endpoint, tmp_path_factory):
    server = dist.MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.close()


@pytest.fixture
def cluster(kafscale_factory, moto, ddb_endpoint):
    clusters = []

    def make(**kwargs) -> dist.Cluster:
        c = dist.Cluster(kafscale_factory, moto, ddb_endpoint, **kwargs)
        clusters.append(c)
        return c

    yield make
    for s in kafscale_factory.servers:
        if s.running and s.proc is not None:
            try:
                s.proc.send_signal(signal.SIGCONT)
            except OSError:
                pass
    kafscale_factory.close()
    for c in clusters:
        c.close()


def test_admin_init_is_idempotent_and_keeps_the_shard_count(cluster):
    c = cluster(shards=4)
    first = c.admin_init()
    assert "4 shards" in first, first
    c.shards = 32  # a second init (or a process started with another count) keeps the first
    again = c.admin_init()
    assert "4 shards" in again, again


def test_two_producers_two_ingest_two_fetch(cluster):
    """confluent-kafka and kafka-python produce to one topic at the same time
    through different ingest gateways; both fetch gateways return the whole
    log: contiguous offsets, no gaps or duplicates, each producer's order kept
    within every partition, every ack at its offset."""
    c = cluster(shards=8).start(indexers=2, ingests=2, fetches=2)
    topic, partitions, n = "dist-two-producers", 4, 3000
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    kh.wait_confluent_metadata(c.ingests[1].bootstrap, topic, partitions)

    items = {tag: [{"key": f"{tag}-{i % 50}".encode(), "value": f"{tag}-{i}".encode(),
                    "partition": i % partitions} for i in range(n)]
             for tag in ("ck", "kp")}
    results: dict = {}

    def run(tag, fn):
        try:
            results[tag] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            results[tag] = exc

    threads = [
        threading.Thread(target=run, args=("ck", lambda: kh.confluent_produce(
            c.ingests[0].bootstrap, topic, items["ck"], conf={"enable.idempotence": True}))),
        threading.Thread(target=run, args=("kp", lambda: kh.kafka_python_produce(
            c.ingests[1].bootstrap, topic, items["kp"], None))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for tag in ("ck", "kp"):
        assert not isinstance(results.get(tag), BaseException), f"{tag}: {results.get(tag)!r}"
    deliveries = {}
    for tag in ("ck", "kp"):
        ds = results[tag]
        assert len(ds) == n
        assert all(d.error is None for d in ds), [d for d in ds if d.error][:5]
        deliveries[tag] = [(d.partition, d.offset) for d in ds]

    via_confluent = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                             expected=2 * n)
    via_kafka_python = kh.kafka_python_consume_all(c.fetches[1].bootstrap, topic,
                                                   range(partitions), expected=2 * n)
    for consumed in (via_confluent, via_kafka_python):
        dist.assert_acks_consumed(deliveries, consumed, partitions)
        # Each producer's records keep their order inside every partition.
        for p, recs in kh.by_partition(consumed).items():
            for tag in ("ck", "kp"):
                seq = [int(r.value.decode().split("-")[1]) for r in recs
                       if r.value.decode().startswith(tag + "-")]
                assert seq == sorted(seq), f"{tag} out of order in partition {p}"
    a = sorted((r.partition, r.offset, r.value) for r in via_confluent)
    b = sorted((r.partition, r.offset, r.value) for r in via_kafka_python)
    assert a == b, "the two fetch gateways returned different logs"
    # Both ingest gateways committed through both indexers' shards.
    for idx in c.indexers:
        assert dist.shards_acquired(idx), f"{idx.name} never owned a shard\n{idx.log_tail()}"


def test_a_topic_created_on_one_gateway_is_known_at_once_on_the_others(cluster):
    """A consumer that bootstraps from a fetch gateway right after the topic was
    created through an ingest gateway sees it at once and joins its group. The
    fetch gateway has just cached the topic list without it (a Metadata for the
    name that came too early): answering "unknown" from that list would leave
    librdkafka postponing the join until its next periodic refresh (5 minutes)."""
    from confluent_kafka import Consumer, KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    c = cluster(shards=2).start(indexers=1, ingests=1, fetches=1)
    topic, partitions = "born-elsewhere", 3
    fetch = c.fetches[0].bootstrap
    creator = AdminClient({"bootstrap.servers": c.ingests[0].bootstrap})
    creator.list_topics(timeout=10)  # connected before the clock starts
    asker = Consumer({"bootstrap.servers": fetch, "group.id": "asker"})
    try:
        early = asker.list_topics(topic=topic, timeout=10).topics[topic]
        assert early.error is not None and early.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        creator.create_topics([NewTopic(topic, partitions)])[topic].result(10)
        late = asker.list_topics(topic=topic, timeout=10).topics[topic]
        assert late.error is None, late.error
        assert len(late.partitions) == partitions
    finally:
        asker.close()

    member = Consumer({"bootstrap.servers": fetch, "group.id": "born-elsewhere-group",
                       "auto.offset.reset": "earliest"})
    try:
        member.subscribe([topic])

        def joined() -> bool:
            member.poll(0.2)
            return len(member.assignment()) == partitions
        kh.wait_for(joined, timeout=60, what="the consumer to join its group")
    finally:
        member.close()


def _failover_cluster(cluster, lease_ttl_ms=3000):
    c = cluster(shards=4, lease_ttl_ms=lease_ttl_ms)
    c.admin_init()
    first = c.start_indexer()
    second = c.start_indexer()
    # The first replica takes every shard, then hands half to the second.
    kh.wait_for(lambda: dist.shards_acquired(second), 30, what="the second indexer to own shards")
    c.start_ingest()
    c.start_fetch()
    return c, first, second


def _owned_after(server, text_from: int) -> list[int]:
    text = server.log_path.read_text(errors="replace")[text_from:]
    return [int(m.group(1)) for m in re.finditer(r"acquired shard lease.*?shard=(\d+)", text)]


def test_sigkill_of_a_shard_owner_fails_over_without_losing_acks(cluster):
    c, victim, survivor = _failover_cluster(cluster)
    topic, partitions = "dist-sigkill", 8
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    producer = dist.PacedProducer(c.ingests[0].bootstrap, topic, partitions, count=4000,
                                  rate=400, tag="k").start()
    producer.wait_produced(800)
    mark = len(survivor.log_path.read_text(errors="replace"))
    victim.kill9(restart=False)
    killed_at = time.monotonic()
    taken = kh.wait_for(lambda: _owned_after(survivor, mark), 60,
                        what="the surviving indexer to take the dead one's shards")
    takeover_s = time.monotonic() - killed_at
    print(f"takeover of shards {taken} took {takeover_s:.1f}s (lease {c.lease_ttl_ms} ms)")
    # Within the lease time plus one renewal period (and scheduling slack).
    assert takeover_s < c.lease_ttl_ms / 1000 * 2 + 5, f"takeover took {takeover_s:.1f}s"
    deliveries = producer.join()
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=len(deliveries))
    dist.assert_acks_consumed({"k": deliveries}, consumed, partitions)


def test_deposed_indexer_cannot_write(cluster):
    """SIGSTOP an owner past its lease while producing: the other replica takes
    its shards; after SIGCONT the old owner's writes are refused (fenced by the
    lease version in the store, or it finds the lease lost first) and no offset
    is ever assigned twice."""
    c, paused, other = _failover_cluster(cluster)
    topic, partitions = "dist-sigstop", 8
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    producer = dist.PacedProducer(c.ingests[0].bootstrap, topic, partitions, count=4000,
                                  rate=400, tag="s").start()
    producer.wait_produced(800)
    mark_other = len(other.log_path.read_text(errors="replace"))
    mark_paused = len(paused.log_path.read_text(errors="replace"))
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        kh.wait_for(lambda: _owned_after(other, mark_other), 60,
                    what="the live indexer to take the paused one's shards")
        time.sleep(1.0)
    finally:
        paused.proc.send_signal(signal.SIGCONT)

    def refused():
        text = paused.log_path.read_text(errors="replace")[mark_paused:]
        return re.findall(r"commit fenced|shard lease lost", text)

    reasons = kh.wait_for(refused, 30, what="the resumed indexer to notice it was deposed")
    print(f"deposed indexer: {sorted(set(reasons))}")
    deliveries = producer.join()
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=len(deliveries))
    dist.assert_acks_consumed({"s": deliveries}, consumed, partitions)
    assert paused.running, "the deposed indexer should keep running (and rejoin)"


def _raw_produce_during_outage(bootstrap: str, topic: str) -> int:
    """One acks=-1 Produce v3 over a raw socket; returns its error code. During
    an outage it must be 0 (it got through) or retriable, and it must answer."""
    batch = kh.build_record_batch([kh.BatchRecord(b"raw", b"raw-during-outage", [])])
    with kh.RawConnection(bootstrap, timeout=120) as conn:
        body = kh.produce_request_body_v3(topic, 0, batch, acks=-1, timeout_ms=60000)
        resp = conn.request(0, 3, body, timeout=120)
        (result,) = kh.decode_produce_response_v3(resp)
    return result.error_code


OUTAGE_S = 5.0
RETRIABLE = {0, 6, 7, 19, 56}  # none, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, KAFKA_STORAGE_ERROR


def test_store_outages_are_survived(cluster):
    """Cut DynamoDB, then S3, for a few seconds each while producing: producers
    see retriable errors at worst, nothing acknowledged is lost or duplicated,
    and service resumes without a restart."""
    c = cluster(shards=4).start(indexers=2, ingests=2, fetches=1)
    topic, partitions = "dist-outage", 4
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    raw_topic = "dist-outage-raw"
    kh.confluent_create_topic(c.ingests[0].bootstrap, raw_topic, 1)
    producers = [dist.PacedProducer(g.bootstrap, topic, partitions, count=3000, rate=250,
                                    tag=f"o{i}").start() for i, g in enumerate(c.ingests)]
    producers[0].wait_produced(500)
    codes = []
    for proxy in (c.ddb_proxy, c.s3_proxy):
        proxy.cut()
        cut_at = time.monotonic()
        try:
            codes.append(_raw_produce_during_outage(c.ingests[1].bootstrap, raw_topic))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        finally:
            proxy.restore()
        print(f"{proxy.name}: refused {proxy.refused} connections during the outage")
        assert proxy.refused > 0, f"nothing tried to reach {proxy.name} during its outage"
        time.sleep(2.0)
    assert all(code in RETRIABLE for code in codes), codes
    deliveries = {p.tag: p.join() for p in producers}
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=sum(len(d) for d in deliveries.values()))
    dist.assert_acks_consumed(deliveries, consumed, partitions)
    # Service resumed by itself: a fresh producer gets through at once.
    after = kh.confluent_produce(c.ingests[1].bootstrap, topic,
                                 [{"key": b"after", "value": b"after-outage"}], timeout=60)
    assert after[0].error is None, after[0]


def test_long_polls_wake_on_the_indexer_feed(cluster):
    """With store polling slowed to a minute, a consumer waiting at the end of
    the log still gets a new record within seconds: the fetch gateway follows
    the indexers' watermark feeds (GET /v1/watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    c = cluster(shards=2)
    c.admin_init()
    c.start_indexer()
    c.start_ingest()
    fetch = c.factory(["--watermark-poll-ms", "60000"], env=c.env(), name="fetch-slowpoll",
                      mode="fetch")
    topic = "dist-feed"
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, 1)
    kh.confluent_produce(c.ingests[0].bootstrap, topic, [{"key": b"k", "value": b"first"}])
    consumer = Consumer({"bootstrap.servers": fetch.bootstrap, "group.id": "kafscale-e2e-dummy",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 20000,
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = kh.Deadline(60)
        while not got and not deadline.expired():  # the first record, read via the store
            got = [m for m in consumer.consume(10, timeout=1.0) if m.error() is None]
        assert [m.value() for m in got] == [b"first"]
        time.sleep(1.5)  # the consumer now long-polls at the end of the log
        produced_at = time.monotonic()
        kh.confluent_produce(c.ingests[0].bootstrap, topic, [{"key": b"k", "value": b"second"}])
        second = []
        while not second and time.monotonic() - produced_at < 60:
            second = [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
        waited = time.monotonic() - produced_at
        print(f"record seen by the long-polling consumer {waited:.2f}s after it was produced")
        assert [m.value() for m in second] == [b"second"], waited
        # A store poll would have taken up to 60 s; the feed takes a commit's time.
        assert waited < 15, f"the long poll woke only after {waited:.1f}s"
    finally:
        consumer.close()


@pytest.mark.parametrize("layout", ["transactions", "shard-log"])
def test_a_segment_wider_than_one_dynamodb_transaction(cluster, layout):
    """One flush touching 120 partitions of one shard needs more than DynamoDB's 100
    operations per transaction: on the transaction layout the indexer commits it in chunks;
    on the shard log it is one item. Either way every record lands once, at its acknowledged
    offset."""
    c = cluster(shards=1)
    c.extra_env["KAFSCALE_INITIAL_LAYOUT"] = layout
    c.admin_init()
    indexer = c.start_indexer(log="info,kafscale_indexer=debug")
    c.start_ingest(extra=("--flush-interval-ms", "200"))
    c.start_fetch()
    topic, partitions, per_partition = "dist-wide", 120, 5
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    items = [{"key": None, "value": f"w-{i}".encode(), "partition": i % partitions}
             for i in range(partitions * per_partition)]
    # librdkafka puts one partition in each Produce request and keeps at most 5 in flight when
    # idempotent; without idempotence all 120 partitions' requests are in flight at once, so a
    # 200 ms flush gathers them into one segment.
    deliveries = kh.confluent_produce(c.ingests[0].bootstrap, topic, items,
                                      conf={"linger.ms": 100, "enable.idempotence": False,
                                            "max.in.flight.requests.per.connection": 1000})
    assert all(d.error is None for d in deliveries), [d for d in deliveries if d.error][:5]
    splits = re.findall(r"commit split to fit the store's write limit chunks=(\d+)",
                        indexer.log_path.read_text(errors="replace"))
    if layout == "transactions":
        assert splits, f"no commit needed splitting\n{indexer.log_tail()}"
        print(f"split commits: {len(splits)}, chunks: {sorted(set(int(n) for n in splits))}")
    else:
        assert not splits, "a shard-log commit of 120 partitions is one item"
        assert dist.StoreReader(c, topic).shard_log_items()
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=len(items))
    dist.assert_acks_consumed({"w": [(d.partition, d.offset) for d in deliveries]}, consumed,
                              partitions)


def test_committed_offsets_are_shared_by_fetch_gateways(cluster):
    """A consumer commits through one fetch gateway; a new consumer of the same
    group resumes at exactly those offsets through the other (offsets live in
    DynamoDB, not in a gateway)."""
    from test_group_offsets import _confluent_commit_then_resume, _produce

    c = cluster(shards=2).start(indexers=1, ingests=1, fetches=2)
    dist.wait_coordinators_settled(c.fetches)
    topic = "dist-offsets"
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, 2)
    _produce(c.ingests[0].bootstrap, topic, 2, 100)
    _confluent_commit_then_resume(c.fetches[0].bootstrap, c.fetches[1].bootstrap, topic)


def _group_coordinator_port(bootstrap: str, group: str) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    return description.coordinator.port


def test_a_group_spread_over_two_fetch_gateways_moves_when_its_coordinator_dies(cluster, tmp_path):
    """Members of one group bootstrap at different fetch gateways and still
    form one group (FindCoordinator on either names the lease owner). SIGKILL
    of the coordinating gateway: the other takes the group's lease once it
    expires, the members rejoin there and resume at the committed offsets
    (nothing committed is delivered again, nothing is skipped)."""
    from groups import GroupMember, wait_committed, wait_consumed, wait_exclusive

    c = cluster(shards=2).start(indexers=1, ingests=1, fetches=2)
    topic = group = "dist-group"
    partitions = 6
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    f0, f1 = c.fetches

    dist.wait_coordinators_settled(c.fetches)

    # Both gateways coordinate some groups: each lists the other as a broker.
    def both_listed() -> bool:
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": f0.bootstrap}).list_topics(timeout=10)
        return len(md.brokers) == 2

    kh.wait_for(both_listed, 30, what="both fetch gateways coordinating")

    def produce(start: int, count: int) -> None:
        items = [{"value": f"v{start + i}".encode(), "partition": i % partitions}
                 for i in range(count * partitions)]
        ds = kh.confluent_produce(c.ingests[0].bootstrap, topic, items)
        assert all(d.error is None for d in ds)

    produce(0, 30)
    members = [GroupMember("confluent", gw.bootstrap, group, topic, f"m{i}", tmp_path)
               for i, gw in enumerate((f0, f0, f1))]
    try:
        wait_exclusive(members, partitions, timeout=90)
        wait_consumed(members, {p: 30 for p in range(partitions)}, timeout=90)
        wait_committed(members, {p: 30 for p in range(partitions)}, timeout=60)
        port = _group_coordinator_port(f0.bootstrap, group)
        assert port == _group_coordinator_port(f1.bootstrap, group)
        coordinator, survivor = (f0, f1) if f0.bootstrap.endswith(f":{port}") else (f1, f0)
        assert coordinator.bootstrap.endswith(f":{port}"), (port, f0.bootstrap, f1.bootstrap)

        coordinator.kill9(restart=False)
        killed_at = time.time()
        produce(30, 20)
        wait_consumed(members, {p: 50 for p in range(partitions)}, timeout=120, start=30)
        # The new coordinator knows no members: they rejoin and get assignments again.
        kh.wait_for(lambda: all(any(e["ev"] == "assign" and e["t"] > killed_at
                                    for e in m.rebalance_events()) for m in members),
                    60, what="every member reassigned by the new coordinator")
        moved_at = wait_exclusive(members, partitions, timeout=60)
        rejoined = max(e["t"] for m in members for e in m.rebalance_events() if e["ev"] == "assign")
        print(f"coordinator SIGKILL -> group rebalanced on the other gateway after "
              f"{rejoined - killed_at:.2f}s (lease {c.lease_ttl_ms} ms)")
        assert moved_at >= killed_at
        assert _group_coordinator_port(survivor.bootstrap, group) != port
        again = [(p, o) for m in members for p, o in m.records(since=killed_at) if o < 30]
        assert not again, f"committed records delivered again after the move: {again[:10]}"
    finally:
        for m in members:
            m.close()


def _shard_of(topic_id: str, partition: int, shards: int) -> int:
    """The indexer shard of a partition, as `kafscale_shared::shards::shard_of` computes it."""
    import uuid as _uuid

    data = _uuid.UUID(topic_id).bytes + partition.to_bytes(4, "big", signed=True)
    return kh._crc32c.crc32c(data) % shards


def test_a_paused_shard_owner_holds_back_only_its_own_partitions(cluster):
    """SIGSTOP the owner of some shards (its lease far from expiring): produce requests for
    partitions of the other shards are still acknowledged, although a segment holding the
    paused shard's batches was sealed before theirs; after SIGCONT everything is acked and
    read back."""
    from confluent_kafka import Producer

    c, first, second = _failover_cluster(cluster, lease_ttl_ms=30000)

    def split() -> bool:
        # Settled: each owns its half and no shard is owned twice or by nobody (a shard the
        # second indexer acquired and then released to balance must not count as paused).
        mine, theirs = dist.shards_owned(second), dist.shards_owned(first)
        return (len(mine) >= c.shards // 2 and not mine & theirs
                and mine | theirs == set(range(c.shards)))

    kh.wait_for(split, 60, what="the shards to be split between the two indexers")
    # 64 partitions: shard_of is a CRC, linear in the partition number, so partitions 0-31 of
    # any topic reach only 2 of 4 shards (shards 0 and 3, or 1 and 2), which may be just the
    # paused ones or just the others; from partition 32 on a topic reaches all four.
    topic, partitions = "dist-lanes", 64
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    topic_id = dist.StoreReader(c, topic).topic_id
    paused_shards = dist.shards_owned(second)
    assert split(), "the shards moved while the topic was created"
    shards = [_shard_of(topic_id, p, c.shards) for p in range(partitions)]
    stuck = [p for p in range(partitions) if shards[p] in paused_shards]
    free = [p for p in range(partitions) if p not in stuck]
    assert stuck and free, (f"partitions on one side only: {stuck} / {free}; shards {shards}, "
                            f"paused {paused_shards}")
    acked: dict = {}
    # Two clients: responses on one connection come back in request order (the Kafka
    # protocol's rule), so a second producer stands for the other clients of the cluster.
    conf = {"bootstrap.servers": c.ingests[0].bootstrap, "acks": "all", "linger.ms": 0,
            "message.timeout.ms": 120000, "request.timeout.ms": 120000}
    stuck_producer, free_producer = Producer(conf), Producer(conf)

    def produce(producer, p: int) -> None:
        def cb(err, msg):
            acked[p] = (err, msg.offset() if err is None else None)
        producer.produce(topic, value=f"v-{p}".encode(), partition=p, on_delivery=cb)

    mark = len(first.log_path.read_text(errors="replace"))
    second.proc.send_signal(signal.SIGSTOP)
    try:
        puts = kh.metric_value(c.ingests[0], "kafscale_object_store_requests_total")
        for p in stuck:
            produce(stuck_producer, p)
        # The paused shard's segment is uploaded (its commit to the paused owner follows).
        try:
            kh.wait_for(lambda: (stuck_producer.poll(0) or True)
                        and kh.metric_value(c.ingests[0], "kafscale_object_store_requests_total") > puts,
                        30, what="the stuck partitions' segment to be uploaded")
        except AssertionError as e:
            # Once in ~11 runs (2026-12-05): say whether the produce requests ever arrived.
            metrics = c.ingests[0].http_get("/metrics")[1].decode().splitlines()
            seen = [m for m in metrics if m.startswith(("kafscale_requests_total",
                                                        "kafscale_object_store_requests_total",
                                                        "kafscale_produce_buffer_bytes"))]
            raise AssertionError(f"{e}; acked so far {acked}; ingest metrics {seen}") from None
        for p in free:
            produce(free_producer, p)
        kh.wait_for(lambda: free_producer.poll(0.05) is not None and all(p in acked for p in free),
                    25, what="the other shards' partitions to be acknowledged")
        assert not any(p in acked for p in stuck), f"acked through a paused owner: {acked}"
        # A produce request that waits past its own timeout is answered, retriably, in time.
        batch = kh.build_record_batch([kh.BatchRecord(b"raw", b"timed-out", [])])
        with kh.RawConnection(c.ingests[0].bootstrap, timeout=30) as conn:
            body = kh.produce_request_body_v3(topic, stuck[0], batch, acks=-1, timeout_ms=3000)
            (result,) = kh.decode_produce_response_v3(conn.request(0, 3, body, timeout=30))
        assert result.error_code == 7, f"expected REQUEST_TIMED_OUT, got {result}"
        taken = _owned_after(first, mark)
        assert not set(taken) & paused_shards, f"the paused shards failed over first: {taken}"
    finally:
        second.proc.send_signal(signal.SIGCONT)
    for producer in (stuck_producer, free_producer):
        assert producer.flush(120) == 0, "deliveries still pending after the owner resumed"
    errors = {p: e for p, (e, _) in acked.items() if e is not None}
    assert not errors, f"failed deliveries: {errors}"
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=partitions)
    got = {(r.partition, r.offset, r.value) for r in consumed if r.value != b"timed-out"}
    assert got == {(p, acked[p][1], f"v-{p}".encode()) for p in range(partitions)}
    # The timed-out request may still have been committed (as in Kafka), but only once.
    assert sum(r.value == b"timed-out" for r in consumed) <= 1


def _switch_to_shard_log(c: dist.Cluster) -> subprocess.CompletedProcess:
    cmd = [str(dist.kafscale_bin()), "admin", "switch-to-shard-log"]
    return subprocess.run(cmd, env=c.env(), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_a_cluster_on_the_transaction_layout_switches_to_the_shard_log_with_nothing_lost(cluster):
    """A cluster created on the transaction layout (as before the shard log) is switched while
    a producer runs: refused while a process of an older release holds a lease, then done,
    and the indexers' restarts move each shard; every acknowledged record is read back once,
    at its offset, and the shards commit to their logs afterwards."""
    c = cluster(shards=4)
    c.extra_env["KAFSCALE_INITIAL_LAYOUT"] = "transactions"
    c.start(indexers=2, ingests=1, fetches=1)
    assert "transactions layout" in c.admin_init()
    topic, partitions = "dist-layout", 4
    kh.confluent_create_topic(c.ingests[0].bootstrap, topic, partitions)
    producer = dist.PacedProducer(c.ingests[0].bootstrap, topic, partitions, count=3000,
                                  rate=250, tag="m").start()
    producer.wait_produced(500)
    store = dist.StoreReader(c, topic)
    assert not store.shard_log_items(), "a cluster on the transaction layout wrote a shard log"

    # A live lease written by a release that cannot read the log (format 1).
    old_lease = {"format": 1, "owner": "old-indexer-7", "owner_addr": "10.0.0.7:9093",
                 "epoch": 1, "expires_at_ms": int(time.time() * 1000) + 600_000,
                 "ttl_ms": 10_000, "released": False}
    key = {"pk": {"S": "lease"}, "sk": {"S": "legacy-probe"}}
    store.ddb.put_item(TableName=store.table, Item={**key, "ver": {"N": "1"},
                                                    "v": {"B": json.dumps(old_lease).encode()}})
    refused = _switch_to_shard_log(c)
    assert refused.returncode != 0, refused.stdout
    assert "old-indexer-7 (10.0.0.7:9093)" in refused.stderr, refused.stderr
    assert "transactions layout" in c.admin_init(), "a refused switch changed the layout"

    store.ddb.delete_item(TableName=store.table, Key=key)
    switched = _switch_to_shard_log(c)
    assert switched.returncode == 0, switched.stderr
    assert "is on the shard log" in switched.stdout, switched.stdout
    assert "shard-log layout" in c.admin_init(), "admin init must keep the switched layout"

    # Each shard switches when its owner next acquires it: restart the indexers in turn.
    for indexer in list(c.indexers):
        indexer.restart()
    kh.wait_for(lambda: store.shard_log_items(), 60, what="the shards to commit to their logs")
    deliveries = producer.join()
    consumed = kh.confluent_consume_all(c.fetches[0].bootstrap, topic, range(partitions),
                                        expected=len(deliveries))
    dist.assert_acks_consumed({"m": deliveries}, consumed, partitions)

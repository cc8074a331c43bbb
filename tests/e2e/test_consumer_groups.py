"""Consumer groups with real clients (subscribe(), the classic group protocol):
confluent-kafka (librdkafka), kafka-python and kcat, each member its own
process (tests/e2e/group_member.py) so it can be SIGKILLed.

What must hold: every partition owned by exactly one member; a killed member's
partitions move to the others once its session times out, a member that leaves
cleanly hands them over at once; consumption resumes at the committed offsets
(nothing committed re-delivered, nothing skipped); cooperative-sticky moves
only the partitions that must move; a restarted static member gets its
partitions back without a rebalance."""

from __future__ import annotations

import time

import pytest

import kafka_helpers as kh
from groups import GroupMember, assert_all_consumed, wait_committed, wait_consumed, wait_exclusive

pytestmark = pytest.mark.deadline(240)

PARTITIONS = 6
SESSION_MS = 6000
# A short initial rebalance delay keeps the tests quick; the default (3 s) is Kafka's.
SERVER_ARGS = ["--group-initial-rebalance-delay-ms", "1000"]


def _produce(bootstrap: str, topic: str, per_partition: int, tag: str) -> None:
    items = [{"key": f"{tag}{i}".encode(), "value": f"{tag}-{i}".encode(),
              "partition": i % PARTITIONS} for i in range(per_partition * PARTITIONS)]
    deliveries = kh.confluent_produce(bootstrap, topic, items)
    assert all(d.error is None for d in deliveries), [d.error for d in deliveries if d.error][:3]


@pytest.fixture
def server(kafscale_factory):
    return kafscale_factory(SERVER_ARGS, name="kafscale")


@pytest.fixture
def members(tmp_path):
    started: list[GroupMember] = []

    def start(client: str, bootstrap: str, group: str, topic: str, n: int = 1, **kw):
        new = [GroupMember(client, bootstrap, group, topic, f"{client}-{len(started) + i}",
                           tmp_path, session_ms=SESSION_MS, **kw) for i in range(n)]
        started.extend(new)
        return new

    yield start
    for m in started:
        m.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_group_of_three_shares_partitions_survives_a_sigkill_and_a_clean_leave(
        server, members, client):
    topic, group = f"g3-{client}", f"g3-{client}"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 50, "a")
    a, b, c = members(client, server.bootstrap, group, topic, n=3)
    wait_exclusive([a, b, c], PARTITIONS, timeout=60)
    assert sorted(len(m.owned()) for m in (a, b, c)) == [2, 2, 2]
    wait_consumed([a, b, c], {p: 50 for p in range(PARTITIONS)}, timeout=60)

    # SIGKILL: no LeaveGroup; the session times out and a, b take c's partitions.
    killed_at = c.kill9()
    moved_at = wait_exclusive([a, b], PARTITIONS, timeout=SESSION_MS / 1000 + 30)
    took = moved_at - killed_at
    print(f"{client}: SIGKILL -> partitions reassigned in {took:.2f}s (session timeout {SESSION_MS} ms)")
    # The session timeout, one heartbeat to learn of the rebalance and the rejoin: what this
    # checks is that the coordinator expires the member by its session timeout rather than by
    # the rebalance (max.poll.interval) timeout of minutes; the slack covers a loaded CI
    # machine (11.2 s seen under a parallel build with kafka-python).
    assert took < SESSION_MS / 1000 + 10, f"reassignment took {took:.2f}s"
    _produce(server.bootstrap, topic, 20, "b")
    wait_consumed([a, b, c], {p: 70 for p in range(PARTITIONS)}, timeout=60)

    # A clean leave (LeaveGroup on close) hands the partitions over at once.
    left_at = b.stop()
    moved_at = wait_exclusive([a], PARTITIONS, timeout=30)
    took = moved_at - left_at
    print(f"{client}: clean leave -> partitions reassigned in {took:.2f}s")
    assert took < 5, f"reassignment after LeaveGroup took {took:.2f}s"
    _produce(server.bootstrap, topic, 10, "c")
    wait_consumed([a, b, c], {p: 80 for p in range(PARTITIONS)}, timeout=60)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_consumption_resumes_at_the_committed_offsets(server, members, client):
    topic, group = f"resume-{client}", f"resume-{client}"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 40, "a")
    first = members(client, server.bootstrap, group, topic, n=3)
    wait_consumed(first, {p: 40 for p in range(PARTITIONS)}, timeout=90)
    wait_committed(first, {p: 40 for p in range(PARTITIONS)}, timeout=30)
    for m in first:
        m.stop()

    _produce(server.bootstrap, topic, 25, "b")
    started = time.time()
    second = members(client, server.bootstrap, group, topic, n=3)
    wait_consumed(second, {p: 65 for p in range(PARTITIONS)}, timeout=90, start=40)
    delivered: dict[int, list[int]] = {}
    for m in second:
        for p, o in m.records(since=started):
            delivered.setdefault(p, []).append(o)
    for p in range(PARTITIONS):
        offsets = sorted(delivered.get(p, []))
        # Nothing committed comes back, nothing after it is skipped.
        assert offsets and offsets[0] == 40, (p, offsets[:5])
        assert sorted(set(offsets)) == list(range(40, 65)), (p, offsets)


def test_cooperative_sticky_moves_only_the_partitions_that_must_move(server, members):
    topic = group = "coop"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 20, "a")
    a, b, c = members("confluent", server.bootstrap, group, topic, n=3,
                      strategy="cooperative-sticky")
    wait_exclusive([a, b, c], PARTITIONS, timeout=60)
    kept = {m.name: m.owned() for m in (a, b)}
    marks = {m.name: len(m.rebalance_events()) for m in (a, b)}
    c.stop()
    wait_exclusive([a, b], PARTITIONS, timeout=30)
    for m in (a, b):
        later = m.rebalance_events()[marks[m.name]:]
        revoked = {p for e in later if e["ev"] in ("revoke", "lost") for p in e["parts"]}
        assert not revoked, f"{m.name} had {sorted(revoked)} revoked: {later}"
        assert kept[m.name] <= m.owned(), (m.name, kept[m.name], m.owned())
    _produce(server.bootstrap, topic, 10, "b")
    wait_consumed([a, b, c], {p: 30 for p in range(PARTITIONS)}, timeout=60)


def test_kcat_consumes_in_a_group_and_commits(server):
    topic = group = "kcat-group"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 10, "k")
    out = kh.run_kcat(["-b", server.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
                       "-c", str(10 * PARTITIONS), "-f", "%p %o\\n", "-q", topic], timeout=90).stdout.decode()
    seen = {tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()}
    assert seen == {(p, o) for p in range(PARTITIONS) for o in range(10)}, sorted(seen)[:10]

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == {p: 10 for p in range(PARTITIONS)}


def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(server, members):
    topic = group = "static"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    a, = members("confluent", server.bootstrap, group, topic, instance_id="pod-a")
    b, = members("confluent", server.bootstrap, group, topic, instance_id="pod-b")
    wait_exclusive([a, b], PARTITIONS, timeout=60)
    before = b.owned()
    a_events = len(a.rebalance_events())
    # A static member does not leave on close: its partitions wait for it.
    b.kill9()
    b2, = members("confluent", server.bootstrap, group, topic, instance_id="pod-b")
    kh.wait_for(lambda: b2.owned() == before, 30, what="the restarted member's old partitions")
    time.sleep(2)
    assert a.rebalance_events()[a_events:] == [], "the other member saw a rebalance"
    _produce(server.bootstrap, topic, 10, "s")
    wait_consumed([a, b2], {p: 10 for p in range(PARTITIONS)}, timeout=60)
    assert_all_consumed([a, b2], {p: 10 for p in range(PARTITIONS)})


def test_admin_clients_list_describe_and_delete_groups(server, members):
    """kafka-python's and confluent-kafka's admin clients: ListGroups,
    DescribeGroups, OffsetDelete and DeleteGroups, with Kafka's refusals for a
    group that has members."""
    from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka import TopicPartition as KpTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import GroupSubscribedToTopicError, NoError

    topic = "admin-groups"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 5, "a")
    kh.run_kcat(["-b", server.bootstrap, "-G", "idle", "-X", "auto.offset.reset=earliest",
                 "-c", str(5 * PARTITIONS), "-q", topic], timeout=90)
    live, = members("confluent", server.bootstrap, "live", topic)
    wait_exclusive([live], PARTITIONS, timeout=60)

    kp = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        listed = {g["group_id"]: g["group_state"] for g in kp.list_groups()}
        assert listed.get("idle") == "Empty" and listed.get("live") == "Stable", listed
        described = kp.describe_groups(["live"])["live"]
        assert described["group_state"] == "Stable" and len(described["members"]) == 1, described
        assert kp.delete_group_offsets("idle", [KpTopicPartition(topic, 0)]) == \
            {KpTopicPartition(topic, 0): NoError}
        assert kp.delete_group_offsets("live", [KpTopicPartition(topic, 0)]) == \
            {KpTopicPartition(topic, 0): GroupSubscribedToTopicError}
    finally:
        kp.close()

    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    groups = admin.list_consumer_groups().result(timeout=30).valid
    states = {g.group_id: g.state for g in groups}
    assert states.get("live") == ConsumerGroupState.STABLE, states
    d = admin.describe_consumer_groups(["live"])["live"].result(timeout=30)
    assert d.state == ConsumerGroupState.STABLE and len(d.members) == 1
    assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == \
        list(range(PARTITIONS))
    results = admin.delete_consumer_groups(["idle", "live"])
    assert results["idle"].result(timeout=30) is None
    with pytest.raises(Exception, match="NON_EMPTY_GROUP"):
        results["live"].result(timeout=30)

    # The deleted group's offsets are gone.
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "idle"})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        c.close()
    assert all(tp.offset < 0 for tp in committed), committed


def test_an_empty_group_is_forgotten_after_its_expiry_and_keeps_its_offsets(kafscale_factory):
    """--group-empty-expiry-ms: a group left without members leaves the
    coordinator's memory (and ListGroups); its committed offsets stay, so a
    member that joins later resumes where the group left off."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    server = kafscale_factory([*SERVER_ARGS, "--group-empty-expiry-ms", "1000"], name="kafscale")
    topic = "empty-expiry"
    kh.confluent_create_topic(server.bootstrap, topic, PARTITIONS)
    _produce(server.bootstrap, topic, 5, "a")
    conf = {"bootstrap.servers": server.bootstrap, "group.id": "transient",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    consumer = Consumer(conf)
    try:
        consumer.subscribe([topic])
        got = 0
        deadline = kh.Deadline(60)
        while got < 5 * PARTITIONS and not deadline.expired():
            got += sum(1 for m in consumer.consume(100, timeout=0.5) if m.error() is None)
        assert got == 5 * PARTITIONS
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    kh.wait_for(lambda: "transient" not in {g.group_id for g in
                                            admin.list_consumer_groups().result(timeout=30).valid},
                timeout=30, interval=0.2, what="the empty group to leave ListGroups")
    request = [ConsumerGroupTopicPartitions("transient")]
    offsets = admin.list_consumer_group_offsets(request)["transient"].result(timeout=30)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == \
        {p: 5 for p in range(PARTITIONS)}

    _produce(server.bootstrap, topic, 1, "b")
    consumer = Consumer(conf)
    try:
        consumer.subscribe([topic])
        values = []
        deadline = kh.Deadline(60)
        while len(values) < PARTITIONS and not deadline.expired():
            values += [m.value() for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        assert sorted(values) == sorted(f"b-{i}".encode() for i in range(PARTITIONS))
        assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 5
    finally:
        consumer.close()

"""Kafka ACLs (docs/security.md, "ACLs"): a standalone server with `--acl-enabled`, mutual
TLS so that every client certificate is a principal (`User:CN=<name>,OU=e2e,O=kafscale`), and
a super user who manages the ACLs with confluent-kafka's AdminClient (create_acls,
describe_acls, delete_acls), as `kafka-acls.sh` would.

The other principals get only what the ACLs grant: producing where they have WRITE,
consuming with a group where they have READ on the group and the topic, Metadata listing only
the topics they may describe; elsewhere the Kafka authorization errors. Waits are for
conditions, bounded; every client closes.

With SASL (SCRAM over SASL_PLAINTEXT) the principal is `User:<name>`: the same grants apply,
and the SCRAM credential APIs need ALTER / DESCRIBE on the cluster.

The distributed test (DynamoDB Local, skipped without it) checks that an ACL created through
one gateway is enforced by another within the documented bound (`--acl-refresh-ms` plus one
reload).
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)

import distributed as dist
import kafka_helpers as kh
from test_sasl import librdkafka_sasl, set_user, start_sasl
from test_tls import Pki

SUPER = "admin"
REFRESH_MS = 200


def principal(name: str) -> str:
    """The principal the server derives from `Pki.client(name)`'s certificate."""
    return f"User:CN={name},OU=e2e,O=kafscale"


class AclCluster:
    """A standalone server with ACLs on, reached over mutual TLS with per-user certificates."""

    def __init__(self, factory, pki: Pki, acl_enabled: bool = True):
        self.pki = pki
        cert, key = pki.server("server")
        args = ["--kafka-tls-cert", cert, "--kafka-tls-key", key, "--kafka-tls-client-ca", pki.ca,
                "--auto-create-topics", "true"]
        if acl_enabled:
            args += ["--acl-enabled", "--super-users", f"{principal(SUPER)};User:nobody-else",
                     "--acl-refresh-ms", REFRESH_MS]
        self.server = factory([str(a) for a in args])
        self.certs: dict[str, tuple] = {}
        self.admins: dict[str, AdminClient] = {}

    def conf(self, user: str) -> dict:
        if user not in self.certs:
            self.certs[user] = self.pki.client(user)
        cert, key = self.certs[user]
        return {"bootstrap.servers": self.server.bootstrap, "security.protocol": "SSL",
                "ssl.ca.location": str(self.pki.ca), "ssl.certificate.location": str(cert),
                "ssl.key.location": str(key)}

    def admin(self, user: str = SUPER) -> AdminClient:
        """One client per user, kept (a dropped AdminClient cancels its futures)."""
        if user not in self.admins:
            self.admins[user] = AdminClient(self.conf(user))
        return self.admins[user]

    def create_topics(self, *names: str) -> None:
        futures = self.admin().create_topics([NewTopic(n, 1, 1) for n in names],
                                             operation_timeout=30, request_timeout=30)
        for f in futures.values():
            f.result(timeout=30)

    def allow(self, user: str, resource: ResourceType, name: str, *operations: AclOperation,
              pattern=ResourcePatternType.LITERAL, permission=AclPermissionType.ALLOW) -> None:
        bindings = [AclBinding(resource, name, pattern, principal(user), "*", op, permission)
                    for op in operations]
        for f in self.admin().create_acls(bindings, request_timeout=30).values():
            f.result(timeout=30)

    def produce(self, user: str, topic: str, count: int = 5, idempotent: bool = False
                ) -> list[kh.Delivery]:
        conf = {**self.conf(user), "message.timeout.ms": 15000, "enable.idempotence": idempotent}
        items = [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(count)]
        return kh.confluent_produce(self.server.bootstrap, topic, items, conf=conf, timeout=30)

    def topics_seen(self, user: str) -> set[str]:
        md = self.admin(user).list_topics(timeout=10)
        return {name for name, t in md.topics.items() if t.error is None}


def all_acls() -> AclBindingFilter:
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                            AclOperation.ANY, AclPermissionType.ANY)


def consume_with_group(cluster: AclCluster, user: str, topic: str, group: str,
                       expected: int, timeout: float = 45.0) -> tuple[list[bytes], list]:
    """Subscribes with `group`, reads until `expected` records or an error, commits."""
    consumer = Consumer({**cluster.conf(user), "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 10000})
    values: list[bytes] = []
    errors: list = []
    deadline = kh.Deadline(timeout)
    try:
        consumer.subscribe([topic])
        while len(values) < expected and not errors and not deadline.expired():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                errors.append(msg.error())
                continue
            values.append(msg.value())
        if values and not errors:
            consumer.commit(asynchronous=False)
    except KafkaException as exc:
        errors.append(exc.args[0])
    finally:
        consumer.close()
    return values, errors


@pytest.fixture
def cluster(kafscale_factory, tmp_path) -> AclCluster:
    return AclCluster(kafscale_factory, Pki(tmp_path / "pki"))


def test_a_principal_gets_exactly_what_its_acls_grant(cluster):
    cluster.create_topics("orders", "secret")
    cluster.produce(SUPER, "secret", count=2)
    cluster.allow("alice", ResourceType.TOPIC, "orders", AclOperation.WRITE, AclOperation.READ)
    cluster.allow("alice", ResourceType.GROUP, "g1", AclOperation.READ)

    described = cluster.admin().describe_acls(all_acls(), request_timeout=30).result(timeout=30)
    assert sorted((b.name, b.operation) for b in described) == [
        ("g1", AclOperation.READ), ("orders", AclOperation.READ), ("orders", AclOperation.WRITE)]
    assert all(b.principal == principal("alice") for b in described)

    # Produce where WRITE is granted (idempotent too: WRITE on a topic implies
    # IDEMPOTENT_WRITE), and nowhere else.
    assert [d.error for d in cluster.produce("alice", "orders", idempotent=True)] == [None] * 5
    refused = cluster.produce("alice", "secret", count=1)
    assert "TOPIC_AUTHORIZATION_FAILED" in (refused[0].error or ""), refused

    # Metadata lists only what alice may describe; a principal without ACLs sees nothing.
    assert cluster.topics_seen("alice") == {"orders"}
    assert cluster.topics_seen("bob") == set()
    assert cluster.topics_seen(SUPER) >= {"orders", "secret"}

    # Consume with the granted group; another group is refused.
    values, errors = consume_with_group(cluster, "alice", "orders", "g1", expected=5)
    assert errors == [] and values == [b"v%d" % i for i in range(5)]
    _, errors = consume_with_group(cluster, "alice", "orders", "g2", expected=1)
    assert [e.code() for e in errors][:1] == [KafkaError.GROUP_AUTHORIZATION_FAILED], errors

    # Administration: alice may not create topics or manage ACLs.
    futures = cluster.admin("alice").create_topics([NewTopic("alices", 1, 1)], request_timeout=30)
    with pytest.raises(KafkaException) as info:
        futures["alices"].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    binding = AclBinding(ResourceType.TOPIC, "secret", ResourcePatternType.LITERAL,
                         principal("alice"), "*", AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as info:
        cluster.admin("alice").create_acls([binding], request_timeout=30)[binding].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    assert kh.metric_value(cluster.server, "kafscale_authorization_denials_total") > 0


def test_prefixed_patterns_and_deny_overriding_allow(cluster):
    cluster.create_topics("team-a.orders", "team-a.audit", "team-b.orders")
    cluster.allow("carol", ResourceType.TOPIC, "team-a.", AclOperation.WRITE,
                  pattern=ResourcePatternType.PREFIXED)
    assert [d.error for d in cluster.produce("carol", "team-a.orders")] == [None] * 5
    assert "TOPIC_AUTHORIZATION_FAILED" in (cluster.produce("carol", "team-b.orders", 1)[0].error or "")
    assert cluster.topics_seen("carol") == {"team-a.orders", "team-a.audit"}

    # A DENY wins over the prefixed ALLOW, for its topic only.
    cluster.allow("carol", ResourceType.TOPIC, "team-a.audit", AclOperation.WRITE,
                  permission=AclPermissionType.DENY)
    assert "TOPIC_AUTHORIZATION_FAILED" in (cluster.produce("carol", "team-a.audit", 1)[0].error or "")
    assert [d.error for d in cluster.produce("carol", "team-a.orders", 1)] == [None]

    # MATCH finds every binding that applies to a name; deleting the DENY restores the write.
    match = AclBindingFilter(ResourceType.TOPIC, "team-a.audit", ResourcePatternType.MATCH,
                             None, None, AclOperation.ANY, AclPermissionType.ANY)
    applying = cluster.admin().describe_acls(match, request_timeout=30).result(timeout=30)
    assert sorted((b.name, b.permission_type) for b in applying) == [
        ("team-a.", AclPermissionType.ALLOW), ("team-a.audit", AclPermissionType.DENY)]
    deny = AclBindingFilter(ResourceType.TOPIC, "team-a.audit", ResourcePatternType.LITERAL,
                            None, None, AclOperation.ANY, AclPermissionType.DENY)
    deleted = cluster.admin().delete_acls([deny], request_timeout=30)[deny].result(timeout=30)
    assert [(b.name, b.permission_type) for b in deleted] == [("team-a.audit", AclPermissionType.DENY)]
    assert [d.error for d in cluster.produce("carol", "team-a.audit", 1)] == [None]
    remaining = cluster.admin().describe_acls(all_acls(), request_timeout=30).result(timeout=30)
    assert [(b.name, b.resource_pattern_type) for b in remaining] == [("team-a.", ResourcePatternType.PREFIXED)]


def test_without_the_authorizer_nothing_changes(kafscale_factory, tmp_path):
    cluster = AclCluster(kafscale_factory, Pki(tmp_path / "pki"), acl_enabled=False)
    # Anyone does anything; auto-creation on first use still works.
    assert [d.error for d in cluster.produce("bob", "open-topic")] == [None] * 5
    values, errors = consume_with_group(cluster, "bob", "open-topic", "any-group", expected=5)
    assert errors == [] and len(values) == 5
    # The ACL APIs answer SECURITY_DISABLED (librdkafka 2.16 shows DescribeAcls' as no ACLs).
    binding = AclBinding(ResourceType.TOPIC, "open-topic", ResourcePatternType.LITERAL,
                         principal("bob"), "*", AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as info:
        cluster.admin().create_acls([binding], request_timeout=30)[binding].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.SECURITY_DISABLED
    assert cluster.admin().describe_acls(all_acls(), request_timeout=30).result(timeout=30) == []


def test_a_sasl_principal_is_authorized_by_its_user_name(kafscale_factory):
    server = start_sasl(kafscale_factory, "SCRAM-SHA-512", extra=(
        "--acl-enabled", "--super-users", "User:root", "--acl-refresh-ms", REFRESH_MS,
        "--auto-create-topics", "true"))
    for user in ("root", "erin"):
        set_user(server, user, f"{user}-password")

    def conf(user: str) -> dict:
        return {"bootstrap.servers": server.bootstrap,
                **librdkafka_sasl("SCRAM-SHA-512", user, f"{user}-password", None)}

    root, erin = AdminClient(conf("root")), AdminClient(conf("erin"))
    for f in root.create_topics([NewTopic(t, 1, 1) for t in ("erins", "others")],
                                operation_timeout=30, request_timeout=30).values():
        f.result(timeout=30)
    grant = AclBinding(ResourceType.TOPIC, "erins", ResourcePatternType.LITERAL, "User:erin", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)
    root.create_acls([grant], request_timeout=30)[grant].result(timeout=30)

    def produce(topic: str) -> list:
        items = [{"key": b"k", "value": b"v"}]
        return [d.error for d in kh.confluent_produce(
            server.bootstrap, topic, items, conf={**conf("erin"), "message.timeout.ms": 15000},
            timeout=30)]

    assert produce("erins") == [None]
    assert "TOPIC_AUTHORIZATION_FAILED" in (produce("others")[0] or "")

    # Changing credentials takes ALTER on the cluster: erin may not reset root's password.
    upsert = UserScramCredentialUpsertion(
        "root", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), kh.secret("taken-over").encode())
    with pytest.raises(KafkaException) as info:
        erin.alter_user_scram_credentials([upsert], request_timeout=30)["root"].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    root.alter_user_scram_credentials([upsert], request_timeout=30)["root"].result(timeout=30)


def test_an_acl_created_on_one_gateway_is_enforced_on_another(kafscale_factory, tmp_path):
    ddb_endpoint = dist.require_dynamodb()
    moto = dist.MotoServer(tmp_path).start()
    try:
        pki = Pki(tmp_path / "pki")
        cert, key = pki.server("server")
        flags = ("--kafka-tls-cert", str(cert), "--kafka-tls-key", str(key),
                 "--kafka-tls-client-ca", str(pki.ca), "--acl-enabled",
                 "--super-users", principal(SUPER), "--acl-refresh-ms", str(REFRESH_MS))
        cluster = dist.Cluster(kafscale_factory, moto, ddb_endpoint, shards=2)
        cluster.admin_init()
        cluster.start_indexer()
        gateways = [cluster.start_ingest(extra=flags) for _ in range(2)]
        on = [AclCluster.__new__(AclCluster) for _ in gateways]
        for view, gateway in zip(on, gateways):
            view.pki, view.server, view.certs, view.admins = pki, gateway, {}, {}
        on[0].create_topics("shared")
        assert "TOPIC_AUTHORIZATION_FAILED" in (on[1].produce("dave", "shared", 1)[0].error or "")

        on[0].allow("dave", ResourceType.TOPIC, "shared", AclOperation.WRITE)
        # The other gateway applies it within --acl-refresh-ms plus a reload; allow for a
        # loaded machine, but far less than a client's own retry horizon.
        kh.wait_for(lambda: on[1].produce("dave", "shared", 1)[0].error is None,
                    timeout=20 + REFRESH_MS / 1000, interval=0.2,
                    what="the acl created on gateway 0 enforced on gateway 1")
        cluster.close()
    finally:
        moto.close()
